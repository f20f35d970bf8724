/**
 * DOC: the iommufd context and its objects (drivers/iommu/iommufd/main.c, ioas.c, device.c, hw_pagetable.c)
 *
 * An {@linkcode IommufdCtx} is one open `/dev/iommu`: an id-indexed table of
 * objects (IOAS, HWPT, device) and the uAPI on them:
 *
 * - `IOMMU_IOAS_ALLOC`, `IOMMU_DESTROY` (-ENOENT for an unknown id, -EBUSY
 *   while the object is in use);
 * - `IOMMU_IOAS_MAP` (flags outside FIXED_IOVA|WRITEABLE|READABLE are
 *   -EOPNOTSUPP, neither READABLE nor WRITEABLE -EINVAL, values beyond
 *   ULONG_MAX -EOVERFLOW), `IOMMU_IOAS_MAP_FILE` (memfd here, dma-buf in
 *   dmabuf.ts), `IOMMU_IOAS_UNMAP` (iova 0 + length U64_MAX = everything),
 *   `IOMMU_IOAS_IOVA_RANGES`, `IOMMU_IOAS_ALLOW_IOVAS`;
 * - `IOMMU_HWPT_ALLOC` for a bound device onto an IOAS;
 * - device bind (`VFIO_DEVICE_BIND_IOMMUFD` -> `iommufd_device_bind`, which
 *   claims DMA ownership of the device's group) and attach
 *   (`VFIO_DEVICE_ATTACH_IOMMUFD_PT` to an IOAS, which finds or allocates an
 *   auto domain, or to a HWPT).
 *
 * Locking: object table changes are synchronous; IOAS operations take the
 * io_pagetable's rwsems (see io_pagetable.ts); attach takes the group's
 * ownership synchronously and then fills the domain (may pin, sleeps).
 *
 * @module
 */
import { type Device, type Kernel, KernelError, type MmStruct } from "@dmalab/kernel";
import { type IommuCore, iommuCoreOf, type IommuDomain } from "@dmalab/iommu";
import {
  convIommuProt,
  IommufdUser,
  IoPagetable,
  IoptPages,
  type IoptPagesSource,
  IOVA_MAX,
  type IovaRange,
  userPagesSource,
} from "./io_pagetable.ts";

/** `IOMMU_IOAS_MAP_FIXED_IOVA`. */
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
/** `IOMMU_IOAS_MAP_WRITEABLE`. */
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
/** `IOMMU_IOAS_MAP_READABLE`. */
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;
/** `U64_MAX` as the "unmap all" length (a bigint at the API edge). */
export const U64_MAX: bigint = 2n ** 64n - 1n;

/** Object types (`enum iommufd_object_type`). */
export type IommufdObjectType = "ioas" | "hwpt_paging" | "device" | "access";

/** An object in the table. */
export interface IommufdObject {
  /** Object id. */
  readonly id: number;
  /** Type. */
  readonly type: IommufdObjectType;
  /** Users holding it (`obj->users`). */
  users: number;
  /** Teardown on destroy. */
  destroy(): Promise<void>;
}

/** `struct iommufd_ioas`. */
export class IommufdIoas implements IommufdObject {
  /** Object id. */
  readonly id: number;
  /** "ioas". */
  readonly type = "ioas" as const;
  /** Users. */
  users = 0;
  /** The IOVA space. */
  readonly iopt: IoPagetable;
  /** Paging HWPTs on this IOAS (`hwpt_list`). */
  readonly hwpts: IommufdHwptPaging[] = [];

  /** Built by {@linkcode IommufdCtx.ioasAlloc}. */
  constructor(id: number, iopt: IoPagetable) {
    this.id = id;
    this.iopt = iopt;
  }

  /** Unmaps everything. */
  async destroy(): Promise<void> {
    await this.iopt.unmapAll();
  }
}

/** `struct iommufd_hwpt_paging`. */
export class IommufdHwptPaging implements IommufdObject {
  /** Object id. */
  readonly id: number;
  /** "hwpt_paging". */
  readonly type = "hwpt_paging" as const;
  /** Users. */
  users = 0;
  /** The IOAS. */
  readonly ioas: IommufdIoas;
  /** The iommu domain. */
  readonly domain: IommuDomain;
  /** Allocated automatically by an attach to an IOAS. */
  readonly auto: boolean;

