// The eviction-race scenario under the explorer (randomized PCT schedules),
// with its negative control.
import { ok, strictEqual } from "node:assert/strict";
import { explore } from "@dmalab/explorer";
import { mlx5EvictionRaceScenario } from "./scenarios.ts";

Deno.test("explorer: mlx5 dynamic MR invalidation racing RDMA traffic and GPU eviction", async (t) => {
  await t.step("clean under PCT schedules", async () => {
    const sc = mlx5EvictionRaceScenario({ wrs: 3, wrBytes: 8 << 10 });
    const r = await explore(sc, { pct: { depth: 3, runs: 12 }, seed: 7 });
    strictEqual(r.failures, 0, JSON.stringify(r.failure ?? null).slice(0, 400));
    ok(r.schedules >= 12);
  });
  await t.step("the RDMA READ variant is clean too", async () => {
    const sc = mlx5EvictionRaceScenario({ wrs: 3, wrBytes: 8 << 10, opcode: "RDMA_READ" });
    const r = await explore(sc, { pct: { depth: 3, runs: 12 }, seed: 7 });
    strictEqual(r.failures, 0, JSON.stringify(r.failure ?? null).slice(0, 400));
  });
  await t.step("negative control: a broken importer is found", async () => {
    const sc = mlx5EvictionRaceScenario({ wrs: 3, wrBytes: 8 << 10, brokenImporter: true });
    const r = await explore(sc, { pct: { depth: 3, runs: 12 }, seed: 7 });
    ok(r.failures > 0, "the explorer reports the stale translation");
  });
});
