/**
 * DOC: import path A (mainline): host virtual addresses and the mmu_notifier
 *
 * A normal memslot names a range of the VM owner's address space
 * (`userspace_addr`). A fault resolves the host pfn as `hva_to_pfn()` in
 * virt/kvm/kvm_main.c does:
 *
 * 1. GUP (`hva_to_pfn_fast` / `hva_to_pfn_slow`): a page reference on RAM,
 *    dropped again once the leaf is installed (`kvm_release_faultin_page`);
 * 2. GUP fails on `VM_IO | VM_PFNMAP`; then, under `mmap_lock`,
 *    `hva_to_pfn_remapped()` reads the PTE with `follow_pfnmap_start()`;
 *    without a PTE it runs the VMA's fault handler (`fixup_user_fault`) and
 *    reads again; a write through a read-only PTE is `KVM_PFN_ERR_RO_FAULT`;
 * 3. anything else is `KVM_PFN_ERR_FAULT`.
 *
 * The host mapping level (`host_pfn_mapping_level`) is 2 MiB when the CPU
 * page table maps the address with a huge PMD, else 4 KiB.
 *
 * Coherence comes from the VM's mmu_notifier on the owner's mm
 * ({@linkcode KvmMmuNotifier}): `invalidate_range_start` counts an active
 * invalidation, and for every overlapping memslot (under `mmu_lock`, on
 * the first such slot) calls `kvm_mmu_invalidate_begin`, then
 * `kvm_mmu_invalidate_range_add` + `kvm_unmap_gfn_range` per slot;
 * `invalidate_range_end` calls `kvm_mmu_invalidate_end` the same way and
 * wakes memslot updaters when the count drops to zero. The contract that
 * makes this safe for MMIO (comment in kvm_main.c): whoever inserted the
 * PFNs zaps them with `unmap_mapping_range` before they go away, which
 * reaches this notifier.
 *
 * Locking: faultin takes `mmap_lock` for read around the PTE walk; the
 * notifier callbacks run under the zapping path's locks and take
 * `kvm->mmu_lock` (a spinlock) only for synchronous sections.
 *
 * @module
 */
import {
  FAULT_FLAG_WRITE,
  FOLL_WRITE,
  followPfnmapEnd,
  followPfnmapStart,
  getUserPagesFast,
  KernelError,
  type MmStruct,
  MmuNotifier,
  type MmuNotifierRange,
  VM_FAULT_ERROR,
  VM_IO,
  VM_PFNMAP,
  VM_WRITE,
} from "@dmalab/kernel";
import type { FaultContext, FaultinError, InstallResult, SlotBacking } from "./backing.ts";
import { PAGE_SIZE, PG_LEVEL_2M, PG_LEVEL_4K } from "./constants.ts";
import type { Kvm } from "./kvm.ts";
import type { KvmMemorySlot } from "./memslot.ts";

/** Counters of path A. */
export interface HvaStats {
  /** Pfns found through GUP (RAM). */
  gup: number;
  /** Pfns found by `follow_pfnmap_start`. */
  followPfnmap: number;
  /** Fault handlers run by `fixup_user_fault`. */
  fixups: number;
}

/** The backing of a normal (hva) memslot. */
export class HvaBacking implements SlotBacking {
  /** "hva". */
  readonly kind = "hva" as const;
  /** The VM owner's mm (`kvm->mm`). */
  readonly mm: MmStruct;
  /** Counters. */
  readonly stats: HvaStats = { gup: 0, followPfnmap: 0, fixups: 0 };

  /** A backing on `mm`. */
  constructor(mm: MmStruct) {
    this.mm = mm;
  }

  /** "hva". */
  describe(): string {
    return `hva(${this.mm.name})`;
  }

