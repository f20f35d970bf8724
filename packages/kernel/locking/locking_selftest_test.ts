// Ports of lib/locking-selftest.c cases, under their kernel names. Each case
// runs in a fresh permissive world (the selftest harness resets lockdep
// between cases); FAILURE means lockdep or a debug check reported (the
// kernel checks `debug_locks == 0`), SUCCESS means nothing was reported.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Kernel } from "../world.ts";
import { Errno } from "../errno.ts";
import type { LockdepMap } from "./lockdep.ts";
import { Mutex } from "./mutex.ts";
import { RwSemaphore } from "./rwsem.ts";
import { SpinLock } from "./spinlock.ts";
import { WwAcquireCtx, WwClass, WwMutex } from "./ww_mutex.ts";

type Expect = "SUCCESS" | "FAILURE";

async function dotest(
  name: string,
  expect: Expect,
  body: (w: Kernel) => Promise<void> | void,
  firstLine?: string,
): Promise<Kernel> {
  const w = new Kernel({ strict: false });
  await w.runTask(name, async () => {
    await body(w);
  });
  if (expect === "SUCCESS") {
    deepStrictEqual(w.bugs.map((b) => b.summary), [], `${name}: expected no report`);
    ok(w.lockdep.debugLocks, `${name}: debug_locks still on`);
  } else {
    ok(w.bugs.length > 0, `${name}: expected a report`);
    // Lockdep and DEBUG_LOCKS_WARN_ON turn debug_locks off; might_sleep does not.
    ok(
      !w.lockdep.debugLocks || w.bugs.some((b) => b.kind === "might_sleep"),
      `${name}: debug_locks turned off`,
    );
    if (firstLine) ok(w.bugs[0]!.summary.includes(firstLine), `${name}: ${w.bugs[0]!.summary}`);
  }
  return w;
}

/** One of the selftest lock flavours (locking-selftest-{spin,wlock,rlock,mutex,wsem,rsem}.h). */
type Flavour = "spin" | "wlock" | "rlock" | "mutex" | "wsem" | "rsem";
interface L {
  lock(): Promise<void> | void;
  unlock(): void;
}

function make(w: Kernel, flavour: Flavour, name: string): L {
  switch (flavour) {
    case "spin": {
      const s = new SpinLock(w, `lock_${name}`);
      return { lock: () => s.lock(), unlock: () => s.unlock() };
    }
    case "wlock":
    case "rlock": {
      // rwlock_t has no model of its own: a lockdep map with the same
      // semantics (read_lock is a recursive read).
      const m: LockdepMap = w.lockdep.newMap(`rwlock_${name}`);
      return flavour === "wlock"
        ? { lock: () => m.acquire(), unlock: () => m.release() }
        : { lock: () => m.acquireRecursiveRead(), unlock: () => m.release() };
    }
    case "mutex": {
      const m = new Mutex(w, `mutex_${name}`);
      return { lock: () => m.lock(), unlock: () => m.unlock() };
    }
    case "wsem": {
      const s = new RwSemaphore(w, `rwsem_${name}`);
      return { lock: () => s.downWrite(), unlock: () => s.upWrite() };
    }
    case "rsem": {
      const s = new RwSemaphore(w, `rwsem_${name}`);
      return { lock: () => s.downRead(), unlock: () => s.upRead() };
    }
  }
}

/** X1/X2 and Y1/Y2 share a class (same init site), as in the selftest. */
function locks(w: Kernel, f: Flavour) {
  const cls = (n: string) => n.replace(/[0-9]$/, "");
  const out: Record<string, L> = {};
  for (const n of ["A", "B", "C", "D", "X1", "X2"]) out[n] = make(w, f, cls(n));
  return out;
}

async function lockUnlock2(x: L, y: L): Promise<void> {
  await x.lock();
  await y.lock();
  y.unlock();
  x.unlock();
}

const FLAVOURS: Flavour[] = ["spin", "wlock", "rlock", "mutex", "wsem", "rsem"];
/** DO_TESTCASE_6R: recursive read locks (rlock) may form these cycles. */
const expect6R = (f: Flavour): Expect => f === "rlock" ? "SUCCESS" : "FAILURE";

