/**
 * DOC: mapping a vfio dma-buf for an importer device (dma_buf_phys_vec_to_sgt)
 *
 * What drivers/dma-buf/dma-buf-mapping.c `dma_buf_phys_vec_to_sgt()` does
 * for vfio's `map_dma_buf`, by the P2P map type of the BAR's provider and
 * the importer's device (`pci_p2pdma_map_type`):
 *
 * - `BUS_ADDR`: the DMA address is the physical address plus the
 *   provider's bus offset; nothing is mapped, nothing to undo;
 * - `THRU_HOST_BRIDGE`: each range is mapped with `dma_map_phys(...,
 *   DMA_ATTR_MMIO)` (the IOVA-API single-IOVA form is not used here);
 * - anything else (`NOT_SUPPORTED`, `NONE`): -EINVAL.
 *
 * Entries are split so none exceeds `UINT_MAX` bytes; the table has DMA
 * entries only (`orig_nents = 0`). {@linkcode vfioFreeSgt} is
 * `dma_buf_free_sgt`. The dma-buf package owns the general helper; this
 * file covers the vfio exporter's needs until that helper is shared.
 *
 * Locking: called with the reservation lock held (asserted).
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import type { Device } from "@dmalab/kernel";
import {
  type DmaBufAttachment,
  type DmaDataDirection,
  type PhysVec,
  Scatterlist,
  SgTable,
} from "@dmalab/dma-buf";
import { DMA_ATTR_MMIO, DMA_MAPPING_ERROR, dmaMapPhys, dmaUnmapPhys } from "@dmalab/dma-api";
import { type P2pdmaProvider, PciP2pdmaMapType, pciP2pdmaMapType } from "@dmalab/pci-p2p";

const UINT_MAX = 2 ** 32 - 1;
/** Largest entry length: `UINT_MAX` rounded down to pages. */
const MAX_SEG = UINT_MAX - (UINT_MAX % 4096);

interface SgtRecord {
  readonly dev: Device;
  readonly mapped: { addr: bigint; len: number }[];
  readonly dir: DmaDataDirection;
}

const records = new WeakMap<SgTable, SgtRecord>();

/** `dma_buf_phys_vec_to_sgt(attach, provider, phys_vec, nr_ranges, size, dir)`. */
export function vfioPhysVecToSgt(
  attach: DmaBufAttachment,
  provider: P2pdmaProvider,
  physVec: readonly PhysVec[],
  dir: DmaDataDirection,
): SgTable {
  attach.dmabuf.resv.assertHeld("dma_buf_phys_vec_to_sgt");
  const dev = attach.dev;
  if (!dev) throw new KernelError("EINVAL", "dma_buf_phys_vec_to_sgt: attachment without a device");
  const type = pciP2pdmaMapType(provider, dev);
  if (type !== PciP2pdmaMapType.BUS_ADDR && type !== PciP2pdmaMapType.THRU_HOST_BRIDGE) {
    throw new KernelError(
      "EINVAL",
      `dma_buf_phys_vec_to_sgt: ${dev.name} cannot reach ${provider.owner.name} BAR ${provider.bar} peer to peer`,
    );
  }
  const entries: Scatterlist[] = [];
  const mapped: { addr: bigint; len: number }[] = [];
  try {
    for (const v of physVec) {
      let base: bigint;
      if (type === PciP2pdmaMapType.BUS_ADDR) base = v.paddr + provider.busOffset;
      else {
        base = dmaMapPhys(dev, v.paddr, v.len, dir as never, DMA_ATTR_MMIO);
        if (base === DMA_MAPPING_ERROR) {
          throw new KernelError(
            "ENOMEM",
            `dma_buf_phys_vec_to_sgt: dma_map_phys failed for ${dev.name}`,
          );
        }
        mapped.push({ addr: base, len: v.len });
      }
      for (let off = 0; off < v.len; off += MAX_SEG) {
        const sg = new Scatterlist(null, 0, 0);
        sg.dmaAddress = base + BigInt(off);
        sg.dmaLength = Math.min(MAX_SEG, v.len - off);
        entries.push(sg);
      }
    }
  } catch (e) {
    for (const m of mapped) dmaUnmapPhys(dev, m.addr, m.len, dir as never, DMA_ATTR_MMIO);
    throw e;
  }
  const sgt = new SgTable(entries);
  sgt.origNents = 0;
  records.set(sgt, { dev, mapped, dir });
  return sgt;
}

/** `dma_buf_free_sgt`: undoes the DMA mappings of a table from {@linkcode vfioPhysVecToSgt}. */
export function vfioFreeSgt(sgt: SgTable): void {
  const r = records.get(sgt);
  if (!r) return;
  for (const m of r.mapped) dmaUnmapPhys(r.dev, m.addr, m.len, r.dir as never, DMA_ATTR_MMIO);
  records.delete(sgt);
  sgt.free();
}
