import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { Errno } from "../errno.ts";
import { KernelBug, KernelError } from "../errors.ts";
import { ChooserPolicy, FifoPolicy, RandomPolicy, type YieldPoint } from "../sched/policy.ts";
import { Kernel } from "../world.ts";
import { LockClassKey, LOCKDEP_NO_VALIDATE } from "./lockdep.ts";
import { Mutex } from "./mutex.ts";
import { RwSemaphore } from "./rwsem.ts";
import { SpinLock } from "./spinlock.ts";
import { WwAcquireCtx, WwClass, WwMutex } from "./ww_mutex.ts";

function isBug(kind: string, text: string) {
  return (e: unknown) => {
    ok(e instanceof KernelBug, `expected KernelBug, got ${e}`);
    strictEqual(e.kind, kind);
    ok(e.report.includes(text), e.report);
    return true;
  };
}

Deno.test("Mutex: mutual exclusion, owner tracking, FIFO wake-up", async (t) => {
  await t.step("waiters get the lock in arrival order", async () => {
    const w = new Kernel();
    const m = new Mutex(w, "m");
    const order: string[] = [];
    w.spawn("holder", async (task) => {
      await m.lock();
      strictEqual(m.owner, task);
      ok(m.isLocked());
      await w.sched.msleep(1);
      m.unlock();
    });
    for (const name of ["w1", "w2", "w3"]) {
      w.spawn(name, async () => {
        await m.lock();
        order.push(name);
        m.unlock();
      });
    }
    await w.run();
    deepStrictEqual(order, ["w1", "w2", "w3"]);
    ok(!m.isLocked());
    strictEqual(m.owner, null);
  });

  await t.step("random schedules never put two tasks inside", async () => {
    for (let seed = 1; seed <= 20; seed++) {
      const w = new Kernel({ policy: new RandomPolicy(seed) });
      const m = new Mutex(w, "m");
      let inside = 0;
      let entries = 0;
      for (let i = 0; i < 4; i++) {
        w.spawn(`t${i}`, async () => {
          for (let k = 0; k < 5; k++) {
            await m.lock();
            inside++;
            strictEqual(inside, 1);
            await w.sched.preempt("critical");
            inside--;
            entries++;
            m.unlock();
          }
        });
      }
      await w.run();
      strictEqual(entries, 20);
    }
  });

  await t.step("HANDOFF: a starved first waiter gets the lock straight from unlock", async () => {
    const w = new Kernel();
    const m = new Mutex(w, "m");
    const log: string[] = [];
    w.spawn("greedy", async (task) => {
      await m.lock();
      w.spawn("waiter", async (me) => {
        await m.lock();
        strictEqual(m.owner, me);
        log.push("waiter got it");
        m.unlock();
      });
      await w.sched.preempt("let the waiter queue"); // FIFO keeps greedy: waiter not run yet
      await w.sched.msleep(1); // waiter runs and blocks
      m.unlock(); // wakes waiter, no handoff requested yet
      ok(m.trylock(), "a running task may steal before the waiter runs");
      log.push("greedy stole it");
      await w.sched.msleep(1); // waiter runs, loses, sets HANDOFF
      m.unlock(); // hands the lock to the waiter directly
      strictEqual(m.owner?.name, "waiter");
      strictEqual(m.trylock(), false, "no stealing after a handoff");
      strictEqual(task.name, "greedy");
    });
    await w.run();
    deepStrictEqual(log, ["greedy stole it", "waiter got it"]);
  });
});

Deno.test("Mutex: every lock is a preemption point keyed on the lock", async () => {
  const points: YieldPoint[] = [];
  const fifo = new FifoPolicy();
  const w = new Kernel({
    policy: new ChooserPolicy("record", (ctx) => {
      points.push(ctx.point);
      return fifo.pick(ctx);
    }),
  });
  const m = new Mutex(w, "m");
  const sem = new RwSemaphore(w, "sem");
  w.spawn("a", async () => {
    await m.lock();
    m.unlock();
    await sem.downRead();
    sem.upRead();
  });
  w.spawn("b", async () => {});
  await w.run();
  const mp = points.find((p) => p.label === "mutex_lock:m")!;
  strictEqual(mp.object, m.id);
  strictEqual(mp.access, "write");
  const rp = points.find((p) => p.label === "down_read:sem")!;
  strictEqual(rp.object, sem.id);
  strictEqual(rp.access, "read");
});

