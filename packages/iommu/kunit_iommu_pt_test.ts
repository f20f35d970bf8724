// Port of drivers/iommu/generic_pt/kunit_iommu_pt.h (the iommu_test suite),
// run against the vtdss format with a fixed 4-level top and with a dynamic
// top (the amdv1 feature). Each case runs in a fresh domain; the suite's exit
// hook (pt_kunit_iommu_exit) checks that every table page was returned.
import { ok, strictEqual } from "node:assert/strict";
import { isErrno, Kernel } from "@dmalab/kernel";
import { IommuDomain } from "./domain.ts";
import { IOMMU_READ, IOMMU_WRITE } from "./prot.ts";
import { ptPagePool } from "./pt_pages.ts";
import { bitmapToLg2s } from "./pgsize.ts";

const RW = IOMMU_READ | IOMMU_WRITE;
const SZ_4K = 4096;
const SZ_1G = 2 ** 30;
const SZ_2G = 2 ** 31;
const MAPLE_RESERVED_RANGE = 4096;
const TEST_OA = 0x8_1234_5678_9000;

interface Priv {
  world: Kernel;
  domain: IommuDomain;
  smallest: number;
  origPages: number;
}

type Fmt = { name: string; format: "vtdss" | "x86_64"; dynamicTop: boolean };
const FORMATS: Fmt[] = [
  { name: "vtdss", format: "vtdss", dynamicTop: false },
  { name: "vtdss_dyntop", format: "vtdss", dynamicTop: true },
  { name: "x86_64", format: "x86_64", dynamicTop: false },
];

function init(fmt: Fmt): Priv {
  const world = new Kernel();
  const origPages = ptPagePool(world).inUse;
  const domain = new IommuDomain(world, "unmanaged", {
    pgtable: { levels: 4, dynamicTop: fmt.dynamicTop, format: fmt.format },
  });
  return { world, domain, smallest: SZ_4K, origPages };
}

/** pt_kunit_iommu_exit: free the table and look for leaked table pages. */
function exit(p: Priv): void {
  p.domain.free();
  strictEqual(ptPagePool(p.world).inUse, p.origPages, "NR_SECONDARY_PAGETABLE leak");
}

function doMap(p: Priv, va: number, pa: number, len: number): void {
  p.domain.map(va, pa, len, RW);
}

function doUnmap(p: Priv, va: number, len: number): void {
  strictEqual(p.domain.unmap(va, len), len);
}

/**
 * check_iova: every smallest page of the range translates to pa + offset.
 * Inside one leaf the translation is linear, so after checking a page the
 * walk skips to the leaf's end (same coverage, fewer walks).
 */
function checkIova(p: Priv, va: number, pa: number, len: number): void {
  const pt = p.domain.pgtable!;
  for (let off = 0; off < len;) {
    const res = p.domain.iovaToPhys(va + off);
    if (res !== pa + off) strictEqual(res, pa + off, `iova 0x${(va + off).toString(16)}`);
    const size = 2 ** (12 + 9 * pt.lookupLevel);
    off += size - ((va + off) % size);
  }
}

