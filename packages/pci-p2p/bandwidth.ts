/**
 * DOC: PCIe bandwidth model
 *
 * Link capacity per direction from generation and width with the line code
 * of each generation (8b/10b for Gen1-2, 128b/130b for Gen3-5, 242/256 FLIT
 * for Gen6), then the data-link and transaction-layer overheads of the
 * pcie-bench model (ACK and flow-control DLLPs, SKP ordered sets, 24 bytes of
 * framing + header per 64-bit memory-write TLP) for the link's Max Payload
 * Size. Links are full duplex: each direction is its own resource.
 *
 * A transfer is routed over the actual path: below a common switch when
 * P2PDMA says BUS_ADDR, else up to the Root Port, through the root complex
 * (and the inter-host-bridge / inter-socket fabric when the ends sit under
 * different host bridges / NUMA nodes), and down again. Root-complex P2P
 * carries a per-CPU-vendor factor. Concurrent flows share every directional
 * link max-min fairly (progressive filling). Figures without a public
 * source are parameters with a `label` saying so; later packages feed the
 * IOMMU/ATS costs from here.
 *
 * Locking: pure computation over a built fabric; synchronous.
 *
 * @module
 */
import { type Kernel, KernelError } from "@dmalab/kernel";
import { mapTypeName, PciP2pdmaMapType } from "./constants.ts";
import { type PciDev, type PciLink, pciUpstreamBridge } from "./fabric.ts";
import { type PciFabric, pciFabric } from "./machine.ts";
import { calcMapTypeAndDist } from "./p2pdma.ts";

/** A model parameter and where its value comes from. */
export interface Labelled<T> {
  /** The value. */
  readonly value: T;
  /** Source, or "assumption: ..." when no public figure exists. */
  readonly label: string;
}

/** Parameters of the bandwidth and cost model. */
export interface BandwidthParams {
  /** Multiplier on link usage for P2P crossing a root complex, per CPU vendor. */
  readonly rcP2pUsage: Labelled<Readonly<Record<string, number>>>;
  /** Root-complex P2P forwarding capacity per host bridge, GB/s per direction. */
  readonly rcForwardGBps: Labelled<number>;
  /** Fabric between host bridges of one NUMA node, GB/s per direction. */
  readonly interHostBridgeGBps: Labelled<number>;
  /** Socket-to-socket interconnect, GB/s per direction. */
  readonly interSocketGBps: Labelled<number>;
  /** IOTLB reach (bytes covered with 4 KiB pages). */
  readonly iotlbReachBytes: Labelled<number>;
  /** Added latency of an IOTLB miss on a DMA read, ns. */
  readonly iotlbMissNs: Labelled<number>;
  /** Latency of a small DMA read with a hit, ns. */
  readonly dmaReadNs: Labelled<number>;
  /** An ATS translation request round trip (device ATC miss), ns. */
  readonly atsTranslationNs: Labelled<number>;
}

/** Default parameters (sources in the labels). */
export const DEFAULT_BANDWIDTH_PARAMS: BandwidthParams = {
  rcP2pUsage: {
    value: { AMD: 1.0, Intel: 1.2 },
    label:
      "AMD 1.0: 26.3 GB/s Gen4 x16 GPU P2P through Threadripper/EPYC root complexes (luigifcruz/stelline); Intel 1.2: NCCL INTEL_P2P_OVERHEAD (P2P split into 64 B TLPs); other vendors 1.0 (assumption)",
  },
  rcForwardGBps: {
    value: Number.POSITIVE_INFINITY,
    label: "assumption: no root-complex limit below the links (AMD measurements are link-bound)",
  },
  interHostBridgeGBps: {
    value: 128,
    label:
      "assumption: on-die fabric between host bridges of one socket, not the bottleneck in published P2P runs",
  },
  interSocketGBps: {
    value: 64,
    label:
      "assumption: socket link; cross-socket GPU P2P on 2x EPYC 9374F reached the same 26.3 GB/s as within a socket",
  },
  iotlbReachBytes: {
    value: 256 * 1024,
    label:
      "pcie-bench/data NFP6000 sweeps: throughput falls past ~256 KiB of 4 KiB pages (~64 entries)",
  },
  iotlbMissNs: {
    value: 250,
    label:
      "pcie-bench/data: 600 ns -> 826-880 ns median 64 B DMA read past the IOTLB reach (+230-280 ns)",
  },
  dmaReadNs: {
    value: 600,
    label: "pcie-bench/data: median 64 B DMA read latency, IOMMU off or hit",
  },
  atsTranslationNs: {
    value: 850,
    label:
      "assumption: no public figure; IOTLB miss (~250 ns) plus one PCIe request/completion round trip (~600 ns)",
  },
};

