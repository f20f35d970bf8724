import { ok, strictEqual, throws } from "node:assert/strict";
import { defaultMachineSpec } from "@dmalab/pci-p2p";
import { Kernel, Mutex } from "@dmalab/kernel";
import {
  appMachine,
  countEqual,
  loadTopologySpec,
  pattern,
  Recorder,
  sameBytes,
  TopologyError,
  trackLocks,
} from "./mod.ts";

Deno.test("app-kit", async (t) => {
  await t.step("default machine: the GPU, the NIC under its switch, the remote NIC", () => {
    const m = appMachine();
    strictEqual(m.gpu.name, "0000:03:00.0");
    strictEqual(m.nic.name, "0000:04:00.0");
    strictEqual(m.nic2.name, "0000:41:00.0");
  });
  await t.step("a JSON MachineSpec file loads; a missing file is a TopologyError", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const file = `${dir}/m.json`;
      await Deno.writeTextFile(file, JSON.stringify(defaultMachineSpec()));
      const m = appMachine({ topology: file });
      strictEqual(m.nic.name, "0000:04:00.0");
      throws(() => loadTopologySpec(`${dir}/none.xml`), TopologyError);
      await Deno.writeTextFile(`${dir}/junk.txt`, "hello");
      throws(() => loadTopologySpec(`${dir}/junk.txt`), TopologyError);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
  await t.step("recorder: P2P transfers get the bandwidth model's rate and time", () => {
    const m = appMachine();
    const rec = new Recorder(m.world, m.fabric);
    const p2p = rec.transfer({
      label: "x",
      src: m.nic,
      dst: m.gpu,
      mapType: "BUS_ADDR",
      ats: false,
      bytes: 1 << 20,
    });
    ok(p2p.gbps > 40 && p2p.durNs > 0, `${p2p.gbps} GB/s`);
    const ram = rec.transfer({
      label: "y",
      src: m.nic,
      dst: null,
      mapType: "RAM",
      ats: false,
      bytes: 4096,
    });
    strictEqual(ram.dstName, "system RAM");
    ok(ram.gbps > 0);
    strictEqual(rec.bytes, (1 << 20) + 4096);
  });
  await t.step("patterns differ by seed; countEqual finds the first difference", () => {
    const a = pattern(1, 64);
    const b = pattern(2, 64);
    ok(!sameBytes(a, b));
    const c = a.slice();
    c[10] ^= 1;
    strictEqual(countEqual(a, c), 10);
    strictEqual(countEqual(a, a.slice()), 64);
  });
  await t.step("trackLocks: a mutex held across a sleep becomes a span", async () => {
    const world = new Kernel();
    const rec = new Recorder(world, null);
    const locks = trackLocks(world, rec);
    const m = new Mutex(world, "demo_lock");
    world.spawn("holder", async () => {
      await m.lock();
      await world.sched.msleep(2);
      m.unlock();
      await world.sched.msleep(1);
    });
    world.spawn("other", async () => {
      await world.sched.msleep(1);
    });
    await world.run();
    locks.finish();
    const span = rec.spans.find((s) => s.track === "lock demo_lock");
    ok(span, JSON.stringify(rec.spans));
    ok(span.name.startsWith("held by holder"));
    ok(span.endNs - span.startNs >= 2_000_000, `${span.endNs - span.startNs} ns`);
  });
});
