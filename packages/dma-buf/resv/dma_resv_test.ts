// dma_resv rules, errno values and WARN/BUG/lockdep paths beyond st-dma-resv.
import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { Errno, Kernel, KernelBug, type Task, WwAcquireCtx } from "@dmalab/kernel";
import {
  DmaFence,
  DmaFenceArray,
  dmaFenceBeginSignalling,
  dmaFenceContextAlloc,
  dmaFenceEndSignalling,
  type DmaFenceOps,
  dmaFenceWorld,
  DmaResv,
  DmaResvIter,
  DmaResvUsage,
  dmaResvUsageRw,
  kmallocSize,
  MMAP_LOCK_CLASS,
  MMU_NOTIFIER_MAP,
  reservationWwClass,
  toDmaFenceArray,
} from "../mod.ts";

const ops: DmaFenceOps = { getDriverName: () => "gpu", getTimelineName: () => "ring0" };
const { KERNEL, WRITE, READ, BOOKKEEP } = DmaResvUsage;
const USAGES = [KERNEL, WRITE, READ, BOOKKEEP] as const;

function fence(w: Kernel, ctx = dmaFenceContextAlloc(w, 1), seqno = 1): DmaFence {
  return new DmaFence(w, ops, ctx, seqno);
}

function isBug(kind: string, text?: string) {
  return (e: unknown) =>
    e instanceof KernelBug && e.kind === kind && (text === undefined || e.report.includes(text));
}

/** Runs `body` in a task with a fresh resv, locked, and checks cleanup. */
async function withResv(
  body: (w: Kernel, resv: DmaResv, task: Task) => Promise<void> | void,
  w = new Kernel(),
): Promise<Kernel> {
  await w.runTask("t", async (task) => {
    const resv = new DmaResv(w);
    strictEqual(await resv.lock(null), 0);
    await body(w, resv, task);
    if (resv.held()) resv.unlock();
    resv.fini();
  });
  return w;
}

/** The (fence, usage) pairs of the locked walk with BOOKKEEP. */
function entries(resv: DmaResv): [DmaFence, number][] {
  const cursor = new DmaResvIter(resv, BOOKKEEP);
  const out: [DmaFence, number][] = [];
  for (const f of resv.forEachFence(BOOKKEEP, cursor)) out.push([f, cursor.fenceUsage]);
  return out;
}

Deno.test("dma_resv usages", async (t) => {
  await t.step("a query for usage Q returns a fence of usage U iff U <= Q", async () => {
    for (const u of USAGES) {
      for (const q of USAGES) {
        await withResv((w, resv) => {
          const f = fence(w);
          resv.reserveFences(1);
          resv.addFence(f, u);
          strictEqual([...resv.forEachFence(q)].length, u <= q ? 1 : 0, `locked U=${u} Q=${q}`);
          const got = resv.getFences(q);
          strictEqual(got.length, u <= q ? 1 : 0, `get_fences U=${u} Q=${q}`);
          got.forEach((g) => g.put());
          strictEqual(resv.testSignaled(q), u > q);
          f.signal();
          f.put();
        });
      }
    }
  });

  await t.step("dma_resv_usage_rw: writers wait for READ, readers for WRITE", () => {
    strictEqual(dmaResvUsageRw(true), READ);
    strictEqual(dmaResvUsageRw(false), WRITE);
  });
});

Deno.test("dma_resv_reserve_fences", async (t) => {
  await t.step("capacity is the kmalloc bucket the kernel gets (ksize)", async () => {
    await withResv((_w, resv) => {
      strictEqual(kmallocSize(24 + 8 * 4), 64);
      resv.reserveFences(1);
      strictEqual(resv.maxFences, 5, "max(4, 1) slots = 56 bytes -> kmalloc-64 -> 5");
      resv.reserveFences(5);
      strictEqual(resv.maxFences, 5, "0 + 5 <= 5: nothing to do");
      resv.reserveFences(6);
      strictEqual(resv.maxFences, 13, "max(6, 2*5) = 10 slots = 104 bytes -> kmalloc-128 -> 13");
    });
    await withResv((_w, resv) => {
      resv.reserveFences(6);
      strictEqual(
        resv.maxFences,
        9,
        "roundup_pow_of_two(6) = 8 slots = 88 bytes -> kmalloc-96 -> 9",
      );
    });
    await withResv((_w, resv) => {
      resv.reserveFences(1000);
      strictEqual(resv.maxFences, 2045, "1024 slots = 8216 bytes -> 4 pages -> 2045");
    });
  });
});

