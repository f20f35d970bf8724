/**
 * DOC: ATS, PRI and PASID (drivers/pci/ats.c)
 *
 * ATS enabling rules as the PCI core applies them: a device may use ATS when
 * it has the capability and is trusted (`pci_ats_supported`); the Smallest
 * Translation Unit is programmed on the PF and shared by its VFs, so a VF can
 * only enable ATS with the PF's STU; enabling twice is a WARN and -EBUSY;
 * disabling a disabled device is a WARN. PRI and PASID are shared the same
 * way, and PASID needs ACS RR|UF on the whole path to the root.
 *
 * Locking: the IOMMU drivers call these under their own device locks while
 * attaching a domain; they never sleep here and are synchronous.
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import { PCI_ACS_RR, PCI_ACS_UF, PCI_ATS_MIN_STU } from "./constants.ts";
import { type PciDev, pciPhysfn } from "./fabric.ts";
import { pciAcsPathEnabled } from "./acs.ts";

/** `pci_ats_supported(dev)`: capability present and the device trusted. */
export function pciAtsSupported(dev: PciDev): boolean {
  if (!dev.ats.cap) return false;
  return !dev.untrusted;
}

/** `pci_prepare_ats(dev, ps)`: programs the STU on a PF before VFs exist. */
export function pciPrepareAts(dev: PciDev, ps: number): void {
  if (!pciAtsSupported(dev)) {
    throw new KernelError("EINVAL", `pci_prepare_ats: ${dev.name}: ATS not supported`);
  }
  if (dev.ats.enabled) {
    dev.world.warnOn(true, `pci_prepare_ats: ${dev.name}: ATS already enabled`);
    throw new KernelError("EBUSY", `pci_prepare_ats: ${dev.name}: ATS already enabled`);
  }
  if (ps < PCI_ATS_MIN_STU) {
    throw new KernelError(
      "EINVAL",
      `pci_prepare_ats: ${dev.name}: page shift ${ps} < ${PCI_ATS_MIN_STU}`,
    );
  }
  if (dev.isVirtfn) return;
  dev.ats.stu = ps;
}

/**
 * `pci_enable_ats(dev, ps)`: -EINVAL when unsupported, `ps` below 12, or a
 * VF asks for an STU other than its PF's; WARN + -EBUSY when already on.
 */
export function pciEnableAts(dev: PciDev, ps: number): void {
  const fn = "pci_enable_ats";
  if (!pciAtsSupported(dev)) {
    throw new KernelError(
      "EINVAL",
      `${fn}: ${dev.name}: ${dev.ats.cap ? "untrusted device" : "no ATS capability"}`,
    );
  }
  if (dev.ats.enabled) {
    dev.world.warnOn(true, `${fn}: ${dev.name}: ATS already enabled`);
    throw new KernelError("EBUSY", `${fn}: ${dev.name}: ATS already enabled`);
  }
  if (ps < PCI_ATS_MIN_STU) {
    throw new KernelError("EINVAL", `${fn}: ${dev.name}: page shift ${ps} < ${PCI_ATS_MIN_STU}`);
  }
  if (dev.isVirtfn) {
    const pf = pciPhysfn(dev);
    if (pf.ats.stu !== ps) {
      throw new KernelError(
        "EINVAL",
        `${fn}: ${dev.name}: VF STU ${ps} differs from PF ${pf.name} STU ${pf.ats.stu}`,
      );
    }
  } else {
    dev.ats.stu = ps;
  }
  dev.ats.enabled = true;
}

/** `pci_disable_ats(dev)`: WARN when not enabled. */
export function pciDisableAts(dev: PciDev): void {
  if (dev.world.warnOn(!dev.ats.enabled, `pci_disable_ats: ${dev.name}: ATS not enabled`)) return;
  dev.ats.enabled = false;
}

