/**
 * DOC: VMAs, flags and fault codes
 *
 * `struct vm_area_struct`, `struct vm_operations_struct` and `struct
 * vm_fault` (include/linux/mm.h, mm_types.h), with the flag and code values
 * of the kernel: `VM_*`, `VM_FAULT_*`, `FAULT_FLAG_*`, `PROT_*`, `MAP_*`.
 *
 * A VMA covers [vmStart, vmEnd) of one {@linkcode MmStruct}; `vmPgoff` is
 * the file offset (in pages) of vmStart, or the first pfn of a COW
 * `remap_pfn_range` mapping. `vm_ops` members are optional, as in the kernel;
 * `fault` may sleep, so it may return a promise.
 *
 * Locking: VMA fields change only with `mmap_lock` held for write
 * ({@linkcode Vma.flagsSet} asserts it, as `vm_flags_set` does through
 * `vma_start_write`). Faults run with `mmap_lock` held for read.
 *
 * @module
 */
import type { Page } from "../memory/page.ts";
import type { AddressSpace, VmFile } from "./address_space.ts";
import type { MmStruct } from "./mm_struct.ts";

/** `VM_*` flags (include/linux/mm.h). */
export const VM_NONE = 0;
/** Readable. */
export const VM_READ = 0x1;
/** Writable. */
export const VM_WRITE = 0x2;
/** Executable. */
export const VM_EXEC = 0x4;
/** Shared: writes reach the backing object. */
export const VM_SHARED = 0x8;
/** mprotect may add PROT_READ. */
export const VM_MAYREAD = 0x10;
/** mprotect may add PROT_WRITE. */
export const VM_MAYWRITE = 0x20;
/** mprotect may add PROT_EXEC. */
export const VM_MAYEXEC = 0x40;
/** Shared mapping request (MAP_SHARED). */
export const VM_MAYSHARE = 0x80;
/** Stack grows down. */
export const VM_GROWSDOWN = 0x100;
/** Page ranges of pure pfns, no `struct page` refcounting. */
export const VM_PFNMAP = 0x400;
/** mlock()ed. */
export const VM_LOCKED = 0x2000;
/** Memory-mapped I/O: no GUP, no core dump. */
export const VM_IO = 0x4000;
/** Not copied on fork. */
export const VM_DONTCOPY = 0x20000;
/** mremap() may not grow it. */
export const VM_DONTEXPAND = 0x40000;
/** Accounted. */
export const VM_ACCOUNT = 0x100000;
/** No swap reservation. */
export const VM_NORESERVE = 0x200000;
/** Huge TLB page VM. */
export const VM_HUGETLB = 0x400000;
/** Wipe on fork. */
export const VM_WIPEONFORK = 0x2000000;
/** Excluded from core dumps. */
export const VM_DONTDUMP = 0x4000000;
/** Mixed pfn and page mappings (`vm_insert_page` / `vmf_insert_mixed`). */
export const VM_MIXEDMAP = 0x10000000;
/** MADV_HUGEPAGE. */
export const VM_HUGEPAGE = 0x20000000;
/** MADV_NOHUGEPAGE. */
export const VM_NOHUGEPAGE = 0x40000000;

/** `PROT_*` (include/uapi/asm-generic/mman-common.h). */
export const PROT_NONE = 0;
/** Page can be read. */
export const PROT_READ = 1;
/** Page can be written. */
export const PROT_WRITE = 2;
/** Page can be executed. */
export const PROT_EXEC = 4;

/** `MAP_SHARED`. */
export const MAP_SHARED = 0x01;
/** `MAP_PRIVATE`. */
export const MAP_PRIVATE = 0x02;
/** `MAP_FIXED`. */
export const MAP_FIXED = 0x10;
/** `MAP_ANONYMOUS`. */
export const MAP_ANONYMOUS = 0x20;
/** `MAP_POPULATE`. */
export const MAP_POPULATE = 0x8000;
/** `MAP_FIXED_NOREPLACE`. */
export const MAP_FIXED_NOREPLACE = 0x100000;

/** `MREMAP_MAYMOVE`. */
export const MREMAP_MAYMOVE = 1;
/** `MREMAP_FIXED`. */
export const MREMAP_FIXED = 2;

