/**
 * DOC: IOMMU_IOAS_MAP_FILE for memfd, and device DMA through an iommufd domain
 *
 * `IOMMU_IOAS_MAP_FILE` maps a slice `[start, start+length)` of a file into
 * an IOAS. For a memfd (shmem or hugetlbfs) the folios are pinned with
 * `memfd_pin_folios()` and charged like user memory (pages.c
 * `pfn_reader_user_pin` with `IOPT_ADDRESS_FILE`); a hugetlbfs memfd gives
 * 2 MiB contiguous runs, so the domain can use 2 MiB IOPTEs. Files that
 * are neither a memfd nor a dma-buf are -EINVAL. The dma-buf case lives
 * in dmabuf.ts.
 *
 * {@linkcode deviceDmaRead} / {@linkcode deviceDmaWrite} are what a device
 * does when it masters a read or write: each page is translated by the
 * IOMMU (`iommuTranslate`, which raises an IOMMU fault for a missing or
 * read-only entry) and the bytes move to or from the physical address,
 * RAM or a peer's BAR alike.
 *
 * Locking: pinning is synchronous; DMA helpers are synchronous (one step).
 *
 * @module
 */
import { type File, isMemfdFile, KernelError, memfdFile, type Page } from "@dmalab/kernel";
import type { Device } from "@dmalab/kernel";
import { iommuTranslate } from "@dmalab/iommu";
import type { IoptPagesSource } from "./io_pagetable.ts";

const PAGE = 4096;

/** The pages source of a memfd (`IOPT_ADDRESS_FILE`). */
export function memfdSource(file: File, writable: boolean): IoptPagesSource {
  if (!isMemfdFile(file)) {
    throw new KernelError(
      "EINVAL",
      `IOMMU_IOAS_MAP_FILE: ${file.path} is not a memfd (iopt_map_file_pages)`,
    );
  }
  const mf = memfdFile(file);
  return {
    type: "memfd",
    length: file.inode.size,
    startOffset: 0,
    writable,
    pin(off, len) {
      const { folios, offset } = mf.pinFolios(off, off + len - 1);
      const runs: { phys: number; length: number }[] = [];
      let remaining = len;
      let charge = 0;
      folios.forEach((f: Page, i: number) => {
        const size = mf.inode.folioSize;
        const start = i === 0 ? offset : 0;
        const n = Math.min(size - start, remaining);
        const phys = f.pfn * PAGE + start;
        const prev = runs[runs.length - 1];
        if (prev && prev.phys + prev.length === phys) prev.length += n;
        else runs.push({ phys, length: n });
        remaining -= n;
        charge += size / PAGE;
      });
      return Promise.resolve({
        runs,
        charge,
        unpin: () => folios.forEach((f: Page) => mf.unpinFolio(f)),
      });
    },
  };
}

/** A device reads `len` bytes at `iova` through its IOMMU domain (throws IommuFaultError). */
export function deviceDmaRead(dev: Device, iova: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let done = 0;
  while (done < len) {
    const t = iommuTranslate(dev, iova + done, false);
    const n = Math.min(len - done, t.span, PAGE - ((iova + done) % PAGE));
    dev.world.mem.readInto(t.phys, out.subarray(done, done + n));
    done += n;
  }
  return out;
}

/** A device writes `data` at `iova` through its IOMMU domain (throws IommuFaultError). */
export function deviceDmaWrite(dev: Device, iova: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) {
    const t = iommuTranslate(dev, iova + done, true);
    const n = Math.min(data.length - done, t.span, PAGE - ((iova + done) % PAGE));
    dev.world.mem.write(t.phys, data.subarray(done, done + n));
    done += n;
  }
}
