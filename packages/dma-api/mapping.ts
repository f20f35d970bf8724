/**
 * DOC: the streaming and coherent DMA API
 *
 * kernel/dma/mapping.c: the entry points drivers call, dispatching to
 * dma-iommu when the device's group is on a DMA-API domain and to
 * dma-direct otherwise, with DMA-API debug bookkeeping around them.
 * - `dma_map_phys` / `dma_map_page` / `dma_map_resource` return a DMA
 *   address or `DMA_MAPPING_ERROR` (the caller must check it with
 *   `dma_mapping_error`, which debug tracks); `dma_map_page` refuses
 *   `DMA_ATTR_MMIO`; `dma_map_resource` is `dma_map_phys` with it.
 * - `dma_map_sg` returns the number of DMA segments or 0 on failure;
 *   `dma_map_sgtable` returns 0 or throws the error (`-EREMOTEIO` for a P2P
 *   pair that cannot talk, `-EIO`, `-ENOMEM`) and sets `sgt.nents`.
 * - P2P per entry (`pci_p2pdma_state`): BUS_ADDR entries get the bus address
 *   and the `SG_DMA_BUS_ADDRESS` flag and are never unmapped; THRU_HOST_BRIDGE
 *   entries map normally with `DMA_ATTR_MMIO`; NOT_SUPPORTED fails.
 * - `dma_sync_single_for_cpu/device`, `dma_sync_sg_for_cpu/device` copy
 *   bounce buffers as swiotlb requires (caches are coherent in the model).
 * - `dma_alloc_coherent` / `dma_free_coherent` give zeroed memory the device
 *   can reach under its coherent mask, mapped through the IOMMU when one
 *   translates.
 * A `DMA_NONE` or invalid direction is a BUG, as `BUG_ON(!valid_dma_direction)`.
 *
 * Locking: streaming calls are callable from atomic context; coherent
 * allocation may sleep in the kernel but never does here.
 *
 * @module
 */
import { type Device, KernelError, type Page } from "@dmalab/kernel";
import { P2pdmaMapState, PciP2pdmaMapType } from "@dmalab/pci-p2p";
import {
  DMA_ATTR_MMIO,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_MAPPING_ERROR,
  type DmaDirection,
  validDmaDirection,
} from "./attrs.ts";
import { dmaDebugOf } from "./debug.ts";
import {
  directAllocZone,
  dmaCapable,
  dmaDirectMapPhys,
  dmaDirectSyncForCpu,
  dmaDirectSyncForDevice,
  dmaDirectUnmapPhys,
  physToDma,
} from "./direct.ts";
import {
  dmaInfoToProt,
  iommuDmaMapPhys,
  iommuDmaMapRaw,
  iommuDmaMapSg,
  iommuDmaSync,
  iommuDmaUnmapPhys,
  iommuDmaUnmapRaw,
  iommuDmaUnmapSg,
} from "./dma_iommu.ts";
import { p2pdmaState } from "./p2p.ts";
import { SG_DMA_BUS_ADDRESS, type SgTable } from "./sg.ts";
import { dmaDev, dmaLimit } from "./state.ts";

function checkDir(dev: Device, dir: DmaDirection, fn: string): void {
  if (!validDmaDirection(dir)) {
    dev.world.bug("BUG", `kernel BUG in ${fn}: invalid DMA direction ${dir} for ${dev.name}`);
    throw new KernelError("EINVAL", `${fn}: invalid direction ${dir}`);
  }
}

/** `use_dma_iommu(dev)`: the device maps through dma-iommu. */
export function useDmaIommu(dev: Device): boolean {
  return dmaDev(dev).dmaDomain !== null;
}

/**
 * `dma_map_phys()`: maps `size` bytes at CPU physical `phys` for `dev`.
 *
 * @example
 * ```ts
 * import { Device, Kernel, dmaBitMask } from "@dmalab/kernel";
 * import { dmaMapPhys, dmaMappingError, dmaUnmapPhys } from "@dmalab/dma-api";
 * const world = new Kernel();
 * const dev = new Device(world, "dev0", { dmaMask: dmaBitMask(64) });
 * const page = world.mem.allocPages(0)!;
 * const phys = page.pfn * 4096;
 * const addr = dmaMapPhys(dev, phys, 4096, "DMA_TO_DEVICE");
 * dmaMappingError(dev, addr); // false
 * dmaUnmapPhys(dev, addr, 4096, "DMA_TO_DEVICE");
 * ```
 */
