/**
 * DOC: the IOMMU core of a world
 *
 * drivers/iommu/iommu.c for one world: units, probing, groups, default
 * domains, attach/detach and DMA ownership.
 *
 * - {@linkcode iommuSetup} registers the units and the boot options
 *   `iommu.passthrough` (default domains are identity) and `iommu.strict`
 *   (DMA domains invalidate on every unmap; lazy `dma-fq` otherwise, the x86
 *   Kconfig default). The options come from the setup call or from the
 *   world's variants `iommu.passthrough` / `iommu.strict` ("0"/"1"). Setting
 *   up an IOMMU calls `pci_request_acs()` and re-runs `pci_enable_acs()` on
 *   every PCI function, as an IOMMU driver's early detection does.
 * - Probing (`__iommu_probe_device`) runs for every device added to the PCI
 *   bus (bus notifier) and for devices already there: find the covering
 *   unit, form the group (`pci_device_group`), give the group its default
 *   domain or attach the device to the group's current domain. Untrusted PCI
 *   devices always get a strict DMA domain.
 * - `iommu_attach_device()` refuses a device sharing its group (-EINVAL) and
 *   a group already attached to a non-default domain (-EBUSY);
 *   `iommu_detach_device()` returns the group to its default domain;
 *   `iommu_attach_group()`/`iommu_detach_group()` do the same for a group.
 * - `iommu_group_claim_dma_owner()` (-EPERM when claimed by someone else,
 *   -EBUSY when kernel drivers use the default domain or it is not attached)
 *   moves the group to its blocking domain; release restores the default.
 * - Attaching to a non-blocking domain enables ATS on capable PCI devices
 *   (the unit's `ats` option), giving them a device TLB; blocking disables it.
 * - Removing a device (`iommu_release_device`) detaches it and drops it from
 *   its group.
 *
 * Locking: group mutex for attach/detach/ownership; every call is atomic in
 * the model and synchronous.
 *
 * @module
 */
import { type Bus, type Device, type Kernel, KernelError } from "@dmalab/kernel";
import {
  devIsPci,
  pciAtsSupported,
  pciBusType,
  type PciDev,
  pciDisableAts,
  pciEnableAcs,
  pciEnableAts,
  pciFabric,
  pciRequestAcs,
} from "@dmalab/pci-p2p";
import { IommuDomain, type IommuDomainOptions, type IommuDomainType } from "./domain.ts";
import { FlushQueue, type FlushQueueOptions } from "./flush_queue.ts";
import { deviceGroup, IommuGroup } from "./group.ts";
import { IommuUnit, type IommuUnitOptions } from "./unit.ts";

/** Options for {@linkcode iommuSetup}. */
export interface IommuSetupOptions {
  /** `iommu.passthrough=1`: identity default domains. */
  passthrough?: boolean;
  /** `iommu.strict=1`: strict invalidation for DMA domains (default lazy). */
  strict?: boolean;
  /**
   * Units. Default: one per PCI host bridge (`per: "host-bridge"`) or one per
   * segment (`per: "segment"`), covering the PCI fabric present.
   */
  units?: IommuUnitOptions[];
  /** Unit layout when `units` is not given. */
  per?: "host-bridge" | "segment";
  /** Options (IOTLB reach and costs, device TLB, ATS) for the units made by default. */
  unitDefaults?: Omit<IommuUnitOptions, "name" | "segments" | "hostBridges" | "covers">;
  /** Page-table shape for domains the core allocates. */
  domain?: IommuDomainOptions;
  /** Flush queue shape for lazy domains. */
  flushQueue?: FlushQueueOptions;
  /** Other buses whose devices the IOMMU probes (units cover them through `covers`). */
  buses?: Bus[];
}

/** Translation counters of one device. */
export interface DevTranslateStats {
  /** Requests translated. */
  translations: number;
  /** Requests answered from the device TLB (translated requests). */
  atcHits: number;
  /** ATS translation requests sent. */
  atcMisses: number;
  /** IOTLB hits for this device's requests. */
  iotlbHits: number;
  /** IOTLB misses (page walks). */
  iotlbMisses: number;
  /** Faults raised. */
  faults: number;
  /** Translation latency charged, ns. */
  costNs: number;
}

