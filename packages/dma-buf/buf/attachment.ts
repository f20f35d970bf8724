/**
 * DOC: attachments — attach, detach, pin, map, unmap, invalidate
 *
 * `struct dma_buf_attachment` and the importer-facing calls of
 * drivers/dma-buf/dma-buf.c (NEW semantics: no sg-table caching).
 *
 * - {@linkcode dmaBufDynamicAttach}: WARN + -EINVAL without a device (the
 *   get_pfn RFC and PAL allow none when the exporter has no `mapDmaBuf`),
 *   and in 6.19 when importer ops lack `move_notify`. The exporter's
 *   `attach` runs unlocked; the attachment is then added at the head of the
 *   list under the reservation lock. `peer2peer` is the importer's
 *   `allowPeer2peer` (false for static importers).
 * - pin/unpin (locked): a WARN for static importers, which pin implicitly.
 * - map (locked): pin_on_map = exporter `pin` && (static importer || move
 *   notify not built); a NULL table is -ENOMEM; static importers wait for
 *   the KERNEL fences interruptibly (a signal unmaps, unpins and returns
 *   -ERESTARTSYS); the importer gets the DMA-only copy (wrap.ts).
 * - unmap (locked, `might_sleep`): unwrap, exporter `unmapDmaBuf`, unpin if
 *   pinned on map.
 * - {@linkcode dmaBufInvalidateMappings} (= `dma_buf_move_notify`): the
 *   exporter holds the lock; every attachment with an invalidate callback
 *   hears about it (static importers are pinned instead).
 *
 * Bookkeeping the kernel does not keep, for checkers: the tables handed out
 * per attachment, which of them were invalidated (stale), exporter pins.
 * {@linkcode DmaBufAttachment.checkAccess} is what a model importer calls
 * before using a mapping for DMA: using a stale or foreign table, or one of
 * a revoked buffer, is reported as the use-after-invalidate it is; so is a
 * dynamic importer's DMA while a KERNEL fence is still pending (the core
 * waited for those only for static importers, inside map).
 *
 * Locking: as the DOC comment in locking.ts; `attach`, `detach`, the
 * `_unlocked` calls must not hold the lock, the others must.
 *
 * @module
 */
import { type Device, KernelError, MAX_SCHEDULE_TIMEOUT } from "@dmalab/kernel";
import { DmaResvUsage } from "../resv/dma_resv.ts";
import type { DmaDataDirection, SgTable } from "../sg/scatterlist.ts";
import { dmaBufUnwrapSgTable, dmaBufWrapSgTable } from "../sg/wrap.ts";
import {
  type DmaBuf,
  dmaBufMoveNotifyEnabled,
  dmaBufPfnVariant,
  dmaBufVersion,
  importerInvalidate,
} from "./dma_buf.ts";
import { dmaBufAssertResvHeld, dmaBufAssertResvNotHeld } from "./locking.ts";
import type { DmaBufAttachOps } from "./ops.ts";

/** What the core remembers about a table it handed out. */
export interface DmaBufMappingInfo {
  /** Direction it was mapped with. */
  readonly dir: DmaDataDirection;
  /** True once `invalidate_mappings` ran after the map (the importer must re-map). */
  stale: boolean;
  /** True when the core pinned for this map (pin_on_map). */
  readonly pinned: boolean;
}

/** `struct dma_buf_attachment`. */
export class DmaBufAttachment {
  /** `dmabuf`. */
  readonly dmabuf: DmaBuf;
  /** `dev` (null only under the get_pfn RFC / PAL importers). */
  readonly dev: Device | null;
  /** `peer2peer`. */
  readonly peer2peer: boolean;
  /** `importer_ops` (null: static importer). */
  readonly importerOps: DmaBufAttachOps | null;
  /** `importer_priv`. */
  readonly importerPriv: unknown;
  /** `priv`: exporter data. */
  priv: unknown = null;
  /** Importer module name (restricted exports like PAL check it). */
  readonly importerModule: string;
  /** Tables handed to the importer and not yet unmapped. */
  readonly mappings: Map<SgTable, DmaBufMappingInfo> = new Map();
  /** PAL mappings outstanding (pfn/pal.ts). */
  physMappings = 0;
  /** Explicit `dma_buf_pin` calls not yet unpinned. */
  pinCount = 0;
  /** Calls of the exporter's `pin` not yet matched by `unpin` (explicit and implicit). */
  exporterPins = 0;
  /** Invalidations delivered to this attachment. */
  invalidations = 0;
  /** True once detached. */
  detached = false;
  /** World-unique id. */
  readonly id: number;

