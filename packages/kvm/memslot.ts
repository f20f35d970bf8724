/**
 * DOC: memslots and KVM_SET_USER_MEMORY_REGION2 validation
 *
 * `struct kvm_memory_slot` and the checks of `check_memory_region_flags()`
 * and `__kvm_set_memory_region()` (virt/kvm/kvm_main.c), in the kernel's
 * order, with the RFC's `KVM_MEM_VFIO_DMABUF` rules when the world enables
 * that proposal (`world.variant("kvm.vfio-dmabuf", "off") === "rfc"`).
 *
 * Locking: validation is pure; the VM calls it with `kvm->slots_lock` held.
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import {
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_MAX_NR_PAGES,
  KVM_MEM_READONLY,
  KVM_MEM_SLOTS_NUM,
  KVM_MEM_VFIO_DMABUF,
  KVM_USER_MEM_SLOTS,
  memFlagsToString,
  PAGE_SHIFT,
  PAGE_SIZE,
} from "./constants.ts";
import type { SlotBacking } from "./backing.ts";

/** `struct kvm_userspace_memory_region2` (numbers; addresses below 2^53). */
export interface KvmUserspaceMemoryRegion2 {
  /** `slot`: `as_id << 16 | id`. */
  slot: number;
  /** `KVM_MEM_*`. */
  flags: number;
  /** `guest_phys_addr`. */
  guestPhysAddr: number;
  /** `memory_size` (0 deletes the slot). */
  memorySize: number;
  /** `userspace_addr`. */
  userspaceAddr: number;
  /** `guest_memfd_offset`. */
  guestMemfdOffset?: number;
  /** `guest_memfd`: the fd (the RFC passes the dma-buf fd here). */
  guestMemfd?: number;
}

/** What `__kvm_set_memory_region` decided to do (`enum kvm_mr_change`). */
export type KvmMrChange = "create" | "delete" | "move" | "flags_only";

/** The highest user address (`TASK_SIZE_MAX` on x86-64, 47-bit). */
export const TASK_SIZE_MAX = 2 ** 47 - PAGE_SIZE;

/** `struct kvm_memory_slot`. */
export class KvmMemorySlot {
  /** `id` (low 16 bits of `slot`). */
  readonly id: number;
  /** Address space id. */
  readonly asId: number;
  /** First gfn. */
  baseGfn: number;
  /** Pages. */
  readonly npages: number;
  /** `userspace_addr`. */
  readonly userspaceAddr: number;
  /** `KVM_MEM_*`. */
  flags: number;
  /** Where pfns come from. */
  readonly backing: SlotBacking;
  /** `KVM_MEMSLOT_INVALID`: being deleted or moved; faults retry. */
  invalid = false;

  /** Built by the VM after validation. */
  constructor(
    id: number,
    asId: number,
    baseGfn: number,
    npages: number,
    userspaceAddr: number,
    flags: number,
    backing: SlotBacking,
  ) {
    this.id = id;
    this.asId = asId;
    this.baseGfn = baseGfn;
    this.npages = npages;
    this.userspaceAddr = userspaceAddr;
    this.flags = flags;
    this.backing = backing;
  }

  /** One past the last gfn. */
  get endGfn(): number {
    return this.baseGfn + this.npages;
  }

  /** True when `gfn` is in the slot. */
  contains(gfn: number): boolean {
    return gfn >= this.baseGfn && gfn < this.endGfn;
  }

  /** `__gfn_to_hva_memslot`. */
  gfnToHva(gfn: number): number {
    return this.userspaceAddr + (gfn - this.baseGfn) * PAGE_SIZE;
  }

  /** `KVM_MEM_READONLY`. */
  get readonly(): boolean {
    return (this.flags & KVM_MEM_READONLY) !== 0;
  }

