// GPU model benchmarks: eviction cycles and job execution next to raw baselines.
// Run: tools/bin/deno bench -A packages/gpu/gpu_bench.ts
import { Kernel } from "@dmalab/kernel";
import { defaultMachine } from "@dmalab/pci-p2p";
import { fnv1a, GPU_DOMAIN_GTT, GPU_DOMAIN_VRAM, gpuProbe } from "./mod.ts";

/** Moves a 4 MiB object VRAM -> GTT -> VRAM `cycles` times; returns modelled ns. */
async function moveCycles(cycles: number): Promise<number> {
  const world = new Kernel({ lockdep: false });
  const gpu = gpuProbe(defaultMachine(world).gpu, { vramSize: 16 << 20 });
  const bo = gpu.boCreate(4 << 20);
  return await world.runTask("mover", async () => {
    await gpu.fill(bo, 0x5a);
    const t0 = world.sched.now;
    for (let c = 0; c < cycles; c++) {
      await bo.resv.lock(null);
      await gpu.validate(bo, c % 2 === 0 ? GPU_DOMAIN_GTT : GPU_DOMAIN_VRAM);
      bo.resv.unlock();
    }
    const j = await gpu.checksum(bo);
    await j.fence.wait(false);
    return world.sched.now - t0;
  });
}

const ns = await moveCycles(20);
console.log(
  `modelled: 20 moves of 4 MiB VRAM<->GTT in ${(ns / 1000).toFixed(1)} µs virtual (${
    (20 * 4 * 1.048576e6 / ns).toFixed(1)
  } GB/s at the GPU's PCIe link)`,
);

Deno.bench({
  name: "20 moves of a 4 MiB object VRAM<->GTT (copy jobs, fences, move_notify path)",
  group: "move",
  async fn() {
    await moveCycles(20);
  },
});

Deno.bench({
  name: "raw baseline: 20 copies of 4 MiB between Uint8Arrays",
  group: "move",
  baseline: true,
  fn() {
    const a = new Uint8Array(4 << 20).fill(0x5a);
    const b = new Uint8Array(4 << 20);
    for (let c = 0; c < 20; c++) (c % 2 ? a : b).set(c % 2 ? b : a);
  },
});

Deno.bench({
  name: "fill + checksum job of 4 MiB in VRAM",
  group: "jobs",
  async fn() {
    const world = new Kernel({ lockdep: false });
    const gpu = gpuProbe(defaultMachine(world).gpu, { vramSize: 16 << 20 });
    const bo = gpu.boCreate(4 << 20);
    await world.runTask("jobs", async () => {
      await gpu.fill(bo, 7);
      const j = await gpu.checksum(bo);
      await j.fence.wait(false);
    });
  },
});

Deno.bench({
  name: "raw baseline: fill + FNV-1a of 4 MiB",
  group: "jobs",
  baseline: true,
  fn() {
    fnv1a(new Uint8Array(4 << 20).fill(7));
  },
});
