/**
 * DOC: struct page and ZONE_DEVICE page maps
 *
 * A {@linkcode Page} exists only where the kernel has a `struct page`: RAM
 * pfns and ZONE_DEVICE pfns created by `memremap_pages` (a
 * {@linkcode DevPagemap}, such as the PCI P2PDMA pages of a BAR). Pages are
 * created lazily on first use, so a terabyte of RAM costs nothing until a pfn
 * is looked at. MMIO pfns without a page map have no `struct page`
 * (`pfn_valid` is false), which is what makes VM_PFNMAP mappings special.
 *
 * The reference count follows include/linux/page_ref.h and mm.h: a put to
 * zero frees a buddy page back to its allocator, or hands a ZONE_DEVICE page
 * to `pgmap->ops->page_free`. Pinning (FOLL_PIN) adds `GUP_PIN_COUNTING_BIAS`.
 *
 * Locking: none; page reference operations are atomic and callable in any
 * context.
 *
 * @module
 */
import type { Kernel } from "../world.ts";

/** Memory zones (include/linux/mmzone.h `enum zone_type`). */
export type ZoneType = "DMA" | "DMA32" | "Normal" | "Device";

/** `enum memory_type` of include/linux/memremap.h. */
export type MemoryType =
  | "device_private"
  | "device_coherent"
  | "fs_dax"
  | "generic"
  | "pci_p2pdma";

/** `GUP_PIN_COUNTING_BIAS` (include/linux/mm.h). */
export const GUP_PIN_COUNTING_BIAS = 1024;

/** Page flag bits (a subset of include/linux/page-flags.h). */
export const PG = {
  /** PG_locked. */
  locked: 1 << 0,
  /** PG_referenced. */
  referenced: 1 << 2,
  /** PG_uptodate. */
  uptodate: 1 << 3,
  /** PG_dirty. */
  dirty: 1 << 4,
  /** PG_reserved. */
  reserved: 1 << 10,
  /** PG_head. */
  head: 1 << 6,
  /** PG_anon (PAGE_MAPPING_ANON in the kernel's `mapping` low bit). */
  anon: 1 << 20,
} as const;

/** `struct dev_pagemap_ops`. */
export interface DevPagemapOps {
  /** `page_free`: a ZONE_DEVICE page's refcount dropped to zero. */
  pageFree?(page: Page): void;
}

/** The hooks a {@linkcode Page} calls back into its owner with. */
export interface PageOwner {
  /** The world (for bug reports). */
  readonly world: Kernel;
  /** A refcount reached zero. */
  pageFreed(page: Page): void;
}

/**
 * `struct dev_pagemap`: a ZONE_DEVICE range registered by `memremap_pages`.
 */
export class DevPagemap {
  /** `pgmap->type`. */
  readonly type: MemoryType;
  /** First pfn. */
  readonly startPfn: number;
  /** One past the last pfn. */
  readonly endPfn: number;
  /** The device (or provider) that owns the memory. */
  readonly owner: unknown;
  /** `pgmap->ops`. */
  readonly ops: DevPagemapOps;
  /** Pages with a non-zero refcount (the kernel's `pgmap->ref` users). */
  activePages = 0;
  /** True once `memunmap_pages` started: no new references. */
  dying = false;

  /** Built by `PhysMem.memremapPages`. */
  constructor(
    type: MemoryType,
    startPfn: number,
    endPfn: number,
    owner: unknown,
    ops: DevPagemapOps,
  ) {
    this.type = type;
    this.startPfn = startPfn;
    this.endPfn = endPfn;
    this.owner = owner;
    this.ops = ops;
  }

  /** Number of pages. */
  get nrPages(): number {
    return this.endPfn - this.startPfn;
  }
}

/**
 * `struct page`.
 */
