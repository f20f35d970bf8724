/**
 * DOC: IOMMU_IOAS_MAP_FILE for a dma-buf (v6.19 "iommufd: Add DMABUF support", revoke per v7.1)
 *
 * When the fd of `IOMMU_IOAS_MAP_FILE` is a dma-buf, iommufd
 * (`iopt_map_dmabuf`):
 *
 * - attaches dynamically with its own dummy device and
 *   `allow_peer2peer`, importer op `invalidate_mappings` (`move_notify`
 *   before 7.1) = `iopt_revoke_notify`;
 * - under the reservation lock asks the exporter through the private
 *   interconnect `vfio_pci_dma_buf_iommufd_map`: only VFIO exporters
 *   (-EOPNOTSUPP otherwise), exactly one physical range (-EOPNOTSUPP),
 *   not revoked (-ENODEV); in v7.1 it first calls `dma_buf_pin()` (a
 *   revocable pinned importer, which vfio now accepts) and unpins if the
 *   exporter then refuses. Under Jason's
 *   mapping-types RFC (`dma-buf.pfn=pal`) the private call is replaced by
 *   a PAL attachment without a device and `dma_buf_pal_map_phys`, which
 *   allows several ranges; the list is given back on revoke;
 * - maps the slice like any file slice, with `IOMMU_MMIO`, and charges no
 *   locked memory;
 * - on invalidation (reservation lock held, `pages->mutex` taken) unmaps
 *   every area of the buffer from every domain and marks it revoked
 *   (`phys.len = 0`). A revoked buffer is never mapped again: new domains
 *   skip it, a new MAP_FILE fails with -ENODEV while the exporter is
 *   revoked, and user space must unmap and map again after the reset.
 *
 * The attachment lives while any area uses the buffer; the last unmap
 * unpins (7.1), detaches and drops the reference.
 *
 * Locking: map takes the reservation lock, then `pages->mutex` (the order
 * the invalidation also uses); the invalidation is synchronous.
 *
 * @module
 */
import { Device, type Kernel, KernelError } from "@dmalab/kernel";
import {
  type DmaBuf,
  type DmaBufAttachment,
  dmaBufDynamicAttach,
  dmaBufGet,
  dmaBufMappingAttach,
  dmaBufPalMapPhys,
  dmaBufPalUnmapPhys,
  dmaBufPfnVariant,
  type DmaBufPhysList,
  dmaBufVersion,
  isDmaBufFile,
  type PhysVec,
} from "@dmalab/dma-buf";
import { vfioPciDmaBufIommufdMap } from "@dmalab/vfio";
import type { IommufdCtx } from "./ctx.ts";
import type { IoptPages, IoptPagesSource } from "./io_pagetable.ts";

/** The iommufd misc device dma-buf attachments are made for. */
export function iommufdDummyDevice(world: Kernel): Device {
  return world.ext(
    "iommufd.device",
    () => new Device(world, "iommufd", { dmaMask: (1n << 64n) - 1n }),
  );
}

/** Source state of a dma-buf pages object (`pages->dmabuf`). */
export class IoptDmabufSource implements IoptPagesSource {
  /** "dmabuf". */
  readonly type = "dmabuf" as const;
  /** The buffer. */
  readonly dmabuf: DmaBuf;
  /** The attachment. */
  attach: DmaBufAttachment | null = null;
  /** `phys` (len 0 once revoked); the first range under PAL. */
  phys: PhysVec = { paddr: 0n, len: 0 };
  /** Every range (one from the private interconnect, any number from PAL). */
  ranges: readonly PhysVec[] = [];
  /** The PAL list held while mapped (mapping-types RFC). */
  palList: DmaBufPhysList | null = null;
  /** Pages objects using this source (one per map). */
  readonly pages: Set<IoptPages> = new Set();
  /** True once revoked. */
  revoked = false;
  /** Revocations received. */
  revocations = 0;
  /** Writable. */
  readonly writable: boolean;
  /** The ctx (for the io_pagetables of the pages). */
  readonly ctx: IommufdCtx;
  /** The IOAS the pages live in. */
  readonly ioasId: number;
  #pinned = false;

  /** Built by {@linkcode iommufdIoasMapDmabuf}. */
  constructor(ctx: IommufdCtx, ioasId: number, dmabuf: DmaBuf, writable: boolean) {
    this.ctx = ctx;
    this.ioasId = ioasId;
    this.dmabuf = dmabuf;
    this.writable = writable;
  }

  /** Bytes. */
  get length(): number {
    return this.dmabuf.size;
  }

  /** MMIO ranges are page aligned. */
  get startOffset(): number {
    return 0;
  }

  /** The slice's physical runs: nothing is pinned or charged. */
  pin(
    off: number,
    len: number,
  ): Promise<{ runs: { phys: number; length: number }[]; charge: number; unpin: () => void }> {
    if (this.revoked || this.phys.len === 0) {
      return Promise.reject(new KernelError("ENODEV", `iommufd: ${this.dmabuf} is revoked`));
    }
    const runs: { phys: number; length: number }[] = [];
    let base = 0;
    for (const v of this.ranges) {
      const s = Math.max(off, base);
      const e = Math.min(off + len, base + v.len);
      if (s < e) runs.push({ phys: Number(v.paddr) + (s - base), length: e - s });
      base += v.len;
    }
    return Promise.resolve({ runs, charge: 0, unpin: () => {} });
  }

