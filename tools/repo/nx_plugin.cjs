// Nx inference plugin for the Deno workspace.
//
// Nx does not read Deno imports, so every workspace member's targets are
// generated here from its deno.json: `test`, `check`, `lint` and `bench` run
// the member's own deno tasks (or the deno subcommand when the member has no
// such task). Internal dependencies come from each member's package.json,
// which Nx's own package.json plugin reads and Changesets needs anyway.
"use strict";
const { readFileSync, existsSync, readdirSync } = require("node:fs");
const { dirname, join, basename } = require("node:path");

// Every member sits two levels below the root (packages/x, apps/x, tools/x)
// and commands run in the member folder; Nx only expands {workspaceRoot} at
// the start of an option, so paths are relative.
const DENO = "../../tools/bin/deno";

function denoTarget(command, extra) {
  return {
    executor: "nx:run-commands",
    options: { command, cwd: "{projectRoot}" },
    ...extra,
  };
}

function readJson(path) {
  return existsSync(path) ? JSON.parse(readFileSync(path, "utf8")) : null;
}

/** Export file paths (relative to the member) from a member's deno.json. */
function exportFiles(dir) {
  const deno = readJson(join(dir, "deno.json"));
  if (!deno?.exports) return [];
  return typeof deno.exports === "string" ? [deno.exports] : Object.values(deno.exports);
}

/** Folders of every member named in package.json dependencies, transitively. */
function internalDeps(root) {
  const byName = new Map();
  for (const parent of ["packages", "apps", "tools"]) {
    if (!existsSync(parent)) continue;
    for (const name of readdirSync(parent)) {
      const pkg = readJson(join(parent, name, "package.json"));
      if (pkg?.name) byName.set(pkg.name, `${parent}/${name}`);
    }
  }
  const seen = new Set();
  const walk = (dir) => {
    const pkg = readJson(join(dir, "package.json"));
    for (const dep of Object.keys(pkg?.dependencies ?? {})) {
      const d = byName.get(dep);
      if (d && !seen.has(d)) {
        seen.add(d);
        walk(d);
      }
    }
  };
  walk(root);
  return [...seen].sort();
}

function targetsFor(root, deno) {
  const tasks = deno.tasks ?? {};
  const name = basename(root);
  const targets = {};
  if (tasks.test) {
    const junit = `out/junit/${root.replaceAll("/", "-")}.xml`;
    targets.test = denoTarget(`${DENO} task test --junit-path=../../${junit}`, {
      cache: true,
      inputs: ["default", "^production"],
      outputs: [`{workspaceRoot}/${junit}`],
    });
  }
  targets.check = denoTarget(`${DENO} check`, {
    cache: true,
    inputs: ["default", "^production"],
  });
  targets.lint = denoTarget(`${DENO} lint`, { cache: true, inputs: ["default"] });
  if (tasks.bench) {
    targets.bench = denoTarget(`${DENO} task bench`, { cache: false });
  }
  if (deno.exports && deno.publish !== false) {
    // `deno doc --lint` calls a type from another member (Kernel, Device)
    // "private" unless that member's entry points are linted in the same
    // run, so each member is linted together with its internal dependencies.
    const files = [root, ...internalDeps(root)].flatMap((dir) =>
      exportFiles(dir).map((f) => `../../${dir}/${f.replace(/^\.\//, "")}`)
    );
    targets["doc-lint"] = denoTarget(`${DENO} doc --lint ${files.join(" ")}`, {
      cache: true,
      inputs: ["production", "^production"],
    });
  }
  return { name, targets };
}

const createNodesV2 = [
  "{packages,apps,tools}/*/deno.json",
  (files) => {
    const results = [];
    for (const file of files) {
      const root = dirname(file);
      const deno = JSON.parse(readFileSync(file, "utf8"));
      const { targets } = targetsFor(root, deno);
      const project = { root, targets };
      if (!existsSync(join(root, "package.json"))) {
        project.name = deno.name ?? basename(root);
      }
      results.push([file, { projects: { [root]: project } }]);
    }
    return results;
  },
];

module.exports = { createNodesV2, name: "dmalab-nx-deno" };
