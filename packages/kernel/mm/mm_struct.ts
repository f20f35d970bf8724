/**
 * DOC: process address spaces
 *
 * `struct mm_struct`: the VMAs of a process, its CPU page table, its mmu
 * notifiers and `mmap_lock`. It implements the system calls that change the
 * layout (`mmap`, `munmap`, `mremap`), the page-fault path
 * (`handle_mm_fault`: anonymous pages, the shared zero page, `vm_ops->fault`,
 * copy-on-write, huge faults), zapping (`zap_page_range_single` /
 * `unmap_vmas`, always bracketed by `invalidate_range_start/end`), and user
 * space loads and stores ({@linkcode MmStruct.access}) that fault exactly as
 * a CPU access would: no VMA or a protection violation is SIGSEGV,
 * `VM_FAULT_SIGBUS` is SIGBUS; both surface as -EFAULT (what
 * `copy_{to,from}_user` return), the message naming the signal.
 *
 * Rules kept from the kernel: lengths are page-aligned up and addresses must
 * be page aligned (-EINVAL); `MAP_FIXED_NOREPLACE` over a mapping is -EEXIST;
 * a file without `mmap` is -ENODEV; a shared writable map of a read-only
 * file is -EACCES; `vm_ops->may_split` can refuse a split (munmap fails and
 * nothing changes); mremap cannot grow VM_DONTEXPAND/VM_PFNMAP mappings
 * (-EFAULT); a fault handler that returns VM_FAULT_RETRY has dropped
 * mmap_lock (the model drops it on the handler's behalf if it did not) and
 * the fault is retried with FAULT_FLAG_TRIED.
 *
 * Locking: `mmap`, `munmap`, `mremap`, teardown take mmap_lock for write;
 * `access` takes it for read only around a fault (the MMU walk and the data
 * copy take no lock, as on hardware); `handleMmFault` expects it held.
 * Page-table changes happen under the PTE lock, which is never held across a
 * scheduling point. Zaps may sleep (notifiers run blockable).
 *
 * @module
 */
import { errnoName } from "../errno.ts";
import { KernelError } from "../errors.ts";
import { type Page, PG } from "../memory/page.ts";
import type { Kernel } from "../world.ts";
import { AddressSpace, type VmFile } from "./address_space.ts";
import type { SpinLock } from "../locking/spinlock.ts";
import { MmapLock, newPtl } from "./locks.ts";
import {
  type MmuNotifierRange,
  MmuNotifierSubscriptions,
  type MmuNotifyEvent,
} from "./mmu_notifier.ts";
import { decodePte, mkPte, PageTable, ptePatch, type PteValue } from "./page_table.ts";
import {
  DUMMY_VM_OPS,
  FAULT_FLAG_ALLOW_RETRY,
  FAULT_FLAG_KILLABLE,
  FAULT_FLAG_TRIED,
  FAULT_FLAG_USER,
  FAULT_FLAG_WRITE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PGPROT_READ,
  PGPROT_WRITE,
  PMD_ORDER,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  VM_DONTEXPAND,
  VM_EXEC,
  VM_FAULT_DONE_COW,
  VM_FAULT_ERROR,
  VM_FAULT_FALLBACK,
  VM_FAULT_HWPOISON,
  VM_FAULT_HWPOISON_LARGE,
  VM_FAULT_NOPAGE,
  VM_FAULT_OOM,
  VM_FAULT_RETRY,
  VM_FAULT_SIGBUS,
  VM_FAULT_SIGSEGV,
  VM_MAYEXEC,
  VM_MAYREAD,
  VM_MAYSHARE,
  VM_MAYWRITE,
  VM_PFNMAP,
  VM_READ,
  VM_SHARED,
  VM_WRITE,
  Vma,
  type VmFault,
  vmGetPageProt,
  type VmOperations,
} from "./vma.ts";

/** `PAGE_SIZE`. */
const PAGE = 4096;
/** `PMD_SIZE`. */
const PMD_SIZE = PAGE << PMD_ORDER;
/** `TASK_SIZE` on x86-64 with 4-level paging. */
export const TASK_SIZE = 0x7fff_ffff_f000;
/** Where top-down mmap placement starts (`mmap_base`). */
export const MMAP_BASE = 0x7f00_0000_0000;
/** Faults retried more often than this are reported as a livelock. */
const MAX_FAULT_RETRIES = 64;

/** Options for {@linkcode MmStruct.mmap}. */
export interface MmapOptions {
  /** Hint, or the address for MAP_FIXED. */
  addr?: number;
  /** Bytes (rounded up to pages). */
  length: number;
  /** `PROT_*`; default read|write. */
  prot?: number;
  /** `MAP_*`; default MAP_SHARED with a file, MAP_PRIVATE|MAP_ANONYMOUS without. */
  flags?: number;
  /** The file to map. */
  file?: VmFile;
  /** File offset in bytes (page aligned). */
  offset?: number;
}

/** Options for a zap. */
export interface ZapOptions {
  /** Notifier event; default `clear`. */
  event?: MmuNotifyEvent;
  /** Keep private COW (anonymous) pages: `unmap_mapping_range` without even_cows. */
  skipCows?: boolean;
}

function pageAlignUp(n: number): number {
  return Math.ceil(n / PAGE) * PAGE;
}

function errFromNeg(ret: number, what: string): KernelError {
  return new KernelError(errnoName(-ret) ?? "EINVAL", what);
}

/** `calc_vm_prot_bits`. */
function protToVm(prot: number): number {
  return (prot & PROT_READ ? VM_READ : 0) | (prot & PROT_WRITE ? VM_WRITE : 0) |
    (prot & PROT_EXEC ? VM_EXEC : 0);
}

/**
 * A process address space.
 *
 * @example
 * ```ts
 * import { Kernel, MmStruct } from "@dmalab/kernel";
 * const world = new Kernel();
 * const mm = new MmStruct(world, "app");
 * await world.runTask("app", async () => {
 *   const addr = await mm.mmap({ length: 8192 });
 *   await mm.write(addr + 100, new Uint8Array([1, 2, 3]));
 *   (await mm.read(addr + 101, 2)).join(","); // "2,3"
 *   await mm.munmap(addr, 8192);
 * });
 * ```
 */
