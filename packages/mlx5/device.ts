/**
 * DOC: the mlx5 device (drivers/net/ethernet/mellanox/mlx5/core, drivers/infiniband/hw/mlx5/main.c)
 *
 * An mlx5-like RDMA function bound to a pci-p2p endpoint with the ATS
 * capability. `MLX5_CAP_GEN(ats)` follows the function's ATS enable (the
 * IOMMU driver enables ATS when it attaches the NIC to a translating
 * domain). The device owns memory keys (MRs), protection domains and the
 * cost model of its DMA (see dma.ts). Invariant checkers are registered at
 * probe: `mlx5:<bdf>` reports a dma-buf MR whose translation survived an
 * invalidate (a valid MTT entry while the mapping is stale or gone) and any
 * DMA that landed in device memory no longer backing the MR's buffer.
 *
 * Locking: probe and PD allocation are process context; the counters are
 * updated atomically from the DMA paths.
 *
 * @module
 */
import { dmaBitMask, type Kernel, KernelError } from "@dmalab/kernel";
import { type BandwidthModel, bandwidthModel, devIsPci, type PciDev } from "@dmalab/pci-p2p";
import { DmaCost, type NicCostParams } from "./dma.ts";
import type { Mlx5Mr } from "./mr.ts";

/** Counters of one device. */
export interface Mlx5Stats {
  /** MRs registered. */
  mrs: number;
  /** MRs whose mkey got `ma_translation_mode` (ATS). */
  atsMrs: number;
  /** ODP page faults on dma-buf MRs. */
  faults: number;
  /** MTT zaps from invalidate callbacks (UMR with MLX5_IB_UPD_XLT_ZAP). */
  zaps: number;
  /** Invalidate warnings of pinned umems. */
  pinnedInvalidateWarnings: number;
  /** Work requests executed. */
  wrs: number;
  /** Payload bytes moved. */
  bytes: number;
  /** ATS translation requests. */
  atsTranslations: number;
  /** IOTLB misses for untranslated requests. */
  iotlbMisses: number;
  /** Translation latency charged before overlap, ns. */
  translationNs: number;
  /** Virtual ns spent moving data. */
  busyNs: number;
  /** Error completions. */
  errors: number;
}

/** Options for {@linkcode mlx5Probe}. */
export interface Mlx5ProbeOptions {
  /** The bandwidth model to cost DMA with (default: one over the world's fabric). */
  bandwidth?: BandwidthModel;
  /** NIC cost parameters. */
  cost?: Partial<NicCostParams>;
  /** ODP capability (dynamic dma-buf MRs need it; default true). */
  odp?: boolean;
}

/** A protection domain (`struct ib_pd`). */
export class IbPd {
  /** The device. */
  readonly dev: Mlx5Device;
  /** pdn. */
  readonly pdn: number;
  /** Built by {@linkcode Mlx5Device.allocPd}. */
  constructor(dev: Mlx5Device, pdn: number) {
    this.dev = dev;
    this.pdn = pdn;
  }
}

/** The driver state of one mlx5 function. */
export class Mlx5Device {
  /** The world. */
  readonly world: Kernel;
  /** The PCI function. */
  readonly pdev: PciDev;
  /** `mlx5_N`. */
  readonly name: string;
  /** The DMA cost model. */
  readonly cost: DmaCost;
  /** ODP capability. */
  readonly odp: boolean;
  /** Live memory keys. */
  readonly mkeys: Map<number, Mlx5Mr> = new Map();
  /** Counters. */
  readonly stats: Mlx5Stats = {
    mrs: 0,
    atsMrs: 0,
    faults: 0,
    zaps: 0,
    pinnedInvalidateWarnings: 0,
    wrs: 0,
    bytes: 0,
    atsTranslations: 0,
    iotlbMisses: 0,
    translationNs: 0,
    busyNs: 0,
    errors: 0,
  };
  /** DMA that hit device memory not backing the MR's buffer. */
  readonly staleDma: string[] = [];
  #nextKey = 0x100;
  #nextPd = 1;

  /** Built by {@linkcode mlx5Probe}. */
  constructor(world: Kernel, pdev: PciDev, name: string, options: Mlx5ProbeOptions) {
    this.world = world;
    this.pdev = pdev;
    this.name = name;
    this.cost = new DmaCost(options.bandwidth ?? bandwidthModel(world), options.cost ?? {});
    this.odp = options.odp ?? true;
  }

  /** `MLX5_CAP_GEN(mdev, ats)`: ATS is enabled on the function. */
  get capAts(): boolean {
    return this.pdev.ats.cap && this.pdev.ats.enabled;
  }

  /** `ib_alloc_pd`. */
  allocPd(): IbPd {
    return new IbPd(this, this.#nextPd++);
  }

  /** @internal a fresh mkey index. */
  newKey(): number {
    const k = this.#nextKey;
    this.#nextKey += 0x100;
    return k;
  }

  /** Violations of the MR invariants. */
  checkInvariants(): string[] {
    const out: string[] = [...this.staleDma];
    for (const mr of this.mkeys.values()) out.push(...mr.checkInvariants());
    return out;
  }
}

/**
 * `mlx5_ib_add` on `pdev`: driver "mlx5_core", 64-bit DMA mask, checker
 * `mlx5:<bdf>`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { mlx5Probe } from "@dmalab/mlx5";
 * const world = new Kernel();
 * const nic = mlx5Probe(defaultMachine(world).nic);
 * nic.name; // "mlx5_0"
 * nic.capAts; // false: no IOMMU enabled ATS
 * ```
 */
export function mlx5Probe(pdev: PciDev, options: Mlx5ProbeOptions = {}): Mlx5Device {
  if (!devIsPci(pdev)) throw new KernelError("ENODEV", "mlx5: not a PCI device");
  const world = pdev.world;
  const all = world.ext("mlx5.devices", () => new Map<PciDev, Mlx5Device>());
  if (all.has(pdev) || pdev.driver) {
    throw new KernelError("EBUSY", `mlx5 ${pdev.name}: already bound to ${pdev.driver}`);
  }
  pdev.setMaskAndCoherent(dmaBitMask(64));
  const dev = new Mlx5Device(world, pdev, `mlx5_${all.size}`, options);
  all.set(pdev, dev);
  pdev.driver = "mlx5_core";
  world.addChecker(`mlx5:${pdev.name}`, () => dev.checkInvariants());
  return dev;
}

/** The mlx5 device bound to `pdev`, if any. */
export function mlx5Of(pdev: PciDev): Mlx5Device | null {
  return pdev.world.ext("mlx5.devices", () => new Map<PciDev, Mlx5Device>()).get(pdev) ?? null;
}
