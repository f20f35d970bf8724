/**
 * DOC: physical memory
 *
 * The physical address space of one world: RAM ranges per NUMA node (from an
 * {@linkcode e820Layout}), MMIO regions registered by devices, and
 * ZONE_DEVICE page maps. Reads and writes by physical address dispatch to
 * whoever owns the address:
 *
 * - RAM: real bytes in a {@linkcode SparseStore} keyed by pfn; a page gets
 *   4 KiB of backing on its first write and untouched memory reads as zeros.
 * - An MMIO region: the device's `read`/`write` handlers, or (without
 *   handlers) its own sparse backing, as a BAR with VRAM behind it behaves.
 * - Nothing: x86 completes a CPU read of an address no one decodes with all
 *   ones (a PCI master abort) and drops the write. The model does the same
 *   and counts such accesses in {@linkcode PhysMem.unbackedReads} /
 *   {@linkcode PhysMem.unbackedWrites}; it never throws for them, because
 *   the hardware does not either. Callers that want a bus error check
 *   {@linkcode PhysMem.isBacked} first.
 *
 * `struct page` exists only for RAM and ZONE_DEVICE pfns
 * ({@linkcode PhysMem.pfnValid}); pages are created lazily. The page
 * allocator is a buddy allocator per (node, zone) with the kernel's node and
 * zone fallback order, and emits the `kmem` tracepoints `mm_page_alloc` /
 * `mm_page_free` while tracing is on.
 *
 * Addresses are `bigint | number` at the API (numbers must be exact, below
 * 2^52, the x86-64 MAX_PHYSMEM_BITS); internally addresses, pfns and offsets
 * are numbers.
 *
 * Locking: all operations are synchronous and callable in atomic context
 * (the allocator's `zone->lock` and the resource tree's lock are never held
 * across a scheduling point). {@linkcode PhysMem.memunmapPages} sleeps until
 * the page map's last page reference is gone, as `memunmap_pages` does.
 *
 * @module
 */
import { KernelError } from "../errors.ts";
import type { Kernel } from "../world.ts";
import { WaitQueueHead } from "../sched/wait_queue.ts";
import { BuddyZone, MAX_PAGE_ORDER } from "./buddy.ts";
import { e820Layout, type RamRange } from "./e820.ts";
import {
  DevPagemap,
  type DevPagemapOps,
  type MemoryType,
  Page,
  PG,
  type ZoneType,
} from "./page.ts";
import { PAGE_SHIFT, PAGE_SIZE, SparseStore } from "./sparse_store.ts";

/** A physical address at the API: bigint, or an exact number below 2^52. */
export type PhysAddr = bigint | number;

/** `1 << MAX_PHYSMEM_BITS` on x86-64 (52 bits). */
export const MAX_PHYS_ADDR = 2 ** 52;

/** Converts an API address to a number; addresses at or above 2^52 map to {@linkcode MAX_PHYS_ADDR}. */
export function physToNumber(p: PhysAddr): number {
  if (typeof p === "number") {
    if (!Number.isSafeInteger(p) || p < 0) {
      throw new RangeError(`physical address ${p} is not a non-negative safe integer`);
    }
    return Math.min(p, MAX_PHYS_ADDR);
  }
  if (p < 0n) throw new RangeError(`physical address ${p} is negative`);
  return p >= BigInt(MAX_PHYS_ADDR) ? MAX_PHYS_ADDR : Number(p);
}

/** `PFN_DOWN(phys)`. */
export function physToPfn(p: PhysAddr): number {
  return Math.floor(physToNumber(p) / PAGE_SIZE);
}

/** `PFN_PHYS(pfn)` as a bigint. */
export function pfnToPhys(pfn: number): bigint {
  return BigInt(pfn) << BigInt(PAGE_SHIFT);
}

const ZONE_DMA_END = 16 * 1024 * 1024;
const ZONE_DMA32_END = 4 * 1024 * 1024 * 1024;

/** The zone of a RAM physical address on x86-64. */
function zoneOf(addr: number): ZoneType {
  return addr < ZONE_DMA_END ? "DMA" : addr < ZONE_DMA32_END ? "DMA32" : "Normal";
}

const ZONE_ORDER: readonly ("DMA" | "DMA32" | "Normal")[] = ["DMA", "DMA32", "Normal"];

