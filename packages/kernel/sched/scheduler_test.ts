import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import fc from "fast-check";
import { KernelBug, KernelError } from "../errors.ts";
import { Kernel } from "../world.ts";
import { RandomPolicy } from "./policy.ts";
import { Completion } from "./completion.ts";
import { WaitQueueHead } from "./wait_queue.ts";
import { Errno } from "../errno.ts";

Deno.test("Scheduler runs tasks one at a time in FIFO order", async (t) => {
  await t.step("run to block, then the longest-waiting task", async () => {
    const w = new Kernel();
    const log: string[] = [];
    w.spawn("a", async () => {
      log.push("a1");
      await w.sched.preempt("p");
      log.push("a2");
      await w.sched.msleep(1);
      log.push("a3");
    });
    w.spawn("b", async () => {
      log.push("b1");
    });
    const r = await w.run();
    deepStrictEqual(log, ["a1", "a2", "b1", "a3"]);
    ok(r.now > 0);
  });

  await t.step("msleep sleeps msecs_to_jiffies(ms)+1 jiffies", async () => {
    const w = new Kernel({ hz: 1000 });
    await w.runTask("s", async () => {
      await w.sched.msleep(20);
    });
    strictEqual(w.sched.jiffies, 21);
  });
});

Deno.test("Scheduler reports a deadlock with the wait-for cycle", async () => {
  const w = new Kernel();
  const wq = new WaitQueueHead(w.sched, "never");
  w.spawn("stuck", () => wq.waitEvent(() => false));
  await rejects(w.run(), (e: unknown) => {
    ok(e instanceof KernelBug);
    strictEqual(e.kind, "deadlock");
    ok(e.report.includes("stuck-1 blocked on never"));
    return true;
  });
  ok(w.dmesg.includes("BUG: deadlock"));
});

Deno.test("Scheduler detects a task awaiting a foreign promise", async () => {
  const w = new Kernel();
  w.spawn("bad", async () => {
    await new Promise<void>(() => {});
  });
  await rejects(w.run(), (e: unknown) => {
    ok(e instanceof KernelBug);
    strictEqual(e.kind, "scheduler");
    ok(e.message.includes("bad-1 awaited a promise that is not a scheduler primitive"));
    return true;
  });
});

Deno.test("Scheduler refuses sleeping primitives outside a task", () => {
  const w = new Kernel();
  try {
    void w.sched.preempt("outside");
    ok(false, "should throw");
  } catch (e) {
    ok(e instanceof KernelError);
    strictEqual(e.errno, Errno.EPERM);
  }
});

Deno.test("Scheduler reports sleeping in atomic context", async () => {
  const w = new Kernel();
  await rejects(
    w.runTask("atomic", async (task) => {
      task.preemptCount++;
      await w.sched.msleep(1);
    }),
    (e: unknown) => e instanceof KernelBug && e.kind === "might_sleep",
  );
  ok(w.dmesg.includes("BUG: sleeping function called from invalid context at msleep"));
});

Deno.test("wait_event_interruptible returns -ERESTARTSYS on a signal", async () => {
  const w = new Kernel();
  const wq = new WaitQueueHead(w.sched, "wq");
  const waiter = w.spawn("waiter", () => wq.waitEventInterruptible(() => false));
  w.spawn("signaller", async () => {
    w.sched.signal(waiter);
  });
  await w.run();
  strictEqual(waiter.result, -Errno.ERESTARTSYS);
});

Deno.test("wait_event_timeout returns 0 on timeout and jiffies left otherwise", async () => {
  const w = new Kernel();
  const wq = new WaitQueueHead(w.sched, "wq");
  let flag = false;
  const a = w.spawn("timeout", () => wq.waitEventTimeout(() => false, 10));
  const b = w.spawn("woken", () => wq.waitEventTimeout(() => flag, 100));
  w.spawn("waker", async () => {
    await w.sched.sleepNs(w.sched.jiffiesToNs(5));
    flag = true;
    wq.wakeUp();
  });
  await w.run();
  strictEqual(a.result, 0);
  strictEqual(b.result, 95);
});

Deno.test("Completion: complete lets one waiter through, complete_all every waiter", async () => {
  const w = new Kernel();
  const c = new Completion(w.sched);
  const passed: string[] = [];
  for (const n of ["x", "y"]) {
    w.spawn(n, async () => {
      await c.waitForCompletion();
      passed.push(n);
    });
  }
  w.spawn("one", async () => {
    c.complete();
    await w.sched.msleep(1);
    deepStrictEqual(passed, ["x"]);
    c.completeAll();
  });
  await w.run();
  deepStrictEqual(passed, ["x", "y"]);
  strictEqual(c.done, true);
});

Deno.test("property: same seed gives the same schedule", async () => {
  const runOnce = async (seed: number, n: number): Promise<string> => {
    const w = new Kernel({ policy: new RandomPolicy(seed) });
    const log: string[] = [];
    for (let i = 0; i < n; i++) {
      w.spawn(`t${i}`, async () => {
        for (let k = 0; k < 3; k++) {
          log.push(`${i}.${k}`);
          await w.sched.preempt("step");
        }
      });
    }
    await w.run();
    return log.join(" ");
  };
  await fc.assert(
    fc.asyncProperty(fc.integer(), fc.integer({ min: 1, max: 5 }), async (seed, n) => {
      strictEqual(await runOnce(seed, n), await runOnce(seed, n));
    }),
    { numRuns: 50 },
  );
});

Deno.test("property: no lost wake-ups under random schedules", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer(), fc.integer({ min: 1, max: 4 }), async (seed, waiters) => {
      const w = new Kernel({ policy: new RandomPolicy(seed) });
      const wq = new WaitQueueHead(w.sched, "wq");
      let ready = false;
      let woke = 0;
      for (let i = 0; i < waiters; i++) {
        w.spawn(`w${i}`, async () => {
          await w.sched.preempt("before");
          await wq.waitEvent(() => ready);
          woke++;
        });
      }
      w.spawn("waker", async () => {
        await w.sched.preempt("before-set");
        ready = true;
        wq.wakeUpAll();
      });
      await w.run();
      strictEqual(woke, waiters);
    }),
    { numRuns: 100 },
  );
});
