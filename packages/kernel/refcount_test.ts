import { ok, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { KernelBug } from "./errors.ts";
import { Kernel } from "./world.ts";
import { Kref, Refcount, REFCOUNT_MAX, REFCOUNT_SATURATED } from "./refcount.ts";

function bugOf(fn: () => unknown): KernelBug {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  ok(caught instanceof KernelBug, `expected a KernelBug, got ${caught}`);
  return caught;
}

Deno.test("refcount_t basic operations", async (t) => {
  await t.step("inc / dec_and_test / inc_not_zero", () => {
    const w = new Kernel();
    const r = new Refcount(w, 1);
    r.inc();
    strictEqual(r.read(), 2);
    strictEqual(r.decAndTest(), false);
    strictEqual(r.decAndTest(), true);
    strictEqual(r.read(), 0);
    strictEqual(r.incNotZero(), false);
    strictEqual(r.read(), 0);
    strictEqual(w.bugs.length, 0);
  });
  await t.step("add / sub_and_test / dec_if_one / dec_not_one", () => {
    const w = new Kernel();
    const r = new Refcount(w, 3);
    r.add(4);
    strictEqual(r.subAndTest(6), false);
    strictEqual(r.read(), 1);
    strictEqual(r.decNotOne(), false);
    strictEqual(r.decIfOne(), true);
    strictEqual(r.read(), 0);
    strictEqual(r.decIfOne(), false);
  });
});

Deno.test("refcount_t warnings saturate (lib/refcount.c refcount_warn_saturate)", async (t) => {
  await t.step("addition on 0", () => {
    const w = new Kernel();
    const r = new Refcount(w, 0);
    const b = bugOf(() => r.inc());
    strictEqual(b.kind, "refcount");
    strictEqual(b.message, "refcount_t: addition on 0; use-after-free.");
    strictEqual(r.read(), REFCOUNT_SATURATED);
    ok(w.dmesg.text().includes("refcount_t: addition on 0; use-after-free."));
  });
  await t.step("underflow", () => {
    const w = new Kernel();
    const r = new Refcount(w, 0);
    const b = bugOf(() => r.decAndTest());
    strictEqual(b.message, "refcount_t: underflow; use-after-free.");
    strictEqual(r.read(), REFCOUNT_SATURATED);
  });
  await t.step("saturated on overflow", () => {
    const w = new Kernel();
    const r = new Refcount(w, REFCOUNT_MAX);
    const b = bugOf(() => r.inc());
    strictEqual(b.message, "refcount_t: saturated; leaking memory.");
    strictEqual(r.read(), REFCOUNT_SATURATED);
    const r2 = new Refcount(w, REFCOUNT_MAX);
    bugOf(() => r2.incNotZero());
    strictEqual(r2.read(), REFCOUNT_SATURATED);
  });
  await t.step("decrement hit 0", () => {
    const w = new Kernel();
    const r = new Refcount(w, 1);
    const b = bugOf(() => r.dec());
    strictEqual(b.message, "refcount_t: decrement hit 0; leaking memory.");
    strictEqual(r.read(), REFCOUNT_SATURATED);
  });
  await t.step("a saturated count stays saturated and never frees", () => {
    const w = new Kernel({ strict: false });
    const r = new Refcount(w, 0);
    r.inc();
    for (let i = 0; i < 5; i++) strictEqual(r.decAndTest(), false);
    strictEqual(r.read(), REFCOUNT_SATURATED);
    ok(r.saturated);
    strictEqual(w.bugs.length, 6);
  });
});

Deno.test("kref", async (t) => {
  await t.step("put calls release once, get_unless_zero fails after", () => {
    const w = new Kernel();
    const k = new Kref(w);
    let released = 0;
    k.get();
    strictEqual(k.put(() => released++), false);
    strictEqual(k.put(() => released++), true);
    strictEqual(released, 1);
    strictEqual(k.getUnlessZero(), false);
    strictEqual(k.read(), 0);
  });
  await t.step("kref_get on a released object warns", () => {
    const w = new Kernel();
    const k = new Kref(w);
    k.put(() => {});
    throws(() => k.get(), /addition on 0; use-after-free/);
  });
});

Deno.test("property: a refcount never resurrects", () => {
  type Op = "inc" | "incNotZero" | "dec" | "decAndTest" | "add2" | "sub2";
  const ops = fc.array(
    fc.constantFrom<Op>("inc", "incNotZero", "dec", "decAndTest", "add2", "sub2"),
    { maxLength: 60 },
  );
  fc.assert(fc.property(fc.integer({ min: 0, max: 4 }), ops, (start, seq) => {
    const w = new Kernel({ strict: false });
    const r = new Refcount(w, start);
    let dead = start === 0;
    for (const op of seq) {
      const before = r.read();
      const bugsBefore = w.bugs.length;
      switch (op) {
        case "inc":
          r.inc();
          break;
        case "add2":
          r.add(2);
          break;
        case "incNotZero": {
          const got = r.incNotZero();
          if (before === 0) ok(!got, "inc_not_zero succeeded on 0");
          break;
        }
        case "dec":
          r.dec();
          break;
        case "decAndTest":
          if (r.decAndTest()) {
            ok(!dead, "released twice");
            dead = true;
          }
          break;
        case "sub2":
          if (r.subAndTest(2)) {
            ok(!dead, "released twice");
            dead = true;
          }
          break;
      }
      // Once zero (dead) the count is either still 0 or saturated: never positive again.
      if (dead) ok(r.read() === 0 || r.read() === REFCOUNT_SATURATED, `resurrected: ${r.read()}`);
      // Never below zero except the saturation value.
      ok(r.read() >= 0 || r.read() === REFCOUNT_SATURATED);
      // A decrement from 0 (or into 0 for refcount_dec) warns and saturates.
      const decOp = op === "dec" || op === "decAndTest" || op === "sub2";
      const underflow = before === 0 || (op === "sub2" && before === 1) ||
        (op === "dec" && before === 1);
      if (decOp && underflow) {
        strictEqual(w.bugs.length, bugsBefore + 1);
        strictEqual(r.read(), REFCOUNT_SATURATED);
      }
      // An increment of 0 warns (addition on 0) and saturates.
      if ((op === "inc" || op === "add2") && before === 0) {
        strictEqual(w.bugs.length, bugsBefore + 1);
        strictEqual(r.read(), REFCOUNT_SATURATED);
      }
    }
  }));
});