/** MMIO access handlers a device supplies. Offsets are relative to the region start. */
export interface MmioOps {
  /** Fills `dst` with the bytes at `offset`. Without it reads return all ones. */
  read?(offset: number, dst: Uint8Array): void;
  /** Consumes `src` written at `offset`. Without it writes are dropped. */
  write?(offset: number, src: Uint8Array): void;
}

/** Options for {@linkcode PhysMem.registerMmio}. */
export interface MmioOptions {
  /** Resource name (`0000:01:00.0 BAR 0`). */
  name: string;
  /** First byte. */
  start: PhysAddr;
  /** Length in bytes. */
  size: PhysAddr;
  /** The owning device. */
  owner?: unknown;
  /** Handlers; when absent the region gets sparse memory backing (VRAM behind a BAR). */
  ops?: MmioOps;
}

/** An MMIO region (a `struct resource` of IORESOURCE_MEM in iomem). */
export class MmioRegion {
  /** Resource name. */
  readonly name: string;
  /** First byte. */
  readonly start: number;
  /** One past the last byte. */
  readonly end: number;
  /** Owning device. */
  readonly owner: unknown;
  /** Handlers, or null for memory backing. */
  readonly ops: MmioOps | null;
  /** Sparse backing when there are no handlers. */
  readonly store: SparseStore | null;
  /** True once released. */
  released = false;

  /** Built by {@linkcode PhysMem.registerMmio}. */
  constructor(name: string, start: number, end: number, owner: unknown, ops: MmioOps | null) {
    this.name = name;
    this.start = start;
    this.end = end;
    this.owner = owner;
    this.ops = ops;
    this.store = ops ? null : new SparseStore();
  }

  /** Size in bytes. */
  get size(): number {
    return this.end - this.start;
  }

  /** `[mem 0x...-0x...]`, as /proc/iomem and resource printing show it. */
  toString(): string {
    return `[mem 0x${this.start.toString(16)}-0x${(this.end - 1).toString(16)}] ${this.name}`;
  }
}

interface Region {
  readonly start: number;
  readonly end: number;
  readonly nid: number;
  readonly mmio: MmioRegion | null;
}

/** Allocation flags (the parts of `gfp_t` the model honours). */
export interface GfpOptions {
  /** Preferred node (`alloc_pages_node`); default the first node; -1 (NUMA_NO_NODE) means any. */
  nid?: number;
  /** Highest zone allowed: `DMA` (GFP_DMA), `DMA32` (GFP_DMA32) or `Normal` (default). */
  zone?: "DMA" | "DMA32" | "Normal";
  /** `__GFP_THISNODE`: no fallback to other nodes. */
  thisNode?: boolean;
  /** `__GFP_ZERO`. */
  zero?: boolean;
  /** `__GFP_COMP`: a compound page (one refcount for the whole block). */
  comp?: boolean;
  /** `__GFP_NOWARN`. */
  noWarn?: boolean;
}

/** Options for {@linkcode PhysMem.memremapPages}. */
export interface MemremapOptions {
  /** `pgmap->type`. */
  type: MemoryType;
  /** First byte (page aligned). */
  start: PhysAddr;
  /** Length (page multiple). */
  size: PhysAddr;
  /** Owner (the provider device). */
  owner?: unknown;
  /** `pgmap->ops`. */
  ops?: DevPagemapOps;
}

/** Options for a world's physical memory. */
export interface PhysMemOptions {
  /** RAM bytes per NUMA node, laid out by {@linkcode e820Layout}. Default one node of 8 GiB. */
  nodes?: readonly (bigint | number)[];
  /** Explicit RAM ranges instead of `nodes`. */
  ram?: readonly RamRange[];
}

interface Allocation {
  order: number;
  comp: boolean;
}

/**
 * The physical address space of a world.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * const world = new Kernel({ memory: { nodes: [1n << 40n] } }); // 1 TiB of RAM, sparse
 * const page = world.mem.allocPages(0)!;
 * const phys = world.mem.pageToPhys(page);
 * world.mem.write(phys + 16n, new Uint8Array([0xde, 0xad]));
 * world.mem.readU8(phys + 17n); // 0xad
 * world.mem.readU32(0xfee0_0000n); // 0xffffffff: nothing decodes it
 * ```
 */
