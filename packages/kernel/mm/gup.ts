/**
 * DOC: get_user_pages / pin_user_pages (mm/gup.c)
 *
 * Turns user addresses into `struct page` references, faulting pages in
 * as needed. FOLL_GET takes a plain reference (`put_page` to drop it);
 * FOLL_PIN adds `GUP_PIN_COUNTING_BIAS` (`unpin_user_page` to drop it) so
 * `page_maybe_dma_pinned` sees DMA pins. Rules kept from the kernel:
 *
 * - argument checks (`is_valid_gup_args`): the internal flags FOLL_GET /
 *   FOLL_PIN may not be passed in, FOLL_LONGTERM only with a pin, and not
 *   with FOLL_PCI_P2PDMA: a WARN and -EINVAL;
 * - `check_vma_flags`: VM_IO | VM_PFNMAP VMAs are -EFAULT (no struct page to
 *   take), a write to a VMA without VM_WRITE is -EFAULT unless FOLL_FORCE on
 *   a COW mapping, a read of a VMA without VM_READ likewise;
 * - an address outside every VMA is -EFAULT;
 * - a PCI P2PDMA page without FOLL_PCI_P2PDMA is -EREMOTEIO (`try_grab_folio`);
 * - a fault error maps to an errno (`vm_fault_to_errno`): OOM -ENOMEM,
 *   SIGBUS/SIGSEGV -EFAULT, HWPOISON -EHWPOISON with FOLL_HWPOISON (else
 *   -EFAULT);
 * - a failure after some pages succeeded returns those pages (the kernel's
 *   `i ? i : ret`); a failure on the first page throws.
 * - pinning the shared zero page takes no reference (`is_zero_folio`).
 *
 * Not modelled: FOLL_LONGTERM migration out of ZONE_MOVABLE/CMA (there is
 * no movable zone) and fs-dax (-EOPNOTSUPP needs a DAX file).
 *
 * Locking: {@linkcode getUserPages} / {@linkcode pinUserPages} need
 * mmap_lock held (read); the `Fast` variants take it themselves, as
 * `pin_user_pages_fast` falls back to the locked slow path.
 *
 * @module
 */
import { KernelError } from "../errors.ts";
import { GUP_PIN_COUNTING_BIAS, type Page, PG } from "../memory/page.ts";
import type { MmStruct } from "./mm_struct.ts";
import {
  FAULT_FLAG_ALLOW_RETRY,
  FAULT_FLAG_KILLABLE,
  FAULT_FLAG_REMOTE,
  FAULT_FLAG_TRIED,
  FAULT_FLAG_WRITE,
  isCowMapping,
  VM_FAULT_ERROR,
  VM_FAULT_HWPOISON,
  VM_FAULT_HWPOISON_LARGE,
  VM_FAULT_OOM,
  VM_FAULT_RETRY,
  VM_IO,
  VM_MAYREAD,
  VM_PFNMAP,
  VM_READ,
  VM_WRITE,
  type Vma,
} from "./vma.ts";

/** `FOLL_WRITE`: the pages will be written. */
export const FOLL_WRITE = 1 << 0;
/** `FOLL_GET` (internal): take a page reference. */
export const FOLL_GET = 1 << 1;
/** `FOLL_DUMP`. */
export const FOLL_DUMP = 1 << 2;
/** `FOLL_FORCE`: ignore VM_WRITE/VM_READ on COW mappings (ptrace). */
export const FOLL_FORCE = 1 << 3;
/** `FOLL_NOWAIT`. */
export const FOLL_NOWAIT = 1 << 4;
/** `FOLL_NOFAULT`: do not fault pages in. */
export const FOLL_NOFAULT = 1 << 5;
/** `FOLL_HWPOISON`. */
export const FOLL_HWPOISON = 1 << 6;
/** `FOLL_ANON`: anonymous VMAs only. */
export const FOLL_ANON = 1 << 7;
/** `FOLL_LONGTERM`: the pin lasts indefinitely (RDMA, vfio). */
export const FOLL_LONGTERM = 1 << 8;
/** `FOLL_SPLIT_PMD`. */
export const FOLL_SPLIT_PMD = 1 << 9;
/** `FOLL_PCI_P2PDMA`: the caller accepts PCI P2PDMA pages. */
export const FOLL_PCI_P2PDMA = 1 << 10;
/** `FOLL_INTERRUPTIBLE`. */
export const FOLL_INTERRUPTIBLE = 1 << 11;
/** `FOLL_PIN` (internal): take a DMA pin. */
export const FOLL_PIN = 1 << 17;
/** `FOLL_REMOTE` (internal): another process's mm. */
export const FOLL_REMOTE = 1 << 14;
/** `FOLL_TOUCH` (internal). */
export const FOLL_TOUCH = 1 << 16;
const INTERNAL_GUP_FLAGS = FOLL_GET | FOLL_PIN | FOLL_REMOTE | FOLL_TOUCH;

