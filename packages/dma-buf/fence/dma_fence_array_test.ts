// dma_fence_array and dma_fence_chain rules beyond the kernel selftests.
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { Errno, isErrno, Kernel, KernelBug } from "@dmalab/kernel";
import {
  DmaFence,
  DmaFenceArray,
  dmaFenceArrayFirst,
  dmaFenceArrayNext,
  DmaFenceChain,
  dmaFenceChainFindSeqno,
  dmaFenceChainForEach,
  dmaFenceContextAlloc,
  dmaFenceMatchContext,
  type DmaFenceOps,
  dmaFenceWorld,
  toDmaFenceArray,
  toDmaFenceChain,
} from "../mod.ts";

const ops: DmaFenceOps = { getDriverName: () => "drv", getTimelineName: () => "tl" };

function leaf(w: Kernel, ctx = dmaFenceContextAlloc(w, 1), seqno = 1): DmaFence {
  return new DmaFence(w, ops, ctx, seqno);
}

Deno.test("dma_fence_array", async (t) => {
  await t.step("signal on all: pending until the last element; names and kind", () => {
    const w = new Kernel();
    const [a, b, c] = [leaf(w), leaf(w), leaf(w)];
    const arr = DmaFenceArray.create(w, [a, b, c], dmaFenceContextAlloc(w, 1), 1, false);
    strictEqual(arr.driverName(), "dma_fence_array");
    strictEqual(arr.timelineName(), "unbound");
    ok(arr.isContainer && toDmaFenceArray(arr) === arr && toDmaFenceChain(arr) === null);
    arr.enableSwSignaling();
    a.signal();
    c.signal();
    ok(!arr.isSignaled());
    strictEqual(arr.getStatus(), 0, "PENDING_ERROR is invisible before signalling");
    b.signal();
    ok(arr.testSignaledFlag(), "signalled from irq_work once b's lock dropped");
    strictEqual(arr.getStatus(), 1);
    strictEqual(arr.error, 0, "PENDING_ERROR cleared");
    arr.put();
    strictEqual(dmaFenceWorld(w).live, 0, "array release puts the elements");
  });

  await t.step("signal on any: the first element completes the array", () => {
    const w = new Kernel();
    const [a, b] = [leaf(w), leaf(w)];
    const arr = DmaFenceArray.create(w, [a.get(), b.get()], dmaFenceContextAlloc(w, 1), 1, true);
    arr.enableSwSignaling();
    b.signal();
    ok(arr.testSignaledFlag(), "one element is enough");
    ok(!a.testSignaledFlag());
    strictEqual(arr.getStatus(), 1);
    arr.put();
    ok(!arr.freed, "a's pending callback still holds a reference to the array");
    a.signal();
    ok(arr.freed, "the last callback dropped it");
    a.put();
    b.put();
    strictEqual(dmaFenceWorld(w).live, 0);
  });

  await t.step("first element error is the array's error", () => {
    const w = new Kernel();
    const [a, b, c] = [leaf(w), leaf(w), leaf(w)];
    const arr = DmaFenceArray.create(
      w,
      [a.get(), b.get(), c.get()],
      dmaFenceContextAlloc(w, 1),
      1,
      false,
    );
    arr.enableSwSignaling();
    b.setError(-Errno.ETIME);
    b.signal();
    a.setError(-Errno.EIO);
    a.signal();
    c.signal();
    strictEqual(arr.getStatus(), -Errno.ETIME);
    for (const f of [arr, a, b, c]) f.put();
  });

  await t.step("elements already signalled at enable count down at once", () => {
    const w = new Kernel();
    const [a, b] = [leaf(w), leaf(w)];
    a.setError(-Errno.ENODATA);
    a.signal();
    b.signal();
    const arr = DmaFenceArray.create(w, [a.get(), b.get()], dmaFenceContextAlloc(w, 1), 1, false);
    arr.enableSwSignaling();
    ok(arr.testSignaledFlag(), "enable_signaling returned false: signalled by the core");
    strictEqual(arr.getStatus(), -Errno.ENODATA);
    for (const f of [arr, a, b]) f.put();
  });

  await t.step("without signalling enabled, ops.signaled counts signalled elements", () => {
    const w = new Kernel();
    const [a, b] = [leaf(w), leaf(w)];
    const any = DmaFenceArray.create(w, [a.get(), b.get()], dmaFenceContextAlloc(w, 1), 1, true);
    const all = DmaFenceArray.create(w, [a.get(), b.get()], dmaFenceContextAlloc(w, 1), 1, false);
    ok(!any.isSignaled() && !all.isSignaled());
    b.signal();
    ok(any.isSignaled(), "one of two is enough for signal-on-any");
    ok(!all.isSignaled());
    a.signal();
    ok(all.isSignaled());
    strictEqual(all.getStatus(), 1);
    for (const f of [any, all, a, b]) f.put();
    strictEqual(dmaFenceWorld(w).live, 0);
  });

  await t.step("containers inside an array and an empty array are WARNs", () => {
    const w = new Kernel();
    const inner = DmaFenceArray.create(w, [leaf(w)], dmaFenceContextAlloc(w, 1), 1, false);
    throws(
      () => DmaFenceArray.create(w, [inner], dmaFenceContextAlloc(w, 1), 1, false),
      (e) => e instanceof KernelBug && e.kind === "WARN" && e.message.includes("container"),
    );
    throws(
      () => DmaFenceArray.create(w, [], dmaFenceContextAlloc(w, 1), 1, false),
      (e) => e instanceof KernelBug && e.message.includes("num_fences"),
    );
  });

  await t.step("match_context, first, next, set_deadline", () => {
    const w = new Kernel();
    const ctx = dmaFenceContextAlloc(w, 1);
    const deadlines: number[] = [];
    const mk = (s: number) =>
      new DmaFence(w, { ...ops, setDeadline: (_f, d) => deadlines.push(d) }, ctx, s);
    const [a, b] = [mk(1), mk(2)];
    const arr = DmaFenceArray.create(w, [a, b], dmaFenceContextAlloc(w, 1), 1, false);
    ok(dmaFenceMatchContext(arr, ctx));
    ok(dmaFenceMatchContext(a, ctx));
    ok(!dmaFenceMatchContext(a, ctx + 1));
    strictEqual(dmaFenceArrayFirst(arr), a);
    strictEqual(dmaFenceArrayNext(arr, 1), b);
    strictEqual(dmaFenceArrayNext(arr, 2), null);
    strictEqual(dmaFenceArrayFirst(a), a);
    strictEqual(dmaFenceArrayFirst(null), null);
    arr.setDeadline(77);
    deepStrictEqual(deadlines, [77, 77]);
  });
});

