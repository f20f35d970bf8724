/**
 * DOC: declarative machine builder and enumeration
 *
 * A {@linkcode MachineSpec} (plain JSON) describes host bridges and the tree
 * of functions below them. {@linkcode buildMachine} enumerates it the way
 * the PCI core does at boot: depth-first bus numbering (`pci_scan_bridge`:
 * a bridge's secondary bus is the next free number, its subordinate the
 * highest number below it), functions on a bus in devfn order, SR-IOV VFs at
 * PF routing id + offset + n * stride (`pci_iov_virtfn_bus/devfn`), BARs
 * assigned inside the host bridge's windows with natural alignment (largest
 * first, as `pbus_size_mem` sorts by alignment), `pci_acs_init` on every
 * function, and `device_add` of each function on the "pci" bus. Input BDFs
 * that differ from the enumerated numbers (NCCL files) are kept as names.
 *
 * Locking: runs before any task; synchronous.
 *
 * @module
 */
import { type Kernel, KernelError } from "@dmalab/kernel";
import {
  isBridgeType,
  parseAcsBits,
  PCI_CLASS_BRIDGE_HOST,
  PCI_CLASS_BRIDGE_PCI,
  type PciDevType,
} from "./constants.ts";
import {
  type CpuInfo,
  formatBdf,
  hex,
  type PciBar,
  PciBus,
  PciDev,
  PciHostBridge,
  type PciWindow,
} from "./fabric.ts";
import { type PciFabric, pciFabric } from "./machine.ts";
import { pciEnableAcs, pciRequestAcs } from "./acs.ts";

/** A number given as JSON number, hex string ("0x10de") or size ("64G"). */
export type NumLike = number | string;

/** A BAR in a spec. */
export interface BarSpec {
  /** BAR index (default: next free; a 64-bit BAR takes two slots). */
  index?: number;
  /** Size in bytes, or "16M"/"64G". */
  size: NumLike;
  /** 64-bit (default true for >= 4 GiB or prefetchable). */
  is64?: boolean;
  /** Prefetchable (default false). */
  prefetch?: boolean;
  /** I/O port BAR instead of memory. */
  io?: boolean;
  /** Fixed CPU address (as firmware assigned it, from sysfs); default: assigned at enumeration. */
  start?: NumLike;
}

/** A link in a spec: negotiated gen/width plus optional capability. */
export interface LinkSpec {
  /** Negotiated generation 1..6. */
  gen: number;
  /** Negotiated width. */
  width: number;
  /** Capability generation (default = gen). */
  capGen?: number;
  /** Capability width (default = width). */
  capWidth?: number;
}

/** ACS in a spec: capability and control bits as names or a number. */
export interface AcsSpec {
  /** Capability bits. */
  cap: number | string | string[];
  /** Control bits (default none). */
  ctrl?: number | string | string[];
}

/** SR-IOV in a spec. */
export interface SriovSpec {
  /** TotalVFs. */
  totalVfs: number;
  /** VFs enabled at build time (default 0). */
  numVfs?: number;
  /** VF device id (default PF's + 1). */
  vfDevice?: NumLike;
  /** First VF offset (default 1). */
  offset?: number;
  /** VF stride (default 1). */
  stride?: number;
  /** BARs of each VF. */
  bars?: BarSpec[];
}

