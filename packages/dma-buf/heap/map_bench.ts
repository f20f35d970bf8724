// Map/unmap cycles of a 1 GiB system-heap buffer through the dma-buf core,
// for a static and a dynamic importer, beside a raw baseline in the same run:
// the same 1 GiB page list mapped with @dmalab/dma-api's dma_map_sgtable
// directly (no dma-buf core, no reservation lock, no wrapping).
import { Device, dmaBitMask, Kernel } from "@dmalab/kernel";
import { dmaMapSgtable, dmaUnmapSgtable, SgTable as ApiSgTable } from "@dmalab/dma-api";
import { iommuSetup } from "@dmalab/iommu";
import { defaultMachine } from "@dmalab/pci-p2p";
import {
  dmaBufAttach,
  dmaBufDynamicAttach,
  dmaHeapSystemAlloc,
  type SystemHeapBuffer,
} from "../mod.ts";

const GIB = 1 << 30;
const world = new Kernel({ memory: { nodes: [8n << 30n] } });
const dev = new Device(world, "importer", {
  dmaMask: dmaBitMask(64),
  coherentDmaMask: dmaBitMask(64),
});
const buf = dmaHeapSystemAlloc(world, GIB);
const heapBuf = buf.priv as SystemHeapBuffer;
const entries = heapBuf.blocks.length;

const { stat, dyn } = await world.runTask("setup", async () => ({
  stat: await dmaBufAttach(buf, dev),
  dyn: await dmaBufDynamicAttach(buf, dev, { invalidateMappings: () => {} }, null),
}));

const raw = new ApiSgTable(
  heapBuf.blocks.map((p, i) => ({ phys: p.pfn * 4096, length: 4096 << heapBuf.orders[i]! })),
);

Deno.bench({
  name: `raw baseline: dma_map_sgtable + dma_unmap_sgtable, 1 GiB (${entries} entries)`,
  group: "1 GiB map/unmap",
  baseline: true,
  fn() {
    dmaMapSgtable(dev, raw, "DMA_BIDIRECTIONAL");
    dmaUnmapSgtable(dev, raw, "DMA_BIDIRECTIONAL");
  },
});

Deno.bench({
  name: "static importer: dma_buf_map_attachment_unlocked + unmap (KERNEL fence wait, wrap)",
  group: "1 GiB map/unmap",
  async fn() {
    await world.runTask("static", async () => {
      const sgt = await stat.mapUnlocked("DMA_BIDIRECTIONAL");
      await stat.unmapUnlocked(sgt, "DMA_BIDIRECTIONAL");
    });
  },
});

Deno.bench({
  name: "dynamic importer: lock, dma_buf_map_attachment + unmap, unlock",
  group: "1 GiB map/unmap",
  async fn() {
    await world.runTask("dynamic", async () => {
      await buf.resv.lock(null);
      const sgt = await dyn.map("DMA_BIDIRECTIONAL");
      dyn.unmap(sgt, "DMA_BIDIRECTIONAL");
      buf.resv.unlock();
    });
  },
});

Deno.bench({
  name: "scheduler cost alone: an empty world.runTask",
  group: "1 GiB map/unmap",
  async fn() {
    await world.runTask("empty", async () => {});
  },
});

// The same cycles for a PCI device behind an IOMMU in strict mode (dma-iommu:
// IOVA allocation, 262,144 4 KiB PTEs per map, IOTLB flush per unmap).
const iw = new Kernel({ memory: { nodes: [8n << 30n] } });
const machine = defaultMachine(iw, { iommu: true });
iommuSetup(iw, { strict: true });
machine.nic.setMaskAndCoherent(dmaBitMask(64));
const ibuf = dmaHeapSystemAlloc(iw, GIB);
const iheap = ibuf.priv as SystemHeapBuffer;
const { istat, idyn } = await iw.runTask("setup", async () => ({
  istat: await dmaBufAttach(ibuf, machine.nic),
  idyn: await dmaBufDynamicAttach(ibuf, machine.nic, { invalidateMappings: () => {} }, null),
}));
const iraw = new ApiSgTable(
  iheap.blocks.map((p, i) => ({ phys: p.pfn * 4096, length: 4096 << iheap.orders[i]! })),
);

Deno.bench({
  name: "raw baseline: dma_map_sgtable + dma_unmap_sgtable through the IOMMU",
  group: "1 GiB map/unmap, IOMMU strict",
  baseline: true,
  fn() {
    dmaMapSgtable(machine.nic, iraw, "DMA_BIDIRECTIONAL");
    dmaUnmapSgtable(machine.nic, iraw, "DMA_BIDIRECTIONAL");
  },
});

Deno.bench({
  name: "static importer through the IOMMU",
  group: "1 GiB map/unmap, IOMMU strict",
  async fn() {
    await iw.runTask("static", async () => {
      const sgt = await istat.mapUnlocked("DMA_BIDIRECTIONAL");
      await istat.unmapUnlocked(sgt, "DMA_BIDIRECTIONAL");
    });
  },
});

Deno.bench({
  name: "dynamic importer through the IOMMU",
  group: "1 GiB map/unmap, IOMMU strict",
  async fn() {
    await iw.runTask("dynamic", async () => {
      await ibuf.resv.lock(null);
      const sgt = await idyn.map("DMA_BIDIRECTIONAL");
      idyn.unmap(sgt, "DMA_BIDIRECTIONAL");
      ibuf.resv.unlock();
    });
  },
});
