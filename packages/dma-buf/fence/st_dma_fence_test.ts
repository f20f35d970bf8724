// Port of drivers/dma-buf/st-dma-fence.c (KUnit suite "dma-buf-fence"), case
// by case under the kernel names. Each case runs in a task of its own world,
// as the KUnit case runs in a kthread. Wall-clock sleeps are virtual.
import { ok, strictEqual } from "node:assert/strict";
import { Errno, Kernel, RandomPolicy } from "@dmalab/kernel";
import {
  DmaFence,
  DmaFenceCb,
  dmaFenceGetRcuSafe,
  dmaFenceGetStub,
  type DmaFenceOps,
  dmaFenceWorld,
} from "../mod.ts";

const mockOps: DmaFenceOps = {
  getDriverName: () => "mock",
  getTimelineName: () => "mock",
};

/** `mock_fence()`: context 0, seqno 0, inline lock (NULL lock). */
function mockFence(world: Kernel): DmaFence {
  return new DmaFence(world, mockOps, 0, 0);
}

interface SimpleCb {
  cb: DmaFenceCb;
  seen: boolean;
}

function simpleCb(): SimpleCb {
  return { cb: new DmaFenceCb(), seen: false };
}

function simpleCallback(s: SimpleCb): () => void {
  return () => {
    s.seen = true;
  };
}

async function kunit(body: (world: Kernel) => Promise<void> | void, world = new Kernel()) {
  await world.runTask("kunit", async () => {
    await body(world);
  });
  strictEqual(dmaFenceWorld(world).live, 0, "every mock fence was released");
  return world;
}

