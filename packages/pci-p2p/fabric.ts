/**
 * DOC: PCI fabric objects
 *
 * The objects of a PCI hierarchy as drivers/pci keeps them: host bridges
 * (`struct pci_host_bridge`) with their address windows and CPU-to-bus
 * offset, buses (`struct pci_bus`, `self` = the bridge above), and functions
 * (`struct pci_dev`) that are kernel {@linkcode Device}s on the world's "pci"
 * {@linkcode Bus}. Each function carries its BARs, link capability/status,
 * ACS capability and control, ATS/PASID/PRI state and SR-IOV links.
 *
 * Locking: the topology is built once (at enumeration, as the PCI core does
 * under `pci_rescan_remove_lock`) and read without locks afterwards; every
 * query here is synchronous and may be called from atomic context. State
 * that changes later (ACS control, ATS enable, p2pdma) is changed only by the
 * functions in acs.ts, ats.ts and p2pdma.ts.
 *
 * @module
 */
import { Bus, Device, type Kernel, type MmioRegion } from "@dmalab/kernel";
import type { PciDevType } from "./constants.ts";
import type { PciP2pdma } from "./p2pdma.ts";

/** The CPU the world runs on (what `boot_cpu_data` says). */
export interface CpuInfo {
  /** Architecture (`cpu_supports_p2pdma` is x86 only). */
  readonly arch: "x86_64" | "arm64" | "ppc64" | "riscv64";
  /** Vendor as x86 `x86_vendor` names it. */
  readonly vendor: "AMD" | "Intel" | "Zhaoxin" | "Centaur" | "Hygon" | "NVIDIA" | "other";
  /** `x86` family (0x17 = Zen, 0x19 = Zen 3/4, 6 = Intel Core/Xeon). */
  readonly family: number;
  /** Model number. */
  readonly model: number;
}

/** An address window of a host bridge (`struct resource_entry` with offset). */
export interface PciWindow {
  /** First CPU physical address. */
  readonly cpuStart: bigint;
  /** Size in bytes. */
  readonly size: bigint;
  /** Bus address minus CPU address (`-entry->offset`). */
  readonly busOffset: bigint;
  /** Prefetchable window (takes 64-bit prefetchable BARs). */
  readonly prefetch: boolean;
}

/** One BAR (`pdev->resource[i]`). */
export interface PciBar {
  /** BAR index 0..5. */
  readonly index: number;
  /** Size in bytes (power of two). */
  readonly size: bigint;
  /** Memory BAR (`IORESOURCE_MEM`) or I/O port BAR. */
  readonly mem: boolean;
  /** 64-bit BAR. */
  readonly is64: boolean;
  /** Prefetchable. */
  readonly prefetch: boolean;
  /** Assigned CPU physical start, or null when no window had room. */
  start: bigint | null;
  /** `pci_bus_address(pdev, bar) - pci_resource_start(pdev, bar)`. */
  busOffset: bigint;
  /** The claimed MMIO region in the world's physical memory (null when unassigned or in conflict). */
  mmio: MmioRegion | null;
}

/** Link capability and status (LnkCap / LnkSta). */
export interface PciLink {
  /** Maximum generation (1..6). */
  capGen: number;
  /** Maximum width (lanes). */
  capWidth: number;
  /** Negotiated generation. */
  gen: number;
  /** Negotiated width. */
  width: number;
}

/** ATS capability state (`ats_cap`, `ats_enabled`, `ats_stu`). */
export interface PciAtsState {
  /** Capability present (0 = none, as `pdev->ats_cap`). */
  cap: boolean;
  /** Enable bit. */
  enabled: boolean;
  /** Smallest translation unit, as a page shift (0 = never programmed). */
  stu: number;
  /** Invalidate Queue Depth field (0 means 32). */
  queueDepth: number;
  /** Page Aligned Request bit. */
  pageAligned: boolean;
}

/** PASID capability state. */
export interface PciPasidState {
  /** Capability present. */
  cap: boolean;
  /** Enabled. */
  enabled: boolean;
  /** Max PASID width (bits). */
  width: number;
  /** Supported features (Exec 0x2, Priv 0x4). */
  features: number;
  /** Enabled features. */
  enabledFeatures: number;
}

/** PRI capability state. */
export interface PciPriState {
  /** Capability present. */
  cap: boolean;
  /** Enabled. */
  enabled: boolean;
  /** Outstanding page request capacity. */
  maxRequests: number;
  /** Allocated requests. */
  reqsAlloc: number;
}

/** A PCI bus (`struct pci_bus`). */
export class PciBus {
  /** Bus number. */
  readonly number: number;
  /** The host bridge of this hierarchy. */
  readonly host: PciHostBridge;
  /** The bridge whose secondary bus this is (null for the root bus). */
  readonly self: PciDev | null;
  /** Devices on the bus, in scan order (`bus->devices`). */
  readonly devices: PciDev[] = [];
  /** Highest bus number below (subordinate). */
  subordinate: number;