export function dmaMapPhys(
  dev: Device,
  phys: number | bigint,
  size: number,
  dir: DmaDirection,
  attrs = 0,
): bigint {
  checkDir(dev, dir, "dma_map_phys");
  const p = Number(phys);
  const dom = dmaDev(dev).dmaDomain;
  const addr = dom
    ? iommuDmaMapPhys(dev, dom, p, size, dir, attrs)
    : dmaDirectMapPhys(dev, p, size, dir, attrs);
  if (addr !== DMA_MAPPING_ERROR) {
    dmaDebugOf(dev.world).add({
      dev,
      type: "phy",
      dmaAddr: addr,
      size,
      direction: dir,
      paddr: p,
      mapErr: "not-checked",
    });
  }
  if (dev.world.trace.enabled) {
    dev.world.trace.event("dma_map_phys", {
      device: dev.name,
      dir,
      dma_addr: `0x${addr.toString(16)}`,
      size,
      phys_addr: `0x${p.toString(16)}`,
      attrs,
    });
  }
  return addr;
}

/** `dma_unmap_phys()`. */
export function dmaUnmapPhys(
  dev: Device,
  addr: bigint,
  size: number,
  dir: DmaDirection,
  attrs = 0,
): void {
  checkDir(dev, dir, "dma_unmap_phys");
  if (
    !dmaDebugOf(dev.world).checkUnmap({ dev, type: "phy", dmaAddr: addr, size, direction: dir })
  ) {
    return;
  }
  const dom = dmaDev(dev).dmaDomain;
  if (dom) iommuDmaUnmapPhys(dev, dom, addr, size, dir, attrs);
  else dmaDirectUnmapPhys(dev, addr, size, dir, attrs);
  if (dev.world.trace.enabled) {
    dev.world.trace.event("dma_unmap_phys", {
      device: dev.name,
      dir,
      dma_addr: `0x${addr.toString(16)}`,
      size,
      attrs,
    });
  }
}

/** `dma_map_page_attrs()`: `DMA_ATTR_MMIO` is refused (a page is RAM). */
export function dmaMapPage(
  dev: Device,
  page: Page,
  offset: number,
  size: number,
  dir: DmaDirection,
  attrs = 0,
): bigint {
  if (attrs & DMA_ATTR_MMIO) return DMA_MAPPING_ERROR;
  return dmaMapPhys(dev, page.pfn * 4096 + offset, size, dir, attrs);
}

/** `dma_unmap_page_attrs()`. */
export function dmaUnmapPage(
  dev: Device,
  addr: bigint,
  size: number,
  dir: DmaDirection,
  attrs = 0,
): void {
  dmaUnmapPhys(dev, addr, size, dir, attrs);
}

/** `dma_map_resource()`: MMIO (`DMA_ATTR_MMIO`) mapping of a physical range. */
export function dmaMapResource(
  dev: Device,
  phys: number | bigint,
  size: number,
  dir: DmaDirection,
  attrs = 0,
): bigint {
  return dmaMapPhys(dev, phys, size, dir, attrs | DMA_ATTR_MMIO);
}

/** `dma_unmap_resource()`. */
export function dmaUnmapResource(
  dev: Device,
  addr: bigint,
  size: number,
  dir: DmaDirection,
  attrs = 0,
): void {
  dmaUnmapPhys(dev, addr, size, dir, attrs | DMA_ATTR_MMIO);
}

/** `dma_mapping_error()`: true for `DMA_MAPPING_ERROR`; tells DMA-API debug the result was checked. */
export function dmaMappingError(dev: Device, addr: bigint): boolean {
  dmaDebugOf(dev.world).mappingError(dev, addr);
  return addr === DMA_MAPPING_ERROR;
}