const GTS = [0, 2.5, 5, 8, 16, 32, 64];

/** Line-code efficiency of a generation (8b/10b, 128b/130b, FLIT 242/256). */
export function lineCode(gen: number): number {
  if (gen < 1 || gen > 6 || !Number.isInteger(gen)) {
    throw new RangeError(`PCIe gen ${gen} not in 1..6`);
  }
  return gen <= 2 ? 8 / 10 : gen <= 5 ? 128 / 130 : 242 / 256;
}

/** Raw capacity per direction after line coding, GB/s (Gen4 x16 = 31.5). */
export function linkRawGBps(gen: number, width: number): number {
  return (GTS[gen]! * width * lineCode(gen)) / 8;
}

/**
 * Share of the raw rate left for payload with posted 64-bit writes of
 * `mps` bytes: data-link overhead (one ACK and one FC update DLLP of 8 bytes
 * per 168 bytes, SKP ordered sets 4 per 1538) times `mps / (mps + 24)`
 * (framing, sequence, LCRC 8; header 4 + 12). Gen6 FLIT mode: DLLPs ride in
 * the flit (6 of 242 bytes) and a TLP costs its 16-byte header.
 */
export function tlpEfficiency(gen: number, mps: number): number {
  if (!(mps > 0)) throw new RangeError(`max payload size ${mps} must be > 0`);
  if (gen === 6) return (236 / 242) * (mps / (mps + 16));
  const dll = 1 - 8 / 168 - 8 / 168 - 4 / 1538;
  return dll * (mps / (mps + 24));
}

/** Payload GB/s per direction of a link (Gen4 x16, MPS 256: ~26.0). */
export function linkPayloadGBps(link: Pick<PciLink, "gen" | "width">, mps = 256): number {
  return linkRawGBps(link.gen, link.width) * tlpEfficiency(link.gen, mps);
}

/** One directional resource: a link direction or a fabric crossing. */
export interface BwResource {
  /** Stable id (`up:0000:03:00.0`, `rc:0000:00`, ...). */
  readonly id: string;
  /** Capacity, GB/s. */
  readonly capacity: number;
}

/** A routed transfer: the resources it uses and the usage weight on each. */
export interface BwRoute {
  /** Map type that decided the route. */
  readonly mapType: string;
  /** Resources in path order. */
  readonly hops: readonly { readonly res: BwResource; readonly weight: number }[];
}

/** Routes transfers over a fabric and shares bandwidth. */
export class BandwidthModel {
  /** The fabric. */
  readonly fabric: PciFabric;
  /** Parameters. */
  readonly params: BandwidthParams;
  readonly #res = new Map<string, BwResource>();
  readonly #linkRes = new Map<PciDev, [BwResource | null, BwResource | null]>();

  /** A model over `fabric` with `params` (defaults: {@linkcode DEFAULT_BANDWIDTH_PARAMS}). */
  constructor(fabric: PciFabric, params: Partial<BandwidthParams> = {}) {
    this.fabric = fabric;
    this.params = { ...DEFAULT_BANDWIDTH_PARAMS, ...params };
  }