  /** Built by the ctx. */
  constructor(id: number, ioas: IommufdIoas, domain: IommuDomain, auto: boolean) {
    this.id = id;
    this.ioas = ioas;
    this.domain = domain;
    this.auto = auto;
  }

  /** Removes the domain from the IOAS and frees it. */
  async destroy(): Promise<void> {
    await this.ioas.iopt.removeDomain(this.domain);
    const i = this.ioas.hwpts.indexOf(this);
    if (i >= 0) this.ioas.hwpts.splice(i, 1);
    this.ioas.users--;
    this.domain.free();
  }
}

/** `struct iommufd_device`. */
export class IommufdDevice implements IommufdObject {
  /** Object id. */
  readonly id: number;
  /** "device". */
  readonly type = "device" as const;
  /** Users. */
  users = 0;
  /** The device. */
  readonly dev: Device;
  /** The HWPT it is attached to. */
  hwpt: IommufdHwptPaging | null = null;
  readonly #ctx: IommufdCtx;

  /** Built by {@linkcode IommufdCtx.bindDevice}. */
  constructor(id: number, ctx: IommufdCtx, dev: Device) {
    this.id = id;
    this.#ctx = ctx;
    this.dev = dev;
  }

  /** `iommufd_device_unbind`. */
  async destroy(): Promise<void> {
    if (this.hwpt) await this.#ctx.detach(this);
    const core = this.#ctx.iommu;
    const group = core.groupOf(this.dev);
    if (group) core.releaseDmaOwner(group);
  }
}

/** Options for {@linkcode IommufdCtx}. */
export interface IommufdCtxOptions {
  /** The user pins are charged to (default unlimited RLIMIT_MEMLOCK). */
  user?: IommufdUser;
}

/** Arguments of `IOMMU_IOAS_MAP`. */
export interface IoasMapArgs {
  /** `ioas_id`. */
  ioasId: number;
  /** `IOMMU_IOAS_MAP_*`. */
  flags: number;
  /** The mm of `user_va`. */
  mm: MmStruct;
  /** `user_va`. */
  userVa: number;
  /** `length`. */
  length: number;
  /** `iova` (used with FIXED_IOVA). */
  iova?: number;
}

/**
 * One open `/dev/iommu`.
 *
 * @example
 * ```ts
 * import { Kernel, MmStruct } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { iommuSetup } from "@dmalab/iommu";
 * import { IommufdCtx, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE } from "@dmalab/iommufd";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * iommuSetup(world);
 * const mm = new MmStruct(world, "qemu");
 * const ictx = new IommufdCtx(world);
 * const iova = await world.runTask("qemu", async () => {
 *   const ioas = ictx.ioasAlloc();
 *   const dev = ictx.bindDevice(m.nic);
 *   await ictx.attach(dev, ioas);
 *   const va = await mm.mmap({ length: 8192 });
 *   return await ictx.ioasMap({
 *     ioasId: ioas, mm, userVa: va, length: 8192,
 *     flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
 *   });
 * });
 * iova % 8192; // 0
 * ```
 */
export class IommufdCtx {
  /** The world. */
  readonly world: Kernel;
  /** The IOMMU core (iommuSetup must have run). */
  readonly iommu: IommuCore;
  /** Who pays for pins. */
  readonly user: IommufdUser;
  readonly #objects = new Map<number, IommufdObject>();
  #nextId = 1;

