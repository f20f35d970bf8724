/**
 * DOC: a vfio-pci device (drivers/vfio/pci/vfio_pci_core.c, vfio_pci_config.c)
 *
 * {@linkcode VfioPciCoreDevice} is a PCI endpoint bound to vfio-pci. It owns:
 *
 * - the BARs' MMIO decoding: each memory BAR is registered in the world's
 *   physical address space with handlers that answer only while the
 *   function decodes memory (hardware `PCI_COMMAND_MEMORY` set, power
 *   state D0, not in reset); otherwise reads complete with all ones and
 *   writes are dropped (a master abort), as real hardware does. The bytes
 *   behind a BAR are the device's own memory (VRAM-like, sparse) and survive
 *   resets;
 * - an emulated config space (`vconfig`): the command register (IO,
 *   MEMORY, MASTER, INTX_DISABLE writable), a PM capability whose PMCSR
 *   moves the function between D0 and D3hot, and a PCIe capability with
 *   FLR (`PCI_EXP_DEVCTL_BCR_FLR`);
 * - region info per index (`VFIO_DEVICE_GET_REGION_INFO`), region
 *   read/write (`vfio_pci_bar_rw`: -EIO while memory is disabled), and BAR
 *   mmap as `VM_IO | VM_PFNMAP` with the `vfio_pci_mmap_huge_fault`
 *   handler, which maps pfns only while memory is enabled (SIGBUS
 *   otherwise) and uses 2 MiB entries where the BAR allows;
 * - the device inode's address_space, through which every user mapping of
 *   every BAR is zapped (`vfio_pci_zap_bars` = `unmap_mapping_range`)
 *   when memory is disabled, on D3hot and around resets;
 * - the list of exported dma-bufs, revoked and unrevoked under
 *   `memory_lock` held for write in the same places
 *   (`vfio_pci_dma_buf_move`), see dma_buf.ts.
 *
 * The v6.19 call sites are followed: command write clearing MEMORY =
 * zap + lock + revoke, then unrevoke when memory is enabled again; power
 * state >= D3hot likewise; FLR through config space, `VFIO_DEVICE_RESET`
 * and hot reset revoke, reset, and unrevoke when memory is enabled
 * (`__vfio_pci_memory_enabled`: the *virtual* command register and the
 * power state).
 *
 * Locking: `memory_lock` (rwsem) protects memory enable state, the BAR
 * mappings and the dma-buf list; the fault handler takes it for read under
 * mmap_lock; config writes, resets and power changes take it for write.
 *
 * @module
 */
import {
  AddressSpace,
  type Kernel,
  KernelError,
  type MmioRegion,
  pgprotNoncached,
  PMD_ORDER,
  RwSemaphore,
  SparseStore,
  VM_DONTDUMP,
  VM_DONTEXPAND,
  VM_FAULT_FALLBACK,
  VM_FAULT_SIGBUS,
  VM_IO,
  VM_PFNMAP,
  VM_SHARED,
  type Vma,
  type VmFault,
  type VmFile,
  vmfInsertPfn,
  vmfInsertPfnPmd,
} from "@dmalab/kernel";
import { type PciDev, pcimP2pdmaInit } from "@dmalab/pci-p2p";
import {
  EXP_CAP_OFFSET,
  PCI_BASE_ADDRESS_0,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_PM,
  PCI_CAPABILITY_LIST,
  PCI_CLASS_REVISION,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_D3HOT,
  PCI_DEVICE_ID,
  PCI_EXP_DEVCAP,
  PCI_EXP_DEVCAP_FLR,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_VENDOR_ID,
  type PciPowerState,
  PM_CAP_OFFSET,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  vfioPciIndexToOffset,
  vfioPciOffsetToIndex,
} from "./constants.ts";

const PAGE = 4096;
const PMD_PAGES = 1 << 9;

/** `struct vfio_device_info`. */
export interface VfioDeviceInfo {
  /** `VFIO_DEVICE_FLAGS_*`. */
  readonly flags: number;
  /** `num_regions`. */
  readonly numRegions: number;
  /** `num_irqs`. */
  readonly numIrqs: number;
}

/** `struct vfio_region_info`. */
export interface VfioRegionInfo {
  /** Region index. */
  readonly index: number;
  /** `VFIO_REGION_INFO_FLAG_*`. */
  readonly flags: number;
  /** Bytes. */
  readonly size: number;
  /** File offset of the region (`VFIO_PCI_INDEX_TO_OFFSET`). */
  readonly offset: number;
}

