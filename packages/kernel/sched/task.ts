/**
 * DOC: tasks
 *
 * A task is one kernel context (kthread, user task, vCPU, workqueue item,
 * interrupt) running on the world's scheduler. Its body is an async function
 * that suspends only at scheduler primitives. The scheduler owns its state;
 * locking code hangs per-task data (held locks, preempt count) on it.
 *
 * @module
 */

/** The kind of context a task models. */
export type TaskKind = "kthread" | "user" | "vcpu" | "work" | "irq";

/** Scheduler state of a task. */
export type TaskState = "new" | "runnable" | "running" | "blocked" | "done";

/** Something a task waits on, for deadlock reports. */
export interface WaitTarget {
  /** Human-readable name (`mutex &resv->lock`). */
  readonly name: string;
  /** Tasks that must act before the waiter can proceed (a lock's owner). */
  owners(): readonly Task[];
}

/** The held-lock record lockdep keeps per task (see locking/lockdep.ts). */
export interface HeldLockLike {
  /** Lock class name. */
  readonly className: string;
}

/** One context on the scheduler. */
export class Task<T = unknown> {
  /** Task id (`pid`). */
  readonly pid: number;
  /** `comm`. */
  readonly name: string;
  /** The kind of context. */
  readonly kind: TaskKind;
  /** Scheduler state. */
  state: TaskState = "new";
  /** What the task sleeps on while `blocked`. */
  waitingOn: WaitTarget | null = null;
  /** True while blocked in an interruptible sleep (TASK_INTERRUPTIBLE). */
  interruptible = false;
  /** A signal is pending (signal_pending()). */
  signalPending = false;
  /** Why the task was last woken: by a waker, a timer, or a signal. */
  wakeReason: "wake" | "timeout" | "signal" = "wake";
  /** preempt_count: spinlocks held and irqs disabled; > 0 means atomic. */
  preemptCount = 0;
  /** Lockdep's held-lock stack (owned by the lockdep module). */
  readonly heldLocks: HeldLockLike[] = [];
  /** Free slot for packages to hang per-task state on (keyed by package). */
  readonly local: Map<string, unknown> = new Map();
  /** The body's result once `done`. */
  result: T | undefined = undefined;
  /** The body's exception once `done`, if it threw. */
  error: unknown = undefined;
  /** Resolves the gate the task sleeps on; set by the scheduler. */
  resume: (() => void) | null = null;

  /** Created by {@linkcode Scheduler.spawn}, not directly. */
  constructor(pid: number, name: string, kind: TaskKind) {
    this.pid = pid;
    this.name = name;
    this.kind = kind;
  }

  /** True in atomic context: an interrupt, a spinlock held or preemption off. */
  get atomic(): boolean {
    return this.kind === "irq" || this.preemptCount > 0;
  }

  /** `name-pid`, as ftrace prints tasks. */
  toString(): string {
    return `${this.name}-${this.pid}`;
  }
}
