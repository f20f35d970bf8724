/**
 * App 4, driver-private sharing: a virtio-gpu-like exporter and a
 * virtio-video-like importer share a buffer by UUID through the VMM
 * (`virtio_dma_buf`).
 *
 * @example
 * ```ts
 * import { runVirtio } from "@dmalab/app-virtio";
 * const { result } = await runVirtio();
 * result.bytesVerified; // 65536
 * ```
 *
 * @module
 */
export * from "./drivers.ts";
export * from "./app.ts";
