/**
 * DOC: the NIC's DMA engine and its cost (hardware side of mlx5)
 *
 * How a request from the NIC travels, page by page of DMA address:
 * - a bus address inside a peer's BAR on a BUS_ADDR path is routed by the
 *   switch and never reaches the IOMMU (as `@dmalab/dma-api`'s device DMA);
 * - otherwise, with an IOMMU translating for the NIC, the request is
 *   translated: an ATS memory key looks in the NIC's ATC first (a miss is
 *   an ATS Translation Request round trip, `atsTranslationNs`), a non-ATS
 *   key sends an untranslated request that the IOMMU translates in its
 *   IOTLB (a miss is a page walk, `iotlbMissNs`); faults fail the request;
 * - without an IOMMU the DMA address is the physical address (minus the
 *   device's range offset).
 * Bytes move through the world's memory at once (the DMA is atomic per
 * call); time is charged by the caller from {@linkcode DmaCost}: transfer
 * time over the route from the pci-p2p bandwidth model (the NIC's links up
 * to the root complex for system memory, the P2P route for a peer BAR),
 * shared max-min fairly among the transfers in flight
 * ({@linkcode sharedGBps}), and
 * the translation latency, overlapped by the NIC's outstanding translation
 * requests (`translationParallelism`, a labelled assumption).
 *
 * A registry of device memory owners (world extension `"vram.owners"`,
 * filled by GPU drivers) lets the engine report DMA into device memory that
 * no longer belongs to the buffer the MR maps (the "no DMA to VRAM after
 * eviction moved it" invariant).
 *
 * Locking: callable from any context; atomic per call.
 *
 * @module
 */
import type { Device, Kernel } from "@dmalab/kernel";
import { iommuCoreOf, iommuTranslate } from "@dmalab/iommu";
import {
  type BandwidthModel,
  calcMapTypeAndDist,
  DEFAULT_BANDWIDTH_PARAMS,
  type Labelled,
  maxMinFair,
  type PciDev,
  pciFabric,
  PciP2pdmaMapType,
  pciUpstreamBridge,
} from "@dmalab/pci-p2p";
import { deviceDmaStats, dmaDev } from "@dmalab/dma-api";

/** An owner range of device memory (the `"vram.owners"` world registry). */
export interface DeviceMemoryOwners {
  /** First physical byte. */
  readonly start: number;
  /** One past the last byte. */
  readonly end: number;
  /** The dma-buf currently backed by `phys` (null: free or moving away). */
  owner(phys: number): unknown;
}

/** The world's device-memory owner registry (drivers push their ranges). */
export function deviceMemoryOwners(world: Kernel): DeviceMemoryOwners[] {
  return world.ext("vram.owners", () => [] as DeviceMemoryOwners[]);
}

/** Parameters of the NIC cost model. */
export interface NicCostParams {
  /** Wire rate between two NICs, GB/s per direction. */
  readonly wireGBps: Labelled<number>;
  /** Translation requests a NIC keeps in flight (latency overlap). */
  readonly translationParallelism: Labelled<number>;
  /** ATS translation request round trip, ns (pci-p2p's labelled figure). */
  readonly atsTranslationNs: Labelled<number>;
  /** IOTLB miss (page walk), ns (pci-p2p's labelled figure). */
  readonly iotlbMissNs: Labelled<number>;
}

/** Default NIC cost parameters. */
export const DEFAULT_NIC_COST: NicCostParams = {
  wireGBps: {
    value: 50,
    label: "ConnectX-7 NDR 400 Gb/s port = 50 GB/s per direction (line rate)",
  },
  translationParallelism: {
    value: 8,
    label:
      "assumption: translation requests the NIC overlaps; no public figure for mlx5's ATS queue",
  },
  atsTranslationNs: DEFAULT_BANDWIDTH_PARAMS.atsTranslationNs,
  iotlbMissNs: DEFAULT_BANDWIDTH_PARAMS.iotlbMissNs,
};

