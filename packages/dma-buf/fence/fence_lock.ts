/**
 * DOC: fence spinlock and irq_work
 *
 * Every `struct dma_fence` is protected by an irq-safe spinlock: either the
 * fence's own inline lock (NEW kernels accept a NULL lock in `dma_fence_init`)
 * or an external one shared by many fences (a driver's per-ring lock, the
 * global lock of st-dma-resv). {@linkcode FenceLock} models
 * `spin_lock_irqsave`/`spin_unlock_irqrestore` on one CPU: while it is held
 * the current context is atomic (its preempt count is raised), so a sleep
 * inside a fence callback is a "sleeping function called from invalid
 * context" report; taking a lock the same context already holds is the
 * spinlock recursion the kernel's spinlock debugging reports.
 *
 * Fence containers (array, chain) complete from `irq_work`: the element's
 * callback queues work that runs once interrupts are enabled again.
 * {@linkcode queueIrqWork} models that: work queued while any fence lock is
 * held runs, in order and in atomic context, when the last one is dropped;
 * work queued with no fence lock held runs at once.
 *
 * Locking rules: a fence lock is never held across a sleep; callbacks run
 * with the signalled fence's lock held.
 *
 * @module
 */
import type { Kernel, Task } from "@dmalab/kernel";

/** Per-world state of the fence spinlocks and the irq_work queue. */
class IrqState {
  /** Fence spinlocks held right now (one CPU, so a single count). */
  depth = 0;
  /** Work queued while a lock was held. */
  readonly pending: (() => void)[] = [];
  /** True while the queue is being drained. */
  draining = false;
}

function irqState(world: Kernel): IrqState {
  return world.ext("dma-buf:irq_work", () => new IrqState());
}

function runWork(world: Kernel, st: IrqState): void {
  if (st.draining) return;
  st.draining = true;
  const t: Task | null = world.sched.current;
  if (t) t.preemptCount++;
  try {
    while (st.pending.length > 0) {
      const fn = st.pending.shift()!;
      fn();
    }
  } finally {
    if (t) t.preemptCount--;
    st.draining = false;
  }
}

/**
 * `irq_work_queue`: runs `fn` in atomic context once no fence spinlock is
 * held (at once when none is).
 */
export function queueIrqWork(world: Kernel, fn: () => void): void {
  const st = irqState(world);
  st.pending.push(fn);
  if (st.depth === 0) runWork(world, st);
}

/**
 * An irq-safe spinlock protecting one or more fences (`spinlock_t *lock`
 * given to `dma_fence_init`).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { FenceLock } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const lock = new FenceLock(world, "ring0");
 * lock.lock();
 * lock.held; // true
 * lock.unlock();
 * ```
 */
export class FenceLock {
  /** Name for reports. */
  readonly name: string;
  readonly #world: Kernel;
  readonly #irq: IrqState;
  #owner: Task | null | undefined = undefined;

  /** `spin_lock_init`. */
  constructor(world: Kernel, name = "fence->lock") {
    this.#world = world;
    this.#irq = irqState(world);
    this.name = name;
  }

  /** True while some context holds it. */
  get held(): boolean {
    return this.#owner !== undefined;
  }

  /** `spin_lock_irqsave`: raises the preempt count of the current context. */
  lock(): void {
    const world = this.#world;
    const cur = world.sched.current;
    if (this.#owner !== undefined) {
      const who = cur ? `${cur.name}/${cur.pid}` : "swapper/0";
      world.bug(
        "BUG",
        `BUG: spinlock recursion on CPU#0, ${who}`,
        `BUG: spinlock recursion on CPU#0, ${who}\n lock: ${this.name}, .owner: ${
          this.#owner ? `${this.#owner.name}/${this.#owner.pid}` : "swapper/0"
        }\n(fence lock taken again by a context that already holds it)`,
      );
    }
    this.#owner = cur;
    if (cur) cur.preemptCount++;
    this.#irq.depth++;
  }

  /** `spin_unlock_irqrestore`; runs irq_work queued meanwhile when no fence lock is left. */
  unlock(): void {
    const world = this.#world;
    if (this.#owner === undefined) {
      world.bug("BUG", `BUG: spinlock already unlocked on CPU#0 (${this.name})`);
      return;
    }
    const owner = this.#owner;
    this.#owner = undefined;
    if (owner) owner.preemptCount--;
    const st = this.#irq;
    st.depth--;
    if (st.depth === 0 && st.pending.length > 0) runWork(world, st);
  }

  /** `lockdep_assert_held(fence->lock)`. */
  assertHeld(where: string): void {
    if (this.#owner === undefined) {
      this.#world.bug(
        "lockdep",
        `WARNING: ${where}: lock ${this.name} not held`,
        `WARNING: ${where}: lockdep_assert_held(${this.name}) failed\n` +
          "the fence lock must be held (use the unlocked variant, which takes it)",
      );
    }
  }
}
