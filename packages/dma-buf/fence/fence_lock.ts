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
import { type Kernel, SpinLock, type Task } from "@dmalab/kernel";

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
    // Work queued while draining is appended and runs in this same pass.
    for (let i = 0; i < st.pending.length; i++) st.pending[i]!();
  } finally {
    st.pending.length = 0;
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
 * given to `dma_fence_init`): the kernel's {@linkcode SpinLock} taken with
 * `spin_lock_irqsave`, so lockdep sees fence locks (and their order against
 * the locks a callback takes), plus the irq_work drain when the last fence
 * lock is dropped. `name` is the lockdep class (one class per name, as one
 * `spin_lock_init` site).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { FenceLock } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const lock = new FenceLock(world, "ring0->fence_lock");
 * lock.lock();
 * lock.held; // true
 * lock.unlock();
 * ```
 */
export class FenceLock {
  /** The spinlock itself. */
  readonly spin: SpinLock;
  readonly #irq: IrqState;
  #flags = 0;

  /** `spin_lock_init`. */
  constructor(world: Kernel, name = "&fence->inline_lock") {
    this.#irq = irqState(world);
    this.spin = new SpinLock(world, name);
    this.#world = world;
  }

  readonly #world: Kernel;

  /** Lock name (its lockdep class). */
  get name(): string {
    return this.spin.name;
  }

  /** True while some context holds it. */
  get held(): boolean {
    return this.spin.isLocked();
  }

  /** `spin_lock_irqsave`: the caller is atomic until `unlock`. */
  lock(): void {
    const flags = this.spin.lockIrqsave();
    this.#flags = flags;
    this.#irq.depth++;
  }

  /** `spin_unlock_irqrestore`; runs irq_work queued meanwhile when no fence lock is left. */
  unlock(): void {
    const wasHeld = this.spin.isLocked();
    this.spin.unlockIrqrestore(this.#flags);
    if (!wasHeld) return;
    const st = this.#irq;
    st.depth--;
    if (st.depth === 0 && st.pending.length > 0) runWork(this.#world, st);
  }

  /** `lockdep_assert_held(fence->lock)`; `where` names the caller in the report. */
  assertHeld(where: string): void {
    if (this.spin.owner !== null && this.spin.owner === this.#world.lockdep.current()) return;
    this.#world.bug(
      "lockdep",
      `WARNING: ${where}: lock ${this.name} not held`,
      `WARNING: ${where}: lockdep_assert_held(${this.name}) failed\n` +
        "the fence lock must be held (use the unlocked variant, which takes it)",
    );
  }
}
