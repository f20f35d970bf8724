/**
 * DOC: CPU access — vmap, begin/end_cpu_access, mmap
 *
 * drivers/dma-buf/dma-buf.c:
 * - `dma_buf_vmap` (resv held): -EINVAL without `ops.vmap`; nested calls
 *   share one mapping (`vmapping_counter`), the exporter's `vmap` runs on
 *   0→1 only (an error there is a WARN_ON_ONCE and is returned);
 *   `dma_buf_vunmap` BUGs on a count of 0 or a map that is not the cached
 *   one and calls the exporter's `vunmap` on 1→0. The `_unlocked`
 *   variants take the lock themselves.
 * - `dma_buf_begin_cpu_access` (must not hold the lock, `might_lock`):
 *   the exporter's hook, then an interruptible wait for the implicit
 *   fences a CPU access in `dir` must respect (`dma_resv_usage_rw(write)`);
 *   `dma_buf_end_cpu_access` only calls the hook.
 * - `dma_buf_mmap` (kernel API): -EINVAL without `ops.mmap`, -EOVERFLOW
 *   when `pgoff + pages` wraps, -EINVAL past the end; then the VMA is
 *   pointed at the dma-buf file with `vm_pgoff = pgoff`.
 *
 * @module
 */
import { KernelError, MAX_SCHEDULE_TIMEOUT } from "@dmalab/kernel";
import { dmaResvUsageRw } from "../resv/dma_resv.ts";
import type { DmaDataDirection } from "../sg/scatterlist.ts";
import type { DmaBuf } from "./dma_buf.ts";
import type { IosysMap } from "./iosys_map.ts";
import { dmaBufAssertResvHeld, dmaBufAssertResvNotHeld } from "./locking.ts";
import type { DmaBufVma } from "./ops.ts";

/** `dma_buf_vmap(dmabuf, map)`: resv held. */
export async function dmaBufVmap(dmabuf: DmaBuf): Promise<IosysMap> {
  dmaBufAssertResvHeld(dmabuf, "dma_buf_vmap");
  if (!dmabuf.ops.vmap) {
    throw new KernelError("EINVAL", `dma_buf_vmap: ${dmabuf.expName} has no vmap`);
  }
  if (dmabuf.vmappingCounter) {
    dmabuf.vmappingCounter++;
    return dmabuf.vmapPtr!;
  }
  let map: IosysMap;
  try {
    map = await dmabuf.ops.vmap(dmabuf);
  } catch (e) {
    // WARN_ON_ONCE(ret): an errno from the exporter is a WARN splat, then returned
    // unchanged (a bug report already raised inside the exporter passes through)
    if (e instanceof KernelError) {
      dmabuf.world.bug(
        "WARN",
        `WARNING: dma_buf_vmap: ${dmabuf.expName} vmap failed: ${e.message}`,
      );
    }
    throw e;
  }
  dmabuf.vmapPtr = map;
  dmabuf.vmappingCounter = 1;
  return map;
}

/** `dma_buf_vmap_unlocked`. */
export async function dmaBufVmapUnlocked(dmabuf: DmaBuf): Promise<IosysMap> {
  dmaBufAssertResvNotHeld(dmabuf, "dma_buf_vmap_unlocked");
  await dmabuf.resv.lock(null);
  try {
    return await dmaBufVmap(dmabuf);
  } finally {
    dmabuf.resv.unlock();
  }
}

/** `dma_buf_vunmap(dmabuf, map)`: resv held. */
export function dmaBufVunmap(dmabuf: DmaBuf, map: IosysMap): void {
  dmaBufAssertResvHeld(dmabuf, "dma_buf_vunmap");
  if (!dmabuf.vmapPtr || dmabuf.vmappingCounter === 0 || !dmabuf.vmapPtr.isEqual(map)) {
    dmabuf.world.bug(
      "BUG",
      `kernel BUG at drivers/dma-buf/dma-buf.c: dma_buf_vunmap: ${dmabuf} ${
        dmabuf.vmappingCounter === 0 ? "is not vmapped" : "map is not the cached vmap_ptr"
      }`,
    );
    return;
  }
  if (--dmabuf.vmappingCounter === 0) {
    dmabuf.ops.vunmap?.(dmabuf, map);
    dmabuf.vmapPtr = null;
  }
}

