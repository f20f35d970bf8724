/**
 * DOC: memory regions (drivers/infiniband/hw/mlx5/mr.c, umr.c, odp.c)
 *
 * An MR is a memory key whose translation table (MTT: one DMA address per
 * 4 KiB page) the NIC uses for every access.
 *
 * - `mlx5_ib_reg_user_mr`: user memory (`ib_umem_get`), MTT filled once.
 * - `mlx5_ib_reg_user_mr_dmabuf`, dynamic (needs ODP: the ODP page-fault
 *   EQ and mkey store; the model refuses with -EOPNOTSUPP, where a 2026
 *   patch makes a device without ODP fall back to the pinned import):
 *   `ib_umem_dmabuf_get` with `mlx5_ib_dmabuf_attach_ops`
 *   (allow_peer2peer, invalidate = `mlx5_ib_dmabuf_invalidate_cb`); the
 *   initial mapping is made under the reservation lock
 *   (`mlx5_ib_init_dmabuf_mr`). The invalidate callback (lock held) zaps
 *   the MTT with a UMR (`MLX5_IB_UPD_XLT_ZAP`) and unmaps the pages; the
 *   next access takes an ODP page fault (`pagefault_dmabuf_mr`): lock,
 *   `ib_umem_dmabuf_map_pages` (which waits for the KERNEL fences of a
 *   move), refill the MTT, unlock.
 * - pinned (`ib_umem_dmabuf_get_pinned`) and pinned-revocable
 *   (`ib_umem_dmabuf_get_pinned_revocable_and_lock` +
 *   `ib_umem_dmabuf_set_revoke_locked`): the revoke callback disables the
 *   mkey, so later accesses complete in error.
 *
 * The ATS bit of the mkey (`ma_translation_mode`) comes from
 * {@linkcode mlx5UmemNeedsAts} under the world's rule; with the p2p-aware
 * rule a dynamic MR re-takes the decision at every fault (the mapping's map
 * type may change with the placement).
 *
 * Locking: registration and deregistration sleep (process context); the
 * invalidate callback runs with the reservation lock held and does not
 * sleep; faults take the reservation lock.
 *
 * @module
 */
import { KernelError, type MmStruct } from "@dmalab/kernel";
import { dmaBufAssertResvHeld, type DmaBufAttachment, type DmaBufAttachOps } from "@dmalab/dma-buf";
import { PciP2pdmaMapType } from "@dmalab/pci-p2p";
import { mappingP2pType, mlx5AtsRule, mlx5UmemNeedsAts } from "./ats.ts";
import type { IbPd, Mlx5Device } from "./device.ts";
import {
  IbUmem,
  IbUmemDmabuf,
  ibUmemDmabufGet,
  ibUmemDmabufGetPinned,
  ibUmemDmabufGetPinnedRevocableAndLock,
  ibUmemDmabufMapPages,
  ibUmemDmabufRelease,
  ibUmemDmabufSetRevokeLocked,
  ibUmemDmabufUnmapPages,
  ibUmemGet,
  ibUmemRelease,
} from "./umem.ts";

/** How a dma-buf MR holds its memory. */
export type DmabufMrMode = "dynamic" | "pinned" | "pinned-revocable";

/** A memory region (`struct mlx5_ib_mr`). */
export class Mlx5Mr {
  /** The device. */
  readonly dev: Mlx5Device;
  /** The protection domain. */
  readonly pd: IbPd;
  /** lkey = rkey. */
  readonly key: number;
  /** Virtual address the MR starts at (`iova`). */
  readonly iova: number;
  /** Bytes. */
  readonly length: number;
  /** IB access flags. */
  readonly access: number;
  /** The umem. */
  readonly umem: IbUmem | IbUmemDmabuf;
  /** DMA address per page, -1 when zapped (ODP). */
  mtt: number[];
  /** `ma_translation_mode`: requests use ATS. */
  ats = false;
  /** The mkey was disabled by a revoke. */
  revoked = false;
  /** Deregistered. */
  deregistered = false;
  /** ODP faults taken. */
  faults = 0;
  /** ATS translations charged to this MR. */
  atsTranslations = 0;

