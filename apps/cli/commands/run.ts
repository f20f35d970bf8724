/**
 * DOC: dmalab run
 *
 * Runs one access-mechanism app (`dmalab run APP`), optionally on a loaded
 * topology, with a variant and a seed, and prints its result; `--trace`,
 * `--ftrace` and `--report` write the run's artifacts. Exit 0 when the app
 * behaved as the kernel would and every byte checked, 1 on a rule violation,
 * 2 on a usage error (unknown app or variant, unusable topology).
 *
 * @module
 */
import { TopologyError } from "@dmalab/app-kit";
import { apps, examples, findApp } from "../apps.ts";
import { type Command, EXIT_OK, EXIT_VIOLATION, type Io, parseArgs, UsageError } from "../io.ts";
import { formatResult, writeArtifacts } from "./app_output.ts";

/** Parses `--seed`. */
export function parseSeed(v: string | boolean | undefined): number {
  if (v === undefined) return 1;
  const n = Number(v);
  if (typeof v !== "string" || !Number.isSafeInteger(n) || n < 0) {
    throw new UsageError(`--seed needs a non-negative integer (got ${String(v)})`);
  }
  return n;
}

/** `dmalab run`. */
export const runCommand: Command = {
  name: "run",
  summary: "run one access-mechanism app and print what happened",
  usage: [
    "usage: dmalab run APP [--topology FILE] [--variant V] [--seed N] [--json]",
    "                      [--trace FILE] [--ftrace FILE] [--report DIR]",
    "",
    "Apps (variants; the first is the default):",
    ...[...apps, ...examples].map((a) =>
      `  ${a.name.padEnd(7)} ${a.mechanism}: ${a.summary}\n          variants: ${
        a.variants.join(", ")
      }${a.topology ? "" : " (default machine only)"}`
    ),
    "",
    "--topology FILE   NCCL XML, lspci -tv text, JSON MachineSpec or a sysfs directory",
    "--trace FILE      Chrome/Perfetto trace JSON (open in ui.perfetto.dev)",
    "--ftrace FILE     the run's trace as ftrace text",
    "--report DIR      DIR/index.html: topology with paths, timeline, summary, splats",
    "Exit: 0 as the kernel would, 1 rule violation found, 2 usage error.",
  ].join("\n"),
  async run(args: string[], io: Io): Promise<number> {
    const { flags, positional } = parseArgs(args, ["json"], [
      "topology",
      "variant",
      "seed",
      "trace",
      "ftrace",
      "report",
    ]);
    if (positional.length !== 1) throw new UsageError("give exactly one APP");
    const app = findApp(positional[0]!);
    if (!app) {
      throw new UsageError(
        `unknown app '${positional[0]}' (${[...apps, ...examples].map((a) => a.name).join(", ")})`,
      );
    }
    const variant = typeof flags.variant === "string" ? flags.variant : undefined;
    if (variant !== undefined && !app.variants.includes(variant)) {
      throw new UsageError(
        `app ${app.name}: unknown variant '${variant}' (${app.variants.join(", ")})`,
      );
    }
    const topology = typeof flags.topology === "string" ? flags.topology : undefined;
    if (topology !== undefined && !app.topology) {
      throw new UsageError(`app ${app.name} runs on the default machine only (no --topology)`);
    }
    const seed = parseSeed(flags.seed);
    let run;
    try {
      run = await app.run({
        ...(topology ? { topology } : {}),
        ...(variant ? { variant } : {}),
        seed,
        ...(io.isTty ? { progress: (l: string) => io.err(`\r\x1b[K${l}`) } : {}),
      });
    } catch (e) {
      if (e instanceof TopologyError) throw new UsageError(e.message);
      throw e;
    } finally {
      if (io.isTty) io.err("\r\x1b[K");
    }
    const written = await writeArtifacts([{ name: app.name, run }], {
      ...(typeof flags.trace === "string" ? { trace: flags.trace } : {}),
      ...(typeof flags.ftrace === "string" ? { ftrace: flags.ftrace } : {}),
      ...(typeof flags.report === "string" ? { report: flags.report } : {}),
    }, { title: `dmalab run ${app.name}` });
    if (flags.json) {
      const { result } = run;
      io.out(JSON.stringify({ ...result, artifacts: written }, null, 2) + "\n");
    } else {
      io.out(formatResult(run.result));
      for (const [k, p] of Object.entries(written)) io.out(`${k}: ${p}\n`);
    }
    return run.result.ok ? EXIT_OK : EXIT_VIOLATION;
  },
};
