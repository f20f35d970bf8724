/**
 * DOC: umems (drivers/infiniband/core/umem.c, umem_dmabuf.c)
 *
 * The memory behind an MR, as DMA addresses per 4 KiB page:
 *
 * - `ib_umem_get`: user memory pinned with `pin_user_pages_fast(FOLL_WRITE
 *   | FOLL_LONGTERM)` and mapped with `dma_map_sgtable`.
 * - `ib_umem_dmabuf_get(dev, offset, size, fd, access, ops)`: -EINVAL when
 *   the importer ops lack an invalidate callback, when offset + size
 *   overflows, or when the buffer is smaller than offset + size; then a
 *   dynamic attach to the device. Nothing is mapped yet.
 * - `ib_umem_dmabuf_map_pages` (reservation lock held): -EINVAL once
 *   revoked; maps the attachment (if not mapped), keeps the pages of the
 *   umem's window, then waits for the KERNEL fences (a move still copying
 *   the data) before the caller may hand addresses to the hardware.
 *   `ib_umem_dmabuf_unmap_pages` gives the mapping back.
 * - `ib_umem_dmabuf_get_pinned`: attaches with ops whose invalidate only
 *   warns ("Invalidate callback should not be called when memory is
 *   pinned"), then under the lock `dma_buf_pin` + map.
 * - `ib_umem_dmabuf_get_pinned_revocable_and_lock` (2026,
 *   "RDMA/umem: Add pinned revocable dmabuf import interface"): the same
 *   pin + map, but with a working invalidate callback and the lock still
 *   held on return so the driver installs its revoke callback
 *   (`ib_umem_dmabuf_set_revoke_locked`) before any revoke can run. On
 *   invalidate the umem calls the driver's callback (the HW stops using the
 *   memory), unmaps, unpins and is marked revoked for good.
 * - `ib_umem_dmabuf_release`: unmaps/unpins under the lock, detaches,
 *   drops the buffer reference.
 *
 * Locking: `map_pages`, `unmap_pages`, `set_revoke_locked` need the
 * buffer's reservation lock (asserted); get/release take it themselves.
 *
 * @module
 */
import { FOLL_LONGTERM, FOLL_WRITE, KernelError, type MmStruct, type Page } from "@dmalab/kernel";
import { unpinUserPages } from "@dmalab/kernel";
import { pinUserPagesFast } from "@dmalab/kernel";
import {
  type DmaBuf,
  dmaBufAssertResvHeld,
  type DmaBufAttachment,
  type DmaBufAttachOps,
  dmaBufDynamicAttach,
  dmaBufGet,
  dmaMapSgtable,
  DmaResvUsage,
  dmaUnmapSgtable,
  sgAllocTableFromPages,
  type SgTable,
} from "@dmalab/dma-buf";
import { MAX_SCHEDULE_TIMEOUT } from "@dmalab/kernel";
import type { Mlx5Device } from "./device.ts";

/** DMA addresses of a umem's pages (one per 4 KiB page of the window). */
function dmaPagesOf(sgt: SgTable, offset: number, size: number): number[] {
  const out: number[] = [];
  let pos = 0;
  const first = Math.floor(offset / 4096) * 4096;
  const end = offset + size;
  for (const sg of sgt.dmaEntries()) {
    const a = Number(sg.dmaAddress);
    for (let o = 0; o < sg.dmaLength; o += 4096) {
      const at = pos + o;
      if (at >= first && at < end) out.push(a + o);
    }
    pos += sg.dmaLength;
    if (pos >= end) break;
  }
  return out;
}

/** `struct ib_umem` of user memory. */
export class IbUmem {
  /** The device. */
  readonly dev: Mlx5Device;
  /** Start user address. */
  readonly address: number;
  /** Bytes. */
  readonly length: number;
  /** Pinned pages. */
  readonly pages: Page[];
  /** The DMA-mapped table. */
  readonly sgt: SgTable;
  /** DMA address per page. */
  readonly dmaPages: number[];
  /** False for user memory. */
  readonly isDmabuf = false;
  /** Released (`ib_umem_release`). */
  released = false;

  /** Built by {@linkcode ibUmemGet}. */
  constructor(dev: Mlx5Device, address: number, length: number, pages: Page[], sgt: SgTable) {
    this.dev = dev;
    this.address = address;
    this.length = length;
    this.pages = pages;
    this.sgt = sgt;
    this.dmaPages = dmaPagesOf(sgt, address % 4096, length);
  }
}

/** `ib_umem_get(device, addr, size, access)`: pins and maps user memory. */
export async function ibUmemGet(
  dev: Mlx5Device,
  mm: MmStruct,
  addr: number,
  size: number,
): Promise<IbUmem> {
  if (size <= 0 || addr + size < addr) throw new KernelError("EINVAL", "ib_umem_get: bad range");
  const first = Math.floor(addr / 4096) * 4096;
  const n = Math.ceil((addr + size - first) / 4096);
  const pages = await pinUserPagesFast(mm, first, n, FOLL_WRITE | FOLL_LONGTERM);
  const sgt = sgAllocTableFromPages(dev.world, pages, 0, n * 4096);
  try {
    dmaMapSgtable(dev.world, dev.pdev, sgt, "DMA_BIDIRECTIONAL");
  } catch (e) {
    unpinUserPages(pages);
    throw e;
  }
  return new IbUmem(dev, addr, size, pages, sgt);
}

