/**
 * DOC: IOMMU units
 *
 * One hardware IOMMU (`struct iommu_device`; a VT-d DRHD unit or an AMD-Vi
 * IOMMU): it covers the devices below some host bridges or a whole PCI
 * segment, gives every domain attached through it a domain id (DID, the
 * IOTLB tag), owns an {@linkcode Iotlb}, and implements the driver side of
 * invalidation: `iotlb_sync` invalidates the gathered range (or, for a gather
 * with freed tables but no range, the whole DID, since the paging-structure
 * caches may hold the freed tables) and sends a device-TLB invalidation to
 * every ATS-enabled device attached to the domain through it;
 * `flush_iotlb_all` invalidates the DID. It also keeps the fault log
 * (the DMAR fault recording registers, here unbounded).
 *
 * Locking: invalidation runs under the domain's lock (atomic context);
 * attach bookkeeping under the group mutex. Atomic in the model.
 *
 * @module
 */
import type { Device, Kernel } from "@dmalab/kernel";
import type { IommuDomain, IommuDomainDriver } from "./domain.ts";
import type { IommuIotlbGather } from "./gather.ts";
import { DevTlb, Iotlb, type TlbOptions } from "./iotlb.ts";

/** A recorded DMA translation fault. */
export interface IommuFault {
  /** Device that issued the request. */
  readonly dev: string;
  /** Faulting IOVA. */
  readonly iova: number;
  /** Write (true) or read. */
  readonly write: boolean;
  /** VT-d fault reason code. */
  readonly reason: number;
  /** Reason text as the DMAR driver prints it. */
  readonly reasonText: string;
  /** Virtual time, ns. */
  readonly ns: number;
}

/** VT-d fault reasons the model raises. */
export const DMAR_FAULT_REASONS: Readonly<Record<number, string>> = {
  0x02: "Present bit in context entry is clear",
  0x05: "PTE Write access is not set",
  0x06: "PTE Read access is not set",
};

/** Counters of a unit. */
export interface IommuUnitStats {
  /** `iotlb_sync` calls served. */
  iotlbSyncs: number;
  /** Page-selective (range) IOTLB invalidations. */
  rangeInvalidations: number;
  /** Domain-selective IOTLB invalidations. */
  domainInvalidations: number;
  /** `iotlb_sync` calls with nothing to invalidate. */
  emptySyncs: number;
  /** Device-TLB (ATC) invalidation requests sent. */
  devTlbInvalidations: number;
  /** Faults recorded. */
  faults: number;
}

/** Options for an {@linkcode IommuUnit}. */
export interface IommuUnitOptions {
  /** Name (`dmar0`). */
  name?: string;
  /** Cover these PCI segments (`INCLUDE_PCI_ALL` DRHD per segment). */
  segments?: readonly number[];
  /** Cover devices below these host bridges (`pciXXXX:YY` names). */
  hostBridges?: readonly string[];
  /** Cover devices this predicate accepts (non-PCI devices). */
  covers?: (dev: Device) => boolean;
  /** IOTLB shape and miss cost. */
  iotlb?: TlbOptions;
  /** Device TLB shape and ATS translation cost, for ATS devices behind this unit. */
  devTlb?: TlbOptions & { translationRequestNs?: number };
  /** Enable ATS on capable devices when they attach (default true). */
  ats?: boolean;
}

/** One hardware IOMMU. */
export class IommuUnit implements IommuDomainDriver {
  /** The world. */
  readonly world: Kernel;
  /** Unit name. */
  readonly name: string;
  /** Its IOTLB. */
  readonly iotlb: Iotlb;
  /** Options it was made with. */
  readonly options: IommuUnitOptions;
  /** Fault log. */
  readonly faults: IommuFault[] = [];
  /** Counters. */
  readonly stats: IommuUnitStats = {
    iotlbSyncs: 0,
    rangeInvalidations: 0,
    domainInvalidations: 0,
    emptySyncs: 0,
    devTlbInvalidations: 0,
    faults: 0,
  };
  readonly #dids = new Map<IommuDomain, number>();
  readonly #attached = new Map<IommuDomain, Set<Device>>();
  readonly #devTlbs = new Map<Device, DevTlb>();
  #nextDid = 1;
  readonly #freeDids: number[] = [];

  /** A unit; register it with `iommuCore(world).addUnit`. */
  constructor(world: Kernel, options: IommuUnitOptions = {}) {
    this.world = world;
    this.name = options.name ?? "dmar";
    this.options = options;
    this.iotlb = new Iotlb(options.iotlb ?? {});
  }

