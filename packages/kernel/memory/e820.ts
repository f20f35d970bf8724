/**
 * DOC: e820-like RAM layout
 *
 * Builds the physical address map a PC firmware reports
 * (arch/x86/kernel/e820.c prints it as `BIOS-e820: [mem ...] usable`): low
 * memory below 640 KiB, the legacy VGA/BIOS hole up to 1 MiB, RAM up to the
 * 32-bit PCI window (default 3 GiB .. 4 GiB, where 32-bit BARs live), and the
 * rest of RAM from 4 GiB up. RAM is spread over NUMA nodes in order: node 0
 * takes the first `nodes[0]` bytes of RAM, node 1 the next, and so on.
 *
 * Locking: none (pure function).
 *
 * @module
 */

/** One e820 entry. */
export interface E820Entry {
  /** First byte. */
  readonly start: bigint;
  /** One past the last byte. */
  readonly end: bigint;
  /** `usable` (RAM) or `reserved`. */
  readonly type: "usable" | "reserved";
}

/** A RAM range owned by a NUMA node. */
export interface RamRange {
  /** First byte (page aligned). */
  readonly start: bigint;
  /** One past the last byte (page aligned). */
  readonly end: bigint;
  /** NUMA node id. */
  readonly nid: number;
}

/** Options for {@linkcode e820Layout}. */
export interface E820Options {
  /** RAM bytes per NUMA node (page multiples). */
  readonly nodes: readonly (bigint | number)[];
  /** Start of the 32-bit PCI hole; default 3 GiB. */
  readonly pciHoleStart?: bigint;
}

/** The address map: e820 entries plus the RAM ranges by node. */
export interface E820Layout {
  /** Entries as firmware reports them, ascending. */
  readonly entries: E820Entry[];
  /** RAM ranges with their node, ascending. */
  readonly ram: RamRange[];
}

const KIB = 1024n;
const GIB = 1024n * 1024n * 1024n;

/**
 * Builds a PC-style physical address map.
 *
 * @example
 * ```ts
 * import { e820Layout } from "@dmalab/kernel";
 * const l = e820Layout({ nodes: [8n << 30n, 8n << 30n] });
 * l.ram[l.ram.length - 1]!.end; // 0x440000000n: 16 GiB of RAM plus the 1 GiB PCI hole
 * ```
 */
export function e820Layout(options: E820Options): E820Layout {
  const holeStart = options.pciHoleStart ?? 3n * GIB;
  const windows: [bigint, bigint][] = [
    [0n, 640n * KIB],
    [1024n * KIB, holeStart],
    [4n * GIB, 1n << 52n],
  ];
  const ram: RamRange[] = [];
  let w = 0;
  let cursor = windows[0]![0];
  options.nodes.forEach((size, nid) => {
    let left = BigInt(size);
    if (left % 4096n !== 0n) throw new RangeError(`e820Layout: node ${nid} size not page aligned`);
    while (left > 0n) {
      const win = windows[w]!;
      if (cursor < win[0]) cursor = win[0];
      const take = win[1] - cursor < left ? win[1] - cursor : left;
      if (take > 0n) {
        ram.push({ start: cursor, end: cursor + take, nid });
        cursor += take;
        left -= take;
      }
      if (cursor >= win[1]) w++;
    }
  });
  const entries: E820Entry[] = [];
  let at = 0n;
  // Merge adjacent RAM ranges of different nodes into one usable entry, as firmware does.
  for (const r of ram) {
    if (r.start > at) entries.push({ start: at, end: r.start, type: "reserved" });
    const last = entries[entries.length - 1];
    if (last && last.type === "usable" && last.end === r.start) {
      entries[entries.length - 1] = { start: last.start, end: r.end, type: "usable" };
    } else {
      entries.push({ start: r.start, end: r.end, type: "usable" });
    }
    at = r.end;
  }
  if (at <= holeStart) entries.push({ start: at, end: 4n * GIB, type: "reserved" });
  return { entries, ram };
}

/** Formats entries as the kernel prints them at boot (`BIOS-e820: [mem 0x...-0x...] usable`). */
export function formatE820(entries: readonly E820Entry[]): string {
  const hex = (v: bigint) => `0x${v.toString(16).padStart(16, "0")}`;
  return entries.map((e) => `BIOS-e820: [mem ${hex(e.start)}-${hex(e.end - 1n)}] ${e.type}`)
    .join("\n");
}
