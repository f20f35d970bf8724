/**
 * DOC: dmalab tour
 *
 * The main job (`npm start`). Each stop builds a world, runs a scenario and
 * checks that the model found what the kernel would find. Deliberately
 * broken scenarios (the lockdep AB-BA stop) are expected to produce their
 * report: the tour fails (exit 1) only when a stop does not behave as the
 * kernel would. Stops are added as packages land; the five access-mechanism
 * apps are the tour's final shape (see the repo README).
 *
 * @module
 */
import { Kernel, RandomPolicy, type TraceEvent, WaitQueueHead } from "@dmalab/kernel";
import { explore, getScenario } from "@dmalab/explorer";
import { calcMapTypeAndDist, defaultMachine, mapTypeName, type PciFabric } from "@dmalab/pci-p2p";
import { writeReport } from "../report/html.ts";
import type { ReportTransfer } from "../report/topology_svg.ts";
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

/** Formats rows as a fixed-width table. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

/** `dmalab tour`. */
export const tourCommand: Command = {
  name: "tour",
  summary: "run every scenario of the tour and print a summary table (the main job)",
  usage: [
    "usage: dmalab tour [--seed N] [--json] [--report DIR]",
    "",
    "Runs each stop of the tour on its own world and prints what the model",
    "observed. Exits 0 when every stop behaves as the kernel would, 1 otherwise.",
    "--report DIR writes DIR/index.html: topology with paths, timeline, summary, splats.",
  ].join("\n"),
  async run(args: string[], io: Io): Promise<number> {
    const { flags } = parseArgs(args, ["json"], ["seed", "report"]);
    const rows = await runTour(flags.seed === undefined ? 1 : Number(flags.seed));
    const ok = rows.every((r) => r.asExpected);
    let reportPath: string | null = null;
    if (typeof flags.report === "string") {
      const fabric = rows.find((r) => r.fabric)?.fabric;
      if (fabric) {
        reportPath = await writeReport(flags.report, {
          title: "dmalab tour",
          fabric,
          transfers: rows.flatMap((r) => r.transfers ?? []),
          summary: {
            headers: ["stop", "exercises", "observed", "verdict"],
            rows: rows.map((
              r,
            ) => [r.stop, r.exercises, r.observed, r.asExpected ? "as kernel" : "MISMATCH"]),
          },
          trace: rows.flatMap((r) => r.trace ?? []),
          splats: rows.flatMap((r) => r.splats ?? []),
        });
      }
    }
    if (flags.json) {
      const stops = rows.map((r) => ({
        stop: r.stop,
        exercises: r.exercises,
        observed: r.observed,
        asExpected: r.asExpected,
      }));
      io.out(JSON.stringify({ ok, stops, report: reportPath }, null, 2) + "\n");
    } else {
      io.out(
        formatTable(
          ["stop", "exercises", "observed", "verdict"],
          rows.map((
            r,
          ) => [r.stop, r.exercises, r.observed, r.asExpected ? "as kernel" : "MISMATCH"]),
        ) + "\n",
      );
      io.out(
        `\ntour: ${
          rows.filter((r) => r.asExpected).length
        }/${rows.length} stops behave as the kernel would\n`,
      );
      if (reportPath) io.out(`report: ${reportPath}\n`);
    }
    return ok ? EXIT_OK : EXIT_VIOLATION;
  },
};
