/**
 * DOC: the world
 *
 * A {@linkcode Kernel} is one simulated machine: scheduler, virtual time,
 * dmesg, trace buffer, lockdep, physical memory, devices, and whatever the
 * driver packages attach to it. Nothing is global, so any number of worlds
 * live in one process and a run is a pure function of (world, tasks,
 * schedule).
 *
 * Rule checking is strict by default: a WARN/BUG/lockdep/DMA-API-debug report
 * is logged to dmesg and thrown as {@linkcode KernelBug}. In permissive mode
 * it is only logged and counted, so a run can go on and report everything.
 *
 * Packages extend a world through {@linkcode Kernel.ext} (one slot per
 * package, created on first use) and contribute invariant checkers through
 * {@linkcode Kernel.addChecker}; {@linkcode Kernel.check} runs them all.
 *
 * @module
 */
import { Dmesg } from "./dmesg.ts";
import { type BugKind, KernelBug } from "./errors.ts";
import type { SchedPolicy } from "./sched/policy.ts";
import { type RunResult, Scheduler, type SpawnOptions } from "./sched/scheduler.ts";
import type { Task, TaskKind } from "./sched/task.ts";
import { Tracer } from "./trace.ts";
import { Lockdep } from "./locking/lockdep.ts";
import { PhysMem, type PhysMemOptions } from "./memory/phys_mem.ts";

/** Options for a new world. */
export interface KernelOptions {
  /** Throw {@linkcode KernelBug} on WARN/BUG/lockdep reports (default true). */
  strict?: boolean;
  /** Seed for every model decision that needs randomness. Default 1. */
  seed?: number;
  /** Scheduling policy. Default FIFO (run to block). */
  policy?: SchedPolicy;
  /** CONFIG_HZ. Default 250. */
  hz?: number;
  /** Whether lockdep is on (CONFIG_PROVE_LOCKING). Default true. */
  lockdep?: boolean;
  /**
   * Kernel version and proposal switches (`{"pfn": "rfc-get-pfn"}`); each
   * package documents the keys it reads. The world reports them in
   * {@linkcode Kernel.variants}.
   */
  variants?: Record<string, string>;
  /** Physical memory layout (RAM per NUMA node); default one node of 8 GiB, stored sparsely. */
  memory?: PhysMemOptions;
}

/** A bug recorded in this world. */
export interface BugRecord {
  /** Kind of report. */
  readonly kind: BugKind;
  /** First line. */
  readonly summary: string;
  /** Virtual time, ns. */
  readonly ns: number;
}

/** An invariant checker: returns violation messages (empty when clean). */
export type Checker = () => string[];

/**
 * One simulated machine.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * const world = new Kernel();
 * const seen: number[] = [];
 * world.spawn("worker", async () => {
 *   await world.sched.msleep(10);
 *   seen.push(world.sched.jiffies);
 * });
 * await world.run();
 * seen[0]; // 4: msleep(10) at HZ=250 sleeps msecs_to_jiffies(10) + 1 = 4 jiffies
 * ```
 */
export class Kernel {
  /** Strict mode: bugs throw. */
  readonly strict: boolean;
  /** The seed given (or 1). */
  readonly seed: number;
  /** The scheduler and virtual clock. */
  readonly sched: Scheduler;
  /** The kernel log. */
  readonly dmesg: Dmesg;
  /** Trace events. */
  readonly trace: Tracer;
  /** Whether lockdep checks run. */
  readonly lockdepEnabled: boolean;
  /** The lock validator: classes, held locks, the dependency graph, pseudo-lock maps. */
  readonly lockdep: Lockdep;
  /** Physical memory: RAM, MMIO regions, struct pages, the page allocator. */
  readonly mem: PhysMem;
  /** Bugs recorded so far (also in dmesg). */
  readonly bugs: BugRecord[] = [];
  readonly #variants: Record<string, string>;
  readonly #ext = new Map<string, unknown>();
  readonly #checkers = new Map<string, Checker>();
  #nextId = 1;

