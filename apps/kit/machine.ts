/**
 * DOC: the machine an app runs on
 *
 * {@linkcode appMachine} builds the app's world and machine: the embedded
 * default machine of `@dmalab/pci-p2p` (AMD Zen 4; a GPU and an mlx5 NIC
 * under one Gen5 switch, a second NIC on another host bridge), or a machine
 * loaded from a file with pci-p2p's loaders (NCCL topology XML, `lspci -tv`
 * text, a JSON `MachineSpec`, or a sysfs directory), exactly as
 * `dmalab topo FILE` reads it. On a loaded machine the app picks its GPU
 * (first display-class endpoint with a memory BAR) and its NICs (network
 * class; the one sharing the most upstream bridges with the GPU first).
 *
 * Locking: runs before any task; no locks.
 *
 * @module
 */
import { Kernel, type KernelOptions } from "@dmalab/kernel";
import {
  buildMachine,
  defaultMachineSpec,
  loadSysfsTree,
  lspciToSpec,
  type MachineSpec,
  ncclTopoToSpec,
  parseLspciTree,
  parseNcclTopo,
  type PciDev,
  type PciFabric,
  type PresetOptions,
} from "@dmalab/pci-p2p";

/** The world and the devices an app uses. */
export interface AppMachine {
  /** The world. */
  world: Kernel;
  /** The fabric. */
  fabric: PciFabric;
  /** The GPU-like function (VRAM behind a BAR). */
  gpu: PciDev;
  /** The NIC closest to the GPU. */
  nic: PciDev;
  /** Another NIC (or the same when the machine has one). */
  nic2: PciDev;
  /** Loader warnings. */
  warnings: string[];
}

/** Options for {@linkcode appMachine}. */
export interface AppMachineOptions extends PresetOptions {
  /** Topology file or sysfs directory; the default machine when absent. */
  topology?: string;
  /** World options (seed, strict, variants). */
  world?: KernelOptions;
}

/** Thrown when a topology file cannot be used (the CLI reports it as a usage error). */
export class TopologyError extends Error {
  /** A topology error. */
  constructor(message: string) {
    super(message);
    this.name = "TopologyError";
  }
}

/** Reads a topology file or sysfs directory into a {@linkcode MachineSpec}. */
export function loadTopologySpec(path: string, warnings: string[] = []): MachineSpec {
  let isDir: boolean;
  try {
    isDir = Deno.statSync(path).isDirectory;
  } catch (e) {
    throw new TopologyError(`${path}: ${(e as Error).message}`);
  }
  if (isDir) return loadSysfsTree(path);
  const text = Deno.readTextFileSync(path);
  const t = text.trimStart();
  if (t.startsWith("<")) {
    const topo = parseNcclTopo(text, path);
    warnings.push(...topo.warnings);
    return ncclTopoToSpec(topo, `nccl:${path}`);
  }
  if (t.startsWith("{")) {
    try {
      return JSON.parse(text) as MachineSpec;
    } catch (e) {
      throw new TopologyError(`${path}: invalid JSON: ${(e as Error).message}`);
    }
  }
  if (t.startsWith("-")) return lspciToSpec(parseLspciTree(text, path), { warnings });
  throw new TopologyError(`${path}: not NCCL XML, lspci -tv text, JSON or a sysfs directory`);
}

function ancestors(d: PciDev): PciDev[] {
  const out: PciDev[] = [];
  for (let b = d.pciBus.self; b; b = b.pciBus.self) out.push(b);
  return out;
}

function hasMemBar(d: PciDev): boolean {
  return d.bars.some((b) => b !== null && b.size > 0n);
}

/** Picks the GPU and NICs of `fabric` (see the module doc). */
export function pickDevices(fabric: PciFabric): { gpu: PciDev; nic: PciDev; nic2: PciDev } {
  const eps = fabric.devices.filter((d) => d.type === "endpoint" && !d.isVirtfn);
  const gpu = eps.find((d) => d.classCode >> 16 === 0x03 && hasMemBar(d)) ??
    eps.find((d) => hasMemBar(d) && d.classCode >> 16 !== 0x02);
  const nics = eps.filter((d) => d.classCode >> 16 === 0x02 && d !== gpu);
  if (!gpu) throw new TopologyError(`${fabric.name}: no GPU-like endpoint with a memory BAR`);
  if (nics.length === 0) throw new TopologyError(`${fabric.name}: no network endpoint`);
  const up = ancestors(gpu);
  const shared = (n: PciDev) => ancestors(n).filter((a) => up.includes(a)).length;
  const sorted = [...nics].sort((a, b) => shared(b) - shared(a));
  return { gpu, nic: sorted[0]!, nic2: sorted[sorted.length - 1]! };
}

/**
 * The world and machine for an app run.
 *
 * @example
 * ```ts
 * import { appMachine } from "@dmalab/app-kit";
 * const m = appMachine();
 * m.gpu.name; // "0000:03:00.0"
 * m.nic.name; // "0000:04:00.0"
 * ```
 */
export function appMachine(o: AppMachineOptions = {}): AppMachine {
  const world = new Kernel(o.world ?? {});
  const warnings: string[] = [];
  const preset: PresetOptions = {};
  if (o.iommu !== undefined) preset.iommu = o.iommu;
  if (o.noats !== undefined) preset.noats = o.noats;
  if (o.disableAcsRedir !== undefined) preset.disableAcsRedir = o.disableAcsRedir;
  let spec: MachineSpec;
  if (o.topology) {
    spec = loadTopologySpec(o.topology, warnings);
    spec = { ...spec, iommu: o.iommu ?? spec.iommu ?? false };
  } else {
    spec = defaultMachineSpec(preset);
  }
  const fabric = buildMachine(world, spec);
  return { world, fabric, ...pickDevices(fabric), warnings };
}
