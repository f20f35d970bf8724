/**
 * DOC: HTML report
 *
 * `--report DIR` writes `DIR/index.html`: one self-contained page (inline
 * CSS, SVG and a few lines of script; no network) with the machine's
 * topology and each transfer's path highlighted, the run's timeline, the
 * summary table and every splat the run recorded. The script only toggles
 * path highlighting from the legend; the page is complete without it.
 *
 * @module
 */
import type { TraceEvent } from "@dmalab/kernel";
import type { PciFabric } from "@dmalab/pci-p2p";
import { timelineSvg } from "./timeline_svg.ts";
import { escapeXml, type ReportTransfer, topologySvg } from "./topology_svg.ts";

/** What a report shows. */
export interface RunReport {
  /** Page title. */
  title: string;
  /** The machine. */
  fabric: PciFabric;
  /** Transfers to highlight. */
  transfers: ReportTransfer[];
  /** Summary table. */
  summary: { headers: string[]; rows: string[][] };
  /** Trace events for the timeline. */
  trace: readonly TraceEvent[];
  /** Splats (full reports) recorded by the run. */
  splats: string[];
  /** One timeline per app run (shown instead of `trace` when given). */
  timelines?: { title: string; events: readonly TraceEvent[] }[];
  /** Every transfer of the run, including CPU and host ones not drawn on the topology. */
  transferTable?: TransferRow[];
  /** Per-app details: steps, rules checked, costs, per-variant tables. */
  apps?: AppSection[];
  /** A second table (the tour's other stops). */
  stops?: { headers: string[]; rows: string[][] };
}

/** A row of the transfers table. */
export interface TransferRow {
  /** App. */
  app: string;
  /** Label. */
  label: string;
  /** From. */
  src: string;
  /** To. */
  dst: string;
  /** Map type / route. */
  mapType: string;
  /** ATS used. */
  ats: boolean;
  /** Bytes. */
  bytes: number;
  /** Modelled GB/s (0: not modelled). */
  gbps: number;
}

