/**
 * DOC: trace exports of an app run
 *
 * `--trace FILE` writes Chrome/Perfetto trace JSON: the world's own trace
 * (tasks as tracks, tracepoints as instants, `B`/`E` slices) plus what the
 * app's recorder holds: spans (fences from emission to signal, locks held,
 * a reset, virtqueue round trips) as complete slices on their own named
 * tracks, and each DMA transfer as a slice on its issuing device's track
 * and one on its target's, joined by a flow arrow. Runs of several apps go
 * into one file, one process (pid) per app. `--ftrace FILE` writes the
 * world's trace as tracefs `trace` text, one section per app.
 *
 * @module
 */
import type { TraceEvent } from "@dmalab/kernel";
import type { AppRun } from "@dmalab/app-kit";

type ChromeEvent = Record<string, unknown>;

const TRACK_BASE = 100_000;

/** Chrome/Perfetto JSON for `runs` (one pid per run, `name` labels it). */
export function chromeTrace(runs: readonly { name: string; run: AppRun }[]): {
  traceEvents: ChromeEvent[];
  displayTimeUnit: "ns";
} {
  const traceEvents: ChromeEvent[] = [];
  let flowId = 1;
  runs.forEach(({ name, run }, i) => {
    const pid = i + 1;
    traceEvents.push({ name: "process_name", ph: "M", pid, tid: 0, args: { name } });
    for (const e of run.world.trace.chromeJson().traceEvents) traceEvents.push({ ...e, pid });
    const tracks = new Map<string, number>();
    const tid = (track: string): number => {
      let t = tracks.get(track);
      if (t === undefined) {
        t = TRACK_BASE + tracks.size;
        tracks.set(track, t);
        traceEvents.push({ name: "thread_name", ph: "M", pid, tid: t, args: { name: track } });
      }
      return t;
    };
    for (const s of run.recorder.spans) {
      traceEvents.push({
        name: s.name,
        cat: s.track.split(" ")[0],
        ph: "X",
        ts: s.startNs / 1000,
        dur: Math.max(0.001, (s.endNs - s.startNs) / 1000),
        pid,
        tid: tid(s.track),
        args: s.args,
      });
    }
    for (const t of run.recorder.transfers) {
      const args = {
        bytes: t.bytes,
        "map_type": t.mapType,
        ats: t.ats,
        gbps: Number(t.gbps.toFixed(2)),
        src: t.srcName,
        dst: t.dstName,
      };
      const dur = Math.max(0.001, t.durNs / 1000);
      const from = tid(`dma ${t.srcName}`);
      const to = tid(`dma ${t.dstName}`);
      const id = flowId++;
      traceEvents.push(
        { name: t.label, cat: "dma", ph: "X", ts: t.ns / 1000, dur, pid, tid: from, args },
        { name: t.label, cat: "dma", ph: "X", ts: t.ns / 1000, dur, pid, tid: to, args },
        { name: t.label, cat: "dma", ph: "s", id, ts: t.ns / 1000, pid, tid: from },
        { name: t.label, cat: "dma", ph: "f", bp: "e", id, ts: t.ns / 1000, pid, tid: to },
      );
    }
  });
  return { traceEvents, displayTimeUnit: "ns" };
}

/** ftrace text for `runs`, one section per run. */
export function ftraceText(runs: readonly { name: string; run: AppRun }[]): string {
  return runs.map(({ name, run }) => `# dmalab run ${name}\n${run.world.trace.ftrace()}`).join(
    "\n",
  );
}

/**
 * The run's trace as timeline events: the world's events plus the
 * recorder's spans and transfers as `B`/`E` pairs on synthetic lanes.
 */
export function timelineEvents(run: AppRun): TraceEvent[] {
  const out: TraceEvent[] = [...run.world.trace.events];
  const lanes = new Map<string, number>();
  const lane = (name: string) => {
    let p = lanes.get(name);
    if (p === undefined) {
      p = TRACK_BASE + lanes.size;
      lanes.set(name, p);
    }
    return p;
  };
  const pair = (track: string, name: string, a: number, b: number, fields = {}) => {
    const pid = lane(track);
    out.push(
      { ns: a, name, comm: track, pid, fields, phase: "B" },
      { ns: Math.max(b, a + 1), name, comm: track, pid, fields, phase: "E" },
    );
  };
  for (const s of run.recorder.spans) pair(s.track, s.name, s.startNs, s.endNs, s.args);
  for (const t of run.recorder.transfers) {
    pair(`dma ${t.srcName}`, t.label, t.ns, t.ns + t.durNs, { bytes: t.bytes, to: t.dstName });
  }
  return out.sort((x, y) => x.ns - y.ns);
}
