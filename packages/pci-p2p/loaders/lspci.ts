/**
 * DOC: `lspci -tv` / `lspci -tvnn` trees
 *
 * The pciutils tree drawing (ls-tree.c) read back as a 2-D grammar: a
 * sibling list is a column of connectors (`+-` more follow, `\-` last, `--`
 * only child) with `|` in that column on the rows of a non-last sibling's
 * subtree; a host bus is `[dddd:bb]` (or `[bb]`) followed by `-` and its
 * list; a function is `ss.f`, followed either by two spaces and its name
 * (`[vvvv:dddd]` at the end with `-nn`) or, for a bridge, by `-[bb]` /
 * `-[bb-ss]`, `--` and its list. The reader walks forward only (each call
 * consumes at least one column or row), so malformed input fails with a
 * line:column error instead of looping.
 *
 * `lspci -tv` carries no class codes, capabilities or NUMA nodes: classes are
 * guessed from names (GPU, NIC, NVMe, ...), ACS is left as firmware leaves it
 * (off), NUMA nodes and the CPU come from options (the CPU is otherwise
 * guessed from the root complex vendor, with a warning).
 *
 * Locking: pure functions.
 *
 * @module
 */
import type { CpuInfo } from "../fabric.ts";
import type { FnSpec, MachineSpec } from "../builder.ts";
import { TopologyParseError } from "./xml.ts";

/** A function in an lspci tree. */
export interface LspciNode {
  /** Slot. */
  readonly slot: number;
  /** Function. */
  readonly fn: number;
  /** Name (empty for bridges and `lspci -t`). */
  readonly label: string;
  /** Vendor id from `-nn` or the vendor name. */
  readonly vendor: number | undefined;
  /** Device id from `-nn` or a "Device xxxx" name. */
  readonly device: number | undefined;
  /** Secondary bus of a bridge. */
  readonly secondary: number | undefined;
  /** Subordinate bus of a bridge. */
  readonly subordinate: number | undefined;
  /** Functions below a bridge. */
  readonly children: LspciNode[];
  /** 1-based line. */
  readonly line: number;
}

/** A root bus in an lspci tree. */
export interface LspciHost {
  /** Domain. */
  readonly domain: number;
  /** Root bus number. */
  readonly bus: number;
  /** Functions on the root bus. */
  readonly children: LspciNode[];
}

const VENDOR_BY_NAME: readonly [RegExp, number][] = [
  [/^Advanced Micro Devices/, 0x1022],
  [/^Intel Corporation/, 0x8086],
  [/^NVIDIA Corporation/, 0x10de],
  [/^Mellanox Technologies/, 0x15b3],
  [/^Samsung Electronics/, 0x144d],
  [/^Broadcom \/ LSI/, 0x1000],
  [/^PLX Technology/, 0x10b5],
  [/^ASPEED Technology/, 0x1a03],
  [/^Kingston Technology/, 0x2646],
  [/^ASMedia Technology/, 0x1b21],
  [/^HighPoint Technologies/, 0x1103],
  [/^Amazon\.com/, 0x1d0f],
  [/^Texas Instruments/, 0x104c],
];

/**
 * Parses an `lspci -tv` / `-tvnn` / `-t` tree.
 *
 * @example
 * ```ts
 * import { parseLspciTree } from "@dmalab/pci-p2p";
 * const hosts = parseLspciTree("-[0000:00]-+-00.0  Host\n           \\-01.0-[01]----00.0  NIC\n");
 * hosts[0]!.children[1]!.children[0]!.label; // "NIC"
 * ```
 */
