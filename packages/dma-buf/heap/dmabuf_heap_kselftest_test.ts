// Port of tools/testing/selftests/dmabuf-heaps/dmabuf-heap.c (kselftest),
// run against every heap under /dev/dma_heap (here: the system heap).
import { ok, strictEqual } from "node:assert/strict";
import {
  Device,
  dmaBitMask,
  filesOf,
  Kernel,
  KernelError,
  MAP_SHARED,
  MmStruct,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
} from "@dmalab/kernel";
import {
  DMA_BUF_IOCTL_SYNC,
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_START,
  DMA_HEAP_IOCTL_ALLOC,
  dmaBufAttach,
  dmaBufGet,
  dmaBufSyncArg,
  dmaHeapAllocArg,
  dmaHeapOpen,
  dmaHeaps,
  dmaHeapSystemInit,
} from "../mod.ts";

const ONE_MEG = 1024 * 1024;
const NUM_BUFFERS = 32;

class HeapTest {
  readonly world = new Kernel();
  readonly files = filesOf(this.world, null);
  readonly mm = new MmStruct(this.world, "dmabuf-heap");

  constructor() {
    dmaHeapSystemInit(this.world);
  }

  async ioctl(fd: number, cmd: number, arg: DataView | null): Promise<number> {
    try {
      return await this.files.lookup(fd).ioctl(cmd, arg);
    } catch (e) {
      if (e instanceof KernelError) return -e.errno;
      throw e;
    }
  }

  /** dmabuf_heap_alloc_fdflags: returns the dma-buf fd or -errno. */
  async alloc(heapFd: number, len: number, fdFlags: number, heapFlags: bigint): Promise<number> {
    const arg = dmaHeapAllocArg(len, fdFlags, heapFlags);
    const ret = await this.ioctl(heapFd, DMA_HEAP_IOCTL_ALLOC, arg);
    return ret < 0 ? ret : arg.getUint32(8, true);
  }

  sync(fd: number, start: boolean): Promise<number> {
    const flags = (start ? DMA_BUF_SYNC_START : DMA_BUF_SYNC_END) | DMA_BUF_SYNC_RW;
    return this.ioctl(fd, DMA_BUF_IOCTL_SYNC, dmaBufSyncArg(flags));
  }

  mmap(fd: number, size: number): Promise<number> {
    return this.mm.mmap({
      length: size,
      prot: PROT_READ | PROT_WRITE,
      flags: MAP_SHARED,
      file: this.files.lookup(fd).asVmFile(),
    });
  }
}