Deno.test("Mutex error paths: errno and state intact", async (t) => {
  await t.step(
    "mutex_lock_interruptible returns -EINTR and leaves the lock as it was",
    async () => {
      const w = new Kernel();
      const m = new Mutex(w, "m");
      let ret = 1;
      w.spawn("holder", async () => {
        await m.lock();
        await w.sched.msleep(20);
        m.unlock();
      });
      const waiter = w.spawn("waiter", async (task) => {
        ret = await m.lockInterruptible();
        strictEqual(m.waiters.length, 0, "the interrupted waiter left the queue");
        strictEqual(m.owner?.name, "holder", "the holder still owns the mutex");
        strictEqual(task.heldLocks.length, 0, "lockdep dropped the failed acquisition");
        w.sched.flushSignals(task);
        strictEqual(await m.lockInterruptible(), 0);
        m.unlock();
      });
      w.spawn("signaller", async () => {
        await w.sched.msleep(1);
        strictEqual(m.owner?.name, "holder");
        w.sched.signal(waiter);
      });
      await w.run();
      strictEqual(ret, -Errno.EINTR);
      ok(!m.isLocked());
    },
  );

  await t.step("unlock by a non-owner is a WARN; the owner keeps the lock (strict)", async () => {
    const w = new Kernel();
    const m = new Mutex(w, "m");
    w.spawn("owner", async () => {
      await m.lock();
      await w.sched.msleep(20);
      m.unlock();
    });
    w.spawn("thief", async () => {
      await w.sched.msleep(1);
      throws(() => m.unlock(), isBug("lockdep", "WARNING: bad unlock balance detected!"));
      strictEqual(m.owner?.name, "owner");
    });
    await w.run();
    ok(!m.isLocked());
  });

  await t.step("without lockdep the DEBUG_MUTEXES owner check still fires", async () => {
    const w = new Kernel({ lockdep: false, strict: false });
    const m = new Mutex(w, "m");
    await w.runTask("t", async () => {
      m.unlock();
    });
    ok(w.dmesg.includes("DEBUG_LOCKS_WARN_ON(mutex_unlock of an unlocked mutex)"));
    ok(!m.isLocked());
  });

  await t.step("sleeping primitives refuse to run outside a task (EPERM)", async () => {
    const w = new Kernel();
    const m = new Mutex(w, "m");
    await rejects(m.lock(), (e: unknown) => e instanceof KernelError && e.errno === Errno.EPERM);
    ok(!m.isLocked());
  });

  await t.step(
    "mutex_lock under a spinlock: sleeping function called from invalid context",
    async () => {
      const w = new Kernel();
      const s = new SpinLock(w, "s");
      const m = new Mutex(w, "m");
      await rejects(
        w.runTask("atomic", async () => {
          s.lock();
          await m.lock();
        }),
        isBug("might_sleep", "BUG: sleeping function called from invalid context"),
      );
      // __might_sleep lists the held locks
      const text = w.dmesg.text();
      ok(text.includes("1 lock held by atomic/1:"), text);
      ok(text.includes(" #0: ffff888000000040 (s){+.+.}-{3:3}, at: spin_lock(s)"), text);
    },
  );
});

