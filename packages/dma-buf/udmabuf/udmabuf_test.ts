import { ok, rejects, strictEqual, throws } from "node:assert/strict";
import {
  F_SEAL_FUTURE_WRITE,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  filesOf,
  isErrno,
  Kernel,
  MAP_PRIVATE,
  memfdCreate,
  memfdFile,
  MFD_ALLOW_SEALING,
  MmStruct,
  PROT_READ,
} from "@dmalab/kernel";
import {
  dmaBufAttach,
  dmaBufBeginCpuAccess,
  dmaBufEndCpuAccess,
  dmaBufGet,
  dmaBufVmapUnlocked,
  UDMABUF_CREATE,
  UDMABUF_CREATE_LIST,
  udmabufCreate,
  udmabufCreateListArg,
  udmabufOpen,
  udmabufParams,
} from "../mod.ts";
import { dev64 } from "../buf/testdata/exporter.ts";

function sealedMemfd(world: Kernel, pages: number, seals = F_SEAL_SHRINK): number {
  const fd = memfdCreate(world, "m", MFD_ALLOW_SEALING);
  const m = memfdFile(filesOf(world).lookup(fd));
  m.ftruncate(pages * 4096);
  m.addSeals(seals);
  return fd;
}

Deno.test("udmabuf_create errors", async (t) => {
  const world = new Kernel();
  const free0 = world.mem.freeRamPages;
  await t.step("fd not open: -EBADFD; not a memfd: -EBADFD", () => {
    throws(
      () => udmabufCreate(world, 0, [{ memfd: 99, offset: 0, size: 4096 }]),
      (e) => isErrno(e, "EBADFD"),
    );
    throws(
      () => udmabufCreate(world, 0, [{ memfd: 1, offset: 0, size: 4096 }]),
      (e) => isErrno(e, "EBADFD"),
    );
  });
  await t.step("seals: SHRINK required, WRITE refused (-EINVAL)", () => {
    const noShrink = memfdCreate(world, "x", MFD_ALLOW_SEALING);
    memfdFile(filesOf(world).lookup(noShrink)).ftruncate(4096);
    throws(
      () => udmabufCreate(world, 0, [{ memfd: noShrink, offset: 0, size: 4096 }]),
      (e) => isErrno(e, "EINVAL"),
    );
    const sealedWrite = sealedMemfd(world, 1, F_SEAL_SHRINK | F_SEAL_WRITE);
    throws(
      () => udmabufCreate(world, 0, [{ memfd: sealedWrite, offset: 0, size: 4096 }]),
      (e) => isErrno(e, "EINVAL"),
    );
  });
  await t.step("check_memfd_seals: F_SEAL_FUTURE_WRITE is denied too (-EINVAL)", () => {
    const futureWrite = sealedMemfd(world, 1, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE);
    const before = world.mem.freeRamPages;
    throws(
      () => udmabufCreate(world, 0, [{ memfd: futureWrite, offset: 0, size: 4096 }]),
      (e) => isErrno(e, "EINVAL"),
    );
    strictEqual(world.mem.freeRamPages, before); // nothing stays pinned
  });
  await t.step("zero pages, size_limit_mb, list_limit: -EINVAL", () => {
    const fd = sealedMemfd(world, 4);
    throws(
      () => udmabufCreate(world, 0, [{ memfd: fd, offset: 0, size: 0 }]),
      (e) => isErrno(e, "EINVAL"),
    );
    udmabufParams(world).sizeLimitMb = 0;
    throws(
      () => udmabufCreate(world, 0, [{ memfd: fd, offset: 0, size: 4096 }]),
      (e) => isErrno(e, "EINVAL"),
    );
    udmabufParams(world).sizeLimitMb = 64;
    udmabufParams(world).listLimit = 1;
    const dev = filesOf(world).lookup(udmabufOpen(world));
    const two = udmabufCreateListArg(0, [{ memfd: fd, offset: 0, size: 4096 }, {
      memfd: fd,
      offset: 4096,
      size: 4096,
    }]);
    throws(() => dev.ioctl(UDMABUF_CREATE_LIST, two), (e) => isErrno(e, "EINVAL"));
    udmabufParams(world).listLimit = 1024;
    throws(() => dev.ioctl(UDMABUF_CREATE, null), (e) => isErrno(e, "EFAULT"));
    throws(() => dev.ioctl(0x1234, null), (e) => isErrno(e, "ENOTTY"));
  });
  await t.step("a range past EOF fails and unpins what the earlier items pinned", () => {
    const fd = sealedMemfd(world, 2);
    const before = world.mem.freeRamPages;
    throws(
      () =>
        udmabufCreate(world, 0, [{ memfd: fd, offset: 0, size: 4096 }, {
          memfd: fd,
          offset: 4096,
          size: 8192,
        }]),
      (e) => isErrno(e, "EINVAL"),
    );
    const folio = memfdFile(filesOf(world).lookup(fd)).inode.folios.get(0)!;
    ok(!folio.maybeDmaPinned);
    ok(world.mem.freeRamPages <= before);
  });
  await t.step("the buffer holds its pins until release; release gives them back", () => {
    const fd = sealedMemfd(world, 2);
    const ufd = udmabufCreate(world, 0, [{ memfd: fd, offset: 0, size: 8192 }]);
    const folio = memfdFile(filesOf(world).lookup(fd)).inode.folios.get(1)!;
    ok(folio.maybeDmaPinned);
    filesOf(world).close(ufd);
    ok(!folio.maybeDmaPinned);
  });
  void free0;
});

