// Port of drivers/dma-buf/st-dma-fence-unwrap.c (suite "dma-buf-fence-unwrap"),
// case by case under the kernel names.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Kernel } from "@dmalab/kernel";
import {
  DmaFence,
  DmaFenceArray,
  DmaFenceChain,
  dmaFenceContextAlloc,
  dmaFenceDedupArray,
  dmaFenceGetStub,
  type DmaFenceOps,
  dmaFenceUnwrapForEach,
  dmaFenceUnwrapMerge,
  dmaFenceWorld,
} from "../mod.ts";

const mockOps: DmaFenceOps = {
  getDriverName: () => "mock",
  getTimelineName: () => "mock",
  release: (f) => f.free(),
};

/** `__mock_fence(context, seqno)`. */
function mockFenceAt(w: Kernel, context: number, seqno: number): DmaFence {
  return new DmaFence(w, mockOps, context, seqno);
}

/** `mock_fence()`: a fresh context, seqno 1. */
function mockFence(w: Kernel): DmaFence {
  return mockFenceAt(w, dmaFenceContextAlloc(w, 1), 1);
}

/** `mock_array(n, ...)`: takes the references, fresh context, seqno 1, signal on all. */
function mockArray(w: Kernel, ...fences: DmaFence[]): DmaFence {
  return DmaFenceArray.create(w, fences, dmaFenceContextAlloc(w, 1), 1, false);
}

/** `mock_chain(prev, fence)`: seqno 1, owning both references. */
function mockChain(w: Kernel, prev: DmaFence | null, fence: DmaFence): DmaFence {
  return new DmaFenceChain(w, prev, fence, 1);
}

/** Every fence the unwrap walk yields, in order. */
function unwrapped(head: DmaFence): DmaFence[] {
  return [...dmaFenceUnwrapForEach(head)];
}

/** "yields exactly X": each seen once, nothing else, order free. */
function yieldsExactly(head: DmaFence, ...expect: DmaFence[]): void {
  const seen = unwrapped(head);
  for (const f of seen) ok(expect.includes(f), "Unexpected fence!");
  for (const f of expect) {
    strictEqual(seen.filter((s) => s === f).length, 1, "Not all fences seen!");
  }
  strictEqual(seen.length, expect.length);
}

async function kunit(body: (w: Kernel) => void) {
  const w = new Kernel();
  await w.runTask("kunit", async () => body(w));
  strictEqual(dmaFenceWorld(w).live, 0, "every fence released");
}

