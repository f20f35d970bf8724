// Rules, errno values and WARN/BUG paths of dma_fence beyond the kernel's own
// selftest: each step names the kernel rule it checks.
import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { Errno, Kernel, KernelBug, MAX_SCHEDULE_TIMEOUT } from "@dmalab/kernel";
import {
  DmaFence,
  dmaFenceAllocatePrivateStub,
  dmaFenceBeginSignalling,
  DmaFenceCb,
  dmaFenceContextAlloc,
  dmaFenceEndSignalling,
  dmaFenceGetStub,
  dmaFenceIsLater,
  dmaFenceIsLaterOrSame,
  dmaFenceLater,
  type DmaFenceOps,
  dmaFenceSeqnoIsLater,
  dmaFenceWaitAnyTimeout,
  dmaFenceWorld,
  FenceLock,
} from "../mod.ts";

const ops: DmaFenceOps = { getDriverName: () => "drv", getTimelineName: () => "tl" };

function fence(w: Kernel, seqno = 1, context = dmaFenceContextAlloc(w, 1)): DmaFence {
  return new DmaFence(w, ops, context, seqno);
}

function isBug(kind: string, text?: string) {
  return (e: unknown) =>
    e instanceof KernelBug && e.kind === kind && (text === undefined || e.report.includes(text));
}

Deno.test("dma_fence contexts and ordering", async (t) => {
  await t.step("dma_fence_context_alloc hands out consecutive contexts from 1", () => {
    const w = new Kernel();
    strictEqual(dmaFenceContextAlloc(w, 3), 1);
    strictEqual(dmaFenceContextAlloc(w, 1), 4);
    strictEqual(dmaFenceContextAlloc(w, 1), 5);
  });

  await t.step("dma_fence_context_alloc(0) is a WARN", () => {
    const w = new Kernel();
    throws(() => dmaFenceContextAlloc(w, 0), isBug("WARN", "num == 0"));
    const p = new Kernel({ strict: false });
    strictEqual(dmaFenceContextAlloc(p, 0), 1);
    strictEqual(p.bugs.length, 1);
  });

  await t.step("__dma_fence_is_later: 32-bit wrap unless SEQNO64", () => {
    ok(dmaFenceSeqnoIsLater(false, 1, 0xffffffff), "1 follows 0xffffffff after the wrap");
    ok(!dmaFenceSeqnoIsLater(false, 0xffffffff, 1));
    ok(dmaFenceSeqnoIsLater(false, 0x1_0000_0005, 3), "only the low 32 bits count");
    ok(!dmaFenceSeqnoIsLater(true, 1, 0xffffffff), "64-bit seqnos do not wrap");
    ok(dmaFenceSeqnoIsLater(true, 0x1_0000_0000, 0xffffffff));
    ok(!dmaFenceSeqnoIsLater(false, 5, 5));
  });

  await t.step("dma_fence_is_later / later_or_same / later", () => {
    const w = new Kernel();
    const ctx = dmaFenceContextAlloc(w, 1);
    const a = fence(w, 1, ctx);
    const b = fence(w, 2, ctx);
    ok(dmaFenceIsLater(b, a));
    ok(!dmaFenceIsLater(a, b));
    ok(dmaFenceIsLaterOrSame(a, a));
    ok(!dmaFenceIsLater(a, a));
    strictEqual(dmaFenceLater(a, b), b);
    b.signal();
    strictEqual(dmaFenceLater(a, b), null, "the later one is signalled");
    const c = fence(w, 9);
    throws(() => dmaFenceIsLater(a, c), isBug("WARN", "different contexts"));
    const p = new Kernel({ strict: false });
    const x = fence(p, 1);
    const y = fence(p, 2);
    strictEqual(dmaFenceIsLater(y, x), false, "WARN and false for different contexts");
    strictEqual(dmaFenceLater(y, x), null);
    strictEqual(p.bugs.length, 2);
  });

  await t.step("dma_fence_init BUGs without name callbacks", () => {
    const w = new Kernel();
    throws(
      () => new DmaFence(w, { getDriverName: () => "x" } as unknown as DmaFenceOps, 1, 1),
      isBug("BUG", "get_timeline_name"),
    );
  });
});

