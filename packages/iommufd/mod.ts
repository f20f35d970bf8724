/**
 * @dmalab/iommufd: `/dev/iommu` contexts, IOAS with areas and pages
 * mirrored into every attached domain, `IOMMU_IOAS_MAP` of pinned user
 * memory with locked-memory accounting, `IOMMU_IOAS_MAP_FILE` for memfd and
 * for VFIO dma-bufs (MMIO, one range, revocable), unmap, IOVA ranges and
 * allowed IOVAs, `IOMMU_HWPT_ALLOC`, device bind and attach, and device DMA
 * through the resulting domains.
 *
 * @example
 * ```ts
 * import { Kernel, MmStruct } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { iommuSetup } from "@dmalab/iommu";
 * import { deviceDmaRead, IommufdCtx, IOMMU_IOAS_MAP_READABLE } from "@dmalab/iommufd";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * iommuSetup(world);
 * const mm = new MmStruct(world, "app");
 * const ictx = new IommufdCtx(world);
 * const got = await world.runTask("app", async () => {
 *   const ioas = ictx.ioasAlloc();
 *   await ictx.attach(ictx.bindDevice(m.nic), ioas);
 *   const va = await mm.mmap({ length: 4096 });
 *   await mm.write(va, new Uint8Array([5]));
 *   const iova = await ictx.ioasMap({ ioasId: ioas, flags: IOMMU_IOAS_MAP_READABLE, mm, userVa: va, length: 4096 });
 *   return deviceDmaRead(m.nic, iova, 1)[0];
 * });
 * got; // 5
 * ```
 *
 * @module
 */
export * from "./io_pagetable.ts";
export * from "./ctx.ts";
export * from "./map_file.ts";
export * from "./dmabuf.ts";
