/**
 * DOC: outputs users know
 *
 * `lspci -tv` / `-tvnn` trees drawn the way pciutils' ls-tree.c draws them
 * (a shared line buffer whose `+`/`|` become `|` and everything else a space
 * after each printed line), `nvidia-smi topo -m` matrices for GPUs and RDMA
 * NICs with the NVML levels (X, NV#, PIX, PXB, PHB, NODE, SYS) and legend,
 * and the P2PDMA listing of every ordered pair of endpoints.
 *
 * Locking: read-only over a built fabric; synchronous.
 *
 * @module
 */
import { mapTypeName, PciP2pdmaMapType } from "./constants.ts";
import { hex, type PciDev, type PciHostBridge, pciUpstreamBridge } from "./fabric.ts";
import type { PciFabric } from "./machine.ts";
import { calcMapTypeAndDist } from "./p2pdma.ts";

/** Options for {@linkcode formatLspciTree}. */
export interface TreeOptions {
  /** Append `[vvvv:dddd]` (`-nn`). */
  nn?: boolean;
  /** Print names (`-v`); default true. */
  verbose?: boolean;
}

/**
 * The fabric as `lspci -tv` prints it.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine, formatLspciTree } from "@dmalab/pci-p2p";
 * const m = defaultMachine(new Kernel());
 * formatLspciTree(m.fabric).split("\n")[0]!.startsWith("-+-[0000:00]-+-00.0"); // true
 * ```
 */
export function formatLspciTree(fabric: PciFabric, opts: TreeOptions = {}): string {
  const verbose = opts.verbose ?? true;
  const out: string[] = [];
  const line: string[] = [];
  const byBus = new Map<string, PciDev[]>();
  const key = (h: PciHostBridge, bus: number) => `${h.domain}:${bus}`;
  for (const d of fabric.devices) {
    const k = key(d.host, d.busNr);
    const l = byBus.get(k) ?? [];
    l.push(d);
    byBus.set(k, l);
  }
  for (const l of byBus.values()) l.sort((a, b) => a.devfn - b.devfn);
  const put = (p: number, s: string): number => {
    for (let i = 0; i < s.length; i++) line[p + i] = s[i]!;
    return p + s.length;
  };
  const printIt = (p: number) => {
    line.length = p;
    out.push(line.join("").replace(/\s+$/, ""));
    for (let i = 0; i < line.length; i++) line[i] = line[i] === "+" || line[i] === "|" ? "|" : " ";
  };
  const showDev = (d: PciDev, p: number) => {
    p = put(p, `${hex(d.slot, 2)}.${d.fn}`);
    if (d.subordinate) {
      const sec = d.subordinate.number;
      const sub = d.subordinate.subordinate;
      p = put(p, sec === sub ? `-[${hex(sec, 2)}]-` : `-[${hex(sec, 2)}-${hex(sub, 2)}]-`);
      p = put(p, "-");
      showBus(byBus.get(key(d.host, sec)) ?? [], p);
      return;
    }
    if (verbose) {
      let name = d.label;
      if (opts.nn) name += ` [${hex(d.vendor, 4)}:${hex(d.deviceId, 4)}]`;
      if (d.name !== d.bdf) name += ` (${d.name})`;
      p = put(p, `  ${name}`);
    }
    printIt(p);
  };
  const showBus = (devs: PciDev[], p: number) => {
    if (devs.length === 0) printIt(p);
    else if (devs.length === 1) showDev(devs[0]!, put(p, "--"));
    else {
      for (let i = 0; i < devs.length - 1; i++) showDev(devs[i]!, put(p, "+-"));
      showDev(devs[devs.length - 1]!, put(p, "\\-"));
    }
  };
  const hosts = fabric.hostBridges;
  let p = put(0, "-");
  if (hosts.length === 1) {
    const h = hosts[0]!;
    p = put(p, `[${hex(h.domain, 4)}:${hex(h.bus.number, 2)}]-`);
    showBus(byBus.get(key(h, h.bus.number)) ?? [], p);
  } else {
    hosts.forEach((h, i) => {
      const last = i === hosts.length - 1;
      const k = put(p, `${last ? "\\-" : "+-"}[${hex(h.domain, 4)}:${hex(h.bus.number, 2)}]-`);
      showBus(byBus.get(key(h, h.bus.number)) ?? [], k);
    });
  }
  return out.join("\n") + "\n";
}