Deno.test("dma_resv_add_fence", async (t) => {
  await t.step(
    "same context and usage: a later fence replaces, an older one is appended",
    async () => {
      await withResv((w, resv) => {
        const ctx = dmaFenceContextAlloc(w, 1);
        const [f1, f2, f0] = [fence(w, ctx, 1), fence(w, ctx, 2), fence(w, ctx, 0)];
        resv.reserveFences(3);
        resv.addFence(f1, WRITE);
        resv.addFence(f2, WRITE);
        deepStrictEqual(entries(resv), [[f2, WRITE]], "f2 replaced f1");
        strictEqual(f1.refcount, 1, "the replaced entry's reference was dropped");
        resv.addFence(f0, WRITE);
        deepStrictEqual(
          entries(resv),
          [[f2, WRITE], [f0, WRITE]],
          "an older fence does not replace",
        );
        resv.addFence(f2, WRITE);
        deepStrictEqual(
          entries(resv),
          [[f2, WRITE], [f0, WRITE]],
          "the same fence replaces itself",
        );
        strictEqual(f2.refcount, 2);
        for (const f of [f0, f1, f2]) {
          f.signal();
          f.put();
        }
      });
    },
  );

  await t.step("usage order: READ after WRITE keeps both, WRITE after READ replaces", async () => {
    await withResv((w, resv) => {
      const ctx = dmaFenceContextAlloc(w, 1);
      const [a, b, c] = [fence(w, ctx, 1), fence(w, ctx, 2), fence(w, ctx, 3)];
      resv.reserveFences(3);
      resv.addFence(a, WRITE);
      resv.addFence(b, READ);
      deepStrictEqual(entries(resv), [[a, WRITE], [b, READ]], "1 >= 2 is false: appended");
      resv.addFence(c, WRITE);
      deepStrictEqual(entries(resv), [[c, WRITE], [b, READ]], "first matching entry replaced");
      for (const f of [a, b, c]) {
        f.signal();
        f.put();
      }
    });
  });

  await t.step("a signalled entry is replaced by any fence", async () => {
    await withResv((w, resv) => {
      const [a, b] = [fence(w), fence(w)];
      resv.reserveFences(2);
      resv.addFence(a, BOOKKEEP);
      a.signal();
      resv.addFence(b, KERNEL);
      deepStrictEqual(entries(resv), [[b, KERNEL]]);
      strictEqual(resv.numFences, 1);
      b.signal();
      a.put();
      b.put();
    });
  });

  await t.step("adding without a reserved slot is the kernel's BUG_ON", async () => {
    await rejects(
      withResv((w, resv) => {
        resv.addFence(fence(w), WRITE);
      }),
      isBug("BUG", "BUG_ON(fobj->num_fences >= fobj->max_fences)"),
    );
    await rejects(
      withResv((w, resv) => {
        resv.reserveFences(1);
        const [a, b] = [fence(w), fence(w)];
        resv.addFence(a, WRITE);
        strictEqual(resv.maxFences, 5);
        for (let i = 0; i < 4; i++) resv.addFence(fence(w), WRITE);
        resv.addFence(b, WRITE);
      }),
      isBug("BUG", "5 fences, 5 slots"),
    );
  });

  await t.step("reservations do not survive an unlock (CONFIG_DEBUG_MUTEXES)", async () => {
    await rejects(
      withResv(async (w, resv) => {
        resv.reserveFences(2);
        resv.addFence(fence(w), WRITE);
        resv.unlock();
        await resv.lock(null);
        strictEqual(resv.maxFences, 1, "dma_resv_reset_max_fences");
        resv.addFence(fence(w), WRITE);
      }),
      isBug("BUG", "reservations are dropped at unlock"),
    );
    const w = new Kernel({ variants: { CONFIG_DEBUG_MUTEXES: "n" } });
    await withResv(async (w, resv) => {
      resv.reserveFences(2);
      const [a, b] = [fence(w), fence(w)];
      resv.addFence(a, WRITE);
      resv.unlock();
      await resv.lock(null);
      resv.addFence(b, WRITE);
      strictEqual(resv.numFences, 2, "without the debug option the slot is still there");
      for (const f of [a, b]) {
        f.signal();
        f.put();
      }
    }, w);
  });

  await t.step("mutators without the lock are lockdep assertions", async () => {
    const w = new Kernel();
    await w.runTask("t", async () => {
      const resv = new DmaResv(w);
      throws(() => resv.reserveFences(1), isBug("lockdep", "dma_resv_reserve_fences"));
      throws(() => resv.addFence(fence(w), READ), isBug("lockdep", "dma_resv_add_fence"));
      throws(() => resv.replaceFences(1, fence(w), READ), isBug("lockdep"));
      throws(() => [...resv.forEachFence(READ)], isBug("lockdep", "dma_resv_iter_first"));
    });
    const w2 = new Kernel();
    const resv2 = new DmaResv(w2);
    w2.spawn("owner", async () => {
      await resv2.lock(null);
      await w2.sched.msleep(10);
      resv2.unlock();
    });
    w2.spawn("other", async () => {
      await w2.sched.msleep(1);
      ok(resv2.isLocked());
      ok(!resv2.held(), "held by another task");
      throws(() => resv2.reserveFences(1), isBug("lockdep"));
    });
    await w2.run();
  });

  await t.step("adding a container is a WARN", async () => {
    await rejects(
      withResv((w, resv) => {
        resv.reserveFences(1);
        const arr = DmaFenceArray.create(w, [fence(w)], dmaFenceContextAlloc(w, 1), 1, false);
        resv.addFence(arr, READ);
      }),
      isBug("WARN", "array fence added"),
    );
  });
});

