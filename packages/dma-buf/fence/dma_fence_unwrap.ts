/**
 * DOC: dma_fence_unwrap
 *
 * `dma_fence_unwrap_for_each` and `dma_fence_unwrap_merge`
 * (drivers/dma-buf/dma-fence-unwrap.c, include/linux/dma-fence-unwrap.h).
 * Unwrapping yields the leaf fences inside a container: chain nodes newest
 * first, each node's contained fence, array elements in array order; a plain
 * fence yields itself. It walks chains with `dma_fence_chain_walk`, so
 * signalled chain nodes may be collected on the way.
 *
 * Merging collects the unsignalled leaves of all inputs, keeps only the
 * latest fence per context, sorts by context, and returns: a private stub
 * (signalled, with the latest time stamp seen) when nothing is pending, the
 * single fence when one is left, else a new signal-on-all array on a fresh
 * context with seqno 1. The inputs' references are not consumed.
 *
 * Locking rules: none held by the caller; callable in atomic context
 * (merge allocates with GFP_KERNEL in the kernel, so not in a signalling
 * section).
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import {
  type DmaFence,
  dmaFenceAllocatePrivateStub,
  dmaFenceContextAlloc,
  dmaFenceSeqnoIsLater,
} from "./dma_fence.ts";
import { DmaFenceArray, dmaFenceArrayFirst, dmaFenceArrayNext } from "./dma_fence_array.ts";
import { dmaFenceChainContained, dmaFenceChainWalk } from "./dma_fence_chain.ts";

/** `struct dma_fence_unwrap`: the cursor of an unwrap walk. */
export class DmaFenceUnwrap {
  /** The chain node being walked (holds a reference), or null at the end. */
  chain: DmaFence | null = null;
  /** The array (or plain fence) contained in `chain`. */
  array: DmaFence | null = null;
  /** Index inside `array`. */
  index = 0;
}

function unwrapArray(cursor: DmaFenceUnwrap): DmaFence | null {
  cursor.array = cursor.chain ? dmaFenceChainContained(cursor.chain) : null;
  cursor.index = 0;
  return dmaFenceArrayFirst(cursor.array);
}

/** `dma_fence_unwrap_first(head, cursor)`: the first leaf (takes a reference on `head`). */
export function dmaFenceUnwrapFirst(head: DmaFence, cursor: DmaFenceUnwrap): DmaFence | null {
  cursor.chain = head.get();
  return unwrapArray(cursor);
}

/** `dma_fence_unwrap_next(cursor)`: the next leaf, or null at the end. */
export function dmaFenceUnwrapNext(cursor: DmaFenceUnwrap): DmaFence | null {
  ++cursor.index;
  const tmp = dmaFenceArrayNext(cursor.array, cursor.index);
  if (tmp) return tmp;
  cursor.chain = cursor.chain ? dmaFenceChainWalk(cursor.chain) : null;
  return unwrapArray(cursor);
}

/**
 * `dma_fence_unwrap_for_each(fence, cursor, head)`: every leaf fence in
 * `head`. Yielded fences are borrowed (valid while the walk runs); leaving
 * the loop early drops the walk's reference.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { DmaFence, DmaFenceArray, dmaFenceContextAlloc, dmaFenceUnwrapForEach } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const ops = { getDriverName: () => "d", getTimelineName: () => "t" };
 * const f1 = new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1);
 * const f2 = new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1);
 * const arr = DmaFenceArray.create(world, [f1, f2], dmaFenceContextAlloc(world, 1), 1, false);
 * [...dmaFenceUnwrapForEach(arr)].length; // 2
 * ```
 */
export function* dmaFenceUnwrapForEach(head: DmaFence): Generator<DmaFence, void, void> {
  const cursor = new DmaFenceUnwrap();
  try {
    for (let f = dmaFenceUnwrapFirst(head, cursor); f; f = dmaFenceUnwrapNext(cursor)) {
      yield f;
    }
  } finally {
    if (cursor.chain) cursor.chain.put();
    cursor.chain = null;
  }
}

/**
 * `dma_fence_dedup_array(fences, n)`: sorts by context (ascending) and,
 * within a context, latest first; keeps the first fence per context and drops
 * the references of the others. Returns the new length (0 for an empty
 * array, as the 2026 fix has it); `fences` is truncated in place.
 */
export function dmaFenceDedupArray(fences: DmaFence[]): number {
  if (fences.length === 0) return 0;
  fences.sort((a, b) => {
    if (a.context < b.context) return -1;
    if (a.context > b.context) return 1;
    if (dmaFenceSeqnoIsLater(a.seqno64, a.seqno, b.seqno)) return -1;
    if (dmaFenceSeqnoIsLater(b.seqno64, b.seqno, a.seqno)) return 1;
    return 0;
  });
  let j = 0;
  for (let i = 1; i < fences.length; i++) {
    if (fences[i]!.context === fences[j]!.context) fences[i]!.put();
    else fences[++j] = fences[i]!;
  }
  fences.length = j + 1;
  return j + 1;
}

/**
 * `dma_fence_unwrap_merge(...)` (`__dma_fence_unwrap_merge`): one fence
 * standing for all unsignalled leaves of `fences`. Returns a new reference.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { DmaFence, dmaFenceContextAlloc, dmaFenceUnwrapMerge } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const ops = { getDriverName: () => "d", getTimelineName: () => "t" };
 * const ctx = dmaFenceContextAlloc(world, 1);
 * const a = new DmaFence(world, ops, ctx, 1);
 * const b = new DmaFence(world, ops, ctx, 2);
 * const m = dmaFenceUnwrapMerge(world, a, b);
 * m === b; // true: same context, the later one is kept
 * ```
 */
export function dmaFenceUnwrapMerge(world: Kernel, ...fences: DmaFence[]): DmaFence {
  let count = 0;
  let timestamp = 0;
  for (const head of fences) {
    for (const tmp of dmaFenceUnwrapForEach(head)) {
      if (!tmp.isSignaled()) {
        count++;
      } else {
        const t = tmp.timestamp();
        if (t > timestamp) timestamp = t;
      }
    }
  }
  if (count === 0) return dmaFenceAllocatePrivateStub(world, timestamp);
  const array: DmaFence[] = [];
  for (const head of fences) {
    for (const tmp of dmaFenceUnwrapForEach(head)) {
      if (!tmp.isSignaled()) array.push(tmp.get());
    }
  }
  if (array.length === 0) return dmaFenceAllocatePrivateStub(world, world.sched.now);
  const n = dmaFenceDedupArray(array);
  if (n === 1) return array[0]!;
  return DmaFenceArray.create(world, array, dmaFenceContextAlloc(world, 1), 1, false);
}
