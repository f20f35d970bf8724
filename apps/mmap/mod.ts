/**
 * App 2, userspace mmap: a process mmaps a system-heap dma-buf, brackets
 * CPU access with `DMA_BUF_IOCTL_SYNC`, and a NIC reads what it wrote (and
 * writes back under a fence). See `app.ts` for the variants.
 *
 * @example
 * ```ts
 * import { runMmap } from "@dmalab/app-mmap";
 * const { result } = await runMmap({ variant: "bounce-nosync" });
 * result.expectedFindings.length; // 2: the device and the CPU saw stale bytes
 * ```
 *
 * @module
 */
export * from "./app.ts";
