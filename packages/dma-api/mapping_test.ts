import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { Device, dmaBitMask, isErrno, Kernel, KernelBug } from "@dmalab/kernel";
import { iommuCoreOf, IommuFaultError, iommuSetup } from "@dmalab/iommu";
import {
  defaultMachine,
  pciAllocP2pmem,
  pcimP2pdmaInit,
  pciP2pdmaAddResource,
} from "@dmalab/pci-p2p";
import {
  deviceDmaRead,
  deviceDmaStats,
  deviceDmaWrite,
  DMA_ATTR_MMIO,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_MAPPING_ERROR,
  dmaAllocCoherent,
  dmaCookie,
  dmaDevSetup,
  dmaFreeCoherent,
  dmaGetMergeBoundary,
  dmaIovaDestroy,
  dmaIovaLink,
  DmaIovaState,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaMapPage,
  dmaMapPhys,
  dmaMappingError,
  dmaMapResource,
  dmaMapSg,
  dmaMapSgtable,
  dmaSyncSingleForCpu,
  dmaSyncSingleForDevice,
  dmaUnmapPhys,
  dmaUnmapSgtable,
  SG_DMA_BUS_ADDRESS,
  SG_DMA_SWIOTLB,
  SgTable,
  swiotlbOf,
} from "./mod.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function ramPage(world: Kernel, order = 0, zone: "DMA32" | "Normal" = "Normal"): number {
  return world.mem.allocPages(order, { zone })!.pfn * 4096;
}

Deno.test("dma-direct: masks, swiotlb bounce with real copies, syncs", async (t) => {
  await t.step("a 64-bit device gets its physical address", () => {
    const world = new Kernel();
    const dev = new Device(world, "d64", { dmaMask: dmaBitMask(64) });
    const p = ramPage(world);
    const a = dmaMapPhys(dev, p, 4096, "DMA_BIDIRECTIONAL");
    ok(!dmaMappingError(dev, a));
    strictEqual(a, BigInt(p));
    dmaUnmapPhys(dev, a, 4096, "DMA_BIDIRECTIONAL");
  });

  await t.step("the dma_range_map offset shifts DMA addresses", () => {
    const world = new Kernel();
    const dev = new Device(world, "off", { dmaMask: dmaBitMask(64) });
    dmaDevSetup(dev, { dmaOffset: 0x8000_0000 });
    const p = ramPage(world);
    const a = dmaMapPhys(dev, p, 64, "DMA_TO_DEVICE");
    dmaMappingError(dev, a);
    strictEqual(a, BigInt(p + 0x8000_0000));
    world.mem.write(p, enc("offset!"));
    strictEqual(dec(deviceDmaRead(dev, a, 7)), "offset!");
    dmaUnmapPhys(dev, a, 64, "DMA_TO_DEVICE");
  });

  await t.step("a 32-bit device bounces memory above 4 GiB; bytes go both ways", () => {
    const world = new Kernel();
    const dev = new Device(world, "d32", { dmaMask: dmaBitMask(32) });
    const p = ramPage(world);
    ok(p >= 2 ** 32, "allocated above 4 GiB");
    world.mem.write(p, enc("to the device"));
    const a = dmaMapPhys(dev, p, 4096, "DMA_BIDIRECTIONAL");
    ok(!dmaMappingError(dev, a));
    ok(Number(a) < 2 ** 32 && swiotlbOf(world).isSwiotlbBuffer(Number(a)));
    strictEqual(dec(deviceDmaRead(dev, a, 13)), "to the device", "map copied into the slot");
    deviceDmaWrite(dev, a, enc("from device"));
    strictEqual(dec(world.mem.read(p, 11)), "to the devi", "not visible before a sync");
    dmaSyncSingleForCpu(dev, a, 4096, "DMA_BIDIRECTIONAL");
    strictEqual(dec(world.mem.read(p, 11)), "from device");
    world.mem.write(p, enc("second"));
    dmaSyncSingleForDevice(dev, a, 4096, "DMA_BIDIRECTIONAL");
    strictEqual(dec(deviceDmaRead(dev, a, 6)), "second");
    deviceDmaWrite(dev, a, enc("unmapped"));
    dmaUnmapPhys(dev, a, 4096, "DMA_BIDIRECTIONAL");
    strictEqual(dec(world.mem.read(p, 8)), "unmapped", "unmap copied back");
    strictEqual(swiotlbOf(world).usedSlots, 0);
  });

  await t.step("DMA_ATTR_SKIP_CPU_SYNC skips the copy back at unmap", () => {
    const world = new Kernel();
    const dev = new Device(world, "d32", { dmaMask: dmaBitMask(32) });
    const p = ramPage(world);
    world.mem.write(p, enc("orig"));
    const a = dmaMapPhys(dev, p, 4096, "DMA_FROM_DEVICE", DMA_ATTR_SKIP_CPU_SYNC);
    dmaMappingError(dev, a);
    deviceDmaWrite(dev, a, enc("lost"));
    dmaUnmapPhys(dev, a, 4096, "DMA_FROM_DEVICE", DMA_ATTR_SKIP_CPU_SYNC);
    strictEqual(dec(world.mem.read(p, 4)), "orig");
  });

  await t.step("MMIO beyond the mask cannot bounce: WARN once, DMA_MAPPING_ERROR", () => {
    const world = new Kernel({ strict: false });
    const dev = new Device(world, "d32", { dmaMask: dmaBitMask(32) });
    strictEqual(dmaMapResource(dev, 0x100_0000_0000, 4096, "DMA_TO_DEVICE"), DMA_MAPPING_ERROR);
    ok(world.dmesg.includes("overflow (mask ffffffff, bus limit 0)"));
    strictEqual(dmaMapResource(dev, 0x100_0000_0000, 4096, "DMA_TO_DEVICE"), DMA_MAPPING_ERROR);
    strictEqual(world.bugs.length, 1, "WARN_ONCE");
    const strictWorld = new Kernel();
    const d2 = new Device(strictWorld, "d32", { dmaMask: dmaBitMask(32) });
    throws(() => dmaMapResource(d2, 0x100_0000_0000, 4096, "DMA_TO_DEVICE"), KernelBug);
  });

  await t.step("forced bounce (CoCo): every mapping bounces, MMIO fails", () => {
    const world = new Kernel();
    const dev = new Device(world, "cc", { dmaMask: dmaBitMask(64) });
    dmaDevSetup(dev, { forceBounce: true });
    const p = ramPage(world);
    const a = dmaMapPhys(dev, p, 100, "DMA_TO_DEVICE");
    dmaMappingError(dev, a);
    ok(swiotlbOf(world).isSwiotlbBuffer(Number(a)));
    dmaUnmapPhys(dev, a, 100, "DMA_TO_DEVICE");
    strictEqual(dmaMapPhys(dev, p, 100, "DMA_TO_DEVICE", DMA_ATTR_MMIO), DMA_MAPPING_ERROR);
    strictEqual(
      dmaMapPage(dev, world.mem.physToPage(p)!, 0, 64, "DMA_TO_DEVICE", DMA_ATTR_MMIO),
      DMA_MAPPING_ERROR,
    );
  });

  await t.step("dma_alloc_coherent honours the coherent mask and zeroes", () => {
    const world = new Kernel();
    const dev = new Device(world, "c32", { coherentDmaMask: dmaBitMask(32) });
    const buf = dmaAllocCoherent(dev, 8192)!;
    ok(Number(buf.dmaHandle) + 8191 <= 0xffff_ffff);
    deepStrictEqual([...world.mem.read(buf.cpuAddr, 4)], [0, 0, 0, 0]);
    deviceDmaWrite(dev, buf.dmaHandle, enc("coh"));
    strictEqual(dec(world.mem.read(buf.cpuAddr, 3)), "coh");
    dmaFreeCoherent(dev, buf);
  });
});

