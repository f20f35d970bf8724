/**
 * DOC: workspace members
 *
 * Lists the workspace members the root deno.json declares (`packages/*`,
 * `apps/*`, `tools/*`), with both manifests read. Used by the version sync,
 * the package generator and CI.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** One workspace member. */
export interface Member {
  /** Folder relative to the repo root (`packages/kernel`). */
  dir: string;
  /** Parsed deno.json. */
  deno: {
    name?: string;
    version?: string;
    publish?: boolean;
    exports?: unknown;
    [k: string]: unknown;
  };
  /** Parsed package.json, when the member has one. */
  pkg: { name?: string; version?: string; [k: string]: unknown } | null;
}

/** Every member under `root`, in sorted order. */
export function members(root: string): Member[] {
  const conf = JSON.parse(readFileSync(join(root, "deno.json"), "utf8")) as { workspace: string[] };
  const out: Member[] = [];
  for (const pattern of conf.workspace) {
    if (!pattern.endsWith("/*")) throw new Error(`unsupported workspace pattern ${pattern}`);
    const parent = pattern.slice(0, -2);
    if (!existsSync(join(root, parent))) continue;
    for (const name of readdirSync(join(root, parent)).sort()) {
      const dir = `${parent}/${name}`;
      const denoPath = join(root, dir, "deno.json");
      if (!existsSync(denoPath)) continue;
      const pkgPath = join(root, dir, "package.json");
      out.push({
        dir,
        deno: JSON.parse(readFileSync(denoPath, "utf8")),
        pkg: existsSync(pkgPath) ? JSON.parse(readFileSync(pkgPath, "utf8")) : null,
      });
    }
  }
  return out;
}

/** The repository root (two levels above this file). */
export function repoRoot(): string {
  return new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
}