  /** `iopt_revoke_notify`: the exporter holds the reservation lock. */
  revokeNotify(): void {
    this.revocations++;
    const iopt = this.ctx.ioas(this.ioasId).iopt;
    for (const pages of this.pages) {
      if (!pages.mutex.trylock()) {
        this.dmabuf.world.bug(
          "WARN",
          `WARNING: iopt_revoke_notify: pages->mutex of ${this.dmabuf} is held`,
        );
        continue;
      }
      try {
        iopt.revokePagesLocked(pages);
      } finally {
        pages.mutex.unlock();
      }
    }
    this.phys = { paddr: this.phys.paddr, len: 0 };
    this.revoked = true;
    if (this.palList && this.attach) {
      // PAL: after the invalidation the addresses are given back at once.
      dmaBufPalUnmapPhys(this.attach, this.palList);
      this.palList = null;
    }
  }

  /** Last area gone: unpin (7.1), detach, put. */
  async release(): Promise<void> {
    const a = this.attach;
    if (a && this.palList) {
      await this.dmabuf.resv.lock(null);
      dmaBufPalUnmapPhys(a, this.palList);
      this.palList = null;
      this.dmabuf.resv.unlock();
    }
    if (a) {
      if (this.#pinned) {
        await this.dmabuf.resv.lock(null);
        a.unpin();
        this.dmabuf.resv.unlock();
        this.#pinned = false;
      }
      await a.detach();
      this.attach = null;
    }
    this.dmabuf.put();
  }

  /**
   * Attach and fetch the ranges (`iopt_map_dmabuf`): the private vfio
   * interconnect, or PAL under the mapping-types RFC (`dma-buf.pfn=pal`).
   */
  async setup(): Promise<void> {
    const world = this.dmabuf.world;
    const ops = dmaBufVersion(world) === "7.1"
      ? { allowPeer2peer: true, invalidateMappings: () => this.revokeNotify() }
      : { allowPeer2peer: true, moveNotify: () => this.revokeNotify() };
    const pal = dmaBufPfnVariant(world) === "pal";
    this.attach = pal
      ? await dmaBufMappingAttach(this.dmabuf, null, ["PAL"], ops, this, {
        importerModule: "iommufd",
      })
      : await dmaBufDynamicAttach(this.dmabuf, iommufdDummyDevice(world), ops, this, {
        importerModule: "iommufd",
      });
    await this.dmabuf.resv.lock(null);
    try {
      // v7.1 pins first and only then asks the exporter for the range
      // (iopt_map_dmabuf: dma_buf_pin, then the private interconnect,
      // unpinning on its failure).
      if (dmaBufVersion(world) === "7.1") {
        await this.attach.pin();
        this.#pinned = true;
      }
      if (pal) {
        this.palList = dmaBufPalMapPhys(this.attach);
        this.ranges = this.palList.phys;
        this.phys = this.ranges[0] ?? { paddr: 0n, len: 0 };
      } else {
        this.phys = vfioPciDmaBufIommufdMap(this.attach);
        this.ranges = [this.phys];
      }
    } catch (e) {
      if (this.palList) {
        dmaBufPalUnmapPhys(this.attach, this.palList);
        this.palList = null;
      }
      if (this.#pinned) {
        this.attach.unpin();
        this.#pinned = false;
      }
      this.dmabuf.resv.unlock();
      await this.attach.detach();
      this.attach = null;
      throw e;
    }
    this.dmabuf.resv.unlock();
  }
}

/**
 * `IOMMU_IOAS_MAP_FILE` for a dma-buf fd (in the calling task's table).
 * Returns the IOVA. Errors in the kernel's order: the argument and IOAS
 * checks ({@linkcode IommufdCtx.checkMapFile}), -EBADF, -EINVAL for a file
 * that is not a dma-buf (memfd goes through `memfdSource`) or a slice past
 * its end, then from the attach: -EOPNOTSUPP for a non-VFIO buffer,
 * -ENODEV while the exporter is revoked, -EOPNOTSUPP for a multi-range
 * one, then the IOAS map errors.
 */
export async function iommufdIoasMapDmabuf(
  ctx: IommufdCtx,
  ioasId: number,
  flags: number,
  fd: number,
  start: number,
  length: number,
  iova?: number,
): Promise<number> {
  // The argument and IOAS checks come before the fd is looked at, and the
  // slice is checked against the buffer before iommufd attaches to it
  // (iommufd_ioas_map_file, iopt_map_file_pages, iopt_alloc_dmabuf_pages).
  ctx.checkMapFile(ioasId, flags, start, length, iova);
  const dmabuf = dmaBufGet(ctx.world, fd);
  if (!isDmaBufFile(dmabuf.file)) {
    throw new KernelError("EINVAL", "IOMMU_IOAS_MAP_FILE: not a dma-buf");
  }
  if (start + length > dmabuf.size) {
    dmabuf.put();
    throw new KernelError(
      "EINVAL",
      `IOMMU_IOAS_MAP_FILE: [${start}, +${length}) beyond ${dmabuf} (iopt_alloc_dmabuf_pages)`,
    );
  }
  const src = new IoptDmabufSource(ctx, ioasId, dmabuf, true);
  try {
    await src.setup();
  } catch (e) {
    dmabuf.put();
    throw e;
  }
  try {
    return await ctx.ioasMapSource(
      ioasId,
      flags,
      src,
      start,
      length,
      iova,
      true,
      (pages) => src.pages.add(pages),
    );
  } catch (e) {
    await src.release();
    throw e;
  }
}
