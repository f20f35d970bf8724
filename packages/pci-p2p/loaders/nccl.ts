/**
 * DOC: NCCL topology XML (NCCL_TOPO_FILE)
 *
 * Reads `<system version="1">` files as NCCL does (src/graph/xml.cc,
 * topo.cc): `<cpu>` per NUMA node (vendor, familyid, modelid), nested
 * `<pci>` elements (class 0x0604xx = switch, prefix 0x03 = GPU, 0x02 = NIC,
 * 0x068000 = NVSwitch), `<gpu>` with `<nvlink>` children, `<nic>`/`<net>`.
 * Partial files are normal (NCCL fills the rest from sysfs): a GPU/NIC
 * `<pci>` without its `<gpu>`/`<nic>` child is a placeholder. Odd content
 * (bogus link attributes, self-referencing NVLinks, a bridge slower than
 * what is below it, unknown elements) is loaded and reported in `warnings`.
 *
 * Two views come out: {@linkcode ncclTopoToSpec} turns the file into a
 * machine (one host bridge per `<cpu>`, a Root Port above each top-level
 * `<pci>`, a switch with one downstream port per child for every bridge
 * element; NCCL collapses exactly these levels when it writes the file), and
 * {@linkcode ncclPath} computes NCCL's path type and bandwidth between two
 * elements (PIX, PXB, PHB, SYS; `width * gen / 80` GB/s per PCI link).
 *
 * Locking: pure functions.
 *
 * @module
 */
import type { CpuInfo } from "../fabric.ts";
import { parseBdf } from "../fabric.ts";
import type { FnSpec, HostBridgeSpec, LinkSpec, MachineSpec } from "../builder.ts";
import { parseXml, TopologyParseError, type XmlElement } from "./xml.ts";

/** NCCL node kinds used here. */
export type NcclNodeKind = "cpu" | "pci" | "gpu" | "nic" | "nvs";

/** A node of the NCCL topology tree. */
export interface NcclNode {
  /** Kind. */
  readonly kind: NcclNodeKind;
  /** Bus id for PCI-based nodes, `cpu<N>` for CPUs, the net name for socket NICs. */
  readonly id: string;
  /** Parent (null for CPUs). */
  readonly parent: NcclNode | null;
  /** Children. */
  readonly children: NcclNode[];
  /** GB/s of the link to the parent (NCCL's figure). */
  readonly bw: number;
  /** Class code (0 when absent). */
  readonly classCode: number;
  /** Link generation/width parsed from the attributes (null when unknown). */
  readonly link: LinkSpec | null;
  /** Vendor/device ids when present. */
  readonly vendor: number | undefined;
  /** Device id when present. */
  readonly device: number | undefined;
  /** NUMA node of the CPU above. */
  readonly numa: number;
  /** Net names (NICs). */
  readonly nets: string[];
  /** NVLinks (GPUs): target bus id, count, target class. */
  readonly nvlinks: { target: string; count: number; tclass: number }[];
  /** Source line. */
  readonly line: number;
  /** True when the file gives no `<gpu>`/`<nic>` child (NCCL fills it in). */
  readonly placeholder: boolean;
  /** CPU mask of a `<cpu>` (`"00000000,00ffffff"`), "" otherwise. */
  readonly affinity: string;
}

/** A loaded NCCL topology. */
export interface NcclTopo {
  /** CPU nodes in file order. */
  readonly cpus: NcclNode[];
  /** All nodes by id. */
  readonly byId: ReadonlyMap<string, NcclNode>;
  /** CPU identity of the first `<cpu>` (vendor/family/model). */
  readonly cpu: CpuInfo | null;
  /** GB/s of a CPU-CPU (SYS) link for this CPU. */
  readonly sysBw: number;
  /** Odd things noticed. */
  readonly warnings: string[];
}

/** `LOC_BW`. */
export const NCCL_LOC_BW = 5000;

const PCI_GEN: readonly [string, number][] = [
  ["2.5 GT/s", 15],
  ["5 GT/s", 30],
  ["8 GT/s", 60],
  ["16 GT/s", 120],
  ["32 GT/s", 240],
  ["2.5 GT/s PCIe", 15],
  ["5.0 GT/s PCIe", 30],
  ["8.0 GT/s PCIe", 60],
  ["16.0 GT/s PCIe", 120],
  ["32.0 GT/s PCIe", 240],
  ["64.0 GT/s PCIe", 480],
];

