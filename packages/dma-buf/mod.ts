/**
 * @dmalab/dma-buf: Linux's dma-buf on the deterministic dmalab scheduler.
 * Fences and reservations: `dma_fence` (with array, chain, unwrap and
 * merge), the signalling annotations wired into lockdep, and `dma_resv`.
 * The buffer itself: export, fds, static and dynamic attachments, pin and
 * map with the locking convention enforced, `move_notify` /
 * `invalidate_mappings`, the v7.1 revoke, vmap, CPU access, mmap and the
 * ioctl uapi with sync_file; sg_tables and `dma_buf_phys_vec_to_sgt`; the
 * system heap, udmabuf and virtio_dma_buf exporters; and the proposed fifth
 * access mechanism in its three variants (`world.variant("dma-buf.pfn", ...)`:
 * `rfc-get-pfn`, `pfn-attachment`, `pal`).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { DmaFence, dmaFenceContextAlloc } from "@dmalab/dma-buf";
 *
 * const world = new Kernel();
 * const ops = { getDriverName: () => "gpu", getTimelineName: () => "gfx" };
 * const fence = new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1);
 * world.spawn("irq", async () => {
 *   await world.sched.msleep(5);
 *   fence.signal();
 * });
 * world.spawn("waiter", async () => {
 *   await fence.wait(false); // 0 once signalled
 * });
 * await world.run();
 * fence.timestamp() > 0; // true: virtual time of the signal
 * ```
 *
 * @module
 */
export * from "./fence/fence_lock.ts";
export * from "./fence/signalling.ts";
export * from "./fence/dma_fence.ts";
export * from "./fence/dma_fence_array.ts";
export * from "./fence/dma_fence_chain.ts";
export * from "./fence/dma_fence_unwrap.ts";
export * from "./resv/ww_class.ts";
export * from "./resv/resv_lockdep.ts";
export * from "./resv/dma_resv.ts";
export * from "./sg/scatterlist.ts";
export * from "./sg/wrap.ts";
export * from "./sg/dma_map.ts";
export * from "./buf/ops.ts";
export * from "./buf/iosys_map.ts";
export * from "./buf/locking.ts";
export * from "./buf/dma_buf.ts";
export * from "./buf/attachment.ts";
export * from "./buf/cpu_access.ts";
export * from "./buf/sync_file.ts";
export * from "./buf/uapi.ts";
export * from "./buf/debugfs.ts";
export * from "./heap/dma_heap.ts";
export * from "./heap/system_heap.ts";
export * from "./pfn/types.ts";
export * from "./buf/revoke.ts";
export * from "./udmabuf/udmabuf.ts";
export * from "./virtio/virtio_dma_buf.ts";
export * from "./sg/phys_vec.ts";
export * from "./pfn/get_pfn.ts";
export * from "./pfn/pfn_attachment.ts";
export * from "./pfn/pal.ts";
export * from "./pfn/mechanisms.ts";
export * from "./scenarios.ts";