/** One PCI function (and, for bridges, what is below it). */
export interface FnSpec {
  /** Type; inferred from position when absent. */
  type?: PciDevType;
  /** Slot (default: next free on the bus). */
  slot?: number;
  /** Function (default 0). */
  fn?: number;
  /** Name to use instead of the enumerated BDF (input files). */
  bdf?: string;
  /** Vendor id. */
  vendor?: NumLike;
  /** Device id. */
  device?: NumLike;
  /** Class code (24 bits). */
  classCode?: NumLike;
  /** Display name. */
  label?: string;
  /** BARs. */
  bars?: BarSpec[];
  /** Link (default Gen4 x16 for PCIe functions). */
  link?: LinkSpec | null;
  /** Max payload size (default 256). */
  mps?: number;
  /** ACS capability/control (default: ports get SV|TB|RR|CR|UF, endpoints none); false = none. */
  acs?: AcsSpec | false;
  /** ATS capability. */
  ats?: boolean | { queueDepth?: number; pageAligned?: boolean };
  /** PASID capability. */
  pasid?: boolean | { width?: number; features?: number };
  /** PRI capability. */
  pri?: boolean | { maxRequests?: number };
  /** SR-IOV. */
  sriov?: SriovSpec;
  /** `pdev->untrusted`. */
  untrusted?: boolean;
  /** `pdev->external_facing`. */
  externalFacing?: boolean;
  /** Secondary bus number for bridges (default: next free). */
  secondaryBus?: number;
  /** Subordinate bus number for bridges (default: highest bus found below). */
  subordinateBus?: number;
  /** NUMA node override. */
  numaNode?: number;
  /** Functions below a bridge. */
  children?: FnSpec[];
  /** Marks this function as a VF of the named PF (VFs read from sysfs). */
  physfn?: string;
}

/** A host bridge in a spec. */
export interface HostBridgeSpec {
  /** Domain (default 0). */
  domain?: number;
  /** Root bus number (default: next free in the domain). */
  bus?: number;
  /** NUMA node (default 0). */
  numaNode?: number;
  /** Memory windows (default: a 64 MiB window in the 32-bit PCI hole and a 1 TiB 64-bit prefetchable one). */
  windows?: { cpuStart: NumLike; size: NumLike; busOffset?: NumLike; prefetch?: boolean }[];
  /** Functions on the root bus. */
  devices: FnSpec[];
}

/** A machine: CPU, host bridges, parameters. */
export interface MachineSpec {
  /** Name. */
  name?: string;
  /** CPU (default: unknown, so `cpu_supports_p2pdma()` is false). */
  cpu?: Partial<CpuInfo> & { vendor: CpuInfo["vendor"] };
  /** An IOMMU driver called `pci_request_acs()` before enumeration. */
  iommu?: boolean;
  /** PCI kernel parameters. */
  kernelParams?: { noats?: boolean; disableAcsRedir?: string[] };
  /** Host bridges. */
  hostBridges: HostBridgeSpec[];
  /** NVLink bundles between named devices. */
  nvlinks?: { a: string; b: string; count: number; viaSwitch?: boolean }[];
  /** CPUs of each NUMA node as a list (`"0-23"`), for `nvidia-smi topo -m`'s CPU Affinity. */
  numaCpus?: Record<string, string>;
}

const SIZE_RE = /^\s*(0x[0-9a-f]+|\d+)\s*([kmgt]i?b?)?\s*$/i;

/** Parses a {@linkcode NumLike} as bigint ("64G", "0x1000", 4096). */
export function parseBig(v: NumLike, what: string): bigint {
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${what}: bad number ${v}`);
    return BigInt(v);
  }
  const m = SIZE_RE.exec(v);
  if (!m) throw new Error(`${what}: cannot parse "${v}"`);
  const base = BigInt(m[1]!);
  const unit = (m[2] ?? "").charAt(0).toLowerCase();
  const shift = unit === "k"
    ? 10n
    : unit === "m"
    ? 20n
    : unit === "g"
    ? 30n
    : unit === "t"
    ? 40n
    : 0n;
  return base << shift;
}

/** Parses a {@linkcode NumLike} as a safe integer. */
export function parseNum(v: NumLike, what: string): number {
  const b = parseBig(v, what);
  if (b > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what}: ${v} too large`);
  return Number(b);
}

