/**
 * DOC: deterministic scheduler
 *
 * Exactly one task runs at a time. A running task keeps the CPU until it
 * reaches a scheduling point: a voluntary preemption point
 * ({@linkcode Scheduler.preempt}, which every sleeping primitive passes), a
 * block ({@linkcode Scheduler.block}) or its end. At each point the policy
 * picks the next task from the runnable set and the scheduler hands it the
 * baton by resolving the promise it sleeps on; nothing else ever resumes a
 * task. When no task is runnable, virtual time jumps to the next timer; when
 * there is none either and tasks are still blocked, the run ends in a
 * deadlock report that names the wait-for cycle.
 *
 * Model code never awaits a real timer, I/O or foreign promise. The run
 * detects it: a macrotask can only fire once the microtask queue is empty,
 * and while a task holds the baton the queue is never empty unless that task
 * awaits something the scheduler will never resolve. A watchdog macrotask
 * that finds a task `running` therefore reports it.
 *
 * Rules enforced here (as kernel/sched/core.c does with `__might_sleep` and
 * `schedule_debug`): sleeping in atomic context (interrupt, spinlock held,
 * preemption disabled) is a "sleeping function called from invalid context"
 * bug; calling a sleeping primitive outside any task is a usage error.
 *
 * @module
 */
import { KernelBug, KernelError } from "../errors.ts";
import { FifoPolicy, type PickContext, type SchedPolicy, type YieldPoint } from "./policy.ts";
import { Task, type Task as TaskT, type TaskKind, type WaitTarget } from "./task.ts";
import { type Timer, TimerHeap } from "./timer_heap.ts";

/** Hooks the world wires in (dmesg, strict-mode throws, trace). */
export interface SchedulerHooks {
  /** Records a splat and throws in strict mode; returns in permissive mode. */
  bug(kind: KernelBug["kind"], summary: string, report?: string): void;
  /** Called on every context switch (for `sched_switch` trace events). */
  onSwitch?(prev: TaskT | null, next: TaskT): void;
  /** Records a run-ending report (deadlock, foreign await, livelock) in dmesg. */
  record?(bug: KernelBug): void;
}

/** Options for {@linkcode Scheduler}. */
export interface SchedulerOptions {
  /** Picks the next task; FIFO (run to block) when omitted. */
  policy?: SchedPolicy;
  /** Ticks per second for jiffies. Default 250 (CONFIG_HZ_250). */
  hz?: number;
  /** Scheduling decisions allowed in one run before it is called a livelock. Default 50,000,000. */
  maxSteps?: number;
}

/** Options for {@linkcode Scheduler.spawn}. */
export interface SpawnOptions {
  /** The context kind. Default `kthread`. */
  kind?: TaskKind;
}

/** How a run ended. */
export interface RunResult {
  /** Scheduling decisions taken. */
  readonly steps: number;
  /** Context switches performed. */
  readonly switches: number;
  /** Virtual time at the end, ns. */
  readonly now: number;
}

interface Deferred {
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Sees every scheduling point: the decision context and the task that will
 * run next (see {@linkcode Scheduler.observer}).
 */
export type StepObserver = (ctx: PickContext, next: TaskT) => void;

/** A promise that never settles: where a task stops once its run has failed. */
const HALTED = (): Promise<never> => new Promise<never>(() => {});

/** Nanoseconds per millisecond. */
export const NSEC_PER_MSEC = 1_000_000;
/** Nanoseconds per second. */
export const NSEC_PER_SEC = 1_000_000_000;
/** `MAX_SCHEDULE_TIMEOUT`: sleep without a timeout. */
export const MAX_SCHEDULE_TIMEOUT: number = Number.MAX_SAFE_INTEGER;

/**
 * The scheduler of one world.
 *
 * @example
 * ```ts
 * import { Scheduler } from "@dmalab/kernel";
 * const s = new Scheduler({ bug: (_k, msg) => { throw new Error(msg); } });
 * const order: string[] = [];
 * s.spawn("a", async () => { order.push("a1"); await s.msleep(1); order.push("a2"); });
 * s.spawn("b", async () => { order.push("b1"); });
 * await s.run();
 * order.join(","); // "a1,b1,a2"
 * ```
 */
export class Scheduler {
  readonly #hooks: SchedulerHooks;
  #policy: SchedPolicy;
  /** Timer ticks per second (CONFIG_HZ). */
  readonly hz: number;
  readonly #maxSteps: number;
  #now = 0;
  #nextPid = 1;
  #current: Task | null = null;
  readonly #runqueue: Task[] = [];
  readonly #tasks = new Set<Task>();
  readonly #timers = new TimerHeap();
  #steps = 0;
  #switches = 0;
  #run: Deferred | null = null;
  #watchdog: ReturnType<typeof setTimeout> | null = null;
  #failure: unknown = null;
  readonly #irqTask: Task;
  #inTimer = false;
  #observer: StepObserver | null = null;

