/**
 * DOC: completions
 *
 * `struct completion` (kernel/sched/completion.c): a counter of `complete()`
 * calls that waiters consume one at a time; `complete_all()` sets it to
 * UINT_MAX so every present and future waiter passes until
 * `reinit_completion()`.
 *
 * @module
 */
import { Errno } from "../errno.ts";
import type { Scheduler } from "./scheduler.ts";
import { WaitQueueHead } from "./wait_queue.ts";

const UINT_MAX = 0xffffffff;

/**
 * A completion.
 *
 * @example
 * ```ts
 * import { Completion, Kernel } from "@dmalab/kernel";
 * const world = new Kernel();
 * const c = new Completion(world.sched, "probe");
 * world.spawn("a", () => c.waitForCompletion());
 * world.spawn("b", async () => c.complete());
 * await world.run();
 * ```
 */
export class Completion {
  #done = 0;
  readonly #wq: WaitQueueHead;

  /** `init_completion`. */
  constructor(sched: Scheduler, name = "completion") {
    this.#wq = new WaitQueueHead(sched, name);
  }

  /** `complete`: lets one waiter through. */
  complete(): void {
    if (this.#done !== UINT_MAX) this.#done++;
    this.#wq.wakeUp();
  }

  /** `complete_all`: lets every waiter through until reinit. */
  completeAll(): void {
    this.#done = UINT_MAX;
    this.#wq.wakeUpAll();
  }

  /** `reinit_completion`. */
  reinit(): void {
    this.#done = 0;
  }

  /** `completion_done`: true when a wait would not block. */
  get done(): boolean {
    return this.#done > 0;
  }

  #consume(): void {
    if (this.#done !== UINT_MAX) this.#done--;
  }

  /** `try_wait_for_completion`: consumes one completion without sleeping. */
  tryWaitForCompletion(): boolean {
    if (this.#done === 0) return false;
    this.#consume();
    return true;
  }

  /** `wait_for_completion`. */
  async waitForCompletion(): Promise<void> {
    await this.#wq.waitEvent(() => this.#done > 0);
    this.#consume();
  }

  /** `wait_for_completion_timeout`: 0 on timeout, else jiffies left (>= 1). */
  async waitForCompletionTimeout(jiffies: number): Promise<number> {
    const left = await this.#wq.waitEventTimeout(() => this.#done > 0, jiffies);
    if (left > 0) this.#consume();
    return left;
  }

  /** `wait_for_completion_interruptible`: 0 or -ERESTARTSYS. */
  async waitForCompletionInterruptible(): Promise<number> {
    const r = await this.#wq.waitEventInterruptible(() => this.#done > 0);
    if (r === 0) this.#consume();
    return r === 0 ? 0 : -Errno.ERESTARTSYS;
  }
}
