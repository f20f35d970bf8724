/**
 * DOC: AB-BA mutex deadlock
 *
 * Two tasks take two mutexes in opposite orders. When each holds its first
 * lock and waits for its second, neither can go on: the classic ABBA
 * deadlock. Lockdep (kernel/locking/lockdep.c) finds it without the bad
 * interleaving: one task recording A -> B and the other taking A while
 * holding B is enough for "possible circular locking dependency detected".
 * {@linkcode abbaLockdep} runs with lockdep on and is found as that report;
 * {@linkcode abbaDeadlock} runs with lockdep off, so only a schedule that
 * actually deadlocks shows it, and the scheduler reports the wait-for cycle.
 * {@linkcode abbaOrdered} takes the locks in one order and is clean.
 *
 * Locking rules: each task holds at most the two mutexes and releases them
 * in reverse order; the critical section touches no other shared state.
 *
 * @module
 */
import { type Kernel, Mutex } from "@dmalab/kernel";
import { NO_RAM, type Scenario } from "../scenario.ts";

function abba(ordered: boolean, world: Kernel): void {
  const a = new Mutex(world, "lock_A");
  const b = new Mutex(world, "lock_B");
  world.spawn("task1", async () => {
    await a.lock();
    await b.lock();
    b.unlock();
    a.unlock();
  });
  world.spawn("task2", async () => {
    const [first, second] = ordered ? [a, b] : [b, a];
    await first.lock();
    await second.lock();
    second.unlock();
    first.unlock();
  });
}

/** `abba-lockdep`: opposite lock orders with lockdep on; found as a lockdep splat. */
export const abbaLockdep: Scenario<void> = {
  name: "abba-lockdep",
  description: "two tasks take mutexes A and B in opposite orders; lockdep reports the inversion",
  expect: "bug",
  worldOptions: NO_RAM,
  build: (world: Kernel): void => abba(false, world),
};

/** `abba-deadlock`: the same with lockdep off; found as a real deadlock in some schedule. */
export const abbaDeadlock: Scenario<void> = {
  name: "abba-deadlock",
  description: "the same AB-BA pair with lockdep off: some schedule deadlocks",
  expect: "bug",
  worldOptions: { ...NO_RAM, lockdep: false },
  build: (world: Kernel): void => abba(false, world),
};

/** `abba-ordered`: both tasks take A then B; clean with lockdep on. */
export const abbaOrdered: Scenario<void> = {
  name: "abba-ordered",
  description: "both tasks take A then B: no deadlock, no lockdep report",
  expect: "clean",
  worldOptions: NO_RAM,
  build: (world: Kernel): void => abba(true, world),
};
