/**
 * DOC: explorer benchmarks, and the comparison with fast-check's scheduler
 *
 * `deno bench -A packages/explorer/explorer_bench.ts` times the workloads;
 * `deno run -A packages/explorer/explorer_bench.ts` prints the comparison
 * table of the README: the two-task lost-update race explored by this
 * package (depth-first, preemption bound 2) against the same race under
 * `fc.scheduler()` (fast-check 4), measured in the same process:
 *
 * - throughput: schedules/s (each a complete run on a fresh world) against
 *   fast-check runs/s (`fc.assert(fc.asyncProperty(fc.scheduler(), ...))`);
 * - coverage: the time until every distinct interleaving of the four steps
 *   (6 of them) and every distinct state of the interleaving tree (the
 *   prefixes of those orders, 19 with the empty one) has been seen, as
 *   states/s.
 *
 * Single-threaded, one process. Rates are per CPU-second of this process
 * (`process.cpuUsage`, user + system), so other load on a shared machine
 * slows both sides alike; the runner repeats each measurement and keeps the
 * median.
 *
 * @module
 */
import fc from "fast-check";
import process from "node:process";
import { explore } from "./explore.ts";
import { NO_RAM, type Scenario } from "./scenario.ts";
import { counterRace, counterScenario } from "./scenarios/counter.ts";
import { wwWaitDie } from "./scenarios/ww_mutex.ts";

/** Interleavings of two tasks of `steps` steps each: C(2 steps, steps). */
function interleavings(steps: number): number {
  let c = 1;
  for (let i = 1; i <= steps; i++) c = (c * (steps + i)) / i;
  return Math.round(c);
}

/** Nodes of their interleaving tree (every prefix, the empty one too): C(2 steps + 2, steps + 1) - 1. */
function treeStates(steps: number): number {
  return interleavings(steps + 1) - 1;
}

/** CPU milliseconds (user + system) used by this process so far. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function prefixes(order: string, into: Set<string>): void {
  for (let i = 0; i <= order.length; i += 2) into.add(order.slice(0, i));
}

/** Coverage bookkeeping shared by both sides. */
class Cover {
  readonly orders = new Set<string>();
  readonly states = new Set<string>();
  readonly wantOrders: number;
  readonly wantStates: number;
  coveredMs = -1;
  runs = 0;
  coverRuns = 0;
  readonly #t0 = cpuMs();
  constructor(increments: number) {
    this.wantOrders = interleavings(2 * increments);
    this.wantStates = treeStates(2 * increments);
  }
  see(order: string): void {
    this.runs++;
    this.orders.add(order);
    prefixes(order, this.states);
    if (
      this.coveredMs < 0 && this.orders.size === this.wantOrders &&
      this.states.size === this.wantStates
    ) {
      this.coveredMs = cpuMs() - this.#t0;
      this.coverRuns = this.runs;
    }
  }
  get elapsedMs(): number {
    return cpuMs() - this.#t0;
  }
}

/** The counter race with `increments` increments per task, recording its step order. */
interface RaceState {
  id: number;
  value: number;
  done: number;
  order: string;
}

function recordingRace(increments: number, cover: Cover): Scenario<RaceState> {
  return {
    name: "counter-race-recorded",
    description: counterRace.description,
    worldOptions: NO_RAM,
    build(world) {
      const s: RaceState = { id: world.nextId(), value: 0, done: 0, order: "" };
      for (const n of ["a", "b"]) {
        world.spawn(n, async () => {
          for (let k = 0; k < increments; k++) {
            await world.sched.preempt("load counter", s.id, "read");
            s.order += `${n}l`;
            const v = s.value;
            await world.sched.preempt("store counter", s.id, "write");
            s.order += `${n}s`;
            s.value = v + 1;
            s.done++;
          }
        });
      }
      return s;
    },
    check(_w, s) {
      cover.see(s.order);
      return [];
    },
  };
}

/** One fast-check property run of the same race; returns the step order. */
async function fcRace(s: fc.Scheduler, increments = 1): Promise<string> {
  const st = { value: 0, order: "" };
  const inc = async (n: string) => {
    for (let k = 0; k < increments; k++) {
      await s.schedule(Promise.resolve(`${n}:load`));
      st.order += `${n}l`;
      const v = st.value;
      await s.schedule(Promise.resolve(`${n}:store`));
      st.order += `${n}s`;
      st.value = v + 1;
    }
  };
  await s.waitFor(Promise.all([inc("a"), inc("b")]));
  return st.order;
}

const races = new Map<number, Scenario<unknown>>();

/**
 * Explores the race (`increments` per task) within preemption bound 2 with
 * sleep sets, without stopping at the failure: every schedule is run.
 */
export async function exploreRace(increments = 1): Promise<{ schedules: number; states: number }> {
  let sc = races.get(increments);
  if (!sc) {
    sc = counterScenario({ name: `counter-race-x${increments}`, increments }) as Scenario<unknown>;
    races.set(increments, sc);
  }
  const r = await explore(sc, { bound: 2, stopOnFailure: false, minimize: false });
  return { schedules: r.schedules, states: r.states };
}

/** `numRuns` fast-check scheduler runs of the race (`increments` per task). */
export async function fastCheckRace(numRuns: number, increments = 1, seed = 42): Promise<number> {
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(fc.scheduler(), async (s) => {
      await fcRace(s, increments);
      runs++;
      return true;
    }),
    { numRuns, seed },
  );
  return runs;
}

