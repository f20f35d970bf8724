import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { decodePte, mkPte, PageTable, ptePatch } from "./page_table.ts";

Deno.test("page table entries pack pfn and bits", () => {
  const e = mkPte(0xff_ffff_ffff, 3, true, true);
  const d = decodePte(e);
  strictEqual(d.pfn, 0xff_ffff_ffff);
  strictEqual(d.writable, true);
  strictEqual(d.special, true);
  strictEqual(d.dirty, true);
  const ro = decodePte(ptePatch(e, 1));
  strictEqual(ro.writable, false);
  strictEqual(ro.special, true);
  strictEqual(ro.pfn, 0xff_ffff_ffff);
});

Deno.test("huge entries cover their 2 MiB and block 4 KiB entries", () => {
  const pt = new PageTable();
  pt.setHuge(512, mkPte(0x1000, 3, true));
  strictEqual(pt.lookup(512 + 7)!.pfn, 0x1007);
  strictEqual(decodePte(pt.entryAt(512 + 7)).pfn, 0x1007);
  throws(() => pt.set(513, mkPte(1, 1, false)));
  throws(() => pt.setHuge(600, mkPte(1, 1, false)));
  deepStrictEqual([...pt.range(0, 2048)].map(([v, , h]) => [v, h]), [[512, true]]);
  strictEqual(pt.clearHuge(700), mkPte(0x1000, 3, true));
  strictEqual(pt.entries, 0);
});

Deno.test("property: the page table equals a Map model (sparse and dense PTE tables)", () => {
  const op = fc.record({
    kind: fc.constantFrom("set", "clear", "set", "set"),
    vpn: fc.oneof(fc.integer({ min: 0, max: 1023 }), fc.integer({ min: 0, max: 1 << 28 })),
    pfn: fc.integer({ min: 1, max: 1 << 30 }),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
      const pt = new PageTable();
      const model = new Map<number, number>();
      for (const o of ops) {
        if (o.kind === "set") {
          const e = mkPte(o.pfn, 3, false);
          pt.set(o.vpn, e);
          model.set(o.vpn, e);
        } else {
          strictEqual(pt.clear(o.vpn), model.get(o.vpn) ?? 0);
          model.delete(o.vpn);
        }
        strictEqual(pt.entryAt(o.vpn), model.get(o.vpn) ?? 0);
      }
      strictEqual(pt.entries, model.size);
      const want = [...model].sort((a, b) => a[0] - b[0]).map(([v, e]) => [v, e, false]);
      deepStrictEqual([...pt.range(0, (1 << 28) + 1)], want);
      deepStrictEqual(
        [...pt.range(100, 700)],
        want.filter(([v]) => (v as number) >= 100 && (v as number) < 700),
      );
      // clearRange: keep even vpns, clear odd ones.
      const cleared = want.filter(([v]) =>
        (v as number) >= 100 && (v as number) < 700 && (v as number) % 2 === 1
      );
      strictEqual(pt.clearRange(100, 700, (v) => v % 2 === 0), cleared.length);
      strictEqual(pt.entries, model.size - cleared.length);
      for (const [v] of cleared) strictEqual(pt.entryAt(v as number), 0);
    }),
    { numRuns: 200 },
  );
});
