/**
 * DOC: /sys/kernel/debug/dma_buf/bufinfo
 *
 * `dma_buf_debug_show` (drivers/dma-buf/dma-buf.c): a header, then per
 * buffer (newest first, the order of `dmabuf_list`) one line with size,
 * f_flags, f_mode, file count, exporter name, inode number and name, the
 * reservation object's fences up to READ (`dma_resv_describe`), the
 * attached devices, and a per-buffer count; a grand total at the end.
 *
 * Locking: takes each buffer's reservation lock (interruptibly: a signal
 * makes the read fail with -ERESTARTSYS, which the kernel turns into a
 * restart or -EINTR), so it must not be called with one held.
 *
 * @module
 */
import { type Kernel, KernelError } from "@dmalab/kernel";
import { dmaBufCore, dmaBufFmode } from "./dma_buf.ts";

function pad(n: number, width = 8): string {
  return String(n).padStart(width, "0");
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

/**
 * The text of `bufinfo`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaBufBufinfo, dmaHeapSystemAlloc } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const text = await world.runTask("cat", async () => {
 *   const buf = dmaHeapSystemAlloc(world, 8192);
 *   const out = await dmaBufBufinfo(world);
 *   buf.put();
 *   return out;
 * });
 * text.includes("00008192\t00000002\t00080007\t00000001\tsystem\t00000001\t<none>"); // true
 * ```
 */
export async function dmaBufBufinfo(world: Kernel): Promise<string> {
  let s = "\nDma-buf Objects:\n";
  s += `${"size".padEnd(8)}\t${"flags".padEnd(8)}\t${"mode".padEnd(8)}\t${
    "count".padEnd(8)
  }\texp_name\t${"ino".padEnd(8)}\tname\n`;
  let count = 0;
  let size = 0;
  for (const buf of [...dmaBufCore(world).list]) {
    const r = await buf.resv.lockInterruptible(null);
    if (r) throw new KernelError("ERESTARTSYS", "bufinfo: interrupted taking a dma_resv lock");
    try {
      s += `${pad(buf.size)}\t${hex8(buf.file.flags)}\t${hex8(dmaBufFmode(buf.file))}\t${
        pad(buf.file.count)
      }\t${buf.expName}\t${pad(buf.inodeNumber)}\t${buf.name ?? "<none>"}\n`;
      s += buf.resv.describe();
      s += "\tAttached Devices:\n";
      for (const a of buf.attachments) s += `\t${a.dev?.name ?? "(null)"}\n`;
      s += `Total ${buf.attachments.length} devices attached\n\n`;
    } finally {
      buf.resv.unlock();
    }
    count++;
    size += buf.size;
  }
  s += `\nTotal ${count} objects, ${size} bytes\n`;
  return s;
}
