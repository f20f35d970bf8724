/**
 * DOC: exploring a scenario
 *
 * {@linkcode explore} runs a scenario under many schedules, systematically
 * ({@linkcode DfsStrategy}, the default) or with PCT ({@linkcode PctStrategy},
 * `pct` option), counting schedules, distinct states and pruned runs. On a
 * failure it shrinks the failing schedule (fewer preemptions, fewer
 * non-default decisions, shorter), replays the shrunk schedule with tracing
 * on, and reports the failure with its ftrace text, Chrome/Perfetto JSON,
 * dmesg and the `dmalab explore ... --replay` command that reproduces it.
 * {@linkcode replay} runs one schedule.
 *
 * Runs execute one after another on fresh worlds; nothing is shared between
 * them but the statistics, so no locking is needed.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import {
  type Failure,
  formatInterleaving,
  type RunOutcome,
  runScenario,
  StallGuard,
} from "./engine.ts";
import type { Scenario } from "./scenario.ts";
import { formatSchedule, parseSchedule, trimDefaults } from "./schedule.ts";
import { DEFAULT_CHOICE, DfsStrategy, PctStrategy, ReplayStrategy } from "./strategies.ts";

/** Progress of an exploration, for a TTY line. */
export interface Progress {
  /** Schedules run to their end (clean or failing). */
  readonly schedules: number;
  /** Distinct state fingerprints seen. */
  readonly states: number;
  /** Runs abandoned as redundant (sleep sets). */
  readonly pruned: number;
  /** Wall-clock milliseconds since the start. */
  readonly elapsedMs: number;
}

/** Options for {@linkcode explore}. */
export interface ExploreOptions {
  /** Preemption bound of the systematic search. Default 2. */
  bound?: number;
  /** Sleep-set partial-order reduction. Default true. */
  por?: boolean;
  /** Dynamic partial-order reduction on top of the sleep sets (see `DfsOptions.dpor`). Default false. */
  dpor?: boolean;
  /** Randomized PCT instead of the systematic search. */
  pct?: { depth: number; runs: number };
  /** Seed of the PCT runs. Default 1. */
  seed?: number;
  /** Stop after this many schedules (the result says it is incomplete). Default 1,000,000. */
  maxSchedules?: number;
  /** Stop after this many wall-clock ms. Default none. */
  timeLimitMs?: number;
  /** Stop at the first failure. Default true. */
  stopOnFailure?: boolean;
  /** Shrink the failing schedule. Default true. */
  minimize?: boolean;
  /** Scheduling points per run before it counts as a livelock. Default 100,000. */
  maxSteps?: number;
  /** Called every `progressEvery` runs. */
  onProgress?: (p: Progress) => void;
  /** Runs between progress calls. Default 1024. */
  progressEvery?: number;
}

/** A failure with everything needed to reproduce and read it. */
export interface FailureReport extends Failure {
  /** The (shrunk) failing schedule. */
  readonly schedule: string;
  /** The schedule as first found, before shrinking. */
  readonly foundSchedule: string;
  /** Preemptions in the schedule. */
  readonly preemptions: number;
  /** Decisions in the failing run up to the failure. */
  readonly decisions: number;
  /** Which schedule (1-based) found it. */
  readonly foundAt: number;
  /** Runs spent shrinking. */
  readonly minimizeRuns: number;
  /** `dmalab explore SCENARIO --replay SCHEDULE`. */
  readonly command: string;
  /** The failing run's steps, one column per task (see {@linkcode formatInterleaving}). */
  readonly interleaving: string;
  /** The failing run's trace as ftrace text. */
  readonly ftrace: string;
  /** The failing run's trace as Chrome/Perfetto JSON. */
  readonly chrome: { traceEvents: Record<string, unknown>[]; displayTimeUnit: "ns" };
  /** The failing run's kernel log. */
  readonly dmesg: string;
}

