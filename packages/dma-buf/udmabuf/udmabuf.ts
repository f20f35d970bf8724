/**
 * DOC: udmabuf (drivers/dma-buf/udmabuf.c, include/uapi/linux/udmabuf.h)
 *
 * `/dev/udmabuf` turns ranges of memfd (shmem or hugetlbfs) files into a
 * dma-buf that aliases the same folios. Ioctls: `UDMABUF_CREATE`
 * (0x40187542, one range) and `UDMABUF_CREATE_LIST` (0x40087543, a header
 * plus `count` items); anything else is -ENOTTY, an unreadable struct
 * -EFAULT, `count > list_limit` (1024) -EINVAL.
 *
 * `udmabuf_create`, in the kernel's order: every offset and size page
 * aligned, the running page total within `size_limit_mb` (64 MiB) and not
 * zero (all -EINVAL); then per item: an fd that is not open, or not a
 * shmem/hugetlbfs file, is -EBADFD; seals must include F_SEAL_SHRINK and
 * exclude F_SEAL_WRITE and F_SEAL_FUTURE_WRITE (`SEALS_DENIED`, -EINVAL;
 * `check_memfd_seals`); the folios are pinned with
 * `memfd_pin_folios` (past EOF: -EINVAL). On any error everything pinned is
 * unpinned. Only `UDMABUF_FLAGS_CLOEXEC` is honoured; the buffer is
 * exported O_RDWR and the ioctl returns its fd.
 *
 * dma-buf ops (static exporter, no pin): `map_dma_buf` builds a fresh table
 * of the pinned pages and maps it for the attachment's device;
 * `mmap` needs a shared mapping (-EINVAL otherwise) and installs pfns from
 * its fault handler, pre-faulting the whole VMA; `vmap` maps the pages;
 * `begin_cpu_access` maps a device-wide table on first use (the misc
 * device, 64-bit mask), later syncs it for the CPU; `end_cpu_access` is
 * -EINVAL before any begin; `release` unpins. pfn mechanisms: none.
 *
 * Locking: the ioctl runs without locks; map/unmap/vmap/vunmap with the
 * reservation lock held (by the core); mmap's fault runs under mmap_lock.
 *
 * @module
 */
import {
  Device,
  dmaBitMask,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  type FdTable,
  File,
  filesOf,
  Inode,
  isMemfdFile,
  type Kernel,
  KernelError,
  MemfdFile,
  O_CLOEXEC,
  O_RDWR,
  type Page,
  VM_DONTDUMP,
  VM_DONTEXPAND,
  VM_FAULT_ERROR,
  VM_FAULT_SIGBUS,
  VM_MAYSHARE,
  VM_PFNMAP,
  VM_SHARED,
  type Vma,
  type VmFault,
  vmfInsertPfn,
} from "@dmalab/kernel";
import { type DmaBuf, dmaBufExport } from "../buf/dma_buf.ts";
import { IosysMap } from "../buf/iosys_map.ts";
import type { DmaBufOps } from "../buf/ops.ts";
import { ioc } from "../buf/uapi.ts";
import {
  dmaMapSgtable,
  dmaSyncSgtableForCpu,
  dmaSyncSgtableForDevice,
  dmaUnmapSgtable,
} from "../sg/dma_map.ts";
import { type DmaDataDirection, Scatterlist, SgTable } from "../sg/scatterlist.ts";

const PAGE_SIZE = 4096;
/** `UDMABUF_FLAGS_CLOEXEC`. */
export const UDMABUF_FLAGS_CLOEXEC = 0x01;
/** `UDMABUF_CREATE` = `_IOW('u', 0x42, struct udmabuf_create)`. */
export const UDMABUF_CREATE: number = ioc(1, 0x75, 0x42, 24);
/** `UDMABUF_CREATE_LIST` = `_IOW('u', 0x43, struct udmabuf_create_list)`. */
export const UDMABUF_CREATE_LIST: number = ioc(1, 0x75, 0x43, 8);

/** Module parameters `list_limit` and `size_limit_mb`. */
export interface UdmabufParams {
  /** `list_limit` (default 1024). */
  listLimit: number;
  /** `size_limit_mb` (default 64). */
  sizeLimitMb: number;
}

/** One range of `udmabuf_create_item`. */
export interface UdmabufItem {
  /** `memfd`. */
  readonly memfd: number;
  /** `offset` in bytes. */
  readonly offset: number;
  /** `size` in bytes. */
  readonly size: number;
}