/** `dma_buf_vunmap_unlocked`. */
export async function dmaBufVunmapUnlocked(dmabuf: DmaBuf, map: IosysMap): Promise<void> {
  dmaBufAssertResvNotHeld(dmabuf, "dma_buf_vunmap_unlocked");
  await dmabuf.resv.lock(null);
  try {
    dmaBufVunmap(dmabuf, map);
  } finally {
    dmabuf.resv.unlock();
  }
}

/**
 * `dma_buf_begin_cpu_access(dmabuf, dir)`: returns 0 or throws (the
 * exporter's error, or -ERESTARTSYS when a signal interrupts the fence wait).
 */
export async function dmaBufBeginCpuAccess(dmabuf: DmaBuf, dir: DmaDataDirection): Promise<number> {
  dmaBufAssertResvNotHeld(dmabuf, "dma_buf_begin_cpu_access");
  dmabuf.resv.lockObj.depMap.mightLock();
  dmabuf.world.trace.event("dma_buf_begin_cpu_access", {
    exp_name: dmabuf.expName,
    ino: dmabuf.inodeNumber,
  });
  if (dmabuf.ops.beginCpuAccess) await dmabuf.ops.beginCpuAccess(dmabuf, dir);
  const write = dir === "DMA_BIDIRECTIONAL" || dir === "DMA_TO_DEVICE";
  const ret = await dmabuf.resv.waitTimeout(dmaResvUsageRw(write), true, MAX_SCHEDULE_TIMEOUT);
  if (ret < 0) {
    throw new KernelError(
      "ERESTARTSYS",
      "dma_buf_begin_cpu_access: interrupted waiting for fences",
    );
  }
  return 0;
}

/** `dma_buf_end_cpu_access(dmabuf, dir)`: the exporter's hook or 0. */
export async function dmaBufEndCpuAccess(dmabuf: DmaBuf, dir: DmaDataDirection): Promise<number> {
  dmaBufAssertResvNotHeld(dmabuf, "dma_buf_end_cpu_access");
  dmabuf.resv.lockObj.depMap.mightLock();
  dmabuf.world.trace.event("dma_buf_end_cpu_access", {
    exp_name: dmabuf.expName,
    ino: dmabuf.inodeNumber,
  });
  if (dmabuf.ops.endCpuAccess) await dmabuf.ops.endCpuAccess(dmabuf, dir);
  return 0;
}

/** `dma_buf_mmap(dmabuf, vma, pgoff)`: kernel users mapping a dma-buf into a VMA of their own file. */
export async function dmaBufMmap(dmabuf: DmaBuf, vma: DmaBufVma, pgoff: number): Promise<void> {
  dmaBufAssertResvNotHeld(dmabuf, "dma_buf_mmap");
  if (!dmabuf.ops.mmap) {
    throw new KernelError("EINVAL", `dma_buf_mmap: ${dmabuf.expName} has no mmap`);
  }
  const pages = Math.ceil((vma.vmEnd - vma.vmStart) / 4096);
  const ULONG = 2 ** 64;
  if (pgoff + pages >= ULONG || pgoff + pages < pgoff) {
    throw new KernelError("EOVERFLOW", "dma_buf_mmap: pgoff + pages overflows");
  }
  if (pgoff + pages > Math.floor(dmabuf.size / 4096)) {
    throw new KernelError(
      "EINVAL",
      `dma_buf_mmap: pages [${pgoff}, ${pgoff + pages}) beyond the buffer`,
    );
  }
  // vma_set_file: the VMA now holds a reference on the dma-buf file instead
  const old = vma.vmFile;
  const vf = dmabuf.file.asVmFile();
  vf.get?.();
  vma.vmFile = vf;
  old?.put?.();
  vma.vmPgoff = pgoff;
  dmabuf.world.trace.event("dma_buf_mmap", { exp_name: dmabuf.expName, ino: dmabuf.inodeNumber });
  await dmabuf.ops.mmap(dmabuf, vma);
}