  /** Use {@linkcode dmaBufDynamicAttach}. */
  constructor(
    dmabuf: DmaBuf,
    dev: Device | null,
    importerOps: DmaBufAttachOps | null,
    importerPriv: unknown,
    importerModule: string,
  ) {
    this.dmabuf = dmabuf;
    this.dev = dev;
    this.importerOps = importerOps;
    this.importerPriv = importerPriv;
    this.peer2peer = importerOps?.allowPeer2peer ?? false;
    this.importerModule = importerModule;
    this.id = dmabuf.world.nextId();
  }

  /** `dma_buf_attachment_is_dynamic`: the importer gave ops. */
  get isDynamic(): boolean {
    return this.importerOps !== null;
  }

  /** `dma_buf_pin_on_map`: the core pins around each map for this attachment. */
  get pinOnMap(): boolean {
    return !!this.dmabuf.ops.pin &&
      (!this.isDynamic || !dmaBufMoveNotifyEnabled(this.dmabuf.world));
  }

  /** `dma_buf_detach(attach->dmabuf, attach)`. */
  detach(): Promise<void> {
    return dmaBufDetach(this.dmabuf, this);
  }

  /** Name for reports. */
  toString(): string {
    return `attachment ${this.id} (${this.dev?.name ?? "<no device>"}) of ${this.dmabuf}`;
  }

  /**
   * `dma_buf_pin(attach)`: resv held; a WARN for static importers; calls
   * the exporter's `pin` if it has one.
   */
  async pin(): Promise<void> {
    const buf = this.dmabuf;
    buf.world.warnOn(!this.isDynamic, `dma_buf_pin: ${this} is not a dynamic attachment`);
    dmaBufAssertResvHeld(buf, "dma_buf_pin");
    if (buf.ops.pin) {
      await buf.ops.pin(this);
      this.exporterPins++;
    }
    this.pinCount++;
  }

  /** `dma_buf_unpin(attach)`: resv held; a WARN for static importers. */
  unpin(): void {
    const buf = this.dmabuf;
    buf.world.warnOn(!this.isDynamic, `dma_buf_unpin: ${this} is not a dynamic attachment`);
    dmaBufAssertResvHeld(buf, "dma_buf_unpin");
    if (this.pinCount <= 0) {
      buf.world.bug("WARN", `WARNING: dma_buf_unpin: ${this} unpinned more often than pinned`);
      return;
    }
    if (buf.ops.unpin) {
      buf.ops.unpin(this);
      this.exporterPins--;
    }
    this.pinCount--;
  }

  /**
   * `dma_buf_map_attachment(attach, dir)`: resv held. Returns the table the
   * importer may use (DMA addresses only).
   */
  async map(dir: DmaDataDirection): Promise<SgTable> {
    const buf = this.dmabuf;
    const world = buf.world;
    world.sched.mightSleep("dma_buf_map_attachment");
    if (this.detached) {
      world.warnOn(true, `dma_buf_map_attachment: ${this} is detached`);
      throw new KernelError("EINVAL", "dma_buf_map_attachment: detached attachment");
    }
    dmaBufAssertResvHeld(buf, "dma_buf_map_attachment");
    if (!buf.ops.mapDmaBuf || !buf.ops.unmapDmaBuf) {
      world.warnOn(true, `dma_buf_map_attachment: exporter ${buf.expName} has no map_dma_buf`);
      throw new KernelError("EINVAL", `dma_buf_map_attachment: ${buf.expName} has no map_dma_buf`);
    }
    const pinned = this.pinOnMap;
    if (pinned) {
      try {
        await buf.ops.pin!(this);
      } catch (e) {
        if (e instanceof KernelError && e.code === "EBUSY") {
          world.bug("WARN", `WARNING: dma_buf_map_attachment: ${buf.expName} pin returned -EBUSY`);
        }
        throw e;
      }
      this.exporterPins++;
    }
    let sgt: SgTable | null;
    try {
      sgt = await buf.ops.mapDmaBuf(this, dir);
    } catch (e) {
      if (pinned) this.#implicitUnpin();
      throw e;
    }
    if (sgt === null) {
      if (pinned) this.#implicitUnpin();
      throw new KernelError(
        "ENOMEM",
        `dma_buf_map_attachment: ${buf.expName} map_dma_buf returned NULL`,
      );
    }
    if (!this.isDynamic) {
      const ret = await buf.resv.waitTimeout(DmaResvUsage.KERNEL, true, MAX_SCHEDULE_TIMEOUT);
      if (ret < 0) {
        buf.ops.unmapDmaBuf(this, sgt, dir);
        if (pinned) this.#implicitUnpin();
        throw new KernelError(
          "ERESTARTSYS",
          "dma_buf_map_attachment: interrupted waiting for KERNEL fences",
        );
      }
    }
    const wrapped = dmaBufWrapSgTable(world, sgt, `${this}`);
    this.mappings.set(wrapped, { dir, stale: false, pinned });
    buf.outstandingMappings++;
    if (world.variant("CONFIG_DMA_API_DEBUG", "y") === "y") {
      for (let i = 0; i < sgt.nents; i++) {
        const sg = sgt.sgl[i]!;
        if (sg.dmaAddress % 4096n !== 0n || sg.dmaLength % 4096 !== 0) {
          world.dmesg.printk("debug", `dma-buf: ${buf.expName}: mapping not page aligned`);
          break;
        }
      }
    }
    world.trace.event("dma_buf_map_attachment", {
      exp_name: buf.expName,
      ino: buf.inodeNumber,
      nents: sgt.nents,
    });
    return wrapped;
  }

