/**
 * DOC: exploration strategies
 *
 * Three ways to choose at the decision points of a run:
 *
 * - {@linkcode DfsStrategy}: systematic depth-first search over decisions
 *   with stateless re-execution (each run replays the prefix up to the
 *   deepest decision with an untried alternative, then branches), a
 *   preemption bound (iterative context bounding, CHESS: switching away from
 *   a task still runnable at a preemption point costs one preemption) and
 *   sleep sets (Godefroid) over the (object, access) each point declares.
 *   A step that made another task runnable (a wake-up or spawn) or ended
 *   in a sleep empties the sleep set: it synchronised with another task
 *   through state its point does not name (the holder's unlock, a wait
 *   queue), so it is not reordered. With `dpor`, a decision only tries the
 *   tasks that the race analysis of executed runs asks for (Flanagan and
 *   Godefroid's DPOR, with the extra backtrack points of bounded POR).
 * - {@linkcode PctStrategy}: probabilistic concurrency testing (Burckhardt,
 *   Kothari, Musuvathi, Nagarakatte, ASPLOS 2010): random distinct task
 *   priorities, the highest-priority runnable task runs, and at d-1 random
 *   change points among the k decisions the running task drops below all
 *   others. A bug of depth d is found with probability at least 1/(n k^(d-1)).
 * - {@linkcode ReplayStrategy}: follows a schedule, then the default policy.
 *
 * Strategies run inside the scheduler's decision and never throw there: a
 * problem (a replay that does not match) is recorded and the run pruned.
 *
 * @module
 */
import { Prng } from "@dmalab/kernel";
import { type AccessCode, type PointView, PRUNE, type Strategy } from "./engine.ts";

interface Frame {
  /** Runnable pids in scheduler order (the default first). */
  readonly runnable: number[];
  /** Whether choosing other than runnable[0] is a preemption. */
  readonly preemptible: boolean;
  /** Tasks asleep at this decision. */
  readonly sleep: number[];
  /** Choices tried here, the current one last. */
  readonly done: number[];
  chosen: number;
  readonly preemptionsBefore: number;
  /** DPOR: the choices worth trying here (null: every choice). */
  readonly backtrack: number[] | null;
}

interface Step {
  readonly pid: number;
  readonly obj: number;
  acc: AccessCode;
  /** Decision index of the point before the step, or -1 for a forced point. */
  readonly frame: number;
}

function dependent(a: Step, b: Step): boolean {
  if (a.acc === 0 || b.acc === 0) return true;
  if (a.obj !== b.obj) return false;
  return a.acc === 2 || b.acc === 2;
}

/** Options for {@linkcode DfsStrategy}. */
export interface DfsOptions {
  /** Most preemptions in one schedule. Default 2. */
  bound?: number;
  /** Sleep-set partial-order reduction. Default true. */
  por?: boolean;
  /**
   * Dynamic partial-order reduction on top (Flanagan and Godefroid, POPL
   * 2005, with the bounded-POR extra backtrack points of Coons, Musuvathi and
   * McKinley, OOPSLA 2013): a decision tries another task only where a race
   * in an executed run calls for it. Default false.
   */
  dpor?: boolean;
}

/**
 * Preemption-bounded depth-first search with sleep sets. Drive it with
 * {@linkcode runScenario}, then call {@linkcode DfsStrategy.backtrack}
 * until it returns false.
 *
 * @example
 * ```ts
 * import { DfsStrategy, runScenario, type Scenario } from "@dmalab/explorer";
 * const sc: Scenario = {
 *   name: "pair",
 *   description: "two tasks, one point each",
 *   build(world) {
 *     for (const n of ["a", "b"]) world.spawn(n, async () => { await world.sched.preempt("p"); });
 *   },
 * };
 * const dfs = new DfsStrategy({ bound: 1 });
 * let runs = 0;
 * do {
 *   await runScenario(sc, dfs);
 *   runs++;
 * } while (dfs.backtrack());
 * runs > 1; // true
 * ```
 */
