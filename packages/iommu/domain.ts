/**
 * DOC: IOMMU domains and the core map/unmap
 *
 * `struct iommu_domain` (include/linux/iommu.h) and the core entry points of
 * drivers/iommu/iommu.c that operate on it:
 * - types: `blocked` (`IOMMU_DOMAIN_BLOCKED`, every DMA faults), `identity`
 *   (`IOMMU_DOMAIN_IDENTITY`, IOVA = physical), `unmanaged` (a paging domain
 *   a driver or VFIO/iommufd owns), `dma` (`IOMMU_DOMAIN_DMA`, the DMA API's,
 *   strict invalidation) and `dma-fq` (`IOMMU_DOMAIN_DMA_FQ`, lazy: a flush
 *   queue batches invalidations).
 * - `iommu_map()`: rejects non-paging domains (-EINVAL), requires IOVA,
 *   physical address and size aligned to the smallest page size (-EINVAL,
 *   "unaligned" in dmesg), splits the request with `iommu_pgsize()` into
 *   `map_pages` calls, unrolls what was mapped when one fails, then
 *   `iotlb_sync_map`.
 * - `iommu_unmap()` / `iommu_unmap_fast()`: the same splitting; returns bytes
 *   unmapped (0 for a misaligned request); `iommu_unmap()` syncs its own
 *   gather, `iommu_unmap_fast()` leaves the sync to the caller.
 * - `iommu_iotlb_sync()`, `iommu_flush_iotlb_all()`: hand the gathered range
 *   to the driver of every IOMMU unit the domain is attached through, which
 *   invalidates its IOTLB, sends device-TLB invalidations to ATS-enabled
 *   devices, and only then frees the gathered table pages.
 *
 * Locking: a domain's page table is changed under the caller's range lock
 * (IOVA ranges never overlap between concurrent callers); attach/detach run
 * under the group mutex in the core. Every call here is synchronous (atomic
 * context allowed) as in the kernel.
 *
 * @module
 */
import { type Device, type Kernel, KernelError } from "@dmalab/kernel";
import { IommuIotlbGather } from "./gather.ts";
import { IoPageTable, type IoPageTableOptions } from "./io_pgtable.ts";
import { bitmapToLg2s, iommuPgsize } from "./pgsize.ts";
import { protToString } from "./prot.ts";
import type { FlushQueue } from "./flush_queue.ts";

/** Domain types (`IOMMU_DOMAIN_*`). */
export type IommuDomainType = "blocked" | "identity" | "unmanaged" | "dma" | "dma-fq";

/** Who a domain's invalidations go to: implemented by IOMMU units. */
export interface IommuDomainDriver {
  /** `iotlb_sync`: invalidate the gathered range for `domain`. */
  iotlbSync(domain: IommuDomain, gather: IommuIotlbGather): void;
  /** `flush_iotlb_all`: invalidate everything cached for `domain`. */
  flushIotlbAll(domain: IommuDomain): void;
}

/** Counters of one domain. */
export interface IommuDomainStats {
  /** Successful `iommu_map()` calls. */
  maps: number;
  /** `map_pages` calls made by the core. */
  mapPagesCalls: number;
  /** `iommu_unmap()`/`iommu_unmap_fast()` calls. */
  unmaps: number;
  /** `unmap_pages` calls made by the core. */
  unmapPagesCalls: number;
  /** `iommu_iotlb_sync()` calls. */
  iotlbSyncs: number;
  /** `iommu_flush_iotlb_all()` calls. */
  flushAll: number;
  /** `iommu_sync_map()` (`iotlb_sync_map`) calls. */
  syncMaps: number;
  /** Bytes mapped now. */
  mappedBytes: number;
}

/** Options for {@linkcode IommuDomain}. */
export interface IommuDomainOptions {
  /** Page-table shape for paging domains. */
  pgtable?: IoPageTableOptions;
  /** Restrict `pgsize_bitmap` (a subset of what the table supports). */
  pgsizeBitmap?: number;
}

const PAGING: ReadonlySet<IommuDomainType> = new Set(["unmanaged", "dma", "dma-fq"]);

/**
 * An IOMMU domain.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { IommuDomain, IOMMU_READ, IOMMU_WRITE } from "@dmalab/iommu";
 * const d = new IommuDomain(new Kernel(), "unmanaged");
 * d.map(0x10000000, 0x80000000, 0x400000, IOMMU_READ | IOMMU_WRITE); // two 2 MiB leaves
 * d.iovaToPhys(0x10201000); // 0x80201000
 * d.unmap(0x10000000, 0x400000); // 0x400000
 * ```
 */
