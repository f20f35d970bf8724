/**
 * DOC: trace events
 *
 * Trace events named as the kernel's tracepoints (`sched_switch`,
 * `dma_fence_signaled`, ...), with their fields. A world records events only
 * while tracing is enabled (`world.trace.enable()`), so hot paths pay one
 * branch otherwise. Two exports: ftrace text as `trace` in tracefs prints it,
 * and Chrome/Perfetto trace JSON (tasks as tracks; `B`/`E` pairs as slices;
 * flow events for transfers between tasks or devices).
 *
 * @module
 */

/** Values a trace field may hold. */
export type TraceValue = string | number | boolean | bigint;

/** One recorded event. */
export interface TraceEvent {
  /** Virtual time in ns. */
  readonly ns: number;
  /** Tracepoint name (`dma_fence_signaled`). */
  readonly name: string;
  /** Task name (`comm`) or `<idle>`. */
  readonly comm: string;
  /** Task id (`pid`), 0 for the scheduler itself. */
  readonly pid: number;
  /** Fields in tracepoint order. */
  readonly fields: Readonly<Record<string, TraceValue>>;
  /** Slice phase for Chrome export: begin, end, instant, flow start/end. */
  readonly phase: "B" | "E" | "i" | "s" | "f";
  /** Flow or slice id where `phase` needs one. */
  readonly id?: number;
}

/** Where the recorder gets the current time and task from. */
export interface TraceContext {
  /** Current virtual time in ns. */
  now(): number;
  /** The running task's comm and pid. */
  current(): { comm: string; pid: number };
}

function formatField(v: TraceValue): string {
  return typeof v === "bigint" ? `0x${v.toString(16)}` : String(v);
}

/**
 * The trace buffer of one world.
 *
 * @example
 * ```ts
 * import { Tracer } from "@dmalab/kernel";
 * const t = new Tracer({ now: () => 1500, current: () => ({ comm: "kworker", pid: 3 }) });
 * t.enable();
 * t.event("dma_fence_signaled", { driver: "gpu", timeline: "gfx", context: 1, seqno: 2 });
 * t.ftrace().includes("dma_fence_signaled: driver=gpu"); // true
 * ```
 */
export class Tracer {
  readonly #events: TraceEvent[] = [];
  readonly #ctx: TraceContext;
  #enabled = false;
  #limit = 1_000_000;

  /** Records against `ctx`'s clock and current task. */
  constructor(ctx: TraceContext) {
    this.#ctx = ctx;
  }

  /** Starts recording; `limit` caps the buffer (oldest kept, newest dropped, as an overrun). */
  enable(limit = 1_000_000): void {
    this.#enabled = true;
    this.#limit = limit;
  }

  /** Stops recording. */
  disable(): void {
    this.#enabled = false;
  }

  /** True while recording. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Every event recorded. */
  get events(): readonly TraceEvent[] {
    return this.#events;
  }

  /** Records an instant event (a tracepoint hit). */
  event(name: string, fields: Record<string, TraceValue> = {}): void {
    this.#push(name, fields, "i");
  }

  /** Opens a slice (a lock held, a fence pending, a DMA in flight). */
  begin(name: string, fields: Record<string, TraceValue> = {}, id?: number): void {
    this.#push(name, fields, "B", id);
  }

  /** Closes the slice opened by the matching {@linkcode Tracer.begin}. */
  end(name: string, fields: Record<string, TraceValue> = {}, id?: number): void {
    this.#push(name, fields, "E", id);
  }

  /** Records one end of a flow (`s` start, `f` finish) with a shared id. */
  flow(name: string, phase: "s" | "f", id: number, fields: Record<string, TraceValue> = {}): void {
    this.#push(name, fields, phase, id);
  }

  #push(
    name: string,
    fields: Record<string, TraceValue>,
    phase: TraceEvent["phase"],
    id?: number,
  ): void {
    if (!this.#enabled || this.#events.length >= this.#limit) return;
    const { comm, pid } = this.#ctx.current();
    const ev: TraceEvent = id === undefined
      ? { ns: this.#ctx.now(), name, comm, pid, fields, phase }
      : { ns: this.#ctx.now(), name, comm, pid, fields, phase, id };
    this.#events.push(ev);
  }

  /** The buffer as tracefs `trace` prints it. */
  ftrace(): string {
    const lines = [
      "# tracer: nop",
      "#",
      "#           TASK-PID     CPU#  TIMESTAMP  FUNCTION",
      "#              | |         |      |         |",
    ];
    for (const e of this.#events) {
      const task = `${e.comm}-${e.pid}`.padStart(22, " ");
      const secs = (e.ns / 1e9).toFixed(6).padStart(12, " ");
      const fields = Object.entries(e.fields).map(([k, v]) => `${k}=${formatField(v)}`).join(" ");
      const tag = e.phase === "B" ? " begin" : e.phase === "E" ? " end" : "";
      lines.push(`${task} [000] ..... ${secs}: ${e.name}${tag}: ${fields}`);
    }
    return lines.join("\n") + "\n";
  }

  /** The buffer as Chrome/Perfetto trace JSON (`traceEvents`, µs timestamps). */
  chromeJson(): { traceEvents: Record<string, unknown>[]; displayTimeUnit: "ns" } {
    const traceEvents: Record<string, unknown>[] = [];
    const named = new Set<number>();
    for (const e of this.#events) {
      if (!named.has(e.pid)) {
        named.add(e.pid);
        traceEvents.push({
          name: "thread_name",
          ph: "M",
          pid: 1,
          tid: e.pid,
          args: { name: e.comm },
        });
      }
      const args: Record<string, string | number | boolean> = {};
      for (const [k, v] of Object.entries(e.fields)) {
        args[k] = typeof v === "bigint" ? `0x${v.toString(16)}` : v;
      }
      const base: Record<string, unknown> = {
        name: e.name,
        cat: e.name.split("_")[0],
        ph: e.phase,
        ts: e.ns / 1000,
        pid: 1,
        tid: e.pid,
        args,
      };
      if (e.phase === "i") base.s = "t";
      if (e.id !== undefined) base.id = e.id;
      if (e.phase === "f") base.bp = "e";
      traceEvents.push(base);
    }
    return { traceEvents, displayTimeUnit: "ns" };
  }

  /** Drops every event. */
  clear(): void {
    this.#events.length = 0;
  }
}
