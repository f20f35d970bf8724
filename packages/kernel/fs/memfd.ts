/**
 * DOC: memfd and shmem/hugetlbfs files
 *
 * mm/memfd.c and mm/shmem.c, reduced to what udmabuf, iommufd MAP_FILE and
 * guest_memfd-like users need: `memfd_create` (MFD_CLOEXEC,
 * MFD_ALLOW_SEALING, MFD_HUGETLB), `ftruncate`, the seals of
 * `fcntl(F_ADD_SEALS/F_GET_SEALS)`, `pread`/`pwrite` on the page cache, and
 * `memfd_pin_folios`. Page-cache folios are allocated from the world's page
 * allocator on first use (zeroed; 4 KiB for shmem, 2 MiB compound folios
 * for hugetlbfs), so bytes written through the file are what a device or
 * another mapping of the same folio sees.
 *
 * Errnos follow the kernel: sealing without MFD_ALLOW_SEALING or after
 * F_SEAL_SEAL is -EPERM; unknown seal bits -EINVAL; shrinking under
 * F_SEAL_SHRINK or growing under F_SEAL_GROW -EPERM; a hugetlbfs size that
 * is not a multiple of the huge page size -EINVAL; pinning past EOF -EINVAL.
 *
 * `mmap` maps the page cache: shmem faults hand the page itself to the
 * fault path (`shmem_fault`); hugetlbfs VMAs (VM_HUGETLB) map the 4 KiB
 * pieces of the huge folio by pfn (the kernel maps the folio with one PMD;
 * the bytes reached are the same). A fault past EOF is SIGBUS.
 *
 * Locking: `inode->i_rwsem` in the kernel; all operations here are
 * synchronous and atomic with respect to the scheduler.
 *
 * @module
 */
import { KernelError } from "../errors.ts";
import { GUP_PIN_COUNTING_BIAS, type Page } from "../memory/page.ts";
import type { Kernel } from "../world.ts";
import { vmfInsertMixed } from "../mm/memory.ts";
import { VM_FAULT_SIGBUS, VM_HUGETLB, VM_MIXEDMAP, type Vma, type VmFault } from "../mm/vma.ts";
import { File, Inode, O_CLOEXEC, O_RDWR } from "./file.ts";
import { filesOf } from "./fd_table.ts";

/** `MFD_CLOEXEC`. */
export const MFD_CLOEXEC = 0x1;
/** `MFD_ALLOW_SEALING`. */
export const MFD_ALLOW_SEALING = 0x2;
/** `MFD_HUGETLB`. */
export const MFD_HUGETLB = 0x4;
/** `F_SEAL_SEAL`. */
export const F_SEAL_SEAL = 0x1;
/** `F_SEAL_SHRINK`. */
export const F_SEAL_SHRINK = 0x2;
/** `F_SEAL_GROW`. */
export const F_SEAL_GROW = 0x4;
/** `F_SEAL_WRITE`. */
export const F_SEAL_WRITE = 0x8;
/** `F_SEAL_FUTURE_WRITE`. */
export const F_SEAL_FUTURE_WRITE = 0x10;
/** `F_SEAL_EXEC`. */
export const F_SEAL_EXEC = 0x20;
const F_ALL_SEALS = 0x3f;

const PAGE_SIZE = 4096;
/** Huge page size of hugetlbfs memfds (2 MiB, x86 default). */
export const HPAGE_SIZE = 2 * 1024 * 1024;

/** The state of a shmem or hugetlbfs file (its inode's page cache and seals). */
export class ShmemInode extends Inode {
  /** `F_SEAL_*` bits. */
  seals: number;
  /** Folio size in bytes (4 KiB or 2 MiB). */
  readonly folioSize: number;
  /** Page cache: folio index → head page. */
  readonly folios: Map<number, Page> = new Map();
  readonly #world: Kernel;

  /** Built by {@linkcode memfdCreate}. */
  constructor(world: Kernel, hugetlb: boolean, seals: number) {
    super(world.nextId(), hugetlb ? "hugetlbfs" : "shmem", 0);
    this.#world = world;
    this.seals = seals;
    this.folioSize = hugetlb ? HPAGE_SIZE : PAGE_SIZE;
  }

  /** `shmem_get_folio(..., SGP_CACHE)`: the folio at `index`, allocated (zeroed) on first use; -EINVAL past EOF. */
  folio(index: number): Page {
    if (index * this.folioSize >= this.size) {
      throw new KernelError("EINVAL", `memfd: folio ${index} beyond EOF (shmem_get_folio)`);
    }
    let p = this.folios.get(index);
    if (!p) {
      const order = Math.log2(this.folioSize / PAGE_SIZE);
      const page = this.#world.mem.allocPages(order, { zero: true, comp: order > 0 });
      if (!page) throw new KernelError("ENOMEM", "memfd: no memory for a page-cache folio");
      page.mapping = this;
      page.index = index * (this.folioSize / PAGE_SIZE);
      this.folios.set(index, page);
      p = page;
    }
    return p;
  }

