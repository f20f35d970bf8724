// IOTLB syncs per operation for the IOVA API versus per-page streaming maps,
// and the IOVA allocator's alloc/free rate with and without the range caches.
import { dmaBitMask, Kernel } from "@dmalab/kernel";
import { iommuCoreOf, iommuSetup } from "@dmalab/iommu";
import { defaultMachine } from "@dmalab/pci-p2p";
import {
  dmaIovaDestroy,
  dmaIovaLink,
  DmaIovaState,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  IovaDomain,
} from "./mod.ts";

const PAGES = 256;

function setup(strict: boolean) {
  const world = new Kernel({ variants: { "dma-api.debug": "0" } });
  const m = defaultMachine(world);
  iommuSetup(world, { strict });
  m.nic.setMaskAndCoherent(dmaBitMask(64));
  const pages = Array.from({ length: PAGES }, () => world.mem.allocPages(0)!.pfn * 4096);
  return { world, dev: m.nic, pages, dom: iommuCoreOf(world)!.domainFor(m.nic)! };
}

const s = setup(true);
const io = setup(true);

function streamingOp(): void {
  const addrs = s.pages.map((p) => {
    const a = dmaMapPhys(s.dev, p, 4096, "DMA_TO_DEVICE");
    dmaMappingError(s.dev, a);
    return a;
  });
  for (const a of addrs) dmaUnmapPhys(s.dev, a, 4096, "DMA_TO_DEVICE");
}

function iovaOp(): void {
  const st = new DmaIovaState();
  dmaIovaTryAlloc(io.dev, st, io.pages[0]!, PAGES * 4096);
  io.pages.forEach((p, i) => dmaIovaLink(io.dev, st, p, i * 4096, 4096, "DMA_TO_DEVICE"));
  dmaIovaSync(io.dev, st, 0, PAGES * 4096);
  dmaIovaDestroy(io.dev, st, PAGES * 4096, "DMA_TO_DEVICE");
}

// syncs per operation, counted once
{
  const a0 = s.dom.stats.syncMaps + s.dom.stats.iotlbSyncs;
  streamingOp();
  const a1 = s.dom.stats.syncMaps + s.dom.stats.iotlbSyncs;
  const b0 = io.dom.stats.syncMaps + io.dom.stats.iotlbSyncs;
  iovaOp();
  const b1 = io.dom.stats.syncMaps + io.dom.stats.iotlbSyncs;
  console.log(
    `IOTLB syncs per ${PAGES}-page operation (map+unmap, strict): streaming ${a1 - a0}, IOVA API ${
      b1 - b0
    }`,
  );
}

Deno.bench(`streaming: ${PAGES} x dma_map_phys + dma_unmap_phys (strict)`, {
  group: "op",
  baseline: true,
}, streamingOp);
Deno.bench(
  `IOVA API: try_alloc + ${PAGES} links + 1 sync + destroy (strict)`,
  { group: "op" },
  iovaOp,
);

const fast = new IovaDomain(4096, 1);
const tree = new IovaDomain(4096, 1);
for (let i = 0; i < 1000; i++) {
  fast.allocIovaFast(1, 0xf_ffff, true);
  tree.allocIova(1, 0xf_ffff, true);
}

Deno.bench("alloc_iova_fast + free_iova_fast, 1 page, 1000 held (rcache)", {
  group: "iova",
  baseline: true,
}, () => {
  for (let i = 0; i < 1000; i++) {
    const p = fast.allocIovaFast(1, 0xf_ffff, true);
    fast.freeIovaFast(p, 1);
  }
});

Deno.bench("alloc_iova + free_iova, 1 page, 1000 held (tree only)", { group: "iova" }, () => {
  for (let i = 0; i < 1000; i++) {
    const p = tree.allocIova(1, 0xf_ffff, true);
    tree.freeIova(p);
  }
});