/** `ib_umem_release` for user memory. */
export function ibUmemRelease(umem: IbUmem): void {
  if (umem.released) return;
  dmaUnmapSgtable(umem.dev.world, umem.dev.pdev, umem.sgt, "DMA_BIDIRECTIONAL");
  unpinUserPages(umem.pages);
  umem.released = true;
}

/** How a dma-buf umem holds its memory. */
export type UmemDmabufKind = "dynamic" | "pinned" | "pinned-revocable";

/** `struct ib_umem_dmabuf`. */
export class IbUmemDmabuf {
  /** The device. */
  readonly dev: Mlx5Device;
  /** Offset into the buffer. */
  readonly offset: number;
  /** Bytes. */
  readonly length: number;
  /** The buffer (a reference held). */
  readonly dmabuf: DmaBuf;
  /** The attachment (set right after attach). */
  attach!: DmaBufAttachment;
  /** Model kind. */
  readonly kind: UmemDmabufKind;
  /** True: a dma-buf umem. */
  readonly isDmabuf = true;
  /** `umem_dmabuf->sgt`: the current mapping, null when unmapped. */
  sgt: SgTable | null = null;
  /** DMA address per page of the window (valid while `sgt`). */
  dmaPages: number[] = [];
  /** `pinned`. */
  pinned = false;
  /** `revoked`. */
  revoked = false;
  /** The driver's revoke callback (pinned-revocable). */
  revokeCb: (() => void) | null = null;
  /** `umem_dmabuf->private`: the driver object using the umem (the MR). */
  private: unknown = null;
  /** Maps made (faults and the initial one). */
  maps = 0;
  /** Ns spent waiting for KERNEL fences in map_pages. */
  fenceWaitNs = 0;
  /** Released (`ib_umem_release`). */
  released = false;

  /** Built by the get functions. */
  constructor(
    dev: Mlx5Device,
    dmabuf: DmaBuf,
    offset: number,
    length: number,
    kind: UmemDmabufKind,
  ) {
    this.dev = dev;
    this.dmabuf = dmabuf;
    this.offset = offset;
    this.length = length;
    this.kind = kind;
  }
}

function checkArgs(dmabuf: DmaBuf, offset: number, size: number): void {
  const end = offset + size;
  if (size <= 0 || end < offset || !Number.isSafeInteger(end)) {
    throw new KernelError("EINVAL", "ib_umem_dmabuf_get: offset + size overflows");
  }
  if (dmabuf.size < end) {
    throw new KernelError(
      "EINVAL",
      `ib_umem_dmabuf_get: dma-buf of ${dmabuf.size} bytes is smaller than ${end}`,
    );
  }
}

async function getCommon(
  dev: Mlx5Device,
  offset: number,
  size: number,
  fd: number,
  ops: DmaBufAttachOps,
  kind: UmemDmabufKind,
): Promise<IbUmemDmabuf> {
  // the kernel's order: overflow (check_add_overflow), ops, dma_buf_get, size
  if (!Number.isSafeInteger(offset + size) || offset < 0 || size < 0) {
    throw new KernelError("EINVAL", "ib_umem_dmabuf_get: offset + size overflows");
  }
  if (!ops.invalidateMappings && !ops.moveNotify) {
    throw new KernelError("EINVAL", "ib_umem_dmabuf_get: importer ops without invalidate callback");
  }
  const dmabuf = dmaBufGet(dev.world, fd);
  try {
    checkArgs(dmabuf, offset, size);
    const umem = new IbUmemDmabuf(dev, dmabuf, offset, size, kind);
    umem.attach = await dmaBufDynamicAttach(dmabuf, dev.pdev, ops, umem);
    return umem;
  } catch (e) {
    dmabuf.put();
    throw e;
  }
}

/**
 * `ib_umem_dmabuf_get(device, offset, size, fd, access, ops)`: a dynamic
 * (ODP-style) umem; `ops.invalidateMappings` receives the attachment whose
 * `importerPriv` is the umem.
 */
export function ibUmemDmabufGet(
  dev: Mlx5Device,
  offset: number,
  size: number,
  fd: number,
  ops: DmaBufAttachOps,
): Promise<IbUmemDmabuf> {
  return getCommon(dev, offset, size, fd, ops, "dynamic");
}

