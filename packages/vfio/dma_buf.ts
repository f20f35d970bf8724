/**
 * DOC: VFIO_DEVICE_FEATURE_DMA_BUF (drivers/vfio/pci/vfio_pci_dmabuf.c)
 *
 * A user exports ranges of one BAR as a dma-buf fd. Validation follows
 * `vfio_pci_core_feature_dma_buf` (v6.19) in order:
 *
 * 1. `vfio_check_feature`: SET is -EINVAL, then PROBE answers 0 (even
 *    without GET), then neither GET nor SET is -EINVAL;
 * 2. `nr_ranges == 0` or `flags != 0`: -EINVAL;
 * 3. `region_index >= VFIO_PCI_ROM_REGION_INDEX`: -ENODEV;
 * 4. each range: offset and length page aligned, length non-zero, else
 *    -EINVAL; the summed length overflowing, or reaching the
 *    `DMA_IOVA_USE_SWIOTLB` bit (bit 63): -EINVAL;
 * 5. `pcim_p2pdma_provider(pdev, bar)` missing: -EINVAL; a range whose
 *    `start + offset` or `+ length` overflows: -EOVERFLOW; past the end of
 *    the BAR: -EINVAL (`vfio_pci_core_fill_phys_vec`);
 * 6. the device registration is gone (here: the device is not open, checked
 *    first since the ioctl needs an open device fd): -ENODEV.
 *
 * The buffer starts revoked when memory is disabled. Exporter rules:
 *
 * - `attach`: -EOPNOTSUPP without `peer2peer`; -ENODEV while revoked; in
 *   v7.1 then -EOPNOTSUPP for importers that cannot be revoked
 *   (`dma_buf_attach_revocable`);
 * - `pin`: v6.19 refuses (-EOPNOTSUPP: a NULL `.pin` would have meant
 *   "pinning allowed"); v7.1 has no `.pin`, so revocable pinned importers
 *   (iommufd) are fine;
 * - `map_dma_buf`: -ENODEV while revoked, else `dma_buf_phys_vec_to_sgt`
 *   with the BAR's P2P provider (absent under the get_pfn RFC, whose vfio
 *   patches had the P2P mapping code stripped);
 * - the pfn mechanisms the world enables (`dma-buf.pfn`): the RFC's
 *   `get_pfn` (-ENODEV revoked, -EINVAL past the end, `max_order` 0 as the
 *   RFC has it), the separate pfn attachment (memory model `revocable`,
 *   ranges with the provider and the largest aligned order), and PAL
 *   (`map_phys`);
 * - revoke / unrevoke (`vfio_pci_dma_buf_move`, memory_lock held for
 *   write): v6.19 flips `revoked` under the reservation lock and calls
 *   `dma_buf_move_notify`; v7.1 runs the documented revoke sequence
 *   (invalidate, wait for fences, wait for every unmap) and unrevokes
 *   silently; device close revokes for good (`vfio_pci_dma_buf_cleanup`).
 * - `vfio_pci_dma_buf_iommufd_map`: the private interconnect for iommufd
 *   (resv held): -EOPNOTSUPP for a foreign buffer, then -ENODEV while
 *   revoked, then -EOPNOTSUPP for a multi-range one, else the single
 *   physical range.
 *
 * Locking: export takes `memory_lock` for write to link the buffer;
 * `move` runs under `memory_lock` (write) and takes the reservation lock.
 *
 * @module
 */
import { KernelError, O_ACCMODE, O_CLOEXEC } from "@dmalab/kernel";
import {
  type DmaBuf,
  type DmaBufAttachment,
  dmaBufAttachRevocable,
  dmaBufExport,
  dmaBufFreeSgt,
  dmaBufMoveNotify,
  type DmaBufOps,
  type DmaBufPfnRange,
  dmaBufPfnVariant,
  type DmaBufPhysList,
  dmaBufPhysVecToSgt,
  DmaBufRevocable,
  dmaBufVersion,
  type PhysVec,
  revokeStates,
} from "@dmalab/dma-buf";
import { type P2pdmaProvider, pcimP2pdmaProvider } from "@dmalab/pci-p2p";
import {
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_PCI_ROM_REGION_INDEX,
} from "./constants.ts";
import type { VfioDmaBufLink, VfioPciCoreDevice } from "./device.ts";

const PAGE = 4096;

