/**
 * DOC: sysfs PCI trees
 *
 * Reads a directory shaped like sysfs: either the device hierarchy
 * (`devices/pci0000:00/0000:00:01.1/0000:01:00.0/...`, or a folder holding
 * `pciDDDD:BB` directories) or a flat `bus/pci/devices` folder of symlinks
 * into it. Per function: `class`, `vendor`, `device`, `resource` (BARs 0-5:
 * start, end, flags with IORESOURCE_MEM 0x200, IO 0x100, PREFETCH 0x2000,
 * MEM_64 0x100000), `current_link_speed`/`_width`, `max_link_speed`/`_width`,
 * `numa_node`, `secondary_bus_number`, `sriov_totalvfs`, and `config` when
 * present: the PCIe capability gives the port type, extended capabilities
 * give ACS (capability/control), ATS, PASID and PRI. Every value is checked;
 * a bad one fails with the file path. Reading only walks the directories
 * once, so cycles through symlinks cannot make it loop.
 *
 * Locking: not model code (reads files before a world runs); synchronous.
 *
 * @module
 */
import type { CpuInfo } from "../fabric.ts";
import type { BarSpec, FnSpec, MachineSpec } from "../builder.ts";
import type { PciDevType } from "../constants.ts";

const BDF_RE = /^([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;
const HOST_RE = /^pci([0-9a-f]{4,8}):([0-9a-f]{2})$/;

/** A sysfs loading error naming the file. */
export class SysfsParseError extends Error {
  /** The file or directory. */
  readonly path: string;
  /** `what` about `path`. */
  constructor(path: string, what: string) {
    super(`${path}: ${what}`);
    this.name = "SysfsParseError";
    this.path = path;
  }
}

interface Entry {
  bdf: string;
  dir: string;
  host: string;
  parent: string | null;
}

function join(a: string, b: string): string {
  return a.endsWith("/") ? a + b : `${a}/${b}`;
}

function isDir(p: string): boolean {
  try {
    return Deno.statSync(p).isDirectory;
  } catch {
    return false;
  }
}

function readText(dir: string, name: string): string | undefined {
  try {
    return Deno.readTextFileSync(join(dir, name)).trim();
  } catch {
    return undefined;
  }
}

function hexAttr(dir: string, name: string): number | undefined {
  const t = readText(dir, name);
  if (t === undefined) return undefined;
  if (!/^0x[0-9a-f]+$/i.test(t)) {
    throw new SysfsParseError(
      join(dir, name),
      `expected a hex number, found ${JSON.stringify(t.slice(0, 30))}`,
    );
  }
  return parseInt(t, 16);
}

function intAttr(dir: string, name: string): number | undefined {
  const t = readText(dir, name);
  if (t === undefined) return undefined;
  if (!/^-?\d+$/.test(t)) {
    throw new SysfsParseError(
      join(dir, name),
      `expected an integer, found ${JSON.stringify(t.slice(0, 30))}`,
    );
  }
  return parseInt(t, 10);
}

const SPEED_GEN: readonly [string, number][] = [
  ["2.5 GT/s", 1],
  ["5.0 GT/s", 2],
  ["5 GT/s", 2],
  ["8.0 GT/s", 3],
  ["8 GT/s", 3],
  ["16.0 GT/s", 4],
  ["16 GT/s", 4],
  ["32.0 GT/s", 5],
  ["32 GT/s", 5],
  ["64.0 GT/s", 6],
  ["64 GT/s", 6],
];

function speedGen(dir: string, name: string): number | undefined {
  const t = readText(dir, name);
  if (t === undefined || t.startsWith("Unknown")) return undefined;
  const g = SPEED_GEN.find(([k]) => t.startsWith(k));
  if (!g) {
    throw new SysfsParseError(
      join(dir, name),
      `unknown link speed ${JSON.stringify(t.slice(0, 30))}`,
    );
  }
  return g[1];
}

/** What the config space tells. */
export interface ConfigCaps {
  /** PCIe port type, when a PCIe capability exists. */
  type?: PciDevType;
  /** ACS capability/control. */
  acs?: { cap: number; ctrl: number };
  /** ATS. */
  ats?: { queueDepth: number; pageAligned: boolean; enabled: boolean; stu: number };
  /** PASID. */
  pasid?: { width: number; features: number };
  /** PRI. */
  pri?: { maxRequests: number };
}

const PCIE_TYPES: Readonly<Record<number, PciDevType>> = {
  0: "endpoint",
  1: "legacy_endpoint",
  4: "root_port",
  5: "switch_upstream",
  6: "switch_downstream",
  7: "pci_bridge",
  8: "pci_bridge",
  9: "rc_endpoint",
};

/** Parses capabilities out of a config-space dump (64, 256 or 4096 bytes). */
export function parseConfigCaps(cfg: Uint8Array): ConfigCaps {
  const out: ConfigCaps = {};
  const u16 = (o: number) => o + 1 < cfg.length ? cfg[o]! | (cfg[o + 1]! << 8) : 0;
  const u32 = (o: number) => o + 3 < cfg.length ? (u16(o) | (u16(o + 2) << 16)) >>> 0 : 0;
  if (cfg.length >= 64 && (u16(6) & 0x10)) {
    let p = cfg[0x34]! & 0xfc;
    for (let n = 0; p >= 0x40 && n < 48; n++) {
      const id = cfg[p]!;
      if (id === 0x10) {
        const t = (u16(p + 2) >> 4) & 0xf;
        const type = PCIE_TYPES[t];
        if (type) out.type = type;
      }
      p = (cfg[p + 1] ?? 0) & 0xfc;
    }
  }
  if (cfg.length >= 0x104) {
    let p = 0x100;
    for (let n = 0; p >= 0x100 && n < 96; n++) {
      const h = u32(p);
      if (h === 0 || h === 0xffffffff) break;
      const id = h & 0xffff;
      if (id === 0x0d) out.acs = { cap: u16(p + 4) & 0x7f, ctrl: u16(p + 6) & 0x7f };
      if (id === 0x0f) {
        const cap = u16(p + 4);
        const ctrl = u16(p + 6);
        out.ats = {
          queueDepth: cap & 0x1f,
          pageAligned: (cap & 0x20) !== 0,
          enabled: (ctrl & 0x8000) !== 0,
          stu: (ctrl & 0x1f) + 12,
        };
      }
      if (id === 0x1b) {
        const cap = u16(p + 4);
        out.pasid = { width: (cap >> 8) & 0x1f, features: cap & 0x6 };
      }
      if (id === 0x13) out.pri = { maxRequests: u32(p + 8) };
      p = (h >>> 20) & 0xffc;
    }
  }
  return out;
}

function collect(root: string): Entry[] {
  const entries: Entry[] = [];
  const seen = new Set<string>();
  const walk = (dir: string, host: string, parent: string | null) => {
    let names: string[];
    try {
      names = [...Deno.readDirSync(dir)].filter((e) => e.isDirectory && BDF_RE.test(e.name)).map((
        e,
      ) => e.name).sort();
    } catch (e) {
      throw new SysfsParseError(dir, `cannot read directory (${(e as Error).message})`);
    }
    for (const n of names) {
      if (seen.has(n)) continue;
      seen.add(n);
      entries.push({ bdf: n, dir: join(dir, n), host, parent });
      walk(join(dir, n), host, n);
    }
  };
  const hostDirsIn = (dir: string) => {
    try {
      return [...Deno.readDirSync(dir)].filter((e) => HOST_RE.test(e.name)).map((e) => e.name)
        .sort();
    } catch {
      return [];
    }
  };
  let base = root;
  if (isDir(join(root, "devices")) && hostDirsIn(join(root, "devices")).length) {
    base = join(root, "devices");
  }
  const hosts = hostDirsIn(base);
  if (hosts.length > 0) {
    for (const h of hosts) walk(join(base, h), h, null);
    return entries;
  }
  // flat bus/pci/devices: symlinks into the hierarchy
  let names: string[];
  try {
    names = [...Deno.readDirSync(root)].map((e) => e.name).filter((n) => BDF_RE.test(n)).sort();
  } catch (e) {
    throw new SysfsParseError(root, `cannot read directory (${(e as Error).message})`);
  }
  if (names.length === 0) {
    throw new SysfsParseError(root, "no pciDDDD:BB host directories and no DDDD:BB:SS.F entries");
  }
  for (const n of names) {
    let real: string;
    try {
      real = Deno.realPathSync(join(root, n));
    } catch (e) {
      throw new SysfsParseError(join(root, n), `dangling link (${(e as Error).message})`);
    }
    const parts = real.split("/");
    const hi = parts.findIndex((p) => HOST_RE.test(p));
    if (hi < 0) {
      throw new SysfsParseError(
        join(root, n),
        `resolves to ${real}, which is not below a pciDDDD:BB directory`,
      );
    }
    const chain = parts.slice(hi + 1).filter((p) => BDF_RE.test(p));
    if (chain[chain.length - 1] !== n) {
      throw new SysfsParseError(join(root, n), `resolves to ${real}, which does not end in ${n}`);
    }
    entries.push({
      bdf: n,
      dir: real,
      host: parts[hi]!,
      parent: chain.length > 1 ? chain[chain.length - 2]! : null,
    });
  }
  return entries;
}

/** Options for {@linkcode loadSysfsTree}. */
export interface SysfsOptions {
  /** CPU (sysfs PCI trees do not say). */
  cpu?: CpuInfo;
  /** Name. */
  name?: string;
}

/** Reads a sysfs-shaped directory into a machine spec (BDFs as on disk). */
export function loadSysfsTree(root: string, opts: SysfsOptions = {}): MachineSpec {
  const entries = collect(root);
  const byBdf = new Map(entries.map((e) => [e.bdf, e]));
  const kids = new Map<string | null, Entry[]>();
  for (const e of entries) {
    if (e.parent !== null && !byBdf.has(e.parent)) {
      throw new SysfsParseError(e.dir, `parent ${e.parent} is missing`);
    }
    const key = e.parent ?? `host:${e.host}`;
    const list = kids.get(key) ?? [];
    list.push(e);
    kids.set(key, list);
  }
  const conv = (e: Entry): FnSpec => {
    const m = BDF_RE.exec(e.bdf)!;
    const classCode = hexAttr(e.dir, "class");
    const vendor = hexAttr(e.dir, "vendor");
    const device = hexAttr(e.dir, "device");
    const bars: BarSpec[] = [];
    const res = readText(e.dir, "resource");
    if (res !== undefined) {
      res.split("\n").slice(0, 6).forEach((line, i) => {
        const f = line.trim().split(/\s+/);
        if (f.length !== 3 || !f.every((x) => /^0x[0-9a-f]+$/i.test(x))) {
          throw new SysfsParseError(
            join(e.dir, "resource"),
            `line ${i + 1}: expected "start end flags" in hex`,
          );
        }
        const [s, en, fl] = f.map((x) => BigInt(x));
        if (en! <= s! || s === 0n) return;
        const flags = Number(fl!);
        if (!(flags & 0x200)) return; // IO BARs are not modelled for P2P
        const size = en! - s! + 1n;
        if ((size & (size - 1n)) !== 0n) {
          throw new SysfsParseError(
            join(e.dir, "resource"),
            `line ${i + 1}: size ${size} not a power of two`,
          );
        }
        bars.push({
          index: i,
          size: `0x${size.toString(16)}`,
          prefetch: (flags & 0x2000) !== 0,
          is64: (flags & 0x100000) !== 0,
          start: `0x${s!.toString(16)}`,
        });
      });
    }
    const gen = speedGen(e.dir, "current_link_speed");
    const width = intAttr(e.dir, "current_link_width");
    const capGen = speedGen(e.dir, "max_link_speed");
    const capWidth = intAttr(e.dir, "max_link_width");
    const numa = intAttr(e.dir, "numa_node");
    let caps: ConfigCaps = {};
    try {
      caps = parseConfigCaps(Deno.readFileSync(join(e.dir, "config")));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    const children = kids.get(e.bdf) ?? [];
    let physfn: string | undefined;
    try {
      const target = Deno.readLinkSync(join(e.dir, "physfn"));
      physfn = target.split("/").filter((x) => x !== "").pop();
      if (!physfn || !BDF_RE.test(physfn)) {
        throw new SysfsParseError(
          join(e.dir, "physfn"),
          `link ${target} does not name a PCI function`,
        );
      }
    } catch (err) {
      if (err instanceof SysfsParseError) throw err;
    }
    const totalVfs = intAttr(e.dir, "sriov_totalvfs");
    const sec = intAttr(e.dir, "secondary_bus_number");
    const bridge = (classCode !== undefined && classCode >> 8 === 0x0604) || children.length > 0;
    const spec: FnSpec = {
      slot: parseInt(m[3]!, 16),
      fn: parseInt(m[4]!, 10),
      ...(classCode !== undefined ? { classCode } : {}),
      ...(vendor !== undefined ? { vendor } : {}),
      ...(device !== undefined ? { device } : {}),
      ...(caps.type ? { type: caps.type } : {}),
      ...(bars.length ? { bars } : {}),
      ...(numa !== undefined && numa >= 0 ? { numaNode: numa } : {}),
    };
    if (gen !== undefined && width !== undefined && width > 0) {
      spec.link = { gen, width, capGen: capGen ?? gen, capWidth: capWidth ?? width };
    }
    if (caps.acs) spec.acs = { cap: caps.acs.cap, ctrl: caps.acs.ctrl };
    else if (caps.type !== undefined) spec.acs = false;
    if (caps.ats) spec.ats = { queueDepth: caps.ats.queueDepth, pageAligned: caps.ats.pageAligned };
    if (caps.pasid) spec.pasid = caps.pasid;
    if (caps.pri) spec.pri = caps.pri;
    if (physfn !== undefined) spec.physfn = physfn;
    if (totalVfs !== undefined && totalVfs > 0) spec.sriov = { totalVfs };
    if (bridge) {
      const childBus = children.length
        ? parseInt(BDF_RE.exec(children[0]!.bdf)![2]!, 16)
        : undefined;
      const s = sec ?? childBus;
      if (s !== undefined) spec.secondaryBus = s;
      spec.children = children.map(conv);
    }
    return spec;
  };
  const hosts = [...new Set(entries.map((e) => e.host))].sort();
  return {
    name: opts.name ?? "sysfs",
    ...(opts.cpu ? { cpu: opts.cpu } : {}),
    hostBridges: hosts.map((h) => {
      const m = HOST_RE.exec(h)!;
      const list = kids.get(`host:${h}`) ?? [];
      const numa = list.map((e) => intAttr(e.dir, "numa_node")).find((x) =>
        x !== undefined && x >= 0
      );
      return {
        domain: parseInt(m[1]!, 16),
        bus: parseInt(m[2]!, 16),
        numaNode: numa ?? 0,
        devices: list.map(conv),
      };
    }),
  };
}
