import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import fc from "fast-check";
import { BuddyZone, MAX_PAGE_ORDER } from "./buddy.ts";

Deno.test("buddy allocator splits and merges (mm/page_alloc.c)", async (t) => {
  await t.step("split hands out the lower half, upper halves go to lower orders", () => {
    const z = new BuddyZone([[0, 1024]]);
    strictEqual(z.alloc(0), 0);
    // order-10 block carved, split down: one free block at each order 0..9.
    deepStrictEqual(z.buddyinfo(), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    strictEqual(z.alloc(0), 1);
    strictEqual(z.freePages, 1022);
  });
  await t.step("freeing both buddies merges back to MAX_PAGE_ORDER", () => {
    const z = new BuddyZone([[0, 1024]]);
    const a = z.alloc(3)!;
    const b = z.alloc(3)!;
    strictEqual(b, a + 8);
    z.free(a, 3);
    z.free(b, 3);
    strictEqual(z.freePages, 1024);
    strictEqual(z.buddyinfo()[MAX_PAGE_ORDER], 1);
  });
  await t.step("exhaustion returns null and leaves the zone intact", () => {
    const z = new BuddyZone([[0, 4]]);
    strictEqual(z.alloc(3), null);
    strictEqual(z.alloc(2), 0);
    strictEqual(z.alloc(0), null);
    strictEqual(z.freePages, 0);
    z.free(0, 2);
    strictEqual(z.freePages, 4);
  });
  await t.step("unaligned ranges carve naturally aligned blocks", () => {
    const z = new BuddyZone([[3, 21]]);
    const got: number[] = [];
    for (let p = z.alloc(0); p !== null; p = z.alloc(0)) got.push(p);
    deepStrictEqual(got.sort((x, y) => x - y), Array.from({ length: 18 }, (_, i) => 3 + i));
  });
});

Deno.test("property: buddy blocks never overlap and frees restore every page", () => {
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 40 }), (orders) => {
    const z = new BuddyZone([[5, 300]]);
    const owned = new Map<number, number>();
    const used = new Set<number>();
    for (const o of orders) {
      const p = z.alloc(o);
      if (p === null) continue;
      strictEqual(p % (1 << o), 0);
      for (let i = 0; i < 1 << o; i++) {
        ok(!used.has(p + i), "overlap");
        used.add(p + i);
        ok(p + i >= 5 && p + i < 300);
      }
      owned.set(p, o);
    }
    for (const [p, o] of owned) z.free(p, o);
    strictEqual(z.freePages, 295);
  }));
});
