/**
 * DOC: mapping sg_tables for a device
 *
 * The one place the dma-buf exporters in this package call the DMA API
 * (`dma_map_sgtable` / `dma_unmap_sgtable`, kernel/dma/mapping.c).
 *
 * Until @dmalab/dma-api is wired in, this is the dma-direct identity path
 * with no IOMMU and no swiotlb: `dma_address = phys` per CPU entry, no
 * merging, and a device whose DMA mask cannot reach an entry fails the
 * mapping with -EIO (where dma-direct would bounce through swiotlb). Every
 * exporter goes through these two functions, so switching to the real DMA
 * API changes this file only.
 *
 * Locking: none of its own; dma-buf callers hold the reservation lock.
 *
 * @module
 */
import { type Device, type Kernel, KernelError } from "@dmalab/kernel";
import type { DmaDataDirection, SgTable } from "./scatterlist.ts";

/** `dma_map_sgtable(dev, sgt, dir, attrs)`: fills the DMA side; throws -EIO/-EINVAL on failure. */
export function dmaMapSgtable(
  world: Kernel,
  dev: Device,
  sgt: SgTable,
  dir: DmaDataDirection,
  _attrs = 0,
): void {
  if (dir === "DMA_NONE") throw new KernelError("EINVAL", "dma_map_sgtable: DMA_NONE");
  const mask = dev.dmaMask;
  for (let i = 0; i < sgt.origNents; i++) {
    const sg = sgt.sgl[i]!;
    const phys = sg.phys(world);
    if (phys === null) throw new KernelError("EINVAL", "dma_map_sgtable: entry without a page");
    if (phys + BigInt(sg.length) - 1n > mask) {
      for (let j = 0; j < i; j++) sgt.sgl[j]!.dmaLength = 0;
      throw new KernelError(
        "EIO",
        `dma_map_sgtable: ${dev.name}: address 0x${phys.toString(16)} beyond DMA mask`,
      );
    }
    sg.dmaAddress = phys;
    sg.dmaLength = sg.length;
  }
  sgt.nents = sgt.origNents;
}

/** `dma_unmap_sgtable(dev, sgt, dir, attrs)`: clears the DMA side. */
export function dmaUnmapSgtable(
  _world: Kernel,
  _dev: Device,
  sgt: SgTable,
  _dir: DmaDataDirection,
  _attrs = 0,
): void {
  for (let i = 0; i < sgt.nents; i++) {
    sgt.sgl[i]!.dmaAddress = 0n;
    sgt.sgl[i]!.dmaLength = 0;
  }
  sgt.nents = 0;
}