  /** Builds a world; see {@linkcode KernelOptions}. */
  constructor(options: KernelOptions = {}) {
    this.strict = options.strict ?? true;
    this.seed = options.seed ?? 1;
    this.lockdepEnabled = options.lockdep ?? true;
    this.#variants = { ...(options.variants ?? {}) };
    const schedOptions = options.policy === undefined
      ? { hz: options.hz ?? 250 }
      : { hz: options.hz ?? 250, policy: options.policy };
    this.sched = new Scheduler({
      // __might_sleep also lists the held locks (debug_show_held_locks).
      bug: (kind, summary, report) =>
        this.bug(
          kind,
          summary,
          kind === "might_sleep" && report !== undefined
            ? this.lockdep.withHeldLocks(report)
            : report,
        ),
      onSwitch: (prev, next) => {
        if (!this.trace.enabled) return;
        this.trace.event("sched_switch", {
          prev_comm: prev?.name ?? "swapper",
          prev_pid: prev?.pid ?? 0,
          prev_state: prev?.state === "blocked" ? "D" : prev?.state === "done" ? "X" : "R",
          next_comm: next.name,
          next_pid: next.pid,
        });
      },
      record: (bug) => this.#record(bug.kind, bug.report),
    }, schedOptions);
    this.dmesg = new Dmesg(() => this.sched.now);
    this.trace = new Tracer({
      now: () => this.sched.now,
      current: () => {
        const t = this.sched.current;
        return t ? { comm: t.name, pid: t.pid } : { comm: "<idle>", pid: 0 };
      },
    });
    this.lockdep = new Lockdep(this);
    this.mem = new PhysMem(this, options.memory ?? {});
  }

  /** The proposal/version switches this world runs with. */
  get variants(): Readonly<Record<string, string>> {
    return this.#variants;
  }

  /** The value of switch `key`, or `fallback`. */
  variant(key: string, fallback: string): string {
    return this.#variants[key] ?? fallback;
  }

  /** A fresh id, unique within this world (objects, contexts, fds). */
  nextId(): number {
    return this.#nextId++;
  }

  /**
   * Reports a WARN/BUG/lockdep/DMA-API-debug condition: logs `report` (or
   * `summary`) to dmesg, records it, and throws {@linkcode KernelBug} in
   * strict mode.
   */
  bug(kind: BugKind, summary: string, report: string = summary): void {
    this.#record(kind, report, summary);
    if (this.strict) throw new KernelBug(kind, summary, report);
  }

  /**
   * `WARN_ON(cond)`: when `cond` is true, reports `message` and returns true
   * (in permissive mode); throws in strict mode.
   */
  warnOn(cond: boolean, message: string): boolean {
    if (cond) {
      this.bug("WARN", `WARNING: ${message}`);
    }
    return cond;
  }

  #record(kind: BugKind, report: string, summary: string = report.split("\n")[0]!): void {
    this.bugs.push({ kind, summary, ns: this.sched.now });
    this.dmesg.printk("warn", report);
  }

  /** Creates a task on this world's scheduler (see {@linkcode Scheduler.spawn}). */
  spawn<T>(name: string, body: (task: Task<T>) => Promise<T>, options: SpawnOptions = {}): Task<T> {
    return this.sched.spawn(name, body, options);
  }

  /** Runs every task to completion (see {@linkcode Scheduler.run}). */
  run(): Promise<RunResult> {
    return this.sched.run();
  }

  /** Spawns one task running `body`, runs the world, returns the body's result. */
  async runTask<T>(
    name: string,
    body: (task: Task<T>) => Promise<T>,
    kind: TaskKind = "kthread",
  ): Promise<T> {
    const t = this.sched.spawn(name, body, { kind });
    await this.sched.run();
    return t.result as T;
  }

  /**
   * The per-package extension slot `key`, created by `init` on first use.
   * Packages keep their per-world state here (`world.ext("pci", () => new PciRoot(world))`).
   */
  ext<T>(key: string, init: () => T): T {
    let v = this.#ext.get(key) as T | undefined;
    if (v === undefined) {
      v = init();
      this.#ext.set(key, v);
    }
    return v;
  }

  /** True when extension slot `key` exists. */
  hasExt(key: string): boolean {
    return this.#ext.has(key);
  }

  /** Registers an invariant checker under a unique `name` (replacing one with that name). */
  addChecker(name: string, check: Checker): void {
    this.#checkers.set(name, check);
  }

  /** Removes a checker. */
  removeChecker(name: string): void {
    this.#checkers.delete(name);
  }

  /** Runs every checker; returns `"name: message"` for each violation. */
  check(): string[] {
    const out: string[] = [];
    for (const [name, fn] of this.#checkers) {
      for (const v of fn()) out.push(`${name}: ${v}`);
    }
    return out;
  }
}
