/**
 * DOC: dma_buf_phys_vec_to_sgt (drivers/dma-buf/dma-buf-mapping.c, v6.19)
 *
 * The helper an MMIO exporter (vfio-pci BARs) uses in `map_dma_buf`: turn
 * a list of physical ranges owned by one P2P provider into a DMA-only
 * sg_table for the attachment's device. The route decides the addresses
 * (`pci_p2pdma_map_type(provider, attach->dev)`):
 * - `BUS_ADDR` (the path stays below a switch): PCI bus addresses
 *   (`paddr + bus_offset`), nothing mapped;
 * - `THRU_HOST_BRIDGE`: `dma_iova_try_alloc` for the whole size; when the
 *   device uses an IOMMU each range is `dma_iova_link`ed with
 *   `DMA_ATTR_MMIO`, one `dma_iova_sync`, and the table holds one
 *   contiguous IOVA; otherwise each range is `dma_map_phys(...,
 *   DMA_ATTR_MMIO)`;
 * - anything else (NOT_SUPPORTED, NONE): -EINVAL.
 * A table with no entries (no ranges, or only empty ones) is -EINVAL from
 * `sg_alloc_table`; a failed `dma_map_phys` is -ENOMEM (`dma_mapping_error`).
 * (The kernel source passes offset 0 to every `dma_iova_link`, which only
 * works for one range; the model links range i at the sum of the earlier
 * lengths, which is what the single contiguous IOVA entry describes.)
 * Entries are split at UINT_MAX bytes; the table has no CPU side
 * (`orig_nents = 0`, no pages). {@linkcode dmaBufFreeSgt} undoes it.
 *
 * Locking: both require the buffer's reservation lock (asserted).
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import {
  DMA_ATTR_MMIO,
  dmaIovaDestroy,
  dmaIovaLink,
  DmaIovaState,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  dmaUseIova,
} from "@dmalab/dma-api";
import {
  type P2pdmaProvider,
  pciP2pdmaBusAddrMap,
  PciP2pdmaMapType,
  pciP2pdmaMapType,
} from "@dmalab/pci-p2p";
import type { DmaBufAttachment } from "../buf/attachment.ts";
import { dmaBufAssertResvHeld } from "../buf/locking.ts";
import type { PhysVec } from "../pfn/types.ts";
import { type DmaDataDirection, Scatterlist, SgTable, UINT_MAX } from "./scatterlist.ts";

/** The table `dma_buf_phys_vec_to_sgt` returns (`struct dma_buf_dma`). */
export class DmaBufDmaSgt extends SgTable {
  /** `state`: the IOVA state (null for BUS_ADDR). */
  readonly state: DmaIovaState | null;
  /** `size`. */
  readonly size: number;
  /** The map type chosen. */
  readonly mapType: PciP2pdmaMapType;

  /** Built by {@linkcode dmaBufPhysVecToSgt}. */
  constructor(
    entries: Scatterlist[],
    state: DmaIovaState | null,
    size: number,
    mapType: PciP2pdmaMapType,
  ) {
    super(entries);
    this.origNents = 0;
    this.state = state;
    this.size = size;
    this.mapType = mapType;
  }
}

function fill(entries: Scatterlist[], length: number, addr: bigint): void {
  const n = Math.ceil(length / UINT_MAX);
  for (let i = 0; i < n; i++) {
    const len = Math.min(length, UINT_MAX);
    length -= len;
    const sg = new Scatterlist(null, 0, 0);
    sg.dmaAddress = addr + BigInt(i) * BigInt(UINT_MAX);
    sg.dmaLength = len;
    entries.push(sg);
  }
}

/**
 * `dma_buf_phys_vec_to_sgt(attach, provider, phys_vec, nr_ranges, size, dir)`.
 *
 * @example
 * ```ts ignore
 * // in a vfio-like exporter's map_dma_buf, with the resv lock held:
 * return dmaBufPhysVecToSgt(attach, provider, [{ paddr: barStart, len: 1 << 20 }], 1 << 20, dir);
 * ```
 */