/** `struct udmabuf`. */
export class Udmabuf {
  /** `pagecount`. */
  pagecount = 0;
  /** `folios[i]`: the folio backing page i. */
  readonly folios: Page[] = [];
  /** `offsets[i]`: byte offset of page i inside its folio. */
  readonly offsets: number[] = [];
  /** Folios pinned (one entry per pin). */
  readonly pinned: { folio: Page; memfd: MemfdFile }[] = [];
  /** `sg`: the device-wide table from begin_cpu_access. */
  sg: SgTable | null = null;
  /** `device`: the misc device. */
  readonly device: Device;

  /** An empty buffer for `device`. */
  constructor(device: Device) {
    this.device = device;
  }

  /** The pfn of page `pg`. */
  pfn(pg: number): number {
    return this.folios[pg]!.pfn + this.offsets[pg]! / PAGE_SIZE;
  }

  /** A fresh table of every page (`get_sg_table` before mapping). */
  table(world: Kernel): SgTable {
    const entries: Scatterlist[] = [];
    for (let i = 0; i < this.pagecount; i++) {
      entries.push(new Scatterlist(world.mem.pfnToPage(this.pfn(i)), PAGE_SIZE, 0));
    }
    return new SgTable(entries);
  }

  /** `unpin_all_folios`. */
  unpinAll(): void {
    for (const p of this.pinned) p.memfd.unpinFolio(p.folio);
    this.pinned.length = 0;
  }
}

class UdmabufState {
  readonly params: UdmabufParams = { listLimit: 1024, sizeLimitMb: 64 };
  readonly device: Device;
  constructor(world: Kernel) {
    this.device = new Device(world, "udmabuf", {
      dmaMask: dmaBitMask(64),
      coherentDmaMask: dmaBitMask(64),
    });
  }
}

function state(world: Kernel): UdmabufState {
  return world.ext("dma-buf.udmabuf", () => new UdmabufState(world));
}

/** The module parameters of `world`'s udmabuf (writable, as /sys/module/udmabuf/parameters). */
export function udmabufParams(world: Kernel): UdmabufParams {
  return state(world).params;
}

function ubufOf(buf: DmaBuf): Udmabuf {
  return buf.priv as Udmabuf;
}

function getSgTable(world: Kernel, dev: Device, ubuf: Udmabuf, dir: DmaDataDirection): SgTable {
  const sgt = ubuf.table(world);
  dmaMapSgtable(world, dev, sgt, dir, 0);
  return sgt;
}

const udmabufVmOps = {
  name: "udmabuf",
  fault(vmf: VmFault): number {
    const vma = vmf.vma;
    const ubuf = vma.vmPrivateData as Udmabuf;
    if (vmf.pgoff >= ubuf.pagecount) return VM_FAULT_SIGBUS;
    const ret = vmfInsertPfn(vma, vmf.address, ubuf.pfn(vmf.pgoff));
    if (ret & VM_FAULT_ERROR) return ret;
    // pre-fault the rest of the VMA
    let pgoff = vma.vmPgoff;
    for (let addr = vma.vmStart; addr < vma.vmEnd; pgoff++, addr += PAGE_SIZE) {
      if (addr === vmf.address) continue;
      if (pgoff >= ubuf.pagecount) {
        vma.mm.world.warnOn(true, "udmabuf_vm_fault: pgoff beyond pagecount");
        break;
      }
      if (vmfInsertPfn(vma, addr, ubuf.pfn(pgoff)) & VM_FAULT_ERROR) break;
    }
    return ret;
  },
};

