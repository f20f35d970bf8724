/**
 * DOC: the IO page table of an IOAS (drivers/iommu/iommufd/io_pagetable.c, pages.c)
 *
 * An {@linkcode IoPagetable} is the IOVA space of one IOAS: areas (each a
 * slice of an {@linkcode IoptPages}: user memory, a memfd, or a dma-buf),
 * reserved ranges, allowed ranges, and the iommu domains the areas are
 * mirrored into. Rules kept from the kernel:
 *
 * - a fixed IOVA must be aligned to `iova_alignment`, must not wrap
 *   (-EOVERFLOW), hit a reserved range (-EINVAL) or an existing area
 *   (-EEXIST) (`iopt_check_iova`);
 * - an allocated IOVA is the lowest hole inside the allowed ranges, outside
 *   reserved ranges and areas, aligned to the page offset of the source and
 *   to the largest power of two up to the length the source allows
 *   (`iopt_alloc_iova`); no room is -ENOSPC;
 * - unmap removes only whole areas, lowest IOVA first: an area crossing
 *   the range edge stops it with -ENOENT (areas removed before it stay
 *   removed), and a range with no area is -ENOENT (`iopt_unmap_iova_range`);
 * - user memory is pinned (`pin_user_pages(FOLL_LONGTERM | FOLL_WRITE)`)
 *   while at least one domain holds the area, and every pinned page is
 *   charged to the user's locked memory (`incr_user_locked_vm`, -ENOMEM
 *   over RLIMIT_MEMLOCK); memfd folios are pinned likewise
 *   (`memfd_pin_folios`); dma-buf memory is not charged;
 * - contiguous pfn runs go to `iommu_map` in one call, so the domain picks
 *   the largest page sizes (2 MiB, 1 GiB) the alignment allows;
 * - a dma-buf revoke (`iopt_revoke_notify`) unmaps the area from every
 *   domain and leaves it revoked (`phys.len = 0`): it is never mapped into
 *   a domain again, added domains skip it, and only an unmap by user space
 *   removes it.
 *
 * Locking: `iova_rwsem` protects the interval trees; `domains_rwsem` the
 * domain list; each pages object has its `mutex`. Methods that may pin or
 * sleep are async and take the locks they need.
 *
 * @module
 */
import {
  FOLL_LONGTERM,
  FOLL_WRITE,
  type Kernel,
  KernelError,
  type MmStruct,
  Mutex,
  type Page,
  pinUserPagesFast,
  RwSemaphore,
  unpinUserPages,
} from "@dmalab/kernel";
import { IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE, type IommuDomain } from "@dmalab/iommu";

const PAGE = 4096;
/** `ULONG_MAX` stand-in: the largest IOVA the model represents exactly. */
export const IOVA_MAX: number = Number.MAX_SAFE_INTEGER;

/** A contiguous physical run of an area: `length` bytes at `phys` for `iova`. */
export interface PfnRun {
  /** First IOVA. */
  readonly iova: number;
  /** Physical address. */
  readonly phys: number;
  /** Bytes. */
  readonly length: number;
}

/** The user whose locked memory pays for pins (`struct user_struct`). */
export class IommufdUser {
  /** `locked_vm` in pages. */
  lockedVm = 0;
  /** `RLIMIT_MEMLOCK` in pages. */
  rlimitMemlock: number;

  /** A user with `rlimitMemlockBytes` (default unlimited). */
  constructor(rlimitMemlockBytes: number = Infinity) {
    this.rlimitMemlock = rlimitMemlockBytes / PAGE;
  }

  /** `incr_user_locked_vm`: -ENOMEM over the limit. */
  charge(npages: number): void {
    if (this.lockedVm + npages > this.rlimitMemlock) {
      throw new KernelError(
        "ENOMEM",
        `iommufd: pinning ${npages} pages exceeds RLIMIT_MEMLOCK (${this.lockedVm} locked of ${this.rlimitMemlock}) (incr_user_locked_vm)`,
      );
    }
    this.lockedVm += npages;
  }

