/**
 * Loader tests on the real third-party files in ../shared/topologies (read in
 * place, never copied) and the published/derived expectations of its README.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Kernel } from "@dmalab/kernel";
import {
  buildMachine,
  calcMapTypeAndDist,
  formatLspciTree,
  lspciToSpec,
  mapTypeName,
  NCCL_PATH,
  ncclPath,
  type NcclTopo,
  ncclTopoToSpec,
  p2pPairs,
  parseLspciTree,
  parseNcclTopo,
  TopologyParseError,
  topoMatrix,
} from "./mod.ts";

const TOPO_DIR = new URL("../../../shared/topologies/", import.meta.url);
const haveTopologies = (() => {
  try {
    return Deno.statSync(TOPO_DIR).isDirectory;
  } catch {
    return false;
  }
})();
const read = (f: string) => Deno.readTextFileSync(new URL(f, TOPO_DIR));
const ignore = !haveTopologies;

function lspciWorld(file: string, numa?: (bus: number) => number) {
  const text = read(file);
  const warnings: string[] = [];
  const spec = lspciToSpec(parseLspciTree(text, file), { warnings, ...(numa ? { numa } : {}) });
  const world = new Kernel();
  return { text, fabric: buildMachine(world, spec), warnings, world };
}

/** The level cells of a saved `nvidia-smi topo -m` (rows GPUn/NICn). */
function savedMatrix(file: string): { names: string[]; levels: string[][] } {
  const lines = read(file).split("\n");
  const names = lines[0]!.trim().split(/\s+/).filter((x) => /^(GPU|NIC)\d+$/.test(x));
  const levels = lines.slice(1, 1 + names.length).map((l) =>
    l.trim().split(/\s+/).slice(1, 1 + names.length)
  );
  return { names, levels };
}

Deno.test({ name: "lspci: real trees round-trip byte for byte", ignore }, async (t) => {
  for (
    const f of ["stelline-puget-wrx90.lspci-tv.txt", "stelline-asus-esc8000a-e12.lspci-tv.txt"]
  ) {
    await t.step(f, () => {
      const { text, fabric, warnings } = lspciWorld(f);
      strictEqual(formatLspciTree(fabric), text);
      ok(warnings.some((w) => w.includes("assuming AMD family 0x19")));
    });
  }
});

Deno.test(
  { name: "lspci: nvidia-smi topo -m levels match the published matrices", ignore },
  async (t) => {
    await t.step("Puget WRX90 (one NUMA node)", () => {
      const { fabric } = lspciWorld("stelline-puget-wrx90.lspci-tv.txt");
      const saved = savedMatrix("stelline-puget-wrx90.nvidia-smi-topo-m.txt");
      const m = topoMatrix(fabric);
      deepStrictEqual(m.names, saved.names);
      deepStrictEqual(m.levels, saved.levels);
    });
    await t.step("ASUS ESC8000A-E12 (root buses >= 0x80 on NUMA 1)", () => {
      const { fabric } = lspciWorld(
        "stelline-asus-esc8000a-e12.lspci-tv.txt",
        (b) => (b >= 0x80 ? 1 : 0),
      );
      const saved = savedMatrix("stelline-asus-esc8000a-e12.nvidia-smi-topo-m.txt");
      const m = topoMatrix(fabric);
      deepStrictEqual(m.names, saved.names);
      deepStrictEqual(m.levels, saved.levels);
    });
  },
);

