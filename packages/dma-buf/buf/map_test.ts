import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { isErrno, Kernel, KernelBug, SpinLock } from "@dmalab/kernel";
import {
  type DmaBuf,
  dmaBufAttach,
  dmaBufAttachRevocable,
  dmaBufDynamicAttach,
  dmaBufInvalidateMappings,
  DmaFence,
  dmaFenceContextAlloc,
  DmaResvUsage,
  type DmaResvUsage as Usage,
} from "../mod.ts";
import { dev64, TestExporter } from "./testdata/exporter.ts";

const fenceOps = { getDriverName: () => "test", getTimelineName: () => "t" };

async function addFence(world: Kernel, buf: DmaBuf, usage: Usage): Promise<DmaFence> {
  const f = new DmaFence(world, fenceOps, dmaFenceContextAlloc(world, 1), 1);
  await buf.resv.lock(null);
  buf.resv.reserveFences(1);
  buf.resv.addFence(f, usage);
  buf.resv.unlock();
  return f;
}

Deno.test("dma_buf_map_attachment: the four exporter/importer combinations", async (t) => {
  await t.step(
    "static importer on a dynamic exporter: each map pins, each unmap unpins",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { dynamic: true });
      await world.runTask("t", async () => {
        const a = await dmaBufAttach(exp.buf, dev64(world));
        ok(a.pinOnMap);
        const s1 = await a.mapUnlocked("DMA_TO_DEVICE");
        const s2 = await a.mapUnlocked("DMA_TO_DEVICE");
        strictEqual(exp.pinned, 2);
        await a.unmapUnlocked(s1, "DMA_TO_DEVICE");
        await a.unmapUnlocked(s2, "DMA_TO_DEVICE");
        strictEqual(exp.pinned, 0);
        await a.detach();
      });
      deepStrictEqual(world.check(), []);
    },
  );
  await t.step("dynamic importer on a dynamic exporter (7.1): no implicit pin", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world, { dynamic: true });
    await world.runTask("t", async () => {
      const a = await dmaBufDynamicAttach(
        exp.buf,
        dev64(world),
        { invalidateMappings: () => {} },
        null,
      );
      ok(!a.pinOnMap);
      const s = await a.mapUnlocked("DMA_TO_DEVICE");
      strictEqual(exp.pinned, 0);
      await a.unmapUnlocked(s, "DMA_TO_DEVICE");
      await a.detach();
    });
  });
  await t.step(
    "6.19 without CONFIG_DMABUF_MOVE_NOTIFY: dynamic importers are pinned on map too",
    async () => {
      const world = new Kernel({ variants: { "dma-buf.version": "6.19" } });
      const exp = new TestExporter(world, { dynamic: true });
      await world.runTask("t", async () => {
        const a = await dmaBufDynamicAttach(exp.buf, dev64(world), { moveNotify: () => {} }, null);
        ok(a.pinOnMap);
        const s = await a.mapUnlocked("DMA_TO_DEVICE");
        strictEqual(exp.pinned, 1);
        await a.unmapUnlocked(s, "DMA_TO_DEVICE");
        strictEqual(exp.pinned, 0);
      });
      const on = new Kernel({
        variants: { "dma-buf.version": "6.19", CONFIG_DMABUF_MOVE_NOTIFY: "y" },
      });
      const exp2 = new TestExporter(on, { dynamic: true });
      await on.runTask("t", async () => {
        const a = await dmaBufDynamicAttach(exp2.buf, dev64(on), { moveNotify: () => {} }, null);
        ok(!a.pinOnMap);
      });
    },
  );
  await t.step(
    "static exporter: dma_buf_pin from a dynamic importer returns 0 without calling anything",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world);
      await world.runTask("t", async () => {
        const a = await dmaBufDynamicAttach(
          exp.buf,
          dev64(world),
          { invalidateMappings: () => {} },
          null,
        );
        await exp.buf.resv.lock(null);
        await a.pin();
        strictEqual(a.exporterPins, 0);
        a.unpin();
        exp.buf.resv.unlock();
      });
    },
  );
  await t.step("dma_buf_pin / unpin from a static importer WARN", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world, { dynamic: true });
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(exp.buf, dev64(world));
      await exp.buf.resv.lock(null);
      await rejects(a.pin(), (e) => e instanceof KernelBug && e.kind === "WARN");
      exp.buf.resv.unlock();
    });
  });
});

