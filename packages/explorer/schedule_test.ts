import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { formatSchedule, parseSchedule, trimDefaults } from "./schedule.ts";

Deno.test("schedule strings", async (t) => {
  await t.step("format shortens runs of three or more", () => {
    strictEqual(formatSchedule([1, 2, 2, 1]), "1.2.2.1");
    strictEqual(formatSchedule([1, 2, 2, 2, 1]), "1.2*3.1");
    strictEqual(formatSchedule([]), "-");
  });
  await t.step("parse accepts what format prints", () => {
    deepStrictEqual(parseSchedule("1.2*3.1"), [1, 2, 2, 2, 1]);
    deepStrictEqual(parseSchedule("-"), []);
    deepStrictEqual(parseSchedule(" 3 "), [3]);
  });
  await t.step("round trip for any pid sequence", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 60 }), (d) => {
        deepStrictEqual(parseSchedule(formatSchedule(d)), d);
      }),
    );
  });
  await t.step("parse rejects malformed parts with the part named", () => {
    throws(() => parseSchedule("1.x.2"), /'x' is not a pid/);
    throws(() => parseSchedule("0.1"), /'0' is not a pid/);
    throws(() => parseSchedule("1..2"), /'' is not a pid/);
    throws(() => parseSchedule("2*0"), /'2\*0'/);
  });
  await t.step("trimDefaults drops the trailing default decisions only", () => {
    deepStrictEqual(trimDefaults([1, 2, 1, 1], [true, false, true, true]), [1, 2]);
    deepStrictEqual(trimDefaults([1, 1], [true, true]), []);
    deepStrictEqual(trimDefaults([2, 1], [false, true]), [2]);
  });
});