/** `ib_umem_dmabuf_map_pages(umem_dmabuf)`: see the module doc. */
export async function ibUmemDmabufMapPages(umem: IbUmemDmabuf): Promise<void> {
  const world = umem.dev.world;
  dmaBufAssertResvHeld(umem.dmabuf, "ib_umem_dmabuf_map_pages");
  if (umem.revoked) throw new KernelError("EINVAL", "ib_umem_dmabuf_map_pages: revoked");
  if (!umem.sgt) {
    const sgt = await umem.attach.map("DMA_BIDIRECTIONAL");
    umem.sgt = sgt;
    umem.dmaPages = dmaPagesOf(sgt, umem.offset, umem.length);
    umem.maps++;
  }
  const t0 = world.sched.now;
  const ret = await umem.dmabuf.resv.waitTimeout(DmaResvUsage.KERNEL, false, MAX_SCHEDULE_TIMEOUT);
  umem.fenceWaitNs += world.sched.now - t0;
  if (ret < 0) throw new KernelError("ERESTARTSYS", "ib_umem_dmabuf_map_pages: fence wait");
  if (ret === 0) throw new KernelError("ETIMEDOUT", "ib_umem_dmabuf_map_pages: fence wait");
}

/** `ib_umem_dmabuf_unmap_pages(umem_dmabuf)` (lock held). */
export function ibUmemDmabufUnmapPages(umem: IbUmemDmabuf): void {
  dmaBufAssertResvHeld(umem.dmabuf, "ib_umem_dmabuf_unmap_pages");
  if (!umem.sgt) return;
  umem.attach.unmap(umem.sgt, "DMA_BIDIRECTIONAL");
  umem.sgt = null;
  umem.dmaPages = [];
}

async function pinAndMap(umem: IbUmemDmabuf): Promise<void> {
  await umem.attach.pin();
  umem.pinned = true;
  try {
    await ibUmemDmabufMapPages(umem);
  } catch (e) {
    umem.attach.unpin();
    umem.pinned = false;
    throw e;
  }
}

/**
 * `ib_umem_dmabuf_get_pinned(device, offset, size, fd, access)`: pinned
 * for the life of the umem (an invalidate only warns).
 */
export async function ibUmemDmabufGetPinned(
  dev: Mlx5Device,
  offset: number,
  size: number,
  fd: number,
): Promise<IbUmemDmabuf> {
  const ops: DmaBufAttachOps = {
    allowPeer2peer: true,
    invalidateMappings: () => {
      dev.world.dmesg.printk(
        "warn",
        `${dev.name}: Invalidate callback should not be called when memory is pinned`,
      );
      dev.stats.pinnedInvalidateWarnings++;
    },
  };
  const umem = await getCommon(dev, offset, size, fd, ops, "pinned");
  await umem.dmabuf.resv.lock(null);
  try {
    await pinAndMap(umem);
  } catch (e) {
    umem.dmabuf.resv.unlock();
    await releaseAfterFailure(umem);
    throw e;
  } finally {
    if (umem.dmabuf.resv.held()) umem.dmabuf.resv.unlock();
  }
  return umem;
}

async function releaseAfterFailure(umem: IbUmemDmabuf): Promise<void> {
  await umem.attach.detach();
  umem.dmabuf.put();
  umem.released = true;
}

/** Revokes a pinned-revocable umem (lock held): driver callback, unmap, unpin. */
function revokeLocked(umem: IbUmemDmabuf): void {
  dmaBufAssertResvHeld(umem.dmabuf, "ib_umem_dmabuf_revoke");
  if (umem.revoked) return;
  umem.revoked = true;
  umem.revokeCb?.();
  ibUmemDmabufUnmapPages(umem);
  if (umem.pinned) {
    umem.attach.unpin();
    umem.pinned = false;
  }
}

/**
 * `ib_umem_dmabuf_get_pinned_revocable_and_lock(...)`: pins and maps with a
 * working invalidate callback and returns with the reservation lock held.
 */
export async function ibUmemDmabufGetPinnedRevocableAndLock(
  dev: Mlx5Device,
  offset: number,
  size: number,
  fd: number,
): Promise<IbUmemDmabuf> {
  const ops: DmaBufAttachOps = {
    allowPeer2peer: true,
    invalidateMappings: (attach) => revokeLocked(attach.importerPriv as IbUmemDmabuf),
  };
  const umem = await getCommon(dev, offset, size, fd, ops, "pinned-revocable");
  await umem.dmabuf.resv.lock(null);
  try {
    await pinAndMap(umem);
  } catch (e) {
    umem.dmabuf.resv.unlock();
    await releaseAfterFailure(umem);
    throw e;
  }
  return umem;
}

/** `ib_umem_dmabuf_set_revoke_locked(umem, revoke, priv)` (lock held). */
export function ibUmemDmabufSetRevokeLocked(umem: IbUmemDmabuf, revoke: () => void): void {
  dmaBufAssertResvHeld(umem.dmabuf, "ib_umem_dmabuf_set_revoke_locked");
  umem.revokeCb = revoke;
}

/** `ib_umem_dmabuf_release(umem_dmabuf)`. */
export async function ibUmemDmabufRelease(umem: IbUmemDmabuf): Promise<void> {
  if (umem.released) return;
  await umem.dmabuf.resv.lock(null);
  try {
    ibUmemDmabufUnmapPages(umem);
    if (umem.pinned) {
      umem.attach.unpin();
      umem.pinned = false;
    }
  } finally {
    umem.dmabuf.resv.unlock();
  }
  await umem.attach.detach();
  umem.dmabuf.put();
  umem.released = true;
}
