/**
 * DOC: device DMA
 *
 * A device reading and writing memory through a DMA address, the way its
 * requests travel: a PCI request to a bus address inside a peer's BAR that
 * the fabric routes peer-to-peer (map type BUS_ADDR between the two: no ACS
 * redirect on the path) never reaches the IOMMU and lands in the BAR; every
 * other request goes to the root complex, where the IOMMU translates it
 * (IOTLB/ATC, faults) or, without translation, the DMA address minus the
 * device's range offset is the physical address. Bytes move through the
 * world's physical memory (RAM or MMIO), page by page of translation.
 *
 * Locking: runs in the device's context (any); atomic per call.
 *
 * @module
 */
import type { Device } from "@dmalab/kernel";
import { iommuCoreOf, iommuTranslate } from "@dmalab/iommu";
import { calcMapTypeAndDist, devIsPci, pciFabric, PciP2pdmaMapType } from "@dmalab/pci-p2p";
import { dmaDev } from "./state.ts";

/** Counters of device DMA. */
export interface DeviceDmaStats {
  /** Bytes read by devices. */
  bytesRead: number;
  /** Bytes written by devices. */
  bytesWritten: number;
  /** Bytes that went peer-to-peer without the IOMMU. */
  p2pBytes: number;
}

/** The world's device-DMA counters. */
export function deviceDmaStats(dev: Device): DeviceDmaStats {
  return dev.world.ext(
    "dma-api.device_dma",
    () => ({ bytesRead: 0, bytesWritten: 0, p2pBytes: 0 }),
  );
}

/** Resolves one request: CPU physical address and how many bytes the resolution covers. */
function resolve(
  dev: Device,
  addr: number,
  write: boolean,
  left: number,
): [number, number, boolean] {
  if (devIsPci(dev) && dev.world.hasExt("pci-p2p")) {
    for (const peer of pciFabric(dev.world).devices) {
      if (peer === dev) continue;
      for (const bar of peer.bars) {
        if (!bar || bar.start === null || !bar.mem) continue;
        const bus = Number(bar.start + bar.busOffset);
        if (addr < bus || addr >= bus + Number(bar.size)) continue;
        const t = calcMapTypeAndDist(peer, dev, false).mapType;
        if (t === PciP2pdmaMapType.BUS_ADDR) {
          return [
            addr - Number(bar.busOffset),
            Math.min(left, bus + Number(bar.size) - addr),
            true,
          ];
        }
      }
    }
  }
  if (iommuCoreOf(dev.world)?.devIommu(dev)) {
    const t = iommuTranslate(dev, addr, write);
    return [t.phys, Math.min(left, t.span), false];
  }
  return [addr - dmaDev(dev).dmaOffset, left, false];
}

function walk(
  dev: Device,
  addr: number,
  len: number,
  write: boolean,
  fn: (phys: number, off: number, n: number) => void,
): void {
  const stats = deviceDmaStats(dev);
  let off = 0;
  while (off < len) {
    const a = addr + off;
    const pageLeft = 4096 - (a % 4096);
    const [phys, span, p2p] = resolve(dev, a, write, Math.min(len - off, pageLeft));
    const n = Math.min(span, len - off, pageLeft);
    fn(phys, off, n);
    if (p2p) stats.p2pBytes += n;
    off += n;
  }
}

/**
 * The device reads `len` bytes at DMA address `addr`. Throws
 * `IommuFaultError` when the IOMMU refuses the request.
 */
export function deviceDmaRead(dev: Device, addr: bigint | number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  walk(dev, Number(addr), len, false, (phys, off, n) => {
    dev.world.mem.readInto(phys, out.subarray(off, off + n));
  });
  deviceDmaStats(dev).bytesRead += len;
  return out;
}

/** The device writes `bytes` at DMA address `addr` (faults as for reads). */
export function deviceDmaWrite(dev: Device, addr: bigint | number, bytes: Uint8Array): void {
  // translate everything first so a fault leaves memory untouched
  const chunks: [number, number, number][] = [];
  walk(dev, Number(addr), bytes.length, true, (phys, off, n) => chunks.push([phys, off, n]));
  for (const [phys, off, n] of chunks) dev.world.mem.write(phys, bytes.subarray(off, off + n));
  deviceDmaStats(dev).bytesWritten += bytes.length;
}
