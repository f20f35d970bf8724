/**
 * @dmalab/explorer: runs the locking question instead of arguing it. A
 * scenario (tasks on a fresh {@linkcode Kernel} plus invariants) is run under
 * many schedules: systematically (depth-first over the scheduler's decision
 * points with a preemption bound and sleep-set partial-order reduction) or
 * with PCT (random priorities and d-1 change points). Every run is replayable
 * from its printed schedule string; a failure comes back shrunk, with its
 * ftrace text, Chrome/Perfetto JSON, dmesg and the exact
 * `dmalab explore SCENARIO --replay SCHEDULE` command.
 *
 * @example
 * ```ts
 * import { explore, getScenario, replay } from "@dmalab/explorer";
 * const result = await explore(getScenario("counter-race")!, { bound: 2 });
 * result.failure?.message; // "lost update: counter is 1 after 2 completed increments"
 * const again = await replay(getScenario("counter-race")!, result.failure!.schedule);
 * again.ftrace === result.failure!.ftrace; // true
 * ```
 *
 * @module
 */
export * from "./scenario.ts";
export * from "./schedule.ts";
export * from "./engine.ts";
export * from "./strategies.ts";
export * from "./explore.ts";
export * from "./scenarios/mod.ts";
export * from "./cli.ts";
