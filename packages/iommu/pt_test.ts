// iommu_pgsize() splitting and pt_compute_best_pgsize() (kunit_generic_pt.h
// test_best_pgsize: compare against a brute-force reference).
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import fc from "fast-check";
import { iommuPgsize, ptComputeBestPgsize } from "./pgsize.ts";
import { IoPageTable, VTDSS_PGSIZE_BITMAP } from "./io_pgtable.ts";
import { Kernel } from "@dmalab/kernel";
import { IommuIotlbGather } from "./gather.ts";
import { ptPagePool } from "./pt_pages.ts";
import { IOMMU_CACHE, IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE } from "./prot.ts";

const SZ_4K = 4096;
const SZ_2M = 2 ** 21;
const SZ_1G = 2 ** 30;

/** ref_best_pgsize: the constraints checked one by one. */
function refBestPgsize(bitmap: number, va: number, lastVa: number, oa: number): number {
  for (let lg2 = 52; lg2 > 0; lg2--) {
    const sz = 2 ** lg2;
    if (Math.floor(bitmap / sz) % 2 !== 1) continue;
    if (va % sz !== 0 || oa % sz !== 0) continue;
    if (va + sz - 1 > lastVa) continue;
    if (Math.floor(va / sz) !== Math.floor((va + sz - 1) / sz)) continue;
    return lg2;
  }
  return 0;
}

Deno.test("test_best_pgsize", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 2 ** 40 }),
      fc.integer({ min: 0, max: 2 ** 40 }),
      fc.integer({ min: 1, max: 2 ** 32 }),
      fc.integer({ min: 0, max: 3 }),
      (vaPages, oaPages, len, b) => {
        const bitmap = [VTDSS_PGSIZE_BITMAP, SZ_4K, SZ_4K + SZ_2M, 0][b]!;
        const va = vaPages * SZ_4K;
        const oa = oaPages * SZ_4K;
        strictEqual(
          ptComputeBestPgsize(bitmap, va, va + len - 1, oa),
          refBestPgsize(bitmap, va, va + len - 1, oa),
        );
      },
    ),
    { numRuns: 2000, seed: 3 },
  );
});

Deno.test("iommu_pgsize splits a request at the next larger page boundary", async (t) => {
  await t.step("4 KiB run up to the 2 MiB boundary, then 2 MiB", () => {
    deepStrictEqual(
      iommuPgsize(VTDSS_PGSIZE_BITMAP, SZ_2M - 2 * SZ_4K, SZ_2M - 2 * SZ_4K, 4 * SZ_2M),
      {
        pgsize: SZ_4K,
        count: 2,
      },
    );
    deepStrictEqual(iommuPgsize(VTDSS_PGSIZE_BITMAP, SZ_2M, SZ_2M, 4 * SZ_2M), {
      pgsize: SZ_2M,
      count: 4,
    });
  });
  await t.step("IOVA and PA offset differently within 2 MiB: 4 KiB pages all the way", () => {
    deepStrictEqual(iommuPgsize(VTDSS_PGSIZE_BITMAP, 0, SZ_4K, 4 * SZ_2M), {
      pgsize: SZ_4K,
      count: 4 * 512,
    });
  });
  await t.step("too short for the larger page: stay small", () => {
    deepStrictEqual(iommuPgsize(VTDSS_PGSIZE_BITMAP, SZ_2M - SZ_4K, SZ_2M - SZ_4K, SZ_2M), {
      pgsize: SZ_4K,
      count: 512,
    });
  });
  await t.step("1 GiB aligned and long enough", () => {
    deepStrictEqual(iommuPgsize(VTDSS_PGSIZE_BITMAP, SZ_1G, 3 * SZ_1G, 2 * SZ_1G + SZ_2M), {
      pgsize: SZ_1G,
      count: 2,
    });
  });
});

Deno.test("kunit_generic_pt format cases (vtdss)", async (t) => {
  await t.step("test_init: pgsize_bitmap is 4K|2M|1G", () => {
    const pt = new IoPageTable(new Kernel());
    strictEqual(pt.pgsizeBitmap, SZ_4K + SZ_2M + SZ_1G);
    pt.deinit();
  });
  await t.step("test_max_va: the top covers max_vasz (fixed) or grows to it (dynamic)", () => {
    for (const levels of [3, 4, 5] as const) {
      const pt = new IoPageTable(new Kernel(), { levels });
      strictEqual(pt.maxVaszLg2, 12 + 9 * levels);
      strictEqual(pt.topLevel, levels - 1);
      pt.deinit();
    }
    const dyn = new IoPageTable(new Kernel(), { levels: 4, dynamicTop: true });
    strictEqual(dyn.topLevel, 2);
    strictEqual(dyn.topLastVa, 2 ** 39 - 1);
    dyn.deinit();
  });
  await t.step("test_attr_from_entry: prot bits survive every leaf size", () => {
    const world = new Kernel();
    const pt = new IoPageTable(world);
    const ALL = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE | IOMMU_NOEXEC | IOMMU_MMIO;
    for (const sz of [SZ_4K, SZ_2M, SZ_1G]) {
      for (let prot = 0; prot <= ALL; prot++) {
        if (!(prot & (IOMMU_READ | IOMMU_WRITE))) continue;
        strictEqual(pt.mapPages(sz * 4, sz * 8, sz, 1, prot).error, null);
        const leaf = pt.lookup(sz * 4)!;
        strictEqual(leaf.lg2, Math.log2(sz));
        strictEqual(leaf.oa, sz * 8);
        strictEqual(
          pt.protOf(leaf.bits),
          prot & (IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE | IOMMU_MMIO),
          `prot 0x${prot.toString(16)} size 0x${sz.toString(16)}`,
        );
        const g = new IommuIotlbGather();
        strictEqual(pt.unmapPages(sz * 4, sz, 1, g), sz);
        g.releaseFreelist();
      }
    }
    pt.deinit();
    strictEqual(ptPagePool(world).inUse, 0);
  });
  await t.step("x86_64 format: P/RW/PCD from READ/WRITE/MMIO", () => {
    const pt = new IoPageTable(new Kernel(), { format: "x86_64" });
    strictEqual(pt.protOf(pt.protToBits(IOMMU_WRITE)), IOMMU_READ | IOMMU_WRITE);
    strictEqual(
      pt.protOf(pt.protToBits(IOMMU_READ | IOMMU_MMIO | IOMMU_CACHE)),
      IOMMU_READ | IOMMU_MMIO,
    );
    strictEqual(pt.mapPages(SZ_2M, SZ_1G, SZ_2M, 1, IOMMU_READ).error, null);
    strictEqual(pt.iovaToPhys(SZ_2M + 5), SZ_1G + 5);
    pt.deinit();
  });
});
