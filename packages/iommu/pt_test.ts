// iommu_pgsize() splitting and pt_compute_best_pgsize() (kunit_generic_pt.h
// test_best_pgsize: compare against a brute-force reference).
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import fc from "fast-check";
import { iommuPgsize, ptComputeBestPgsize } from "./pgsize.ts";
import { VTDSS_PGSIZE_BITMAP } from "./io_pgtable.ts";

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