  #resource(id: string, capacity: number): BwResource {
    let r = this.#res.get(id);
    if (!r) {
      r = { id, capacity };
      this.#res.set(id, r);
    }
    return r;
  }

  /** The directional link between `d` and the port above it (null when none: root bus, switch-internal). */
  linkResource(d: PciDev, dir: "up" | "down"): BwResource | null {
    let pair = this.#linkRes.get(d);
    if (!pair) {
      pair = [this.#makeLink(d, "up"), this.#makeLink(d, "down")];
      this.#linkRes.set(d, pair);
    }
    return dir === "up" ? pair[0] : pair[1];
  }

  #makeLink(d: PciDev, dir: "up" | "down"): BwResource | null {
    if (d.pciBus.isRoot || d.type === "switch_downstream" || d.isVirtfn) {
      return d.isVirtfn && d.physfn ? this.linkResource(d.physfn, dir) : null;
    }
    const above = d.pciBus.self;
    const l = d.link ?? above?.link;
    if (!l) return null;
    const mps = Math.min(d.mps, above?.mps ?? d.mps);
    return this.#resource(`${dir}:${d.name}`, linkPayloadGBps(l, mps));
  }

  /**
   * The route of a DMA write from `src` to `dst` (a P2P transfer): below
   * the common bridge for BUS_ADDR, through the root complex for
   * THRU_HOST_BRIDGE (ACS-redirected switch traffic climbs to the root port
   * and back). NOT_SUPPORTED fails with -EREMOTEIO as the DMA mapping would.
   */
  route(src: PciDev, dst: PciDev): BwRoute {
    const r = calcMapTypeAndDist(src, dst, false);
    if (r.mapType === PciP2pdmaMapType.NOT_SUPPORTED) {
      throw new KernelError(
        "EREMOTEIO",
        `bandwidth: ${src.name} -> ${dst.name}: P2P not supported on this path (calc_map_type_and_dist)`,
      );
    }
    const hops: { res: BwResource; weight: number }[] = [];
    const chain = (d: PciDev) => {
      const out: PciDev[] = [];
      for (let x: PciDev | null = d; x; x = pciUpstreamBridge(x)) out.push(x);
      return out;
    };
    const ca = chain(src);
    const cb = chain(dst);
    if (r.mapType === PciP2pdmaMapType.BUS_ADDR) {
      const common = ca.find((x) => cb.includes(x))!;
      for (const d of ca.slice(0, ca.indexOf(common))) {
        this.#push(hops, this.linkResource(d, "up"), 1);
      }
      for (const d of cb.slice(0, cb.indexOf(common)).reverse()) {
        this.#push(hops, this.linkResource(d, "down"), 1);
      }
      return { mapType: mapTypeName(r.mapType), hops };
    }
    for (const d of ca) this.#push(hops, this.linkResource(d, "up"), 1);
    const vendor = this.fabric.cpu?.vendor ?? "other";
    const usage = this.params.rcP2pUsage.value[vendor] ?? 1;
    const ha = src.host;
    const hb = dst.host;
    this.#push(hops, this.#resource(`rc:${ha.name}`, this.params.rcForwardGBps.value), 1);
    if (ha !== hb) {
      if (ha.numaNode === hb.numaNode) {
        this.#push(
          hops,
          this.#resource(`node:${ha.numaNode}`, this.params.interHostBridgeGBps.value),
          1,
        );
      } else {
        const [a, b] = [ha.numaNode, hb.numaNode];
        this.#push(hops, this.#resource(`sys:${a}->${b}`, this.params.interSocketGBps.value), 1);
      }
      this.#push(hops, this.#resource(`rc:${hb.name}`, this.params.rcForwardGBps.value), 1);
    }
    for (const d of cb.slice().reverse()) this.#push(hops, this.linkResource(d, "down"), usage);
    return { mapType: mapTypeName(r.mapType), hops };
  }

  #push(hops: { res: BwResource; weight: number }[], res: BwResource | null, weight: number): void {
    if (res) hops.push({ res, weight });
  }

  /** Rate of one transfer alone, GB/s. */
  soloGBps(src: PciDev, dst: PciDev): number {
    return this.share([{ src, dst }])[0]!;
  }

  /**
   * Max-min fair rates (GB/s) of concurrent transfers: progressive filling
   * over every directional resource. `demand` caps a flow (default none).
   */
  share(flows: readonly { src: PciDev; dst: PciDev; demand?: number }[]): number[] {
    const idx = new Map<BwResource, number>();
    const caps: number[] = [];
    const flowRes: Int32Array[] = [];
    const flowW: Float64Array[] = [];
    for (const f of flows) {
      const hops = this.route(f.src, f.dst).hops;
      const r = new Int32Array(hops.length);
      const w = new Float64Array(hops.length);
      for (let k = 0; k < hops.length; k++) {
        const h = hops[k]!;
        let i = idx.get(h.res);
        if (i === undefined) {
          i = caps.length;
          idx.set(h.res, i);
          caps.push(h.res.capacity);
        }
        r[k] = i;
        w[k] = h.weight;
      }
      flowRes.push(r);
      flowW.push(w);
    }
    return progressiveFill(
      flowRes,
      flowW,
      Float64Array.from(caps),
      flows.map((f) => f.demand ?? Infinity),
    );
  }

  /** Time to move `bytes` at `gbps`, ns. */
  static transferNs(bytes: number, gbps: number): number {
    return bytes / gbps;
  }

  /**
   * Expected IOTLB miss share of uniformly random accesses over a
   * `windowBytes` working set with `pageBytes` IOMMU pages.
   */
  iotlbMissRate(windowBytes: number, pageBytes = 4096): number {
    const reach = (this.params.iotlbReachBytes.value / 4096) * pageBytes;
    return windowBytes <= reach ? 0 : 1 - reach / windowBytes;
  }
}

