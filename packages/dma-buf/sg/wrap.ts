/**
 * DOC: handing importers DMA addresses only
 *
 * `dma_buf_wrap_sg_table` / `dma_buf_unwrap_sg_table` (drivers/dma-buf/
 * dma-buf.c, CONFIG_DMABUF_DEBUG): after the exporter mapped, the core
 * gives the importer a copy of the table that carries only `dma_address`
 * and `dma_length` (no page, offset 0, length 0) and keeps the original to
 * hand back to `unmap_dma_buf`. An importer that reaches for the pages
 * behind an imported buffer (`sg_page`, `sg_phys`) dereferences NULL in the
 * kernel; here that is a BUG report naming the rule.
 *
 * World variant `CONFIG_DMABUF_DEBUG` ("y" by default, as with
 * CONFIG_DMA_API_DEBUG) turns the wrapping off when "n": the importer then
 * gets the exporter's table itself.
 *
 * Locking: called with the dma-buf's reservation lock held (from map/unmap).
 *
 * @module
 */
import type { Kernel, Page } from "@dmalab/kernel";
import { Scatterlist, SgTable } from "./scatterlist.ts";

/** An entry of a wrapped table: DMA side only; touching the CPU side is a bug. */
export class WrappedScatterlist extends Scatterlist {
  readonly #world: Kernel;
  readonly #what: string;

  /** Copies the DMA side of `src`. */
  constructor(world: Kernel, src: Scatterlist, what: string) {
    super(null, 0, 0);
    this.#world = world;
    this.#what = what;
    this.dmaAddress = src.dmaAddress;
    this.dmaLength = src.dmaLength;
  }

  /** `sg_page` on an imported table: the kernel's NULL dereference, reported as a BUG. */
  override get page(): Page | null {
    this.#world.bug(
      "BUG",
      `BUG: kernel NULL pointer dereference: importer called sg_page() on ${this.#what}`,
      `BUG: kernel NULL pointer dereference, address: 0000000000000000\n` +
        `importer touched the struct page behind ${this.#what}; dma-buf hands importers ` +
        `DMA addresses only (dma_buf_wrap_sg_table, CONFIG_DMABUF_DEBUG)`,
    );
    return null;
  }

  /** Writing the page of a wrapped entry is as wrong as reading it. */
  override set page(_p: Page | null) {
    void this.page;
  }

  /** `sg_phys` on an imported table: a BUG as for `page`. */
  override phys(_world: Kernel): bigint | null {
    void this.page;
    return null;
  }
}

/** A wrapped table: `original` goes back to the exporter at unmap. */
export class WrappedSgTable extends SgTable {
  /** The exporter's table. */
  readonly original: SgTable;

  /** Builds the DMA-only copy of `original`. */
  constructor(world: Kernel, original: SgTable, what: string) {
    const entries: Scatterlist[] = [];
    for (let i = 0; i < original.nents; i++) {
      entries.push(new WrappedScatterlist(world, original.sgl[i]!, what));
    }
    super(entries);
    this.original = original;
    this.origNents = entries.length;
  }
}

/** `dma_buf_wrap_sg_table`: the table the importer gets (a DMA-only copy with CONFIG_DMABUF_DEBUG). */
export function dmaBufWrapSgTable(world: Kernel, sgt: SgTable, what: string): SgTable {
  if (world.variant("CONFIG_DMABUF_DEBUG", "y") !== "y") return sgt;
  return new WrappedSgTable(world, sgt, what);
}

/** `dma_buf_unwrap_sg_table`: the exporter's table behind what the importer returned. */
export function dmaBufUnwrapSgTable(sgt: SgTable): SgTable {
  return sgt instanceof WrappedSgTable ? sgt.original : sgt;
}
