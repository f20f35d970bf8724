/**
 * @dmalab/dma-api: the Linux DMA mapping API over dma-direct (with swiotlb
 * bounce buffering through real memory) and dma-iommu (IOVA allocator with
 * range caches, strict and lazy unmap), the IOVA-based two-step API, P2P
 * map states, DMA-API debug checks, and devices that move bytes through
 * their mappings.
 *
 * @example
 * ```ts
 * import { dmaBitMask, Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { iommuSetup } from "@dmalab/iommu";
 * import { deviceDmaRead, dmaMapPhys, dmaMappingError } from "@dmalab/dma-api";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * iommuSetup(world);
 * m.nic.setMaskAndCoherent(dmaBitMask(64));
 * const page = world.mem.allocPages(0)!;
 * world.mem.write(page.pfn * 4096, new TextEncoder().encode("hello"));
 * const addr = dmaMapPhys(m.nic, page.pfn * 4096, 4096, "DMA_TO_DEVICE");
 * dmaMappingError(m.nic, addr); // false
 * new TextDecoder().decode(deviceDmaRead(m.nic, addr, 5)); // "hello"
 * ```
 *
 * @module
 */
export * from "./attrs.ts";
export * from "./state.ts";
export * from "./swiotlb.ts";
export * from "./iova.ts";
export * from "./debug.ts";
export * from "./sg.ts";
export * from "./p2p.ts";
export * from "./direct.ts";
export * from "./dma_iommu.ts";
export * from "./mapping.ts";
export * from "./iova_api.ts";
export * from "./device_dma.ts";
