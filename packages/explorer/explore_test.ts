import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { KernelError } from "@dmalab/kernel";
import {
  counterScenario,
  explore,
  type ExploreResult,
  formatSchedule,
  getScenario,
  PctStrategy,
  replay,
  runScenario,
  type Scenario,
  ScheduleError,
  trimDefaults,
  withVariants,
  wwWaitDie,
  wwWoundWait,
} from "./mod.ts";

function sc(name: string): Scenario {
  const s = getScenario(name);
  if (!s) throw new Error(`scenario ${name} not registered`);
  return s;
}

function counts(r: ExploreResult): [number, number, number] {
  return [r.schedules, r.states, r.pruned];
}

/** Adds `noise` tasks that only touch their own objects (independent of everything). */
// deno-lint-ignore no-explicit-any
function withNoise(base: Scenario<any>, noise: number, points: number): Scenario<unknown> {
  return {
    ...base,
    name: `${base.name}-noise`,
    build(world) {
      const s = base.build(world);
      for (let i = 0; i < noise; i++) {
        const id = world.nextId();
        world.spawn(`noise${i}`, async () => {
          for (let k = 0; k < points; k++) await world.sched.preempt(`own${k}`, id, "write");
        });
      }
      return s;
    },
  };
}

Deno.test("the explorer finds each known bug", async (t) => {
  await t.step("counter-race: the lost update, with one preemption", async () => {
    const r = await explore(sc("counter-race"));
    ok(r.failure);
    strictEqual(r.failure.kind, "invariant");
    strictEqual(r.failure.message, "lost update: counter is 1 after 2 completed increments");
    strictEqual(r.failure.preemptions, 1);
    strictEqual(r.failure.command, `dmalab explore counter-race --replay ${r.failure.schedule}`);
    ok(r.failure.ftrace.includes("explorer_failure: kind=invariant"));
    strictEqual(
      r.failure.interleaving,
      [
        "inc0-1         inc1-2",
        "-------------  -------------",
        "start",
        "load counter",
        "               start    <- preempts inc0-1",
        "               load counter",
        "               store counter",
        "store counter",
        "",
      ].join("\n"),
    );
    ok(r.failure.chrome.traceEvents.length > 0);
    strictEqual(r.complete, false);
  });
  await t.step("lost-wakeup: the waiter sleeps forever (deadlock report)", async () => {
    const r = await explore(sc("lost-wakeup"));
    ok(r.failure);
    strictEqual(r.failure.kind, "deadlock");
    ok(r.failure.report.includes("waiter-1 blocked on schedule() without a wait queue"));
    strictEqual(r.failure.preemptions, 1);
  });
  await t.step("abba-lockdep: lockdep's circular dependency splat", async () => {
    const r = await explore(sc("abba-lockdep"));
    ok(r.failure);
    strictEqual(r.failure.kind, "lockdep");
    strictEqual(r.failure.message, "WARNING: possible circular locking dependency detected");
    strictEqual(r.failure.task, "task2-2");
    // lockdep needs no bad interleaving: the default schedule shows it
    strictEqual(r.failure.schedule, "-");
  });
  await t.step("torn-read: a reader sees the half-written record", async () => {
    const r = await explore(sc("torn-read"));
    strictEqual(r.failure?.kind, "invariant");
    strictEqual(r.failure?.message, "torn read: a=1 b=0");
    strictEqual(r.failure?.preemptions, 1);
  });
  await t.step("abba-deadlock: a schedule that really deadlocks", async () => {
    const r = await explore(sc("abba-deadlock"));
    ok(r.failure);
    strictEqual(r.failure.kind, "deadlock");
    ok(r.failure.report.includes("wait-for cycle: task1-1 -> task2-2 -> task1-1"));
    strictEqual(r.failure.preemptions, 1);
  });
});