function defaultWindows(index: number): PciWindow[] {
  // 32-bit windows of 64 MiB sit in the PCI hole below 4 GiB (e820 leaves
  // 3-4 GiB to PCI); past the 15th host bridge the hole is used up and only
  // the 64-bit window remains, as on large machines.
  const w64: PciWindow = {
    cpuStart: (1n << 44n) + BigInt(index) * (1n << 40n),
    size: 1n << 40n,
    busOffset: 0n,
    prefetch: true,
  };
  if (index >= 15) return [w64];
  return [{
    cpuStart: 0xc000_0000n + BigInt(index) * 0x0400_0000n,
    size: 0x0400_0000n,
    busOffset: 0n,
    prefetch: false,
  }, w64];
}

interface Pending {
  bar: PciBar;
  dev: PciDev;
  fixed: bigint | null;
}

/**
 * Builds the machine described by `spec` into `world` and returns the
 * world's fabric. Throws on a malformed spec (with the path of the bad node).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { buildMachine, pcieSwitch, rootPort, endpoint } from "@dmalab/pci-p2p";
 * const world = new Kernel();
 * const fabric = buildMachine(world, {
 *   cpu: { vendor: "AMD", family: 0x19 },
 *   hostBridges: [{ devices: [rootPort([pcieSwitch([endpoint({ vendor: 0x10de }), endpoint({ vendor: 0x15b3 })])])] }],
 * });
 * fabric.endpoints().map((d) => d.name); // ["0000:03:00.0", "0000:04:00.0"]
 * ```
 */
export function buildMachine(world: Kernel, spec: MachineSpec): PciFabric {
  const fabric = pciFabric(world);
  if (fabric.devices.length > 0 || fabric.hostBridges.length > 0) {
    throw new KernelError("EEXIST", "buildMachine: this world already has a PCI fabric");
  }
  if (!spec || !Array.isArray(spec.hostBridges)) {
    throw new Error("machine spec: hostBridges must be an array");
  }
  const acsEnable = fabric.acsEnable;
  try {
    return build(world, fabric, spec);
  } catch (e) {
    // a failed build leaves the world as it was: no devices, no claimed BARs
    for (const d of fabric.devices) {
      for (const b of d.bars) if (b?.mmio) world.mem.unregisterMmio(b.mmio);
      if (d.registered) d.del();
    }
    fabric.reset();
    fabric.acsEnable = acsEnable;
    throw e;
  }
}

function build(world: Kernel, fabric: PciFabric, spec: MachineSpec): PciFabric {
  fabric.name = spec.name ?? "machine";
  if (spec.cpu) {
    fabric.cpu = {
      arch: spec.cpu.arch ?? "x86_64",
      vendor: spec.cpu.vendor,
      family: spec.cpu.family ?? 0,
      model: spec.cpu.model ?? 0,
    };
  }
  fabric.params = {
    noats: spec.kernelParams?.noats ?? false,
    disableAcsRedir: spec.kernelParams?.disableAcsRedir ?? [],
  };
  if (spec.iommu) pciRequestAcs(world);
  const nextBus = new Map<number, number>();
  const vfLinks: Ctx["vfLinks"] = [];
  spec.hostBridges.forEach((hb, i) => {
    const path = `hostBridges[${i}]`;
    const domain = hb.domain ?? 0;
    const busNr = hb.bus ?? nextBus.get(domain) ?? 0;
    if (busNr < 0 || busNr > 255) throw new Error(`${path}: bus ${busNr} out of range`);
    const windows = hb.windows
      ? hb.windows.map((w, j) => ({
        cpuStart: parseBig(w.cpuStart, `${path}.windows[${j}].cpuStart`),
        size: parseBig(w.size, `${path}.windows[${j}].size`),
        busOffset: w.busOffset === undefined ? 0n : signedBig(w.busOffset, `${path}.windows[${j}]`),
        prefetch: w.prefetch ?? false,
      }))
      : defaultWindows(i);
    const host = new PciHostBridge(domain, busNr, hb.numaNode ?? 0, windows);
    fabric.hostBridges.push(host);
    const ctx: Ctx = { world, fabric, counter: busNr, bars: [], vfLinks };
    scanBus(ctx, host.bus, hb.devices ?? [], path);
    host.bus.subordinate = ctx.counter;
    nextBus.set(domain, Math.max(nextBus.get(domain) ?? 0, ctx.counter + 1));
    assignBars(ctx, host);
  });
  for (const { vf, pf, path } of vfLinks) {
    const p = fabric.get(pf);
    if (!p || p === vf || p.isVirtfn) throw new Error(`${path}.physfn: no PF named ${pf}`);
    vf.isVirtfn = true;
    vf.physfn = p;
    p.virtfns.push(vf);
  }
  for (const l of spec.nvlinks ?? []) {
    fabric.nvlinks.push({ a: l.a, b: l.b, count: l.count, viaSwitch: l.viaSwitch ?? false });
  }
  for (const [k, v] of Object.entries(spec.numaCpus ?? {})) fabric.numaCpus.set(Number(k), v);
  for (const d of fabric.devices) pciEnableAcs(d);
  for (const d of fabric.devices) d.add();
  return fabric;
}

