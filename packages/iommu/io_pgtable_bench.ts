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
