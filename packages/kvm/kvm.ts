/**
 * DOC: a VM (`struct kvm`)
 *
 * Memslots, the stage-2 table, and the invalidation state that keeps the
 * stage-2 table coherent with whatever backs the slots
 * (virt/kvm/kvm_main.c, arch/x86/kvm/mmu/mmu.c):
 *
 * - `kvm_mmu_invalidate_begin()` raises `mmu_invalidate_in_progress` and
 *   resets the range on the first begin; `kvm_mmu_invalidate_range_add()`
 *   widens the range; `kvm_mmu_invalidate_end()` bumps
 *   `mmu_invalidate_seq` and drops the in-progress count.
 * - A fault snapshots the sequence before resolving the pfn and, under
 *   `mmu_lock`, gives up (`RET_PF_RETRY`) when an invalidation in progress
 *   covers its gfn or the sequence moved (`mmu_invalidate_retry_gfn`), or
 *   when its slot went invalid.
 * - Memslot changes wait until no mmu_notifier invalidation is active
 *   (`mn_active_invalidate_count`, `kvm_swap_active_memslots`), mark a
 *   deleted or moved slot invalid, and zap its range before it goes.
 *
 * Locking: `slots_lock` (mutex) serialises memslot changes; `mmu_lock`
 * (a spinlock here; an rwlock on x86, with faults taking it for read)
 * covers the stage-2 table and the invalidation fields. Every method that
 * touches the stage-2 table takes or asserts `mmu_lock`.
 *
 * @module
 */
import {
  type Kernel,
  KernelError,
  Mutex,
  SpinLock,
  type Task,
  WaitQueueHead,
} from "@dmalab/kernel";
import { Stage2 } from "./stage2.ts";
import {
  KvmMemorySlot,
  type KvmMemorySlot as Slot,
  type KvmUserspaceMemoryRegion2,
  type MemslotVmInfo,
  validateMemoryRegion,
} from "./memslot.ts";
import type { SlotBacking } from "./backing.ts";
import { KvmVcpu } from "./vcpu.ts";
import { KVM_MAX_VCPU_IDS, KVM_MAX_VCPUS, PAGE_SIZE } from "./constants.ts";

/** `INVALID_GPA` as a gfn sentinel. */
export const INVALID_GFN: number = -1;

/** VM types (`KVM_X86_DEFAULT_VM`, `KVM_X86_SW_PROTECTED_VM`). */
export type KvmVmType = "default" | "sw-protected";

/** Options for {@linkcode Kvm}. */
export interface KvmOptions {
  /** Name for dumps (`kvm-<pid>`). */
  name?: string;
  /** VM type; `sw-protected` has private memory (`kvm_arch_has_private_mem`). */
  type?: KvmVmType;
  /** SMM enabled: two memslot address spaces. Default false. */
  smm?: boolean;
  /**
   * Makes the backing of a new slot. Import path A and B modules supply
   * one (`hvaBackingFactory`, the dma-buf slot); the VM picks by flag.
   */
  backings?: BackingFactory;
}

/** Chooses and builds a slot's backing from the validated region. */
export type BackingFactory = (
  kvm: Kvm,
  mem: KvmUserspaceMemoryRegion2,
) => SlotBacking | Promise<SlotBacking>;

/** VM counters (a subset of `kvm_vm_stat` / `kvm_vcpu_stat`). */
export interface KvmStats {
  /** Stage-2 faults handled. */
  pfFaults: number;
  /** Faults that returned RET_PF_RETRY (stale: invalidation raced). */
  pfRetries: number;
  /** Faults that installed a leaf. */
  pfFixed: number;
  /** Exits to user space for MMIO emulation. */
  mmioExits: number;
  /** Memory-fault exits (`-EFAULT`) and -EIO returns. */
  faultExits: number;
  /** `kvm_mmu_invalidate_begin` calls. */
  invalidations: number;
}

/**
 * One VM.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { Kvm, KVM_MEM_READONLY } from "@dmalab/kvm";
 * const world = new Kernel();
 * const kvm = new Kvm(world);
 * const errno = await world.runTask("qemu", async () => {
 *   try {
 *     await kvm.setUserMemoryRegion2({
 *       slot: 0, flags: KVM_MEM_READONLY, guestPhysAddr: 0x1001, memorySize: 4096, userspaceAddr: 0,
 *     });
 *     return "ok";
 *   } catch (e) {
 *     return (e as { code: string }).code;
 *   }
 * });
 * errno; // "EINVAL": guest_phys_addr is not page aligned
 * ```
 */
