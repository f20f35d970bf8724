/**
 * DOC: swiotlb
 *
 * The software IO TLB (kernel/dma/swiotlb.c): a pool of bounce buffers in
 * low memory, in 2 KiB slots (`IO_TLB_SIZE`), handed out in runs of at most
 * `IO_TLB_SEGSIZE` (128) slots within one area. Mapping copies the original
 * buffer into the slot (always, so stale pool data never leaks to a device);
 * unmapping and `sync_for_cpu` copy back for `DMA_FROM_DEVICE` and
 * `DMA_BIDIRECTIONAL` unless `DMA_ATTR_SKIP_CPU_SYNC`; `sync_for_device`
 * copies out for `DMA_TO_DEVICE` and `DMA_BIDIRECTIONAL`. A full pool fails
 * the mapping with the kernel's ratelimited warning. The pool's pages come
 * from the world's page allocator (ZONE_DMA32), 4 MiB per area, made on
 * first use; copies move real bytes through physical memory.
 *
 * Locking: `area->lock` spinlocks; atomic context allowed; atomic in the model.
 *
 * @module
 */
import type { Device, Kernel } from "@dmalab/kernel";
import type { DmaDirection } from "./attrs.ts";

/** `IO_TLB_SIZE`. */
export const IO_TLB_SIZE = 2048;
/** `IO_TLB_SEGSIZE`. */
export const IO_TLB_SEGSIZE = 128;
const AREA_BYTES = 4 * 1024 * 1024;
const SLOTS_PER_AREA = AREA_BYTES / IO_TLB_SIZE;

interface Area {
  start: number;
  used: Uint8Array;
  orig: Float64Array;
  allocSize: Float64Array;
  head: Int32Array;
}

/** Options for the world's swiotlb pool. */
export interface SwiotlbOptions {
  /** Pool size in bytes (default 64 MiB, the kernel default), multiple of 4 MiB. */
  size?: number;
}

/** Counters. */
export interface SwiotlbStats {
  /** Bounce mappings made. */
  maps: number;
  /** Bytes copied to the pool. */
  bytesToDevice: number;
  /** Bytes copied back. */
  bytesFromDevice: number;
  /** Mappings refused (pool full). */
  failures: number;
}

/** The world's swiotlb pool. */
export class Swiotlb {
  /** The world. */
  readonly world: Kernel;
  /** Pool size in bytes. */
  readonly size: number;
  /** Counters. */
  readonly stats: SwiotlbStats = { maps: 0, bytesToDevice: 0, bytesFromDevice: 0, failures: 0 };
  #areas: Area[] | null = null;
  #used = 0;

  /** Use {@linkcode swiotlbOf}. */
  constructor(world: Kernel, options: SwiotlbOptions = {}) {
    this.world = world;
    this.size = options.size ?? 64 * 1024 * 1024;
  }

  #init(): Area[] {
    if (this.#areas) return this.#areas;
    const areas: Area[] = [];
    for (let i = 0; i < this.size / AREA_BYTES; i++) {
      const page = this.world.mem.allocPages(10, { zone: "DMA32", noWarn: true });
      if (!page) break;
      areas.push({
        start: page.pfn * 4096,
        used: new Uint8Array(SLOTS_PER_AREA),
        orig: new Float64Array(SLOTS_PER_AREA),
        allocSize: new Float64Array(SLOTS_PER_AREA),
        head: new Int32Array(SLOTS_PER_AREA),
      });
    }
    this.#areas = areas;
    return areas;
  }

  /** Slots in use. */
  get usedSlots(): number {
    return this.#used;
  }

  /** Total slots. */
  get totalSlots(): number {
    return this.size / IO_TLB_SIZE;
  }

  /** `is_swiotlb_buffer()`. */
  isSwiotlbBuffer(phys: number): boolean {
    for (const a of this.#areas ?? []) {
      if (phys >= a.start && phys < a.start + AREA_BYTES) return true;
    }
    return false;
  }

