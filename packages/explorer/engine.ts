/**
 * DOC: one run of a scenario under a strategy
 *
 * {@linkcode runScenario} builds a fresh world, installs a
 * {@linkcode ChooserPolicy} and the scheduler's step observer, and runs the
 * scenario's tasks to the end. At every scheduling point (forced or chosen)
 * the engine, in this order: checks the scenario's invariants and
 * `world.check()` against the state the previous step left; records what the
 * current task does next (the point's object and access, for partial-order
 * reduction); notes whether the previous step made a task runnable that was
 * not; folds the state fingerprint into the distinct-state set; and asks the
 * {@linkcode Strategy} which task runs. A strategy may prune the run; an
 * invariant violation or an over-long run ends it as a failure
 * ({@linkcode Scheduler.abort}).
 *
 * Everything here runs synchronously inside the scheduler's decision, so the
 * engine needs no locking: one run, one world, one task at a time.
 *
 * @module
 */
import {
  ChooserPolicy,
  type Kernel,
  Kernel as KernelCtor,
  KernelBug,
  KernelError,
  type PickContext,
  type Task,
} from "@dmalab/kernel";
import type { Scenario } from "./scenario.ts";

/** What a step touches, from the point that starts it: 0 unknown (touches everything), 1 read, 2 write. */
export type AccessCode = 0 | 1 | 2;

/** Returned by {@linkcode Strategy.decide} to abandon a run (it adds nothing new). */
export const PRUNE: -1 = -1;

/**
 * The engine's view of one scheduling point, handed to the strategy. One
 * object is reused for every point of a run: read it, do not keep it.
 */
export interface PointView {
  /** The scheduler's decision context. */
  readonly ctx: PickContext;
  /** Decision points (more than one runnable task) before this one in the run. */
  readonly index: number;
  /** More than one task is runnable: a decision is recorded. */
  readonly choice: boolean;
  /** The previous step made a task runnable that was not runnable before it (a wake-up or spawn). */
  readonly woke: boolean;
  /** The current task reached a voluntary preemption point and is still runnable. */
  readonly preemptible: boolean;
  /** The pid the default policy runs: the current task if preemptible, else the first runnable. */
  readonly defaultPid: number;
  /** The run's engine (pending-step information of every task). */
  readonly run: RunEngine;
}

/** Picks the task to run at each point of a run. */
export interface Strategy {
  /**
   * Returns the pid of a runnable task (for a forced point, the only one) or
   * {@linkcode PRUNE}.
   */
  decide(p: PointView): number;
}

/** Why a run failed. */
export interface Failure {
  /**
   * `deadlock`, `lockdep`, another {@linkcode KernelBug} kind, `invariant`
   * (a scenario invariant or `world.check()` at some point), `check` (the
   * scenario's end-of-run check), `livelock`, `error` (a {@linkcode KernelError}
   * escaped a task) or `exception` (any other exception).
   */
  readonly kind: string;
  /** One line. */
  readonly message: string;
  /** The full report (the splat as dmesg shows it, or the violations). */
  readonly report: string;
  /** The task whose exception ended the run, as `name-pid`, when there is one. */
  readonly task?: string;
}

/** One step of a logged run: which task ran, from which point. */
export interface LoggedStep {
  /** The task, as `name-pid`. */
  readonly task: string;
  /** Its pid. */
  readonly pid: number;
  /** The label of the point the step starts at (`start` for a task's first step). */
  readonly step: string;
  /** The task switched away from at a preemption point to run this step, or null. */
  readonly preempted: string | null;
}

/**
 * The steps of a run laid out one column per task, in the order they ran
 * (as lockdep lays out its unsafe scenario), with preemptions marked.
 *
 * @example
 * ```ts
 * import { formatInterleaving } from "@dmalab/explorer";
 * const text = formatInterleaving([
 *   { task: "a-1", pid: 1, step: "load", preempted: null },
 *   { task: "b-2", pid: 2, step: "load", preempted: "a-1" },
 * ]);
 * text.includes("preempts a-1"); // true
 * ```
 */