/** `is_valid_gup_args`: a WARN and -EINVAL for an impossible combination. */
function validGupArgs(mm: MmStruct, flags: number, toSet: number, fn: string): number {
  const world = mm.world;
  const fail = (cond: boolean, why: string): boolean => {
    if (!cond) return false;
    world.warnOn(true, `${fn}: ${why} (is_valid_gup_args)`);
    throw new KernelError("EINVAL", `${fn}: ${why} (is_valid_gup_args)`);
  };
  fail((flags & INTERNAL_GUP_FLAGS) !== 0, "internal FOLL_ flags passed in");
  const f = flags | toSet;
  fail((f & (FOLL_PIN | FOLL_GET)) === (FOLL_PIN | FOLL_GET), "FOLL_GET and FOLL_PIN together");
  fail(!(f & FOLL_PIN) && (f & FOLL_LONGTERM) !== 0, "FOLL_LONGTERM without FOLL_PIN");
  fail(
    (f & FOLL_LONGTERM) !== 0 && (f & FOLL_PCI_P2PDMA) !== 0,
    "FOLL_LONGTERM with FOLL_PCI_P2PDMA",
  );
  return f;
}

/** `check_vma_flags`: 0 or a KernelError to throw. */
function checkVmaFlags(vma: Vma, flags: number): KernelError | null {
  const f = vma.vmFlags;
  const write = (flags & FOLL_WRITE) !== 0;
  if (f & (VM_IO | VM_PFNMAP)) {
    return new KernelError(
      "EFAULT",
      `get_user_pages: ${vma} is VM_IO|VM_PFNMAP: no struct page (check_vma_flags)`,
    );
  }
  if ((flags & FOLL_ANON) && !vma.isAnonymous) {
    return new KernelError("EFAULT", `get_user_pages: FOLL_ANON on file mapping ${vma}`);
  }
  if (write) {
    if (!(f & VM_WRITE)) {
      if (!(flags & FOLL_FORCE) || !isCowMapping(f)) {
        return new KernelError(
          "EFAULT",
          `get_user_pages: FOLL_WRITE on read-only ${vma} (check_vma_flags)`,
        );
      }
    }
  } else if (!(f & VM_READ)) {
    if (!(flags & FOLL_FORCE) || !(f & VM_MAYREAD)) {
      return new KernelError(
        "EFAULT",
        `get_user_pages: read of PROT_NONE ${vma} (check_vma_flags)`,
      );
    }
  }
  return null;
}

/** `vm_fault_to_errno`. */
function faultErrno(ret: number, addr: number, flags: number): KernelError {
  const at = `0x${addr.toString(16)}`;
  if (ret & VM_FAULT_OOM) {
    return new KernelError("ENOMEM", `get_user_pages: out of memory at ${at}`);
  }
  if ((ret & (VM_FAULT_HWPOISON | VM_FAULT_HWPOISON_LARGE)) && (flags & FOLL_HWPOISON)) {
    return new KernelError("EHWPOISON", `get_user_pages: poisoned page at ${at}`);
  }
  return new KernelError(
    "EFAULT",
    `get_user_pages: fault at ${at} failed (vm_fault_to_errno 0x${ret.toString(16)})`,
  );
}

/** `try_grab_folio`: takes the reference `flags` asks for. */
function grab(mm: MmStruct, page: Page, flags: number, addr: number): KernelError | null {
  if (page.refcount <= 0) {
    mm.world.warnOn(true, `try_grab_folio: ${page} has no reference`);
    return new KernelError("ENOMEM", `get_user_pages: ${page} is free`);
  }
  if (!(flags & FOLL_PCI_P2PDMA) && page.isPciP2pdma) {
    return new KernelError(
      "EREMOTEIO",
      `get_user_pages: 0x${
        addr.toString(16)
      } is a PCI P2PDMA page and FOLL_PCI_P2PDMA was not given (try_grab_folio)`,
    );
  }
  if (flags & FOLL_GET) page.get();
  else if (flags & FOLL_PIN) {
    if (page.pfn === mm.zeroPfn) return null;
    page.get(GUP_PIN_COUNTING_BIAS);
  }
  return null;
}

