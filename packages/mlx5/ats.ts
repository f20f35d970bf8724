/**
 * DOC: the ATS decision for an MR (drivers/infiniband/hw/mlx5/mlx5_ib.h,
 * `mlx5_umem_needs_ats`)
 *
 * ATS lets the NIC cache IOMMU translations and send pre-translated
 * requests. mlx5 turns it on per memory key (`ma_translation_mode = 1`),
 * because it "slows down the PCI performance": every ATC miss is a
 * Translation Request round trip to the IOMMU. It is mandatory for PCI P2P
 * behind ACS redirect and only a cost for CPU memory (Jason Gunthorpe,
 * 2025-01-08). Two rules, switched by `world.variant("mlx5.ats", ...)`:
 *
 * - `"mainline"` (default): `MLX5_CAP_GEN(ats) && umem->is_dmabuf &&
 *   (access & IB_ACCESS_RELAXED_ORDERING)`, with the kernel's comment
 *   "For now assume if the umem is a dma_buf then it is P2P": a dma-buf of
 *   system memory (a dma-heap buffer, a GPU object evicted to GTT) gets ATS
 *   too.
 * - `"p2p-aware"` (the rule the seed thread asks for): the same, and the
 *   mapping's P2P map type says PCI P2P (BUS_ADDR or THRU_HOST_BRIDGE).
 *   The model gives the importer the "P2P source information" the
 *   proposal would pass with the mapping: the map type recorded by
 *   `dma_buf_phys_vec_to_sgt` on the exporter's table, which mainline's
 *   wrapped table hides. A table of pages is CPU memory.
 *
 * Because the dynamic MR re-maps after every move, the p2p-aware decision
 * is re-taken at each fault: an object evicted from VRAM to system memory
 * loses ATS, and gets it back when it returns.
 *
 * Locking: pure decision; called with the reservation lock held when it
 * reads the mapping.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import { PciP2pdmaMapType } from "@dmalab/pci-p2p";
import { DmaBufDmaSgt, dmaBufUnwrapSgTable, type SgTable } from "@dmalab/dma-buf";

/** `IB_ACCESS_LOCAL_WRITE`. */
export const IB_ACCESS_LOCAL_WRITE = 1;
/** `IB_ACCESS_REMOTE_WRITE`. */
export const IB_ACCESS_REMOTE_WRITE = 1 << 1;
/** `IB_ACCESS_REMOTE_READ`. */
export const IB_ACCESS_REMOTE_READ = 1 << 2;
/** `IB_ACCESS_ON_DEMAND`. */
export const IB_ACCESS_ON_DEMAND = 1 << 6;
/** `IB_ACCESS_RELAXED_ORDERING` (`IB_ACCESS_OPTIONAL_FIRST`). */
export const IB_ACCESS_RELAXED_ORDERING = 1 << 20;

/** The two ATS rules. */
export type Mlx5AtsRule = "mainline" | "p2p-aware";

/** The rule `world` runs (`mlx5.ats`, default "mainline"). */
export function mlx5AtsRule(world: Kernel): Mlx5AtsRule {
  const v = world.variant("mlx5.ats", "mainline");
  if (v !== "mainline" && v !== "p2p-aware") {
    throw new Error(`mlx5.ats: unknown rule ${v} (mainline | p2p-aware)`);
  }
  return v;
}

/**
 * The P2P map type of a mapping the exporter made (the "P2P source
 * information"): the type recorded by `dma_buf_phys_vec_to_sgt`, NONE for
 * a table of CPU pages.
 */
export function mappingP2pType(sgt: SgTable): PciP2pdmaMapType {
  const inner = dmaBufUnwrapSgTable(sgt);
  return inner instanceof DmaBufDmaSgt ? inner.mapType : PciP2pdmaMapType.NONE;
}

/** Inputs of {@linkcode mlx5UmemNeedsAts}. */
export interface AtsInputs {
  /** `MLX5_CAP_GEN(dev->mdev, ats)`: the function has ATS enabled. */
  readonly capAts: boolean;
  /** `umem->is_dmabuf`. */
  readonly isDmabuf: boolean;
  /** The MR's access flags. */
  readonly access: number;
  /** Map type of the current mapping (p2p-aware rule), NONE for CPU memory. */
  readonly mapType: PciP2pdmaMapType;
}

/**
 * `mlx5_umem_needs_ats(dev, umem, access)` under `rule`.
 *
 * @example
 * ```ts
 * import { IB_ACCESS_RELAXED_ORDERING, mlx5UmemNeedsAts } from "@dmalab/mlx5";
 * import { PciP2pdmaMapType } from "@dmalab/pci-p2p";
 * const cpuMemoryDmabuf = {
 *   capAts: true,
 *   isDmabuf: true,
 *   access: IB_ACCESS_RELAXED_ORDERING,
 *   mapType: PciP2pdmaMapType.NONE,
 * };
 * mlx5UmemNeedsAts("mainline", cpuMemoryDmabuf); // true: "assume a dma_buf is P2P"
 * mlx5UmemNeedsAts("p2p-aware", cpuMemoryDmabuf); // false
 * ```
 */
export function mlx5UmemNeedsAts(rule: Mlx5AtsRule, i: AtsInputs): boolean {
  if (!i.capAts || !i.isDmabuf || !(i.access & IB_ACCESS_RELAXED_ORDERING)) return false;
  if (rule === "mainline") return true;
  return i.mapType === PciP2pdmaMapType.BUS_ADDR ||
    i.mapType === PciP2pdmaMapType.THRU_HOST_BRIDGE;
}
