/**
 * Ports of tools/testing/selftests/iommu/iommufd.c cases that apply to the
 * model, under their names. The selftest's mock domain is replaced by a
 * real device (an mlx5-like NIC) bound and attached through the model's
 * IOMMU; `IOMMU_TEST_OP_ADD_RESERVED` is `iopt.reserveIova`.
 */
import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import {
  anonInodeGetfile,
  filesOf,
  Kernel,
  KernelBug,
  KernelError,
  memfdCreate,
  memfdFile,
  MFD_HUGETLB,
  MmStruct,
  O_RDWR,
} from "@dmalab/kernel";
import { defaultMachine } from "@dmalab/pci-p2p";
import { IommuFaultError, iommuSetup } from "@dmalab/iommu";
import { dmaBufExport, SgTable } from "@dmalab/dma-buf";
import {
  PCI_COMMAND,
  PCI_COMMAND_MEMORY,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VfioPciCoreDevice,
  vfioPciCoreFeatureDmaBuf,
} from "@dmalab/vfio";
import {
  deviceDmaRead,
  deviceDmaWrite,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IommufdCtx,
  iommufdIoasMapDmabuf,
  IommufdUser,
  memfdSource,
  U64_MAX,
} from "./mod.ts";

const PAGE = 4096;
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
const errno = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

interface Fixture {
  world: Kernel;
  mm: MmStruct;
  ictx: IommufdCtx;
  ioas: number;
  buffer: number;
  base: number;
  nic: ReturnType<typeof defaultMachine>["nic"];
  gpu: ReturnType<typeof defaultMachine>["gpu"];
}

/** FIXTURE(iommufd_ioas) with a domain attached (the "mock_domain" variant). */
async function fixture(
  t: Deno.TestContext,
  name: string,
  body: (f: Fixture) => Promise<void>,
  opts: { domain?: boolean; user?: IommufdUser } = {},
): Promise<void> {
  await t.step(name, async () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    iommuSetup(world);
    const mm = new MmStruct(world, "selftest");
    const ictx = new IommufdCtx(world, opts.user ? { user: opts.user } : {});
    await world.runTask("selftest", async () => {
      const ioas = ictx.ioasAlloc();
      if (opts.domain ?? true) await ictx.attach(ictx.bindDevice(m.nic), ioas);
      const buffer = await mm.mmap({ length: 64 * PAGE });
      await body({ world, mm, ictx, ioas, buffer, base: 1 << 20, nic: m.nic, gpu: m.gpu });
    });
  });
}