Deno.test("dma-iommu: streaming maps translate, faults after unmap, merge boundary", async (t) => {
  await t.step("a NIC reads through its IOVA; a SAC address is tried first", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    iommuSetup(world, { strict: true });
    m.nic.setMaskAndCoherent(dmaBitMask(64));
    const p = ramPage(world);
    world.mem.write(p + 0x10, enc("via iommu"));
    const a = dmaMapPhys(m.nic, p + 0x10, 100, "DMA_TO_DEVICE");
    ok(!dmaMappingError(m.nic, a));
    ok(Number(a) < 2 ** 32, "PCI devices get a 32-bit IOVA first");
    strictEqual(Number(a) % 4096, 0x10, "sub-page offset kept");
    strictEqual(dec(deviceDmaRead(m.nic, a, 9)), "via iommu");
    throws(() => deviceDmaWrite(m.nic, a, enc("x")), IommuFaultError, "TO_DEVICE maps read-only");
    dmaUnmapPhys(m.nic, a, 100, "DMA_TO_DEVICE");
    throws(() => deviceDmaRead(m.nic, a, 1), IommuFaultError, "strict: gone at once");
    strictEqual(dmaGetMergeBoundary(m.nic), 4095);
    strictEqual(dmaGetMergeBoundary(new Device(world, "plain")), 0);
  });

  await t.step("IOVAs avoid the MSI window and the host bridge windows", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    iommuSetup(world, { strict: true });
    const p = ramPage(world);
    const a = dmaMapPhys(m.nic, p, 4096, "DMA_BIDIRECTIONAL");
    dmaMappingError(m.nic, a);
    const c = dmaCookie(iommuCoreOf(world)!.domainFor(m.nic)!, m.nic);
    ok(c.iovad.find(0xfee00) !== null, "MSI window reserved");
    for (const w of m.nic.host.windows) {
      const bus = Number(w.cpuStart + w.busOffset);
      if (bus < 2 ** 48) {
        ok(c.iovad.find(Math.floor(bus / 4096)) !== null, "bridge window reserved");
      }
    }
    dmaUnmapPhys(m.nic, a, 4096, "DMA_BIDIRECTIONAL");
  });

  await t.step("map_sg: one IOVA range, entries merged up to max_segment_size", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    iommuSetup(world, { strict: true });
    m.nic.setMaskAndCoherent(dmaBitMask(64));
    // 20 scattered pages: 4 KiB each, page aligned -> merge into 64 KiB segments
    const pages = Array.from({ length: 20 }, () => ramPage(world));
    pages.forEach((p, i) => world.mem.write(p, enc(`page${i.toString().padStart(2, "0")}`)));
    const sgt = new SgTable(pages.map((p) => ({ phys: p, length: 4096 })));
    dmaMapSgtable(m.nic, sgt, "DMA_TO_DEVICE");
    strictEqual(sgt.nents, 2, "16 pages per 64 KiB segment, then 4");
    deepStrictEqual(sgt.dmaSegments().map((s) => s[1]), [65536, 16384]);
    const [seg0] = sgt.dmaSegments()[0]!;
    strictEqual(dec(deviceDmaRead(m.nic, seg0 + 5n * 4096n, 6)), "page05");
    dmaUnmapSgtable(m.nic, sgt, "DMA_TO_DEVICE");
    throws(() => deviceDmaRead(m.nic, seg0, 1), IommuFaultError);
  });

  await t.step("dma-direct map_sg does not merge", () => {
    const world = new Kernel();
    const dev = new Device(world, "d", { dmaMask: dmaBitMask(64) });
    const pages = [ramPage(world), ramPage(world), ramPage(world)];
    const sgt = new SgTable(pages.map((p) => ({ phys: p, length: 4096 })));
    strictEqual(dmaMapSg(dev, sgt, "DMA_TO_DEVICE"), 3);
    dmaUnmapSgtable(dev, sgt, "DMA_TO_DEVICE");
  });

  await t.step("coherent allocations go through the IOMMU", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    iommuSetup(world, { strict: true });
    const buf = dmaAllocCoherent(m.nvme, 4096)!;
    ok(Number(buf.dmaHandle) !== buf.cpuAddr);
    deviceDmaWrite(m.nvme, buf.dmaHandle, enc("cq entry"));
    strictEqual(dec(world.mem.read(buf.cpuAddr, 8)), "cq entry");
    dmaFreeCoherent(m.nvme, buf);
  });

  await t.step("untrusted devices bounce sub-page buffers", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    m.nvme.untrusted = true;
    iommuSetup(world);
    const io = iommuCoreOf(world)!;
    strictEqual(io.domainFor(m.nvme)!.type, "dma", "untrusted: strict DMA domain");
    const p = ramPage(world);
    world.mem.write(p + 100, enc("secret-neighbour"));
    const a = dmaMapPhys(m.nvme, p + 100, 6, "DMA_TO_DEVICE");
    dmaMappingError(m.nvme, a);
    strictEqual(swiotlbOf(world).stats.maps, 1);
    strictEqual(dec(deviceDmaRead(m.nvme, a, 6)), "secret");
    strictEqual(deviceDmaRead(m.nvme, a + 6n, 1)[0], 0, "the neighbour bytes are not exposed");
    dmaUnmapPhys(m.nvme, a, 6, "DMA_TO_DEVICE");
    // a scatterlist with a sub-page entry is bounced entry by entry (SG_DMA_SWIOTLB)
    const q = ramPage(world);
    world.mem.write(q + 8, enc("tail"));
    const sgt = new SgTable([{ phys: ramPage(world), length: 4096 }, { phys: q + 8, length: 4 }]);
    dmaMapSgtable(m.nvme, sgt, "DMA_BIDIRECTIONAL");
    strictEqual(sgt.nents, 2);
    ok(sgt.sgl[0]!.dmaFlags & SG_DMA_SWIOTLB);
    strictEqual(dec(deviceDmaRead(m.nvme, sgt.sgl[1]!.dmaAddress, 4)), "tail");
    deviceDmaWrite(m.nvme, sgt.sgl[1]!.dmaAddress, enc("TAIL"));
    dmaUnmapSgtable(m.nvme, sgt, "DMA_BIDIRECTIONAL");
    strictEqual(dec(world.mem.read(q + 8, 4)), "TAIL", "bounced back at unmap");
    strictEqual(swiotlbOf(world).usedSlots, 0);
  });
});

