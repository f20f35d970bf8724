/**
 * DOC: version sync
 *
 * Changesets versions members through their package.json; JSR publishes from
 * deno.json. After `npx changeset version`, this copies each member's
 * package.json `version` into its deno.json. With `--check` it changes
 * nothing and exits 1 when any pair differs (CI runs that), naming them.
 *
 * Usage: `deno run -R -W tools/repo/sync_versions.ts [--check]`
 *
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { members, repoRoot } from "./workspace.ts";

/** A member whose two manifests disagree. */
export interface Drift {
  /** Member folder. */
  dir: string;
  /** Version in package.json (the source of truth). */
  pkgVersion: string;
  /** Version in deno.json. */
  denoVersion: string | undefined;
}

/** Finds drifting members; when `write`, fixes them in place. */
export function syncVersions(root: string, write: boolean): Drift[] {
  const drifts: Drift[] = [];
  for (const m of members(root)) {
    if (!m.pkg?.version || m.deno.publish === false) continue;
    if (m.pkg.name !== undefined && m.deno.name !== undefined && m.pkg.name !== m.deno.name) {
      throw new Error(
        `${m.dir}: package.json name ${m.pkg.name} differs from deno.json name ${m.deno.name}`,
      );
    }
    if (m.deno.version === m.pkg.version) continue;
    drifts.push({ dir: m.dir, pkgVersion: m.pkg.version, denoVersion: m.deno.version });
    if (write) {
      const path = join(root, m.dir, "deno.json");
      const text = readFileSync(path, "utf8");
      const json = JSON.parse(text);
      json.version = m.pkg.version;
      writeFileSync(path, JSON.stringify(json, null, 2) + "\n");
    }
  }
  return drifts;
}

if (import.meta.main) {
  const check = Deno.args.includes("--check");
  const drifts = syncVersions(repoRoot(), !check);
  for (const d of drifts) {
    console.log(
      `${d.dir}: deno.json ${d.denoVersion ?? "(none)"} ${
        check ? "!=" : "->"
      } package.json ${d.pkgVersion}`,
    );
  }
  if (check && drifts.length > 0) {
    console.error(
      `version sync: ${drifts.length} member(s) out of step; run npm run sync-versions`,
    );
    Deno.exit(1);
  }
  console.log(`version sync: ${check ? "all members in step" : `${drifts.length} updated`}`);
}