/** `pci_ats_queue_depth(dev)`: 0 for VFs (shared), else the field (0 means 32). */
export function pciAtsQueueDepth(dev: PciDev): number {
  if (!dev.ats.cap) throw new KernelError("EINVAL", `pci_ats_queue_depth: ${dev.name}: no ATS`);
  if (dev.isVirtfn) return 0;
  return dev.ats.queueDepth === 0 ? 32 : dev.ats.queueDepth;
}

/** `pci_ats_page_aligned(dev)`. */
export function pciAtsPageAligned(dev: PciDev): boolean {
  return dev.ats.cap && dev.ats.pageAligned;
}

/**
 * `pci_enable_pri(dev, reqs)`: a VF succeeds only when its PF's PRI is on;
 * -EBUSY when already enabled (WARN); -EINVAL without the capability.
 */
export function pciEnablePri(dev: PciDev, reqs: number): void {
  if (dev.isVirtfn) {
    if (pciPhysfn(dev).pri.enabled) {
      dev.pri.enabled = true;
      return;
    }
    throw new KernelError("EINVAL", `pci_enable_pri: ${dev.name}: PF PRI not enabled`);
  }
  if (dev.pri.enabled) {
    dev.world.warnOn(true, `pci_enable_pri: ${dev.name}: PRI already enabled`);
    throw new KernelError("EBUSY", `pci_enable_pri: ${dev.name}: PRI already enabled`);
  }
  if (!dev.pri.cap) {
    throw new KernelError("EINVAL", `pci_enable_pri: ${dev.name}: no PRI capability`);
  }
  dev.pri.reqsAlloc = Math.min(dev.pri.maxRequests, reqs);
  dev.pri.enabled = true;
}

/** `pci_disable_pri(dev)`. */
export function pciDisablePri(dev: PciDev): void {
  if (dev.isVirtfn) return;
  if (dev.world.warnOn(!dev.pri.enabled, `pci_disable_pri: ${dev.name}: PRI not enabled`)) return;
  dev.pri.enabled = false;
}

/**
 * `pci_enable_pasid(dev, features)`: needs the capability, End-End TLP
 * prefixes, ACS RR|UF on the path to the root, and only supported feature
 * bits. VFs share the PF's PASID.
 */
export function pciEnablePasid(dev: PciDev, features: number): void {
  const fn = "pci_enable_pasid";
  if (dev.isVirtfn) {
    if (pciPhysfn(dev).pasid.enabled) return;
    throw new KernelError("EINVAL", `${fn}: ${dev.name}: PF PASID not enabled`);
  }
  if (dev.pasid.enabled) {
    dev.world.warnOn(true, `${fn}: ${dev.name}: PASID already enabled`);
    throw new KernelError("EBUSY", `${fn}: ${dev.name}: PASID already enabled`);
  }
  if (!dev.pasid.cap) throw new KernelError("EINVAL", `${fn}: ${dev.name}: no PASID capability`);
  if (!dev.eetlpPrefix) {
    throw new KernelError("EINVAL", `${fn}: ${dev.name}: no End-End TLP prefix`);
  }
  if (!pciAcsPathEnabled(dev, null, PCI_ACS_RR | PCI_ACS_UF)) {
    throw new KernelError(
      "EINVAL",
      `${fn}: ${dev.name}: ACS RR|UF not enabled on the path to the root`,
    );
  }
  if ((features & ~dev.pasid.features) !== 0) {
    throw new KernelError(
      "EINVAL",
      `${fn}: ${dev.name}: unsupported PASID features 0x${features.toString(16)}`,
    );
  }
  dev.pasid.enabledFeatures = features;
  dev.pasid.enabled = true;
}

/** `pci_max_pasids(dev)`: 1 << width, -EINVAL without the capability. */
export function pciMaxPasids(dev: PciDev): number {
  const pf = pciPhysfn(dev);
  if (!pf.pasid.cap) throw new KernelError("EINVAL", `pci_max_pasids: ${dev.name}: no PASID`);
  return 2 ** pf.pasid.width;
}