  /** Physical address of byte `offset` of the file (allocating its folio). */
  physOf(offset: number): bigint {
    const idx = Math.floor(offset / this.folioSize);
    return this.#world.mem.pageToPhys(this.folio(idx)) + BigInt(offset % this.folioSize);
  }

  /** Frees folios at or beyond `size` (truncate_inode_pages_range), unless pinned elsewhere. */
  truncateFrom(size: number): void {
    const order = Math.log2(this.folioSize / PAGE_SIZE);
    for (const [idx, page] of [...this.folios]) {
      if (idx * this.folioSize >= size) {
        this.folios.delete(idx);
        page.mapping = null;
        this.#world.mem.freePages(page, order);
      }
    }
  }
}

/** `shmem_mmap` / `hugetlbfs_file_mmap`: installs the page-cache fault handler. */
function shmemMmap(inode: ShmemInode, vma: Vma): void {
  const huge = inode.kind === "hugetlbfs";
  if (huge) vma.flagsSet(VM_HUGETLB | VM_MIXEDMAP);
  vma.vmOps = {
    name: huge ? "hugetlbfs" : "shmem",
    fault(vmf: VmFault): number {
      const off = vmf.pgoff * PAGE_SIZE;
      if (off >= inode.size) return VM_FAULT_SIGBUS;
      const folio = inode.folio(Math.floor(off / inode.folioSize));
      const pfn = folio.pfn + (off % inode.folioSize) / PAGE_SIZE;
      if (huge) return vmfInsertMixed(vmf.vma, vmf.address, pfn);
      folio.get();
      vmf.page = folio;
      return 0;
    },
  };
}

/** Options for {@linkcode memfdCreate}. */
export interface MemfdCreateOptions {
  /** The fd table to install into (default `filesOf(world)`). */
  files?: import("./fd_table.ts").FdTable;
}

/** True when `file` is a shmem or hugetlbfs file (`shmem_file` / `is_file_hugepages`). */
export function isMemfdFile(file: File): boolean {
  return file.inode instanceof ShmemInode;
}

/**
 * `memfd_create(name, flags)`: a new shmem (or hugetlbfs) file installed in
 * the fd table; returns the fd. -EINVAL for unknown flags.
 *
 * @example
 * ```ts
 * import { filesOf, Kernel, memfdCreate, memfdFile, MFD_ALLOW_SEALING } from "@dmalab/kernel";
 * const world = new Kernel();
 * const fd = memfdCreate(world, "buf", MFD_ALLOW_SEALING);
 * const f = memfdFile(filesOf(world).lookup(fd));
 * f.ftruncate(8192);
 * f.pwrite(new Uint8Array([1, 2, 3]), 4096);
 * f.pread(3, 4096); // Uint8Array [1, 2, 3]
 * ```
 */
export function memfdCreate(
  world: Kernel,
  name: string,
  flags: number,
  options: MemfdCreateOptions = {},
): number {
  if (flags & ~(MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | 0xfc000000)) {
    throw new KernelError("EINVAL", `memfd_create: unknown flags 0x${flags.toString(16)}`);
  }
  if (name.length > 249) {
    throw new KernelError("EINVAL", "memfd_create: name longer than 249 bytes");
  }
  const hugetlb = (flags & MFD_HUGETLB) !== 0;
  const inode = new ShmemInode(world, hugetlb, flags & MFD_ALLOW_SEALING ? 0 : F_SEAL_SEAL);
  const file = new File(world, inode, {
    release: () => inode.truncateFrom(0),
    mmap: (_f, v) => shmemMmap(inode, v as Vma),
  }, { flags: O_RDWR, path: `/memfd:${name} (deleted)` });
  const files = options.files ?? filesOf(world);
  try {
    return files.installNew(file, flags & MFD_CLOEXEC ? O_CLOEXEC : 0);
  } catch (e) {
    file.put();
    throw e;
  }
}

/** Operations on a memfd's {@linkcode File}. */
export class MemfdFile {
  /** The file. */
  readonly file: File;
  /** Its inode. */
  readonly inode: ShmemInode;

  /** Wraps a memfd file; -EINVAL if it is not shmem/hugetlbfs. */
  constructor(file: File) {
    if (!(file.inode instanceof ShmemInode)) {
      throw new KernelError("EINVAL", `${file.path}: not a memfd`);
    }
    this.file = file;
    this.inode = file.inode;
  }

