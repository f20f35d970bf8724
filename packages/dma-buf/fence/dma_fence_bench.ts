// Fence signal + callback throughput: 1,000 fences, one callback each,
// signalled in order, against a raw baseline doing the same bookkeeping with
// plain objects in the same run. The model runs with lockdep on (every
// signal is a dma_fence_map acquisition) and off.
import { Kernel } from "@dmalab/kernel";
import { DmaFence, DmaFenceCb, dmaFenceContextAlloc, type DmaFenceOps } from "../mod.ts";

const N = 1000;
const GROUP = "fence signal + callback (1,000 fences)";
const ops: DmaFenceOps = { getDriverName: () => "bench", getTimelineName: () => "ring" };

Deno.bench({
  name: "raw: 1,000 flags + callback lists",
  group: GROUP,
  baseline: true,
  fn: () => {
    let seen = 0;
    const fences: { signaled: boolean; cbs: (() => void)[] }[] = [];
    for (let i = 0; i < N; i++) fences.push({ signaled: false, cbs: [() => seen++] });
    for (const f of fences) {
      f.signaled = true;
      const cbs = f.cbs;
      f.cbs = [];
      for (const cb of cbs) cb();
    }
    if (seen !== N) throw new Error("lost callbacks");
  },
});

function cycle(world: Kernel, ctx: number): void {
  let seen = 0;
  const fences: DmaFence[] = [];
  for (let i = 0; i < N; i++) {
    const f = new DmaFence(world, ops, ctx, i + 1);
    f.addCallback(new DmaFenceCb(), () => seen++);
    fences.push(f);
  }
  for (const f of fences) f.signal();
  for (const f of fences) f.put();
  if (seen !== N) throw new Error("lost callbacks");
}

const withLockdep = new Kernel();
const ctxA = dmaFenceContextAlloc(withLockdep, 1);
Deno.bench({
  name: "dma_fence: init, add_callback, signal, put (lockdep on)",
  group: GROUP,
  fn: () => cycle(withLockdep, ctxA),
});

const noLockdep = new Kernel({ lockdep: false });
const ctxB = dmaFenceContextAlloc(noLockdep, 1);
Deno.bench({
  name: "dma_fence: init, add_callback, signal, put (lockdep off)",
  group: GROUP,
  fn: () => cycle(noLockdep, ctxB),
});