  /** `decr_user_locked_vm`. */
  uncharge(npages: number): void {
    this.lockedVm -= npages;
  }
}

/** How the pages of an {@linkcode IoptPages} are reached (`enum iopt_address_type`). */
export type IoptAddressType = "user" | "memfd" | "dmabuf";

/** Source specific part of a pages object. */
export interface IoptPagesSource {
  /** The type. */
  readonly type: IoptAddressType;
  /** Bytes. */
  readonly length: number;
  /** Byte offset of the first byte inside its first page (alignment constraint). */
  readonly startOffset: number;
  /** Writable pins. */
  readonly writable: boolean;
  /** Pins `[off, off+len)` and returns the runs (physical), or throws. */
  pin(
    off: number,
    len: number,
  ): Promise<{ runs: { phys: number; length: number }[]; charge: number; unpin: () => void }>;
  /** For dma-buf sources: true once revoked (`phys.len == 0`). */
  readonly revoked?: boolean;
  /** Releases the source when the last area goes. */
  release?(): Promise<void>;
}

/** `struct iopt_pages`: a source shared by areas. */
export class IoptPages {
  /** World id. */
  readonly id: number;
  /** `pages->mutex`. */
  readonly mutex: Mutex;
  /** The source. */
  readonly source: IoptPagesSource;
  /** Areas using it. */
  readonly areas: Set<IoptArea> = new Set();

  /** A pages object over `source`. */
  constructor(world: Kernel, source: IoptPagesSource) {
    this.id = world.nextId();
    this.mutex = new Mutex(world, "&pages->mutex");
    this.source = source;
  }
}

/** `struct iopt_area`. */
export class IoptArea {
  /** First IOVA. */
  readonly iova: number;
  /** Bytes. */
  readonly length: number;
  /** The pages. */
  readonly pages: IoptPages;
  /** Byte offset into the pages. */
  readonly pagesOffset: number;
  /** `IOMMU_READ | IOMMU_WRITE | ...`. */
  readonly iommuProt: number;
  /** Domains this area is mapped into now. */
  readonly mapped: Set<IommuDomain> = new Set();
  /** The pin held while any domain maps the area. */
  pin: { runs: { phys: number; length: number }[]; charge: number; unpin: () => void } | null =
    null;

  /** Built by the io_pagetable. */
  constructor(
    iova: number,
    length: number,
    pages: IoptPages,
    pagesOffset: number,
    iommuProt: number,
  ) {
    this.iova = iova;
    this.length = length;
    this.pages = pages;
    this.pagesOffset = pagesOffset;
    this.iommuProt = iommuProt;
  }

  /** `iopt_area_last_iova`. */
  get last(): number {
    return this.iova + this.length - 1;
  }

  /** The area's IOVA runs once pinned. */
  runs(): PfnRun[] {
    const out: PfnRun[] = [];
    let iova = this.iova;
    for (const r of this.pin?.runs ?? []) {
      out.push({ iova, phys: r.phys, length: r.length });
      iova += r.length;
    }
    return out;
  }

  /** `[iova-last]`. */
  toString(): string {
    return `area [0x${this.iova.toString(16)}-0x${
      this.last.toString(16)
    }] (${this.pages.source.type})`;
  }
}

/** An IOVA range, inclusive (`struct iommu_iova_range`). */
export interface IovaRange {
  /** First IOVA. */
  readonly start: number;
  /** Last IOVA (inclusive). */
  readonly last: number;
}