  /** `iommufd_fops_open`. */
  constructor(world: Kernel, options: IommufdCtxOptions = {}) {
    this.world = world;
    const core = iommuCoreOf(world);
    if (!core) throw new KernelError("ENODEV", "iommufd: the world has no IOMMU (iommuSetup)");
    this.iommu = core;
    this.user = options.user ?? new IommufdUser();
    this.#checkerName = `iommufd:ctx${world.nextId()}`;
    world.addChecker(this.#checkerName, () => this.check());
  }

  readonly #checkerName: string;

  /**
   * Invariants (checked when no IOAS operation is in flight): every pinned
   * page is charged exactly once (`locked_vm` equals the pins of mapped
   * areas), no revoked dma-buf area is mapped in a domain, and every other
   * area is mapped in every domain of its IOAS.
   */
  check(): string[] {
    const out: string[] = [];
    let charged = 0;
    const seen = new Set<IoPagetable>();
    for (const o of this.#objects.values()) {
      if (!(o instanceof IommufdIoas) || seen.has(o.iopt)) continue;
      seen.add(o.iopt);
      // Only quiescent state is checked: an operation in flight holds the rwsems.
      const busy = o.iopt.iovaRwsem.isLocked() || o.iopt.domainsRwsem.isLocked();
      for (const a of o.iopt.areas) {
        charged += a.pin?.charge ?? 0;
        if (busy || a.pages.mutex.isLocked()) continue;
        if (a.pages.source.revoked && a.mapped.size) {
          out.push(`${a} of a revoked dma-buf is still mapped in ${a.mapped.size} domain(s)`);
        }
        if (!a.pages.source.revoked) {
          for (const d of o.iopt.domains) {
            if (!a.mapped.has(d)) out.push(`${a} is missing from domain ${d.id}`);
          }
        }
      }
    }
    if (
      seen.size && charged !== this.user.lockedVm &&
      ![...seen].some((i) => i.domainsRwsem.isLocked())
    ) {
      out.push(`locked_vm ${this.user.lockedVm} != pinned pages ${charged}`);
    }
    return out;
  }

  #add<T extends IommufdObject>(make: (id: number) => T): T {
    const obj = make(this.#nextId++);
    this.#objects.set(obj.id, obj);
    return obj;
  }

  /** `iommufd_get_object`: -ENOENT for an unknown id or the wrong type. */
  get<T extends IommufdObject>(id: number, type: IommufdObjectType): T {
    const o = this.#objects.get(id);
    if (!o || o.type !== type) {
      throw new KernelError(
        "ENOENT",
        `iommufd: no ${type} object with id ${id} (iommufd_get_object)`,
      );
    }
    return o as T;
  }

  /** The IOAS `id`. */
  ioas(id: number): IommufdIoas {
    return this.get<IommufdIoas>(id, "ioas");
  }

  /** `IOMMU_DESTROY`. */
  async destroy(id: number): Promise<void> {
    const o = this.#objects.get(id);
    if (!o) throw new KernelError("ENOENT", `IOMMU_DESTROY: no object ${id}`);
    if (o.users > 0) {
      throw new KernelError(
        "EBUSY",
        `IOMMU_DESTROY: object ${id} (${o.type}) has ${o.users} users`,
      );
    }
    this.#objects.delete(id);
    await o.destroy();
  }

  /** `IOMMU_IOAS_ALLOC`: returns the id. */
  ioasAlloc(): number {
    return this.#add((id) => new IommufdIoas(id, new IoPagetable(this.world, this.user))).id;
  }

  static #checkMapFlags(flags: number, length: number, iova: number | undefined): void {
    if (flags & ~(IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE)) {
      throw new KernelError("EOPNOTSUPP", `IOMMU_IOAS_MAP: unknown flags 0x${flags.toString(16)}`);
    }
    if ((iova ?? 0) > IOVA_MAX || length > IOVA_MAX) {
      throw new KernelError("EOVERFLOW", "IOMMU_IOAS_MAP: iova or length >= ULONG_MAX");
    }
    if (!(flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE))) {
      throw new KernelError("EINVAL", "IOMMU_IOAS_MAP: neither READABLE nor WRITEABLE");
    }
  }

  /**
   * The checks `IOMMU_IOAS_MAP_FILE` makes before it looks at the fd
   * (`iommufd_ioas_map_file`, then the head of `iopt_map_file_pages`):
   * flags (-EOPNOTSUPP), iova/length >= ULONG_MAX (-EOVERFLOW), neither
   * READABLE nor WRITEABLE (-EINVAL), the IOAS id (-ENOENT), a zero length
   * (-EINVAL) and `start + length - 1` wrapping (-EOVERFLOW).
   */
  checkMapFile(
    ioasId: number,
    flags: number,
    start: number,
    length: number,
    iova?: number,
  ): void {
    IommufdCtx.#checkMapFlags(flags, length, iova);
    this.ioas(ioasId);
    if (length === 0) throw new KernelError("EINVAL", "IOMMU_IOAS_MAP_FILE: length is 0");
    if (start + length - 1 > IOVA_MAX) {
      throw new KernelError(
        "EOVERFLOW",
        "IOMMU_IOAS_MAP_FILE: start + length overflows (iopt_map_file_pages)",
      );
    }
  }

  /** `IOMMU_IOAS_MAP` (`iommufd_ioas_map`): returns the IOVA. */
  async ioasMap(args: IoasMapArgs): Promise<number> {
    IommufdCtx.#checkMapFlags(args.flags, args.length, args.iova);
    const ioas = this.ioas(args.ioasId);
    const writable = (args.flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0;
    const pages = new IoptPages(
      this.world,
      userPagesSource(args.mm, args.userVa, args.length, writable),
    );
    return await ioas.iopt.mapPages(
      pages,
      0,
      args.length,
      args.flags & IOMMU_IOAS_MAP_FIXED_IOVA ? args.iova ?? 0 : null,
      convIommuProt((args.flags & IOMMU_IOAS_MAP_READABLE) !== 0, writable),
    );
  }

  /**
   * `IOMMU_IOAS_MAP_FILE` with an already resolved source (memfd or
   * dma-buf, see `memfdSource` / dmabuf.ts): returns the IOVA. `mmio`
   * maps with `IOMMU_MMIO`; `onPages` sees the new pages object.
   */
  async ioasMapSource(
    ioasId: number,
    flags: number,
    source: IoptPagesSource,
    start: number,
    length: number,
    iova?: number,
    mmio = false,
    onPages?: (pages: IoptPages) => void,
  ): Promise<number> {
    IommufdCtx.#checkMapFlags(flags, length, iova);
    const ioas = this.ioas(ioasId);
    if (start + length > source.length) {
      throw new KernelError(
        "EINVAL",
        `IOMMU_IOAS_MAP_FILE: [${start}, +${length}) beyond the file (${source.length})`,
      );
    }
    const pages = new IoptPages(this.world, source);
    onPages?.(pages);
    return await ioas.iopt.mapPages(
      pages,
      start,
      length,
      flags & IOMMU_IOAS_MAP_FIXED_IOVA ? iova ?? 0 : null,
      convIommuProt(
        (flags & IOMMU_IOAS_MAP_READABLE) !== 0,
        (flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0,
        mmio,
      ),
    );
  }

  /** `IOMMU_IOAS_UNMAP`: returns bytes unmapped (`iova 0, length U64_MAX` unmaps all). */
  async ioasUnmap(ioasId: number, iova: number, length: number | bigint): Promise<number> {
    const ioas = this.ioas(ioasId);
    if (iova === 0 && length === U64_MAX) return await ioas.iopt.unmapAll();
    const len = typeof length === "bigint" ? Number(length) : length;
    if (iova > IOVA_MAX || len > IOVA_MAX) {
      throw new KernelError("EOVERFLOW", "IOMMU_IOAS_UNMAP: iova or length >= ULONG_MAX");
    }
    return await ioas.iopt.unmap(iova, len);
  }

  /** `IOMMU_IOAS_IOVA_RANGES`: ranges and `out_iova_alignment`. */
  ioasIovaRanges(ioasId: number): { ranges: IovaRange[]; alignment: number } {
    const iopt = this.ioas(ioasId).iopt;
    return { ranges: iopt.iovaRanges(), alignment: iopt.iovaAlignment };
  }

  /**
   * `IOMMU_IOAS_ALLOW_IOVAS`: -EINVAL for a range with `start >= last` or
   * overlapping another, -EADDRINUSE over a reserved range.
   */
  ioasAllowIovas(ioasId: number, ranges: IovaRange[]): void {
    const iopt = this.ioas(ioasId).iopt;
    const sorted = [...ranges].sort((a, b) => a.start - b.start);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i]!;
      // A range must span more than one byte (iommufd_ioas_load_iovas).
      if (r.start >= r.last || r.last > IOVA_MAX) {
        throw new KernelError(
          "EINVAL",
          `IOMMU_IOAS_ALLOW_IOVAS: bad range [0x${r.start.toString(16)}, 0x${r.last.toString(16)}]`,
        );
      }
      if (i && sorted[i - 1]!.last >= r.start) {
        throw new KernelError("EINVAL", "IOMMU_IOAS_ALLOW_IOVAS: ranges overlap");
      }
    }
    iopt.setAllowIova(sorted);
  }

  /**
   * `iommufd_device_bind` (what `VFIO_DEVICE_BIND_IOMMUFD` calls): claims
   * DMA ownership of the device's group for this ctx. Returns the dev id.
   */
  bindDevice(dev: Device): number {
    const group = this.iommu.groupOf(dev);
    if (!group) {
      throw new KernelError("ENODEV", `iommufd_device_bind: ${dev.name} has no IOMMU group`);
    }
    this.iommu.claimDmaOwner(group, this);
    return this.#add((id) => new IommufdDevice(id, this, dev)).id;
  }

  /** The bound device `devId`. */
  device(devId: number): IommufdDevice {
    return this.get<IommufdDevice>(devId, "device");
  }

  /**
   * `IOMMU_HWPT_ALLOC`: a paging domain for `devId` on `ioasId`. Flags
   * (-EOPNOTSUPP), then the device (-ENOENT), then the pt (-EINVAL).
   */
  async hwptAlloc(devId: number, ioasId: number, flags = 0): Promise<number> {
    if (flags) {
      throw new KernelError("EOPNOTSUPP", `IOMMU_HWPT_ALLOC: flags 0x${flags.toString(16)}`);
    }
    const idev = this.device(devId);
    // Any pt_id that is not an IOAS (missing, or another type: nesting is
    // not modelled) is -EINVAL, not -ENOENT (iommufd_hwpt_alloc).
    const pt = this.#objects.get(ioasId);
    if (!(pt instanceof IommufdIoas)) {
      throw new KernelError(
        "EINVAL",
        `IOMMU_HWPT_ALLOC: pt_id ${ioasId} is not an IOAS (iommufd_hwpt_alloc)`,
      );
    }
    return (await this.#hwptAlloc(idev, pt, false)).id;
  }

  async #hwptAlloc(
    idev: IommufdDevice,
    ioas: IommufdIoas,
    auto: boolean,
  ): Promise<IommufdHwptPaging> {
    const domain = this.iommu.pagingDomainAlloc(idev.dev);
    try {
      await ioas.iopt.addDomain(domain);
    } catch (e) {
      domain.free();
      throw e;
    }
    const hwpt = this.#add((id) => new IommufdHwptPaging(id, ioas, domain, auto));
    ioas.hwpts.push(hwpt);
    ioas.users++;
    return hwpt;
  }

  /**
   * `iommufd_device_attach` (`VFIO_DEVICE_ATTACH_IOMMUFD_PT`): `ptId` is an
   * IOAS (an existing HWPT of it is reused, else an auto domain is made) or
   * a HWPT.
   */
  async attach(devId: number, ptId: number): Promise<number> {
    const idev = this.device(devId);
    if (idev.hwpt) {
      throw new KernelError("EBUSY", `iommufd_device_attach: device ${devId} is attached`);
    }
    const obj = this.#objects.get(ptId);
    let hwpt: IommufdHwptPaging;
    if (obj instanceof IommufdHwptPaging) hwpt = obj;
    else if (obj instanceof IommufdIoas) {
      hwpt = obj.hwpts[0] ?? await this.#hwptAlloc(idev, obj, true);
    } else if (!obj) {
      throw new KernelError("ENOENT", `iommufd_device_attach: no object ${ptId}`);
    } else {
      // An existing object of another type (iommufd_device_change_pt).
      throw new KernelError(
        "EINVAL",
        `iommufd_device_attach: ${ptId} (${obj.type}) is neither an IOAS nor a HWPT`,
      );
    }
    const group = this.iommu.groupOf(idev.dev)!;
    this.iommu.attachGroup(hwpt.domain, group);
    hwpt.users++;
    idev.hwpt = hwpt;
    return hwpt.id;
  }

  /** `iommufd_device_detach`: back to blocking; an auto HWPT without users goes. */
  async detach(devId: number | IommufdDevice): Promise<void> {
    const idev = typeof devId === "number" ? this.device(devId) : devId;
    const hwpt = idev.hwpt;
    if (!hwpt) return;
    const group = this.iommu.groupOf(idev.dev)!;
    this.iommu.detachGroup(hwpt.domain, group);
    hwpt.users--;
    idev.hwpt = null;
    if (hwpt.auto && hwpt.users === 0) {
      this.#objects.delete(hwpt.id);
      await hwpt.destroy();
    }
  }

  /** Every object id, ascending. */
  objectIds(): number[] {
    return [...this.#objects.keys()].sort((a, b) => a - b);
  }
}