/** NVML topology levels as `nvidia-smi topo -m` prints them. */
export type TopoLevel = "X" | "PIX" | "PXB" | "PHB" | "NODE" | "SYS" | `NV${number}`;

/** True for GPUs `nvidia-smi` lists (NVIDIA display/3D class). */
export function isNvidiaGpu(d: PciDev): boolean {
  return d.vendor === 0x10de && d.classCode >> 16 === 0x03 && !d.isVirtfn;
}

/** True for NICs `nvidia-smi topo -m` lists (RDMA NICs; any NIC of an NCCL file). */
export function isTopoNic(d: PciDev, fabric: PciFabric): boolean {
  if (d.classCode >> 16 !== 0x02 || d.isVirtfn) return false;
  return d.vendor === 0x15b3 || fabric.name.startsWith("nccl");
}

function chain(d: PciDev): PciDev[] {
  const out: PciDev[] = [];
  for (let x: PciDev | null = pciUpstreamBridge(d); x; x = pciUpstreamBridge(x)) out.push(x);
  return out;
}

/** The PCIe level between two functions (nvidia-smi semantics, NVLink aside). */
export function pcieLevel(a: PciDev, b: PciDev): TopoLevel {
  if (a === b) return "X";
  const ca = [a, ...chain(a)];
  const cb = [b, ...chain(b)];
  const common = ca.find((x) => cb.includes(x));
  if (common) {
    const bridges = [...ca.slice(1, ca.indexOf(common) + 1), ...cb.slice(1, cb.indexOf(common))];
    const groups = new Set(
      bridges.map((x) => x.type === "switch_downstream" ? pciUpstreamBridge(x) ?? x : x),
    );
    return groups.size <= 1 ? "PIX" : "PXB";
  }
  if (a.host === b.host) return "PHB";
  if (a.host.numaNode === b.host.numaNode) return "NODE";
  return "SYS";
}

/** The level between two functions including NVLink bundles of the fabric. */
export function topoLevel(fabric: PciFabric, a: PciDev, b: PciDev): TopoLevel {
  if (a === b) return "X";
  let direct = 0;
  let viaA = 0;
  let viaB = 0;
  for (const l of fabric.nvlinks) {
    if (l.a === l.b) continue;
    if (
      !l.viaSwitch && ((l.a === a.name && l.b === b.name) || (l.a === b.name && l.b === a.name))
    ) direct += l.count;
    if (l.viaSwitch && l.a === a.name) viaA += l.count;
    if (l.viaSwitch && l.a === b.name) viaB += l.count;
  }
  if (direct > 0) return `NV${direct}`;
  if (viaA > 0 && viaB > 0) return `NV${Math.min(viaA, viaB)}`;
  return pcieLevel(a, b);
}

/** A matrix: the listed devices and their pairwise levels. */
export interface TopoMatrix {
  /** Column names (GPU0.., NIC0..). */
  readonly names: string[];
  /** Devices in column order. */
  readonly devices: PciDev[];
  /** levels[i][j]. */
  readonly levels: TopoLevel[][];
  /** NIC legend: NICn -> name. */
  readonly nicNames: string[];
  /** CPU Affinity per device ("N/A" when the input does not say). */
  readonly cpuLists: string[];
}

/** Builds the `nvidia-smi topo -m` matrix of a fabric. */
export function topoMatrix(fabric: PciFabric, nicNames: readonly string[] = []): TopoMatrix {
  const gpus = fabric.devices.filter(isNvidiaGpu);
  const nics = fabric.devices.filter((d) => isTopoNic(d, fabric));
  const devices = [...gpus, ...nics];
  const names = [...gpus.map((_, i) => `GPU${i}`), ...nics.map((_, i) => `NIC${i}`)];
  const levels = devices.map((a) => devices.map((b) => topoLevel(fabric, a, b)));
  return {
    names,
    devices,
    levels,
    nicNames: nics.map((d, i) => nicNames[i] ?? netName(d, i)),
    cpuLists: devices.map((d) => fabric.numaCpus.get(d.host.numaNode) ?? "N/A"),
  };
}