/** `__get_user_pages`: the slow path, mmap_lock held. */
async function gupLocked(
  mm: MmStruct,
  start: number,
  nrPages: number,
  flags: number,
  fn: string,
): Promise<Page[]> {
  mm.mmapLock.assertLocked(fn);
  if (start % 4096 !== 0) {
    throw new KernelError("EINVAL", `${fn}: start 0x${start.toString(16)} not page aligned`);
  }
  const pages: Page[] = [];
  let vma: Vma | null = null;
  const fail = (e: KernelError): Page[] => {
    if (pages.length === 0) throw e;
    return pages;
  };
  for (let i = 0; i < nrPages; i++) {
    const addr = start + i * 4096;
    if (!vma || addr >= vma.vmEnd) {
      vma = mm.vmaLookup(addr);
      if (!vma) return fail(new KernelError("EFAULT", `${fn}: no VMA at 0x${addr.toString(16)}`));
      const bad = checkVmaFlags(vma, flags);
      if (bad) return fail(bad);
    }
    for (let tries = 0;; tries++) {
      const pte = mm.translate(addr);
      const need = flags & FOLL_WRITE ? pte?.writable : pte !== null;
      if (pte && need) {
        if (pte.special && pte.pfn !== mm.zeroPfn) {
          return fail(new KernelError("EFAULT", `${fn}: special PTE at 0x${addr.toString(16)}`));
        }
        const page = mm.world.mem.pfnToPage(pte.pfn);
        if (!page) {
          return fail(new KernelError("EFAULT", `${fn}: no struct page at 0x${addr.toString(16)}`));
        }
        const err = grab(mm, page, flags, addr);
        if (err) return fail(err);
        pages.push(page);
        break;
      }
      if (flags & FOLL_NOFAULT || tries > 4) {
        return fail(new KernelError("EFAULT", `${fn}: 0x${addr.toString(16)} not present`));
      }
      // faultin_page
      await mm.world.sched.preempt(fn, mm.id, "read");
      const ret = await mm.handleMmFault(
        vma,
        addr,
        (flags & FOLL_WRITE ? FAULT_FLAG_WRITE : 0) | (flags & FOLL_REMOTE ? FAULT_FLAG_REMOTE : 0),
      );
      if (ret & VM_FAULT_RETRY) {
        // Without FAULT_FLAG_ALLOW_RETRY a handler should not ask; faultin_page gives -EBUSY -> 0 pages.
        return pages;
      }
      if (ret & VM_FAULT_ERROR) return fail(faultErrno(ret, addr, flags));
    }
  }
  return pages;
}

/**
 * `get_user_pages(start, nr_pages, gup_flags, pages)`: FOLL_GET references
 * on up to `nrPages` pages (fewer if a later page failed). Needs mmap_lock.
 */
export async function getUserPages(
  mm: MmStruct,
  start: number,
  nrPages: number,
  gupFlags = 0,
): Promise<Page[]> {
  const f = validGupArgs(mm, gupFlags, FOLL_GET | FOLL_TOUCH, "get_user_pages");
  return await gupLocked(mm, start, nrPages, f, "get_user_pages");
}

/** `pin_user_pages(start, nr_pages, gup_flags, pages)`: FOLL_PIN. Needs mmap_lock. */
export async function pinUserPages(
  mm: MmStruct,
  start: number,
  nrPages: number,
  gupFlags = 0,
): Promise<Page[]> {
  const f = validGupArgs(mm, gupFlags, FOLL_PIN | FOLL_TOUCH, "pin_user_pages");
  return await gupLocked(mm, start, nrPages, f, "pin_user_pages");
}

async function unlockedVariant(mm: MmStruct, run: () => Promise<Page[]>): Promise<Page[]> {
  await mm.mmapLock.readLock();
  try {
    return await run();
  } finally {
    if (mm.mmapLock.heldByCurrent()) mm.mmapLock.readUnlock();
  }
}

