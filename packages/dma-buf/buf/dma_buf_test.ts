import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import {
  Device,
  FdTable,
  filesOf,
  isErrno,
  Kernel,
  KernelBug,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
} from "@dmalab/kernel";
import {
  dmaBufAttach,
  dmaBufCore,
  dmaBufDynamicAttach,
  dmaBufExport,
  dmaBufGet,
  dmaBufList,
  dmaBufVmapUnlocked,
  SgTable,
} from "../mod.ts";
import { dev64, TestExporter } from "./testdata/exporter.ts";

const minimalOps = () => ({
  mapDmaBuf: () => new SgTable([]),
  unmapDmaBuf: () => {},
  release: () => {},
});

Deno.test("dma_buf_export validation", async (t) => {
  const cases: [string, Record<string, unknown>][] = [
    ["priv NULL", { priv: null }],
    ["ops NULL", { ops: null }],
    ["no map_dma_buf", { ops: { unmapDmaBuf: () => {}, release: () => {} } }],
    ["no unmap_dma_buf", { ops: { mapDmaBuf: () => null, release: () => {} } }],
    ["no release", { ops: { mapDmaBuf: () => null, unmapDmaBuf: () => {} } }],
    ["pin without unpin", { ops: { ...minimalOps(), pin: () => {} } }],
    ["unpin without pin", { ops: { ...minimalOps(), unpin: () => {} } }],
  ];
  for (const [name, patch] of cases) {
    await t.step(`${name}: WARN, then -EINVAL; nothing exported`, () => {
      const strict = new Kernel();
      // deno-lint-ignore no-explicit-any
      const info: any = { expName: "x", ops: minimalOps(), size: 4096, priv: {}, ...patch };
      throws(() => dmaBufExport(strict, info), (e) => e instanceof KernelBug && e.kind === "WARN");
      const lax = new Kernel({ strict: false });
      throws(() => dmaBufExport(lax, info), (e) => isErrno(e, "EINVAL"));
      strictEqual(dmaBufList(lax).length, 0);
      strictEqual(lax.bugs.length, 1);
    });
  }
  await t.step("owner module going away: -ENOENT", () => {
    const world = new Kernel();
    dmaBufCore(world).unloadingModules.add("gpu");
    throws(
      () =>
        dmaBufExport(world, {
          expName: "x",
          owner: "gpu",
          ops: minimalOps(),
          size: 4096,
          priv: {},
        }),
      (e) => isErrno(e, "ENOENT"),
    );
  });
  await t.step(
    "file flags keep O_ACCMODE | O_NONBLOCK; inode numbers count up; newest first",
    () => {
      const world = new Kernel();
      const a = dmaBufExport(world, {
        expName: "a",
        ops: minimalOps(),
        size: 4096,
        priv: {},
        flags: O_RDWR | O_CLOEXEC | O_NONBLOCK,
      });
      const b = dmaBufExport(world, { expName: "b", ops: minimalOps(), size: 4096, priv: {} });
      strictEqual(a.file.flags, O_RDWR | O_NONBLOCK);
      strictEqual(b.inodeNumber, a.inodeNumber + 1);
      deepStrictEqual(dmaBufList(world), [b, a]);
      strictEqual(a.refcount, 1);
    },
  );
});

Deno.test("dma_buf fds, get, put and release", async (t) => {
  await t.step(
    "fd -> get gives the same buffer with a new reference; release runs once at the last put",
    () => {
      const world = new Kernel();
      const exp = new TestExporter(world);
      const buf = exp.buf;
      const fd = buf.fd(O_CLOEXEC);
      ok(filesOf(world).isCloexec(fd));
      const again = dmaBufGet(world, fd);
      strictEqual(again, buf);
      strictEqual(buf.refcount, 2);
      again.put();
      filesOf(world).close(fd);
      strictEqual(exp.calls.release, 1);
      ok(buf.released);
      strictEqual(dmaBufList(world).length, 0);
      throws(() => buf.put(), (e) => e instanceof KernelBug && e.kind === "refcount");
      strictEqual(exp.calls.release, 1);
    },
  );
  await t.step(
    "dma_buf_get: -EBADF for a closed fd, -EINVAL for a file that is not a dma-buf",
    () => {
      const world = new Kernel();
      throws(() => dmaBufGet(world, 77), (e) => isErrno(e, "EBADF"));
      throws(() => dmaBufGet(world, 0), (e) => isErrno(e, "EINVAL"));
      strictEqual(filesOf(world).lookup(0).count, 3); // the reference taken by fget was dropped
    },
  );
  await t.step("dma_buf_fd: -EMFILE propagates and the reference stays with the caller", () => {
    const world = new Kernel();
    const files = new FdTable(world, { rlimitNofile: 3 });
    const exp = new TestExporter(world);
    throws(() => exp.buf.fd(0, files), (e) => isErrno(e, "EMFILE"));
    strictEqual(exp.buf.refcount, 1);
    exp.buf.put();
    strictEqual(exp.calls.release, 1);
  });
  await t.step("release with a vmap outstanding is a BUG", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world, { vmap: true });
    await world.runTask("t", async () => {
      await dmaBufVmapUnlocked(exp.buf);
      throws(() => exp.buf.put(), (e) => e instanceof KernelBug && e.kind === "BUG");
    });
  });
  await t.step("release with attachments left WARNs (the importer leaked one)", async () => {
    const world = new Kernel({ strict: false });
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      await dmaBufAttach(exp.buf, dev64(world));
      exp.buf.put();
    });
    ok(world.bugs.some((b) => b.summary.includes("still attached")));
    strictEqual(exp.calls.release, 1);
  });
  await t.step("fdinfo and llseek", () => {
    const world = new Kernel();
    const exp = new TestExporter(world, { pages: 2 });
    const fd = exp.buf.fd(0);
    const file = filesOf(world).lookup(fd);
    ok(file.fdinfo().includes("size:\t8192\ncount:\t0\nexp_name:\ttest\n"));
    strictEqual(file.llseek(0, 2), 8192);
    strictEqual(file.llseek(0, 0), 0);
    throws(() => file.llseek(0, 1), (e) => isErrno(e, "EINVAL"));
    throws(() => file.llseek(5, 2), (e) => isErrno(e, "EINVAL"));
    filesOf(world).close(fd);
  });
});