function signedBig(v: NumLike, what: string): bigint {
  if (typeof v === "string" && v.trim().startsWith("-")) return -parseBig(v.trim().slice(1), what);
  if (typeof v === "number" && v < 0) return -parseBig(-v, what);
  return parseBig(v, what);
}

interface Ctx {
  world: Kernel;
  fabric: PciFabric;
  counter: number;
  bars: Pending[];
  vfLinks: { vf: PciDev; pf: string; path: string }[];
}

function inferType(spec: FnSpec, bus: PciBus): PciDevType {
  if (spec.type) return spec.type;
  const hasKids = spec.children !== undefined;
  const parent = bus.self;
  if (!hasKids) {
    if (bus.isRoot) {
      const cls = spec.classCode === undefined ? 0 : parseNum(spec.classCode, "classCode");
      return cls >> 8 === PCI_CLASS_BRIDGE_HOST >> 8 ? "host_bridge" : "rc_endpoint";
    }
    return "endpoint";
  }
  if (bus.isRoot) return "root_port";
  if (parent!.type === "switch_upstream") return "switch_downstream";
  if (parent!.type === "root_port" || parent!.type === "switch_downstream") {
    return "switch_upstream";
  }
  return "pci_bridge";
}

function scanBus(ctx: Ctx, bus: PciBus, specs: FnSpec[], path: string): void {
  if (!Array.isArray(specs)) throw new Error(`${path}: children must be an array`);
  const used = new Set<number>();
  const placed: { spec: FnSpec; devfn: number; path: string }[] = [];
  const nextSlot = 0;
  specs.forEach((s, i) => {
    const p = `${path}/${i}`;
    if (typeof s !== "object" || s === null) throw new Error(`${p}: not an object`);
    const fn = s.fn ?? 0;
    let slot = s.slot;
    if (slot === undefined) {
      let k = 0;
      while (used.has(((nextSlot + k) << 3) | fn)) k++;
      slot = nextSlot + k;
    }
    if (slot < 0 || slot > 31 || fn < 0 || fn > 7 || !Number.isInteger(slot + fn)) {
      throw new Error(`${p}: slot ${slot} fn ${fn} out of range`);
    }
    const devfn = (slot << 3) | fn;
    if (used.has(devfn)) {
      throw new Error(`${p}: devfn ${hex(slot, 2)}.${fn} used twice on bus ${hex(bus.number, 2)}`);
    }
    used.add(devfn);
    placed.push({ spec: s, devfn, path: p });
  });
  placed.sort((a, b) => a.devfn - b.devfn);
  for (const { spec, devfn, path: p } of placed) {
    const type = inferType(spec, bus);
    const bridge = isBridgeType(type);
    const classCode = spec.classCode !== undefined
      ? parseNum(spec.classCode, `${p}.classCode`)
      : bridge
      ? PCI_CLASS_BRIDGE_PCI
      : type === "host_bridge"
      ? PCI_CLASS_BRIDGE_HOST
      : 0xff0000;
    const dev = new PciDev(ctx.world, {
      bus,
      devfn,
      vendor: spec.vendor === undefined ? 0x1af4 : parseNum(spec.vendor, `${p}.vendor`),
      device: spec.device === undefined ? 0 : parseNum(spec.device, `${p}.device`),
      classCode,
      type,
      ...(spec.label !== undefined ? { label: spec.label } : {}),
      ...(spec.bdf !== undefined ? { name: spec.bdf } : {}),
      parent: bus.self,
      ...(spec.numaNode !== undefined ? { numaNode: spec.numaNode } : {}),
    });
    configure(ctx, dev, spec, p);
    if (spec.physfn !== undefined) ctx.vfLinks.push({ vf: dev, pf: spec.physfn, path: p });
    bus.devices.push(dev);
    try {
      ctx.fabric.register(dev);
    } catch (e) {
      throw new Error(`${p}: ${(e as Error).message}`);
    }
    if (bridge) {
      const sec = spec.secondaryBus ?? ctx.counter + 1;
      if (sec <= bus.number || sec > 255) {
        throw new Error(`${p}: secondary bus ${sec} must be above ${bus.number} and <= 255`);
      }
      ctx.counter = Math.max(ctx.counter, sec);
      const child = new PciBus(bus.host, sec, dev);
      dev.subordinate = child;
      scanBus(ctx, child, spec.children ?? [], p);
      if (spec.subordinateBus !== undefined) {
        if (spec.subordinateBus < ctx.counter || spec.subordinateBus > 255) {
          throw new Error(
            `${p}: subordinate bus ${spec.subordinateBus} below bus ${ctx.counter} in use`,
          );
        }
        ctx.counter = spec.subordinateBus;
      }
      child.subordinate = ctx.counter;
    } else if (spec.children !== undefined && spec.children.length > 0) {
      throw new Error(`${p}: a ${type} has no secondary bus for children`);
    }
    if (spec.sriov?.numVfs) addVfs(ctx, dev, spec.sriov, p);
  }
}

