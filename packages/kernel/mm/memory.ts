/**
 * DOC: inserting and looking up pfns (mm/memory.c)
 *
 * What drivers call from `f_op->mmap` and `vm_ops->fault` to put device
 * memory into user page tables, and what importers call to find the pfn
 * behind a user address:
 *
 * - {@linkcode remapPfnRange}: maps a whole range up front, marks the VMA
 *   VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP; a COW mapping must be
 *   remapped whole (-EINVAL) and gets `vm_pgoff = pfn`; an existing PTE is a
 *   WARN and -EACCES, after which the whole range is zapped (as the kernel
 *   does; the VMA keeps its new flags).
 * - {@linkcode vmfInsertPfn} / {@linkcode vmfInsertPfnProt}: one special PTE
 *   from a fault handler; returns `VM_FAULT_NOPAGE` (also when a PTE is
 *   already there), `VM_FAULT_SIGBUS` outside the VMA. The kernel's BUG_ONs
 *   (neither or both of VM_PFNMAP/VM_MIXEDMAP, a COW VM_PFNMAP, a
 *   `pfn_valid` pfn in a VM_MIXEDMAP) are BUG reports here.
 * - {@linkcode vmfInsertPfnPmd}: a 2 MiB special entry from `huge_fault`.
 * - {@linkcode vmInsertPage}: a refcounted page into a VM_MIXEDMAP VMA.
 * - {@linkcode followPfnmapStart} / {@linkcode followPfnmapEnd}: the pfn,
 *   protection and writability of a VM_IO | VM_PFNMAP address, returned with
 *   the PTE lock held until `end` (so the caller is atomic in between);
 *   -EINVAL for any other VMA, an address outside it, or no PTE. The caller
 *   holds mmap_lock or the file's i_mmap_rwsem (`pfnmap_lockdep_assert`).
 *
 * Locking: fault-path helpers run with mmap_lock held for read; `remap_pfn_range`
 * and `vm_insert_page` change `vm_flags`, which needs mmap_lock for write
 * (they run from `f_op->mmap`); `follow_pfnmap_start` asserts mmap_lock is
 * held. Every PTE change takes the PTE lock.
 *
 * @module
 */
import { KernelError } from "../errors.ts";
import type { Page } from "../memory/page.ts";
import { mkPte, type PteValue } from "./page_table.ts";
import {
  isCowMapping,
  type Pgprot,
  PGPROT_WRITE,
  PMD_ORDER,
  VM_DONTDUMP,
  VM_DONTEXPAND,
  VM_FAULT_FALLBACK,
  VM_FAULT_NOPAGE,
  VM_FAULT_SIGBUS,
  VM_IO,
  VM_MIXEDMAP,
  VM_PFNMAP,
  type Vma,
  type VmFault,
} from "./vma.ts";

const PAGE = 4096;
const PMD_PAGES = 1 << PMD_ORDER;

function checkInsertRules(vma: Vma, pfn: number, what: string): boolean {
  const world = vma.mm.world;
  const f = vma.vmFlags;
  const bug = (cond: boolean, msg: string): boolean => {
    if (cond) world.bug("BUG", `kernel BUG in ${what}: ${msg} (${vma})`);
    return cond;
  };
  if (bug(!(f & (VM_PFNMAP | VM_MIXEDMAP)), "BUG_ON(!(vma->vm_flags & (VM_PFNMAP|VM_MIXEDMAP)))")) {
    return false;
  }
  if (
    bug(
      (f & (VM_PFNMAP | VM_MIXEDMAP)) === (VM_PFNMAP | VM_MIXEDMAP),
      "both VM_PFNMAP and VM_MIXEDMAP",
    )
  ) {
    return false;
  }
  if (bug((f & VM_PFNMAP) !== 0 && isCowMapping(f), "VM_PFNMAP on a COW mapping")) return false;
  if (
    bug(
      (f & VM_MIXEDMAP) !== 0 && pfn >= 0 && world.mem.pfnValid(pfn) && what !== "vmf_insert_mixed",
      "VM_MIXEDMAP with pfn_valid(pfn)",
    )
  ) {
    return false;
  }
  return true;
}

/** `vmf_insert_pfn_prot(vma, addr, pfn, pgprot)`: see the module doc. */
export function vmfInsertPfnProt(vma: Vma, addr: number, pfn: number, prot: Pgprot): number {
  if (!checkInsertRules(vma, pfn, "vmf_insert_pfn_prot")) return VM_FAULT_SIGBUS;
  if (addr < vma.vmStart || addr >= vma.vmEnd) return VM_FAULT_SIGBUS;
  const vpn = Math.floor(addr / PAGE);
  vma.mm.installPte(vpn, mkPte(pfn, prot, true));
  return VM_FAULT_NOPAGE;
}