/** `vm_fault_t` codes (include/linux/mm_types.h `enum vm_fault_reason`). */
export const VM_FAULT_OOM = 0x000001;
/** Bus error. */
export const VM_FAULT_SIGBUS = 0x000002;
/** A major fault (the handler did I/O). */
export const VM_FAULT_MAJOR = 0x000004;
/** Hardware poisoned page. */
export const VM_FAULT_HWPOISON = 0x000010;
/** Hardware poisoned huge page. */
export const VM_FAULT_HWPOISON_LARGE = 0x000020;
/** Segmentation fault. */
export const VM_FAULT_SIGSEGV = 0x000040;
/** The handler installed the PTE; nothing to return. */
export const VM_FAULT_NOPAGE = 0x000100;
/** The handler returns with the page locked. */
export const VM_FAULT_LOCKED = 0x000200;
/** mmap_lock was dropped; retry the fault. */
export const VM_FAULT_RETRY = 0x000400;
/** A huge fault could not be handled; fall back to small pages. */
export const VM_FAULT_FALLBACK = 0x000800;
/** The handler already did the COW. */
export const VM_FAULT_DONE_COW = 0x001000;
/** A synchronous fault needs an fsync first (DAX). */
export const VM_FAULT_NEEDDSYNC = 0x002000;
/** Completed (per-VMA lock). */
export const VM_FAULT_COMPLETED = 0x004000;
/** `VM_FAULT_ERROR`: any code that is a failure. */
export const VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV |
  VM_FAULT_HWPOISON | VM_FAULT_HWPOISON_LARGE | VM_FAULT_FALLBACK;

/** `FAULT_FLAG_*` (include/linux/mm_types.h `enum fault_flag`). */
export const FAULT_FLAG_WRITE = 1 << 0;
/** The VMA was marked mkwrite. */
export const FAULT_FLAG_MKWRITE = 1 << 1;
/** The handler may drop mmap_lock and return VM_FAULT_RETRY. */
export const FAULT_FLAG_ALLOW_RETRY = 1 << 2;
/** Do not wait while dropping the lock. */
export const FAULT_FLAG_RETRY_NOWAIT = 1 << 3;
/** Killable. */
export const FAULT_FLAG_KILLABLE = 1 << 4;
/** Second try after VM_FAULT_RETRY. */
export const FAULT_FLAG_TRIED = 1 << 5;
/** From user space. */
export const FAULT_FLAG_USER = 1 << 6;
/** On behalf of another mm (GUP remote). */
export const FAULT_FLAG_REMOTE = 1 << 7;
/** Instruction fetch. */
export const FAULT_FLAG_INSTRUCTION = 1 << 8;
/** Interruptible. */
export const FAULT_FLAG_INTERRUPTIBLE = 1 << 9;

/** `PMD_ORDER` on x86-64: 2 MiB entries. */
export const PMD_ORDER = 9;

/** Page protection of a PTE: readable, writable, executable, cache mode. */
export type Pgprot = number;
/** Readable. */
export const PGPROT_READ = 1;
/** Writable. */
export const PGPROT_WRITE = 2;
/** Executable. */
export const PGPROT_EXEC = 4;
/** Cache mode field: write-back (0), write-combining (8), uncached (16). */
export const PGPROT_CACHE_MASK = 0x18;
/** Write-combining. */
export const PGPROT_WC = 0x8;
/** Uncached (UC-). */
export const PGPROT_UC = 0x10;

/** `pgprot_writecombine`. */
export function pgprotWritecombine(p: Pgprot): Pgprot {
  return (p & ~PGPROT_CACHE_MASK) | PGPROT_WC;
}

/** `pgprot_noncached`. */
export function pgprotNoncached(p: Pgprot): Pgprot {
  return (p & ~PGPROT_CACHE_MASK) | PGPROT_UC;
}

/**
 * `vm_get_page_prot(vm_flags)` (x86 protection_map): write only for shared
 * writable mappings (private ones are copy-on-write), and on x86 any access
 * implies read.
 */
export function vmGetPageProt(flags: number): Pgprot {
  let p = 0;
  if (flags & (VM_READ | VM_WRITE | VM_EXEC)) p |= PGPROT_READ;
  if ((flags & VM_WRITE) && (flags & VM_SHARED)) p |= PGPROT_WRITE;
  if (flags & VM_EXEC) p |= PGPROT_EXEC;
  return p;
}

/** `is_cow_mapping`: private and may be written. */
export function isCowMapping(flags: number): boolean {
  return (flags & (VM_SHARED | VM_MAYWRITE)) === VM_MAYWRITE;
}

/** `struct vm_fault`: what a fault handler is told. */
export interface VmFault {
  /** The faulting VMA. */
  readonly vma: Vma;
  /** Page-aligned faulting address. */
  readonly address: number;
  /** The address as it faulted. */
  readonly realAddress: number;
  /** `FAULT_FLAG_*`. */
  readonly flags: number;
  /** File offset in pages (`linear_page_index`). */
  readonly pgoff: number;
  /** Set by a handler that returns 0: the page to map, with a reference for the mapping. */
  page: Page | null;
}