Deno.test("udmabuf dma-buf ops", async (t) => {
  await t.step("map for a device aliases the memfd pages; vmap reads memfd bytes", async () => {
    const world = new Kernel();
    const fd = sealedMemfd(world, 3);
    const m = memfdFile(filesOf(world).lookup(fd));
    m.pwrite(new TextEncoder().encode("hello"), 4096 + 7);
    const buf = dmaBufGet(
      world,
      udmabufCreate(world, 0, [{ memfd: fd, offset: 4096, size: 8192 }]),
    );
    await world.runTask("t", async () => {
      const a = await dmaBufAttach(buf, dev64(world));
      const sgt = await a.mapUnlocked("DMA_TO_DEVICE");
      strictEqual(sgt.nents, 2);
      strictEqual(sgt.sgl[0]!.dmaAddress, world.mem.pageToPhys(m.inode.folios.get(1)!));
      await a.unmapUnlocked(sgt, "DMA_TO_DEVICE");
      await a.detach();
      const map = await dmaBufVmapUnlocked(buf);
      strictEqual(new TextDecoder().decode(map.memcpyFrom(7, 5)), "hello");
    });
  });
  await t.step("end_cpu_access before begin: -EINVAL; after begin: 0", async () => {
    const world = new Kernel();
    const buf = dmaBufGet(
      world,
      udmabufCreate(world, 0, [{ memfd: sealedMemfd(world, 1), offset: 0, size: 4096 }]),
    );
    await world.runTask("t", async () => {
      await rejects(dmaBufEndCpuAccess(buf, "DMA_BIDIRECTIONAL"), (e) => isErrno(e, "EINVAL"));
      await dmaBufBeginCpuAccess(buf, "DMA_BIDIRECTIONAL");
      strictEqual(await dmaBufEndCpuAccess(buf, "DMA_BIDIRECTIONAL"), 0);
    });
  });
  await t.step("mmap needs a shared mapping", async () => {
    const world = new Kernel();
    const mm = new MmStruct(world, "p");
    const ufd = udmabufCreate(world, 0, [{ memfd: sealedMemfd(world, 1), offset: 0, size: 4096 }]);
    await world.runTask("t", async () => {
      await rejects(
        mm.mmap({
          length: 4096,
          prot: PROT_READ,
          flags: MAP_PRIVATE,
          file: filesOf(world).lookup(ufd).asVmFile(),
        }),
        (e) => isErrno(e, "EINVAL"),
      );
    });
  });
});