/** Per-device IOMMU state (`dev->iommu`). */
export interface DevIommu {
  /** The unit translating for the device. */
  readonly unit: IommuUnit;
  /** Its group. */
  readonly group: IommuGroup;
  /** Translation counters. */
  readonly stats: DevTranslateStats;
}

/** The IOMMU subsystem of one world. */
export class IommuCore {
  /** The world. */
  readonly world: Kernel;
  /** `iommu.passthrough`. */
  readonly passthrough: boolean;
  /** `iommu.strict`. */
  readonly strict: boolean;
  /** Units in registration order. */
  readonly units: IommuUnit[] = [];
  /** Groups in creation order. */
  readonly groups: IommuGroup[] = [];
  /** Domain options used for core-allocated domains. */
  readonly domainOptions: IommuDomainOptions;
  /** Flush-queue options for lazy domains. */
  readonly fqOptions: FlushQueueOptions;
  #nextGroup = 0;

  /** Use {@linkcode iommuSetup}. */
  constructor(world: Kernel, options: IommuSetupOptions) {
    this.world = world;
    this.passthrough = options.passthrough ??
      world.variant("iommu.passthrough", "0") === "1";
    this.strict = options.strict ?? world.variant("iommu.strict", "0") === "1";
    this.domainOptions = options.domain ?? {};
    this.fqOptions = options.flushQueue ?? {};
  }

  /** `iommu_device_register`. */
  addUnit(options: IommuUnitOptions): IommuUnit {
    const unit = new IommuUnit(this.world, {
      ...options,
      name: options.name ?? `dmar${this.units.length}`,
    });
    this.units.push(unit);
    return unit;
  }

  /** The unit covering `dev`, or null. */
  unitFor(dev: Device): IommuUnit | null {
    for (const u of this.units) {
      const o = u.options;
      if (o.covers?.(dev)) return u;
      if (devIsPci(dev)) {
        if (o.segments?.includes(dev.domain)) return u;
        if (o.hostBridges?.includes(dev.host.name)) return u;
      }
    }
    return null;
  }

  /** `dev->iommu`, or null when no IOMMU translates for `dev`. */
  devIommu(dev: Device): DevIommu | null {
    return (dev.iommu as DevIommu | null) ?? null;
  }

  /** `iommu_group_get`. */
  groupOf(dev: Device): IommuGroup | null {
    return this.devIommu(dev)?.group ?? null;
  }

  /**
   * The `/sys/kernel/iommu_groups` tree as `find /sys/kernel/iommu_groups/ -type l`
   * prints it, plus each group's `type` attribute (default domain type).
   */
  sysfsGroups(): string {
    const typeName: Record<string, string> = {
      "identity": "identity",
      "dma": "DMA",
      "dma-fq": "DMA-FQ",
      "blocked": "blocked",
      "unmanaged": "unmanaged",
    };
    const lines: string[] = [];
    for (const g of [...this.groups].sort((a, b) => a.id - b.id)) {
      for (const d of g.devices) lines.push(`/sys/kernel/iommu_groups/${g.id}/devices/${d.name}`);
      lines.push(
        `/sys/kernel/iommu_groups/${g.id}/type: ${
          typeName[g.defaultDomain?.type ?? ""] ?? "unknown"
        }`,
      );
    }
    return lines.join("\n");
  }

  /** `iommu_get_domain_for_dev`. */
  domainFor(dev: Device): IommuDomain | null {
    return this.groupOf(dev)?.domain ?? null;
  }

  /** The default domain type for `dev` (`iommu_get_def_domain_type`). */
  defDomainType(dev: Device): IommuDomainType {
    if (devIsPci(dev) && dev.untrusted) return "dma";
    if (this.passthrough) return "identity";
    return this.strict ? "dma" : "dma-fq";
  }

  /** Allocates a domain of `type` with the core's page-table options. */
  allocDomain(type: IommuDomainType): IommuDomain {
    const d = new IommuDomain(this.world, type, this.domainOptions);
    if (type === "dma-fq") d.fq = new FlushQueue(d, this.fqOptions);
    return d;
  }

  /** `iommu_paging_domain_alloc(dev)`: an unmanaged domain; -ENODEV without an IOMMU. */
  pagingDomainAlloc(dev: Device): IommuDomain {
    if (!this.devIommu(dev)) {
      throw new KernelError("ENODEV", `iommu_paging_domain_alloc: ${dev.name} has no IOMMU`);
    }
    return this.allocDomain("unmanaged");
  }

