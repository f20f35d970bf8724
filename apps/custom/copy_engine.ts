/**
 * DOC: a driver of your own: a dynamic dma-buf importer
 *
 * The smallest honest importer: a DMA copy engine bound to a PCI function.
 * It attaches dynamically (`dma_buf_dynamic_attach` with
 * `allow_peer2peer`), maps under the reservation lock, reads the buffer
 * by device DMA through the mapping, and implements `invalidate_mappings`
 * (`move_notify`): it drops its table at once, because the exporter is
 * about to move the memory, and maps again before the next DMA. Each DMA
 * first calls `attachment.checkAccess(sgt)`, so using a stale table would
 * be reported as the use-after-invalidate it is.
 *
 * Locking: `invalidate_mappings` runs with the reservation lock held (the
 * exporter took it), so it unmaps with the locked call; `read` takes the
 * lock itself around map and DMA.
 *
 * @module
 */
import { dmaBitMask } from "@dmalab/kernel";
import type { PciDev } from "@dmalab/pci-p2p";
import { deviceDmaRead } from "@dmalab/dma-api";
import {
  type DmaBuf,
  type DmaBufAttachment,
  dmaBufDynamicAttach,
  type SgTable,
} from "@dmalab/dma-buf";

/** A DMA copy engine importing one dma-buf. */
export class CopyEngine {
  /** The PCI function. */
  readonly pdev: PciDev;
  /** Its attachment, once attached. */
  attach: DmaBufAttachment | null = null;
  /** The current mapping (null after an invalidate). */
  sgt: SgTable | null = null;
  /** Invalidations received. */
  invalidations = 0;
  /** Mappings made. */
  maps = 0;

  /** A copy engine on `pdev`. */
  constructor(pdev: PciDev) {
    this.pdev = pdev;
    pdev.setMaskAndCoherent(dmaBitMask(64));
  }

  /** Attaches to `buf` as a dynamic, P2P-capable importer. */
  async import(buf: DmaBuf): Promise<void> {
    this.attach = await dmaBufDynamicAttach(buf, this.pdev, {
      allowPeer2peer: true,
      invalidateMappings: (a) => {
        this.invalidations++;
        if (this.sgt) {
          a.unmap(this.sgt, "DMA_FROM_DEVICE");
          this.sgt = null;
        }
      },
    }, this);
  }

  /** Reads `len` bytes of the buffer by DMA (mapping first when needed). */
  async read(len: number): Promise<Uint8Array> {
    const a = this.attach!;
    const buf = a.dmabuf;
    await buf.resv.lock(null);
    try {
      if (!this.sgt) {
        this.sgt = await a.map("DMA_FROM_DEVICE");
        this.maps++;
      }
      const sgt = this.sgt;
      a.checkAccess(sgt);
      const out = new Uint8Array(len);
      let off = 0;
      for (let i = 0; i < sgt.nents && off < len; i++) {
        const sg = sgt.sgl[i]!;
        const n = Math.min(sg.dmaLength, len - off);
        out.set(deviceDmaRead(this.pdev, sg.dmaAddress, n), off);
        off += n;
      }
      return out;
    } finally {
      buf.resv.unlock();
    }
  }

  /** Unmaps and detaches. */
  async release(): Promise<void> {
    const a = this.attach!;
    if (this.sgt) {
      await a.unmapUnlocked(this.sgt, "DMA_FROM_DEVICE");
      this.sgt = null;
    }
    await a.detach();
    this.attach = null;
  }
}
