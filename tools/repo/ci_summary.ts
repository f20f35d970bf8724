/**
 * DOC: CI summary
 *
 * Deno's own closing line is not one CI reads, so every member's test target
 * writes JUnit XML into `out/junit/`, and this script adds them up and prints
 * the single line CI looks for: `tests: N passed, M failed`. Exits 1 when any
 * test failed or no result file exists.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./workspace.ts";

/** Counts from one or more JUnit files. */
export interface JunitCounts {
  /** Test cases that passed. */
  passed: number;
  /** Test cases that failed or errored. */
  failed: number;
  /** Test cases skipped/ignored. */
  skipped: number;
}

/** Counts `<testcase>` elements in a JUnit document by outcome. */
export function countJunit(xml: string): JunitCounts {
  const counts: JunitCounts = { passed: 0, failed: 0, skipped: 0 };
  const re = /<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const m of xml.matchAll(re)) {
    const body = m[2] ?? "";
    if (/<(failure|error)\b/.test(body)) counts.failed++;
    else if (/<skipped\b/.test(body)) counts.skipped++;
    else counts.passed++;
  }
  return counts;
}

if (import.meta.main) {
  const dir = join(repoRoot(), Deno.args[0] ?? "out/junit");
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".xml")).sort() : [];
  const total: JunitCounts = { passed: 0, failed: 0, skipped: 0 };
  for (const f of files) {
    const c = countJunit(readFileSync(join(dir, f), "utf8"));
    console.log(`  ${f.replace(/\.xml$/, "")}: ${c.passed} passed, ${c.failed} failed`);
    total.passed += c.passed;
    total.failed += c.failed;
    total.skipped += c.skipped;
  }
  if (files.length === 0) total.failed++;
  console.log(`tests: ${total.passed} passed, ${total.failed} failed`);
  Deno.exit(total.failed > 0 ? 1 : 0);
}