  /** `__iommu_probe_device` (see the module doc). Returns false when no unit covers `dev`. */
  probeDevice(dev: Device): boolean {
    if (dev.iommu) return true;
    const unit = this.unitFor(dev);
    if (!unit) return false;
    const group = deviceGroup(dev, {
      groupOf: (d) => this.groupOf(d),
      alloc: () => {
        const g = new IommuGroup(this.world, this.#nextGroup++);
        this.groups.push(g);
        return g;
      },
    });
    const info: DevIommu = {
      unit,
      group,
      stats: {
        translations: 0,
        atcHits: 0,
        atcMisses: 0,
        iotlbHits: 0,
        iotlbMisses: 0,
        faults: 0,
        costNs: 0,
      },
    };
    dev.iommu = info;
    group.devices.push(dev);
    this.world.dmesg.printk(
      "info",
      `${dev.bus?.name ?? "dev"} ${dev.name}: Adding to iommu group ${group.id}`,
    );
    if (!group.defaultDomain) {
      const dom = this.allocDomain(this.defDomainType(dev));
      group.defaultDomain = dom;
      group.domain = dom;
    }
    this.#attachDev(group.domain!, dev);
    return true;
  }

  /** `iommu_release_device`: detach `dev` and drop it from its group. */
  releaseDevice(dev: Device): void {
    const info = this.devIommu(dev);
    if (!info) return;
    const g = info.group;
    if (g.domain) this.#detachDev(g.domain, dev);
    g.devices.splice(g.devices.indexOf(dev), 1);
    dev.iommu = null;
    if (g.devices.length === 0) {
      if (g.defaultDomain && g.defaultDomain.attachCount === 0) g.defaultDomain.free();
      if (g.blockingDomain) g.blockingDomain.free();
      g.domain = null;
      g.defaultDomain = null;
      g.blockingDomain = null;
      this.groups.splice(this.groups.indexOf(g), 1);
    }
  }

  #attachDev(domain: IommuDomain, dev: Device): void {
    const info = this.devIommu(dev)!;
    info.unit.attach(domain, dev);
    if (devIsPci(dev)) this.#atsFor(domain, dev, info.unit);
  }