Deno.test("dma_buf_map_attachment: errors and fences", async (t) => {
  await t.step("a NULL table is -ENOMEM and the implicit pin is undone", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world, { dynamic: true, nullTable: true });
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(exp.buf, dev64(world));
      await rejects(a.mapUnlocked("DMA_TO_DEVICE"), (e) => isErrno(e, "ENOMEM"));
      strictEqual(exp.pinned, 0);
      strictEqual(a.mappings.size, 0);
    });
  });
  await t.step("an exporter error (-EINTR) is returned and unpins", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world, { dynamic: true, mapError: "EINTR" });
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(exp.buf, dev64(world));
      await rejects(a.mapUnlocked("DMA_TO_DEVICE"), (e) => isErrno(e, "EINTR"));
      strictEqual(exp.pinned, 0);
    });
  });
  await t.step(
    "static importers wait for KERNEL fences inside map; dynamic importers do not",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world);
      const when: Record<string, number> = {};
      let kernelFence: DmaFence | null = null;
      world.spawn("setup", async () => {
        kernelFence = await addFence(world, exp.buf, DmaResvUsage.KERNEL);
        await addFence(world, exp.buf, DmaResvUsage.WRITE); // never signalled: only KERNEL counts
      });
      await world.run();
      world.spawn("dynamic", async () => {
        const a = await dmaBufDynamicAttach(exp.buf, dev64(world, "d"), {
          invalidateMappings: () => {},
        }, null);
        const s = await a.mapUnlocked("DMA_TO_DEVICE");
        when.dynamic = world.sched.now;
        await a.unmapUnlocked(s, "DMA_TO_DEVICE");
      });
      // the static importer waits with the reservation lock held, as the kernel does
      world.spawn("static", async () => {
        const a = await dmaBufAttach(exp.buf, dev64(world, "s"));
        const s = await a.mapUnlocked("DMA_TO_DEVICE");
        when.static = world.sched.now;
        await a.unmapUnlocked(s, "DMA_TO_DEVICE");
      });
      world.spawn("gpu", async () => {
        await world.sched.msleep(10);
        kernelFence!.signal();
      });
      await world.run();
      strictEqual(when.dynamic, 0);
      ok(when.static! >= 10_000_000, `static map returned at ${when.static}`);
    },
  );
  await t.step(
    "a signal during the KERNEL fence wait: exporter unmap, unpin, -ERESTARTSYS",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { dynamic: true });
      await world.runTask("setup", () => addFence(world, exp.buf, DmaResvUsage.KERNEL));
      const task = world.spawn("static", async () => {
        const a = await dmaBufAttach(exp.buf, dev64(world));
        await rejects(a.mapUnlocked("DMA_TO_DEVICE"), (e) => isErrno(e, "ERESTARTSYS"));
        strictEqual(exp.calls.unmap, 1);
        strictEqual(exp.pinned, 0);
        strictEqual(a.mappings.size, 0);
      });
      world.spawn("killer", async () => {
        await world.sched.msleep(1);
        world.sched.signal(task);
      });
      await world.run();
      strictEqual(task.state, "done");
    },
  );
  await t.step("the importer gets DMA addresses only: touching sg_page is a BUG", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(exp.buf, dev64(world));
      const s = await a.mapUnlocked("DMA_BIDIRECTIONAL");
      strictEqual(s.sgl[0]!.dmaAddress, world.mem.pageToPhys(exp.pages[0]!));
      strictEqual(s.sgl[0]!.length, 0);
      throws(() => s.sgl[0]!.page, (e) => e instanceof KernelBug && e.kind === "BUG");
      throws(() => s.sgl[0]!.phys(world), (e) => e instanceof KernelBug);
      await a.unmapUnlocked(s, "DMA_BIDIRECTIONAL");
      strictEqual(exp.calls.unmap, 1);
    });
  });
  await t.step("CONFIG_DMABUF_DEBUG=n hands out the exporter's table", async () => {
    const world = new Kernel({ variants: { CONFIG_DMABUF_DEBUG: "n" } });
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(exp.buf, dev64(world));
      const s = await a.mapUnlocked("DMA_BIDIRECTIONAL");
      strictEqual(s.sgl[0]!.page, exp.pages[0]);
      await a.unmapUnlocked(s, "DMA_BIDIRECTIONAL");
    });
  });
  await t.step("unmapping a table this attachment did not map WARNs", async () => {
    const world = new Kernel({ strict: false });
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(exp.buf, dev64(world, "a"));
      const b = await dmaBufAttach(exp.buf, dev64(world, "b"));
      const s = await a.mapUnlocked("DMA_BIDIRECTIONAL");
      await b.unmapUnlocked(s, "DMA_BIDIRECTIONAL");
      strictEqual(exp.calls.unmap ?? 0, 0);
      await a.unmapUnlocked(s, "DMA_BIDIRECTIONAL");
    });
    strictEqual(world.bugs.length, 1);
  });
});