export class IommuDomain {
  /** The world. */
  readonly world: Kernel;
  /** World-unique id. */
  readonly id: number;
  /** Domain type (a `dma` domain may become `dma-fq`, as sysfs allows live). */
  type: IommuDomainType;
  /** The IO page table (paging types only). */
  readonly pgtable: IoPageTable | null;
  /** `pgsize_bitmap` (0 for non-paging domains). */
  pgsizeBitmap: number;
  /** `geometry.aperture_start`. */
  readonly apertureStart: number;
  /** `geometry.aperture_end`. */
  readonly apertureEnd: number;
  /** Counters. */
  readonly stats: IommuDomainStats = {
    maps: 0,
    mapPagesCalls: 0,
    unmaps: 0,
    unmapPagesCalls: 0,
    iotlbSyncs: 0,
    flushAll: 0,
    syncMaps: 0,
    mappedBytes: 0,
  };
  /** Lazy flush queue (`dma-fq` domains once dma-iommu set it up). */
  fq: FlushQueue | null = null;
  /** Slot for the DMA layer's IOVA cookie (`domain->iova_cookie`). */
  dmaCookie: unknown = null;
  /**
   * `iommu_set_fault_handler()`: called by `report_iommu_fault()` for each
   * translation fault of a device attached to this domain.
   */
  faultHandler: ((dev: Device, iova: number, write: boolean) => void) | null = null;
  readonly #drivers = new Map<IommuDomainDriver, number>();
  #freed = false;

  /** `iommu_domain_alloc` for `type` (see {@linkcode IommuDomainOptions}). */
  constructor(world: Kernel, type: IommuDomainType, options: IommuDomainOptions = {}) {
    this.world = world;
    this.id = world.nextId();
    this.type = type;
    if (PAGING.has(type)) {
      this.pgtable = new IoPageTable(world, options.pgtable ?? {});
      this.pgtable.setSyncHook((g) => this.iotlbSync(g));
      this.pgsizeBitmap = options.pgsizeBitmap === undefined
        ? this.pgtable.pgsizeBitmap
        : bitmapToLg2s(options.pgsizeBitmap).filter((l) =>
          bitmapToLg2s(this.pgtable!.pgsizeBitmap).includes(l)
        ).reduce((a, l) => a + 2 ** l, 0);
      this.pgtable.domainPgsizeBitmap = this.pgsizeBitmap;
      if (this.pgsizeBitmap === 0) {
        throw new KernelError("EINVAL", `iommu_domain_alloc: no usable page size in the bitmap`);
      }
      this.apertureStart = 0;
      this.apertureEnd = this.pgtable.lastVa;
    } else {
      this.pgtable = null;
      this.pgsizeBitmap = 0;
      this.apertureStart = 0;
      this.apertureEnd = 0;
    }
  }

  /** True for `unmanaged`, `dma` and `dma-fq` (`__IOMMU_DOMAIN_PAGING`). */
  get isPaging(): boolean {
    return PAGING.has(this.type);
  }

  /** True for `dma` and `dma-fq` (`__IOMMU_DOMAIN_DMA_API`). */
  get isDmaApi(): boolean {
    return this.type === "dma" || this.type === "dma-fq";
  }

  /** True once {@linkcode IommuDomain.free} ran. */
  get freed(): boolean {
    return this.#freed;
  }

  /** Smallest page size in the bitmap. */
  get minPagesz(): number {
    return 2 ** (bitmapToLg2s(this.pgsizeBitmap)[0] ?? 12);
  }

  /** @internal units add themselves when a device behind them attaches. */
  addDriver(d: IommuDomainDriver): void {
    this.#drivers.set(d, (this.#drivers.get(d) ?? 0) + 1);
  }