  /** `hooks.bug` decides whether splats throw (strict) or only log. */
  constructor(hooks: SchedulerHooks, options: SchedulerOptions = {}) {
    this.#hooks = hooks;
    this.#policy = options.policy ?? new FifoPolicy();
    this.hz = options.hz ?? 250;
    this.#maxSteps = options.maxSteps ?? 50_000_000;
    this.#irqTask = new Task(0, "<irq>", "irq");
    this.#irqTask.state = "running";
  }

  /** Virtual time in ns since boot. */
  get now(): number {
    return this.#now;
  }

  /** `jiffies`. */
  get jiffies(): number {
    return Math.floor((this.#now * this.hz) / NSEC_PER_SEC);
  }

  /** The policy in force. */
  get policy(): SchedPolicy {
    return this.#policy;
  }

  /** Replaces the policy (between runs, or by the explorer). */
  set policy(p: SchedPolicy) {
    this.#policy = p;
  }

  /**
   * Called at every scheduling point, forced or chosen, after the decision
   * and before the chosen task resumes (the explorer checks invariants and
   * tracks partial-order information here). It may end the run with
   * {@linkcode Scheduler.abort}. Null (the default) costs one branch.
   */
  get observer(): StepObserver | null {
    return this.#observer;
  }

  /** Installs or removes the step observer. */
  set observer(o: StepObserver | null) {
    this.#observer = o;
  }

  /**
   * Ends the run in progress with `reason`: {@linkcode Scheduler.run} rejects
   * with it, and every task stops at its next scheduling point (none resumes
   * again). No-op outside a run or once the run has failed. Used by the
   * explorer when an invariant breaks or a schedule is pruned.
   */
  abort(reason: unknown): void {
    if (this.#run) this.#fail(reason);
  }

  /** The running task; the interrupt context while a timer fires; null outside a run. */
  get current(): Task | null {
    return this.#inTimer ? this.#irqTask : this.#current;
  }

  /** Every task not yet reaped (including finished ones until the run ends). */
  get tasks(): ReadonlySet<Task> {
    return this.#tasks;
  }

  /** Decisions taken in the current or last run. */
  get steps(): number {
    return this.#steps;
  }

  /** `msecs_to_jiffies` (rounds up, as the kernel does). */
  msecsToJiffies(ms: number): number {
    return Math.ceil((ms * this.hz) / 1000);
  }

  /** Nanoseconds in `j` jiffies. */
  jiffiesToNs(j: number): number {
    return Math.floor((j * NSEC_PER_SEC) / this.hz);
  }

  /**
   * Creates a task running `body`. It starts at the next scheduling point
   * (or when {@linkcode Scheduler.run} starts).
   */
  spawn<T>(name: string, body: (task: Task<T>) => Promise<T>, options: SpawnOptions = {}): Task<T> {
    const task = new Task<T>(this.#nextPid++, name, options.kind ?? "kthread");
    task.state = "runnable";
    this.#tasks.add(task);
    this.#runqueue.push(task);
    const gate = new Promise<void>((resolve) => {
      task.resume = resolve;
    });
    gate.then(() => body(task)).then(
      (value) => {
        task.result = value;
        this.#exit(task);
      },
      (err: unknown) => {
        task.error = err;
        this.#exit(task);
      },
    );
    return task;
  }

  /**
   * Runs until every task has ended. Rejects with the first task's exception
   * (fail-fast), a deadlock report, or a foreign-await report.
   */
  run(): Promise<RunResult> {
    if (this.#run) {
      throw new KernelError("EBUSY", "Scheduler.run: a run is already in progress");
    }
    this.#steps = 0;
    this.#switches = 0;
    this.#failure = null;
    const done = new Promise<void>((resolve, reject) => {
      this.#run = { resolve, reject };
    });
    if (this.watchdog) this.#armWatchdog();
    this.#dispatch(null, { reason: "start", label: "start" });
    return done.then(
      () => this.#result(),
      (e) => {
        throw e;
      },
    ).finally(() => {
      if (this.#watchdog !== null) clearTimeout(this.#watchdog);
      this.#watchdog = null;
      this.#run = null;
    });
  }

  #result(): RunResult {
    return { steps: this.#steps, switches: this.#switches, now: this.#now };
  }

  #armWatchdog(): void {
    this.#watchdog = setTimeout(() => {
      this.#watchdog = null;
      this.reportStall();
    }, 0);
  }

  /**
   * Whether each run arms its own foreign-await watchdog (a zero-delay
   * timer). Default true. A driver running many short runs back to back (the
   * explorer) turns it off and watches with one timer of its own, calling
   * {@linkcode Scheduler.reportStall} when that timer fires during a run.
   */
  watchdog = true;

  /**
   * Ends the run in progress with the foreign-await report. Call it only from
   * a macrotask: the microtask queue is then empty, so a run still in
   * progress has a task waiting on something the scheduler will never
   * resolve. No-op outside a run.
   */
  reportStall(): void {
    if (!this.#run) return;
    const cur = this.#current;
    const who = cur ? `${cur}` : "the scheduler";
    this.#fail(
      new KernelBug(
        "scheduler",
        `task ${who} awaited a promise that is not a scheduler primitive`,
        `BUG: task ${who} awaited a promise that is not a scheduler primitive\n` +
          "model code may only sleep on scheduler primitives (locks, wait queues, " +
          "completions, fences, msleep); real timers, I/O and foreign promises make a " +
          "run non-deterministic",
      ),
    );
  }

  #fail(e: unknown): void {
    if (this.#failure !== null) return;
    this.#failure = e;
    if (e instanceof KernelBug && (e.kind === "deadlock" || e.kind === "scheduler")) {
      this.#hooks.record?.(e);
    }
    const run = this.#run;
    if (run) run.reject(e);
  }

  /** The task calling a sleeping primitive; throws when there is none. */
  #requireTask(what: string): Task {
    const t = this.#current;
    if (this.#inTimer) {
      this.#hooks.bug(
        "might_sleep",
        `BUG: sleeping function called from invalid context (${what} in a timer callback)`,
      );
    }
    if (!t || !this.#run) {
      throw new KernelError(
        "EPERM",
        `${what}: called outside a task; sleeping primitives run only inside a task of a running scheduler (spawn one with world.spawn or world.runTask)`,
      );
    }
    return t;
  }