Deno.test("clean variants are clean within the bound, deterministically", async (t) => {
  for (const name of ["counter-mutex", "waitqueue-wakeup", "abba-ordered", "rwsem-readers"]) {
    await t.step(name, async () => {
      const a = await explore(sc(name), { bound: 2 });
      strictEqual(a.failure, null);
      strictEqual(a.complete, true);
      ok(a.schedules > 1, `${name}: ${a.schedules} schedules`);
      const b = await explore(sc(name), { bound: 2 });
      deepStrictEqual(counts(b), counts(a));
    });
  }
  for (const base of [wwWaitDie, wwWoundWait]) {
    await t.step(
      `${base.name}: no deadlock, every task completes, backoffs exercised`,
      async () => {
        let backoffRuns = 0;
        let runs = 0;
        const watched: typeof base = {
          ...base,
          check(world, s) {
            runs++;
            if (s.backoffs > 0) backoffRuns++;
            return base.check!(world, s);
          },
        };
        const a = await explore(watched, { bound: 2 });
        strictEqual(a.failure, null);
        strictEqual(a.complete, true);
        ok(a.schedules > 100, `${a.schedules} schedules`);
        strictEqual(runs, a.schedules);
        ok(backoffRuns > 0, "some schedule took the -EDEADLK backoff path");
        const b = await explore(base, { bound: 2 });
        deepStrictEqual(counts(b), counts(a));
      },
    );
  }
});

Deno.test("the preemption bound", async (t) => {
  await t.step("bound 0 explores only run-to-block orders and misses the race", async () => {
    const r = await explore(sc("counter-race"), { bound: 0 });
    strictEqual(r.failure, null);
    strictEqual(r.complete, true);
    // which of the two tasks runs first
    strictEqual(r.schedules, 2);
  });
  await t.step("a larger bound explores more schedules", async () => {
    const counter = sc("counter-mutex");
    const b1 = await explore(counter, { bound: 1, por: false });
    const b2 = await explore(counter, { bound: 2, por: false });
    const b3 = await explore(counter, { bound: 3, por: false });
    ok(b1.schedules < b2.schedules && b2.schedules <= b3.schedules);
  });
});

Deno.test("replay strings reproduce the same trace", async (t) => {
  await t.step("the failing schedule of a report", async () => {
    const r = await explore(sc("counter-race"));
    const f = r.failure!;
    const again = await replay(sc("counter-race"), f.schedule);
    strictEqual(again.ftrace, f.ftrace);
    deepStrictEqual(again.chrome, f.chrome);
    strictEqual(again.failure?.message, f.message);
    strictEqual(again.schedule, f.schedule);
  });
  await t.step("a PCT schedule of the ww_mutex scenario, clean", async () => {
    for (const seed of [3, 11, 29]) {
      const pct = new PctStrategy({ depth: 3, steps: 40, seed });
      const orig = await runScenario(wwWoundWait, pct, { trace: true });
      strictEqual(orig.failure, null);
      const schedule = formatSchedule(trimDefaults(orig.decisions, orig.defaults));
      const a = await replay(wwWoundWait, schedule);
      const b = await replay(wwWoundWait, schedule);
      strictEqual(a.ftrace, orig.world.trace.ftrace());
      strictEqual(b.ftrace, a.ftrace);
      strictEqual(a.schedule, schedule);
      strictEqual(a.decisions, orig.decisions.length);
    }
  });
  await t.step("a schedule naming a task that is not runnable is rejected", async () => {
    await rejects(() => replay(sc("counter-race"), "7"), ScheduleError);
  });
});

