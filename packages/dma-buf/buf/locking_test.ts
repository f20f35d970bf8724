// Every rule of drivers/dma-buf/dma-buf.c "DOC: locking convention", each
// checked both ways: the call made with the wrong lock state is a lockdep
// report, the call made correctly passes.
import { ok, rejects, strictEqual, throws } from "node:assert/strict";
import { Kernel, KernelBug, MmStruct } from "@dmalab/kernel";
import {
  dmaBufAttach,
  type DmaBufAttachment,
  dmaBufBeginCpuAccess,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufEndCpuAccess,
  dmaBufExport,
  dmaBufGet,
  dmaBufInvalidateMappings,
  dmaBufMmap,
  dmaBufMoveNotify,
  dmaBufVmap,
  dmaBufVmapUnlocked,
  dmaBufVunmap,
  dmaBufVunmapUnlocked,
  SgTable,
} from "../mod.ts";
import { dev64, TestExporter } from "./testdata/exporter.ts";

const isLockdep = (e: unknown) => e instanceof KernelBug && e.kind === "lockdep";

async function fixture(world: Kernel, opts: { dynamic?: boolean } = {}) {
  const exp = new TestExporter(world, {
    dynamic: opts.dynamic ?? true,
    vmap: true,
    extra: { mmap: () => {} },
  });
  const dyn = await dmaBufDynamicAttach(
    exp.buf,
    dev64(world),
    { invalidateMappings: () => {} },
    null,
  );
  return { exp, buf: exp.buf, dyn };
}

Deno.test("locking convention: importers must hold the reservation lock", async (t) => {
  const mustHold: [string, (a: DmaBufAttachment) => unknown][] = [
    ["dma_buf_pin", (a) => a.pin()],
    ["dma_buf_unpin", (a) => a.unpin()],
    ["dma_buf_map_attachment", (a) => a.map("DMA_BIDIRECTIONAL")],
    ["dma_buf_unmap_attachment", (a) => a.unmap(new SgTable([]), "DMA_BIDIRECTIONAL")],
    ["dma_buf_vmap", (a) => dmaBufVmap(a.dmabuf)],
    ["dma_buf_vunmap", (a) => dmaBufVunmap(a.dmabuf, a.dmabuf.vmapPtr!)],
  ];
  for (const [name, call] of mustHold) {
    await t.step(`${name} without the lock is a lockdep report`, async () => {
      const world = new Kernel();
      await world.runTask("importer", async () => {
        const { dyn } = await fixture(world);
        let err: unknown = null;
        try {
          await call(dyn);
        } catch (e) {
          err = e;
        }
        ok(isLockdep(err), `${name}: expected a lockdep report, got ${err}`);
        ok((err as KernelBug).report.includes(`${name} must be called with dma_resv_lock`));
      });
    });
  }
  await t.step("with the lock held the same calls pass", async () => {
    const world = new Kernel();
    await world.runTask("importer", async () => {
      const { buf, dyn } = await fixture(world);
      await buf.resv.lock(null);
      await dyn.pin();
      const sgt = await dyn.map("DMA_BIDIRECTIONAL");
      dyn.unmap(sgt, "DMA_BIDIRECTIONAL");
      dyn.unpin();
      const map = await dmaBufVmap(buf);
      dmaBufVunmap(buf, map);
      buf.resv.unlock();
    });
    strictEqual(world.bugs.length, 0);
  });
});