export function formatInterleaving(log: readonly LoggedStep[]): string {
  const pids: number[] = [];
  const names = new Map<number, string>();
  for (const e of log) {
    if (!names.has(e.pid)) {
      names.set(e.pid, e.task);
      pids.push(e.pid);
    }
  }
  pids.sort((a, b) => a - b);
  const col = new Map(pids.map((p, i) => [p, i]));
  const width = pids.map((p) => {
    let w = names.get(p)!.length;
    for (const e of log) if (e.pid === p) w = Math.max(w, Math.min(e.step.length, 40));
    return w + 2;
  });
  const row = (cells: string[]): string =>
    cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(width[i]!)).join("").trimEnd();
  const lines = [
    row(pids.map((p) => names.get(p)!)),
    row(pids.map((_, i) => "-".repeat(width[i]! - 2))),
  ];
  for (const e of log) {
    const cells = pids.map(() => "");
    const text = e.step.length > 40 ? e.step.slice(0, 39) + "~" : e.step;
    cells[col.get(e.pid)!] = text;
    let line = row(cells);
    if (e.preempted) line += `    <- preempts ${e.preempted}`;
    lines.push(line);
  }
  return lines.join("\n") + "\n";
}

/** The outcome of one run. */
export interface RunOutcome {
  /** Pid chosen at each decision point, in order. */
  readonly decisions: number[];
  /** Whether each decision was the default one. */
  readonly defaults: boolean[];
  /** Decisions that switched away from a task still runnable at a preemption point. */
  readonly preemptions: number;
  /** Scheduling points passed (forced and chosen). */
  readonly steps: number;
  /** Null when the run was clean or pruned. */
  readonly failure: Failure | null;
  /** The strategy abandoned the run. */
  readonly pruned: boolean;
  /** The run's world (its dmesg and trace, for reports). */
  readonly world: Kernel;
  /** Every step, when logged (see {@linkcode RunOptions.log}). */
  readonly log: readonly LoggedStep[] | null;
}

/** Options for {@linkcode runScenario}. */
export interface RunOptions {
  /** Record trace events (`world.trace.enable()` before build). Default false. */
  trace?: boolean;
  /** Scheduling points allowed before the run counts as a livelock. Default 100,000. */
  maxSteps?: number;
  /** Keep a log of every step (on with `trace`). Default false. */
  log?: boolean;
  /** Set to add state fingerprints to (none counted when omitted). */
  states?: Set<number>;
  /** Count states only at points with `index >= statesFrom` (the replayed prefix is known). Default 0. */
  statesFrom?: number;
  /** Label interning table shared across runs (for fingerprints). */
  labels?: Map<string, number>;
  /**
   * One foreign-await watchdog for many runs: the run's world then arms no
   * timer of its own (see {@linkcode StallGuard}).
   */
  guard?: StallGuard;
}

/**
 * One zero-delay timer watching a sequence of runs for a task that awaits
 * something the scheduler never resolves (a real timer, I/O, a foreign
 * promise). Runs driven back to back are pure microtask chains, so the timer
 * fires only when a run is stuck; it then ends that run with the
 * scheduler's foreign-await report ({@linkcode Scheduler.reportStall}).
 * Saves each run its own timer, which costs about as much as a short run.
 *
 * @example
 * ```ts
 * import { StallGuard } from "@dmalab/explorer";
 * const guard = new StallGuard();
 * guard.start();
 * guard.stop();
 * ```
 */
export class StallGuard {
  #timer: ReturnType<typeof setTimeout> | null = null;
  #world: Kernel | null = null;
  #active = false;

  /** Arms the timer. */
  start(): void {
    this.#active = true;
    this.#arm();
  }