/** NCCL's `kvDictPciGen` lookup: prefix match, default 60. */
export function ncclPciGen(speed: string | undefined): { value: number; known: boolean } {
  if (speed !== undefined) {
    for (const [k, v] of PCI_GEN) if (speed.startsWith(k)) return { value: v, known: true };
  }
  return { value: 60, known: false };
}

const GEN_OF: Readonly<Record<number, number>> = { 15: 1, 30: 2, 60: 3, 120: 4, 240: 5, 480: 6 };

function num(v: string | undefined, el: XmlElement, attr: string, src: string): number | undefined {
  if (v === undefined || v.trim() === "") return undefined;
  const s = v.trim();
  const x = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^-?\d+$/.test(s) ? parseInt(s, 10) : NaN;
  if (Number.isNaN(x)) {
    throw new TopologyParseError(
      `<${el.name}> attribute ${attr}="${v}" is not a number`,
      el.line,
      el.col,
      src,
    );
  }
  return x;
}

function cpuFrom(el: XmlElement, src: string): CpuInfo {
  const v = (el.attrs.vendor ?? "").trim();
  const vendor: CpuInfo["vendor"] = v === "AuthenticAMD"
    ? "AMD"
    : v === "GenuineIntel"
    ? "Intel"
    : v === "CentaurHauls" || v === "Shanghai"
    ? "Zhaoxin"
    : v === "HygonGenuine"
    ? "Hygon"
    : "other";
  const arch = el.attrs.arch === "arm64" ? "arm64" : el.attrs.arch === "ppc64" ? "ppc64" : "x86_64";
  return {
    arch,
    vendor,
    family: num(el.attrs.familyid, el, "familyid", src) ?? 0,
    model: num(el.attrs.modelid, el, "modelid", src) ?? 0,
  };
}

/** NCCL's inter-CPU bandwidth for a CPU (topo.cc `ncclTopoGetInterCpuBw`). */
export function ncclSysBw(cpu: CpuInfo | null): number {
  if (!cpu) return NCCL_LOC_BW;
  if (cpu.arch === "arm64") return 6;
  if (cpu.arch === "ppc64") return 32;
  if (cpu.vendor === "Intel") {
    if (cpu.model >= 0xcf) return 40;
    if (cpu.model >= 0x8f) return 22;
    if (cpu.model >= 0x55) return 10;
    return 6;
  }
  if (cpu.vendor === "AMD") return 16;
  if (cpu.vendor === "Zhaoxin") return 6;
  return NCCL_LOC_BW;
}

/**
 * Parses an NCCL topology file. Throws {@linkcode TopologyParseError} with
 * line and column on malformed XML or invalid values.
 */
