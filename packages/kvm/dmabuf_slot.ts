/**
 * DOC: import path B (RFC): a dma-buf memslot
 *
 * Xu Yilun's RFC ("KVM: Support vfio_dmabuf backed MMIO region",
 * "KVM: x86/mmu: Handle page fault for vfio_dmabuf backed MMIO") lets a
 * `KVM_MEM_VFIO_DMABUF` slot name a dma-buf fd (passed in `guest_memfd`)
 * instead of a user mapping. Bind (`kvm_vfio_dmabuf_bind`): the fd must be
 * a dma-buf (-EBADF / -EINVAL from `dma_buf_get`), `guest_memfd_offset`
 * must be 0 and the slot size must equal the buffer size (-EINVAL), the
 * buffer must come from vfio (the RFC's `vfio_dma_buf_get_data` sanity
 * check; -EINVAL otherwise), then a dynamic attachment without a device,
 * `allow_peer2peer`, whose `move_notify` zaps the whole slot as an
 * invalidation (`kvm_mmu_invalidate_begin`, range_add, unmap, end).
 *
 * Faults fetch the pfn through the pfn mechanism the world runs
 * (`dma-buf.pfn`) and the fault form KVM uses (`kvm.dmabuf-fault`):
 *
 * - `rfc-get-pfn` + `unlocked` (the RFC): `dma_buf_get_pfn_unlocked()`
 *   takes the reservation lock only around the exporter's `get_pfn`; the
 *   leaf is installed later under `mmu_lock`, protected only by KVM's own
 *   `mmu_invalidate_seq` recheck;
 * - `rfc-get-pfn` + `locked` (Xu, ~2025-01-21): the reservation lock is
 *   held from `get_pfn` until the leaf is installed, so `move_notify`
 *   (which runs under that lock) cannot fall in between;
 * - `pfn-attachment` (Vetter's separate mechanism): a pfn attachment with
 *   memory model `revocable`, ranges fetched by `pfn_map` under the
 *   reservation lock and installed under it, `invalidate` zapping the slot.
 *
 * Any failure to get a pfn is `-EIO` from `KVM_RUN` (the RFC's comment:
 * `-EFAULT` would make user space try a private/shared conversion). The
 * huge page level follows `max_order` (the RFC's vfio returns 0).
 *
 * Locking: faults take the reservation lock (briefly, or across the
 * install); `move_notify` runs with it held and takes `mmu_lock`.
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import {
  type DmaBuf,
  type DmaBufAttachment,
  dmaBufDynamicAttach,
  dmaBufGet,
  dmaBufGetPfnUnlocked,
  type DmaBufPfnAttach,
  dmaBufPfnAttach,
  dmaBufPfnVariant,
} from "@dmalab/dma-buf";
import { vfioDmaBufPriv } from "@dmalab/vfio";
import type { FaultContext, FaultinError, InstallResult, SlotBacking } from "./backing.ts";
import { PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K } from "./constants.ts";
import type { Kvm } from "./kvm.ts";
import type { KvmMemorySlot, KvmUserspaceMemoryRegion2 } from "./memslot.ts";

/** How KVM holds the reservation lock around a dma-buf fault. */
export type DmabufFaultForm = "unlocked" | "locked";

/** `kvm.dmabuf-fault` of the world ("unlocked" by default, as the RFC). */
export function dmabufFaultForm(kvm: Kvm): DmabufFaultForm {
  return kvm.world.variant("kvm.dmabuf-fault", "unlocked") === "locked" ? "locked" : "unlocked";
}

/** The level a `max_order` allows. */
export function orderToLevel(order: number): number {
  return order >= 18 ? PG_LEVEL_1G : order >= 9 ? PG_LEVEL_2M : PG_LEVEL_4K;
}

/** Counters of a dma-buf slot. */
export interface DmabufSlotStats {
  /** Pfns fetched from the exporter. */
  pfnFetches: number;
  /** `move_notify` / `invalidate` calls received. */
  notifies: number;
  /** Fetches the exporter refused (revoked, out of range). */
  refused: number;
}

/** The backing of a `KVM_MEM_VFIO_DMABUF` slot. */
export class DmabufBacking implements SlotBacking {
  /** "dmabuf". */
  readonly kind = "dmabuf" as const;
  /** The buffer (a reference held while bound). */
  readonly dmabuf: DmaBuf;
  /** The dynamic attachment (rfc-get-pfn). */
  attach: DmaBufAttachment | null = null;
  /** The pfn attachment (pfn-attachment). */
  pfnAttach: DmaBufPfnAttach | null = null;
  /** Counters. */
  readonly stats: DmabufSlotStats = { pfnFetches: 0, notifies: 0, refused: 0 };
  #kvm: Kvm | null = null;
  #slot: KvmMemorySlot | null = null;

  /** A backing over `dmabuf` (the caller's reference moves to it). */
  constructor(dmabuf: DmaBuf) {
    this.dmabuf = dmabuf;
  }

  /** "dmabuf(ino)". */
  describe(): string {
    return `dmabuf(${this.dmabuf.inodeNumber})`;
  }

  /** `kv_dmabuf_move_notify`: zap the whole slot as an invalidation. */
  #notify(): void {
    this.stats.notifies++;
    if (this.#kvm && this.#slot) this.#kvm.zapSlot(this.#slot);
  }