Deno.test("lockdep: AB-BA reported although the run did not deadlock (CLI demo)", async () => {
  const w = new Kernel({ strict: false });
  const a = new Mutex(w, "lock_A");
  const b = new Mutex(w, "lock_B");
  w.spawn("task1", async () => {
    await a.lock();
    await b.lock();
    b.unlock();
    a.unlock();
  });
  w.spawn("task2", async () => {
    await w.sched.msleep(1);
    await b.lock();
    await a.lock();
    a.unlock();
    b.unlock();
  });
  await w.run();
  const text = w.dmesg.text();
  for (
    const line of [
      "WARNING: possible circular locking dependency detected",
      "task2/2 is trying to acquire lock:",
      "(lock_A){+.+.}-{4:4}, at: mutex_lock(lock_A)",
      "but task is already holding lock:",
      "which lock already depends on the new lock.",
      "the existing dependency chain (in reverse order) is:",
      "-> #1 (lock_B){+.+.}-{4:4}:",
      "-> #0 (lock_A){+.+.}-{4:4}:",
      " Possible unsafe locking scenario:",
      "       CPU0                    CPU1",
      "  lock(lock_B);",
      "                               lock(lock_A);",
      " *** DEADLOCK ***",
      "1 lock held by task2/2:",
    ]
  ) ok(text.includes(line), `missing: ${line}\n${text}`);
  deepStrictEqual(w.bugs.map((b) => b.summary), [
    "WARNING: possible circular locking dependency detected",
  ]);
  ok(w.lockdep.hasDependency("lock_A", "lock_B"));
  ok(!w.lockdep.hasDependency("lock_B", "lock_A"), "the cycle-closing edge is not added");
});

Deno.test("lockdep: longer chains print 'Chain exists of'", async () => {
  const w = new Kernel({ strict: false });
  const [a, b, c] = ["A", "B", "C"].map((n) => new Mutex(w, n)) as [Mutex, Mutex, Mutex];
  await w.runTask("t", async () => {
    for (const [x, y] of [[a, b], [b, c], [c, a]] as const) {
      await x.lock();
      await y.lock();
      y.unlock();
      x.unlock();
    }
  });
  const text = w.dmesg.text();
  ok(text.includes("-> #2 (C){+.+.}-{4:4}:"));
  ok(text.includes("Chain exists of:"), text);
  ok(text.includes("  A --> B --> C"), text);
});

Deno.test("lockdep: a real ABBA deadlock is reported by lockdep before the tasks hang", async (t) => {
  await t.step("strict: the second task's acquisition throws the splat", async () => {
    const w = new Kernel();
    const a = new Mutex(w, "A");
    const b = new Mutex(w, "B");
    w.spawn("t1", async () => {
      await a.lock();
      await w.sched.msleep(1);
      await b.lock();
    });
    w.spawn("t2", async () => {
      await b.lock();
      await w.sched.msleep(1);
      await a.lock();
    });
    await rejects(w.run(), isBug("lockdep", "possible circular locking dependency"));
  });
  await t.step("lockdep off: the scheduler reports the wait-for cycle", async () => {
    const w = new Kernel({ lockdep: false });
    const a = new Mutex(w, "A");
    const b = new Mutex(w, "B");
    w.spawn("t1", async () => {
      await a.lock();
      await w.sched.msleep(1);
      await b.lock();
    });
    w.spawn("t2", async () => {
      await b.lock();
      await w.sched.msleep(1);
      await a.lock();
    });
    await rejects(w.run(), (e: unknown) => {
      ok(e instanceof KernelBug && e.kind === "deadlock");
      ok(
        e.report.includes("t1-1 blocked on mutex A held by t2-2") ||
          e.report.includes("blocked on"),
      );
      ok(e.report.includes("wait-for cycle"), e.report);
      return true;
    });
    strictEqual(w.lockdep.dependencyCount, 0);
  });
});