/** `get_user_pages_fast`: takes mmap_lock itself. */
export async function getUserPagesFast(
  mm: MmStruct,
  start: number,
  nrPages: number,
  gupFlags = 0,
): Promise<Page[]> {
  const f = validGupArgs(mm, gupFlags, FOLL_GET, "get_user_pages_fast");
  return await unlockedVariant(mm, () => gupLocked(mm, start, nrPages, f, "get_user_pages_fast"));
}

/**
 * `pin_user_pages_fast`: takes mmap_lock itself.
 *
 * @example
 * ```ts
 * import { FOLL_LONGTERM, FOLL_WRITE, Kernel, MmStruct, pinUserPagesFast, unpinUserPages } from "@dmalab/kernel";
 * const world = new Kernel();
 * const mm = new MmStruct(world);
 * await world.runTask("rdma", async () => {
 *   const addr = await mm.mmap({ length: 3 * 4096 });
 *   const pages = await pinUserPagesFast(mm, addr, 3, FOLL_WRITE | FOLL_LONGTERM);
 *   pages.every((p) => p.maybeDmaPinned); // true
 *   unpinUserPages(pages);
 * });
 * ```
 */
export async function pinUserPagesFast(
  mm: MmStruct,
  start: number,
  nrPages: number,
  gupFlags = 0,
): Promise<Page[]> {
  const f = validGupArgs(mm, gupFlags, FOLL_PIN, "pin_user_pages_fast");
  return await unlockedVariant(mm, () => gupLocked(mm, start, nrPages, f, "pin_user_pages_fast"));
}

/** `unpin_user_page`: drops a FOLL_PIN reference (none was taken on the zero page). */
export function unpinUserPage(page: Page): void {
  // The zero page (reserved) is pinned without a reference.
  if (page.flags & PG.reserved) return;
  page.put(GUP_PIN_COUNTING_BIAS);
}

/** `unpin_user_pages`. */
export function unpinUserPages(pages: readonly Page[]): void {
  for (const p of pages) unpinUserPage(p);
}

/**
 * `fixup_user_fault(mm, address, fault_flags, unlocked)`: faults one
 * address in (any VMA type, VM_PFNMAP included: KVM and vfio call it when
 * `follow_pfnmap_start` finds no PTE). Needs mmap_lock held for read.
 * -EFAULT without a VMA or when the VMA forbids the access
 * (`vma_permits_fault`); a fault error maps through `vm_fault_to_errno`.
 * With `allowUnlock` the handler may drop mmap_lock and ask for a retry;
 * the lock is retaken, the fault retried with FAULT_FLAG_TRIED, and the
 * result says `unlocked: true` (the caller must revalidate its VMA).
 */
export async function fixupUserFault(
  mm: MmStruct,
  address: number,
  faultFlags: number,
  allowUnlock = false,
): Promise<{ unlocked: boolean }> {
  mm.mmapLock.assertLocked("fixup_user_fault");
  let flags = faultFlags | (allowUnlock ? FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE : 0);
  let unlocked = false;
  for (let tries = 0;; tries++) {
    const vma = mm.vmaLookup(address);
    if (!vma) {
      throw new KernelError("EFAULT", `fixup_user_fault: no VMA at 0x${address.toString(16)}`);
    }
    const need = flags & FAULT_FLAG_WRITE ? VM_WRITE : VM_READ;
    if (!(vma.vmFlags & need)) {
      throw new KernelError(
        "EFAULT",
        `fixup_user_fault: ${vma} does not permit a ${
          need === VM_WRITE ? "write" : "read"
        } fault (vma_permits_fault)`,
      );
    }
    const ret = await mm.handleMmFault(vma, address, flags);
    if (ret & VM_FAULT_ERROR) throw faultErrno(ret, address, 0);
    if (!(ret & VM_FAULT_RETRY)) return { unlocked };
    if (!allowUnlock) {
      mm.world.warnOn(true, "fixup_user_fault: VM_FAULT_RETRY without FAULT_FLAG_ALLOW_RETRY");
      return { unlocked };
    }
    if (!mm.mmapLock.heldByCurrent()) await mm.mmapLock.readLock();
    unlocked = true;
    flags |= FAULT_FLAG_TRIED;
    if (tries > 64) throw new KernelError("EFAULT", "fixup_user_fault: no progress");
  }
}
