// Port of tools/testing/selftests/drivers/dma-buf/udmabuf.c (7 results),
// case by case, against the modelled /dev/udmabuf, memfd and mmap.
import { ok } from "node:assert/strict";
import {
  F_SEAL_SHRINK,
  filesOf,
  Kernel,
  KernelError,
  MAP_SHARED,
  memfdCreate,
  memfdFile,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  MmStruct,
  PROT_READ,
  PROT_WRITE,
} from "@dmalab/kernel";
import {
  UDMABUF_CREATE,
  UDMABUF_CREATE_LIST,
  UDMABUF_FLAGS_CLOEXEC,
  udmabufCreateArg,
  udmabufCreateListArg,
  udmabufOpen,
} from "../mod.ts";

const NUM_PAGES = 4;
const NUM_ENTRIES = 4;
const MEMFD_SIZE = 1024; // in pages
const getpagesize = () => 4096;

/** The selftest's process: fd table, address space, helpers mirroring its C functions. */
class Selftest {
  readonly world = new Kernel({ memory: { nodes: [8n << 30n] } });
  readonly mm = new MmStruct(this.world, "udmabuf-test");
  readonly files = filesOf(this.world, null);
  pageSize = getpagesize();

  ioctl(fd: number, cmd: number, arg: DataView): number {
    try {
      return this.files.lookup(fd).ioctl(cmd, arg) as number;
    } catch (e) {
      if (e instanceof KernelError) return -e.errno;
      throw e;
    }
  }

  createMemfdWithSeals(size: number, hpage: boolean): number {
    const memfd = memfdCreate(
      this.world,
      "udmabuf-test",
      MFD_ALLOW_SEALING | (hpage ? MFD_HUGETLB : 0),
    );
    const m = memfdFile(this.files.lookup(memfd));
    m.addSeals(F_SEAL_SHRINK);
    m.ftruncate(size);
    return memfd;
  }

  createUdmabufList(devfd: number, memfd: number, memfdSize: number): number {
    const items = [];
    for (let i = 0; i < NUM_ENTRIES; i++) {
      items.push({ memfd, offset: i * (memfdSize / NUM_ENTRIES), size: this.pageSize * NUM_PAGES });
    }
    const fd = this.ioctl(
      devfd,
      UDMABUF_CREATE_LIST,
      udmabufCreateListArg(UDMABUF_FLAGS_CLOEXEC, items),
    );
    if (fd < 0) throw new Error("[FAIL, udmabuf-create]");
    return fd;
  }

  async writeToMemfd(addr: number, size: number, chr: string): Promise<void> {
    const b = new Uint8Array([chr.charCodeAt(0)]);
    for (let i = 0; i < size / this.pageSize; i++) await this.mm.write(addr + i * this.pageSize, b);
  }

  mmapFd(fd: number, size: number): Promise<number> {
    return this.mm.mmap({
      length: size,
      prot: PROT_READ | PROT_WRITE,
      flags: MAP_SHARED,
      file: this.files.lookup(fd).asVmFile(),
    });
  }

  async compareChunks(addr1: number, addr2: number, memfdSize: number): Promise<number> {
    let ret = 0;
    let k = 0;
    outer: for (let i = 0; i < NUM_ENTRIES; i++) {
      const off = i * (memfdSize / NUM_ENTRIES);
      for (let j = 0; j < NUM_PAGES; j++, k++) {
        const c1 = (await this.mm.read(addr1 + off + j * this.pageSize, 1))[0];
        const c2 = (await this.mm.read(addr2 + k * this.pageSize, 1))[0];
        if (c1 !== c2) {
          ret = -1;
          break outer;
        }
      }
    }
    await this.mm.munmap(addr1, memfdSize);
    await this.mm.munmap(addr2, NUM_ENTRIES * NUM_PAGES * this.pageSize);
    return ret;
  }
}