  /**
   * `swiotlb_tbl_map_single()`: a bounce slot run for `[orig, orig+size)`;
   * returns the bounce address, or null when the pool is full. With
   * `allocAlignMask` (dma-iommu passes the IOVA granule mask) the bounce
   * address keeps `orig`'s offset within that alignment.
   */
  map(dev: Device, orig: number, size: number, allocAlignMask = 0): number | null {
    const areas = this.#init();
    const pad = allocAlignMask ? orig % (allocAlignMask + 1) : 0;
    const nslots = Math.ceil((size + pad) / IO_TLB_SIZE);
    const stride = allocAlignMask >= IO_TLB_SIZE ? (allocAlignMask + 1) / IO_TLB_SIZE : 1;
    if (nslots <= IO_TLB_SEGSIZE) {
      for (const a of areas) {
        for (let i = 0; i + nslots <= SLOTS_PER_AREA; i += stride) {
          // a run may not cross an IO_TLB_SEGSIZE boundary
          if (Math.floor(i / IO_TLB_SEGSIZE) !== Math.floor((i + nslots - 1) / IO_TLB_SEGSIZE)) {
            continue;
          }
          let free = true;
          for (let k = 0; k < nslots; k++) {
            if (a.used[i + k]) {
              free = false;
              break;
            }
          }
          if (!free) continue;
          for (let k = 0; k < nslots; k++) {
            a.used[i + k] = 1;
            a.orig[i + k] = orig - pad + k * IO_TLB_SIZE;
            a.head[i + k] = i;
          }
          a.allocSize[i] = size + pad;
          this.#used += nslots;
          this.stats.maps++;
          const tlb = a.start + i * IO_TLB_SIZE + pad;
          this.bounce(tlb, size, "DMA_TO_DEVICE");
          return tlb;
        }
      }
    }
    this.stats.failures++;
    this.world.dmesg.printk(
      "warn",
      `${
        dev.bus?.name ?? ""
      } ${dev.name}: swiotlb buffer is full (sz: ${size} bytes), total ${this.totalSlots} (slots), used ${this.#used} (slots)`,
    );
    return null;
  }

  #slot(tlb: number): { a: Area; i: number } {
    for (const a of this.#areas ?? []) {
      if (tlb >= a.start && tlb < a.start + AREA_BYTES) {
        return { a, i: Math.floor((tlb - a.start) / IO_TLB_SIZE) };
      }
    }
    throw new Error(`swiotlb: 0x${tlb.toString(16)} is not a swiotlb buffer`);
  }

  /** The original physical address behind bounce address `tlb`. */
  origAddr(tlb: number): number {
    const { a, i } = this.#slot(tlb);
    return a.orig[i]! + ((tlb - a.start) % IO_TLB_SIZE);
  }

  /**
   * `swiotlb_bounce()`: copies between the original buffer and the slot;
   * `DMA_TO_DEVICE` copies into the pool, `DMA_FROM_DEVICE` back out.
   */
  bounce(tlb: number, size: number, dir: DmaDirection): void {
    const orig = this.origAddr(tlb);
    if (dir === "DMA_TO_DEVICE") {
      this.world.mem.copy(tlb, orig, size);
      this.stats.bytesToDevice += size;
    } else {
      this.world.mem.copy(orig, tlb, size);
      this.stats.bytesFromDevice += size;
    }
  }

  /** `swiotlb_release_slots()`. */
  release(tlb: number): void {
    const { a, i: at } = this.#slot(tlb);
    const i = a.head[at]!;
    const size = a.allocSize[i]!;
    const n = Math.ceil(size / IO_TLB_SIZE);
    for (let k = 0; k < n; k++) {
      a.used[i + k] = 0;
      a.orig[i + k] = 0;
    }
    a.allocSize[i] = 0;
    this.#used -= n;
  }
}

/** The world's swiotlb pool. */
export function swiotlbOf(world: Kernel): Swiotlb {
  return world.ext("dma-api.swiotlb", () => new Swiotlb(world));
}
