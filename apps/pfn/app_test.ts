import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { runPfn } from "./mod.ts";

Deno.test("pfn app: every KVM import path and pfn variant", async (t) => {
  const { result, recorder } = await runPfn();
  await t.step("bytes both ways in each of the four configurations", () => {
    strictEqual(result.bytesVerified, 4 * 2 * 4096);
    deepStrictEqual(result.violations, []);
    strictEqual(result.ok, true);
  });
  await t.step("the four configurations keep the invariant across the reset", () => {
    const keep = result.variants.filter((r) => r.keepsInvariants).map((r) => r.variant);
    deepStrictEqual(keep, ["A", "B-get-pfn-unlocked", "B-get-pfn-locked", "B-pfn-attachment"]);
    for (const r of result.variants.slice(0, 4)) {
      strictEqual(r.cells["mappings during reset"], "stage2 0, iommu 0 B, user 0");
      strictEqual(r.cells["NIC during reset"], "IOMMU fault");
      ok(r.cells["explorer"]!.startsWith("clean"), r.cells["explorer"]);
    }
  });
  await t.step("path A waits out the FLR; path B exits with -EIO", () => {
    ok(result.variants[0]!.cells["guest during reset"]!.startsWith("read at +10"));
    for (const r of result.variants.slice(1, 4)) {
      ok(r.cells["guest during reset"]!.startsWith("exit ret -5"));
    }
  });
  await t.step("unlocked get_pfn: the window exists; KVM's recheck refuses the stale pfn", () => {
    ok(result.variants[1]!.cells["revoke window (fixed schedule)"]!.startsWith("KVM refused"));
  });
  await t.step("negative control: without the recheck the invariant breaks", () => {
    const nc = result.variants[4]!;
    strictEqual(nc.variant, "B-get-pfn-unlocked-no-recheck");
    strictEqual(nc.keepsInvariants, false);
    strictEqual(nc.asExpected, true);
    strictEqual(result.expectedFindings.length, 1);
    ok(nc.cells["explorer"]!.startsWith("found (invariant)"), nc.cells["explorer"]);
  });
  await t.step("NIC transfers go through the host bridge (IOMMU and ACS redirect)", () => {
    ok(recorder.transfers.some((x) => x.mapType === "THRU_HOST_BRIDGE" && x.src !== null));
    strictEqual(result.path, "THRU_HOST_BRIDGE (IOMMU, ACS redirect)");
  });
});

Deno.test("pfn app: one variant, and --topology refused", async () => {
  const { result } = await runPfn({ variant: "B-get-pfn-locked" });
  strictEqual(result.variants.length, 1);
  strictEqual(result.bytesVerified, 8192);
  await runPfn({ topology: "x.xml" }).then(
    () => ok(false),
    (e) => ok(e instanceof RangeError),
  );
});