Deno.test("lockdep: subclasses, nest_lock, asserts, exit with locks held", async (t) => {
  await t.step("mutex_lock_nested separates classes", async () => {
    const w = new Kernel();
    const key = new LockClassKey("&inode->i_rwsem");
    const parent = new Mutex(w, "parent", { key });
    const child = new Mutex(w, "child", { key });
    await w.runTask("t", async () => {
      await parent.lock();
      await child.lockNested(1);
      deepStrictEqual(w.lockdep.heldLocks().map((h) => h.cls.name), [
        "&inode->i_rwsem",
        "&inode->i_rwsem/1",
      ]);
      child.unlock();
      parent.unlock();
    });
    ok(w.lockdep.hasDependency("&inode->i_rwsem", "&inode->i_rwsem/1"));
  });

  await t.step("same class without nesting is recursive locking", async () => {
    const w = new Kernel();
    const key = new LockClassKey("&obj->lock");
    const x = new Mutex(w, "x", { key });
    const y = new Mutex(w, "y", { key });
    await rejects(
      w.runTask("t", async () => {
        await x.lock();
        await y.lock();
      }),
      isBug("lockdep", "May be due to missing lock nesting notation"),
    );
  });

  await t.step("mutex_lock_nest_lock allows many of one class", async () => {
    const w = new Kernel();
    const big = new Mutex(w, "big_lock");
    const objs = Array.from({ length: 10 }, () => new Mutex(w, "&obj->lock"));
    await w.runTask("t", async () => {
      await big.lock();
      for (const o of objs) await o.lock({ nestLock: big });
      strictEqual(w.lockdep.heldLocks().length, 2, "same-class nested acquisitions merge");
      strictEqual(w.lockdep.heldLocks()[1]!.references, 10);
      for (const o of objs) o.unlock();
      big.unlock();
      strictEqual(w.lockdep.heldLocks().length, 0);
    });
  });

  await t.step("lockdep_set_novalidate_class: device mutexes nest freely", async () => {
    const w = new Kernel();
    const parent = new Mutex(w, "parent->mutex", { key: LOCKDEP_NO_VALIDATE });
    const child = new Mutex(w, "child->mutex", { key: LOCKDEP_NO_VALIDATE });
    const other = new Mutex(w, "other");
    await w.runTask("t", async () => {
      await parent.lock();
      await child.lock(); // same class, no nesting annotation: not validated
      await other.lock();
      other.assertHeld();
      child.assertHeld();
      other.unlock();
      child.unlock();
      parent.unlock();
      await other.lock();
      await child.lock(); // other -> dev mutex is not recorded either way
      child.unlock();
      other.unlock();
    });
    strictEqual(w.bugs.length, 0);
    strictEqual(w.lockdep.dependencyCount, 0);
  });

  await t.step("mutex_destroy of a locked mutex; mutex_lock_killable", async () => {
    const w = new Kernel({ strict: false });
    const m = new Mutex(w, "m");
    await w.runTask("t", async (task) => {
      strictEqual(await m.lockKillable(), 0);
      m.destroy();
      m.unlock();
      task.signalPending = true;
      strictEqual(await m.lockKillable(), 0, "an uncontended lock ignores pending signals");
      m.unlock();
    });
    ok(w.dmesg.includes("DEBUG_LOCKS_WARN_ON(mutex_is_locked(lock))"));
  });

  await t.step("lockdep_assert_held / lockdep_assert_not_held", async () => {
    const w = new Kernel();
    const m = new Mutex(w, "m");
    await w.runTask("t", async () => {
      m.assertNotHeld();
      throws(() => m.assertHeld(), isBug("lockdep", "lockdep_assert_held(m)"));
    });
    const w2 = new Kernel();
    const m2 = new Mutex(w2, "m");
    await w2.runTask("t", async () => {
      await m2.lock();
      m2.assertHeld();
      throws(() => m2.assertNotHeld(), isBug("lockdep", "lockdep_assert_not_held(m)"));
      m2.unlock();
    });
  });

  await t.step("a task that exits holding a lock is reported by world.check()", async () => {
    const w = new Kernel();
    const m = new Mutex(w, "leaked");
    w.spawn("leaker", async () => {
      await m.lock();
    });
    const task = [...w.sched.tasks][0]!;
    await w.run();
    strictEqual(task.state, "done");
    deepStrictEqual(w.check(), [
      "lockdep: leaker/1 exited holding leaked (debug_check_no_locks_held)",
    ]);
  });

  await t.step("lockdep off: no tracking, no graph", async () => {
    const w = new Kernel({ lockdep: false });
    const a = new Mutex(w, "A");
    const b = new Mutex(w, "B");
    await w.runTask("t", async (task) => {
      await a.lock();
      await b.lock();
      strictEqual(task.heldLocks.length, 0);
      b.unlock();
      a.unlock();
      await b.lock();
      await a.lock();
      a.unlock();
      b.unlock();
      ok(a.depMap.isHeld(), "lock_is_held is true with lockdep off");
    });
    strictEqual(w.lockdep.dependencyCount, 0);
    strictEqual(w.bugs.length, 0);
  });

  await t.step("reset() turns lockdep back on after a report", async () => {
    const w = new Kernel({ strict: false });
    const m = new Mutex(w, "m");
    await w.runTask("t", async () => {
      m.unlock();
    });
    ok(!w.lockdep.debugLocks);
    w.lockdep.reset();
    ok(w.lockdep.debugLocks);
    strictEqual(w.lockdep.dependencyCount, 0);
  });
});

