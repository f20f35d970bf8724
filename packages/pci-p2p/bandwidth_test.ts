import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { Kernel, KernelError } from "@dmalab/kernel";
import {
  amdWorkstation,
  BandwidthModel,
  bandwidthModel,
  defaultMachine,
  intelUnlisted,
  lineCode,
  linkPayloadGBps,
  linkRawGBps,
  maxMinFair,
  server8Gpu,
  tlpEfficiency,
} from "./mod.ts";

const near = (a: number, b: number, tol: number) =>
  ok(Math.abs(a - b) <= tol, `${a} not within ${tol} of ${b}`);

Deno.test("link rates: encodings and the reference table", () => {
  deepStrictEqual([1, 2, 3, 4, 5, 6].map(lineCode), [
    0.8,
    0.8,
    128 / 130,
    128 / 130,
    128 / 130,
    242 / 256,
  ]);
  near(linkRawGBps(1, 16), 4.0, 1e-9);
  near(linkRawGBps(2, 16), 8.0, 1e-9);
  near(linkRawGBps(3, 16), 15.75, 0.01);
  near(linkRawGBps(4, 16), 31.5, 0.01);
  near(linkRawGBps(5, 16), 63.0, 0.02);
  near(linkRawGBps(6, 16), 121.0, 0.01);
  // pcie-bench arithmetic: ~82.5% of line rate at MPS 256
  near(tlpEfficiency(4, 256), 0.825, 0.002);
  near(linkPayloadGBps({ gen: 3, width: 16 }), 13.0, 0.05);
  near(linkPayloadGBps({ gen: 4, width: 16 }), 26.0, 0.05);
  near(linkPayloadGBps({ gen: 5, width: 16 }), 52.0, 0.1);
  ok(
    tlpEfficiency(4, 128) < tlpEfficiency(4, 256) && tlpEfficiency(4, 256) < tlpEfficiency(4, 512),
  );
  throws(() => lineCode(7), RangeError);
});

Deno.test("published figures: GPU P2P Gen4 x16 through an AMD root complex", () => {
  const world = new Kernel();
  const f = amdWorkstation(world);
  const bw = bandwidthModel(world);
  const [g0, g1] = ["0000:c1:00.0", "0000:c2:00.0"].map((n) => f.dev(n));
  const uni = bw.soloGBps(g0!, g1!);
  near(uni, 26.32, 0.6); // stelline Puget: 26.32 GB/s unidirectional
  strictEqual(bw.route(g0!, g1!).mapType, "THRU_HOST_BRIDGE");
  const bi = bw.share([{ src: g0!, dst: g1! }, { src: g1!, dst: g0! }]);
  near(bi[0]! + bi[1]!, 52.1, 1.2); // full duplex: 52.1 GB/s bidirectional
});