function configure(ctx: Ctx, dev: PciDev, spec: FnSpec, p: string): void {
  const rootLike = dev.type === "host_bridge" || dev.type === "rc_endpoint";
  if (spec.link !== null && !rootLike) {
    const l = spec.link ?? { gen: 4, width: 16 };
    for (const [k, v] of Object.entries(l)) {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
        throw new Error(`${p}.link.${k}: bad value ${v}`);
      }
    }
    if (l.gen < 1 || l.gen > 6) throw new Error(`${p}.link.gen: ${l.gen} not in 1..6`);
    dev.link = {
      gen: l.gen,
      width: l.width,
      capGen: l.capGen ?? l.gen,
      capWidth: l.capWidth ?? l.width,
    };
  }
  if (spec.mps !== undefined) dev.mps = spec.mps;
  const portLike = dev.type === "root_port" || dev.type === "switch_downstream";
  if (spec.acs !== false && (spec.acs !== undefined || portLike)) {
    const a = spec.acs ?? { cap: "SV|TB|RR|CR|UF" };
    try {
      dev.hasAcs = true;
      dev.acsCap = parseAcsBits(a.cap);
      dev.acsCtrl = a.ctrl === undefined ? 0 : parseAcsBits(a.ctrl);
    } catch (e) {
      throw new Error(`${p}.acs: ${(e as Error).message}`);
    }
  }
  if (spec.ats) {
    const o = typeof spec.ats === "object" ? spec.ats : {};
    dev.ats.cap = !ctx.fabric.params.noats;
    dev.ats.queueDepth = o.queueDepth ?? 0;
    dev.ats.pageAligned = o.pageAligned ?? true;
  }
  if (spec.pasid) {
    const o = typeof spec.pasid === "object" ? spec.pasid : {};
    dev.pasid.cap = true;
    dev.pasid.width = o.width ?? 20;
    dev.pasid.features = o.features ?? 0;
  }
  if (spec.pri) {
    const o = typeof spec.pri === "object" ? spec.pri : {};
    dev.pri.cap = true;
    dev.pri.maxRequests = o.maxRequests ?? 512;
  }
  dev.untrusted = spec.untrusted ?? dev.pciBus.self?.untrusted ?? false;
  dev.externalFacing = spec.externalFacing ?? false;
  if (dev.pciBus.self?.externalFacing) dev.untrusted = true;
  if (spec.sriov) dev.sriovTotalVfs = spec.sriov.totalVfs;
  addBars(ctx, dev, spec.bars ?? [], p);
}