Deno.test("locking-selftest: AA, ABBA, ABBCCA, ABCABC, ABBCCDDA, ABCDBDDA, ABCDBCDA", async (t) => {
  const cases: Record<string, (l: Record<string, L>) => Promise<void>> = {
    AA: async (l) => {
      await l.X1!.lock();
      await l.X2!.lock();
    },
    ABBA: async (l) => {
      await lockUnlock2(l.A!, l.B!);
      await lockUnlock2(l.B!, l.A!);
    },
    ABBCCA: async (l) => {
      await lockUnlock2(l.A!, l.B!);
      await lockUnlock2(l.B!, l.C!);
      await lockUnlock2(l.C!, l.A!);
    },
    ABCABC: async (l) => {
      await lockUnlock2(l.A!, l.B!);
      await lockUnlock2(l.C!, l.A!);
      await lockUnlock2(l.B!, l.C!);
    },
    ABBCCDDA: async (l) => {
      await lockUnlock2(l.A!, l.B!);
      await lockUnlock2(l.B!, l.C!);
      await lockUnlock2(l.C!, l.D!);
      await lockUnlock2(l.D!, l.A!);
    },
    ABCDBDDA: async (l) => {
      await lockUnlock2(l.A!, l.B!);
      await lockUnlock2(l.C!, l.D!);
      await lockUnlock2(l.B!, l.D!);
      await lockUnlock2(l.D!, l.A!);
    },
    ABCDBCDA: async (l) => {
      await lockUnlock2(l.A!, l.B!);
      await lockUnlock2(l.C!, l.D!);
      await lockUnlock2(l.B!, l.C!);
      await lockUnlock2(l.D!, l.A!);
    },
  };
  for (const [name, body] of Object.entries(cases)) {
    for (const f of FLAVOURS) {
      // AA: rlock X1/X2 read-after-read is allowed; rsem is not.
      const expect = expect6R(f);
      const first = name === "AA"
        ? "WARNING: possible recursive locking detected"
        : "WARNING: possible circular locking dependency detected";
      await t.step(`${name}_${f}`, async () => {
        await dotest(`${name}_${f}`, expect, (w) => body(locks(w, f)), first);
      });
    }
  }
});

Deno.test("locking-selftest: double_unlock_* reports bad unlock balance", async (t) => {
  for (const f of FLAVOURS) {
    await t.step(`double_unlock_${f}`, async () => {
      await dotest(`double_unlock_${f}`, "FAILURE", async (w) => {
        const l = locks(w, f);
        await l.A!.lock();
        l.A!.unlock();
        l.A!.unlock();
      }, "WARNING: bad unlock balance detected!");
    });
  }
});