Deno.test("sleep sets explore fewer schedules than plain DFS, finding the same bugs", async (t) => {
  await t.step("racy counter plus an independent task", async () => {
    const noisy = withNoise(sc("counter-race"), 1, 3);
    const por = await explore(noisy, { stopOnFailure: false, minimize: false });
    const dfs = await explore(noisy, { por: false, stopOnFailure: false, minimize: false });
    ok(por.schedules < dfs.schedules, `${por.schedules} < ${dfs.schedules}`);
    ok(por.failures > 0 && dfs.failures > 0);
    strictEqual(por.states, dfs.states);
    const p1 = await explore(noisy);
    const d1 = await explore(noisy, { por: false });
    strictEqual(p1.failure?.kind, "invariant");
    strictEqual(p1.failure?.kind, d1.failure?.kind);
    strictEqual(p1.failure?.schedule, d1.failure?.schedule);
  });
  await t.step("the same distinct states as plain DFS on the ww_mutex lockers", async () => {
    const por = await explore(wwWaitDie);
    const dfs = await explore(wwWaitDie, { por: false });
    ok(por.schedules < dfs.schedules, `${por.schedules} < ${dfs.schedules}`);
    strictEqual(por.states, dfs.states);
  });
  await t.step("locked counter plus two independent tasks: clean both ways", async () => {
    const noisy = withNoise(sc("counter-mutex"), 2, 2);
    const por = await explore(noisy);
    const dfs = await explore(noisy, { por: false });
    strictEqual(por.failure, null);
    strictEqual(dfs.failure, null);
    ok(por.schedules < dfs.schedules, `${por.schedules} < ${dfs.schedules}`);
    strictEqual(por.states, dfs.states);
  });
});

Deno.test("DPOR: no more schedules than sleep sets, the same states and bugs", async (t) => {
  const cases: [string, Scenario<unknown>][] = [
    ["counter-race-noise", withNoise(sc("counter-race"), 1, 3)],
    ["counter-mutex-noise", withNoise(sc("counter-mutex"), 2, 2)],
    ["counter-3", counterScenario({ name: "counter-3", tasks: 3 }) as Scenario<unknown>],
    ["lost-wakeup", sc("lost-wakeup")],
    ["abba-deadlock", sc("abba-deadlock")],
    ["ww-wound-wait", wwWoundWait as Scenario<unknown>],
  ];
  for (const [name, s] of cases) {
    await t.step(name, async () => {
      const opts = { stopOnFailure: false, minimize: false };
      const sleep = await explore(s, opts);
      const dpor = await explore(s, { ...opts, dpor: true });
      ok(dpor.schedules <= sleep.schedules, `${dpor.schedules} <= ${sleep.schedules}`);
      strictEqual(dpor.states, sleep.states);
      strictEqual(dpor.failures > 0, sleep.failures > 0);
    });
  }
  await t.step("strictly fewer where tasks are independent", async () => {
    const s = withNoise(sc("counter-race"), 1, 3);
    const opts = { bound: 4, stopOnFailure: false, minimize: false };
    const sleep = await explore(s, opts);
    const dpor = await explore(s, { ...opts, dpor: true });
    ok(dpor.schedules < sleep.schedules, `${dpor.schedules} < ${sleep.schedules}`);
    strictEqual(dpor.states, sleep.states);
  });
});

Deno.test("PCT finds the counter race with high probability", async (t) => {
  await t.step("20 seeds x 20 runs at depth 2", async () => {
    let found = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const r = await explore(sc("counter-race"), { pct: { depth: 2, runs: 20 }, seed });
      if (r.failure?.kind === "invariant") found++;
    }
    ok(found >= 18, `found in ${found} of 20 seeds`);
  });
  await t.step("a seed gives the same runs every time", async () => {
    const opts = { pct: { depth: 2, runs: 50 }, seed: 5, stopOnFailure: false, minimize: false };
    const a = await explore(sc("counter-race"), opts);
    const b = await explore(sc("counter-race"), opts);
    deepStrictEqual([a.schedules, a.states, a.failures], [b.schedules, b.states, b.failures]);
    ok(a.failures > 0 && a.failures < a.schedules);
  });
  await t.step("depth 1 never preempts, so never finds it", async () => {
    const r = await explore(sc("counter-race"), { pct: { depth: 1, runs: 30 }, seed: 2 });
    strictEqual(r.failure, null);
    strictEqual(r.schedules, 30);
  });
});