/** `struct vfio_region_dma_range`. */
export interface VfioRegionDmaRange {
  /** Offset into the BAR. */
  readonly offset: number;
  /** Bytes. */
  readonly length: number;
}

/** `struct vfio_device_feature_dma_buf`. */
export interface VfioDeviceFeatureDmaBuf {
  /** `region_index` (the BAR). */
  readonly regionIndex: number;
  /** `open_flags` for the new fd (O_RDWR, O_CLOEXEC). */
  readonly openFlags: number;
  /** `flags` (must be 0). */
  readonly flags: number;
  /** `dma_ranges[]` (`nr_ranges` is its length). */
  readonly dmaRanges: readonly VfioRegionDmaRange[];
}

/** What the export returns: the fd and, for convenience, the buffer. */
export interface VfioDmaBufExport {
  /** The new fd in the caller's table. */
  readonly fd: number;
  /** The buffer (the fd holds the reference). */
  readonly dmabuf: DmaBuf;
  /** The exporter's private state. */
  readonly priv: VfioPciDmaBuf;
}

/** `struct vfio_pci_dma_buf`. */
export class VfioPciDmaBuf implements VfioDmaBufLink {
  /** The buffer (set right after export). */
  dmabuf!: DmaBuf;
  /** The device, null after cleanup. */
  vdev: VfioPciCoreDevice | null;
  /** Total bytes. */
  readonly size: number;
  /** `phys_vec[]`. */
  readonly physVec: readonly PhysVec[];
  /** `provider`. */
  readonly provider: P2pdmaProvider;
  /** `revoked`. */
  revoked = false;
  /** The v7.1 revoke sequence helper. */
  revocable: DmaBufRevocable | null = null;

  /** Built by the feature ioctl. */
  constructor(vdev: VfioPciCoreDevice, size: number, physVec: PhysVec[], provider: P2pdmaProvider) {
    this.vdev = vdev;
    this.size = size;
    this.physVec = physVec;
    this.provider = provider;
  }

  /** `nr_ranges`. */
  get nrRanges(): number {
    return this.physVec.length;
  }

  /** The physical address of byte `off` of the buffer. */
  physOf(off: number): number {
    let base = 0;
    for (const v of this.physVec) {
      if (off < base + v.len) return Number(v.paddr) + (off - base);
      base += v.len;
    }
    throw new KernelError(
      "EINVAL",
      `vfio dma-buf: offset 0x${off.toString(16)} beyond ${this.size}`,
    );
  }

  /** Records the revoke state where the dma-buf core looks (checkers, `checkAccess`). */
  #publish(permanent: boolean): void {
    revokeStates.set(
      this.dmabuf,
      permanent ? "revoked-permanent" : this.revoked ? "revoked" : "ok",
    );
  }

  /** `vfio_pci_dma_buf_move` for this buffer (memory_lock held for write by the caller). */
  async move(revoked: boolean): Promise<void> {
    if (this.revoked === revoked) return;
    if (dmaBufVersion(this.dmabuf.world) === "7.1") {
      if (revoked) {
        await this.revocable!.revoke(false);
        this.revoked = true;
      } else {
        await this.dmabuf.resv.lock(null);
        this.revoked = false;
        this.revocable!.unrevoke();
        this.dmabuf.resv.unlock();
      }
      return;
    }
    await this.dmabuf.resv.lock(null);
    try {
      this.revoked = revoked;
      this.#publish(false);
      dmaBufMoveNotify(this.dmabuf);
    } finally {
      this.dmabuf.resv.unlock();
    }
  }

  /** `vfio_pci_dma_buf_cleanup` for this buffer: revoked for good, device link dropped. */
  async cleanup(): Promise<void> {
    if (dmaBufVersion(this.dmabuf.world) === "7.1") {
      await this.revocable!.revoke(true);
      this.revoked = true;
    } else {
      await this.dmabuf.resv.lock(null);
      try {
        this.revoked = true;
        this.#publish(true);
        dmaBufMoveNotify(this.dmabuf);
      } finally {
        this.dmabuf.resv.unlock();
      }
    }
    this.vdev = null;
  }

  /**
   * Revoked as the exporter's ops see it under the reservation lock: in
   * v7.1 the state the revoke sequence sets under the lock, in v6.19
   * `priv->revoked`.
   */
  get isRevoked(): boolean {
    return this.revocable ? this.revocable.state !== "ok" : this.revoked;
  }

  /** The ops check: -ENODEV once revoked. */
  checkNotRevoked(fn: string): void {
    if (this.isRevoked) throw new KernelError("ENODEV", `${fn}: ${this.dmabuf} is revoked`);
  }
}

