/**
 * DOC: driver model
 *
 * `struct device` and `struct bus_type`, reduced to what DMA and sharing
 * need: a name, a parent, a bus, a NUMA node, the DMA masks
 * (`dma_mask`, `coherent_dma_mask`, `bus_dma_limit`), and slots the IOMMU
 * and DMA-mapping packages fill (`iommu`, `dmaOps`). Devices register with
 * their world; `device_add` / `device_del` run the bus notifiers so
 * packages hear about them (the IOMMU probes on add; DMA-API debug reports
 * leaks on removal).
 *
 * @module
 */
import { KernelError } from "./errors.ts";
import type { Kernel } from "./world.ts";

/** `DMA_BIT_MASK(n)`. */
export function dmaBitMask(n: number): bigint {
  return n >= 64 ? 0xffff_ffff_ffff_ffffn : (1n << BigInt(n)) - 1n;
}

/** Bus notifier actions (include/linux/device/bus.h BUS_NOTIFY_*). */
export type BusNotifyAction = "add_device" | "del_device" | "bound_driver" | "unbind_driver";

/** A bus: devices plus notifiers. */
export class Bus {
  /** `pci`, `platform`, `virtio`. */
  readonly name: string;
  readonly #devices: Device[] = [];
  readonly #notifiers: ((action: BusNotifyAction, dev: Device) => void)[] = [];

  /** A bus named `name`. */
  constructor(name: string) {
    this.name = name;
  }

  /** Devices on the bus in add order. */
  get devices(): readonly Device[] {
    return this.#devices;
  }

  /** `bus_register_notifier`. */
  registerNotifier(fn: (action: BusNotifyAction, dev: Device) => void): void {
    this.#notifiers.push(fn);
  }

  /** Runs the notifiers. */
  notify(action: BusNotifyAction, dev: Device): void {
    for (const fn of this.#notifiers) fn(action, dev);
  }

  /** @internal */
  attach(dev: Device): void {
    this.#devices.push(dev);
  }

  /** @internal */
  detach(dev: Device): void {
    const i = this.#devices.indexOf(dev);
    if (i >= 0) this.#devices.splice(i, 1);
  }
}

/** Options for a new {@linkcode Device}. */
export interface DeviceOptions {
  /** Parent device (a bridge, a PF). */
  parent?: Device | null;
  /** The bus it sits on. */
  bus?: Bus | null;
  /** NUMA node, -1 for none (NUMA_NO_NODE). */
  numaNode?: number;
  /** `*dev->dma_mask`; default DMA_BIT_MASK(32) as the PCI core sets before a driver changes it. */
  dmaMask?: bigint;
  /** `coherent_dma_mask`; default DMA_BIT_MASK(32). */
  coherentDmaMask?: bigint;
  /** `bus_dma_limit`, 0 for none. */
  busDmaLimit?: bigint;
  /** `dev->dma_coherent`: cache-coherent DMA (default true, as on x86). */
  dmaCoherent?: boolean;
}

/**
 * A device of the driver model.
 *
 * @example
 * ```ts
 * import { Device, Kernel, dmaBitMask } from "@dmalab/kernel";
 * const world = new Kernel();
 * const dev = new Device(world, "0000:01:00.0");
 * dev.setMaskAndCoherent(dmaBitMask(64));
 * dev.add();
 * ```
 */
export class Device {
  /** `dev_name()`. */
  readonly name: string;
  /** World id. */
  readonly id: number;
  /** The world it belongs to. */
  readonly world: Kernel;
  /** Parent device. */
  readonly parent: Device | null;
  /** The bus. */
  readonly bus: Bus | null;
  /** NUMA node. */
  numaNode: number;
  /** `*dma_mask`. */
  dmaMask: bigint;
  /** `coherent_dma_mask`. */
  coherentDmaMask: bigint;
  /** `bus_dma_limit` (0 = none). */
  busDmaLimit: bigint;
  /** Cache-coherent DMA. */
  dmaCoherent: boolean;
  /** Slot for the IOMMU package (`dev->iommu` / group). */
  iommu: unknown = null;
  /** Slot for the DMA-mapping package (`dev->dma_ops` and state). */
  dmaOps: unknown = null;
  /** Bound driver name, or null. */
  driver: string | null = null;
  /** Driver private data (`dev_get_drvdata`). */
  drvdata: unknown = null;
  /** True between add() and del(). */
  registered = false;

  /** Creates (`device_initialize`) without registering. */
  constructor(world: Kernel, name: string, options: DeviceOptions = {}) {
    this.world = world;
    this.name = name;
    this.id = world.nextId();
    this.parent = options.parent ?? null;
    this.bus = options.bus ?? null;
    this.numaNode = options.numaNode ?? -1;
    this.dmaMask = options.dmaMask ?? dmaBitMask(32);
    this.coherentDmaMask = options.coherentDmaMask ?? dmaBitMask(32);
    this.busDmaLimit = options.busDmaLimit ?? 0n;
    this.dmaCoherent = options.dmaCoherent ?? true;
  }

  /** `device_add`: registers and runs the bus's add notifiers. */
  add(): void {
    if (this.registered) {
      throw new KernelError("EEXIST", `device_add: ${this.name} is already registered`);
    }
    this.registered = true;
    this.bus?.attach(this);
    this.bus?.notify("add_device", this);
  }

  /** `device_del`: runs the removal notifiers and unregisters. */
  del(): void {
    if (!this.registered) {
      throw new KernelError("ENODEV", `device_del: ${this.name} is not registered`);
    }
    this.bus?.notify("del_device", this);
    this.bus?.detach(this);
    this.registered = false;
  }

  /**
   * `dma_set_mask`: -EIO when the mask is below what the platform can honour
   * (here: below 24 bits, the ISA floor, as `dma_supported` in dma-direct).
   */
  setMask(mask: bigint): void {
    if (mask < dmaBitMask(24)) {
      throw new KernelError(
        "EIO",
        `dma_set_mask: ${this.name}: mask 0x${mask.toString(16)} below the 24-bit minimum`,
      );
    }
    this.dmaMask = mask;
  }

  /** `dma_set_coherent_mask`. */
  setCoherentMask(mask: bigint): void {
    if (mask < dmaBitMask(24)) {
      throw new KernelError(
        "EIO",
        `dma_set_coherent_mask: ${this.name}: mask 0x${mask.toString(16)} below the 24-bit minimum`,
      );
    }
    this.coherentDmaMask = mask;
  }

  /** `dma_set_mask_and_coherent`. */
  setMaskAndCoherent(mask: bigint): void {
    this.setMask(mask);
    this.setCoherentMask(mask);
  }

  /** `dev_name`. */
  toString(): string {
    return this.name;
  }
}