Deno.test({ name: "lspci: derived P2PDMA expectations (README)", ignore }, async (t) => {
  await t.step("Puget WRX90", () => {
    const { fabric } = lspciWorld("stelline-puget-wrx90.lspci-tv.txt");
    const r = (a: string, b: string) => {
      const x = calcMapTypeAndDist(fabric.dev(a), fabric.dev(b), false);
      return [mapTypeName(x.mapType), x.dist];
    };
    deepStrictEqual(r("0000:c1:00.0", "0000:c2:00.0"), ["THRU_HOST_BRIDGE", 4]);
    deepStrictEqual(r("0000:21:00.0", "0000:21:00.1"), ["BUS_ADDR", 2]);
    deepStrictEqual(r("0000:05:00.0", "0000:06:00.0"), ["BUS_ADDR", 4]);
    deepStrictEqual(r("0000:05:00.0", "0000:0b:00.0"), ["BUS_ADDR", 8]);
    deepStrictEqual(r("0000:c1:00.0", "0000:05:00.0"), ["THRU_HOST_BRIDGE", 8]);
  });
  await t.step("ASUS: every GPU pair THRU_HOST_BRIDGE at distance 4", () => {
    const { fabric } = lspciWorld("stelline-asus-esc8000a-e12.lspci-tv.txt");
    const gpus = ["0000:01:00.0", "0000:41:00.0", "0000:c1:00.0", "0000:e1:00.0"].map((n) =>
      fabric.dev(n)
    );
    for (const a of gpus) {
      for (const b of gpus) {
        if (a === b) continue;
        const x = calcMapTypeAndDist(a, b, false);
        deepStrictEqual([mapTypeName(x.mapType), x.dist], ["THRU_HOST_BRIDGE", 4]);
      }
    }
  });
  await t.step("--p2p listing shape", () => {
    const { fabric } = lspciWorld("stelline-puget-wrx90.lspci-tv.txt");
    const pairs = p2pPairs(fabric, (d) => d.vendor === 0x10de && d.fn === 0);
    deepStrictEqual(pairs, [
      {
        provider: "0000:c1:00.0",
        client: "0000:c2:00.0",
        mapType: "THRU_HOST_BRIDGE",
        distance: 4,
      },
      {
        provider: "0000:c2:00.0",
        client: "0000:c1:00.0",
        mapType: "THRU_HOST_BRIDGE",
        distance: 4,
      },
    ]);
  });
});

const NCCL_FILES = [
  "azure-ndv2-topo.xml",
  "azure-ndv4-topo.xml",
  "azure-ndv5-topo.xml",
  "azure-ncv4-topo.xml",
  "aws-p4d-24xl-topo.xml",
  "aws-p4de-24xl-topo.xml",
  "aws-p5.48xl-topo.xml",
  "aws-g5.48xl-topo.xml",
  "ibm-gx3d-8xh100-topo.xml",
];

function kinds(t: NcclTopo, k: string) {
  return [...t.byId.values()].filter((n) => n.kind === k);
}

function path(t: NcclTopo, a: string, b: string): [string, number] {
  const p = ncclPath(t, a, b);
  const name = Object.entries(NCCL_PATH).find(([, v]) => v === p.type)![0];
  return [name, Math.round(p.bw * 10000) / 10000];
}

Deno.test({ name: "NCCL XML: every real file loads and builds a machine", ignore }, async (t) => {
  for (const f of NCCL_FILES) {
    await t.step(f, () => {
      const topo = parseNcclTopo(read(f), f);
      const world = new Kernel();
      const fabric = buildMachine(world, ncclTopoToSpec(topo, `nccl:${f}`));
      const pairs = p2pPairs(fabric);
      const n = fabric.endpoints().length;
      strictEqual(pairs.length, n === 0 ? 0 : n * (n - 1));
      for (const p of pairs) ok(p.distance >= -1);
      for (const node of topo.byId.values()) {
        if (node.kind !== "cpu" && node.bw !== 5000) {
          ok(fabric.get(node.id), `${node.id} in the fabric`);
        }
      }
    });
  }
});