Deno.test("routing: switch-local, redirected, Intel root complex, cross-socket", async (t) => {
  await t.step("switch-local BUS_ADDR stays below the switch", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const r = new BandwidthModel(m.fabric).route(m.gpu, m.nic);
    deepStrictEqual(r.hops.map((h) => h.res.id), ["up:0000:03:00.0", "down:0000:04:00.0"]);
  });
  await t.step("ACS redirect sends it through the switch uplink twice", () => {
    const world = new Kernel();
    const m = defaultMachine(world, { iommu: true });
    const r = new BandwidthModel(m.fabric).route(m.gpu, m.nic);
    deepStrictEqual(r.hops.map((h) => h.res.id), [
      "up:0000:03:00.0",
      "up:0000:01:00.0",
      "rc:pci0000:00",
      "down:0000:01:00.0",
      "down:0000:04:00.0",
    ]);
    const bw = new BandwidthModel(m.fabric);
    // GPU->NIC and NIC->GPU both climb the same uplink, one per direction: no loss
    const both = bw.share([{ src: m.gpu, dst: m.nic }, { src: m.nic, dst: m.gpu }]);
    near(both[0]!, both[1]!, 1e-9);
    // two redirected flows in the same direction share the uplink
    const w2 = new Kernel();
    const m2 = defaultMachine(w2, { iommu: true });
    const bw2 = new BandwidthModel(m2.fabric);
    const solo = bw2.soloGBps(m2.gpu, m2.nic);
    const two = bw2.share([{ src: m2.gpu, dst: m2.nic }, { src: m2.gpu, dst: m2.nvme }]);
    ok(two[0]! < solo);
  });
  await t.step("Intel root complex P2P costs 1.2x on the way down", () => {
    const world = new Kernel();
    const f = server8Gpu(world);
    const eps = f.endpoints();
    const bw = bandwidthModel(world);
    near(bw.soloGBps(eps[0]!, eps[4]!), linkPayloadGBps({ gen: 5, width: 16 }) / 1.2, 1e-6);
    near(bw.soloGBps(eps[0]!, eps[2]!), linkPayloadGBps({ gen: 5, width: 16 }), 1e-6);
    const cross = bw.route(eps[0]!, eps[12]!);
    ok(cross.hops.some((h) => h.res.id === "sys:0->1"));
  });
  await t.step("NOT_SUPPORTED paths cannot carry P2P", () => {
    const world = new Kernel();
    const f = intelUnlisted(world);
    const [a, b] = f.endpoints();
    throws(
      () => bandwidthModel(world).route(a!, b!),
      (e) => e instanceof KernelError && e.code === "EREMOTEIO",
    );
  });
  await t.step("IOTLB reach", () => {
    const bw = bandwidthModel(new Kernel());
    strictEqual(bw.iotlbMissRate(256 * 1024), 0);
    near(bw.iotlbMissRate(1024 * 1024), 0.75, 1e-9);
    strictEqual(bw.iotlbMissRate(64 << 20, 2 << 20), 0);
    ok(bw.params.atsTranslationNs.label.startsWith("assumption"));
  });
});

Deno.test("max-min fairness: textbook cases", () => {
  const cap = (c: Record<string, number>) => (id: string) => c[id]!;
  // two flows on one link split it; a third on its own link keeps all of it
  deepStrictEqual(
    maxMinFair([
      { hops: [{ id: "a", weight: 1 }], demand: Infinity },
      { hops: [{ id: "a", weight: 1 }, { id: "b", weight: 1 }], demand: Infinity },
      { hops: [{ id: "b", weight: 1 }], demand: Infinity },
    ], cap({ a: 10, b: 30 })),
    [5, 5, 25],
  );
  // a demand-limited flow leaves the rest to others
  deepStrictEqual(
    maxMinFair([{ hops: [{ id: "a", weight: 1 }], demand: 2 }, {
      hops: [{ id: "a", weight: 1 }],
      demand: Infinity,
    }], cap({ a: 10 })),
    [2, 8],
  );
  // weights: a flow charged 2x gets half the rate
  deepStrictEqual(
    maxMinFair([{ hops: [{ id: "a", weight: 2 }], demand: Infinity }], cap({ a: 10 })),
    [5],
  );
});

Deno.test("property: max-min fair allocations are feasible and every flow is bottlenecked", () => {
  fc.assert(
    fc.property(
      fc.array(fc.double({ min: 1, max: 100, noNaN: true }), { minLength: 1, maxLength: 6 }),
      fc.array(fc.array(fc.nat(5), { minLength: 1, maxLength: 4 }), {
        minLength: 1,
        maxLength: 12,
      }),
      (caps, paths) => {
        const flows = paths.map((p) => ({
          hops: [...new Set(p.map((x) => x % caps.length))].map((x) => ({
            id: String(x),
            weight: 1,
          })),
          demand: Infinity,
        }));
        const rates = maxMinFair(flows, (id) => caps[Number(id)]!);
        const used = caps.map(() => 0);
        flows.forEach((f, i) => f.hops.forEach((h) => (used[Number(h.id)]! += rates[i]!)));
        used.forEach((u, j) => ok(u <= caps[j]! * (1 + 1e-9) + 1e-9));
        // each flow crosses a saturated link on which it has the largest rate
        flows.forEach((f, i) => {
          ok(f.hops.some((h) => {
            const j = Number(h.id);
            const sat = used[j]! >= caps[j]! * (1 - 1e-9) - 1e-9;
            const maxOn = Math.max(
              ...flows.map((g, k) => (g.hops.some((x) => x.id === h.id) ? rates[k]! : 0)),
            );
            return sat && rates[i]! >= maxOn - 1e-9;
          }));
        });
      },
    ),
    { numRuns: 300 },
  );
});