export class DfsStrategy implements Strategy {
  /** The preemption bound. */
  readonly bound: number;
  /** Whether sleep sets are on. */
  readonly por: boolean;
  /** Whether DPOR is on. */
  readonly dpor: boolean;
  #steps: Step[] = [];
  readonly #frames: Frame[] = [];
  #branch = -1;
  #sleep: number[] = [];
  #last = 0;
  #lastObj = -1;
  #lastAcc: AccessCode = 0;
  #preemptions = 0;
  #mismatch: string | null = null;

  /** See {@linkcode DfsOptions}. */
  constructor(options: DfsOptions = {}) {
    this.bound = options.bound ?? 2;
    this.por = options.por ?? true;
    this.dpor = options.dpor ?? false;
    if (!Number.isInteger(this.bound) || this.bound < 0) {
      throw new RangeError(`DfsStrategy: bound must be a non-negative integer, got ${this.bound}`);
    }
  }

  /**
   * The first decision index whose states the current run discovers (the
   * replayed prefix was seen before).
   */
  get statesFrom(): number {
    return this.#branch + 1;
  }

  /** Set when a replayed prefix did not see the runnable set it recorded (a nondeterministic scenario). */
  get mismatch(): string | null {
    return this.#mismatch;
  }

  #capture(p: PointView, pid: number): void {
    this.#last = pid;
    this.#lastObj = p.run.pendingObject(pid) ?? -1;
    this.#lastAcc = p.run.pendingAccess(pid);
  }

  /** Chooses at one point (see {@linkcode Strategy.decide}). */
  decide(p: PointView): number {
    if (!this.dpor) return this.#choose(p);
    const steps = this.#steps;
    // the previous step synchronised through undeclared state: it conflicts with all
    if (steps.length && (p.woke || p.ctx.point.reason === "block")) {
      steps[steps.length - 1]!.acc = 0;
    }
    const pid = this.#choose(p);
    if (pid !== PRUNE) {
      steps.push({
        pid,
        obj: p.run.pendingObject(pid) ?? -1,
        acc: p.run.pendingAccess(pid),
        frame: p.choice ? p.index : -1,
      });
    }
    return pid;
  }

  #choose(p: PointView): number {
    const idx = p.index;
    const branch = this.#branch;
    if (idx < branch || (idx === branch && !p.choice)) {
      // replaying the prefix
      if (!p.choice) return p.defaultPid;
      const f = this.#frames[idx]!;
      if (!sameRunnable(f.runnable, p)) return this.#nondeterministic(idx, f, p);
      return f.chosen;
    }
    if (idx === branch) {
      const f = this.#frames[idx]!;
      if (!sameRunnable(f.runnable, p)) return this.#nondeterministic(idx, f, p);
      const c = f.chosen;
      this.#sleep = this.por ? f.sleep.concat(f.done.filter((d) => d !== c)) : [];
      this.#preemptions = f.preemptionsBefore + (f.preemptible && c !== f.runnable[0] ? 1 : 0);
      this.#capture(p, c);
      return c;
    }
    // fresh territory
    if (this.por) {
      // a step that woke a task or blocked synchronised with another task
      // through state its point did not declare (an unlock, a wait queue)
      if (p.woke || p.ctx.point.reason === "block") {
        if (this.#sleep.length) this.#sleep = [];
      } else if (this.#sleep.length) {
        const run = p.run;
        const obj = this.#lastObj;
        const acc = this.#lastAcc;
        const last = this.#last;
        this.#sleep = this.#sleep.filter((u) => u !== last && run.commutes(u, obj, acc));
      }
    }
    const runnable = p.ctx.runnable;
    if (!p.choice) {
      const t = p.defaultPid;
      if (this.#sleep.length && this.#sleep.includes(t)) return PRUNE;
      this.#capture(p, t);
      return t;
    }
    const sleep = this.#sleep;
    let chosen = -1;
    const pids: number[] = new Array(runnable.length);
    for (let i = 0; i < runnable.length; i++) {
      const pid = runnable[i]!.pid;
      pids[i] = pid;
      if (chosen >= 0) continue;
      if (sleep.length && sleep.includes(pid)) continue;
      const cost = p.preemptible && i > 0 ? 1 : 0;
      if (this.#preemptions + cost > this.bound) continue;
      chosen = pid;
    }
    if (chosen < 0) return PRUNE;
    this.#frames.push({
      runnable: pids,
      preemptible: p.preemptible,
      sleep: sleep.slice(),
      done: [chosen],
      chosen,
      preemptionsBefore: this.#preemptions,
      backtrack: this.dpor ? [chosen] : null,
    });
    if (p.preemptible && chosen !== pids[0]) this.#preemptions++;
    this.#capture(p, chosen);
    return chosen;
  }

  /**
   * DPOR race analysis of the run just executed: for each step, the latest
   * earlier step of another task that conflicts with it and is not already
   * ordered before it (vector clocks over the conflicts) is a race; the
   * decision before that earlier step gets the later step's task as a
   * choice to try (every runnable task when it was not runnable there), and
   * so does the latest earlier decision where running it costs no
   * preemption.
   */
  #races(): void {
    const e = this.#steps;
    const frames = this.#frames;
    const clocks: number[][] = new Array(e.length);
    const last = new Map<number, number>();
    const add = (k: number, pid: number): void => {
      const fi = e[k]!.frame;
      if (fi < 0 || fi >= frames.length) return;
      const f = frames[fi]!;
      if (f.runnable.includes(pid)) addChoice(f, pid);
      else for (const q of f.runnable) addChoice(f, q);
      for (let j = fi; j >= 0; j--) {
        const g = frames[j]!;
        if (!g.preemptible && g.runnable.includes(pid)) {
          addChoice(g, pid);
          break;
        }
      }
    };
    for (let i = 0; i < e.length; i++) {
      const s = e[i]!;
      const prev = last.get(s.pid);
      const before = prev === undefined ? null : clocks[prev]!;
      for (let k = i - 1; k >= 0; k--) {
        const o = e[k]!;
        if (o.pid === s.pid || !dependent(o, s)) continue;
        if (before !== null && (before[o.pid] ?? 0) >= k + 1) continue;
        add(k, s.pid);
        break;
      }
      const c = before === null ? [] : before.slice();
      for (let k = 0; k < i; k++) {
        const o = e[k]!;
        if (o.pid === s.pid || !dependent(o, s)) continue;
        const ok = clocks[k]!;
        for (let q = 0; q < ok.length; q++) {
          const v = ok[q];
          if (v !== undefined && v > (c[q] ?? 0)) c[q] = v;
        }
      }
      c[s.pid] = i + 1;
      clocks[i] = c;
      last.set(s.pid, i);
    }
  }

  #nondeterministic(idx: number, f: Frame, p: PointView): number {
    this.#mismatch = `decision ${idx}: runnable pids were [${f.runnable}] when recorded, ` +
      `[${p.ctx.runnable.map((t) => t.pid)}] on replay; the scenario's build or tasks ` +
      `depend on something other than the schedule`;
    return PRUNE;
  }

  /**
   * Moves to the next schedule: the deepest decision with an untried choice
   * that is not asleep and fits the bound. False when the search is over.
   */
  backtrack(): boolean {
    const frames = this.#frames;
    if (this.dpor) {
      this.#races();
      this.#steps = [];
    }
    for (let k = frames.length - 1; k >= 0; k--) {
      const f = frames[k]!;
      for (let i = 0; i < f.runnable.length; i++) {
        const c = f.runnable[i]!;
        if (f.done.includes(c) || f.sleep.includes(c)) continue;
        if (f.backtrack !== null && !f.backtrack.includes(c)) continue;
        const cost = f.preemptible && i > 0 ? 1 : 0;
        if (f.preemptionsBefore + cost > this.bound) continue;
        f.done.push(c);
        f.chosen = c;
        frames.length = k + 1;
        this.#branch = k;
        this.#sleep = [];
        this.#preemptions = 0;
        return true;
      }
    }
    frames.length = 0;
    return false;
  }
}

