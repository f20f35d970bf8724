import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import {
  filesOf,
  isErrno,
  Kernel,
  KernelBug,
  KernelError,
  MAP_SHARED,
  MmStruct,
  PROT_READ,
  PROT_WRITE,
} from "@dmalab/kernel";
import {
  type DmaBuf,
  dmaBufBeginCpuAccess,
  dmaBufEndCpuAccess,
  dmaBufExport,
  dmaBufMmap,
  dmaBufVmap,
  dmaBufVmapUnlocked,
  dmaBufVunmap,
  dmaBufVunmapUnlocked,
  DmaFence,
  dmaFenceContextAlloc,
  dmaHeapSystemAlloc,
  DmaResvUsage,
  type DmaResvUsage as Usage,
} from "../mod.ts";
import { TestExporter } from "./testdata/exporter.ts";

const fenceOps = { getDriverName: () => "test", getTimelineName: () => "t" };

async function addFence(world: Kernel, buf: DmaBuf, usage: Usage): Promise<DmaFence> {
  const f = new DmaFence(world, fenceOps, dmaFenceContextAlloc(world, 1), 1);
  await buf.resv.lock(null);
  buf.resv.reserveFences(1);
  buf.resv.addFence(f, usage);
  buf.resv.unlock();
  return f;
}

Deno.test("dma_buf_vmap / dma_buf_vunmap", async (t) => {
  await t.step("nested vmaps share one exporter mapping; vunmap at the last", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world, { vmap: true });
    await world.runTask("t", async () => {
      const m1 = await dmaBufVmapUnlocked(exp.buf);
      const m2 = await dmaBufVmapUnlocked(exp.buf);
      ok(m1.isEqual(m2));
      strictEqual(exp.buf.vmappingCounter, 2);
      strictEqual(exp.calls.vmap, 1);
      m1.memcpyTo(4095, new Uint8Array([1, 2]));
      strictEqual(world.mem.readU8(world.mem.pageToPhys(exp.pages[1]!)), 2);
      await dmaBufVunmapUnlocked(exp.buf, m2);
      strictEqual(exp.calls.vunmap ?? 0, 0);
      await dmaBufVunmapUnlocked(exp.buf, m1);
      strictEqual(exp.calls.vunmap, 1);
      strictEqual(exp.buf.vmapPtr, null);
    });
  });
  await t.step("no vmap op: -EINVAL", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      await rejects(dmaBufVmapUnlocked(exp.buf), (e) => isErrno(e, "EINVAL"));
    });
  });
  await t.step(
    "the exporter's vmap failing is a WARN (WARN_ON_ONCE), its errno returned",
    async () => {
      for (const strict of [true, false]) {
        const world = new Kernel({ strict });
        const buf = dmaBufExport(world, {
          expName: "failing-vmap",
          size: 4096,
          priv: {},
          ops: {
            mapDmaBuf: () => null,
            unmapDmaBuf: () => {},
            release: () => {},
            vmap: () => {
              throw new KernelError("ENOMEM", "test exporter: out of vmalloc space");
            },
          },
        });
        await world.runTask("t", async () => {
          await rejects(
            dmaBufVmapUnlocked(buf),
            (e) => strict ? e instanceof KernelBug && e.kind === "WARN" : isErrno(e, "ENOMEM"),
          );
        });
        strictEqual(world.bugs.filter((b) => b.kind === "WARN").length, 1);
        strictEqual(buf.vmappingCounter, 0);
        strictEqual(buf.vmapPtr, null);
        buf.put();
      }
    },
  );
  await t.step("vunmap of a buffer that is not vmapped, or of another map, is a BUG", async () => {
    const world = new Kernel();
    const a = new TestExporter(world, { vmap: true });
    const b = new TestExporter(world, { vmap: true });
    await world.runTask("t", async () => {
      const mb = await dmaBufVmapUnlocked(b.buf);
      await a.buf.resv.lock(null);
      throws(() => dmaBufVunmap(a.buf, mb), (e) => e instanceof KernelBug && e.kind === "BUG");
      await dmaBufVmap(a.buf);
      throws(() => dmaBufVunmap(a.buf, mb), (e) => e instanceof KernelBug && e.kind === "BUG");
      a.buf.resv.unlock();
    });
  });
});

