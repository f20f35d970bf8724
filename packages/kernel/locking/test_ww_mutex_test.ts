// Port of kernel/locking/test-ww_mutex.c, case by case, for both the
// Wound-Wait (ww_class) and Wait-Die (wd_class) algorithms, under FIFO and
// seeded random schedules. Sizes are reduced (16 locks, 4 workers, a 100 ms
// virtual stress window) but the logic is the kernel's.
//
// Busy-wait loops (`cond_resched()` spinning on a trylock or on jiffies)
// advance virtual time by 10 µs per turn: the scheduler's clock only moves
// when every task sleeps, so a loop that never sleeps would never see
// `jiffies` change.
import { ok, strictEqual } from "node:assert/strict";
import fc from "fast-check";
import { Errno } from "../errno.ts";
import { Completion } from "../sched/completion.ts";
import { Prng, RandomPolicy, type SchedPolicy } from "../sched/policy.ts";
import { Kernel } from "../world.ts";
import { WwAcquireCtx, WwClass, WwMutex } from "./ww_mutex.ts";

const POLICIES: [string, () => SchedPolicy | undefined][] = [
  ["fifo", () => undefined],
  ["random:1", () => new RandomPolicy(1)],
  ["random:7", () => new RandomPolicy(7)],
  ["random:42", () => new RandomPolicy(42)],
];

function world(policy: SchedPolicy | undefined): Kernel {
  return policy ? new Kernel({ policy }) : new Kernel();
}

function classes(): [string, WwClass][] {
  return [
    ["ww (wound)", new WwClass("ww_class")],
    ["ww (die)", new WwClass("wd_class", { waitDie: true })],
  ];
}

const TEST_MTX_SPIN = 1;
const TEST_MTX_TRY = 2;
const TEST_MTX_CTX = 4;

/** `__test_mutex`: the worker must not get the mutex while the main task holds it. */
async function testMutex(w: Kernel, cls: WwClass, flags: number): Promise<number> {
  const sched = w.sched;
  const TIMEOUT = Math.floor(sched.hz / 16);
  const mutex = new WwMutex(w, cls, "mtx.mutex");
  const ready = new Completion(sched, "ready");
  const go = new Completion(sched, "go");
  const done = new Completion(sched, "done");
  let ret = 0;
  w.spawn("test_mutex_work", async () => {
    ready.complete();
    await go.waitForCompletion();
    if (flags & TEST_MTX_TRY) {
      while (!mutex.trylock(null)) await sched.sleepNs(10_000, "cond_resched");
    } else {
      await mutex.lock(null);
    }
    done.complete();
    mutex.unlock();
  }, { kind: "work" });
  w.spawn("test_mutex", async () => {
    const ctx = flags & TEST_MTX_CTX ? new WwAcquireCtx(w, cls) : null;
    await ready.waitForCompletion();
    strictEqual(await mutex.lock(ctx), 0);
    go.complete();
    if (flags & TEST_MTX_SPIN) {
      const timeout = sched.jiffies + TIMEOUT;
      ret = 0;
      do {
        if (done.done) {
          ret = -Errno.EINVAL;
          break;
        }
        await sched.sleepNs(10_000, "cond_resched");
      } while (sched.jiffies < timeout);
    } else {
      ret = await done.waitForCompletionTimeout(TIMEOUT);
    }
    mutex.unlock();
    ctx?.fini();
  });
  await w.run();
  return ret ? -Errno.EINVAL : 0;
}

/** `test_aa`: a context cannot take its own lock again; -EALREADY. */
async function testAa(w: Kernel, cls: WwClass, trylock: boolean): Promise<void> {
  await w.runTask("test_aa", async () => {
    const mutex = new WwMutex(w, cls, "mutex");
    const ctx = new WwAcquireCtx(w, cls);
    if (!trylock) strictEqual(await mutex.lock(ctx), 0);
    else ok(mutex.trylock(ctx), "initial trylock");
    strictEqual(mutex.trylock(null), false, "trylocked itself without context");
    strictEqual(mutex.trylock(ctx), false, "trylocked itself with context");
    strictEqual(await mutex.lock(ctx), -Errno.EALREADY);
    strictEqual(ctx.acquired, 1, "-EALREADY changes nothing");
    strictEqual(mutex.ctx, ctx);
    mutex.unlock();
    ctx.fini();
  });
}

