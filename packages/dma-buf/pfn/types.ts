/**
 * DOC: types of the pfn access mechanisms
 *
 * Shared types of the three proposals modelled in this directory (see
 * `rfc-lineage.md` §1, §2.2, §2.6): the memory models of Simona Vetter's
 * separate pfn attachment, the ranges it hands out with their P2P source,
 * `struct phys_vec` and the Physical Address List of the mapping-types RFC.
 *
 * Locking: data only.
 *
 * @module
 */
import type { P2pdmaProvider } from "@dmalab/pci-p2p";
import type { DmaBuf } from "../buf/dma_buf.ts";

/**
 * The memory models made explicit (Vetter, 2025-01-14; Gunthorpe's cascade):
 * - `pinned`: fixed for the life of the attachment;
 * - `dynamic`: may move; the importer is told (invalidate) and re-maps;
 * - `revocable`: pinned until revoked; after the invalidate re-acquiring
 *   never works (PCI MMIO).
 */
export type PfnMemoryModel = "pinned" | "dynamic" | "revocable";

/** `struct phys_vec` (v6.19 `dma_buf_phys_vec`): one physically contiguous range. */
export interface PhysVec {
  /** `paddr`. */
  readonly paddr: bigint;
  /** `len` in bytes. */
  readonly len: number;
}

/** `struct dma_buf_phys_list` of the mapping-types RFC. */
export interface DmaBufPhysList {
  /** `length`: number of entries. */
  readonly length: number;
  /** `phys[]`. */
  readonly phys: readonly PhysVec[];
  /** Whether the entries are MMIO (the RFC assumes so for now). */
  readonly mmio: boolean;
}

/** One range handed out by a pfn attachment: pfns plus the P2P source information. */
export interface DmaBufPfnRange {
  /** First pfn. */
  readonly pfn: number;
  /** Number of pages. */
  readonly npages: number;
  /** Page offset inside the dma-buf of the first page. */
  readonly pgoff: number;
  /** The P2P provider owning the range, or null for host memory. */
  readonly provider: P2pdmaProvider | null;
  /** True for MMIO (no struct page; map with DMA_ATTR_MMIO / IOMMU_MMIO). */
  readonly mmio: boolean;
  /** Largest naturally aligned order usable for huge mappings. */
  readonly maxOrder: number;
}

/** `struct dma_buf_pfn_attach_ops`: the importer side of a pfn attachment. */
export interface DmaBufPfnAttachOps {
  /** Memory models this importer can live with (a compositor refuses `revocable`). */
  readonly acceptModels: readonly PfnMemoryModel[];
  /** Called with the reservation lock held: drop every pfn taken from this attachment. */
  invalidate(pa: DmaBufPfnAttachment): void;
}

/** A pfn attachment, as {@linkcode DmaBufPfnAttachment} in pfn_attachment.ts; declared here for the ops table. */
export interface DmaBufPfnAttachment {
  /** The buffer. */
  readonly dmabuf: DmaBuf;
  /** The importer's ops. */
  readonly importerOps: DmaBufPfnAttachOps;
  /** The importer's private data. */
  readonly importerPriv: unknown;
  /** Exporter data per attachment. */
  priv: unknown;
  /** The memory model agreed at attach time. */
  readonly model: PfnMemoryModel;
}
