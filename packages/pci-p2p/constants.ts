/**
 * DOC: PCI constants
 *
 * Register bits and enums the P2P code reads: ACS capability/control bits
 * (include/uapi/linux/pci_regs.h `PCI_ACS_*`), the P2PDMA map types
 * (include/linux/pci-p2pdma.h `enum pci_p2pdma_map_type`), PCIe port types
 * (`PCI_EXP_TYPE_*`) and a few class codes. Pure data, no locking.
 *
 * @module
 */

/** ACS Source Validation (`PCI_ACS_SV`). */
export const PCI_ACS_SV = 0x01;
/** ACS Translation Blocking (`PCI_ACS_TB`). */
export const PCI_ACS_TB = 0x02;
/** ACS P2P Request Redirect (`PCI_ACS_RR`). */
export const PCI_ACS_RR = 0x04;
/** ACS P2P Completion Redirect (`PCI_ACS_CR`). */
export const PCI_ACS_CR = 0x08;
/** ACS Upstream Forwarding (`PCI_ACS_UF`). */
export const PCI_ACS_UF = 0x10;
/** ACS P2P Egress Control (`PCI_ACS_EC`). */
export const PCI_ACS_EC = 0x20;
/** ACS Direct Translated P2P (`PCI_ACS_DT`). */
export const PCI_ACS_DT = 0x40;

/** ACS bit names, in register order. */
export const ACS_BIT_NAMES: Readonly<Record<string, number>> = {
  SV: PCI_ACS_SV,
  TB: PCI_ACS_TB,
  RR: PCI_ACS_RR,
  CR: PCI_ACS_CR,
  UF: PCI_ACS_UF,
  EC: PCI_ACS_EC,
  DT: PCI_ACS_DT,
};

/** Parses `["SV","RR"]`, `"SV|RR"` or a number into ACS bits. */
export function parseAcsBits(v: number | string | readonly string[]): number {
  if (typeof v === "number") return v & 0x7f;
  const names = typeof v === "string" ? v.split(/[|,+ ]+/).filter((s) => s !== "") : v;
  let bits = 0;
  for (const n of names) {
    const b = ACS_BIT_NAMES[n.toUpperCase()];
    if (b === undefined) throw new Error(`unknown ACS bit "${n}" (expected SV TB RR CR UF EC DT)`);
    bits |= b;
  }
  return bits;
}

/** Formats ACS bits as lspci does (`SrcValid+ TransBlk- ...`). */
export function formatAcsBits(bits: number): string {
  const f = (b: number, name: string) => `${name}${bits & b ? "+" : "-"}`;
  return [
    f(PCI_ACS_SV, "SrcValid"),
    f(PCI_ACS_TB, "TransBlk"),
    f(PCI_ACS_RR, "ReqRedir"),
    f(PCI_ACS_CR, "CmpltRedir"),
    f(PCI_ACS_UF, "UpstreamFwd"),
    f(PCI_ACS_EC, "EgressCtrl"),
    f(PCI_ACS_DT, "DirectTrans"),
  ].join(" ");
}

/** `enum pci_p2pdma_map_type` (include/linux/pci-p2pdma.h). */
export const PciP2pdmaMapType = {
  /** Not computed yet (an empty cache slot). */
  UNKNOWN: 0,
  /** Not a P2PDMA page. */
  NONE: 1,
  /** The path may not carry P2P traffic. */
  NOT_SUPPORTED: 2,
  /** Traffic stays below a common bridge: use PCI bus addresses. */
  BUS_ADDR: 3,
  /** Traffic goes through the root complex: map like normal memory. */
  THRU_HOST_BRIDGE: 4,
} as const;

/** A map type value. */
export type PciP2pdmaMapType = (typeof PciP2pdmaMapType)[keyof typeof PciP2pdmaMapType];

/** The name of a map type (`"BUS_ADDR"`). */
export function mapTypeName(t: PciP2pdmaMapType): string {
  for (const [k, v] of Object.entries(PciP2pdmaMapType)) if (v === t) return k;
  return `UNKNOWN(${t})`;
}

/** PCIe port types (`PCI_EXP_TYPE_*`) plus conventional kinds. */
export type PciDevType =
  | "endpoint"
  | "legacy_endpoint"
  | "rc_endpoint"
  | "root_port"
  | "switch_upstream"
  | "switch_downstream"
  | "pci_bridge"
  | "host_bridge";

/** True for types that have a secondary bus. */
export function isBridgeType(t: PciDevType): boolean {
  return t === "root_port" || t === "switch_upstream" || t === "switch_downstream" ||
    t === "pci_bridge";
}

/** Class code of a PCI-to-PCI bridge (`PCI_CLASS_BRIDGE_PCI << 8`). */
export const PCI_CLASS_BRIDGE_PCI = 0x060400;
/** Class code of a host bridge. */
export const PCI_CLASS_BRIDGE_HOST = 0x060000;
/** 3D controller (data-center GPUs). */
export const PCI_CLASS_DISPLAY_3D = 0x030200;
/** VGA controller. */
export const PCI_CLASS_DISPLAY_VGA = 0x030000;
/** Ethernet controller. */
export const PCI_CLASS_NETWORK_ETHERNET = 0x020000;
/** InfiniBand controller. */
export const PCI_CLASS_NETWORK_INFINIBAND = 0x020700;
/** NVMe controller. */
export const PCI_CLASS_STORAGE_NVME = 0x010802;

/** Smallest ATS translation unit shift (`PCI_ATS_MIN_STU`). */
export const PCI_ATS_MIN_STU = 12;
/** `PAGE_SHIFT` on the modelled machines. */
export const PAGE_SHIFT = 12;
/** `PAGE_SIZE`. */
export const PAGE_SIZE = 4096;
/** `PCI_STD_NUM_BARS`. */
export const PCI_STD_NUM_BARS = 6;