  #arm(): void {
    if (this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#world?.sched.reportStall();
      if (this.#active) this.#arm();
    }, 0);
  }

  /** Watches `world`'s run instead of the world's own watchdog (null: no run). */
  watch(world: Kernel | null): void {
    if (world) world.sched.watchdog = false;
    this.#world = world;
  }

  /** Clears the timer. */
  stop(): void {
    this.#active = false;
    this.#world = null;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

// Plain classes, not Errors: a stack trace costs about as much as a short run,
// and these end many runs of an exploration.
class InvariantViolation {
  readonly violations: string[];
  constructor(violations: string[]) {
    this.violations = violations;
  }
}

class Livelock {
  readonly message: string;
  constructor(message: string) {
    this.message = message;
  }
}

const PRUNED: unique symbol = Symbol("pruned");

function mix(h: number, v: number): number {
  h = Math.imul(h ^ v, 0x85ebca6b);
  return (h << 13) | (h >>> 19);
}

function hashString(s: string, seed: number): number {
  let h = seed | 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h;
}

const STATE_CODE: Record<string, number> = { new: 1, runnable: 2, running: 3, blocked: 4, done: 5 };

/**
 * The per-run machinery: pending step information per task, decision log,
 * invariant checks. Created by {@linkcode runScenario}.
 */
export class RunEngine {
  /** The world of this run. */
  readonly world: Kernel;
  /** Decisions taken (pids). */
  readonly decisions: number[] = [];
  /** Whether each decision was the default one. */
  readonly defaults: boolean[] = [];
  /** Preemptions so far. */
  preemptions = 0;
  /** Scheduling points so far. */
  steps = 0;
  readonly #scenario: Scenario;
  readonly #state: { value: unknown };
  readonly #strategy: Strategy;
  readonly #maxSteps: number;
  readonly #states: Set<number> | null;
  readonly #statesFrom: number;
  readonly #labels: Map<string, number>;
  readonly #pendObj: number[] = [];
  readonly #pendAcc: AccessCode[] = [];
  readonly #pendLabel: number[] = [];
  readonly #seen: number[] = [];
  #lastCtx: PickContext | null = null;
  readonly #log: LoggedStep[] | null;
  #labelNames: string[] | null = null;
  #lastChoice: Task | null = null;
  #pointNo = 0;
  readonly #view: {
    ctx: PickContext;
    index: number;
    choice: boolean;
    woke: boolean;
    preemptible: boolean;
    defaultPid: number;
    run: RunEngine;
  };

  /** Wires a run; see {@linkcode runScenario}. */
  constructor(
    world: Kernel,
    scenario: Scenario,
    state: { value: unknown },
    strategy: Strategy,
    options: RunOptions,
  ) {
    this.world = world;
    this.#scenario = scenario;
    this.#state = state;
    this.#strategy = strategy;
    this.#maxSteps = options.maxSteps ?? 100_000;
    this.#states = options.states ?? null;
    this.#statesFrom = options.statesFrom ?? 0;
    this.#labels = options.labels ?? new Map();
    this.#log = options.log || options.trace ? [] : null;
    this.#view = {
      ctx: null as unknown as PickContext,
      index: 0,
      choice: false,
      woke: false,
      preemptible: false,
      defaultPid: 0,
      run: this,
    };
  }

  /**
   * True when the pending step of task `pid` commutes with a step that
   * touches `object` with access `access` (0 unknown: never commutes).
   */
  commutes(pid: number, object: number, access: AccessCode): boolean {
    const a = this.#pendAcc[pid] ?? 0;
    if (a === 0 || access === 0) return false;
    if (this.#pendObj[pid] !== object) return true;
    return a === 1 && access === 1;
  }

  /** Object id the pending step of task `pid` touches (undefined: unknown). */
  pendingObject(pid: number): number | undefined {
    return this.#pendAcc[pid] ? this.#pendObj[pid] : undefined;
  }

  /** Access code of the pending step of task `pid` (0 unknown). */
  pendingAccess(pid: number): AccessCode {
    return this.#pendAcc[pid] ?? 0;
  }

  /**
   * True when the pending steps of tasks `a` and `b` commute: both declare
   * an object and they differ, or both only read it.
   */
  independent(a: number, b: number): boolean {
    const aa = this.#pendAcc[a] ?? 0;
    const ab = this.#pendAcc[b] ?? 0;
    if (aa === 0 || ab === 0) return false;
    if (this.#pendObj[a] !== this.#pendObj[b]) return true;
    return aa === 1 && ab === 1;
  }

  #labelName(id: number): string {
    if (this.#labelNames === null || this.#labelNames.length < this.#labels.size + 1) {
      this.#labelNames = [];
      for (const [name, n] of this.#labels) this.#labelNames[n] = name;
    }
    return this.#labelNames[id] ?? "?";
  }

  /** Every step of the run, when {@linkcode RunOptions.log} is on (else null). */
  get log(): readonly LoggedStep[] | null {
    return this.#log;
  }

  #label(s: string): number {
    let id = this.#labels.get(s);
    if (id === undefined) {
      id = this.#labels.size + 1;
      this.#labels.set(s, id);
    }
    return id;
  }

  /** The scheduler's policy hook. */
  pick(ctx: PickContext): Task {
    this.#lastCtx = ctx;
    const pid = this.#point(ctx, true);
    const t = pid > 0 ? ctx.runnable.find((r) => r.pid === pid) : undefined;
    if (t === undefined) {
      if (pid !== PRUNE && !this.#failed) {
        this.#abort(new Error(`strategy chose pid ${pid}, which is not runnable`));
      }
      return ctx.runnable[0]!;
    }
    this.#lastChoice = t;
    return t;
  }

  /** The scheduler's step observer: handles forced points (the policy was not asked). */
  observe(ctx: PickContext, next: Task): void {
    if (ctx === this.#lastCtx) {
      this.#lastCtx = null;
      return;
    }
    const pid = this.#point(ctx, false);
    if (pid !== next.pid && !this.#failed) {
      if (pid !== PRUNE) this.#abort(new Error(`strategy chose pid ${pid} at a forced point`));
      else this.#abort(PRUNED);
    }
  }

  #failed = false;

  #abort(reason: unknown): void {
    this.#failed = true;
    this.world.sched.abort(reason);
  }

  #point(ctx: PickContext, choice: boolean): number {
    if (this.#failed) return PRUNE;
    // Runs inside the scheduler's decision: an exception from a scenario
    // check or a strategy ends the run as a failure instead of escaping there.
    try {
      return this.#pointChecked(ctx, choice);
    } catch (e) {
      this.#abort(e);
      return PRUNE;
    }
  }

  #pointChecked(ctx: PickContext, choice: boolean): number {
    this.steps++;
    if (this.steps > this.#maxSteps) {
      this.#abort(
        new Livelock(`livelock: more than ${this.#maxSteps} scheduling points in one run`),
      );
      return PRUNE;
    }
    // 1. invariants, against the state the previous step left
    const sc = this.#scenario;
    let bad: string[] | null = null;
    if (sc.invariants) {
      const v = sc.invariants(this.world, this.#state.value);
      if (v.length) bad = v;
    }
    const wv = this.world.check();
    if (wv.length) bad = bad ? bad.concat(wv) : wv;
    if (bad) {
      this.#abort(new InvariantViolation(bad));
      return PRUNE;
    }
    // 2. what the current task does next
    const cur = ctx.current;
    const point = ctx.point;
    if (cur !== null && cur.pid > 0) {
      const pid = cur.pid;
      if (point.reason === "preempt" && point.object !== undefined) {
        this.#pendObj[pid] = point.object;
        this.#pendAcc[pid] = point.access === "read" ? 1 : 2;
      } else {
        this.#pendAcc[pid] = 0;
      }
      this.#pendLabel[pid] = this.#label(point.label);
    }
    // 3. did the previous step make a task runnable?
    const no = ++this.#pointNo;
    const runnable = ctx.runnable;
    let woke = false;
    for (let i = 0; i < runnable.length; i++) {
      const pid = runnable[i]!.pid;
      if (this.#seen[pid] !== no - 1) woke = true;
      this.#seen[pid] = no;
    }
    // 4. distinct states
    const index = this.decisions.length;
    if (this.#states !== null && index >= this.#statesFrom) this.#fingerprint();
    // 5. decide
    const preemptible = point.reason === "preempt" && cur !== null && runnable[0] === cur;
    const defaultPid = runnable[0]!.pid;
    const v = this.#view;
    v.ctx = ctx;
    v.index = index;
    v.choice = choice;
    v.woke = woke;
    v.preemptible = preemptible;
    v.defaultPid = defaultPid;
    const pid = this.#strategy.decide(v);
    if (pid === PRUNE) {
      this.#abort(PRUNED);
      return PRUNE;
    }
    if (this.#log !== null) {
      let task: Task | undefined;
      for (let i = 0; i < runnable.length; i++) if (runnable[i]!.pid === pid) task = runnable[i];
      const lab = this.#pendLabel[pid];
      this.#log.push({
        task: String(task),
        pid,
        step: lab === undefined ? "start" : this.#labelName(lab),
        preempted: preemptible && pid !== defaultPid ? String(cur) : null,
      });
    }
    if (choice) {
      this.decisions.push(pid);
      this.defaults.push(pid === defaultPid);
      if (preemptible && pid !== defaultPid) this.preemptions++;
      if (this.world.trace.enabled) {
        const fields: Record<string, string | number> = {
          decision: index,
          point: point.label,
          "next_pid": pid,
          runnable: runnable.map((t) => t.pid).join(","),
        };
        if (point.object !== undefined) fields.object = point.object;
        if (point.access !== undefined) fields.access = point.access;
        this.world.trace.event("explorer_decision", fields);
      }
    }
    return pid;
  }

  #fingerprint(): void {
    let h1 = 0x9e3779b9;
    let h2 = 0x7f4a7c15;
    for (const t of this.world.sched.tasks) {
      const code = (t.pid << 3) | (STATE_CODE[t.state] ?? 0);
      const lab = t.state === "done" ? 0 : this.#pendLabel[t.pid] ?? 0;
      h1 = mix(mix(h1, code), lab);
      h2 = mix(mix(h2, lab), code);
    }
    const fp = this.#scenario.fingerprint?.(this.world, this.#state.value);
    if (fp !== undefined) {
      if (typeof fp === "number") {
        h1 = mix(h1, fp | 0);
        h2 = mix(h2, (fp / 4294967296) | 0);
      } else {
        h1 = mix(h1, hashString(fp, 0x811c9dc5));
        h2 = mix(h2, hashString(fp, 0x01234567));
      }
    }
    // 53 bits: 32 from h1 and 21 from h2
    this.#states!.add((h1 >>> 0) + (h2 & 0x1fffff) * 4294967296);
  }

  /** The last task chosen at a decision point (null before the first). */
  get lastChoice(): Task | null {
    return this.#lastChoice;
  }
}

