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
import type { Kernel, LockdepMap } from "@dmalab/kernel";

/** Name of the pseudo-lock (`dma_fence_lockdep_map`). */
export const DMA_FENCE_MAP = "dma_fence_map";

/** The world's `dma_fence_map`, or null without lockdep (CONFIG_LOCKDEP off). */
export function dmaFenceLockdepMap(world: Kernel): LockdepMap | null {
  if (!world.lockdepEnabled) return null;
  let map = maps.get(world);
  if (!map) {
    map = world.lockdep.map(DMA_FENCE_MAP);
    maps.set(world, map);
  }
  return map;
}

const maps = new WeakMap<Kernel, LockdepMap>();

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
  const map = dmaFenceLockdepMap(world);
  if (!map) return true;
  if (map.isHeld(1)) return true;
  if (world.sched.current?.atomic) return true;
  map.acquireRead({ trylock: true, site: "dma_fence_begin_signalling" });
  return false;
}

/** `dma_fence_end_signalling(cookie)`: closes the section opened with `cookie` false. */
export function dmaFenceEndSignalling(world: Kernel, cookie: boolean): void {
  if (cookie) return;
  dmaFenceLockdepMap(world)?.release("dma_fence_end_signalling");
}

/**
 * `__dma_fence_might_wait()`: tells lockdep this context may wait on a fence
 * (write-acquire of `dma_fence_map`, a held read dropped around it).
 */
export function dmaFenceMightWait(world: Kernel): void {
  const map = dmaFenceLockdepMap(world);
  if (!map) return;
  const held = map.isHeld(1);
  if (held) map.release("__dma_fence_might_wait");
  map.acquire({ site: "__dma_fence_might_wait" });
  map.release("__dma_fence_might_wait");
  if (held) map.acquireRead({ trylock: true, site: "__dma_fence_might_wait" });
}