  /** Built by the registration functions. */
  constructor(
    dev: Mlx5Device,
    pd: IbPd,
    iova: number,
    length: number,
    access: number,
    umem: IbUmem | IbUmemDmabuf,
  ) {
    this.dev = dev;
    this.pd = pd;
    this.key = dev.newKey();
    this.iova = iova;
    this.length = length;
    this.access = access;
    this.umem = umem;
    this.mtt = umem instanceof IbUmem ? [...umem.dmaPages] : [];
  }

  /** lkey. */
  get lkey(): number {
    return this.key;
  }

  /** rkey. */
  get rkey(): number {
    return this.key;
  }

  /** Dynamic (ODP) dma-buf MR. */
  get isDynamic(): boolean {
    return this.umem instanceof IbUmemDmabuf && this.umem.kind === "dynamic";
  }

  /** Name for reports. */
  toString(): string {
    return `${this.dev.name} mkey 0x${this.key.toString(16)}`;
  }

  /** @internal takes the ATS decision for the current mapping. */
  decideAts(): void {
    const u = this.umem;
    const ats = mlx5UmemNeedsAts(mlx5AtsRule(this.dev.world), {
      capAts: this.dev.capAts,
      isDmabuf: u.isDmabuf,
      access: this.access,
      mapType: u instanceof IbUmemDmabuf && u.sgt ? mappingP2pType(u.sgt) : PciP2pdmaMapType.NONE,
    });
    this.ats = ats;
  }

  /** @internal fills the MTT from the umem's current mapping (`mlx5r_umr_update_mr_pas`). */
  loadMtt(): void {
    const u = this.umem;
    this.mtt = [...u.dmaPages];
    this.decideAts();
  }

  /** @internal zaps the MTT (`MLX5_IB_UPD_XLT_ZAP`). */
  zap(): void {
    this.mtt = this.mtt.map(() => -1);
    this.dev.stats.zaps++;
  }

  /** Invariant: no valid translation after an invalidate. */
  checkInvariants(): string[] {
    const u = this.umem;
    if (!(u instanceof IbUmemDmabuf) || this.deregistered) return [];
    const valid = this.mtt.some((a) => a >= 0);
    if (!valid) return [];
    if (!u.sgt) return [`${this}: MTT valid but the umem is unmapped`];
    const info = u.attach.mappings.get(u.sgt);
    if (!info) return [`${this}: MTT valid for a table no longer mapped`];
    if (info.stale) return [`${this}: MTT survived invalidate_mappings`];
    if (this.revoked) return [`${this}: revoked mkey still translates`];
    return [];
  }
}

function register(mr: Mlx5Mr): Mlx5Mr {
  mr.dev.mkeys.set(mr.key, mr);
  mr.dev.stats.mrs++;
  if (mr.ats) mr.dev.stats.atsMrs++;
  mr.dev.world.trace.event("mlx5_reg_mr", {
    dev: mr.dev.name,
    mkey: mr.key,
    len: mr.length,
    ats: mr.ats ? 1 : 0,
  });
  return mr;
}

/** `mlx5_ib_reg_user_mr(pd, start, length, iova, access)`. */
export async function mlx5IbRegUserMr(
  pd: IbPd,
  mm: MmStruct,
  start: number,
  length: number,
  iova: number,
  access: number,
): Promise<Mlx5Mr> {
  const umem = await ibUmemGet(pd.dev, mm, start, length);
  const mr = new Mlx5Mr(pd.dev, pd, iova, length, access, umem);
  mr.decideAts();
  return register(mr);
}

/** `mlx5_ib_dmabuf_invalidate_cb(attach)`: reservation lock held. */
export function mlx5IbDmabufInvalidateCb(attach: DmaBufAttachment): void {
  const umem = attach.importerPriv as IbUmemDmabuf;
  dmaBufAssertResvHeld(umem.dmabuf, "mlx5_ib_dmabuf_invalidate_cb");
  const mr = umem.private as Mlx5Mr | null;
  if (!umem.sgt || !mr) return;
  mr.zap(); // the NIC stops using the old addresses before they are given back
  ibUmemDmabufUnmapPages(umem);
}