/** User memory pinned through an mm (`IOPT_ADDRESS_USER`). */
export function userPagesSource(
  mm: MmStruct,
  uptr: number,
  length: number,
  writable: boolean,
): IoptPagesSource {
  if (length === 0 || length > IOVA_MAX - PAGE) {
    throw new KernelError(
      "EINVAL",
      `iopt_alloc_user_pages: length ${length} (iopt_alloc_user_pages)`,
    );
  }
  if (uptr + length > IOVA_MAX) {
    throw new KernelError("EOVERFLOW", `iopt_alloc_user_pages: uptr + length overflows`);
  }
  const startOffset = uptr % PAGE;
  return {
    type: "user",
    length,
    startOffset,
    writable,
    async pin(off, len) {
      const first = Math.floor((uptr + off) / PAGE) * PAGE;
      const lastByte = uptr + off + len - 1;
      const npages = Math.floor(lastByte / PAGE) - first / PAGE + 1;
      const pages: Page[] = await pinUserPagesFast(
        mm,
        first,
        npages,
        FOLL_LONGTERM | (writable ? FOLL_WRITE : 0),
      );
      if (pages.length !== npages) {
        unpinUserPages(pages);
        throw new KernelError(
          "EFAULT",
          `iommufd: pinned ${pages.length} of ${npages} pages at 0x${first.toString(16)}`,
        );
      }
      const phys = pages.map((p) => p.pfn * PAGE);
      return {
        runs: coalesce(phys, (uptr + off) % PAGE, len),
        charge: npages,
        unpin: () => unpinUserPages(pages),
      };
    },
  };
}

/** Turns page addresses into contiguous runs covering `len` bytes from `headOff`. */
export function coalesce(
  pagePhys: readonly number[],
  headOff: number,
  len: number,
): { phys: number; length: number }[] {
  const runs: { phys: number; length: number }[] = [];
  let remaining = len;
  for (let i = 0; i < pagePhys.length && remaining > 0; i++) {
    const off = i === 0 ? headOff : 0;
    const n = Math.min(PAGE - off, remaining);
    const phys = pagePhys[i]! + off;
    const prev = runs[runs.length - 1];
    if (prev && prev.phys + prev.length === phys) prev.length += n;
    else runs.push({ phys, length: n });
    remaining -= n;
  }
  return runs;
}

/** Counters of an io_pagetable. */
export interface IoptStats {
  /** `iommu_map` calls made to fill domains. */
  iommuMaps: number;
  /** Areas revoked by a dma-buf invalidation. */
  revokes: number;
}

/** `struct io_pagetable`. */
export class IoPagetable {
  /** The world. */
  readonly world: Kernel;
  /** `iova_rwsem`. */
  readonly iovaRwsem: RwSemaphore;
  /** `domains_rwsem`. */
  readonly domainsRwsem: RwSemaphore;
  /** Areas by IOVA. */
  readonly areas: IoptArea[] = [];
  /** Reserved ranges (`reserved_itree`), with their owner. */
  readonly reserved: { range: IovaRange; owner: unknown }[] = [];
  /** Allowed ranges (`allowed_itree`); empty means everything. */
  allowed: IovaRange[] = [];
  /** Domains the areas are mirrored into. */
  readonly domains: IommuDomain[] = [];
  /** `iova_alignment`. */
  iovaAlignment: number = PAGE;
  /** Who pays for pins. */
  readonly user: IommufdUser;
  /** Counters. */
  readonly stats: IoptStats = { iommuMaps: 0, revokes: 0 };

  /** An empty IOVA space. */
  constructor(world: Kernel, user: IommufdUser) {
    this.world = world;
    this.user = user;
    this.iovaRwsem = new RwSemaphore(world, "&iopt->iova_rwsem");
    this.domainsRwsem = new RwSemaphore(world, "&iopt->domains_rwsem");
  }

  /** Areas overlapping `[start, last]`. */
  areasIn(start: number, last: number): IoptArea[] {
    return this.areas.filter((a) => a.iova <= last && start <= a.last);
  }

