/**
 * @dmalab/vfio: a vfio-pci device as of v6.19 (revoke as of v7.1): BAR
 * decoding gated by the command register and power state, emulated config
 * space, region info and read/write, BAR mmap as `VM_PFNMAP` with the
 * vfio fault handler, zaps through the device's address_space, FLR /
 * `VFIO_DEVICE_RESET` / hot reset / D3hot, and `VFIO_DEVICE_FEATURE_DMA_BUF`
 * export with revoke.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { VfioPciCoreDevice, VFIO_REGION_INFO_FLAG_MMAP } from "@dmalab/vfio";
 * const world = new Kernel();
 * const vdev = new VfioPciCoreDevice(world, defaultMachine(world).gpu);
 * (vdev.getRegionInfo(1).flags & VFIO_REGION_INFO_FLAG_MMAP) !== 0; // true: 128 GiB BAR 1
 * ```
 *
 * @module
 */
export * from "./constants.ts";
export * from "./device.ts";
export * from "./dma_buf.ts";