Deno.test("iommufd_ioas", async (t) => {
  const map = (f: Fixture, length: number, iova: number) =>
    f.ictx.ioasMap({
      ioasId: f.ioas,
      flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
      mm: f.mm,
      userVa: f.buffer,
      length,
      iova,
    });

  for (const domain of [false, true]) {
    const v = domain ? "mock_domain" : "no_domain";
    await fixture(t, `area (${v})`, async (f) => {
      for (let i = 0; i < 16; i++) await map(f, PAGE, f.base + i * PAGE);
      // Unmap parts of the areas
      for (let i = 0; i < 16; i++) {
        strictEqual(await f.ictx.ioasUnmap(f.ioas, f.base + i * PAGE, PAGE), PAGE);
      }
      // Split fails
      await map(f, 2 * PAGE, f.base + 16 * PAGE);
      await rejects(f.ictx.ioasUnmap(f.ioas, f.base + 16 * PAGE, PAGE), errno("ENOENT"));
      await rejects(f.ictx.ioasUnmap(f.ioas, f.base + 17 * PAGE, PAGE), errno("ENOENT"));
      // Over map fails
      await rejects(map(f, 2 * PAGE, f.base + 16 * PAGE), errno("EEXIST"));
      await rejects(map(f, PAGE, f.base + 16 * PAGE), errno("EEXIST"));
      await rejects(map(f, PAGE, f.base + 17 * PAGE), errno("EEXIST"));
      await rejects(map(f, 2 * PAGE, f.base + 15 * PAGE), errno("EEXIST"));
      await rejects(map(f, 3 * PAGE, f.base + 15 * PAGE), errno("EEXIST"));
      // unmap all works, also on an empty IOAS
      await f.ictx.ioasUnmap(f.ioas, 0, U64_MAX);
      strictEqual(await f.ictx.ioasUnmap(f.ioas, 0, U64_MAX), 0);
    }, { domain });

    await fixture(t, `unmap_fully_contained_areas (${v})`, async (f) => {
      const base = f.base + 4 * PAGE;
      for (let i = 0; i < 4; i++) await map(f, 8 * PAGE, base + i * 16 * PAGE);
      await rejects(f.ictx.ioasUnmap(f.ioas, base - 4 * PAGE, 8 * PAGE), errno("ENOENT"));
      await rejects(
        f.ictx.ioasUnmap(f.ioas, base + 3 * 16 * PAGE + 8 * PAGE - 4 * PAGE, 8 * PAGE),
        errno("ENOENT"),
      );
      strictEqual(
        await f.ictx.ioasUnmap(f.ioas, base - 4 * PAGE, 3 * 16 * PAGE + 8 * PAGE + 4 * PAGE),
        32 * PAGE,
      );
    }, { domain });
  }

  await fixture(t, "area_auto_iova", async (f) => {
    f.ictx.ioas(f.ioas).iopt.reserveIova(PAGE, PAGE * 4 - 1, "test");
    const iovas: number[] = [];
    for (let i = 0; i < 10; i++) {
      const len = PAGE * (i + 1);
      const iova = await f.ictx.ioasMap({
        ioasId: f.ioas,
        flags: RW,
        mm: f.mm,
        userVa: f.buffer,
        length: len,
      });
      iovas.push(iova);
      // Allocated IOVAs are aligned to the largest power of two up to the length.
      let align = PAGE;
      while (align * 2 <= len) align *= 2;
      strictEqual(iova % align, 0);
      ok(iova + len <= PAGE || iova >= 4 * PAGE, "never in the reserved range");
    }
    for (let i = 0; i < 10; i++) {
      strictEqual(await f.ictx.ioasUnmap(f.ioas, iovas[i]!, PAGE * (i + 1)), PAGE * (i + 1));
    }
  });

  await fixture(t, "area_allowed", async (f) => {
    // An allowed range overlapping a reserved one is -EADDRINUSE.
    f.ictx.ioas(f.ioas).iopt.reserveIova(16 * PAGE, 17 * PAGE - 1, "test");
    throws(
      () => f.ictx.ioasAllowIovas(f.ioas, [{ start: 15 * PAGE, last: 20 * PAGE }]),
      errno("EADDRINUSE"),
    );
    f.ictx.ioasAllowIovas(f.ioas, [{ start: 64 * PAGE, last: 128 * PAGE - 1 }]);
    const iova = await f.ictx.ioasMap({
      ioasId: f.ioas,
      flags: RW,
      mm: f.mm,
      userVa: f.buffer,
      length: 8 * PAGE,
    });
    ok(iova >= 64 * PAGE && iova + 8 * PAGE <= 128 * PAGE);
    // A reserved range overlapping an allowed one is -EADDRINUSE too.
    throws(
      () => f.ictx.ioas(f.ioas).iopt.reserveIova(100 * PAGE, 101 * PAGE, "t"),
      errno("EADDRINUSE"),
    );
    // Allowed ranges only steer allocation: a fixed IOVA outside still maps.
    await map(f, PAGE, 4 * PAGE);
    throws(
      () => f.ictx.ioasAllowIovas(f.ioas, [{ start: 8 * PAGE, last: 4 * PAGE }]),
      errno("EINVAL"),
    );
  });

  await fixture(t, "iova_ranges", async (f) => {
    f.ictx.ioas(f.ioas).iopt.reserveIova(16 * PAGE, 32 * PAGE - 1, "test");
    const r = f.ictx.ioasIovaRanges(f.ioas);
    strictEqual(r.ranges[0]!.start, 0);
    strictEqual(r.ranges[0]!.last, 16 * PAGE - 1);
    strictEqual(r.ranges[1]!.start, 32 * PAGE);
    strictEqual(r.alignment, PAGE);
  });

  await fixture(t, "ioas_destroy", async (f) => {
    // The IOAS has a domain (an auto HWPT) attached: it is busy.
    await rejects(f.ictx.destroy(f.ioas), errno("EBUSY"));
    await rejects(f.ictx.destroy(9999), errno("ENOENT"));
  });

  await fixture(t, "ioas_area_auto_destroy", async (f) => {
    // Areas go with the IOAS.
    const ioas2 = f.ictx.ioasAlloc();
    await f.ictx.ioasMap({
      ioasId: ioas2,
      flags: RW,
      mm: f.mm,
      userVa: f.buffer,
      length: 8 * PAGE,
    });
    await f.ictx.destroy(ioas2);
    await rejects(f.ictx.ioasUnmap(ioas2, 0, U64_MAX), errno("ENOENT"));
  }, { domain: false });
});