/** What an exploration found. */
export interface ExploreResult {
  /** Scenario name. */
  readonly scenario: string;
  /** `dfs` (systematic) or `pct`. */
  readonly mode: "dfs" | "pct";
  /** Preemption bound (dfs). */
  readonly bound?: number;
  /** Whether sleep sets were on (dfs). */
  readonly por?: boolean;
  /** Whether DPOR was on (dfs). */
  readonly dpor?: boolean;
  /** PCT depth and runs asked for (pct). */
  readonly pct?: { depth: number; runs: number; seed: number; steps: number };
  /** Schedules run to their end. */
  readonly schedules: number;
  /** Distinct states (fingerprints at scheduling points). */
  readonly states: number;
  /** Runs abandoned as redundant. */
  readonly pruned: number;
  /** Schedules that failed. */
  readonly failures: number;
  /** Most decisions in one run. */
  readonly maxDecisions: number;
  /** Wall-clock ms. */
  readonly elapsedMs: number;
  /** The whole space (within the bound, or all PCT runs) was covered. */
  readonly complete: boolean;
  /** The failure (shrunk), or null when every schedule was clean. */
  readonly failure: FailureReport | null;
}

/** What {@linkcode replay} returns. */
export interface ReplayResult {
  /** The canonical schedule string of the run. */
  readonly schedule: string;
  /** Null when the run was clean. */
  readonly failure: Failure | null;
  /** Preemptions in the run. */
  readonly preemptions: number;
  /** Decisions taken. */
  readonly decisions: number;
  /** Scheduling points passed. */
  readonly steps: number;
  /** The run's steps, one column per task. */
  readonly interleaving: string;
  /** ftrace text of the run. */
  readonly ftrace: string;
  /** Chrome/Perfetto JSON of the run. */
  readonly chrome: { traceEvents: Record<string, unknown>[]; displayTimeUnit: "ns" };
  /** dmesg of the run. */
  readonly dmesg: string;
  /** The run's world. */
  readonly world: Kernel;
}

/** Thrown when a schedule does not fit the scenario, or the scenario is not deterministic. */
export class ScheduleError extends Error {
  /** A schedule mismatch with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "ScheduleError";
  }
}

function canonical(out: RunOutcome): string {
  return formatSchedule(trimDefaults(out.decisions, out.defaults));
}

/**
 * Runs `scenario` once under `schedule` (a string from a report, or pids),
 * with tracing on. Throws {@linkcode ScheduleError} when a decision names a
 * task that is not runnable there.
 *
 * @example
 * ```ts
 * import { getScenario, replay } from "@dmalab/explorer";
 * const r = await replay(getScenario("counter-race")!, "1.2");
 * r.failure?.kind; // "invariant" (the lost update)
 * ```
 */
export async function replay(
  // deno-lint-ignore no-explicit-any
  scenario: Scenario<any>,
  schedule: string | readonly number[],
  options: { maxSteps?: number } = {},
): Promise<ReplayResult> {
  const decisions = typeof schedule === "string" ? parseSchedule(schedule) : schedule;
  const strat = new ReplayStrategy(decisions);
  const runOpts = options.maxSteps === undefined
    ? { trace: true }
    : { trace: true, maxSteps: options.maxSteps };
  const out = await runScenario(scenario, strat, runOpts);
  if (strat.mismatch) {
    throw new ScheduleError(
      `schedule '${
        formatSchedule(decisions)
      }' does not fit scenario ${scenario.name}: ${strat.mismatch}`,
    );
  }
  return {
    schedule: canonical(out),
    failure: out.failure,
    preemptions: out.preemptions,
    decisions: out.decisions.length,
    steps: out.steps,
    interleaving: formatInterleaving(out.log ?? []),
    ftrace: out.world.trace.ftrace(),
    chrome: out.world.trace.chromeJson(),
    dmesg: out.world.dmesg.text(),
    world: out.world,
  };
}

function score(o: RunOutcome): [number, number, number] {
  const t = trimDefaults(o.decisions, o.defaults);
  let nd = 0;
  for (let i = 0; i < t.length; i++) if (!o.defaults[i]) nd++;
  return [o.preemptions, nd, t.length];
}

function better(a: [number, number, number], b: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) {
    if (a[i]! !== b[i]!) return a[i]! < b[i]!;
  }
  return false;
}