  /** `kvm_slot_dirty_track_enabled`. */
  get dirtyLogging(): boolean {
    return (this.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
  }

  /** `slot %d (as %d) gfn [0x..., 0x...) flags`. */
  toString(): string {
    return `memslot ${this.id} (as ${this.asId}) gfn [0x${this.baseGfn.toString(16)}, 0x${
      this.endGfn.toString(16)
    }) ${memFlagsToString(this.flags)} ${this.backing.describe()}`;
  }
}

/** What a VM tells the validator about itself. */
export interface MemslotVmInfo {
  /** `kvm_arch_has_private_mem(kvm)`. */
  readonly hasPrivateMem: boolean;
  /** `kvm_arch_nr_memslot_as_ids(kvm)` (2 with SMM). */
  readonly nrAsIds: number;
  /** The world enables the RFC's `KVM_MEM_VFIO_DMABUF`. */
  readonly vfioDmabuf: boolean;
  /** `kvm->nr_memslot_pages`. */
  readonly nrMemslotPages: number;
  /** The slot currently at `(asId, id)`, if any. */
  slotAt(asId: number, id: number): KvmMemorySlot | undefined;
  /** Another slot of `asId` overlapping `[start, end)` gfns (`kvm_check_memslot_overlap`). */
  overlaps(asId: number, id: number, start: number, end: number): KvmMemorySlot | undefined;
}

function einval(rule: string, fn = "__kvm_set_memory_region"): KernelError {
  return new KernelError("EINVAL", `KVM_SET_USER_MEMORY_REGION2: ${rule} (${fn})`);
}

/**
 * `check_memory_region_flags()`: the flags valid for this VM. Mainline:
 * LOG_DIRTY_PAGES always, GUEST_MEMFD with private memory (and then no
 * dirty logging), READONLY unless the slot is private. The RFC adds
 * VFIO_DMABUF beside GUEST_MEMFD, mutually exclusive with it.
 */
export function checkMemoryRegionFlags(vm: MemslotVmInfo, mem: KvmUserspaceMemoryRegion2): void {
  let valid = KVM_MEM_LOG_DIRTY_PAGES;
  const privateFlags = KVM_MEM_GUEST_MEMFD | (vm.vfioDmabuf ? KVM_MEM_VFIO_DMABUF : 0);
  if (vm.hasPrivateMem) valid |= privateFlags;
  if (mem.flags & privateFlags) valid &= ~KVM_MEM_LOG_DIRTY_PAGES;
  if (!(mem.flags & privateFlags)) valid |= KVM_MEM_READONLY;
  if (mem.flags & ~valid) {
    throw einval(
      `flags ${memFlagsToString(mem.flags)} not valid for this VM (valid: ${
        memFlagsToString(valid)
      })`,
      "check_memory_region_flags",
    );
  }
  if ((mem.flags & KVM_MEM_GUEST_MEMFD) && (mem.flags & KVM_MEM_VFIO_DMABUF)) {
    throw einval("GUEST_MEMFD and VFIO_DMABUF are mutually exclusive", "check_memory_region_flags");
  }
}

/** The decision of {@linkcode validateMemoryRegion}. */
export interface MemslotDecision {
  /** What to do; null when nothing changes. */
  readonly change: KvmMrChange | null;
  /** Address space. */
  readonly asId: number;
  /** Slot id. */
  readonly id: number;
  /** First gfn. */
  readonly baseGfn: number;
  /** Pages. */
  readonly npages: number;
  /** The existing slot. */
  readonly old: KvmMemorySlot | undefined;
}

/**
 * The checks of `kvm_vm_ioctl_set_memory_region()` and
 * `__kvm_set_memory_region()`, in order. Throws `KernelError` (-EINVAL,
 * -EEXIST); returns what to change.
 */
export function validateMemoryRegion(
  vm: MemslotVmInfo,
  mem: KvmUserspaceMemoryRegion2,
): MemslotDecision {
  if ((mem.slot & 0xffff) >= KVM_USER_MEM_SLOTS) {
    throw einval(
      `slot id ${mem.slot & 0xffff} >= KVM_USER_MEM_SLOTS (${KVM_USER_MEM_SLOTS})`,
      "kvm_vm_ioctl_set_memory_region",
    );
  }
  checkMemoryRegionFlags(vm, mem);
  const asId = mem.slot >>> 16;
  const id = mem.slot & 0xffff;
  if (mem.memorySize % PAGE_SIZE !== 0 || mem.memorySize < 0) {
    throw einval(`memory_size 0x${mem.memorySize.toString(16)} is not page aligned`);
  }
  if (mem.guestPhysAddr % PAGE_SIZE !== 0) {
    throw einval(`guest_phys_addr 0x${mem.guestPhysAddr.toString(16)} is not page aligned`);
  }
  if (
    mem.userspaceAddr % PAGE_SIZE !== 0 || mem.userspaceAddr < 0 ||
    mem.userspaceAddr + mem.memorySize > TASK_SIZE_MAX
  ) {
    throw einval(
      `userspace_addr 0x${mem.userspaceAddr.toString(16)} is unaligned or fails access_ok`,
    );
  }
  const gmemOff = mem.guestMemfdOffset ?? 0;
  if (
    (mem.flags & KVM_MEM_GUEST_MEMFD) &&
    (gmemOff % PAGE_SIZE !== 0 || gmemOff + mem.memorySize > Number.MAX_SAFE_INTEGER)
  ) {
    throw einval(`guest_memfd_offset 0x${gmemOff.toString(16)} is unaligned or wraps`);
  }
  if (asId >= vm.nrAsIds || id >= KVM_MEM_SLOTS_NUM) {
    throw einval(`address space ${asId} / slot ${id} out of range`);
  }
  if (mem.guestPhysAddr + mem.memorySize > Number.MAX_SAFE_INTEGER) {
    throw einval("guest_phys_addr + memory_size wraps");
  }
  if (mem.memorySize / PAGE_SIZE > KVM_MEM_MAX_NR_PAGES) {
    throw einval(`${mem.memorySize / PAGE_SIZE} pages > KVM_MEM_MAX_NR_PAGES`);
  }
  const old = vm.slotAt(asId, id);
  const baseGfn = mem.guestPhysAddr / PAGE_SIZE;
  const npages = mem.memorySize >>> 0 === mem.memorySize
    ? mem.memorySize >>> PAGE_SHIFT
    : Math.floor(mem.memorySize / PAGE_SIZE);
  if (mem.memorySize === 0) {
    if (!old || !old.npages) throw einval(`deleting slot ${id}, which does not exist`);
    return { change: "delete", asId, id, baseGfn: old.baseGfn, npages: old.npages, old };
  }
  let change: KvmMrChange;
  if (!old) {
    change = "create";
    if (vm.nrMemslotPages + npages > Number.MAX_SAFE_INTEGER) {
      throw einval("nr_memslot_pages wraps");
    }
  } else {
    if (mem.flags & (KVM_MEM_GUEST_MEMFD | KVM_MEM_VFIO_DMABUF)) {
      throw einval(`private slot ${id} is immutable; it can only be deleted`);
    }
    if (
      mem.userspaceAddr !== old.userspaceAddr || npages !== old.npages ||
      ((mem.flags ^ old.flags) & KVM_MEM_READONLY)
    ) {
      throw einval(`slot ${id}: userspace_addr, size and READONLY cannot change`);
    }
    if (baseGfn !== old.baseGfn) change = "move";
    else if (mem.flags !== old.flags) change = "flags_only";
    else return { change: null, asId, id, baseGfn, npages, old };
  }
  if (change === "create" || change === "move") {
    const o = vm.overlaps(asId, id, baseGfn, baseGfn + npages);
    if (o) {
      throw new KernelError(
        "EEXIST",
        `KVM_SET_USER_MEMORY_REGION2: gfn [0x${baseGfn.toString(16)}, 0x${
          (baseGfn + npages).toString(16)
        }) overlaps ${o} (kvm_check_memslot_overlap)`,
      );
    }
  }
  return { change, asId, id, baseGfn, npages, old };
}