Deno.test("dma-buf-fence", async (t) => {
  await t.step("test_sanitycheck", async () => {
    await kunit((w) => {
      const f = mockFence(w);
      f.enableSwSignaling();
      f.signal();
      f.put();
    });
  });

  await t.step("test_signaling", async () => {
    await kunit((w) => {
      const f = mockFence(w);
      f.enableSwSignaling();
      ok(!f.isSignaled(), "Fence unexpectedly signaled on creation");
      ok(!f.checkAndSignal(), "Fence reported being already signaled");
      ok(f.isSignaled(), "Fence not reporting signaled");
      ok(f.testSignaledFlag(), "Fence reported not being already signaled");
      strictEqual(f.ops, null, "Fence ops not cleared on signal");
      f.put();
    });
  });

  await t.step("test_add_callback", async () => {
    await kunit((w) => {
      const cb = simpleCb();
      const f = mockFence(w);
      strictEqual(f.addCallback(cb.cb, simpleCallback(cb)), 0, "Failed to add callback");
      f.signal();
      ok(cb.seen, "Callback failed!");
      f.put();
    });
  });

  await t.step("test_late_add_callback", async () => {
    await kunit((w) => {
      const cb = simpleCb();
      const f = mockFence(w);
      f.enableSwSignaling();
      f.signal();
      const r = f.addCallback(cb.cb, simpleCallback(cb));
      ok(r !== 0, "Added callback, but fence was already signaled!");
      strictEqual(r, -Errno.ENOENT);
      f.signal();
      ok(!cb.seen, "Callback called after failed attachment!");
      f.put();
    });
  });

  await t.step("test_rm_callback", async () => {
    await kunit((w) => {
      const cb = simpleCb();
      const f = mockFence(w);
      strictEqual(f.addCallback(cb.cb, simpleCallback(cb)), 0);
      ok(f.removeCallback(cb.cb), "Failed to remove callback!");
      f.signal();
      ok(!cb.seen, "Callback still signaled after removal!");
      f.put();
    });
  });

  await t.step("test_late_rm_callback", async () => {
    await kunit((w) => {
      const cb = simpleCb();
      const f = mockFence(w);
      strictEqual(f.addCallback(cb.cb, simpleCallback(cb)), 0);
      f.signal();
      ok(cb.seen, "Callback failed!");
      ok(!f.removeCallback(cb.cb), "Callback removal succeeded after being executed!");
      f.put();
    });
  });

  await t.step("test_status", async () => {
    await kunit((w) => {
      const f = mockFence(w);
      f.enableSwSignaling();
      strictEqual(f.getStatus(), 0, "Fence unexpectedly has signaled status on creation");
      f.signal();
      strictEqual(f.getStatus(), 1, "Fence not reporting signaled status");
      f.put();
    });
  });

  await t.step("test_error", async () => {
    await kunit((w) => {
      const f = mockFence(w);
      f.enableSwSignaling();
      f.setError(-Errno.EIO);
      strictEqual(f.getStatus(), 0, "Fence unexpectedly has error status before signal");
      f.signal();
      strictEqual(f.getStatus(), -Errno.EIO, "Fence not reporting error status");
      f.put();
    });
  });

  await t.step("test_wait", async () => {
    await kunit(async (w) => {
      const f = mockFence(w);
      f.enableSwSignaling();
      strictEqual(await f.waitTimeout(false, 0), 0, "Wait reported complete before being signaled");
      f.signal();
      strictEqual(
        await f.waitTimeout(false, 0),
        1,
        "Wait reported incomplete after being signaled",
      );
      f.signal();
      f.put();
    });
  });

  await t.step("test_wait_timeout", async () => {
    await kunit(async (w) => {
      const s = w.sched;
      const f = mockFence(w);
      f.enableSwSignaling();
      strictEqual(await f.waitTimeout(false, 1), 0, "Wait reported complete before being signaled");
      // mod_timer(&wt.timer, jiffies + 1)
      const cancel = s.addTimer(s.jiffiesToNs(s.jiffies + 1) - s.now, () => f.signal());
      const left = await f.waitTimeout(false, s.hz);
      ok(left !== 0, "Wait reported incomplete after timeout");
      ok(left > 0 && left < s.hz, `jiffies left: ${left}`);
      ok(!cancel(), "the timer fired");
      f.signal();
      f.put();
    });
  });

  await t.step("test_stub", async () => {
    await kunit((w) => {
      const f: DmaFence[] = [];
      for (let i = 0; i < 64; i++) {
        f.push(dmaFenceGetStub(w));
        ok(f[i]!.isSignaled(), "Obtained unsignaled stub fence!");
      }
      ok(f.every((x) => x === f[0]), "one global stub");
      strictEqual(f[0]!.context, 0);
      strictEqual(f[0]!.timestamp(), 0, "signalled at boot");
      let i = f.length;
      while (i--) f[i]!.put();
    });
  });

  await t.step("test_race_signal_callback", async () => {
    // Two kthreads race add_callback against signal, in both orders
    // ("before" = 0 then 1), each pass for 50 ms of virtual time. The policy
    // interleaves them at random at every scheduling point; each spin step
    // costs virtual time (1 us per spin, 20 us per pass) so the main thread's msleep(50) ends.
    for (const seed of [1, 2, 3]) {
      const w = new Kernel({ policy: new RandomPolicy(seed) });
      const slots: (DmaFence | null)[] = [null, null];
      let ret = 0;
      let passes = 0;
      await w.runTask("kunit", async () => {
        for (let pass = 0; ret === 0 && pass <= 1; pass++) {
          let stop = false;
          const threads = [0, 1].map((id) =>
            w.spawn(`dma-fence:${id}`, async () => {
              let err = 0;
              while (!err && !stop) {
                const f1 = mockFence(w);
                f1.enableSwSignaling();
                slots[id] = f1;
                await w.sched.preempt("publish");
                let f2: DmaFence | null;
                do {
                  f2 = dmaFenceGetRcuSafe(() => slots[id ^ 1]!);
                  if (!f2) await w.sched.sleepNs(1_000, "spin");
                } while (!f2 && !stop);
                if (pass) f1.signal();
                const cb = simpleCb();
                await w.sched.preempt("add_callback");
                if (!f2 || f2.addCallback(cb.cb, simpleCallback(cb))) cb.seen = true;
                if (!pass) f1.signal();
                await w.sched.preempt("check");
                if (!cb.seen) {
                  await f2!.wait(false);
                  f2!.lock.lock(); // __wait_for_callbacks
                  f2!.lock.unlock();
                }
                if (!cb.seen) err = -Errno.EINVAL;
                f2?.put();
                slots[id] = null;
                f1.put();
                passes++;
                await w.sched.sleepNs(20_000, "loop");
              }
              return err;
            })
          );
          await w.sched.msleep(50);
          stop = true;
          while (threads.some((th) => th.state !== "done")) await w.sched.msleep(1);
          for (const th of threads) if (th.result && !ret) ret = th.result;
        }
      });
      strictEqual(ret, 0);
      ok(passes > 100, `passes: ${passes}`);
      strictEqual(dmaFenceWorld(w).live, 0);
    }
  });
});
