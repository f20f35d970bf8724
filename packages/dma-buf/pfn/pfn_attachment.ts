/**
 * DOC: variant 2 — a separate `dma_buf_pfn_attachment` (Simona Vetter, 2025-01)
 *
 * World variant `dma-buf.pfn=pfn-attachment`. The "5th access mechanism"
 * as proposed in the review of Xu's RFC, with the rules it asked to be
 * written down:
 * - no `struct device`: the importer is not a DMA master (KVM, iommufd);
 * - every range comes with its P2P source information (the provider that
 *   owns it, MMIO or not), so the importer can pick the mapping path
 *   (Gunthorpe: "PFN + P2P source information");
 * - `dma_resv` locking: ranges are handed out and given back under the
 *   reservation lock, and the exporter's invalidate runs under it;
 * - the memory model is explicit: the exporter declares `pinned`,
 *   `dynamic` or `revocable` (`ops.pfnMemoryModel`) and the importer lists
 *   the models it accepts, so e.g. a compositor refuses revocable buffers
 *   (-EOPNOTSUPP at attach). Dynamic and revocable importers must supply an
 *   invalidate callback; a pinned exporter that invalidates anyway is a
 *   WARN.
 *
 * Errors: without the variant -ENOSYS; an exporter without `pfn_map`
 * -EOPNOTSUPP; a model the importer refuses -EOPNOTSUPP; after a revoke the
 * exporter fails `pfn_map` with -ENODEV (revoke.ts).
 *
 * Locking: attach/detach WITHOUT the reservation lock; map/unmap WITH it;
 * invalidate callbacks run with it held.
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import { dmaBufRevokeState, dmaBufUnmapped } from "../buf/attachment.ts";
import { type DmaBuf, dmaBufPfnVariant } from "../buf/dma_buf.ts";
import { dmaBufAssertResvHeld, dmaBufAssertResvNotHeld } from "../buf/locking.ts";
import type {
  DmaBufPfnAttachment,
  DmaBufPfnAttachOps,
  DmaBufPfnRange,
  PfnMemoryModel,
} from "./types.ts";

/** A pfn attachment. */
export class DmaBufPfnAttach implements DmaBufPfnAttachment {
  /** The buffer. */
  readonly dmabuf: DmaBuf;
  /** The importer's ops. */
  readonly importerOps: DmaBufPfnAttachOps;
  /** The importer's data. */
  readonly importerPriv: unknown;
  /** Exporter data. */
  priv: unknown = null;
  /** The agreed memory model. */
  readonly model: PfnMemoryModel;
  /** Range lists handed out and not given back; `stale` once invalidated. */
  readonly outstanding: Map<DmaBufPfnRange[], { stale: boolean }> = new Map();
  /** True once detached. */
  detached = false;

  /** Use {@linkcode dmaBufPfnAttach}. */
  constructor(dmabuf: DmaBuf, ops: DmaBufPfnAttachOps, priv: unknown, model: PfnMemoryModel) {
    this.dmabuf = dmabuf;
    this.importerOps = ops;
    this.importerPriv = priv;
    this.model = model;
  }

  /** The ranges backing pages [pgoff, pgoff + npages); reservation lock held. */
  map(pgoff: number, npages: number): DmaBufPfnRange[] {
    const buf = this.dmabuf;
    dmaBufAssertResvHeld(buf, "dma_buf_pfn_map");
    if (this.detached) throw new KernelError("EINVAL", "dma_buf_pfn_map: detached");
    if (pgoff < 0 || npages <= 0 || pgoff + npages > Math.ceil(buf.size / 4096)) {
      throw new KernelError(
        "EINVAL",
        `dma_buf_pfn_map: pages [${pgoff}, ${pgoff + npages}) outside ${buf}`,
      );
    }
    const ranges = buf.ops.pfnMap!(this, pgoff, npages);
    this.outstanding.set(ranges, { stale: false });
    buf.outstandingMappings++;
    return ranges;
  }