Deno.test({ name: "NCCL XML: derived path expectations (README)", ignore }, async (t) => {
  const load = (f: string) => parseNcclTopo(read(f), f);
  await t.step("ndv2: PHB within a NUMA node, SYS across; NIC on NUMA 0 is PHB", () => {
    const topo = load("azure-ndv2-topo.xml");
    deepStrictEqual(path(topo, "0001:00:00.0", "0002:00:00.0"), ["PHB", 24]);
    // The SYS hop carries NCCL's Skylake inter-socket figure (10 GB/s); the
    // README's "SYS/24" leaves that link out.
    deepStrictEqual(path(topo, "0001:00:00.0", "0005:00:00.0"), ["SYS", 10]);
    deepStrictEqual(path(topo, "0001:00:00.0", "0101:00:00.0")[0], "PHB");
  });
  await t.step(
    "ndv4: PIX/24 under one virtual switch, SYS otherwise, 2 NICs at PIX per GPU",
    () => {
      const topo = load("azure-ndv4-topo.xml");
      for (const g of kinds(topo, "gpu")) {
        for (const h of kinds(topo, "gpu")) {
          if (g === h) continue;
          deepStrictEqual(
            path(topo, g.id, h.id),
            g.parent === h.parent ? ["PIX", 24] : ["SYS", 16],
          );
        }
        strictEqual(
          kinds(topo, "nic").filter((n) => path(topo, g.id, n.id)[0] === "PIX").length,
          2,
        );
      }
    },
  );
  await t.step("ndv5: own NIC PIX/48, same NUMA PHB/48, across SYS", () => {
    const topo = load("azure-ndv5-topo.xml");
    for (const g of kinds(topo, "gpu")) {
      const own = g.parent!.children.find((c) => c.kind === "nic")!;
      deepStrictEqual(path(topo, g.id, own.id), ["PIX", 48]);
      for (const h of kinds(topo, "gpu")) {
        if (g === h) continue;
        strictEqual(path(topo, g.id, h.id)[0], g.numa === h.numa ? "PHB" : "SYS");
        if (g.numa === h.numa) strictEqual(path(topo, g.id, h.id)[1], 48);
      }
    }
  });
  await t.step(
    "ncv4: GPU pairs SYS/12 from the bogus link defaults; GPU0-eth0 PHB, others SYS",
    () => {
      const topo = load("azure-ncv4-topo.xml");
      const gpus = kinds(topo, "gpu");
      strictEqual(gpus.length, 4);
      for (const g of gpus) {
        for (const h of gpus) if (g !== h) deepStrictEqual(path(topo, g.id, h.id), ["SYS", 12]);
      }
      strictEqual(path(topo, "0001:00:00.0", "eth0")[0], "PHB");
      strictEqual(path(topo, "0002:00:00.0", "eth0")[0], "SYS");
      ok(topo.warnings.some((w) => w.includes("targets the GPU itself")));
      ok(topo.warnings.some((w) => w.includes("bogus link attributes")));
    },
  );
  for (const f of ["aws-p4d-24xl-topo.xml", "aws-p4de-24xl-topo.xml"]) {
    await t.step(`${f}: PIX/12 in a switch, PHB/12 same socket, SYS across; own NIC PIX/12`, () => {
      const topo = load(f);
      for (const g of kinds(topo, "gpu")) {
        for (const h of kinds(topo, "gpu")) {
          if (g === h) continue;
          const want = g.parent === h.parent
            ? ["PIX", 12]
            : g.numa === h.numa
            ? ["PHB", 12]
            : ["SYS", 10];
          deepStrictEqual(path(topo, g.id, h.id), want);
        }
        const own = g.parent!.children.find((c) => c.kind === "nic")!;
        deepStrictEqual(path(topo, g.id, own.id), ["PIX", 12]);
      }
    });
  }
  await t.step("p5.48xl: 4 own NICs PIX/12, GPU-GPU PHB/24", () => {
    const topo = load("aws-p5.48xl-topo.xml");
    for (const g of kinds(topo, "gpu")) {
      const own = g.parent!.children.filter((c) => c.kind === "nic");
      strictEqual(own.length, 4);
      for (const n of own) deepStrictEqual(path(topo, g.id, n.id), ["PIX", 12]);
      for (const h of kinds(topo, "gpu")) {
        if (g !== h) deepStrictEqual(path(topo, g.id, h.id), ["PHB", 24]);
      }
    }
  });
  await t.step(
    "ibm gx3d: own NIC PIX/48; through the CPU 0.1875 GB/s; bogus bridges warned",
    () => {
      const topo = load("ibm-gx3d-8xh100-topo.xml");
      const gpus = kinds(topo, "gpu");
      strictEqual(gpus.length, 8);
      for (const g of gpus) {
        const own = g.parent!.children.find((c) => c.kind === "nic")!;
        deepStrictEqual(path(topo, g.id, own.id), ["PIX", 48]);
        for (const h of gpus) if (g !== h) strictEqual(path(topo, g.id, h.id)[1], 0.1875);
      }
      ok(topo.warnings.some((w) => /reports Gen5 x16 below .* which reports Gen1 x1/.test(w)));
    },
  );
  await t.step("g5.48xl: a minimal file loads with warnings about missing classes", () => {
    const topo = load("aws-g5.48xl-topo.xml");
    strictEqual(topo.cpus.length, 2);
    strictEqual(topo.warnings.filter((w) => w.includes("has no class")).length, 9);
  });
  await t.step("graph file is refused with a clear message", () => {
    try {
      load("azure-ncv4-graph.xml");
      ok(false);
    } catch (e) {
      ok(e instanceof TopologyParseError && e.message.includes("NCCL_GRAPH_FILE"));
    }
  });
});