/** `vmf_insert_pfn(vma, addr, pfn)` with `vma->vm_page_prot`. */
export function vmfInsertPfn(vma: Vma, addr: number, pfn: number): number {
  return vmfInsertPfnProt(vma, addr, pfn, vma.vmPageProt);
}

/**
 * `vmf_insert_mixed(vma, addr, pfn)`: in a VM_MIXEDMAP VMA a `pfn_valid` pfn
 * is mapped as a refcounted page, any other as a special PTE.
 */
export function vmfInsertMixed(vma: Vma, addr: number, pfn: number): number {
  if (!checkInsertRules(vma, pfn, "vmf_insert_mixed")) return VM_FAULT_SIGBUS;
  if (addr < vma.vmStart || addr >= vma.vmEnd) return VM_FAULT_SIGBUS;
  const page = vma.vmFlags & VM_MIXEDMAP ? vma.mm.world.mem.pfnToPage(pfn) : null;
  const vpn = Math.floor(addr / PAGE);
  if (page && page.refcount > 0) {
    if (vma.mm.installPte(vpn, mkPte(pfn, vma.vmPageProt, false))) {
      page.get();
      page.mapcount++;
    }
  } else {
    vma.mm.installPte(vpn, mkPte(pfn, vma.vmPageProt, true));
  }
  return VM_FAULT_NOPAGE;
}

/**
 * `vmf_insert_pfn_pmd(vmf, pfn, write)`: a 2 MiB special entry at the
 * PMD-aligned fault address. VM_FAULT_SIGBUS outside the VMA or for an
 * unaligned pfn; VM_FAULT_FALLBACK when the slot already has a PTE table.
 */
export function vmfInsertPfnPmd(vmf: VmFault, pfn: number, write: boolean): number {
  const vma = vmf.vma;
  if (!checkInsertRules(vma, pfn, "vmf_insert_pfn_pmd")) return VM_FAULT_SIGBUS;
  const addr = Math.floor(vmf.address / (PAGE * PMD_PAGES)) * PAGE * PMD_PAGES;
  if (addr < vma.vmStart || addr + PAGE * PMD_PAGES > vma.vmEnd) return VM_FAULT_SIGBUS;
  if (pfn % PMD_PAGES !== 0) {
    vma.mm.world.warnOn(true, `vmf_insert_pfn_pmd: pfn 0x${pfn.toString(16)} not PMD aligned`);
    return VM_FAULT_SIGBUS;
  }
  const mm = vma.mm;
  const vpn = addr / PAGE;
  mm.ptl.lock();
  try {
    if (!mm.pgtable.pmdNone(vpn)) {
      return mm.pgtable.isHuge(vpn) ? VM_FAULT_NOPAGE : VM_FAULT_FALLBACK;
    }
    const prot = write ? vma.vmPageProt | PGPROT_WRITE : vma.vmPageProt;
    mm.pgtable.setHuge(vpn, mkPte(pfn, prot, true, write));
  } finally {
    mm.ptl.unlock();
  }
  return VM_FAULT_NOPAGE;
}

/**
 * `vm_insert_page(vma, addr, page)`: -EFAULT outside the VMA, -EINVAL for a
 * free or anonymous page, -EBUSY when a PTE is there. Sets VM_MIXEDMAP
 * (mmap_lock held for write); a VM_PFNMAP VMA is a BUG.
 */
export function vmInsertPage(vma: Vma, addr: number, page: Page): void {
  if (addr < vma.vmStart || addr >= vma.vmEnd) {
    throw new KernelError("EFAULT", `vm_insert_page: 0x${addr.toString(16)} outside ${vma}`);
  }
  if (page.refcount === 0) throw new KernelError("EINVAL", `vm_insert_page: ${page} is free`);
  if (!(vma.vmFlags & VM_MIXEDMAP)) {
    if (vma.vmFlags & VM_PFNMAP) {
      vma.mm.world.bug(
        "BUG",
        `kernel BUG in vm_insert_page: BUG_ON(vma->vm_flags & VM_PFNMAP) (${vma})`,
      );
      throw new KernelError("EINVAL", "vm_insert_page: VM_PFNMAP VMA");
    }
    vma.flagsSet(VM_MIXEDMAP);
  }
  if (page.isAnon) throw new KernelError("EINVAL", `vm_insert_page: ${page} is anonymous`);
  if (!vma.mm.installPte(Math.floor(addr / PAGE), mkPte(page.pfn, vma.vmPageProt, false))) {
    throw new KernelError("EBUSY", `vm_insert_page: a PTE already maps 0x${addr.toString(16)}`);
  }
  page.get();
  page.mapcount++;
}

