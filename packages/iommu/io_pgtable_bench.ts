// iommu_map + iommu_unmap of 1 GiB at 4 KiB granularity next to raw typed-array
// writes of the same number of 64-bit entries, and a huge-page map of a
// 128 GiB BAR.
import { Kernel } from "@dmalab/kernel";
import { IommuDomain } from "./domain.ts";
import { IOMMU_READ, IOMMU_WRITE } from "./prot.ts";

const RW = IOMMU_READ | IOMMU_WRITE;
const SZ_1G = 2 ** 30;
const N = SZ_1G / 4096;
const world = new Kernel();
const dom4k = new IommuDomain(world, "unmanaged", { pgsizeBitmap: 4096 });
const domHuge = new IommuDomain(world, "unmanaged");

const raw32 = new Uint32Array(N * 2);
const rawBig = new BigUint64Array(N);

Deno.bench(
  "raw Uint32Array pair writes, 262144 64-bit entries",
  { group: "1g4k", baseline: true },
  () => {
    let pfn = 0x100000;
    for (let i = 0; i < N; i++) {
      raw32[i << 1] = ((pfn & 0xfffff) << 12) | 3;
      raw32[(i << 1) + 1] = (pfn / 1048576) | 0;
      pfn++;
    }
  },
);

Deno.bench("raw BigUint64Array writes, 262144 64-bit entries", { group: "1g4k" }, () => {
  let v = 0x1_0000_0003n;
  for (let i = 0; i < N; i++) {
    rawBig[i] = v;
    v += 4096n;
  }
});

Deno.bench("iommu_map + iommu_unmap 1 GiB at 4 KiB", { group: "1g4k" }, () => {
  dom4k.map(SZ_1G, 0x1_0000_0000, SZ_1G, RW);
  dom4k.unmap(SZ_1G, SZ_1G);
});

Deno.bench("iommu_map + iommu_unmap 128 GiB BAR (1 GiB leaves)", { group: "bar" }, () => {
  domHuge.map(0x100_0000_0000, 0x200_0000_0000, 128 * SZ_1G, RW);
  domHuge.unmap(0x100_0000_0000, 128 * SZ_1G);
});

Deno.bench("iommu_map + iommu_unmap 128 GiB BAR, 2 MiB-aligned only (2 MiB leaves)", {
  group: "bar",
}, () => {
  domHuge.map(0x100_0020_0000, 0x200_0020_0000, 128 * SZ_1G, RW);
  domHuge.unmap(0x100_0020_0000, 128 * SZ_1G);
});

// Bytes of memory per mapped PTE: map 4 GiB at 4 KiB (1,048,576 leaves) in a
// fresh world and compare table pages and the process's external + heap
// growth against the leaf count. Printed once when the bench module loads.
{
  const w = new Kernel();
  const d = new IommuDomain(w, "unmanaged", { pgsizeBitmap: 4096 });
  const before = Deno.memoryUsage();
  d.map(0x1_0000_0000, 0x10_0000_0000, 4 * SZ_1G, RW);
  const after = Deno.memoryUsage();
  const leaves = d.pgtable!.countLeaves();
  const pages = d.pgtable!.tablePages();
  const grown = after.external + after.heapUsed - before.external - before.heapUsed;
  console.log(
    `bytes per 4 KiB PTE: ${(pages * 4096 / leaves).toFixed(2)} (table pages), ` +
      `${
        (grown / leaves).toFixed(2)
      } (measured external+heap growth); ${pages} table pages for ${leaves} leaves`,
  );
  d.unmap(0x1_0000_0000, 4 * SZ_1G);
  d.free();
}
