/**
 * App 5, the pfn attachment: a vfio-pci BAR exported as a dma-buf,
 * imported by iommufd (NIC DMA) and KVM (guest access), revoked by a
 * function reset; run with each KVM import path and pfn variant.
 *
 * @example
 * ```ts
 * import { runPfn } from "@dmalab/app-pfn";
 * const { result } = await runPfn({ variant: "A" });
 * result.bytesVerified; // 8192
 * ```
 *
 * @module
 */
export * from "./app.ts";
