/**
 * DOC: IOMMU groups
 *
 * `struct iommu_group` (drivers/iommu/iommu.c): the smallest set of devices
 * the IOMMU can isolate from each other. Every device in a group is attached
 * to the same domain. A group has a default domain (the DMA API's, or
 * identity), a blocking domain made on demand, and a DMA owner (VFIO,
 * iommufd) while a user claimed it.
 *
 * `pci_device_group()` decides membership for PCI functions:
 * 1. start at the function (or, behind a PCIe-to-PCI bridge, at that bridge:
 *    conventional PCI requester ids alias to the bridge);
 * 2. walk up the buses; at each bridge, stop if ACS SV|RR|CR|UF is enabled
 *    on the whole path from it to the root (`pci_acs_path_enabled`),
 *    otherwise move to the bridge and reuse its group if it has one;
 * 3. a function of a multifunction device without those ACS bits shares the
 *    group of any sibling function in the same slot that also lacks them;
 * 4. else a new group.
 * Other devices get a group each (`generic_device_group`).
 *
 * Mainline's walk has a known gap: below a switch whose downstream ports lack
 * ACS, each downstream port starts its own group (its upstream port counts as
 * isolated), so two endpoints under sibling ports land in different groups
 * although they can reach each other peer-to-peer. Jason Gunthorpe's series
 * "iommu: Compute iommu_groups properly for PCIe switches" (2025,
 * `pci_reachable_set()`, not in mainline at this model's snapshot) fixes it;
 * the world variant `iommu.groups = "pcie-switch"` applies that rule: sibling
 * downstream ports of a bus where any of them lacks the ACS isolation bits
 * share one group. The default `"mainline"` keeps the kernel's behaviour.
 *
 * Locking: `group->mutex` in the kernel, held across attach/detach; the model
 * runs these calls atomically.
 *
 * @module
 */
import type { Device, Kernel } from "@dmalab/kernel";
import {
  devIsPci,
  PCI_ACS_CR,
  PCI_ACS_RR,
  PCI_ACS_SV,
  PCI_ACS_UF,
  pciAcsEnabled,
  pciAcsPathEnabled,
  type PciDev,
  pciIsMultifunction,
} from "@dmalab/pci-p2p";
import type { IommuDomain } from "./domain.ts";

/** `REQ_ACS_FLAGS`: the ACS controls that isolate a function. */
export const REQ_ACS_FLAGS: number = PCI_ACS_SV | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF;

/** `struct iommu_group`. */
export class IommuGroup {
  /** Group number (`/sys/kernel/iommu_groups/<id>`). */
  readonly id: number;
  /** The world. */
  readonly world: Kernel;
  /** Member devices in probe order. */
  readonly devices: Device[] = [];
  /** Domain currently attached (`group->domain`). */
  domain: IommuDomain | null = null;
  /** `group->default_domain`. */
  defaultDomain: IommuDomain | null = null;
  /** `group->blocking_domain` (made on demand). */
  blockingDomain: IommuDomain | null = null;
  /** DMA owner cookie while claimed (`group->owner`). */
  owner: unknown = null;
  /** `group->owner_cnt`: claims, or kernel drivers using the default domain. */
  ownerCnt = 0;

  /** A new group numbered `id`. */
  constructor(world: Kernel, id: number) {
    this.world = world;
    this.id = id;
  }

  /** `iommu_group_id`. */
  toString(): string {
    return `iommu_group ${this.id}`;
  }
}

/** How groups are looked up while forming them. */
export interface GroupLookup {
  /** The group a device already belongs to, or null. */
  groupOf(dev: Device): IommuGroup | null;
  /** `iommu_group_alloc`. */
  alloc(): IommuGroup;
}

/** The DMA alias of a PCI function: the topmost PCIe-to-PCI bridge above it, else itself. */
function dmaAlias(pdev: PciDev): PciDev {
  let alias = pdev;
  for (let bus = pdev.pciBus; !bus.isRoot; bus = bus.self!.pciBus) {
    if (bus.self!.type === "pci_bridge") alias = bus.self!;
  }
  return alias;
}

/** `pci_device_group()` (see the module doc). */
export function pciDeviceGroup(pdev: PciDev, lookup: GroupLookup): IommuGroup {
  let cur = dmaAlias(pdev);
  if (cur !== pdev) {
    const g = lookup.groupOf(cur);
    if (g) return g;
  }
  for (let bus = cur.pciBus; !bus.isRoot; bus = bus.self!.pciBus) {
    const self = bus.self;
    if (!self) continue;
    if (pciAcsPathEnabled(self, null, REQ_ACS_FLAGS)) break;
    cur = self;
    const g = lookup.groupOf(cur);
    if (g) return g;
  }
  if (
    cur.type === "switch_downstream" &&
    pdev.world.variant("iommu.groups", "mainline") === "pcie-switch" &&
    cur.pciBus.devices.some((d) =>
      d.type === "switch_downstream" && !pciAcsEnabled(d, REQ_ACS_FLAGS)
    )
  ) {
    for (const sib of cur.pciBus.devices) {
      if (sib === cur || sib.type !== "switch_downstream") continue;
      const g = lookup.groupOf(sib);
      if (g) return g;
    }
  }
  // get_pci_function_alias_group: non-isolated functions of one slot share
  if (pciIsMultifunction(cur) && !pciAcsEnabled(cur, REQ_ACS_FLAGS)) {
    for (const sib of cur.pciBus.devices) {
      if (sib === cur || sib.slot !== cur.slot) continue;
      if (pciAcsEnabled(sib, REQ_ACS_FLAGS)) continue;
      const g = lookup.groupOf(sib);
      if (g) return g;
    }
  }
  return lookup.alloc();
}

/** `iommu_ops->device_group`: `pci_device_group` for PCI, else `generic_device_group`. */
export function deviceGroup(dev: Device, lookup: GroupLookup): IommuGroup {
  if (devIsPci(dev)) return pciDeviceGroup(dev, lookup);
  return lookup.alloc();
}
