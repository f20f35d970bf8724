/**
 * DOC: where a memslot's pfns come from
 *
 * A memslot resolves gfn to pfn through a backing. Mainline KVM has one
 * source for non-guest_memfd slots: the host virtual address
 * (`slot->userspace_addr`), resolved by `hva_to_pfn()` (GUP for RAM,
 * `follow_pfnmap` for `VM_PFNMAP`), kept coherent by the mmu_notifier
 * ({@linkcode HvaBacking}, import path A). Xu Yilun's RFC adds a dma-buf slot
 * whose pfns come from the exporter and whose invalidation is the dma-buf
 * `move_notify` ({@linkcode DmabufBacking}, import path B).
 *
 * A backing's {@linkcode SlotBacking.faultin} gets the fault and an
 * `install` callback that takes `kvm->mmu_lock`, rechecks the invalidation
 * sequence and writes the stage-2 leaf; a backing that must hold its own
 * lock while the leaf is installed (the dma_resv-locked pfn variant) calls
 * `install` with that lock held.
 *
 * Locking: `faultin` may sleep (GUP, fault handlers, dma_resv); `install`
 * is synchronous and takes `kvm->mmu_lock` itself.
 *
 * @module
 */
import type { KvmMemorySlot } from "./memslot.ts";
import type { Kvm } from "./kvm.ts";

/** A host pfn for one fault (`struct kvm_page_fault` after `kvm_faultin_pfn`). */
export interface FaultinPfn {
  /** Host pfn of the faulting gfn. */
  readonly pfn: number;
  /** The host mapping allows writes (`map_writable`). */
  readonly writable: boolean;
  /** Largest level the host mapping allows (`host_pfn_mapping_level`, or `max_order`). */
  readonly hostLevel: number;
  /** Drops whatever reference `faultin` took (`kvm_release_faultin_page`). */
  release?(): void;
}

/**
 * Why a pfn could not be had: `KVM_PFN_ERR_FAULT` ("fault"),
 * `KVM_PFN_ERR_RO_FAULT` ("ro"), `KVM_PFN_ERR_HWPOISON` ("hwpoison"), or
 * the dma-buf slot's `-EIO` ("eio").
 */
export type FaultinError = "fault" | "ro" | "hwpoison" | "eio";

/** Result of an install attempt under `mmu_lock`. */
export type InstallResult = "mapped" | "stale";

/** What a backing sees of a fault. */
export interface FaultContext {
  /** The VM. */
  readonly kvm: Kvm;
  /** The slot the gfn is in. */
  readonly slot: KvmMemorySlot;
  /** Faulting gfn. */
  readonly gfn: number;
  /** Write fault. */
  readonly write: boolean;
  /** `mmu_invalidate_seq` snapshot taken before the pfn was resolved. */
  readonly mmuSeq: number;
  /**
   * Takes `mmu_lock`, returns "stale" when an invalidation raced
   * (`is_page_fault_stale`), else installs the leaf.
   */
  install(p: FaultinPfn): InstallResult;
}

/** A memslot's pfn source. */
export interface SlotBacking {
  /** "hva" (path A) or "dmabuf" (path B). */
  readonly kind: "hva" | "dmabuf";
  /** Resolves and installs, or fails. Returns the install result or the error. */
  faultin(ctx: FaultContext): Promise<InstallResult | FaultinError>;
  /** Called once when the slot is created (after validation). */
  bind?(kvm: Kvm, slot: KvmMemorySlot): Promise<void>;
  /** Called once when the slot is deleted. */
  unbind?(kvm: Kvm, slot: KvmMemorySlot): Promise<void>;
  /** Short description for dumps. */
  describe(): string;
}