  #implicitUnpin(): void {
    this.dmabuf.ops.unpin!(this);
    this.exporterPins--;
  }

  /** `dma_buf_map_attachment_unlocked`: takes and drops the lock around {@linkcode DmaBufAttachment.map}. */
  async mapUnlocked(dir: DmaDataDirection): Promise<SgTable> {
    const buf = this.dmabuf;
    dmaBufAssertResvNotHeld(buf, "dma_buf_map_attachment_unlocked");
    await buf.resv.lock(null);
    try {
      return await this.map(dir);
    } finally {
      buf.resv.unlock();
    }
  }

  /** `dma_buf_unmap_attachment(attach, sgt, dir)`: resv held. */
  unmap(sgt: SgTable, dir: DmaDataDirection): void {
    const buf = this.dmabuf;
    buf.world.sched.mightSleep("dma_buf_unmap_attachment");
    dmaBufAssertResvHeld(buf, "dma_buf_unmap_attachment");
    const info = this.mappings.get(sgt);
    if (!info) {
      buf.world.bug(
        "WARN",
        `WARNING: dma_buf_unmap_attachment: ${this}: table was not mapped through this attachment`,
      );
      return;
    }
    if (info.dir !== dir) {
      buf.world.bug(
        "dma-api-debug",
        `DMA-API: ${buf.expName}: dma_buf_unmap_attachment with direction ${dir}, mapped ${info.dir}`,
      );
    }
    this.mappings.delete(sgt);
    buf.outstandingMappings--;
    buf.ops.unmapDmaBuf!(this, dmaBufUnwrapSgTable(sgt), dir);
    if (info.pinned) this.#implicitUnpin();
    buf.world.trace.event("dma_buf_unmap_attachment", {
      exp_name: buf.expName,
      ino: buf.inodeNumber,
    });
    dmaBufUnmapped(buf);
  }

  /** `dma_buf_unmap_attachment_unlocked`. */
  async unmapUnlocked(sgt: SgTable, dir: DmaDataDirection): Promise<void> {
    const buf = this.dmabuf;
    dmaBufAssertResvNotHeld(buf, "dma_buf_unmap_attachment_unlocked");
    await buf.resv.lock(null);
    try {
      this.unmap(sgt, dir);
    } finally {
      buf.resv.unlock();
    }
  }

  /**
   * The check a model importer makes before DMA through `sgt`: a table not
   * (or no longer) mapped through this attachment, one invalidated since it
   * was mapped, or any access to a revoked buffer is reported as
   * `invariant` (the kernel would see IOMMU faults / AER or silent
   * corruption).
   */
  checkAccess(sgt: SgTable): void {
    const buf = this.dmabuf;
    const info = this.mappings.get(sgt);
    if (!info) {
      buf.world.bug(
        "invariant",
        `dma-buf: ${this}: DMA through a table that is not mapped (use after unmap)`,
      );
      return;
    }
    if (info.stale) {
      buf.world.bug(
        "invariant",
        `dma-buf: ${this}: DMA through a mapping invalidated by ${
          dmaBufVersion(buf.world) === "7.1" ? "invalidate_mappings" : "move_notify"
        } (must re-map)`,
      );
      return;
    }
    if (dmaBufRevokeState(buf) !== "ok") {
      buf.world.bug("invariant", `dma-buf: ${this}: DMA after the buffer was revoked`);
      return;
    }
    if (this.isDynamic && !buf.resv.testSignaled(DmaResvUsage.KERNEL)) {
      buf.world.bug(
        "invariant",
        `dma-buf: ${this}: DMA while a KERNEL fence (move/clear) is pending: dynamic importers must wait for it`,
      );
    }
  }
}

