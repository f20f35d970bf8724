import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { runAttach } from "./mod.ts";

Deno.test("attach app", async (t) => {
  await t.step("default: P2P below the switch, evicted mid-stream, every byte lands", async () => {
    const { result, recorder } = await runAttach();
    strictEqual(result.ok, true);
    deepStrictEqual(result.violations, []);
    strictEqual(result.bytesVerified, 128 << 10);
    strictEqual(result.path, "BUS_ADDR -> RAM");
    strictEqual(result.costs["move_notify calls"], 1);
    strictEqual(result.costs["MTT zaps"], 1);
    strictEqual(result.costs["ODP faults"], 1);
    ok(recorder.transfers.some((x) => x.mapType === "BUS_ADDR" && x.dst !== null));
    ok(recorder.transfers.some((x) => x.mapType === "RAM" && x.dst === null));
  });
  await t.step("iommu: through the root complex with ATS", async () => {
    const { result } = await runAttach({ variant: "iommu" });
    strictEqual(result.ok, true);
    strictEqual(result.path, "THRU_HOST_BRIDGE -> RAM");
    strictEqual(result.ats, "on");
    ok((result.costs["ATS translations"] as number) > 0);
  });
  await t.step("remote NIC: through the host bridge", async () => {
    const { result } = await runAttach({ variant: "remote-nic" });
    strictEqual(result.ok, true);
    strictEqual(result.path, "THRU_HOST_BRIDGE -> RAM");
  });
  await t.step("broken importer: stale VRAM writes found (expected findings)", async () => {
    const { result } = await runAttach({ variant: "broken-importer" });
    strictEqual(result.ok, true);
    strictEqual(result.bytesVerified, 0);
    ok(result.expectedFindings.some((f) => f.includes("no longer backs its buffer")));
    strictEqual(result.costs["MTT zaps"], 0);
  });
});