Deno.test("dma_fence signalling", async (t) => {
  await t.step("callbacks run once, in registration order, with the time stamp set", async () => {
    const w = new Kernel();
    await w.runTask("t", async () => {
      await w.sched.msleep(2);
      const f = fence(w);
      const order: number[] = [];
      const cbs = [0, 1, 2, 3].map(() => new DmaFenceCb());
      cbs.forEach((cb, i) => strictEqual(f.addCallback(cb, () => order.push(i)), 0));
      f.removeCallback(cbs[2]!);
      f.signal();
      f.signal();
      deepStrictEqual(order, [0, 1, 3]);
      strictEqual(f.timestamp(), w.sched.now);
      ok(f.timestamp() > 0);
      strictEqual(f.checkAndSignal(), true, "already signalled");
      f.put();
    });
  });

  await t.step("add_callback without a function is WARN + -EINVAL", () => {
    const p = new Kernel({ strict: false });
    const f = fence(p);
    strictEqual(f.addCallback(new DmaFenceCb(), undefined as unknown as () => void), -Errno.EINVAL);
    strictEqual(p.bugs[0]!.kind, "WARN");
  });

  await t.step("a callback slot queued twice is a list corruption BUG", () => {
    const w = new Kernel();
    const f = fence(w);
    const g = fence(w);
    const cb = new DmaFenceCb();
    strictEqual(f.addCallback(cb, () => {}), 0);
    throws(() => g.addCallback(cb, () => {}), isBug("BUG", "list_add double add"));
  });

  await t.step("enable_signaling returning false signals at once; called once", () => {
    const w = new Kernel();
    let calls = 0;
    const f = new DmaFence(
      w,
      {
        ...ops,
        enableSignaling: () => {
          calls++;
          return false;
        },
      },
      1,
      1,
    );
    const cb = new DmaFenceCb();
    strictEqual(f.addCallback(cb, () => {}), -Errno.ENOENT, "signalled while enabling");
    ok(f.testSignaledFlag());
    f.enableSwSignaling();
    strictEqual(calls, 1);
  });

  await t.step("ops.signaled makes is_signaled signal the fence; ops kept with release", () => {
    const w = new Kernel();
    let hw = false;
    const f = new DmaFence(w, { ...ops, signaled: () => hw, release: (x) => x.free() }, 1, 1);
    ok(!f.isSignaled());
    hw = true;
    ok(f.isSignaled());
    ok(f.testSignaledFlag());
    ok(f.ops !== null, "a fence with a release op keeps its ops");
    strictEqual(f.driverName(), "detached-driver");
    strictEqual(f.timelineName(), "signaled-timeline");
    f.put();
    strictEqual(dmaFenceWorld(w).live, 0);
  });

  await t.step("set_error: only before signalling, only negative errnos", () => {
    const w = new Kernel();
    const f = fence(w);
    throws(() => f.setError(5), isBug("WARN", "not a negative errno"));
    throws(() => f.setError(-4096), isBug("WARN"));
    f.setError(-Errno.ECANCELED);
    f.signal();
    strictEqual(f.getStatus(), -Errno.ECANCELED);
    throws(() => f.setError(-Errno.EIO), isBug("WARN", "already signaled"));
    const p = new Kernel({ strict: false });
    const g = fence(p);
    g.signal();
    g.setError(-Errno.ETIME);
    strictEqual(g.getStatus(), -Errno.ETIME, "stored anyway after the WARN");
  });

  await t.step("timestamp of an unsignalled fence is a WARN", () => {
    const w = new Kernel();
    throws(() => fence(w).timestamp(), isBug("WARN", "not signaled"));
  });

  await t.step("set_deadline is forwarded only while unsignalled", () => {
    const w = new Kernel();
    const seen: number[] = [];
    const f = new DmaFence(w, { ...ops, setDeadline: (_f, d) => seen.push(d) }, 1, 1);
    f.setDeadline(100);
    f.signal();
    f.setDeadline(200);
    deepStrictEqual(seen, [100]);
  });

  await t.step("release with pending callbacks: WARN, error -EDEADLK, callbacks run", () => {
    const p = new Kernel({ strict: false });
    const f = fence(p);
    let status = 0;
    f.addCallback(new DmaFenceCb(), (x) => {
      status = x.error;
    });
    f.put();
    strictEqual(status, -Errno.EDEADLK);
    ok(p.dmesg.includes("released with pending signals!"));
    const w = new Kernel();
    const g = fence(w);
    g.addCallback(new DmaFenceCb(), () => {});
    throws(() => g.put(), isBug("WARN", "released with pending signals"));
  });

  await t.step("refcounting follows kref: put on a freed fence warns", () => {
    const w = new Kernel();
    const f = fence(w);
    f.get();
    f.put();
    ok(!f.freed);
    f.put();
    ok(f.freed);
    strictEqual(f.getRcu(), null, "dma_fence_get_rcu on a dead fence");
    throws(() => f.put(), isBug("refcount", "underflow"));
  });

  await t.step(
    "a callback that takes its own fence's lock: recursive locking, spinlock recursion",
    () => {
      const w = new Kernel();
      const lock = new FenceLock(w, "ring_lock");
      const a = new DmaFence(w, ops, 1, 1, { lock });
      const b = new DmaFence(w, ops, 1, 2, { lock });
      a.addCallback(new DmaFenceCb(), () => b.signal());
      throws(() => a.signal(), isBug("lockdep", "possible recursive locking detected"));
      const nold = new Kernel({ lockdep: false });
      const lock2 = new FenceLock(nold, "ring_lock");
      const c = new DmaFence(nold, ops, 1, 1, { lock: lock2 });
      const d = new DmaFence(nold, ops, 1, 2, { lock: lock2 });
      c.addCallback(new DmaFenceCb(), () => d.signal());
      throws(() => c.signal(), isBug("BUG", "spinlock recursion"));
    },
  );

  await t.step("sleeping inside a fence callback is reported (callbacks are atomic)", async () => {
    const { Mutex } = await import("@dmalab/kernel");
    const w = new Kernel({ strict: false });
    const m = new Mutex(w, "driver_mutex");
    await w.runTask("t", async () => {
      const f = fence(w);
      let atomic = false;
      f.addCallback(new DmaFenceCb(), () => {
        atomic = w.sched.current!.atomic;
        void m.lock().then(() => m.unlock(), () => {});
      });
      f.signal();
      ok(atomic, "the callback ran with the fence lock held");
      await w.sched.msleep(1);
    });
    ok(
      w.bugs.some((b) => b.kind === "might_sleep"),
      "BUG: sleeping function called from invalid context",
    );
  });

  await t.step("stub and private stub", async () => {
    const w = new Kernel();
    await w.runTask("t", async () => {
      await w.sched.msleep(1);
      const s = dmaFenceGetStub(w);
      ok(s.isSignaled());
      strictEqual(s.timestamp(), 0);
      strictEqual(s.context, 0);
      const p = dmaFenceAllocatePrivateStub(w, 1234);
      ok(p !== s && p.isSignaled());
      strictEqual(p.timestamp(), 1234);
      p.put();
      s.put();
    });
    strictEqual(dmaFenceWorld(w).live, 0);
  });

  await t.step("trace events use the kernel tracepoint names, in order", async () => {
    const w = new Kernel();
    w.trace.enable();
    await w.runTask("t", async () => {
      const f = new DmaFence(w, { ...ops, enableSignaling: () => true }, 7, 3);
      f.traceEmit();
      w.spawn("irq", async () => {
        await w.sched.msleep(1);
        f.signal();
      });
      await f.wait(false);
      f.put();
    });
    const names = w.trace.events.filter((e) => e.name.startsWith("dma_fence")).map((e) => e.name);
    deepStrictEqual(names, [
      "dma_fence_init",
      "dma_fence_emit",
      "dma_fence_enable_signal",
      "dma_fence_wait_start",
      "dma_fence_signaled",
      "dma_fence_wait_end",
      "dma_fence_destroy",
    ]);
    const ev = w.trace.events.find((e) => e.name === "dma_fence_signaled")!;
    deepStrictEqual(ev.fields, { driver: "drv", timeline: "tl", context: 7, seqno: 3 });
    ok(w.trace.ftrace().includes("dma_fence_signaled: driver=drv timeline=tl context=7 seqno=3"));
  });
});