function align(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

function countValids(p: Priv): number {
  return p.domain.pgtable!.countLeaves();
}

function countValidsSingle(p: Priv, pgsz: number): number {
  const v = p.domain.pgtable!.countValids();
  for (const [k, n] of Object.entries(v)) {
    if (Number(k) !== pgsz) strictEqual(n, 0, `unexpected leaves of size ${k}`);
  }
  return v[pgsz] ?? 0;
}

/** xorshift32: a seeded get_random_u32 */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

function testIncreaseLevel(p: Priv): "skip" | void {
  const pt = p.domain.pgtable!;
  if (!pt.dynamicTop) return "skip"; // PT_FEAT_DYNAMIC_TOP not set for this format
  const startLevel = pt.topLevel;
  while (pt.topLastVa !== 2 ** pt.maxVaszLg2 - 1) {
    const level = pt.topLevel;
    doMap(p, pt.topLastVa + 1, 0, p.smallest);
    strictEqual(pt.topLevel, level + 1);
  }
  ok(pt.topLevel > startLevel);
}

function testMapSimple(p: Priv): void {
  const bitmap = p.domain.pgsizeBitmap;
  let cur = p.smallest * 256;
  for (const lg2 of bitmapToLg2s(bitmap)) {
    const len = 2 ** lg2;
    const pa = TEST_OA - (TEST_OA % len);
    cur = align(cur, len);
    doMap(p, cur, pa, len);
    if (len <= SZ_2G && len < SZ_1G) checkIova(p, cur, pa, len);
    cur += len;
  }
  // The read interface reports that every page size was created
  const v = p.domain.pgtable!.countValids();
  for (const lg2 of bitmapToLg2s(bitmap)) strictEqual(v[2 ** lg2], 1);
  strictEqual(Object.keys(v).length, bitmapToLg2s(bitmap).length);
  cur = p.smallest * 256;
  for (const lg2 of bitmapToLg2s(bitmap)) {
    const len = 2 ** lg2;
    cur = align(cur, len);
    doUnmap(p, cur, len);
    cur += len;
  }
  strictEqual(countValids(p), 0);
}

function testMapTableToOa(p: Priv): void {
  const sizes = bitmapToLg2s(p.domain.pgsizeBitmap).map((l) => 2 ** l).filter((s) =>
    s < 16 * SZ_1G
  );
  const maxPgsize = sizes[sizes.length - 1]!;
  for (const len of sizes) {
    const pa = TEST_OA - (TEST_OA % len);
    const cur = align(p.smallest * 256, maxPgsize);
    for (let off = 0; off !== maxPgsize; off += len) doMap(p, cur + off, pa + off, len);
    checkIova(p, cur, pa, maxPgsize);
    strictEqual(countValidsSingle(p, len), maxPgsize / len);
    if (len === maxPgsize) {
      doUnmap(p, cur, maxPgsize);
    } else {
      doUnmap(p, cur, maxPgsize / 2);
      for (let off = maxPgsize / 2; off !== maxPgsize; off += len) doUnmap(p, cur + off, len);
    }
    strictEqual(countValids(p), 0);
  }
}

function testUnmapSplit(p: Priv): "skip" | void {
  const sizes = bitmapToLg2s(p.domain.pgsizeBitmap).map((l) => 2 ** l);
  let count = 0;
  for (const base of sizes) {
    for (const next of sizes.filter((s) => s > base)) {
      const va = 0;
      doMap(p, va, 0, next);
      strictEqual(p.domain.unmap(va, base), next);
      // Make sure unmap doesn't keep going
      doMap(p, va, 0, next);
      doMap(p, va + next, 0, next);
      strictEqual(p.domain.unmap(va, base), next);
      strictEqual(p.domain.unmap(va + next, next), next);
      count++;
    }
  }
  if (count === 0) return "skip";
}

function testRandomMap(p: Priv, seed: number): void {
  const rand = rng(seed);
  const below = (n: number) => Math.floor((rand() / 4294967296) * n);
  const rangeVa = align(MAPLE_RESERVED_RANGE, p.smallest);
  const rangeLast = 0 + SZ_1G;
  // the maple-tree shadow: disjoint [start, last] ranges
  const shadow: [number, number][] = [];
  const unmapCollisions = (start: number, last: number) => {
    for (let i = 0; i < shadow.length;) {
      const [s, l] = shadow[i]!;
      if (l < start || s > last) {
        i++;
        continue;
      }
      shadow.splice(i, 1);
      checkIova(p, s, s, l - s + 1);
      doUnmap(p, s, l - s + 1);
    }
  };
  for (let iter = 0; iter !== 1000; iter++) {
    let start = below(Math.min(0xffffffff, rangeLast - rangeVa));
    let end = below(Math.min(0xffffffff, rangeLast - start));
    start = start - (start % p.smallest);
    end = align(end, p.smallest);
    start += rangeVa;
    end += start;
    if (start < rangeVa || end > rangeLast + 1 || start >= end) continue;
    const paddr = start;
    try {
      p.domain.map(start, paddr, end - start, RW);
    } catch (e) {
      ok(isErrno(e, "EADDRINUSE"), String(e));
      unmapCollisions(start, end - 1);
      doMap(p, start, paddr, end - start);
    }
    shadow.push([start, end - 1]);
    checkIova(p, start, paddr, end - start);
  }
  unmapCollisions(0, Number.MAX_SAFE_INTEGER);
  strictEqual(countValids(p), 0);
}

function testPgsizeBoundary(p: Priv): "skip" | void {
  if (p.domain.pgtable!.topLastVa < 0xfef9ffff || p.smallest !== SZ_4K) return "skip";
  doMap(p, 0xfef80000, 0x208b95d000, 0xfef9ffff - 0xfef80000 + 1);
  checkIova(p, 0xfef80000, 0x208b95d000, 0x20000);
}

function testMixed(p: Priv): "skip" | void {
  const start = 0x3fe400 * SZ_4K;
  const end = 0x4c0600 * SZ_4K;
  const len = end - start;
  const pt = p.domain.pgtable!;
  if (pt.lastVa <= start) return "skip";
  doMap(p, start, start, len);
  // 14 2M, 3 1G, 3 2M
  strictEqual(countValids(p), 20);
  const v = pt.countValids();
  strictEqual(v[2 ** 21], 17);
  strictEqual(v[2 ** 30], 3);
  checkIova(p, start, start, 16 * 2 ** 21);
}

for (const fmt of FORMATS) {
  Deno.test(`${fmt.name}_iommu_test`, async (t) => {
    const run = async (name: string, fn: (p: Priv) => "skip" | void) => {
      await t.step(name, () => {
        const p = init(fmt);
        const r = fn(p);
        if (r === "skip") ok(!fmt.dynamicTop || name !== "test_increase_level");
        exit(p);
      });
    };
    await run("test_increase_level", testIncreaseLevel);
    await run("test_map_simple", testMapSimple);
    await run("test_map_table_to_oa", testMapTableToOa);
    await run("test_unmap_split", testUnmapSplit);
    await run("test_random_map", (p) => testRandomMap(p, 0x5eed + (fmt.dynamicTop ? 1 : 0)));
    await run("test_pgsize_boundary", testPgsizeBoundary);
    await run("test_mixed", testMixed);
  });
}
