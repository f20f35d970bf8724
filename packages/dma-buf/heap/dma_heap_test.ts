import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { filesOf, isErrno, Kernel, O_CLOEXEC, O_RDWR } from "@dmalab/kernel";
import {
  DMA_HEAP_IOCTL_ALLOC,
  dmaBufGet,
  dmaHeapAdd,
  dmaHeapAllocArg,
  dmaHeapOpen,
  dmaHeapSystemAlloc,
  dmaHeapSystemInit,
  type SystemHeapBuffer,
} from "../mod.ts";

Deno.test("dma-heap core", async (t) => {
  await t.step(
    "DMA_HEAP_IOCTL_ALLOC is 0xC0184800",
    () => strictEqual(DMA_HEAP_IOCTL_ALLOC, 0xc0184800),
  );
  await t.step("dma_heap_add: empty name, missing allocate, duplicate name are -EINVAL", () => {
    const world = new Kernel();
    dmaHeapSystemInit(world);
    const allocate = () => dmaHeapSystemAlloc(world, 4096);
    throws(() => dmaHeapAdd(world, { name: "", ops: { allocate } }), (e) => isErrno(e, "EINVAL"));
    throws(() => dmaHeapAdd(world, { name: "x", ops: null }), (e) => isErrno(e, "EINVAL"));
    throws(
      () => dmaHeapAdd(world, { name: "system", ops: { allocate } }),
      (e) => isErrno(e, "EINVAL"),
    );
    throws(() => dmaHeapOpen(world, "nope", O_RDWR), (e) => isErrno(e, "ENODEV"));
  });
  await t.step(
    "ALLOC: fd field non-zero, length 0, unknown nr are -EINVAL (not -ENOTTY); fd written back",
    async () => {
      const world = new Kernel();
      dmaHeapSystemInit(world);
      const heap = filesOf(world).lookup(dmaHeapOpen(world, "system", O_RDWR));
      await world.runTask("t", async () => {
        const withFd = dmaHeapAllocArg(4096);
        withFd.setUint32(8, 5, true);
        await rejects(
          Promise.resolve().then(() => heap.ioctl(DMA_HEAP_IOCTL_ALLOC, withFd)),
          (e) => isErrno(e, "EINVAL"),
        );
        await rejects(
          Promise.resolve().then(() => heap.ioctl(DMA_HEAP_IOCTL_ALLOC, dmaHeapAllocArg(0))),
          (e) => isErrno(e, "EINVAL"),
        );
        await rejects(
          Promise.resolve().then(() => heap.ioctl(0xc0184801, dmaHeapAllocArg(4096))),
          (e) => isErrno(e, "EINVAL"),
        );
        await rejects(
          Promise.resolve().then(() => heap.ioctl(DMA_HEAP_IOCTL_ALLOC, null)),
          (e) => isErrno(e, "EFAULT"),
        );
        const arg = dmaHeapAllocArg(5000, O_RDWR | O_CLOEXEC);
        strictEqual(await heap.ioctl(DMA_HEAP_IOCTL_ALLOC, arg), 0);
        const fd = arg.getUint32(8, true);
        ok(filesOf(world).isCloexec(fd));
        const buf = dmaBufGet(world, fd);
        strictEqual(buf.size, 8192);
        strictEqual(buf.expName, "system");
        buf.put();
      });
    },
  );
});

Deno.test("system heap", async (t) => {
  await t.step("largest orders first: 1 MiB + 64 KiB + 4 KiB blocks, never going back up", () => {
    const world = new Kernel();
    const buf = dmaHeapSystemAlloc(world, (1 << 20) * 2 + (64 << 10) * 3 + 4096 * 2);
    deepStrictEqual((buf.priv as SystemHeapBuffer).orders, [8, 8, 4, 4, 4, 0, 0]);
    buf.put();
    strictEqual(world.mem.freeRamPages, world.mem.totalRamPages);
  });
  await t.step("out of memory: -ENOMEM and nothing left allocated", () => {
    const world = new Kernel({ memory: { nodes: [64n << 20n] } });
    const before = world.mem.freeRamPages;
    throws(() => dmaHeapSystemAlloc(world, 128 << 20), (e) => isErrno(e, "ENOMEM"));
    strictEqual(world.mem.freeRamPages, before);
  });
  await t.step("a pending fatal signal: -EINTR", async () => {
    const world = new Kernel();
    const task = world.spawn("victim", async () => {
      world.sched.signal(world.sched.current!);
      throws(() => dmaHeapSystemAlloc(world, 1 << 20), (e) => isErrno(e, "EINTR"));
    });
    await world.run();
    strictEqual(task.state, "done");
  });
});