export class Kvm {
  /** The world. */
  readonly world: Kernel;
  /** World-unique id. */
  readonly id: number;
  /** Name. */
  readonly name: string;
  /** VM type. */
  readonly type: KvmVmType;
  /** The stage-2 table (address space 0 and 1 share it in this model). */
  readonly stage2: Stage2 = new Stage2();
  /** `kvm->mmu_lock`. */
  readonly mmuLock: SpinLock;
  /** `kvm->slots_lock`. */
  readonly slotsLock: Mutex;
  /** `mmu_invalidate_seq`. */
  mmuInvalidateSeq = 0;
  /** `mmu_invalidate_in_progress`. */
  mmuInvalidateInProgress = 0;
  /** `mmu_invalidate_range_start` (gfn). */
  mmuInvalidateRangeStart: number = INVALID_GFN;
  /** `mmu_invalidate_range_end` (gfn, exclusive). */
  mmuInvalidateRangeEnd: number = INVALID_GFN;
  /** `mn_active_invalidate_count`. */
  mnActiveInvalidateCount = 0;
  /** `mn_memslots_update_rcuwait`. */
  readonly mnMemslotsUpdate: WaitQueueHead;
  /** `nr_memslot_pages`. */
  nrMemslotPages = 0;
  /** Counters. */
  readonly stats: KvmStats = {
    pfFaults: 0,
    pfRetries: 0,
    pfFixed: 0,
    mmioExits: 0,
    faultExits: 0,
    invalidations: 0,
  };
  /** vCPUs by id. */
  readonly vcpus: KvmVcpu[] = [];
  readonly #slots = new Map<number, KvmMemorySlot>();
  readonly #nrAsIds: number;
  readonly #backings: BackingFactory | null;
  /** Objects that need teardown with the VM (`kvm_destroy_vm`). */
  readonly #onDestroy: (() => Promise<void>)[] = [];
  #destroyed = false;