function addChoice(f: Frame, pid: number): void {
  if (f.backtrack !== null && !f.backtrack.includes(pid)) f.backtrack.push(pid);
}

function sameRunnable(pids: readonly number[], p: PointView): boolean {
  const r = p.ctx.runnable;
  if (r.length !== pids.length) return false;
  for (let i = 0; i < r.length; i++) if (r[i]!.pid !== pids[i]) return false;
  return true;
}

/** Options for {@linkcode PctStrategy}. */
export interface PctOptions {
  /** Bug depth d: d-1 priority change points. At least 1. */
  depth: number;
  /** Estimated decisions per run (k); change points fall in [0, k). */
  steps: number;
  /** Seed of this run's priorities and change points. */
  seed: number;
}

/**
 * One PCT run: random priorities and d-1 change points.
 *
 * @example
 * ```ts
 * import { PctStrategy } from "@dmalab/explorer";
 * const pct = new PctStrategy({ depth: 2, steps: 10, seed: 7 });
 * pct.changePoints.length; // 1
 * ```
 */
export class PctStrategy implements Strategy {
  /** Decision indices where the running task's priority drops, ascending. */
  readonly changePoints: readonly number[];
  readonly #depth: number;
  readonly #rng: Prng;
  readonly #prio: number[] = [];

