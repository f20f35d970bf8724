/**
 * DOC: command I/O
 *
 * Every subcommand writes through an {@linkcode Io} so tests capture output
 * and the same code serves a TTY and a pipe. Conventions every command keeps:
 * `--help` prints usage and exits 0; `--json` prints one JSON document on
 * stdout and nothing else; exit codes are 0 (success), 1 (a rule violation or
 * invariant failure was found) and 2 (usage error).
 *
 * @module
 */

/** Exit status: success. */
export const EXIT_OK = 0;
/** Exit status: a rule violation or invariant failure was found. */
export const EXIT_VIOLATION = 1;
/** Exit status: the command line was wrong. */
export const EXIT_USAGE = 2;

/** Where a command writes. */
export interface Io {
  /** Writes text to standard output (no newline added). */
  out(text: string): void;
  /** Writes text to standard error (no newline added). */
  err(text: string): void;
  /** True when stdout is a terminal (progress output allowed). */
  readonly isTty: boolean;
}

/** A subcommand of `dmalab`. */
export interface Command {
  /** Word on the command line. */
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** Full usage text for `--help`. */
  readonly usage: string;
  /** Runs with the arguments after the command word; resolves to the exit code. */
  run(args: string[], io: Io): Promise<number>;
}

/** An Io writing to the process streams. */
export function processIo(): Io {
  const enc = new TextEncoder();
  return {
    out: (t) => void Deno.stdout.writeSync(enc.encode(t)),
    err: (t) => void Deno.stderr.writeSync(enc.encode(t)),
    isTty: Deno.stdout.isTerminal(),
  };
}

/** An Io that records into strings (for tests). */
export function captureIo(): Io & { stdout: string; stderr: string } {
  const io = {
    stdout: "",
    stderr: "",
    isTty: false,
    out(t: string) {
      io.stdout += t;
    },
    err(t: string) {
      io.stderr += t;
    },
  };
  return io;
}

/** Parsed flags: booleans and `--key value` strings, plus positionals. */
export interface ParsedArgs {
  /** Flags seen (`--json` -> `json: true`, `--seed 3` -> `seed: "3"`). */
  flags: Record<string, string | boolean>;
  /** Arguments that are not flags. */
  positional: string[];
}

/** Thrown for a usage error; the CLI prints it with the usage and exits 2. */
export class UsageError extends Error {
  /** A usage error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Parses `args` against the known boolean and value flags; unknown flags are
 * a {@linkcode UsageError}.
 */
export function parseArgs(args: string[], booleans: string[], values: string[] = []): ParsedArgs {
  const flags: Record<string, string | boolean> = {};
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (!a.startsWith("--")) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const key = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (booleans.includes(key) && eq < 0) {
      flags[key] = true;
    } else if (values.includes(key)) {
      const v = eq >= 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined) throw new UsageError(`option --${key} needs a value`);
      flags[key] = v;
    } else {
      throw new UsageError(`unknown option ${a}`);
    }
  }
  return { flags, positional };
}
