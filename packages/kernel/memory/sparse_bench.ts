/**
 * Sparse physical memory over a 1 TiB range: cost per touched page and write
 * speed, next to raw baselines measured in the same run (a plain
 * `Map<number, Uint8Array>` of 4 KiB pages, and one dense `Uint8Array` the
 * size of the touched pages).
 *
 * Memory figures are printed once per run (`deno bench -A --v8-flags=--expose-gc`
 * makes them exact; without it they include garbage not yet collected).
 */
import { Prng } from "../sched/policy.ts";
import { Kernel } from "../world.ts";

const TIB = 1n << 40n;
const PAGES = 100_000;
const PAGE = 4096;

function scatteredPfns(n: number, seed: number): number[] {
  const rng = new Prng(seed);
  const span = Number(TIB / 4096n); // 2^28 pfns
  const seen = new Set<number>();
  while (seen.size < n) seen.add(rng.nextU32() % span);
  return [...seen];
}

const gc = (globalThis as { gc?: () => void }).gc;
interface Usage {
  heap: number;
  external: number;
  rss: number;
}
function used(): Usage {
  gc?.();
  const m = Deno.memoryUsage();
  return { heap: m.heapUsed, external: m.external, rss: m.rss };
}

const pfns = scatteredPfns(PAGES, 42);
const payload = new Uint8Array(64).fill(0x5a);

const BUILDERS: Record<string, () => unknown> = {
  physmem: () => {
    const w = new Kernel({ memory: { nodes: [TIB] } });
    for (const pfn of pfns) w.mem.write(pfn * PAGE, payload);
    return w;
  },
  map: () => {
    const m = new Map<number, Uint8Array>();
    for (const pfn of pfns) {
      const p = new Uint8Array(PAGE);
      p.set(payload);
      m.set(pfn, p);
    }
    return m;
  },
  dense: () => {
    const d = new Uint8Array(PAGES * PAGE);
    for (let i = 0; i < PAGES; i++) d.set(payload, i * PAGE);
    return d;
  },
};

const measureArg = Deno.args.find((a) => a.startsWith("--measure="));
if (measureArg) {
  // Child process: one structure in a fresh isolate, so RSS deltas are its own.
  const kind = measureArg.slice("--measure=".length);
  const before = used();
  const keep = BUILDERS[kind]!();
  const after = used();
  console.log(JSON.stringify({
    kind,
    heap: (after.heap - before.heap) / PAGES,
    external: (after.external - before.external) / PAGES,
    rss: (after.rss - before.rss) / PAGES,
    alive: keep !== null,
  }));
  Deno.exit(0);
}

if (!Deno.env.get("DMALAB_BENCH_NO_MEMORY")) {
  const url = new URL(import.meta.url).pathname;
  const rows: Record<string, { heap: number; external: number; rss: number }> = {};
  for (const kind of ["physmem", "map", "dense"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--v8-flags=--expose-gc", url, `--measure=${kind}`],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    rows[kind] = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
  }
  const f = (v: number) => v.toFixed(0).padStart(6);
  console.log(
    `sparse memory: ${PAGES} pages touched at random over a 1 TiB range (bytes per touched page, fresh process each)`,
  );
  const names: Record<string, string> = {
    physmem: "PhysMem (1 TiB RAM, sparse)",
    map: "baseline Map<number, Uint8Array>",
    dense: "baseline dense Uint8Array",
  };
  for (const [k, r] of Object.entries(rows)) {
    console.log(
      `${names[k]!.padEnd(34)} heap ${f(r.heap)}  external ${f(r.external)}  rss ${f(r.rss)}`,
    );
  }
  console.log(
    `rss ratios: PhysMem/dense ${(rows.physmem!.rss / rows.dense!.rss).toFixed(3)}, Map/dense ${
      (rows.map!.rss / rows.dense!.rss).toFixed(3)
    }, PhysMem/Map ${(rows.physmem!.rss / rows.map!.rss).toFixed(3)}`,
  );
}

const benchPfns = pfns.slice(0, 10_000);
const world = new Kernel({ memory: { nodes: [TIB] } });
for (const pfn of benchPfns) world.mem.write(pfn * PAGE, payload);
const mapBase = new Map<number, Uint8Array>();
for (const pfn of benchPfns) mapBase.set(pfn, new Uint8Array(PAGE));

Deno.bench({
  name: "PhysMem.write 64 B to 10k scattered touched pages",
  group: "write",
  baseline: false,
  fn() {
    for (const pfn of benchPfns) world.mem.write(pfn * PAGE + 128, payload);
  },
});

Deno.bench({
  name: "Map<number, Uint8Array> set 64 B to 10k pages",
  group: "write",
  baseline: true,
  fn() {
    for (const pfn of benchPfns) mapBase.get(pfn)!.set(payload, 128);
  },
});

const buf = new Uint8Array(64);
Deno.bench({
  name: "PhysMem.readInto 64 B from 10k scattered pages",
  group: "read",
  fn() {
    for (const pfn of benchPfns) world.mem.readInto(pfn * PAGE + 128, buf);
  },
});

Deno.bench({
  name: "Map<number, Uint8Array> read 64 B from 10k pages",
  group: "read",
  baseline: true,
  fn() {
    for (const pfn of benchPfns) buf.set(mapBase.get(pfn)!.subarray(128, 192));
  },
});
