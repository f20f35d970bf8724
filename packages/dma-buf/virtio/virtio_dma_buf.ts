/**
 * DOC: virtio_dma_buf (drivers/virtio/virtio_dma_buf.c, include/linux/virtio_dma_buf.h)
 *
 * The "driver-private" access mechanism: one virtio driver asks a dma-buf
 * exported by another virtio driver for the UUID of the host-side object
 * (virtio-gpu buffers consumed by virtio-video). The exporter's ops table
 * embeds the ordinary `dma_buf_ops` and adds `device_attach` and
 * `get_uuid`; its `attach` must be {@linkcode virtioDmaBufAttach}, and a
 * buffer is recognised by that function's identity (`is_virtio_dma_buf`).
 *
 * - {@linkcode virtioDmaBufExport}: -EINVAL unless `ops.attach` is
 *   `virtio_dma_buf_attach` and `get_uuid` is set; then `dma_buf_export`.
 * - {@linkcode virtioDmaBufAttach}: the mandatory attach op; runs the
 *   exporter's `device_attach` when present (its error aborts the attach).
 * - {@linkcode virtioDmaBufGetUuid}: -EINVAL for a buffer that is not
 *   virtio, else the exporter's `get_uuid` (which may sleep, e.g. until the
 *   host assigned the UUID, and fail with -ENODEV).
 *
 * Locking: `attach` runs unlocked (dma-buf convention); `get_uuid` takes
 * no dma-buf lock.
 *
 * @module
 */
import { type Kernel, KernelError } from "@dmalab/kernel";
import type { DmaBufAttachment } from "../buf/attachment.ts";
import { type DmaBuf, dmaBufExport } from "../buf/dma_buf.ts";
import type { DmaBufExportInfo, DmaBufOps } from "../buf/ops.ts";

/** A 16-byte `uuid_t`. */
export type Uuid = Uint8Array;

/** `struct virtio_dma_buf_ops`: the dma-buf ops plus the virtio members. */
export interface VirtioDmaBufOps extends DmaBufOps {
  /** `device_attach(dmabuf, attach)`: the exporter's own attach step (optional). */
  deviceAttach?(dmabuf: DmaBuf, attach: DmaBufAttachment): void | Promise<void>;
  /** `get_uuid(dmabuf)`: the host object's UUID (mandatory). */
  getUuid?(dmabuf: DmaBuf): Uuid | Promise<Uuid>;
}

/**
 * `virtio_dma_buf_attach(dmabuf, attach)`: the `attach` op every virtio
 * dma-buf exporter must use.
 */
export async function virtioDmaBufAttach(dmabuf: DmaBuf, attach: DmaBufAttachment): Promise<void> {
  const ops = dmabuf.ops as VirtioDmaBufOps;
  if (ops.deviceAttach) await ops.deviceAttach(dmabuf, attach);
}

/**
 * `virtio_dma_buf_export(exp_info)`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { isVirtioDmaBuf, SgTable, virtioDmaBufAttach, virtioDmaBufExport, virtioDmaBufGetUuid } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const uuid = new Uint8Array(16).fill(7);
 * const buf = virtioDmaBufExport(world, {
 *   expName: "virtio-gpu",
 *   size: 4096,
 *   priv: {},
 *   ops: {
 *     attach: virtioDmaBufAttach,
 *     getUuid: () => uuid,
 *     mapDmaBuf: () => new SgTable([]),
 *     unmapDmaBuf: () => {},
 *     release: () => {},
 *   },
 * });
 * isVirtioDmaBuf(buf); // true
 * (await virtioDmaBufGetUuid(buf))[0]; // 7
 * ```
 */
export function virtioDmaBufExport(
  world: Kernel,
  info: DmaBufExportInfo & { ops: VirtioDmaBufOps },
): DmaBuf {
  const ops = info.ops;
  if (!ops || ops.attach !== virtioDmaBufAttach || !ops.getUuid) {
    throw new KernelError(
      "EINVAL",
      "virtio_dma_buf_export: ops must use virtio_dma_buf_attach and provide get_uuid",
    );
  }
  return dmaBufExport(world, info);
}

/** `is_virtio_dma_buf(dmabuf)`: identified by the attach op's identity. */
export function isVirtioDmaBuf(dmabuf: DmaBuf): boolean {
  return dmabuf.ops.attach === virtioDmaBufAttach;
}

/** `virtio_dma_buf_get_uuid(dmabuf, uuid)`: -EINVAL for a non-virtio buffer. */
export async function virtioDmaBufGetUuid(dmabuf: DmaBuf): Promise<Uuid> {
  if (!isVirtioDmaBuf(dmabuf)) {
    throw new KernelError("EINVAL", `virtio_dma_buf_get_uuid: ${dmabuf} is not a virtio dma-buf`);
  }
  const ops = dmabuf.ops as VirtioDmaBufOps;
  return await ops.getUuid!(dmabuf);
}
