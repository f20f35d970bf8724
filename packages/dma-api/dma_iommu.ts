/**
 * DOC: dma-iommu
 *
 * drivers/iommu/dma-iommu.c: the DMA API on top of a DMA-API IOMMU domain.
 * - The cookie (`iommu_dma_init_domain`) is an {@linkcode IovaDomain} with
 *   the domain's smallest page as granule, starting at pfn 1, with the
 *   reserved regions taken out: the x86 MSI window 0xfee00000-0xfeefffff
 *   and, for PCI devices, the bus-address ranges of the host bridge windows
 *   (`iova_reserve_pci_windows`), so an IOVA never aliases a P2P bus address.
 * - `iommu_dma_alloc_iova`: limit = min(mask, bus_dma_limit, aperture);
 *   PCI devices try below 4 GiB first (a SAC address), then the full limit.
 * - `__iommu_dma_map`: keep the sub-granule offset, map granule-aligned,
 *   free the IOVA if `iommu_map` fails.
 * - `__iommu_dma_unmap`: strict domains unmap and sync at once and free the
 *   IOVA; `dma-fq` (lazy) domains gather with `queued` set and hand IOVA and
 *   freed tables to the flush queue, so the IOVA is reused only after the
 *   batched flush.
 * - `dma_info_to_prot`: CACHE for coherent devices, READ for TO_DEVICE,
 *   WRITE for FROM_DEVICE, both for BIDIRECTIONAL; `DMA_ATTR_MMIO` gives
 *   `IOMMU_MMIO` instead of `IOMMU_CACHE`.
 * - Untrusted devices bounce buffers that do not fill whole granules through
 *   swiotlb (`dev_use_swiotlb` + `iova_unaligned`).
 * - `iommu_dma_map_sg`: one IOVA allocation for the whole list, each entry
 *   granule-aligned, padded so no entry straddles the segment boundary;
 *   `__finalise_sg` merges entries that continue on a granule boundary into
 *   DMA segments up to `max_segment_size`; P2P bus-address entries keep
 *   their bus address and are skipped; THRU_HOST_BRIDGE entries map with
 *   `IOMMU_MMIO`; NOT_SUPPORTED fails with -EREMOTEIO.
 *
 * Locking: atomic context allowed (GFP_ATOMIC maps); atomic in the model.
 *
 * @module
 */
import type { Device } from "@dmalab/kernel";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  IommuIotlbGather,
} from "@dmalab/iommu";
import { devIsPci, P2pdmaMapState, pciFabric, PciP2pdmaMapType } from "@dmalab/pci-p2p";
import {
  DMA_ATTR_MMIO,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_MAPPING_ERROR,
  type DmaDirection,
} from "./attrs.ts";
import { IovaDomain } from "./iova.ts";
import { p2pdmaState } from "./p2p.ts";
import { SG_DMA_BUS_ADDRESS, SG_DMA_SWIOTLB, type SgTable } from "./sg.ts";
import { dmaDev, dmaLimit } from "./state.ts";
import { swiotlbUnmap } from "./direct.ts";
import { swiotlbOf } from "./swiotlb.ts";

const SZ_4G = 2 ** 32;

/** `struct iommu_dma_cookie`. */
export interface IommuDmaCookie {
  /** The IOVA allocator. */
  readonly iovad: IovaDomain;
  /** Granule (smallest page). */
  readonly granule: number;
}

/** `iommu_dma_init_domain()` (on first use of the domain by `dev`). */
export function dmaCookie(domain: IommuDomain, dev: Device): IommuDmaCookie {
  if (domain.dmaCookie) return domain.dmaCookie as IommuDmaCookie;
  const granule = domain.minPagesz;
  const iovad = new IovaDomain(granule, Math.max(1, Math.floor(domain.apertureStart / granule)));
  const reserve = (start: number, end: number) => {
    iovad.reserveIova(Math.floor(start / granule), Math.floor(end / granule));
  };
  reserve(0xfee0_0000, 0xfeef_ffff); // IOMMU_RESV_MSI on x86
  if (devIsPci(dev)) {
    for (const w of dev.host.windows) {
      const bus = Number(w.cpuStart + w.busOffset);
      const end = bus + Number(w.size) - 1;
      if (bus <= domain.apertureEnd) reserve(bus, Math.min(end, domain.apertureEnd));
    }
  }
  const c: IommuDmaCookie = { iovad, granule };
  domain.dmaCookie = c;
  return c;
}

