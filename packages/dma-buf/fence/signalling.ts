/**
 * DOC: fence signalling critical sections
 *
 * `dma_fence_begin_signalling()` / `dma_fence_end_signalling()` and
 * `__dma_fence_might_wait()` (drivers/dma-buf/dma-fence.c). With lockdep on,
 * begin takes the global pseudo-lock `dma_fence_map` as a non-recursive read
 * trylock and returns false; it returns true (a no-op cookie) when the map is
 * already held by this context or in atomic context; end releases only for a
 * false cookie. Every fence wait acquires and releases the map as a write
 * lock (dropping and re-taking a held read around it), so lockdep learns
 * "lock L held while waiting" as L -> dma_fence_map and "lock L taken in a
 * signalling section" as dma_fence_map -> L, and reports the cycle.
 *
 * Locking rules: the cookie must be passed back to end in the same context.
 *
 * @module
 */
import type { Kernel, Task } from "@dmalab/kernel";

/** What the fence code needs from lockdep (the `dma_fence_map` pseudo-lock). */
export interface FenceLockdep {
  /** `lock_is_held_type(&dma_fence_map, 1)` for the current context. */
  heldRead(): boolean;
  /** `lock_acquire(&dma_fence_map, 0, 1 /*trylock*\/, 1 /*read*\/, ...)`. */
  acquireRead(): void;
  /** `lock_map_acquire(&dma_fence_map)` (write). */
  acquireWrite(): void;
  /** `lock_release(&dma_fence_map)`. */
  release(): void;
}

const KEY = "dma-buf:dma_fence_map";

/**
 * Fallback used until a world provides lockdep: tracks which context holds
 * the map for reads so cookies and nesting behave as in the kernel; it has
 * no dependency graph, so nothing is reported.
 */
class HeldOnly implements FenceLockdep {
  readonly #world: Kernel;
  readonly #held = new Map<Task | null, ("r" | "w")[]>();
  constructor(world: Kernel) {
    this.#world = world;
  }
  #stack(): ("r" | "w")[] {
    const c = this.#world.sched.current;
    let s = this.#held.get(c);
    if (!s) {
      s = [];
      this.#held.set(c, s);
    }
    return s;
  }
  heldRead(): boolean {
    return this.#stack().includes("r");
  }
  acquireRead(): void {
    this.#stack().push("r");
  }
  acquireWrite(): void {
    this.#stack().push("w");
  }
  release(): void {
    this.#stack().pop();
  }
}

/**
 * Installs the lockdep adapter the fence annotations use in `world`
 * (replacing the fallback). Lower-level code calls this once lockdep exists.
 */
export function setFenceLockdep(world: Kernel, dep: FenceLockdep): void {
  const slot = world.ext(KEY, () => ({ dep: null as FenceLockdep | null }));
  slot.dep = dep;
}

function lockdepOf(world: Kernel): FenceLockdep | null {
  if (!world.lockdepEnabled) return null;
  const slot = world.ext(KEY, () => ({ dep: null as FenceLockdep | null }));
  if (!slot.dep) slot.dep = defaultFenceLockdep(world);
  return slot.dep;
}

function defaultFenceLockdep(world: Kernel): FenceLockdep {
  return new HeldOnly(world);
}

/**
 * `dma_fence_begin_signalling()`: opens a signalling critical section and
 * returns the cookie for {@linkcode dmaFenceEndSignalling}.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaFenceBeginSignalling, dmaFenceEndSignalling } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * await world.runTask("irq-worker", async () => {
 *   const cookie = dmaFenceBeginSignalling(world); // false: the map is now held
 *   const nested = dmaFenceBeginSignalling(world); // true: nesting is a no-op
 *   dmaFenceEndSignalling(world, nested);
 *   dmaFenceEndSignalling(world, cookie);
 * });
 * ```
 */
export function dmaFenceBeginSignalling(world: Kernel): boolean {
  const dep = lockdepOf(world);
  if (!dep) return true;
  if (dep.heldRead()) return true;
  const cur = world.sched.current;
  if (cur?.atomic) return true;
  dep.acquireRead();
  return false;
}

/** `dma_fence_end_signalling(cookie)`: closes the section opened with `cookie` false. */
export function dmaFenceEndSignalling(world: Kernel, cookie: boolean): void {
  if (cookie) return;
  const dep = lockdepOf(world);
  if (!dep) return;
  dep.release();
}

/**
 * `__dma_fence_might_wait()`: tells lockdep this context may wait on a fence
 * (write-acquire of `dma_fence_map`, a held read dropped around it).
 */
export function dmaFenceMightWait(world: Kernel): void {
  const dep = lockdepOf(world);
  if (!dep) return;
  const held = dep.heldRead();
  if (held) dep.release();
  dep.acquireWrite();
  dep.release();
  if (held) dep.acquireRead();
}
