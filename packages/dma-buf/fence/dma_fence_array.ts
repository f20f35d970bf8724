/**
 * DOC: dma_fence_array
 *
 * `struct dma_fence_array` (drivers/dma-buf/dma-fence-array.c): a fence that
 * signals when all of its elements have signalled, or (`signalOnAny`) when
 * one has. The first non-zero element error becomes the array's error while
 * the array is pending (the internal PENDING_ERROR value 1 marks "none yet"
 * and is cleared to 0 at signal time).
 *
 * Locking rules: the array has its own fence lock. Element callbacks only
 * count down and queue irq_work; the array signals from that irq_work, after
 * the element's lock is dropped, so no fence lock nests inside another.
 * Arrays must be flat: a container element is a WARN.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import {
  DMA_FENCE_FLAG_ENABLE_SIGNAL_BIT,
  DmaFence,
  DmaFenceCb,
  type DmaFenceKind,
  type DmaFenceOps,
} from "./dma_fence.ts";
import { FenceLock, queueIrqWork } from "./fence_lock.ts";

const PENDING_ERROR = 1;

function setPendingError(array: DmaFenceArray, error: number): void {
  if (error && array.error === PENDING_ERROR) array.setErrorRaw(error);
}

function clearPendingError(array: DmaFenceArray): void {
  if (array.error === PENDING_ERROR) array.setErrorRaw(0);
}

function arrayCbFunc(array: DmaFenceArray): (f: DmaFence) => void {
  return (f: DmaFence) => {
    setPendingError(array, f.error);
    if (--array.numPending === 0) {
      queueIrqWork(array.world, () => {
        clearPendingError(array);
        array.signal();
        array.put();
      });
    } else {
      array.put();
    }
  };
}

/** `dma_fence_array_ops`. */
export const dmaFenceArrayOps: DmaFenceOps = {
  getDriverName: () => "dma_fence_array",
  getTimelineName: () => "unbound",
  enableSignaling(fence: DmaFence): boolean {
    const array = fence as DmaFenceArray;
    const func = arrayCbFunc(array);
    for (let i = 0; i < array.fences.length; i++) {
      const cb = array.callbacks[i]!;
      array.get();
      if (array.fences[i]!.addCallback(cb, func)) {
        setPendingError(array, array.fences[i]!.error);
        array.put();
        if (--array.numPending === 0) {
          clearPendingError(array);
          return false;
        }
      }
    }
    return true;
  },
  signaled(fence: DmaFence): boolean {
    const array = fence as DmaFenceArray;
    let numPending = array.numPending;
    if (array.flags & (1 << DMA_FENCE_FLAG_ENABLE_SIGNAL_BIT)) {
      if (numPending <= 0) {
        clearPendingError(array);
        return true;
      }
      return false;
    }
    for (const f of array.fences) {
      if (f.isSignaled() && !--numPending) {
        clearPendingError(array);
        return true;
      }
    }
    return false;
  },
  release(fence: DmaFence): void {
    const array = fence as DmaFenceArray;
    for (const f of array.fences) f.put();
    fence.free();
  },
  setDeadline(fence: DmaFence, deadline: number): void {
    for (const f of (fence as DmaFenceArray).fences) f.setDeadline(deadline);
  },
};

/**
 * A fence over several fences (`dma_fence_array_create`). Takes ownership of
 * the references in `fences`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { DmaFence, DmaFenceArray, dmaFenceContextAlloc } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const ops = { getDriverName: () => "d", getTimelineName: () => "t" };
 * const a = new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1);
 * const b = new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1);
 * const arr = DmaFenceArray.create(world, [a.get(), b.get()], dmaFenceContextAlloc(world, 1), 1, false);
 * arr.enableSwSignaling();
 * a.signal();
 * arr.isSignaled(); // false
 * b.signal();
 * arr.isSignaled(); // true
 * ```
 */
export class DmaFenceArray extends DmaFence {
  /** `array->fences` (owned references). */
  readonly fences: DmaFence[];
  /** `array->callbacks`, one slot per element. */
  readonly callbacks: DmaFenceCb[];
  /** `array->num_pending`. */
  numPending: number;

  /**
   * `dma_fence_array_init`: WARNs for an empty array and for container
   * elements.
   */
  constructor(
    world: Kernel,
    fences: DmaFence[],
    context: number,
    seqno: number,
    signalOnAny: boolean,
  ) {
    super(world, dmaFenceArrayOps, context, seqno, { lock: new FenceLock(world, "&array->lock") });
    world.warnOn(fences.length === 0, "dma_fence_array_init: !num_fences || !fences");
    this.fences = fences;
    this.callbacks = fences.map(() => new DmaFenceCb());
    this.numPending = signalOnAny ? 1 : fences.length;
    this.setErrorRaw(PENDING_ERROR);
    for (let i = fences.length - 1; i >= 0; i--) {
      world.warnOn(
        fences[i]!.isContainer,
        "dma_fence_array_init: element is a container (arrays must be flat)",
      );
    }
  }

  /** `dma_fence_array_create`. */
  static create(
    world: Kernel,
    fences: DmaFence[],
    context: number,
    seqno: number,
    signalOnAny: boolean,
  ): DmaFenceArray {
    return new DmaFenceArray(world, fences, context, seqno, signalOnAny);
  }

  /** Always `array`. */
  override get kind(): DmaFenceKind {
    return "array";
  }

  /** `array->num_fences`. */
  get numFences(): number {
    return this.fences.length;
  }
}

/** `to_dma_fence_array`: the array, or null for another kind of fence. */
export function toDmaFenceArray(fence: DmaFence | null | undefined): DmaFenceArray | null {
  return fence instanceof DmaFenceArray ? fence : null;
}

/**
 * `dma_fence_match_context`: a plain fence is on `context`, or every element
 * of an array is.
 */
export function dmaFenceMatchContext(fence: DmaFence, context: number): boolean {
  const array = toDmaFenceArray(fence);
  if (!array) return fence.context === context;
  return array.fences.every((f) => f.context === context);
}

/** `dma_fence_array_first`: null for null or an empty array, the head for a non-array, else element 0. */
export function dmaFenceArrayFirst(head: DmaFence | null): DmaFence | null {
  if (!head) return null;
  const array = toDmaFenceArray(head);
  if (!array) return head;
  return array.fences[0] ?? null;
}

/** `dma_fence_array_next(head, index)`: element `index` of an array, or null. */
export function dmaFenceArrayNext(head: DmaFence | null, index: number): DmaFence | null {
  const array = toDmaFenceArray(head);
  if (!array || index >= array.fences.length) return null;
  return array.fences[index]!;
}