/** `dma_info_to_prot()`. */
export function dmaInfoToProt(dir: DmaDirection, coherent: boolean, attrs: number): number {
  let prot = attrs & DMA_ATTR_MMIO ? IOMMU_MMIO : coherent ? IOMMU_CACHE : 0;
  if (dir === "DMA_BIDIRECTIONAL") prot |= IOMMU_READ | IOMMU_WRITE;
  else if (dir === "DMA_TO_DEVICE") prot |= IOMMU_READ;
  else if (dir === "DMA_FROM_DEVICE") prot |= IOMMU_WRITE;
  return prot;
}

/** `dev_is_untrusted()`. */
export function devIsUntrusted(dev: Device): boolean {
  return devIsPci(dev) && dev.untrusted;
}

/** `iommu_dma_alloc_iova()`: returns the IOVA or 0. */
export function iommuDmaAllocIova(
  domain: IommuDomain,
  size: number,
  dmaLimitAddr: number,
  dev: Device,
): number {
  const c = dmaCookie(domain, dev);
  const len = size / c.granule;
  let limit = dmaLimitAddr;
  if (dev.busDmaLimit && Number(dev.busDmaLimit) < limit) limit = Number(dev.busDmaLimit);
  limit = Math.min(limit, domain.apertureEnd);
  let pfn = 0;
  if (limit > SZ_4G - 1 && devIsPci(dev)) {
    pfn = c.iovad.allocIovaFast(len, Math.floor((SZ_4G - 1) / c.granule), false);
  }
  if (!pfn) pfn = c.iovad.allocIovaFast(len, Math.floor(limit / c.granule), true);
  return pfn * c.granule;
}

/** `iommu_dma_free_iova()`: to the flush queue when the gather is queued, else to the allocator. */
export function iommuDmaFreeIova(
  domain: IommuDomain,
  iova: number,
  size: number,
  gather: IommuIotlbGather | null,
): void {
  const c = domain.dmaCookie as IommuDmaCookie;
  const pfn = iova / c.granule;
  const pages = size / c.granule;
  if (gather && gather.queued && domain.fq) {
    domain.fq.queue(() => c.iovad.freeIovaFast(pfn, pages), gather);
  } else {
    c.iovad.freeIovaFast(pfn, pages);
  }
}

function ivaAlign(c: IommuDmaCookie, n: number): number {
  return Math.ceil(n / c.granule) * c.granule;
}

/** `__iommu_dma_map()`: returns the DMA address or DMA_MAPPING_ERROR. */
export function iommuDmaMapRaw(
  dev: Device,
  domain: IommuDomain,
  phys: number,
  size: number,
  prot: number,
  mask: number,
): bigint {
  const c = dmaCookie(domain, dev);
  const off = phys % c.granule;
  const len = ivaAlign(c, size + off);
  const iova = iommuDmaAllocIova(domain, len, mask, dev);
  if (!iova) return DMA_MAPPING_ERROR;
  try {
    domain.map(iova, phys - off, len, prot);
  } catch {
    iommuDmaFreeIova(domain, iova, len, null);
    return DMA_MAPPING_ERROR;
  }
  return BigInt(iova + off);
}

