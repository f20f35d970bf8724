/**
 * DOC: DMA-API debugging
 *
 * kernel/dma/debug.c (CONFIG_DMA_API_DEBUG): every mapping is recorded per
 * device and DMA address; unmaps and syncs are checked against the record.
 * Reports use the kernel's wording, prefixed `DMA-API: <driver> <device>: `,
 * and go through `world.bug("dma-api-debug", ...)` (dmesg, and a
 * `KernelBug` in strict mode). Checks run before the operation they guard,
 * so a strict-mode report leaves the mapping state untouched.
 *
 * Checked: freeing what was never mapped; size, direction and type (map
 * function) mismatches; unmapping without having called
 * `dma_mapping_error()` on the result; sg lists unmapped with a different
 * entry count; syncs of unmapped memory, outside the mapping, with another
 * direction, or read-only/write-only for the wrong side; mappings still
 * present when the device's driver unbinds or the device goes away.
 * Switched off by the world variant `dma-api.debug = "0"`.
 *
 * Locking: the kernel's hash-bucket spinlocks; atomic in the model.
 *
 * @module
 */
import type { BusNotifyAction, Device, Kernel } from "@dmalab/kernel";
import { iommuCoreOf } from "@dmalab/iommu";
import { DIR2NAME, type DmaDirection } from "./attrs.ts";

/** Map function kinds (`type2name`). */
export type DmaDebugType = "single" | "scatter-gather" | "coherent" | "phy" | "resource";

/** One recorded mapping (`struct dma_debug_entry`). */
export interface DmaDebugEntry {
  /** Device. */
  dev: Device;
  /** Kind. */
  type: DmaDebugType;
  /** DMA address. */
  dmaAddr: bigint;
  /** Size, bytes. */
  size: number;
  /** Direction. */
  direction: DmaDirection;
  /** CPU physical address. */
  paddr: number;
  /** `map_err_type`. */
  mapErr: "not-checked" | "checked" | "none";
  /** sg: entries passed to map. */
  sgCallEnts: number;
  /** sg: DMA segments produced. */
  sgMappedEnts: number;
  /** A P2P bus address (no IOVA behind it). */
  busAddress?: boolean;
}

function hex16(v: bigint): string {
  return "0x" + v.toString(16).padStart(16, "0");
}

/** The DMA-API debug state of one world. */
export class DmaDebug {
  /** The world. */
  readonly world: Kernel;
  /** Checks on. */
  readonly enabled: boolean;
  /** Reports made. */
  errors = 0;
  readonly #entries = new Map<Device, Map<bigint, DmaDebugEntry[]>>();
  readonly #buses = new WeakSet<object>();

  /** Use {@linkcode dmaDebugOf}. */
  constructor(world: Kernel) {
    this.world = world;
    this.enabled = world.variant("dma-api.debug", "1") !== "0";
    // Invariant: every recorded mapping of a device on dma-iommu still translates.
    world.addChecker("dma-api", () => {
      const out: string[] = [];
      for (const [dev, m] of this.#entries) {
        const dom = iommuCoreOf(world)?.domainFor(dev);
        if (!dom || !dom.isDmaApi) continue;
        for (const [addr, list] of m) {
          for (const e of list) {
            if (e.busAddress) continue;
            if (addr >= 2n ** 53n || dom.iovaToPhys(Number(addr)) === 0) {
              out.push(
                `${dev.name}: mapping at 0x${addr.toString(16)} (${e.type}) no longer translates`,
              );
            }
          }
        }
      }
      return out;
    });
  }

  /** Mappings recorded for `dev`. */
  entries(dev: Device): DmaDebugEntry[] {
    return [...(this.#entries.get(dev)?.values() ?? [])].flat();
  }

  #err(dev: Device, msg: string): void {
    this.errors++;
    const drv = dev.driver ?? dev.bus?.name ?? "";
    const line = `DMA-API: ${drv} ${dev.name}: ${msg}`;
    this.world.bug("dma-api-debug", line, `WARNING: ${line}`);
  }

  #watch(dev: Device): void {
    const bus = dev.bus;
    if (!bus || this.#buses.has(bus)) return;
    this.#buses.add(bus);
    bus.registerNotifier((action: BusNotifyAction, d: Device) => {
      if (action === "unbind_driver" || action === "del_device") this.deviceChange(d);
    });
  }

  /** `add_dma_entry()`. */
  add(
    e: Omit<DmaDebugEntry, "mapErr" | "sgCallEnts" | "sgMappedEnts"> & Partial<DmaDebugEntry>,
  ): void {
    if (!this.enabled) return;
    this.#watch(e.dev);
    const entry: DmaDebugEntry = {
      mapErr: "none",
      sgCallEnts: 0,
      sgMappedEnts: 0,
      ...e,
    };
    let m = this.#entries.get(e.dev);
    if (!m) {
      m = new Map();
      this.#entries.set(e.dev, m);
    }
    const list = m.get(e.dmaAddr) ?? [];
    list.push(entry);
    m.set(e.dmaAddr, list);
  }

  #find(dev: Device, dmaAddr: bigint): DmaDebugEntry | null {
    const l = this.#entries.get(dev)?.get(dmaAddr);
    return l && l.length ? l[l.length - 1]! : null;
  }

