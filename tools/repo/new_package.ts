/**
 * DOC: package generator
 *
 * `npm run new-package -- NAME [--description TEXT] [--deps a,b]` creates
 * `packages/NAME` with the layout every dmalab package has: deno.json (name
 * `@dmalab/NAME`, version, license, exports, test/bench tasks), package.json
 * (private, internal dependencies for Nx and Changesets), `mod.ts` with a
 * `@module` doc and an example, a first test, and README.md. Refuses to
 * overwrite an existing folder.
 *
 * @module
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./workspace.ts";

/** What to generate. */
export interface NewPackageOptions {
  /** Folder and package name (`gpu` makes `@dmalab/gpu`). */
  name: string;
  /** One-line description. */
  description: string;
  /** Internal dependencies (`kernel`, `dma-buf`). */
  deps: string[];
}

/** Creates the package under `root/packages`; returns the files written. */
export function newPackage(root: string, opts: NewPackageOptions): string[] {
  if (!/^[a-z][a-z0-9-]*$/.test(opts.name)) {
    throw new Error(`package name must be lower-case kebab-case: ${opts.name}`);
  }
  const dir = join(root, "packages", opts.name);
  if (existsSync(dir)) throw new Error(`packages/${opts.name} already exists`);
  const scoped = `@dmalab/${opts.name}`;
  const ident = opts.name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  const files: Record<string, string> = {
    "deno.json": JSON.stringify(
      {
        name: scoped,
        version: "0.1.0",
        license: "MIT",
        exports: { ".": "./mod.ts" },
        tasks: { test: "deno test -A --doc --parallel", bench: "deno bench -A" },
      },
      null,
      2,
    ) + "\n",
    "package.json": JSON.stringify(
      {
        name: scoped,
        version: "0.1.0",
        private: true,
        type: "module",
        license: "MIT",
        dependencies: Object.fromEntries(opts.deps.map((d) => [`@dmalab/${d}`, "^0.1.0"])),
      },
      null,
      2,
    ) + "\n",
    "mod.ts": `/**
 * ${scoped}: ${opts.description}
 *
 * @example
 * \`\`\`ts
 * import { ${ident}Version } from "${scoped}";
 * ${ident}Version; // "0.1.0"
 * \`\`\`
 *
 * @module
 */

/** The package version this build carries. */
export const ${ident}Version = "0.1.0";
`,
    "mod_test.ts": `import { strictEqual } from "node:assert/strict";
import { ${ident}Version } from "./mod.ts";

Deno.test("${scoped} exports its version", () => {
  strictEqual(${ident}Version, "0.1.0");
});
`,
    "README.md": `# ${scoped}

${opts.description}

## Test

\`\`\`sh
tools/bin/deno task --cwd packages/${opts.name} test
\`\`\`
`,
  };
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const [file, text] of Object.entries(files)) {
    writeFileSync(join(dir, file), text);
    written.push(`packages/${opts.name}/${file}`);
  }
  return written;
}

if (import.meta.main) {
  const args = [...Deno.args];
  const name = args.shift();
  let description = "A dmalab package.";
  let deps: string[] = ["kernel"];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--description") description = args[++i] ?? description;
    else if (args[i] === "--deps") deps = (args[++i] ?? "").split(",").filter(Boolean);
  }
  if (!name) {
    console.error("usage: npm run new-package -- NAME [--description TEXT] [--deps a,b]");
    Deno.exit(2);
  }
  for (const f of newPackage(repoRoot(), { name, description, deps })) console.log(`created ${f}`);
  console.log("next: npm install (links the member), then npx changeset");
}
