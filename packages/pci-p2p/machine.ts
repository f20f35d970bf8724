/**
 * DOC: the PCI side of a world
 *
 * One {@linkcode PciFabric} per world (kept in `world.ext`): the CPU the
 * world runs on (`boot_cpu_data`), the host bridges, every PCI function in
 * scan order, the PCI kernel parameters that matter for P2P (`pci=noats`,
 * `pci=disable_acs_redir=`), whether an IOMMU driver asked for ACS
 * (`pci_request_acs`), and NVLink edges a loaded topology carried.
 *
 * Locking: built at enumeration, read-only afterwards except through the
 * functions of acs.ts / ats.ts / p2pdma.ts; all access is synchronous.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import type { CpuInfo, PciDev, PciHostBridge } from "./fabric.ts";

/** An NVLink bundle between two devices (from a topology file). */
export interface NvLinkEdge {
  /** Device name (BDF). */
  readonly a: string;
  /** Peer name (BDF or an NVSwitch id). */
  readonly b: string;
  /** Number of links. */
  readonly count: number;
  /** True when `b` is an NVSwitch rather than a GPU. */
  readonly viaSwitch: boolean;
}

/** Kernel command-line parameters the PCI core reads. */
export interface PciKernelParams {
  /** `pci=noats`: ATS disabled for every device (`pci_ats_disabled()`). */
  noats: boolean;
  /** `pci=disable_acs_redir=<bdf>;<bdf>`: ports whose RR/CR/EC are cleared. */
  disableAcsRedir: readonly string[];
}

/** The PCI state of one world. */
export class PciFabric {
  /** The world. */
  readonly world: Kernel;
  /** CPU vendor/family (null: unknown, `cpu_supports_p2pdma()` says no). */
  cpu: CpuInfo | null = null;
  /** Host bridges in enumeration order. */
  readonly hostBridges: PciHostBridge[] = [];
  /** Every function in scan order. */
  readonly devices: PciDev[] = [];
  /** Parameters. */
  params: PciKernelParams = { noats: false, disableAcsRedir: [] };
  /** `pci_acs_enable`: set by `pci_request_acs()` (an IOMMU driver is present). */
  acsEnable = false;
  /** NVLink edges. */
  readonly nvlinks: NvLinkEdge[] = [];
  /** CPU list per NUMA node (`"0-23"`), when the input says. */
  readonly numaCpus: Map<number, string> = new Map();
  /** Machine name (preset or file). */
  name = "machine";
  /** Odd things the loaders noticed. */
  readonly warnings: string[] = [];
  readonly #byName = new Map<string, PciDev>();
  #rng: number;

  /** Use {@linkcode pciFabric} to get a world's fabric. */
  constructor(world: Kernel) {
    this.world = world;
    this.#rng = (world.seed >>> 0) || 1;
  }

  /** Forgets everything (the builder's rollback). */
  reset(): void {
    this.cpu = null;
    this.hostBridges.length = 0;
    this.devices.length = 0;
    this.nvlinks.length = 0;
    this.warnings.length = 0;
    this.numaCpus.clear();
    this.#byName.clear();
    this.params = { noats: false, disableAcsRedir: [] };
    this.name = "machine";
  }

  /** Registers a function (builder only). */
  register(dev: PciDev): void {
    if (this.#byName.has(dev.name)) {
      throw new Error(`duplicate PCI device name ${dev.name}`);
    }
    this.#byName.set(dev.name, dev);
    this.devices.push(dev);
  }

  /** The function named `name` (a BDF), or undefined. */
  get(name: string): PciDev | undefined {
    return this.#byName.get(name) ?? this.#byName.get(`0000:${name}`);
  }

  /** The function named `name`; throws when absent. */
  dev(name: string): PciDev {
    const d = this.get(name);
    if (!d) throw new Error(`no PCI device ${name}`);
    return d;
  }

  /** Endpoints (not bridges, not host-bridge functions), in scan order. */
  endpoints(): PciDev[] {
    return this.devices.filter((d) => !d.isBridge && d.type !== "host_bridge");
  }

  /** `get_random_u32_below(n)`, deterministic per world seed (xorshift32). */
  randomBelow(n: number): number {
    let x = this.#rng;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#rng = x || 1;
    return x % n;
  }
}

/** The world's PCI fabric (created empty on first use, with its invariant checker). */
export function pciFabric(world: Kernel): PciFabric {
  return world.ext("pci-p2p", () => {
    const f = new PciFabric(world);
    world.addChecker("pci-p2p", () => checkFabric(f));
    return f;
  });
}

/**
 * Invariants: bus numbers nest (secondary <= subordinate inside the parent's
 * range), BARs are naturally aligned and do not overlap, p2pmem pools never
 * hand out more than they hold, cached map types are real enum values.
 */
export function checkFabric(f: PciFabric): string[] {
  const out: string[] = [];
  const bars: { s: bigint; e: bigint; what: string }[] = [];
  for (const d of f.devices) {
    const sub = d.subordinate;
    if (sub) {
      const parent = d.pciBus;
      if (
        sub.number <= parent.number || sub.subordinate > parent.subordinate ||
        sub.subordinate < sub.number
      ) {
        out.push(
          `${d.name}: bus range [${sub.number}-${sub.subordinate}] does not nest in bus ${parent.number}-${parent.subordinate}`,
        );
      }
    }
    for (const b of d.bars) {
      if (!b || b.start === null) continue;
      if ((b.start & (b.size - 1n)) !== 0n) {
        out.push(`${d.name} BAR ${b.index}: not aligned to its size`);
      }
      bars.push({ s: b.start, e: b.start + b.size, what: `${d.name} BAR ${b.index}` });
    }
    const p = d.p2pdma;
    if (p) {
      if (p.allocRefs < 0) out.push(`${d.name}: p2pmem freed more than allocated`);
      if (p.pool && p.pool.avail() > p.pool.size()) {
        out.push(`${d.name}: p2pmem pool available > size`);
      }
      for (const [k, v] of p.mapTypes) {
        if (v < 1 || v > 4) out.push(`${d.name}: map_types[${k}] = ${v}`);
      }
    }
  }
  bars.sort((a, b) => (a.s < b.s ? -1 : a.s > b.s ? 1 : 0));
  for (let i = 1; i < bars.length; i++) {
    if (bars[i]!.s < bars[i - 1]!.e) out.push(`${bars[i]!.what} overlaps ${bars[i - 1]!.what}`);
  }
  return out;
}

/** Sets the CPU the world runs on. */
export function setCpu(world: Kernel, cpu: CpuInfo): void {
  pciFabric(world).cpu = cpu;
}

/**
 * `cpu_supports_p2pdma()`: x86 and AMD family >= 0x17 (Zen or newer) allow
 * P2P through the root complex (drivers/pci/p2pdma.c).
 */
export function cpuSupportsP2pdma(world: Kernel): boolean {
  const c = pciFabric(world).cpu;
  return c !== null && c.arch === "x86_64" && c.vendor === "AMD" && c.family >= 0x17;
}