  /**
   * `might_sleep()`: reports a sleep in atomic context as
   * kernel/sched/core.c `__might_sleep` does.
   */
  mightSleep(where: string): void {
    const t = this.#inTimer ? this.#irqTask : this.#current;
    if (!t) return;
    if (t.atomic) {
      const report = [
        `BUG: sleeping function called from invalid context at ${where}`,
        `in_atomic(): 1, irqs_disabled(): ${
          t.kind === "irq" ? 1 : 0
        }, non_block: 0, pid: ${t.pid}, name: ${t.name}`,
        `preempt_count: ${t.preemptCount}, expected: 0`,
      ].join("\n");
      this.#hooks.bug("might_sleep", report.split("\n")[0]!, report);
    }
  }

  /**
   * A voluntary preemption point (`cond_resched()`): the policy may switch
   * to another runnable task. `point` describes what the caller does next so
   * the explorer can reduce commuting interleavings.
   */
  preempt(label: string, object?: number, access?: "read" | "write"): Promise<void> {
    const t = this.#requireTask(label);
    this.mightSleep(label);
    // After a failed run every task stops at its next point.
    if (this.#failure !== null) return HALTED();
    const point: YieldPoint = object === undefined
      ? { reason: "preempt", label }
      : access === undefined
      ? { reason: "preempt", label, object }
      : { reason: "preempt", label, object, access };
    if (this.#runqueue.length === 0) {
      this.#countStep();
      if (this.#observer !== null) {
        this.#observer({ runnable: [t], current: t, point, step: this.#steps }, t);
      }
      return this.#failure === null ? Promise.resolve() : HALTED();
    }
    const runnable = [t, ...this.#runqueue];
    const next = this.#pick(runnable, t, point);
    if (this.#failure !== null) return HALTED();
    if (next === t) return Promise.resolve();
    t.state = "runnable";
    this.#runqueue.push(t);
    const gate = this.#gate(t);
    this.#handOff(t, next);
    return gate;
  }

  /**
   * Puts the current task to sleep on `target` until {@linkcode Scheduler.wake},
   * a signal (when `interruptible`) or the timeout (in ns; none by default).
   * Returns why it woke. The caller re-checks its condition, as with
   * `schedule()` in a wait loop.
   */
  block(
    target: WaitTarget,
    options: { interruptible?: boolean; timeoutNs?: number; label?: string } = {},
  ): Promise<"wake" | "timeout" | "signal"> {
    const label = options.label ?? `block:${target.name}`;
    const t = this.#requireTask(label);
    this.mightSleep(label);
    const interruptible = options.interruptible ?? false;
    if (interruptible && t.signalPending) {
      t.wakeReason = "signal";
      return Promise.resolve("signal");
    }
    t.state = "blocked";
    t.waitingOn = target;
    t.interruptible = interruptible;
    t.wakeReason = "wake";
    let timer: Timer | null = null;
    if (options.timeoutNs !== undefined && options.timeoutNs < MAX_SCHEDULE_TIMEOUT) {
      timer = this.#timers.add(this.#now + Math.max(0, options.timeoutNs), () => {
        if (t.state === "blocked" && t.waitingOn === target) this.#makeRunnable(t, "timeout");
      });
    }
    const gate = this.#gate(t).then(() => {
      if (timer) this.#timers.cancel(timer);
      return t.wakeReason;
    });
    this.#dispatch(t, { reason: "block", label });
    return gate;
  }

