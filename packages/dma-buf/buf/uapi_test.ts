import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { Device, dmaBitMask, EPOLLIN, EPOLLOUT, filesOf, isErrno, Kernel } from "@dmalab/kernel";
import {
  DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
  DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
  DMA_BUF_IOCTL_SYNC,
  DMA_BUF_SET_NAME,
  DMA_BUF_SET_NAME_A,
  DMA_BUF_SET_NAME_B,
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_START,
  DMA_BUF_SYNC_WRITE,
  type DmaBuf,
  dmaBufAttach,
  dmaBufBufinfo,
  dmaBufIterAll,
  dmaBufSyncArg,
  dmaBufSyncFileArg,
  DmaFence,
  DmaFenceArray,
  dmaFenceContextAlloc,
  dmaHeapSystemAlloc,
  DmaResvUsage,
  type DmaResvUsage as Usage,
  syncFileCreate,
  syncFileGetFence,
} from "../mod.ts";
import { TestExporter } from "./testdata/exporter.ts";

const fenceOps = { getDriverName: () => "test", getTimelineName: () => "t" };

function newFence(world: Kernel): DmaFence {
  return new DmaFence(world, fenceOps, dmaFenceContextAlloc(world, 1), 1);
}

async function addFence(world: Kernel, buf: DmaBuf, usage: Usage): Promise<DmaFence> {
  const f = newFence(world);
  await buf.resv.lock(null);
  buf.resv.reserveFences(1);
  buf.resv.addFence(f, usage);
  buf.resv.unlock();
  return f;
}

Deno.test("dma-buf uapi: ioctl numbers", () => {
  strictEqual(DMA_BUF_IOCTL_SYNC, 0x40086200);
  strictEqual(DMA_BUF_SET_NAME_A, 0x40046201);
  strictEqual(DMA_BUF_SET_NAME_B, 0x40086201);
  strictEqual(DMA_BUF_SET_NAME, 0x40086201);
  strictEqual(DMA_BUF_IOCTL_EXPORT_SYNC_FILE, 0xc0086202);
  strictEqual(DMA_BUF_IOCTL_IMPORT_SYNC_FILE, 0x40086203);
  deepStrictEqual([
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_WRITE,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_END,
  ], [1, 2, 3, 0, 4]);
});

Deno.test("dma-buf uapi: DMA_BUF_IOCTL_SYNC", async (t) => {
  const world = new Kernel();
  const exp = new TestExporter(world, {
    extra: { beginCpuAccess: () => {}, endCpuAccess: () => {} },
  });
  const file = filesOf(world).lookup(exp.buf.fd(0));
  for (
    const [flags, code] of [
      [8, "EINVAL"],
      [0x100000000n, "EINVAL"],
      [DMA_BUF_SYNC_START, "EINVAL"],
      [DMA_BUF_SYNC_END, "EINVAL"],
    ] as const
  ) {
    await t.step(`flags 0x${flags.toString(16)}: -${code}`, async () => {
      await world.runTask("u", async () => {
        await rejects(
          Promise.resolve().then(() => file.ioctl(DMA_BUF_IOCTL_SYNC, dmaBufSyncArg(flags))),
          (e) => isErrno(e, code),
        );
      });
    });
  }
  await t.step("bad pointer: -EFAULT", async () => {
    await world.runTask("u", async () => {
      await rejects(
        Promise.resolve().then(() => file.ioctl(DMA_BUF_IOCTL_SYNC, null)),
        (e) => isErrno(e, "EFAULT"),
      );
    });
  });
  await t.step(
    "START maps READ/WRITE/RW to FROM_DEVICE/TO_DEVICE/BIDIRECTIONAL; END calls end_cpu_access",
    async () => {
      const dirs: string[] = [];
      const w2 = new Kernel();
      const e2 = new TestExporter(w2, {
        extra: {
          beginCpuAccess: (_b, d) => void dirs.push(`begin ${d}`),
          endCpuAccess: (_b, d) => void dirs.push(`end ${d}`),
        },
      });
      const f2 = filesOf(w2).lookup(e2.buf.fd(0));
      await w2.runTask("u", async () => {
        for (const fl of [DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW]) {
          strictEqual(
            await f2.ioctl(DMA_BUF_IOCTL_SYNC, dmaBufSyncArg(DMA_BUF_SYNC_START | fl)),
            0,
          );
        }
        await f2.ioctl(DMA_BUF_IOCTL_SYNC, dmaBufSyncArg(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW));
      });
      deepStrictEqual(dirs, [
        "begin DMA_FROM_DEVICE",
        "begin DMA_TO_DEVICE",
        "begin DMA_BIDIRECTIONAL",
        "end DMA_BIDIRECTIONAL",
      ]);
    },
  );
  await t.step("unknown ioctl: -ENOTTY", async () => {
    await world.runTask("u", async () => {
      await rejects(
        Promise.resolve().then(() => file.ioctl(0x40086209, dmaBufSyncArg(0))),
        (e) => isErrno(e, "ENOTTY"),
      );
    });
  });
});