/** `__iommu_dma_unmap()`. */
export function iommuDmaUnmapRaw(
  dev: Device,
  domain: IommuDomain,
  addr: number,
  size: number,
): void {
  const c = dmaCookie(domain, dev);
  const off = addr % c.granule;
  const iova = addr - off;
  const len = ivaAlign(c, size + off);
  const g = new IommuIotlbGather();
  g.queued = domain.fq !== null && !devIsUntrusted(dev);
  const n = domain.unmapFast(iova, len, g);
  dev.world.warnOn(
    n !== len,
    `__iommu_dma_unmap: unmapped 0x${n.toString(16)} of 0x${len.toString(16)}`,
  );
  if (!g.queued) domain.iotlbSync(g);
  iommuDmaFreeIova(domain, iova, len, g);
}

/** `iommu_dma_map_phys()`. */
export function iommuDmaMapPhys(
  dev: Device,
  domain: IommuDomain,
  phys: number,
  size: number,
  dir: DmaDirection,
  attrs: number,
): bigint {
  const c = dmaCookie(domain, dev);
  let p = phys;
  if (devIsUntrusted(dev) && (phys % c.granule || size % c.granule)) {
    if (attrs & DMA_ATTR_MMIO) return DMA_MAPPING_ERROR;
    const tlb = iommuDmaBounce(dev, c, phys, size, dir, attrs);
    if (tlb === null) return DMA_MAPPING_ERROR;
    p = tlb;
  }
  const prot = dmaInfoToProt(dir, dev.dmaCoherent, attrs);
  const r = iommuDmaMapRaw(dev, domain, p, size, prot, dmaLimit(dev));
  if (r === DMA_MAPPING_ERROR && p !== phys) swiotlbUnmap(dev, p, size, dir, attrs);
  return r;
}

/**
 * `iommu_dma_map_swiotlb()`: bounce `[phys, phys+size)` into a slot that keeps
 * the offset within the IOVA granule, and zero the rest of the granules the
 * IOMMU will expose (the padding), so an untrusted device sees nothing else.
 * Returns the bounce buffer's physical address, or null.
 */
export function iommuDmaBounce(
  dev: Device,
  c: IommuDmaCookie,
  phys: number,
  size: number,
  dir: DmaDirection,
  attrs: number,
): number | null {
  const pool = swiotlbOf(dev.world);
  const tlb = pool.map(dev, phys, size, c.granule - 1);
  if (tlb === null) return null;
  const start = tlb - (tlb % c.granule);
  const end = start + ivaAlign(c, size + (tlb % c.granule));
  const copied = !(attrs & DMA_ATTR_SKIP_CPU_SYNC) &&
    (dir === "DMA_TO_DEVICE" || dir === "DMA_BIDIRECTIONAL");
  if (!copied) dev.world.mem.fill(tlb, size, 0);
  if (tlb > start) dev.world.mem.fill(start, tlb - start, 0);
  if (end > tlb + size) dev.world.mem.fill(tlb + size, end - (tlb + size), 0);
  return tlb;
}

/** `iommu_dma_unmap_phys()`. */
export function iommuDmaUnmapPhys(
  dev: Device,
  domain: IommuDomain,
  addr: bigint,
  size: number,
  dir: DmaDirection,
  attrs: number,
): void {
  const a = Number(addr);
  const phys = domain.iovaToPhys(a);
  iommuDmaUnmapRaw(dev, domain, a, size);
  if (devIsUntrusted(dev) && swiotlbOf(dev.world).isSwiotlbBuffer(phys)) {
    swiotlbUnmap(dev, phys, size, dir, attrs);
  }
}

/** `iommu_dma_sync_single_for_cpu/device()` (swiotlb copies; caches are coherent). */
export function iommuDmaSync(
  dev: Device,
  domain: IommuDomain,
  addr: bigint,
  size: number,
  dir: DmaDirection,
  toCpu: boolean,
): void {
  const phys = domain.iovaToPhys(Number(addr));
  const pool = swiotlbOf(dev.world);
  if (!pool.isSwiotlbBuffer(phys)) return;
  if (toCpu && (dir === "DMA_FROM_DEVICE" || dir === "DMA_BIDIRECTIONAL")) {
    pool.bounce(phys, size, "DMA_FROM_DEVICE");
  } else if (!toCpu && (dir === "DMA_TO_DEVICE" || dir === "DMA_BIDIRECTIONAL")) {
    pool.bounce(phys, size, "DMA_TO_DEVICE");
  }
}

