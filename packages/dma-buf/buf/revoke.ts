/**
 * DOC: revoking a dma-buf (v7.1, "dma-buf: Use revoke mechanism to
 * invalidate shared buffers")
 *
 * Some exporters (vfio-pci BARs) must take memory away for good, not move
 * it: on device reset, memory disable or close. v7.1 documents the
 * exporter's sequence, which {@linkcode DmaBufRevocable.revoke} runs:
 *
 * 1. under the reservation lock, mark the buffer revoked (no new
 *    mappings: the exporter's `attach`/`map` now fail with -ENODEV,
 *    {@linkcode DmaBufRevocable.check});
 * 2. `dma_buf_invalidate_mappings()`: every revocable importer is told;
 * 3. `dma_resv_wait_timeout(resv, DMA_RESV_USAGE_BOOKKEEP, false,
 *    MAX_SCHEDULE_TIMEOUT)`: DMA already queued finishes;
 * 4. unlock;
 * 5. wait until every importer has unmapped (vfio: kref + completion). An
 *    importer still mapped after 1 s has a broken `invalidate_mappings`:
 *    WARN once, then keep waiting.
 *
 * Exporters that revoke accept only importers for which
 * `dma_buf_attach_revocable()` is true (refusing others with -EOPNOTSUPP);
 * pinned importers are fine as long as they are revocable. A temporary
 * revoke can be undone ({@linkcode DmaBufRevocable.unrevoke}, vfio after
 * reset with memory enabled); a permanent one (device close) cannot.
 *
 * Locking: `revoke` must be called without the reservation lock (it takes
 * it); `check` is called by the exporter's ops with whatever they hold.
 *
 * @module
 */
import { KernelError, MAX_SCHEDULE_TIMEOUT, WaitQueueHead } from "@dmalab/kernel";
import { DmaResvUsage } from "../resv/dma_resv.ts";
import {
  dmaBufInvalidateMappings,
  dmaBufRevokeState,
  revokeStates,
  unmapWaiters,
} from "./attachment.ts";
import type { DmaBuf } from "./dma_buf.ts";
import { dmaBufAssertResvHeld, dmaBufAssertResvNotHeld } from "./locking.ts";

/** How long revoke waits for importers before it WARNs (1 s, as vfio does). */
export const DMA_BUF_REVOKE_WARN_MS = 1000;

/**
 * Revocation state and sequence for one exported buffer.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaBufExport, DmaBufRevocable, SgTable } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * let revoker: DmaBufRevocable;
 * const ops = {
 *   mapDmaBuf: () => { revoker.check("map"); return new SgTable([]); },
 *   unmapDmaBuf: () => {},
 *   release: () => {},
 * };
 * const buf = dmaBufExport(world, { expName: "bar", ops, size: 4096, priv: {} });
 * revoker = new DmaBufRevocable(buf);
 * await world.runTask("reset", () => revoker.revoke());
 * revoker.state; // "revoked"
 * buf.put();
 * ```
 */
export class DmaBufRevocable {
  /** The buffer. */
  readonly dmabuf: DmaBuf;
  /** Waiters for the last unmap. */
  readonly #wq: WaitQueueHead;
  /** Revokes that had to WARN about an importer that did not unmap in time. */
  slowImporterWarnings = 0;

  /** Starts in state "ok". */
  constructor(dmabuf: DmaBuf) {
    this.dmabuf = dmabuf;
    this.#wq = new WaitQueueHead(dmabuf.world.sched, `dmabuf ${dmabuf.inodeNumber} revoke`);
    unmapWaiters.set(dmabuf, () => this.#wq.wakeUpAll());
  }

  /** "ok", "revoked" (temporary) or "revoked-permanent". */
  get state(): "ok" | "revoked" | "revoked-permanent" {
    return dmaBufRevokeState(this.dmabuf);
  }

  /** For exporter ops: -ENODEV once revoked. */
  check(fn: string): void {
    if (this.state !== "ok") {
      throw new KernelError("ENODEV", `${this.dmabuf}: ${fn} on a revoked buffer`);
    }
  }

  /** The revoke sequence (see the module doc). `permanent` for device close. */
  async revoke(permanent = false): Promise<void> {
    const buf = this.dmabuf;
    const world = buf.world;
    dmaBufAssertResvNotHeld(buf, "dma_buf revoke");
    await buf.resv.lock(null);
    try {
      const was = this.state;
      revokeStates.set(
        buf,
        permanent || was === "revoked-permanent" ? "revoked-permanent" : "revoked",
      );
      if (was === "ok") {
        dmaBufInvalidateMappings(buf);
        await buf.resv.waitTimeout(DmaResvUsage.BOOKKEEP, false, MAX_SCHEDULE_TIMEOUT);
      }
    } finally {
      buf.resv.unlock();
    }
    world.trace.event("dma_buf_revoke", { ino: buf.inodeNumber, permanent: permanent ? 1 : 0 });
    const left = await this.#wq.waitEventTimeout(
      () => buf.outstandingMappings === 0,
      world.sched.msecsToJiffies(DMA_BUF_REVOKE_WARN_MS),
    );
    if (left === 0 && buf.outstandingMappings !== 0) {
      this.slowImporterWarnings++;
      world.bug(
        "WARN",
        `WARNING: ${buf}: importer has a broken invalidate_mapping(): ${buf.outstandingMappings} mapping(s) left 1 s after revoke`,
      );
      await this.#wq.waitEvent(() => buf.outstandingMappings === 0);
    }
  }

  /**
   * Undoes a temporary revoke (vfio: memory enabled again after reset).
   * The caller holds the reservation lock; a permanent revoke stays.
   */
  unrevoke(): void {
    dmaBufAssertResvHeld(this.dmabuf, "dma_buf unrevoke");
    if (this.state === "revoked-permanent") {
      throw new KernelError("ENODEV", `${this.dmabuf}: permanently revoked`);
    }
    revokeStates.set(this.dmabuf, "ok");
  }
}