  #reservedIn(start: number, last: number): boolean {
    return this.reserved.some((r) => r.range.start <= last && start <= r.range.last);
  }

  /** `iopt_check_iova`. */
  #checkIova(iova: number, length: number): void {
    if (iova % this.iovaAlignment !== 0) {
      throw new KernelError(
        "EINVAL",
        `iommufd: IOVA 0x${iova.toString(16)} not aligned to 0x${
          this.iovaAlignment.toString(16)
        } (iopt_check_iova)`,
      );
    }
    if (iova + length - 1 > IOVA_MAX) {
      throw new KernelError(
        "EOVERFLOW",
        `iommufd: IOVA 0x${iova.toString(16)} + length wraps (iopt_check_iova)`,
      );
    }
    if (this.#reservedIn(iova, iova + length - 1)) {
      throw new KernelError(
        "EINVAL",
        `iommufd: [0x${iova.toString(16)}, +0x${
          length.toString(16)
        }) hits a reserved range (iopt_check_iova)`,
      );
    }
    if (this.areasIn(iova, iova + length - 1).length) {
      throw new KernelError(
        "EEXIST",
        `iommufd: [0x${iova.toString(16)}, +0x${
          length.toString(16)
        }) is already mapped (iopt_check_iova)`,
      );
    }
  }

  /** `iopt_alloc_iova`: lowest fitting hole. */
  #allocIova(length: number, pageOffset: number): number {
    let align = PAGE;
    // Largest power of two up to the length, bounded to 1 GiB, keeps huge pages usable.
    while (align * 2 <= length && align < 2 ** 30) align *= 2;
    align = Math.max(align, this.iovaAlignment);
    const windows = this.allowed.length ? this.allowed : [{ start: 0, last: IOVA_MAX }];
    const blockers = [
      ...this.areas.map((a) => ({ start: a.iova, last: a.last })),
      ...this.reserved.map((r) => r.range),
    ].sort((a, b) => a.start - b.start);
    for (let a = align; a >= this.iovaAlignment; a /= 2) {
      for (const w of windows) {
        let cand = Math.ceil(w.start / a) * a + pageOffset;
        for (;;) {
          if (cand + length - 1 > w.last) break;
          const hit = blockers.find((b) => b.start <= cand + length - 1 && cand <= b.last);
          if (!hit) return cand;
          cand = Math.ceil((hit.last + 1) / a) * a + pageOffset;
        }
      }
    }
    throw new KernelError(
      "ENOSPC",
      `iommufd: no free IOVA range of 0x${length.toString(16)} bytes (iopt_alloc_iova)`,
    );
  }

  /**
   * `iopt_map_pages`: adds an area over `pages[offset, offset+length)` at
   * `iova` (or an allocated IOVA) and fills every domain. Returns the IOVA.
   */
  async mapPages(
    pages: IoptPages,
    offset: number,
    length: number,
    iova: number | null,
    iommuProt: number,
  ): Promise<number> {
    if (length === 0) throw new KernelError("EINVAL", "iommufd: map of length 0");
    await this.domainsRwsem.downRead();
    try {
      await this.iovaRwsem.downWrite();
      let area: IoptArea;
      try {
        const pageOffset = (pages.source.startOffset + offset) % PAGE;
        if (iova === null) iova = this.#allocIova(length, pageOffset);
        else {
          this.#checkIova(iova, length);
          if (iova % PAGE !== pageOffset) {
            throw new KernelError(
              "EINVAL",
              `iommufd: IOVA 0x${iova.toString(16)} and the source disagree on the page offset`,
            );
          }
        }
        area = new IoptArea(iova, length, pages, offset, iommuProt);
        this.areas.push(area);
        this.areas.sort((a, b) => a.iova - b.iova);
        pages.areas.add(area);
      } finally {
        this.iovaRwsem.upWrite();
      }
      try {
        for (const d of this.domains) await this.#fillDomain(area, d);
      } catch (e) {
        await this.#removeArea(area);
        throw e;
      }
      return iova;
    } finally {
      this.domainsRwsem.upRead();
    }
  }

  /** `iopt_area_fill_domain`: pins (first domain) and maps the runs. */
  async #fillDomain(area: IoptArea, domain: IommuDomain): Promise<void> {
    const pages = area.pages;
    await pages.mutex.lock();
    try {
      if (pages.source.revoked) return;
      if (!area.pin) {
        const pin = await pages.source.pin(area.pagesOffset, area.length);
        try {
          this.user.charge(pin.charge);
        } catch (e) {
          pin.unpin();
          throw e;
        }
        area.pin = pin;
      }
      const done: PfnRun[] = [];
      try {
        for (const r of area.runs()) {
          domain.map(r.iova, r.phys, r.length, area.iommuProt);
          this.stats.iommuMaps++;
          done.push(r);
        }
      } catch (e) {
        for (const r of done) domain.unmap(r.iova, r.length);
        if (area.mapped.size === 0) this.#unpin(area);
        throw e;
      }
      area.mapped.add(domain);
    } finally {
      pages.mutex.unlock();
    }
  }

  #unpin(area: IoptArea): void {
    if (!area.pin) return;
    this.user.uncharge(area.pin.charge);
    area.pin.unpin();
    area.pin = null;
  }

  /** `iopt_area_unfill_domain`; pages mutex held. */
  #unfillDomain(area: IoptArea, domain: IommuDomain): void {
    if (!area.mapped.has(domain)) return;
    for (const r of area.runs()) domain.unmap(r.iova, r.length);
    area.mapped.delete(domain);
    if (area.mapped.size === 0) this.#unpin(area);
  }

  async #removeArea(area: IoptArea): Promise<void> {
    const pages = area.pages;
    await pages.mutex.lock();
    try {
      for (const d of [...area.mapped]) this.#unfillDomain(area, d);
      this.#unpin(area);
      pages.areas.delete(area);
    } finally {
      pages.mutex.unlock();
    }
    const i = this.areas.indexOf(area);
    if (i >= 0) this.areas.splice(i, 1);
    if (pages.areas.size === 0) await pages.source.release?.();
  }

  /**
   * `iopt_unmap_iova` / `iopt_unmap_all`: removes whole areas in
   * `[iova, iova+length)`; returns bytes unmapped.
   */
  async unmap(iova: number, length: number): Promise<number> {
    if (length === 0) {
      throw new KernelError("EINVAL", "IOMMU_IOAS_UNMAP: length 0 (iopt_unmap_iova)");
    }
    const last = iova + length - 1;
    if (last > IOVA_MAX) {
      throw new KernelError("EOVERFLOW", "IOMMU_IOAS_UNMAP: iova + length wraps");
    }
    await this.domainsRwsem.downRead();
    try {
      const victims = this.areasIn(iova, last);
      if (!victims.length) {
        throw new KernelError(
          "ENOENT",
          `IOMMU_IOAS_UNMAP: nothing mapped in [0x${iova.toString(16)}, 0x${last.toString(16)}]`,
        );
      }
      // Areas go one at a time from the lowest IOVA; one that crosses an
      // edge stops the walk with -ENOENT, and the areas already removed
      // stay removed (iopt_unmap_iova_range).
      let n = 0;
      for (const a of victims) {
        if (a.iova < iova || a.last > last) {
          throw new KernelError(
            "ENOENT",
            `IOMMU_IOAS_UNMAP: ${a} crosses the edge of [0x${iova.toString(16)}, 0x${
              last.toString(16)
            }] (iopt_unmap_iova_range)`,
          );
        }
        await this.#removeArea(a);
        n += a.length;
      }
      return n;
    } finally {
      this.domainsRwsem.upRead();
    }
  }

  /** `iopt_unmap_all`: every area; returns bytes. */
  async unmapAll(): Promise<number> {
    if (!this.areas.length) return 0;
    return this.unmap(0, IOVA_MAX + 1);
  }

  /**
   * `iopt_table_add_domain`: mirrors every area into `domain` (revoked
   * dma-buf areas are skipped) and narrows the IOVA alignment to the
   * domain's smallest page.
   */
  async addDomain(domain: IommuDomain): Promise<void> {
    await this.domainsRwsem.downWrite();
    try {
      // Adding a domain twice is a caller bug: WARN, then -EEXIST.
      if (
        this.world.warnOn(
          this.domains.includes(domain),
          `iopt_table_add_domain: domain ${domain.id} already added`,
        )
      ) {
        throw new KernelError("EEXIST", `iopt_table_add_domain: domain ${domain.id} already added`);
      }
      const added: IoptArea[] = [];
      try {
        for (const a of this.areas) {
          await this.#fillDomain(a, domain);
          added.push(a);
        }
      } catch (e) {
        for (const a of added) {
          await a.pages.mutex.lock();
          this.#unfillDomain(a, domain);
          a.pages.mutex.unlock();
        }
        throw e;
      }
      this.domains.push(domain);
      this.iovaAlignment = Math.max(this.iovaAlignment, domain.minPagesz);
    } finally {
      this.domainsRwsem.upWrite();
    }
  }

  /** `iopt_table_remove_domain`. */
  async removeDomain(domain: IommuDomain): Promise<void> {
    await this.domainsRwsem.downWrite();
    try {
      const i = this.domains.indexOf(domain);
      // Removing a domain that was never added is a caller bug (WARN_ON).
      if (
        this.world.warnOn(
          i < 0,
          `iopt_table_remove_domain: domain ${domain.id} is not in the table`,
        )
      ) {
        return;
      }
      for (const a of this.areas) {
        await a.pages.mutex.lock();
        this.#unfillDomain(a, domain);
        a.pages.mutex.unlock();
      }
      this.domains.splice(i, 1);
    } finally {
      this.domainsRwsem.upWrite();
    }
  }

  /**
   * `iopt_revoke_notify` for `pages` (pages mutex held by the caller's
   * dma-buf invalidation): unmaps every area of it from every domain.
   */
  revokePagesLocked(pages: IoptPages): void {
    pages.mutex.assertHeld();
    for (const a of pages.areas) {
      for (const d of [...a.mapped]) {
        for (const r of a.runs()) d.unmap(r.iova, r.length);
        a.mapped.delete(d);
      }
      a.pin = null;
      this.stats.revokes++;
    }
  }

  /** `IOMMU_IOAS_IOVA_RANGES`: usable ranges (allowed minus reserved). */
  iovaRanges(): IovaRange[] {
    let ranges: IovaRange[] = this.allowed.length
      ? [...this.allowed]
      : [{ start: 0, last: IOVA_MAX }];
    for (const d of this.domains) {
      ranges = ranges
        .map((r) => ({
          start: Math.max(r.start, d.apertureStart),
          last: Math.min(r.last, d.apertureEnd),
        }))
        .filter((r) => r.start <= r.last);
    }
    for (const { range: res } of this.reserved) {
      const next: IovaRange[] = [];
      for (const r of ranges) {
        if (res.last < r.start || res.start > r.last) {
          next.push(r);
          continue;
        }
        if (r.start < res.start) next.push({ start: r.start, last: res.start - 1 });
        if (res.last < r.last) next.push({ start: res.last + 1, last: r.last });
      }
      ranges = next;
    }
    return ranges.sort((a, b) => a.start - b.start);
  }

  /** `iopt_reserve_iova`: -EADDRINUSE over an area or an allowed range. */
  reserveIova(start: number, last: number, owner: unknown): void {
    if (
      this.areasIn(start, last).length ||
      this.allowed.some((a) => a.start <= last && start <= a.last)
    ) {
      throw new KernelError(
        "EADDRINUSE",
        `iopt_reserve_iova: [0x${start.toString(16)}, 0x${last.toString(16)}] is in use`,
      );
    }
    this.reserved.push({ range: { start, last }, owner });
  }

  /** `iopt_set_allow_iova`: -EADDRINUSE when a reserved range intersects. */
  setAllowIova(ranges: IovaRange[]): void {
    for (const r of ranges) {
      if (this.#reservedIn(r.start, r.last)) {
        throw new KernelError(
          "EADDRINUSE",
          `iopt_set_allow_iova: [0x${r.start.toString(16)}, 0x${
            r.last.toString(16)
          }] hits a reserved range`,
        );
      }
    }
    this.allowed = [...ranges].sort((a, b) => a.start - b.start);
  }
}

/** `conv_iommu_prot`: IOMMU_IOAS_MAP flags to iommu prot. */
export function convIommuProt(readable: boolean, writeable: boolean, mmio = false): number {
  return (readable ? IOMMU_READ : 0) | (writeable ? IOMMU_WRITE : 0) | (mmio ? IOMMU_MMIO : 0);
}