/** The explorer, unbounded, on the race with `increments` per task: coverage. */
export async function explorerCoverage(increments: number): Promise<Cover> {
  const cover = new Cover(increments);
  // every interleaving, not one per equivalence class: no preemption bound, no sleep sets
  await explore(recordingRace(increments, cover), {
    bound: 4 * increments,
    por: false,
    stopOnFailure: false,
    minimize: false,
  });
  return cover;
}

/** fast-check with seed `seed`, `numRuns` runs, on the same race: coverage. */
export async function fastCheckCoverage(
  increments: number,
  seed: number,
  numRuns: number,
): Promise<Cover> {
  const cover = new Cover(increments);
  await fc.assert(
    fc.asyncProperty(fc.scheduler(), async (s) => {
      cover.see(await fcRace(s, increments));
      return true;
    }),
    { numRuns, seed },
  );
  return cover;
}

Deno.bench("explore counter-race, DFS bound 2, all schedules", async () => {
  await exploreRace();
});

Deno.bench("fast-check fc.scheduler counter race, 14 runs", async () => {
  await fastCheckRace(14);
});

Deno.bench("explore ww-wait-die, DFS bound 1 (3 tasks x 3 ww_mutexes)", async () => {
  await explore(wwWaitDie, { bound: 1 });
});

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Units of work per CPU-second, running `step` for about `seconds` of CPU time. */
async function rateOf(seconds: number, step: () => Promise<number>): Promise<number> {
  let n = 0;
  const t0 = cpuMs();
  while (cpuMs() - t0 < seconds * 1000) n += await step();
  return n / ((cpuMs() - t0) / 1000);
}

/** Measures and prints the README table. */
async function table(): Promise<void> {
  const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
  console.log(
    "| two-task lost-update race | @dmalab/explorer | fast-check `fc.scheduler()` | ratio |",
  );
  console.log("| --- | ---: | ---: | ---: |");
  const stateRates: string[] = [];
  for (const increments of [1, 3]) {
    // each side in its own block after its own warm-up: switching between
    // them costs either a second of re-optimisation
    const ours: number[] = [];
    const oursStates: number[] = [];
    await rateOf(3, async () => (await exploreRace(increments)).schedules);
    for (let i = 0; i < 5; i++) {
      let states = 0;
      const t = cpuMs();
      ours.push(
        await rateOf(1, async () => {
          const r = await exploreRace(increments);
          states += r.states;
          return r.schedules;
        }),
      );
      oursStates.push(states / ((cpuMs() - t) / 1000));
    }
    const theirs: number[] = [];
    await rateOf(3, () => fastCheckRace(50, increments));
    for (let i = 0; i < 5; i++) theirs.push(await rateOf(1, () => fastCheckRace(50, increments)));
    const r1 = median(ours);
    const r2 = median(theirs);
    console.log(
      `| ${increments} increment${increments === 1 ? "" : "s"} each (${4 * increments} steps): ` +
        `schedules per CPU-second (fast-check: runs) | ${fmt(r1)} | ${fmt(r2)} | ${
          (r1 / r2).toFixed(1)
        }x |`,
    );
    stateRates.push(`${increments}: ${fmt(median(oursStates))}`);
  }
  for (const increments of [1, 3]) {
    const budget = increments === 1 ? 2000 : 20000;
    const mine: Cover[] = [];
    const fcs: Cover[] = [];
    for (let seed = 1; seed <= (increments === 1 ? 15 : 3); seed++) {
      mine.push(await explorerCoverage(increments));
      fcs.push(await fastCheckCoverage(increments, seed, budget));
    }
    const want = mine[0]!;
    const myMs = median(mine.map((c) => c.coveredMs));
    const fcCovered = fcs.every((c) => c.coveredMs >= 0);
    const fcMs = fcCovered
      ? median(fcs.map((c) => c.coveredMs))
      : median(fcs.map((c) => c.elapsedMs));
    const fcStates = median(fcs.map((c) => c.states.size));
    const myRate = want.wantStates / (myMs / 1000);
    const fcRate = (fcCovered ? want.wantStates : fcStates) / (fcMs / 1000);
    const fcCell = fcCovered
      ? `${fcMs.toFixed(1)} ms (${median(fcs.map((c) => c.coverRuns))} runs)`
      : `not covered in ${budget} runs (${fcMs.toFixed(0)} ms): ${
        median(fcs.map((c) => c.orders.size))
      } of ${want.wantOrders} orders, ${fcStates} states`;
    console.log(
      `| ${increments} increment${increments === 1 ? "" : "s"} each: time to see all ` +
        `${want.wantOrders} interleavings / ${want.wantStates} tree states | ` +
        `${myMs.toFixed(1)} ms (${want.coverRuns} schedules) | ${fcCell} | ` +
        `${fcCovered ? `${(fcMs / myMs).toFixed(1)}x` : "-"} |`,
    );
    console.log(
      `| ${increments} increment${increments === 1 ? "" : "s"} each: distinct states/s | ` +
        `${fmt(myRate)} | ${fmt(fcRate)} | ${(myRate / fcRate).toFixed(1)}x |`,
    );
  }
  console.log(
    `\nexplorer fingerprint states per CPU-second while exploring (by increments): ${
      stateRates.join(", ")
    }`,
  );
}

if (import.meta.main) await table();