/** `udmabuf_ops`. */
export const udmabufOps: DmaBufOps = {
  mapDmaBuf(attach, dir) {
    return getSgTable(attach.dmabuf.world, attach.dev!, ubufOf(attach.dmabuf), dir);
  },
  unmapDmaBuf(attach, sgt, dir) {
    dmaUnmapSgtable(attach.dmabuf.world, attach.dev!, sgt, dir, 0);
  },
  release(buf) {
    const ubuf = ubufOf(buf);
    if (ubuf.sg) dmaUnmapSgtable(buf.world, ubuf.device, ubuf.sg, "DMA_BIDIRECTIONAL", 0);
    ubuf.unpinAll();
  },
  mmap(buf, vma: Vma) {
    if ((vma.vmFlags & (VM_SHARED | VM_MAYSHARE)) === 0) {
      throw new KernelError("EINVAL", "udmabuf: mmap needs a shared mapping (mmap_udmabuf)");
    }
    vma.vmOps = udmabufVmOps;
    vma.vmPrivateData = ubufOf(buf);
    vma.flagsSet(VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP);
  },
  vmap(buf) {
    const ubuf = ubufOf(buf);
    const world = buf.world;
    return IosysMap.fromResolver(world, ubuf.pagecount * PAGE_SIZE, false, (off) => {
      const pg = Math.floor(off / PAGE_SIZE);
      return {
        phys: BigInt(ubuf.pfn(pg)) * 4096n + BigInt(off % PAGE_SIZE),
        contiguous: PAGE_SIZE - (off % PAGE_SIZE),
      };
    });
  },
  vunmap() {},
  beginCpuAccess(buf, dir) {
    const ubuf = ubufOf(buf);
    if (!ubuf.sg) ubuf.sg = getSgTable(buf.world, ubuf.device, ubuf, dir);
    else dmaSyncSgtableForCpu(ubuf.device, ubuf.sg, dir);
  },
  endCpuAccess(buf, dir) {
    const ubuf = ubufOf(buf);
    if (!ubuf.sg) {
      throw new KernelError("EINVAL", "udmabuf: end_cpu_access without begin_cpu_access");
    }
    dmaSyncSgtableForDevice(ubuf.device, ubuf.sg, dir);
  },
};

/**
 * `udmabuf_create(device, head, list)`: the new dma-buf's fd.
 *
 * @example
 * ```ts
 * import { F_SEAL_SHRINK, filesOf, Kernel, memfdCreate, memfdFile, MFD_ALLOW_SEALING } from "@dmalab/kernel";
 * import { dmaBufGet, udmabufCreate } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const memfd = memfdCreate(world, "udmabuf-test", MFD_ALLOW_SEALING);
 * const m = memfdFile(filesOf(world).lookup(memfd));
 * m.ftruncate(4 * 4096);
 * m.addSeals(F_SEAL_SHRINK);
 * const fd = udmabufCreate(world, 0, [{ memfd, offset: 0, size: 4 * 4096 }]);
 * dmaBufGet(world, fd).size; // 16384
 * ```
 */
export function udmabufCreate(
  world: Kernel,
  flags: number,
  list: readonly UdmabufItem[],
  files: FdTable = filesOf(world),
): number {
  const st = state(world);
  const pglimit = Math.floor((st.params.sizeLimitMb * 1024 * 1024) / PAGE_SIZE);
  let pgcnt = 0;
  for (const it of list) {
    if (it.offset % PAGE_SIZE) throw new KernelError("EINVAL", "udmabuf: offset not page aligned");
    if (it.size % PAGE_SIZE) throw new KernelError("EINVAL", "udmabuf: size not page aligned");
    pgcnt += it.size / PAGE_SIZE;
    if (pgcnt > pglimit) {
      throw new KernelError(
        "EINVAL",
        `udmabuf: more than size_limit_mb=${st.params.sizeLimitMb} MiB`,
      );
    }
  }
  if (!pgcnt) throw new KernelError("EINVAL", "udmabuf: zero pages");
  const ubuf = new Udmabuf(st.device);
  try {
    for (const it of list) {
      const file = files.isOpen(it.memfd) ? files.fget(it.memfd) : null;
      try {
        if (!file) throw new KernelError("EBADFD", `udmabuf: fd ${it.memfd} is not open`);
        if (!isMemfdFile(file)) {
          throw new KernelError("EBADFD", `udmabuf: fd ${it.memfd} is not a shmem/hugetlbfs file`);
        }
        const memfd = new MemfdFile(file);
        const seals = memfd.getSeals();
        if (
          (seals & F_SEAL_SHRINK) !== F_SEAL_SHRINK ||
          (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) !== 0
        ) {
          throw new KernelError(
            "EINVAL",
            "udmabuf: memfd needs F_SEAL_SHRINK and must not have F_SEAL_WRITE or F_SEAL_FUTURE_WRITE (check_memfd_seals)",
          );
        }
        const npages = it.size / PAGE_SIZE;
        const { folios, offset } = memfd.pinFolios(it.offset, it.offset + it.size - 1);
        let sub = offset;
        let done = 0;
        for (const folio of folios) {
          ubuf.pinned.push({ folio, memfd });
          const fsize = memfd.inode.folioSize;
          for (; sub < fsize && done < npages; sub += PAGE_SIZE, done++) {
            ubuf.folios.push(folio);
            ubuf.offsets.push(sub);
          }
          sub = 0;
        }
        ubuf.pagecount = ubuf.folios.length;
      } finally {
        file?.put();
      }
    }
    const buf = dmaBufExport(world, {
      expName: "udmabuf",
      owner: "udmabuf",
      ops: udmabufOps,
      size: ubuf.pagecount * PAGE_SIZE,
      flags: O_RDWR,
      priv: ubuf,
    });
    try {
      return buf.fd(flags & UDMABUF_FLAGS_CLOEXEC ? O_CLOEXEC : 0, files);
    } catch (e) {
      // the kernel leaks here too (dma_buf_fd failure after export); we drop the buffer, which unpins
      buf.put();
      throw e;
    }
  } catch (e) {
    ubuf.unpinAll();
    throw e;
  }
}