function classify(world: Kernel, e: unknown): Failure {
  let task: string | undefined;
  for (const t of world.sched.tasks) {
    if (t.error === e) task = String(t);
  }
  const withTask = (f: Failure): Failure => task === undefined ? f : { ...f, task };
  if (e instanceof InvariantViolation) {
    return {
      kind: "invariant",
      message: e.violations[0]!,
      report: e.violations.join("\n"),
    };
  }
  if (e instanceof Livelock) return { kind: "livelock", message: e.message, report: e.message };
  if (e instanceof KernelBug) {
    return withTask({ kind: e.kind, message: e.message, report: e.report });
  }
  if (e instanceof KernelError) {
    return withTask({ kind: "error", message: e.message, report: e.stack ?? e.message });
  }
  if (e instanceof Error) {
    return withTask({ kind: "exception", message: e.message, report: e.stack ?? e.message });
  }
  return withTask({ kind: "exception", message: String(e), report: String(e) });
}

/**
 * Runs `scenario` once on a fresh world, with `strategy` choosing at every
 * point. Resolves to the outcome; never rejects for a failure of the
 * scenario (that is the outcome's `failure`).
 *
 * @example
 * ```ts
 * import { PRUNE, runScenario, type Scenario } from "@dmalab/explorer";
 * const sc: Scenario = {
 *   name: "two",
 *   description: "two tasks",
 *   build(world) {
 *     for (const n of ["a", "b"]) world.spawn(n, async () => { await world.sched.preempt("p"); });
 *   },
 * };
 * const out = await runScenario(sc, { decide: (p) => p.defaultPid });
 * out.failure; // null
 * out.decisions.length > 0; // true
 * PRUNE; // -1
 * ```
 */
