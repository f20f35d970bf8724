// RDMA WRITE throughput of the model per path, next to the PCIe link limit,
// and eviction + re-fault cycles. Run: tools/bin/deno bench -A packages/mlx5/rdma_bench.ts
import { Kernel } from "@dmalab/kernel";
import { GPU_DOMAIN_GTT, GPU_DOMAIN_VRAM } from "@dmalab/gpu";
import {
  buildRig,
  connect,
  formatAtsTable,
  measureAtsPaths,
  registerUserMr,
  registerVramMr,
} from "./scenarios.ts";

// modelled figures, printed once (virtual time, deterministic)
const noIommu = await measureAtsPaths(
  "mainline",
  16 << 20,
  ["vram-switch", "vram-other-hb", "vram-intel-fallback", "cpu-dmabuf", "user"],
  false,
);
console.log("\nmodelled RDMA WRITE, 16 MiB in 64 KiB requests, IOMMU off:");
console.log(formatAtsTable(noIommu));

for (
  const kind of [
    "vram-switch",
    "vram-other-hb",
    "vram-intel-fallback",
    "cpu-dmabuf",
    "user",
  ] as const
) {
  Deno.bench({
    name: `RDMA WRITE 4 MiB (64 x 64 KiB) into ${kind}, IOMMU off`,
    group: "rdma-write",
    baseline: kind === "user",
    async fn() {
      await measureAtsPaths("mainline", 4 << 20, [kind], false);
    },
  });
}

/** Evicts a 1 MiB exported object to GTT and back while one 4 KiB write re-faults it each time. */
async function evictionCycles(cycles: number): Promise<{ ns: number; faults: number }> {
  const world = new Kernel({ lockdep: false });
  const rig = buildRig(world, { vramSize: 16 << 20 });
  return await world.runTask("cycles", async () => {
    const bo = rig.gpu.boCreate(1 << 20);
    await rig.gpu.fill(bo, 0);
    const t = await registerVramMr(rig, rig.nic, bo);
    const src = await registerUserMr(rig, rig.nic, 4096, (i) => i & 0xff, t.mr.pd);
    const { qa } = connect(rig.nic, t.mr.pd, rig.nic, t.mr.pd);
    const t0 = world.sched.now;
    for (let c = 0; c < cycles; c++) {
      await bo.resv.lock(null);
      await rig.gpu.validate(bo, c % 2 === 0 ? GPU_DOMAIN_GTT : GPU_DOMAIN_VRAM);
      bo.resv.unlock();
      qa.postSend({
        wrId: c,
        opcode: "RDMA_WRITE",
        sge: { mr: src, addr: src.iova, length: 4096 },
        remoteAddr: t.mr.iova + (c % 256) * 4096,
        rkey: t.mr.rkey,
      });
      await qa.cq.waitTotal(c + 1);
    }
    return { ns: world.sched.now - t0, faults: t.mr.faults };
  });
}

const ev = await evictionCycles(200);
console.log(
  `\nmodelled: 200 move + re-fault cycles of a 1 MiB object in ${
    (ev.ns / 1000).toFixed(1)
  } µs virtual (${(200 / (ev.ns / 1e9)).toFixed(0)} cycles/s), ${ev.faults} faults`,
);

Deno.bench({
  name: "eviction + re-fault cycle (1 MiB object, 4 KiB write), x50",
  group: "evict",
  async fn() {
    await evictionCycles(50);
  },
});
