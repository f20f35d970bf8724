// Uncontended mutex_lock/mutex_unlock in one task, with lockdep on (held-lock
// stack, chain cache, dependency checks) and off (`new Kernel({ lockdep: false })`).
// Run: tools/bin/deno bench -A packages/kernel/locking/mutex_bench.ts
import { Kernel } from "../world.ts";
import { Mutex } from "./mutex.ts";
import { SpinLock } from "./spinlock.ts";

const OPS = 10_000;
// Deno.bench awaits only `async` functions (a plain arrow returning a promise
// is timed as sync), hence `async fn`. Fixed iteration counts: each iteration is a whole world run of 10k operations.

async function mutexLoop(lockdep: boolean, depth: number): Promise<void> {
  const w = new Kernel({ lockdep });
  const outer = Array.from({ length: depth }, (_, i) => new Mutex(w, `outer${i}`));
  const m = new Mutex(w, "bench_lock");
  await w.runTask("bench", async () => {
    for (const o of outer) await o.lock();
    for (let i = 0; i < OPS; i++) {
      await m.lock();
      m.unlock();
    }
    for (const o of outer.reverse()) o.unlock();
  });
}

async function spinLoop(lockdep: boolean): Promise<void> {
  const w = new Kernel({ lockdep });
  const s = new SpinLock(w, "bench_spin");
  await w.runTask("bench", async () => {
    for (let i = 0; i < OPS; i++) {
      s.lock();
      s.unlock();
    }
  });
}

Deno.bench({
  n: 30,
  warmup: 3,
  name: "mutex lock/unlock x10k, lockdep off",
  group: "uncontended mutex",
  baseline: true,
  async fn() {
    await mutexLoop(false, 0);
  },
});
Deno.bench({
  n: 30,
  warmup: 3,
  name: "mutex lock/unlock x10k, lockdep on",
  group: "uncontended mutex",
  async fn() {
    await mutexLoop(true, 0);
  },
});
Deno.bench({
  n: 30,
  warmup: 3,
  name: "mutex lock/unlock x10k, lockdep on, 3 locks already held",
  group: "uncontended mutex",
  async fn() {
    await mutexLoop(true, 3);
  },
});
Deno.bench({
  n: 30,
  warmup: 3,
  name: "spin_lock/unlock x10k, lockdep off",
  group: "uncontended spinlock",
  baseline: true,
  async fn() {
    await spinLoop(false);
  },
});
Deno.bench({
  n: 30,
  warmup: 3,
  name: "spin_lock/unlock x10k, lockdep on",
  group: "uncontended spinlock",
  async fn() {
    await spinLoop(true);
  },
});