/** `iommu_dma_map_sg()`: returns the DMA segment count or a negative errno. */
export function iommuDmaMapSg(
  dev: Device,
  domain: IommuDomain,
  sgt: SgTable,
  dir: DmaDirection,
  attrs: number,
): number {
  const c = dmaCookie(domain, dev);
  const dd = dmaDev(dev);
  const mask = dd.segBoundaryMask;
  const state = new P2pdmaMapState();
  const sgl = sgt.sgl;
  // dev_use_sg_swiotlb: an untrusted device with any entry not filling whole granules
  if (devIsUntrusted(dev) && sgl.some((s) => s.phys % c.granule || s.length % c.granule)) {
    return iommuDmaMapSgSwiotlb(dev, domain, sgt, dir, attrs);
  }
  // per entry: iova offset, iova length, mmio; -1 length for bus-address entries
  const ivaOff: number[] = [];
  const ivaLen: number[] = [];
  const prots: number[] = [];
  let iovaLen = 0;
  let prev = -1;
  const baseProt = dmaInfoToProt(dir, dev.dmaCoherent, attrs);
  for (let i = 0; i < sgl.length; i++) {
    const s = sgl[i]!;
    const t = p2pdmaState(state, dev, s.phys, s.provider);
    let prot = baseProt;
    if (t === PciP2pdmaMapType.THRU_HOST_BRIDGE) {
      prot = dmaInfoToProt(dir, dev.dmaCoherent, attrs | DMA_ATTR_MMIO);
    } else if (t === PciP2pdmaMapType.BUS_ADDR) {
      s.dmaAddress = BigInt(s.phys) + state.mem!.busOffset;
      s.dmaLength = s.length;
      s.dmaFlags |= SG_DMA_BUS_ADDRESS;
      ivaOff.push(0);
      ivaLen.push(-1);
      prots.push(0);
      continue;
    } else if (t !== PciP2pdmaMapType.NONE) {
      for (const x of sgl) x.dmaFlags &= ~SG_DMA_BUS_ADDRESS;
      return -121; // -EREMOTEIO
    }
    const off = s.phys % c.granule;
    const len = ivaAlign(c, s.length + off);
    const boundary = mask + 1;
    const pad = (boundary - (iovaLen % boundary)) % boundary;
    if (pad && pad < len - 1 && prev >= 0) {
      ivaLen[prev]! += pad;
      iovaLen += pad;
    }
    ivaOff.push(off);
    ivaLen.push(len);
    prots.push(prot);
    iovaLen += len;
    prev = i;
  }
  let iova = 0;
  if (iovaLen) {
    iova = iommuDmaAllocIova(domain, iovaLen, dmaLimit(dev), dev);
    if (!iova) return -12; // -ENOMEM
    // iommu_map_sg: map each entry (aligned) back to back, one sync at the end
    let at = iova;
    try {
      for (let i = 0; i < sgl.length; i++) {
        if (ivaLen[i]! < 0) continue;
        const s = sgl[i]!;
        const mapLen = ivaAlign(c, s.length + ivaOff[i]!);
        domain.mapNosync(at, s.phys - ivaOff[i]!, mapLen, prots[i]!);
        at += ivaLen[i]!;
      }
      domain.syncMap(iova, iovaLen);
    } catch {
      if (at > iova) domain.unmap(iova, at - iova);
      iommuDmaFreeIova(domain, iova, iovaLen, null);
      return -12;
    }
  }
  // __finalise_sg
  let cur = -1;
  let curLen = 0;
  let count = 0;
  let dma = iova;
  for (let i = 0; i < sgl.length; i++) {
    const s = sgl[i]!;
    if (ivaLen[i]! < 0) {
      const a = s.dmaAddress;
      const l = s.dmaLength;
      s.dmaFlags &= ~SG_DMA_BUS_ADDRESS;
      s.dmaAddress = DMA_MAPPING_ERROR;
      s.dmaLength = 0;
      cur++;
      sgl[cur]!.dmaAddress = a;
      sgl[cur]!.dmaLength = l;
      sgl[cur]!.dmaFlags |= SG_DMA_BUS_ADDRESS;
      count++;
      curLen = 0;
      continue;
    }
    const off = ivaOff[i]!;
    const sLen = s.length;
    if (i !== cur) {
      s.dmaAddress = DMA_MAPPING_ERROR;
      s.dmaLength = 0;
    }
    if (curLen && !off && dma % (mask + 1) !== 0 && dd.maxSegSize - curLen >= sLen) {
      curLen += sLen;
    } else {
      cur++;
      curLen = sLen;
      count++;
      sgl[cur]!.dmaAddress = BigInt(dma + off);
    }
    sgl[cur]!.dmaLength = curLen;
    dma += ivaLen[i]!;
    if (sLen + off < ivaLen[i]!) curLen = 0;
  }
  for (let i = cur + 1; i < sgl.length; i++) {
    sgl[i]!.dmaAddress = DMA_MAPPING_ERROR;
    sgl[i]!.dmaLength = 0;
    sgl[i]!.dmaFlags = 0;
  }
  return count;
}