Deno.test("locking-selftest: read-lock recursion rules", async (t) => {
  const cases: [string, Expect, (l: Record<string, L>, r: Record<string, L>) => Promise<void>][] = [
    // rlock_* use recursive reads (RL) with write locks (WL) of the same rwlock.
    ["rlock_AA1", "SUCCESS", async (_l, r) => {
      await r.X1!.lock();
      await r.X1!.lock();
    }],
    ["rlock_AA1B", "SUCCESS", async (_l, r) => {
      await r.X1!.lock();
      await r.X2!.lock();
    }],
    ["rlock_AA2", "FAILURE", async (l, r) => {
      await r.X1!.lock();
      await l.X2!.lock();
    }],
    ["rlock_AA3", "FAILURE", async (l, r) => {
      await l.X1!.lock();
      await r.X2!.lock();
    }],
  ];
  for (const [name, expect, body] of cases) {
    await t.step(name, async () => {
      await dotest(name, expect, async (w) => {
        // One rwlock per name: the write side and the read side share the map.
        const maps: Record<string, LockdepMap> = {};
        const wl: Record<string, L> = {};
        const rl: Record<string, L> = {};
        for (const n of ["X1", "X2"]) {
          maps[n] = w.lockdep.newMap("rwlock_X");
          wl[n] = { lock: () => maps[n]!.acquire(), unlock: () => maps[n]!.release() };
          rl[n] = { lock: () => maps[n]!.acquireRecursiveRead(), unlock: () => maps[n]!.release() };
        }
        await body(wl, rl);
      });
    });
  }

  const rwlockABBA = async (
    w: Kernel,
    steps: (x: LockdepMap, y: SpinLock) => void,
  ): Promise<void> => {
    const x = w.lockdep.newMap("rwlock_X1");
    const y = new SpinLock(w, "lock_Y1");
    steps(x, y);
  };
  await t.step("rlock_ABBA1", async () => {
    await dotest("rlock_ABBA1", "FAILURE", (w) =>
      rwlockABBA(w, (x, y) => {
        x.acquireRecursiveRead();
        y.lock();
        y.unlock();
        x.release();
        y.lock();
        x.acquire();
        x.release();
        y.unlock();
      }));
  });
  await t.step("rlock_ABBA2", async () => {
    await dotest("rlock_ABBA2", "SUCCESS", (w) =>
      rwlockABBA(w, (x, y) => {
        x.acquireRecursiveRead();
        y.lock();
        y.unlock();
        x.release();
        y.lock();
        x.acquireRecursiveRead();
        x.release();
        y.unlock();
      }));
  });
  await t.step("rlock_ABBA3", async () => {
    await dotest("rlock_ABBA3", "FAILURE", (w) =>
      rwlockABBA(w, (x, y) => {
        x.acquire();
        y.lock();
        y.unlock();
        x.release();
        y.lock();
        x.acquire();
        x.release();
        y.unlock();
      }));
  });
  await t.step("rlock_chaincache_ABBA1", async () => {
    await dotest("rlock_chaincache_ABBA1", "FAILURE", (w) =>
      rwlockABBA(w, (x, y) => {
        x.acquireRecursiveRead();
        y.lock();
        y.unlock();
        x.release();
        y.lock();
        x.acquireRecursiveRead();
        x.release();
        y.unlock();
        y.lock();
        x.acquire();
        x.release();
        y.unlock();
      }));
  });

  // rsem: down_read is a non-recursive read, so reader recursion is a bug.
  const rsem = (w: Kernel) => ({
    X1: new RwSemaphore(w, "rwsem_X"),
    X2: new RwSemaphore(w, "rwsem_X"),
    Y1: new Mutex(w, "mutex_Y"),
  });
  await t.step("rsem_AA1", async () => {
    await dotest("rsem_AA1", "FAILURE", async (w) => {
      const s = rsem(w);
      await s.X1.downRead();
      await s.X1.downRead();
    }, "WARNING: possible recursive locking detected");
  });
  await t.step("rsem_AA1B", async () => {
    await dotest("rsem_AA1B", "FAILURE", async (w) => {
      const s = rsem(w);
      await s.X1.downRead();
      await s.X2.downRead();
    });
  });
  await t.step("rsem_AA2", async () => {
    await dotest("rsem_AA2", "FAILURE", async (w) => {
      const s = rsem(w);
      await s.X1.downRead();
      // X2 is a different instance: lockdep reports before anything blocks.
      await s.X2.downWrite();
    });
  });
  await t.step("rsem_AA3", async () => {
    await dotest("rsem_AA3", "FAILURE", async (w) => {
      const s = rsem(w);
      await s.X1.downWrite();
      await s.X2.downRead();
    });
  });
  for (
    const [name, firstRead, secondWrite] of [
      ["rwsem_ABBA1", true, true],
      ["rwsem_ABBA2", true, false],
      ["rwsem_ABBA3", false, true],
    ] as const
  ) {
    await t.step(name, async () => {
      await dotest(name, "FAILURE", async (w) => {
        const s = rsem(w);
        if (firstRead) await s.X1.downRead();
        else await s.X1.downWrite();
        await s.Y1.lock();
        s.Y1.unlock();
        if (firstRead) s.X1.upRead();
        else s.X1.upWrite();
        await s.Y1.lock();
        if (secondWrite) await s.X1.downWrite();
        else await s.X1.downRead();
        if (secondWrite) s.X1.upWrite();
        else s.X1.upRead();
        s.Y1.unlock();
      }, "WARNING: possible circular locking dependency detected");
    });
  }
});

// ---- Wound/wait tests (ww_tests) ----

interface WwEnv {
  w: Kernel;
  cls: WwClass;
  o: WwMutex;
  o2: WwMutex;
  o3: WwMutex;
  lockA: SpinLock;
}

/** The selftest's `ww_lockdep` class is Wait-Die (`DEFINE_WD_CLASS`). */
function wwEnv(w: Kernel): WwEnv {
  const cls = new WwClass("ww_lockdep", { waitDie: true });
  return {
    w,
    cls,
    o: new WwMutex(w, cls, "o"),
    o2: new WwMutex(w, cls, "o2"),
    o3: new WwMutex(w, cls, "o3"),
    lockA: new SpinLock(w, "lock_A"),
  };
}

/** `t2 = t`: a struct copy of a context (no lockdep acquire). */
function copyCtx(t: WwAcquireCtx): WwAcquireCtx {
  return Object.assign(Object.create(WwAcquireCtx.prototype), t) as WwAcquireCtx;
}

