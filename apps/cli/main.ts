/**
 * The `dmalab` command.
 *
 * `npm run dmalab -- ARGS` or `deno task dmalab ARGS` from the repo root.
 * Run `dmalab --help` for the command list; every command takes `--help`
 * and `--json`, and exits 0 (success), 1 (rule violation found) or 2 (usage).
 *
 * @module
 */
import { commands } from "./commands/mod.ts";
import { type Command, EXIT_USAGE, type Io, processIo, UsageError } from "./io.ts";

/** The top-level help text. */
export function topHelp(list: readonly Command[]): string {
  const width = Math.max(...list.map((c) => c.name.length));
  return [
    "dmalab: an executable model of Linux's buffer-sharing stack",
    "",
    "usage: dmalab COMMAND [options]",
    "",
    "commands:",
    ...list.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "every command takes --help and --json; exit codes: 0 success, 1 rule violation found, 2 usage error",
    "",
  ].join("\n");
}

/** Runs the CLI with `args` and returns the exit code. */
export async function main(args: string[], io: Io): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    io.out(topHelp(commands));
    return name === undefined ? EXIT_USAGE : 0;
  }
  const cmd = commands.find((c) => c.name === name);
  if (!cmd) {
    io.err(`dmalab: unknown command '${name}'\n\n${topHelp(commands)}`);
    return EXIT_USAGE;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    io.out(cmd.usage.endsWith("\n") ? cmd.usage : cmd.usage + "\n");
    return 0;
  }
  try {
    return await cmd.run(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`dmalab ${cmd.name}: ${e.message}\n\n${cmd.usage}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
}

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args, processIo());
}