  /**
   * Wakes a blocked task (`wake_up_process`). Safe in atomic context.
   * Returns false when the task was not sleeping.
   */
  wake(task: Task): boolean {
    if (task.state !== "blocked") return false;
    this.#makeRunnable(task, "wake");
    return true;
  }

  /** Delivers a signal (`send_sig`): interruptible sleeps end with -ERESTARTSYS. */
  signal(task: Task): void {
    task.signalPending = true;
    if (task.state === "blocked" && task.interruptible) this.#makeRunnable(task, "signal");
  }

  /** Clears a task's pending signal (the signal was handled). */
  flushSignals(task: Task): void {
    task.signalPending = false;
  }

  #makeRunnable(task: Task, reason: "wake" | "timeout" | "signal"): void {
    task.state = "runnable";
    task.waitingOn = null;
    task.interruptible = false;
    task.wakeReason = reason;
    this.#runqueue.push(task);
  }

  /**
   * Arms a virtual-time timer that runs `fn` in interrupt context after
   * `delayNs` (an hrtimer). Returns a cancel function reporting whether it was
   * still pending.
   */
  addTimer(delayNs: number, fn: () => void): () => boolean {
    const timer = this.#timers.add(this.#now + Math.max(0, delayNs), fn);
    return () => this.#timers.cancel(timer);
  }

  /** `schedule_timeout_uninterruptible(jiffies)` style sleep for `ns`. */
  async sleepNs(ns: number, label = "sleep"): Promise<void> {
    const target: WaitTarget = { name: label, owners: () => [] };
    const until = this.#now + ns;
    while (this.#now < until) {
      await this.block(target, { timeoutNs: until - this.#now, label });
    }
  }

  /** `msleep(ms)`: at least `msecs_to_jiffies(ms) + 1` jiffies, as kernel/time/sleep_timeout.c. */
  msleep(ms: number): Promise<void> {
    return this.sleepNs(this.jiffiesToNs(this.msecsToJiffies(ms) + 1), "msleep");
  }

  /**
   * `msleep_interruptible(ms)`: returns the milliseconds left when a signal
   * cut the sleep short, else 0.
   */
  async msleepInterruptible(ms: number): Promise<number> {
    const target: WaitTarget = { name: "msleep_interruptible", owners: () => [] };
    const until = this.#now + this.jiffiesToNs(this.msecsToJiffies(ms) + 1);
    while (this.#now < until) {
      const why = await this.block(target, {
        interruptible: true,
        timeoutNs: until - this.#now,
        label: "msleep_interruptible",
      });
      if (why === "signal") return Math.ceil((until - this.#now) / NSEC_PER_MSEC);
    }
    return 0;
  }

  #gate(t: Task): Promise<void> {
    return new Promise<void>((resolve) => {
      t.resume = resolve;
    });
  }

  #countStep(): void {
    if (++this.#steps > this.#maxSteps) {
      this.#fail(
        new KernelBug(
          "scheduler",
          `livelock: more than ${this.#maxSteps} scheduling decisions in one run`,
        ),
      );
    }
  }

  #pick(runnable: Task[], current: Task | null, point: YieldPoint): Task {
    this.#countStep();
    if (runnable.length === 1) {
      const only = runnable[0]!;
      if (this.#observer !== null) {
        this.#observer({ runnable, current, point, step: this.#steps }, only);
      }
      return only;
    }
    const ctx: PickContext = { runnable, current, point, step: this.#steps };
    const next = this.#policy.pick(ctx);
    if (!runnable.includes(next)) {
      throw new KernelBug(
        "scheduler",
        `policy ${this.#policy.name} picked a task that is not runnable`,
      );
    }
    if (this.#observer !== null) this.#observer(ctx, next);
    return next;
  }

  /** The current task `prev` stops running (blocked, exited or preempted): pick and resume the next. */
  #dispatch(prev: Task | null, point: YieldPoint): void {
    if (this.#failure !== null) return;
    for (;;) {
      if (this.#runqueue.length > 0) {
        const next = this.#pick(this.#runqueue.slice(), prev, point);
        if (this.#failure !== null) return;
        this.#handOff(prev, next);
        return;
      }
      if (this.#timers.size > 0) {
        this.#fireNextTimers();
        continue;
      }
      this.#current = null;
      const alive = [...this.#tasks].filter((t) => t.state !== "done");
      if (alive.length === 0) {
        this.#tasks.clear();
        this.#run?.resolve();
        return;
      }
      this.#fail(this.#deadlock(alive));
      return;
    }
  }

  #fireNextTimers(): void {
    const first = this.#timers.pop()!;
    this.#now = Math.max(this.#now, first.when);
    this.#inTimer = true;
    try {
      first.fn();
      for (;;) {
        const t = this.#timers.peek();
        if (!t || t.when > this.#now) break;
        this.#timers.pop();
        t.fn();
      }
    } catch (e) {
      this.#fail(e);
    } finally {
      this.#inTimer = false;
    }
  }

  #handOff(prev: Task | null, next: Task): void {
    const i = this.#runqueue.indexOf(next);
    if (i >= 0) this.#runqueue.splice(i, 1);
    if (prev !== next) {
      this.#switches++;
      this.#hooks.onSwitch?.(prev, next);
    }
    next.state = "running";
    this.#current = next;
    const resume = next.resume;
    next.resume = null;
    resume?.();
  }

  #exit(task: Task): void {
    task.state = "done";
    task.waitingOn = null;
    if (this.#failure !== null) return;
    if (task.error !== undefined) {
      this.#fail(task.error);
      return;
    }
    if (this.#current === task) {
      this.#dispatch(task, { reason: "exit", label: `exit:${task.name}` });
    }
  }

  #deadlock(alive: Task[]): KernelBug {
    const lines = ["BUG: deadlock: every remaining task is blocked and no timer is pending"];
    for (const t of alive) {
      const owners = t.waitingOn?.owners() ?? [];
      lines.push(
        `  ${t} blocked on ${t.waitingOn?.name ?? "?"}${
          owners.length ? ` held by ${owners.map(String).join(", ")}` : ""
        }`,
      );
    }
    const cycle = findCycle(alive);
    if (cycle) lines.push(`  wait-for cycle: ${[...cycle, cycle[0]!].map(String).join(" -> ")}`);
    return new KernelBug("deadlock", lines[0]!, lines.join("\n"));
  }

  /** Records a deadlock report through the hooks (used by the world to log it). */
  get hooks(): SchedulerHooks {
    return this.#hooks;
  }
}

/** A cycle in the wait-for graph among `tasks`, or null. */
export function findCycle(tasks: readonly Task[]): Task[] | null {
  const state = new Map<Task, 0 | 1 | 2>();
  const stack: Task[] = [];
  const visit = (t: Task): Task[] | null => {
    state.set(t, 1);
    stack.push(t);
    for (const o of t.waitingOn?.owners() ?? []) {
      const s = state.get(o) ?? 0;
      if (s === 1) return stack.slice(stack.indexOf(o));
      if (s === 0 && o.state === "blocked") {
        const c = visit(o);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(t, 2);
    return null;
  };
  for (const t of tasks) {
    if ((state.get(t) ?? 0) === 0) {
      const c = visit(t);
      if (c) return c;
    }
  }
  return null;
}