Deno.test("dma_fence waits", async (t) => {
  await t.step("wait_timeout returns the jiffies left", async () => {
    const w = new Kernel({ hz: 1000 });
    const f = fence(w);
    w.spawn("signaller", async () => {
      await w.sched.sleepNs(30_000_000);
      f.signal();
    });
    const left = await w.runTask("waiter", () => f.waitTimeout(false, 100));
    strictEqual(left, 70);
    strictEqual(
      await w.runTask("again", () => f.waitTimeout(false, 100)),
      100,
      "signalled: all left",
    );
  });

  await t.step("wait_timeout times out with 0; MAX_SCHEDULE_TIMEOUT waits forever", async () => {
    const w = new Kernel();
    const f = fence(w);
    strictEqual(await w.runTask("w", () => f.waitTimeout(false, 5)), 0);
    strictEqual(w.sched.jiffies, 5);
    w.spawn("s", async () => {
      await w.sched.msleep(1000);
      f.signal();
    });
    strictEqual(
      await w.runTask("w2", () => f.waitTimeout(false, MAX_SCHEDULE_TIMEOUT)),
      MAX_SCHEDULE_TIMEOUT,
    );
  });

  await t.step(
    "interruptible waits end with -ERESTARTSYS; uninterruptible ones do not",
    async () => {
      const w = new Kernel();
      const f = fence(w);
      const waiter = w.spawn("w", () => f.waitTimeout(true, 100));
      const plain = w.spawn("p", () => f.wait(false));
      w.spawn("killer", async () => {
        await w.sched.msleep(4);
        w.sched.signal(waiter);
        w.sched.signal(plain);
        await w.sched.msleep(4);
        f.signal();
      });
      await w.run();
      strictEqual(waiter.result, -Errno.ERESTARTSYS);
      strictEqual(plain.result, 0);
      const w2 = new Kernel();
      const g = fence(w2);
      strictEqual(
        await w2.runTask("pending", async (task) => {
          w2.sched.signal(task);
          return g.wait(true);
        }),
        -Errno.ERESTARTSYS,
        "a pending signal fails the wait before it sleeps",
      );
    },
  );

  await t.step("a custom ops.wait replaces the default wait (the classic mock_wait)", async () => {
    // The classic st-dma-fence mock: remaining timeout when signalled, -ETIME
    // on timeout (test_wait expects -ETIME before and 0 after the signal).
    const w = new Kernel();
    const mock: DmaFenceOps = {
      ...ops,
      async wait(f, intr, timeout) {
        const ret = await f.defaultWait(intr, timeout);
        return ret === 0 ? -Errno.ETIME : ret < 0 ? ret : timeout === 0 ? 0 : ret;
      },
      release: (f) => f.free(),
    };
    await w.runTask("t", async () => {
      const f = new DmaFence(w, mock, 0, 0);
      f.enableSwSignaling();
      strictEqual(await f.waitTimeout(false, 0), -Errno.ETIME);
      f.signal();
      ok(f.ops !== null, "a fence with a wait op keeps its ops after signalling");
      strictEqual(await f.waitTimeout(false, 0), 0);
      strictEqual(await f.wait(false), 0);
      f.put();
    });
    strictEqual(dmaFenceWorld(w).live, 0);
  });

  await t.step("a negative timeout is WARN + -EINVAL", async () => {
    const p = new Kernel({ strict: false });
    const f = fence(p);
    strictEqual(await p.runTask("w", () => f.waitTimeout(false, -1)), -Errno.EINVAL);
    strictEqual(p.bugs[0]!.kind, "WARN");
  });

  await t.step("waiting in atomic context is a might_sleep splat", async () => {
    const w = new Kernel();
    const f = fence(w);
    await rejects(
      w.runTask("atomic", async () => {
        const lock = new FenceLock(w, "held");
        lock.lock();
        await f.waitTimeout(false, 1);
      }),
      isBug("might_sleep"),
    );
  });

  await t.step(
    "wait_any_timeout: index of the first, 0 on timeout, -EINVAL when empty",
    async () => {
      const w = new Kernel();
      const fs = [fence(w), fence(w), fence(w)];
      strictEqual((await dmaFenceWaitAnyTimeout(w, fs, false, 0)).ret, 0);
      w.spawn("s", async () => {
        await w.sched.msleep(8);
        fs[2]!.signal();
      });
      const r = await w.runTask("w", () => dmaFenceWaitAnyTimeout(w, fs, false, 100));
      strictEqual(r.idx, 2);
      ok(r.ret > 0 && r.ret < 100);
      deepStrictEqual(await dmaFenceWaitAnyTimeout(w, fs, false, 0), { ret: 1, idx: 2 });
      strictEqual(fs[0]!.pendingCallbacks, 0, "wait callbacks removed");
      const t2 = await w.runTask("to", () => dmaFenceWaitAnyTimeout(w, fs.slice(0, 2), false, 3));
      strictEqual(t2.ret, 0);
      const p = new Kernel({ strict: false });
      strictEqual((await dmaFenceWaitAnyTimeout(p, [], false, 1)).ret, -Errno.EINVAL);
    },
  );
});

