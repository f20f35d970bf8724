import { deepStrictEqual } from "node:assert/strict";
import { countJunit } from "./ci_summary.ts";

Deno.test("countJunit counts passed, failed and skipped test cases", () => {
  const xml = `<testsuites><testsuite name="a">
<testcase name="ok1" time="0.1"/>
<testcase name="ok2" time="0.1"></testcase>
<testcase name="bad"><failure message="x">boom</failure></testcase>
<testcase name="err"><error message="y"/></testcase>
<testcase name="skip"><skipped/></testcase>
</testsuite></testsuites>`;
  deepStrictEqual(countJunit(xml), { passed: 2, failed: 2, skipped: 1 });
});
