/**
 * @dmalab/iommu: IOMMU units, groups and domains, IO page tables (VT-d
 * second-stage and x86-64 formats) with the generic page-table algorithms, IOTLB gather/flush, strict
 * and lazy invalidation, IOTLB and device-TLB (ATS) caches, and DMA
 * translation with faults.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { IommuDomain, IOMMU_READ, IOMMU_WRITE } from "@dmalab/iommu";
 * const world = new Kernel();
 * const domain = new IommuDomain(world, "unmanaged");
 * domain.map(0x200000, 0x4000_0000, 0x200000, IOMMU_READ | IOMMU_WRITE);
 * domain.iovaToPhys(0x200010); // 0x4000_0010
 * ```
 *
 * @module
 */
export * from "./prot.ts";
export * from "./pgsize.ts";
export * from "./pt_pages.ts";
export * from "./gather.ts";
export * from "./io_pgtable.ts";
export * from "./iotlb.ts";
export * from "./domain.ts";
export * from "./flush_queue.ts";
export * from "./unit.ts";
export * from "./group.ts";
export * from "./core.ts";
export * from "./translate.ts";