Deno.test("dma-buf uapi: DMA_BUF_SET_NAME", async (t) => {
  const world = new Kernel();
  const exp = new TestExporter(world);
  const file = filesOf(world).lookup(exp.buf.fd(0));
  await t.step("31 characters fit (32 with the NUL), on both A and B", async () => {
    await world.runTask("u", async () => {
      strictEqual(await file.ioctl(DMA_BUF_SET_NAME_A, "a".repeat(31)), 0);
      strictEqual(exp.buf.name, "a".repeat(31));
      await file.ioctl(DMA_BUF_SET_NAME_B, "camera");
      strictEqual(exp.buf.name, "camera");
      ok(file.fdinfo().includes("name:\tcamera\n"));
    });
  });
  await t.step("32 characters: -EINVAL, name unchanged; bad pointer -EFAULT", async () => {
    await world.runTask("u", async () => {
      await rejects(
        Promise.resolve().then(() => file.ioctl(DMA_BUF_SET_NAME, "b".repeat(32))),
        (e) => isErrno(e, "EINVAL"),
      );
      await rejects(
        Promise.resolve().then(() => file.ioctl(DMA_BUF_SET_NAME, null)),
        (e) => isErrno(e, "EFAULT"),
      );
      strictEqual(exp.buf.name, "camera");
    });
  });
  await t.step("renaming while attached is allowed (6.x)", async () => {
    await world.runTask("u", async () => {
      await dmaBufAttach(exp.buf, new Device(world, "d", { dmaMask: dmaBitMask(64) }));
      strictEqual(await file.ioctl(DMA_BUF_SET_NAME, "busy"), 0);
    });
  });
});

