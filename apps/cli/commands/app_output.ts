/**
 * DOC: printing app results and writing their artifacts
 *
 * Shared by `dmalab run` and `dmalab tour`: an {@linkcode AppResult} as
 * text (the row, the steps, rules, costs, per-variant table) and as JSON
 * (plain data only), the summary table of several results, and the
 * artifacts `--trace FILE`, `--ftrace FILE` and `--report DIR` ask for.
 *
 * @module
 */
import type { AppResult, AppRun } from "@dmalab/app-kit";
import { writeReport } from "../report/html.ts";
import type { ReportTransfer } from "../report/topology_svg.ts";
import { chromeTrace, ftraceText, timelineEvents } from "../report/trace_export.ts";
import { worldSplats } from "@dmalab/app-kit";

/** Formats rows as a fixed-width table. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

/** Headers of the summary table. */
export const SUMMARY_HEADERS: string[] = [
  "mechanism",
  "exporter",
  "importer",
  "path",
  "ATS",
  "bytes verified",
  "rule violations",
];

/** One summary row. */
export function summaryRow(r: AppResult): string[] {
  return [
    r.mechanism,
    r.exporter,
    r.importer,
    r.path,
    r.ats,
    String(r.bytesVerified),
    r.violations.length === 0
      ? r.expectedFindings.length ? `0 (${r.expectedFindings.length} expected)` : "0"
      : String(r.violations.length),
  ];
}

/** The variant rows of a result as a table (headers from every row's cells). */
export function variantTable(r: AppResult): { headers: string[]; rows: string[][] } | null {
  if (r.variants.length === 0) return null;
  const keys = [...new Set(r.variants.flatMap((v) => Object.keys(v.cells)))];
  return {
    headers: ["variant", ...keys, "keeps invariants", "as expected"],
    rows: r.variants.map((v) => [
      v.variant,
      ...keys.map((k) => v.cells[k] ?? ""),
      v.keepsInvariants ? "yes" : "NO",
      v.asExpected ? "yes" : "NO",
    ]),
  };
}

/** A result as text. */
export function formatResult(r: AppResult): string {
  const out = [
    `dmalab run ${r.app} (${r.mechanism}, variant ${r.variant}) on ${r.machine}`,
    "",
    formatTable(SUMMARY_HEADERS, [summaryRow(r)]),
    "",
    // with a per-variant table the steps are that table's rows
    ...(r.variants.length ? [] : ["steps:", ...r.steps.map((s) => `  - ${s}`)]),
    "rules and locks checked:",
    ...r.rulesChecked.map((s) => `  - ${s}`),
    "costs:",
    ...Object.entries(r.costs).map(([k, v]) => `  ${k}: ${v}`),
  ];
  const vt = variantTable(r);
  if (vt) out.push("", formatTable(vt.headers, vt.rows));
  if (r.expectedFindings.length) {
    out.push("expected findings:", ...r.expectedFindings.map((s) => `  - ${s}`));
  }
  out.push(
    r.violations.length
      ? `VIOLATIONS (${r.violations.length}):\n${r.violations.map((s) => `  - ${s}`).join("\n")}`
      : "violations: none",
    `verdict: ${r.ok ? "behaves as the kernel would" : "RULE VIOLATION FOUND"}`,
  );
  return out.join("\n") + "\n";
}

/** The report's transfers (those with a PCI issuer) from runs. */
export function reportTransfers(runs: readonly { name: string; run: AppRun }[]): ReportTransfer[] {
  return runs.flatMap(({ name, run }) =>
    run.recorder.transfers.filter((t) => t.src !== null && t.src !== t.dst).map((t) => ({
      label: `${name}: ${t.label}`,
      src: t.src!,
      dst: t.dst,
      mapType: t.mapType,
      ats: t.ats,
      bytes: t.bytes,
    }))
  );
}

/** Options for {@linkcode writeArtifacts}. */
export interface ArtifactFlags {
  /** Chrome/Perfetto JSON path. */
  trace?: string;
  /** ftrace text path. */
  ftrace?: string;
  /** Report directory. */
  report?: string;
}

/** Writes what the flags ask for; returns the paths written, by kind. */
export async function writeArtifacts(
  runs: readonly { name: string; run: AppRun }[],
  flags: ArtifactFlags,
  extra: {
    title: string;
    stops?: { headers: string[]; rows: string[][] };
    splats?: string[];
    transfers?: ReportTransfer[];
  },
): Promise<Record<string, string>> {
  const written: Record<string, string> = {};
  if (flags.trace) {
    await Deno.writeTextFile(flags.trace, JSON.stringify(chromeTrace(runs)));
    written.trace = flags.trace;
  }
  if (flags.ftrace) {
    await Deno.writeTextFile(flags.ftrace, ftraceText(runs));
    written.ftrace = flags.ftrace;
  }
  if (flags.report && runs.length > 0) {
    written.report = await writeReport(flags.report, {
      title: extra.title,
      fabric: runs[0]!.run.fabric,
      transfers: [...reportTransfers(runs), ...(extra.transfers ?? [])],
      summary: {
        headers: ["app", ...SUMMARY_HEADERS, "verdict"],
        rows: runs.map(({ name, run }) => [
          name,
          ...summaryRow(run.result),
          run.result.ok ? "as kernel" : "VIOLATION",
        ]),
      },
      trace: [],
      timelines: runs.map(({ name, run }) => ({ title: name, events: timelineEvents(run) })),
      transferTable: runs.flatMap(({ name, run }) =>
        run.recorder.transfers.map((t) => ({
          app: name,
          label: t.label,
          src: t.srcName,
          dst: t.dstName,
          mapType: t.mapType,
          ats: t.ats,
          bytes: t.bytes,
          gbps: t.gbps,
        }))
      ),
      apps: runs.map(({ name, run }) => {
        const vt = variantTable(run.result);
        return {
          title: `${name}: ${run.result.mechanism} (variant ${run.result.variant})`,
          steps: run.result.steps,
          rules: run.result.rulesChecked,
          costs: run.result.costs,
          findings: run.result.expectedFindings,
          violations: run.result.violations,
          ...(vt ? { variants: vt } : {}),
        };
      }),
      ...(extra.stops ? { stops: extra.stops } : {}),
      splats: [...runs.flatMap(({ run }) => worldSplats(run.world)), ...(extra.splats ?? [])],
    });
  }
  return written;
}