Deno.test("dma_fence_chain", async (t) => {
  await t.step("a later seqno reuses the context; otherwise a new one with max seqno", () => {
    const w = new Kernel();
    const c1 = new DmaFenceChain(w, null, leaf(w), 5);
    const c2 = new DmaFenceChain(w, c1.get(), leaf(w), 7);
    strictEqual(c2.context, c1.context);
    strictEqual(c2.prevSeqno, 5);
    const c3 = new DmaFenceChain(w, c2.get(), leaf(w), 6);
    ok(c3.context !== c2.context, "not later: a fresh context");
    strictEqual(c3.seqno, 7, "max(prev->seqno, seqno)");
    strictEqual(c3.prevSeqno, 0);
    ok(c3.seqno64, "chain nodes use 64-bit seqnos");
    strictEqual(c3.driverName(), "dma_fence_chain");
    c3.put();
    c1.put();
    c2.put();
    strictEqual(dmaFenceWorld(w).live, 0);
  });

  await t.step("find_seqno on a plain fence is -EINVAL", () => {
    const w = new Kernel();
    const f = leaf(w);
    throws(() => dmaFenceChainFindSeqno(f, 1), (e) => isErrno(e, "EINVAL"));
    strictEqual(dmaFenceChainFindSeqno(f, 0), f, "seqno 0 is a no-op for any fence");
  });

  await t.step("walking collects signalled predecessors", () => {
    const w = new Kernel();
    const fs = [leaf(w), leaf(w), leaf(w)];
    let tail: DmaFence | null = null;
    const nodes: DmaFenceChain[] = [];
    fs.forEach((f, i) => {
      const n: DmaFenceChain = new DmaFenceChain(w, tail, f.get(), i + 1);
      nodes.push(n);
      tail = n;
    });
    fs[0]!.signal();
    fs[1]!.signal();
    const seen = [...dmaFenceChainForEach(nodes[2]!)];
    deepStrictEqual(seen, [nodes[2]], "nodes 1 and 2 were unlinked");
    strictEqual(nodes[2]!.prev, null);
    fs[2]!.signal();
    nodes[2]!.put();
    for (const f of fs) f.put();
    strictEqual(dmaFenceWorld(w).live, 0);
  });

  await t.step("a chain's error-free status and release of a long chain without recursion", () => {
    const w = new Kernel();
    let tail: DmaFence | null = null;
    const leaves: DmaFence[] = [];
    for (let i = 0; i < 50_000; i++) {
      const f = leaf(w, 1, i + 1);
      leaves.push(f);
      tail = new DmaFenceChain(w, tail, f.get(), i + 1);
    }
    for (const f of leaves) f.signal();
    ok(tail!.isSignaled());
    tail!.put();
    for (const f of leaves) f.put();
    strictEqual(dmaFenceWorld(w).live, 0);
  });
});