Deno.test("dma-buf uapi: sync_file export and import", async (t) => {
  await t.step("flag checks: unknown bits and no direction are -EINVAL", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world);
    const file = filesOf(world).lookup(exp.buf.fd(0));
    await world.runTask("u", async () => {
      for (const cmd of [DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DMA_BUF_IOCTL_IMPORT_SYNC_FILE]) {
        await rejects(
          Promise.resolve().then(() => file.ioctl(cmd, dmaBufSyncFileArg(4))),
          (e) => isErrno(e, "EINVAL"),
        );
        await rejects(
          Promise.resolve().then(() => file.ioctl(cmd, dmaBufSyncFileArg(0))),
          (e) => isErrno(e, "EINVAL"),
        );
      }
      await rejects(
        Promise.resolve().then(() =>
          file.ioctl(DMA_BUF_IOCTL_IMPORT_SYNC_FILE, dmaBufSyncFileArg(1, 0))
        ),
        (e) => isErrno(e, "EINVAL"),
      );
    });
  });
  await t.step(
    "export READ collects write fences, WRITE collects reads too; none gives a signalled stub",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world);
      const files = filesOf(world);
      const file = files.lookup(exp.buf.fd(0));
      await world.runTask("u", async () => {
        const stubArg = dmaBufSyncFileArg(DMA_BUF_SYNC_RW);
        await file.ioctl(DMA_BUF_IOCTL_EXPORT_SYNC_FILE, stubArg);
        const stub = syncFileGetFence(world, stubArg.getInt32(4, true))!;
        ok(stub.isSignaled());
        ok(files.isCloexec(stubArg.getInt32(4, true)));
        stub.put();
        const w = await addFence(world, exp.buf, DmaResvUsage.WRITE);
        const r = await addFence(world, exp.buf, DmaResvUsage.READ);
        const rd = dmaBufSyncFileArg(DMA_BUF_SYNC_READ);
        await file.ioctl(DMA_BUF_IOCTL_EXPORT_SYNC_FILE, rd);
        const fr = syncFileGetFence(world, rd.getInt32(4, true))!;
        strictEqual(fr, w); // a single fence is returned as is
        const wr = dmaBufSyncFileArg(DMA_BUF_SYNC_WRITE);
        await file.ioctl(DMA_BUF_IOCTL_EXPORT_SYNC_FILE, wr);
        const fw = syncFileGetFence(world, wr.getInt32(4, true))!;
        ok(fw instanceof DmaFenceArray);
        w.signal();
        ok(!fw.isSignaled());
        r.signal();
        ok(fw.isSignaled());
        fr.put();
        fw.put();
      });
    },
  );
  await t.step("import adds every leaf of a container with WRITE (or READ) usage", async () => {
    const world = new Kernel();
    const exp = new TestExporter(world);
    const files = filesOf(world);
    const file = files.lookup(exp.buf.fd(0));
    await world.runTask("u", async () => {
      const a = newFence(world);
      const b = newFence(world);
      const arr = new DmaFenceArray(
        world,
        [a.get(), b.get()],
        dmaFenceContextAlloc(world, 1),
        1,
        false,
      );
      const sf = syncFileCreate(world, arr);
      arr.put();
      const fd = files.installNew(sf.file, 0);
      await file.ioctl(DMA_BUF_IOCTL_IMPORT_SYNC_FILE, dmaBufSyncFileArg(DMA_BUF_SYNC_WRITE, fd));
      ok(!exp.buf.resv.testSignaled(DmaResvUsage.WRITE));
      a.signal();
      ok(!exp.buf.resv.testSignaled(DmaResvUsage.WRITE));
      b.signal();
      ok(exp.buf.resv.testSignaled(DmaResvUsage.WRITE));
      strictEqual(exp.buf.resv.numFences, 2);
      a.put();
      b.put();
    });
  });
});

Deno.test("dma-buf uapi: without CONFIG_SYNC_FILE the sync_file ioctls are -ENOTTY", async () => {
  const world = new Kernel({ variants: { CONFIG_SYNC_FILE: "n" } });
  const exp = new TestExporter(world);
  const file = filesOf(world).lookup(exp.buf.fd(0));
  await world.runTask("u", async () => {
    for (const cmd of [DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DMA_BUF_IOCTL_IMPORT_SYNC_FILE]) {
      await rejects(
        Promise.resolve().then(() => file.ioctl(cmd, dmaBufSyncFileArg(DMA_BUF_SYNC_RW))),
        (e) => isErrno(e, "ENOTTY"),
      );
    }
  });
});

Deno.test("dma_buf_iter: live buffers with a reference each, newest first", () => {
  const world = new Kernel();
  const a = dmaHeapSystemAlloc(world, 4096);
  const b = dmaHeapSystemAlloc(world, 4096);
  const it = dmaBufIterAll(world);
  deepStrictEqual(it, [b, a]);
  strictEqual(a.refcount, 2);
  for (const x of it) x.put();
  a.put();
  deepStrictEqual(dmaBufIterAll(world), [b]);
});