/** A BAR as vfio sees it. */
export interface VfioBar {
  /** BAR index. */
  readonly index: number;
  /** CPU physical start. */
  readonly start: number;
  /** Length. */
  readonly size: number;
  /** The MMIO region decoding it (null when someone else registered it). */
  readonly region: MmioRegion | null;
  /** The device memory behind it. */
  readonly store: SparseStore;
}

/** An exported dma-buf as the device's list keeps it (see dma_buf.ts). */
export interface VfioDmaBufLink {
  /** True while revoked. */
  readonly revoked: boolean;
  /** `vfio_pci_dma_buf_move` for one buffer; memory_lock held for write. */
  move(revoked: boolean): Promise<void>;
  /** `vfio_pci_dma_buf_cleanup` for one buffer: permanent revoke. */
  cleanup(): Promise<void>;
}

/** Options for {@linkcode VfioPciCoreDevice}. */
export interface VfioPciOptions {
  /** The function supports FLR (`PCI_EXP_DEVCAP_FLR`, `reset_works`). Default true. */
  flr?: boolean;
  /** Virtual time an FLR takes, ms (`pcie_flr` waits 100 ms). Default 100. */
  flrMs?: number;
}

/** Counters of a device. */
export interface VfioPciStats {
  /** Accesses the BARs answered with all ones / dropped (no decode). */
  masterAborts: number;
  /** `vfio_pci_zap_bars` calls. */
  zaps: number;
  /** Function resets done. */
  resets: number;
  /** Mmap faults that mapped (4 KiB and 2 MiB). */
  faults: number;
  /** Mmap faults that raised SIGBUS. */
  sigbus: number;
}

/**
 * A vfio-pci device.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { VfioPciCoreDevice, PCI_COMMAND, PCI_COMMAND_MEMORY } from "@dmalab/vfio";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * const vdev = new VfioPciCoreDevice(world, m.nvme);
 * await world.runTask("qemu", async () => {
 *   await vdev.open();
 *   await vdev.configWrite(PCI_COMMAND, 2, 0); // memory decode off: BAR reads -EIO
 *   await vdev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
 * });
 * vdev.memoryEnabled; // true
 * ```
 */
export class VfioPciCoreDevice {
  /** The world. */
  readonly world: Kernel;
  /** The PCI function. */
  readonly pdev: PciDev;
  /** `vdev->memory_lock`. */
  readonly memoryLock: RwSemaphore;
  /** The device inode's mapping: every BAR mmap is linked here. */
  readonly mapping: AddressSpace;
  /** Emulated config space (`vdev->vconfig`). */
  readonly vconfig: Uint8Array = new Uint8Array(256);
  /** BARs by index (null: not a memory BAR or unassigned). */
  readonly bars: (VfioBar | null)[] = [];
  /** Exported dma-bufs (`vdev->dmabufs`). */
  readonly dmabufs: Set<VfioDmaBufLink> = new Set();
  /** Counters. */
  readonly stats: VfioPciStats = { masterAborts: 0, zaps: 0, resets: 0, faults: 0, sigbus: 0 };
  /** `reset_works`. */
  readonly resetWorks: boolean;
  /** Hardware command register. */
  hwCommand = 0;
  /** `pdev->current_state`. */
  powerState: PciPowerState = PCI_D0;
  /** A reset is in progress (the function does not decode). */
  resetting = false;
  /** `open_count > 0`. */
  opened = false;
  /** The file user space mmaps (`vfio_device_fops`). */
  readonly file: VmFile;
  readonly #flrMs: number;

