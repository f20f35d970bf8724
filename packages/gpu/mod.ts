/**
 * @dmalab/gpu: a VRAM-owning PCI GPU (amdgpu/TTM-like) for dmalab worlds.
 * VRAM behind a large BAR with a buddy allocator, buffer objects that move
 * between VRAM and system memory (eviction with a copy job whose fence goes
 * into the reservation object as KERNEL usage, `dma_buf_move_notify` to
 * dynamic importers before the move), a dynamic dma-buf exporter that maps
 * VRAM peer-to-peer when the importer can reach it and migrates to system
 * memory otherwise, and a command stream of fill, copy and checksum jobs
 * that really read and write buffer bytes.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { gpuProbe } from "@dmalab/gpu";
 * const world = new Kernel();
 * const gpu = gpuProbe(defaultMachine(world).gpu, { vramSize: 16 << 20 });
 * const bo = gpu.boCreate(1 << 20);
 * const sum = await world.runTask("app", async () => {
 *   await gpu.fill(bo, 0xab);
 *   const job = await gpu.checksum(bo);
 *   await job.fence.wait(false);
 *   return job.result;
 * });
 * bo.placement; // "VRAM"
 * typeof sum; // "number"
 * ```
 *
 * @module
 */
export * from "./vram_mgr.ts";
export * from "./ring.ts";
export * from "./bo.ts";
export * from "./device.ts";
export * from "./dma_buf.ts";
