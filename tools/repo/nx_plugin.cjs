// Nx inference plugin for the Deno workspace.
//
// Nx does not read Deno imports, so every workspace member's targets are
// generated here from its deno.json: `test`, `check`, `lint` and `bench` run
// the member's own deno tasks (or the deno subcommand when the member has no
// such task). Internal dependencies come from each member's package.json,
// which Nx's own package.json plugin reads and Changesets needs anyway.
"use strict";
const { readFileSync, existsSync } = require("node:fs");
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
    const files = typeof deno.exports === "string" ? [deno.exports] : Object.values(deno.exports);
    targets["doc-lint"] = denoTarget(`${DENO} doc --lint ${files.join(" ")}`, {
      cache: true,
      inputs: ["production"],
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