/** `mlx5_ib_dmabuf_attach_ops`. */
export const mlx5IbDmabufAttachOps: DmaBufAttachOps = {
  allowPeer2peer: true,
  invalidateMappings: mlx5IbDmabufInvalidateCb,
};

/** Options for {@linkcode mlx5IbRegUserMrDmabuf}. */
export interface RegDmabufOptions {
  /** Dynamic (ODP, default), pinned, or pinned-revocable. */
  mode?: DmabufMrMode;
}

/**
 * `mlx5_ib_reg_user_mr_dmabuf(pd, offset, length, virt_addr, fd, access)`.
 */
export async function mlx5IbRegUserMrDmabuf(
  pd: IbPd,
  offset: number,
  length: number,
  iova: number,
  fd: number,
  access: number,
  options: RegDmabufOptions = {},
): Promise<Mlx5Mr> {
  const dev = pd.dev;
  const mode = options.mode ?? "dynamic";
  if (mode === "dynamic") {
    if (!dev.odp) {
      throw new KernelError("EOPNOTSUPP", `${dev.name}: dynamic dma-buf MR needs ODP`);
    }
    const umem = await ibUmemDmabufGet(dev, offset, length, fd, mlx5IbDmabufAttachOps);
    const mr = new Mlx5Mr(dev, pd, iova, length, access, umem);
    umem.private = mr; // umem_dmabuf->private = mr
    await umem.dmabuf.resv.lock(null);
    try {
      await ibUmemDmabufMapPages(umem); // mlx5_ib_init_dmabuf_mr
      mr.loadMtt();
    } catch (e) {
      umem.dmabuf.resv.unlock();
      await ibUmemDmabufRelease(umem);
      throw e;
    }
    umem.dmabuf.resv.unlock();
    return register(mr);
  }
  if (mode === "pinned") {
    const umem = await ibUmemDmabufGetPinned(dev, offset, length, fd);
    const mr = new Mlx5Mr(dev, pd, iova, length, access, umem);
    mr.loadMtt();
    return register(mr);
  }
  const umem = await ibUmemDmabufGetPinnedRevocableAndLock(dev, offset, length, fd);
  const mr = new Mlx5Mr(dev, pd, iova, length, access, umem);
  mr.loadMtt();
  ibUmemDmabufSetRevokeLocked(umem, () => {
    // rereg to length 0: the HW stops using the region
    mr.zap();
    mr.revoked = true;
  });
  umem.dmabuf.resv.unlock();
  return register(mr);
}

/**
 * `pagefault_dmabuf_mr`: the ODP fault of a dynamic MR; re-maps under the
 * reservation lock (waiting for KERNEL fences) and reloads the MTT.
 */
export async function mlx5PagefaultDmabufMr(mr: Mlx5Mr): Promise<void> {
  const umem = mr.umem;
  if (!(umem instanceof IbUmemDmabuf) || umem.kind !== "dynamic") {
    throw new KernelError("EFAULT", `${mr}: page fault on a non-ODP MR`);
  }
  await umem.dmabuf.resv.lock(null);
  try {
    await ibUmemDmabufMapPages(umem);
    mr.loadMtt();
    mr.faults++;
    mr.dev.stats.faults++;
  } finally {
    umem.dmabuf.resv.unlock();
  }
  mr.dev.world.trace.event("mlx5_odp_fault", { dev: mr.dev.name, mkey: mr.key });
}

/** `mlx5_ib_dereg_mr`. */
export async function mlx5IbDeregMr(mr: Mlx5Mr): Promise<void> {
  if (mr.deregistered) throw new KernelError("EINVAL", `${mr}: already deregistered`);
  const umem = mr.umem;
  if (umem instanceof IbUmemDmabuf) {
    if (umem.kind === "dynamic") {
      await umem.dmabuf.resv.lock(null);
      mr.zap();
      ibUmemDmabufUnmapPages(umem);
      umem.dmabuf.resv.unlock();
    }
    await ibUmemDmabufRelease(umem);
  } else {
    ibUmemRelease(umem);
  }
  mr.deregistered = true;
  mr.dev.mkeys.delete(mr.key);
}
