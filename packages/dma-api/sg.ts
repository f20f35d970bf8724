/**
 * DOC: scatterlists
 *
 * `struct scatterlist` and `struct sg_table` (include/linux/scatterlist.h),
 * reduced to what mapping needs: each entry has a CPU physical address and a
 * length (the page, offset and length of the kernel's entry), and after
 * mapping a DMA address, a DMA length and flags (`SG_DMA_BUS_ADDRESS` for a
 * P2P bus address that must not be unmapped, `SG_DMA_SWIOTLB` for bounced
 * lists). An entry may name the P2P provider that owns its memory (as the
 * page's `pgmap` does in the kernel); otherwise the provider is looked up by
 * address. A table keeps `orig_nents` (CPU entries) and `nents` (DMA
 * segments after `dma_map_sgtable`).
 *
 * Locking: owned by the caller.
 *
 * @module
 */
import type { P2pdmaProvider } from "@dmalab/pci-p2p";
import { DMA_MAPPING_ERROR } from "./attrs.ts";

/** `SG_DMA_BUS_ADDRESS`. */
export const SG_DMA_BUS_ADDRESS = 1 << 0;
/** `SG_DMA_SWIOTLB`. */
export const SG_DMA_SWIOTLB = 1 << 1;

/** One scatterlist entry. */
export interface Scatterlist {
  /** `sg_phys()`: CPU physical address of the data. */
  phys: number;
  /** Length in bytes. */
  length: number;
  /** `sg_dma_address()`. */
  dmaAddress: bigint;
  /** `sg_dma_len()`. */
  dmaLength: number;
  /** `sg->dma_flags`. */
  dmaFlags: number;
  /** The P2P provider owning `phys` (the page's pgmap), when known. */
  provider?: P2pdmaProvider | null;
}

/** A range to build a table from. */
export interface SgRange {
  /** CPU physical address. */
  phys: number | bigint;
  /** Length. */
  length: number;
  /** P2P provider owning the range. */
  provider?: P2pdmaProvider | null;
}

/** `struct sg_table`. */
export class SgTable {
  /** Entries (`sgl`). */
  readonly sgl: Scatterlist[];
  /** DMA segments after mapping (`nents`). */
  nents = 0;

  /** `sg_alloc_table` + `sg_set_page` for each range. */
  constructor(ranges: readonly SgRange[]) {
    this.sgl = ranges.map((r) => ({
      phys: Number(r.phys),
      length: r.length,
      dmaAddress: DMA_MAPPING_ERROR,
      dmaLength: 0,
      dmaFlags: 0,
      ...(r.provider !== undefined ? { provider: r.provider } : {}),
    }));
  }

  /** `orig_nents`. */
  get origNents(): number {
    return this.sgl.length;
  }

  /** The mapped DMA segments as `[address, length]` pairs. */
  dmaSegments(): [bigint, number][] {
    return this.sgl.slice(0, this.nents).map((s) => [s.dmaAddress, s.dmaLength]);
  }
}

/** `sg_dma_is_bus_address()`. */
export function sgDmaIsBusAddress(sg: Scatterlist): boolean {
  return (sg.dmaFlags & SG_DMA_BUS_ADDRESS) !== 0;
}