export class MmStruct {
  /** The world. */
  readonly world: Kernel;
  /** Name for reports (the process). */
  readonly name: string;
  /** World id. */
  readonly id: number;
  /** `mmap_lock`. */
  readonly mmapLock: MmapLock;
  /** `page_table_lock` (the PTE lock of every table). */
  readonly ptl: SpinLock;
  /** The CPU page table. */
  readonly pgtable: PageTable = new PageTable();
  #vmas: Vma[] = [];
  #users = 1;
  #count = 1;
  #subs: MmuNotifierSubscriptions | null = null;
  #dead = false;

  /** `mm_alloc`: one user, one count. */
  constructor(world: Kernel, name = "mm") {
    this.world = world;
    this.name = name;
    this.id = world.nextId();
    this.mmapLock = new MmapLock(world, "&mm->mmap_lock");
    this.ptl = newPtl(world, "&mm->page_table_lock");
    world.addChecker(`mm:${this.id}`, () => this.checkInvariants());
  }

  /**
   * Every PTE lies inside a VMA, and every non-special PTE maps a page
   * that is referenced and counted as mapped. (Registered as the world
   * checker `mm:<id>`; removed at teardown.)
   */
  checkInvariants(): string[] {
    const out: string[] = [];
    for (const [vpn, e, huge] of this.pgtable.range(0, TASK_SIZE / PAGE)) {
      const addr = vpn * PAGE;
      if (!this.vmaLookup(addr)) {
        out.push(`${this.name}: PTE at 0x${addr.toString(16)} outside every VMA`);
      }
      const pte = decodePte(e, huge);
      if (pte.special) continue;
      const page = this.world.mem.pfnToPage(pte.pfn);
      if (!page) {
        out.push(
          `${this.name}: PTE at 0x${addr.toString(16)} maps pfn 0x${
            pte.pfn.toString(16)
          } without struct page`,
        );
      } else if (page.refcount <= 0 || page.mapcount <= 0) {
        out.push(
          `${this.name}: PTE at 0x${addr.toString(16)} maps ${page} with mapcount ${page.mapcount}`,
        );
      }
    }
    return out;
  }

  // ---- lifetime ----------------------------------------------------------

  /** `mm_users`. */
  get users(): number {
    return this.#users;
  }

  /** `mm_count`. */
  get count(): number {
    return this.#count;
  }

  /** True after teardown (`exit_mmap`). */
  get dead(): boolean {
    return this.#dead;
  }

  /** `mmget`. */
  get(): void {
    if (this.#users <= 0) {
      this.world.bug("BUG", `BUG: mmget on ${this.name} with mm_users 0`);
      return;
    }
    this.#users++;
  }

