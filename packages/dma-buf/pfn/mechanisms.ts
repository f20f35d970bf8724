/**
 * DOC: which access mechanisms an exporter supports
 *
 * The five ways to get at a dma-buf's memory (Vetter's list in the get_pfn
 * thread): kernel `vmap`, userspace `mmap`, `dma_buf_attach` (sg_table of
 * DMA addresses), driver-private protocols (virtio_dma_buf's UUID), and the
 * fifth, pfn access, in the three modelled proposals. This reads them off
 * the exporter's ops, so each exporter states what it supports by what it
 * implements; the calls for the others fail as the kernel (or the RFC)
 * says: `dma_buf_vmap` -EINVAL, mmap -EINVAL, map WARN + -EINVAL (pfn-only
 * exporters), `virtio_dma_buf_get_uuid` -EINVAL, `dma_buf_get_pfn_unlocked`
 * WARN + -EINVAL, `dma_buf_pfn_attach` -EOPNOTSUPP, PAL match -EOPNOTSUPP.
 *
 * Locking: reads the ops table only.
 *
 * @module
 */
import type { DmaBuf } from "../buf/dma_buf.ts";
import { isVirtioDmaBuf } from "../virtio/virtio_dma_buf.ts";
import { dmaBufExporterMappingTypes } from "./pal.ts";

/** One access mechanism. */
export type DmaBufMechanism =
  | "vmap"
  | "mmap"
  | "attach-sgt"
  | "virtio-uuid"
  | "get-pfn"
  | "pfn-attachment"
  | "pal";

/**
 * The mechanisms `dmabuf`'s exporter implements.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaBufMechanisms, dmaHeapSystemAlloc } from "@dmalab/dma-buf";
 * const buf = dmaHeapSystemAlloc(new Kernel(), 4096);
 * dmaBufMechanisms(buf); // ["vmap", "mmap", "attach-sgt"]
 * ```
 */
export function dmaBufMechanisms(dmabuf: DmaBuf): DmaBufMechanism[] {
  const ops = dmabuf.ops;
  const out: DmaBufMechanism[] = [];
  if (ops.vmap) out.push("vmap");
  if (ops.mmap) out.push("mmap");
  if (ops.mapDmaBuf) out.push("attach-sgt");
  if (isVirtioDmaBuf(dmabuf)) out.push("virtio-uuid");
  if (ops.getPfn) out.push("get-pfn");
  if (ops.pfnMap) out.push("pfn-attachment");
  if (dmaBufExporterMappingTypes(dmabuf).includes("PAL") && ops.mapPhys) out.push("pal");
  return out;
}