export class PhysMem {
  /** The world. */
  readonly world: Kernel;
  /** RAM ranges by node, ascending. */
  readonly ram: readonly RamRange[];
  /** CPU reads of addresses no one decodes. */
  unbackedReads = 0;
  /** CPU writes to addresses no one decodes (dropped). */
  unbackedWrites = 0;
  readonly #ramStore = new SparseStore();
  #regions: Region[] = [];
  #last: Region | null = null;
  readonly #zones = new Map<string, BuddyZone>();
  readonly #nodes: number[];
  readonly #pages = new Map<number, Page>();
  readonly #allocated = new Map<number, Allocation>();
  #pgmaps: DevPagemap[] = [];
  readonly #pgmapWq: WaitQueueHead;

  /** Builds the address map; see {@linkcode PhysMemOptions}. */
  constructor(world: Kernel, options: PhysMemOptions = {}) {
    this.world = world;
    this.ram = options.ram
      ? [...options.ram]
      : e820Layout({ nodes: options.nodes ?? [8n << 30n] }).ram;
    const zoneRanges = new Map<string, [number, number][]>();
    const nodes = new Set<number>();
    for (const r of this.ram) {
      const s = physToNumber(r.start);
      const e = physToNumber(r.end);
      if (s % PAGE_SIZE || e % PAGE_SIZE || e <= s) {
        throw new KernelError(
          "EINVAL",
          `PhysMem: RAM range 0x${s.toString(16)}-0x${e.toString(16)} not page aligned`,
        );
      }
      this.#regions.push({ start: s, end: e, nid: r.nid, mmio: null });
      nodes.add(r.nid);
      // Split at zone boundaries.
      const cuts = [s, ...[ZONE_DMA_END, ZONE_DMA32_END].filter((c) => c > s && c < e), e];
      for (let i = 0; i + 1 < cuts.length; i++) {
        const key = `${r.nid}:${zoneOf(cuts[i]!)}`;
        const list = zoneRanges.get(key) ?? [];
        list.push([cuts[i]! / PAGE_SIZE, cuts[i + 1]! / PAGE_SIZE]);
        zoneRanges.set(key, list);
      }
    }
    this.#regions.sort((a, b) => a.start - b.start);
    for (let i = 1; i < this.#regions.length; i++) {
      if (this.#regions[i]!.start < this.#regions[i - 1]!.end) {
        throw new KernelError("EINVAL", "PhysMem: RAM ranges overlap");
      }
    }
    for (const [key, ranges] of zoneRanges) this.#zones.set(key, new BuddyZone(ranges));
    this.#nodes = [...nodes].sort((a, b) => a - b);
    this.#pgmapWq = new WaitQueueHead(world.sched, "pgmap->done");
    world.addChecker("mem", () => this.checkInvariants());
  }

  /**
   * The allocator and `struct page` agree: an allocated block's first page
   * has a reference; a page inside a free block has none and is not mapped.
   * (Registered as the world checker `mem`.)
   */
  checkInvariants(): string[] {
    const out: string[] = [];
    for (const [pfn, a] of this.#allocated) {
      const p = this.#pages.get(pfn);
      if (!p || p.refcount <= 0) {
        out.push(`pfn 0x${pfn.toString(16)} allocated (order ${a.order}) with refcount 0`);
      }
    }
    for (const p of this.#pages.values()) {
      if (p.pgmap) continue;
      if (this.#zoneFor(p.pfn).isFree(p.pfn) && (p.refcount !== 0 || p.mapcount !== 0)) {
        out.push(
          `free pfn 0x${p.pfn.toString(16)} has refcount ${p.refcount} mapcount ${p.mapcount}`,
        );
      }
    }
    return out;
  }

  // ---- address map -------------------------------------------------------