  #detachDev(domain: IommuDomain, dev: Device): void {
    this.devIommu(dev)!.unit.detach(domain, dev);
  }

  #atsFor(domain: IommuDomain, pdev: PciDev, unit: IommuUnit): void {
    const want = domain.type !== "blocked" && domain.type !== "identity" &&
      (unit.options.ats ?? true) && pciAtsSupported(pdev) && !pciFabric(this.world).params.noats;
    if (want && !pdev.ats.enabled) {
      try {
        pciEnableAts(pdev, 12);
        unit.addDevTlb(pdev);
      } catch {
        // ATS stays off (e.g. a VF whose PF uses another STU)
      }
    } else if (want && pdev.ats.enabled) {
      unit.addDevTlb(pdev);
    } else if (!want && pdev.ats.enabled && unit.devTlb(pdev)) {
      pciDisableAts(pdev);
      unit.removeDevTlb(pdev);
    }
  }

  /** `__iommu_group_set_domain`: moves every device of `group` to `domain`. */
  #setGroupDomain(group: IommuGroup, domain: IommuDomain): void {
    if (group.domain === domain) return;
    if (domain.freed) throw new Error(`attach: domain ${domain.id} was freed`);
    const old = group.domain;
    for (const dev of group.devices) {
      if (old) this.#detachDev(old, dev);
      this.#attachDev(domain, dev);
    }
    group.domain = domain;
  }

  /** `__iommu_attach_group`: -EBUSY when the group is on a non-core domain. */
  #attachGroup(domain: IommuDomain, group: IommuGroup, fn: string): void {
    if (
      group.domain && group.domain !== group.defaultDomain && group.domain !== group.blockingDomain
    ) {
      throw new KernelError(
        "EBUSY",
        `${fn}: ${group} is attached to domain ${group.domain.id}, not its default domain`,
      );
    }
    this.#setGroupDomain(group, domain);
  }

  /** The blocking domain of `group` (made on first use). */
  blockingDomain(group: IommuGroup): IommuDomain {
    if (!group.blockingDomain) group.blockingDomain = this.allocDomain("blocked");
    return group.blockingDomain;
  }

  /** `__iommu_group_set_core_domain`: default domain, or blocking while claimed. */
  #setCoreDomain(group: IommuGroup): void {
    const d = group.owner ? this.blockingDomain(group) : group.defaultDomain;
    if (d) this.#setGroupDomain(group, d);
  }

  /**
   * Writing `/sys/kernel/iommu_groups/<n>/type` (`iommu_group_store_type`):
   * `identity`, `dma`, `dma-fq` or `auto` (the boot default). With a driver
   * bound or a DMA owner, only `dma` to `dma-fq` is allowed (in place, the
   * flush queue is set up); anything else is -EBUSY. Otherwise a new default
   * domain replaces the old one.
   */
  setGroupType(group: IommuGroup, type: "identity" | "dma" | "dma-fq" | "auto"): void {
    const cur = group.defaultDomain;
    const want: IommuDomainType = type === "auto" ? this.defDomainType(group.devices[0]!) : type;
    if (cur && cur.type === want) return;
    if (group.ownerCnt > 0 || group.owner) {
      if (cur && cur.type === "dma" && want === "dma-fq" && group.domain === cur) {
        cur.fq = new FlushQueue(cur, this.fqOptions);
        cur.type = "dma-fq";
        return;
      }
      throw new KernelError(
        "EBUSY",
        `iommu_group_store_type: ${group} is in use (driver bound or DMA owner claimed)`,
      );
    }
    if (group.devices.some((d) => devIsPci(d) && d.untrusted) && want === "identity") {
      throw new KernelError("EINVAL", `iommu_group_store_type: ${group} has an untrusted device`);
    }
    const dom = this.allocDomain(want);
    const old = cur;
    this.#setGroupDomain(group, dom);
    group.defaultDomain = dom;
    if (old && old.attachCount === 0) old.free();
  }

  /** `iommu_attach_device(domain, dev)`. */
  attachDevice(domain: IommuDomain, dev: Device): void {
    const group = this.groupOf(dev);
    if (!group) throw new KernelError("ENODEV", `iommu_attach_device: ${dev.name} has no group`);
    if (group.devices.length !== 1) {
      throw new KernelError(
        "EINVAL",
        `iommu_attach_device: ${group} of ${dev.name} has ${group.devices.length} devices`,
      );
    }
    this.#attachGroup(domain, group, "iommu_attach_device");
  }

  /** `iommu_detach_device(domain, dev)`: WARN unless `domain` is attached to a one-device group. */
  detachDevice(domain: IommuDomain, dev: Device): void {
    const group = this.groupOf(dev);
    if (!group) return;
    if (
      this.world.warnOn(
        group.domain !== domain || group.devices.length !== 1,
        `iommu_detach_device: ${dev.name}: domain ${domain.id} is not attached to its singleton group`,
      )
    ) return;
    this.#setCoreDomain(group);
  }

  /** `iommu_attach_group(domain, group)`. */
  attachGroup(domain: IommuDomain, group: IommuGroup): void {
    this.#attachGroup(domain, group, "iommu_attach_group");
  }

  /** `iommu_detach_group(domain, group)`. */
  detachGroup(domain: IommuDomain, group: IommuGroup): void {
    if (
      this.world.warnOn(
        group.domain !== domain,
        `iommu_detach_group: ${group} not on domain ${domain.id}`,
      )
    ) {
      return;
    }
    this.#setCoreDomain(group);
  }

  /** `iommu_group_claim_dma_owner(group, owner)`. */
  claimDmaOwner(group: IommuGroup, owner: unknown): void {
    if (owner === null || owner === undefined) {
      throw new KernelError("EINVAL", `iommu_group_claim_dma_owner: ${group}: null owner`);
    }
    if (group.ownerCnt) {
      if (group.owner === owner) {
        group.ownerCnt++;
        return;
      }
      throw new KernelError(
        group.owner ? "EPERM" : "EBUSY",
        `iommu_group_claim_dma_owner: ${group} is ${
          group.owner ? "claimed by another owner" : "used by a kernel driver"
        }`,
      );
    }
    if (group.domain && group.domain !== group.defaultDomain) {
      throw new KernelError(
        "EBUSY",
        `iommu_group_claim_dma_owner: ${group} is not on its default domain`,
      );
    }
    this.#setGroupDomain(group, this.blockingDomain(group));
    group.owner = owner;
    group.ownerCnt++;
  }

  /** `iommu_group_release_dma_owner(group)`. */
  releaseDmaOwner(group: IommuGroup): void {
    if (
      this.world.warnOn(
        !group.owner || group.ownerCnt === 0,
        `iommu_group_release_dma_owner: ${group} not claimed`,
      )
    ) {
      return;
    }
    if (--group.ownerCnt > 0) return;
    group.owner = null;
    if (group.defaultDomain) this.#setGroupDomain(group, group.defaultDomain);
  }

  /** `iommu_device_use_default_domain(dev)`: a kernel driver binds; -EBUSY when the group is claimed. */
  useDefaultDomain(dev: Device): void {
    const group = this.groupOf(dev);
    if (!group) return;
    if (group.owner || group.domain !== group.defaultDomain) {
      throw new KernelError(
        "EBUSY",
        `iommu_device_use_default_domain: ${dev.name}: ${group} is claimed`,
      );
    }
    group.ownerCnt++;
  }

  /** `iommu_device_unuse_default_domain(dev)`. */
  unuseDefaultDomain(dev: Device): void {
    const group = this.groupOf(dev);
    if (!group) return;
    if (
      this.world.warnOn(
        group.ownerCnt === 0 || group.owner !== null,
        `iommu_device_unuse_default_domain: ${dev.name}`,
      )
    ) {
      return;
    }
    group.ownerCnt--;
  }
}