  /** A bus `number` below `self` (null: a root bus). */
  constructor(host: PciHostBridge, number: number, self: PciDev | null) {
    this.host = host;
    this.number = number;
    this.self = self;
    this.subordinate = number;
  }

  /** `pci_is_root_bus`. */
  get isRoot(): boolean {
    return this.self === null;
  }
}

/** A host bridge (`struct pci_host_bridge`). */
export class PciHostBridge {
  /** PCI domain (segment). */
  readonly domain: number;
  /** The root bus. */
  readonly bus: PciBus;
  /** NUMA node of the root complex. */
  readonly numaNode: number;
  /** Memory windows. */
  readonly windows: readonly PciWindow[];
  /** `pci0000:00`-style name. */
  readonly name: string;

  /** A host bridge for `domain` with its root bus at `busNr`. */
  constructor(domain: number, busNr: number, numaNode: number, windows: readonly PciWindow[]) {
    this.domain = domain;
    this.numaNode = numaNode;
    this.windows = windows;
    this.name = `pci${hex(domain, 4)}:${hex(busNr, 2)}`;
    this.bus = new PciBus(this, busNr, null);
  }
}

/** Options for a {@linkcode PciDev} (filled by the builder). */
export interface PciDevInit {
  /** Bus it sits on. */
  bus: PciBus;
  /** `PCI_DEVFN(slot, fn)`. */
  devfn: number;
  /** Vendor id. */
  vendor: number;
  /** Device id. */
  device: number;
  /** 24-bit class code. */
  classCode: number;
  /** Port/function type. */
  type: PciDevType;
  /** Name shown by loaders and lspci (`"NVIDIA Corporation GH100"`). */
  label?: string;
  /** Name override (a BDF from an input file that does not match enumeration). */
  name?: string;
  /** Parent device in the driver model (the upstream bridge, or PF). */
  parent?: Device | null;
  /** NUMA node. */
  numaNode?: number;
}

/**
 * A PCI function (`struct pci_dev`): a kernel {@linkcode Device} on the
 * "pci" bus, named by its BDF (`0000:01:00.0`).
 */
export class PciDev extends Device {
  /** The bus it sits on. */
  readonly pciBus: PciBus;
  /** `PCI_DEVFN(slot, fn)`. */
  readonly devfn: number;
  /** Vendor id. */
  readonly vendor: number;
  /** Device id. */
  readonly deviceId: number;
  /** Class code (24 bits). */
  readonly classCode: number;
  /** PCIe type (`pci_pcie_type`). */
  readonly type: PciDevType;
  /** Human label. */
  readonly label: string;
  /** Secondary bus for bridges. */
  subordinate: PciBus | null = null;
  /** BARs by index. */
  readonly bars: (PciBar | null)[] = [null, null, null, null, null, null];
  /** Link, or null for functions without a PCIe link of their own (RCiEP, host bridge). */
  link: PciLink | null = null;
  /** Max payload size in bytes. */
  mps = 256;
  /** ACS capability bits, 0 when there is no ACS capability (`acs_cap == 0`). */
  acsCap = 0;
  /** True when an ACS extended capability exists. */
  hasAcs = false;
  /** ACS control bits. */
  acsCtrl = 0;
  /** ATS. */
  readonly ats: PciAtsState = {
    cap: false,
    enabled: false,
    stu: 0,
    queueDepth: 0,
    pageAligned: false,
  };
  /** PASID. */
  readonly pasid: PciPasidState = {
    cap: false,
    enabled: false,
    width: 0,
    features: 0,
    enabledFeatures: 0,
  };
  /** PRI. */
  readonly pri: PciPriState = { cap: false, enabled: false, maxRequests: 0, reqsAlloc: 0 };
  /** End-End TLP prefix supported (needed by PASID). */
  eetlpPrefix = true;
  /** `pdev->untrusted` (external-facing hierarchy). */
  untrusted = false;
  /** `pdev->external_facing` (a port facing a hot-plug slot). */
  externalFacing = false;
  /** `pdev->non_mappable_bars`. */
  nonMappableBars = false;
  /** True for a VF. */
  isVirtfn = false;
  /** PF of a VF (`pdev->physfn`). */
  physfn: PciDev | null = null;
  /** VFs of a PF. */
  readonly virtfns: PciDev[] = [];
  /** SR-IOV TotalVFs (0 = no SR-IOV capability). */
  sriovTotalVfs = 0;
  /** `pdev->p2pdma` (null until `pcim_p2pdma_init`). */
  p2pdma: PciP2pdma | null = null;
  /** Bound to a driver (devres users: p2pdma needs one). */
  driverBound = false;
  /** @internal Memo of {@linkcode pciUpstreamBridge} (the hierarchy is fixed after enumeration). */
  upstreamMemo: PciDev | null | undefined = undefined;