Deno.test("dma_buf_attach / dma_buf_dynamic_attach / dma_buf_detach", async (t) => {
  await t.step("no device: WARN and -EINVAL", async () => {
    const world = new Kernel({ strict: false });
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      await rejects(dmaBufAttach(exp.buf, null), (e) => isErrno(e, "EINVAL"));
    });
    strictEqual(exp.buf.attachments.length, 0);
    strictEqual(world.bugs.length, 1);
  });
  await t.step(
    "6.19: importer ops need move_notify; 7.1: invalidate_mappings is optional",
    async () => {
      const old = new Kernel({ strict: false, variants: { "dma-buf.version": "6.19" } });
      const e1 = new TestExporter(old);
      await old.runTask("t", async () => {
        await rejects(
          dmaBufDynamicAttach(e1.buf, dev64(old), { allowPeer2peer: true }, null),
          (e) => isErrno(e, "EINVAL"),
        );
        const ok1 = await dmaBufDynamicAttach(e1.buf, dev64(old), { moveNotify: () => {} }, null);
        ok(ok1.isDynamic);
      });
      const cur = new Kernel();
      const e2 = new TestExporter(cur);
      await cur.runTask("t", async () => {
        const a = await dmaBufDynamicAttach(e2.buf, dev64(cur), { allowPeer2peer: true }, null);
        ok(a.isDynamic && a.peer2peer);
      });
    },
  );
  await t.step(
    "newest attachment first; static importers never peer2peer; exporter attach/detach run",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world);
      await world.runTask("t", async () => {
        const a = await dmaBufAttach(exp.buf, dev64(world, "a"));
        const b = await dmaBufDynamicAttach(exp.buf, dev64(world, "b"), {
          allowPeer2peer: true,
          invalidateMappings: () => {},
        }, 42);
        deepStrictEqual(exp.buf.attachments, [b, a]);
        ok(!a.peer2peer && !a.isDynamic);
        strictEqual(b.importerPriv, 42);
        await a.detach();
        await b.detach();
        deepStrictEqual(exp.buf.attachments, []);
      });
      strictEqual(exp.calls.attach, 2);
      strictEqual(exp.calls.detach, 2);
    },
  );
  await t.step(
    "the exporter's attach runs unlocked (it may take the lock) and its error aborts the attach",
    async () => {
      const world = new Kernel();
      let locked = false;
      const exp = new TestExporter(world, {
        extra: {
          async attach(buf) {
            await buf.resv.lock(null);
            locked = true;
            buf.resv.unlock();
            throw new (await import("@dmalab/kernel")).KernelError("EBUSY", "storage incompatible");
          },
        },
      });
      await world.runTask("t", async () => {
        await rejects(dmaBufAttach(exp.buf, dev64(world)), (e) => isErrno(e, "EBUSY"));
      });
      ok(locked);
      strictEqual(exp.buf.attachments.length, 0);
    },
  );
  await t.step("detaching a foreign attachment WARNs and changes nothing", async () => {
    const world = new Kernel({ strict: false });
    const e1 = new TestExporter(world);
    const e2 = new TestExporter(world);
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(e1.buf, dev64(world));
      const { dmaBufDetach } = await import("../mod.ts");
      await dmaBufDetach(e2.buf, a);
      strictEqual(e1.buf.attachments.length, 1);
      await a.detach();
    });
    strictEqual(world.bugs.length, 1);
  });
  await t.step("detaching with a mapping left is reported (the kernel would leak it)", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      const a = await exp.buf.attach(dev64(world));
      await a.mapUnlocked("DMA_BIDIRECTIONAL");
      await rejects(exp.buf.detach(a), (e) => e instanceof KernelBug && e.kind === "invariant");
    });
  });
  await t.step("attaching with a device behind no IOMMU works with the real DMA API", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world);
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(
        exp.buf,
        new Device(world, "nic", { dmaMask: (1n << 64n) - 1n }),
      );
      const sgt = await a.mapUnlocked("DMA_TO_DEVICE");
      strictEqual(sgt.nents, 4);
      strictEqual(sgt.sgl[0]!.dmaAddress, world.mem.pageToPhys(exp.pages[0]!));
      await a.unmapUnlocked(sgt, "DMA_TO_DEVICE");
      await a.detach();
    });
    deepStrictEqual(world.check(), []);
  });
});
