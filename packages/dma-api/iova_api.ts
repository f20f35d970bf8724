/**
 * DOC: the IOVA-based DMA API
 *
 * The two-step API of drivers/iommu/dma-iommu.c (Documentation/core-api/
 * dma-api.rst, "IOVA-based DMA mappings"; merged in v6.16):
 * - `dma_iova_try_alloc(dev, state, phys, size)`: zeroes `state`; false when
 *   the device does not use dma-iommu (the caller falls back to the
 *   streaming API) or for size 0 (WARN); else one IOVA range for `size`
 *   plus the sub-granule offset of `phys`.
 * - Untrusted devices: a link whose start or end is not granule aligned
 *   bounces the partial head and tail granules through swiotlb (keeping the
 *   offset, zeroing the padding) and marks the state `DMA_IOVA_USE_SWIOTLB`;
 *   unlinking copies them back and frees the slots.
 * - `dma_use_iova(state)`: true once IOVA space was allocated.
 * - `dma_iova_link(dev, state, phys, offset, size, dir, attrs)`: maps `phys`
 *   at `state.addr + offset` without syncing (`iommu_map_nosync`). A link
 *   after the first must start on the merge boundary: a sub-granule `phys`
 *   at a non-zero `offset` is WARN + -EIO; every range but the last must be
 *   a multiple of the merge boundary, or the next link lands unaligned and
 *   `iommu_map` refuses it (-EINVAL).
 * - `dma_iova_sync(dev, state, offset, size)`: one `iommu_sync_map` for
 *   everything linked.
 * - `dma_iova_unlink(dev, state, offset, size, dir, attrs)`: unmap and one
 *   IOTLB sync, the IOVA stays allocated.
 * - `dma_iova_free(dev, state)`: returns the IOVA range; everything must be
 *   unlinked first (a caller rule; the model checks it with a WARN).
 * - `dma_iova_destroy(dev, state, mapped_len, dir, attrs)`: unlink the first
 *   `mapped_len` bytes and free, or just free when nothing was linked; the
 *   unlink goes through the flush queue on lazy domains.
 *
 * Locking: callable from atomic context; atomic in the model.
 *
 * @module
 */
import { type Device, KernelError } from "@dmalab/kernel";
import { IommuIotlbGather } from "@dmalab/iommu";
import type { DmaDirection } from "./attrs.ts";
import {
  devIsUntrusted,
  dmaCookie,
  dmaInfoToProt,
  iommuDmaAllocIova,
  iommuDmaBounce,
  type IommuDmaCookie,
  iommuDmaFreeIova,
} from "./dma_iommu.ts";
import { swiotlbUnmap } from "./direct.ts";
import { dmaDev, dmaLimit } from "./state.ts";

/** `struct dma_iova_state`. */
export class DmaIovaState {
  /** `addr`: IOVA of byte 0 (0 when not allocated). */
  addr = 0;
  /** `__size`: bytes requested (0 when not allocated). */
  size = 0;
  /** @internal linked `[offset, size]` ranges (model bookkeeping). */
  readonly linked: Map<number, number> = new Map();
  /** `dma_iova_sync` calls made. */
  syncs = 0;
  /** `DMA_IOVA_USE_SWIOTLB`: some link bounced through swiotlb. */
  useSwiotlb = false;
  /** @internal bounce buffers by IOVA: `[iova, tlb, len]`. */
  readonly bounced: [number, number, number][] = [];
}

/** `dma_use_iova()`. */
export function dmaUseIova(state: DmaIovaState): boolean {
  return state.size !== 0;
}

function domainOf(dev: Device, fn: string) {
  const d = dmaDev(dev).dmaDomain;
  if (!d) throw new KernelError("EINVAL", `${fn}: ${dev.name} does not use dma-iommu`);
  return d;
}

function align(c: IommuDmaCookie, n: number): number {
  return Math.ceil(n / c.granule) * c.granule;
}

/** `dma_iova_try_alloc()`. */
export function dmaIovaTryAlloc(
  dev: Device,
  state: DmaIovaState,
  phys: number | bigint,
  size: number,
): boolean {
  state.addr = 0;
  state.size = 0;
  state.linked.clear();
  state.syncs = 0;
  state.useSwiotlb = false;
  state.bounced.length = 0;
  const dom = dmaDev(dev).dmaDomain;
  if (!dom) return false;
  if (dev.world.warnOn(size === 0, `dma_iova_try_alloc: ${dev.name}: size 0`)) return false;
  const c = dmaCookie(dom, dev);
  const off = Number(phys) % c.granule;
  const iova = iommuDmaAllocIova(dom, align(c, size + off), dmaLimit(dev), dev);
  if (!iova) return false;
  state.addr = iova + off;
  state.size = size;
  return true;
}

/** `dma_iova_free()`. */
export function dmaIovaFree(dev: Device, state: DmaIovaState): void {
  const dom = domainOf(dev, "dma_iova_free");
  const c = dmaCookie(dom, dev);
  if (
    dev.world.warnOn(
      state.linked.size > 0,
      `dma_iova_free: ${dev.name}: ${state.linked.size} range(s) still linked`,
    )
  ) return;
  const pad = state.addr % c.granule;
  iommuDmaFreeIova(dom, state.addr - pad, align(c, state.size + pad), null);
  state.addr = 0;
  state.size = 0;
}

