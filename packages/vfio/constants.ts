/**
 * DOC: vfio uAPI and PCI config constants
 *
 * Values from include/uapi/linux/vfio.h and include/uapi/linux/pci_regs.h
 * that the model uses.
 *
 * Locking: plain constants.
 *
 * @module
 */

/** `VFIO_PCI_BAR0_REGION_INDEX` .. BAR5 are 0..5. */
export const VFIO_PCI_BAR0_REGION_INDEX = 0;
/** `VFIO_PCI_BAR5_REGION_INDEX`. */
export const VFIO_PCI_BAR5_REGION_INDEX = 5;
/** `VFIO_PCI_ROM_REGION_INDEX`. */
export const VFIO_PCI_ROM_REGION_INDEX = 6;
/** `VFIO_PCI_CONFIG_REGION_INDEX`. */
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
/** `VFIO_PCI_VGA_REGION_INDEX`. */
export const VFIO_PCI_VGA_REGION_INDEX = 8;
/** `VFIO_PCI_NUM_REGIONS`. */
export const VFIO_PCI_NUM_REGIONS = 9;
/** `VFIO_PCI_NUM_IRQS`. */
export const VFIO_PCI_NUM_IRQS = 5;

/** `VFIO_PCI_OFFSET_SHIFT`: region index in the top bits of the file offset. */
export const VFIO_PCI_OFFSET_SHIFT = 40;

/** `VFIO_PCI_INDEX_TO_OFFSET(index)`. */
export function vfioPciIndexToOffset(index: number): number {
  return index * 2 ** VFIO_PCI_OFFSET_SHIFT;
}

/** `VFIO_PCI_OFFSET_TO_INDEX(off)`. */
export function vfioPciOffsetToIndex(off: number): number {
  return Math.floor(off / 2 ** VFIO_PCI_OFFSET_SHIFT);
}

/** `VFIO_REGION_INFO_FLAG_READ`. */
export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
/** `VFIO_REGION_INFO_FLAG_WRITE`. */
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
/** `VFIO_REGION_INFO_FLAG_MMAP`. */
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;
/** `VFIO_REGION_INFO_FLAG_CAPS`. */
export const VFIO_REGION_INFO_FLAG_CAPS = 1 << 3;

/** `VFIO_DEVICE_FLAGS_RESET`. */
export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
/** `VFIO_DEVICE_FLAGS_PCI`. */
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;

/** `VFIO_DEVICE_FEATURE_GET`. */
export const VFIO_DEVICE_FEATURE_GET = 1 << 16;
/** `VFIO_DEVICE_FEATURE_SET`. */
export const VFIO_DEVICE_FEATURE_SET = 1 << 17;
/** `VFIO_DEVICE_FEATURE_PROBE`. */
export const VFIO_DEVICE_FEATURE_PROBE = 1 << 18;
/** `VFIO_DEVICE_FEATURE_DMA_BUF` (v6.19). */
export const VFIO_DEVICE_FEATURE_DMA_BUF = 11;

/** `PCI_VENDOR_ID`. */
export const PCI_VENDOR_ID = 0x00;
/** `PCI_DEVICE_ID`. */
export const PCI_DEVICE_ID = 0x02;
/** `PCI_COMMAND`. */
export const PCI_COMMAND = 0x04;
/** `PCI_STATUS`. */
export const PCI_STATUS = 0x06;
/** `PCI_CLASS_REVISION`. */
export const PCI_CLASS_REVISION = 0x08;
/** `PCI_BASE_ADDRESS_0`. */
export const PCI_BASE_ADDRESS_0 = 0x10;
/** `PCI_CAPABILITY_LIST`. */
export const PCI_CAPABILITY_LIST = 0x34;
/** `PCI_COMMAND_IO`. */
export const PCI_COMMAND_IO = 0x1;
/** `PCI_COMMAND_MEMORY`. */
export const PCI_COMMAND_MEMORY = 0x2;
/** `PCI_COMMAND_MASTER`. */
export const PCI_COMMAND_MASTER = 0x4;
/** `PCI_COMMAND_INTX_DISABLE`. */
export const PCI_COMMAND_INTX_DISABLE = 0x400;
/** `PCI_STATUS_CAP_LIST`. */
export const PCI_STATUS_CAP_LIST = 0x10;

/** `PCI_CAP_ID_PM`. */
export const PCI_CAP_ID_PM = 0x01;
/** `PCI_CAP_ID_EXP`. */
export const PCI_CAP_ID_EXP = 0x10;
/** Offset of the PM capability in the model's config space. */
export const PM_CAP_OFFSET = 0x40;
/** `PCI_PM_CTRL` (offset inside the PM capability). */
export const PCI_PM_CTRL = 4;
/** `PCI_PM_CTRL_STATE_MASK`. */
export const PCI_PM_CTRL_STATE_MASK = 0x3;
/** Offset of the PCIe capability in the model's config space. */
export const EXP_CAP_OFFSET = 0x50;
/** `PCI_EXP_DEVCAP`. */
export const PCI_EXP_DEVCAP = 4;
/** `PCI_EXP_DEVCAP_FLR`. */
export const PCI_EXP_DEVCAP_FLR = 0x10000000;
/** `PCI_EXP_DEVCTL`. */
export const PCI_EXP_DEVCTL = 8;
/** `PCI_EXP_DEVCTL_BCR_FLR`. */
export const PCI_EXP_DEVCTL_BCR_FLR = 0x8000;

/** `pci_power_t`: D0 .. D3hot (D3cold is 4). */
export type PciPowerState = 0 | 1 | 2 | 3;
/** `PCI_D0`. */
export const PCI_D0: PciPowerState = 0;
/** `PCI_D3hot`. */
export const PCI_D3HOT: PciPowerState = 3;
