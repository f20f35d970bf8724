/**
 * DOC: ACS control
 *
 * How Linux writes ACS Control (drivers/pci/pci.c): an IOMMU driver calls
 * `pci_request_acs()` early, which sets `pci_acs_enable`; `pci_acs_init` ->
 * `pci_enable_acs` then runs for every function with an ACS capability and,
 * when `pci_acs_enable` is set, `pci_std_enable_acs` turns on SV, RR, CR and
 * UF as far as the port supports them, plus TB when ATS is disabled
 * (`pci=noats`) or the port is external-facing/untrusted. The
 * `pci=disable_acs_redir=` list is applied afterwards whether or not an IOMMU
 * is present and clears RR, CR and EC on the named ports. Also
 * `pci_acs_path_enabled`, which PASID enabling requires.
 *
 * Locking: runs at enumeration (or when the IOMMU package re-runs it for a
 * device it probes); synchronous, no sleeping.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import {
  PCI_ACS_CR,
  PCI_ACS_EC,
  PCI_ACS_RR,
  PCI_ACS_SV,
  PCI_ACS_TB,
  PCI_ACS_UF,
} from "./constants.ts";
import type { PciDev } from "./fabric.ts";
import { pciFabric } from "./machine.ts";

/** `pci_request_acs()`: an IOMMU is present; ACS will be enabled on every port. */
export function pciRequestAcs(world: Kernel): void {
  pciFabric(world).acsEnable = true;
}

/**
 * `pci_std_enable_acs`: the control bits Linux sets on `dev` given its
 * capability bits.
 */
export function pciStdAcsCtrl(dev: PciDev, ctrl: number): number {
  const cap = dev.acsCap;
  let c = ctrl;
  c |= cap & PCI_ACS_SV;
  c |= cap & PCI_ACS_RR;
  c |= cap & PCI_ACS_CR;
  c |= cap & PCI_ACS_UF;
  const fabric = pciFabric(dev.world);
  if (fabric.params.noats || dev.externalFacing || dev.untrusted) c |= cap & PCI_ACS_TB;
  return c;
}

/**
 * `pci_enable_acs`: applies the kernel default (when an IOMMU requested ACS)
 * and then the `pci=disable_acs_redir=` list. Returns the new control bits.
 */
export function pciEnableAcs(dev: PciDev): number {
  if (!dev.hasAcs) return 0;
  const fabric = pciFabric(dev.world);
  let ctrl = dev.acsCtrl;
  if (fabric.acsEnable) ctrl = pciStdAcsCtrl(dev, ctrl);
  if (fabric.params.disableAcsRedir.some((n) => n === dev.name || `0000:${n}` === dev.name)) {
    const before = ctrl;
    ctrl &= ~(PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_EC);
    if (before !== ctrl) {
      dev.world.dmesg.printk(
        "info",
        `pci ${dev.name}: ACS redirect disabled by pci=disable_acs_redir`,
      );
    }
  }
  dev.acsCtrl = ctrl;
  return ctrl;
}

/** `pci_acs_flags_enabled`: the supported subset of `flags` (EC always counts) is enabled. */
export function pciAcsFlagsEnabled(dev: PciDev, flags: number): boolean {
  if (!dev.hasAcs) return false;
  const required = flags & (dev.acsCap | PCI_ACS_EC);
  return (dev.acsCtrl & required) === required;
}

/** True when another function shares `dev`'s slot (`pdev->multifunction`). */
export function pciIsMultifunction(dev: PciDev): boolean {
  return dev.pciBus.devices.some((d) => d !== dev && d.slot === dev.slot);
}

/**
 * `pci_acs_enabled(pdev, acs_flags)`: ports answer from their ACS control;
 * multi-function endpoints and RCiEPs likewise; single-function endpoints
 * cannot do P2P internally, so they pass. (Device quirks are not modelled.)
 */
export function pciAcsEnabled(dev: PciDev, flags: number): boolean {
  if (dev.type === "pci_bridge") return false;
  if (dev.type === "root_port" || dev.type === "switch_downstream") {
    return pciAcsFlagsEnabled(dev, flags);
  }
  if (pciIsMultifunction(dev) && !dev.isVirtfn) return pciAcsFlagsEnabled(dev, flags);
  return true;
}

/**
 * `pci_acs_path_enabled(start, end, acs_flags)`: every function from `start`
 * up to `end` (null: up to the root bus) has the flags enabled.
 */
export function pciAcsPathEnabled(start: PciDev, end: PciDev | null, flags: number): boolean {
  let parent: PciDev = start;
  let pdev: PciDev;
  do {
    pdev = parent;
    if (!pciAcsEnabled(pdev, flags)) return false;
    if (pdev.pciBus.isRoot) return end === null;
    parent = pdev.pciBus.self!;
  } while (pdev !== end);
  return true;
}
