/**
 * DOC: the dma-buf locking convention, checked
 *
 * drivers/dma-buf/dma-buf.c "DOC: locking convention" (6.2+):
 * - importers MUST hold the buffer's reservation lock for `dma_buf_pin`,
 *   `dma_buf_unpin`, `dma_buf_map_attachment`, `dma_buf_unmap_attachment`,
 *   `dma_buf_vmap`, `dma_buf_vunmap` (the kernel's `dma_resv_assert_held`);
 * - importers MUST NOT hold it for `dma_buf_attach`,
 *   `dma_buf_dynamic_attach`, `dma_buf_detach`, `dma_buf_export`,
 *   `dma_buf_fd`, `dma_buf_get`, `dma_buf_put`, `dma_buf_mmap`,
 *   `dma_buf_begin_cpu_access`, `dma_buf_end_cpu_access` and the
 *   `_unlocked` variants (the kernel finds these through lockdep: the core
 *   takes the lock itself, or `might_lock`);
 * - exporters MUST hold it for `dma_buf_move_notify` /
 *   `dma_buf_invalidate_mappings`;
 * - exporter ops called locked (`pin`, `unpin`, `map_dma_buf`,
 *   `unmap_dma_buf`, `vmap`, `vunmap`) must not take it: a nested
 *   `dma_resv_lock` is lockdep's recursive-locking report.
 *
 * A violation is a `lockdep` report through `world.bug` naming the function
 * and the rule (a KernelBug in strict mode). The "must not hold" check is
 * made on the buffer's own reservation object: holding other objects of
 * the same ww class under an acquire context is legitimate.
 *
 * @module
 */
import type { DmaBuf } from "./dma_buf.ts";

/** `dma_resv_assert_held(dmabuf->resv)` at the entry of `fn`. */
export function dmaBufAssertResvHeld(dmabuf: DmaBuf, fn: string): void {
  if (dmabuf.resv.held()) return;
  const cur = dmabuf.world.sched.current;
  dmabuf.world.bug(
    "lockdep",
    `WARNING: ${fn}() called without the dma-buf reservation lock`,
    `WARNING: ${fn}: lockdep_assert_held(&dmabuf->resv->lock.base) failed\n` +
      `task ${
        cur ? `${cur.name}/${cur.pid}` : "<none>"
      } called ${fn}() on dmabuf ${dmabuf.inodeNumber} ` +
      `(${dmabuf.expName}) without holding its dma_resv lock\n` +
      `DOC: locking convention: ${fn} must be called with dma_resv_lock(dmabuf->resv) held`,
  );
}

/** The "must not hold" half of the convention at the entry of `fn`. */
export function dmaBufAssertResvNotHeld(dmabuf: DmaBuf, fn: string): void {
  if (!dmabuf.resv.held()) return;
  const cur = dmabuf.world.sched.current;
  dmabuf.world.bug(
    "lockdep",
    `WARNING: possible recursive locking detected: ${fn}() called with the dma-buf reservation lock held`,
    `WARNING: possible recursive locking detected\n` +
      `task ${cur ? `${cur.name}/${cur.pid}` : "<none>"} is trying to acquire lock ` +
      `${dmabuf.resv.lockObj.name} in ${fn}() but already holds it (dmabuf ${dmabuf.inodeNumber}, ` +
      `${dmabuf.expName})\n` +
      `DOC: locking convention: ${fn} must be called without dma_resv_lock(dmabuf->resv) held`,
  );
}