Deno.test("lockdep maps: dma_fence signalling annotations", async (t) => {
  // dma_fence_begin_signalling / end_signalling / __dma_fence_might_wait as
  // drivers/dma-buf/dma-fence.c builds them on a lockdep map.
  const begin = (w: Kernel): boolean => {
    const map = w.lockdep.map("dma_fence_map");
    if (map.isHeld(1)) return true;
    map.acquireRead({ trylock: true, site: "dma_fence_begin_signalling" });
    return false;
  };
  const end = (w: Kernel, cookie: boolean): void => {
    if (!cookie) w.lockdep.map("dma_fence_map").release("dma_fence_end_signalling");
  };
  const mightWait = (w: Kernel): void => {
    const map = w.lockdep.map("dma_fence_map");
    const held = map.isHeld(1);
    if (held) map.release();
    map.acquire({ site: "__dma_fence_might_wait" });
    map.release();
    if (held) map.acquireRead({ trylock: true });
  };

  await t.step("one map per name", () => {
    const w = new Kernel();
    strictEqual(w.lockdep.map("dma_fence_map"), w.lockdep.map("dma_fence_map"));
  });

  await t.step("a lock taken while signalling and held while waiting is a cycle", async () => {
    const w = new Kernel({ strict: false });
    const lock = new Mutex(w, "&dev->lock");
    await w.runTask("t", async () => {
      const cookie = begin(w);
      strictEqual(cookie, false);
      strictEqual(begin(w), true, "nested sections are a no-op cookie");
      await lock.lock();
      lock.unlock();
      end(w, cookie);
      await lock.lock();
      mightWait(w); // dma_fence_wait with &dev->lock held
      lock.unlock();
    });
    const text = w.dmesg.text();
    ok(text.includes("WARNING: possible circular locking dependency detected"), text);
    ok(text.includes("-> #0 (dma_fence_map){++++}-{0:0}:"), text);
    ok(text.includes("-> #1 (&dev->lock){+.+.}-{4:4}:"), text);
    ok(text.includes("                               lock(dma_fence_map);"), text);
  });

  await t.step("waiting inside a signalling section is reported", async () => {
    const w = new Kernel({ strict: false });
    await w.runTask("t", async () => {
      const cookie = begin(w);
      const map = w.lockdep.map("dma_fence_map");
      // without the drop-and-retake of __dma_fence_might_wait: write while read-held
      map.acquire();
      end(w, cookie);
    });
    ok(w.dmesg.includes("WARNING: possible recursive locking detected"));
  });

  await t.step(
    "the clean pattern (lock, signal, unlock; wait without locks) is silent",
    async () => {
      const w = new Kernel();
      const lock = new Mutex(w, "&dev->lock");
      await w.runTask("t", async () => {
        await lock.lock();
        const cookie = begin(w);
        end(w, cookie);
        lock.unlock();
        mightWait(w);
      });
      strictEqual(w.bugs.length, 0);
    },
  );
});

