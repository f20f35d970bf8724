/**
 * DOC: creating a VM (`KVM_CREATE_VM`)
 *
 * {@linkcode createVm} builds a {@linkcode Kvm} owned by an mm, registers
 * its mmu_notifier on that mm (`kvm_init_mmu_notifier` in
 * `kvm_create_vm`), and gives it the memslot backings: import path A for
 * every normal slot, and, when the world enables the RFC
 * (`variants: {"kvm.vfio-dmabuf": "rfc"}`) and the VM has private memory,
 * import path B for `KVM_MEM_VFIO_DMABUF` slots.
 *
 * Locking: `createVm` sleeps (mmu_notifier registration takes mmap_lock
 * for write); call it from a task.
 *
 * @module
 */
import type { MmStruct } from "@dmalab/kernel";
import type { Kernel } from "@dmalab/kernel";
import { KVM_MEM_VFIO_DMABUF } from "./constants.ts";
import { HvaBacking, KvmMmuNotifier } from "./hva.ts";
import { dmabufSlotResolver } from "./dmabuf_slot.ts";
import { Kvm, type KvmVmType } from "./kvm.ts";
import type { KvmUserspaceMemoryRegion2 } from "./memslot.ts";
import type { SlotBacking } from "./backing.ts";

/** Resolves the fd in `guest_memfd` of a `KVM_MEM_VFIO_DMABUF` region into a backing. */
export type DmabufSlotResolver = (
  kvm: Kvm,
  mem: KvmUserspaceMemoryRegion2,
) => SlotBacking | Promise<SlotBacking>;

/** Options for {@linkcode createVm}. */
export interface CreateVmOptions {
  /** The owner's address space (`current->mm`). */
  mm: MmStruct;
  /** VM type. */
  type?: KvmVmType;
  /** Name. */
  name?: string;
  /** SMM (two address spaces). */
  smm?: boolean;
  /** Import path B resolver (default {@linkcode dmabufSlotResolver}). */
  dmabufSlots?: DmabufSlotResolver;
}

/** The VM and its mmu_notifier. */
export interface CreatedVm {
  /** The VM. */
  readonly kvm: Kvm;
  /** Its notifier. */
  readonly notifier: KvmMmuNotifier;
}

/**
 * `KVM_CREATE_VM` for the task owning `options.mm`.
 *
 * @example
 * ```ts
 * import { Kernel, MmStruct } from "@dmalab/kernel";
 * import { createVm } from "@dmalab/kvm";
 * const world = new Kernel();
 * const mm = new MmStruct(world, "qemu");
 * const bytes = await world.runTask("qemu", async () => {
 *   const { kvm } = await createVm(world, { mm });
 *   const hva = await mm.mmap({ length: 2 << 20 });
 *   await kvm.setUserMemoryRegion2({
 *     slot: 0, flags: 0, guestPhysAddr: 0, memorySize: 2 << 20, userspaceAddr: hva,
 *   });
 *   const vcpu = kvm.createVcpu();
 *   await vcpu.write(0x1000, new Uint8Array([1, 2, 3]));
 *   return await mm.read(hva + 0x1000, 3);
 * });
 * bytes.join(","); // "1,2,3"
 * ```
 */
export async function createVm(world: Kernel, options: CreateVmOptions): Promise<CreatedVm> {
  const mm = options.mm;
  const dmabuf = options.dmabufSlots ?? dmabufSlotResolver;
  const kvm = new Kvm(world, {
    ...(options.name === undefined ? {} : { name: options.name }),
    type: options.type ?? "default",
    smm: options.smm ?? false,
    backings: (vm, mem) => {
      if (mem.flags & KVM_MEM_VFIO_DMABUF) {
        return dmabuf(vm, mem);
      }
      return new HvaBacking(mm);
    },
  });
  const notifier = new KvmMmuNotifier(kvm);
  await notifier.register(mm);
  kvm.onDestroy(async () => {
    if (notifier.sub.mm) await notifier.sub.unregister();
  });
  return { kvm, notifier };
}