  /** `KVM_CREATE_VM`. */
  constructor(world: Kernel, options: KvmOptions = {}) {
    this.world = world;
    this.id = world.nextId();
    this.name = options.name ?? `kvm-${this.id}`;
    this.type = options.type ?? "default";
    this.#nrAsIds = options.smm ? 2 : 1;
    this.#backings = options.backings ?? null;
    this.mmuLock = new SpinLock(world, "kvm->mmu_lock");
    this.slotsLock = new Mutex(world, "kvm->slots_lock");
    this.mnMemslotsUpdate = new WaitQueueHead(world.sched, "kvm->mn_memslots_update_rcuwait");
    world.addChecker(`kvm:${this.name}`, () => this.#check());
  }

  /** `kvm_arch_has_private_mem`. */
  get hasPrivateMem(): boolean {
    return this.type === "sw-protected";
  }

  /** True once {@linkcode Kvm.destroy} ran. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** Every memslot, ascending by gfn. */
  get memslots(): KvmMemorySlot[] {
    return [...this.#slots.values()].sort((a, b) => a.asId - b.asId || a.baseGfn - b.baseGfn);
  }

  /** `id_to_memslot`. */
  slot(id: number, asId = 0): KvmMemorySlot | undefined {
    return this.#slots.get((asId << 16) | id);
  }

  /** `gfn_to_memslot` (address space 0 unless given). */
  gfnToMemslot(gfn: number, asId = 0): KvmMemorySlot | null {
    for (const s of this.#slots.values()) {
      if (s.asId === asId && s.contains(gfn)) return s;
    }
    return null;
  }

  /** Registers teardown work run by {@linkcode Kvm.destroy}. */
  onDestroy(fn: () => Promise<void>): void {
    this.#onDestroy.push(fn);
  }

  #info(): MemslotVmInfo {
    return {
      hasPrivateMem: this.hasPrivateMem,
      nrAsIds: this.#nrAsIds,
      vfioDmabuf: this.world.variant("kvm.vfio-dmabuf", "off") === "rfc",
      nrMemslotPages: this.nrMemslotPages,
      slotAt: (asId, id) => this.#slots.get((asId << 16) | id),
      overlaps: (asId, id, start, end) => {
        for (const s of this.#slots.values()) {
          if (s.asId === asId && s.id !== id && s.baseGfn < end && start < s.endGfn) return s;
        }
        return undefined;
      },
    };
  }

  /**
   * `KVM_SET_USER_MEMORY_REGION2` (`kvm_set_memory_region` under
   * `slots_lock`). Throws -EINVAL/-EEXIST as the kernel does, or what the
   * backing's bind throws; a failure changes nothing.
   */
  async setUserMemoryRegion2(mem: KvmUserspaceMemoryRegion2): Promise<void> {
    this.#alive("KVM_SET_USER_MEMORY_REGION2");
    await this.slotsLock.lock();
    try {
      const d = validateMemoryRegion(this.#info(), mem);
      if (d.change === null) return;
      if (d.change === "create") {
        if (!this.#backings) {
          throw new KernelError(
            "EINVAL",
            `KVM_SET_USER_MEMORY_REGION2: ${this.name} has no memslot backing (create the VM through createVm)`,
          );
        }
        const backing = await this.#backings(this, mem);
        const slot = new KvmMemorySlot(
          d.id,
          d.asId,
          d.baseGfn,
          d.npages,
          mem.userspaceAddr,
          mem.flags,
          backing,
        );
        await backing.bind?.(this, slot);
        await this.#swapWait();
        this.#slots.set((d.asId << 16) | d.id, slot);
        this.nrMemslotPages += d.npages;
        return;
      }
      const old = d.old!;
      if (d.change === "flags_only") {
        await this.#swapWait();
        old.flags = mem.flags;
        return;
      }
      // delete or move: invalidate the slot, zap it, then commit.
      await this.#swapWait();
      this.mmuLock.lock();
      old.invalid = true;
      this.stage2.zapGfnRange(old.baseGfn, old.endGfn);
      this.mmuLock.unlock();
      if (d.change === "delete") {
        this.#slots.delete((d.asId << 16) | d.id);
        this.nrMemslotPages -= old.npages;
        await old.backing.unbind?.(this, old);
      } else {
        old.baseGfn = d.baseGfn;
        old.invalid = false;
      }
    } finally {
      this.slotsLock.unlock();
    }
  }

  /** `kvm_swap_active_memslots`: waits out active mmu_notifier invalidations. */
  async #swapWait(): Promise<void> {
    await this.mnMemslotsUpdate.waitEvent(() => this.mnActiveInvalidateCount === 0);
  }

  /** `kvm_mmu_invalidate_begin`; `mmu_lock` held. */
  invalidateBegin(): void {
    this.mmuLock.assertHeld();
    this.stats.invalidations++;
    this.mmuInvalidateInProgress++;
    if (this.mmuInvalidateInProgress === 1) {
      this.mmuInvalidateRangeStart = INVALID_GFN;
      this.mmuInvalidateRangeEnd = INVALID_GFN;
    }
  }

  /** `kvm_mmu_invalidate_range_add`; `mmu_lock` held. */
  invalidateRangeAdd(start: number, end: number): void {
    this.mmuLock.assertHeld();
    this.world.warnOn(
      this.mmuInvalidateInProgress === 0,
      `kvm_mmu_invalidate_range_add: ${this.name}: no invalidation in progress`,
    );
    if (this.mmuInvalidateRangeStart === INVALID_GFN) {
      this.mmuInvalidateRangeStart = start;
      this.mmuInvalidateRangeEnd = end;
    } else {
      this.mmuInvalidateRangeStart = Math.min(this.mmuInvalidateRangeStart, start);
      this.mmuInvalidateRangeEnd = Math.max(this.mmuInvalidateRangeEnd, end);
    }
  }

  /**
   * `kvm_mmu_invalidate_end`; `mmu_lock` held. A count going negative is a
   * `KVM_BUG_ON` (a one-time WARN that marks the VM bugged), and an
   * invalidation that never added a range is a WARN.
   */
  invalidateEnd(): void {
    this.mmuLock.assertHeld();
    this.mmuInvalidateSeq++;
    this.mmuInvalidateInProgress--;
    if (this.mmuInvalidateInProgress < 0) {
      this.world.bug("WARN", `KVM_BUG_ON: ${this.name}: mmu_invalidate_in_progress < 0`);
    }
    this.world.warnOn(
      this.mmuInvalidateRangeStart === INVALID_GFN,
      `kvm_mmu_invalidate_end: ${this.name}: no range was added since begin`,
    );
  }

  /** `kvm_unmap_gfn_range` + remote flush; `mmu_lock` held. Returns leaves zapped. */
  unmapGfnRange(start: number, end: number): number {
    this.mmuLock.assertHeld();
    return this.stage2.zapGfnRange(start, end);
  }

  /**
   * `mmu_invalidate_retry_gfn`: true when the fault that snapshotted `seq`
   * must retry. `mmu_lock` held.
   */
  invalidateRetryGfn(seq: number, gfn: number): boolean {
    this.mmuLock.assertHeld();
    if (this.mmuInvalidateInProgress) {
      // mmu_lock dropped between begin and range_add: a KVM bug; retry.
      if (
        this.world.warnOn(
          this.mmuInvalidateRangeStart === INVALID_GFN ||
            this.mmuInvalidateRangeEnd === INVALID_GFN,
          `mmu_invalidate_retry_gfn: ${this.name}: invalidation in progress without a range`,
        )
      ) {
        return true;
      }
      if (gfn >= this.mmuInvalidateRangeStart && gfn < this.mmuInvalidateRangeEnd) return true;
    }
    return this.mmuInvalidateSeq !== seq;
  }

  /**
   * `mmu_invalidate_retry_gfn_unsafe`: the lockless pre-check. It may miss
   * (a range not added yet reads as INVALID_GPA, which no gfn falls in);
   * the locked check after it decides.
   */
  invalidateRetryGfnUnsafe(seq: number, gfn: number): boolean {
    if (
      this.mmuInvalidateInProgress && this.mmuInvalidateRangeStart !== INVALID_GFN &&
      gfn >= this.mmuInvalidateRangeStart && gfn < this.mmuInvalidateRangeEnd
    ) {
      return true;
    }
    return this.mmuInvalidateSeq !== seq;
  }

  /**
   * Zaps a whole slot as an invalidation (begin, range_add, unmap, end):
   * what the RFC's `kv_dmabuf_move_notify` does. Takes `mmu_lock`.
   */
  zapSlot(slot: Slot): number {
    this.mmuLock.lock();
    try {
      this.invalidateBegin();
      this.invalidateRangeAdd(slot.baseGfn, slot.endGfn);
      const n = this.unmapGfnRange(slot.baseGfn, slot.endGfn);
      this.invalidateEnd();
      return n;
    } finally {
      this.mmuLock.unlock();
    }
  }

  /**
   * `KVM_CREATE_VCPU` (`kvm_vm_ioctl_create_vcpu`): an id at or above
   * `KVM_MAX_VCPU_IDS` or a VM already at `max_vcpus` is -EINVAL, a taken
   * id -EEXIST.
   */
  createVcpu(id: number = this.vcpus.length): KvmVcpu {
    this.#alive("KVM_CREATE_VCPU");
    if (!Number.isInteger(id) || id < 0 || id >= KVM_MAX_VCPU_IDS) {
      throw new KernelError(
        "EINVAL",
        `KVM_CREATE_VCPU: id ${id} >= KVM_MAX_VCPU_IDS (${KVM_MAX_VCPU_IDS}) (kvm_vm_ioctl_create_vcpu)`,
      );
    }
    if (this.vcpus.length >= KVM_MAX_VCPUS) {
      throw new KernelError(
        "EINVAL",
        `KVM_CREATE_VCPU: ${this.name} already has max_vcpus (${KVM_MAX_VCPUS}) vCPUs (kvm_vm_ioctl_create_vcpu)`,
      );
    }
    if (this.vcpus.some((v) => v.id === id)) {
      throw new KernelError("EEXIST", `KVM_CREATE_VCPU: ${this.name} already has vcpu ${id}`);
    }
    const v = new KvmVcpu(this, id);
    this.vcpus.push(v);
    return v;
  }

  /** Spawns a vCPU task (`kind: "vcpu"`) running `body`. */
  spawnVcpu<T>(vcpu: KvmVcpu, body: (task: Task<T>) => Promise<T>): Task<T> {
    return this.world.spawn(`${this.name}/vcpu${vcpu.id}`, body, { kind: "vcpu" });
  }

  /** `kvm_destroy_vm`: deletes every slot (unbinding backings) and runs teardown. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    for (const s of this.memslots) {
      await this.setUserMemoryRegion2({
        slot: (s.asId << 16) | s.id,
        flags: 0,
        guestPhysAddr: s.baseGfn * PAGE_SIZE,
        memorySize: 0,
        userspaceAddr: s.userspaceAddr,
      });
    }
    for (const fn of this.#onDestroy) await fn();
    this.#destroyed = true;
    this.world.removeChecker(`kvm:${this.name}`);
  }

  #alive(what: string): void {
    if (this.#destroyed) throw new KernelError("EIO", `${what}: ${this.name} is destroyed`);
  }

  #check(): string[] {
    const out: string[] = [];
    if (this.mmuInvalidateInProgress < 0) out.push(`mmu_invalidate_in_progress < 0`);
    if (this.mnActiveInvalidateCount < 0) out.push(`mn_active_invalidate_count < 0`);
    return out;
  }
}