function addBars(ctx: Ctx, dev: PciDev, bars: BarSpec[], p: string): void {
  let next = 0;
  bars.forEach((b, i) => {
    const size = parseBig(b.size, `${p}.bars[${i}].size`);
    if (size === 0n || (size & (size - 1n)) !== 0n) {
      throw new Error(`${p}.bars[${i}]: size ${b.size} is not a power of two`);
    }
    const io = b.io ?? false;
    const prefetch = !io && (b.prefetch ?? false);
    const is64 = !io && (b.is64 ?? (prefetch || size >= 1n << 32n));
    const index = b.index ?? next;
    if (index < 0 || index > 5 || (is64 && index > 4) || dev.bars[index] !== null) {
      throw new Error(`${p}.bars[${i}]: BAR index ${index} unavailable`);
    }
    const bar: PciBar = {
      index,
      size,
      mem: !io,
      is64,
      prefetch,
      start: null,
      busOffset: 0n,
      mmio: null,
    };
    dev.bars[index] = bar;
    next = index + (is64 ? 2 : 1);
    const fixed = b.start === undefined ? null : parseBig(b.start, `${p}.bars[${i}].start`);
    if (fixed !== null && (fixed & (size - 1n)) !== 0n) {
      throw new Error(`${p}.bars[${i}]: start ${b.start} not aligned to its size`);
    }
    if (!io) ctx.bars.push({ bar, dev, fixed });
  });
}

function addVfs(ctx: Ctx, pf: PciDev, s: SriovSpec, p: string): void {
  const n = s.numVfs ?? 0;
  if (n > s.totalVfs) throw new Error(`${p}.sriov: numVfs ${n} > totalVfs ${s.totalVfs}`);
  const offset = s.offset ?? 1;
  const stride = s.stride ?? 1;
  const vbuses = new Map<number, PciBus>();
  for (let i = 0; i < n; i++) {
    const rid = pf.devId + offset + i * stride;
    const busNr = rid >> 8;
    if (busNr > 255) throw new Error(`${p}.sriov: VF ${i} routing id beyond bus 255`);
    let bus = pf.pciBus;
    if (busNr !== pf.busNr) {
      bus = vbuses.get(busNr) ?? new PciBus(pf.host, busNr, pf.pciBus.self);
      vbuses.set(busNr, bus);
      ctx.counter = Math.max(ctx.counter, busNr);
    }
    const vf = new PciDev(ctx.world, {
      bus,
      devfn: rid & 0xff,
      vendor: pf.vendor,
      device: s.vfDevice === undefined
        ? pf.deviceId + 1
        : parseNum(s.vfDevice, `${p}.sriov.vfDevice`),
      classCode: pf.classCode,
      type: "endpoint",
      label: `${pf.label} Virtual Function`,
      parent: pf,
    });
    vf.isVirtfn = true;
    vf.physfn = pf;
    vf.link = pf.link;
    vf.ats.cap = pf.ats.cap;
    vf.pasid.cap = pf.pasid.cap;
    vf.pri.cap = pf.pri.cap;
    vf.untrusted = pf.untrusted;
    pf.virtfns.push(vf);
    addBars(ctx, vf, s.bars ?? [], `${p}.sriov.vf${i}`);
    ctx.fabric.register(vf);
  }
}