export function parseNcclTopo(text: string, source = "topology.xml"): NcclTopo {
  const root = parseXml(text, source);
  if (root.name === "graphs") {
    throw new TopologyParseError(
      "this is an NCCL_GRAPH_FILE (<graphs>), not a topology (<system>)",
      root.line,
      root.col,
      source,
    );
  }
  if (root.name !== "system") {
    throw new TopologyParseError(
      `root element is <${root.name}>, expected <system>`,
      root.line,
      root.col,
      source,
    );
  }
  if (root.attrs.version !== undefined && root.attrs.version !== "1") {
    throw new TopologyParseError(
      `<system version="${root.attrs.version}">: only version 1 is known`,
      root.line,
      root.col,
      source,
    );
  }
  const warnings: string[] = [];
  const byId = new Map<string, NcclNode>();
  const cpus: NcclNode[] = [];
  let cpu: CpuInfo | null = null;
  const add = (n: NcclNode, el: XmlElement) => {
    const prev = byId.get(n.id);
    if (prev) {
      throw new TopologyParseError(
        `duplicate busid ${n.id} (first at line ${prev.line})`,
        el.line,
        el.col,
        source,
      );
    }
    byId.set(n.id, n);
  };
  const warnAt = (el: XmlElement, w: string) => warnings.push(`${source}:${el.line}: ${w}`);

  const walkPci = (el: XmlElement, parent: NcclNode, numa: number): void => {
    const busid = el.attrs.busid;
    if (busid === undefined) {
      throw new TopologyParseError("<pci> without busid", el.line, el.col, source);
    }
    try {
      parseBdf(busid);
    } catch (e) {
      throw new TopologyParseError((e as Error).message, el.line, el.col, source);
    }
    const id = busid.toLowerCase();
    const cls = num(el.attrs.class, el, "class", source);
    const gpuEl = el.children.find((c) => c.name === "gpu");
    const nicEl = el.children.find((c) => c.name === "nic");
    const pciKids = el.children.filter((c) => c.name === "pci");
    let kind: NcclNodeKind;
    if (cls === undefined) {
      kind = gpuEl ? "gpu" : nicEl ? "nic" : "pci";
      if (!gpuEl && !nicEl && pciKids.length === 0) {
        warnAt(
          el,
          `<pci busid="${busid}"> has no class: NCCL reads it from sysfs at run time; loaded as a bridge`,
        );
      }
    } else if (cls >> 8 === 0x0604) kind = "pci";
    else if (cls === 0x068000) kind = "nvs";
    else if (cls >> 16 === 0x03) kind = "gpu";
    else if (cls >> 16 === 0x02) kind = "nic";
    else kind = "pci";
    const speed = el.attrs.link_speed;
    const gen = ncclPciGen(speed);
    const widthRaw = num(el.attrs.link_width, el, "link_width", source);
    let width = widthRaw ?? 16;
    if ((speed !== undefined && !gen.known) || widthRaw === 0) {
      warnAt(
        el,
        `${busid}: bogus link attributes (link_speed="${speed ?? ""}", link_width="${
          el.attrs.link_width ?? ""
        }"); NCCL assumes ${gen.known ? "" : "8 GT/s "}${widthRaw === 0 ? "x16" : ""}`.trim(),
      );
    }
    if (width === 0) width = 16;
    const hasLinkAttrs = speed !== undefined || widthRaw !== undefined;
    const bw = (width * gen.value) / 80;
    const link: LinkSpec | null = hasLinkAttrs ? { gen: GEN_OF[gen.value]!, width } : null;
    if (
      link && parent.link && parent.kind === "pci" &&
      (link.gen > parent.link.gen || link.width > parent.link.width)
    ) {
      warnAt(
        el,
        `${busid} reports Gen${link.gen} x${link.width} below ${parent.id}, which reports Gen${parent.link.gen} x${parent.link.width}`,
      );
    }
    const node: NcclNode = {
      kind,
      id,
      parent,
      children: [],
      bw,
      classCode: cls ?? 0,
      link,
      vendor: num(el.attrs.vendor, el, "vendor", source),
      device: num(el.attrs.device, el, "device", source),
      numa,
      nets: [],
      nvlinks: [],
      line: el.line,
      placeholder: (kind === "gpu" && !gpuEl) || (kind === "nic" && !nicEl),
      affinity: "",
    };
    add(node, el);
    parent.children.push(node);
    for (const c of el.children) {
      if (c.name === "pci") walkPci(c, node, numa);
      else if (c.name === "gpu") {
        for (const l of c.children) {
          if (l.name !== "nvlink") continue;
          const target = (l.attrs.target ?? "").toLowerCase();
          const count = num(l.attrs.count, l, "count", source) ?? 1;
          if (target === id) {
            warnAt(
              l,
              `${busid}: <nvlink> targets the GPU itself (count ${count}); ignored for paths`,
            );
          }
          node.nvlinks.push({
            target,
            count,
            tclass: num(l.attrs.tclass, l, "tclass", source) ?? 0,
          });
        }
      } else if (c.name === "nic") {
        for (const net of c.children) if (net.name === "net") node.nets.push(net.attrs.name ?? "");
      } else if (c.name === "pcilink" || c.name === "c2c") {
        // Broadcom partner links and C2C: no PCIe path meaning here
      } else warnAt(c, `unknown element <${c.name}> inside <pci busid="${busid}">`);
    }
  };

  root.children.forEach((c, i) => {
    if (c.name !== "cpu") {
      warnAt(c, `unknown element <${c.name}> inside <system>`);
      return;
    }
    const numa = num(c.attrs.numaid, c, "numaid", source);
    if (numa === undefined) {
      throw new TopologyParseError("<cpu> without numaid", c.line, c.col, source);
    }
    const info = c.attrs.vendor !== undefined ? cpuFrom(c, source) : null;
    if (info && !cpu) cpu = info;
    const node: NcclNode = {
      kind: "cpu",
      id: `cpu${numa}`,
      parent: null,
      children: [],
      bw: NCCL_LOC_BW,
      classCode: 0,
      link: null,
      vendor: undefined,
      device: undefined,
      numa,
      nets: [],
      nvlinks: [],
      line: c.line,
      placeholder: false,
      affinity: /^[0-9a-f,]+$/i.test(c.attrs.affinity ?? "") ? c.attrs.affinity! : "",
    };
    add(node, c);
    cpus.push(node);
    for (const k of c.children) {
      if (k.name === "pci") walkPci(k, node, numa);
      else if (k.name === "nic") {
        k.children.filter((x) => x.name === "net").forEach((net, j) => {
          const name = net.attrs.name ?? `nic${i}.${j}`;
          const nicNode: NcclNode = {
            kind: "nic",
            id: name,
            parent: node,
            children: [],
            bw: NCCL_LOC_BW,
            classCode: 0x020000,
            link: null,
            vendor: undefined,
            device: undefined,
            numa,
            nets: [name],
            nvlinks: [],
            line: net.line,
            placeholder: false,
            affinity: "",
          };
          add(nicNode, net);
          node.children.push(nicNode);
        });
      } else warnAt(k, `unknown element <${k.name}> inside <cpu>`);
    }
  });
  if (cpus.length === 0) {
    throw new TopologyParseError("<system> has no <cpu>", root.line, root.col, source);
  }
  return { cpus, byId, cpu, sysBw: ncclSysBw(cpu), warnings };
}