Deno.test("drivers/dma-buf/udmabuf (kselftest)", async (t) => {
  const st = new Selftest();
  const { world, files } = st;
  const results: Record<string, boolean> = {};
  await world.runTask("udmabuf-test", async () => {
    const devfd = udmabufOpen(world);
    let memfd = memfdCreate(world, "udmabuf-test", MFD_ALLOW_SEALING);
    memfdFile(files.lookup(memfd)).addSeals(F_SEAL_SHRINK);
    let size = getpagesize() * NUM_PAGES;
    memfdFile(files.lookup(memfd)).ftruncate(size);

    // should fail (offset not page aligned)
    let buf = st.ioctl(
      devfd,
      UDMABUF_CREATE,
      udmabufCreateArg(memfd, 0, getpagesize() / 2, getpagesize()),
    );
    results["test-1"] = buf < 0 && buf === -22;
    // should fail (size not multiple of page)
    buf = st.ioctl(devfd, UDMABUF_CREATE, udmabufCreateArg(memfd, 0, 0, getpagesize() / 2));
    results["test-2"] = buf < 0 && buf === -22;
    // should fail (not memfd): stdin
    buf = st.ioctl(devfd, UDMABUF_CREATE, udmabufCreateArg(0, 0, 0, size));
    results["test-3"] = buf < 0 && buf === -77;
    // should work
    st.pageSize = getpagesize();
    let addr1 = await st.mmapFd(memfd, size);
    await st.writeToMemfd(addr1, size, "a");
    buf = st.ioctl(devfd, UDMABUF_CREATE, udmabufCreateArg(memfd, 0, 0, size));
    results["test-4"] = buf >= 0;
    await st.mm.munmap(addr1, size);
    files.close(buf);
    files.close(memfd);

    // should work (migration of 4k size pages)
    size = MEMFD_SIZE * st.pageSize;
    memfd = st.createMemfdWithSeals(size, false);
    addr1 = await st.mmapFd(memfd, size);
    await st.writeToMemfd(addr1, size, "a");
    buf = st.createUdmabufList(devfd, memfd, size);
    let addr2 = await st.mmapFd(buf, NUM_PAGES * NUM_ENTRIES * getpagesize());
    await st.writeToMemfd(addr1, size, "b");
    results["test-5"] = (await st.compareChunks(addr1, addr2, size)) === 0;
    files.close(buf);
    files.close(memfd);

    // should work (migration of 2MB size huge pages)
    st.pageSize = getpagesize() * 512;
    size = MEMFD_SIZE * st.pageSize;
    memfd = st.createMemfdWithSeals(size, true);
    addr1 = await st.mmapFd(memfd, size);
    await st.writeToMemfd(addr1, size, "a");
    buf = st.createUdmabufList(devfd, memfd, size);
    addr2 = await st.mmapFd(buf, NUM_PAGES * NUM_ENTRIES * st.pageSize);
    await st.writeToMemfd(addr1, size, "b");
    results["test-6"] = (await st.compareChunks(addr1, addr2, size)) === 0;
    files.close(buf);
    files.close(memfd);

    // same test as above but we pin first before writing to memfd
    memfd = st.createMemfdWithSeals(size, true);
    buf = st.createUdmabufList(devfd, memfd, size);
    addr2 = await st.mmapFd(buf, NUM_PAGES * NUM_ENTRIES * st.pageSize);
    addr1 = await st.mmapFd(memfd, size);
    await st.writeToMemfd(addr1, size, "a");
    await st.writeToMemfd(addr1, size, "b");
    results["test-7"] = (await st.compareChunks(addr1, addr2, size)) === 0;
    files.close(buf);
    files.close(memfd);
    files.close(devfd);
  });
  for (const name of ["test-1", "test-2", "test-3", "test-4", "test-5", "test-6", "test-7"]) {
    await t.step(name, () => ok(results[name], `[FAIL,${name}]`));
  }
  await t.step("every pin was dropped: all memfd folios went back to the allocator", () => {
    ok(
      world.mem.freeRamPages === world.mem.totalRamPages,
      `${world.mem.totalRamPages - world.mem.freeRamPages} pages still allocated`,
    );
  });
});