function assignBars(ctx: Ctx, host: PciHostBridge): void {
  const cursors = host.windows.map((w) => w.cpuStart);
  for (const { bar, fixed, dev } of ctx.bars) {
    if (fixed === null) continue;
    bar.start = fixed;
    claimBar(ctx, dev, bar);
    host.windows.forEach((w, i) => {
      if (fixed >= w.cpuStart && fixed + bar.size <= w.cpuStart + w.size) {
        bar.busOffset = w.busOffset;
        if (cursors[i]! < fixed + bar.size) cursors[i] = fixed + bar.size;
      }
    });
  }
  const pending = ctx.bars.filter((b) => b.fixed === null).sort((a, b) =>
    a.bar.size === b.bar.size ? 0 : a.bar.size > b.bar.size ? -1 : 1
  );
  for (const { bar, dev } of pending) {
    const order = host.windows
      .map((w, i) => ({ w, i }))
      .filter(({ w }) =>
        (bar.prefetch && bar.is64 ? true : !w.prefetch) &&
        (bar.is64 || w.cpuStart + w.size <= 1n << 32n)
      )
      .sort((a, b) =>
        Number(b.w.prefetch === (bar.prefetch && bar.is64)) -
        Number(a.w.prefetch === (bar.prefetch && bar.is64))
      );
    let done = false;
    for (const { w, i } of order) {
      const start = (cursors[i]! + bar.size - 1n) & ~(bar.size - 1n);
      if (start + bar.size <= w.cpuStart + w.size) {
        bar.start = start;
        bar.busOffset = w.busOffset;
        cursors[i] = start + bar.size;
        done = true;
        claimBar(ctx, dev, bar);
        break;
      }
    }
    if (!done) {
      ctx.world.dmesg.printk(
        "info",
        `pci ${dev.name}: BAR ${bar.index} [mem size 0x${hex(bar.size, 8)}${
          bar.is64 ? " 64bit" : ""
        }${bar.prefetch ? " pref" : ""}]: can't assign; no space`,
      );
    }
  }
}

/**
 * `pci_claim_resource`: registers an assigned BAR as an MMIO region of the
 * world's physical memory (sparse backing, so P2P writes land somewhere).
 * A conflict is logged as the PCI core logs it and leaves the BAR unclaimed.
 */
function claimBar(ctx: Ctx, dev: PciDev, bar: PciBar): void {
  try {
    bar.mmio = ctx.world.mem.registerMmio({
      name: `${dev.name} BAR ${bar.index}`,
      start: bar.start!,
      size: bar.size,
      owner: dev,
    });
  } catch (e) {
    if (!(e instanceof KernelError)) throw e;
    ctx.world.dmesg.printk(
      "info",
      `pci ${dev.name}: BAR ${bar.index} ${formatBar(bar)}: can't claim; address conflict`,
    );
  }
}

/** The resource line of a BAR as `%pR` prints it (`[mem 0x...-0x... 64bit pref]`). */
export function formatBar(bar: PciBar): string {
  if (bar.start === null) return `[mem size 0x${hex(bar.size, 8)}]`;
  const end = bar.start + bar.size - 1n;
  return `[mem 0x${hex(bar.start, 8)}-0x${hex(end, 8)}${bar.is64 ? " 64bit" : ""}${
    bar.prefetch ? " pref" : ""
  }]`;
}

/** Builder helper: a Root Port above `children`. */
export function rootPort(children: FnSpec[], opts: Omit<FnSpec, "children" | "type"> = {}): FnSpec {
  return { vendor: 0x1022, device: 0x1483, ...opts, type: "root_port", children };
}

/**
 * Builder helper: a PCIe switch (upstream port plus one downstream port per
 * entry of `below`, each holding one function or a list of functions).
 */