function netName(d: PciDev, i: number): string {
  const m = /\(net ([^,)]+)/.exec(d.label);
  return m ? m[1]! : `mlx5_${i}`;
}

/** The legend `nvidia-smi topo -m` prints under the matrix. */
export const TOPO_LEGEND: string = [
  "Legend:",
  "",
  "  X    = Self",
  "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)",
  "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node",
  "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)",
  "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)",
  "  PIX  = Connection traversing at most a single PCIe bridge",
  "  NV#  = Connection traversing a bonded set of # NVLinks",
].join("\n");

function expandTabs(s: string): string {
  let out = "";
  for (const ch of s) {
    if (ch === "\t") out += " ".repeat(8 - (out.length % 8));
    else out += ch;
  }
  return out.replace(/\s+$/, "");
}

/** Formats a matrix like `nvidia-smi topo -m` (tab stops expanded). */
export function formatTopoMatrix(m: TopoMatrix): string {
  const lines: string[] = [];
  lines.push(expandTabs(`\t${m.names.join("\t")}\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID`));
  m.devices.forEach((d, i) => {
    const cells = m.levels[i]!.map((l) => (l === "X" ? " X " : l));
    const cpus = m.cpuLists[i] ?? "N/A";
    const numa = m.names[i]!.startsWith("GPU") ? `\t${cpus}\t${d.host.numaNode}\t\tN/A` : "";
    lines.push(expandTabs(`${m.names[i]}\t${cells.join("\t")}${numa}`));
  });
  lines.push("", TOPO_LEGEND);
  if (m.nicNames.length) {
    lines.push("", "NIC Legend:", "");
    m.nicNames.forEach((n, i) => lines.push(`  NIC${i}: ${n}`));
  }
  return lines.join("\n") + "\n";
}

/** One row of the P2P listing. */
export interface P2pPair {
  /** Provider name. */
  readonly provider: string;
  /** Client name. */
  readonly client: string;
  /** Map type name. */
  readonly mapType: "NONE" | "NOT_SUPPORTED" | "BUS_ADDR" | "THRU_HOST_BRIDGE";
  /** `pci_p2pdma_distance` (-1 when not supported). */
  readonly distance: number;
}

/**
 * The P2PDMA map type and distance for every ordered pair of distinct
 * endpoints (`calc_map_type_and_dist`, non-verbose).
 */
export function p2pPairs(fabric: PciFabric, filter?: (d: PciDev) => boolean): P2pPair[] {
  const eps = fabric.endpoints().filter((d) => filter === undefined || filter(d));
  const out: P2pPair[] = [];
  for (const p of eps) {
    for (const c of eps) {
      if (p === c) continue;
      const r = calcMapTypeAndDist(p, c, false);
      out.push({
        provider: p.name,
        client: c.name,
        mapType: mapTypeName(r.mapType) as P2pPair["mapType"],
        distance: r.mapType === PciP2pdmaMapType.NOT_SUPPORTED ? -1 : r.dist,
      });
    }
  }
  return out;
}

/** Formats the P2P listing as a text table. */
export function formatP2pPairs(pairs: readonly P2pPair[]): string {
  const w = Math.max(8, ...pairs.map((p) => p.provider.length));
  const lines = [
    `${"PROVIDER".padEnd(w)}  ${"CLIENT".padEnd(w)}  ${"MAP TYPE".padEnd(16)}  DISTANCE`,
  ];
  for (const p of pairs) {
    lines.push(
      `${p.provider.padEnd(w)}  ${p.client.padEnd(w)}  ${p.mapType.padEnd(16)}  ${p.distance}`,
    );
  }
  return lines.join("\n") + "\n";
}
