/**
 * DOC: scheduling policies
 *
 * A policy picks which runnable task resumes at each scheduling point. The
 * scheduler calls {@linkcode SchedPolicy.pick} synchronously with the
 * runnable tasks (in the order they became runnable) and the yield point that
 * caused the decision. A run is a pure function of world, tasks and policy.
 *
 * @module
 */
import type { Task } from "./task.ts";

/** Why the scheduler is choosing: what the current task is about to do. */
export interface YieldPoint {
  /** `preempt` a voluntary preemption point, `block` the current task sleeps, `exit` it ended, `wake` time advanced. */
  readonly reason: "preempt" | "block" | "exit" | "start" | "timer";
  /** A label for replay and reports (`mutex_lock:resv`). */
  readonly label: string;
  /** Id of the object about to be accessed, for partial-order reduction. */
  readonly object?: number;
  /** Whether the access is a read (commutes with other reads) or a write. */
  readonly access?: "read" | "write";
}

/** What a policy sees at a decision. */
export interface PickContext {
  /** Runnable tasks, including the current one when it is still runnable. */
  readonly runnable: readonly Task[];
  /** The task that reached the point, or null when none runs. */
  readonly current: Task | null;
  /** The point being decided. */
  readonly point: YieldPoint;
  /** Decision number within this run (0-based). */
  readonly step: number;
}

/** Chooses the next task. */
export interface SchedPolicy {
  /** Name for reports (`fifo`, `random:42`). */
  readonly name: string;
  /** Returns one of `ctx.runnable`. */
  pick(ctx: PickContext): Task;
}

/**
 * Run-to-block: the current task keeps the CPU until it sleeps; then the
 * longest-waiting runnable task runs.
 */
export class FifoPolicy implements SchedPolicy {
  /** Always `fifo`. */
  readonly name = "fifo";
  /** Keeps the current task if runnable, else the head of the run queue. */
  pick(ctx: PickContext): Task {
    if (ctx.current && ctx.runnable.includes(ctx.current)) return ctx.current;
    return ctx.runnable[0]!;
  }
}

/**
 * A small, fast, seedable PRNG (mulberry32), so every seeded policy and model
 * decision is reproducible across runs and platforms.
 */
export class Prng {
  #s: number;
  /** Seeds the generator (any 32-bit integer). */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** Next 32-bit unsigned value. */
  nextU32(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Uniform integer in [0, n). */
  below(n: number): number {
    return this.nextU32() % n;
  }
}

/** Picks uniformly among runnable tasks at every point, from a seed. */
export class RandomPolicy implements SchedPolicy {
  /** `random:<seed>`. */
  readonly name: string;
  readonly #rng: Prng;
  /** Seeds the choice sequence. */
  constructor(seed: number) {
    this.name = `random:${seed}`;
    this.#rng = new Prng(seed);
  }
  /** Uniform choice. */
  pick(ctx: PickContext): Task {
    return ctx.runnable[this.#rng.below(ctx.runnable.length)]!;
  }
}

/**
 * Delegates each decision to a function: the hook the explorer and replay use.
 */
export class ChooserPolicy implements SchedPolicy {
  /** Name given at construction. */
  readonly name: string;
  readonly #choose: (ctx: PickContext) => Task;
  /** `choose` must return a member of `ctx.runnable`. */
  constructor(name: string, choose: (ctx: PickContext) => Task) {
    this.name = name;
    this.#choose = choose;
  }
  /** Asks the chooser. */
  pick(ctx: PickContext): Task {
    return this.#choose(ctx);
  }
}