/**
 * o2 (and o3) held through the base mutex and released from lockdep, then
 * `WWAI(&t); t2 = t; t2.stamp--` with `o2.ctx = &t2`: an older context holds them.
 */
async function wwDeadlkSetup(e: WwEnv, objs: WwMutex[] = [e.o2]): Promise<WwAcquireCtx> {
  const { w, cls, o, o2 } = e;
  for (const x of objs) {
    await x.base.lock();
    x.depMap.release();
  }
  const t = new WwAcquireCtx(w, cls);
  const t2 = copyCtx(t);
  t2.stamp--;
  for (const x of objs) x.ctx = t2;
  strictEqual(await o.lock(t), 0);
  strictEqual(await o2.lock(t), -Errno.EDEADLK);
  strictEqual(t.contendingLock, o2);
  return t;
}

function releaseOlder(o: WwMutex): void {
  o.ctx = null;
  o.depMap.acquire({ trylock: true });
  o.base.unlock();
}

Deno.test("locking-selftest: ww api failures, contexts mixing, finishing", async (t) => {
  await t.step("ww_test_fail_acquire", async () => {
    await dotest("ww_test_fail_acquire", "SUCCESS", async (w) => {
      const e = wwEnv(w);
      const ctx = new WwAcquireCtx(w, e.cls);
      ctx.stamp++;
      strictEqual(await e.o.lock(ctx), 0);
      strictEqual(e.o.ctx, ctx);
      strictEqual(await e.o.lock(ctx), -Errno.EALREADY);
      strictEqual(e.o.trylock(), false);
      const t2 = copyCtx(ctx);
      t2.stamp++;
      strictEqual(await e.o.lock(t2), -Errno.EDEADLK);
      e.o.unlock();
      ok(e.o.trylock());
      e.o.unlock();
    });
  });
  await t.step("ww_test_normal", async () => {
    await dotest("ww_test_normal", "SUCCESS", async (w) => {
      const { o, cls } = wwEnv(w);
      const poison = {} as WwAcquireCtx;
      o.ctx = poison;
      await o.base.lock();
      o.base.unlock();
      strictEqual(o.ctx, poison);
      strictEqual(await o.base.lockInterruptible(), 0);
      o.base.unlock();
      ok(o.base.trylock());
      o.base.unlock();
      await o.base.lock();
      strictEqual(o.base.trylock(), false);
      o.base.unlock();
      strictEqual(o.ctx, poison);
      const ctx = new WwAcquireCtx(w, cls);
      await o.base.lock({ nestLock: ctx.depMap });
      o.base.unlock();
      strictEqual(o.ctx, poison);
    });
  });
  await t.step("ww_test_unneeded_slow", async () => {
    await dotest("ww_test_unneeded_slow", "FAILURE", async (w) => {
      const e = wwEnv(w);
      await e.o.lockSlow(new WwAcquireCtx(w, e.cls));
    }, "DEBUG_LOCKS_WARN_ON(!ctx->contending_lock)");
  });
  await t.step("ww_test_two_contexts", async () => {
    await dotest("ww_test_two_contexts", "FAILURE", (w) => {
      const e = wwEnv(w);
      new WwAcquireCtx(w, e.cls);
      new WwAcquireCtx(w, e.cls);
    }, "WARNING: possible recursive locking detected");
  });
  await t.step("ww_test_diff_class", async () => {
    await dotest("ww_test_diff_class", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = new WwAcquireCtx(w, e.cls);
      ctx.wwClass = new WwClass("other", { waitDie: true });
      await e.o.lock(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->ww_class != ww->ww_class)");
  });
  await t.step("ww_test_context_done_twice", async () => {
    await dotest("ww_test_context_done_twice", "FAILURE", (w) => {
      const ctx = new WwAcquireCtx(w, wwEnv(w).cls);
      ctx.done();
      ctx.done();
      ctx.fini();
    }, "DEBUG_LOCKS_WARN_ON(ctx->done_acquire)");
  });
  await t.step("ww_test_context_unlock_twice", async () => {
    await dotest("ww_test_context_unlock_twice", "FAILURE", (w) => {
      const ctx = new WwAcquireCtx(w, wwEnv(w).cls);
      ctx.done();
      ctx.fini();
      ctx.fini();
    }, "WARNING: bad unlock balance detected!");
  });
  await t.step("ww_test_context_fini_early", async () => {
    await dotest("ww_test_context_fini_early", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = new WwAcquireCtx(w, e.cls);
      await e.o.lock(ctx);
      ctx.done();
      ctx.fini();
    }, "DEBUG_LOCKS_WARN_ON(ctx->acquired)");
  });
  await t.step("ww_test_context_lock_after_done", async () => {
    await dotest("ww_test_context_lock_after_done", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = new WwAcquireCtx(w, e.cls);
      ctx.done();
      await e.o.lock(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->done_acquire)");
  });
});

Deno.test("locking-selftest: ww locking mismatches and EDEADLK handling", async (t) => {
  await t.step("ww_test_object_unlock_twice", async () => {
    await dotest("ww_test_object_unlock_twice", "FAILURE", async (w) => {
      const { o } = wwEnv(w);
      await o.lock(null);
      o.unlock();
      o.unlock();
    }, "WARNING: bad unlock balance detected!");
  });
  await t.step("ww_test_object_lock_unbalanced", async () => {
    await dotest("ww_test_object_lock_unbalanced", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = new WwAcquireCtx(w, e.cls);
      await e.o.lock(ctx);
      ctx.acquired = 0;
      e.o.unlock();
      ctx.fini();
    }, "DEBUG_LOCKS_WARN_ON(!lock->ctx->acquired)");
  });
  await t.step("ww_test_object_lock_stale_context", async () => {
    await dotest("ww_test_object_lock_stale_context", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = new WwAcquireCtx(w, e.cls);
      e.o.ctx = copyCtx(ctx);
      await e.o.lock(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww->ctx)");
  });
  await t.step("ww_test_edeadlk_normal", async () => {
    await dotest("ww_test_edeadlk_normal", "SUCCESS", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e);
      releaseOlder(e.o2);
      e.o.unlock();
      strictEqual(await e.o2.lock(ctx), 0);
      strictEqual(ctx.contendingLock, null);
    });
  });
  await t.step("ww_test_edeadlk_normal_slow", async () => {
    await dotest("ww_test_edeadlk_normal_slow", "SUCCESS", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e);
      releaseOlder(e.o2);
      e.o.unlock();
      await e.o2.lockSlow(ctx);
      strictEqual(e.o2.ctx, ctx);
    });
  });
  await t.step("ww_test_edeadlk_no_unlock", async () => {
    await dotest("ww_test_edeadlk_no_unlock", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e);
      releaseOlder(e.o2);
      await e.o2.lock(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->acquired > 0)");
  });
  await t.step("ww_test_edeadlk_no_unlock_slow", async () => {
    await dotest("ww_test_edeadlk_no_unlock_slow", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e);
      releaseOlder(e.o2);
      await e.o2.lockSlow(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->acquired > 0)");
  });
  await t.step("ww_test_edeadlk_acquire_more", async () => {
    await dotest("ww_test_edeadlk_acquire_more", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e);
      await e.o3.lock(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->contending_lock != ww)");
  });
  await t.step("ww_test_edeadlk_acquire_more_slow", async () => {
    await dotest("ww_test_edeadlk_acquire_more_slow", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e);
      await e.o3.lockSlow(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->contending_lock != ww)");
  });
  await t.step("ww_test_edeadlk_acquire_more_edeadlk", async () => {
    await dotest("ww_test_edeadlk_acquire_more_edeadlk", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e, [e.o2, e.o3]);
      strictEqual(await e.o3.lock(ctx), -Errno.EDEADLK);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->contending_lock)");
  });
  await t.step("ww_test_edeadlk_acquire_more_edeadlk_slow", async () => {
    await dotest("ww_test_edeadlk_acquire_more_edeadlk_slow", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e, [e.o2, e.o3]);
      // lock_slow on o3 while still holding o: o3 is held by the older t2 too.
      strictEqual(await e.o3.lockSlowInterruptible(ctx), -Errno.EDEADLK);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->contending_lock)");
  });
  await t.step("ww_test_edeadlk_acquire_wrong", async () => {
    await dotest("ww_test_edeadlk_acquire_wrong", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e);
      e.o.unlock();
      await e.o3.lock(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->contending_lock != ww)");
  });
  await t.step("ww_test_edeadlk_acquire_wrong_slow", async () => {
    await dotest("ww_test_edeadlk_acquire_wrong_slow", "FAILURE", async (w) => {
      const e = wwEnv(w);
      const ctx = await wwDeadlkSetup(e);
      e.o.unlock();
      await e.o3.lockSlow(ctx);
    }, "DEBUG_LOCKS_WARN_ON(ww_ctx->contending_lock != ww)");
  });
});