/** Revocation state an exporter published (revoke.ts), "ok" when none. */
export function dmaBufRevokeState(buf: DmaBuf): "ok" | "revoked" | "revoked-permanent" {
  return revokeStates.get(buf) ?? "ok";
}

/** @internal state written by revoke.ts. */
export const revokeStates: WeakMap<DmaBuf, "ok" | "revoked" | "revoked-permanent"> = new WeakMap();

/** @internal wakes revokers waiting for unmaps (set by revoke.ts). */
export const unmapWaiters: WeakMap<DmaBuf, () => void> = new WeakMap();

/** Called whenever a mapping of `buf` goes away. */
export function dmaBufUnmapped(buf: DmaBuf): void {
  unmapWaiters.get(buf)?.();
}

/** Options for {@linkcode dmaBufDynamicAttach}. */
export interface DmaBufAttachOptions {
  /** Importer module (for restricted exports such as PAL, "iommufd"). Default "kernel". */
  importerModule?: string;
}

/**
 * `dma_buf_dynamic_attach(dmabuf, dev, importer_ops, importer_priv)`.
 * Must be called without the reservation lock.
 *
 * @example
 * ```ts
 * import { Device, Kernel } from "@dmalab/kernel";
 * import { dmaBufDynamicAttach, dmaHeapSystemAlloc } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const dev = new Device(world, "gpu0", { dmaMask: (1n << 64n) - 1n });
 * await world.runTask("importer", async () => {
 *   const buf = dmaHeapSystemAlloc(world, 1 << 20);
 *   const attach = await dmaBufDynamicAttach(buf, dev, {
 *     allowPeer2peer: true,
 *     invalidateMappings: () => {}, // a real importer drops its mappings here
 *   }, null);
 *   await buf.resv.lock(null);
 *   const sgt = await attach.map("DMA_BIDIRECTIONAL");
 *   attach.checkAccess(sgt); // fine: current mapping
 *   attach.unmap(sgt, "DMA_BIDIRECTIONAL");
 *   buf.resv.unlock();
 *   await attach.detach();
 *   buf.put();
 * });
 * ```
 */
export async function dmaBufDynamicAttach(
  dmabuf: DmaBuf,
  dev: Device | null,
  importerOps: DmaBufAttachOps | null,
  importerPriv: unknown,
  options: DmaBufAttachOptions = {},
): Promise<DmaBufAttachment> {
  const world = dmabuf.world;
  const variant = dmaBufPfnVariant(world);
  // the get_pfn RFC accepts no device when the exporter cannot map an sg_table; PAL
  // importers (mapping-types RFC) never have one
  const devOptional = (variant === "rfc-get-pfn" && !dmabuf.ops.mapDmaBuf) || variant === "pal";
  if (!dev && !devOptional) {
    world.warnOn(true, "dma_buf_dynamic_attach: dev is NULL");
    throw new KernelError("EINVAL", "dma_buf_dynamic_attach: no device");
  }
  if (
    importerOps && dmaBufVersion(world) === "6.19" && !importerOps.moveNotify &&
    !importerOps.invalidateMappings
  ) {
    world.warnOn(true, "dma_buf_dynamic_attach: importer_ops without move_notify");
    throw new KernelError("EINVAL", "dma_buf_dynamic_attach: importer_ops->move_notify is NULL");
  }
  dmaBufAssertResvNotHeld(dmabuf, importerOps ? "dma_buf_dynamic_attach" : "dma_buf_attach");
  if (dmabuf.released) {
    world.bug("refcount", `dma_buf_dynamic_attach: ${dmabuf} used after release`);
    throw new KernelError("EINVAL", "dma_buf_dynamic_attach: released buffer");
  }
  const attach = new DmaBufAttachment(
    dmabuf,
    dev,
    importerOps,
    importerPriv,
    options.importerModule ?? "kernel",
  );
  if (dmabuf.ops.attach) await dmabuf.ops.attach(dmabuf, attach);
  await dmabuf.resv.lock(null);
  dmabuf.attachments.unshift(attach);
  dmabuf.resv.unlock();
  world.trace.event("dma_buf_dynamic_attach", {
    exp_name: dmabuf.expName,
    ino: dmabuf.inodeNumber,
    is_dynamic: attach.isDynamic ? 1 : 0,
    dev_name: dev?.name ?? "(null)",
  });
  return attach;
}