export async function runScenario(
  // deno-lint-ignore no-explicit-any
  scenario: Scenario<any>,
  strategy: Strategy,
  options: RunOptions = {},
): Promise<RunOutcome> {
  let engine: RunEngine | null = null;
  const policy = new ChooserPolicy("explorer", (ctx) => engine!.pick(ctx));
  const world = new KernelCtor({ ...(scenario.worldOptions ?? {}), policy });
  const state = { value: undefined as unknown };
  engine = new RunEngine(world, scenario, state, strategy, options);
  const e = engine;
  world.sched.observer = (ctx, next) => e.observe(ctx, next);
  if (options.trace) world.trace.enable();
  options.guard?.watch(world);
  let failure: Failure | null = null;
  let pruned = false;
  try {
    state.value = scenario.build(world);
    await world.run();
  } catch (err) {
    if (err === PRUNED) pruned = true;
    else failure = classify(world, err);
  } finally {
    world.sched.observer = null;
    options.guard?.watch(null);
  }
  if (!pruned && failure === null) {
    try {
      failure = endOfRun(world, scenario, state.value);
    } catch (err) {
      failure = classify(world, err);
    }
  }
  if (failure !== null && world.trace.enabled) {
    world.trace.event("explorer_failure", { kind: failure.kind, message: failure.message });
  }
  return {
    decisions: e.decisions,
    defaults: e.defaults,
    preemptions: e.preemptions,
    steps: e.steps,
    failure,
    pruned,
    world,
    log: e.log,
  };
}

function endOfRun(world: Kernel, scenario: Scenario, state: unknown): Failure | null {
  const inv = scenario.invariants?.(world, state) ?? [];
  const wc = world.check();
  const bad = inv.concat(wc);
  if (bad.length) return { kind: "invariant", message: bad[0]!, report: bad.join("\n") };
  if (world.bugs.length) {
    const b = world.bugs[0]!;
    return {
      kind: b.kind,
      message: b.summary,
      report: world.dmesg.text(),
    };
  }
  const end = scenario.check?.(world, state) ?? [];
  if (end.length) return { kind: "check", message: end[0]!, report: end.join("\n") };
  return null;
}
