// Scenario tests: GPU VRAM exported to mlx5 NICs over every path, eviction
// in the middle of an RDMA stream, and the ATS cost of the two rules.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Kernel, RandomPolicy } from "@dmalab/kernel";
import { mapTypeName, PciP2pdmaMapType } from "@dmalab/pci-p2p";
import { deviceDmaStats } from "@dmalab/dma-api";
import { gpuChecksumOf, gpuExportStats } from "@dmalab/gpu";
import { mappingP2pType } from "./ats.ts";
import type { IbUmemDmabuf } from "./umem.ts";
import { mlx5IbDeregMr } from "./mr.ts";
import {
  buildRig,
  connect,
  mlx5EvictionRaceScenario,
  registerUserMr,
  registerVramMr,
  type Rig,
} from "./scenarios.ts";
import type { Mlx5Device } from "./device.ts";

const MiB = 1 << 20;

/** Loopback RDMA WRITE of a user MR into a VRAM MR, then RDMA READ back; returns what it saw. */
async function writeThenRead(rig: Rig, nic: Mlx5Device, size: number) {
  const pattern = (i: number) => (i * 13 + 5) & 0xff;
  const bo = rig.gpu.boCreate(size);
  await rig.gpu.fill(bo, 0); // placed where the GPU wants it: VRAM
  const t = await registerVramMr(rig, nic, bo);
  const src = await registerUserMr(rig, nic, size, pattern, t.mr.pd);
  const back = await registerUserMr(rig, nic, size, undefined, t.mr.pd);
  const { qa } = connect(nic, t.mr.pd, nic, t.mr.pd);
  const t0 = rig.world.sched.now;
  qa.postSend({
    wrId: 1,
    opcode: "RDMA_WRITE",
    sge: { mr: src, addr: src.iova, length: size },
    remoteAddr: t.mr.iova,
    rkey: t.mr.rkey,
  });
  qa.postSend({
    wrId: 2,
    opcode: "RDMA_READ",
    sge: { mr: back, addr: back.iova, length: size },
    remoteAddr: t.mr.iova,
    rkey: t.mr.rkey,
  });
  await qa.cq.waitTotal(2);
  const ns = rig.world.sched.now - t0;
  const wcs = qa.cq.poll();
  const job = await rig.gpu.checksum(bo);
  await job.fence.wait(false);
  const readBack = await rig.mm.read(back.iova, size);
  const expected = new Uint8Array(size);
  for (let i = 0; i < size; i++) expected[i] = pattern(i);
  const umem = t.mr.umem as IbUmemDmabuf;
  return {
    statuses: wcs.map((w) => w.status),
    gpuSumOk: job.result === gpuChecksumOf(expected),
    readBackOk: gpuChecksumOf(readBack) === gpuChecksumOf(expected),
    mapType: mapTypeName(mappingP2pType(umem.sgt!)),
    placement: bo.placement,
    ns,
    t,
  };
}

Deno.test("scenario: GPU VRAM to the NIC under the same switch (BUS_ADDR)", async () => {
  const world = new Kernel();
  const rig = buildRig(world);
  const r = await world.runTask("app", () => writeThenRead(rig, rig.nic, 1 * MiB));
  deepStrictEqual(r.statuses, ["SUCCESS", "SUCCESS"]);
  strictEqual(r.mapType, "BUS_ADDR", "the switch routes NIC <-> GPU traffic below it");
  strictEqual(r.placement, "VRAM");
  ok(r.gpuSumOk, "the GPU sees the bytes the NIC wrote into VRAM");
  ok(r.readBackOk, "the NIC reads the VRAM bytes back");
  strictEqual(deviceDmaStats(rig.nic.pdev).p2pBytes, 2 * MiB, "both directions went P2P");
  strictEqual(gpuExportStats(rig.gpu).vramMaps, 1);
  deepStrictEqual(world.check(), []);
});

Deno.test("scenario: across the root complex on an AMD host (THRU_HOST_BRIDGE)", async () => {
  const world = new Kernel();
  const rig = buildRig(world);
  const r = await world.runTask("app", () => writeThenRead(rig, rig.nic2!, 1 * MiB));
  deepStrictEqual(r.statuses, ["SUCCESS", "SUCCESS"]);
  strictEqual(r.mapType, "THRU_HOST_BRIDGE");
  strictEqual(r.placement, "VRAM", "AMD Zen root complexes forward P2P: VRAM stays");
  ok(r.gpuSumOk && r.readBackOk);
  strictEqual(deviceDmaStats(rig.nic2!.pdev).p2pBytes, 0, "no switch shortcut: via the RC");
  deepStrictEqual(world.check(), []);
});

Deno.test("scenario: Intel host not in the whitelist falls back to system memory", async () => {
  const world = new Kernel();
  const rig = buildRig(world, { machine: "intel-unlisted" });
  const r = await world.runTask("app", () => writeThenRead(rig, rig.nic, 1 * MiB));
  deepStrictEqual(r.statuses, ["SUCCESS", "SUCCESS"]);
  strictEqual(r.mapType, mapTypeName(PciP2pdmaMapType.NONE), "CPU pages, not P2P");
  strictEqual(r.placement, "GTT", "amdgpu migrated the object to system memory first");
  ok(r.gpuSumOk && r.readBackOk, "bytes are right wherever the object lives");
  strictEqual(gpuExportStats(rig.gpu).vramMaps, 0);
  ok(gpuExportStats(rig.gpu).gttMaps >= 1);
  deepStrictEqual(world.check(), []);
});