Deno.test("dma_resv replace, copy, fini, describe", async (t) => {
  await t.step("replace_fences swaps every entry of a context", async () => {
    await withResv((w, resv) => {
      const ctx = dmaFenceContextAlloc(w, 1);
      const [a, b, other, pt] = [fence(w, ctx, 1), fence(w, ctx, 2), fence(w), fence(w)];
      resv.reserveFences(3);
      resv.addFence(b, READ);
      resv.addFence(a, BOOKKEEP);
      resv.addFence(other, WRITE);
      strictEqual(resv.numFences, 3, "BOOKKEEP after READ of one context is appended");
      resv.replaceFences(ctx, pt, KERNEL);
      deepStrictEqual(entries(resv), [[pt, KERNEL], [pt, KERNEL], [other, WRITE]]);
      strictEqual(pt.refcount, 3, "one reference per replaced entry");
      strictEqual(a.refcount, 1);
      for (const f of [a, b, other, pt]) {
        f.signal();
        f.put();
      }
    });
  });

  await t.step("copy_fences snapshots the unsignalled fences with their usages", async () => {
    const w = new Kernel();
    await w.runTask("t", async () => {
      const [src, dst] = [new DmaResv(w), new DmaResv(w)];
      const [a, b, c, d] = [fence(w), fence(w), fence(w), fence(w)];
      await src.lock(null);
      src.reserveFences(3);
      src.addFence(a, READ);
      src.addFence(b, BOOKKEEP);
      src.addFence(c, KERNEL);
      src.unlock();
      c.signal();
      await dst.lock(null);
      dst.reserveFences(1);
      dst.addFence(d, WRITE);
      strictEqual(dst.copyFences(src), 0);
      deepStrictEqual(entries(dst), [[a, READ], [b, BOOKKEEP]]);
      strictEqual(d.refcount, 1, "the old list was freed");
      dst.unlock();
      src.fini();
      dst.fini();
      for (const f of [a, b, c, d]) {
        f.signal();
        f.put();
      }
    });
    strictEqual(dmaFenceWorld(w).live, 0, "fini dropped every reference");
  });

  await t.step("describe prints usages up to READ in the kernel's format", async () => {
    await withResv((w, resv) => {
      const [a, b, c] = [fence(w, 5, 9), fence(w, 6, 1), fence(w, 7, 2)];
      resv.reserveFences(3);
      resv.addFence(a, WRITE);
      resv.addFence(b, BOOKKEEP);
      resv.addFence(c, READ);
      c.signal();
      strictEqual(
        resv.describe(),
        "\twrite fence:5:9 ring0 gpu unsignalled\n\tread fence:7:2   signalled\n",
      );
      for (const f of [a, b, c]) {
        f.signal();
        f.put();
      }
    });
  });
});

