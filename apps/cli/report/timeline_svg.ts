/**
 * DOC: timeline SVG
 *
 * A run's trace as a timeline: one lane per task (the scheduler's tasks are
 * the tracks), slices for begin/end pairs (locks held, fences pending, DMA
 * in flight), ticks for instant events. Virtual time runs left to right.
 * Each mark carries an SVG `<title>`, so hovering shows the event.
 *
 * @module
 */
import type { TraceEvent } from "@dmalab/kernel";
import { escapeXml } from "./topology_svg.ts";

const LANE_H = 22;
const LABEL_W = 140;
const WIDTH = 1000;

/**
 * Renders `events` as an SVG timeline (empty-state text when there are
 * none); `id` names the element (several timelines share the class
 * `timeline`). Lanes with pid >= 100000 are recorder tracks (fences, locks,
 * DMA engines) and are labelled by name only.
 */
export function timelineSvg(events: readonly TraceEvent[], id = "timeline"): string {
  if (events.length === 0) {
    return `<p class="empty timeline" id="${id}">No trace events were recorded for this run.</p>`;
  }
  const lanes = [...new Map(events.map((e) => [e.pid, e.comm])).entries()];
  const laneOf = new Map(lanes.map(([pid], i) => [pid, i]));
  const t0 = events[0]!.ns;
  const t1 = Math.max(events[events.length - 1]!.ns, t0 + 1);
  const x = (ns: number) => LABEL_W + ((ns - t0) / (t1 - t0)) * (WIDTH - LABEL_W - 10);
  const height = lanes.length * LANE_H + 24;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" id="${id}" class="timeline" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" role="img" aria-label="timeline">`,
  ];
  lanes.forEach(([pid, comm], i) => {
    const y = i * LANE_H;
    parts.push(
      `<rect class="lane" x="0" y="${y}" width="${WIDTH}" height="${LANE_H}"/>` +
        `<text class="lane-label" x="4" y="${y + 15}">${
          escapeXml(pid >= 100_000 ? comm.slice(0, 22) : `${comm}-${pid}`)
        }</text>`,
    );
  });
  const open = new Map<string, TraceEvent[]>();
  const describe = (e: TraceEvent) =>
    escapeXml(
      `${(e.ns / 1000).toFixed(3)} µs ${e.comm}-${e.pid} ${e.name} ${
        Object.entries(e.fields).map(([k, v]) => `${k}=${String(v)}`).join(" ")
      }`,
    );
  for (const e of events) {
    const y = laneOf.get(e.pid)! * LANE_H;
    const key = `${e.pid}:${e.name}:${e.id ?? ""}`;
    if (e.phase === "B") {
      const stack = open.get(key) ?? [];
      stack.push(e);
      open.set(key, stack);
    } else if (e.phase === "E") {
      const b = open.get(key)?.pop();
      if (b) {
        const w = Math.max(2, x(e.ns) - x(b.ns));
        parts.push(
          `<rect class="slice" x="${x(b.ns)}" y="${y + 4}" width="${w}" height="${
            LANE_H - 8
          }"><title>${describe(b)}</title></rect>`,
        );
      }
    } else {
      parts.push(
        `<line class="tick ${e.phase === "i" ? "instant" : "flow"}" x1="${x(e.ns)}" x2="${
          x(e.ns)
        }" y1="${y + 3}" y2="${y + LANE_H - 3}"><title>${describe(e)}</title></line>`,
      );
    }
  }
  parts.push(
    `<text class="axis" x="${LABEL_W}" y="${height - 6}">${(t0 / 1000).toFixed(1)} µs</text>`,
    `<text class="axis" x="${WIDTH - 10}" y="${height - 6}" text-anchor="end">${
      (t1 / 1000).toFixed(1)
    } µs</text>`,
    "</svg>",
  );
  return parts.join("\n");
}
