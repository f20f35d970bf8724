/**
 * DOC: wait queues
 *
 * `wait_queue_head_t` and the `wait_event*` family of include/linux/wait.h.
 * A waiter re-checks its condition after queueing itself and after every
 * wake-up, so a wake-up between the check and the sleep is never lost (the
 * scheduler resumes one task at a time, and the waiter is on the queue before
 * it sleeps). `wakeUp` wakes every non-exclusive waiter and at most one
 * exclusive waiter, as `__wake_up_common` with nr_exclusive = 1.
 *
 * Return values follow the kernel macros: `wait_event_timeout` gives 0 when
 * the condition is still false after the timeout, else the jiffies left
 * (at least 1); the interruptible forms give -ERESTARTSYS on a signal.
 *
 * @module
 */
import { Errno } from "../errno.ts";
import type { Scheduler } from "./scheduler.ts";
import type { Task, WaitTarget } from "./task.ts";

interface Waiter {
  readonly task: Task;
  readonly exclusive: boolean;
}

/**
 * A wait queue head.
 *
 * @example
 * ```ts
 * import { Kernel, WaitQueueHead } from "@dmalab/kernel";
 * const world = new Kernel();
 * const wq = new WaitQueueHead(world.sched, "done_wq");
 * let done = false;
 * world.spawn("waiter", () => wq.waitEvent(() => done));
 * world.spawn("waker", async () => { done = true; wq.wakeUp(); });
 * await world.run();
 * ```
 */
export class WaitQueueHead implements WaitTarget {
  /** Name used in deadlock reports. */
  readonly name: string;
  readonly #sched: Scheduler;
  readonly #waiters: Waiter[] = [];
  /** Tasks whose action would satisfy the waiters, for deadlock reports (optional). */
  ownersHint: () => readonly Task[] = () => [];

  /** `init_waitqueue_head`. */
  constructor(sched: Scheduler, name = "wait_queue") {
    this.#sched = sched;
    this.name = name;
  }

  /** Owners for the wait-for graph. */
  owners(): readonly Task[] {
    return this.ownersHint();
  }

  /** `waitqueue_active`: true when a task is queued. */
  get active(): boolean {
    return this.#waiters.length > 0;
  }

  /** Number of queued waiters. */
  get length(): number {
    return this.#waiters.length;
  }

  /** `wake_up`: all non-exclusive waiters and one exclusive waiter. */
  wakeUp(): void {
    this.#wake(1);
  }

  /** `wake_up_all`. */
  wakeUpAll(): void {
    this.#wake(Infinity);
  }

  #wake(nrExclusive: number): void {
    let left = nrExclusive;
    for (const w of [...this.#waiters]) {
      if (w.task.state === "blocked" && w.task.waitingOn === this) {
        this.#sched.wake(w.task);
        if (w.exclusive && --left === 0) break;
      }
    }
  }

  #remove(task: Task): void {
    const i = this.#waiters.findIndex((w) => w.task === task);
    if (i >= 0) this.#waiters.splice(i, 1);
  }

  /**
   * The loop every wait_event macro expands to. Returns 0 when `cond` held,
   * -ERESTARTSYS on a signal (interruptible), or 0 on timeout, with the
   * remaining time reported through `left`.
   */
  async #wait(
    cond: () => boolean,
    opts: { interruptible: boolean; exclusive: boolean; timeoutNs?: number; label: string },
  ): Promise<{ ret: number; leftNs: number }> {
    const sched = this.#sched;
    sched.mightSleep(opts.label);
    const deadline = opts.timeoutNs === undefined ? Infinity : sched.now + opts.timeoutNs;
    if (cond()) return { ret: 0, leftNs: deadline - sched.now };
    const task = sched.current;
    if (!task) {
      // block() raises the clear "outside a task" error.
      await sched.block(this, { label: opts.label });
      return { ret: 0, leftNs: 0 };
    }
    this.#waiters.push({ task, exclusive: opts.exclusive });
    try {
      for (;;) {
        if (cond()) return { ret: 0, leftNs: Math.max(deadline - sched.now, 0) };
        if (opts.interruptible && task.signalPending) {
          return { ret: -Errno.ERESTARTSYS, leftNs: deadline - sched.now };
        }
        if (sched.now >= deadline) return { ret: 0, leftNs: 0 };
        const blockOpts = deadline === Infinity
          ? { interruptible: opts.interruptible, label: opts.label }
          : {
            interruptible: opts.interruptible,
            label: opts.label,
            timeoutNs: deadline - sched.now,
          };
        await sched.block(this, blockOpts);
      }
    } finally {
      this.#remove(task);
    }
  }

  /** `wait_event(wq, cond)`: uninterruptible, no timeout. */
  async waitEvent(cond: () => boolean): Promise<void> {
    await this.#wait(cond, {
      interruptible: false,
      exclusive: false,
      label: `wait_event:${this.name}`,
    });
  }

  /** `wait_event_interruptible`: 0, or -ERESTARTSYS when a signal arrives first. */
  async waitEventInterruptible(cond: () => boolean): Promise<number> {
    const r = await this.#wait(cond, {
      interruptible: true,
      exclusive: false,
      label: `wait_event_interruptible:${this.name}`,
    });
    return r.ret;
  }

  /** `wait_event_interruptible_exclusive`. */
  async waitEventInterruptibleExclusive(cond: () => boolean): Promise<number> {
    const r = await this.#wait(cond, {
      interruptible: true,
      exclusive: true,
      label: `wait_event_interruptible_exclusive:${this.name}`,
    });
    return r.ret;
  }

  /**
   * `wait_event_timeout(wq, cond, jiffies)`: 0 if `cond` is still false after
   * the timeout, else the jiffies left (1 if it became true at the deadline).
   */
  async waitEventTimeout(cond: () => boolean, jiffies: number): Promise<number> {
    const sched = this.#sched;
    const r = await this.#wait(cond, {
      interruptible: false,
      exclusive: false,
      timeoutNs: sched.jiffiesToNs(jiffies),
      label: `wait_event_timeout:${this.name}`,
    });
    return cond() ? Math.max(1, Math.ceil((r.leftNs * sched.hz) / 1e9)) : 0;
  }

  /**
   * `wait_event_interruptible_timeout`: -ERESTARTSYS on a signal, 0 on
   * timeout with `cond` false, else jiffies left (at least 1).
   */
  async waitEventInterruptibleTimeout(cond: () => boolean, jiffies: number): Promise<number> {
    const sched = this.#sched;
    const r = await this.#wait(cond, {
      interruptible: true,
      exclusive: false,
      timeoutNs: sched.jiffiesToNs(jiffies),
      label: `wait_event_interruptible_timeout:${this.name}`,
    });
    if (r.ret < 0) return r.ret;
    return cond() ? Math.max(1, Math.ceil((r.leftNs * sched.hz) / 1e9)) : 0;
  }
}