/** `dma_direct_map_sg()`: entry count or negative errno. */
function dmaDirectMapSg(dev: Device, sgt: SgTable, dir: DmaDirection, attrs: number): number {
  const state = new P2pdmaMapState();
  const sgl = sgt.sgl;
  for (let i = 0; i < sgl.length; i++) {
    const s = sgl[i]!;
    const t = p2pdmaState(state, dev, s.phys, s.provider);
    let a = attrs;
    if (t === PciP2pdmaMapType.THRU_HOST_BRIDGE) {
      a |= DMA_ATTR_MMIO;
    } else if (t === PciP2pdmaMapType.BUS_ADDR) {
      s.dmaAddress = BigInt(s.phys) + state.mem!.busOffset;
      s.dmaLength = s.length;
      s.dmaFlags |= SG_DMA_BUS_ADDRESS;
      continue;
    } else if (t !== PciP2pdmaMapType.NONE) {
      directUnmapSg(dev, sgt, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
      return -121;
    }
    const addr = dmaDirectMapPhys(dev, s.phys, s.length, dir, a);
    if (addr === DMA_MAPPING_ERROR) {
      directUnmapSg(dev, sgt, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
      return -5;
    }
    s.dmaAddress = addr;
    s.dmaLength = s.length;
  }
  return sgl.length;
}

function directUnmapSg(
  dev: Device,
  sgt: SgTable,
  n: number,
  dir: DmaDirection,
  attrs: number,
): void {
  for (let i = 0; i < n; i++) {
    const s = sgt.sgl[i]!;
    if (s.dmaFlags & SG_DMA_BUS_ADDRESS) s.dmaFlags &= ~SG_DMA_BUS_ADDRESS;
    else dmaDirectUnmapPhys(dev, s.dmaAddress, s.dmaLength, dir, attrs);
  }
}

/** `__dma_map_sg_attrs()`: DMA segment count or a negative errno. */
function mapSgAttrs(dev: Device, sgt: SgTable, dir: DmaDirection, attrs: number): number {
  checkDir(dev, dir, "dma_map_sg");
  const dom = dmaDev(dev).dmaDomain;
  const ents = dom
    ? iommuDmaMapSg(dev, dom, sgt, dir, attrs)
    : dmaDirectMapSg(dev, sgt, dir, attrs);
  if (ents > 0) {
    sgt.nents = ents;
    // debug_dma_map_sg: one entry per DMA segment
    const dbg = dmaDebugOf(dev.world);
    for (let i = 0; i < ents; i++) {
      const s = sgt.sgl[i]!;
      dbg.add({
        dev,
        type: "scatter-gather",
        dmaAddr: s.dmaAddress,
        size: s.dmaLength,
        direction: dir,
        paddr: s.phys,
        mapErr: "none",
        sgCallEnts: sgt.origNents,
        sgMappedEnts: ents,
        busAddress: (s.dmaFlags & SG_DMA_BUS_ADDRESS) !== 0,
      });
    }
  }
  return ents;
}

/** `dma_map_sg_attrs()`: DMA segment count, 0 on any failure. */
export function dmaMapSg(dev: Device, sgt: SgTable, dir: DmaDirection, attrs = 0): number {
  const r = mapSgAttrs(dev, sgt, dir, attrs);
  return r < 0 ? 0 : r;
}

/** `dma_map_sgtable()`: sets `sgt.nents`; throws -EREMOTEIO/-EIO/-ENOMEM/-EINVAL on failure. */
export function dmaMapSgtable(dev: Device, sgt: SgTable, dir: DmaDirection, attrs = 0): void {
  const r = mapSgAttrs(dev, sgt, dir, attrs);
  if (r >= 0) return;
  const code = r === -121 ? "EREMOTEIO" : r === -12 ? "ENOMEM" : r === -5 ? "EIO" : "EINVAL";
  throw new KernelError(
    code,
    `dma_map_sgtable: ${dev.name}: ${
      code === "EREMOTEIO" ? "P2P memory the device cannot reach" : "mapping failed"
    }`,
  );
}

/** `dma_unmap_sg_attrs()` / `dma_unmap_sgtable()` (pass the table mapped). */
export function dmaUnmapSgtable(dev: Device, sgt: SgTable, dir: DmaDirection, attrs = 0): void {
  checkDir(dev, dir, "dma_unmap_sg");
  // debug_dma_unmap_sg: check each mapped segment against its record
  const dbg = dmaDebugOf(dev.world);
  const first = sgt.sgl[0];
  if (!first) return;
  const mapped = dbg.enabled
    ? (dbg.entries(dev).find((e) => e.dmaAddr === first.dmaAddress && e.type === "scatter-gather")
      ?.sgMappedEnts ?? 1)
    : 0;
  for (let i = 0; i < sgt.sgl.length && i < mapped; i++) {
    const s = sgt.sgl[i]!;
    const ok = dbg.checkUnmap({
      dev,
      type: "scatter-gather",
      dmaAddr: s.dmaAddress,
      size: s.dmaLength,
      direction: dir,
      sgCallEnts: sgt.origNents,
    });
    if (!ok && i === 0) return;
  }
  const dom = dmaDev(dev).dmaDomain;
  if (dom) iommuDmaUnmapSg(dev, dom, sgt, dir, attrs);
  else directUnmapSg(dev, sgt, sgt.nents, dir, attrs);
  sgt.nents = 0;
}

/** `dma_sync_single_for_cpu()`. */
export function dmaSyncSingleForCpu(
  dev: Device,
  addr: bigint,
  size: number,
  dir: DmaDirection,
): void {
  checkDir(dev, dir, "dma_sync_single_for_cpu");
  dmaDebugOf(dev.world).checkSync(dev, addr, size, dir, true);
  const dom = dmaDev(dev).dmaDomain;
  if (dom) iommuDmaSync(dev, dom, addr, size, dir, true);
  else dmaDirectSyncForCpu(dev, addr, size, dir);
}

/** `dma_sync_single_for_device()`. */
export function dmaSyncSingleForDevice(
  dev: Device,
  addr: bigint,
  size: number,
  dir: DmaDirection,
): void {
  checkDir(dev, dir, "dma_sync_single_for_device");
  dmaDebugOf(dev.world).checkSync(dev, addr, size, dir, false);
  const dom = dmaDev(dev).dmaDomain;
  if (dom) iommuDmaSync(dev, dom, addr, size, dir, false);
  else dmaDirectSyncForDevice(dev, addr, size, dir);
}

/** `dma_sync_sgtable_for_cpu()`. */
export function dmaSyncSgtableForCpu(dev: Device, sgt: SgTable, dir: DmaDirection): void {
  const dom = dmaDev(dev).dmaDomain;
  for (const s of sgt.sgl.slice(0, sgt.nents)) {
    if (s.dmaFlags & SG_DMA_BUS_ADDRESS) continue;
    if (dom) iommuDmaSync(dev, dom, s.dmaAddress, s.dmaLength, dir, true);
    else dmaDirectSyncForCpu(dev, s.dmaAddress, s.dmaLength, dir);
  }
}

/** `dma_sync_sgtable_for_device()`. */
export function dmaSyncSgtableForDevice(dev: Device, sgt: SgTable, dir: DmaDirection): void {
  const dom = dmaDev(dev).dmaDomain;
  for (const s of sgt.sgl.slice(0, sgt.nents)) {
    if (s.dmaFlags & SG_DMA_BUS_ADDRESS) continue;
    if (dom) iommuDmaSync(dev, dom, s.dmaAddress, s.dmaLength, dir, false);
    else dmaDirectSyncForDevice(dev, s.dmaAddress, s.dmaLength, dir);
  }
}

/** A coherent allocation. */
export interface DmaCoherent {
  /** CPU physical address of the buffer (the model's kernel virtual address). */
  cpuAddr: number;
  /** `dma_handle`. */
  dmaHandle: bigint;
  /** Size. */
  size: number;
  /** @internal */
  page: Page;
  /** @internal */
  order: number;
}

/**
 * `dma_alloc_coherent()`: zeroed memory the device reaches at `dmaHandle`;
 * null on failure.
 */
export function dmaAllocCoherent(dev: Device, size: number): DmaCoherent | null {
  const order = Math.max(0, Math.ceil(Math.log2(Math.ceil(size / 4096))));
  const dom = dmaDev(dev).dmaDomain;
  const zone = dom ? "Normal" : directAllocZone(dev);
  const page = dev.world.mem.allocPages(order, { zone, zero: true, noWarn: true });
  if (!page) return null;
  const phys = page.pfn * 4096;
  let handle: bigint;
  if (dom) {
    const prot = dmaInfoToProt("DMA_BIDIRECTIONAL", dev.dmaCoherent, 0);
    handle = iommuDmaMapRaw(dev, dom, phys, 4096 * 2 ** order, prot, dmaLimit(dev, true));
  } else {
    const dma = physToDma(dev, phys);
    handle = dmaCapable(dev, dma, size, true) ? BigInt(dma) : DMA_MAPPING_ERROR;
  }
  if (handle === DMA_MAPPING_ERROR) {
    dev.world.mem.freePages(page, order);
    return null;
  }
  dmaDebugOf(dev.world).add({
    dev,
    type: "coherent",
    dmaAddr: handle,
    size,
    direction: "DMA_BIDIRECTIONAL",
    paddr: phys,
  });
  return { cpuAddr: phys, dmaHandle: handle, size, page, order };
}

/** `dma_free_coherent()`. */
export function dmaFreeCoherent(dev: Device, buf: DmaCoherent): void {
  if (
    !dmaDebugOf(dev.world).checkUnmap({
      dev,
      type: "coherent",
      dmaAddr: buf.dmaHandle,
      size: buf.size,
      direction: "DMA_BIDIRECTIONAL",
    })
  ) return;
  const dom = dmaDev(dev).dmaDomain;
  if (dom) iommuDmaUnmapRaw(dev, dom, Number(buf.dmaHandle), 4096 * 2 ** buf.order);
  dev.world.mem.freePages(buf.page, buf.order);
}

/** `dma_get_merge_boundary()`: the IOMMU granule minus one under dma-iommu, else 0. */
export function dmaGetMergeBoundary(dev: Device): number {
  const dom = dmaDev(dev).dmaDomain;
  return dom ? dom.minPagesz - 1 : 0;
}