/** The world's IOMMU core, or null when no IOMMU was set up. */
export function iommuCoreOf(world: Kernel): IommuCore | null {
  return world.hasExt("iommu") ? world.ext<IommuCore>("iommu", () => undefined as never) : null;
}

/**
 * Sets up the IOMMU of `world`: units, boot options, ACS, and probing of the
 * PCI devices there now and added later.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { iommuSetup } from "@dmalab/iommu";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * const iommu = iommuSetup(world, { strict: true });
 * iommu.domainFor(m.gpu)?.type; // "dma"
 * ```
 */
export function iommuSetup(world: Kernel, options: IommuSetupOptions = {}): IommuCore {
  if (world.hasExt("iommu")) throw new Error("iommuSetup: this world already has an IOMMU");
  const core = world.ext("iommu", () => new IommuCore(world, options));
  const fabric = pciFabric(world);
  if (options.units) {
    for (const u of options.units) core.addUnit(u);
  } else if (options.per === "segment") {
    const segs = [...new Set(fabric.hostBridges.map((h) => h.domain))];
    for (const s of segs.length ? segs : [0]) {
      core.addUnit({ ...options.unitDefaults, segments: [s] });
    }
  } else {
    for (const h of fabric.hostBridges) {
      core.addUnit({ ...options.unitDefaults, hostBridges: [h.name] });
    }
    if (fabric.hostBridges.length === 0) core.addUnit({ ...options.unitDefaults, segments: [0] });
  }
  pciRequestAcs(world);
  for (const d of fabric.devices) pciEnableAcs(d);
  for (const bus of [pciBusType(world), ...(options.buses ?? [])]) {
    bus.registerNotifier((action, dev) => {
      if (action === "add_device") core.probeDevice(dev);
      else if (action === "del_device") core.releaseDevice(dev);
    });
    for (const d of bus.devices) if (d.registered && !devIsPci(d)) core.probeDevice(d);
  }
  for (const d of fabric.devices) if (d.registered) core.probeDevice(d);
  world.dmesg.printk(
    "info",
    `iommu: Default domain type: ${core.passthrough ? "Passthrough" : "Translated"}`,
  );
  if (!core.passthrough) {
    world.dmesg.printk(
      "info",
      `iommu: DMA domain TLB invalidation policy: ${core.strict ? "strict" : "lazy"} mode`,
    );
  }
  world.addChecker("iommu", () => {
    const out: string[] = [];
    for (const g of core.groups) {
      for (const d of g.devices) {
        if (core.groupOf(d) !== g) out.push(`${d.name} listed in ${g} but points elsewhere`);
      }
      if (g.domain && g.domain.freed) out.push(`${g} attached to freed domain ${g.domain.id}`);
    }
    return out;
  });
  return core;
}
