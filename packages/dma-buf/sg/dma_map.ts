/**
 * DOC: mapping sg_tables for a device
 *
 * The one place the dma-buf exporters in this package map an sg_table for
 * a device: `dma_map_sgtable` / `dma_unmap_sgtable` of @dmalab/dma-api
 * (dma-direct with swiotlb, or dma-iommu when the device sits behind a DMA
 * domain; P2P pages go through their provider's map type). The dma-api
 * table is phys-based; this file builds it from the CPU side of a dma-buf
 * {@linkcode SgTable}, maps it, and copies the DMA side back (the IOMMU may
 * have merged segments, so `nents` can be smaller than `orig_nents`). The
 * dma-api table is remembered for the unmap, which also runs DMA-API debug's
 * checks (unmapping with another direction, leaks at device removal ...).
 *
 * Locking: none of its own; dma-buf callers hold the reservation lock.
 *
 * @module
 */
import type { Device, Kernel } from "@dmalab/kernel";
import {
  dmaMapSgtable as apiMapSgtable,
  dmaSyncSgtableForCpu as apiSyncForCpu,
  dmaSyncSgtableForDevice as apiSyncForDevice,
  dmaUnmapSgtable as apiUnmapSgtable,
  SgTable as ApiSgTable,
} from "@dmalab/dma-api";
import type { DmaDataDirection, SgTable } from "./scatterlist.ts";

const apiTables = new WeakMap<SgTable, ApiSgTable>();

/**
 * `dma_map_sgtable(dev, sgt, dir, attrs)`: fills the DMA side of `sgt`;
 * throws what the DMA API returns (-EIO, -EREMOTEIO, -ENOMEM, -EINVAL).
 */
export function dmaMapSgtable(
  world: Kernel,
  dev: Device,
  sgt: SgTable,
  dir: DmaDataDirection,
  attrs = 0,
): void {
  const ranges = [];
  for (let i = 0; i < sgt.origNents; i++) {
    const sg = sgt.sgl[i]!;
    const phys = sg.phys(world);
    ranges.push({ phys: phys ?? 0n, length: sg.length });
  }
  const api = new ApiSgTable(ranges);
  apiMapSgtable(dev, api, dir, attrs);
  for (let i = 0; i < api.nents; i++) {
    sgt.sgl[i]!.dmaAddress = api.sgl[i]!.dmaAddress;
    sgt.sgl[i]!.dmaLength = api.sgl[i]!.dmaLength;
  }
  sgt.nents = api.nents;
  apiTables.set(sgt, api);
}

/** `dma_unmap_sgtable(dev, sgt, dir, attrs)`: undoes {@linkcode dmaMapSgtable}. */
export function dmaUnmapSgtable(
  _world: Kernel,
  dev: Device,
  sgt: SgTable,
  dir: DmaDataDirection,
  attrs = 0,
): void {
  const api = apiTables.get(sgt);
  if (!api) {
    dev.world.bug(
      "dma-api-debug",
      `DMA-API: ${dev.name}: device driver tries to free DMA memory it has not allocated (dma-buf sg_table never mapped)`,
    );
    return;
  }
  apiUnmapSgtable(dev, api, dir, attrs);
  apiTables.delete(sgt);
  for (let i = 0; i < sgt.nents; i++) {
    sgt.sgl[i]!.dmaAddress = 0n;
    sgt.sgl[i]!.dmaLength = 0;
  }
  sgt.nents = 0;
}

/** `dma_sync_sgtable_for_cpu(dev, sgt, dir)` on a table mapped by {@linkcode dmaMapSgtable}. */
export function dmaSyncSgtableForCpu(dev: Device, sgt: SgTable, dir: DmaDataDirection): void {
  const api = apiTables.get(sgt);
  if (api) apiSyncForCpu(dev, api, dir);
}

/** `dma_sync_sgtable_for_device(dev, sgt, dir)` on a table mapped by {@linkcode dmaMapSgtable}. */
export function dmaSyncSgtableForDevice(dev: Device, sgt: SgTable, dir: DmaDataDirection): void {
  const api = apiTables.get(sgt);
  if (api) apiSyncForDevice(dev, api, dir);
}