Deno.test("dma_resv iterators", async (t) => {
  await t.step(
    "the locked walk includes signalled fences, the unlocked walk skips them",
    async () => {
      await withResv((w, resv) => {
        const [a, b] = [fence(w), fence(w)];
        resv.reserveFences(2);
        resv.addFence(a, READ);
        resv.addFence(b, READ);
        a.signal();
        deepStrictEqual([...resv.forEachFence(READ)], [a, b]);
        deepStrictEqual([...resv.forEachFenceUnlocked(new DmaResvIter(resv, READ))], [b]);
        strictEqual(b.refcount, 2, "the cursor dropped its reference at the end");
        b.signal();
        a.put();
        b.put();
      });
    },
  );

  await t.step("the unlocked walk restarts when another task replaces the list", async () => {
    const w = new Kernel();
    const resv = new DmaResv(w);
    const fs = [fence(w), fence(w), fence(w)];
    const seen: [number, boolean][] = [];
    w.spawn("writer", async () => {
      await resv.lock(null);
      resv.reserveFences(3);
      for (const f of fs) resv.addFence(f, WRITE);
      resv.unlock();
      await w.sched.msleep(2);
      await resv.lock(null);
      resv.reserveFences(10); // a new list is published
      resv.unlock();
    });
    w.spawn("reader", async () => {
      await w.sched.msleep(1);
      const cursor = new DmaResvIter(resv, READ);
      for (const f of resv.forEachFenceUnlocked(cursor)) {
        seen.push([fs.indexOf(f), cursor.isRestarted]);
        await w.sched.msleep(2); // the writer swaps the list meanwhile
      }
    });
    await w.run();
    deepStrictEqual(seen, [[0, true], [0, true], [1, false], [2, false]]);
    for (const f of fs) {
      f.signal();
      f.put();
    }
    await w.runTask("fini", async () => resv.fini());
  });
});

Deno.test("dma_resv queries", async (t) => {
  await t.step("get_singleton: null, the fence, or an array over them", async () => {
    await withResv((w, resv) => {
      strictEqual(resv.getSingleton(BOOKKEEP), null);
      const [a, b] = [fence(w), fence(w)];
      resv.reserveFences(2);
      resv.addFence(a, WRITE);
      const one = resv.getSingleton(BOOKKEEP);
      strictEqual(one, a);
      one!.put();
      resv.addFence(b, READ);
      strictEqual(resv.getSingleton(WRITE), a, "READ is above WRITE");
      a.put();
      const arr = toDmaFenceArray(resv.getSingleton(READ));
      ok(arr);
      deepStrictEqual(arr.fences, [a, b]);
      strictEqual(arr.seqno, 1);
      a.signal();
      ok(!arr.isSignaled());
      b.signal();
      ok(arr.isSignaled());
      arr.put();
      a.put();
      b.put();
    });
  });

  await t.step(
    "wait_timeout: 0 on timeout, 1 for timeout 0 when idle, jiffies left, -ERESTARTSYS",
    async () => {
      const w = new Kernel({ hz: 1000 });
      const resv = new DmaResv(w);
      const [a, b] = [fence(w), fence(w)];
      await w.runTask("setup", async () => {
        strictEqual(await resv.waitTimeout(READ, false, 0), 1, "nothing to wait for");
        strictEqual(await resv.waitTimeout(READ, false, 50), 50, "nothing to wait for: all left");
        await resv.lock(null);
        resv.reserveFences(2);
        resv.addFence(a, WRITE);
        resv.addFence(b, BOOKKEEP);
        resv.unlock();
        strictEqual(await resv.waitTimeout(READ, false, 0), 0, "timeout 0 with a fence pending");
        strictEqual(await resv.waitTimeout(READ, false, 5), 0, "timed out");
      });
      w.spawn("irq", async () => {
        await w.sched.sleepNs(10_000_000);
        a.signal();
      });
      strictEqual(await w.runTask("wait", () => resv.waitTimeout(READ, false, 100)), 90);
      ok(!resv.testSignaled(BOOKKEEP));
      const waiter = w.spawn("intr", () => resv.waitTimeout(BOOKKEEP, true, 100));
      w.spawn("kill", async () => {
        await w.sched.msleep(3);
        w.sched.signal(waiter);
      });
      await w.run();
      strictEqual(waiter.result, -Errno.ERESTARTSYS);
      b.signal();
      ok(resv.testSignaled(BOOKKEEP));
      for (const f of [a, b]) f.put();
      await w.runTask("fini", async () => resv.fini());
      strictEqual(dmaFenceWorld(w).live, 0);
    },
  );

  await t.step("set_deadline reaches every unsignalled fence up to the usage", async () => {
    await withResv((w, resv) => {
      const seen: number[] = [];
      const mk = () =>
        new DmaFence(
          w,
          { ...ops, setDeadline: (f) => seen.push(f.context) },
          dmaFenceContextAlloc(w, 1),
          1,
        );
      const [a, b] = [mk(), mk()];
      resv.reserveFences(2);
      resv.addFence(a, WRITE);
      resv.addFence(b, BOOKKEEP);
      resv.setDeadline(READ, 1000);
      deepStrictEqual(seen, [a.context]);
      for (const f of [a, b]) {
        f.signal();
        f.put();
      }
    });
  });
});

