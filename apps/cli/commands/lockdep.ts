/**
 * DOC: dmalab lockdep
 *
 * Demonstrates @dmalab/kernel's lockdep: two tasks take two mutexes in
 * opposite orders at different times. This run does not deadlock (task2
 * starts after task1 released both), but lockdep records A -> B from task1
 * and then sees task2 take A while holding B, and prints the "possible
 * circular locking dependency" splat as kernel/locking/lockdep.c does.
 * Exit status 1: a rule violation was found.
 *
 * @module
 */
import { Kernel, Mutex } from "@dmalab/kernel";
import { type Command, EXIT_OK, EXIT_VIOLATION, type Io, parseArgs } from "../io.ts";

/** Result of the demo run. */
export interface LockdepDemoResult {
  /** Splats recorded (first lines). */
  reports: string[];
  /** The dmesg text of the run. */
  dmesg: string;
  /** Whether the run itself deadlocked (it does not). */
  deadlocked: boolean;
  /** Each splat's full text, as dmesg holds it. */
  splats: string[];
}

/** Runs the AB-BA scenario in a permissive world so the run completes. */
export async function lockdepDemo(seed = 1): Promise<LockdepDemoResult> {
  const w = new Kernel({ strict: false, seed });
  const a = new Mutex(w, "lock_A");
  const b = new Mutex(w, "lock_B");
  w.spawn("task1", async () => {
    await a.lock();
    await b.lock();
    b.unlock();
    a.unlock();
  });
  w.spawn("task2", async () => {
    await w.sched.msleep(1);
    await b.lock();
    await a.lock();
    a.unlock();
    b.unlock();
  });
  let deadlocked = false;
  try {
    await w.run();
  } catch {
    deadlocked = true;
  }
  const dmesg = w.dmesg.text();
  return {
    reports: w.bugs.map((b) => b.summary),
    dmesg,
    deadlocked,
    splats: w.bugs.length > 0 ? [dmesg] : [],
  };
}

/** `dmalab lockdep`. */
export const lockdepCommand: Command = {
  name: "lockdep",
  summary: "lockdep finds an AB-BA lock order from two tasks that did not deadlock",
  usage: [
    "usage: dmalab lockdep [--seed N] [--json]",
    "",
    "Runs two tasks: task1 takes lock_A then lock_B; later task2 takes lock_B then",
    "lock_A. The run completes, yet lockdep reports the possible circular locking",
    "dependency, as the kernel prints it. Exits 1 because a rule violation is found.",
  ].join("\n"),
  async run(args: string[], io: Io): Promise<number> {
    const { flags } = parseArgs(args, ["json"], ["seed"]);
    const r = await lockdepDemo(flags.seed === undefined ? 1 : Number(flags.seed));
    if (flags.json) {
      io.out(
        JSON.stringify(
          { violations: r.reports, deadlocked: r.deadlocked, dmesg: r.dmesg.split("\n") },
          null,
          2,
        ) + "\n",
      );
    } else {
      io.out(r.dmesg + "\n");
      io.out(
        `\nlockdep: ${r.reports.length} report(s); the run ${
          r.deadlocked ? "deadlocked" : "completed without deadlock"
        }\n`,
      );
    }
    return r.reports.length > 0 ? EXIT_VIOLATION : EXIT_OK;
  },
};