  /** See {@linkcode PctOptions}. */
  constructor(options: PctOptions) {
    if (!Number.isInteger(options.depth) || options.depth < 1) {
      throw new RangeError(`PctStrategy: depth must be an integer >= 1, got ${options.depth}`);
    }
    this.#depth = options.depth;
    this.#rng = new Prng(options.seed);
    const k = Math.max(1, Math.floor(options.steps));
    const picks = new Set<number>();
    const want = Math.min(options.depth - 1, k);
    while (picks.size < want) picks.add(this.#rng.below(k));
    this.changePoints = [...picks].sort((a, b) => a - b);
  }

  #priority(pid: number): number {
    let p = this.#prio[pid];
    if (p === undefined) {
      // initial priorities are above every change-point priority (1..d-1)
      p = this.#depth + this.#rng.nextU32() / 4294967296;
      this.#prio[pid] = p;
    }
    return p;
  }

  /** Runs the highest-priority runnable task (see {@linkcode Strategy.decide}). */
  decide(p: PointView): number {
    if (!p.choice) return p.defaultPid;
    const runnable = p.ctx.runnable;
    const best = (): number => {
      let pid = runnable[0]!.pid;
      let pr = this.#priority(pid);
      for (let i = 1; i < runnable.length; i++) {
        const q = runnable[i]!.pid;
        const qp = this.#priority(q);
        if (qp > pr) {
          pid = q;
          pr = qp;
        }
      }
      return pid;
    };
    const ci = this.changePoints.indexOf(p.index);
    if (ci >= 0) {
      const victim = p.preemptible ? runnable[0]!.pid : best();
      this.#prio[victim] = ci + 1;
    }
    return best();
  }
}

/** Marks a decision "take the default" in a {@linkcode ReplayStrategy} schedule. */
export const DEFAULT_CHOICE = 0;

/**
 * Follows `decisions` (pids; {@linkcode DEFAULT_CHOICE} for the default),
 * then the default policy. Strict replay records a mismatch and prunes when
 * a pid is not runnable; lenient replay takes the default instead.
 *
 * @example
 * ```ts
 * import { ReplayStrategy } from "@dmalab/explorer";
 * const r = new ReplayStrategy([2, 1], { lenient: false });
 * r.mismatch; // null
 * ```
 */
export class ReplayStrategy implements Strategy {
  readonly #decisions: readonly number[];
  readonly #lenient: boolean;
  #mismatch: string | null = null;

  /** Replays `decisions`. */
  constructor(decisions: readonly number[], options: { lenient?: boolean } = {}) {
    this.#decisions = decisions;
    this.#lenient = options.lenient ?? false;
  }

  /** Why a strict replay stopped, or null. */
  get mismatch(): string | null {
    return this.#mismatch;
  }

  /** Follows the schedule (see {@linkcode Strategy.decide}). */
  decide(p: PointView): number {
    if (!p.choice) return p.defaultPid;
    const want = this.#decisions[p.index];
    if (want === undefined || want === DEFAULT_CHOICE) return p.defaultPid;
    const runnable = p.ctx.runnable;
    for (let i = 0; i < runnable.length; i++) if (runnable[i]!.pid === want) return want;
    if (this.#lenient) return p.defaultPid;
    this.#mismatch = `decision ${p.index} asks for pid ${want}, but the runnable tasks are ` +
      `${runnable.map(String).join(", ")} (at ${p.ctx.point.label})`;
    return PRUNE;
  }
}