  /** The DID `domain` has on this unit, or 0. */
  did(domain: IommuDomain): number {
    return this.#dids.get(domain) ?? 0;
  }

  /** Devices attached to `domain` through this unit. */
  attachedTo(domain: IommuDomain): readonly Device[] {
    return [...(this.#attached.get(domain) ?? [])];
  }

  /** The device TLB of `dev`, when ATS is enabled for it. */
  devTlb(dev: Device): DevTlb | null {
    return this.#devTlbs.get(dev) ?? null;
  }

  /** @internal ATS got enabled on `dev`: give it an ATC. */
  addDevTlb(dev: Device): DevTlb {
    let t = this.#devTlbs.get(dev);
    if (!t) {
      t = new DevTlb(this.options.devTlb ?? {});
      this.#devTlbs.set(dev, t);
    }
    return t;
  }

  /** @internal ATS got disabled on `dev`. */
  removeDevTlb(dev: Device): void {
    this.#devTlbs.delete(dev);
  }

  /** @internal `attach_dev` bookkeeping: DID allocation and the device list. */
  attach(domain: IommuDomain, dev: Device): void {
    let set = this.#attached.get(domain);
    if (!set) {
      set = new Set();
      this.#attached.set(domain, set);
      this.#dids.set(domain, this.#freeDids.pop() ?? this.#nextDid++);
    }
    set.add(dev);
    domain.addDriver(this);
  }

  /** @internal detach bookkeeping; flushes the device's ATC and, on last detach, the DID. */
  detach(domain: IommuDomain, dev: Device): void {
    const set = this.#attached.get(domain);
    if (!set?.delete(dev)) return;
    domain.removeDriver(this);
    const atc = this.#devTlbs.get(dev);
    if (atc) {
      atc.invalidateAll();
      this.stats.devTlbInvalidations++;
    }
    if (set.size === 0) {
      const did = this.#dids.get(domain)!;
      this.iotlb.invalidateTag(did);
      this.stats.domainInvalidations++;
      this.#attached.delete(domain);
      this.#dids.delete(domain);
      this.#freeDids.push(did);
    }
  }

  #devTlbFlush(domain: IommuDomain, start: number, end: number): void {
    for (const dev of this.#attached.get(domain) ?? []) {
      const atc = this.#devTlbs.get(dev);
      if (!atc) continue;
      atc.invalidateRange(0, start, end);
      this.stats.devTlbInvalidations++;
    }
  }

  /** `iotlb_sync` (see the module doc). */
  iotlbSync(domain: IommuDomain, gather: IommuIotlbGather): void {
    this.stats.iotlbSyncs++;
    const did = this.#dids.get(domain);
    if (did === undefined) return;
    if (gather.empty) {
      if (gather.freelist.length === 0) {
        this.stats.emptySyncs++;
        return;
      }
      this.iotlb.invalidateTag(did);
      this.stats.domainInvalidations++;
      this.#devTlbFlush(domain, 0, Number.MAX_SAFE_INTEGER);
      return;
    }
    this.iotlb.invalidateRange(did, gather.start, gather.end);
    this.stats.rangeInvalidations++;
    this.#devTlbFlush(domain, gather.start, gather.end);
  }

  /** `flush_iotlb_all`. */
  flushIotlbAll(domain: IommuDomain): void {
    const did = this.#dids.get(domain);
    if (did === undefined) return;
    this.iotlb.invalidateTag(did);
    this.stats.domainInvalidations++;
    this.#devTlbFlush(domain, 0, Number.MAX_SAFE_INTEGER);
  }

  /** Records a fault and prints it as the DMAR driver does. */
  recordFault(dev: Device, iova: number, write: boolean, reason: number): IommuFault {
    const f: IommuFault = {
      dev: dev.name,
      iova,
      write,
      reason,
      reasonText: DMAR_FAULT_REASONS[reason] ?? "Unknown",
      ns: this.world.sched.now,
    };
    this.faults.push(f);
    this.stats.faults++;
    const bdf = dev.name.replace(/^[0-9a-f]{4}:/, "");
    this.world.dmesg.printk(
      "err",
      `DMAR: [DMA ${write ? "Write" : "Read"} NO_PASID] Request device [${bdf}] fault addr 0x${
        iova.toString(16)
      } [fault reason 0x${reason.toString(16).padStart(2, "0")}] ${f.reasonText}`,
    );
    if (this.world.trace.enabled) {
      this.world.trace.event("dmar_fault", {
        dev: dev.name,
        iova: `0x${iova.toString(16)}`,
        type: write ? "write" : "read",
        reason,
      });
    }
    return f;
  }
}
