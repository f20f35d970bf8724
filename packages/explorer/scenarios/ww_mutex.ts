/**
 * DOC: three ww_mutex lockers with backoff
 *
 * Three tasks each lock the same three ww_mutexes in a different order
 * (a-b-c, b-c-a, c-a-b) inside a `ww_acquire_ctx`, with the backoff of
 * Documentation/locking/ww-mutex-design.rst: on -EDEADLK unlock everything
 * held, sleep in `ww_mutex_lock_slow()` on the contended lock, then take the
 * rest. Whatever the schedule, no task deadlocks, every task completes, and
 * no two tasks are inside their critical sections on a shared lock at once.
 * Built for both classes: Wait-Die (`DEFINE_WD_CLASS`, the class dma_resv
 * uses) and Wound-Wait (`DEFINE_WW_CLASS`).
 *
 * Locking rules: a task touches `hits[i]` only while it holds lock `i`
 * through its context; the invariant checks that each lock's owner is the
 * task in the critical section.
 *
 * @module
 */
import { Errno, type Kernel, type Task, WwAcquireCtx, WwClass, WwMutex } from "@dmalab/kernel";
import { NO_RAM, type Scenario } from "../scenario.ts";

/** Shared state of the ww_mutex scenarios. */
export interface WwState {
  /** The locks. */
  readonly locks: readonly WwMutex[];
  /** Critical sections entered per lock. */
  readonly hits: number[];
  /** Tasks inside their critical section, with the locks they believe they hold. */
  readonly inside: Map<Task, readonly WwMutex[]>;
  /** -EDEADLK backoffs taken. */
  backoffs: number;
  /** Tasks that finished. */
  finished: number;
}

const ORDERS = [[0, 1, 2], [1, 2, 0], [2, 0, 1]] as const;

/**
 * `ww_acquire_init`, lock `objs` with -EDEADLK backoff, `ww_acquire_done`;
 * returns the context (kernel pattern from ww-mutex-design.rst).
 */
async function lockAll(world: Kernel, cls: WwClass, objs: readonly WwMutex[], s: WwState) {
  const ctx = new WwAcquireCtx(world, cls);
  let contended: WwMutex | null = null;
  for (;;) {
    const taken: WwMutex[] = [];
    if (contended) {
      await contended.lockSlow(ctx);
      taken.push(contended);
    }
    let failed: WwMutex | null = null;
    for (const o of objs) {
      if (o === contended) continue;
      const ret = await o.lock(ctx);
      if (ret === -Errno.EDEADLK) {
        failed = o;
        break;
      }
      if (ret !== 0) throw new Error(`ww_mutex_lock(${o.name}) returned ${ret}`);
      taken.push(o);
    }
    if (failed === null) break;
    s.backoffs++;
    for (const o of taken) o.unlock();
    contended = failed;
  }
  ctx.done();
  return ctx;
}

function wwScenario(name: string, waitDie: boolean): Scenario<WwState> {
  const kind = waitDie ? "wait-die" : "wound-wait";
  return {
    name,
    description:
      `three tasks lock three ww_mutexes (${kind}) in rotated orders with -EDEADLK backoff: ` +
      "no deadlock, every task completes",
    expect: "clean",
    worldOptions: NO_RAM,
    build(world: Kernel): WwState {
      const cls = new WwClass(waitDie ? "explore_wd_class" : "explore_ww_class", { waitDie });
      const locks = ["obj_a", "obj_b", "obj_c"].map((n) => new WwMutex(world, cls, n));
      const s: WwState = { locks, hits: [0, 0, 0], inside: new Map(), backoffs: 0, finished: 0 };
      ORDERS.forEach((order, i) => {
        const objs = order.map((k) => locks[k]!);
        world.spawn(`locker${i}`, async (task) => {
          const ctx = await lockAll(world, cls, objs, s);
          s.inside.set(task, objs);
          for (const o of objs) {
            await world.sched.preempt(`touch ${o.name}`, o.id, "write");
            s.hits[locks.indexOf(o)]!++;
          }
          s.inside.delete(task);
          for (const o of objs) o.unlock();
          ctx.fini();
          s.finished++;
        });
      });
      return s;
    },
    invariants(_world: Kernel, s: WwState): string[] {
      const bad: string[] = [];
      for (const [task, objs] of s.inside) {
        for (const o of objs) {
          if (o.owner !== task) {
            bad.push(`${task} is in its critical section but ${o.name} is owned by ${o.owner}`);
          }
        }
      }
      return bad;
    },
    check(_world: Kernel, s: WwState): string[] {
      const bad: string[] = [];
      if (s.finished !== 3) bad.push(`${s.finished} of 3 tasks finished`);
      s.hits.forEach((h, i) => {
        if (h !== 3) bad.push(`${s.locks[i]!.name} was entered ${h} times, expected 3`);
      });
      for (const l of s.locks) if (l.isLocked()) bad.push(`${l.name} still locked at the end`);
      return bad;
    },
    fingerprint(_world: Kernel, s: WwState): string {
      const owners = s.locks.map((l) => l.owner?.pid ?? 0).join(",");
      return `${owners}|${s.hits.join(",")}|${s.backoffs}`;
    },
  };
}

/** `ww-wait-die`: the three lockers with a Wait-Die class (as reservation_ww_class). */
export const wwWaitDie: Scenario<WwState> = wwScenario("ww-wait-die", true);

/** `ww-wound-wait`: the three lockers with a Wound-Wait class. */
export const wwWoundWait: Scenario<WwState> = wwScenario("ww-wound-wait", false);
