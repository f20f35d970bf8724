/**
 * DOC: dma-buf scenarios for the explorer
 *
 * Concurrency scenarios in the shape `@dmalab/explorer`'s `Scenario` takes
 * (a name, a deterministic `build(world)` that spawns tasks, and checks),
 * declared structurally so this package does not depend on the explorer;
 * apps register them (`registerScenario`).
 *
 * `fence-signalling-lockdep` is the bug the fence signalling annotations
 * exist to catch (drivers/dma-buf/dma-fence.c, `dma_fence_begin_signalling`):
 * a task holds a mutex while it waits on a fence, and the code that signals
 * that fence takes the same mutex inside its signalling critical section.
 * If the waiter holds the mutex first, the signaller can never signal. The
 * run need not deadlock for lockdep to see it: the wait records
 * mutex -> dma_fence_map, the signalling path records dma_fence_map -> mutex,
 * and the second edge closes the cycle. `fence-signalling-ordered` is the
 * fix (the mutex is dropped before waiting) and must stay clean.
 *
 * Locking rules: each scenario's tasks take the mutex with `Mutex.lock`
 * (a sleeping lock) and wait on the fence with `DmaFence.wait`, whose
 * `__dma_fence_might_wait` annotation is what lockdep reasons about.
 *
 * @module
 */
import { type Kernel, type KernelOptions, Mutex } from "@dmalab/kernel";
import { dmaFenceBeginSignalling, dmaFenceEndSignalling } from "./fence/signalling.ts";
import { DmaFence, dmaFenceContextAlloc } from "./fence/dma_fence.ts";

/** A scenario as `@dmalab/explorer` runs it (structurally its `Scenario`). */
export interface DmaBufScenario<S> {
  /** Name on the `dmalab explore` command line. */
  readonly name: string;
  /** One line for listings. */
  readonly description: string;
  /** Whether the explorer must find a bug (`bug`) or report it clean. */
  readonly expect: "clean" | "bug";
  /** Options for each run's world. */
  readonly worldOptions?: Omit<KernelOptions, "policy">;
  /** Spawns the tasks; returns the state the checks read. */
  build(world: Kernel): S;
  /** What must hold once every task has ended. */
  check?(world: Kernel, state: S): string[];
}

/** Shared state of the fence signalling scenarios. */
export interface FenceSignallingState {
  /** The fence the waiter waits on. */
  readonly fence: DmaFence;
  /** True once the waiter's wait returned. */
  waited: boolean;
}

const fenceOps = {
  getDriverName: () => "dmalab",
  getTimelineName: () => "scenario",
};

function fenceSignalling(holdWhileWaiting: boolean): DmaBufScenario<FenceSignallingState> {
  return {
    name: holdWhileWaiting ? "fence-signalling-lockdep" : "fence-signalling-ordered",
    description: holdWhileWaiting
      ? "a task waits on a fence holding a mutex that the signalling path takes inside dma_fence_begin_signalling: lockdep reports the cycle"
      : "the same pair, but the waiter drops the mutex before waiting: no report",
    expect: holdWhileWaiting ? "bug" : "clean",
    worldOptions: { memory: { ram: [] } },
    build(world: Kernel): FenceSignallingState {
      const lock = new Mutex(world, "driver->lock");
      const fence = new DmaFence(world, fenceOps, dmaFenceContextAlloc(world, 1), 1);
      const state: FenceSignallingState = { fence, waited: false };
      world.spawn("waiter", async () => {
        await lock.lock();
        if (!holdWhileWaiting) lock.unlock();
        await fence.wait(false);
        state.waited = true;
        if (holdWhileWaiting) lock.unlock();
      });
      world.spawn("signaller", async () => {
        const cookie = dmaFenceBeginSignalling(world);
        await lock.lock();
        fence.signal();
        lock.unlock();
        dmaFenceEndSignalling(world, cookie);
      });
      return state;
    },
    check(_world: Kernel, state: FenceSignallingState): string[] {
      return state.waited ? [] : ["the waiter never saw the fence signalled"];
    },
  };
}

/**
 * The dma-buf scenarios, issue 9's scenario 4 among them.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaBufScenarios } from "@dmalab/dma-buf";
 * const s = dmaBufScenarios().find((x) => x.name === "fence-signalling-lockdep")!;
 * const world = new Kernel({ ...s.worldOptions, strict: false });
 * s.build(world);
 * // Run to block: the waiter takes the mutex first, so this run deadlocks too.
 * await world.run().catch(() => {});
 * world.dmesg.includes("possible circular locking dependency detected"); // true
 * ```
 */
export function dmaBufScenarios(): DmaBufScenario<FenceSignallingState>[] {
  return [fenceSignalling(true), fenceSignalling(false)];
}
