// The pcie-bench experiment in the model: random 64-byte DMA reads over a
// window of W bytes, IOMMU on, buffer mapped with 4 KiB pages or with 2 MiB
// pages; reports the IOTLB miss rate and the modelled extra latency per read
// (misses x 250 ns). Measured hardware (Netronome NFP6000, Broadwell/Haswell
// Xeons): ~64 IOTLB entries, flat up to 256 KiB with 4 KiB pages, then
// +230-280 ns per read; superpages stay flat.
import { dmaBitMask, Kernel } from "@dmalab/kernel";
import { iommuCoreOf, iommuSetup } from "@dmalab/iommu";
import { defaultMachine } from "@dmalab/pci-p2p";
import { deviceDmaRead, dmaMapPhys, dmaMappingError } from "./mod.ts";

function experiment(
  windowBytes: number,
  hugePages: boolean,
): { missRate: number; extraNs: number } {
  const world = new Kernel({ variants: { "dma-api.debug": "0" } });
  const m = defaultMachine(world);
  iommuSetup(world, {
    strict: true,
    unitDefaults: { ats: false },
    ...(hugePages ? {} : { domain: { pgsizeBitmap: 4096 } }),
  });
  m.nic.setMaskAndCoherent(dmaBitMask(64));
  const len = Math.max(windowBytes, 2 ** 21);
  // buddy blocks are at most 4 MiB: map the window in 4 MiB chunks
  const chunk = Math.min(len, 4 * 2 ** 20);
  const chunks = len / chunk;
  const addrs: bigint[] = [];
  for (let c = 0; c < chunks; c++) {
    const p = world.mem.allocPages(Math.log2(chunk / 4096))!.pfn * 4096;
    const a = dmaMapPhys(m.nic, p, chunk, "DMA_TO_DEVICE");
    dmaMappingError(m.nic, a);
    addrs.push(a);
  }
  const st = iommuCoreOf(world)!.devIommu(m.nic)!.stats;
  let x = 12345;
  const reads = 20000;
  for (let i = 0; i < reads; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const off = (x % (windowBytes / 64)) * 64;
    deviceDmaRead(m.nic, addrs[Math.floor(off / chunk)]! + BigInt(off % chunk), 64);
  }
  return { missRate: st.iotlbMisses / st.translations, extraNs: st.costNs / reads };
}

const rows: string[] = [];
for (const w of [64 * 1024, 256 * 1024, 1024 * 1024, 64 * 1024 * 1024]) {
  const small = experiment(w, false);
  const huge = experiment(w, true);
  rows.push(
    `| ${w >= 2 ** 20 ? `${w / 2 ** 20} MiB` : `${w / 1024} KiB`} | ${
      (small.missRate * 100).toFixed(1)
    } % / +${small.extraNs.toFixed(0)} ns | ${(huge.missRate * 100).toFixed(1)} % / +${
      huge.extraNs.toFixed(0)
    } ns |`,
  );
}
console.log(
  "| window | 4 KiB pages: miss rate / extra per read | 2 MiB pages |\n|---|---|---|\n" +
    rows.join("\n"),
);

Deno.bench("device DMA read 64 B through the IOMMU (IOTLB hit path)", () => {
  // the model's own speed for one translated 64-byte read
  experimentOnce();
});

let once: (() => void) | null = null;
function experimentOnce(): void {
  if (!once) {
    const world = new Kernel({ variants: { "dma-api.debug": "0" } });
    const m = defaultMachine(world);
    iommuSetup(world, { strict: true });
    m.nic.setMaskAndCoherent(dmaBitMask(64));
    const p = world.mem.allocPages(0)!.pfn * 4096;
    const a = dmaMapPhys(m.nic, p, 4096, "DMA_TO_DEVICE");
    dmaMappingError(m.nic, a);
    once = () => void deviceDmaRead(m.nic, a, 64);
  }
  once();
}
