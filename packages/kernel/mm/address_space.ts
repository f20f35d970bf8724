/**
 * DOC: address_space and files
 *
 * `struct address_space` keeps `i_mmap`, the VMAs that map the file (an
 * interval tree in the kernel; a set here, walked in link order), so
 * `unmap_mapping_range` can find and zap every user mapping of a file range:
 * that is how a driver revokes CPU access to memory it is about to move or
 * take away (dma-buf move, vfio-pci memory disable).
 *
 * {@linkcode VmFile} is the part of `struct file` that mmap needs: the
 * mapping, `f_op->mmap`, the FMODE_WRITE bit, and the file reference a VMA
 * holds (`get_file` when a VMA is created or split, `fput` when one goes).
 *
 * Locking: `i_mmap_rwsem` is taken for write while VMAs are linked or
 * unlinked (under mmap_lock), and for read by `unmap_mapping_range`, which
 * may sleep (it runs the mmu notifiers as a blockable invalidation).
 *
 * @module
 */
import type { Kernel } from "../world.ts";
import type { RwSemaphore } from "../locking/rwsem.ts";
import { newIMmapRwsem } from "./locks.ts";
import type { Vma } from "./vma.ts";

/** The part of `struct file` mmap uses. */
export interface VmFile {
  /** `f_mapping`. */
  readonly mapping: AddressSpace;
  /** Name for reports. */
  readonly name?: string;
  /** `f_mode & FMODE_WRITE` (default true). */
  readonly writable?: boolean;
  /** `f_op->mmap`: sets vm_ops / flags, may call `remap_pfn_range`; throw a KernelError to fail. */
  mmap?(vma: Vma): void | Promise<void>;
  /** `get_file`. */
  get?(): void;
  /** `fput`. */
  put?(): void;
}

/**
 * `struct address_space`.
 *
 * @example
 * ```ts
 * import { AddressSpace, Kernel } from "@dmalab/kernel";
 * const world = new Kernel();
 * const mapping = new AddressSpace(world, "dmabuf:1");
 * mapping.mapped; // false: no VMA maps it yet
 * ```
 */
export class AddressSpace {
  /** Name (the inode it belongs to). */
  readonly name: string;
  /** `i_mmap_rwsem`. */
  readonly iMmapRwsem: RwSemaphore;
  /** The owner (`host` inode / object). */
  host: unknown = null;
  readonly #iMmap = new Set<Vma>();
  readonly #world: Kernel;

  /** `address_space_init_once`. */
  constructor(world: Kernel, name = "mapping") {
    this.#world = world;
    this.name = name;
    this.iMmapRwsem = newIMmapRwsem(world, "&mapping->i_mmap_rwsem");
  }

  /** The world. */
  get world(): Kernel {
    return this.#world;
  }

  /** `mapping_mapped`: some VMA maps this file. */
  get mapped(): boolean {
    return this.#iMmap.size > 0;
  }

  /** VMAs mapping the file, in link order. */
  get vmas(): readonly Vma[] {
    return [...this.#iMmap];
  }

  /**
   * `vma_interval_tree_foreach(vma, &mapping->i_mmap, first, last)`: VMAs
   * whose file pages overlap [first, last] (inclusive page indexes).
   */
  vmasOverlapping(first: number, last: number): Vma[] {
    const out: Vma[] = [];
    for (const v of this.#iMmap) {
      const vFirst = v.vmPgoff;
      const vLast = v.vmPgoff + v.pages - 1;
      if (vFirst <= last && first <= vLast) out.push(v);
    }
    return out;
  }

  /** @internal `vma_interval_tree_insert` (i_mmap_rwsem held for write). */
  link(vma: Vma): void {
    this.#iMmap.add(vma);
  }

  /** @internal `vma_interval_tree_remove` (i_mmap_rwsem held for write). */
  unlink(vma: Vma): void {
    this.#iMmap.delete(vma);
  }

  /**
   * `unmap_mapping_range(mapping, holebegin, holelen, even_cows)`: zaps
   * every user PTE that maps bytes [holebegin, holebegin+holelen) of the
   * file (holelen 0: to the end of the file). With `evenCows` false, private
   * COW copies survive, as for truncation. Runs the mmu notifiers of each mm
   * (event `clear`, blockable). Sleeps.
   */
  async unmapMappingRange(holebegin: number, holelen: number, evenCows = false): Promise<void> {
    const hba = Math.floor(holebegin / 4096);
    let hlen = Math.ceil(holelen / 4096);
    if (hlen === 0 || hba + hlen > Number.MAX_SAFE_INTEGER) hlen = Number.MAX_SAFE_INTEGER - hba;
    await this.unmapMappingPages(hba, hlen, evenCows);
  }

  /** `unmap_mapping_pages(mapping, start, nr, even_cows)`: page-index form. */
  async unmapMappingPages(start: number, nr: number, evenCows = false): Promise<void> {
    const first = start;
    const last = start + nr - 1;
    await this.iMmapRwsem.downRead();
    try {
      for (const vma of this.vmasOverlapping(first, last)) {
        const vbaIndex = vma.vmPgoff;
        const zapStartIdx = Math.max(first, vbaIndex);
        const zapEndIdx = Math.min(last + 1, vbaIndex + vma.pages);
        const zs = vma.vmStart + (zapStartIdx - vbaIndex) * 4096;
        const ze = vma.vmStart + (zapEndIdx - vbaIndex) * 4096;
        await vma.mm.zapVmaRange(vma, zs, ze, { event: "clear", skipCows: !evenCows });
      }
    } finally {
      this.iMmapRwsem.upRead();
    }
  }
}