Deno.test("SpinLock: atomic context, irqsave, spin debug", async (t) => {
  await t.step("lock raises preempt_count; irqsave returns flags", async () => {
    const w = new Kernel();
    const s = new SpinLock(w, "s");
    await w.runTask("t", async (task) => {
      const flags = s.lockIrqsave();
      strictEqual(flags, 0);
      strictEqual(task.preemptCount, 1);
      ok(task.atomic);
      s.unlockIrqrestore(flags);
      strictEqual(task.preemptCount, 0);
      ok(s.trylock());
      strictEqual(s.trylock(), false);
      s.unlock();
    });
  });

  await t.step("a spinlock taken in an interrupt shows {-.-.} usage", async () => {
    const w = new Kernel();
    const s = new SpinLock(w, "irq_lock");
    await w.runTask("t", async () => {
      w.sched.addTimer(1000, () => {
        s.lock();
        s.unlock();
      });
      await w.sched.msleep(1);
    });
    strictEqual(s.depMap.classFor().label, "(irq_lock){-.-.}-{3:3}");
  });

  await t.step(
    "recursion and unlocking a free lock are spin_bug reports (lockdep off)",
    async () => {
      const w = new Kernel({ lockdep: false, strict: false });
      const s = new SpinLock(w, "s");
      await w.runTask("t", async () => {
        s.lock();
        s.lock();
      });
      ok(w.dmesg.includes("BUG: spinlock recursion on CPU#0, t/1"));
      const w2 = new Kernel({ lockdep: false });
      const s2 = new SpinLock(w2, "s");
      await w2.runTask("t", async () => {
        throws(() => s2.unlock(), isBug("BUG", "BUG: spinlock already unlocked on CPU#0"));
        ok(!s2.isLocked());
      });
    },
  );
});

Deno.test("RwSemaphore: readers share, writers exclude, queued writers are not starved", async (t) => {
  await t.step("readers run together, a writer waits for all of them", async () => {
    const w = new Kernel();
    const sem = new RwSemaphore(w, "sem");
    const log: string[] = [];
    for (const r of ["r1", "r2"]) {
      w.spawn(r, async () => {
        await sem.downRead();
        log.push(`${r} in (${sem.readers.length} readers)`);
        await w.sched.msleep(1);
        sem.upRead();
      });
    }
    w.spawn("writer", async () => {
      await sem.downWrite();
      log.push(`writer in (${sem.readers.length} readers)`);
      sem.upWrite();
    });
    await w.run();
    deepStrictEqual(log, ["r1 in (1 readers)", "r2 in (2 readers)", "writer in (0 readers)"]);
  });

  await t.step(
    "a reader arriving behind a queued writer waits (no writer starvation)",
    async () => {
      const w = new Kernel();
      const sem = new RwSemaphore(w, "sem");
      const log: string[] = [];
      // msleep(10/20/30) at HZ=250: 4, 6 and 9 jiffies.
      w.spawn("r1", async () => {
        await sem.downRead();
        await w.sched.msleep(30);
        log.push("r1 out");
        sem.upRead();
      });
      w.spawn("writer", async () => {
        await w.sched.msleep(10);
        await sem.downWrite();
        log.push("writer");
        strictEqual(sem.downReadTrylock(), false);
        sem.downgradeWrite();
        log.push("downgraded");
        await w.sched.msleep(1);
        sem.upRead();
      });
      w.spawn("r2", async () => {
        await w.sched.msleep(20);
        strictEqual(sem.waiting, 1, "the writer is queued behind r1");
        strictEqual(sem.downReadTrylock(), false, "trylock fails while a writer waits");
        await sem.downRead();
        log.push(`r2 (${sem.readers.length} readers)`);
        sem.upRead();
      });
      await w.run();
      deepStrictEqual(log, ["r1 out", "writer", "downgraded", "r2 (2 readers)"]);
    },
  );

  await t.step("down_write_killable returns -EINTR with the semaphore intact", async () => {
    const w = new Kernel();
    const sem = new RwSemaphore(w, "sem");
    let ret = 0;
    w.spawn("reader", async () => {
      await sem.downRead();
      await w.sched.msleep(30);
      strictEqual(sem.waiting, 0);
      sem.upRead();
    });
    const wr = w.spawn("writer", async () => {
      ret = await sem.downWriteKillable();
    });
    w.spawn("killer", async () => {
      await w.sched.msleep(1);
      w.sched.signal(wr);
    });
    await w.run();
    strictEqual(ret, -Errno.EINTR);
    ok(!sem.isLocked());
    strictEqual(sem.writer, null);
  });

  await t.step("up_write by a non-owner: lockdep splat, writer keeps it", async () => {
    const w = new Kernel();
    const sem = new RwSemaphore(w, "sem");
    w.spawn("owner", async () => {
      await sem.downWrite();
      await w.sched.msleep(20);
      sem.assertHeldWrite();
      sem.upWrite();
    });
    w.spawn("other", async () => {
      await w.sched.msleep(1);
      strictEqual(sem.writer?.name, "owner");
      throws(() => sem.upWrite(), isBug("lockdep", "bad unlock balance"));
      strictEqual(sem.writer?.name, "owner");
    });
    await w.run();
  });
});

