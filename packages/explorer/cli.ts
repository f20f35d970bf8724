/**
 * DOC: `dmalab explore`
 *
 * The command-line front end: `dmalab explore SCENARIO [--bound N]
 * [--pct DEPTH --runs N] [--seed N] [--replay S] [--json] [--trace FILE]
 * [--ftrace FILE] [--no-por] [--dpor] [--max-schedules N] [--list]`. apps/cli
 * registers {@linkcode exploreMain} as the `explore` command; it writes
 * through a small {@linkcode ExploreIo} so tests capture its output.
 *
 * Exit codes: 0 every schedule explored was clean (or the replayed run was),
 * 1 a failure was found, 2 usage error. Progress (schedules/s, states,
 * elapsed) goes to stderr, and only when `io.isTty`. With `--json` stdout
 * carries one JSON document and nothing else.
 *
 * @module
 */
import {
  explore,
  type ExploreResult,
  replay,
  type ReplayResult,
  ScheduleError,
} from "./explore.ts";
import { getScenario, scenarios } from "./scenario.ts";
import { parseSchedule } from "./schedule.ts";
import "./scenarios/mod.ts";

/** Where `dmalab explore` writes. */
export interface ExploreIo {
  /** Standard output (no newline added). */
  out(s: string): void;
  /** Standard error (no newline added). */
  err(s: string): void;
  /** True when output goes to a terminal: progress lines are printed. */
  readonly isTty: boolean;
  /** Writes a file (`--trace`, `--ftrace`); defaults to `Deno.writeTextFile`. */
  writeFile?(path: string, text: string): Promise<void> | void;
}

/** The usage text of `dmalab explore`. */
export const exploreUsage: string = `usage: dmalab explore SCENARIO [options]
       dmalab explore --list

Runs SCENARIO under many task interleavings and checks its invariants at
every scheduling point. Default: depth-first search over the scheduler's
decisions with a preemption bound and sleep-set partial-order reduction.

options:
  --bound N          preemptions allowed per schedule (default 2)
  --pct DEPTH        randomized PCT with bug depth DEPTH instead of the search
  --runs N           PCT runs (default 1000)
  --seed N           PCT seed (default 1)
  --replay S         run the one schedule S (as printed in a report)
  --no-por           turn sleep-set reduction off
  --dpor             add dynamic partial-order reduction (fewer schedules)
  --max-schedules N  stop after N schedules (default 1000000)
  --json             print one JSON document
  --trace FILE       write the failing (or replayed) run as Chrome/Perfetto JSON
  --ftrace FILE      write its ftrace text instead of printing it
  --list             list the scenarios
exit status: 0 clean within the bound, 1 failure found, 2 usage error
`;

class Usage extends Error {}

const VALUE_FLAGS = new Set([
  "bound",
  "pct",
  "runs",
  "seed",
  "replay",
  "trace",
  "ftrace",
  "max-schedules",
]);
const BOOL_FLAGS = new Set(["json", "list", "no-por", "dpor", "help"]);

function parse(args: readonly string[]): { flags: Map<string, string | true>; pos: string[] } {
  const flags = new Map<string, string | true>();
  const pos: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "-h") {
      flags.set("help", true);
      continue;
    }
    if (!a.startsWith("--")) {
      pos.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const key = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (BOOL_FLAGS.has(key) && eq < 0) flags.set(key, true);
    else if (VALUE_FLAGS.has(key)) {
      const v = eq >= 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined) throw new Usage(`option --${key} needs a value`);
      flags.set(key, v);
    } else throw new Usage(`unknown option ${a}`);
  }
  return { flags, pos };
}

function intFlag(
  flags: Map<string, string | true>,
  key: string,
  min: number,
): number | undefined {
  const v = flags.get(key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || !/^-?[0-9]+$/.test(v) || !Number.isSafeInteger(n) || n < min) {
    throw new Usage(`--${key} needs an integer >= ${min}, got '${String(v)}'`);
  }
  return n;
}

function indent(text: string, by = "  "): string {
  return text.replace(/\n$/, "").split("\n").map((l) => by + l).join("\n") + "\n";
}

const BUG_KINDS = new Set([
  "WARN",
  "BUG",
  "lockdep",
  "might_sleep",
  "deadlock",
  "dma-api-debug",
  "refcount",
  "scheduler",
]);

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}

function rate(n: number, ms: number): string {
  return ms > 0 ? `${Math.round((n * 1000) / ms)}` : "-";
}

