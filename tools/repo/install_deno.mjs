// Root postinstall: installs the pinned Deno into .tools/ (outside the root
// node_modules/.bin chain, see README "Deno"). Skips the install when the
// pinned version is already there, so a second `npm install` does not pull
// the binary out from under a running deno.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const tools = join(dirname(fileURLToPath(import.meta.url)), "..", "..", ".tools");
const wanted = JSON.parse(readFileSync(join(tools, "package.json"), "utf8")).dependencies.deno;
const installed = join(tools, "node_modules", "deno", "package.json");
const have = existsSync(installed) ? JSON.parse(readFileSync(installed, "utf8")).version : null;
const bin = join(tools, "node_modules", ".bin", "deno");
if (have === wanted && existsSync(bin)) {
  console.log(`deno ${have} already installed in .tools/`);
} else {
  execFileSync("npm", ["ci", "--prefix", tools, "--no-audit", "--no-fund", "--loglevel=error"], {
    stdio: "inherit",
  });
  console.log(`deno ${wanted} installed in .tools/`);
}
