import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Kernel } from "@dmalab/kernel";
import { buildMachine } from "@dmalab/pci-p2p";
import { customMachineSpec, runCustom } from "./mod.ts";

Deno.test("example app: a custom machine and two drivers", async (t) => {
  await t.step("the builder enumerates the machine as the kernel would", () => {
    const f = buildMachine(new Kernel(), customMachineSpec());
    const eps = f.devices.filter((d) => d.type === "endpoint").map((d) => d.name);
    deepStrictEqual(eps, ["0000:03:00.0", "0000:04:00.0", "0000:81:00.0"]);
  });
  const { result, recorder } = await runCustom();
  await t.step("near engine P2P below the switch, far engine through the host bridge", () => {
    strictEqual(result.path, "near: BUS_ADDR, far: THRU_HOST_BRIDGE; after eviction: RAM, RAM");
    ok(recorder.transfers.some((x) => x.mapType === "BUS_ADDR" && x.gbps > 0));
  });
  await t.step("eviction: both importers invalidated, re-mapped, same bytes", () => {
    strictEqual(result.ok, true);
    deepStrictEqual(result.violations, []);
    strictEqual(result.bytesVerified, 4 << 20);
    strictEqual(result.costs["move_notify calls"], 1);
    strictEqual(result.costs["importer maps"], 4);
  });
});
