// Context switch cost: two tasks handing the CPU to each other on the
// deterministic scheduler, against a raw Promise ping-pong (the floor: one
// resolved promise per hand-off). Run: tools/bin/deno bench -A packages/kernel/sched/scheduler_bench.ts
import { ChooserPolicy } from "./policy.ts";
import { WaitQueueHead } from "./wait_queue.ts";
import { Kernel } from "../world.ts";

const SWITCHES = 10_000;
// Deno.bench awaits only `async` functions (a plain arrow returning a promise
// is timed as sync), hence `async fn`. Fixed iteration counts: each iteration is a whole world run of 10k switches.

async function rawPromisePingPong(n: number): Promise<void> {
  const gate = () => {
    let open!: () => void;
    const p = new Promise<void>((r) => (open = r));
    return { p, open };
  };
  let a = gate();
  let b = gate();
  const pingA = (async () => {
    for (let i = 0; i < n / 2; i++) {
      await a.p;
      a = gate();
      b.open();
    }
  })();
  const pingB = (async () => {
    for (let i = 0; i < n / 2; i++) {
      await b.p;
      b = gate();
      a.open();
    }
  })();
  a.open();
  await Promise.all([pingA, pingB]);
}

/** Two tasks at preemption points; the policy always picks the other one. */
async function preemptPingPong(n: number): Promise<number> {
  const w = new Kernel({
    policy: new ChooserPolicy(
      "alternate",
      (ctx) => ctx.runnable.find((t) => t !== ctx.current) ?? ctx.runnable[0]!,
    ),
  });
  for (const name of ["ping", "pong"]) {
    w.spawn(name, async () => {
      for (let i = 0; i < n / 2; i++) await w.sched.preempt("yield");
    });
  }
  const r = await w.run();
  return r.switches;
}

/** Two tasks handing a turn back and forth through wait queues (wake_up + wait_event). */
async function waitQueuePingPong(n: number): Promise<number> {
  const w = new Kernel();
  const wq = [new WaitQueueHead(w.sched, "ping"), new WaitQueueHead(w.sched, "pong")];
  let turn = 0;
  for (const me of [0, 1]) {
    w.spawn(me ? "pong" : "ping", async () => {
      for (let i = 0; i < n / 2; i++) {
        await wq[me]!.waitEvent(() => turn === me);
        turn = 1 - me;
        wq[1 - me]!.wakeUp();
      }
    });
  }
  const r = await w.run();
  return r.switches;
}

Deno.bench({
  n: 30,
  warmup: 3,
  name: "raw Promise ping-pong (10k hand-offs)",
  group: "context switch",
  baseline: true,
  async fn() {
    await rawPromisePingPong(SWITCHES);
  },
});
Deno.bench({
  n: 30,
  warmup: 3,
  name: "scheduler preempt ping-pong (10k switches)",
  group: "context switch",
  async fn() {
    await preemptPingPong(SWITCHES);
  },
});
Deno.bench({
  n: 30,
  warmup: 3,
  name: "scheduler wait-queue ping-pong (10k switches)",
  group: "context switch",
  async fn() {
    await waitQueuePingPong(SWITCHES);
  },
});