/** What one DMA did. */
export interface DmaResult {
  /** Bytes moved. */
  bytes: number;
  /** ATS translation requests sent (ATC misses). */
  atsTranslations: number;
  /** IOTLB misses (page walks) for untranslated requests. */
  iotlbMisses: number;
  /** Translation latency charged, ns (before overlap). */
  translationNs: number;
  /** Bytes that went peer-to-peer below a switch. */
  p2pBytes: number;
  /** Physical pages touched (for the owner check). */
  phys: number[];
}

/** Where a DMA address lands: a peer BAR on a BUS_ADDR path, else translated. */
function resolve(
  dev: Device,
  addr: number,
  write: boolean,
  ats: boolean,
): { phys: number; p2p: boolean } {
  const world = dev.world;
  if (world.hasExt("pci-p2p")) {
    for (const peer of pciFabric(world).devices) {
      if (peer === dev) continue;
      for (const bar of peer.bars) {
        if (!bar || bar.start === null || !bar.mem) continue;
        const bus = Number(bar.start + bar.busOffset);
        if (addr < bus || addr >= bus + Number(bar.size)) continue;
        if (calcMapTypeAndDist(peer, dev as PciDev, false).mapType === PciP2pdmaMapType.BUS_ADDR) {
          return { phys: addr - Number(bar.busOffset), p2p: true };
        }
      }
    }
  }
  if (iommuCoreOf(world)?.devIommu(dev)) {
    return { phys: iommuTranslate(dev, addr, write, { untranslated: !ats }).phys, p2p: false };
  }
  return { phys: addr - dmaDev(dev).dmaOffset, p2p: false };
}

/**
 * One DMA by `dev` over the page-sized pieces of `pieces` (DMA address,
 * length), reading into / writing from `data` in order. Throws the IOMMU
 * fault of the first refused page before touching memory.
 */
export function nicDma(
  dev: Device,
  pieces: readonly { addr: number; len: number }[],
  write: boolean,
  ats: boolean,
  data: Uint8Array,
): DmaResult {
  const world = dev.world;
  const info = iommuCoreOf(world)?.devIommu(dev) ?? null;
  const st0 = info ? { ...info.stats } : null;
  const plan: { phys: number; off: number; n: number }[] = [];
  let p2pBytes = 0;
  let off = 0;
  for (const p of pieces) {
    let a = p.addr;
    let left = p.len;
    while (left > 0) {
      const n = Math.min(left, 4096 - (a % 4096));
      const r = resolve(dev, a, write, ats);
      plan.push({ phys: r.phys, off, n });
      if (r.p2p) p2pBytes += n;
      off += n;
      a += n;
      left -= n;
    }
  }
  for (const x of plan) {
    const view = data.subarray(x.off, x.off + x.n);
    if (write) world.mem.write(x.phys, view);
    else world.mem.readInto(x.phys, view);
  }
  const stats = deviceDmaStats(dev);
  if (write) stats.bytesWritten += off;
  else stats.bytesRead += off;
  stats.p2pBytes += p2pBytes;
  const st1 = info?.stats;
  return {
    bytes: off,
    atsTranslations: st0 && st1 ? st1.atcMisses - st0.atcMisses : 0,
    iotlbMisses: st0 && st1 ? st1.iotlbMisses - st0.iotlbMisses : 0,
    translationNs: st0 && st1 ? st1.costNs - st0.costNs : 0,
    p2pBytes,
    phys: plan.map((x) => x.phys),
  };
}

/** One directional resource a transfer crosses. */
export interface FlowHop {
  /** Resource id (`up:0000:04:00.0`, `rc:...`, `wire:a->b`). */
  readonly id: string;
  /** Capacity, GB/s. */
  readonly capacity: number;
  /** Usage weight (root-complex P2P factor). */
  readonly weight: number;
}

/** A transfer in flight, for max-min sharing between concurrent transfers. */
export interface ActiveFlow {
  /** The resources it crosses. */
  readonly hops: readonly FlowHop[];
}