  /** `kvm_vfio_dmabuf_bind`: size checks done by the resolver; attach here. */
  async bind(kvm: Kvm, slot: KvmMemorySlot): Promise<void> {
    try {
      await this.#bind(kvm, slot);
    } catch (e) {
      this.#kvm = null;
      this.#slot = null;
      this.dmabuf.put();
      throw e;
    }
  }

  async #bind(kvm: Kvm, slot: KvmMemorySlot): Promise<void> {
    this.#kvm = kvm;
    this.#slot = slot;
    const variant = dmaBufPfnVariant(kvm.world);
    if (variant === "rfc-get-pfn") {
      this.attach = await dmaBufDynamicAttach(
        this.dmabuf,
        null,
        { allowPeer2peer: true, moveNotify: () => this.#notify() },
        this,
      );
      return;
    }
    if (variant === "pfn-attachment") {
      this.pfnAttach = await dmaBufPfnAttach(
        this.dmabuf,
        { acceptModels: ["pinned", "dynamic", "revocable"], invalidate: () => this.#notify() },
        this,
      );
      return;
    }
    throw new KernelError(
      "EOPNOTSUPP",
      `kvm_vfio_dmabuf_bind: the world's dma-buf pfn mechanism '${variant}' offers KVM no pfns`,
    );
  }

  /** Unbind: detach and drop the reference. */
  async unbind(): Promise<void> {
    if (this.attach) {
      await this.attach.detach();
      this.attach = null;
    }
    if (this.pfnAttach) {
      await this.pfnAttach.detach();
      this.pfnAttach = null;
    }
    this.dmabuf.put();
    this.#kvm = null;
    this.#slot = null;
  }

  /**
   * Fetches the pfn of `pgoff` with the reservation lock held (the locked
   * get_pfn of the later discussion, or `pfn_map` of the pfn attachment).
   * Null when the exporter refuses.
   */
  #fetchLocked(pgoff: number): { pfn: number; level: number } | null {
    const buf = this.dmabuf;
    try {
      this.stats.pfnFetches++;
      if (this.attach) {
        const r = buf.ops.getPfn!(this.attach, pgoff);
        return { pfn: r.pfn, level: orderToLevel(r.maxOrder) };
      }
      const pa = this.pfnAttach!;
      const ranges = pa.map(pgoff, 1);
      const r = ranges[0];
      // The leaf is installed before the lock drops, so the range can be
      // given back now: the invalidate callback zaps whatever it mapped.
      pa.unmap(ranges);
      if (!r) return null;
      return { pfn: r.pfn + (pgoff - r.pgoff), level: orderToLevel(r.maxOrder) };
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      this.stats.refused++;
      return null;
    }
  }

  /** `kvm_vfio_dmabuf_get_pfn` + install, in the world's fault form. */
  async faultin(ctx: FaultContext): Promise<InstallResult | FaultinError> {
    const buf = this.dmabuf;
    const pgoff = ctx.gfn - ctx.slot.baseGfn;
    const locked = this.pfnAttach !== null || dmabufFaultForm(ctx.kvm) === "locked";
    if (locked) {
      await buf.resv.lock(null);
      try {
        const p = this.#fetchLocked(pgoff);
        if (!p) return "eio";
        return ctx.install({ pfn: p.pfn, writable: true, hostLevel: p.level });
      } finally {
        buf.resv.unlock();
      }
    }
    // dma_buf_get_pfn_unlocked: the lock covers only the exporter's get_pfn.
    let p: { pfn: number; level: number } | null = null;
    try {
      this.stats.pfnFetches++;
      const r = await dmaBufGetPfnUnlocked(this.attach!, pgoff);
      p = { pfn: r.pfn, level: orderToLevel(r.maxOrder) };
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      this.stats.refused++;
    }
    if (!p) return "eio";
    await ctx.kvm.world.sched.preempt("kvm_tdp_mmu_map", ctx.kvm.id);
    return ctx.install({ pfn: p.pfn, writable: true, hostLevel: p.level });
  }
}

/**
 * The resolver `createVm` takes for `KVM_MEM_VFIO_DMABUF` slots: `guest_memfd`
 * is the dma-buf fd in the calling task's fd table.
 */
export function dmabufSlotResolver(kvm: Kvm, mem: KvmUserspaceMemoryRegion2): DmabufBacking {
  if ((mem.guestMemfdOffset ?? 0) !== 0) {
    throw new KernelError("EINVAL", "kvm_vfio_dmabuf_bind: guest_memfd_offset must be 0");
  }
  const buf = dmaBufGet(kvm.world, mem.guestMemfd ?? -1);
  if (buf.size !== mem.memorySize) {
    buf.put();
    throw new KernelError(
      "EINVAL",
      `kvm_vfio_dmabuf_bind: slot size 0x${mem.memorySize.toString(16)} != dma-buf size 0x${
        buf.size.toString(16)
      }`,
    );
  }
  if (!vfioDmaBufPriv(buf)) {
    buf.put();
    throw new KernelError(
      "EINVAL",
      `kvm_vfio_dmabuf_bind: ${buf} is not a vfio dma-buf (vfio_dma_buf_get_data)`,
    );
  }
  return new DmabufBacking(buf);
}
