import { ok, strictEqual } from "node:assert/strict";
import { Kernel, RandomPolicy } from "@dmalab/kernel";
import { dmaBufScenarios } from "./scenarios.ts";

const byName = (n: string) => dmaBufScenarios().find((s) => s.name === n)!;

Deno.test("fence-signalling-lockdep: lockdep sees mutex -> dma_fence_map -> mutex", async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    await t.step(`seed ${seed}`, async () => {
      const s = byName("fence-signalling-lockdep");
      const world = new Kernel({
        ...s.worldOptions,
        strict: false,
        policy: new RandomPolicy(seed),
      });
      const state = s.build(world);
      try {
        await world.run();
      } catch {
        // a schedule where the waiter holds the mutex first deadlocks too
      }
      ok(
        world.dmesg.includes("WARNING: possible circular locking dependency detected"),
        world.dmesg.text(),
      );
      ok(world.dmesg.includes("dma_fence_map"));
      void state;
    });
  }
});

Deno.test("fence-signalling-ordered: no report, the waiter sees the signal", async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    await t.step(`seed ${seed}`, async () => {
      const s = byName("fence-signalling-ordered");
      const world = new Kernel({ ...s.worldOptions, policy: new RandomPolicy(seed) });
      const state = s.build(world);
      await world.run();
      strictEqual(world.bugs.length, 0);
      strictEqual(s.check!(world, state).length, 0);
    });
  }
});
