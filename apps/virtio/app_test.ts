import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { runVirtio } from "./mod.ts";

Deno.test("virtio app", async (t) => {
  await t.step(
    "uuid: the frame reaches the output through the host, no guest mapping",
    async () => {
      const { result, recorder } = await runVirtio();
      strictEqual(result.ok, true);
      deepStrictEqual(result.violations, []);
      strictEqual(result.bytesVerified, 64 * 1024);
      strictEqual(result.path, "host object by UUID (no guest DMA mapping)");
      ok(result.steps.some((s) => s.includes("RESOURCE_ASSIGN_UUID x2")));
      ok(recorder.spans.some((s) => s.name === "RESOURCE_ASSIGN_UUID"));
    },
  );
  await t.step(
    "no-uuid: get_uuid refuses a system-heap buffer; the importer maps pages",
    async () => {
      const { result } = await runVirtio({ variant: "no-uuid" });
      strictEqual(result.ok, true);
      strictEqual(result.bytesVerified, 64 * 1024);
      ok(result.steps.some((s) => s.includes("is not a virtio dma-buf")), result.steps.join("\n"));
      strictEqual(result.path, "guest pages (dma_map_sgtable, dma-direct)");
      strictEqual(result.expectedFindings.length, 1);
    },
  );
});