/** NCCL path types, numbered as src/include/graph.h. */
export const NCCL_PATH = {
  LOC: 0,
  NVL: 1,
  NVB: 2,
  C2C: 3,
  PIX: 4,
  PXB: 5,
  P2C: 6,
  PXN: 7,
  PHB: 8,
  SYS: 9,
  NET: 10,
  DIS: 11,
} as const;

/** Name of an NCCL path type. */
export function ncclPathName(t: number): string {
  return Object.entries(NCCL_PATH).find(([, v]) => v === t)?.[0] ?? `PATH_${t}`;
}

/**
 * NCCL's PCIe path between two nodes (NVLink ignored): type = max over hops
 * (PCI link: PIX; between two PCI switch nodes: PXB; touching a CPU: PHB;
 * CPU to CPU: SYS) and bandwidth = min over links.
 */
export function ncclPath(
  topo: NcclTopo,
  a: string,
  b: string,
): { type: number; bw: number; hops: number } {
  const na = topo.byId.get(a.toLowerCase());
  const nb = topo.byId.get(b.toLowerCase());
  if (!na || !nb) throw new Error(`ncclPath: unknown node ${!na ? a : b}`);
  if (na === nb) return { type: NCCL_PATH.LOC, bw: NCCL_LOC_BW, hops: 0 };
  const up = (n: NcclNode) => {
    const out: NcclNode[] = [];
    for (let x: NcclNode | null = n; x; x = x.parent) out.push(x);
    return out;
  };
  const ca = up(na);
  const cb = up(nb);
  const common = ca.find((x) => cb.includes(x));
  let type: number = NCCL_PATH.LOC;
  let bw = Infinity;
  let hops = 0;
  const hop = (child: NcclNode) => {
    const p = child.parent!;
    const t = p.kind === "cpu" || child.kind === "cpu"
      ? NCCL_PATH.PHB
      : child.kind === "pci" && p.kind === "pci"
      ? NCCL_PATH.PXB
      : NCCL_PATH.PIX;
    type = Math.max(type, t);
    bw = Math.min(bw, child.bw);
    hops++;
  };
  const walk = (chain: NcclNode[], stop: NcclNode) => {
    for (const x of chain) {
      if (x === stop) break;
      hop(x);
    }
  };
  if (common) {
    walk(ca, common);
    walk(cb, common);
  } else {
    walk(ca, ca[ca.length - 1]!);
    walk(cb, cb[cb.length - 1]!);
    type = Math.max(type, NCCL_PATH.SYS);
    bw = Math.min(bw, topo.sysBw);
    hops++;
  }
  return { type, bw, hops };
}

/** Domain used for the Root Ports and downstream ports NCCL files leave out. */
export const NCCL_SYNTH_DOMAIN = 0x7000;