Deno.test("scenario: eviction in the middle of an RDMA stream", async (t) => {
  await t.step("move_notify zaps the MTT, the next access re-faults, no byte lost", async () => {
    const sc = mlx5EvictionRaceScenario({ wrs: 16, wrBytes: 64 << 10 });
    const world = new Kernel(sc.worldOptions);
    const s = sc.build(world);
    await world.run();
    deepStrictEqual(sc.check!(world, s), []);
    deepStrictEqual(world.check(), []);
    const mr = s.target!.mr;
    strictEqual(s.rig!.gpu.stats.evictions, 1);
    strictEqual(s.rig!.gpu.stats.moveNotifies, 1);
    ok(s.rig!.nic.stats.zaps >= 1, "invalidate zapped the MTT");
    ok(mr.faults >= 1, "the stream faulted the new location in");
    strictEqual(s.target!.bo.placement, "GTT");
    strictEqual(s.rig!.nic.staleDma.length, 0);
  });
  await t.step(
    "RDMA READ stream: reads after the move wait for the copy (KERNEL fence)",
    async () => {
      const sc = mlx5EvictionRaceScenario({ wrs: 16, wrBytes: 64 << 10, opcode: "RDMA_READ" });
      const world = new Kernel(sc.worldOptions);
      const s = sc.build(world);
      await world.run();
      deepStrictEqual(sc.check!(world, s), [], "every byte read is the GPU's");
      deepStrictEqual(world.check(), []);
      const umem = s.target!.mr.umem as IbUmemDmabuf;
      ok(s.target!.mr.faults >= 1);
      ok(umem.fenceWaitNs > 0, "the re-fault slept until the eviction copy signalled");
      strictEqual(s.target!.bo.placement, "GTT");
    },
  );
  await t.step("random schedules keep every invariant", async () => {
    let faulted = 0;
    for (const seed of [2, 3, 4, 5, 6, 7]) {
      const sc = mlx5EvictionRaceScenario({ wrs: 8, wrBytes: 16 << 10 });
      const world = new Kernel({ ...sc.worldOptions, policy: new RandomPolicy(seed) });
      const s = sc.build(world);
      await world.run();
      deepStrictEqual(sc.check!(world, s), [], `seed ${seed}`);
      deepStrictEqual(world.check(), [], `seed ${seed}`);
      faulted += s.target!.mr.faults;
    }
    ok(faulted > 0, "some schedules evicted while the stream ran");
  });
  await t.step("negative control: an importer that keeps its MTT is caught", async () => {
    const sc = mlx5EvictionRaceScenario({ wrs: 16, wrBytes: 64 << 10, brokenImporter: true });
    const world = new Kernel({ ...sc.worldOptions, strict: false });
    const s = sc.build(world);
    await world.run();
    const found = world.check();
    ok(
      found.some((m) => /no longer backs its buffer/.test(m)),
      "DMA into VRAM the object left is reported",
    );
    ok(
      found.some((m) => /MTT valid but the umem is unmapped/.test(m)),
      "the stale MTT is reported",
    );
    ok(s.rig!.nic.staleDma.length > 0);
    ok(
      sc.check!(world, s).some((m) => /checksum/.test(m)),
      "and the bytes written after the move are lost",
    );
  });
});

Deno.test("revocable pinned MR: error completions after revoke", async () => {
  const world = new Kernel();
  const rig = buildRig(world);
  const out = await world.runTask("app", async () => {
    const bo = rig.gpu.boCreate(256 << 10);
    await rig.gpu.fill(bo, 1);
    const t = await registerVramMr(rig, rig.nic, bo, { mode: "pinned-revocable" });
    strictEqual(bo.pinCount, 1);
    const src = await registerUserMr(rig, rig.nic, 64 << 10, (i) => i & 0xff, t.mr.pd);
    const { qa } = connect(rig.nic, t.mr.pd, rig.nic, t.mr.pd);
    const wr = (id: number) => ({
      wrId: id,
      opcode: "RDMA_WRITE" as const,
      sge: { mr: src, addr: src.iova, length: 64 << 10 },
      remoteAddr: t.mr.iova,
      rkey: t.mr.rkey,
    });
    qa.postSend(wr(1));
    await qa.cq.waitTotal(1);
    // the exporter takes the memory away (the v7.1 invalidate on a pinned-revocable importer)
    const { dmaBufInvalidateMappings } = await import("@dmalab/dma-buf");
    const buf = (t.mr.umem as IbUmemDmabuf).dmabuf;
    await buf.resv.lock(null);
    dmaBufInvalidateMappings(buf);
    buf.resv.unlock();
    qa.postSend(wr(2));
    qa.postSend(wr(3));
    await qa.cq.waitTotal(3);
    const st = qa.cq.poll().map((w) => w.status);
    const pinAfter = bo.pinCount;
    await mlx5IbDeregMr(t.mr);
    return { st, pinAfter, revoked: (t.mr.umem as IbUmemDmabuf).revoked };
  });
  deepStrictEqual(out.st, ["SUCCESS", "REM_ACCESS_ERR", "WR_FLUSH_ERR"]);
  strictEqual(out.revoked, true);
  strictEqual(out.pinAfter, 0, "revoke unpinned the object");
  deepStrictEqual(world.check(), []);
});