Deno.test("dma-buf uapi: poll", async (t) => {
  await t.step(
    "EPOLLIN waits for writers, EPOLLOUT for every implicit fence; armed callbacks hold the file",
    async () => {
      const world = new Kernel();
      const exp = new TestExporter(world);
      const file = filesOf(world).lookup(exp.buf.fd(0));
      await world.runTask("u", async () => {
        strictEqual(await file.poll(), EPOLLIN | EPOLLOUT);
        const r = await addFence(world, exp.buf, DmaResvUsage.READ);
        await addFence(world, exp.buf, DmaResvUsage.BOOKKEEP); // ignored by poll
        strictEqual(await file.poll(), EPOLLIN);
        strictEqual(exp.buf.cbOut.active, EPOLLOUT);
        strictEqual(exp.buf.refcount, 2);
        strictEqual(await file.poll(), EPOLLIN); // callback busy: not reported
        r.signal();
        strictEqual(exp.buf.cbOut.active, 0);
        strictEqual(exp.buf.refcount, 1);
        strictEqual(await file.poll(), EPOLLIN | EPOLLOUT);
      });
    },
  );
  await t.step(
    "an armed poll callback holds a file reference, so the buffer outlives the last user put",
    async () => {
      const world = new Kernel({ strict: false });
      const exp = new TestExporter(world);
      await world.runTask("u", async () => {
        await addFence(world, exp.buf, DmaResvUsage.WRITE);
        await exp.buf.poll(EPOLLIN);
        exp.buf.put();
        strictEqual(exp.buf.refcount, 1); // the callback's reference keeps it alive
        ok(!exp.buf.released);
      });
    },
  );
});

Deno.test("dma-buf uapi: poll(2) sleeps until the fences it waits for signal", async () => {
  const world = new Kernel();
  const exp = new TestExporter(world);
  let writer: DmaFence | null = null;
  let readyAt = -1;
  let mask = 0;
  await world.runTask("setup", async () => {
    writer = await addFence(world, exp.buf, DmaResvUsage.WRITE);
  });
  world.spawn("poller", async () => {
    mask = await exp.buf.pollWait(EPOLLIN);
    readyAt = world.sched.now;
  });
  world.spawn("gpu", async () => {
    await world.sched.msleep(20);
    writer!.signal();
  });
  await world.run();
  strictEqual(mask, EPOLLIN);
  strictEqual(readyAt, writer!.timestamp());
  strictEqual(exp.buf.refcount, 1);
});

Deno.test("debugfs bufinfo", async () => {
  const world = new Kernel();
  const text = await world.runTask("cat", async () => {
    const a = dmaHeapSystemAlloc(world, 8192);
    const b = dmaHeapSystemAlloc(world, 4096);
    const f = newFence(world);
    await a.resv.lock(null);
    a.resv.reserveFences(1);
    a.resv.addFence(f, DmaResvUsage.WRITE);
    a.resv.unlock();
    await dmaBufAttach(a, new Device(world, "0000:01:00.0", { dmaMask: dmaBitMask(64) }));
    a.setNameRaw("frame");
    const out = await dmaBufBufinfo(world);
    f.signal();
    void b;
    return out;
  });
  const lines = text.split("\n");
  deepStrictEqual(lines.slice(0, 3), [
    "",
    "Dma-buf Objects:",
    "size    \tflags   \tmode    \tcount   \texp_name\tino     \tname",
  ]);
  strictEqual(lines[3], "00004096\t00000002\t00080007\t00000001\tsystem\t00000002\t<none>");
  strictEqual(lines[4], "\tAttached Devices:");
  strictEqual(lines[5], "Total 0 devices attached");
  strictEqual(lines[7], "00008192\t00000002\t00080007\t00000001\tsystem\t00000001\tframe");
  ok(
    lines[8]!.startsWith("\twrite fence:test t unsignaled") ||
      lines[8]!.startsWith("\twrite fence:"),
    lines[8],
  );
  ok(text.includes("\tAttached Devices:\n\t0000:01:00.0\nTotal 1 devices attached\n\n"));
  ok(text.endsWith("\nTotal 2 objects, 12288 bytes\n"));
});
