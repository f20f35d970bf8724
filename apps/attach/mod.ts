/**
 * App 3, `dma_buf_attach`: an mlx5-like NIC imports GPU VRAM as a dynamic
 * (ODP) dma-buf MR and streams RDMA WRITEs into it while the GPU evicts it
 * (`move_notify`, MTT zap, re-fault into system memory).
 *
 * @example
 * ```ts
 * import { runAttach } from "@dmalab/app-attach";
 * const { result } = await runAttach({ variant: "iommu" });
 * result.ats; // "on"
 * ```
 *
 * @module
 */
export * from "./app.ts";