/** `iommu_dma_map_sg_swiotlb()`: entry by entry through `iommu_dma_map_phys`, list marked. */
function iommuDmaMapSgSwiotlb(
  dev: Device,
  domain: IommuDomain,
  sgt: SgTable,
  dir: DmaDirection,
  attrs: number,
): number {
  const sgl = sgt.sgl;
  for (let i = 0; i < sgl.length; i++) {
    const s = sgl[i]!;
    const a = iommuDmaMapPhys(dev, domain, s.phys, s.length, dir, attrs);
    if (a === DMA_MAPPING_ERROR) {
      for (let k = 0; k < i; k++) {
        iommuDmaUnmapPhys(
          dev,
          domain,
          sgl[k]!.dmaAddress,
          sgl[k]!.dmaLength,
          dir,
          attrs | DMA_ATTR_SKIP_CPU_SYNC,
        );
      }
      return -5; // -EIO
    }
    s.dmaAddress = a;
    s.dmaLength = s.length;
  }
  sgl[0]!.dmaFlags |= SG_DMA_SWIOTLB;
  return sgl.length;
}

/**
 * `iommu_dma_unmap_sg()`: a bounced list is unmapped entry by entry; otherwise
 * the list is one IOVA range from the first to the last DMA segment.
 */
export function iommuDmaUnmapSg(
  dev: Device,
  domain: IommuDomain,
  sgt: SgTable,
  dir: DmaDirection = "DMA_BIDIRECTIONAL",
  attrs = 0,
): void {
  if (sgt.sgl[0] && sgt.sgl[0].dmaFlags & SG_DMA_SWIOTLB) {
    sgt.sgl[0].dmaFlags &= ~SG_DMA_SWIOTLB;
    for (const s of sgt.sgl.slice(0, sgt.nents)) {
      iommuDmaUnmapPhys(dev, domain, s.dmaAddress, s.dmaLength, dir, attrs);
    }
    return;
  }
  let start = -1;
  let end = 0;
  for (const s of sgt.sgl) {
    if (s.dmaFlags & SG_DMA_BUS_ADDRESS) {
      s.dmaFlags &= ~SG_DMA_BUS_ADDRESS;
      continue;
    }
    if (s.dmaLength === 0) break;
    if (start < 0) start = Number(s.dmaAddress);
    end = Number(s.dmaAddress) + s.dmaLength;
  }
  if (end) iommuDmaUnmapRaw(dev, domain, start, end - start);
}

/** True when any P2P provider of the fabric may be involved (for callers that skip lookups). */
export function fabricHasP2p(dev: Device): boolean {
  return dev.world.hasExt("pci-p2p") && pciFabric(dev.world).devices.some((d) => d.p2pdma);
}
