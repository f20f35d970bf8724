import { ok, strictEqual } from "node:assert/strict";
import { main } from "./main.ts";
import { captureIo, parseArgs, UsageError } from "./io.ts";
import { throws } from "node:assert/strict";

Deno.test("dmalab CLI conventions", async (t) => {
  await t.step("--help lists commands and exits 0", async () => {
    const io = captureIo();
    strictEqual(await main(["--help"], io), 0);
    ok(io.stdout.includes("tour"));
    ok(io.stdout.includes("lockdep"));
  });
  await t.step("no command is a usage error (2)", async () => {
    const io = captureIo();
    strictEqual(await main([], io), 2);
  });
  await t.step("unknown command exits 2 with a message", async () => {
    const io = captureIo();
    strictEqual(await main(["frobnicate"], io), 2);
    ok(io.stderr.includes("unknown command 'frobnicate'"));
  });
  await t.step("unknown option exits 2", async () => {
    const io = captureIo();
    strictEqual(await main(["tour", "--bogus"], io), 2);
    ok(io.stderr.includes("unknown option --bogus"));
  });
  await t.step("each command has --help", async () => {
    for (const c of ["tour", "run", "bufinfo", "lockdep", "topo", "explore"]) {
      const io = captureIo();
      strictEqual(await main([c, "--help"], io), 0);
      ok(io.stdout.startsWith(`usage: dmalab ${c}`), `${c} --help`);
    }
  });
  await t.step("parseArgs handles --key value, --key=value and --", () => {
    const p = parseArgs(["a", "--seed", "3", "--json", "--x=1", "--", "--y"], ["json"], [
      "seed",
      "x",
    ]);
    strictEqual(p.flags.seed, "3");
    strictEqual(p.flags.json, true);
    strictEqual(p.flags.x, "1");
    strictEqual(p.positional.join(","), "a,--y");
    throws(() => parseArgs(["--seed"], [], ["seed"]), UsageError);
  });
});

Deno.test("dmalab lockdep reports the AB-BA dependency and exits 1", async () => {
  const io = captureIo();
  strictEqual(await main(["lockdep"], io), 1);
  ok(io.stdout.includes("WARNING: possible circular locking dependency detected"));
  const json = captureIo();
  strictEqual(await main(["lockdep", "--json"], json), 1);
  const doc = JSON.parse(json.stdout);
  strictEqual(doc.deadlocked, false);
  ok(doc.violations.length >= 1);
});

Deno.test("dmalab tour: every stop behaves as the kernel would", async () => {
  const io = captureIo();
  strictEqual(await main(["tour", "--json"], io), 0);
  const doc = JSON.parse(io.stdout);
  strictEqual(doc.ok, true);
  ok(doc.stops.length >= 2);
});

Deno.test("dmalab topo and explore are wired to their packages", async (t) => {
  await t.step("topo --preset default --p2p --json lists the GPU/NIC pair", async () => {
    const io = captureIo();
    strictEqual(await main(["topo", "--preset", "default", "--p2p", "--json"], io), 0);
    const doc = JSON.parse(io.stdout);
    const pair = doc.pairs.find((p: { provider: string; client: string }) =>
      p.provider === "0000:03:00.0" && p.client === "0000:04:00.0"
    );
    strictEqual(pair.mapType, "BUS_ADDR");
  });
  await t.step("explore counter-race finds the lost update and exits 1", async () => {
    const io = captureIo();
    strictEqual(await main(["explore", "counter-race", "--json"], io), 1);
    ok(JSON.parse(io.stdout));
  });
  await t.step("explore finds the fence signalling cycle and clears its ordered twin", async () => {
    const bad = captureIo();
    strictEqual(await main(["explore", "fence-signalling-lockdep"], bad), 1);
    ok(bad.stdout.includes("possible circular locking dependency detected"));
    ok(bad.stdout.includes("dma_fence_map"));
    const good = captureIo();
    strictEqual(await main(["explore", "fence-signalling-ordered"], good), 0);
  });
});