Deno.test("locking-selftest: ww spinlock nesting and block/try/context matrix", async (t) => {
  await t.step("ww_test_spin_nest_unlocked", async () => {
    await dotest("ww_test_spin_nest_unlocked", "FAILURE", (w) => {
      const e = wwEnv(w);
      e.lockA.lock({ nestLock: e.o.base });
      e.lockA.unlock();
    }, "WARNING: Nested lock was not taken");
  });
  await t.step("ww_test_spin_nest_lock", async () => {
    await dotest("ww_test_spin_nest_lock", "SUCCESS", (w) => {
      const x1 = new SpinLock(w, "lock_X");
      const y1 = new SpinLock(w, "lock_Y");
      const y2 = new SpinLock(w, "lock_Y");
      const a = new SpinLock(w, "lock_A");
      x1.lock();
      y1.lock({ nestLock: x1 });
      a.lock();
      y2.lock({ nestLock: x1 });
      a.unlock();
      y2.unlock();
      y1.unlock();
      x1.unlock();
    });
  });

  const matrix: [string, Expect, (e: WwEnv) => Promise<void> | void][] = [
    ["ww_test_context_block", "FAILURE", async (e) => {
      const ctx = new WwAcquireCtx(e.w, e.cls);
      strictEqual(await e.o.lock(ctx), 0);
      await e.o2.lock(null);
    }],
    ["ww_test_context_try", "SUCCESS", async (e) => {
      const ctx = new WwAcquireCtx(e.w, e.cls);
      strictEqual(await e.o.lock(ctx), 0);
      ok(e.o2.trylock());
      e.o2.unlock();
      e.o.unlock();
    }],
    ["ww_test_context_context", "SUCCESS", async (e) => {
      const ctx = new WwAcquireCtx(e.w, e.cls);
      strictEqual(await e.o.lock(ctx), 0);
      strictEqual(await e.o2.lock(ctx), 0);
      e.o2.unlock();
      e.o.unlock();
    }],
    ["ww_test_try_block", "FAILURE", async (e) => {
      ok(e.o.trylock());
      await e.o2.lock(null);
      e.o2.unlock();
      e.o.unlock();
    }],
    ["ww_test_try_try", "SUCCESS", (e) => {
      ok(e.o.trylock());
      ok(e.o2.trylock());
      e.o2.unlock();
      e.o.unlock();
    }],
    ["ww_test_try_context", "FAILURE", async (e) => {
      ok(e.o.trylock());
      const ctx = new WwAcquireCtx(e.w, e.cls);
      await e.o2.lock(ctx);
    }],
    ["ww_test_block_block", "FAILURE", async (e) => {
      await e.o.lock(null);
      await e.o2.lock(null);
    }],
    ["ww_test_block_try", "SUCCESS", async (e) => {
      await e.o.lock(null);
      ok(e.o2.trylock());
    }],
    ["ww_test_block_context", "FAILURE", async (e) => {
      await e.o.lock(null);
      const ctx = new WwAcquireCtx(e.w, e.cls);
      await e.o2.lock(ctx);
    }],
    ["ww_test_spin_block", "FAILURE", async (e) => {
      e.lockA.lock();
      e.lockA.unlock();
      await e.o.lock(null);
      e.lockA.lock();
      e.lockA.unlock();
      e.o.unlock();
      e.lockA.lock();
      await e.o.lock(null);
      e.o.unlock();
      e.lockA.unlock();
    }],
    ["ww_test_spin_try", "SUCCESS", (e) => {
      e.lockA.lock();
      e.lockA.unlock();
      ok(e.o.trylock());
      e.lockA.lock();
      e.lockA.unlock();
      e.o.unlock();
      e.lockA.lock();
      ok(e.o.trylock());
      e.o.unlock();
      e.lockA.unlock();
    }],
    ["ww_test_spin_context", "FAILURE", async (e) => {
      e.lockA.lock();
      e.lockA.unlock();
      const ctx = new WwAcquireCtx(e.w, e.cls);
      strictEqual(await e.o.lock(ctx), 0);
      e.lockA.lock();
      e.lockA.unlock();
      e.o.unlock();
      e.lockA.lock();
      await e.o.lock(ctx);
      e.o.unlock();
      e.lockA.unlock();
    }],
  ];
  for (const [name, expect, body] of matrix) {
    await t.step(name, async () => {
      await dotest(name, expect, (w) => body(wwEnv(w)));
    });
  }
});
