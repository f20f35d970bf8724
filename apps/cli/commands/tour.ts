/**
 * DOC: dmalab tour
 *
 * The main job (`npm start`). First the access-mechanism apps (apps/*), each
 * on its own world on the default machine, with their summary table; then
 * the core stops, each of which builds a world, runs a scenario and checks
 * that the model found what the kernel would find. Deliberately broken
 * scenarios (the lockdep AB-BA stop, app negative controls) are expected to
 * produce their report: the tour fails (exit 1) only when something does not
 * behave as the kernel would. The report goes to out/tour unless told
 * otherwise.
 *
 * @module
 */
import { Kernel, RandomPolicy, type TraceEvent, WaitQueueHead } from "@dmalab/kernel";
import { explore, getScenario } from "@dmalab/explorer";
import { calcMapTypeAndDist, defaultMachine, mapTypeName, type PciFabric } from "@dmalab/pci-p2p";
import type { AppRun } from "@dmalab/app-kit";
import type { ReportTransfer } from "../report/topology_svg.ts";
import { apps } from "../apps.ts";
import { formatTable, SUMMARY_HEADERS, summaryRow, writeArtifacts } from "./app_output.ts";
import { parseSeed } from "./run.ts";
import { type Command, EXIT_OK, EXIT_VIOLATION, type Io, parseArgs } from "../io.ts";
import { lockdepDemo } from "./lockdep.ts";

/** One row of the tour's summary table, with what the stop adds to the report. */
export interface TourRow {
  /** Stop name. */
  stop: string;
  /** What it exercises. */
  exercises: string;
  /** What the model observed. */
  observed: string;
  /** True when that is what the kernel would do. */
  asExpected: boolean;
  /** Report material: the machine and transfers (p2pdma stop). */
  fabric?: PciFabric;
  /** Transfers to highlight in the report. */
  transfers?: ReportTransfer[];
  /** Trace events of the stop's run. */
  trace?: readonly TraceEvent[];
  /** Splats the stop's run recorded (full text). */
  splats?: string[];
}

async function schedulerStop(seed: number): Promise<TourRow> {
  // Two producers and a consumer on a wait queue under a seeded random
  // policy: the same seed gives the same interleaving, every time.
  let trace: readonly TraceEvent[] = [];
  const runOnce = async (): Promise<string> => {
    const w = new Kernel({ policy: new RandomPolicy(seed) });
    w.trace.enable();
    const wq = new WaitQueueHead(w.sched, "items");
    const items: string[] = [];
    const seen: string[] = [];
    for (const p of ["p1", "p2"]) {
      w.spawn(p, async () => {
        for (let i = 0; i < 3; i++) {
          await w.sched.preempt("produce");
          items.push(`${p}.${i}`);
          wq.wakeUp();
        }
      });
    }
    w.spawn("consumer", async () => {
      while (seen.length < 6) {
        await wq.waitEvent(() => items.length > 0);
        seen.push(items.shift()!);
      }
    });
    await w.run();
    trace = w.trace.events;
    return seen.join(" ");
  };
  const a = await runOnce();
  const b = await runOnce();
  return {
    stop: "scheduler",
    exercises: "deterministic scheduler, wait queues, seeded random policy",
    observed: a === b ? `same order twice: ${a}` : `orders differ: ${a} / ${b}`,
    asExpected: a === b,
    trace,
  };
}

async function lockdepStop(seed: number): Promise<TourRow> {
  const r = await lockdepDemo(seed);
  const found = r.reports.some((s) => s.includes("possible circular locking dependency"));
  return {
    stop: "lockdep AB-BA",
    exercises: "mutexes, lockdep dependency graph",
    observed: found
      ? `circular dependency reported, run ${r.deadlocked ? "deadlocked" : "completed"}`
      : "no report",
    asExpected: found && !r.deadlocked,
    splats: r.splats,
  };
}

function topologyStop(): TourRow {
  // The default machine: GPU and NIC under one PCIe switch, a second NIC on
  // another root port of an AMD Zen host. drivers/pci/p2pdma.c routes the
  // first pair through the switch (BUS_ADDR) and the second through the
  // host bridge, which AMD family >= 0x17 supports (THRU_HOST_BRIDGE).
  const world = new Kernel();
  const m = defaultMachine(world);
  const local = calcMapTypeAndDist(m.gpu, m.nic, false);
  const remote = calcMapTypeAndDist(m.gpu, m.nic2, false);
  const localName = mapTypeName(local.mapType);
  const remoteName = mapTypeName(remote.mapType);
  return {
    stop: "p2pdma",
    exercises: "PCI topology, pci_p2pdma_distance and map type",
    observed:
      `gpu->nic ${localName} (distance ${local.dist}), gpu->nic2 ${remoteName} (distance ${remote.dist})`,
    asExpected: localName === "BUS_ADDR" && remoteName === "THRU_HOST_BRIDGE",
    fabric: m.fabric,
    transfers: [
      { label: "gpu->nic", src: m.gpu, dst: m.nic, mapType: localName, ats: true, bytes: 0 },
      { label: "gpu->nic2", src: m.gpu, dst: m.nic2, mapType: remoteName, ats: true, bytes: 0 },
    ],
  };
}