/** A flow for {@linkcode maxMinFair}. */
export interface FairFlow {
  /** Resources it crosses and its usage weight on each. */
  readonly hops: readonly { readonly id: string; readonly weight: number }[];
  /** Cap on its rate. */
  readonly demand: number;
}

/**
 * Progressive filling: raise every unfrozen flow's rate together until a
 * resource saturates or a flow reaches its demand; freeze those flows;
 * repeat. Returns the max-min fair rates.
 */
export function maxMinFair(flows: readonly FairFlow[], capacity: (id: string) => number): number[] {
  const ids = new Map<string, number>();
  const caps: number[] = [];
  const flowRes: Int32Array[] = [];
  const flowW: Float64Array[] = [];
  for (const f of flows) {
    const r = new Int32Array(f.hops.length);
    const w = new Float64Array(f.hops.length);
    f.hops.forEach((h, k) => {
      let i = ids.get(h.id);
      if (i === undefined) {
        i = caps.length;
        ids.set(h.id, i);
        caps.push(capacity(h.id));
      }
      r[k] = i;
      w[k] = h.weight;
    });
    flowRes.push(r);
    flowW.push(w);
  }
  return progressiveFill(flowRes, flowW, Float64Array.from(caps), flows.map((f) => f.demand));
}

function progressiveFill(
  flowRes: readonly Int32Array[],
  flowW: readonly Float64Array[],
  cap: Float64Array,
  demand: readonly number[],
): number[] {
  const n = flowRes.length;
  const rate = new Float64Array(n);
  const frozen = new Uint8Array(n);
  const load = new Float64Array(cap.length);
  let active = n;
  for (let i = 0; i < n; i++) {
    if (flowRes[i]!.length === 0 && demand[i] === Infinity) {
      // no constrained resource (same function, or switch-internal): unlimited
      rate[i] = Infinity;
      frozen[i] = 1;
      active--;
    }
  }
  while (active > 0) {
    load.fill(0);
    for (let i = 0; i < n; i++) {
      if (frozen[i]) continue;
      const r = flowRes[i]!;
      const w = flowW[i]!;
      for (let k = 0; k < r.length; k++) load[r[k]!] += w[k]!;
    }
    let delta = Infinity;
    for (let j = 0; j < cap.length; j++) {
      if (load[j]! > 0) delta = Math.min(delta, cap[j]! / load[j]!);
    }
    for (let i = 0; i < n; i++) if (!frozen[i]) delta = Math.min(delta, demand[i]! - rate[i]!);
    if (!(delta < Infinity)) break;
    for (let j = 0; j < cap.length; j++) cap[j] -= delta * load[j]!;
    for (let i = 0; i < n; i++) {
      if (frozen[i]) continue;
      rate[i] += delta;
      let stop = rate[i]! >= demand[i]! - 1e-12;
      const r = flowRes[i]!;
      for (let k = 0; k < r.length && !stop; k++) if (cap[r[k]!]! <= 1e-9) stop = true;
      if (stop) {
        frozen[i] = 1;
        active--;
      }
    }
  }
  return Array.from(rate);
}

/** A bandwidth model of `world`'s fabric. */
export function bandwidthModel(
  world: Kernel,
  params: Partial<BandwidthParams> = {},
): BandwidthModel {
  return new BandwidthModel(pciFabric(world), params);
}