Deno.test("P2P: pci_p2pdma_state per mapping", async (t) => {
  function p2pWorld(iommu: boolean) {
    const world = new Kernel();
    const m = defaultMachine(world);
    if (iommu) iommuSetup(world, { strict: true });
    pcimP2pdmaInit(m.gpu);
    pciP2pdmaAddResource(m.gpu, 1, 2n << 20n);
    const bar = m.gpu.bars[1]!;
    if (!world.mem.mmioAt(bar.start!)) {
      // older pci-p2p builds did not register BARs in the physical address map
      world.mem.registerMmio({
        name: `${m.gpu.name} BAR 1`,
        start: bar.start!,
        size: bar.size,
        owner: m.gpu,
      });
    }
    const p2p = Number(pciAllocP2pmem(m.gpu, 1n << 16n)!);
    return { world, m, p2p };
  }

  await t.step(
    "BUS_ADDR (no IOMMU, switch-local): bus address, flag, bytes land in the BAR",
    () => {
      const { world, m, p2p } = p2pWorld(false);
      const ram = ramPage(world);
      const sgt = new SgTable([{ phys: ram, length: 4096 }, { phys: p2p, length: 4096 }]);
      dmaMapSgtable(m.nic, sgt, "DMA_BIDIRECTIONAL");
      const s1 = sgt.sgl[1]!;
      ok(s1.dmaFlags & SG_DMA_BUS_ADDRESS);
      strictEqual(s1.dmaAddress, BigInt(p2p) + m.gpu.bars[1]!.busOffset);
      deviceDmaWrite(m.nic, s1.dmaAddress, enc("peer write"));
      strictEqual(dec(world.mem.read(p2p, 10)), "peer write");
      strictEqual(deviceDmaStats(m.nic).p2pBytes, 10);
      dmaUnmapSgtable(m.nic, sgt, "DMA_BIDIRECTIONAL");
    },
  );

  await t.step("THRU_HOST_BRIDGE (IOMMU on, ACS redirect): IOVA mapped with IOMMU_MMIO", () => {
    const { world, m, p2p } = p2pWorld(true);
    const sgt = new SgTable([{ phys: p2p, length: 8192 }]);
    dmaMapSgtable(m.nic, sgt, "DMA_FROM_DEVICE");
    const s0 = sgt.sgl[0]!;
    ok(!(s0.dmaFlags & SG_DMA_BUS_ADDRESS));
    const leaf = iommuCoreOf(world)!.domainFor(m.nic)!.pgtable!.lookup(Number(s0.dmaAddress))!;
    ok(leaf.bits & (1 << 10), "IOMMU_MMIO kept in the PTE");
    ok(!(leaf.bits & (1 << 11)), "not IOMMU_CACHE");
    deviceDmaWrite(m.nic, s0.dmaAddress, enc("via root"));
    strictEqual(dec(world.mem.read(p2p, 8)), "via root");
    dmaUnmapSgtable(m.nic, sgt, "DMA_FROM_DEVICE");
  });

  await t.step(
    "IOVA API with DMA_ATTR_MMIO for host-bridge P2P (dma_buf_phys_vec_to_sgt's path)",
    () => {
      const { world, m, p2p } = p2pWorld(true);
      const st = new DmaIovaState();
      ok(dmaIovaTryAlloc(m.nic, st, p2p, 8192));
      dmaIovaLink(m.nic, st, p2p, 0, 8192, "DMA_BIDIRECTIONAL", DMA_ATTR_MMIO);
      dmaIovaSync(m.nic, st, 0, 8192);
      const leaf = iommuCoreOf(world)!.domainFor(m.nic)!.pgtable!.lookup(st.addr)!;
      ok(leaf.bits & (1 << 10), "IOMMU_MMIO");
      deviceDmaWrite(m.nic, st.addr + 4096, enc("iova p2p"));
      strictEqual(dec(world.mem.read(p2p + 4096, 8)), "iova p2p");
      dmaIovaDestroy(m.nic, st, 8192, "DMA_BIDIRECTIONAL", DMA_ATTR_MMIO);
    },
  );

  await t.step("NOT_SUPPORTED: -EREMOTEIO from dma_map_sgtable, 0 from dma_map_sg", () => {
    const { world, p2p } = p2pWorld(false);
    const plat = new Device(world, "platform-dev", { dmaMask: dmaBitMask(64) });
    const sgt = new SgTable([{ phys: p2p, length: 4096 }]);
    throws(() => dmaMapSgtable(plat, sgt, "DMA_TO_DEVICE"), (e) => isErrno(e, "EREMOTEIO"));
    strictEqual(dmaMapSg(plat, new SgTable([{ phys: p2p, length: 4096 }]), "DMA_TO_DEVICE"), 0);
  });
});