Deno.test("IOMMU_IOAS_MAP argument checks (iommufd_ioas_map)", async (t) => {
  await fixture(t, "flags, overflow, prot", async (f) => {
    await rejects(
      f.ictx.ioasMap({
        ioasId: f.ioas,
        flags: 1 << 5 | RW,
        mm: f.mm,
        userVa: f.buffer,
        length: PAGE,
      }),
      errno("EOPNOTSUPP"),
    );
    await rejects(
      f.ictx.ioasMap({ ioasId: f.ioas, flags: 0, mm: f.mm, userVa: f.buffer, length: PAGE }),
      errno("EINVAL"),
    );
    await rejects(
      f.ictx.ioasMap({ ioasId: f.ioas, flags: RW, mm: f.mm, userVa: f.buffer, length: 2 ** 60 }),
      errno("EOVERFLOW"),
    );
    await rejects(
      f.ictx.ioasMap({
        ioasId: f.ioas,
        flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
        mm: f.mm,
        userVa: f.buffer,
        length: PAGE,
        iova: 123,
      }),
      errno("EINVAL"),
    );
  });
});

Deno.test("mock_domain basic: pinned pages, accounting, device DMA", async (t) => {
  await fixture(t, "pins while a domain maps, charged to RLIMIT_MEMLOCK", async (f) => {
    const user = f.ictx.user;
    const iova = await f.ictx.ioasMap({
      ioasId: f.ioas,
      flags: RW,
      mm: f.mm,
      userVa: f.buffer,
      length: 8 * PAGE,
    });
    strictEqual(user.lockedVm, 8);
    await f.mm.write(f.buffer + 10, new Uint8Array([1, 2, 3]));
    deepStrictEqual([...deviceDmaRead(f.nic, iova + 10, 3)], [1, 2, 3]);
    deviceDmaWrite(f.nic, iova + 100, new Uint8Array([9]));
    strictEqual((await f.mm.read(f.buffer + 100, 1))[0], 9);
    deepStrictEqual(f.world.check(), []);
    user.lockedVm += 1; // a corrupted charge is what the ctx checker reports
    ok(f.world.check().some((v) => v.includes("locked_vm 9 != pinned pages 8")));
    user.lockedVm -= 1;
    await f.ictx.ioasUnmap(f.ioas, iova, 8 * PAGE);
    strictEqual(user.lockedVm, 0);
    throws(() => deviceDmaRead(f.nic, iova, 1), (e) => e instanceof IommuFaultError);
  });
  await fixture(t, "over RLIMIT_MEMLOCK is -ENOMEM and leaves nothing mapped", async (f) => {
    await rejects(
      f.ictx.ioasMap({ ioasId: f.ioas, flags: RW, mm: f.mm, userVa: f.buffer, length: 8 * PAGE }),
      errno("ENOMEM"),
    );
    strictEqual(f.ictx.ioas(f.ioas).iopt.areas.length, 0);
    strictEqual(f.ictx.user.lockedVm, 0);
  }, { user: new IommufdUser(4 * PAGE) });
  await fixture(t, "no domain: no pins until a device attaches", async (f) => {
    await f.ictx.ioasMap({
      ioasId: f.ioas,
      flags: RW,
      mm: f.mm,
      userVa: f.buffer,
      length: 8 * PAGE,
    });
    strictEqual(f.ictx.user.lockedVm, 0);
    await f.ictx.attach(f.ictx.bindDevice(f.nic), f.ioas);
    strictEqual(f.ictx.user.lockedVm, 8);
  }, { domain: false });
});

