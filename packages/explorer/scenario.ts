/**
 * DOC: scenarios and the registry
 *
 * A scenario is data: a name, how to populate a fresh world with tasks, and
 * what must hold while they run. The explorer builds a new
 * {@linkcode Kernel} for every run (with the scenario's world options and the
 * explorer's scheduling policy), calls {@linkcode Scenario.build}, and checks
 * {@linkcode Scenario.invariants} and `world.check()` at every scheduling
 * point. `build` must be deterministic: the same world gives the same tasks
 * in the same order, so a run is a pure function of its decisions.
 *
 * Locking rules for scenario authors: a step is the code a task runs between
 * two scheduling points. A step that touches shared state declares it at the
 * point that starts it (`world.sched.preempt(label, objectId, access)`; lock
 * primitives pass the lock's id), and touches only that object. A step that
 * declares nothing is treated as touching everything (never reordered).
 *
 * The registry holds the scenarios `dmalab explore` knows; the kernel-only
 * scenarios of this package are registered when the registry module loads,
 * and driver packages add theirs with {@linkcode registerScenario}.
 *
 * @module
 */
import type { Kernel, KernelOptions } from "@dmalab/kernel";

/**
 * World options for scenarios that touch no physical memory (locks, wait
 * queues, counters): a world without RAM, which is several times cheaper to
 * build than the default 8 GiB layout, and every run builds a world.
 */
export const NO_RAM: { readonly memory: { readonly ram: readonly [] } } = {
  memory: { ram: [] },
};

/** What a scenario is expected to show, for listings and tests. */
export type Expectation = "clean" | "bug";

/**
 * A concurrency scenario: tasks on a fresh world plus the properties that
 * must hold in every interleaving.
 *
 * `S` is whatever {@linkcode Scenario.build} returns (the scenario's shared
 * state); the checks receive it back.
 *
 * @example
 * ```ts
 * import type { Scenario } from "@dmalab/explorer";
 * const racy: Scenario<{ value: number; done: number; id: number }> = {
 *   name: "my-counter",
 *   description: "two unlocked increments",
 *   build(world) {
 *     const s = { value: 0, done: 0, id: world.nextId() };
 *     for (const n of ["a", "b"]) {
 *       world.spawn(n, async () => {
 *         await world.sched.preempt("load", s.id, "read");
 *         const v = s.value;
 *         await world.sched.preempt("store", s.id, "write");
 *         s.value = v + 1;
 *         s.done++;
 *       });
 *     }
 *     return s;
 *   },
 *   invariants: (_w, s) => s.value === s.done ? [] : [`lost update: ${s.value} != ${s.done}`],
 * };
 * ```
 */
export interface Scenario<S = unknown> {
  /** Name on the command line (`counter-race`). */
  readonly name: string;
  /** One line for `--list` and reports. */
  readonly description: string;
  /** Whether the scenario carries a known bug the explorer must find. */
  readonly expect?: Expectation;
  /** Options for each run's world (`strict`, `lockdep`, `variants`, `seed`). */
  readonly worldOptions?: Omit<KernelOptions, "policy">;
  /** Spawns the tasks on `world` and returns the shared state the checks read. */
  build(world: Kernel): S;
  /** Violations of the scenario's invariants; checked at every scheduling point. */
  invariants?(world: Kernel, state: S): string[];
  /** Violations of what must hold once every task has ended. */
  check?(world: Kernel, state: S): string[];
  /**
   * Scenario data that distinguishes states beyond the tasks' positions
   * (counter values, lock owners), for the distinct-state count.
   */
  fingerprint?(world: Kernel, state: S): string | number;
}

/**
 * A copy of `scenario` named `name` whose worlds run with the proposal or
 * version switches `variants` (merged over the scenario's own), for running
 * one scenario against each variant a package models
 * (`world.variant(key, fallback)`).
 *
 * @example
 * ```ts
 * import { counterRace, withVariants } from "@dmalab/explorer";
 * const v = withVariants(counterRace, "counter-race.v2", { "counter.impl": "v2" });
 * v.worldOptions?.variants; // { "counter.impl": "v2" }
 * ```
 */
export function withVariants<S>(
  scenario: Scenario<S>,
  name: string,
  variants: Record<string, string>,
  description: string = `${scenario.description} [${
    Object.entries(variants).map(([k, v]) => `${k}=${v}`).join(", ")
  }]`,
): Scenario<S> {
  const base = scenario.worldOptions ?? {};
  return {
    ...scenario,
    name,
    description,
    worldOptions: { ...base, variants: { ...(base.variants ?? {}), ...variants } },
  };
}

// deno-lint-ignore no-explicit-any
type AnyScenario = Scenario<any>;

const registry = new Map<string, AnyScenario>();

/**
 * Adds a scenario to the registry `dmalab explore` reads. Throws when the
 * name is taken or malformed.
 *
 * @example
 * ```ts
 * import { registerScenario, scenarios } from "@dmalab/explorer";
 * registerScenario({
 *   name: "doc-example-noop",
 *   description: "one task that does nothing",
 *   build(world) {
 *     world.spawn("t", async () => {});
 *   },
 * });
 * scenarios().some((s) => s.name === "doc-example-noop"); // true
 * ```
 */
// deno-lint-ignore no-explicit-any
export function registerScenario(scenario: Scenario<any>): void {
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(scenario.name)) {
    throw new TypeError(
      `registerScenario: name '${scenario.name}' must be lower-case letters, digits, '.', '_' or '-'`,
    );
  }
  if (registry.has(scenario.name)) {
    throw new TypeError(`registerScenario: a scenario named '${scenario.name}' is registered`);
  }
  registry.set(scenario.name, scenario);
}

/** Every registered scenario, in registration order. */
// deno-lint-ignore no-explicit-any
export function scenarios(): Scenario<any>[] {
  return [...registry.values()];
}

/** The scenario registered as `name`, or undefined. */
// deno-lint-ignore no-explicit-any
export function getScenario(name: string): Scenario<any> | undefined {
  return registry.get(name);
}