/**
 * `remap_pfn_range(vma, addr, pfn, size, prot)`: see the module doc.
 */
export function remapPfnRange(
  vma: Vma,
  addr: number,
  pfn: number,
  size: number,
  prot: Pgprot,
): void {
  const world = vma.mm.world;
  if (addr % PAGE !== 0) {
    world.warnOn(true, `remap_pfn_range: address 0x${addr.toString(16)} not page aligned`);
    throw new KernelError(
      "EINVAL",
      `remap_pfn_range: address 0x${addr.toString(16)} not page aligned`,
    );
  }
  const end = addr + Math.ceil(size / PAGE) * PAGE;
  if (addr >= end) {
    world.bug("BUG", "kernel BUG in remap_pfn_range: BUG_ON(addr >= end)");
    throw new KernelError("EINVAL", "remap_pfn_range: empty range");
  }
  if (addr < vma.vmStart || end > vma.vmEnd) {
    throw new KernelError(
      "EINVAL",
      `remap_pfn_range: 0x${addr.toString(16)}-0x${end.toString(16)} outside ${vma}`,
    );
  }
  if (isCowMapping(vma.vmFlags) && (addr !== vma.vmStart || end !== vma.vmEnd)) {
    throw new KernelError(
      "EINVAL",
      `remap_pfn_range: a COW mapping must be remapped whole (${vma})`,
    );
  }
  const mm = vma.mm;
  mm.mmapLock.assertWriteLocked("remap_pfn_range (vm_flags_set)");
  if (isCowMapping(vma.vmFlags)) vma.vmPgoff = pfn;
  vma.vmFlags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP;
  const first = addr / PAGE;
  const n = (end - addr) / PAGE;
  mm.ptl.lock();
  let failedAt = -1;
  try {
    for (let i = 0; i < n; i++) {
      const vpn = first + i;
      if (mm.pgtable.raw(vpn).entry !== 0 || mm.pgtable.isHuge(vpn)) {
        failedAt = i;
        break;
      }
      mm.pgtable.set(vpn, mkPte(pfn + i, prot, true));
    }
  } finally {
    mm.ptl.unlock();
  }
  if (failedAt >= 0) {
    // remap_pfn_range_notrack zaps the whole range on error, the PTE it tripped on included.
    mm.clearPtes(vma, addr, end, false);
    world.warnOn(
      true,
      `remap_pfn_range: PTE at 0x${((first + failedAt) * PAGE).toString(16)} not none`,
    );
    throw new KernelError(
      "EACCES",
      `remap_pfn_range: 0x${((first + failedAt) * PAGE).toString(16)} is already mapped`,
    );
  }
}

/** What {@linkcode followPfnmapStart} found; pass it to {@linkcode followPfnmapEnd}. */
export interface FollowPfnmapResult extends PteValue {
  /** The VMA. */
  readonly vma: Vma;
  /** The address looked up. */
  readonly address: number;
  /** `args->pgprot`. */
  readonly pgprot: Pgprot;
}

/**
 * `follow_pfnmap_start(args)`: see the module doc. Holds the PTE lock on
 * success until {@linkcode followPfnmapEnd}.
 */
export function followPfnmapStart(args: { vma: Vma; address: number }): FollowPfnmapResult {
  const { vma, address } = args;
  const mm = vma.mm;
  // pfnmap_lockdep_assert: mmap_lock, or the file's i_mmap_rwsem, must be held.
  const sem = vma.mapping?.iMmapRwsem;
  const t = mm.world.sched.current;
  const iMmapHeld = sem !== undefined && t !== null &&
    (sem.writer === t || sem.readers.includes(t));
  if (!iMmapHeld) mm.mmapLock.assertLocked("follow_pfnmap_start");
  if (address < vma.vmStart || address >= vma.vmEnd) {
    throw new KernelError(
      "EINVAL",
      `follow_pfnmap_start: 0x${address.toString(16)} outside ${vma}`,
    );
  }
  if (!(vma.vmFlags & (VM_IO | VM_PFNMAP))) {
    throw new KernelError("EINVAL", `follow_pfnmap_start: ${vma} is not VM_IO|VM_PFNMAP`);
  }
  mm.ptl.lock();
  const pte = mm.pgtable.lookup(Math.floor(address / PAGE));
  if (!pte) {
    mm.ptl.unlock();
    throw new KernelError("EINVAL", `follow_pfnmap_start: no PTE at 0x${address.toString(16)}`);
  }
  return { ...pte, vma, address, pgprot: pte.prot };
}

/** `follow_pfnmap_end(args)`: drops the PTE lock. */
export function followPfnmapEnd(result: FollowPfnmapResult): void {
  result.vma.mm.ptl.unlock();
}