  /** `mmget_not_zero`. */
  getNotZero(): boolean {
    if (this.#users <= 0) return false;
    this.#users++;
    return true;
  }

  /** `mmput`: the last user tears the address space down (`exit_mmap`); sleeps. */
  async put(): Promise<void> {
    if (this.#users <= 0) {
      this.world.bug("BUG", `BUG: mmput on ${this.name} with mm_users 0`);
      return;
    }
    if (--this.#users > 0) return;
    await this.#exitMmap();
    this.drop();
  }

  /** `mmgrab`. */
  grab(): void {
    this.#count++;
  }

  /** `mmdrop`. */
  drop(): void {
    if (this.#count <= 0) {
      this.world.bug("BUG", `BUG: mmdrop on ${this.name} with mm_count 0`);
      return;
    }
    this.#count--;
  }

  /** True once `mm->notifier_subscriptions` exists (`mm_has_notifiers`). */
  get hasNotifiers(): boolean {
    return this.#subs !== null;
  }

  /** @internal The notifier state, created on first use. */
  notifierSubscriptions(): MmuNotifierSubscriptions {
    this.#subs ??= new MmuNotifierSubscriptions(this.world);
    return this.#subs;
  }

  async #exitMmap(): Promise<void> {
    if (this.#subs) await this.#subs.release(this);
    await this.mmapLock.writeLock();
    try {
      for (const vma of [...this.#vmas]) {
        await this.zapVmaRange(vma, vma.vmStart, vma.vmEnd, { event: "unmap" });
      }
      for (const vma of [...this.#vmas]) await this.#removeVma(vma);
      this.#dead = true;
      this.world.removeChecker(`mm:${this.id}`);
    } finally {
      this.mmapLock.writeUnlock();
    }
  }

  // ---- VMAs --------------------------------------------------------------

  /** VMAs in address order. */
  get vmas(): readonly Vma[] {
    return this.#vmas;
  }

  /** `find_vma`: the first VMA ending above `addr`, or null. */
  findVma(addr: number): Vma | null {
    for (const v of this.#vmas) if (v.vmEnd > addr) return v;
    return null;
  }

  /** `vma_lookup`: the VMA containing `addr`, or null. */
  vmaLookup(addr: number): Vma | null {
    const v = this.findVma(addr);
    return v && v.vmStart <= addr ? v : null;
  }

  #overlapping(start: number, end: number): Vma[] {
    return this.#vmas.filter((v) => v.vmStart < end && start < v.vmEnd);
  }

  /** `/proc/pid/maps`. */
  maps(): string {
    return this.#vmas.map(String).join("\n");
  }

  #insertVma(vma: Vma): void {
    this.#vmas.push(vma);
    this.#vmas.sort((a, b) => a.vmStart - b.vmStart);
  }

  async #linkFile(vma: Vma): Promise<void> {
    const mapping = vma.mapping;
    if (!mapping) return;
    await mapping.iMmapRwsem.downWrite();
    mapping.link(vma);
    mapping.iMmapRwsem.upWrite();
  }

  async #unlinkFile(vma: Vma): Promise<void> {
    const mapping = vma.mapping;
    if (!mapping) return;
    await mapping.iMmapRwsem.downWrite();
    mapping.unlink(vma);
    mapping.iMmapRwsem.upWrite();
  }

  /** `remove_vma`: unlink, `vm_ops->close`, `fput`. */
  async #removeVma(vma: Vma): Promise<void> {
    this.#vmas = this.#vmas.filter((v) => v !== vma);
    await this.#unlinkFile(vma);
    vma.vmOps?.close?.(vma);
    vma.vmFile?.put?.();
  }

  /** `get_unmapped_area`, top-down from {@linkcode MMAP_BASE}. */
  #unmappedArea(len: number, hint: number): number {
    if (
      hint && hint % PAGE === 0 && hint + len <= TASK_SIZE &&
      this.#overlapping(hint, hint + len).length === 0
    ) {
      return hint;
    }
    let top = MMAP_BASE;
    const below = this.#vmas.filter((v) => v.vmStart < MMAP_BASE).sort((a, b) =>
      b.vmStart - a.vmStart
    );
    for (const v of below) {
      if (v.vmEnd <= top - len) return top - len;
      top = Math.min(top, v.vmStart);
    }
    if (top - len >= 0x10000) return top - len;
    throw new KernelError(
      "ENOMEM",
      `mmap: no room for 0x${len.toString(16)} bytes in ${this.name}`,
    );
  }

  /**
   * `__split_vma(vmi, vma, addr, new_below)`: splits at `addr`. The new VMA
   * is the lower part when `newBelow`, else the upper part; it gets a file
   * reference and `vm_ops->open`.
   */
  async #splitVma(vma: Vma, addr: number, newBelow: boolean): Promise<Vma> {
    const fresh = new Vma(this, {
      start: newBelow ? vma.vmStart : addr,
      end: newBelow ? addr : vma.vmEnd,
      flags: vma.vmFlags,
      pgoff: newBelow ? vma.vmPgoff : vma.vmPgoff + (addr - vma.vmStart) / PAGE,
      ops: vma.vmOps,
      file: vma.vmFile,
      privateData: vma.vmPrivateData,
    });
    fresh.vmPageProt = vma.vmPageProt;
    // A huge entry straddling the split cannot stay: pfnmap huge PMDs are zapped, not split.
    if (addr % PMD_SIZE !== 0 && this.pgtable.isHuge(addr / PAGE)) {
      const hs = Math.floor(addr / PMD_SIZE) * PMD_SIZE;
      await this.zapVmaRange(vma, Math.max(hs, vma.vmStart), Math.min(hs + PMD_SIZE, vma.vmEnd));
    }
    vma.vmFile?.get?.();
    if (newBelow) {
      vma.vmPgoff += (addr - vma.vmStart) / PAGE;
      vma.vmStart = addr;
    } else {
      vma.vmEnd = addr;
    }
    this.#insertVma(fresh);
    await this.#linkFile(fresh);
    fresh.vmOps?.open?.(fresh);
    return fresh;
  }

  #checkSplit(vma: Vma, addr: number): void {
    const fn = vma.vmOps?.maySplit;
    if (!fn) return;
    const r = fn.call(vma.vmOps, vma, addr);
    if (r) {
      throw errFromNeg(r, `split_vma: ${vma}: vm_ops->may_split refused 0x${addr.toString(16)}`);
    }
  }

  // ---- mmap / munmap / mremap -------------------------------------------

  /**
   * `mmap(2)` (`do_mmap` + `mmap_region`). Returns the address. -EINVAL for
   * zero length, unaligned MAP_FIXED address or offset, or neither / both of
   * MAP_SHARED and MAP_PRIVATE; -EBADF without a file or MAP_ANONYMOUS;
   * -ENODEV when the file has no mmap; -EACCES for a shared writable map of
   * a read-only file; -EEXIST for MAP_FIXED_NOREPLACE over a mapping;
   * -ENOMEM without room; whatever the file's mmap throws (the VMA is gone
   * and its PTEs zapped).
   */
  async mmap(options: MmapOptions): Promise<number> {
    const file = options.file ?? null;
    const prot = options.prot ?? (PROT_READ | PROT_WRITE);
    const flags = options.flags ?? (file ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS);
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(options.length) || options.length <= 0) {
      throw new KernelError(
        "EINVAL",
        `mmap: length ${options.length} is zero or invalid (do_mmap)`,
      );
    }
    const len = pageAlignUp(options.length);
    if (len > TASK_SIZE) {
      throw new KernelError("ENOMEM", `mmap: length 0x${len.toString(16)} exceeds TASK_SIZE`);
    }
    if (offset % PAGE !== 0 || offset < 0) {
      throw new KernelError(
        "EINVAL",
        `mmap: offset 0x${offset.toString(16)} not page aligned (ksys_mmap_pgoff)`,
      );
    }
    const type = flags & (MAP_SHARED | MAP_PRIVATE);
    if (type !== MAP_SHARED && type !== MAP_PRIVATE) {
      throw new KernelError(
        "EINVAL",
        "mmap: exactly one of MAP_SHARED and MAP_PRIVATE is required (do_mmap)",
      );
    }
    if (!file && !(flags & MAP_ANONYMOUS)) {
      throw new KernelError("EBADF", "mmap: no file and no MAP_ANONYMOUS (ksys_mmap_pgoff)");
    }
    if (file && !file.mmap) {
      throw new KernelError("ENODEV", `mmap: ${file.name ?? "file"} has no f_op->mmap (do_mmap)`);
    }
    const fileWritable = file?.writable ?? true;
    if (file && type === MAP_SHARED && (prot & PROT_WRITE) && !fileWritable) {
      throw new KernelError(
        "EACCES",
        `mmap: shared writable mapping of read-only ${file.name ?? "file"} (do_mmap)`,
      );
    }
    const fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) !== 0;
    const addrIn = options.addr ?? 0;
    if (fixed && addrIn % PAGE !== 0) {
      throw new KernelError(
        "EINVAL",
        `mmap: MAP_FIXED address 0x${addrIn.toString(16)} not page aligned`,
      );
    }
    if (fixed && addrIn + len > TASK_SIZE) {
      throw new KernelError("ENOMEM", `mmap: MAP_FIXED range beyond TASK_SIZE`);
    }
    await this.mmapLock.writeLock();
    let addr: number;
    let vma: Vma;
    try {
      if (this.#dead) throw new KernelError("EINVAL", `mmap: ${this.name} is torn down`);
      if (fixed) {
        addr = addrIn;
        if (this.#overlapping(addr, addr + len).length) {
          if (flags & MAP_FIXED_NOREPLACE) {
            throw new KernelError(
              "EEXIST",
              `mmap: MAP_FIXED_NOREPLACE over an existing mapping at 0x${addr.toString(16)}`,
            );
          }
          await this.#doMunmap(addr, addr + len);
        }
      } else {
        addr = this.#unmappedArea(len, addrIn);
      }
      let vmFlags = protToVm(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;
      if (type === MAP_SHARED) {
        vmFlags |= VM_SHARED | VM_MAYSHARE;
        if (file && !fileWritable) vmFlags &= ~(VM_MAYWRITE | VM_SHARED);
      }
      let vmFile: VmFile | null = file;
      let pgoff = offset / PAGE;
      if (!file && type === MAP_SHARED) {
        vmFile = shmemFile(this.world, len);
        pgoff = 0;
      } else if (!file) {
        pgoff = addr / PAGE;
      }
      vma = new Vma(this, {
        start: addr,
        end: addr + len,
        flags: vmFlags,
        pgoff,
        ops: null,
        file: vmFile,
      });
      if (vmFile) {
        if (vmFile !== file) {
          // shmem_zero_setup: the VMA owns the only reference of its shmem file.
        } else {
          vmFile.get?.();
        }
        try {
          await vmFile.mmap!(vma);
        } catch (e) {
          // unmap_region on the error path: drop whatever the mmap hook installed.
          this.clearPtes(vma, vma.vmStart, vma.vmEnd, false);
          vmFile.put?.();
          throw e;
        }
        vma.vmOps ??= DUMMY_VM_OPS;
      }
      this.#insertVma(vma);
      await this.#linkFile(vma);
    } finally {
      this.mmapLock.writeUnlock();
    }
    if (flags & MAP_POPULATE) await this.#populate(vma);
    return addr;
  }

  /** `mm_populate`: faults every page in, ignoring failures as the kernel does. */
  async #populate(vma: Vma): Promise<void> {
    const write = (vma.vmFlags & (VM_WRITE | VM_SHARED)) === (VM_WRITE | VM_SHARED);
    await this.mmapLock.readLock();
    try {
      for (let a = vma.vmStart; a < vma.vmEnd; a += PAGE) {
        if (this.vmaLookup(a) !== vma) break;
        if (this.pgtable.lookup(a / PAGE)) continue;
        const r = await this.handleMmFault(vma, a, write ? FAULT_FLAG_WRITE : 0);
        if (r & (VM_FAULT_ERROR | VM_FAULT_RETRY)) break;
      }
    } finally {
      if (this.mmapLock.heldByCurrent()) this.mmapLock.readUnlock();
    }
  }

  /**
   * `munmap(2)`: -EINVAL for an unaligned address, zero length or a range
   * beyond TASK_SIZE; a `may_split` refusal fails the call with nothing
   * changed. Unmapping a hole is fine.
   */
  async munmap(addr: number, length: number): Promise<void> {
    if (addr % PAGE !== 0 || addr < 0) {
      throw new KernelError("EINVAL", `munmap: address 0x${addr.toString(16)} not page aligned`);
    }
    if (!(length > 0)) throw new KernelError("EINVAL", "munmap: zero length");
    const len = pageAlignUp(length);
    if (addr + len > TASK_SIZE) throw new KernelError("EINVAL", "munmap: range beyond TASK_SIZE");
    await this.mmapLock.writeLock();
    try {
      await this.#doMunmap(addr, addr + len);
    } finally {
      this.mmapLock.writeUnlock();
    }
  }

  /** `do_vmi_munmap` with mmap_lock held for write. */
  async #doMunmap(start: number, end: number): Promise<void> {
    const hit = this.#overlapping(start, end);
    if (hit.length === 0) return;
    const first = hit[0]!;
    const last = hit[hit.length - 1]!;
    // Ask before changing anything, so a refusal leaves the layout intact.
    if (first.vmStart < start) this.#checkSplit(first, start);
    if (last.vmEnd > end) this.#checkSplit(last, end);
    if (first.vmStart < start) await this.#splitVma(first, start, true);
    const tail = this.#overlapping(start, end).at(-1)!;
    if (tail.vmEnd > end) await this.#splitVma(tail, end, false);
    const victims = this.#overlapping(start, end);
    const range = this.#range(start, end, "unmap");
    const subs = this.#subs;
    if (subs) await subs.invalidateRangeStart(range);
    try {
      for (const v of victims) this.clearPtes(v, v.vmStart, v.vmEnd, false);
    } finally {
      if (subs) await subs.invalidateRangeEnd(range);
    }
    for (const v of victims) await this.#removeVma(v);
  }

  /**
   * `mremap(2)`, lite: shrink, grow in place, or move with MREMAP_MAYMOVE
   * (PTEs move, the notifiers see the old range unmapped). -EINVAL for bad
   * flags or alignment, -EFAULT when the old range is not one mapping or a
   * VM_DONTEXPAND/VM_PFNMAP mapping would grow, -ENOMEM when it cannot grow
   * in place and may not move.
   */
  async mremap(
    oldAddr: number,
    oldLen: number,
    newLen: number,
    flags = 0,
    newAddr = 0,
  ): Promise<number> {
    if (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED)) {
      throw new KernelError("EINVAL", "mremap: unknown flags");
    }
    if ((flags & MREMAP_FIXED) && !(flags & MREMAP_MAYMOVE)) {
      throw new KernelError("EINVAL", "mremap: MREMAP_FIXED without MREMAP_MAYMOVE");
    }
    if (oldAddr % PAGE !== 0) {
      throw new KernelError("EINVAL", "mremap: old address not page aligned");
    }
    const oLen = pageAlignUp(oldLen);
    const nLen = pageAlignUp(newLen);
    if (nLen === 0) throw new KernelError("EINVAL", "mremap: new length is zero");
    await this.mmapLock.writeLock();
    try {
      const vma = this.vmaLookup(oldAddr);
      if (!vma || oldAddr + oLen > vma.vmEnd) {
        throw new KernelError(
          "EFAULT",
          `mremap: 0x${oldAddr.toString(16)}+0x${oLen.toString(16)} is not inside one mapping`,
        );
      }
      if (flags & MREMAP_FIXED) {
        if (newAddr % PAGE !== 0) {
          throw new KernelError("EINVAL", "mremap: new address not page aligned");
        }
        if (newAddr < oldAddr + oLen && oldAddr < newAddr + nLen) {
          throw new KernelError("EINVAL", "mremap: new range overlaps the old one");
        }
      }
      if (nLen > oLen && (vma.vmFlags & (VM_DONTEXPAND | VM_PFNMAP))) {
        throw new KernelError(
          "EFAULT",
          `mremap: ${vma} is VM_DONTEXPAND/VM_PFNMAP and cannot grow (resize_is_valid)`,
        );
      }
      if (!(flags & MREMAP_FIXED)) {
        if (nLen === oLen) return oldAddr;
        if (nLen < oLen) {
          await this.#doMunmap(oldAddr + nLen, oldAddr + oLen);
          return oldAddr;
        }
        // Grow in place when the old range ends the VMA and the gap is free.
        if (
          oldAddr + oLen === vma.vmEnd &&
          this.#overlapping(vma.vmEnd, oldAddr + nLen).length === 0 &&
          oldAddr + nLen <= TASK_SIZE
        ) {
          vma.vmEnd = oldAddr + nLen;
          return oldAddr;
        }
        if (!(flags & MREMAP_MAYMOVE)) {
          throw new KernelError(
            "ENOMEM",
            "mremap: cannot grow in place and MREMAP_MAYMOVE not given",
          );
        }
      }
      return await this.#moveVma(vma, oldAddr, oLen, nLen, flags & MREMAP_FIXED ? newAddr : null);
    } finally {
      this.mmapLock.writeUnlock();
    }
  }

  /** `move_vma`: copy the VMA, move its PTEs, unmap the old range. */
  async #moveVma(
    vma: Vma,
    oldAddr: number,
    oLen: number,
    nLen: number,
    fixedAt: number | null,
  ): Promise<number> {
    if (oldAddr > vma.vmStart) this.#checkSplit(vma, oldAddr);
    if (oldAddr + oLen < vma.vmEnd) this.#checkSplit(vma, oldAddr + oLen);
    let target: number;
    if (fixedAt !== null) {
      await this.#doMunmap(fixedAt, fixedAt + nLen);
      target = fixedAt;
    } else {
      target = this.#unmappedArea(nLen, 0);
    }
    const moved = new Vma(this, {
      start: target,
      end: target + nLen,
      flags: vma.vmFlags,
      pgoff: vma.vmPgoff + (oldAddr - vma.vmStart) / PAGE,
      ops: vma.vmOps,
      file: vma.vmFile,
      privateData: vma.vmPrivateData,
    });
    moved.vmPageProt = vma.vmPageProt;
    vma.vmFile?.get?.();
    moved.vmOps?.open?.(moved);
    const moveLen = Math.min(oLen, nLen);
    const range = this.#range(oldAddr, oldAddr + oLen, "unmap");
    const subs = this.#subs;
    if (subs) await subs.invalidateRangeStart(range);
    try {
      this.ptl.lock();
      try {
        for (
          const [vpn, , huge] of [
            ...this.pgtable.range(oldAddr / PAGE, (oldAddr + moveLen) / PAGE),
          ]
        ) {
          const delta = target / PAGE - oldAddr / PAGE;
          if (huge) {
            const old = this.pgtable.clearHuge(vpn);
            if ((vpn + delta) % 512 === 0) this.pgtable.setHuge(vpn + delta, old);
          } else {
            this.pgtable.set(vpn + delta, this.pgtable.clear(vpn));
          }
        }
      } finally {
        this.ptl.unlock();
      }
    } finally {
      if (subs) await subs.invalidateRangeEnd(range);
    }
    this.#insertVma(moved);
    await this.#linkFile(moved);
    await this.#doMunmap(oldAddr, oldAddr + oLen);
    moved.vmOps?.mremap?.(moved);
    return target;
  }

  /**
   * `mprotect(2)`: -EINVAL for an unaligned address or unknown prot bits,
   * -ENOMEM when part of the range is not mapped, -EACCES when a VMA may not
   * get the access (`VM_MAY*` missing, e.g. PROT_WRITE on a shared mapping
   * of a read-only file); a `may_split` refusal fails the call. Unlike the
   * kernel, which can leave earlier VMAs changed when a later one fails,
   * every check runs before anything changes. Existing PTEs are rewritten
   * between `invalidate_range_start/end` with event `protection_vma`: write
   * is dropped at once; added write shows up at once in shared mappings and
   * on exclusive anonymous pages (`can_change_pte_writable`); other private
   * pages keep copy-on-write.
   */
  async mprotect(addr: number, length: number, prot: number): Promise<void> {
    if (addr % PAGE !== 0 || addr < 0) {
      throw new KernelError("EINVAL", `mprotect: address 0x${addr.toString(16)} not page aligned`);
    }
    if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) {
      throw new KernelError("EINVAL", `mprotect: unknown prot bits 0x${prot.toString(16)}`);
    }
    if (length === 0) return;
    const end = addr + pageAlignUp(length);
    if (end <= addr || end > TASK_SIZE) {
      throw new KernelError("ENOMEM", "mprotect: range overflows");
    }
    await this.mmapLock.writeLock();
    try {
      const hit = this.#overlapping(addr, end);
      let at = addr;
      for (const v of hit) {
        if (v.vmStart > at) break;
        at = v.vmEnd;
      }
      if (hit.length === 0 || at < end) {
        throw new KernelError(
          "ENOMEM",
          `mprotect: 0x${addr.toString(16)}-0x${end.toString(16)} is not fully mapped`,
        );
      }
      const want = protToVm(prot);
      for (const v of hit) {
        const newFlags = want | (v.vmFlags & ~(VM_READ | VM_WRITE | VM_EXEC));
        // (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS: an access without its VM_MAY* bit.
        if ((newFlags & ~(newFlags >> 4)) & (VM_READ | VM_WRITE | VM_EXEC)) {
          throw new KernelError(
            "EACCES",
            `mprotect: ${v} may not become ${prot & PROT_WRITE ? "writable" : "accessible"}`,
          );
        }
      }
      const first = hit[0]!;
      const last = hit[hit.length - 1]!;
      if (first.vmStart < addr) this.#checkSplit(first, addr);
      if (last.vmEnd > end) this.#checkSplit(last, end);
      if (first.vmStart < addr) await this.#splitVma(first, addr, true);
      const tail = this.#overlapping(addr, end).at(-1)!;
      if (tail.vmEnd > end) await this.#splitVma(tail, end, false);
      for (const v of this.#overlapping(addr, end)) {
        v.vmFlags = want | (v.vmFlags & ~(VM_READ | VM_WRITE | VM_EXEC));
        const cache = v.vmPageProt & ~(PGPROT_READ | PGPROT_WRITE | 4);
        v.vmPageProt = vmGetPageProt(v.vmFlags) | cache;
        await this.#changeProtection(v);
      }
    } finally {
      this.mmapLock.writeUnlock();
    }
  }

  #exclusiveAnon(pte: PteValue): boolean {
    if (pte.special) return false;
    const page = this.world.mem.pfnToPage(pte.pfn);
    return page !== null && page.isAnon && page.refcount === 1;
  }

  /** `change_protection`: rewrites the PTEs of `vma` to its new `vm_page_prot`. */
  async #changeProtection(vma: Vma): Promise<void> {
    const entries = [...this.pgtable.range(vma.vmStart / PAGE, vma.vmEnd / PAGE)];
    if (entries.length === 0) return;
    const range = this.#range(vma.vmStart, vma.vmEnd, "protection_vma");
    const subs = this.#subs;
    if (subs) await subs.invalidateRangeStart(range);
    try {
      this.ptl.lock();
      try {
        const shared = (vma.vmFlags & VM_SHARED) !== 0;
        for (const [vpn, e, huge] of entries) {
          const old = decodePte(e);
          let p = (vma.vmPageProt & ~PGPROT_WRITE) | (old.prot & ~(PGPROT_READ | PGPROT_WRITE | 4));
          // can_change_pte_writable: shared mappings, or an exclusive anonymous page.
          const wantWrite = (vma.vmFlags & VM_WRITE) !== 0;
          if (wantWrite && (shared || old.writable || this.#exclusiveAnon(old))) p |= PGPROT_WRITE;
          const next = ptePatch(e, p);
          if (huge) {
            this.pgtable.clearHuge(vpn);
            this.pgtable.setHuge(vpn, next);
          } else {
            this.pgtable.set(vpn, next);
          }
        }
      } finally {
        this.ptl.unlock();
      }
    } finally {
      if (subs) await subs.invalidateRangeEnd(range);
    }
  }

  // ---- zapping -----------------------------------------------------------

  #range(start: number, end: number, event: MmuNotifyEvent, blockable = true): MmuNotifierRange {
    return { mm: this, start, end, event, flags: blockable ? 1 : 0, owner: null };
  }

  /**
   * @internal Without notifiers (callers bracket it, or the VMA is not yet
   * visible, as on `mmap` error paths).
   * Clears PTEs of `vma` in [start, end) under the PTE lock and drops the
   * page references the mapping held. A huge entry partly in range is
   * cleared whole (a pfnmap PMD is never split, it refaults).
   */
  clearPtes(_vma: Vma, start: number, end: number, skipCows: boolean): number {
    const mem = this.world.mem;
    this.ptl.lock();
    try {
      return this.pgtable.clearRange(start / PAGE, end / PAGE, (_vpn, e, huge) => {
        if (huge) return false;
        const pte = decodePte(e);
        if (pte.special) return false;
        const page = mem.pfnToPage(pte.pfn);
        if (!page) return false;
        if (skipCows && page.isAnon) return true;
        // Drop the mapping's reference once the PTE is gone (clearRange clears right after).
        page.mapcount--;
        page.put();
        return false;
      });
    } finally {
      this.ptl.unlock();
    }
  }

  /**
   * `zap_page_range_single`: zaps [start, end) of `vma` between
   * `invalidate_range_start` and `invalidate_range_end` (blockable). Sleeps.
   * Returns the number of entries cleared.
   */
  async zapVmaRange(
    vma: Vma,
    start: number,
    end: number,
    options: ZapOptions = {},
  ): Promise<number> {
    const s = Math.max(start, vma.vmStart);
    const e = Math.min(end, vma.vmEnd);
    if (s >= e) return 0;
    const range = this.#range(s, e, options.event ?? "clear");
    const subs = this.#subs;
    if (subs) await subs.invalidateRangeStart(range);
    let n = 0;
    try {
      // The invalidation is in progress here: other tasks may run and must see it.
      await this.world.sched.preempt("zap_page_range_single", this.id, "write");
      n = this.clearPtes(vma, s, e, options.skipCows ?? false);
    } finally {
      if (subs) await subs.invalidateRangeEnd(range);
    }
    return n;
  }

  /** `zap_vma_ptes`: for VM_PFNMAP VMAs only (-EINVAL otherwise, and for a range outside the VMA). */
  async zapVmaPtes(vma: Vma, address: number, size: number): Promise<void> {
    if (address < vma.vmStart || address + size > vma.vmEnd || !(vma.vmFlags & VM_PFNMAP)) {
      throw new KernelError(
        "EINVAL",
        `zap_vma_ptes: ${vma} is not VM_PFNMAP or the range is outside it`,
      );
    }
    await this.zapVmaRange(vma, address, address + size);
  }

  // ---- faults ------------------------------------------------------------

  /** The per-world shared zero page (`ZERO_PAGE(0)`). */
  get zeroPfn(): number {
    return this.world.ext("mm.zero_page", () => {
      const p = this.world.mem.allocPages(0, { zero: true, zone: "DMA32" });
      if (!p) throw new KernelError("ENOMEM", "no RAM for the zero page");
      p.flags |= PG.reserved;
      return p.pfn;
    });
  }

  /** Walks the page table (`follow_pte` without locking): the entry mapping `vaddr`, or null. */
  translate(vaddr: number): PteValue | null {
    return this.pgtable.lookup(Math.floor(vaddr / PAGE));
  }

  /** Installs a PTE under the PTE lock; false (nothing changed) when one is already there. */
  installPte(vpn: number, entry: number): boolean {
    this.ptl.lock();
    try {
      if (this.pgtable.raw(vpn).entry !== 0) return false;
      this.pgtable.set(vpn, entry);
      return true;
    } finally {
      this.ptl.unlock();
    }
  }

  /**
   * `handle_mm_fault(vma, address, flags)`: returns `VM_FAULT_*` (0 when a
   * usable PTE is now in place). Needs mmap_lock held (read or write).
   */
  async handleMmFault(vma: Vma, address: number, flags: number): Promise<number> {
    this.mmapLock.assertLocked("handle_mm_fault");
    const write = (flags & FAULT_FLAG_WRITE) !== 0;
    const addr = Math.floor(address / PAGE) * PAGE;
    const vpn = addr / PAGE;
    if (addr < vma.vmStart || addr >= vma.vmEnd) return VM_FAULT_SIGSEGV;
    const vmf: VmFault = {
      vma,
      address: addr,
      realAddress: address,
      flags,
      pgoff: vma.linearPageIndex(addr),
      page: null,
    };
    if (vma.vmOps?.hugeFault && this.pgtable.pmdNone(vpn)) {
      const hs = Math.floor(addr / PMD_SIZE) * PMD_SIZE;
      if (hs >= vma.vmStart && hs + PMD_SIZE <= vma.vmEnd) {
        const hvmf: VmFault = { ...vmf, address: hs, pgoff: vma.linearPageIndex(hs) };
        const r = await vma.vmOps.hugeFault(hvmf, PMD_ORDER);
        if (!(r & VM_FAULT_FALLBACK)) return r;
      }
    }
    const pte = this.pgtable.lookup(vpn);
    if (!pte) {
      if (vma.isAnonymous) return this.#doAnonymousPage(vmf, write);
      return await this.#doFault(vmf, write);
    }
    if (write && !pte.writable) return await this.#doWpPage(vmf, pte);
    return 0;
  }

  #doAnonymousPage(vmf: VmFault, write: boolean): number {
    const vma = vmf.vma;
    const vpn = vmf.address / PAGE;
    if (!write) {
      const entry = mkPte(this.zeroPfn, vma.vmPageProt & ~PGPROT_WRITE, true);
      this.installPte(vpn, entry);
      return 0;
    }
    const page = this.#newAnonPage(vma, vmf.address);
    if (!page) return VM_FAULT_OOM;
    const prot = vma.vmPageProt | (vma.vmFlags & VM_WRITE ? PGPROT_WRITE : 0);
    if (!this.installPte(vpn, mkPte(page.pfn, prot, false, true))) {
      page.put();
      return 0;
    }
    page.mapcount++;
    return 0;
  }

  #newAnonPage(vma: Vma, addr: number): Page | null {
    const page = this.world.mem.allocPages(0, { zero: true });
    if (!page) return null;
    page.flags |= PG.anon;
    page.mapping = this;
    page.index = vma.linearPageIndex(addr);
    return page;
  }

  async #doFault(vmf: VmFault, write: boolean): Promise<number> {
    const vma = vmf.vma;
    const ops = vma.vmOps!;
    if (!ops.fault) return VM_FAULT_SIGBUS;
    if (write && !(vma.vmFlags & VM_SHARED)) {
      // do_cow_fault
      const cow = this.#newAnonPage(vma, vmf.address);
      if (!cow) return VM_FAULT_OOM;
      const ret = await ops.fault(vmf);
      if (ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY | VM_FAULT_DONE_COW)) {
        cow.put();
        return ret;
      }
      if (!vmf.page) {
        cow.put();
        return this.#noPage(vma);
      }
      this.world.mem.copy(
        this.world.mem.pageToPhys(cow),
        this.world.mem.pageToPhys(vmf.page),
        PAGE,
      );
      vmf.page.put();
      const prot = vma.vmPageProt | (vma.vmFlags & VM_WRITE ? PGPROT_WRITE : 0);
      if (!this.installPte(vmf.address / PAGE, mkPte(cow.pfn, prot, false, true))) {
        cow.put();
        return VM_FAULT_NOPAGE;
      }
      cow.mapcount++;
      return ret;
    }
    const ret = await ops.fault(vmf);
    if (ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY | VM_FAULT_DONE_COW)) return ret;
    if (!vmf.page) return this.#noPage(vma);
    if (write && ops.pageMkwrite) {
      const r = await ops.pageMkwrite(vmf);
      if (r & (VM_FAULT_ERROR | VM_FAULT_NOPAGE)) {
        vmf.page.put();
        return r;
      }
    }
    return this.#finishFault(vmf, write) | ret;
  }

  #noPage(vma: Vma): number {
    this.world.bug("BUG", `BUG: ${vma}: vm_ops->fault returned 0 without setting vmf->page`);
    return VM_FAULT_SIGBUS;
  }

  /** `finish_fault`: maps `vmf.page` (its reference becomes the mapping's). */
  #finishFault(vmf: VmFault, write: boolean): number {
    const page = vmf.page!;
    const vma = vmf.vma;
    const prot = vma.vmPageProt;
    if (!this.installPte(vmf.address / PAGE, mkPte(page.pfn, prot, false, write))) {
      page.put();
      return VM_FAULT_NOPAGE;
    }
    page.mapcount++;
    return 0;
  }

  /** `do_wp_page`: a write to a present read-only PTE. */
  async #doWpPage(vmf: VmFault, pte: PteValue): Promise<number> {
    const vma = vmf.vma;
    const vpn = vmf.address / PAGE;
    const sharedWritable = (vma.vmFlags & (VM_WRITE | VM_SHARED)) === (VM_WRITE | VM_SHARED);
    const page = pte.special ? null : this.world.mem.pfnToPage(pte.pfn);
    if (sharedWritable) {
      const hook = page ? vma.vmOps?.pageMkwrite : vma.vmOps?.pfnMkwrite;
      if (hook) {
        const r = await hook.call(vma.vmOps, vmf);
        if (r & (VM_FAULT_ERROR | VM_FAULT_NOPAGE)) return r;
      }
      this.#makeWritable(vpn);
      return 0;
    }
    if (page && page.isAnon && page.refcount === 1) {
      this.#makeWritable(vpn); // wp_page_reuse: exclusive anonymous page
      return 0;
    }
    // wp_page_copy
    const cow = this.#newAnonPage(vma, vmf.address);
    if (!cow) return VM_FAULT_OOM;
    if (pte.pfn !== this.zeroPfn) {
      this.world.mem.copy(this.world.mem.pageToPhys(cow), BigInt(pte.pfn) * 4096n, PAGE);
    }
    const range = this.#range(vmf.address, vmf.address + PAGE, "clear");
    const subs = this.#subs;
    if (subs) await subs.invalidateRangeStart(range);
    try {
      this.ptl.lock();
      try {
        const cur = this.pgtable.raw(vpn);
        if (cur.huge || cur.entry === 0 || decodePte(cur.entry).pfn !== pte.pfn) {
          cow.put(); // raced with a zap: the fault is retried by the caller's walk
        } else {
          this.pgtable.clear(vpn);
          const prot = vma.vmPageProt | PGPROT_WRITE;
          this.pgtable.set(vpn, mkPte(cow.pfn, prot, false, true));
          cow.mapcount++;
          if (page) {
            page.mapcount--;
            page.put();
          }
        }
      } finally {
        this.ptl.unlock();
      }
    } finally {
      if (subs) await subs.invalidateRangeEnd(range);
    }
    return 0;
  }

  #makeWritable(vpn: number): void {
    this.ptl.lock();
    try {
      const cur = this.pgtable.raw(vpn);
      if (cur.entry === 0) return;
      const prot = decodePte(cur.entry).prot | PGPROT_WRITE;
      if (cur.huge) {
        this.pgtable.clearHuge(vpn);
        this.pgtable.setHuge(vpn, ptePatch(cur.entry, prot, true));
      } else {
        this.pgtable.set(vpn, ptePatch(cur.entry, prot, true));
      }
    } finally {
      this.ptl.unlock();
    }
  }

  // ---- user access -------------------------------------------------------

  /**
   * A user-space load (`write` false: fills `buf`) or store (`write` true:
   * from `buf`) at `vaddr`, through the page tables, faulting as the CPU
   * would. -EFAULT on SIGSEGV (no VMA, protection), SIGBUS, OOM or
   * HWPOISON, the message naming which; bytes before the failing page have
   * been transferred, as with a partial `copy_to_user`.
   */
  async access(vaddr: number, buf: Uint8Array, write: boolean): Promise<void> {
    let done = 0;
    let retries = 0;
    let tried = false;
    while (done < buf.length) {
      const a = vaddr + done;
      const vpn = Math.floor(a / PAGE);
      const off = a - vpn * PAGE;
      // The MMU walk: no lock, as the hardware does.
      const pte = this.pgtable.lookup(vpn);
      const usable = pte !== null && (write ? pte.writable : (pte.prot & PGPROT_READ) !== 0);
      if (usable) {
        const n = Math.min(PAGE - off, buf.length - done);
        const phys = pte.pfn * PAGE + off;
        if (write) this.world.mem.write(phys, buf.subarray(done, done + n));
        else this.world.mem.readInto(phys, buf.subarray(done, done + n));
        done += n;
        retries = 0;
        tried = false;
        continue;
      }
      // do_user_addr_fault: mmap_lock for read around the fault only.
      await this.mmapLock.readLock();
      let ret = 0;
      try {
        const vma = this.vmaLookup(a);
        if (!vma) {
          throw new KernelError(
            "EFAULT",
            `SIGSEGV: ${this.name}: no mapping at 0x${a.toString(16)} (SEGV_MAPERR)`,
          );
        }
        const allowed = write
          ? (vma.vmFlags & VM_WRITE)
          : (vma.vmFlags & (VM_READ | VM_WRITE | VM_EXEC));
        if (!allowed) {
          throw new KernelError(
            "EFAULT",
            `SIGSEGV: ${this.name}: ${write ? "write to" : "read from"} 0x${
              a.toString(16)
            } not allowed by ${vma} (SEGV_ACCERR)`,
          );
        }
        const flags = FAULT_FLAG_USER | FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE |
          (write ? FAULT_FLAG_WRITE : 0) | (tried ? FAULT_FLAG_TRIED : 0);
        ret = await this.handleMmFault(vma, a, flags);
        tried = (ret & VM_FAULT_RETRY) !== 0;
      } finally {
        // On VM_FAULT_RETRY the handler already dropped it (or the model does so for it).
        if (this.mmapLock.heldByCurrent()) this.mmapLock.readUnlock();
      }
      if (ret & VM_FAULT_ERROR) throw faultError(ret, this.name, a);
      if (++retries > MAX_FAULT_RETRIES) {
        this.world.bug(
          "WARN",
          `WARNING: ${this.name}: fault at 0x${a.toString(16)} retried ${retries} times`,
        );
        throw new KernelError(
          "EFAULT",
          `${this.name}: fault at 0x${a.toString(16)} makes no progress`,
        );
      }
    }
  }

  /** Reads `len` bytes of user memory at `vaddr` (see {@linkcode MmStruct.access}). */
  async read(vaddr: number, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    await this.access(vaddr, out, false);
    return out;
  }

  /** Writes `data` to user memory at `vaddr` (see {@linkcode MmStruct.access}). */
  async write(vaddr: number, data: Uint8Array): Promise<void> {
    await this.access(vaddr, data, true);
  }

  /** `mm->name`. */
  toString(): string {
    return `mm ${this.name}`;
  }
}