  /** @internal */
  removeDriver(d: IommuDomainDriver): void {
    const n = (this.#drivers.get(d) ?? 0) - 1;
    if (n <= 0) this.#drivers.delete(d);
    else this.#drivers.set(d, n);
  }

  /** Number of device attachments (all units). */
  get attachCount(): number {
    let n = 0;
    for (const c of this.#drivers.values()) n += c;
    return n;
  }

  #name(): string {
    return `iommu domain ${this.id} (${this.type})`;
  }

  #alive(what: string): void {
    if (this.#freed) throw new Error(`${what}: ${this.#name()} used after iommu_domain_free`);
  }

  /**
   * `iommu_map()`: maps `[iova, iova+size)` to `paddr` with `prot`, then
   * `iommu_sync_map()`. Throws `KernelError` (`EINVAL` non-paging or
   * unaligned, `EADDRINUSE`, `ERANGE`, ...) after unrolling what it had
   * mapped.
   */
  map(iova: number, paddr: number, size: number, prot: number): void {
    this.mapNosync(iova, paddr, size, prot);
    this.syncMap(iova, size);
  }

  /**
   * `iommu_sync_map()`: the driver's `iotlb_sync_map` after new mappings
   * (needed by caching-mode/shadowing IOMMUs; counted here, no cache holds
   * negative entries in the model).
   */
  syncMap(_iova: number, _size: number): void {
    this.stats.syncMaps++;
  }

  /** `iommu_map_nosync()`: {@linkcode IommuDomain.map} without the final sync. */
  mapNosync(iova: number, paddr: number, size: number, prot: number): void {
    this.#alive("iommu_map");
    if (!this.isPaging) {
      throw new KernelError("EINVAL", `iommu_map: ${this.#name()} is not a paging domain`);
    }
    const min = this.minPagesz;
    if (iova % min || paddr % min || size % min || size === 0) {
      this.world.dmesg.printk(
        "err",
        `unaligned: iova 0x${iova.toString(16)} pa 0x${paddr.toString(16)} size 0x${
          size.toString(16)
        } min_pagesz 0x${min.toString(16)}`,
      );
      throw new KernelError("EINVAL", `iommu_map: unaligned request on ${this.#name()}`);
    }
    if (iova + size - 1 > this.apertureEnd) {
      throw new KernelError(
        "ERANGE",
        `iommu_map: 0x${iova.toString(16)}+0x${
          size.toString(16)
        } beyond the aperture of ${this.#name()}`,
      );
    }
    const pt = this.pgtable!;
    let left = size;
    let va = iova;
    let pa = paddr;
    let err: string | null = null;
    while (left) {
      const { pgsize, count } = iommuPgsize(this.pgsizeBitmap, va, pa, left);
      this.stats.mapPagesCalls++;
      const r = pt.mapPages(va, pa, pgsize, count, prot);
      left -= r.mapped;
      if (r.error) {
        err = r.error;
        break;
      }
      va += r.mapped;
      pa += r.mapped;
    }
    if (err) {
      if (size - left) this.unmap(iova, size - left);
      throw new KernelError(
        err as "EINVAL",
        `iommu_map: 0x${iova.toString(16)}+0x${size.toString(16)} -> 0x${paddr.toString(16)} (${
          protToString(prot)
        }) on ${this.#name()} failed`,
      );
    }
    this.stats.maps++;
    this.stats.mappedBytes += size;
    this.world.trace.enabled && this.world.trace.event("map", {
      iova: `0x${iova.toString(16)}`,
      paddr: `0x${paddr.toString(16)}`,
      size: `0x${size.toString(16)}`,
    });
  }

  /**
   * `iommu_unmap_fast()`: unmaps and gathers into `gather` without syncing.
   * Returns bytes unmapped (0 when not paging or misaligned; may exceed
   * `size` when the range ends inside a large page).
   */
  unmapFast(iova: number, size: number, gather: IommuIotlbGather): number {
    this.#alive("iommu_unmap");
    if (!this.isPaging) return 0;
    const min = this.minPagesz;
    if (iova % min || size % min) {
      this.world.dmesg.printk(
        "err",
        `unaligned: iova 0x${iova.toString(16)} size 0x${size.toString(16)} min_pagesz 0x${
          min.toString(16)
        }`,
      );
      return 0;
    }
    this.stats.unmaps++;
    const pt = this.pgtable!;
    let unmapped = 0;
    let va = iova;
    while (unmapped < size) {
      const { pgsize, count } = iommuPgsize(this.pgsizeBitmap, va, va, size - unmapped);
      this.stats.unmapPagesCalls++;
      const n = pt.unmapPages(va, pgsize, count, gather);
      if (!n) break;
      va += n;
      unmapped += n;
    }
    this.stats.mappedBytes -= unmapped;
    this.world.trace.enabled && this.world.trace.event("unmap", {
      iova: `0x${iova.toString(16)}`,
      size: `0x${size.toString(16)}`,
      unmapped_size: `0x${unmapped.toString(16)}`,
    });
    return unmapped;
  }

  /** `iommu_unmap()`: unmaps and syncs; returns bytes unmapped. */
  unmap(iova: number, size: number): number {
    const g = new IommuIotlbGather();
    const n = this.unmapFast(iova, size, g);
    this.iotlbSync(g);
    return n;
  }

  /**
   * `iommu_iotlb_sync()`: every unit the domain is attached through
   * invalidates the gathered range; the gather's table pages are released
   * after that; the gather is reinitialised.
   */
  iotlbSync(gather: IommuIotlbGather): void {
    this.stats.iotlbSyncs++;
    for (const d of this.#drivers.keys()) d.iotlbSync(this, gather);
    gather.releaseFreelist();
    gather.init();
  }

  /** `iommu_flush_iotlb_all()`. */
  flushIotlbAll(): void {
    this.stats.flushAll++;
    for (const d of this.#drivers.keys()) d.flushIotlbAll(this);
  }

  /** `iommu_iova_to_phys()`: identity returns `iova`; unmapped or blocked returns 0. */
  iovaToPhys(iova: number): number {
    if (this.type === "identity") return iova;
    if (!this.pgtable) return 0;
    return this.pgtable.iovaToPhys(iova);
  }

  /**
   * `iommu_domain_free()`: frees the page table. Freeing a domain that is
   * still attached is a use-after-free in the kernel; here a WARN.
   */
  free(): void {
    if (this.#freed) return;
    this.world.warnOn(
      this.attachCount > 0,
      `iommu_domain_free: ${this.#name()} is still attached to ${this.attachCount} device(s)`,
    );
    this.fq?.destroy();
    this.pgtable?.deinit();
    this.#freed = true;
  }
}
