/**
 * Page-table cost: bytes per mapped 4 KiB page for 100,000 PTEs placed
 * contiguously and scattered over a 1 TiB virtual range (the kernel pays a
 * 4 KiB PTE page per populated 2 MiB slot, and so does this radix), and the
 * speed of set/lookup against a plain Map<number, number> baseline, in the
 * same run. Memory lines need `--v8-flags=--expose-gc` to be exact.
 */
import { Prng } from "../sched/policy.ts";
import { mkPte, PageTable } from "./page_table.ts";

const N = 100_000;
const SPAN = 1 << 28; // 1 TiB of 4 KiB pages
const gc = (globalThis as { gc?: () => void }).gc;

function used(): number {
  gc?.();
  const m = Deno.memoryUsage();
  return m.heapUsed + m.external;
}

function scattered(seed: number): number[] {
  const rng = new Prng(seed);
  const s = new Set<number>();
  while (s.size < N) s.add(rng.nextU32() % SPAN);
  return [...s];
}

const spread = scattered(7);
const contiguous = Array.from({ length: N }, (_, i) => 0x7f00_0000 + i);

const keep: unknown[] = [];

function perPage(label: string, vpns: number[]): void {
  const before = used();
  const pt = new PageTable();
  keep.push(pt);
  for (const v of vpns) pt.set(v, mkPte(v, 3, true));
  const after = used();
  console.log(
    `${label.padEnd(40)} ${
      ((after - before) / N).toFixed(1).padStart(8)
    } bytes/PTE  (${pt.tables} PTE tables)`,
  );
  if (pt.entries !== N) throw new Error("lost entries");
}

if (!Deno.env.get("DMALAB_BENCH_NO_MEMORY")) {
  console.log(`page tables: ${N} PTEs (gc ${gc ? "exact" : "not exposed"})`);
  perPage("PageTable, contiguous", contiguous);
  perPage("PageTable, scattered over 1 TiB", spread);
  const before = used();
  const m = new Map<number, number>();
  keep.push(m);
  for (const v of spread) m.set(v, mkPte(v, 3, true));
  console.log(
    `${"baseline Map<number, number>, scattered".padEnd(40)} ${
      ((used() - before) / N).toFixed(1).padStart(8)
    } bytes/PTE`,
  );
}

const pt = new PageTable();
const map = new Map<number, number>();
for (const v of spread) {
  pt.set(v, mkPte(v, 3, true));
  map.set(v, mkPte(v, 3, true));
}

Deno.bench({
  name: "PageTable.lookup, 100k scattered",
  group: "lookup",
  fn() {
    let n = 0;
    for (const v of spread) if (pt.lookup(v)) n++;
    if (n !== N) throw new Error("miss");
  },
});

Deno.bench({
  name: "PageTable.entryAt, 100k scattered",
  group: "lookup",
  fn() {
    let n = 0;
    for (const v of spread) if (pt.entryAt(v) !== 0) n++;
    if (n !== N) throw new Error("miss");
  },
});

Deno.bench({
  name: "Map.get, 100k scattered",
  group: "lookup",
  baseline: true,
  fn() {
    let n = 0;
    for (const v of spread) if (map.get(v)) n++;
    if (n !== N) throw new Error("miss");
  },
});