Deno.test("IOMMU_IOAS_MAP_FILE with a hugetlb memfd uses 2 MiB IOPTEs", async (t) => {
  await fixture(t, "memfd", async (f) => {
    const fd = memfdCreate(f.world, "guest-ram", MFD_HUGETLB);
    const file = filesOf(f.world).fget(fd);
    memfdFile(file).ftruncate(4 << 20);
    const iova = await f.ictx.ioasMapSource(f.ioas, RW, memfdSource(file, true), 0, 4 << 20);
    strictEqual(iova % (2 << 20), 0);
    const hwpt = f.ictx.ioas(f.ioas).hwpts[0]!;
    strictEqual(hwpt.domain.stats.mappedBytes, 4 << 20);
    memfdFile(file).pwrite(new Uint8Array([0x5a]), (2 << 20) + 7);
    strictEqual(deviceDmaRead(f.nic, iova + (2 << 20) + 7, 1)[0], 0x5a);
    strictEqual(f.ictx.user.lockedVm, 1024);
    // A file that is neither a memfd nor a dma-buf is -EINVAL.
    throws(
      () => memfdSource(anonInodeGetfile(f.world, "other", {}, null, O_RDWR), true),
      errno("EINVAL"),
    );
  });
});

/**
 * `dmabuf_simple` / `dmabuf_revoke`: the selftest's mock exporter
 * (IOMMU_TEST_OP_DMABUF_GET / _REVOKE) is replaced by the real one: a vfio
 * GPU BAR exported with VFIO_DEVICE_FEATURE_DMA_BUF, revoked by clearing
 * PCI_COMMAND_MEMORY.
 */
