/**
 * DOC: per-device DMA state
 *
 * What the DMA layer keeps per device beyond the masks the driver model
 * holds (`dma_mask`, `coherent_dma_mask`, `bus_dma_limit` on
 * {@linkcode Device}): the `dma_range_map` offset between CPU physical and
 * DMA addresses, `dma_parms` (`max_segment_size`, `segment_boundary_mask`,
 * `min_align_mask`), whether swiotlb bouncing is forced
 * (`is_swiotlb_force_bounce`, as for confidential-computing guests), and
 * whether the device goes through dma-iommu (`dev->dma_iommu`, true while
 * its group sits on a DMA-API domain). Stored in the device's `dmaOps` slot.
 *
 * Locking: set up at probe, read on every mapping; no locking needed.
 *
 * @module
 */
import type { Device } from "@dmalab/kernel";
import { iommuCoreOf, type IommuDomain } from "@dmalab/iommu";

/** Options for {@linkcode dmaDevSetup}. */
export interface DmaDevOptions {
  /** `dma_range_map`: DMA address = CPU physical address + this offset (default 0). */
  dmaOffset?: number;
  /** `is_swiotlb_force_bounce()`: bounce every streaming mapping. */
  forceBounce?: boolean;
  /** `dma_parms->max_segment_size` (default 64 KiB, `dma_get_max_seg_size`). */
  maxSegSize?: number;
  /** `dma_parms->segment_boundary_mask` (default 0xffffffff). */
  segBoundaryMask?: number;
  /** `dma_parms->min_align_mask` (default 0). */
  minAlignMask?: number;
}

/** The DMA state of one device. */
export class DmaDev {
  /** The device. */
  readonly dev: Device;
  /** Physical-to-DMA offset. */
  dmaOffset: number;
  /** Forced bouncing. */
  forceBounce: boolean;
  /** Max DMA segment. */
  maxSegSize: number;
  /** Segment boundary mask. */
  segBoundaryMask: number;
  /** Min align mask. */
  minAlignMask: number;

  /** Use {@linkcode dmaDev}. */
  constructor(dev: Device, o: DmaDevOptions = {}) {
    this.dev = dev;
    this.dmaOffset = o.dmaOffset ?? 0;
    this.forceBounce = o.forceBounce ?? false;
    this.maxSegSize = o.maxSegSize ?? 65536;
    this.segBoundaryMask = o.segBoundaryMask ?? 0xffff_ffff;
    this.minAlignMask = o.minAlignMask ?? 0;
  }

  /** The DMA-API domain when the device uses dma-iommu (`dev->dma_iommu`), else null. */
  get dmaDomain(): IommuDomain | null {
    const d = iommuCoreOf(this.dev.world)?.domainFor(this.dev) ?? null;
    return d && d.isDmaApi ? d : null;
  }
}

/** The DMA state of `dev` (created with defaults on first use). */
export function dmaDev(dev: Device): DmaDev {
  if (!(dev.dmaOps instanceof DmaDev)) dev.dmaOps = new DmaDev(dev);
  return dev.dmaOps as DmaDev;
}

/** Sets the DMA state of `dev` (`dma_set_max_seg_size`, range map, forced bounce). */
export function dmaDevSetup(dev: Device, options: DmaDevOptions): DmaDev {
  const d = dmaDev(dev);
  if (options.dmaOffset !== undefined) d.dmaOffset = options.dmaOffset;
  if (options.forceBounce !== undefined) d.forceBounce = options.forceBounce;
  if (options.maxSegSize !== undefined) d.maxSegSize = options.maxSegSize;
  if (options.segBoundaryMask !== undefined) d.segBoundaryMask = options.segBoundaryMask;
  if (options.minAlignMask !== undefined) d.minAlignMask = options.minAlignMask;
  return d;
}

/** `min_not_zero(*dev->dma_mask, dev->bus_dma_limit)` as a number (capped at 2^53-1). */
export function dmaLimit(dev: Device, coherent = false): number {
  let m = coherent ? dev.coherentDmaMask : dev.dmaMask;
  if (dev.busDmaLimit && dev.busDmaLimit < m) m = dev.busDmaLimit;
  return m >= BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(m);
}
