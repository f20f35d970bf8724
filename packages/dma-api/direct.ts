/**
 * DOC: dma-direct
 *
 * kernel/dma/direct.c for devices without DMA translation: the DMA address
 * is the physical address plus the device's `dma_range_map` offset. A
 * mapping the device cannot reach (`dma_capable`: the end must not exceed
 * `min_not_zero(dma_mask, bus_dma_limit)`) is bounced through swiotlb; if
 * that is impossible (`DMA_ATTR_MMIO`, or the bounce slot itself is out of
 * reach) the kernel WARNs once per device ("DMA addr ... overflow") and
 * returns `DMA_MAPPING_ERROR`. Forced bouncing sends every streaming mapping
 * through swiotlb. Unmap and sync copy bounced data back as swiotlb
 * prescribes. Coherent allocations come from the zone the coherent mask
 * allows (ZONE_DMA for masks up to 24 bits, ZONE_DMA32 up to 32 bits) and
 * are zeroed.
 *
 * Locking: callable from atomic context (allocation aside); atomic here.
 *
 * @module
 */
import type { Device } from "@dmalab/kernel";
import {
  DMA_ATTR_MMIO,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_MAPPING_ERROR,
  type DmaDirection,
} from "./attrs.ts";
import { dmaDev, dmaLimit } from "./state.ts";
import { swiotlbOf } from "./swiotlb.ts";

const warned = new WeakSet<Device>();

/** `dev_WARN_ONCE`. */
export function devWarnOnce(dev: Device, msg: string): void {
  if (warned.has(dev)) return;
  warned.add(dev);
  dev.world.bug("WARN", `WARNING: ${dev.bus?.name ?? ""} ${dev.name}: ${msg}`);
}

/** `phys_to_dma()`. */
export function physToDma(dev: Device, phys: number): number {
  return phys + dmaDev(dev).dmaOffset;
}

/** `dma_to_phys()`. */
export function dmaToPhys(dev: Device, dma: number): number {
  return dma - dmaDev(dev).dmaOffset;
}

/** `dma_capable(dev, addr, size, is_ram)`. */
export function dmaCapable(dev: Device, addr: number, size: number, coherent = false): boolean {
  if (size === 0) return addr <= dmaLimit(dev, coherent);
  return addr + size - 1 <= dmaLimit(dev, coherent);
}

function overflow(dev: Device, dma: number, size: number, what = "DMA addr"): bigint {
  devWarnOnce(
    dev,
    `${what} 0x${dma.toString(16).padStart(16, "0")}+${size} overflow (mask ${
      dev.dmaMask.toString(16)
    }, bus limit ${dev.busDmaLimit.toString(16)}).`,
  );
  return DMA_MAPPING_ERROR;
}

/** `swiotlb_map()`: bounce `[phys, phys+size)`; DMA_MAPPING_ERROR when full or unreachable. */
export function swiotlbMap(dev: Device, phys: number, size: number, allocAlignMask = 0): bigint {
  const pool = swiotlbOf(dev.world);
  const tlb = pool.map(dev, phys, size, allocAlignMask);
  if (tlb === null) return DMA_MAPPING_ERROR;
  const dma = physToDma(dev, tlb);
  if (!dmaCapable(dev, dma, size)) {
    pool.release(tlb);
    return overflow(dev, dma, size, "swiotlb addr");
  }
  return BigInt(dma);
}

/** `swiotlb_tbl_unmap_single()`: copy back (FROM_DEVICE/BIDIRECTIONAL, unless SKIP_CPU_SYNC), release. */
export function swiotlbUnmap(
  dev: Device,
  tlb: number,
  size: number,
  dir: DmaDirection,
  attrs: number,
): void {
  const pool = swiotlbOf(dev.world);
  if (
    !(attrs & DMA_ATTR_SKIP_CPU_SYNC) &&
    (dir === "DMA_FROM_DEVICE" || dir === "DMA_BIDIRECTIONAL")
  ) {
    pool.bounce(tlb, size, "DMA_FROM_DEVICE");
  }
  pool.release(tlb);
}

/** `dma_direct_map_phys()`. */
export function dmaDirectMapPhys(
  dev: Device,
  phys: number,
  size: number,
  _dir: DmaDirection,
  attrs: number,
): bigint {
  const dd = dmaDev(dev);
  if (dd.forceBounce) {
    if (attrs & DMA_ATTR_MMIO) return DMA_MAPPING_ERROR;
    return swiotlbMap(dev, phys, size);
  }
  if (attrs & DMA_ATTR_MMIO) {
    if (!dmaCapable(dev, phys, size)) return overflow(dev, phys, size);
    return BigInt(phys);
  }
  const dma = physToDma(dev, phys);
  if (!dmaCapable(dev, dma, size)) return swiotlbMap(dev, phys, size);
  return BigInt(dma);
}

/** `dma_direct_unmap_phys()`. */
export function dmaDirectUnmapPhys(
  dev: Device,
  addr: bigint,
  size: number,
  dir: DmaDirection,
  attrs: number,
): void {
  if (attrs & DMA_ATTR_MMIO) return;
  const phys = dmaToPhys(dev, Number(addr));
  if (swiotlbOf(dev.world).isSwiotlbBuffer(phys)) swiotlbUnmap(dev, phys, size, dir, attrs);
}

/** `dma_direct_sync_single_for_cpu()` (swiotlb copy-back; caches are coherent). */
export function dmaDirectSyncForCpu(
  dev: Device,
  addr: bigint,
  size: number,
  dir: DmaDirection,
): void {
  const phys = dmaToPhys(dev, Number(addr));
  const pool = swiotlbOf(dev.world);
  if (!pool.isSwiotlbBuffer(phys)) return;
  if (dir === "DMA_FROM_DEVICE" || dir === "DMA_BIDIRECTIONAL") {
    pool.bounce(phys, size, "DMA_FROM_DEVICE");
  }
}

/** `dma_direct_sync_single_for_device()`. */
export function dmaDirectSyncForDevice(
  dev: Device,
  addr: bigint,
  size: number,
  dir: DmaDirection,
): void {
  const phys = dmaToPhys(dev, Number(addr));
  const pool = swiotlbOf(dev.world);
  if (!pool.isSwiotlbBuffer(phys)) return;
  if (dir === "DMA_TO_DEVICE" || dir === "DMA_BIDIRECTIONAL") {
    pool.bounce(phys, size, "DMA_TO_DEVICE");
  }
}

/** The zone `dma_direct_alloc` allocates from for the coherent mask. */
export function directAllocZone(dev: Device): "DMA" | "DMA32" | "Normal" {
  const lim = dmaLimit(dev, true);
  if (lim <= 0xff_ffff) return "DMA";
  if (lim <= 0xffff_ffff) return "DMA32";
  return "Normal";
}