/** `test_abba`: without resolve one side sees -EDEADLK; with resolve both finish. */
async function testAbba(
  w: Kernel,
  cls: WwClass,
  trylock: boolean,
  resolve: boolean,
): Promise<void> {
  const a = new WwMutex(w, cls, "a_mutex");
  const b = new WwMutex(w, cls, "b_mutex");
  const aReady = new Completion(w.sched, "a_ready");
  const bReady = new Completion(w.sched, "b_ready");
  let result = 0;
  let err = 0;
  const side = async (
    mine: WwMutex,
    other: WwMutex,
    mineReady: Completion,
    otherReady: Completion,
  ) => {
    const ctx = new WwAcquireCtx(w, cls);
    if (!trylock) strictEqual(await mine.lock(ctx), 0);
    else ok(mine.trylock(ctx));
    strictEqual(mine.ctx, ctx);
    mineReady.complete();
    await otherReady.waitForCompletion();
    let e = await other.lock(ctx);
    if (resolve && e === -Errno.EDEADLK) {
      mine.unlock();
      await other.lockSlow(ctx);
      e = await mine.lock(ctx);
    }
    if (!e) other.unlock();
    mine.unlock();
    ctx.fini();
    return e;
  };
  w.spawn("test_abba_work", async () => {
    result = await side(b, a, bReady, aReady);
  }, { kind: "work" });
  w.spawn("test_abba", async () => {
    err = await side(a, b, aReady, bReady);
  });
  await w.run();
  if (resolve) {
    strictEqual(err, 0, "failed to resolve ABBA deadlock (A)");
    strictEqual(result, 0, "failed to resolve ABBA deadlock (B)");
  } else {
    ok(
      err === -Errno.EDEADLK || result === -Errno.EDEADLK,
      `missed ABBA deadlock ${err} ${result}`,
    );
  }
  ok(!a.isLocked() && !b.isLocked());
}

/** `__test_cycle`: n workers in a ring each hold one lock and want the next. */
async function testCycle(w: Kernel, cls: WwClass, nthreads: number): Promise<void> {
  const mutexes = Array.from({ length: nthreads }, () => new WwMutex(w, cls, "a_mutex"));
  const bSignal = Array.from(
    { length: nthreads },
    (_, n) => new Completion(w.sched, `b_signal${n}`),
  );
  const results: number[] = new Array(nthreads).fill(0);
  for (let n = 0; n < nthreads; n++) {
    const aMutex = mutexes[n]!;
    const bMutex = mutexes[(n + 1) % nthreads]!;
    const aSignal = bSignal[(n + nthreads - 1) % nthreads]!;
    w.spawn(`test_cycle_work${n}`, async () => {
      const ctx = new WwAcquireCtx(w, cls);
      strictEqual(await aMutex.lock(ctx), 0);
      aSignal.complete();
      await bSignal[n]!.waitForCompletion();
      let err = await bMutex.lock(ctx);
      let erra = 0;
      if (err === -Errno.EDEADLK) {
        err = 0;
        aMutex.unlock();
        await bMutex.lockSlow(ctx);
        erra = await aMutex.lock(ctx);
      }
      if (!err) bMutex.unlock();
      if (!erra) aMutex.unlock();
      ctx.fini();
      results[n] = err || erra;
    }, { kind: "work" });
  }
  await w.run();
  for (let n = 0; n < nthreads; n++) {
    strictEqual(results[n], 0, `cyclic deadlock not resolved [${n}/${nthreads}]`);
  }
  for (const m of mutexes) m.destroy();
}

/** `get_random_order`. */
function randomOrder(rng: Prng, count: number): number[] {
  const order = Array.from({ length: count }, (_, n) => n);
  for (let n = count - 1; n > 1; n--) {
    const r = rng.below(n + 1);
    if (r !== n) [order[n], order[r]] = [order[r]!, order[n]!];
  }
  return order;
}

