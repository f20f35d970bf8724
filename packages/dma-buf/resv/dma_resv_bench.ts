// dma_resv add and iterate with 1,000 fences (distinct contexts, so every add
// scans the list as the kernel does), each against a raw baseline in the same
// run. Each iteration runs in one task of a world (the lock needs a task).
import { Kernel } from "@dmalab/kernel";
import {
  DmaFence,
  dmaFenceContextAlloc,
  type DmaFenceOps,
  DmaResv,
  DmaResvIter,
  DmaResvUsage,
} from "../mod.ts";

const N = 1000;
const ops: DmaFenceOps = { getDriverName: () => "bench", getTimelineName: () => "ring" };
const world = new Kernel();
const fences: DmaFence[] = [];
for (let i = 0; i < N; i++) {
  fences.push(new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1));
}
const usageOf = (i: number) => (i % 4) as DmaResvUsage;

interface RawEntry {
  context: number;
  usage: number;
  signaled: boolean;
}

Deno.bench({
  name: "raw: scan-and-append 1,000 entries",
  group: "dma_resv add (1,000 fences)",
  baseline: true,
  fn: () => {
    const table: RawEntry[] = [];
    for (let i = 0; i < N; i++) {
      const e = { context: fences[i]!.context, usage: usageOf(i), signaled: false };
      let j = 0;
      for (; j < table.length; j++) {
        const o = table[j]!;
        if ((o.context === e.context && o.usage >= e.usage) || o.signaled) break;
      }
      table[j] = e;
    }
    if (table.length !== N) throw new Error("bad table");
  },
});

Deno.bench({
  name: "dma_resv: lock, reserve_fences(1,000), add_fence x1,000, unlock, fini",
  group: "dma_resv add (1,000 fences)",
  fn: async () => {
    await world.runTask("add", async () => {
      const resv = new DmaResv(world);
      await resv.lock(null);
      resv.reserveFences(N);
      for (let i = 0; i < N; i++) resv.addFence(fences[i]!, usageOf(i));
      resv.unlock();
      if (resv.numFences !== N) throw new Error("bad resv");
      resv.fini();
    });
  },
});

const filled = new DmaResv(world);
await world.runTask("fill", async () => {
  await filled.lock(null);
  filled.reserveFences(N);
  for (let i = 0; i < N; i++) filled.addFence(fences[i]!, usageOf(i));
  filled.unlock();
});
const rawTable: RawEntry[] = fences.map((f, i) => ({
  context: f.context,
  usage: usageOf(i),
  signaled: false,
}));

Deno.bench({
  name: "raw: filter 1,000 entries by usage",
  group: "dma_resv iterate (1,000 fences)",
  baseline: true,
  fn: () => {
    let n = 0;
    for (const e of rawTable) if (e.usage <= DmaResvUsage.READ && !e.signaled) n++;
    if (n !== 750) throw new Error(`bad count ${n}`);
  },
});

Deno.bench({
  name: "dma_resv: unlocked walk (references, signalled check) up to READ",
  group: "dma_resv iterate (1,000 fences)",
  fn: () => {
    let n = 0;
    const cursor = new DmaResvIter(filled, DmaResvUsage.READ);
    for (const _f of filled.forEachFenceUnlocked(cursor)) n++;
    if (n !== 750) throw new Error(`bad count ${n}`);
  },
});

Deno.bench({
  name: "dma_resv: locked walk up to READ (lock, walk, unlock in a task)",
  group: "dma_resv iterate (1,000 fences)",
  fn: async () => {
    let n = 0;
    await world.runTask("walk", async () => {
      await filled.lock(null);
      for (const _f of filled.forEachFence(DmaResvUsage.READ)) n++;
      filled.unlock();
    });
    if (n !== 750) throw new Error(`bad count ${n}`);
  },
});