/**
 * Shrinks a failing run: tries cutting the schedule after each non-default
 * decision, then turning single non-default decisions into defaults, keeping
 * any run that fails the same way with fewer preemptions, fewer non-default
 * decisions or a shorter schedule.
 */
async function minimize(
  scenario: Scenario,
  found: RunOutcome,
  maxRuns: number,
  maxSteps: number,
  guard: StallGuard,
): Promise<{ best: RunOutcome; runs: number }> {
  let best = found;
  let bestScore = score(best);
  const kind = found.failure!.kind;
  let runs = 0;
  const attempt = async (decisions: number[]): Promise<boolean> => {
    runs++;
    const o = await runScenario(scenario, new ReplayStrategy(decisions, { lenient: true }), {
      maxSteps,
      guard,
    });
    if (o.failure?.kind !== kind) return false;
    const s = score(o);
    if (!better(s, bestScore)) return false;
    best = o;
    bestScore = s;
    return true;
  };
  // 1. cut: defaults after the j-th non-default decision
  const firstCut = best.decisions.slice();
  for (let j = 0; j < firstCut.length && runs < maxRuns; j++) {
    if (best.defaults[j]) continue;
    if (await attempt(firstCut.slice(0, j + 1))) break;
  }
  // 2. drop single non-default decisions, latest first, until nothing helps
  for (let improved = true; improved && runs < maxRuns;) {
    improved = false;
    const d = best.decisions;
    for (let i = d.length - 1; i >= 0 && runs < maxRuns; i--) {
      if (best.defaults[i]) continue;
      const cand = d.slice();
      cand[i] = DEFAULT_CHOICE;
      if (await attempt(cand)) {
        improved = true;
        break;
      }
    }
  }
  return { best, runs };
}

/**
 * Explores the interleavings of `scenario`. Resolves when the space within
 * the bound is covered, the PCT runs are done, a limit is hit, or (by
 * default) at the first failure, shrunk and traced.
 *
 * @example
 * ```ts
 * import { explore, getScenario } from "@dmalab/explorer";
 * const racy = await explore(getScenario("counter-race")!, { bound: 2 });
 * racy.failure?.kind; // "invariant"
 * const safe = await explore(getScenario("counter-mutex")!, { bound: 2 });
 * safe.failure; // null
 * safe.schedules > 1; // true
 * ```
 */
export async function explore(
  // deno-lint-ignore no-explicit-any
  scenario: Scenario<any>,
  options: ExploreOptions = {},
): Promise<ExploreResult> {
  const t0 = performance.now();
  const states = new Set<number>();
  const labels = new Map<string, number>();
  const guard = new StallGuard();
  guard.start();
  try {
    return await exploreWith(scenario, options, t0, states, labels, guard);
  } finally {
    guard.stop();
  }
}

