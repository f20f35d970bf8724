// Model-based test: random sequences of reserve / add / signal / unlock+relock
// against a reference list that applies dma_resv_add_fence's rules, checking
// after every step the list, every usage query and every reference count.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import fc from "fast-check";
import { Kernel } from "@dmalab/kernel";
import {
  DmaFence,
  dmaFenceContextAlloc,
  dmaFenceIsLaterOrSame,
  type DmaFenceOps,
  dmaFenceWorld,
  DmaResv,
  DmaResvIter,
  type DmaResvUsage,
} from "../mod.ts";

const ops: DmaFenceOps = { getDriverName: () => "m", getTimelineName: () => "m" };

type Cmd =
  | { op: "add"; ctx: number; seqno: number; usage: DmaResvUsage }
  | { op: "signal"; pick: number }
  | { op: "reserve"; n: number }
  | { op: "relock" };

const usageArb = fc.constantFrom<DmaResvUsage>(0, 1, 2, 3);
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("add" as const),
      ctx: fc.nat(3),
      seqno: fc.integer({ min: 1, max: 6 }),
      usage: usageArb,
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("signal" as const), pick: fc.nat(50) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("reserve" as const),
      n: fc.integer({ min: 0, max: 3 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("relock" as const) }) },
);

Deno.test("dma_resv against a reference model (fast-check)", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(cmdArb, { maxLength: 40 }), async (cmds) => {
      const w = new Kernel();
      await w.runTask("model", async () => {
        const resv = new DmaResv(w);
        const ctxs = [0, 1, 2, 3].map(() => dmaFenceContextAlloc(w, 1));
        const created: DmaFence[] = [];
        let model: { fence: DmaFence; usage: DmaResvUsage }[] = [];
        await resv.lock(null);
        for (const c of cmds) {
          if (c.op === "add") {
            const f = new DmaFence(w, ops, ctxs[c.ctx]!, c.seqno);
            created.push(f);
            const before = resv.maxFences;
            resv.reserveFences(1);
            // a new list drops signalled entries; an existing one with room is kept
            if (resv.maxFences !== before) model = model.filter((e) => !e.fence.testSignaledFlag());
            const i = model.findIndex((e) =>
              (e.fence.context === f.context && e.usage >= c.usage &&
                dmaFenceIsLaterOrSame(f, e.fence)) || e.fence.testSignaledFlag()
            );
            if (i >= 0) model[i] = { fence: f, usage: c.usage };
            else model.push({ fence: f, usage: c.usage });
            resv.addFence(f, c.usage);
          } else if (c.op === "signal") {
            if (created.length) created[c.pick % created.length]!.signal();
          } else if (c.op === "reserve") {
            const before = resv.maxFences;
            resv.reserveFences(c.n);
            if (resv.maxFences !== before) model = model.filter((e) => !e.fence.testSignaledFlag());
          } else {
            resv.unlock();
            await resv.lock(null);
            strictEqual(resv.maxFences, resv.numFences, "reservations dropped at unlock");
          }
          // the list, in order, with usages
          const cursor = new DmaResvIter(resv, 3);
          const got: { fence: DmaFence; usage: DmaResvUsage }[] = [];
          for (const f of resv.forEachFence(3, cursor)) {
            got.push({ fence: f, usage: cursor.fenceUsage });
          }
          deepStrictEqual(got, model);
          ok(resv.numFences <= resv.maxFences);
          // every query usage returns the unsignalled entries at or below it
          for (const q of [0, 1, 2, 3] as DmaResvUsage[]) {
            const fences = resv.getFences(q);
            deepStrictEqual(
              fences,
              model.filter((e) => e.usage <= q && !e.fence.testSignaledFlag()).map((e) => e.fence),
            );
            for (const f of fences) f.put();
          }
          // refcount = our reference + one per list entry
          for (const f of created) {
            strictEqual(f.refcount, 1 + model.filter((e) => e.fence === f).length);
          }
        }
        resv.unlock();
        resv.fini();
        for (const f of created) {
          f.signal();
          f.put();
        }
      });
      strictEqual(dmaFenceWorld(w).live, 0);
    }),
    { numRuns: 150, seed: 5 },
  );
});