  /** `__kvm_faultin_pfn` -> `hva_to_pfn`, then install. */
  async faultin(ctx: FaultContext): Promise<InstallResult | FaultinError> {
    const hva = ctx.slot.gfnToHva(ctx.gfn);
    const mm = this.mm;
    // hva_to_pfn_fast / hva_to_pfn_slow: GUP, which refuses VM_IO|VM_PFNMAP.
    const vma0 = mm.vmaLookup(hva);
    if (vma0 && !(vma0.vmFlags & (VM_IO | VM_PFNMAP))) {
      const wantWrite = ctx.write || (vma0.vmFlags & VM_WRITE) !== 0;
      try {
        const pages = await getUserPagesFast(mm, hva, 1, wantWrite ? FOLL_WRITE : 0);
        const page = pages[0];
        if (page) {
          this.stats.gup++;
          const pte = mm.translate(hva);
          return ctx.install({
            pfn: page.pfn,
            writable: wantWrite,
            hostLevel: pte?.huge ? PG_LEVEL_2M : PG_LEVEL_4K,
            release: () => page.put(),
          });
        }
      } catch (e) {
        if (e instanceof KernelError && e.code === "EHWPOISON") return "hwpoison";
        if (!(e instanceof KernelError)) throw e;
        return "fault";
      }
      return "fault";
    }
    await mm.mmapLock.readLock();
    let locked = true;
    try {
      for (let tries = 0; tries < 4; tries++) {
        const vma = mm.vmaLookup(hva);
        if (!vma || !(vma.vmFlags & (VM_IO | VM_PFNMAP))) return "fault";
        // hva_to_pfn_remapped
        let args;
        try {
          args = followPfnmapStart({ vma, address: hva });
        } catch (e) {
          if (!(e instanceof KernelError)) throw e;
          this.stats.fixups++;
          const ret = await mm.handleMmFault(vma, hva, ctx.write ? FAULT_FLAG_WRITE : 0);
          if (ret & VM_FAULT_ERROR) return "fault";
          continue;
        }
        try {
          if (ctx.write && !args.writable) return "ro";
          this.stats.followPfnmap++;
          const p = {
            pfn: args.pfn,
            writable: args.writable,
            hostLevel: args.huge ? PG_LEVEL_2M : PG_LEVEL_4K,
          };
          // The leaf is installed after the PTE lock and mmap_lock are
          // dropped; the mmu_notifier sequence check covers the gap.
          followPfnmapEnd(args);
          args = null;
          mm.mmapLock.readUnlock();
          locked = false;
          await mm.world.sched.preempt("kvm_tdp_mmu_map", ctx.kvm.id);
          return ctx.install(p);
        } finally {
          if (args) followPfnmapEnd(args);
        }
      }
      return "fault";
    } finally {
      if (locked) mm.mmapLock.readUnlock();
    }
  }
}

/**
 * `kvm_handle_hva_range`: for every slot overlapping `[start, end)` calls
 * `onLock` once (under `mmu_lock`, at the first slot) and `handler` per
 * slot with its gfn range. Returns whether a slot overlapped.
 */
function handleHvaRange(
  kvm: Kvm,
  start: number,
  end: number,
  onLock: () => void,
  handler: (slot: KvmMemorySlot, gfnStart: number, gfnEnd: number) => void,
): boolean {
  let found = false;
  try {
    for (const slot of kvm.memslots) {
      if (slot.backing.kind !== "hva") continue;
      const hvaStart = slot.userspaceAddr;
      const hvaEnd = hvaStart + slot.npages * PAGE_SIZE;
      const s = Math.max(start, hvaStart);
      const e = Math.min(end, hvaEnd);
      if (s >= e) continue;
      if (!found) {
        found = true;
        kvm.mmuLock.lock();
        onLock();
      }
      const gs = slot.baseGfn + Math.floor((s - hvaStart) / PAGE_SIZE);
      const ge = slot.baseGfn + Math.ceil((e - hvaStart) / PAGE_SIZE);
      handler(slot, gs, ge);
    }
  } finally {
    if (found) kvm.mmuLock.unlock();
  }
  return found;
}

/** KVM's per-VM mmu_notifier (`kvm_mmu_notifier_ops`). */
export class KvmMmuNotifier {
  /** The VM. */
  readonly kvm: Kvm;
  /** The subscription. */
  readonly sub: MmuNotifier;

  /** Builds the notifier for `kvm` (register with {@linkcode KvmMmuNotifier.register}). */
  constructor(kvm: Kvm) {
    this.kvm = kvm;
    this.sub = new MmuNotifier({
      invalidateRangeStart: (_sub, range) => this.#start(range),
      invalidateRangeEnd: (_sub, range) => this.#end(range),
      release: () => this.#release(),
    });
  }

  /** `kvm_init_mmu_notifier`: registers on `mm`. */
  async register(mm: MmStruct): Promise<void> {
    await this.sub.register(mm);
  }

  /** `kvm_mmu_notifier_invalidate_range_start`. */
  #start(range: MmuNotifierRange): number {
    const kvm = this.kvm;
    kvm.mnActiveInvalidateCount++;
    handleHvaRange(kvm, range.start, range.end, () => kvm.invalidateBegin(), (_s, gs, ge) => {
      kvm.invalidateRangeAdd(gs, ge);
      kvm.unmapGfnRange(gs, ge);
    });
    return 0;
  }

  /** `kvm_mmu_notifier_invalidate_range_end`. */
  #end(range: MmuNotifierRange): void {
    const kvm = this.kvm;
    handleHvaRange(kvm, range.start, range.end, () => kvm.invalidateEnd(), () => {});
    if (
      !kvm.world.warnOn(
        kvm.mnActiveInvalidateCount === 0,
        `kvm_mmu_notifier_invalidate_range_end: ${kvm.name}: mn_active_invalidate_count is 0`,
      )
    ) {
      kvm.mnActiveInvalidateCount--;
    }
    if (kvm.mnActiveInvalidateCount === 0) kvm.mnMemslotsUpdate.wakeUpAll();
  }

  /** `kvm_mmu_notifier_release`: the mm is going away; zap everything. */
  #release(): void {
    const kvm = this.kvm;
    kvm.mmuLock.lock();
    try {
      kvm.stage2.zapAll();
    } finally {
      kvm.mmuLock.unlock();
    }
  }
}