export class Page {
  /** `page_to_pfn`. */
  readonly pfn: number;
  /** `page_to_nid` (-1 for device pages without a node). */
  readonly nid: number;
  /** `page_zonenum`. */
  readonly zone: ZoneType;
  /** `page->pgmap` for ZONE_DEVICE pages. */
  readonly pgmap: DevPagemap | null;
  /** `page->mapping`: the address_space (or anon_vma) it belongs to. */
  mapping: object | null = null;
  /** `page->index`: offset in pages within `mapping`. */
  index = 0;
  /** `page->flags` (see {@linkcode PG}). */
  flags = 0;
  /** `page->_mapcount + 1`: page-table entries mapping it. */
  mapcount = 0;
  /** Driver-private data (`page->private`, `zone_device_data`). */
  private: unknown = null;
  #ref = 0;
  readonly #owner: PageOwner;

  /** Created by `PhysMem`, never directly. */
  constructor(
    owner: PageOwner,
    pfn: number,
    nid: number,
    zone: ZoneType,
    pgmap: DevPagemap | null,
  ) {
    this.#owner = owner;
    this.pfn = pfn;
    this.nid = nid;
    this.zone = zone;
    this.pgmap = pgmap;
  }

  /** `page_ref_count`. */
  get refcount(): number {
    return this.#ref;
  }

  /** `set_page_count` (allocator use). */
  setRefcount(n: number): void {
    const was = this.#ref;
    this.#ref = n;
    if (this.pgmap) {
      if (was === 0 && n > 0) this.pgmap.activePages++;
      else if (was > 0 && n === 0) this.pgmap.activePages--;
    }
  }

  /** `is_zone_device_page`. */
  get isZoneDevice(): boolean {
    return this.zone === "Device";
  }

  /** `is_pci_p2pdma_page`. */
  get isPciP2pdma(): boolean {
    return this.pgmap?.type === "pci_p2pdma";
  }

  /** `PageAnon`. */
  get isAnon(): boolean {
    return (this.flags & PG.anon) !== 0;
  }

  /** `page_maybe_dma_pinned`: refcount at or above the pin bias. */
  get maybeDmaPinned(): boolean {
    return this.#ref >= GUP_PIN_COUNTING_BIAS;
  }

  /** `get_page` / `page_ref_add`: a reference on a page with refcount 0 is a bug. */
  get(n = 1): void {
    if (this.#ref <= 0) {
      this.#owner.world.bug(
        "BUG",
        `VM_BUG_ON_PAGE(page_ref_count(page) <= 0): get_page on free pfn 0x${
          this.pfn.toString(16)
        }`,
      );
      return;
    }
    this.#ref += n;
  }

  /** `get_page_unless_zero` / `try_get_page`: false when the page is free or its pgmap is dying. */
  tryGet(): boolean {
    if (this.#ref <= 0 || this.pgmap?.dying) return false;
    this.#ref++;
    return true;
  }

  /**
   * `put_page` / `page_ref_sub_and_test`: drops `n` references; at zero the
   * page goes back to the buddy allocator or to `pgmap->ops->page_free`.
   * Returns true when it reached zero.
   */
  put(n = 1): boolean {
    if (this.#ref - n < 0) {
      this.#owner.world.bug(
        "BUG",
        `VM_BUG_ON_PAGE(page_ref_count(page) == 0): put_page underflow on pfn 0x${
          this.pfn.toString(16)
        }`,
      );
      return false;
    }
    this.#ref -= n;
    if (this.#ref === 0) {
      if (this.pgmap) this.pgmap.activePages--;
      this.#owner.pageFreed(this);
      return true;
    }
    return false;
  }

  /** Marks a first reference on a ZONE_DEVICE page (the provider hands it out). */
  initDeviceRef(): void {
    if (!this.pgmap) return;
    if (this.#ref !== 0) {
      this.#owner.world.bug(
        "BUG",
        `VM_BUG_ON_PAGE(page_ref_count(page) != 0): device page 0x${this.pfn.toString(16)} in use`,
      );
      return;
    }
    this.#ref = 1;
    this.pgmap.activePages++;
  }

  /** `pfn:0x... zone:... refcount:...` for reports. */
  toString(): string {
    return `page:pfn 0x${this.pfn.toString(16)} zone ${this.zone} refcount ${this.#ref}`;
  }
}