async function exploreWith(
  scenario: Scenario,
  options: ExploreOptions,
  t0: number,
  states: Set<number>,
  labels: Map<string, number>,
  guard: StallGuard,
): Promise<ExploreResult> {
  const maxSchedules = options.maxSchedules ?? 1_000_000;
  const maxSteps = options.maxSteps ?? 100_000;
  const stopOnFailure = options.stopOnFailure ?? true;
  const every = Math.max(1, options.progressEvery ?? 1024);
  let schedules = 0;
  let pruned = 0;
  let failures = 0;
  let maxDecisions = 0;
  let first: RunOutcome | null = null;
  let foundAt = 0;
  let complete = false;
  let runs = 0;
  const progress = (): void => {
    options.onProgress?.({
      schedules,
      states: states.size,
      pruned,
      elapsedMs: performance.now() - t0,
    });
  };
  const account = (out: RunOutcome): boolean => {
    runs++;
    if (out.decisions.length > maxDecisions) maxDecisions = out.decisions.length;
    if (out.pruned) pruned++;
    else schedules++;
    if (out.failure) {
      failures++;
      if (first === null || better(score(out), score(first))) {
        first = out;
        foundAt = schedules;
      }
    }
    if (runs % every === 0) progress();
    return out.failure !== null && stopOnFailure;
  };
  const outOfBudget = (): boolean =>
    schedules >= maxSchedules ||
    (options.timeLimitMs !== undefined && performance.now() - t0 > options.timeLimitMs);

  let pctInfo: ExploreResult["pct"];
  if (options.pct) {
    const { depth, runs: pctRuns } = options.pct;
    const seed = options.seed ?? 1;
    // k: decisions of a default run, raised as longer runs show up
    const calib = await runScenario(scenario, new ReplayStrategy([]), { maxSteps, labels, guard });
    let k = Math.max(1, calib.decisions.length);
    let i = 0;
    for (; i < pctRuns && !outOfBudget(); i++) {
      const strat = new PctStrategy({ depth, steps: k, seed: pctSeed(seed, i) });
      const out = await runScenario(scenario, strat, { maxSteps, states, labels, guard });
      if (out.decisions.length > k) k = out.decisions.length;
      if (account(out)) break;
    }
    complete = i >= pctRuns || (first !== null && stopOnFailure);
    pctInfo = { depth, runs: pctRuns, seed, steps: k };
  } else {
    const dfs = new DfsStrategy({
      bound: options.bound ?? 2,
      por: options.por ?? true,
      dpor: options.dpor ?? false,
    });
    for (;;) {
      const out = await runScenario(scenario, dfs, {
        maxSteps,
        states,
        labels,
        guard,
        statesFrom: dfs.statesFrom,
      });
      if (dfs.mismatch) {
        throw new ScheduleError(`scenario ${scenario.name} is not deterministic: ${dfs.mismatch}`);
      }
      if (account(out)) break;
      if (!dfs.backtrack()) {
        complete = true;
        break;
      }
      if (outOfBudget()) break;
    }
  }
  progress();

  let failure: FailureReport | null = null;
  const found = first as RunOutcome | null;
  if (found !== null) {
    const foundSchedule = canonical(found);
    let best = found;
    let minimizeRuns = 0;
    if (options.minimize ?? true) {
      const m = await minimize(scenario, found, 500, maxSteps, guard);
      best = m.best;
      minimizeRuns = m.runs;
    }
    const schedule = canonical(best);
    const r = await runScenario(scenario, new ReplayStrategy(parseSchedule(schedule)), {
      maxSteps,
      guard,
      trace: true,
    });
    const f = r.failure ?? best.failure!;
    const report = {
      ...f,
      schedule,
      foundSchedule,
      preemptions: r.preemptions,
      decisions: r.decisions.length,
      foundAt,
      minimizeRuns,
      command: `dmalab explore ${scenario.name} --replay ${schedule}`,
      dmesg: r.world.dmesg.text(),
    };
    // formatting a trace costs more than a short run: done when first read
    const world = r.world;
    const log = r.log ?? [];
    lazy(report, "interleaving", () => formatInterleaving(log));
    lazy(report, "ftrace", () => world.trace.ftrace());
    lazy(report, "chrome", () => world.trace.chromeJson());
    failure = report as FailureReport;
  }
  const base = {
    scenario: scenario.name,
    schedules,
    states: states.size,
    pruned,
    failures,
    maxDecisions,
    elapsedMs: performance.now() - t0,
    complete,
    failure,
  };
  return pctInfo ? { ...base, mode: "pct", pct: pctInfo } : {
    ...base,
    mode: "dfs",
    bound: options.bound ?? 2,
    por: options.por ?? true,
    dpor: options.dpor ?? false,
  };
}

/** Defines `key` on `obj` as an enumerable property computed on first read. */
function lazy<T>(obj: object, key: string, compute: () => T): void {
  let value: T | undefined;
  let done = false;
  Object.defineProperty(obj, key, {
    enumerable: true,
    get(): T {
      if (!done) {
        value = compute();
        done = true;
      }
      return value as T;
    },
  });
}

/** The seed of PCT run `i` under seed `seed`. */
function pctSeed(seed: number, i: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(i + 1, 0x85ebca6b)) >>> 0;
}