const privOf = new WeakMap<DmaBuf, VfioPciDmaBuf>();

/** The vfio exporter state of `dmabuf`, or null for a buffer vfio did not export. */
export function vfioDmaBufPriv(dmabuf: DmaBuf): VfioPciDmaBuf | null {
  return privOf.get(dmabuf) ?? null;
}

/** Largest order `o` such that a 2^o-page block at `pfn` stays inside `[pfn, pfn+npages)` and is aligned. */
function alignedOrder(pfn: number, npages: number): number {
  let o = 0;
  while (o < 18 && pfn % 2 ** (o + 1) === 0 && npages >= 2 ** (o + 1)) o++;
  return o;
}

function makeOps(priv: VfioPciDmaBuf, v71: boolean): DmaBufOps {
  const ops: DmaBufOps = {
    attach(_dmabuf, attach) {
      if (!attach.peer2peer) {
        throw new KernelError(
          "EOPNOTSUPP",
          `vfio_pci_dma_buf_attach: ${attach} does not allow peer2peer`,
        );
      }
      // A revoked buffer answers -ENODEV before the revocability test.
      priv.checkNotRevoked("vfio_pci_dma_buf_attach");
      if (v71 && !dmaBufAttachRevocable(attach)) {
        throw new KernelError(
          "EOPNOTSUPP",
          `vfio_pci_dma_buf_attach: ${attach} cannot be revoked (dma_buf_attach_revocable)`,
        );
      }
    },
    release() {
      priv.vdev?.dmabufs.delete(priv);
      priv.vdev = null;
    },
    mapDmaBuf(attach, dir) {
      attach.dmabuf.resv.assertHeld("vfio_pci_dma_buf_map");
      priv.checkNotRevoked("vfio_pci_dma_buf_map");
      return dmaBufPhysVecToSgt(attach, priv.provider, priv.physVec, priv.size, dir);
    },
    unmapDmaBuf(attach, sgt, dir) {
      dmaBufFreeSgt(attach, sgt, dir);
    },
    getPfn(attach: DmaBufAttachment, pgoff: number) {
      attach.dmabuf.resv.assertHeld("vfio_pci_dma_buf_get_pfn");
      priv.checkNotRevoked("vfio_pci_dma_buf_get_pfn");
      if (pgoff * PAGE >= priv.size) {
        throw new KernelError(
          "EINVAL",
          `vfio_pci_dma_buf_get_pfn: pgoff ${pgoff} beyond ${priv.size}`,
        );
      }
      return { pfn: Math.floor(priv.physOf(pgoff * PAGE) / PAGE), maxOrder: 0 };
    },
    pfnMemoryModel: "revocable",
    pfnAttach() {
      priv.checkNotRevoked("vfio_pci_dma_buf_pfn_attach");
    },
    pfnMap(pa, pgoff, npages): DmaBufPfnRange[] {
      pa.dmabuf.resv.assertHeld("vfio_pci_dma_buf_pfn_map");
      priv.checkNotRevoked("vfio_pci_dma_buf_pfn_map");
      if ((pgoff + npages) * PAGE > priv.size || npages <= 0) {
        throw new KernelError(
          "EINVAL",
          `vfio_pci_dma_buf_pfn_map: [${pgoff}, +${npages}) beyond ${priv.size}`,
        );
      }
      const out: DmaBufPfnRange[] = [];
      let base = 0;
      for (const v of priv.physVec) {
        const first = Math.max(pgoff, base / PAGE);
        const last = Math.min(pgoff + npages, (base + v.len) / PAGE);
        if (first < last) {
          const pfn = Number(v.paddr) / PAGE + (first - base / PAGE);
          out.push({
            pfn,
            npages: last - first,
            pgoff: first,
            provider: priv.provider,
            mmio: true,
            maxOrder: alignedOrder(pfn, (base + v.len) / PAGE - first),
          });
        }
        base += v.len;
      }
      return out;
    },
    pfnUnmap() {},
    mapPhys(attach): DmaBufPhysList {
      attach.dmabuf.resv.assertHeld("vfio_pci_dma_buf_map_phys");
      priv.checkNotRevoked("vfio_pci_dma_buf_map_phys");
      return { length: priv.physVec.length, phys: priv.physVec, mmio: true };
    },
    unmapPhys() {},
    mappingTypes: ["PAL", "SGT_P2P"],
  };
  if (dmaBufPfnVariant(priv.vdev!.world) === "rfc-get-pfn") {
    // The RFC carried Vivek's vfio patches with the P2P mapping code
    // stripped: get_pfn only, no map_dma_buf.
    delete ops.mapDmaBuf;
    delete ops.unmapDmaBuf;
  }
  if (!v71) {
    ops.pin = () => {
      throw new KernelError(
        "EOPNOTSUPP",
        "vfio_pci_dma_buf_pin: vfio dma-bufs cannot be pinned (v6.19)",
      );
    };
    ops.unpin = () => {};
  }
  return ops;
}