/** `udmabuf_ioctl(file, cmd, arg)`: `arg` is the user struct as a `DataView`. */
export function udmabufIoctl(
  world: Kernel,
  cmd: number,
  arg: DataView | null,
  files: FdTable = filesOf(world),
): number {
  const st = state(world);
  switch (cmd >>> 0) {
    case UDMABUF_CREATE: {
      if (!arg || arg.byteLength < 24) {
        throw new KernelError("EFAULT", "UDMABUF_CREATE: copy_from_user");
      }
      const item = {
        memfd: arg.getUint32(0, true),
        offset: Number(arg.getBigUint64(8, true)),
        size: Number(arg.getBigUint64(16, true)),
      };
      return udmabufCreate(world, arg.getUint32(4, true), [item], files);
    }
    case UDMABUF_CREATE_LIST: {
      if (!arg || arg.byteLength < 8) {
        throw new KernelError("EFAULT", "UDMABUF_CREATE_LIST: copy_from_user");
      }
      const flags = arg.getUint32(0, true);
      const count = arg.getUint32(4, true);
      if (count > st.params.listLimit) {
        throw new KernelError("EINVAL", `UDMABUF_CREATE_LIST: count ${count} > list_limit`);
      }
      if (arg.byteLength < 8 + 24 * count) {
        throw new KernelError("EFAULT", "UDMABUF_CREATE_LIST: memdup_user");
      }
      const list: UdmabufItem[] = [];
      for (let i = 0; i < count; i++) {
        const o = 8 + 24 * i;
        list.push({
          memfd: arg.getUint32(o, true),
          offset: Number(arg.getBigUint64(o + 8, true)),
          size: Number(arg.getBigUint64(o + 16, true)),
        });
      }
      return udmabufCreate(world, flags, list, files);
    }
    default:
      throw new KernelError("ENOTTY", `udmabuf: unknown ioctl 0x${(cmd >>> 0).toString(16)}`);
  }
}

/** `open("/dev/udmabuf")`: an fd whose ioctl is {@linkcode udmabufIoctl}. */
export function udmabufOpen(
  world: Kernel,
  flags: number = O_RDWR,
  files: FdTable = filesOf(world),
): number {
  const file = new File(world, new Inode(world.nextId(), "chr"), {
    owner: "udmabuf",
    ioctl: (_f, cmd, arg) => udmabufIoctl(world, cmd, arg as DataView | null, files),
  }, { flags: flags & ~O_CLOEXEC, path: "/dev/udmabuf" });
  return files.installNew(file, flags);
}

/** A `struct udmabuf_create` in user memory. */
export function udmabufCreateArg(
  memfd: number,
  flags: number,
  offset: number,
  size: number,
): DataView {
  const v = new DataView(new ArrayBuffer(24));
  v.setUint32(0, memfd, true);
  v.setUint32(4, flags, true);
  v.setBigUint64(8, BigInt(offset), true);
  v.setBigUint64(16, BigInt(size), true);
  return v;
}

/** A `struct udmabuf_create_list` with its items in user memory. */
export function udmabufCreateListArg(flags: number, items: readonly UdmabufItem[]): DataView {
  const v = new DataView(new ArrayBuffer(8 + 24 * items.length));
  v.setUint32(0, flags, true);
  v.setUint32(4, items.length, true);
  items.forEach((it, i) => {
    const o = 8 + 24 * i;
    v.setUint32(o, it.memfd, true);
    v.setBigUint64(o + 8, BigInt(it.offset), true);
    v.setBigUint64(o + 16, BigInt(it.size), true);
  });
  return v;
}