Deno.test("dmabuf-heaps kselftest", async (t) => {
  const ht = new HeapTest();
  const { world } = ht;
  for (const heap of dmaHeaps(world)) {
    await t.step(`${heap.name}: test_alloc_and_import`, async () => {
      await world.runTask("test", async () => {
        const heapFd = dmaHeapOpen(world, heap.name, O_RDONLY | O_CLOEXEC);
        const dmabufFd = await ht.alloc(heapFd, ONE_MEG, O_RDWR | O_CLOEXEC, 0n);
        ok(dmabufFd >= 0, "Allocation Failed");
        const p = await ht.mmap(dmabufFd, ONE_MEG);
        strictEqual(await ht.sync(dmabufFd, true), 0);
        await ht.mm.write(p, new Uint8Array(ONE_MEG / 2).fill(1));
        await ht.mm.write(p + ONE_MEG / 2, new Uint8Array(ONE_MEG / 2));
        strictEqual(await ht.sync(dmabufFd, false), 0);
        // import into "vgem": DRM_IOCTL_PRIME_FD_TO_HANDLE attaches and maps the buffer
        const vgem = new Device(world, "vgem", {
          dmaMask: dmaBitMask(64),
          coherentDmaMask: dmaBitMask(64),
        });
        const buf = dmaBufGet(world, dmabufFd);
        const attach = await dmaBufAttach(buf, vgem);
        const sgt = await attach.mapUnlocked("DMA_BIDIRECTIONAL");
        strictEqual(sgt.dmaSize(), ONE_MEG);
        strictEqual(await ht.sync(dmabufFd, true), 0);
        await ht.mm.write(p, new Uint8Array(ONE_MEG).fill(0xff));
        strictEqual(await ht.sync(dmabufFd, false), 0);
        await attach.unmapUnlocked(sgt, "DMA_BIDIRECTIONAL");
        await attach.detach();
        buf.put();
        await ht.mm.munmap(p, ONE_MEG);
        ht.files.close(dmabufFd);
        ht.files.close(heapFd);
      });
    });
    for (const size of [4096, ONE_MEG]) {
      await t.step(`${heap.name}: test_alloc_zeroed(${size})`, async () => {
        await world.runTask("test", async () => {
          const heapFd = dmaHeapOpen(world, heap.name, O_RDONLY | O_CLOEXEC);
          const fds: number[] = [];
          for (let i = 0; i < NUM_BUFFERS; i++) {
            const fd = await ht.alloc(heapFd, size, O_RDWR | O_CLOEXEC, 0n);
            ok(fd >= 0);
            const p = await ht.mmap(fd, size);
            await ht.sync(fd, true);
            await ht.mm.write(p, new Uint8Array(size).fill(0xff));
            await ht.sync(fd, false);
            await ht.mm.munmap(p, size);
            fds.push(fd);
          }
          for (const fd of fds) ht.files.close(fd);
          fds.length = 0;
          for (let i = 0; i < NUM_BUFFERS; i++) {
            const fd = await ht.alloc(heapFd, size, O_RDWR | O_CLOEXEC, 0n);
            ok(fd >= 0);
            fds.push(fd);
          }
          for (const fd of fds) {
            const p = await ht.mmap(fd, size);
            await ht.sync(fd, true);
            const bytes = await ht.mm.read(p, size);
            ok(bytes.every((b) => b === 0), "Buffer not zeroed");
            await ht.sync(fd, false);
            await ht.mm.munmap(p, size);
            ht.files.close(fd);
          }
          ht.files.close(heapFd);
        });
      });
    }
    await t.step(`${heap.name}: test_alloc_compat`, async () => {
      await world.runTask("test", async () => {
        const heapFd = dmaHeapOpen(world, heap.name, O_RDONLY | O_CLOEXEC);
        // older layout: {len, fd, fd_flags}, 16 bytes, _IOWR('H', 0, 16)
        const older = dmaHeapAllocArg(ONE_MEG, O_RDWR | O_CLOEXEC, 0n, 16);
        strictEqual(await ht.ioctl(heapFd, 0xc0104800, older), 0);
        ht.files.close(older.getUint32(8, true));
        // newer layout: heap_flags plus three garbage u64s, 48 bytes
        const newer = dmaHeapAllocArg(ONE_MEG, O_RDWR | O_CLOEXEC, 0n, 48);
        newer.setBigUint64(24, 0xffffffffn, true);
        newer.setBigUint64(32, 0x88888888n, true);
        newer.setBigUint64(40, 0x11111111n, true);
        strictEqual(await ht.ioctl(heapFd, 0xc0304800, newer), 0);
        ht.files.close(newer.getUint32(8, true));
        ht.files.close(heapFd);
      });
    });
    await t.step(`${heap.name}: test_alloc_errors`, async () => {
      await world.runTask("test", async () => {
        const heapFd = dmaHeapOpen(world, heap.name, O_RDONLY | O_CLOEXEC);
        ok(
          (await ht.alloc(0, 4096, O_RDWR | O_CLOEXEC, 0x111111n)) < 0,
          "Did not see expected error (invalid fd)!",
        );
        strictEqual(await ht.alloc(heapFd, 4096, O_RDWR | O_CLOEXEC, 0x111111n), -22);
        strictEqual(await ht.alloc(heapFd, 4096, ~(O_RDWR | O_CLOEXEC) >>> 0, 0n), -22);
        ht.files.close(heapFd);
      });
    });
  }
  await t.step("nothing leaked: every heap page went back", () => {
    strictEqual(world.mem.freeRamPages, world.mem.totalRamPages);
  });
});