Deno.test("iommufd_ioas dma-buf", async (t) => {
  const bufSize = PAGE * 4;
  async function withDmabuf(
    f: Fixture,
    body: (fd: number, vdev: VfioPciCoreDevice) => Promise<void>,
  ) {
    const vdev = new VfioPciCoreDevice(f.world, f.gpu);
    await vdev.open();
    const e =
      (await vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, {
        regionIndex: 1,
        openFlags: 2,
        flags: 0,
        dmaRanges: [{ offset: 0, length: bufSize }],
      }))!;
    await body(e.fd, vdev);
  }
  const mapFile = (f: Fixture, fd: number, start: number, length: number) =>
    iommufdIoasMapDmabuf(f.ictx, f.ioas, RW, fd, start, length);

  for (const domain of [false, true]) {
    await fixture(t, `dmabuf_simple (${domain ? "mock_domain" : "no_domain"})`, async (f) => {
      await withDmabuf(f, async (fd) => {
        await rejects(mapFile(f, fd, 0, 0), errno("EINVAL"));
        await rejects(mapFile(f, fd, bufSize, bufSize), errno("EINVAL"));
        await rejects(mapFile(f, fd, 0, bufSize + 1), errno("EINVAL"));
        const iova = await mapFile(f, fd, 0, bufSize);
        strictEqual(iova % PAGE, 0);
        strictEqual(f.ictx.user.lockedVm, 0, "dma-buf memory is not charged");
        if (domain) strictEqual(f.ictx.ioas(f.ioas).hwpts[0]!.domain.stats.mappedBytes, bufSize);
      });
    }, { domain });
  }

  for (const domain of [false, true]) {
    await fixture(t, `dmabuf_revoke (${domain ? "mock_domain" : "no_domain"})`, async (f) => {
      await withDmabuf(f, async (fd, vdev) => {
        const iova = await mapFile(f, fd, 0, bufSize);
        if (domain) deviceDmaRead(f.nic, iova, 4);
        await vdev.configWrite(PCI_COMMAND, 2, 0); // revoke
        if (domain) {
          throws(() => deviceDmaRead(f.nic, iova, 4), (e) => e instanceof IommuFaultError);
          // A new domain skips the revoked area.
          const devId = f.ictx.objectIds().find((id) =>
            f.ictx.ioas(f.ioas).hwpts[0]!.id !== id && id !== f.ioas
          )!;
          await f.ictx.hwptAlloc(devId, f.ioas);
          const hwpts = f.ictx.ioas(f.ioas).hwpts;
          strictEqual(hwpts.length, 2);
          strictEqual(hwpts[1]!.domain.stats.mappedBytes, 0);
        }
        await rejects(mapFile(f, fd, 0, bufSize), errno("ENODEV"));
        await vdev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY); // unrevoke
        // The old area stays revoked; a new map works.
        const iova2 = await mapFile(f, fd, 0, bufSize);
        ok(iova2 !== iova);
        if (domain) {
          throws(() => deviceDmaRead(f.nic, iova, 4), (e) => e instanceof IommuFaultError);
          deviceDmaRead(f.nic, iova2, 4);
        }
      });
    }, { domain });
  }
});

Deno.test("a 1 GiB-aligned dma-buf range is mapped with 1 GiB IOPTEs", async (t) => {
  await fixture(t, "largest page sizes", async (f) => {
    const vdev = new VfioPciCoreDevice(f.world, f.gpu);
    await vdev.open();
    const size = 4 * 2 ** 30;
    const e =
      (await vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, {
        regionIndex: 1,
        openFlags: 2,
        flags: 0,
        dmaRanges: [{ offset: 0, length: size }],
      }))!;
    const iova = await iommufdIoasMapDmabuf(f.ictx, f.ioas, RW, e.fd, 0, size);
    strictEqual(iova % 2 ** 30, 0);
    const valids = f.ictx.ioas(f.ioas).hwpts[0]!.domain.pgtable!.countValids();
    deepStrictEqual(valids, { [2 ** 30]: 4 });
  });
});

Deno.test("mapping-types RFC (dma-buf.pfn=pal): multi-range VFIO dma-buf through PAL, revoked like the private path", async () => {
  for (const variant of ["none", "pal"]) {
    const world = new Kernel({ variants: { "dma-buf.pfn": variant } });
    const m = defaultMachine(world);
    iommuSetup(world);
    const ictx = new IommufdCtx(world);
    await world.runTask("qemu", async () => {
      const ioas = ictx.ioasAlloc();
      await ictx.attach(ictx.bindDevice(m.nic), ioas);
      const vdev = new VfioPciCoreDevice(world, m.gpu);
      await vdev.open();
      const e = (await vfioPciCoreFeatureDmaBuf(
        vdev,
        VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
        {
          regionIndex: 1,
          openFlags: 2,
          flags: 0,
          dmaRanges: [{ offset: 0, length: 2 * PAGE }, { offset: 16 * PAGE, length: 2 * PAGE }],
        },
      ))!;
      if (variant === "none") {
        // The v6.19 private interconnect takes exactly one range.
        await rejects(iommufdIoasMapDmabuf(ictx, ioas, RW, e.fd, 0, 4 * PAGE), errno("EOPNOTSUPP"));
        return;
      }
      const iova = await iommufdIoasMapDmabuf(ictx, ioas, RW, e.fd, 0, 4 * PAGE);
      const bar = Number(m.gpu.bars[1]!.start!);
      world.mem.write(bar + 16 * PAGE + 5, new Uint8Array([0x77]));
      strictEqual(deviceDmaRead(m.nic, iova + 2 * PAGE + 5, 1)[0], 0x77);
      strictEqual(e.dmabuf.outstandingMappings, 1);
      await vdev.configWrite(PCI_COMMAND, 2, 0);
      strictEqual(e.dmabuf.outstandingMappings, 0, "the PAL list was given back on revoke");
      throws(() => deviceDmaRead(m.nic, iova, 1), (x) => x instanceof IommuFaultError);
      deepStrictEqual(world.check(), []);
    });
  }
});