/** The world's transfers in flight (all NICs). */
export function activeFlows(world: Kernel): Set<ActiveFlow> {
  return world.ext("mlx5.flows", () => new Set<ActiveFlow>());
}

/**
 * Rate of `flow` among every transfer in flight in `world` (max-min fair
 * shares by progressive filling, pci-p2p's `maxMinFair`), GB/s.
 */
export function sharedGBps(world: Kernel, flow: ActiveFlow): number {
  const flows = [...activeFlows(world)];
  if (!flows.includes(flow)) flows.push(flow);
  const caps = new Map<string, number>();
  for (const f of flows) for (const h of f.hops) caps.set(h.id, h.capacity);
  const rates = maxMinFair(
    flows.map((f) => ({ hops: f.hops, demand: Infinity })),
    (id) => caps.get(id)!,
  );
  return rates[flows.indexOf(flow)]!;
}

/** Transfer rates of the NIC's paths, from the pci-p2p bandwidth model. */
export class DmaCost {
  /** The bandwidth model. */
  readonly bw: BandwidthModel;
  /** Parameters. */
  readonly params: NicCostParams;

  /** A cost model over `bw`. */
  constructor(bw: BandwidthModel, params: Partial<NicCostParams> = {}) {
    this.bw = bw;
    this.params = { ...DEFAULT_NIC_COST, ...params };
  }

  /** GB/s of the links between `nic` and system memory (data going `dir`). */
  memoryGBps(nic: PciDev, dir: "up" | "down"): number {
    let rate = Infinity;
    for (let d: PciDev | null = nic; d; d = pciUpstreamBridge(d)) {
      const r = this.bw.linkResource(d, dir);
      if (r) rate = Math.min(rate, r.capacity);
    }
    return rate;
  }

  /** GB/s of a P2P transfer from `src` to `dst` (the routed path). */
  p2pGBps(src: PciDev, dst: PciDev): number {
    return this.bw.soloGBps(src, dst);
  }

  /**
   * GB/s between `nic` and the memory at `phys`: a peer's BAR (P2P route,
   * data direction by `write`) or system memory.
   */
  pathGBps(nic: PciDev, phys: number, write: boolean): number {
    for (const peer of this.bw.fabric.devices) {
      if (peer === nic) continue;
      for (const bar of peer.bars) {
        if (!bar || bar.start === null || !bar.mem) continue;
        const s = Number(bar.start);
        if (phys >= s && phys < s + Number(bar.size)) {
          return write ? this.p2pGBps(nic, peer) : this.p2pGBps(peer, nic);
        }
      }
    }
    return this.memoryGBps(nic, write ? "up" : "down");
  }

  /**
   * The resources a transfer between `nic` and the memory at `phys`
   * crosses (data toward memory when `write`): the routed P2P path for a
   * peer's BAR, else the NIC's links up to the root port.
   */
  pathHops(nic: PciDev, phys: number, write: boolean): FlowHop[] {
    for (const peer of this.bw.fabric.devices) {
      if (peer === nic) continue;
      for (const bar of peer.bars) {
        if (!bar || bar.start === null || !bar.mem) continue;
        const s = Number(bar.start);
        if (phys >= s && phys < s + Number(bar.size)) {
          const r = write ? this.bw.route(nic, peer) : this.bw.route(peer, nic);
          return r.hops.map((h) => ({ id: h.res.id, capacity: h.res.capacity, weight: h.weight }));
        }
      }
    }
    const out: FlowHop[] = [];
    for (let d: PciDev | null = nic; d; d = pciUpstreamBridge(d)) {
      const r = this.bw.linkResource(d, write ? "up" : "down");
      if (r) out.push({ id: r.id, capacity: r.capacity, weight: 1 });
    }
    return out;
  }

  /** Overlapped translation stall of `translationNs` worth of misses. */
  stallNs(translationNs: number): number {
    return translationNs / this.params.translationParallelism.value;
  }
}