/**
 * `VFIO_DEVICE_FEATURE` with `VFIO_DEVICE_FEATURE_DMA_BUF`
 * (`vfio_pci_core_feature_dma_buf`): exports ranges of a BAR. `flags` are
 * the feature flags (`VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF`).
 * Returns null for a PROBE.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { VfioPciCoreDevice, vfioPciCoreFeatureDmaBuf, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET } from "@dmalab/vfio";
 * const world = new Kernel({ variants: { "dma-buf.pfn": "pfn-attachment" } });
 * const vdev = new VfioPciCoreDevice(world, defaultMachine(world).gpu);
 * const size = await world.runTask("qemu", async () => {
 *   await vdev.open();
 *   const e = await vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, {
 *     regionIndex: 1, openFlags: 2, flags: 0, dmaRanges: [{ offset: 0, length: 1 << 30 }],
 *   });
 *   return e!.dmabuf.size;
 * });
 * size; // 1073741824
 * ```
 */
export async function vfioPciCoreFeatureDmaBuf(
  vdev: VfioPciCoreDevice,
  flags: number,
  arg: VfioDeviceFeatureDmaBuf,
): Promise<VfioDmaBufExport | null> {
  // The ioctl comes through an open device fd; a closed device has no
  // registration to take (vfio_device_try_get_registration).
  if (!vdev.opened) {
    throw new KernelError("ENODEV", `VFIO_DEVICE_FEATURE_DMA_BUF: ${vdev.pdev.name} is not open`);
  }
  // vfio_ioctl_device_feature: unknown flag bits, and GET with SET unless
  // probing, are -EINVAL before the feature is dispatched.
  const known = 0xffff | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET |
    VFIO_DEVICE_FEATURE_PROBE;
  if (flags & ~known) {
    throw new KernelError(
      "EINVAL",
      `VFIO_DEVICE_FEATURE: unknown flags 0x${
        ((flags & ~known) >>> 0).toString(16)
      } (vfio_ioctl_device_feature)`,
    );
  }
  if (
    !(flags & VFIO_DEVICE_FEATURE_PROBE) && (flags & VFIO_DEVICE_FEATURE_SET) &&
    (flags & VFIO_DEVICE_FEATURE_GET)
  ) {
    throw new KernelError(
      "EINVAL",
      "VFIO_DEVICE_FEATURE: GET and SET together without PROBE (vfio_ioctl_device_feature)",
    );
  }
  const feature = flags & 0xffff;
  if (feature !== VFIO_DEVICE_FEATURE_DMA_BUF) {
    throw new KernelError("ENOTTY", `VFIO_DEVICE_FEATURE: feature ${feature} is not DMA_BUF`);
  }
  // vfio_check_feature: only GET is supported.
  if (flags & VFIO_DEVICE_FEATURE_SET) {
    throw new KernelError(
      "EINVAL",
      "VFIO_DEVICE_FEATURE_DMA_BUF: SET is not supported (vfio_check_feature)",
    );
  }
  // PROBE is answered before the "GET or SET required" rule, so a bare
  // PROBE reports the feature as supported (vfio_check_feature).
  if (flags & VFIO_DEVICE_FEATURE_PROBE) return null;
  if (!(flags & VFIO_DEVICE_FEATURE_GET)) {
    throw new KernelError(
      "EINVAL",
      "VFIO_DEVICE_FEATURE_DMA_BUF: only GET is supported (vfio_check_feature)",
    );
  }
  const einval = (why: string): never => {
    throw new KernelError(
      "EINVAL",
      `VFIO_DEVICE_FEATURE_DMA_BUF: ${why} (vfio_pci_core_feature_dma_buf)`,
    );
  };
  if (arg.dmaRanges.length === 0) einval("nr_ranges is 0");
  if (arg.flags !== 0) einval(`flags 0x${arg.flags.toString(16)} must be 0`);
  if (arg.regionIndex >= VFIO_PCI_ROM_REGION_INDEX) {
    throw new KernelError(
      "ENODEV",
      `VFIO_DEVICE_FEATURE_DMA_BUF: region ${arg.regionIndex} is not a BAR (vfio_pci_core_feature_dma_buf)`,
    );
  }
  // validate_dmabuf_input
  let length = 0n;
  for (const r of arg.dmaRanges) {
    if (r.offset % PAGE !== 0 || r.length % PAGE !== 0 || r.length === 0) {
      einval(
        `range {0x${r.offset.toString(16)}, 0x${
          r.length.toString(16)
        }} is not page aligned or empty`,
      );
    }
    length += BigInt(r.length);
    if (length > 2n ** 64n - 1n) einval("summed length overflows");
  }
  if (length & (1n << 63n)) einval("summed length reaches DMA_IOVA_USE_SWIOTLB");
  // vfio_pci_core_get_dmabuf_phys
  const pdev = vdev.pdev;
  const provider = pcimP2pdmaProvider(pdev, arg.regionIndex);
  if (!provider) einval(`BAR ${arg.regionIndex} has no P2P provider`);
  const bar = pdev.bars[arg.regionIndex]!;
  const start = bar.start!;
  const physVec: PhysVec[] = [];
  for (const r of arg.dmaRanges) {
    const addr = start + BigInt(r.offset);
    const end = addr + BigInt(r.length);
    if (addr > 2n ** 64n - 1n || end > 2n ** 64n - 1n) {
      throw new KernelError(
        "EOVERFLOW",
        "VFIO_DEVICE_FEATURE_DMA_BUF: range overflows (vfio_pci_core_fill_phys_vec)",
      );
    }
    if (end > start + bar.size) einval(`range ends past BAR ${arg.regionIndex}`);
    physVec.push({ paddr: addr, len: r.length });
  }
  const priv = new VfioPciDmaBuf(vdev, Number(length), physVec, provider!);
  const world = vdev.world;
  const v71 = dmaBufVersion(world) === "7.1";
  const dmabuf = dmaBufExport(world, {
    expName: "vfio_pci",
    owner: "vfio_pci_core",
    ops: makeOps(priv, v71),
    size: Number(length),
    flags: arg.openFlags,
    priv,
  });
  priv.dmabuf = dmabuf;
  privOf.set(dmabuf, priv);
  if (v71) priv.revocable = new DmaBufRevocable(dmabuf);
  await vdev.memoryLock.downWrite();
  try {
    await dmabuf.resv.lock(null);
    priv.revoked = !vdev.memoryEnabled;
    revokeStates.set(dmabuf, priv.revoked ? "revoked" : "ok");
    vdev.dmabufs.add(priv);
    dmabuf.resv.unlock();
  } finally {
    vdev.memoryLock.upWrite();
  }
  const fd = dmabuf.fd(arg.openFlags & (O_ACCMODE | O_CLOEXEC));
  return { fd, dmabuf, priv };
}

/**
 * `vfio_pci_dma_buf_iommufd_map(attach, &phys)`: the private interconnect
 * iommufd uses (resv held). -EOPNOTSUPP for a non-vfio or multi-range
 * buffer, then -ENODEV while revoked, then -EOPNOTSUPP for a multi-range
 * buffer.
 */
export function vfioPciDmaBufIommufdMap(attach: DmaBufAttachment): PhysVec {
  const buf = attach.dmabuf;
  buf.resv.assertHeld("vfio_pci_dma_buf_iommufd_map");
  const priv = privOf.get(buf);
  if (!priv) {
    throw new KernelError(
      "EOPNOTSUPP",
      `vfio_pci_dma_buf_iommufd_map: ${buf} is not a VFIO dma-buf`,
    );
  }
  // The revoked test comes before the single-range rule.
  priv.checkNotRevoked("vfio_pci_dma_buf_iommufd_map");
  if (priv.nrRanges !== 1) {
    throw new KernelError(
      "EOPNOTSUPP",
      `vfio_pci_dma_buf_iommufd_map: ${priv.nrRanges} ranges (only 1 supported)`,
    );
  }
  return priv.physVec[0]!;
}
