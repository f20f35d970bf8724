/**
 * DOC: KVM uAPI constants
 *
 * Values from include/uapi/linux/kvm.h and virt/kvm/kvm_main.c that the model
 * validates against, plus the RFC's `KVM_MEM_VFIO_DMABUF` flag (Xu Yilun,
 * "[RFC PATCH 06/12] KVM: Support vfio_dmabuf backed MMIO region").
 *
 * Locking: plain constants, no state.
 *
 * @module
 */

/** `KVM_MEM_LOG_DIRTY_PAGES`. */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
/** `KVM_MEM_READONLY`. */
export const KVM_MEM_READONLY = 1 << 1;
/** `KVM_MEM_GUEST_MEMFD`. */
export const KVM_MEM_GUEST_MEMFD = 1 << 2;
/** `KVM_MEM_VFIO_DMABUF` (RFC only, never merged): the slot is backed by a dma-buf fd. */
export const KVM_MEM_VFIO_DMABUF = 1 << 3;

/** `KVM_USER_MEM_SLOTS` on x86 (`KVM_MEM_SLOTS_NUM` minus the private slots). */
export const KVM_USER_MEM_SLOTS = 32764;
/** `KVM_MEM_SLOTS_NUM` (`SHRT_MAX`). */
export const KVM_MEM_SLOTS_NUM = 32767;
/** `KVM_MEM_MAX_NR_PAGES` (`(1UL << 31) - 1`). */
export const KVM_MEM_MAX_NR_PAGES = 2 ** 31 - 1;

/** `KVM_MAX_VCPUS` on x86 (`CONFIG_KVM_MAX_NR_VCPUS`, default 1024). */
export const KVM_MAX_VCPUS = 1024;
/** `KVM_MAX_VCPU_IDS` on x86 (`KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO`, ratio 4). */
export const KVM_MAX_VCPU_IDS: number = KVM_MAX_VCPUS * 4;

/** `PAGE_SHIFT`. */
export const PAGE_SHIFT = 12;
/** `PAGE_SIZE`. */
export const PAGE_SIZE = 4096;

/** `PG_LEVEL_4K`. */
export const PG_LEVEL_4K = 1;
/** `PG_LEVEL_2M`. */
export const PG_LEVEL_2M = 2;
/** `PG_LEVEL_1G`. */
export const PG_LEVEL_1G = 3;

/** `KVM_PAGES_PER_HPAGE(level)`: 4 KiB pages covered by one leaf at `level`. */
export function pagesPerHpage(level: number): number {
  return 2 ** (9 * (level - 1));
}

/** Bytes covered by one leaf at `level`. */
export function levelBytes(level: number): number {
  return pagesPerHpage(level) * PAGE_SIZE;
}

/** `KVM_EXIT_MMIO`. */
export const KVM_EXIT_MMIO = 6;
/** `KVM_EXIT_MEMORY_FAULT`. */
export const KVM_EXIT_MEMORY_FAULT = 39;
/** `KVM_MEMORY_EXIT_FLAG_PRIVATE`. */
export const KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3;

/** Name of the `KVM_MEM_*` flag bits set in `flags`. */
export function memFlagsToString(flags: number): string {
  const names: string[] = [];
  if (flags & KVM_MEM_LOG_DIRTY_PAGES) names.push("LOG_DIRTY_PAGES");
  if (flags & KVM_MEM_READONLY) names.push("READONLY");
  if (flags & KVM_MEM_GUEST_MEMFD) names.push("GUEST_MEMFD");
  if (flags & KVM_MEM_VFIO_DMABUF) names.push("VFIO_DMABUF");
  const rest = flags & ~0xf;
  if (rest) names.push(`0x${rest.toString(16)}`);
  return names.length ? names.join("|") : "0";
}