/**
 * Turns a loaded NCCL topology into a machine spec. Elements keep their
 * bus ids as device names; the Root Ports and switch downstream ports NCCL
 * collapses are synthesized in domain 0x7000 + cpu index.
 */
export function ncclTopoToSpec(topo: NcclTopo, name = "nccl"): MachineSpec {
  const conv = (n: NcclNode): FnSpec => {
    const link = n.link ?? undefined;
    const base = {
      bdf: n.id,
      ...(n.vendor !== undefined
        ? { vendor: n.vendor }
        : n.kind === "gpu"
        ? { vendor: 0x10de }
        : {}),
      ...(n.device !== undefined ? { device: n.device } : {}),
      ...(link ? { link } : {}),
      label: labelFor(n),
    };
    const pciKids = n.children.filter((c) => c.kind !== "cpu");
    if (
      n.kind === "pci" && (pciKids.length > 0 || n.classCode >> 8 === 0x0604 || n.classCode === 0)
    ) {
      return {
        ...base,
        type: "switch_upstream",
        classCode: 0x060400,
        acs: false,
        children: pciKids.map((c, k) => ({
          type: "switch_downstream" as const,
          slot: (k >> 3) % 32,
          fn: k & 7,
          ...(c.link ? { link: c.link } : {}),
          label: "(downstream port, not in file)",
          children: [conv(c)],
        })),
      };
    }
    return {
      ...base,
      type: "endpoint",
      classCode: n.classCode || 0xff0000,
      bars: n.kind === "gpu"
        ? [{ index: 0, size: "16M" }, { index: 1, size: "32G", prefetch: true }]
        : [{ index: 0, size: "32M", prefetch: true }],
      ...(n.kind === "gpu" || n.kind === "nic" ? { ats: true } : {}),
    };
  };
  const rcVendor = topo.cpu?.vendor === "AMD"
    ? 0x1022
    : topo.cpu?.vendor === "Intel"
    ? 0x8086
    : 0x1af4;
  const hostBridges: HostBridgeSpec[] = topo.cpus.map((c, i) => ({
    domain: NCCL_SYNTH_DOMAIN + i,
    bus: 0,
    numaNode: c.numa,
    devices: c.children.filter((k) => !(k.kind === "nic" && k.bw === NCCL_LOC_BW)).map((k, j) => ({
      type: "root_port" as const,
      vendor: rcVendor,
      slot: ((j >> 3) + 1) % 32,
      fn: j & 7,
      ...(k.link ? { link: k.link } : {}),
      label: "(root port, not in file)",
      children: [conv(k)],
    })),
  }));
  const nvlinks: NonNullable<MachineSpec["nvlinks"]> = [];
  for (const n of topo.byId.values()) {
    for (const l of n.nvlinks) {
      if (l.target === n.id) continue;
      nvlinks.push({ a: n.id, b: l.target, count: l.count, viaSwitch: l.tclass === 0x068000 });
    }
  }
  const numaCpus: Record<string, string> = {};
  for (const c of topo.cpus) if (c.affinity) numaCpus[String(c.numa)] = cpuList(c.affinity);
  return {
    name,
    ...(topo.cpu ? { cpu: topo.cpu } : {}),
    hostBridges,
    nvlinks,
    numaCpus,
  };
}

function labelFor(n: NcclNode): string {
  const what = n.kind === "gpu"
    ? "GPU"
    : n.kind === "nic"
    ? "NIC"
    : n.kind === "nvs"
    ? "NVSwitch"
    : "PCI bridge";
  const ids = n.vendor !== undefined ? ` [${hex4(n.vendor)}:${hex4(n.device ?? 0)}]` : "";
  const nets = n.nets.length ? ` (net ${n.nets.join(", ")})` : "";
  return `${what}${n.placeholder ? " (placeholder)" : ""}${ids}${nets}`;
}

function hex4(x: number): string {
  return x.toString(16).padStart(4, "0");
}

/** A sysfs-style CPU mask (`"000000ff,ffff0000"`, 32-bit words, most significant first) as a list (`"16-39"`). */
export function cpuList(mask: string): string {
  const words = mask.split(",").reverse();
  const cpus: number[] = [];
  words.forEach((w, i) => {
    const v = parseInt(w || "0", 16);
    for (let b = 0; b < 32; b++) if ((v >>> b) & 1) cpus.push(i * 32 + b);
  });
  const parts: string[] = [];
  for (let i = 0; i < cpus.length;) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}
