/**
 * DOC: DMA directions, attributes and the error cookie
 *
 * include/linux/dma-direction.h and include/linux/dma-mapping.h constants.
 * No locking.
 *
 * @module
 */

/** `enum dma_data_direction`. */
export type DmaDirection = "DMA_BIDIRECTIONAL" | "DMA_TO_DEVICE" | "DMA_FROM_DEVICE" | "DMA_NONE";

/** `DMA_ATTR_WEAK_ORDERING`. */
export const DMA_ATTR_WEAK_ORDERING = 1 << 1;
/** `DMA_ATTR_WRITE_COMBINE`. */
export const DMA_ATTR_WRITE_COMBINE = 1 << 2;
/** `DMA_ATTR_NO_KERNEL_MAPPING`. */
export const DMA_ATTR_NO_KERNEL_MAPPING = 1 << 4;
/** `DMA_ATTR_SKIP_CPU_SYNC`: no cache maintenance (and no bounce copy) at map/unmap. */
export const DMA_ATTR_SKIP_CPU_SYNC = 1 << 5;
/** `DMA_ATTR_FORCE_CONTIGUOUS`. */
export const DMA_ATTR_FORCE_CONTIGUOUS = 1 << 6;
/** `DMA_ATTR_ALLOC_SINGLE_PAGES`. */
export const DMA_ATTR_ALLOC_SINGLE_PAGES = 1 << 7;
/** `DMA_ATTR_NO_WARN`. */
export const DMA_ATTR_NO_WARN = 1 << 8;
/** `DMA_ATTR_PRIVILEGED`. */
export const DMA_ATTR_PRIVILEGED = 1 << 9;
/** `DMA_ATTR_MMIO`: the address is MMIO: no swiotlb, no cache maintenance, `IOMMU_MMIO`. */
export const DMA_ATTR_MMIO = 1 << 10;

/** `DMA_MAPPING_ERROR` (`~(dma_addr_t)0`), as a bigint. */
export const DMA_MAPPING_ERROR: bigint = 0xffff_ffff_ffff_ffffn;

/** `dma_mapping_error()` without the DMA-API debug bookkeeping. */
export function isDmaMappingError(addr: bigint): boolean {
  return addr === DMA_MAPPING_ERROR;
}

/** True for a valid direction (`valid_dma_direction`). */
export function validDmaDirection(dir: DmaDirection): boolean {
  return dir === "DMA_BIDIRECTIONAL" || dir === "DMA_TO_DEVICE" || dir === "DMA_FROM_DEVICE";
}

/** Direction names as DMA-API debug prints them. */
export const DIR2NAME: Readonly<Record<DmaDirection, string>> = {
  DMA_BIDIRECTIONAL: "DMA_BIDIRECTIONAL",
  DMA_TO_DEVICE: "DMA_TO_DEVICE",
  DMA_FROM_DEVICE: "DMA_FROM_DEVICE",
  DMA_NONE: "DMA_NONE",
};
