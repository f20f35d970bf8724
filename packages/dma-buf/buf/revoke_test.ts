import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { isErrno, Kernel, KernelBug } from "@dmalab/kernel";
import {
  dmaBufAttach,
  type DmaBufAttachment,
  dmaBufDynamicAttach,
  DmaFence,
  dmaFenceContextAlloc,
  DmaResvUsage,
  type SgTable,
} from "../mod.ts";
import { dev64, TestExporter } from "./testdata/exporter.ts";

const fenceOps = { getDriverName: () => "test", getTimelineName: () => "t" };

Deno.test("revoke (v7.1)", async (t) => {
  await t.step(
    "exporter refuses importers that cannot be revoked with -EOPNOTSUPP (pinned revocable ones are fine)",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { revocable: true });
      await world.runTask("t", async () => {
        await rejects(dmaBufAttach(exp.buf, dev64(world)), (e) => isErrno(e, "EOPNOTSUPP"));
        await rejects(
          dmaBufDynamicAttach(exp.buf, dev64(world), { allowPeer2peer: true }, null),
          (e) => isErrno(e, "EOPNOTSUPP"),
        );
        const a = await dmaBufDynamicAttach(exp.buf, dev64(world), {
          allowPeer2peer: true,
          invalidateMappings: () => {},
        }, null);
        await exp.buf.resv.lock(null);
        await a.pin();
        a.unpin();
        exp.buf.resv.unlock();
      });
    },
  );
  await t.step(
    "sequence: mark, invalidate, wait BOOKKEEP fences, unlock, wait for every unmap; -ENODEV after",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { revocable: true });
      const log: string[] = [];
      let attach: DmaBufAttachment | null = null;
      let sgt: SgTable | null = null;
      let bookkeep: DmaFence | null = null;
      world.spawn("importer", async () => {
        attach = await dmaBufDynamicAttach(exp.buf, dev64(world), {
          invalidateMappings: () => {
            log.push(`invalidate state=${exp.revoker!.state}`);
            // the importer stops its DMA and unmaps later, from its own worker
            world.spawn("importer-worker", async () => {
              await world.sched.msleep(50);
              await exp.buf.resv.lock(null);
              attach!.unmap(sgt!, "DMA_BIDIRECTIONAL");
              exp.buf.resv.unlock();
              log.push(`unmapped at ${world.sched.now}`);
            });
          },
        }, null);
        sgt = await attach.mapUnlocked("DMA_BIDIRECTIONAL");
        bookkeep = new DmaFence(world, fenceOps, dmaFenceContextAlloc(world, 1), 1);
        await exp.buf.resv.lock(null);
        exp.buf.resv.reserveFences(1);
        exp.buf.resv.addFence(bookkeep, DmaResvUsage.BOOKKEEP);
        exp.buf.resv.unlock();
      });
      await world.run();
      world.spawn("reset", async () => {
        await exp.revoker!.revoke();
        log.push(`revoked at ${world.sched.now}`);
      });
      world.spawn("gpu", async () => {
        await world.sched.msleep(10);
        log.push(`bookkeep signalled at ${world.sched.now}`);
        bookkeep!.signal();
      });
      await world.run();
      strictEqual(log[0], "invalidate state=revoked");
      ok(log[1]!.startsWith("bookkeep signalled"));
      ok(log[2]!.startsWith("unmapped at"));
      ok(log[3]!.startsWith("revoked at"));
      strictEqual(exp.buf.outstandingMappings, 0);
      await world.runTask("late", async () => {
        await rejects(attach!.mapUnlocked("DMA_BIDIRECTIONAL"), (e) => isErrno(e, "ENODEV"));
        await rejects(
          dmaBufDynamicAttach(exp.buf, dev64(world), { invalidateMappings: () => {} }, null),
          (e) => isErrno(e, "ENODEV"),
        );
      });
      deepStrictEqual(world.check(), []);
    },
  );
  await t.step(
    "an importer that never unmaps: WARN after 1 s (broken invalidate_mapping)",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { revocable: true });
      await world.runTask("importer", async () => {
        const a = await dmaBufDynamicAttach(
          exp.buf,
          dev64(world),
          { invalidateMappings: () => {} },
          null,
        );
        await a.mapUnlocked("DMA_BIDIRECTIONAL");
      });
      const start = world.sched.now;
      await world.runTask("reset", async () => {
        await rejects(
          exp.revoker!.revoke(),
          (e) => e instanceof KernelBug && e.message.includes("broken invalidate_mapping"),
        );
      });
      ok(world.sched.now - start >= 1_000_000_000);
    },
  );
  await t.step(
    "access through a mapping after revoke is reported; temporary revoke can be undone, permanent cannot",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { revocable: true });
      let a: DmaBufAttachment | null = null;
      let sgt: SgTable | null = null;
      await world.runTask("map", async () => {
        a = await dmaBufDynamicAttach(
          exp.buf,
          dev64(world),
          { invalidateMappings: () => {} },
          null,
        );
        sgt = await a.mapUnlocked("DMA_BIDIRECTIONAL");
      });
      world.spawn("reset", () => exp.revoker!.revoke());
      world.spawn("importer", async () => {
        await world.sched.msleep(1); // revoke marks, invalidates and starts waiting meanwhile
        let caught: unknown = null;
        try {
          a!.checkAccess(sgt!);
        } catch (e) {
          caught = e;
        }
        ok(caught instanceof KernelBug && caught.kind === "invariant");
        await a!.unmapUnlocked(sgt!, "DMA_BIDIRECTIONAL");
      });
      await world.run();
      strictEqual(exp.revoker!.state, "revoked");
      await world.runTask("after", async () => {
        await exp.buf.resv.lock(null);
        exp.revoker!.unrevoke();
        exp.buf.resv.unlock();
        const again = await a!.mapUnlocked("DMA_BIDIRECTIONAL");
        a!.checkAccess(again);
        await a!.unmapUnlocked(again, "DMA_BIDIRECTIONAL");
        await exp.revoker!.revoke(true);
        await exp.buf.resv.lock(null);
        let err: unknown = null;
        try {
          exp.revoker!.unrevoke();
        } catch (e) {
          err = e;
        }
        exp.buf.resv.unlock();
        ok(isErrno(err, "ENODEV"));
        strictEqual(exp.revoker!.state, "revoked-permanent");
      });
    },
  );
});