Deno.test("dma_resv locking", async (t) => {
  await t.step("-EALREADY for the same context, locking_ctx, trylock, is_locked", async () => {
    const w = new Kernel();
    await w.runTask("t", async () => {
      const resv = new DmaResv(w);
      const ctx = new WwAcquireCtx(w, reservationWwClass);
      strictEqual(await resv.lock(ctx), 0);
      strictEqual(await resv.lock(ctx), -Errno.EALREADY);
      strictEqual(resv.lockingCtx(), ctx);
      ok(resv.isLocked());
      resv.unlock();
      ctx.fini();
      ok(!resv.isLocked());
      ok(resv.trylock());
      ok(!resv.trylock(), "already held: trylock fails");
      strictEqual(resv.lockingCtx(), null);
      resv.unlock();
      resv.fini();
    });
  });

  await t.step(
    "Wait-Die: the younger context holding a lock gets -EDEADLK and backs off",
    async () => {
      const w = new Kernel();
      const [r1, r2] = [new DmaResv(w, "bo1"), new DmaResv(w, "bo2")];
      const log: string[] = [];
      w.spawn("old", async () => {
        const ctx = new WwAcquireCtx(w, reservationWwClass);
        strictEqual(await r1.lock(ctx), 0);
        await w.sched.msleep(2);
        strictEqual(await r2.lock(ctx), 0, "the older context waits");
        log.push("old has both");
        r2.unlock();
        r1.unlock();
        ctx.fini();
      });
      w.spawn("young", async () => {
        await w.sched.msleep(1);
        const ctx = new WwAcquireCtx(w, reservationWwClass);
        strictEqual(await r2.lock(ctx), 0);
        await w.sched.msleep(2);
        const ret = await r1.lock(ctx);
        strictEqual(ret, -Errno.EDEADLK, "younger meets an older holder: die");
        log.push("young backs off");
        r2.unlock();
        await r1.lockSlow(ctx);
        strictEqual(await r2.lock(ctx), 0);
        log.push("young has both");
        r1.unlock();
        r2.unlock();
        ctx.fini();
      });
      await w.run();
      deepStrictEqual(log, ["young backs off", "old has both", "young has both"]);
      await w.runTask("fini", async () => {
        r1.fini();
        r2.fini();
      });
    },
  );

  await t.step("lock_interruptible gives -EINTR when a signal arrives", async () => {
    const w = new Kernel();
    const resv = new DmaResv(w);
    w.spawn("holder", async () => {
      await resv.lock(null);
      await w.sched.msleep(10);
      resv.unlock();
    });
    const waiter = w.spawn("waiter", async () => {
      await w.sched.msleep(1);
      return resv.lockInterruptible(null);
    });
    w.spawn("kill", async () => {
      await w.sched.msleep(2);
      w.sched.signal(waiter);
    });
    await w.run();
    strictEqual(waiter.result, -Errno.EINTR);
  });
});