/** The -EFAULT a failed user access gets, naming the signal the CPU access would raise. */
export function faultError(ret: number, who: string, addr: number): KernelError {
  const at = `0x${addr.toString(16)}`;
  if (ret & VM_FAULT_SIGBUS) {
    return new KernelError("EFAULT", `SIGBUS: ${who}: bus error at ${at} (VM_FAULT_SIGBUS)`);
  }
  if (ret & VM_FAULT_OOM) {
    return new KernelError("EFAULT", `${who}: out of memory at ${at} (VM_FAULT_OOM)`);
  }
  if (ret & (VM_FAULT_HWPOISON | VM_FAULT_HWPOISON_LARGE)) {
    return new KernelError(
      "EFAULT",
      `SIGBUS: ${who}: hardware poison at ${at} (VM_FAULT_HWPOISON)`,
    );
  }
  return new KernelError("EFAULT", `SIGSEGV: ${who}: fault at ${at} (VM_FAULT_SIGSEGV)`);
}

/**
 * A shmem file for MAP_SHARED|MAP_ANONYMOUS (`shmem_zero_setup`): a page
 * cache filled with zeroed pages on first fault, freed with the last VMA.
 */
function shmemFile(world: Kernel, size: number): VmFile {
  const cache = new Map<number, Page>();
  let refs = 1;
  let mapping: AddressSpace | null = null;
  const ops: VmOperations = {
    name: "/dev/zero (deleted)",
    fault(vmf) {
      if (vmf.pgoff * PAGE >= size) return VM_FAULT_SIGBUS;
      let page = cache.get(vmf.pgoff);
      if (!page) {
        const p = world.mem.allocPages(0, { zero: true });
        if (!p) return VM_FAULT_OOM;
        p.mapping = file.mapping;
        p.index = vmf.pgoff;
        cache.set(vmf.pgoff, p);
        page = p;
      }
      page.get();
      vmf.page = page;
      return 0;
    },
  };
  const file: VmFile = {
    get mapping(): AddressSpace {
      mapping ??= new AddressSpace(world, "shmem");
      return mapping;
    },
    name: "/dev/zero (deleted)",
    mmap(vma: Vma) {
      vma.vmOps = ops;
    },
    get() {
      refs++;
    },
    put() {
      if (--refs === 0) {
        for (const p of cache.values()) p.put();
        cache.clear();
      }
    },
  };
  return file;
}
