/**
 * DOC: dma_fence_chain
 *
 * `struct dma_fence_chain` (drivers/dma-buf/dma-fence-chain.c): one node of a
 * timeline of fences (a drm_syncobj timeline). A node contains one fence and
 * points at the previous node; it signals only when its own fence and every
 * earlier node's fence have signalled. Nodes share the previous node's
 * context when their seqno is later, else they start a fresh context.
 *
 * Walking ({@linkcode dmaFenceChainWalk}) garbage-collects signalled
 * predecessors by unlinking them, so a long-lived timeline does not keep
 * every completed fence alive. Release unlinks predecessors it holds the last
 * reference to iteratively, so dropping a long chain does not recurse.
 *
 * Locking rules: each node has its own fence lock. The node's callback sits
 * on the first unsignalled contained fence; when it fires, irq_work re-arms it
 * on the next unsignalled one, or signals the node when none is left.
 * Chain nodes are initialised with 64-bit seqnos (6.15+).
 *
 * @module
 */
import { type Kernel, KernelError } from "@dmalab/kernel";
import {
  DmaFence,
  DmaFenceCb,
  dmaFenceContextAlloc,
  type DmaFenceKind,
  type DmaFenceOps,
  dmaFenceSeqnoIsLater,
} from "./dma_fence.ts";
import { FenceLock, queueIrqWork } from "./fence_lock.ts";

/** `to_dma_fence_chain`: the chain node, or null for another kind of fence. */
export function toDmaFenceChain(fence: DmaFence | null | undefined): DmaFenceChain | null {
  return fence instanceof DmaFenceChain ? fence : null;
}

/** `dma_fence_chain_contained`: the node's fence for a chain node, else the fence itself. */
export function dmaFenceChainContained(fence: DmaFence): DmaFence {
  const chain = toDmaFenceChain(fence);
  return chain ? chain.fence : fence;
}

/** `dma_fence_chain_get_prev`: a reference to the previous node (or null). */
function getPrev(chain: DmaFenceChain): DmaFence | null {
  const p = chain.prev;
  return p ? p.getRcu() : null;
}

/**
 * `dma_fence_chain_walk(fence)`: drops the reference on `fence` and returns a
 * reference to the previous node (null at the end), unlinking signalled
 * predecessors on the way.
 */
export function dmaFenceChainWalk(fence: DmaFence): DmaFence | null {
  const chain = toDmaFenceChain(fence);
  if (!chain) {
    fence.put();
    return null;
  }
  let prev: DmaFence | null;
  while ((prev = getPrev(chain)) !== null) {
    const prevChain = toDmaFenceChain(prev);
    let replacement: DmaFence | null;
    if (prevChain) {
      if (!prevChain.fence.isSignaled()) break;
      replacement = getPrev(prevChain);
    } else {
      if (!prev.isSignaled()) break;
      replacement = null;
    }
    // cmpxchg(&chain->prev, prev, replacement): one CPU, so it always succeeds
    // unless someone changed prev meanwhile.
    if (chain.prev === prev) {
      chain.prev = replacement;
      prev.put();
    } else if (replacement) {
      replacement.put();
    }
    prev.put();
  }
  fence.put();
  return prev;
}

/**
 * `dma_fence_chain_for_each(iter, head)`: every node from `head` backwards,
 * each yielded with a reference the iteration drops when it moves on. Stop
 * early and keep the yielded node by taking your own reference.
 */
export function* dmaFenceChainForEach(head: DmaFence): Generator<DmaFence, void, void> {
  let iter: DmaFence | null = head.get();
  try {
    while (iter) {
      yield iter;
      iter = dmaFenceChainWalk(iter);
    }
  } finally {
    if (iter) iter.put();
  }
}

function chainCb(_f: DmaFence, cb: DmaFenceCb): void {
  const chain = (cb as ChainCb).chain;
  queueIrqWork(chain.world, () => {
    if (!chainEnableSignaling(chain)) chain.signal();
    chain.put();
  });
  _f.put();
}

class ChainCb extends DmaFenceCb {
  constructor(readonly chain: DmaFenceChain) {
    super();
  }
}

function chainEnableSignaling(head: DmaFenceChain): boolean {
  head.get();
  let fence: DmaFence | null = head.get();
  while (fence) {
    const f = dmaFenceChainContained(fence);
    f.get();
    if (!f.addCallback(head.cb, chainCb)) {
      fence.put();
      return true;
    }
    f.put();
    fence = dmaFenceChainWalk(fence);
  }
  head.put();
  return false;
}