/** `dma_iova_link()`: throws -EIO/-EINVAL/-EADDRINUSE as the kernel returns them. */
export function dmaIovaLink(
  dev: Device,
  state: DmaIovaState,
  phys: number | bigint,
  offset: number,
  size: number,
  dir: DmaDirection,
  attrs = 0,
): void {
  const dom = domainOf(dev, "dma_iova_link");
  const c = dmaCookie(dom, dev);
  const p = Number(phys);
  const pad = p % c.granule;
  if (
    dev.world.warnOn(
      pad !== 0 && offset > 0,
      `dma_iova_link: ${dev.name}: unaligned phys at offset ${offset}`,
    )
  ) {
    throw new KernelError(
      "EIO",
      `dma_iova_link: ${dev.name}: phys 0x${
        p.toString(16)
      } not on the merge boundary at offset ${offset}`,
    );
  }
  if (
    dev.world.warnOn(
      offset + size > state.size,
      `dma_iova_link: ${dev.name}: range ${offset}+${size} beyond the ${state.size}-byte IOVA allocation`,
    )
  ) throw new KernelError("EINVAL", "dma_iova_link: range beyond the allocation");
  const prot = dmaInfoToProt(dir, dev.dmaCoherent, attrs);
  if (devIsUntrusted(dev) && (pad || (p + size) % c.granule)) {
    // iommu_dma_iova_link_swiotlb: bounce the partial head and tail granules
    const endPad = (p + size) % c.granule;
    const addr = state.addr + offset;
    let mapped = 0;
    let left = size;
    const bounceAndLink = (iova: number, phys: number, len: number) => {
      const tlb = iommuDmaBounce(dev, c, phys, len, dir, attrs);
      if (tlb === null) throw new KernelError("ENOMEM", "dma_iova_link: swiotlb buffer is full");
      const tpad = tlb % c.granule;
      dom.mapNosync(iova - tpad, tlb - tpad, align(c, len + tpad), prot);
      state.bounced.push([iova, tlb, len]);
      state.useSwiotlb = true;
    };
    if (pad) {
      const len = Math.min(left, c.granule - pad);
      bounceAndLink(addr, p, len);
      mapped += len;
      left -= len;
    }
    if (left) {
      const mid = left - endPad;
      if (mid > 0) dom.mapNosync(addr + mapped, p + mapped, mid, prot);
      mapped += Math.max(mid, 0);
      if (endPad && mid >= 0) bounceAndLink(addr + mapped, p + mapped, endPad);
    }
    state.linked.set(offset, size);
    return;
  }
  dom.mapNosync(state.addr + offset - pad, p - pad, align(c, size + pad), prot);
  state.linked.set(offset, size);
}

/** `dma_iova_sync()`: one `iommu_sync_map` for the linked range. */
export function dmaIovaSync(dev: Device, state: DmaIovaState, offset: number, size: number): void {
  const dom = domainOf(dev, "dma_iova_sync");
  dom.syncMap(state.addr + offset, size);
  state.syncs++;
}

function iovaUnlink(
  dev: Device,
  state: DmaIovaState,
  offset: number,
  size: number,
  freeIova: boolean,
  dir: DmaDirection,
  attrs: number,
): void {
  const dom = domainOf(dev, "dma_iova_unlink");
  const c = dmaCookie(dom, dev);
  let addr = state.addr + offset;
  const pad = addr % c.granule;
  addr -= pad;
  const len = align(c, size + pad);
  if (state.useSwiotlb) {
    // iommu_dma_iova_unlink_range_slow: copy bounced parts back, free the slots
    for (let i = state.bounced.length - 1; i >= 0; i--) {
      const [iova, tlb, len] = state.bounced[i]!;
      if (iova < state.addr + offset || iova >= state.addr + offset + size) continue;
      swiotlbUnmap(dev, tlb, len, dir, attrs);
      state.bounced.splice(i, 1);
    }
  }
  const g = new IommuIotlbGather();
  g.queued = freeIova && dom.fq !== null;
  const n = dom.unmapFast(addr, len, g);
  dev.world.warnOn(
    n !== len,
    `dma_iova_unlink: unmapped 0x${n.toString(16)} of 0x${len.toString(16)}`,
  );
  if (!g.queued) dom.iotlbSync(g);
  for (const [o, s] of [...state.linked]) {
    if (o >= offset && o + s <= offset + size) state.linked.delete(o);
  }
  if (freeIova) {
    const fullPad = state.addr % c.granule;
    iommuDmaFreeIova(dom, state.addr - fullPad, align(c, state.size + fullPad), g);
    state.addr = 0;
    state.size = 0;
  }
}

/** `dma_iova_unlink()`. */
export function dmaIovaUnlink(
  dev: Device,
  state: DmaIovaState,
  offset: number,
  size: number,
  dir: DmaDirection,
  attrs = 0,
): void {
  iovaUnlink(dev, state, offset, size, false, dir, attrs);
}

/** `dma_iova_destroy()`. */
export function dmaIovaDestroy(
  dev: Device,
  state: DmaIovaState,
  mappedLen: number,
  dir: DmaDirection,
  attrs = 0,
): void {
  if (mappedLen) {
    state.linked.clear();
    iovaUnlink(dev, state, 0, mappedLen, true, dir, attrs);
  } else {
    dmaIovaFree(dev, state);
  }
}