Deno.test("dma_buf_begin_cpu_access / end_cpu_access", async (t) => {
  for (
    const [dir, waits] of [
      ["DMA_FROM_DEVICE", ["KERNEL", "WRITE"]],
      ["DMA_TO_DEVICE", ["KERNEL", "WRITE", "READ"]],
      ["DMA_BIDIRECTIONAL", ["KERNEL", "WRITE", "READ"]],
    ] as const
  ) {
    await t.step(`${dir} waits for ${waits.join("+")} fences, never BOOKKEEP`, async () => {
      const world = new Kernel();
      const exp = new TestExporter(world);
      const fences = new Map<string, DmaFence>();
      await world.runTask("setup", async () => {
        for (const u of ["KERNEL", "WRITE", "READ", "BOOKKEEP"] as const) {
          fences.set(u, await addFence(world, exp.buf, DmaResvUsage[u]));
        }
      });
      let doneAt = -1;
      world.spawn("cpu", async () => {
        strictEqual(await dmaBufBeginCpuAccess(exp.buf, dir), 0);
        doneAt = world.sched.now;
        strictEqual(await dmaBufEndCpuAccess(exp.buf, dir), 0);
      });
      world.spawn("gpu", async () => {
        for (const u of ["KERNEL", "WRITE", "READ"]) {
          await world.sched.msleep(1);
          fences.get(u)!.signal();
        }
      });
      await world.run();
      strictEqual(doneAt, fences.get(waits[waits.length - 1]!)!.timestamp());
      ok(!fences.get("BOOKKEEP")!.isSignaled());
    });
  }
  await t.step(
    "a signal interrupts the wait with -ERESTARTSYS; the exporter's error is returned",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world);
      await world.runTask("setup", () => addFence(world, exp.buf, DmaResvUsage.WRITE));
      const task = world.spawn("cpu", async () => {
        await rejects(
          dmaBufBeginCpuAccess(exp.buf, "DMA_FROM_DEVICE"),
          (e) => isErrno(e, "ERESTARTSYS"),
        );
      });
      world.spawn("kill", async () => {
        await world.sched.msleep(1);
        world.sched.signal(task);
      });
      await world.run();
      const failing = new TestExporter(world, {
        extra: {
          beginCpuAccess: async () => {
            throw new (await import("@dmalab/kernel")).KernelError("EAGAIN", "busy");
          },
        },
      });
      await world.runTask("cpu2", async () => {
        await rejects(
          dmaBufBeginCpuAccess(failing.buf, "DMA_FROM_DEVICE"),
          (e) => isErrno(e, "EAGAIN"),
        );
      });
    },
  );
});

Deno.test("dma_buf_mmap and mmap(2) of a dma-buf fd", async (t) => {
  await t.step(
    "mmap(2) of a system-heap buffer: CPU writes reach the pages a vmap sees",
    async () => {
      const world = new Kernel();
      const mm = new MmStruct(world, "app");
      await world.runTask("app", async () => {
        const buf = dmaHeapSystemAlloc(world, 3 * 4096);
        const fd = buf.fd(0);
        const file = filesOf(world).lookup(fd);
        const addr = await mm.mmap({
          length: 2 * 4096,
          prot: PROT_READ | PROT_WRITE,
          flags: MAP_SHARED,
          file: file.asVmFile(),
          offset: 4096,
        });
        await mm.write(addr + 10, new Uint8Array([0xab, 0xcd]));
        const map = await dmaBufVmapUnlocked(buf);
        deepStrictEqual([...map.memcpyFrom(4096 + 10, 2)], [0xab, 0xcd]);
        await dmaBufVunmapUnlocked(buf, map);
        strictEqual(buf.refcount, 2); // the fd (the creator's reference moved there) and the VMA
        await mm.munmap(addr, 2 * 4096);
        strictEqual(buf.refcount, 1);
        filesOf(world).close(fd);
        ok(buf.released);
      });
    },
  );
  await t.step(
    "mmap(2) past the end of the buffer is -EINVAL; an exporter without mmap -EINVAL",
    async () => {
      const world = new Kernel();
      const mm = new MmStruct(world, "app");
      await world.runTask("app", async () => {
        const buf = dmaHeapSystemAlloc(world, 2 * 4096);
        const file = filesOf(world).lookup(buf.fd(0));
        await rejects(
          mm.mmap({ length: 2 * 4096, flags: MAP_SHARED, file: file.asVmFile(), offset: 4096 }),
          (e) => isErrno(e, "EINVAL"),
        );
        const exp = new TestExporter(world);
        const f2 = filesOf(world).lookup(exp.buf.fd(0));
        await rejects(
          mm.mmap({ length: 4096, prot: PROT_READ, flags: MAP_SHARED, file: f2.asVmFile() }),
          (e) => isErrno(e, "EINVAL"),
        );
      });
    },
  );
  await t.step(
    "dma_buf_mmap: -EINVAL past the end, -EOVERFLOW when pgoff + pages wraps",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world, { pages: 2, extra: { mmap: () => {} } });
      await world.runTask("drv", async () => {
        const vma = { vmStart: 0x1000, vmEnd: 0x3000, vmPgoff: 0, vmFile: null } as never;
        await rejects(dmaBufMmap(exp.buf, vma, 1), (e) => isErrno(e, "EINVAL"));
        await rejects(dmaBufMmap(exp.buf, vma, 2 ** 64 - 1), (e) => isErrno(e, "EOVERFLOW"));
        await dmaBufMmap(exp.buf, vma, 0);
        strictEqual((vma as { vmPgoff: number }).vmPgoff, 0);
        strictEqual(exp.buf.refcount, 2); // the VMA now holds the dma-buf file
      });
    },
  );
});