/** Details of one app run. */
export interface AppSection {
  /** Title. */
  title: string;
  /** Steps. */
  steps: string[];
  /** Rules and locks checked. */
  rules: string[];
  /** Costs. */
  costs: Record<string, number | string>;
  /** Expected findings. */
  findings: string[];
  /** Unexpected violations. */
  violations: string[];
  /** Per-variant table, when the app ran several. */
  variants?: { headers: string[]; rows: string[][] };
}

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5a6375}
.panel{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:12px;overflow-x:auto}
table{border-collapse:collapse} th,td{text-align:left;padding:4px 10px;border-bottom:1px solid #e6e9ef}
th{background:#f1f3f7}
#topology .link{fill:none;stroke:#b8c0cc;stroke-width:2}
#topology .node rect{fill:#fff;stroke:#7a8599;stroke-width:1.2}
#topology .node.cpu rect{fill:#eef2ff} #topology .node.host rect{fill:#f3f6fb}
#topology .node.endpoint rect{fill:#fffdf5}
#topology text{font-size:11px;text-anchor:middle;fill:#1d2330} #topology text.sub{fill:#5a6375;font-size:10px}
#topology .transfer path{fill:none;stroke-width:5;opacity:.75}
#topology .via-switch path{stroke:#1f9d55} #topology .via-rc path{stroke:#d9480f}
#topology .ats-off path{stroke-dasharray:8 5}
#topology .transfer.dim{opacity:.12}
.legend button{font:inherit;margin:0 6px 6px 0;padding:3px 8px;border:1px solid #c5ccd8;border-radius:5px;background:#fff;cursor:pointer}
.legend .sw{display:inline-block;width:22px;height:0;border-top:5px solid;vertical-align:middle;margin-right:6px}
.legend .via-switch .sw{border-color:#1f9d55} .legend .via-rc .sw{border-color:#d9480f}
.legend .ats-off .sw{border-top-style:dashed}
.timeline .lane{fill:#fff;stroke:#eef0f4} .timeline .lane-label{font-size:11px;fill:#5a6375}
.timeline .slice{fill:#4c6ef5;opacity:.7} .timeline .tick{stroke:#1d2330;stroke-width:1.2}
.timeline .axis{font-size:10px;fill:#5a6375}
h3{font-size:15px;margin:16px 0 6px} ul{margin:4px 0 8px 18px;padding:0} li{margin:2px 0}
.route-switch{color:#1f9d55;font-weight:600} .route-rc{color:#d9480f;font-weight:600}
pre.splat{background:#fff4f4;border:1px solid #f0c4c4;padding:8px;overflow-x:auto;font-size:12px}
.ok{color:#1f7a44} .bad{color:#b3261e}
`;

const SCRIPT = `
document.querySelectorAll(".legend button").forEach(function (b) {
  b.addEventListener("click", function () {
    var i = b.getAttribute("data-transfer");
    var on = b.getAttribute("aria-pressed") !== "true";
    document.querySelectorAll(".legend button").forEach(function (o) {
      o.setAttribute("aria-pressed", "false");
    });
    b.setAttribute("aria-pressed", on ? "true" : "false");
    document.querySelectorAll("#topology .transfer").forEach(function (g) {
      g.classList.toggle("dim", on && g.getAttribute("data-transfer") !== i);
    });
  });
});
`;

function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

function tableHtml(id: string, t: { headers: string[]; rows: string[][] }): string {
  return `<table id="${id}"><thead><tr>${
    t.headers.map((h) => `<th>${escapeXml(h)}</th>`).join("")
  }</tr></thead><tbody>${
    t.rows.map((row) => `<tr>${row.map((c) => `<td>${escapeXml(c)}</td>`).join("")}</tr>`).join(
      "",
    )
  }</tbody></table>`;
}

function transfersHtml(rows: readonly TransferRow[]): string {
  const body = rows.map((t) => {
    const sw = t.mapType === "BUS_ADDR";
    const route = sw
      ? "switch"
      : t.mapType === "CPU" || t.mapType === "host"
      ? "—"
      : "root complex";
    return `<tr><td>${escapeXml(t.app)}</td><td>${escapeXml(t.label)}</td><td>${
      escapeXml(t.src)
    }</td><td>${escapeXml(t.dst)}</td><td>${escapeXml(t.mapType)}</td><td class="${
      sw ? "route-switch" : "route-rc"
    }">${route}</td><td>ATS ${t.ats ? "on" : "off"}</td><td>${formatBytes(t.bytes)}</td><td>${
      t.gbps > 0 ? t.gbps.toFixed(1) : "—"
    }</td></tr>`;
  }).join("");
  return `<table id="transfers"><thead><tr><th>app</th><th>transfer</th><th>from</th><th>to</th><th>map type</th><th>via</th><th>ATS</th><th>bytes</th><th>GB/s (model)</th></tr></thead><tbody>${body}</tbody></table>`;
}

function appsHtml(apps: readonly AppSection[]): string {
  const list = (xs: readonly string[]) =>
    xs.length ? `<ul>${xs.map((x) => `<li>${escapeXml(x)}</li>`).join("")}</ul>` : "<p>none</p>";
  return `<div id="apps">${
    apps.map((a, i) =>
      `<section class="app" data-app="${i}"><h3>${escapeXml(a.title)}</h3>` +
      `<strong>steps</strong>${list(a.steps)}<strong>rules and locks checked</strong>${
        list(a.rules)
      }` +
      `<strong>costs</strong>${
        list(Object.entries(a.costs).map(([k, v]) => `${k}: ${v}`))
      }<strong>expected findings</strong>${list(a.findings)}<strong>violations</strong>${
        a.violations.length ? list(a.violations) : '<p class="ok">none</p>'
      }` +
      (a.variants ? tableHtml(`variants-${i}`, a.variants) : "") + `</section>`
    ).join("")
  }</div>`;
}

/** The whole page. */
export function reportHtml(r: RunReport): string {
  const legend = r.transfers.map((t, i) =>
    `<button type="button" class="${t.mapType === "BUS_ADDR" ? "via-switch" : "via-rc"} ${
      t.ats ? "ats-on" : "ats-off"
    }" data-transfer="${i}" aria-pressed="false"><span class="sw"></span>${
      escapeXml(
        `${t.label}: ${t.src.name} → ${t.dst?.name ?? "system RAM"} · ${t.mapType} · ATS ${
          t.ats ? "on" : "off"
        } · ${formatBytes(t.bytes)}`,
      )
    }</button>`
  ).join("");
  const table = `<table id="summary"><thead><tr>${
    r.summary.headers.map((h) => `<th>${escapeXml(h)}</th>`).join("")
  }</tr></thead><tbody>${
    r.summary.rows.map((row) => `<tr>${row.map((c) => `<td>${escapeXml(c)}</td>`).join("")}</tr>`)
      .join("")
  }</tbody></table>`;
  const splats = r.splats.length === 0
    ? `<p class="ok" id="splats">No WARN, BUG, lockdep or DMA-API-debug report.</p>`
    : `<div id="splats">${
      r.splats.map((s) => `<pre class="splat">${escapeXml(s)}</pre>`).join("")
    }</div>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeXml(r.title)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${escapeXml(r.title)}</h1>
<p class="meta">machine: ${
    escapeXml(r.fabric.name)
  } · ${r.fabric.devices.length} PCI functions · ${r.transfers.length} transfer(s) · ${r.splats.length} splat(s)</p>
<h2>Topology</h2>
<div class="panel">
<div class="legend">${legend || "<span>No transfers in this run.</span>"}</div>
${topologySvg(r.fabric, r.transfers)}
</div>
<h2>Summary</h2>
<div class="panel">${table}${
    r.stops ? `<h3>Other stops</h3>${tableHtml("stops", r.stops)}` : ""
  }</div>
${
    r.transferTable
      ? `<h2>Transfers</h2>\n<div class="panel">${transfersHtml(r.transferTable)}</div>`
      : ""
  }
<h2>Timeline</h2>
<div class="panel">${
    r.timelines
      ? r.timelines.map((t, i) =>
        `<h3>${escapeXml(t.title)}</h3>${
          timelineSvg(t.events, i === 0 ? "timeline" : `timeline-${i}`)
        }`
      ).join("\n")
      : timelineSvg(r.trace)
  }</div>
${r.apps ? `<h2>Apps</h2>\n${appsHtml(r.apps)}` : ""}
<h2>Splats</h2>
${splats}
<script>${SCRIPT}</script>
</body>
</html>
`;
}

/** Writes `dir/index.html`; returns its path. */
export async function writeReport(dir: string, r: RunReport): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir.replace(/\/$/, "")}/index.html`;
  await Deno.writeTextFile(path, reportHtml(r));
  return path;
}
