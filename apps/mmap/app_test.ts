import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { runMmap } from "./mod.ts";

Deno.test("mmap app", async (t) => {
  await t.step("coherent: 64 KiB each way verified, no violation, buffer released", async () => {
    const { result, recorder, world } = await runMmap();
    strictEqual(result.ok, true);
    strictEqual(result.bytesVerified, 2 * 64 * 1024);
    deepStrictEqual(result.violations, []);
    deepStrictEqual(result.expectedFindings, []);
    strictEqual(recorder.transfers.length, 2);
    ok(recorder.spans.some((s) => s.track.startsWith("fence ")), "the write fence is a span");
    ok(world.trace.events.some((e) => e.name === "dma_buf_begin_cpu_access"));
    ok(result.rulesChecked.some((r) => r.includes("-EINVAL")));
  });
  await t.step("bounce with SYNC: the device and the CPU see each other's bytes", async () => {
    const { result } = await runMmap({ variant: "bounce" });
    strictEqual(result.ok, true);
    strictEqual(result.bytesVerified, 2 * 64 * 1024);
    strictEqual(result.path, "RAM via swiotlb bounce");
  });
  await t.step("coherent without SYNC: unnoticed, as on x86", async () => {
    const { result } = await runMmap({ variant: "coherent-nosync" });
    strictEqual(result.ok, true);
    strictEqual(result.bytesVerified, 2 * 64 * 1024);
    strictEqual(result.expectedFindings.length, 1);
  });
  await t.step("bounce without SYNC: stale data both ways, reported as findings", async () => {
    const { result } = await runMmap({ variant: "bounce-nosync" });
    strictEqual(result.ok, true);
    strictEqual(result.bytesVerified, 0);
    strictEqual(result.expectedFindings.length, 2);
    ok(result.expectedFindings[0]!.includes("SYNC END was skipped"));
  });
  await t.step("an unknown variant is refused", async () => {
    await runMmap({ variant: "nope" }).then(
      () => ok(false, "should throw"),
      (e) => ok(e instanceof RangeError),
    );
  });
});