async function explorerStop(): Promise<TourRow> {
  // A racy counter must be found; the mutex-protected one must be clean
  // within the same preemption bound.
  const racy = await explore(getScenario("counter-race")!, { bound: 2 });
  const locked = await explore(getScenario("counter-mutex")!, { bound: 2 });
  const found = racy.failure !== null;
  const clean = locked.failure === null && locked.complete;
  return {
    stop: "explorer",
    exercises: "interleaving explorer: bounded DFS with sleep sets",
    observed: `race ${found ? "found" : "missed"} in ${racy.schedules} schedule(s); ` +
      `mutex version ${clean ? "clean" : "FAILED"} over ${locked.schedules} schedule(s)`,
    asExpected: found && clean,
  };
}

/** Runs every stop. */
export async function runTour(seed = 1): Promise<TourRow[]> {
  return [
    await schedulerStop(seed),
    await lockdepStop(seed),
    topologyStop(),
    await explorerStop(),
  ];
}

/** Runs every access-mechanism app on the default machine. */
export async function runTourApps(
  seed = 1,
  progress?: (line: string) => void,
): Promise<{ name: string; run: AppRun }[]> {
  const out: { name: string; run: AppRun }[] = [];
  for (const app of apps) {
    progress?.(`tour: ${app.name} (${app.mechanism})`);
    out.push({
      name: app.name,
      run: await app.run({ seed, ...(progress ? { progress } : {}) }),
    });
  }
  return out;
}

export { formatTable };

/** Where the tour writes its report when `--report` is not given: the repo's out/tour. */
export const DEFAULT_TOUR_REPORT: string = new URL("../../../out/tour", import.meta.url).pathname;

const STOP_HEADERS = ["stop", "exercises", "observed", "verdict"];

/** `dmalab tour`. */
export const tourCommand: Command = {
  name: "tour",
  summary: "run the five access-mechanism apps and the core stops; print the summary (main job)",
  usage: [
    "usage: dmalab tour [--seed N] [--json] [--report DIR] [--no-report] [--trace FILE] [--ftrace FILE]",
    "",
    "Runs every access-mechanism app on the default machine and prints the summary",
    "table (mechanism, exporter, importer, path, ATS, bytes verified, rule",
    "violations), then the core stops (scheduler, lockdep, p2pdma, explorer), then",
    "where the report is. Exits 0 when everything behaves as the kernel would, 1",
    "otherwise. Findings a run sets out to show (lockdep's AB-BA splat, a negative",
    "control) are expected and do not fail the tour.",
    "--report DIR writes DIR/index.html (default: out/tour/index.html in the repo);",
    "--no-report skips it. --trace/--ftrace write every app's trace.",
  ].join("\n"),
  async run(args: string[], io: Io): Promise<number> {
    const { flags } = parseArgs(args, ["json", "no-report"], [
      "seed",
      "report",
      "trace",
      "ftrace",
    ]);
    const seed = parseSeed(flags.seed);
    const progress = io.isTty && !flags.json ? (l: string) => io.err(`\r\x1b[K${l}`) : undefined;
    const runs = await runTourApps(seed, progress);
    progress?.("tour: core stops");
    const rows = await runTour(seed);
    if (progress) io.err("\r\x1b[K");
    const appsOk = runs.every(({ run }) => run.result.ok);
    const ok = appsOk && rows.every((r) => r.asExpected);
    const stopRows = rows.map((
      r,
    ) => [r.stop, r.exercises, r.observed, r.asExpected ? "as kernel" : "MISMATCH"]);
    const reportDir = flags["no-report"]
      ? undefined
      : typeof flags.report === "string"
      ? flags.report
      : DEFAULT_TOUR_REPORT;
    const written = await writeArtifacts(runs, {
      ...(reportDir ? { report: reportDir } : {}),
      ...(typeof flags.trace === "string" ? { trace: flags.trace } : {}),
      ...(typeof flags.ftrace === "string" ? { ftrace: flags.ftrace } : {}),
    }, {
      title: "dmalab tour",
      stops: { headers: STOP_HEADERS, rows: stopRows },
      splats: rows.flatMap((r) => r.splats ?? []),
      transfers: rows.flatMap((r) => r.transfers ?? []),
    });
    const reportPath = written.report ?? null;
    if (flags.json) {
      const stops = rows.map((r) => ({
        stop: r.stop,
        exercises: r.exercises,
        observed: r.observed,
        asExpected: r.asExpected,
      }));
      io.out(
        JSON.stringify(
          {
            ok,
            apps: runs.map(({ run }) => run.result),
            stops,
            report: reportPath,
            artifacts: written,
          },
          null,
          2,
        ) + "\n",
      );
    } else {
      io.out(
        formatTable(
          ["app", ...SUMMARY_HEADERS],
          runs.map(({ name, run }) => [name, ...summaryRow(run.result)]),
        ) + "\n\n",
      );
      io.out(formatTable(STOP_HEADERS, stopRows) + "\n");
      const good = runs.filter(({ run }) => run.result.ok).length +
        rows.filter((r) => r.asExpected).length;
      io.out(
        `\ntour: ${good}/${runs.length + rows.length} apps and stops behave as the kernel would; ${
          runs.reduce((n, { run }) => n + run.result.bytesVerified, 0)
        } bytes verified end to end\n`,
      );
      io.out("details: dmalab run APP (APP: " + apps.map((a) => a.name).join(", ") + ")\n");
      const cwd = `${Deno.cwd()}/`;
      for (const [k, p] of Object.entries(written)) {
        io.out(`${k}: ${p.startsWith(cwd) ? p.slice(cwd.length) : p}\n`);
      }
    }
    return ok ? EXIT_OK : EXIT_VIOLATION;
  },
};
