// Port of drivers/dma-buf/st-dma-resv.c (KUnit suite "dma-buf-resv"): the
// sanity check, then each parameterised case for every usage
// (kernel, write, read, bookkeep), under the kernel names.
import { ok, strictEqual } from "node:assert/strict";
import { Kernel } from "@dmalab/kernel";
import {
  DmaFence,
  type DmaFenceOps,
  dmaFenceWorld,
  DmaResv,
  DmaResvIter,
  DmaResvUsage,
  dmaResvUsageName,
  FenceLock,
} from "../mod.ts";

const fenceOps: DmaFenceOps = {
  getDriverName: () => "selftest",
  getTimelineName: () => "selftest",
};

/** `alloc_fence()`: shared global lock, context 0, seqno 0. */
function allocFence(w: Kernel, lock: FenceLock): DmaFence {
  return new DmaFence(w, fenceOps, 0, 0, { lock });
}

const USAGES: DmaResvUsage[] = [
  DmaResvUsage.KERNEL,
  DmaResvUsage.WRITE,
  DmaResvUsage.READ,
  DmaResvUsage.BOOKKEEP,
];

async function kunit(body: (w: Kernel, lock: FenceLock) => Promise<void>) {
  const w = new Kernel();
  const lock = new FenceLock(w, "fence_lock");
  await w.runTask("kunit", () => body(w, lock));
  strictEqual(dmaFenceWorld(w).live, 0, "every fence released");
  strictEqual(w.bugs.length, 0, "no splat");
}

Deno.test("dma-buf-resv", async (t) => {
  await t.step("test_sanitycheck", async () => {
    await kunit(async (w, lock) => {
      const f = allocFence(w, lock);
      f.enableSwSignaling();
      f.signal();
      f.put();
      const resv = new DmaResv(w);
      strictEqual(await resv.lock(null), 0, "Resv locking failed");
      resv.unlock();
      resv.fini();
    });
  });

  for (const usage of USAGES) {
    const u = dmaResvUsageName(usage);

    await t.step(`test_signaling (${u})`, async () => {
      await kunit(async (w, lock) => {
        const f = allocFence(w, lock);
        f.enableSwSignaling();
        const resv = new DmaResv(w);
        strictEqual(await resv.lock(null), 0);
        strictEqual(resv.reserveFences(1), 0, "Resv shared slot allocation failed");
        resv.addFence(f, usage);
        ok(!resv.testSignaled(usage), "Resv unexpectedly signaled");
        f.signal();
        ok(resv.testSignaled(usage), "Resv not reporting signaled");
        resv.unlock();
        resv.fini();
        f.put();
      });
    });

    await t.step(`test_for_each (${u})`, async () => {
      await kunit(async (w, lock) => {
        const f = allocFence(w, lock);
        f.enableSwSignaling();
        const resv = new DmaResv(w);
        strictEqual(await resv.lock(null), 0);
        strictEqual(resv.reserveFences(1), 0);
        resv.addFence(f, usage);
        let count = 0;
        const cursor = new DmaResvIter(resv, usage);
        for (const fence of resv.forEachFence(usage, cursor)) {
          ok(count === 0, "More than one fence found");
          strictEqual(fence, f, "Unexpected fence");
          strictEqual(cursor.fenceUsage, usage, "Unexpected fence usage");
          count++;
        }
        ok(count > 0, "No fence found");
        f.signal();
        resv.unlock();
        resv.fini();
        f.put();
      });
    });

    await t.step(`test_for_each_unlocked (${u})`, async () => {
      await kunit(async (w, lock) => {
        const f = allocFence(w, lock);
        f.enableSwSignaling();
        const resv = new DmaResv(w);
        strictEqual(await resv.lock(null), 0);
        strictEqual(resv.reserveFences(1), 0);
        resv.addFence(f, usage);
        resv.unlock();
        let count = 0;
        const cursor = new DmaResvIter(resv, usage);
        for (const fence of resv.forEachFenceUnlocked(cursor)) {
          ok(cursor.isRestarted, "No restart flag");
          strictEqual(fence, f, "Unexpected fence");
          strictEqual(cursor.fenceUsage, usage, "Unexpected fence usage");
          count++;
          ok(count <= 2, "More than one fence found");
          // Force a restart (the KUnit test writes (void *)~0 into cursor.fences)
          if (count === 1) cursor.fences = {};
        }
        strictEqual(count, 2, "the walk restarted and yielded f again");
        f.signal();
        resv.fini();
        f.put();
      });
    });

    await t.step(`test_get_fences (${u})`, async () => {
      await kunit(async (w, lock) => {
        const f = allocFence(w, lock);
        f.enableSwSignaling();
        const resv = new DmaResv(w);
        strictEqual(await resv.lock(null), 0);
        strictEqual(resv.reserveFences(1), 0);
        resv.addFence(f, usage);
        resv.unlock();
        const fences = resv.getFences(usage);
        strictEqual(fences.length, 1, "get_fences returned one fence");
        strictEqual(fences[0], f);
        f.signal();
        for (const x of fences) x.put();
        resv.fini();
        f.put();
      });
    });
  }
});