Deno.test("dma_fence signalling annotations and lockdep", async (t) => {
  await t.step("begin/end cookies: nesting and atomic context are no-ops", async () => {
    const w = new Kernel();
    await w.runTask("t", async (task) => {
      const c1 = dmaFenceBeginSignalling(w);
      strictEqual(c1, false);
      strictEqual(dmaFenceBeginSignalling(w), true, "nested");
      dmaFenceEndSignalling(w, true);
      dmaFenceEndSignalling(w, c1);
      task.preemptCount++;
      strictEqual(dmaFenceBeginSignalling(w), true, "atomic");
      task.preemptCount--;
    });
    const off = new Kernel({ lockdep: false });
    strictEqual(dmaFenceBeginSignalling(off), true, "without lockdep begin is a no-op");
  });

  await t.step("waiting for a fence while holding a lock the signalling path takes", async () => {
    const { Mutex } = await import("@dmalab/kernel");
    const w = new Kernel({ strict: false });
    const lock = new Mutex(w, "driver_lock");
    const f = fence(w);
    w.spawn("signaller", async () => {
      const cookie = dmaFenceBeginSignalling(w);
      await lock.lock();
      lock.unlock();
      f.signal();
      dmaFenceEndSignalling(w, cookie);
    });
    w.spawn("waiter", async () => {
      await w.sched.msleep(1);
      await lock.lock();
      await f.waitTimeout(false, 1);
      lock.unlock();
    });
    await w.run();
    ok(w.dmesg.includes("WARNING: possible circular locking dependency detected"));
    ok(w.dmesg.includes("dma_fence_map"));
    ok(w.dmesg.includes("driver_lock"));
  });

  await t.step("taking a lock inside a signalling section that is held while waiting", async () => {
    const { Mutex } = await import("@dmalab/kernel");
    const w = new Kernel({ strict: false });
    const lock = new Mutex(w, "driver_lock");
    const f = fence(w);
    f.signal();
    await w.runTask("waiter-first", async () => {
      await lock.lock();
      await f.wait(false);
      lock.unlock();
    });
    strictEqual(w.bugs.length, 0);
    await w.runTask("signaller", async () => {
      const cookie = dmaFenceBeginSignalling(w);
      await lock.lock();
      lock.unlock();
      dmaFenceEndSignalling(w, cookie);
    });
    ok(w.dmesg.includes("WARNING: possible circular locking dependency detected"));
  });

  await t.step("a wait inside a signalling section under a lock taken in the section", async () => {
    const { Mutex } = await import("@dmalab/kernel");
    const w = new Kernel({ strict: false });
    const lock = new Mutex(w, "job_lock");
    const f = fence(w);
    f.signal();
    await w.runTask("run_job", async () => {
      const cookie = dmaFenceBeginSignalling(w);
      await lock.lock(); // dma_fence_map -> job_lock
      await f.wait(false); // job_lock -> dma_fence_map: the cycle
      lock.unlock();
      dmaFenceEndSignalling(w, cookie);
    });
    ok(w.dmesg.includes("WARNING: possible circular locking dependency detected"));
    ok(w.dmesg.includes("job_lock"));
  });

  await t.step("a wait inside a signalling section with no lock held is not a report", async () => {
    // __dma_fence_might_wait drops the section's read acquisition around its
    // write acquisition, so only lock dependencies are checked, as in the kernel.
    const w = new Kernel();
    const f = fence(w);
    f.signal();
    await w.runTask("t", async () => {
      const cookie = dmaFenceBeginSignalling(w);
      await f.wait(false);
      dmaFenceEndSignalling(w, cookie);
    });
    strictEqual(w.bugs.length, 0);
  });
});