Deno.test("WwMutex: wound-wait wounds a younger holder that sleeps on another lock", async () => {
  const w = new Kernel();
  const cls = new WwClass("wound_test");
  const a = new WwMutex(w, cls, "a");
  const b = new WwMutex(w, cls, "b");
  const log: string[] = [];
  // old: ctx stamp 1, young: stamp 2
  w.spawn("old", async () => {
    const ctx = new WwAcquireCtx(w, cls);
    strictEqual(await a.lock(ctx), 0);
    await w.sched.msleep(10);
    strictEqual(await b.lock(ctx), 0, "the older context never backs off");
    log.push("old done");
    b.unlock();
    a.unlock();
    ctx.fini();
  });
  w.spawn("young", async () => {
    const ctx = new WwAcquireCtx(w, cls);
    strictEqual(await b.lock(ctx), 0);
    await w.sched.msleep(30);
    // wounded by "old" while sleeping: the contended lock returns -EDEADLK
    strictEqual(ctx.wounded, true);
    strictEqual(await a.lock(ctx), -Errno.EDEADLK);
    strictEqual(ctx.contendingLock, a);
    b.unlock();
    await a.lockSlow(ctx);
    strictEqual(ctx.wounded, false, "a context holding nothing is no longer wounded");
    strictEqual(await b.lock(ctx), 0);
    log.push("young done");
    b.unlock();
    a.unlock();
    ctx.fini();
  });
  await w.run();
  deepStrictEqual(log, ["old done", "young done"]);
});

Deno.test("WwMutex: wait-die kills the younger requester at once, the older waits", async () => {
  const w = new Kernel();
  const cls = new WwClass("die_test", { waitDie: true });
  const a = new WwMutex(w, cls, "a");
  const c = new WwMutex(w, cls, "c");
  const log: string[] = [];
  w.spawn("old", async () => {
    const ctx = new WwAcquireCtx(w, cls);
    strictEqual(await a.lock(ctx), 0);
    await w.sched.msleep(20);
    strictEqual(await c.lock(ctx), 0, "the older context waits instead of dying");
    log.push(`old got c at ${w.sched.jiffies}`);
    c.unlock();
    a.unlock();
    ctx.fini();
  });
  w.spawn("young", async () => {
    const ctx = new WwAcquireCtx(w, cls);
    strictEqual(await c.lock(ctx), 0);
    await w.sched.msleep(10);
    const t0 = w.sched.now;
    strictEqual(await a.lock(ctx), -Errno.EDEADLK, "younger dies");
    strictEqual(w.sched.now, t0, "without sleeping");
    strictEqual(ctx.acquired, 1, "state intact: still holds c");
    strictEqual(ctx.contendingLock, a);
    strictEqual(a.ctx?.task.name, "old");
    await w.sched.msleep(30);
    log.push(`young releases c at ${w.sched.jiffies}`);
    c.unlock();
    await a.lockSlow(ctx);
    strictEqual(await c.lock(ctx), 0);
    log.push("young done");
    c.unlock();
    a.unlock();
    ctx.fini();
  });
  await w.run();
  deepStrictEqual(log, ["young releases c at 13", "old got c at 13", "young done"]);
});