  /** `fcntl(F_GET_SEALS)`. */
  getSeals(): number {
    return this.inode.seals;
  }

  /** `fcntl(F_ADD_SEALS, seals)` (memfd_add_seals). */
  addSeals(seals: number): void {
    if (seals & ~F_ALL_SEALS) throw new KernelError("EINVAL", "F_ADD_SEALS: unknown seal bits");
    if (this.inode.seals & F_SEAL_SEAL) {
      throw new KernelError("EPERM", "F_ADD_SEALS: file is sealed against sealing (F_SEAL_SEAL)");
    }
    this.inode.seals |= seals;
  }

  /** `ftruncate(fd, size)` (shmem_setattr / hugetlbfs_setattr). */
  ftruncate(size: number): void {
    if (!Number.isInteger(size) || size < 0) {
      throw new KernelError("EINVAL", "ftruncate: negative size");
    }
    const ino = this.inode;
    if (size < ino.size && ino.seals & F_SEAL_SHRINK) {
      throw new KernelError("EPERM", "ftruncate: F_SEAL_SHRINK forbids shrinking");
    }
    if (size > ino.size && ino.seals & F_SEAL_GROW) {
      throw new KernelError("EPERM", "ftruncate: F_SEAL_GROW forbids growing");
    }
    if (ino.kind === "hugetlbfs" && size % ino.folioSize) {
      throw new KernelError(
        "EINVAL",
        "ftruncate: hugetlbfs size must be a multiple of the huge page size",
      );
    }
    if (size < ino.size) ino.truncateFrom(Math.ceil(size / ino.folioSize) * ino.folioSize);
    ino.size = size;
  }

  /** `pwrite(fd, buf, offset)`: writes within i_size (grows it unless sealed). Returns bytes written. */
  pwrite(buf: Uint8Array, offset: number): number {
    const ino = this.inode;
    if (ino.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) {
      throw new KernelError("EPERM", "pwrite: file is write-sealed");
    }
    const end = offset + buf.length;
    if (end > ino.size) {
      if (ino.kind === "hugetlbfs") {
        throw new KernelError("EINVAL", "pwrite: hugetlbfs has no write()");
      }
      if (ino.seals & F_SEAL_GROW) throw new KernelError("EPERM", "pwrite: F_SEAL_GROW");
      ino.size = end;
    }
    const mem = this.file.world.mem;
    let done = 0;
    while (done < buf.length) {
      const off = offset + done;
      const n = Math.min(buf.length - done, ino.folioSize - (off % ino.folioSize));
      mem.write(ino.physOf(off), buf.subarray(done, done + n));
      done += n;
    }
    return done;
  }

  /** `pread(fd, len, offset)`: bytes up to EOF (holes read as zero without allocating). */
  pread(len: number, offset: number): Uint8Array {
    const ino = this.inode;
    const n = Math.max(0, Math.min(len, ino.size - offset));
    const out = new Uint8Array(n);
    const mem = this.file.world.mem;
    let done = 0;
    while (done < n) {
      const off = offset + done;
      const idx = Math.floor(off / ino.folioSize);
      const chunk = Math.min(n - done, ino.folioSize - (off % ino.folioSize));
      const page = ino.folios.get(idx);
      if (page) {
        const phys = mem.pageToPhys(page) + BigInt(off % ino.folioSize);
        mem.readInto(phys, out.subarray(done, done + chunk));
      }
      done += chunk;
    }
    return out;
  }

  /**
   * `memfd_pin_folios(file, start, end, folios, max, &offset)`: pins the
   * folios backing bytes [start, end] (inclusive, as the kernel takes it)
   * with `FOLL_PIN` references; -EINVAL for a bad range or one past EOF.
   * Returns the distinct folios in order and the offset of `start` in the first.
   */
  pinFolios(start: number, end: number): { folios: Page[]; offset: number } {
    const ino = this.inode;
    if (start < 0 || start > end) throw new KernelError("EINVAL", "memfd_pin_folios: bad range");
    const first = Math.floor(start / ino.folioSize);
    const last = Math.floor(end / ino.folioSize);
    const folios: Page[] = [];
    for (let i = first; i <= last; i++) folios.push(ino.folio(i)); // -EINVAL past EOF, nothing pinned yet
    for (const f of folios) f.get(GUP_PIN_COUNTING_BIAS);
    return { folios, offset: start % ino.folioSize };
  }

  /** `unpin_folio`: drops one pin taken by {@linkcode MemfdFile.pinFolios}. */
  unpinFolio(folio: Page): void {
    folio.put(GUP_PIN_COUNTING_BIAS);
  }
}

/** `MemfdFile` view of a memfd file (throws -EINVAL for other files). */
export function memfdFile(file: File): MemfdFile {
  return new MemfdFile(file);
}