Deno.test("locking convention: importers must not hold the reservation lock", async (t) => {
  const mustNotHold: [string, (w: Kernel, f: Awaited<ReturnType<typeof fixture>>) => unknown][] = [
    ["dma_buf_attach", (w, f) => dmaBufAttach(f.buf, dev64(w))],
    [
      "dma_buf_dynamic_attach",
      (w, f) => dmaBufDynamicAttach(f.buf, dev64(w), { invalidateMappings: () => {} }, null),
    ],
    ["dma_buf_detach", (_w, f) => dmaBufDetach(f.buf, f.dyn)],
    ["dma_buf_export", (w, f) =>
      dmaBufExport(w, {
        expName: "x",
        ops: { mapDmaBuf: () => null, unmapDmaBuf: () => {}, release: () => {} },
        size: 4096,
        priv: {},
        resv: f.buf.resv,
      })],
    ["dma_buf_fd", (_w, f) => f.buf.fd(0)],
    ["dma_buf_get", (w, f) => dmaBufGet(w, f.buf.fd(0))],
    ["dma_buf_put", (_w, f) => f.buf.put()],
    ["dma_buf_mmap", async (w, f) => {
      const mm = new MmStruct(w, "p");
      // a VMA of another file the driver maps the dma-buf into
      return dmaBufMmap(
        f.buf,
        { vmStart: 0, vmEnd: 4096, vmPgoff: 0, vmFile: null, mm } as never,
        0,
      );
    }],
    ["dma_buf_begin_cpu_access", (_w, f) => dmaBufBeginCpuAccess(f.buf, "DMA_FROM_DEVICE")],
    ["dma_buf_end_cpu_access", (_w, f) => dmaBufEndCpuAccess(f.buf, "DMA_FROM_DEVICE")],
    ["dma_buf_map_attachment_unlocked", (_w, f) => f.dyn.mapUnlocked("DMA_BIDIRECTIONAL")],
    [
      "dma_buf_unmap_attachment_unlocked",
      (_w, f) => f.dyn.unmapUnlocked(new SgTable([]), "DMA_BIDIRECTIONAL"),
    ],
    ["dma_buf_vmap_unlocked", (_w, f) => dmaBufVmapUnlocked(f.buf)],
    ["dma_buf_vunmap_unlocked", (_w, f) => dmaBufVunmapUnlocked(f.buf, f.buf.vmapPtr!)],
  ];
  for (const [name, call] of mustNotHold) {
    await t.step(`${name} with the lock held is a lockdep report`, async () => {
      const world = new Kernel();
      await world.runTask("importer", async () => {
        const f = await fixture(world);
        await f.buf.resv.lock(null);
        let err: unknown = null;
        try {
          await call(world, f);
        } catch (e) {
          err = e;
        }
        ok(isLockdep(err), `${name}: expected a lockdep report, got ${err}`);
        f.buf.resv.unlock();
      });
    });
  }
});

Deno.test("locking convention: exporters", async (t) => {
  await t.step("dma_buf_invalidate_mappings / dma_buf_move_notify need the lock", async () => {
    const world = new Kernel();
    await world.runTask("exporter", async () => {
      const { buf } = await fixture(world);
      throws(() => dmaBufInvalidateMappings(buf), isLockdep);
      throws(() => dmaBufMoveNotify(buf), isLockdep);
      await buf.resv.lock(null);
      dmaBufInvalidateMappings(buf);
      buf.resv.unlock();
    });
  });
  for (const op of ["pin", "mapDmaBuf", "vmap"] as const) {
    await t.step(
      `${op} is called locked: an exporter taking the lock again deadlocks (lockdep)`,
      async () => {
        const world = new Kernel();
        let inner = "";
        const exp = new TestExporter(world, {
          dynamic: true,
          vmap: true,
          extra: {
            [op]: async (x: DmaBufAttachment | { resv: unknown }) => {
              const buf = "dmabuf" in x ? (x as DmaBufAttachment).dmabuf : exp.buf;
              inner = "locking";
              await buf.resv.lock(null);
            },
          },
        });
        await world.runTask("importer", async () => {
          const a = await dmaBufDynamicAttach(exp.buf, dev64(world), {
            invalidateMappings: () => {},
          }, null);
          await exp.buf.resv.lock(null);
          const call = op === "pin"
            ? a.pin()
            : op === "mapDmaBuf"
            ? a.map("DMA_BIDIRECTIONAL")
            : dmaBufVmap(exp.buf);
          await rejects(
            call,
            (e) => e instanceof KernelBug && (e.kind === "lockdep" || e.kind === "deadlock"),
          );
        });
        strictEqual(inner, "locking");
      },
    );
  }
  await t.step(
    "unlocked ops (attach, detach, begin/end_cpu_access) may take the lock",
    async () => {
      const world = new Kernel();
      const take = async (buf: { resv: { lock(c: null): Promise<number>; unlock(): void } }) => {
        await buf.resv.lock(null);
        buf.resv.unlock();
      };
      const exp = new TestExporter(world, {
        extra: {
          attach: (b) => take(b),
          detach: (b) => take(b),
          beginCpuAccess: (b) => take(b),
          endCpuAccess: (b) => take(b),
        },
      });
      await world.runTask("importer", async () => {
        const a = await dmaBufAttach(exp.buf, dev64(world));
        await dmaBufBeginCpuAccess(exp.buf, "DMA_BIDIRECTIONAL");
        await dmaBufEndCpuAccess(exp.buf, "DMA_BIDIRECTIONAL");
        await a.detach();
      });
      strictEqual(world.bugs.length, 0);
    },
  );
});