const STRESS_INORDER = 1;
const STRESS_REORDER = 2;
const STRESS_ONE = 4;

interface StressCheck {
  holder: (string | null)[];
  rounds: number;
  backoffs: number;
}

/** `stress()`: workers lock sets of locks under contention until the timeout. */
async function stress(
  w: Kernel,
  cls: WwClass,
  nlocks: number,
  nthreads: number,
  flags: number,
): Promise<StressCheck> {
  const sched = w.sched;
  const rng = new Prng(w.seed * 7919 + flags);
  const locks = Array.from({ length: nlocks }, () => new WwMutex(w, cls, "stress_lock"));
  const check: StressCheck = { holder: new Array(nlocks).fill(null), rounds: 0, backoffs: 0 };
  const timeout = sched.jiffies + Math.floor(sched.hz / 10);
  const timedOut = () => sched.jiffies > timeout;
  const take = (i: number, who: string) => {
    strictEqual(check.holder[i], null, `lock ${i} held twice`);
    check.holder[i] = who;
  };
  const drop = (i: number) => {
    check.holder[i] = null;
  };
  const dummyLoad = () => sched.sleepNs(1_000_000 + rng.below(1_000_000), "usleep_range");

  const inorder = async (who: string) => {
    const order = randomOrder(rng, nlocks);
    do {
      let contended = -1;
      const ctx = new WwAcquireCtx(w, cls);
      let err = 0;
      for (;;) {
        err = 0;
        let n = 0;
        for (; n < nlocks; n++) {
          if (n === contended) continue;
          err = await locks[order[n]!]!.lock(ctx);
          if (err < 0) break;
          take(order[n]!, who);
        }
        if (!err) {
          await dummyLoad();
          check.rounds++;
        }
        if (contended > n) {
          drop(order[contended]!);
          locks[order[contended]!]!.unlock();
        }
        contended = n;
        while (n--) {
          drop(order[n]!);
          locks[order[n]!]!.unlock();
        }
        if (err === -Errno.EDEADLK) check.backoffs++;
        if (err === -Errno.EDEADLK && !timedOut()) {
          await locks[order[contended]!]!.lockSlow(ctx);
          take(order[contended]!, who);
          continue;
        }
        break;
      }
      ctx.fini();
      if (err && err !== -Errno.EDEADLK) throw new Error(`stress_inorder failed with ${err}`);
      if (err) break;
    } while (!timedOut());
  };

  const reorder = async (who: string) => {
    const order = randomOrder(rng, nlocks);
    const list = order.map((i) => i).reverse(); // list_add pushes at the head
    do {
      const ctx = new WwAcquireCtx(w, cls);
      for (let k = 0; k < list.length; k++) {
        const i = list[k]!;
        const err = await locks[i]!.lock(ctx);
        if (!err) {
          take(i, who);
          continue;
        }
        for (let j = k - 1; j >= 0; j--) {
          drop(list[j]!);
          locks[list[j]!]!.unlock();
        }
        strictEqual(err, -Errno.EDEADLK, `stress_reorder failed with ${err}`);
        check.backoffs++;
        await locks[i]!.lockSlow(ctx);
        take(i, who);
        list.splice(k, 1);
        list.unshift(i); // list_move: restart from the head
        k = 0;
      }
      await dummyLoad();
      check.rounds++;
      for (const i of list) {
        drop(i);
        locks[i]!.unlock();
      }
      ctx.fini();
    } while (!timedOut());
  };

  const one = async (who: string) => {
    const i = rng.below(nlocks);
    do {
      strictEqual(await locks[i]!.lock(null), 0);
      take(i, who);
      await dummyLoad();
      check.rounds++;
      drop(i);
      locks[i]!.unlock();
    } while (!timedOut());
  };

  let count = 0;
  for (let n = 0; count < nthreads; n++) {
    const fn = (n & 3) === 0 && flags & STRESS_INORDER
      ? inorder
      : (n & 3) === 1 && flags & STRESS_REORDER
      ? reorder
      : (n & 3) === 2 && flags & STRESS_ONE
      ? one
      : null;
    if (!fn) continue;
    const who = `stress${count++}`;
    w.spawn(who, () => fn(who), { kind: "work" });
  }
  await w.run();
  for (const l of locks) {
    ok(!l.isLocked());
    l.destroy();
  }
  return check;
}