Deno.test("dma_buf_invalidate_mappings (move_notify)", async (t) => {
  await t.step(
    "runs each dynamic importer's callback with the lock held; static importers are skipped",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { dynamic: true });
      const seen: string[] = [];
      await world.runTask("t", async () => {
        const st = await dmaBufAttach(exp.buf, dev64(world, "static"));
        const d1 = await dmaBufDynamicAttach(exp.buf, dev64(world, "d1"), {
          invalidateMappings: (a) => {
            ok(a.dmabuf.resv.held());
            seen.push("d1");
          },
        }, null);
        await dmaBufDynamicAttach(exp.buf, dev64(world, "d2"), {
          moveNotify: () => void seen.push("d2"),
        }, null);
        await dmaBufDynamicAttach(
          exp.buf,
          dev64(world, "pinned-rdma"),
          { allowPeer2peer: true },
          null,
        );
        await exp.buf.resv.lock(null);
        exp.move();
        exp.buf.resv.unlock();
        strictEqual(st.invalidations, 0);
        strictEqual(d1.invalidations, 1);
      });
      deepStrictEqual(seen, ["d2", "d1"]);
    },
  );
  await t.step(
    "a mapping used after its notify is reported; a fresh map after it is fine",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { dynamic: true });
      await world.runTask("t", async () => {
        const a = await dmaBufDynamicAttach(
          exp.buf,
          dev64(world),
          { invalidateMappings: () => {} },
          null,
        );
        await exp.buf.resv.lock(null);
        const old = await a.map("DMA_BIDIRECTIONAL");
        a.checkAccess(old);
        exp.move();
        throws(() => a.checkAccess(old), (e) => e instanceof KernelBug && e.kind === "invariant");
        a.unmap(old, "DMA_BIDIRECTIONAL");
        throws(() => a.checkAccess(old), (e) => e instanceof KernelBug && e.kind === "invariant");
        const fresh = await a.map("DMA_BIDIRECTIONAL");
        a.checkAccess(fresh);
        a.unmap(fresh, "DMA_BIDIRECTIONAL");
        exp.buf.resv.unlock();
      });
    },
  );
  await t.step("a dynamic importer must wait for KERNEL fences itself before DMA", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world, { dynamic: true });
    await world.runTask("t", async () => {
      const a = await dmaBufDynamicAttach(
        exp.buf,
        dev64(world),
        { invalidateMappings: () => {} },
        null,
      );
      const move = await addFence(world, exp.buf, DmaResvUsage.KERNEL);
      const sgt = await a.mapUnlocked("DMA_BIDIRECTIONAL"); // returns at once: no wait for dynamic importers
      throws(() => a.checkAccess(sgt), (e) => e instanceof KernelBug && e.kind === "invariant");
      move.signal();
      a.checkAccess(sgt);
      await a.unmapUnlocked(sgt, "DMA_BIDIRECTIONAL");
    });
  });
  await t.step("dma_buf_attach_revocable: only importers with an invalidate callback", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      ok(!dmaBufAttachRevocable(await dmaBufAttach(exp.buf, dev64(world))));
      ok(
        !dmaBufAttachRevocable(
          await dmaBufDynamicAttach(exp.buf, dev64(world), { allowPeer2peer: true }, null),
        ),
      );
      ok(
        dmaBufAttachRevocable(
          await dmaBufDynamicAttach(exp.buf, dev64(world), { moveNotify: () => {} }, null),
        ),
      );
      ok(
        dmaBufAttachRevocable(
          await dmaBufDynamicAttach(exp.buf, dev64(world), { invalidateMappings: () => {} }, null),
        ),
      );
    });
  });
  await t.step("the dma-buf checker sees balanced mappings", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(exp.buf, dev64(world));
      const s = await a.mapUnlocked("DMA_BIDIRECTIONAL");
      deepStrictEqual(world.check(), []);
      exp.buf.outstandingMappings++; // corrupt the count: the checker must notice
      ok(world.check().some((v) => v.includes("mappings counted")));
      exp.buf.outstandingMappings--;
      await a.unmapUnlocked(s, "DMA_BIDIRECTIONAL");
    });
  });
  void dmaBufInvalidateMappings;
});

Deno.test("dma_buf_unmap_attachment might sleep: atomic context is a might_sleep BUG", async () => {
  const world = new Kernel();
  const exp = new TestExporter(world);
  const lock = new SpinLock(world, "importer->lock");
  await world.runTask("t", async () => {
    const a = await dmaBufAttach(exp.buf, dev64(world));
    await exp.buf.resv.lock(null);
    const sgt = await a.map("DMA_TO_DEVICE");
    lock.lock();
    throws(
      () => a.unmap(sgt, "DMA_TO_DEVICE"),
      (e) => e instanceof KernelBug && e.kind === "might_sleep",
    );
    lock.unlock();
    strictEqual(a.mappings.size, 1); // nothing was torn down
    a.unmap(sgt, "DMA_TO_DEVICE");
    exp.buf.resv.unlock();
    await a.detach();
  });
  deepStrictEqual(world.check(), []);
});