export function pcieSwitch(
  below: (FnSpec | FnSpec[])[],
  opts: {
    vendor?: NumLike;
    device?: NumLike;
    link?: LinkSpec;
    acs?: AcsSpec | false;
    label?: string;
  } = {},
): FnSpec {
  const vendor = opts.vendor ?? 0x1000;
  const device = opts.device ?? 0xc030;
  return {
    type: "switch_upstream",
    vendor,
    device,
    ...(opts.link ? { link: opts.link } : {}),
    ...(opts.label
      ? { label: opts.label }
      : { label: "Broadcom / LSI PEX890xx PCIe Gen 5 Switch" }),
    acs: false,
    children: below.map((c, i) => ({
      type: "switch_downstream",
      slot: i,
      vendor,
      device,
      label: opts.label ?? "Broadcom / LSI PEX890xx PCIe Gen 5 Switch",
      ...(opts.link ? { link: opts.link } : {}),
      ...(opts.acs !== undefined ? { acs: opts.acs } : {}),
      children: Array.isArray(c) ? c : [c],
    })),
  };
}

/** Builder helper: an endpoint. */
export function endpoint(opts: Omit<FnSpec, "children">): FnSpec {
  return { type: "endpoint", ...opts };
}

/** Builder helper: a GPU-like endpoint with a large 64-bit prefetchable BAR1 (VRAM aperture). */
export function gpu(opts: Omit<FnSpec, "children"> & { vram?: NumLike } = {}): FnSpec {
  const { vram, ...rest } = opts;
  return {
    type: "endpoint",
    vendor: 0x10de,
    device: 0x2330,
    classCode: 0x030200,
    label: "NVIDIA Corporation GH100 [H100 SXM5 80GB]",
    bars: [
      { index: 0, size: "16M" },
      { index: 1, size: vram ?? "128G", prefetch: true, is64: true },
      { index: 3, size: "32M", prefetch: true, is64: true },
    ],
    link: { gen: 5, width: 16 },
    ats: true,
    pasid: { width: 20 },
    ...rest,
  };
}

/** Builder helper: an mlx5-like NIC (ConnectX-7) with ATS and SR-IOV. */
export function nic(opts: Omit<FnSpec, "children"> = {}): FnSpec {
  return {
    type: "endpoint",
    vendor: 0x15b3,
    device: 0x1021,
    classCode: 0x020700,
    label: "Mellanox Technologies MT2910 Family [ConnectX-7]",
    bars: [{ index: 0, size: "32M", prefetch: true, is64: true }],
    link: { gen: 5, width: 16 },
    ats: true,
    pri: false,
    sriov: {
      totalVfs: 8,
      vfDevice: 0x101e,
      bars: [{ index: 0, size: "1M", prefetch: true, is64: true }],
    },
    ...opts,
  };
}

/** Builder helper: an NVMe-like endpoint (with a CMB-capable BAR). */
export function nvme(opts: Omit<FnSpec, "children"> = {}): FnSpec {
  return {
    type: "endpoint",
    vendor: 0x144d,
    device: 0xa80a,
    classCode: 0x010802,
    label: "Samsung Electronics Co Ltd NVMe SSD Controller PM9A1/PM9A3/980PRO",
    bars: [{ index: 0, size: "16K", is64: true }, {
      index: 2,
      size: "64M",
      prefetch: true,
      is64: true,
    }],
    link: { gen: 4, width: 4 },
    ...opts,
  };
}

/** Builder helper: the devfn 00.0 host-bridge function of a root bus. */
export function hostBridgeFn(vendor: NumLike, device: NumLike, label?: string): FnSpec {
  return {
    type: "host_bridge",
    slot: 0,
    fn: 0,
    vendor,
    device,
    classCode: PCI_CLASS_BRIDGE_HOST,
    ...(label ? { label } : {}),
    link: null,
  };
}

/** Formats a BDF (re-exported convenience for specs). */
export const bdf: (domain: number, bus: number, devfn: number) => string = formatBdf;