Deno.test("property: consistent lock order never deadlocks and lockdep stays silent", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 0xffff }),
      fc.array(
        fc.record({
          locks: fc.uniqueArray(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 5 }),
          unlockOrder: fc.integer({ min: 0, max: 1000 }),
          reps: fc.integer({ min: 1, max: 3 }),
        }),
        { minLength: 1, maxLength: 5 },
      ),
      async (seed, programs) => {
        const w = new Kernel({ policy: new RandomPolicy(seed) });
        const mutexes = Array.from({ length: 5 }, (_, i) => new Mutex(w, `m${i}`));
        const inside: number[] = new Array(5).fill(0);
        let finished = 0;
        programs.forEach((p, id) => {
          const order = [...p.locks].sort((x, y) => x - y);
          w.spawn(`p${id}`, async () => {
            for (let r = 0; r < p.reps; r++) {
              for (const i of order) {
                await mutexes[i]!.lock();
                strictEqual(inside[i], 0);
                inside[i]++;
              }
              await w.sched.preempt("work");
              // release in a program-chosen order (any order is fine)
              const rel = [...order];
              for (let k = rel.length - 1; k > 0; k--) {
                const j = (p.unlockOrder + k) % (k + 1);
                [rel[k], rel[j]] = [rel[j]!, rel[k]!];
              }
              for (const i of rel) {
                inside[i]--;
                mutexes[i]!.unlock();
              }
            }
            finished++;
          });
        });
        await w.run();
        strictEqual(finished, programs.length);
        strictEqual(w.bugs.length, 0);
        ok(mutexes.every((m) => !m.isLocked()));
      },
    ),
    { numRuns: 80 },
  );
});

Deno.test("property: the same seed gives the same lock acquisition order", async () => {
  const run = async (seed: number, plan: number[][]): Promise<string[]> => {
    const w = new Kernel({ policy: new RandomPolicy(seed) });
    const m = [new Mutex(w, "m0"), new Mutex(w, "m1"), new Mutex(w, "m2")];
    const sem = new RwSemaphore(w, "sem");
    const log: string[] = [];
    plan.forEach((locks, id) => {
      w.spawn(`t${id}`, async () => {
        for (const i of locks) {
          if (i === 3) {
            await sem.downRead();
            log.push(`t${id}:sem@${w.sched.now}`);
            await w.sched.preempt("read side");
            sem.upRead();
          } else {
            await m[i]!.lock();
            log.push(`t${id}:m${i}@${w.sched.now}`);
            await w.sched.msleep(1);
            m[i]!.unlock();
          }
        }
      });
    });
    await w.run();
    return log;
  };
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 0xffff }),
      fc.array(fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 4 }), {
        minLength: 2,
        maxLength: 4,
      }),
      async (seed, plan) => {
        deepStrictEqual(await run(seed, plan), await run(seed, plan));
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("lockdep: lock_acquire / lock_release tracepoints while tracing", async (t) => {
  await t.step("a spinlock taken and dropped between two points shows in ftrace", async () => {
    const w = new Kernel();
    const m = new Mutex(w, "outer");
    const s = new SpinLock(w, "inner");
    w.trace.enable();
    await w.runTask("t", async () => {
      await m.lock();
      s.lock();
      s.unlock();
      m.unlock();
    });
    const ev = w.trace.events.filter((e) => e.name.startsWith("lock_"));
    deepStrictEqual(
      ev.map((e) => `${e.name}:${e.fields.lock}`),
      ["lock_acquire:outer", "lock_acquire:inner", "lock_release:inner", "lock_release:outer"],
    );
    ok(w.trace.ftrace().includes("lock_acquire: lock=inner try=0 read=0"));
  });
  await t.step("nothing is recorded while tracing is off", async () => {
    const w = new Kernel();
    const m = new Mutex(w, "quiet");
    await w.runTask("t", async () => {
      await m.lock();
      m.unlock();
    });
    strictEqual(w.trace.events.length, 0);
  });
});