  /** `vfio_pci_core_register_device` for `pdev`; registers BAR decoding. */
  constructor(world: Kernel, pdev: PciDev, options: VfioPciOptions = {}) {
    this.world = world;
    this.pdev = pdev;
    this.resetWorks = options.flr ?? true;
    this.#flrMs = options.flrMs ?? 100;
    this.memoryLock = new RwSemaphore(world, "&vdev->memory_lock");
    this.mapping = new AddressSpace(world, `vfio-device:${pdev.name}`);
    this.mapping.host = this;
    for (let i = 0; i < 6; i++) {
      const b = pdev.bars[i];
      if (!b || !b.mem || b.start === null) {
        this.bars.push(null);
        continue;
      }
      const start = Number(b.start);
      const size = Number(b.size);
      const store = new SparseStore();
      let region: MmioRegion | null = null;
      const claimed = world.mem.mmioAt(start);
      if (claimed && claimed === b.mmio && claimed.ops === null) {
        // The PCI core's claim (pci-p2p, plain backing): vfio installs its own
        // BAR decoding. Kept when ZONE_DEVICE pages cover it (EBUSY).
        try {
          world.mem.unregisterMmio(claimed);
          b.mmio = null;
        } catch (e) {
          if (!(e instanceof KernelError) || e.code !== "EBUSY") throw e;
        }
      }
      if (!world.mem.mmioAt(start)) {
        try {
          region = world.mem.registerMmio({
            name: `${pdev.name} BAR ${i}`,
            start,
            size,
            owner: pdev,
            ops: {
              read: (off, dst) => this.#barRead(store, off, dst),
              write: (off, src) => this.#barWrite(store, off, src),
            },
          });
        } catch (e) {
          // The world's RAM layout claims the address (a PCI window placed
          // over RAM): vfio cannot decode this BAR; it is reported, not mapped.
          if (!(e instanceof KernelError) || e.code !== "EBUSY") throw e;
          world.dmesg.printk("warn", `vfio-pci ${pdev.name}: BAR ${i}: ${e.message}`);
        }
      }
      this.bars.push({ index: i, start, size, region, store });
    }
    this.#initConfig();
    this.file = {
      mapping: this.mapping,
      name: `vfio-device:${pdev.name}`,
      mmap: (vma) => this.#mmap(vma),
    };
  }