Deno.test("IOMMU_IOAS_MAP_FILE of a dma-buf checks arguments before attaching (iommufd_ioas_map_file, iopt_alloc_dmabuf_pages)", async (t) => {
  await fixture(t, "argument errors win over the exporter's revoke", async (f) => {
    const vdev = new VfioPciCoreDevice(f.world, f.gpu);
    await vdev.open();
    const e =
      (await vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, {
        regionIndex: 1,
        openFlags: 2,
        flags: 0,
        dmaRanges: [{ offset: 0, length: 4 * PAGE }],
      }))!;
    await vdev.configWrite(PCI_COMMAND, 2, 0); // revoked: an attach would fail -ENODEV
    await rejects(iommufdIoasMapDmabuf(f.ictx, f.ioas, 1 << 5, e.fd, 0, PAGE), errno("EOPNOTSUPP"));
    await rejects(iommufdIoasMapDmabuf(f.ictx, f.ioas, 0, e.fd, 0, PAGE), errno("EINVAL"));
    await rejects(iommufdIoasMapDmabuf(f.ictx, 999, RW, e.fd, 0, PAGE), errno("ENOENT"));
    await rejects(iommufdIoasMapDmabuf(f.ictx, f.ioas, RW, e.fd, 0, 0), errno("EINVAL"));
    await rejects(iommufdIoasMapDmabuf(f.ictx, f.ioas, RW, e.fd, PAGE, 4 * PAGE), errno("EINVAL"));
    strictEqual(e.dmabuf.attachments.length, 0, "no attach was made");
    await rejects(iommufdIoasMapDmabuf(f.ictx, f.ioas, RW, e.fd, 0, PAGE), errno("ENODEV"));
    strictEqual(e.dmabuf.attachments.length, 0, "the failed attach was undone");
  });
});

Deno.test("v7.1 iopt_map_dmabuf pins before asking the exporter for the range", async () => {
  const world = new Kernel({ variants: { "dma-buf.version": "7.1" } });
  defaultMachine(world);
  iommuSetup(world);
  const ictx = new IommufdCtx(world);
  await world.runTask("selftest", async () => {
    const ioas = ictx.ioasAlloc();
    const buf = dmaBufExport(world, {
      expName: "no-pin",
      ops: {
        mapDmaBuf: () => new SgTable([]),
        unmapDmaBuf: () => {},
        release: () => {},
        pin: () => {
          throw new KernelError("EBUSY", "no-pin: cannot pin");
        },
        unpin: () => {},
      },
      size: 4 * PAGE,
      priv: {},
    });
    const fd = buf.fd(O_RDWR);
    // The pin error comes first; the foreign-exporter -EOPNOTSUPP is never reached.
    await rejects(iommufdIoasMapDmabuf(ictx, ioas, RW, fd, 0, PAGE), errno("EBUSY"));
    strictEqual(buf.attachments.length, 0);
  });
});