/** The human-readable report of an exploration (what `dmalab explore` prints). */
export function formatResult(r: ExploreResult, options: { ftrace?: boolean } = {}): string {
  const lines: string[] = [];
  const mode = r.mode === "pct"
    ? `PCT depth ${r.pct!.depth}, ${r.pct!.runs} runs, seed ${r.pct!.seed}, ~${
      r.pct!.steps
    } decisions per run`
    : `depth-first, preemption bound ${r.bound}, sleep sets ${r.por ? "on" : "off"}${
      r.dpor ? ", DPOR" : ""
    }`;
  lines.push(`explore ${r.scenario} (${mode})`);
  const stats = `${plural(r.schedules, "schedule")}, ${plural(r.states, "distinct state")}, ` +
    `${r.pruned} pruned in ` +
    `${r.elapsedMs.toFixed(1)} ms (${rate(r.schedules, r.elapsedMs)} schedules/s, ` +
    `${rate(r.states, r.elapsedMs)} states/s)`;
  const f = r.failure;
  if (!f) {
    const cover = r.complete
      ? r.mode === "pct" ? "all runs clean" : "every schedule within the bound explored"
      : "stopped at the schedule limit: not every schedule was explored";
    lines.push(`clean: ${stats}; ${cover}`);
    return lines.join("\n") + "\n";
  }
  lines.push(`FAILED (${f.kind}${f.task ? ` in ${f.task}` : ""}): ${f.message}`);
  lines.push(
    `  schedule ${f.schedule}: ${f.preemptions} preemption${f.preemptions === 1 ? "" : "s"}, ` +
      `${plural(f.decisions, "decision")} (found as ${f.foundSchedule} at schedule ${f.foundAt}, ` +
      `shrunk in ${f.minimizeRuns} runs)`,
  );
  lines.push(`  replay: ${f.command}`);
  lines.push(`  ${stats}; ${plural(r.failures, "failing schedule")} seen`);
  lines.push("", "report:", indent(f.report).replace(/\n$/, ""));
  lines.push("", "interleaving:", indent(f.interleaving).replace(/\n$/, ""));
  // a kernel splat is its own dmesg record; print the log for the other kinds
  if (f.dmesg.trim() !== "" && !BUG_KINDS.has(f.kind)) {
    lines.push("", "dmesg:", indent(f.dmesg).replace(/\n$/, ""));
  }
  if (options.ftrace ?? true) lines.push("", "trace:", indent(f.ftrace).replace(/\n$/, ""));
  return lines.join("\n") + "\n";
}

function formatReplay(name: string, r: ReplayResult, options: { ftrace: boolean }): string {
  const lines: string[] = [];
  const head = `replay ${name} ${r.schedule}: ${r.decisions} decisions, ${r.preemptions} ` +
    `preemption${r.preemptions === 1 ? "" : "s"}, ${r.steps} scheduling points`;
  lines.push(head);
  if (r.failure) {
    const f = r.failure;
    lines.push(`FAILED (${f.kind}${f.task ? ` in ${f.task}` : ""}): ${f.message}`);
    lines.push("", "report:", indent(f.report).replace(/\n$/, ""));
  } else {
    lines.push("clean");
  }
  lines.push("", "interleaving:", indent(r.interleaving).replace(/\n$/, ""));
  if (options.ftrace) lines.push("", "trace:", indent(r.ftrace).replace(/\n$/, ""));
  return lines.join("\n") + "\n";
}

/**
 * `dmalab explore`: resolves to the exit code (0 clean, 1 failure found, 2
 * usage error).
 *
 * @example
 * ```ts
 * import { exploreMain } from "@dmalab/explorer";
 * let out = "";
 * const io = { out: (s: string) => { out += s; }, err: (_s: string) => {}, isTty: false };
 * await exploreMain(["counter-race", "--bound", "1"], io); // 1
 * out.includes("dmalab explore counter-race --replay"); // true
 * ```
 */
export async function exploreMain(args: readonly string[], io: ExploreIo): Promise<number> {
  try {
    return await main(args, io);
  } catch (e) {
    if (e instanceof Usage || e instanceof ScheduleError || e instanceof SyntaxError) {
      io.err(`dmalab explore: ${e.message}\n\n${exploreUsage}`);
      return 2;
    }
    throw e;
  }
}

