/**
 * DOC: variant 1 — Xu Yilun's `dma_buf_get_pfn_unlocked()` RFC (2025-01-07)
 *
 * World variant `dma-buf.pfn=rfc-get-pfn`. "[RFC PATCH 01/12] dma-buf:
 * Introduce dma_buf_get_pfn_unlocked() kAPI": a new exporter op
 * `get_pfn(attach, pgoff, &pfn, &max_order)` and an importer call that
 * takes the reservation lock around it. There is no `put_pfn`: the pfn is
 * the importer's as long as the attachment lives (static attachments are
 * pinned, dynamic importers must honour `move_notify`).
 *
 * {@linkcode dmaBufGetPfnUnlocked}:
 * - WARN + -EINVAL when the exporter has no `get_pfn`;
 * - -ENOENT when the exporter is dynamic but move notification is not
 *   built (get_pfn does not pin and there is no unpin);
 * - otherwise lock, `get_pfn`, unlock, and return its result (no fence
 *   wait: an "Open" of the RFC).
 * Export validation changes with this variant (see dma_buf.ts): map and
 * unmap both or neither, and `map_dma_buf` or `get_pfn` present;
 * `dma_buf_dynamic_attach` accepts a NULL device for pfn-only exporters and
 * the map calls WARN + -EINVAL on them.
 *
 * Without the variant (mainline) the call does not exist: -ENOSYS here.
 *
 * Locking: must be called WITHOUT the reservation lock (it takes it);
 * `get_pfn` runs with it held.
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import type { DmaBufAttachment } from "../buf/attachment.ts";
import { dmaBufMoveNotifyEnabled, dmaBufPfnVariant } from "../buf/dma_buf.ts";
import { dmaBufAssertResvNotHeld } from "../buf/locking.ts";

/** What `get_pfn` returns. */
export interface DmaBufPfn {
  /** The page frame number of `pgoff`. */
  readonly pfn: number;
  /** Largest order of a naturally aligned mapping starting there (0: 4 KiB only). */
  readonly maxOrder: number;
}

/**
 * `dma_buf_get_pfn_unlocked(attach, pgoff, &pfn, &max_order)`.
 *
 * @example
 * ```ts ignore
 * // KVM's fault path in the RFC (kvm_vfio_dmabuf_get_pfn):
 * const { pfn, maxOrder } = await dmaBufGetPfnUnlocked(attach, gfn - slot.baseGfn);
 * ```
 */
export async function dmaBufGetPfnUnlocked(
  attach: DmaBufAttachment,
  pgoff: number,
): Promise<DmaBufPfn> {
  const buf = attach.dmabuf;
  const world = buf.world;
  if (dmaBufPfnVariant(world) !== "rfc-get-pfn") {
    throw new KernelError(
      "ENOSYS",
      "dma_buf_get_pfn_unlocked: not in this kernel (world variant dma-buf.pfn=rfc-get-pfn)",
    );
  }
  if (!buf.ops.getPfn) {
    world.warnOn(true, `dma_buf_get_pfn_unlocked: ${buf.expName} has no get_pfn`);
    throw new KernelError("EINVAL", `dma_buf_get_pfn_unlocked: ${buf.expName} has no get_pfn`);
  }
  if (buf.isDynamic && !dmaBufMoveNotifyEnabled(world)) {
    throw new KernelError(
      "ENOENT",
      "dma_buf_get_pfn_unlocked: dynamic exporter without CONFIG_DMABUF_MOVE_NOTIFY",
    );
  }
  dmaBufAssertResvNotHeld(buf, "dma_buf_get_pfn_unlocked");
  await buf.resv.lock(null);
  try {
    return buf.ops.getPfn(attach, pgoff);
  } finally {
    buf.resv.unlock();
  }
}