Deno.test("dma-buf-fence-unwrap", async (t) => {
  await t.step("test_sanitycheck", async () => {
    await kunit((w) => {
      const f = mockFence(w);
      f.enableSwSignaling();
      const array = mockArray(w, f);
      ok(array);
      const chain = mockChain(w, null, array);
      ok(chain);
      f.signal();
      chain.put();
    });
  });

  await t.step("test_unwrap_array", async () => {
    await kunit((w) => {
      const f1 = mockFence(w);
      f1.enableSwSignaling();
      const f2 = mockFence(w);
      f2.enableSwSignaling();
      const array = mockArray(w, f1, f2);
      yieldsExactly(array, f1, f2);
      deepStrictEqual(unwrapped(array), [f1, f2], "array order");
      f1.signal();
      f2.signal();
      array.put();
    });
  });

  await t.step("test_unwrap_chain", async () => {
    await kunit((w) => {
      const f1 = mockFence(w);
      f1.enableSwSignaling();
      const f2 = mockFence(w);
      f2.enableSwSignaling();
      const chain = mockChain(w, f1, f2);
      yieldsExactly(chain, f1, f2);
      deepStrictEqual(unwrapped(chain), [f2, f1], "contained fence first, then the plain prev");
      f1.signal();
      f2.signal();
      chain.put();
    });
  });

  await t.step("test_unwrap_chain_array", async () => {
    await kunit((w) => {
      const f1 = mockFence(w);
      f1.enableSwSignaling();
      const f2 = mockFence(w);
      f2.enableSwSignaling();
      const array = mockArray(w, f1, f2);
      const chain = mockChain(w, null, array);
      yieldsExactly(chain, f1, f2);
      f1.signal();
      f2.signal();
      chain.put();
    });
  });

  await t.step("test_unwrap_merge", async () => {
    await kunit((w) => {
      const f1 = mockFence(w);
      f1.enableSwSignaling();
      const f2 = mockFence(w);
      f2.enableSwSignaling();
      const f3 = dmaFenceUnwrapMerge(w, f1, f2);
      ok(f3);
      yieldsExactly(f3, f1, f2);
      f3.put();
      f1.signal();
      f2.signal();
      f2.put();
      f1.put();
    });
  });

  await t.step("test_unwrap_merge_duplicate", async () => {
    await kunit((w) => {
      const f1 = mockFence(w);
      f1.enableSwSignaling();
      const f2 = dmaFenceUnwrapMerge(w, f1, f1);
      yieldsExactly(f2, f1);
      strictEqual(f2, f1, "the result is f1 itself");
      f2.put();
      f1.signal();
      f1.put();
    });
  });

  await t.step("test_unwrap_merge_seqno", async () => {
    await kunit((w) => {
      const ctx0 = dmaFenceContextAlloc(w, 1);
      const ctx1 = dmaFenceContextAlloc(w, 1);
      ok(ctx0 < ctx1);
      const f1 = mockFenceAt(w, ctx1, 1);
      f1.enableSwSignaling();
      const f2 = mockFenceAt(w, ctx1, 2);
      f2.enableSwSignaling();
      const f3 = mockFenceAt(w, ctx0, 1);
      f3.enableSwSignaling();
      const f4 = dmaFenceUnwrapMerge(w, f1, f2, f3);
      deepStrictEqual(unwrapped(f4), [f3, f2], "f3 then f2; f1 (older in ctx1) dropped");
      f4.put();
      for (const f of [f3, f2, f1]) {
        f.signal();
        f.put();
      }
    });
  });

  await t.step("test_unwrap_merge_order", async () => {
    await kunit((w) => {
      const f1 = mockFence(w);
      f1.enableSwSignaling();
      const f2 = mockFence(w);
      f2.enableSwSignaling();
      ok(f1.context < f2.context);
      const a1 = mockArray(w, f1.get(), f2.get());
      const c1 = mockChain(w, null, f1);
      const c2 = mockChain(w, c1, f2);
      deepStrictEqual(unwrapped(c2), [f2, f1], "the chain unwraps as f2, f1");
      const a2 = dmaFenceUnwrapMerge(w, a1, c2);
      deepStrictEqual(unwrapped(a2), [f1, f2], "f1 then f2, each once");
      f1.signal();
      f2.signal();
      a2.put();
      a1.put();
      c2.put();
    });
  });

  await t.step("test_unwrap_merge_complex", async () => {
    await kunit((w) => {
      const f1 = mockFence(w);
      f1.enableSwSignaling();
      const f2 = mockFence(w);
      f2.enableSwSignaling();
      const f3 = dmaFenceUnwrapMerge(w, f1, f2);
      const f4 = mockArray(w, f2.get(), f1.get());
      const stub = dmaFenceGetStub(w);
      const f5 = dmaFenceUnwrapMerge(w, f3, f4, stub);
      stub.put();
      yieldsExactly(f5, f1, f2);
      f1.signal();
      f2.signal();
      f5.put();
      f4.put();
      f3.put();
      f2.put();
      f1.put();
    });
  });

  await t.step("test_unwrap_merge_complex_seqno", async () => {
    await kunit((w) => {
      const ctx0 = dmaFenceContextAlloc(w, 1);
      const ctx1 = dmaFenceContextAlloc(w, 1);
      const f1 = mockFenceAt(w, ctx0, 2);
      f1.enableSwSignaling();
      const f2 = mockFenceAt(w, ctx1, 1);
      f2.enableSwSignaling();
      const f3 = mockFenceAt(w, ctx0, 1);
      f3.enableSwSignaling();
      const f4 = mockFenceAt(w, ctx1, 2);
      f4.enableSwSignaling();
      const f5 = mockArray(w, f1.get(), f2.get());
      const f6 = mockArray(w, f3.get(), f4.get());
      const f7 = dmaFenceUnwrapMerge(w, f5, f6);
      deepStrictEqual(unwrapped(f7), [f1, f4], "latest per context, sorted by context");
      for (const f of [f1, f2, f3, f4]) f.signal();
      f7.put();
      f6.put();
      f5.put();
      for (const f of [f4, f3, f2, f1]) f.put();
    });
  });

  await t.step("test_dedup_empty (proposed with the 2026 dedup fix)", async () => {
    await kunit(() => {
      strictEqual(dmaFenceDedupArray([]), 0);
    });
  });

  await t.step(
    "merge of signalled fences is a private stub with the latest time stamp",
    async () => {
      const w = new Kernel();
      await w.runTask("kunit", async () => {
        const f1 = mockFence(w);
        const f2 = mockFence(w);
        f1.signal();
        await w.sched.msleep(3);
        f2.signal();
        const m = dmaFenceUnwrapMerge(w, f1, f2);
        ok(m !== f1 && m !== f2 && m.testSignaledFlag());
        strictEqual(m.timestamp(), f2.timestamp());
        strictEqual(m.context, 0);
        for (const f of [m, f1, f2]) f.put();
      });
      strictEqual(dmaFenceWorld(w).live, 0);
    },
  );
});