async function main(args: readonly string[], io: ExploreIo): Promise<number> {
  const { flags, pos } = parse(args);
  if (flags.has("help")) {
    io.out(exploreUsage);
    return 0;
  }
  const json = flags.has("json");
  if (flags.has("list")) {
    const list = scenarios();
    if (json) {
      io.out(
        JSON.stringify(
          list.map((s) => ({ name: s.name, expect: s.expect ?? null, description: s.description })),
        ) + "\n",
      );
    } else {
      const w = Math.max(...list.map((s) => s.name.length));
      for (const s of list) {
        io.out(`${s.name.padEnd(w)}  ${(s.expect ?? "").padEnd(5)}  ${s.description}\n`);
      }
    }
    return 0;
  }
  if (pos.length !== 1) {
    throw new Usage(pos.length === 0 ? "name a scenario (see --list)" : "one scenario at a time");
  }
  const scenario = getScenario(pos[0]!);
  if (!scenario) {
    throw new Usage(
      `no scenario '${pos[0]}'; known: ${scenarios().map((s) => s.name).join(", ")}`,
    );
  }
  const bound = intFlag(flags, "bound", 0);
  const depth = intFlag(flags, "pct", 1);
  const runs = intFlag(flags, "runs", 1);
  const seed = intFlag(flags, "seed", 0);
  const maxSchedules = intFlag(flags, "max-schedules", 1);
  if (runs !== undefined && depth === undefined) throw new Usage("--runs needs --pct DEPTH");
  if (depth !== undefined && bound !== undefined) {
    throw new Usage("--bound is for the systematic search; PCT takes --pct DEPTH --runs N");
  }
  const tracePath = flags.get("trace") as string | undefined;
  const ftracePath = flags.get("ftrace") as string | undefined;
  const write = async (path: string, text: string): Promise<void> => {
    if (io.writeFile) await io.writeFile(path, text);
    else await Deno.writeTextFile(path, text);
  };

  const replayArg = flags.get("replay");
  if (typeof replayArg === "string") {
    if (depth !== undefined || bound !== undefined) {
      throw new Usage("--replay runs one schedule; drop --bound/--pct");
    }
    const r = await replay(scenario, parseSchedule(replayArg));
    if (tracePath) await write(tracePath, JSON.stringify(r.chrome));
    if (ftracePath) await write(ftracePath, r.ftrace);
    if (json) {
      io.out(
        JSON.stringify({
          scenario: scenario.name,
          schedule: r.schedule,
          decisions: r.decisions,
          preemptions: r.preemptions,
          steps: r.steps,
          failure: r.failure,
          interleaving: r.interleaving,
          ftrace: r.ftrace,
          dmesg: r.dmesg,
        }) + "\n",
      );
    } else io.out(formatReplay(scenario.name, r, { ftrace: !ftracePath }));
    return r.failure ? 1 : 0;
  }

  let lastTick = -Infinity;
  const onProgress = io.isTty
    ? (p: { schedules: number; states: number; pruned: number; elapsedMs: number }) => {
      if (p.elapsedMs - lastTick < 200) return;
      lastTick = p.elapsedMs;
      io.err(
        `\r${p.schedules} schedules (${rate(p.schedules, p.elapsedMs)}/s), ${p.states} states, ` +
          `${p.pruned} pruned, ${(p.elapsedMs / 1000).toFixed(1)} s\x1b[K`,
      );
    }
    : undefined;
  const r = await explore(scenario, {
    ...(bound !== undefined ? { bound } : {}),
    ...(depth !== undefined ? { pct: { depth, runs: runs ?? 1000 } } : {}),
    ...(seed !== undefined ? { seed } : {}),
    ...(maxSchedules !== undefined ? { maxSchedules } : {}),
    ...(flags.has("no-por") ? { por: false } : {}),
    ...(flags.has("dpor") ? { dpor: true } : {}),
    ...(onProgress ? { onProgress, progressEvery: 256 } : {}),
  });
  if (io.isTty && lastTick > -Infinity) io.err("\r\x1b[K");
  if (r.failure) {
    if (tracePath) await write(tracePath, JSON.stringify(r.failure.chrome));
    if (ftracePath) await write(ftracePath, r.failure.ftrace);
  }
  if (json) {
    const failure = r.failure ? { ...r.failure, chrome: undefined } : null;
    io.out(JSON.stringify({ ...r, failure }) + "\n");
  } else {
    io.out(formatResult(r, { ftrace: !ftracePath }));
    if (r.failure && !tracePath) {
      io.out(`(--trace FILE writes this run as Chrome/Perfetto JSON)\n`);
    }
  }
  return r.failure ? 1 : 0;
}

/**
 * The `explore` subcommand, shaped as apps/cli's command table expects
 * (`{ name, summary, usage, run }`).
 *
 * @example
 * ```ts
 * import { exploreCommand } from "@dmalab/explorer";
 * exploreCommand.name; // "explore"
 * ```
 */
export const exploreCommand: {
  readonly name: "explore";
  readonly summary: string;
  readonly usage: string;
  run(args: string[], io: ExploreIo): Promise<number>;
} = {
  name: "explore",
  summary: "run a scenario under many task interleavings (DFS + sleep sets, DPOR, PCT)",
  usage: exploreUsage,
  run: (args, io) => exploreMain(args, io),
};