  #initConfig(): void {
    const v = new DataView(this.vconfig.buffer);
    v.setUint16(PCI_VENDOR_ID, this.pdev.vendor, true);
    v.setUint16(PCI_DEVICE_ID, this.pdev.deviceId, true);
    v.setUint32(PCI_CLASS_REVISION, this.pdev.classCode << 8, true);
    v.setUint16(PCI_STATUS, PCI_STATUS_CAP_LIST, true);
    for (let i = 0; i < 6; i++) {
      const b = this.pdev.bars[i];
      if (!b || b.start === null) continue;
      const lo = Number(b.start % 2n ** 32n) | (b.is64 ? 0x4 : 0) | (b.prefetch ? 0x8 : 0);
      v.setUint32(PCI_BASE_ADDRESS_0 + 4 * i, lo >>> 0, true);
      if (b.is64 && i < 5) {
        v.setUint32(PCI_BASE_ADDRESS_0 + 4 * (i + 1), Number(b.start >> 32n), true);
      }
      if (b.is64) i++;
    }
    this.vconfig[PCI_CAPABILITY_LIST] = PM_CAP_OFFSET;
    this.vconfig[PM_CAP_OFFSET] = PCI_CAP_ID_PM;
    this.vconfig[PM_CAP_OFFSET + 1] = EXP_CAP_OFFSET;
    this.vconfig[EXP_CAP_OFFSET] = PCI_CAP_ID_EXP;
    this.vconfig[EXP_CAP_OFFSET + 1] = 0;
    v.setUint32(EXP_CAP_OFFSET + PCI_EXP_DEVCAP, this.resetWorks ? PCI_EXP_DEVCAP_FLR : 0, true);
  }

  /** True while the function decodes its memory BARs (hardware view). */
  get decoding(): boolean {
    return !this.resetting && this.powerState === PCI_D0 &&
      (this.hwCommand & PCI_COMMAND_MEMORY) !== 0;
  }

  #barRead(store: SparseStore, off: number, dst: Uint8Array): void {
    if (!this.decoding) {
      this.stats.masterAborts++;
      dst.fill(0xff);
      return;
    }
    copyStore(store, off, dst, false);
  }

  #barWrite(store: SparseStore, off: number, src: Uint8Array): void {
    if (!this.decoding) {
      this.stats.masterAborts++;
      return;
    }
    copyStore(store, off, src, true);
  }

  /** The virtual command register. */
  get command(): number {
    return this.vconfig[PCI_COMMAND]! | (this.vconfig[PCI_COMMAND + 1]! << 8);
  }

  /** `__vfio_pci_memory_enabled`: virtual MEMORY bit set and power state below D3hot. */
  get memoryEnabled(): boolean {
    return this.powerState < PCI_D3HOT && (this.command & PCI_COMMAND_MEMORY) !== 0;
  }

  /**
   * `vfio_pci_core_open_device` / `vfio_pci_core_enable`:
   * `pci_enable_device` turns memory decoding on; vconfig starts from it.
   */
  async open(): Promise<void> {
    if (this.opened) throw new KernelError("EBUSY", `vfio: ${this.pdev.name} is already open`);
    // vfio_pci_core_enable: P2P providers for every BAR (v6.19).
    if (!this.pdev.nonMappableBars) pcimP2pdmaInit(this.pdev);
    await this.memoryLock.downWrite();
    try {
      this.hwCommand |= PCI_COMMAND_MEMORY;
      this.#setVcmd(this.hwCommand);
      this.opened = true;
    } finally {
      this.memoryLock.upWrite();
    }
  }

  /**
   * `vfio_pci_core_close_device`: every exported dma-buf is revoked for
   * good (`vfio_pci_dma_buf_cleanup`), then the device is disabled.
   */
  async close(): Promise<void> {
    if (!this.opened) throw new KernelError("EINVAL", `vfio: ${this.pdev.name} is not open`);
    await this.memoryLock.downWrite();
    try {
      for (const d of [...this.dmabufs]) await d.cleanup();
      this.dmabufs.clear();
    } finally {
      this.memoryLock.upWrite();
    }
    await this.zapBars();
    this.hwCommand &= ~PCI_COMMAND_MASTER;
    this.opened = false;
  }

  #setVcmd(cmd: number): void {
    this.vconfig[PCI_COMMAND] = cmd & 0xff;
    this.vconfig[PCI_COMMAND + 1] = (cmd >> 8) & 0xff;
  }

  /** `vfio_pci_zap_bars`: zaps every user mapping of every BAR. */
  async zapBars(): Promise<void> {
    this.stats.zaps++;
    await this.mapping.unmapMappingRange(
      vfioPciIndexToOffset(0),
      vfioPciIndexToOffset(VFIO_PCI_ROM_REGION_INDEX) - vfioPciIndexToOffset(0),
      true,
    );
  }

  /** `vfio_pci_zap_and_down_write_memory_lock`. */
  async zapAndDownWriteMemoryLock(): Promise<void> {
    await this.memoryLock.downWrite();
    await this.zapBars();
  }

  /** `vfio_pci_dma_buf_move(vdev, revoked)`; memory_lock held for write. */
  async dmaBufMove(revoked: boolean): Promise<void> {
    this.memoryLock.assertHeldWrite();
    for (const d of this.dmabufs) {
      if (d.revoked !== revoked) await d.move(revoked);
    }
  }

  /** `VFIO_DEVICE_GET_INFO`. */
  getInfo(): VfioDeviceInfo {
    return {
      flags: VFIO_DEVICE_FLAGS_PCI | (this.resetWorks ? VFIO_DEVICE_FLAGS_RESET : 0),
      numRegions: VFIO_PCI_NUM_REGIONS,
      numIrqs: VFIO_PCI_NUM_IRQS,
    };
  }

  /** True when BAR `index` may be mmapped (`vdev->bar_mmap_supported`). */
  barMmapSupported(index: number): boolean {
    const b = this.bars[index];
    return !!b && b.size >= PAGE && b.region !== null;
  }

  /** `VFIO_DEVICE_GET_REGION_INFO` (`vfio_pci_ioctl_get_region_info`). */
  getRegionInfo(index: number): VfioRegionInfo {
    const offset = vfioPciIndexToOffset(index);
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      return {
        index,
        offset,
        size: this.vconfig.length,
        flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE,
      };
    }
    if (index <= 5) {
      const b = this.pdev.bars[index];
      const size = b && b.start !== null ? Number(b.size) : 0;
      if (!size) return { index, offset, size: 0, flags: 0 };
      let flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
      if (this.barMmapSupported(index)) flags |= VFIO_REGION_INFO_FLAG_MMAP;
      return { index, offset, size, flags };
    }
    if (index === VFIO_PCI_ROM_REGION_INDEX) {
      // No expansion ROM in the model: size 0, no flags.
      return { index, offset, size: 0, flags: 0 };
    }
    if (index === VFIO_PCI_VGA_REGION_INDEX) {
      // The model's functions are not VGA devices (`vdev->has_vga` false).
      throw new KernelError(
        "EINVAL",
        `VFIO_DEVICE_GET_REGION_INFO: ${this.pdev.name} has no VGA region (vfio_pci_ioctl_get_region_info)`,
      );
    }
    throw new KernelError(
      "EINVAL",
      `VFIO_DEVICE_GET_REGION_INFO: index ${index} >= num_regions ${VFIO_PCI_NUM_REGIONS} (vfio_pci_ioctl_get_region_info)`,
    );
  }

  /**
   * `read()` on the device fd at `offset` (region index in bits 40+). A BAR
   * read that runs past the end of the BAR is short (`vfio_pci_bar_rw`):
   * the returned bytes are what was read.
   */
  async regionRead(offset: number, len: number): Promise<Uint8Array> {
    const buf = new Uint8Array(len);
    const done = await this.#rw(offset, buf, false);
    return done === len ? buf : buf.subarray(0, done);
  }

  /** `write()` on the device fd at `offset`: returns the bytes written (short at a BAR's end). */
  async regionWrite(offset: number, data: Uint8Array): Promise<number> {
    return await this.#rw(offset, data, true);
  }

  async #rw(offset: number, buf: Uint8Array, write: boolean): Promise<number> {
    const index = vfioPciOffsetToIndex(offset);
    const pos = offset % 2 ** VFIO_PCI_OFFSET_SHIFT;
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      if (pos + buf.length > this.vconfig.length) {
        throw new KernelError(
          "EFAULT",
          `vfio config access beyond ${this.vconfig.length} bytes (vfio_config_do_rw)`,
        );
      }
      if (write) {
        const v = buf.length === 4
          ? new DataView(buf.buffer, buf.byteOffset).getUint32(0, true)
          : buf.length === 2
          ? new DataView(buf.buffer, buf.byteOffset).getUint16(0, true)
          : buf[0]!;
        await this.configWrite(pos, buf.length, v);
      } else {
        buf.set(this.vconfig.subarray(pos, pos + buf.length));
      }
      return buf.length;
    }
    if (index > 5) {
      throw new KernelError("EINVAL", `vfio_pci_rw: region ${index} has no read/write`);
    }
    const b = this.bars[index];
    if (!b) throw new KernelError("EINVAL", `vfio_pci_bar_rw: BAR ${index} is not a memory BAR`);
    // Starting at or past the end is -EINVAL; running past it is a short
    // access (vfio_pci_bar_rw).
    if (pos >= b.size) {
      throw new KernelError(
        "EINVAL",
        `vfio_pci_bar_rw: offset 0x${pos.toString(16)} beyond BAR ${index}`,
      );
    }
    if (pos + buf.length > b.size) buf = buf.subarray(0, b.size - pos);
    await this.memoryLock.downRead();
    try {
      if (!this.memoryEnabled) {
        throw new KernelError(
          "EIO",
          `vfio_pci_bar_rw: ${this.pdev.name} BAR ${index}: memory decode is disabled (__vfio_pci_memory_enabled)`,
        );
      }
      if (write) this.world.mem.write(b.start + pos, buf);
      else this.world.mem.readInto(b.start + pos, buf);
    } finally {
      this.memoryLock.upRead();
    }
    return buf.length;
  }

  /** Reads `len` (1, 2, 4) bytes of emulated config space. */
  configRead(pos: number, len: number): number {
    const v = new DataView(this.vconfig.buffer);
    return len === 4
      ? v.getUint32(pos, true)
      : len === 2
      ? v.getUint16(pos, true)
      : this.vconfig[pos]!;
  }

  /**
   * A config space write (`vfio_pci_config_rw`). The command register
   * (`vfio_basic_config_write`), PMCSR (`vfio_pm_config_write`) and
   * DEVCTL FLR (`vfio_exp_config_write`) have side effects; other bytes
   * are read-only here.
   */
  async configWrite(pos: number, len: number, value: number): Promise<void> {
    if (pos === PCI_COMMAND && len >= 2) return this.#commandWrite(value & 0xffff);
    // A byte write to the low half of PCI_COMMAND still carries the MEMORY
    // bit through vfio_basic_config_write; the high byte keeps its value.
    if (pos === PCI_COMMAND && len === 1) {
      return this.#commandWrite((this.command & 0xff00) | (value & 0xff));
    }
    if (pos === PM_CAP_OFFSET + PCI_PM_CTRL) {
      return this.#lockAndSetPowerState((value & PCI_PM_CTRL_STATE_MASK) as PciPowerState);
    }
    if (pos === EXP_CAP_OFFSET + PCI_EXP_DEVCTL && len >= 2) {
      if ((value & PCI_EXP_DEVCTL_BCR_FLR) && this.resetWorks) {
        await this.zapAndDownWriteMemoryLock();
        try {
          await this.dmaBufMove(true);
          await this.#tryResetFunction();
          if (this.memoryEnabled) await this.dmaBufMove(false);
        } finally {
          this.memoryLock.upWrite();
        }
      }
      return;
    }
  }

  /** `vfio_basic_config_write` for PCI_COMMAND. */
  async #commandWrite(newCmd: number): Promise<void> {
    const newMem = (newCmd & PCI_COMMAND_MEMORY) !== 0;
    if (!newMem) {
      await this.zapAndDownWriteMemoryLock();
    } else {
      await this.memoryLock.downWrite();
    }
    try {
      if (!newMem) await this.dmaBufMove(true);
      const mask = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
        PCI_COMMAND_INTX_DISABLE;
      this.hwCommand = (this.hwCommand & ~mask) | (newCmd & mask);
      this.#setVcmd((this.command & ~mask) | (newCmd & mask));
      if (this.memoryEnabled) await this.dmaBufMove(false);
    } finally {
      this.memoryLock.upWrite();
    }
  }

  /** `vfio_lock_and_set_power_state`. */
  async #lockAndSetPowerState(state: PciPowerState): Promise<void> {
    if (state >= PCI_D3HOT) {
      await this.zapAndDownWriteMemoryLock();
    } else {
      await this.memoryLock.downWrite();
    }
    try {
      if (state >= PCI_D3HOT) await this.dmaBufMove(true);
      this.setPowerState(state);
      if (this.memoryEnabled) await this.dmaBufMove(false);
    } finally {
      this.memoryLock.upWrite();
    }
  }

  /** `vfio_pci_set_power_state` (caller holds memory_lock for write). */
  setPowerState(state: PciPowerState): void {
    this.powerState = state;
    const pmcsr = PM_CAP_OFFSET + PCI_PM_CTRL;
    this.vconfig[pmcsr] = (this.vconfig[pmcsr]! & ~PCI_PM_CTRL_STATE_MASK) | state;
  }

  /**
   * `pci_try_reset_function`: save and disable (memory decode off), FLR
   * (the function stops decoding for `flrMs`), restore the command register.
   */
  async #tryResetFunction(): Promise<void> {
    const saved = this.hwCommand;
    this.resetting = true;
    this.hwCommand = PCI_COMMAND_INTX_DISABLE;
    try {
      await this.world.sched.msleep(this.#flrMs);
    } finally {
      this.hwCommand = saved;
      this.resetting = false;
      this.stats.resets++;
    }
  }

  /** `VFIO_DEVICE_RESET` (`vfio_pci_ioctl_reset`). */
  async reset(): Promise<void> {
    if (!this.resetWorks) {
      throw new KernelError(
        "EINVAL",
        `VFIO_DEVICE_RESET: ${this.pdev.name} has no reset (reset_works)`,
      );
    }
    await this.zapAndDownWriteMemoryLock();
    try {
      this.setPowerState(PCI_D0);
      await this.dmaBufMove(true);
      await this.#tryResetFunction();
      if (this.memoryEnabled) await this.dmaBufMove(false);
    } finally {
      this.memoryLock.upWrite();
    }
  }

  /**
   * `VFIO_DEVICE_PCI_HOT_RESET` over a device set (`vfio_pci_dev_set_hot_reset`):
   * every device's memory_lock is trylocked and its dma-bufs revoked and
   * BARs zapped; contention stops the walk with -EBUSY. Without it every
   * device is put in D0 and the bus is reset once. Either way the devices
   * locked so far are walked back in reverse: each that is open with
   * memory enabled is unrevoked, then unlocked, so a failed call leaves
   * no buffer revoked behind it.
   */
  static async hotReset(devices: readonly VfioPciCoreDevice[]): Promise<void> {
    const locked: VfioPciCoreDevice[] = [];
    let err: KernelError | null = null;
    try {
      for (const d of devices) {
        // The kernel trylocks each memory_lock (no nesting annotation
        // across devices) and gives up with -EBUSY.
        if (!d.memoryLock.downWriteTrylock()) {
          err = new KernelError(
            "EBUSY",
            `VFIO_DEVICE_PCI_HOT_RESET: ${d.pdev.name} memory_lock is busy`,
          );
          break;
        }
        locked.push(d);
        await d.dmaBufMove(true);
        await d.zapBars();
      }
      if (!err) {
        for (const d of devices) d.setPowerState(PCI_D0);
        for (const d of devices) d.resetting = true;
        try {
          await devices[0]?.world.sched.msleep(devices[0].#flrMs);
        } finally {
          for (const d of devices) {
            d.resetting = false;
            d.stats.resets++;
          }
        }
      }
    } finally {
      for (const d of locked.reverse()) {
        try {
          if (d.opened && d.memoryEnabled) await d.dmaBufMove(false);
        } finally {
          d.memoryLock.upWrite();
        }
      }
    }
    if (err) throw err;
  }

  /** `vfio_pci_core_mmap`. */
  #mmap(vma: Vma): void {
    const index = Math.floor(vma.vmPgoff / 2 ** (VFIO_PCI_OFFSET_SHIFT - 12));
    const fail = (why: string): never => {
      throw new KernelError("EINVAL", `vfio_pci_core_mmap: ${this.pdev.name}: ${why}`);
    };
    if (index >= VFIO_PCI_NUM_REGIONS) fail(`region ${index} out of range`);
    if (!(vma.vmFlags & VM_SHARED)) fail("mapping is not MAP_SHARED");
    if (index >= VFIO_PCI_ROM_REGION_INDEX) fail(`region ${index} cannot be mmapped`);
    if (!this.barMmapSupported(index)) fail(`BAR ${index} does not support mmap`);
    const b = this.bars[index]!;
    const pgoff = vma.vmPgoff % 2 ** (VFIO_PCI_OFFSET_SHIFT - 12);
    const reqLen = vma.vmEnd - vma.vmStart;
    if (pgoff * PAGE + reqLen > Math.ceil(b.size / PAGE) * PAGE) {
      fail(`0x${(pgoff * PAGE).toString(16)}+0x${reqLen.toString(16)} beyond BAR ${index}`);
    }
    vma.vmPrivateData = this;
    vma.vmPageProt = pgprotNoncached(vma.vmPageProt);
    vma.flagsSet(VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP);
    vma.vmOps = {
      name: "vfio_pci_mmap_ops",
      fault: (vmf) => this.#hugeFault(vmf, 0),
      hugeFault: (vmf, order) => this.#hugeFault(vmf, order),
    };
  }

  /** `vma_to_pfn` + page offset of the fault. */
  #pfnOf(vma: Vma, addr: number): number {
    const index = Math.floor(vma.vmPgoff / 2 ** (VFIO_PCI_OFFSET_SHIFT - 12));
    const pgoff = vma.vmPgoff % 2 ** (VFIO_PCI_OFFSET_SHIFT - 12);
    return this.bars[index]!.start / PAGE + pgoff + Math.floor((addr - vma.vmStart) / PAGE);
  }

  /** `vfio_pci_mmap_huge_fault`. */
  async #hugeFault(vmf: VmFault, order: number): Promise<number> {
    const vma = vmf.vma;
    const addr = order
      ? Math.floor(vmf.address / (PAGE * PMD_PAGES)) * PAGE * PMD_PAGES
      : vmf.address;
    const pfn = this.#pfnOf(vma, addr);
    if (
      order &&
      (order !== PMD_ORDER || addr < vma.vmStart || addr + (PAGE << order) > vma.vmEnd ||
        pfn % (1 << order))
    ) {
      return VM_FAULT_FALLBACK;
    }
    await this.memoryLock.downRead();
    try {
      if (!this.memoryEnabled) {
        this.stats.sigbus++;
        return VM_FAULT_SIGBUS;
      }
      this.stats.faults++;
      return order ? vmfInsertPfnPmd(vmf, pfn, false) : vmfInsertPfn(vma, vmf.address, pfn);
    } finally {
      this.memoryLock.upRead();
    }
  }

  /** `0000:03:00.0 (vfio-pci)`. */
  toString(): string {
    return `${this.pdev.name} (vfio-pci)`;
  }
}

function copyStore(store: SparseStore, off: number, buf: Uint8Array, write: boolean): void {
  let done = 0;
  while (done < buf.length) {
    const a = off + done;
    const idx = Math.floor(a / PAGE);
    const po = a % PAGE;
    const n = Math.min(buf.length - done, PAGE - po);
    if (write) store.write(idx, po, buf, done, n);
    else store.read(idx, po, buf, done, n);
    done += n;
  }
}