  /** Gives ranges back; reservation lock held. */
  unmap(ranges: DmaBufPfnRange[]): void {
    const buf = this.dmabuf;
    dmaBufAssertResvHeld(buf, "dma_buf_pfn_unmap");
    if (!this.outstanding.delete(ranges)) {
      buf.world.bug(
        "WARN",
        "WARNING: dma_buf_pfn_unmap: ranges were not handed out by this attachment",
      );
      return;
    }
    buf.outstandingMappings--;
    buf.ops.pfnUnmap?.(this, ranges);
    dmaBufUnmapped(buf);
  }

  /** What a model importer calls before touching memory through `ranges` (see DmaBufAttachment.checkAccess). */
  checkAccess(ranges: DmaBufPfnRange[]): void {
    const world = this.dmabuf.world;
    const st = this.outstanding.get(ranges);
    if (!st) {
      world.bug(
        "invariant",
        `dma-buf pfn attachment: access through ranges not handed out (use after unmap)`,
      );
    } else if (st.stale) {
      world.bug(
        "invariant",
        `dma-buf pfn attachment: access through ranges invalidated by the exporter`,
      );
    } else if (dmaBufRevokeState(this.dmabuf) !== "ok") {
      world.bug("invariant", `dma-buf pfn attachment: access after revoke`);
    }
  }

  /** `dma_buf_pfn_detach`: without the lock; every range must have been given back. */
  async detach(): Promise<void> {
    const buf = this.dmabuf;
    dmaBufAssertResvNotHeld(buf, "dma_buf_pfn_detach");
    buf.world.warnOn(
      this.outstanding.size > 0,
      `dma_buf_pfn_detach: ${this.outstanding.size} range list(s) still mapped`,
    );
    await buf.resv.lock(null);
    const i = buf.pfnAttachments.indexOf(this);
    if (i >= 0) buf.pfnAttachments.splice(i, 1);
    buf.resv.unlock();
    this.detached = true;
    if (buf.ops.pfnDetach) await buf.ops.pfnDetach(buf, this);
  }
}

/**
 * `dma_buf_pfn_attach(dmabuf, importer_ops, importer_priv)`.
 *
 * @example
 * ```ts ignore
 * const pa = await dmaBufPfnAttach(buf, {
 *   acceptModels: ["pinned", "dynamic"], // refuse revocable
 *   invalidate: (pa) => zapSecondaryMmu(pa),
 * }, slot);
 * ```
 */
export async function dmaBufPfnAttach(
  dmabuf: DmaBuf,
  importerOps: DmaBufPfnAttachOps,
  importerPriv: unknown,
): Promise<DmaBufPfnAttach> {
  const world = dmabuf.world;
  if (dmaBufPfnVariant(world) !== "pfn-attachment") {
    throw new KernelError(
      "ENOSYS",
      "dma_buf_pfn_attach: not in this kernel (world variant dma-buf.pfn=pfn-attachment)",
    );
  }
  dmaBufAssertResvNotHeld(dmabuf, "dma_buf_pfn_attach");
  const model = dmabuf.ops.pfnMemoryModel;
  if (!dmabuf.ops.pfnMap || !model) {
    throw new KernelError(
      "EOPNOTSUPP",
      `dma_buf_pfn_attach: ${dmabuf.expName} offers no pfn access`,
    );
  }
  if (!importerOps.acceptModels.includes(model)) {
    throw new KernelError(
      "EOPNOTSUPP",
      `dma_buf_pfn_attach: importer refuses ${model} memory of ${dmabuf.expName}`,
    );
  }
  if (model !== "pinned" && typeof importerOps.invalidate !== "function") {
    world.warnOn(true, `dma_buf_pfn_attach: ${model} memory needs an invalidate callback`);
    throw new KernelError("EINVAL", "dma_buf_pfn_attach: no invalidate callback");
  }
  if (dmaBufRevokeState(dmabuf) !== "ok") {
    throw new KernelError("ENODEV", `dma_buf_pfn_attach: ${dmabuf} is revoked`);
  }
  const pa = new DmaBufPfnAttach(dmabuf, importerOps, importerPriv, model);
  if (dmabuf.ops.pfnAttach) await dmabuf.ops.pfnAttach(dmabuf, pa);
  await dmabuf.resv.lock(null);
  dmabuf.pfnAttachments.unshift(pa);
  dmabuf.resv.unlock();
  return pa;
}
