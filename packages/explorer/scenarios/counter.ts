/**
 * DOC: lost update on a shared counter
 *
 * The textbook data race: two tasks each load a shared counter, then store
 * the loaded value plus one, with a preemption point at the load and at the
 * store (where KCSAN would place its watchpoints). When one task is
 * preempted between its load and its store, the other task's increment is
 * lost. {@linkcode counterRace} has the bug; {@linkcode counterMutex} takes a
 * {@linkcode Mutex} (`mutex_lock`/`mutex_unlock`, kernel/locking/mutex.c)
 * around the load and store, and is clean.
 *
 * Locking rules: in `counter-mutex`, `value` and `done` are written only with
 * the mutex held. The invariant (`value === done`: every finished increment
 * is visible) is checked at every scheduling point; each step declares the
 * object it touches (the counter for load and store, the mutex for lock).
 *
 * @module
 */
import { type Kernel, Mutex } from "@dmalab/kernel";
import { NO_RAM, type Scenario } from "../scenario.ts";

/** Shared state of the counter scenarios. */
export interface CounterState {
  /** Object id of the counter (for partial-order reduction). */
  readonly id: number;
  /** The counter. */
  value: number;
  /** Increments that completed their store. */
  done: number;
  /** Value each task loaded (by pid), for the state fingerprint. */
  readonly loaded: number[];
  /** Tasks spawned. */
  readonly tasks: number;
}

/** Options for {@linkcode counterScenario}. */
export interface CounterOptions {
  /** Name in the registry. */
  name: string;
  /** Tasks incrementing. Default 2. */
  tasks?: number;
  /** Increments per task. Default 1. */
  increments?: number;
  /** Hold a mutex around each load and store. Default false. */
  locked?: boolean;
}

/**
 * Builds a counter scenario: `tasks` tasks each doing `increments`
 * load/store increments, with or without a mutex.
 *
 * @example
 * ```ts
 * import { counterScenario, explore } from "@dmalab/explorer";
 * const three = counterScenario({ name: "counter-3", tasks: 3 });
 * const r = await explore(three);
 * r.failure?.kind; // "invariant"
 * ```
 */
export function counterScenario(options: CounterOptions): Scenario<CounterState> {
  const tasks = options.tasks ?? 2;
  const increments = options.increments ?? 1;
  const locked = options.locked ?? false;
  return {
    name: options.name,
    description: locked
      ? `${tasks} tasks x ${increments} increments of a shared counter under a mutex: no update is lost`
      : `${tasks} tasks x ${increments} unlocked load/store increments of a shared counter: a lost update`,
    expect: locked ? "clean" : "bug",
    worldOptions: NO_RAM,
    build(world: Kernel): CounterState {
      const s: CounterState = { id: world.nextId(), value: 0, done: 0, loaded: [], tasks };
      const lock = locked ? new Mutex(world, "counter_lock") : null;
      const sched = world.sched;
      for (let i = 0; i < tasks; i++) {
        world.spawn(`inc${i}`, async (task) => {
          for (let n = 0; n < increments; n++) {
            if (lock) await lock.lock();
            await sched.preempt("load counter", s.id, "read");
            const v = s.value;
            s.loaded[task.pid] = v;
            await sched.preempt("store counter", s.id, "write");
            s.value = v + 1;
            s.done++;
            if (lock) lock.unlock();
          }
        });
      }
      return s;
    },
    invariants(_world: Kernel, s: CounterState): string[] {
      return s.value === s.done
        ? []
        : [`lost update: counter is ${s.value} after ${s.done} completed increments`];
    },
    check(_world: Kernel, s: CounterState): string[] {
      const want = tasks * increments;
      return s.value === want ? [] : [`counter ended at ${s.value}, expected ${want}`];
    },
    fingerprint(_world: Kernel, s: CounterState): number {
      // value, done and every loaded register, each < 64 for the shipped sizes
      let h = s.value * 64 + s.done;
      for (let pid = 1; pid < s.loaded.length; pid++) h = h * 31 + (s.loaded[pid] ?? 63);
      return h;
    },
  };
}

/** `counter-race`: two unlocked increments; the explorer must find the lost update. */
export const counterRace: Scenario<CounterState> = counterScenario({ name: "counter-race" });

/** `counter-mutex`: the same increments under a mutex; clean. */
export const counterMutex: Scenario<CounterState> = counterScenario({
  name: "counter-mutex",
  locked: true,
});
