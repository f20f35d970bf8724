/**
 * @dmalab/kvm: VMs, memslots (`KVM_SET_USER_MEMORY_REGION2`), a stage-2
 * table with 4 KiB / 2 MiB / 1 GiB leaves, vCPU accesses and faults, and the
 * two ways a device's MMIO reaches a guest: import path A (mainline: a
 * memslot over a user mapping, GUP / `follow_pfnmap`, the mmu_notifier with
 * the invalidation sequence) and import path B (Xu Yilun's RFC: a dma-buf
 * slot, `move_notify` zapping it, pfns through the dma-buf pfn variant).
 *
 * @example
 * ```ts
 * import { Kernel, MmStruct } from "@dmalab/kernel";
 * import { createVm } from "@dmalab/kvm";
 * const world = new Kernel();
 * const mm = new MmStruct(world, "qemu");
 * await world.runTask("qemu", async () => {
 *   const { kvm } = await createVm(world, { mm });
 *   const hva = await mm.mmap({ length: 4096 });
 *   await kvm.setUserMemoryRegion2({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: 4096, userspaceAddr: hva });
 *   await kvm.createVcpu().write(0, new Uint8Array([42]));
 * });
 * ```
 *
 * @module
 */
export * from "./constants.ts";
export * from "./stage2.ts";
export * from "./backing.ts";
export * from "./memslot.ts";
export * from "./kvm.ts";
export * from "./vcpu.ts";
export * from "./hva.ts";
export * from "./dmabuf_slot.ts";
export * from "./create_vm.ts";
export * from "./scenarios.ts";
export { PAGE_SHIFT, PAGE_SIZE } from "./constants.ts";