Deno.test(
  { name: "NCCL XML: matrix with NVLink and P2P types on the loaded machine", ignore },
  () => {
    const topo = parseNcclTopo(read("ibm-gx3d-8xh100-topo.xml"));
    const world = new Kernel();
    const fabric = buildMachine(world, ncclTopoToSpec(topo, "nccl:ibm"));
    const m = topoMatrix(fabric);
    strictEqual(m.names.filter((n) => n.startsWith("GPU")).length, 8);
    strictEqual(m.names.filter((n) => n.startsWith("NIC")).length, 8);
    strictEqual(m.levels[0]![1], "NV18");
    strictEqual(m.levels[0]![8], "PIX", "GPU0 and NIC0 (mlx5_7) share a bridge");
    strictEqual(m.levels[0]![9], "PHB");
    strictEqual(m.levels[0]![12], "SYS");
    strictEqual(m.nicNames[0], "mlx5_7");
    // Intel SPR with no whitelisted device on the synthesized root bus: cross-bridge P2P is refused.
    const g0 = fabric.dev("0000:a4:00.0");
    const n7 = fabric.dev("0000:a3:00.0");
    const g1 = fabric.dev("0000:ae:00.0");
    strictEqual(mapTypeName(calcMapTypeAndDist(g0, n7, false).mapType), "BUS_ADDR");
    strictEqual(mapTypeName(calcMapTypeAndDist(g0, g1, false).mapType), "NOT_SUPPORTED");
  },
);

Deno.test({
  name: "NCCL XML: fuzz: mutated real files load or fail with a positioned error",
  ignore,
}, async () => {
  const fc = (await import("fast-check")).default;
  const texts = ["azure-ndv4-topo.xml", "ibm-gx3d-8xh100-topo.xml", "aws-p4d-24xl-topo.xml"].map(
    read,
  );
  fc.assert(
    fc.property(
      fc.nat(texts.length - 1),
      fc.array(
        fc.tuple(fc.nat(1 << 20), fc.constantFrom("", "<", ">", "/", '"', "=", " ", "x", "0", "&")),
        { minLength: 1, maxLength: 3 },
      ),
      (which, muts) => {
        let s = texts[which]!;
        for (const [at, ch] of muts) {
          const i = at % s.length;
          s = s.slice(0, i) + ch + s.slice(i + 1);
        }
        try {
          const topo = parseNcclTopo(s);
          buildMachine(new Kernel(), ncclTopoToSpec(topo, "nccl:fuzz"));
        } catch (e) {
          ok(
            e instanceof TopologyParseError ||
              (e instanceof Error && !(e instanceof TypeError) && !(e instanceof RangeError)),
            String(e),
          );
          if (e instanceof TopologyParseError) ok(e.line >= 1 && e.col >= 1);
        }
      },
    ),
    { numRuns: 400 },
  );
});
