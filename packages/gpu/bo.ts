/**
 * DOC: buffer objects (drivers/gpu/drm/ttm/ttm_bo.c, amdgpu_object.c)
 *
 * A buffer object is GPU memory with a current placement: VRAM (blocks of
 * the VRAM manager, reached by the CPU and by peers through the BAR) or
 * GTT (system memory pages the GPU reaches through its GART), or none yet.
 * `preferredDomains` is where the driver wants it, `allowedDomains` where
 * it may go. Its reservation object (`bo->tbo.base.resv`) orders every
 * access: users add their job fences to it, moves add the copy fence with
 * `DMA_RESV_USAGE_KERNEL`, and a dma-buf exported from the object shares
 * it.
 *
 * Locking: placement, backing and the pin count change only with the
 * reservation lock held (checked by {@linkcode GpuDevice}).
 *
 * @module
 */
import type { Page } from "@dmalab/kernel";
import type { DmaBuf, DmaResv } from "@dmalab/dma-buf";
import type { VramBlock } from "./vram_mgr.ts";
import type { PhysRange } from "./ring.ts";

/** `AMDGPU_GEM_DOMAIN_GTT`. */
export const GPU_DOMAIN_GTT = 0x2;
/** `AMDGPU_GEM_DOMAIN_VRAM`. */
export const GPU_DOMAIN_VRAM = 0x4;

/** A placement (`ttm_resource.mem_type`). */
export type GpuPlacement = "VRAM" | "GTT";

/** A buffer object (`struct amdgpu_bo`). */
export class GpuBo {
  /** Id in the device. */
  readonly id: number;
  /** Size in bytes (page multiple). */
  readonly size: number;
  /** `preferred_domains`. */
  readonly preferredDomains: number;
  /** `allowed_domains`. */
  readonly allowedDomains: number;
  /** The reservation object. */
  readonly resv: DmaResv;
  /** Current placement, null before the first validation. */
  placement: GpuPlacement | null = null;
  /** VRAM blocks when in VRAM. */
  vramBlocks: VramBlock[] | null = null;
  /** System pages when in GTT. */
  gttPages: Page[] | null = null;
  /** `tbo.pin_count`. */
  pinCount = 0;
  /** The exported dma-buf, when exported. */
  dmabuf: DmaBuf | null = null;
  /** Moves so far (eviction or validation). */
  moves = 0;
  /** Set once freed. */
  freed = false;
  /** Byte ranges of the current backing (recomputed on every move). */
  ranges: PhysRange[] = [];

  /** Built by `GpuDevice.boCreate`. */
  constructor(
    id: number,
    size: number,
    preferredDomains: number,
    allowedDomains: number,
    resv: DmaResv,
  ) {
    this.id = id;
    this.size = size;
    this.preferredDomains = preferredDomains;
    this.allowedDomains = allowedDomains;
    this.resv = resv;
  }

  /** Pages. */
  get npages(): number {
    return this.size / 4096;
  }

  /** Physical address of byte `offset` of the current backing (-1 without backing). */
  physAt(offset: number): { phys: number; contiguous: number } {
    let o = offset;
    for (const r of this.ranges) {
      if (o < r.len) return { phys: r.phys + o, contiguous: r.len - o };
      o -= r.len;
    }
    return { phys: -1, contiguous: 0 };
  }

  /** Name for reports. */
  toString(): string {
    return `bo${this.id} (${this.size} bytes, ${this.placement ?? "unplaced"})`;
  }
}

/** Merges adjacent ranges. */
export function mergeRanges(ranges: PhysRange[]): PhysRange[] {
  const out: PhysRange[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && last.phys + last.len === r.phys) {
      out[out.length - 1] = { phys: last.phys, len: last.len + r.len };
    } else out.push(r);
  }
  return out;
}

/** The sub-ranges of `ranges` covering bytes [off, off + len). */
export function sliceRanges(ranges: readonly PhysRange[], off: number, len: number): PhysRange[] {
  const out: PhysRange[] = [];
  let skip = off;
  let left = len;
  for (const r of ranges) {
    if (left <= 0) break;
    if (skip >= r.len) {
      skip -= r.len;
      continue;
    }
    const n = Math.min(r.len - skip, left);
    out.push({ phys: r.phys + skip, len: n });
    left -= n;
    skip = 0;
  }
  return out;
}