export function parseLspciTree(text: string, source = "lspci"): LspciHost[] {
  const lines = text.split(/\r?\n/).map((l) => l.replace(/\s+$/, ""));
  let first = 0;
  while (first < lines.length && lines[first]!.trim() === "") first++;
  const err = (row: number, col: number, what: string): never => {
    throw new TopologyParseError(what, row + 1, col + 1, source);
  };
  if (first >= lines.length) err(0, 0, "empty lspci tree");
  const at = (row: number, col: number): string => lines[row]?.[col] ?? "";
  const hosts: LspciHost[] = [];

  type Parsed = { node: LspciNode; end: number };

  const parseList = <T>(
    row: number,
    col: number,
    item: (r: number, c: number) => { end: number; v: T },
  ): { items: T[]; end: number } => {
    const items: T[] = [];
    let r = row;
    for (;;) {
      const c = at(r, col);
      if (c !== "+" && c !== "\\" && c !== "-") {
        err(
          r,
          col,
          `expected a tree connector ('+-', '\\-' or '--'), found ${
            c === "" ? "end of line" : JSON.stringify(c)
          }`,
        );
      }
      if (at(r, col + 1) !== "-") err(r, col + 1, "expected '-' after the tree connector");
      const { end, v } = item(r, col + 2);
      items.push(v);
      const cont = c === "+" ? "|" : " ";
      for (let k = r + 1; k <= end; k++) {
        const ch = at(k, col);
        if (ch !== cont && !(cont === " " && ch === "")) {
          err(
            k,
            col,
            `expected ${JSON.stringify(cont)} continuing the list started at line ${row + 1}`,
          );
        }
      }
      if (c !== "+") return { items, end };
      r = end + 1;
      if (r >= lines.length) err(r - 1, col, "tree ends while a '+-' list expects another sibling");
    }
  };

  const DEV_RE = /^([0-9a-fA-F]{2})\.([0-7])/;
  const BRIDGE_RE = /^-\[([0-9a-fA-F]{2})(?:-([0-9a-fA-F]{2}))?\]/;
  const NN_RE = /\s\[([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\](?:\s*\(rev [0-9a-fA-F]+\))?$/;

  const parseDev = (row: number, col: number): { end: number; v: LspciNode } => {
    const line = lines[row]!;
    const m = DEV_RE.exec(line.slice(col));
    if (!m) {
      err(
        row,
        col,
        `expected a function 'ss.f', found ${JSON.stringify(line.slice(col, col + 8))}`,
      );
    }
    const slot = parseInt(m![1]!, 16);
    if (slot > 31) err(row, col, `slot ${m![1]} > 1f`);
    const fn = parseInt(m![2]!, 10);
    const rest = line.slice(col + 4);
    const b = BRIDGE_RE.exec(rest);
    if (b) {
      const secondary = parseInt(b[1]!, 16);
      const subordinate = b[2] === undefined ? secondary : parseInt(b[2], 16);
      if (subordinate < secondary) err(row, col + 5, `bus range [${b[1]}-${b[2]}] is reversed`);
      const after = col + 4 + b[0].length;
      const tail = line.slice(after);
      const node: LspciNode = {
        slot,
        fn,
        label: "",
        vendor: undefined,
        device: undefined,
        secondary,
        subordinate,
        children: [],
        line: row + 1,
      };
      if (tail === "--" || tail === "") return { end: row, v: node };
      if (!tail.startsWith("--")) err(row, after, "expected '--' after the bus range");
      const list = parseList(row, after + 2, parseDev);
      node.children.push(...list.items);
      return { end: list.end, v: node };
    }
    if (rest !== "" && !rest.startsWith("  ")) {
      err(row, col + 4, `expected two spaces and a name, or '-[bus]', after ${m![0]}`);
    }
    let label = rest.trim();
    let vendor: number | undefined;
    let device: number | undefined;
    const nn = NN_RE.exec(label);
    if (nn) {
      vendor = parseInt(nn[1]!, 16);
      device = parseInt(nn[2]!, 16);
      label = label.slice(0, nn.index).trim();
    } else {
      vendor = VENDOR_BY_NAME.find(([re]) => re.test(label))?.[1];
      const d = /\bDevice ([0-9a-fA-F]{4})\b/.exec(label);
      if (d) device = parseInt(d[1]!, 16);
    }
    return {
      end: row,
      v: {
        slot,
        fn,
        label,
        vendor,
        device,
        secondary: undefined,
        subordinate: undefined,
        children: [],
        line: row + 1,
      },
    };
  };

  const HOST_RE = /^\[(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2})\]/;
  const parseHost = (row: number, col: number): { end: number; v: LspciHost } => {
    const line = lines[row]!;
    const m = HOST_RE.exec(line.slice(col));
    if (!m) {
      err(
        row,
        col,
        `expected a root bus '[dddd:bb]', found ${JSON.stringify(line.slice(col, col + 10))}`,
      );
    }
    const domain = m![1] === undefined ? 0 : parseInt(m![1], 16);
    const bus = parseInt(m![2]!, 16);
    const after = col + m![0].length;
    const host: LspciHost = { domain, bus, children: [] };
    if (line.length <= after) return { end: row, v: host };
    if (at(row, after) !== "-") err(row, after, "expected '-' after the root bus");
    const list = parseList(row, after + 1, parseDev);
    host.children.push(...list.items);
    return { end: list.end, v: host };
  };

  const top = lines[first]!;
  if (top[0] !== "-") err(first, 0, "an lspci -t tree starts with '-'");
  let end: number;
  if (top[1] === "[") {
    const h = parseHost(first, 1);
    hosts.push(h.v);
    end = h.end;
  } else {
    const l = parseList(first, 1, parseHost);
    hosts.push(...l.items);
    end = l.end;
  }
  for (let r = end + 1; r < lines.length; r++) {
    if (lines[r]!.trim() !== "") err(r, 0, "text after the end of the tree");
  }
  return hosts;
}

/** Guesses a class code from an lspci name. */
export function classFromLabel(label: string, vendor: number | undefined): number {
  if (/NVMe|Non-Volatile memory/i.test(label)) return 0x010802;
  if (/RAID/i.test(label)) return 0x010400;
  if (/SATA|AHCI/i.test(label)) return 0x010601;
  if (/Audio/i.test(label)) return 0x040300;
  if (/ConnectX|InfiniBand|Infiniband/i.test(label) && !/Ethernet/i.test(label)) return 0x020700;
  if (/Ethernet|Network|ConnectX|Elastic Fabric|EFA/i.test(label)) return 0x020000;
  if (/SMBus/i.test(label)) return 0x0c0500;
  if (/USB/i.test(label)) return 0x0c0330;
  if (/LPC|ISA bridge/i.test(label)) return 0x060100;
  if (/NVSwitch/i.test(label)) return 0x068000;
  if (vendor === 0x10de) return 0x030000;
  if (/VGA|Graphics|Display/i.test(label)) return 0x030000;
  return 0xff0000;
}

/** Options for {@linkcode lspciToSpec}. */
export interface LspciSpecOptions {
  /** CPU; default guessed from the root complex vendor (with a warning). */
  cpu?: CpuInfo;
  /** NUMA node per root bus number (default 0). */
  numa?: (rootBus: number, domain: number) => number;
  /** Receives warnings. */
  warnings?: string[];
  /** Name. */
  name?: string;
}

/** Turns a parsed tree into a machine spec (BDFs as in the tree). */
export function lspciToSpec(hosts: readonly LspciHost[], opts: LspciSpecOptions = {}): MachineSpec {
  const conv = (n: LspciNode, onRoot: boolean): FnSpec => {
    const bridge = n.secondary !== undefined;
    const cls = bridge
      ? 0x060400
      : onRoot && n.slot === 0 && n.fn === 0
      ? 0x060000
      : classFromLabel(n.label, n.vendor);
    const spec: FnSpec = {
      slot: n.slot,
      fn: n.fn,
      classCode: cls,
      ...(n.vendor !== undefined ? { vendor: n.vendor } : {}),
      ...(n.device !== undefined ? { device: n.device } : {}),
      ...(n.label ? { label: n.label } : {}),
    };
    if (bridge) {
      spec.secondaryBus = n.secondary!;
      spec.subordinateBus = n.subordinate!;
      spec.children = n.children.map((c) => conv(c, false));
    } else if (!onRoot) {
      if (cls >> 16 === 0x03 && n.vendor === 0x10de) {
        spec.bars = [{ index: 0, size: "16M" }, { index: 1, size: "32G", prefetch: true }];
      } else if (cls >> 16 === 0x02) {
        spec.bars = [{ index: 0, size: "32M", prefetch: true }];
      }
    }
    return spec;
  };
  let cpu = opts.cpu;
  if (!cpu) {
    const rc = hosts.map((h) => h.children.find((c) => c.slot === 0 && c.fn === 0)?.vendor).find((
      v,
    ) => v !== undefined);
    if (rc === 0x1022) {
      cpu = { arch: "x86_64", vendor: "AMD", family: 0x19, model: 0 };
      opts.warnings?.push(
        "CPU not in an lspci tree: assuming AMD family 0x19 from the AMD root complex (pass a CPU to override)",
      );
    } else if (rc === 0x8086) {
      cpu = { arch: "x86_64", vendor: "Intel", family: 6, model: 0 };
      opts.warnings?.push(
        "CPU not in an lspci tree: assuming Intel family 6 from the Intel root complex (pass a CPU to override)",
      );
    } else {
      opts.warnings?.push(
        "CPU unknown: cpu_supports_p2pdma() is false; host-bridge paths depend on the whitelist",
      );
    }
  }
  return {
    name: opts.name ?? "lspci",
    ...(cpu ? { cpu } : {}),
    hostBridges: hosts.map((h) => ({
      domain: h.domain,
      bus: h.bus,
      numaNode: opts.numa?.(h.bus, h.domain) ?? 0,
      devices: h.children.map((c) => conv(c, true)),
    })),
  };
}