for (const [policyName, mkPolicy] of POLICIES) {
  Deno.test(`test-ww_mutex (${policyName})`, async (t) => {
    for (const [label, cls] of classes()) {
      await t.step(`${label}: test_mutex`, async () => {
        for (let flags = 0; flags < 8; flags++) {
          strictEqual(
            await testMutex(world(mkPolicy()), cls, flags),
            0,
            `mutual exclusion failure flags=${flags}`,
          );
        }
      });
      await t.step(`${label}: test_aa`, async () => {
        await testAa(world(mkPolicy()), cls, false);
        await testAa(world(mkPolicy()), cls, true);
      });
      await t.step(`${label}: test_abba`, async () => {
        for (let i = 0; i < 4; i++) await testAbba(world(mkPolicy()), cls, !!(i & 1), !!(i & 2));
      });
      await t.step(`${label}: test_cycle`, async () => {
        for (let n = 2; n <= 5; n++) await testCycle(world(mkPolicy()), cls, n);
      });
      await t.step(`${label}: stress inorder / reorder / all`, async () => {
        const a = await stress(world(mkPolicy()), cls, 16, 4, STRESS_INORDER);
        ok(a.rounds > 0 && a.backoffs > 0, `inorder rounds=${a.rounds} backoffs=${a.backoffs}`);
        const b = await stress(world(mkPolicy()), cls, 16, 4, STRESS_REORDER);
        ok(b.rounds > 0 && b.backoffs > 0, `reorder rounds=${b.rounds} backoffs=${b.backoffs}`);
        const c = await stress(
          world(mkPolicy()),
          cls,
          64,
          6,
          STRESS_INORDER | STRESS_REORDER | STRESS_ONE,
        );
        ok(c.rounds > 0);
      });
    }
  });
}

Deno.test("property: random-order ww transactions always complete (both classes, random schedules)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.boolean(),
      fc.integer({ min: 0, max: 0xffff }),
      fc.array(fc.uniqueArray(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 6 }), {
        minLength: 2,
        maxLength: 5,
      }),
      async (waitDie, seed, programs) => {
        const w = new Kernel({ policy: new RandomPolicy(seed) });
        const cls = new WwClass("prop_ww", { waitDie });
        const locks = Array.from({ length: 6 }, () => new WwMutex(w, cls, "prop_lock"));
        const holder: (number | null)[] = new Array(6).fill(null);
        const completed: boolean[] = programs.map(() => false);
        programs.forEach((prog, id) => {
          w.spawn(`tx${id}`, async () => {
            const ctx = new WwAcquireCtx(w, cls);
            let contended: number | null = null;
            for (;;) {
              const taken: number[] = [];
              if (contended !== null) {
                await locks[contended]!.lockSlow(ctx);
                taken.push(contended);
              }
              let failed: number | null = null;
              for (const i of prog) {
                if (i === contended) continue;
                const r: number = await locks[i]!.lock(ctx);
                if (r === -Errno.EDEADLK) {
                  failed = i;
                  break;
                }
                strictEqual(r, 0);
                taken.push(i);
                await w.sched.preempt("work");
              }
              if (failed === null) {
                for (const i of taken) {
                  strictEqual(holder[i], null);
                  holder[i] = id;
                }
                await w.sched.preempt("critical section");
                for (const i of taken) {
                  holder[i] = null;
                  locks[i]!.unlock();
                }
                break;
              }
              for (const i of taken) locks[i]!.unlock();
              contended = failed;
            }
            ctx.fini();
            completed[id] = true;
          });
        });
        await w.run();
        ok(completed.every(Boolean));
        ok(locks.every((l) => !l.isLocked()));
        strictEqual(w.bugs.length, 0);
      },
    ),
    { numRuns: 60 },
  );
});
