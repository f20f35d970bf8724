import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { runVmap } from "./mod.ts";

Deno.test("vmap app", async (t) => {
  const { result, recorder } = await runVmap();
  await t.step("both buffers drawn and verified (shadow read back, VRAM by the GPU)", () => {
    strictEqual(result.ok, true);
    deepStrictEqual(result.violations, []);
    strictEqual(result.bytesVerified, 2 << 20);
    ok(result.steps.some((s) => s.includes("equal to the frame's")));
  });
  await t.step("vmap reference counting and the I/O-memory VRAM mapping", () => {
    ok(result.steps.some((s) => s.includes("vmapping_counter 2")));
    ok(result.steps.some((s) => s.includes("vmapping_counter 0, scanout BO pin count 0")));
    strictEqual(result.path, "CPU: vmap (RAM) + ioremap (VRAM BAR)");
  });
  await t.step("the vmapped BO stays in VRAM under eviction pressure", () => {
    strictEqual(result.costs["GPU evictions"], 1);
    ok(result.steps.some((s) => s.includes("the vmapped scanout is VRAM (pinned)")));
  });
  await t.step("an unbalanced vunmap is a kernel BUG", () => {
    ok(result.rulesChecked.some((r) => r.includes("kernel BUG")));
  });
  await t.step("the blit into VRAM is recorded against the GPU", () => {
    ok(recorder.transfers.some((x) => x.dst?.name === "0000:03:00.0" && x.srcName === "CPU"));
  });
});