  /** Creates the function (does not add it to the bus; the builder does). */
  constructor(world: Kernel, init: PciDevInit) {
    const domain = init.bus.host.domain;
    const name = init.name ?? formatBdf(domain, init.bus.number, init.devfn);
    super(world, name, {
      parent: init.parent ?? null,
      bus: pciBusType(world),
      numaNode: init.numaNode ?? init.bus.host.numaNode,
    });
    this.pciBus = init.bus;
    this.devfn = init.devfn;
    this.vendor = init.vendor;
    this.deviceId = init.device;
    this.classCode = init.classCode;
    this.type = init.type;
    this.label = init.label ?? defaultLabel(init.vendor, init.device, init.classCode);
  }

  /** Domain number (`pci_domain_nr`). */
  get domain(): number {
    return this.pciBus.host.domain;
  }

  /** Bus number. */
  get busNr(): number {
    return this.pciBus.number;
  }

  /** `PCI_SLOT(devfn)`. */
  get slot(): number {
    return this.devfn >> 3;
  }

  /** `PCI_FUNC(devfn)`. */
  get fn(): number {
    return this.devfn & 7;
  }

  /** `pci_dev_id`: bus << 8 | devfn. */
  get devId(): number {
    return (this.pciBus.number << 8) | this.devfn;
  }

  /** The BDF computed from the topology (may differ from `name` for loaded files). */
  get bdf(): string {
    return formatBdf(this.domain, this.pciBus.number, this.devfn);
  }

  /** `pci_find_host_bridge(pdev->bus)`. */
  get host(): PciHostBridge {
    return this.pciBus.host;
  }

  /** True for bridges (they have a secondary bus). */
  get isBridge(): boolean {
    return this.subordinate !== null;
  }
}

/** `pci_physfn`: a VF's PF, or the device itself. */
export function pciPhysfn(dev: PciDev): PciDev {
  return dev.isVirtfn && dev.physfn ? dev.physfn : dev;
}

/**
 * `pci_upstream_bridge`: the bridge above `dev` (a VF uses its PF), or null
 * when the device sits on a root bus.
 */
export function pciUpstreamBridge(dev: PciDev): PciDev | null {
  const memo = dev.upstreamMemo;
  if (memo !== undefined) return memo;
  const d = pciPhysfn(dev);
  const up = d.pciBus.isRoot ? null : d.pciBus.self;
  if (dev.registered) dev.upstreamMemo = up;
  return up;
}

/** `dev_is_pci`. */
export function devIsPci(dev: Device): dev is PciDev {
  return dev instanceof PciDev;
}

/** The world's "pci" bus type (`pci_bus_type`). */
export function pciBusType(world: Kernel): Bus {
  return world.ext("pci-p2p:bus", () => new Bus("pci"));
}

/** Formats `dddd:bb:ss.f`. */
export function formatBdf(domain: number, bus: number, devfn: number): string {
  return `${hex(domain, 4)}:${hex(bus, 2)}:${hex(devfn >> 3, 2)}.${devfn & 7}`;
}

/** Parses `dddd:bb:ss.f` or `bb:ss.f` (domain 0); throws on malformed text. */
export function parseBdf(s: string): { domain: number; bus: number; devfn: number } {
  const m = /^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/.exec(
    s.trim(),
  );
  if (!m) throw new Error(`malformed PCI address "${s}" (expected dddd:bb:ss.f)`);
  const slot = parseInt(m[3]!, 16);
  if (slot > 31) throw new Error(`malformed PCI address "${s}": slot ${slot} > 0x1f`);
  return {
    domain: m[1] === undefined ? 0 : parseInt(m[1], 16),
    bus: parseInt(m[2]!, 16),
    devfn: (slot << 3) | parseInt(m[4]!, 10),
  };
}

/** Lower-case hex, zero padded. */
export function hex(n: number | bigint, width: number): string {
  return n.toString(16).padStart(width, "0");
}

function defaultLabel(vendor: number, device: number, classCode: number): string {
  const v = VENDOR_NAMES[vendor] ?? `Device ${hex(vendor, 4)}`;
  return `${v} Device ${hex(device, 4)} [${hex(classCode >> 8, 4)}]`;
}

/** Vendor names for labels (a few, as pci.ids spells them). */
export const VENDOR_NAMES: Readonly<Record<number, string>> = {
  0x1022: "Advanced Micro Devices, Inc. [AMD]",
  0x8086: "Intel Corporation",
  0x10de: "NVIDIA Corporation",
  0x15b3: "Mellanox Technologies",
  0x144d: "Samsung Electronics Co Ltd",
  0x1000: "Broadcom / LSI",
  0x10b5: "PLX Technology, Inc.",
  0x1d0f: "Amazon.com, Inc.",
  0x1ae0: "Google, Inc.",
  0x1d17: "Zhaoxin",
  0x104c: "Texas Instruments",
};