  #find(addr: number): Region | null {
    const last = this.#last;
    if (last && addr >= last.start && addr < last.end) return last;
    const rs = this.#regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid]!;
      if (addr < r.start) hi = mid - 1;
      else if (addr >= r.end) lo = mid + 1;
      else {
        this.#last = r;
        return r;
      }
    }
    return null;
  }

  /** Start of the first region above `addr` (or 2^52). */
  #nextStart(addr: number): number {
    for (const r of this.#regions) if (r.start > addr) return r.start;
    return MAX_PHYS_ADDR;
  }

  /** NUMA nodes with RAM. */
  get nodes(): readonly number[] {
    return this.#nodes;
  }

  /** True when `phys` is RAM (`page_is_ram`). */
  isRam(phys: PhysAddr): boolean {
    const r = this.#find(physToNumber(phys));
    return r !== null && r.mmio === null;
  }

  /** True when every byte of [phys, phys+len) is RAM or a registered MMIO region. */
  isBacked(phys: PhysAddr, len: number): boolean {
    let a = physToNumber(phys);
    const end = a + len;
    while (a < end) {
      const r = this.#find(a);
      if (!r) return false;
      a = r.end;
    }
    return true;
  }

  /**
   * `region_intersects(start, size, IORESOURCE_SYSTEM_RAM, ...)`: whether
   * [start, start+size) is all RAM (`intersects`), has no RAM (`disjoint`),
   * or both (`mixed`).
   */
  regionIntersectsRam(start: PhysAddr, size: PhysAddr): "intersects" | "disjoint" | "mixed" {
    const s = physToNumber(start);
    const e = s + physToNumber(size);
    let ram = 0;
    for (const r of this.#regions) {
      if (r.mmio || r.end <= s || r.start >= e) continue;
      ram += Math.min(r.end, e) - Math.max(r.start, s);
    }
    return ram === 0 ? "disjoint" : ram === e - s ? "intersects" : "mixed";
  }

  /** The MMIO region containing `phys`, or null. */
  mmioAt(phys: PhysAddr): MmioRegion | null {
    return this.#find(physToNumber(phys))?.mmio ?? null;
  }

  /** The NUMA node of a RAM address, or -1 (NUMA_NO_NODE). */
  nidOf(phys: PhysAddr): number {
    const r = this.#find(physToNumber(phys));
    return r && !r.mmio ? r.nid : -1;
  }

  /**
   * Claims [start, start+size) for a device (`request_mem_region` +
   * `ioremap`-able): -EINVAL for an empty or out-of-range region, -EBUSY when
   * it overlaps RAM or another region.
   */
  registerMmio(options: MmioOptions): MmioRegion {
    const start = physToNumber(options.start);
    const size = physToNumber(options.size);
    if (size <= 0 || start + size > MAX_PHYS_ADDR) {
      throw new KernelError(
        "EINVAL",
        `request_mem_region: ${options.name}: bad range (size ${size})`,
      );
    }
    const end = start + size;
    for (const r of this.#regions) {
      if (r.start < end && start < r.end) {
        const what = r.mmio
          ? `${r.mmio}`
          : `System RAM [mem 0x${r.start.toString(16)}-0x${(r.end - 1).toString(16)}]`;
        throw new KernelError(
          "EBUSY",
          `request_mem_region: ${options.name} [mem 0x${start.toString(16)}-0x${
            (end - 1).toString(16)
          }] conflicts with ${what}`,
        );
      }
    }
    const region = new MmioRegion(
      options.name,
      start,
      end,
      options.owner ?? null,
      options.ops ?? null,
    );
    this.#regions.push({ start, end, nid: -1, mmio: region });
    this.#regions.sort((a, b) => a.start - b.start);
    return region;
  }

  /**
   * `release_mem_region`: -EBUSY while a ZONE_DEVICE page map still covers
   * the region, -ENOENT when it is not registered.
   */
  unregisterMmio(region: MmioRegion): void {
    const i = this.#regions.findIndex((r) => r.mmio === region);
    if (i < 0) throw new KernelError("ENOENT", `release_mem_region: ${region} is not registered`);
    const sp = region.start / PAGE_SIZE;
    const ep = region.end / PAGE_SIZE;
    const pg = this.#pgmaps.find((p) => p.startPfn < ep && sp < p.endPfn);
    if (pg) {
      throw new KernelError(
        "EBUSY",
        `release_mem_region: ${region} still has ${pg.type} pages (memunmap_pages first)`,
      );
    }
    this.#regions.splice(i, 1);
    this.#last = null;
    region.released = true;
  }

  /**
   * The address map as `/proc/iomem` prints it (`00100000-bfffffff : System
   * RAM`), RAM and MMIO regions ascending, nested ZONE_DEVICE page maps
   * indented under their region.
   */
  iomem(): string {
    const hex = (v: number) => v.toString(16).padStart(8, "0");
    const lines: string[] = [];
    for (const r of this.#regions) {
      lines.push(`${hex(r.start)}-${hex(r.end - 1)} : ${r.mmio ? r.mmio.name : "System RAM"}`);
      for (const p of this.#pgmaps) {
        const s = p.startPfn * PAGE_SIZE;
        if (s >= r.start && s < r.end) {
          lines.push(`  ${hex(s)}-${hex(p.endPfn * PAGE_SIZE - 1)} : ${p.type}`);
        }
      }
    }
    return lines.join("\n");
  }

  /** `/proc/buddyinfo`: free blocks per order for each node and zone. */
  buddyinfo(): string {
    const lines: string[] = [];
    for (const nid of this.#nodes) {
      for (const z of ZONE_ORDER) {
        const zone = this.#zones.get(`${nid}:${z}`);
        if (!zone) continue;
        const counts = zone.buddyinfo().map((n) => String(n).padStart(6)).join(" ");
        lines.push(`Node ${nid}, zone ${z.padStart(8)} ${counts}`);
      }
    }
    return lines.join("\n");
  }

  /** Registered MMIO regions, ascending. */
  mmioRegions(): MmioRegion[] {
    return this.#regions.filter((r) => r.mmio).map((r) => r.mmio!);
  }

  // ---- struct page ------------------------------------------------------

  #pgmapOf(pfn: number): DevPagemap | null {
    for (const p of this.#pgmaps) if (pfn >= p.startPfn && pfn < p.endPfn) return p;
    return null;
  }

  /** `pfn_valid`: a `struct page` exists (RAM or ZONE_DEVICE). */
  pfnValid(pfn: number | bigint): boolean {
    const p = typeof pfn === "bigint" ? Number(pfn) : pfn;
    if (!Number.isSafeInteger(p) || p < 0 || p >= MAX_PHYS_ADDR / PAGE_SIZE) return false;
    const r = this.#find(p * PAGE_SIZE);
    if (r && !r.mmio) return true;
    return this.#pgmapOf(p) !== null;
  }

  /** `pfn_to_page`, or null when `pfn_valid` is false. */
  pfnToPage(pfn: number): Page | null {
    const existing = this.#pages.get(pfn);
    if (existing) return existing;
    if (!Number.isSafeInteger(pfn) || pfn < 0) return null;
    const addr = pfn * PAGE_SIZE;
    const r = this.#find(addr);
    let page: Page;
    if (r && !r.mmio) {
      page = new Page(this, pfn, r.nid, zoneOf(addr), null);
    } else {
      const pg = this.#pgmapOf(pfn);
      if (!pg) return null;
      page = new Page(this, pfn, -1, "Device", pg);
    }
    this.#pages.set(pfn, page);
    return page;
  }

  /** `page_to_phys`. */
  pageToPhys(page: Page): bigint {
    return pfnToPhys(page.pfn);
  }

  /** `phys_to_page`, or null without a struct page. */
  physToPage(phys: PhysAddr): Page | null {
    return this.pfnToPage(physToPfn(phys));
  }

  /** @internal Page refcount reached zero. */
  pageFreed(page: Page): void {
    if (page.pgmap) {
      page.pgmap.ops.pageFree?.(page);
      if (page.pgmap.activePages === 0) this.#pgmapWq.wakeUpAll();
      return;
    }
    const a = this.#allocated.get(page.pfn);
    if (!a) {
      this.world.bug(
        "BUG",
        `BUG: Bad page state: pfn 0x${page.pfn.toString(16)} freed but not allocated`,
      );
      return;
    }
    this.#allocated.delete(page.pfn);
    if (this.world.trace.enabled) {
      this.world.trace.event("mm_page_free", { pfn: `0x${page.pfn.toString(16)}`, order: a.order });
    }
    page.flags &= ~PG.head;
    page.mapping = null;
    page.index = 0;
    this.#zoneFor(page.pfn).free(page.pfn, a.order);
  }

  #zoneFor(pfn: number): BuddyZone {
    const addr = pfn * PAGE_SIZE;
    return this.#zones.get(`${this.#find(addr)!.nid}:${zoneOf(addr)}`)!;
  }

  // ---- page allocator ----------------------------------------------------

  /**
   * `alloc_pages(gfp, order)`: a 2^order block, its first page with
   * refcount 1; null when no allowed zone has a free block (the kernel's
   * NULL). Orders above MAX_PAGE_ORDER warn unless `noWarn`, then fail.
   */
  allocPages(order: number, gfp: GfpOptions = {}): Page | null {
    if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER) {
      if (!gfp.noWarn) {
        this.world.bug(
          "WARN",
          `WARNING: alloc_pages: order ${order} > MAX_PAGE_ORDER (${MAX_PAGE_ORDER})`,
        );
      }
      return null;
    }
    const pref = gfp.nid ?? this.#nodes[0] ?? 0;
    const nodes = gfp.thisNode ? [pref] : [pref, ...this.#nodes.filter((n) => n !== pref)];
    const top = ZONE_ORDER.indexOf(gfp.zone ?? "Normal");
    for (const nid of nodes) {
      for (let z = top; z >= 0; z--) {
        const zone = this.#zones.get(`${nid}:${ZONE_ORDER[z]}`);
        const pfn = zone?.alloc(order) ?? null;
        if (pfn === null) continue;
        const page = this.pfnToPage(pfn)!;
        const comp = gfp.comp ?? false;
        this.#allocated.set(pfn, { order, comp });
        page.setRefcount(1);
        page.flags = comp && order > 0 ? PG.head : 0;
        if (gfp.zero) {
          for (let i = 0; i < 1 << order; i++) this.#ramStore.discard(pfn + i);
        }
        if (this.world.trace.enabled) {
          this.world.trace.event("mm_page_alloc", {
            pfn: `0x${pfn.toString(16)}`,
            order,
            nid,
            zone: ZONE_ORDER[z]!,
          });
        }
        return page;
      }
    }
    return null;
  }

  /**
   * `__free_pages(page, order)`: drops the caller's reference; the block goes
   * back when it was the last. When someone else still holds the first page
   * of a non-compound block, the rest of the block is freed now, as the
   * kernel does. Freeing a block that is not allocated with this order is a
   * "Bad page state" BUG.
   */
  freePages(page: Page, order: number): void {
    const a = this.#allocated.get(page.pfn);
    if (!a || a.order !== order || page.refcount <= 0) {
      this.world.bug(
        "BUG",
        `BUG: Bad page state: __free_pages(pfn 0x${page.pfn.toString(16)}, order ${order}): ${
          !a || page.refcount <= 0 ? "not allocated" : `allocated with order ${a.order}`
        }`,
      );
      return;
    }
    if (page.put()) return;
    if (!a.comp && order > 0) {
      a.order = 0;
      const zone = this.#zoneFor(page.pfn);
      for (let o = order - 1; o >= 0; o--) zone.free(page.pfn + 2 ** o, o);
    }
  }

  /** Free pages summed over every zone. */
  get freeRamPages(): number {
    let n = 0;
    for (const z of this.#zones.values()) n += z.freePages;
    return n;
  }

  /** RAM pages managed by the allocator. */
  get totalRamPages(): number {
    let n = 0;
    for (const z of this.#zones.values()) n += z.managedPages;
    return n;
  }

  /** The allocation order of a block head, or -1 when `pfn` heads no allocation. */
  allocationOrder(pfn: number): number {
    return this.#allocated.get(pfn)?.order ?? -1;
  }

  // ---- ZONE_DEVICE -------------------------------------------------------

  /**
   * `memremap_pages`: gives [start, start+size) a `struct page` in
   * ZONE_DEVICE. -EINVAL for an empty or unaligned range; a range that hits
   * RAM is a WARN and -ENXIO; one that overlaps another page map is a WARN
   * ("Conflicting mapping in same section") and -ENOMEM.
   */
  memremapPages(options: MemremapOptions): DevPagemap {
    const start = physToNumber(options.start);
    const size = physToNumber(options.size);
    if (size <= 0 || start % PAGE_SIZE || size % PAGE_SIZE) {
      throw new KernelError(
        "EINVAL",
        `memremap_pages: range 0x${start.toString(16)}+0x${
          size.toString(16)
        } is empty or not page aligned`,
      );
    }
    const end = start + size;
    const isRam = this.regionIntersectsRam(start, size);
    if (isRam !== "disjoint") {
      this.world.bug(
        "WARN",
        `WARNING: memremap_pages attempted on ${isRam === "mixed" ? "mixed" : "ram"} region 0x${
          start.toString(16)
        }-0x${(end - 1).toString(16)}`,
      );
      throw new KernelError(
        "ENXIO",
        `memremap_pages: 0x${start.toString(16)}-0x${(end - 1).toString(16)} is System RAM`,
      );
    }
    const sp = start / PAGE_SIZE;
    const ep = end / PAGE_SIZE;
    if (this.#pgmaps.some((p) => p.startPfn < ep && sp < p.endPfn)) {
      this.world.bug("WARN", "WARNING: Conflicting mapping in same section");
      throw new KernelError(
        "ENOMEM",
        `memremap_pages: 0x${start.toString(16)} overlaps an existing dev_pagemap`,
      );
    }
    const pg = new DevPagemap(options.type, sp, ep, options.owner ?? null, options.ops ?? {});
    this.#pgmaps.push(pg);
    return pg;
  }

  /**
   * `memunmap_pages`: stops new references, sleeps until every page of the
   * map is free (`wait_for_completion(&pgmap->done)`), then removes the
   * pages. -EINVAL when `pgmap` is not registered.
   */
  async memunmapPages(pgmap: DevPagemap): Promise<void> {
    if (!this.#pgmaps.includes(pgmap) || pgmap.dying) {
      throw new KernelError("EINVAL", "memunmap_pages: dev_pagemap is not registered");
    }
    pgmap.dying = true;
    await this.#pgmapWq.waitEvent(() => pgmap.activePages === 0);
    this.#pgmaps = this.#pgmaps.filter((p) => p !== pgmap);
    if (pgmap.nrPages <= this.#pages.size) {
      for (let pfn = pgmap.startPfn; pfn < pgmap.endPfn; pfn++) this.#pages.delete(pfn);
    } else {
      for (const pfn of [...this.#pages.keys()]) {
        if (pfn >= pgmap.startPfn && pfn < pgmap.endPfn) this.#pages.delete(pfn);
      }
    }
  }

  /** Registered page maps. */
  pagemaps(): readonly DevPagemap[] {
    return this.#pgmaps;
  }

  // ---- data --------------------------------------------------------------

  /** RAM pages with backing. */
  get touchedRamPages(): number {
    return this.#ramStore.touchedPages;
  }

  /** Copies physical memory at `phys` into `dst`. */
  readInto(phys: PhysAddr, dst: Uint8Array): void {
    let a = physToNumber(phys);
    let done = 0;
    const len = dst.length;
    while (done < len) {
      const r = a < MAX_PHYS_ADDR ? this.#find(a) : null;
      if (!r) {
        const n = Math.min(len - done, Math.max(this.#nextStart(a) - a, 1));
        dst.fill(0xff, done, done + n);
        this.unbackedReads++;
        a += n;
        done += n;
        continue;
      }
      const n = Math.min(len - done, r.end - a);
      if (r.mmio) this.#mmioRead(r.mmio, a - r.mmio.start, dst, done, n);
      else this.#storeRead(this.#ramStore, a, dst, done, n);
      a += n;
      done += n;
    }
  }

  /** Reads `len` bytes at `phys` into a new array. */
  read(phys: PhysAddr, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.readInto(phys, out);
    return out;
  }

  /** Writes `src` at `phys`. */
  write(phys: PhysAddr, src: Uint8Array): void {
    let a = physToNumber(phys);
    let done = 0;
    const len = src.length;
    while (done < len) {
      const r = a < MAX_PHYS_ADDR ? this.#find(a) : null;
      if (!r) {
        const n = Math.min(len - done, Math.max(this.#nextStart(a) - a, 1));
        this.unbackedWrites++;
        a += n;
        done += n;
        continue;
      }
      const n = Math.min(len - done, r.end - a);
      if (r.mmio) this.#mmioWrite(r.mmio, a - r.mmio.start, src, done, n);
      else this.#storeWrite(this.#ramStore, a, src, done, n);
      a += n;
      done += n;
    }
  }

  /** `memset` of physical memory. Filling untouched RAM with 0 allocates nothing. */
  fill(phys: PhysAddr, len: number, value: number): void {
    let a = physToNumber(phys);
    const end = a + len;
    while (a < end) {
      const r = a < MAX_PHYS_ADDR ? this.#find(a) : null;
      if (!r) {
        const n = Math.min(end - a, Math.max(this.#nextStart(a) - a, 1));
        this.unbackedWrites++;
        a += n;
        continue;
      }
      const n = Math.min(end - a, r.end - a);
      if (r.mmio && r.mmio.ops) {
        this.#mmioWrite(r.mmio, a - r.mmio.start, new Uint8Array(n).fill(value), 0, n);
      } else {
        const store = r.mmio ? r.mmio.store! : this.#ramStore;
        const base = r.mmio ? r.mmio.start : 0;
        let x = a - base;
        const xe = x + n;
        while (x < xe) {
          const idx = Math.floor(x / PAGE_SIZE);
          const off = x - idx * PAGE_SIZE;
          const k = Math.min(PAGE_SIZE - off, xe - x);
          store.fill(idx, off, k, value);
          x += k;
        }
      }
      a += n;
    }
  }

  /** `memcpy` between physical ranges (through a bounce buffer, so overlap is safe). */
  copy(dst: PhysAddr, src: PhysAddr, len: number): void {
    const chunk = 1 << 20;
    for (let off = 0; off < len; off += chunk) {
      const n = Math.min(chunk, len - off);
      const buf = this.read(physToNumber(src) + off, n);
      this.write(physToNumber(dst) + off, buf);
    }
  }

  /** An 8-bit read. */
  readU8(phys: PhysAddr): number {
    return this.read(phys, 1)[0]!;
  }

  /** A 32-bit little-endian read (`readl` / `ioread32`). */
  readU32(phys: PhysAddr): number {
    const b = this.read(phys, 4);
    return new DataView(b.buffer).getUint32(0, true);
  }

  /** A 64-bit little-endian read (`readq`). */
  readU64(phys: PhysAddr): bigint {
    const b = this.read(phys, 8);
    return new DataView(b.buffer).getBigUint64(0, true);
  }

  /** An 8-bit write. */
  writeU8(phys: PhysAddr, v: number): void {
    this.write(phys, new Uint8Array([v]));
  }

  /** A 32-bit little-endian write (`writel`). */
  writeU32(phys: PhysAddr, v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    this.write(phys, b);
  }

  /** A 64-bit little-endian write (`writeq`). */
  writeU64(phys: PhysAddr, v: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
    this.write(phys, b);
  }

  #storeRead(store: SparseStore, addr: number, dst: Uint8Array, dOff: number, n: number): void {
    let x = addr;
    let d = dOff;
    const end = addr + n;
    while (x < end) {
      const idx = Math.floor(x / PAGE_SIZE);
      const off = x - idx * PAGE_SIZE;
      const k = Math.min(PAGE_SIZE - off, end - x);
      store.read(idx, off, dst, d, k);
      x += k;
      d += k;
    }
  }

  #storeWrite(store: SparseStore, addr: number, src: Uint8Array, sOff: number, n: number): void {
    let x = addr;
    let s = sOff;
    const end = addr + n;
    while (x < end) {
      const idx = Math.floor(x / PAGE_SIZE);
      const off = x - idx * PAGE_SIZE;
      const k = Math.min(PAGE_SIZE - off, end - x);
      store.write(idx, off, src, s, k);
      x += k;
      s += k;
    }
  }

  #mmioRead(m: MmioRegion, off: number, dst: Uint8Array, dOff: number, n: number): void {
    if (m.store) this.#storeRead(m.store, off, dst, dOff, n);
    else if (m.ops?.read) m.ops.read(off, dst.subarray(dOff, dOff + n));
    else dst.fill(0xff, dOff, dOff + n);
  }

  #mmioWrite(m: MmioRegion, off: number, src: Uint8Array, sOff: number, n: number): void {
    if (m.store) this.#storeWrite(m.store, off, src, sOff, n);
    else m.ops?.write?.(off, src.subarray(sOff, sOff + n));
  }
}