export function dmaBufPhysVecToSgt(
  attach: DmaBufAttachment,
  provider: P2pdmaProvider | null,
  physVec: readonly PhysVec[],
  size: number,
  dir: DmaDataDirection,
): DmaBufDmaSgt {
  const buf = attach.dmabuf;
  dmaBufAssertResvHeld(buf, "dma_buf_phys_vec_to_sgt");
  const dev = attach.dev;
  if (!provider || !dev) {
    buf.world.warnOn(true, "dma_buf_phys_vec_to_sgt: no provider (MMIO only) or no device");
    throw new KernelError("EINVAL", "dma_buf_phys_vec_to_sgt: MMIO with a provider only");
  }
  const mapType = pciP2pdmaMapType(provider, dev);
  let state: DmaIovaState | null = null;
  if (mapType === PciP2pdmaMapType.THRU_HOST_BRIDGE) {
    state = new DmaIovaState();
    dmaIovaTryAlloc(dev, state, 0, size);
  } else if (mapType !== PciP2pdmaMapType.BUS_ADDR) {
    throw new KernelError(
      "EINVAL",
      `dma_buf_phys_vec_to_sgt: ${dev.name} cannot reach the provider (map type ${mapType})`,
    );
  }
  const iova = state !== null && dmaUseIova(state);
  // calc_sg_nents: no entries (no ranges, all empty, or a count overflow) makes
  // sg_alloc_table fail with -EINVAL before anything is mapped
  let nents = 0;
  if (iova) nents = Math.ceil(size / UINT_MAX);
  else for (const v of physVec) nents += Math.ceil(v.len / UINT_MAX);
  if (nents === 0 || nents > UINT_MAX) {
    throw new KernelError(
      "EINVAL",
      `dma_buf_phys_vec_to_sgt: no scatterlist entries for ${physVec.length} range(s) (sg_alloc_table)`,
    );
  }
  const entries: Scatterlist[] = [];
  let mapped = 0;
  try {
    for (const v of physVec) {
      if (!state) {
        fill(entries, v.len, pciP2pdmaBusAddrMap(provider, v.paddr));
      } else if (iova) {
        dmaIovaLink(dev, state, v.paddr, mapped, v.len, dir, DMA_ATTR_MMIO);
        mapped += v.len;
      } else {
        const addr = dmaMapPhys(dev, v.paddr, v.len, dir, DMA_ATTR_MMIO);
        if (dmaMappingError(dev, addr)) {
          // dma_mapping_error() itself returns -ENOMEM, which is what the caller sees
          throw new KernelError(
            "ENOMEM",
            `dma_buf_phys_vec_to_sgt: dma_map_phys failed for ${dev.name} (dma_mapping_error)`,
          );
        }
        fill(entries, v.len, addr);
      }
    }
    if (iova) {
      buf.world.warnOn(
        mapped !== size,
        `dma_buf_phys_vec_to_sgt: mapped ${mapped} of ${size} bytes`,
      );
      dmaIovaSync(dev, state!, 0, mapped);
      fill(entries, mapped, BigInt(state!.addr));
    }
  } catch (e) {
    if (state && iova) {
      if (mapped) dmaIovaDestroy(dev, state, mapped, dir, DMA_ATTR_MMIO);
    } else if (state) {
      for (const sg of entries) dmaUnmapPhys(dev, sg.dmaAddress, sg.dmaLength, dir, DMA_ATTR_MMIO);
    }
    throw e;
  }
  return new DmaBufDmaSgt(entries, state, size, mapType);
}

/** `dma_buf_free_sgt(attach, sgt, dir)`: unmaps a table from {@linkcode dmaBufPhysVecToSgt}. */
export function dmaBufFreeSgt(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void {
  dmaBufAssertResvHeld(attach.dmabuf, "dma_buf_free_sgt");
  if (!(sgt instanceof DmaBufDmaSgt)) {
    attach.dmabuf.world.bug(
      "WARN",
      "WARNING: dma_buf_free_sgt: table did not come from dma_buf_phys_vec_to_sgt",
    );
    return;
  }
  const dev = attach.dev!;
  if (!sgt.state) {
    // bus addresses: nothing was mapped
  } else if (dmaUseIova(sgt.state)) {
    dmaIovaDestroy(dev, sgt.state, sgt.size, dir, DMA_ATTR_MMIO);
  } else {
    for (const sg of sgt.dmaEntries()) {
      dmaUnmapPhys(dev, sg.dmaAddress, sg.dmaLength, dir, DMA_ATTR_MMIO);
    }
  }
  sgt.free();
}