/** `struct vm_operations_struct`: every member optional. */
export interface VmOperations {
  /** Name for reports (`/proc/pid/maps` style). */
  readonly name?: string;
  /** A new VMA copies this one (split, mremap move). */
  open?(vma: Vma): void;
  /** The VMA goes away. */
  close?(vma: Vma): void;
  /** May this VMA be split at `addr`? Return 0, or a negative errno to refuse. */
  maySplit?(vma: Vma, addr: number): number;
  /** The VMA moved (mremap). */
  mremap?(vma: Vma): number;
  /** A page fault in the VMA: returns `VM_FAULT_*` (0 with `vmf.page` set, or NOPAGE). */
  fault?(vmf: VmFault): number | Promise<number>;
  /** A PMD-sized fault (`huge_fault`, order = PMD_ORDER): VM_FAULT_FALLBACK to use small pages. */
  hugeFault?(vmf: VmFault, order: number): number | Promise<number>;
  /** A write to a read-only special PTE of a shared mapping. */
  pfnMkwrite?(vmf: VmFault): number | Promise<number>;
  /** A write to a read-only page of a shared mapping. */
  pageMkwrite?(vmf: VmFault): number | Promise<number>;
}

/** `vma_dummy_vm_ops`: what a file mapping without vm_ops gets (its faults are SIGBUS). */
export const DUMMY_VM_OPS: VmOperations = { name: "dummy" };

/** `struct vm_area_struct`. */
export class Vma {
  /** `vm_mm`. */
  readonly mm: MmStruct;
  /** `vm_start`. */
  vmStart: number;
  /** `vm_end` (exclusive). */
  vmEnd: number;
  /** `vm_flags`. */
  vmFlags: number;
  /** `vm_pgoff`. */
  vmPgoff: number;
  /** `vm_page_prot`. */
  vmPageProt: Pgprot;
  /** `vm_ops`, null for anonymous memory. */
  vmOps: VmOperations | null;
  /** `vm_file`. */
  vmFile: VmFile | null;
  /** `vm_private_data`. */
  vmPrivateData: unknown = null;
  /** World id. */
  readonly id: number;

  /** Built by {@linkcode MmStruct}. */
  constructor(mm: MmStruct, init: {
    start: number;
    end: number;
    flags: number;
    pgoff: number;
    ops: VmOperations | null;
    file: VmFile | null;
    privateData?: unknown;
  }) {
    this.mm = mm;
    this.vmStart = init.start;
    this.vmEnd = init.end;
    this.vmFlags = init.flags;
    this.vmPgoff = init.pgoff;
    this.vmPageProt = vmGetPageProt(init.flags);
    this.vmOps = init.ops;
    this.vmFile = init.file;
    this.vmPrivateData = init.privateData ?? null;
    this.id = mm.world.nextId();
  }

  /** `vma_pages`. */
  get pages(): number {
    return (this.vmEnd - this.vmStart) / 4096;
  }

  /** `vma->vm_file->f_mapping`. */
  get mapping(): AddressSpace | null {
    return this.vmFile?.mapping ?? null;
  }

  /** `vma_is_anonymous`: no vm_ops. */
  get isAnonymous(): boolean {
    return this.vmOps === null;
  }

  /** `linear_page_index(vma, addr)`. */
  linearPageIndex(addr: number): number {
    return (addr - this.vmStart) / 4096 + this.vmPgoff;
  }

  /** `vm_flags_set`: needs mmap_lock for write. */
  flagsSet(flags: number): void {
    this.mm.mmapLock.assertWriteLocked("vm_flags_set");
    this.vmFlags |= flags;
  }

  /** `vm_flags_clear`: needs mmap_lock for write. */
  flagsClear(flags: number): void {
    this.mm.mmapLock.assertWriteLocked("vm_flags_clear");
    this.vmFlags &= ~flags;
  }

  /** `0x7f..000-0x7f..000 rw-s 00000000 name`, as /proc/pid/maps prints it. */
  toString(): string {
    const f = this.vmFlags;
    const perms = `${f & VM_READ ? "r" : "-"}${f & VM_WRITE ? "w" : "-"}${f & VM_EXEC ? "x" : "-"}${
      f & VM_MAYSHARE ? "s" : "p"
    }`;
    const name = this.vmFile?.name ?? this.vmOps?.name ?? "";
    return `${this.vmStart.toString(16)}-${this.vmEnd.toString(16)} ${perms} ${
      (this.vmPgoff * 4096).toString(16).padStart(8, "0")
    } ${name}`.trimEnd();
  }
}
