import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../main.ts";
import { captureIo } from "../io.ts";
import { getScenario } from "@dmalab/explorer";

Deno.test("dmalab run", async (t) => {
  await t.step("run mmap: text output, exit 0", async () => {
    const io = captureIo();
    strictEqual(await main(["run", "mmap"], io), 0);
    ok(io.stdout.includes("userspace mmap"));
    ok(io.stdout.includes("verdict: behaves as the kernel would"));
    strictEqual(io.stderr, "", "quiet when not a TTY");
  });
  await t.step(
    "run mmap --variant bounce-nosync --json: stale data as expected findings",
    async () => {
      const io = captureIo();
      strictEqual(await main(["run", "mmap", "--variant", "bounce-nosync", "--json"], io), 0);
      const doc = JSON.parse(io.stdout);
      strictEqual(doc.bytesVerified, 0);
      strictEqual(doc.expectedFindings.length, 2);
      deepStrictEqual(doc.violations, []);
    },
  );
  await t.step("usage errors exit 2: no app, unknown app, unknown variant, bad seed", async () => {
    for (
      const args of [
        ["run"],
        ["run", "nope"],
        ["run", "mmap", "--variant", "x"],
        ["run", "mmap", "--seed", "-1"],
        ["run", "pfn", "--topology", "x.xml"],
        ["run", "mmap", "--topology", "/nonexistent/topo.xml"],
      ]
    ) {
      const io = captureIo();
      strictEqual(await main(args, io), 2, args.join(" "));
      ok(io.stderr.startsWith("dmalab run: "), io.stderr);
    }
  });
  await t.step("--topology: a JSON MachineSpec file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dmalab-topo-"));
    try {
      const { defaultMachineSpec } = await import("@dmalab/pci-p2p");
      const file = join(dir, "m.json");
      await Deno.writeTextFile(file, JSON.stringify(defaultMachineSpec()));
      const io = captureIo();
      strictEqual(await main(["run", "virtio", "--topology", file, "--json"], io), 0);
      strictEqual(JSON.parse(io.stdout).bytesVerified, 65536);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  await t.step("--trace and --ftrace: Perfetto JSON with tracks, slices and flows", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dmalab-trace-"));
    try {
      const io = captureIo();
      const tr = join(dir, "t.json");
      const ft = join(dir, "t.txt");
      strictEqual(await main(["run", "mmap", "--trace", tr, "--ftrace", ft], io), 0);
      ok(io.stdout.includes(`trace: ${tr}`));
      const doc = JSON.parse(await Deno.readTextFile(tr));
      const ev = doc.traceEvents as { ph: string; name: string; args?: { name?: string } }[];
      ok(ev.some((e) => e.ph === "M" && e.args?.name === "app"), "task track");
      ok(ev.some((e) => e.ph === "M" && e.args?.name?.startsWith("fence ")), "fence track");
      ok(ev.some((e) => e.ph === "X" && e.name === "reserve+add_fence"), "lock slice");
      ok(ev.some((e) => e.ph === "M" && e.args?.name?.startsWith("lock ")), "lock track");
      ok(ev.some((e) => e.ph === "s") && ev.some((e) => e.ph === "f"), "DMA flow");
      const text = await Deno.readTextFile(ft);
      ok(text.includes("# tracer: nop"));
      ok(text.includes("dmalab_dma_transfer: label=device read"));
      ok(text.includes("dma_buf_begin_cpu_access"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

Deno.test("dmalab run pfn --report writes the page with the variant table", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const io = captureIo();
    strictEqual(await main(["run", "pfn", "--report", dir], io), 0);
    const html = await Deno.readTextFile(`${dir}/index.html`);
    ok(html.includes('id="variants-0"'));
    ok(html.includes("B-get-pfn-unlocked-no-recheck"));
    ok(
      html.includes('class="transfer via-rc ats-on"'),
      "NIC transfers through the root complex, ATS on",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dmalab bufinfo prints debugfs bufinfo of a run", async () => {
  const io = captureIo();
  strictEqual(await main(["bufinfo", "mmap"], io), 0);
  ok(io.stdout.includes("Dma-buf Objects:"));
  ok(io.stdout.includes("\tsystem\t"));
  ok(io.stdout.includes("0000:04:00.0"), "the attached NIC is listed");
  const j = captureIo();
  strictEqual(await main(["bufinfo", "pfn", "--variant", "A", "--json"], j), 0);
  ok(JSON.parse(j.stdout).bufinfo.some((l: string) => l.includes("vfio")));
});

Deno.test("dmalab explore lists the driver scenarios", async () => {
  const io = captureIo();
  await main(["explore", "--list"], io);
  ok(io.stdout.includes("pfn-reset-race-b-get-pfn-unlocked-no-recheck"), io.stdout);
  ok(io.stdout.includes("kvm-bar-reset-a-follow-pfnmap-7.1"));
  ok(io.stdout.includes("mlx5-eviction-race-broken"));
  ok(getScenario("pfn-reset-race-a"));
  const r = captureIo();
  strictEqual(
    await main(["explore", "pfn-reset-race-b-get-pfn-unlocked-no-recheck", "--json"], r),
    1,
  );
});

Deno.test("progress on a TTY, nothing when piped", async () => {
  const tty = captureIo();
  (tty as { isTty: boolean }).isTty = true;
  strictEqual(await main(["run", "pfn", "--variant", "A"], tty), 0);
  ok(tty.stderr.includes("pfn: A"), JSON.stringify(tty.stderr));
  const pipe = captureIo();
  strictEqual(await main(["run", "pfn", "--variant", "A"], pipe), 0);
  strictEqual(pipe.stderr, "");
});

const SHARED = new URL("../../../../shared/topologies/", import.meta.url).pathname;
const PUGET = `${SHARED}stelline-puget-wrx90.lspci-tv.txt`;
const NDV4 = `${SHARED}azure-ndv4-topo.xml`;
let haveShared = false;
try {
  haveShared = Deno.statSync(PUGET).isFile && Deno.statSync(NDV4).isFile;
} catch {
  haveShared = false;
}

Deno.test({
  name: "run on real topologies (lspci -tv, NCCL XML) when ../shared/topologies is there",
  ignore: !haveShared,
  fn: async () => {
    for (const [app, file] of [["vmap", PUGET], ["mmap", NDV4], ["virtio", PUGET]]) {
      const io = captureIo();
      strictEqual(
        await main(["run", app!, "--topology", file!, "--json"], io),
        0,
        `${app} ${file}`,
      );
      const doc = JSON.parse(io.stdout);
      strictEqual(doc.ok, true);
      ok(doc.bytesVerified > 0);
      ok(doc.machine !== "default (AMD Zen 4, GPU + NIC under one switch)");
    }
  },
});
