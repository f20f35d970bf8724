import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { filesOf, isErrno, Kernel, O_CLOEXEC, O_RDWR } from "@dmalab/kernel";
import {
  DMA_HEAP_ALLOCATION_DATA_SIZE,
  DMA_HEAP_IOC_MAGIC,
  DMA_HEAP_IOCTL_ALLOC,
  dmaBufGet,
  dmaHeapAdd,
  dmaHeapAllocArg,
  dmaHeapOpen,
  dmaHeaps,
  dmaHeapSystemAlloc,
  dmaHeapSystemInit,
  ioc,
  NUM_HEAP_MINORS,
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
  await t.step("dma_heap_add: minors used up is -EBUSY (xa_alloc), checked before the name", () => {
    const world = new Kernel();
    dmaHeapSystemInit(world);
    const allocate = () => dmaHeapSystemAlloc(world, 4096);
    for (let i = 1; i < NUM_HEAP_MINORS; i++) {
      dmaHeapAdd(world, { name: `h${i}`, ops: { allocate } });
    }
    strictEqual(dmaHeaps(world).length, NUM_HEAP_MINORS);
    throws(
      () => dmaHeapAdd(world, { name: "more", ops: { allocate } }),
      (e) => isErrno(e, "EBUSY"),
    );
    throws(
      () => dmaHeapAdd(world, { name: "system", ops: { allocate } }),
      (e) => isErrno(e, "EBUSY"),
    );
    strictEqual(dmaHeaps(world).length, NUM_HEAP_MINORS);
  });
  await t.step(
    "dma_heap_buffer_alloc: PAGE_ALIGN of a length in the last page wraps to 0: -EINVAL",
    async () => {
      const world = new Kernel();
      dmaHeapSystemInit(world);
      const heap = filesOf(world).lookup(dmaHeapOpen(world, "system", O_RDWR));
      await world.runTask("t", async () => {
        for (const len of [0xffff_ffff_ffff_ffffn, 0xffff_ffff_ffff_f001n]) {
          const arg = dmaHeapAllocArg(0);
          arg.setBigUint64(0, len, true);
          await rejects(
            Promise.resolve().then(() => heap.ioctl(DMA_HEAP_IOCTL_ALLOC, arg)),
            (e) => isErrno(e, "EINVAL"),
          );
        }
      });
    },
  );
  await t.step("dma_heap_ioctl copies the struct back even when ALLOC fails", async () => {
    const world = new Kernel();
    dmaHeapSystemInit(world);
    const heap = filesOf(world).lookup(dmaHeapOpen(world, "system", O_RDWR));
    // _IOR only: nothing is copied in, the zeroed struct (len 0: -EINVAL) is copied out
    const iorAlloc = ioc(2, DMA_HEAP_IOC_MAGIC, 0, DMA_HEAP_ALLOCATION_DATA_SIZE);
    await world.runTask("t", async () => {
      const arg = dmaHeapAllocArg(1 << 20, O_RDWR);
      await rejects(
        Promise.resolve().then(() => heap.ioctl(iorAlloc, arg)),
        (e) => isErrno(e, "EINVAL"),
      );
      deepStrictEqual([...new Uint8Array(arg.buffer)], new Array(24).fill(0));
      // and when that copy-back faults, the result is -EFAULT instead
      await rejects(
        Promise.resolve().then(() => heap.ioctl(iorAlloc, null)),
        (e) => isErrno(e, "EFAULT"),
      );
    });
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
