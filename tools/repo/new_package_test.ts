import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { newPackage } from "./new_package.ts";
import { syncVersions } from "./sync_versions.ts";

Deno.test("newPackage writes the standard layout and sync_versions keeps it in step", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "dmalab-gen-"));
  try {
    mkdirSync(join(root, "packages"));
    writeFileSync(join(root, "deno.json"), JSON.stringify({ workspace: ["packages/*"] }));
    await t.step("generates deno.json, package.json, mod.ts, test and README", () => {
      const files = newPackage(root, { name: "gpu", description: "A GPU.", deps: ["kernel"] });
      strictEqual(files.length, 5);
      const deno = JSON.parse(readFileSync(join(root, "packages/gpu/deno.json"), "utf8"));
      strictEqual(deno.name, "@dmalab/gpu");
      strictEqual(deno.license, "MIT");
      const pkg = JSON.parse(readFileSync(join(root, "packages/gpu/package.json"), "utf8"));
      deepStrictEqual(pkg.dependencies, { "@dmalab/kernel": "^0.1.0" });
      ok(readFileSync(join(root, "packages/gpu/mod.ts"), "utf8").includes("@module"));
    });
    await t.step("refuses to overwrite and rejects bad names", () => {
      throws(() => newPackage(root, { name: "gpu", description: "", deps: [] }), /already exists/);
      throws(() => newPackage(root, { name: "Bad_Name", description: "", deps: [] }), /kebab-case/);
    });
    await t.step("--check finds drift, sync fixes it", () => {
      const pkgPath = join(root, "packages/gpu/package.json");
      const pkg = JSON.parse(readFileSync(pkgPath, "utf8"));
      pkg.version = "0.2.0";
      writeFileSync(pkgPath, JSON.stringify(pkg));
      strictEqual(syncVersions(root, false).length, 1);
      strictEqual(syncVersions(root, true).length, 1);
      strictEqual(syncVersions(root, false).length, 0);
      const deno = JSON.parse(readFileSync(join(root, "packages/gpu/deno.json"), "utf8"));
      strictEqual(deno.version, "0.2.0");
    });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