/** `dma_buf_attach(dmabuf, dev)`: a static importer. */
export function dmaBufAttach(
  dmabuf: DmaBuf,
  dev: Device | null,
  options: DmaBufAttachOptions = {},
): Promise<DmaBufAttachment> {
  return dmaBufDynamicAttach(dmabuf, dev, null, null, options);
}

/**
 * `dma_buf_detach(dmabuf, attach)`: WARN for a foreign attachment; removes
 * it under the lock, then the exporter's `detach` runs unlocked. The
 * importer must have unmapped and unpinned everything: the kernel leaks
 * silently, the model reports an `invariant` bug.
 */
export async function dmaBufDetach(dmabuf: DmaBuf, attach: DmaBufAttachment): Promise<void> {
  const world = dmabuf.world;
  if (attach.dmabuf !== dmabuf || attach.detached) {
    world.warnOn(true, `dma_buf_detach: ${attach} does not belong to ${dmabuf}`);
    return;
  }
  dmaBufAssertResvNotHeld(dmabuf, "dma_buf_detach");
  if (attach.mappings.size > 0 || attach.physMappings > 0 || attach.pinCount > 0) {
    // the kernel does not track this (the mappings simply leak, DMA-API debug reports them when
    // the device goes away); the model reports the broken rule at once
    world.bug(
      "invariant",
      `dma_buf_detach: ${attach} still has ${
        attach.mappings.size + attach.physMappings
      } mapping(s) and ${attach.pinCount} pin(s)`,
    );
  }
  await dmabuf.resv.lock(null);
  const i = dmabuf.attachments.indexOf(attach);
  if (i >= 0) dmabuf.attachments.splice(i, 1);
  dmabuf.resv.unlock();
  attach.detached = true;
  if (dmabuf.ops.detach) await dmabuf.ops.detach(dmabuf, attach);
  world.trace.event("dma_buf_detach", { exp_name: dmabuf.expName, ino: dmabuf.inodeNumber });
}

/**
 * `dma_buf_invalidate_mappings(dmabuf)` (v7.1; `dma_buf_move_notify`
 * before): the exporter holds the lock; every attachment with an
 * invalidate callback is told; its outstanding mappings become stale.
 */
export function dmaBufInvalidateMappings(dmabuf: DmaBuf): void {
  const name = dmaBufVersion(dmabuf.world) === "7.1"
    ? "dma_buf_invalidate_mappings"
    : "dma_buf_move_notify";
  dmaBufAssertResvHeld(dmabuf, name);
  for (const a of [...dmabuf.attachments]) {
    const cb = importerInvalidate(a.importerOps);
    if (!cb) continue;
    for (const info of a.mappings.values()) info.stale = true;
    a.invalidations++;
    cb(a);
  }
  for (const pa of [...dmabuf.pfnAttachments]) {
    if (pa.model === "pinned") {
      dmabuf.world.bug(
        "WARN",
        `WARNING: ${name}: ${dmabuf} invalidates a pfn attachment it promised to keep pinned`,
      );
      continue;
    }
    const outstanding = (pa as { outstanding?: Map<unknown, { stale: boolean }> }).outstanding;
    if (outstanding) { for (const st of outstanding.values()) st.stale = true; }
    pa.importerOps.invalidate(pa);
  }
  dmabuf.world.trace.event("dma_buf_invalidate_mappings", {
    exp_name: dmabuf.expName,
    ino: dmabuf.inodeNumber,
  });
}

/** `dma_buf_move_notify`: the pre-7.1 name of {@linkcode dmaBufInvalidateMappings}. */
export function dmaBufMoveNotify(dmabuf: DmaBuf): void {
  dmaBufInvalidateMappings(dmabuf);
}

/**
 * `dma_buf_attach_revocable(attach)` (v7.1): the importer has ops with an
 * invalidate callback, so it can give the memory back in bounded time.
 * Exporters that revoke call it in `attach` and refuse others with
 * -EOPNOTSUPP.
 */
export function dmaBufAttachRevocable(attach: DmaBufAttachment): boolean {
  return importerInvalidate(attach.importerOps) !== null;
}
