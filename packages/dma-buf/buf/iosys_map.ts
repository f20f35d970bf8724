/**
 * DOC: iosys_map
 *
 * `struct iosys_map` (include/linux/iosys-map.h): a kernel mapping that is
 * either system memory (`vaddr`) or I/O memory (`vaddr_iomem`, accessed
 * with readl/writel-style helpers). Here a mapping carries a fake kernel
 * virtual address (from the vmalloc or ioremap range) and resolves offsets
 * to physical addresses, so reads and writes reach the world's memory.
 *
 * Locking: none; the dma-buf vmap counter is protected by the reservation
 * lock (see cpu_access.ts).
 *
 * @module
 */
import { type Kernel, KernelError } from "@dmalab/kernel";

/** Resolves a byte offset of the mapping to a physical address and the bytes contiguous from there. */
export type IosysResolve = (offset: number) => { phys: bigint; contiguous: number };

const VMALLOC_START = 0xffff_c900_0000_0000n;

class VaAllocator {
  next = VMALLOC_START;
}

/**
 * `struct iosys_map`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { IosysMap } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const page = world.mem.allocPages(0)!;
 * const base = world.mem.pageToPhys(page);
 * const map = IosysMap.fromResolver(world, 4096, false, (off) => ({ phys: base + BigInt(off), contiguous: 4096 - off }));
 * map.memcpyTo(8, new Uint8Array([1, 2]));
 * world.mem.readU8(base + 9n); // 2
 * ```
 */
export class IosysMap {
  /** `is_iomem`. */
  readonly isIomem: boolean;
  /** `vaddr` / `vaddr_iomem` as a kernel virtual address (0n for a cleared map). */
  readonly vaddr: bigint;
  /** Mapped length in bytes. */
  readonly size: number;
  readonly #world: Kernel | null;
  readonly #resolve: IosysResolve | null;

  private constructor(
    world: Kernel | null,
    vaddr: bigint,
    size: number,
    isIomem: boolean,
    resolve: IosysResolve | null,
  ) {
    this.#world = world;
    this.vaddr = vaddr;
    this.size = size;
    this.isIomem = isIomem;
    this.#resolve = resolve;
  }

  /** `iosys_map_clear`: the null map. */
  static cleared(): IosysMap {
    return new IosysMap(null, 0n, 0, false, null);
  }

  /**
   * A mapping of `size` bytes (`vmap` / `ioremap` result) whose bytes are
   * found through `resolve`; `isIomem` selects `iosys_map_set_vaddr_iomem`.
   */
  static fromResolver(
    world: Kernel,
    size: number,
    isIomem: boolean,
    resolve: IosysResolve,
  ): IosysMap {
    const va = world.ext("dma-buf.vmalloc", () => new VaAllocator());
    const vaddr = va.next;
    va.next += BigInt(Math.ceil(size / 4096) * 4096 + 4096); // guard page
    return new IosysMap(world, vaddr, size, isIomem, resolve);
  }

  /** `iosys_map_is_null`. */
  isNull(): boolean {
    return this.vaddr === 0n;
  }

  /** `iosys_map_is_equal`. */
  isEqual(other: IosysMap): boolean {
    return this.isIomem === other.isIomem && this.vaddr === other.vaddr;
  }

  #walk(offset: number, len: number, fn: (phys: bigint, at: number, n: number) => void): void {
    if (this.isNull() || !this.#resolve || !this.#world) {
      throw new KernelError("EFAULT", "iosys_map: access through a null mapping");
    }
    if (offset < 0 || offset + len > this.size) {
      this.#world.bug(
        "BUG",
        `BUG: unable to handle page fault: iosys_map access [${offset}, ${
          offset + len
        }) beyond ${this.size} bytes`,
      );
      return;
    }
    let done = 0;
    while (done < len) {
      const { phys, contiguous } = this.#resolve(offset + done);
      const n = Math.min(len - done, contiguous);
      fn(phys, done, n);
      done += n;
    }
  }

  /** `iosys_map_memcpy_to(dst, offset, src, len)`. */
  memcpyTo(offset: number, src: Uint8Array): void {
    const mem = this.#world?.mem;
    this.#walk(offset, src.length, (phys, at, n) => mem!.write(phys, src.subarray(at, at + n)));
  }

  /** `iosys_map_memcpy_from(dst, src, offset, len)`. */
  memcpyFrom(offset: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const mem = this.#world?.mem;
    this.#walk(offset, len, (phys, at, n) => mem!.readInto(phys, out.subarray(at, at + n)));
    return out;
  }

  /** `iosys_map_memset(dst, offset, value, len)`. */
  memset(offset: number, value: number, len: number): void {
    const mem = this.#world?.mem;
    this.#walk(offset, len, (phys, _at, n) => mem!.fill(phys, n, value));
  }
}
