/**
 * DOC: DMA translation
 *
 * What happens to a DMA request a device sends upstream, as the IOMMU
 * hardware handles it:
 * - no IOMMU covers the device, or its group is on an identity domain: the
 *   address is the physical address;
 * - blocked domain: fault (VT-d reason 0x02, no usable context);
 * - paging domain: an ATS-enabled device first looks in its device TLB (a
 *   hit sends a translated request that the IOMMU passes through); on a miss
 *   it sends a Translation Request. The IOMMU looks in its IOTLB under the
 *   domain's DID; a miss walks the page table (the miss penalty) and fills
 *   the IOTLB. No leaf: fault 0x06/0x05 (read/write); a leaf without the
 *   needed R or W bit: the same faults. A faulting request fails with
 *   {@linkcode IommuFaultError} and is recorded in the unit's fault log.
 * Cached translations stay usable until invalidated, so a device can still
 * reach a page after its PTE was cleared in lazy mode, until the flush.
 *
 * Locking: none beyond the caches' atomicity; callable from any context.
 *
 * @module
 */
import { type Device, KernelError } from "@dmalab/kernel";
import { iommuCoreOf } from "./core.ts";
import type { IommuFault } from "./unit.ts";
import { IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE } from "./prot.ts";
import type { TlbEntry } from "./iotlb.ts";

const SIZES = [2 ** 12, 2 ** 21, 2 ** 30];

/** A DMA request the IOMMU refused. */
export class IommuFaultError extends KernelError {
  /** The fault record. */
  readonly fault: IommuFault;

  /** Wraps `fault`. */
  constructor(fault: IommuFault) {
    super(
      "EIO",
      `DMA ${fault.write ? "write" : "read"} by ${fault.dev} at IOVA 0x${
        fault.iova.toString(16)
      } faulted: ${fault.reasonText}`,
    );
    this.name = "IommuFaultError";
    this.fault = fault;
  }
}

/** Result of {@linkcode iommuTranslate}. */
export interface Translation {
  /** Physical address of `iova`. */
  phys: number;
  /** Bytes from `phys` to the end of the leaf (how far the translation holds). */
  span: number;
  /** The mapping is `IOMMU_MMIO`. */
  mmio: boolean;
}

/** Options of {@linkcode iommuTranslate}. */
export interface TranslateOptions {
  /**
   * The device sends an untranslated request even though ATS is enabled
   * (mlx5 mkeys without `ma_translation_mode`): the device TLB is skipped
   * and the IOMMU translates in its IOTLB.
   */
  untranslated?: boolean;
}

/**
 * Translates one DMA request of `dev` at `iova` (see the module doc).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { iommuSetup, iommuTranslate, IOMMU_READ } from "@dmalab/iommu";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * const iommu = iommuSetup(world);
 * const dom = iommu.pagingDomainAlloc(m.nvme);
 * iommu.attachDevice(dom, m.nvme);
 * dom.map(0x1000, 0x8000_0000, 0x1000, IOMMU_READ);
 * iommuTranslate(m.nvme, 0x1010, false).phys; // 0x8000_0010
 * ```
 */
export function iommuTranslate(
  dev: Device,
  iova: number,
  write: boolean,
  options: TranslateOptions = {},
): Translation {
  const core = iommuCoreOf(dev.world);
  const info = core?.devIommu(dev) ?? null;
  if (!info) return { phys: iova, span: Number.MAX_SAFE_INTEGER - iova, mmio: false };
  const st = info.stats;
  st.translations++;
  const unit = info.unit;
  const domain = info.group.domain;
  const fault = (reason: number): never => {
    st.faults++;
    const rec = unit.recordFault(dev, iova, write, reason);
    domain?.faultHandler?.(dev, iova, write); // report_iommu_fault()
    throw new IommuFaultError(rec);
  };
  if (!domain || domain.type === "blocked") return fault(0x02);
  if (domain.type === "identity") {
    return { phys: iova, span: Number.MAX_SAFE_INTEGER - iova, mmio: false };
  }
  let e: TlbEntry | null = null;
  const atc = options.untranslated ? null : unit.devTlb(dev);
  if (atc) {
    const before = atc.stats.costNs;
    e = atc.lookup(0, iova);
    st.costNs += atc.stats.costNs - before;
    if (e) st.atcHits++;
    else st.atcMisses++;
  }
  if (!e) {
    const did = unit.did(domain);
    const before = unit.iotlb.stats.costNs;
    e = unit.iotlb.lookup(did, iova);
    st.costNs += unit.iotlb.stats.costNs - before;
    if (e) {
      st.iotlbHits++;
    } else {
      st.iotlbMisses++;
      const pt = domain.pgtable!;
      if (!pt.walk(iova)) return fault(write ? 0x05 : 0x06);
      e = { oa: pt.lookupOa, level: pt.lookupLevel, bits: pt.lookupBits };
      unit.iotlb.fill(did, iova, e);
    }
    if (atc) atc.fill(0, iova, e);
  }
  const prot = domain.pgtable!.protOf(e.bits);
  if (!(prot & (write ? IOMMU_WRITE : IOMMU_READ))) return fault(write ? 0x05 : 0x06);
  const size = SIZES[e.level]!;
  const off = iova % size;
  return { phys: e.oa + off, span: size - off, mmio: (prot & IOMMU_MMIO) !== 0 };
}