Deno.test("dma_resv lockdep priming", async (t) => {
  await t.step("taking a reservation lock inside a fence signalling section", async () => {
    const w = new Kernel({ strict: false });
    await w.runTask("signaller", async () => {
      const resv = new DmaResv(w);
      const cookie = dmaFenceBeginSignalling(w);
      await resv.lock(null);
      resv.unlock();
      dmaFenceEndSignalling(w, cookie);
    });
    ok(w.dmesg.includes("WARNING: possible circular locking dependency detected"));
    ok(w.dmesg.includes("dma_fence_map"));
    ok(w.dmesg.includes("reservation_ww_class"));
  });

  await t.step("taking mmap_lock under a reservation lock inverts the primed order", async () => {
    const { MmapLock } = await import("@dmalab/kernel");
    const w = new Kernel({ strict: false });
    await w.runTask("fault", async () => {
      const resv = new DmaResv(w);
      const mmap = new MmapLock(w, MMAP_LOCK_CLASS); // mm_struct's lock, same class
      await resv.lock(null);
      await mmap.readLock();
      mmap.readUnlock();
      resv.unlock();
    });
    ok(w.dmesg.includes("WARNING: possible circular locking dependency detected"));
    ok(w.dmesg.includes(MMAP_LOCK_CLASS));
  });

  await t.step("an mmu notifier may wait for fences but not take a reservation lock", async () => {
    const w = new Kernel({ strict: false });
    const resv = new DmaResv(w);
    const f = fence(w);
    f.signal();
    const notifier = w.lockdep.map(MMU_NOTIFIER_MAP);
    await w.runTask("invalidate-wait", async () => {
      notifier.acquire();
      strictEqual(await resv.waitTimeout(BOOKKEEP, false, 10), 10);
      notifier.release();
    });
    strictEqual(w.bugs.length, 0, "waiting for fences in invalidate_range_start is allowed");
    await w.runTask("invalidate-lock", async () => {
      notifier.acquire();
      await resv.lock(null);
      resv.unlock();
      notifier.release();
    });
    ok(w.dmesg.includes("WARNING: possible circular locking dependency detected"));
    f.put();
  });

  await t.step("waiting for fences with the reservation lock held is allowed", async () => {
    const w = new Kernel();
    await w.runTask("evict", async () => {
      const resv = new DmaResv(w);
      const f = fence(w);
      await resv.lock(null);
      resv.reserveFences(1);
      resv.addFence(f, KERNEL);
      f.signal();
      strictEqual(await resv.waitTimeout(BOOKKEEP, false, 10), 10);
      resv.unlock();
      resv.fini();
      f.put();
    });
    strictEqual(w.bugs.length, 0);
    ok(w.lockdep.hasDependency("reservation_ww_class_mutex", "fs_reclaim"));
    ok(w.lockdep.hasDependency(MMAP_LOCK_CLASS, "reservation_ww_class_acquire"));
  });
});

Deno.test("dma_resv invariant checker", async () => {
  const w = new Kernel();
  await w.runTask("t", async () => {
    const resv = new DmaResv(w);
    const f = fence(w);
    await resv.lock(null);
    resv.reserveFences(1);
    resv.addFence(f, READ);
    resv.unlock();
    deepStrictEqual(w.check(), []);
    // a driver that drops the list's reference behind dma_resv's back
    f.put();
    f.put();
    deepStrictEqual(w.check(), [
      "dma-resv: reservation_ww_class_mutex: slot 0 holds released fence 1:1",
    ]);
  });
});

Deno.test("dma_resv: locking several objects with backoff always completes (Wait-Die)", async () => {
  const { RandomPolicy } = await import("@dmalab/kernel");
  let backoffs = 0;
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const w = new Kernel({ policy: new RandomPolicy(seed) });
    const bos = [0, 1, 2, 3].map((i) => new DmaResv(w, `bo${i}`));
    const done: string[] = [];
    for (
      const [name, order] of [["a", [0, 1, 2, 3]], ["b", [3, 2, 1, 0]], ["c", [
        2,
        0,
        3,
        1,
      ]]] as const
    ) {
      w.spawn(name, async () => {
        const ctx = new WwAcquireCtx(w, reservationWwClass);
        let contended: DmaResv | null = null;
        for (;;) {
          if (contended) await contended.lockSlow(ctx);
          const held: DmaResv[] = contended ? [contended] : [];
          let ret = 0;
          for (const i of order) {
            const bo = bos[i]!;
            if (bo === contended) continue;
            await w.sched.preempt("lock-next");
            ret = await bo.lock(ctx);
            if (ret === -Errno.EDEADLK) {
              contended = bo;
              backoffs++;
              break;
            }
            strictEqual(ret, 0);
            held.push(bo);
          }
          if (ret === 0) break;
          for (const bo of held) bo.unlock();
        }
        ctx.done();
        for (const bo of bos) ok(bo.held());
        await w.sched.preempt("critical");
        for (const bo of bos) bo.unlock();
        ctx.fini();
        done.push(name);
      });
    }
    await w.run();
    strictEqual(done.length, 3, `seed ${seed}`);
    strictEqual(w.bugs.length, 0);
  }
  ok(backoffs > 0, `some schedules made a younger context die (${backoffs} backoffs)`);
});
