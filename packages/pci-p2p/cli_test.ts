import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { topoMain } from "./mod.ts";

async function run(args: string[]) {
  let out = "";
  let err = "";
  const code = await topoMain(args, { stdout: (s) => (out += s), stderr: (s) => (err += s) });
  return { code, out, err };
}

const TOPO_DIR = new URL("../../../shared/topologies/", import.meta.url);
const ignore = (() => {
  try {
    return !Deno.statSync(TOPO_DIR).isDirectory;
  } catch {
    return true;
  }
})();

Deno.test("topo: usage errors exit 2, help exits 0", async () => {
  strictEqual((await run([])).code, 2);
  strictEqual((await run(["--bogus"])).code, 2);
  strictEqual((await run(["--preset", "nope"])).code, 2);
  strictEqual((await run(["--preset", "default", "--matrix", "--p2p"])).code, 2);
  strictEqual((await run(["a", "b"])).code, 2);
  const h = await run(["--help"]);
  strictEqual(h.code, 0);
  ok(h.out.includes("usage: dmalab topo"));
});

Deno.test("topo --p2p --json: the issue's shape", async () => {
  const r = await run(["--preset", "default", "--p2p", "--json"]);
  strictEqual(r.code, 0);
  const j = JSON.parse(r.out) as { pairs: Record<string, unknown>[] };
  deepStrictEqual(Object.keys(j), ["pairs"]);
  deepStrictEqual(j.pairs[0], {
    provider: "0000:03:00.0",
    client: "0000:04:00.0",
    mapType: "BUS_ADDR",
    distance: 4,
  });
  for (const p of j.pairs) {
    deepStrictEqual(Object.keys(p), ["provider", "client", "mapType", "distance"]);
    ok(["NONE", "NOT_SUPPORTED", "BUS_ADDR", "THRU_HOST_BRIDGE"].includes(p.mapType as string));
    ok(Number.isInteger(p.distance));
  }
  const iommu = JSON.parse((await run(["--preset", "default", "--p2p", "--json", "--iommu"])).out);
  strictEqual(iommu.pairs[0].mapType, "THRU_HOST_BRIDGE");
  const unlisted = JSON.parse((await run(["--preset", "intel-unlisted", "--p2p", "--json"])).out);
  ok(
    unlisted.pairs.some((p: { distance: number; mapType: string }) =>
      p.mapType === "NOT_SUPPORTED" && p.distance === -1
    ),
  );
});

Deno.test(
  { name: "topo FILE: detection of NCCL, lspci, json, sysfs; errors exit 1", ignore },
  async () => {
    const puget = new URL("stelline-puget-wrx90.lspci-tv.txt", TOPO_DIR).pathname;
    const tree = await run([puget]);
    strictEqual(tree.code, 0);
    strictEqual(tree.out, await Deno.readTextFile(puget));
    ok(tree.err.includes("assuming AMD"));
    const m = await run([puget, "--matrix"]);
    ok(m.out.startsWith("        GPU0    GPU1    NIC0    NIC1"));
    ok(m.out.includes("GPU0     X      PHB     NODE    NODE"));
    const asus = await run([
      new URL("stelline-asus-esc8000a-e12.lspci-tv.txt", TOPO_DIR).pathname,
      "--matrix",
      "--json",
      "--numa",
      "80=1",
    ]);
    strictEqual(JSON.parse(asus.out).matrix[0][2], "SYS");
    const nccl = await run([
      new URL("azure-ndv4-topo.xml", TOPO_DIR).pathname,
      "--matrix",
      "--json",
    ]);
    strictEqual(nccl.code, 0);
    const j = JSON.parse(nccl.out);
    strictEqual(j.devices[0].bdf, "0003:00:00.0");
    strictEqual(j.matrix[0][1], "PIX");
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/bad.xml`, "<system>\n<cpu numaid='0'>\n</system>");
      const bad = await run([`${dir}/bad.xml`]);
      strictEqual(bad.code, 1);
      ok(bad.err.includes(":3:1: closing tag </system> does not match <cpu>"));
      await Deno.writeTextFile(
        `${dir}/m.json`,
        JSON.stringify({
          cpu: { vendor: "AMD", family: 25 },
          hostBridges: [{
            devices: [{
              type: "root_port",
              children: [{ vendor: 4318, bars: [{ size: "1G", prefetch: true }] }],
            }],
          }],
        }),
      );
      const js = await run([`${dir}/m.json`, "--nn"]);
      strictEqual(js.code, 0);
      ok(js.out.includes("-[0000:00]---00.0-[01]----00.0"));
      await Deno.writeTextFile(`${dir}/x.txt`, "hello");
      strictEqual((await run([`${dir}/x.txt`])).code, 1);
      strictEqual((await run([`${dir}/missing`])).code, 1);
      await Deno.writeTextFile(
        `${dir}/dup.json`,
        JSON.stringify({ hostBridges: [{ devices: [{ slot: 1 }, { slot: 1 }] }] }),
      );
      const dup = await run([`${dir}/dup.json`]);
      strictEqual(dup.code, 1);
      ok(dup.err.includes("used twice"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