  #findContaining(dev: Device, dmaAddr: bigint): DmaDebugEntry | null {
    const exact = this.#find(dev, dmaAddr);
    if (exact) return exact;
    for (const [a, l] of this.#entries.get(dev) ?? []) {
      for (const e of l) {
        if (dmaAddr >= a && dmaAddr < a + BigInt(e.size)) return e;
      }
    }
    return null;
  }

  #remove(e: DmaDebugEntry): void {
    const m = this.#entries.get(e.dev)!;
    const l = m.get(e.dmaAddr)!;
    l.splice(l.indexOf(e), 1);
    if (!l.length) m.delete(e.dmaAddr);
  }

  /** `debug_dma_mapping_error()`: marks the mapping's error as checked. */
  mappingError(dev: Device, dmaAddr: bigint): void {
    if (!this.enabled) return;
    const l = this.#entries.get(dev)?.get(dmaAddr);
    for (const e of l ?? []) if (e.mapErr === "not-checked") e.mapErr = "checked";
  }

  /**
   * `check_unmap()`: validates an unmap of `ref` (reports) and removes the
   * entry. Returns false when nothing was mapped there.
   */
  checkUnmap(ref: {
    dev: Device;
    type: DmaDebugType;
    dmaAddr: bigint;
    size: number;
    direction: DmaDirection;
    sgCallEnts?: number;
  }): boolean {
    if (!this.enabled) return true;
    const e = this.#find(ref.dev, ref.dmaAddr);
    const addr = hex16(ref.dmaAddr);
    if (!e) {
      this.#err(
        ref.dev,
        `device driver tries to free DMA memory it has not allocated [device address=${addr}] [size=${ref.size} bytes]`,
      );
      return false;
    }
    if (ref.size !== e.size) {
      this.#err(
        ref.dev,
        `device driver frees DMA memory with different size [device address=${addr}] [map size=${e.size} bytes] [unmap size=${ref.size} bytes]`,
      );
    }
    if (ref.type !== e.type) {
      this.#err(
        ref.dev,
        `device driver frees DMA memory with wrong function [device address=${addr}] [size=${ref.size} bytes] [mapped as ${e.type}] [unmapped as ${ref.type}]`,
      );
    }
    if (
      ref.type === "scatter-gather" && ref.sgCallEnts !== undefined &&
      ref.sgCallEnts !== e.sgCallEnts
    ) {
      this.#err(
        ref.dev,
        `device driver frees DMA sg list with different entry count [map count=${e.sgCallEnts}] [unmap count=${ref.sgCallEnts}]`,
      );
    }
    if (ref.direction !== e.direction) {
      this.#err(
        ref.dev,
        `device driver frees DMA memory with different direction [device address=${addr}] [size=${ref.size} bytes] [mapped with ${
          DIR2NAME[e.direction]
        }] [unmapped with ${DIR2NAME[ref.direction]}]`,
      );
    }
    if (e.mapErr === "not-checked") {
      this.#err(
        ref.dev,
        `device driver failed to check map error[device address=${addr}] [size=${ref.size} bytes] [mapped as ${e.type}]`,
      );
    }
    this.#remove(e);
    return true;
  }

  /** `check_sync()`. */
  checkSync(dev: Device, dmaAddr: bigint, size: number, dir: DmaDirection, toCpu: boolean): void {
    if (!this.enabled) return;
    const addr = hex16(dmaAddr);
    const e = this.#findContaining(dev, dmaAddr);
    if (!e) {
      this.#err(
        dev,
        `device driver tries to sync DMA memory it has not allocated [device address=${addr}] [size=${size} bytes]`,
      );
      return;
    }
    const end = Number(dmaAddr - e.dmaAddr) + size;
    if (end > e.size) {
      this.#err(
        dev,
        `device driver syncs DMA memory outside allocated range [device address=${addr}] [allocation size=${e.size} bytes] [sync offset+size=${end}]`,
      );
    }
    if (e.direction === "DMA_BIDIRECTIONAL") return;
    if (dir !== e.direction) {
      this.#err(
        dev,
        `device driver syncs DMA memory with different direction [device address=${addr}] [size=${size} bytes] [mapped with ${
          DIR2NAME[e.direction]
        }] [synced with ${DIR2NAME[dir]}]`,
      );
    }
    if (toCpu && e.direction !== "DMA_FROM_DEVICE" && dir !== "DMA_TO_DEVICE") {
      this.#err(
        dev,
        `device driver syncs device read-only DMA memory for cpu [device address=${addr}] [size=${size} bytes] [mapped with ${
          DIR2NAME[e.direction]
        }] [synced with ${DIR2NAME[dir]}]`,
      );
    }
    if (!toCpu && e.direction !== "DMA_TO_DEVICE" && dir !== "DMA_FROM_DEVICE") {
      this.#err(
        dev,
        `device driver syncs device write-only DMA memory to device [device address=${addr}] [size=${size} bytes] [mapped with ${
          DIR2NAME[e.direction]
        }] [synced with ${DIR2NAME[dir]}]`,
      );
    }
  }

  /** `dma_debug_device_change()`: reports mappings left when the driver goes away. */
  deviceChange(dev: Device): void {
    if (!this.enabled) return;
    const left = this.entries(dev);
    if (!left.length) return;
    const e = left[0]!;
    this.#entries.delete(dev);
    this.#err(
      dev,
      `device driver has pending DMA allocations while released from device [count=${left.length}]\nOne of leaked entries details: [device address=${
        hex16(e.dmaAddr)
      }] [size=${e.size} bytes] [mapped with ${DIR2NAME[e.direction]}] [mapped as ${e.type}]`,
    );
  }
}

/** The world's DMA-API debug state. */
export function dmaDebugOf(world: Kernel): DmaDebug {
  return world.ext("dma-api.debug", () => new DmaDebug(world));
}