Deno.test("iopt_unmap_iova_range: areas below an edge-crossing one are already gone when -ENOENT returns", async (t) => {
  await fixture(t, "unmap_partial_walk", async (f) => {
    const map = (iova: number, off: number, length: number) =>
      f.ictx.ioasMap({
        ioasId: f.ioas,
        flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
        mm: f.mm,
        userVa: f.buffer + off,
        length,
        iova,
      });
    await map(f.base, 0, PAGE);
    await map(f.base + 2 * PAGE, PAGE, 2 * PAGE);
    // [base, base + 3 pages) holds the first area whole and cuts the second.
    await rejects(f.ictx.ioasUnmap(f.ioas, f.base, 3 * PAGE), errno("ENOENT"));
    strictEqual(f.ictx.ioas(f.ioas).iopt.areas.length, 1, "the first area was removed");
    strictEqual(f.ictx.ioas(f.ioas).iopt.areas[0]!.iova, f.base + 2 * PAGE);
    // An area crossing the lower edge is hit first: nothing goes.
    await rejects(f.ictx.ioasUnmap(f.ioas, f.base + 3 * PAGE, 4 * PAGE), errno("ENOENT"));
    strictEqual(f.ictx.ioas(f.ioas).iopt.areas.length, 1);
    strictEqual(await f.ictx.ioasUnmap(f.ioas, f.base + 2 * PAGE, 2 * PAGE), 2 * PAGE);
  });
});

Deno.test("iommufd object-type and range errnos (iommufd_hwpt_alloc, iommufd_device_change_pt, iommufd_ioas_load_iovas)", async (t) => {
  await fixture(t, "pt_id and allowed ranges", async (f) => {
    const devId = f.ictx.objectIds().find((id) => {
      try {
        f.ictx.device(id);
        return true;
      } catch {
        return false;
      }
    })!;
    // HWPT_ALLOC: an unknown pt or a device as pt is -EINVAL; flags first.
    await rejects(f.ictx.hwptAlloc(devId, 999), errno("EINVAL"));
    await rejects(f.ictx.hwptAlloc(devId, devId), errno("EINVAL"));
    await rejects(f.ictx.hwptAlloc(999, 999, 1), errno("EOPNOTSUPP"));
    await rejects(f.ictx.hwptAlloc(999, f.ioas), errno("ENOENT"));
    // attach: a missing object is -ENOENT, an object of another type -EINVAL.
    const other = f.ictx.bindDevice(f.gpu);
    await rejects(f.ictx.attach(other, 999), errno("ENOENT"));
    await rejects(f.ictx.attach(other, devId), errno("EINVAL"));
    // ALLOW_IOVAS: start == last is -EINVAL.
    throws(
      () => f.ictx.ioasAllowIovas(f.ioas, [{ start: 64 * PAGE, last: 64 * PAGE }]),
      errno("EINVAL"),
    );
    f.ictx.ioasAllowIovas(f.ioas, [{ start: 64 * PAGE, last: 64 * PAGE + 1 }]);
  });
});

Deno.test("iopt_table_add_domain / iopt_table_remove_domain: a duplicate or unknown domain is a WARN", async (t) => {
  await fixture(t, "domain table misuse", async (f) => {
    const iopt = f.ictx.ioas(f.ioas).iopt;
    const domain = f.ictx.ioas(f.ioas).hwpts[0]!.domain;
    await rejects(iopt.addDomain(domain), (e) => e instanceof KernelBug && e.kind === "WARN");
    const stray = f.ictx.iommu.pagingDomainAlloc(f.gpu);
    await rejects(iopt.removeDomain(stray), (e) => e instanceof KernelBug && e.kind === "WARN");
    stray.free();
  });
  await t.step("permissive: the duplicate add is -EEXIST after the WARN", async () => {
    const world = new Kernel({ strict: false });
    const m = defaultMachine(world);
    iommuSetup(world);
    const ictx = new IommufdCtx(world);
    await world.runTask("selftest", async () => {
      const ioas = ictx.ioasAlloc();
      await ictx.attach(ictx.bindDevice(m.nic), ioas);
      const iopt = ictx.ioas(ioas).iopt;
      await rejects(iopt.addDomain(ictx.ioas(ioas).hwpts[0]!.domain), errno("EEXIST"));
      strictEqual(world.bugs.filter((b) => b.kind === "WARN").length, 1);
    });
  });
});