/** `dma_fence_chain_ops`. */
export const dmaFenceChainOps: DmaFenceOps = {
  getDriverName: () => "dma_fence_chain",
  getTimelineName: () => "unbound",
  enableSignaling(fence: DmaFence): boolean {
    return chainEnableSignaling(fence as DmaFenceChain);
  },
  signaled(fence: DmaFence): boolean {
    let iter: DmaFence | null = fence.get();
    while (iter) {
      if (!dmaFenceChainContained(iter).isSignaled()) {
        iter.put();
        return false;
      }
      iter = dmaFenceChainWalk(iter);
    }
    return true;
  },
  release(fence: DmaFence): void {
    const chain = fence as DmaFenceChain;
    let prev: DmaFence | null;
    while ((prev = chain.prev) !== null) {
      if (prev.refcount > 1) break;
      const prevChain = toDmaFenceChain(prev);
      if (!prevChain) break;
      chain.prev = prevChain.prev;
      prevChain.prev = null;
      prev.put();
    }
    if (prev) prev.put();
    chain.fence.put();
    fence.free();
  },
  setDeadline(fence: DmaFence, deadline: number): void {
    let iter: DmaFence | null = fence.get();
    while (iter) {
      dmaFenceChainContained(iter).setDeadline(deadline);
      iter = dmaFenceChainWalk(iter);
    }
  },
};

function chainContext(world: Kernel, prev: DmaFence | null, seqno: number) {
  const prevChain = toDmaFenceChain(prev);
  if (prevChain && dmaFenceSeqnoIsLater(prevChain.seqno64, seqno, prevChain.seqno)) {
    return { context: prevChain.context, seqno, prevSeqno: prevChain.seqno };
  }
  const context = dmaFenceContextAlloc(world, 1);
  return {
    context,
    seqno: prevChain ? Math.max(prevChain.seqno, seqno) : seqno,
    prevSeqno: 0,
  };
}

/**
 * A chain node (`dma_fence_chain_alloc` + `dma_fence_chain_init`). Takes over
 * the caller's references to `prev` and `fence`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { DmaFence, DmaFenceChain } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const ops = { getDriverName: () => "d", getTimelineName: () => "t" };
 * const f1 = new DmaFence(world, ops, 0, 0);
 * const f2 = new DmaFence(world, ops, 0, 0);
 * const c1 = new DmaFenceChain(world, null, f1.get(), 1);
 * const c2 = new DmaFenceChain(world, c1.get(), f2.get(), 2);
 * c2.context === c1.context; // true: seqno 2 is later
 * f2.signal();
 * c2.isSignaled(); // false: node 1 is pending
 * f1.signal();
 * c2.isSignaled(); // true
 * ```
 */
export class DmaFenceChain extends DmaFence {
  /** `chain->prev` (an owned reference, or null). */
  prev: DmaFence | null;
  /** `chain->prev_seqno`. */
  readonly prevSeqno: number;
  /** `chain->fence` (an owned reference). */
  readonly fence: DmaFence;
  /** `chain->cb`. */
  readonly cb: DmaFenceCb;

  /** `dma_fence_chain_init(chain, prev, fence, seqno)`. */
  constructor(world: Kernel, prev: DmaFence | null, fence: DmaFence, seqno: number) {
    const c = chainContext(world, prev, seqno);
    super(world, dmaFenceChainOps, c.context, c.seqno, {
      seqno64: true,
      lock: new FenceLock(world, "&chain->lock"),
    });
    this.prev = prev;
    this.fence = fence;
    this.prevSeqno = c.prevSeqno;
    this.cb = new ChainCb(this);
  }

  /** Always `chain`. */
  override get kind(): DmaFenceKind {
    return "chain";
  }
}

/**
 * `dma_fence_chain_find_seqno(&fence, seqno)`: moves to the node that will
 * signal `seqno`. `seqno` 0 returns `fence` unchanged. Throws `EINVAL`
 * (leaving the caller's reference alone) when `fence` is not a chain node or
 * its seqno is below `seqno`. Otherwise consumes the reference on `fence`
 * and returns a reference to the node, or null when everything up to `seqno`
 * has signalled and was collected.
 */
export function dmaFenceChainFindSeqno(fence: DmaFence | null, seqno: number): DmaFence | null {
  if (!seqno) return fence;
  const chain = toDmaFenceChain(fence);
  if (!chain || chain.seqno < seqno) {
    throw new KernelError(
      "EINVAL",
      `dma_fence_chain_find_seqno: ${
        chain
          ? `seqno ${seqno} is beyond the chain head (${chain.seqno})`
          : "fence is not a chain node"
      }`,
    );
  }
  let iter: DmaFence | null = chain.get();
  while (iter) {
    const node = toDmaFenceChain(iter);
    if (iter.context !== chain.context || !node || node.prevSeqno < seqno) break;
    iter = dmaFenceChainWalk(iter);
  }
  chain.put();
  return iter;
}
