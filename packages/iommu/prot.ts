/**
 * DOC: IOMMU protection flags
 *
 * The `prot` bits callers pass to `iommu_map()` (include/linux/iommu.h).
 * Plain constants; no locking.
 *
 * @module
 */

/** `IOMMU_READ`: the device may read through the mapping. */
export const IOMMU_READ = 1 << 0;
/** `IOMMU_WRITE`: the device may write through the mapping. */
export const IOMMU_WRITE = 1 << 1;
/** `IOMMU_CACHE`: DMA is cache coherent (snooped). */
export const IOMMU_CACHE = 1 << 2;
/** `IOMMU_NOEXEC`: no instruction fetch. */
export const IOMMU_NOEXEC = 1 << 3;
/** `IOMMU_MMIO`: the target is MMIO, never cacheable (P2P, `DMA_ATTR_MMIO`). */
export const IOMMU_MMIO = 1 << 4;
/** `IOMMU_PRIV`: privileged accesses only. */
export const IOMMU_PRIV = 1 << 5;

/** Renders prot bits as the kernel's names joined by `|` ("READ|WRITE"). */
export function protToString(prot: number): string {
  const names: string[] = [];
  if (prot & IOMMU_READ) names.push("READ");
  if (prot & IOMMU_WRITE) names.push("WRITE");
  if (prot & IOMMU_CACHE) names.push("CACHE");
  if (prot & IOMMU_NOEXEC) names.push("NOEXEC");
  if (prot & IOMMU_MMIO) names.push("MMIO");
  if (prot & IOMMU_PRIV) names.push("PRIV");
  return names.length ? names.join("|") : "0";
}