Deno.test("failure kinds and limits", async (t) => {
  await t.step("an -Exxx escaping a task names the task", async () => {
    const r = await explore({
      name: "throws",
      description: "",
      build(world) {
        world.spawn("ok", async () => {
          await world.sched.preempt("p");
        });
        world.spawn("bad", async () => {
          await world.sched.preempt("p");
          throw new KernelError("EINVAL", "thing: bad argument (do_thing)");
        });
      },
    });
    strictEqual(r.failure?.kind, "error");
    strictEqual(r.failure?.task, "bad-2");
  });
  await t.step("a world checker violated at some point", async () => {
    const r = await explore({
      name: "checker",
      description: "",
      build(world) {
        let inFlight = 0;
        world.addChecker("inflight", () => inFlight > 1 ? [`${inFlight} in flight`] : []);
        for (const n of ["a", "b"]) {
          world.spawn(n, async () => {
            inFlight++;
            await world.sched.preempt("mid");
            inFlight--;
          });
        }
      },
    });
    strictEqual(r.failure?.kind, "invariant");
    strictEqual(r.failure?.message, "inflight: 2 in flight");
  });
  await t.step("an invariant that throws is a failure of the run, not a crash", async () => {
    const r = await explore({
      name: "bad-invariant",
      description: "",
      build(world) {
        world.spawn("t", async () => {
          await world.sched.preempt("p");
        });
      },
      invariants() {
        throw new TypeError("invariant blew up");
      },
    });
    strictEqual(r.failure?.kind, "exception");
    strictEqual(r.failure?.message, "invariant blew up");
  });
  await t.step("a WARN recorded in a permissive world", async () => {
    const r = await explore({
      name: "warn",
      description: "",
      worldOptions: { strict: false },
      build(world) {
        world.spawn("w", async () => {
          world.warnOn(true, "something odd");
        });
      },
    });
    strictEqual(r.failure?.kind, "WARN");
  });
  await t.step("a task awaiting a foreign promise", async () => {
    const r = await explore({
      name: "foreign",
      description: "",
      build(world) {
        world.spawn("stuck", async () => {
          await new Promise<void>(() => {});
        });
      },
    });
    strictEqual(r.failure?.kind, "scheduler");
    ok(r.failure?.message.includes("awaited a promise that is not a scheduler primitive"));
  });
  await t.step("a foreign await on replay (the world's own watchdog)", async () => {
    const stuck: Scenario = {
      name: "foreign-replay",
      description: "",
      build(world) {
        world.spawn("stuck", async () => {
          await new Promise<void>(() => {});
        });
      },
    };
    const r = await replay(stuck, "-");
    strictEqual(r.failure?.kind, "scheduler");
  });
  await t.step("a run that never ends is a livelock", async () => {
    const r = await explore({
      name: "spin",
      description: "",
      build(world) {
        world.spawn("spin", async () => {
          for (;;) await world.sched.preempt("spin");
        });
      },
    }, { maxSteps: 500 });
    strictEqual(r.failure?.kind, "livelock");
  });
  await t.step("a scenario whose tasks depend on more than the schedule", async () => {
    let calls = 0;
    await rejects(
      () =>
        explore({
          name: "nondet",
          description: "",
          build(world) {
            const n = 2 + (calls++ % 2);
            for (let i = 0; i < n; i++) {
              world.spawn(`t${i}`, async () => {
                await world.sched.preempt("p");
              });
            }
          },
        }),
      ScheduleError,
    );
  });
  await t.step("the schedule limit stops an exploration early", async () => {
    const r = await explore(sc("ww-wait-die"), { maxSchedules: 5 });
    strictEqual(r.schedules, 5);
    strictEqual(r.complete, false);
    strictEqual(r.failure, null);
  });
});

Deno.test("withVariants runs a scenario against each modelled variant", async () => {
  const base: Scenario<{ seen: string }> = {
    name: "variant-probe",
    description: "records the variant its world runs",
    build(world) {
      const s = { seen: "" };
      world.spawn("probe", async () => {
        s.seen = world.variant("probe.impl", "default");
      });
      return s;
    },
    check: (_w, s) => s.seen === "broken" ? ["the broken variant ran"] : [],
  };
  const good = await explore(withVariants(base, "variant-probe.good", { "probe.impl": "good" }));
  const bad = await explore(withVariants(base, "variant-probe.bad", { "probe.impl": "broken" }));
  strictEqual(good.failure, null);
  strictEqual(bad.failure?.kind, "check");
  strictEqual(bad.scenario, "variant-probe.bad");
});
