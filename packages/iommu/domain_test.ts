import { ok, strictEqual, throws } from "node:assert/strict";
import { isErrno, Kernel } from "@dmalab/kernel";
import { IommuDomain } from "./domain.ts";
import { FlushQueue } from "./flush_queue.ts";
import { IommuIotlbGather } from "./gather.ts";
import { IOMMU_READ, IOMMU_WRITE } from "./prot.ts";
import { ptPagePool } from "./pt_pages.ts";

const RW = IOMMU_READ | IOMMU_WRITE;

Deno.test("iommu_map / iommu_unmap core rules", async (t) => {
  await t.step("non-paging domains refuse maps; unaligned requests are -EINVAL with dmesg", () => {
    const w = new Kernel();
    throws(() => new IommuDomain(w, "identity").map(0, 0, 4096, RW), (e) => isErrno(e, "EINVAL"));
    strictEqual(new IommuDomain(w, "blocked").unmap(0, 4096), 0);
    const d = new IommuDomain(w, "unmanaged");
    throws(() => d.map(0x800, 0, 4096, RW), (e) => isErrno(e, "EINVAL"));
    ok(w.dmesg.includes("unaligned: iova 0x800 pa 0x0 size 0x1000 min_pagesz 0x1000"));
    strictEqual(d.unmap(0x800, 4096), 0);
  });

  await t.step("-EADDRINUSE unrolls the part already mapped", () => {
    const w = new Kernel();
    const d = new IommuDomain(w, "unmanaged");
    d.map(0x5000, 0x9_0000_5000, 0x1000, RW);
    throws(() => d.map(0x1000, 0x8_0000_1000, 0x8000, RW), (e) => isErrno(e, "EADDRINUSE"));
    strictEqual(d.iovaToPhys(0x1000), 0, "the first pages were unmapped again");
    strictEqual(d.iovaToPhys(0x5000), 0x9_0000_5000, "the old mapping is intact");
    strictEqual(d.pgtable!.countLeaves(), 1);
  });

  await t.step("prot without READ or WRITE is a WARN", () => {
    const w = new Kernel({ strict: false });
    const d = new IommuDomain(w, "unmanaged");
    throws(() => d.map(0, 0, 4096, 0), (e) => isErrno(e, "EINVAL"));
    strictEqual(w.bugs.length, 1);
  });

  await t.step(
    "a large leaf replaces an empty lower table; its page is freed via the gather",
    () => {
      const w = new Kernel();
      const pool = ptPagePool(w);
      const d = new IommuDomain(w, "unmanaged");
      d.map(0x20_0000, 0x4000_1000, 0x1000, RW); // 4 KiB leaf: a leaf table below the 2 MiB slot
      d.unmap(0x20_0000, 0x1000); // leaves the (empty) table in place
      const before = pool.inUse;
      d.map(0x20_0000, 0x4000_0000, 0x20_0000, RW); // 2 MiB leaf over it
      strictEqual(pool.inUse, before - 1);
      strictEqual(d.stats.iotlbSyncs, 2, "map_pages synced its own gather");
    },
  );

  await t.step("FLUSH_RANGE_NO_GAPS syncs before gathering a disjoint range", () => {
    const w = new Kernel();
    const d = new IommuDomain(w, "unmanaged", { pgtable: { flush: "range-no-gaps" } });
    d.map(0, 0x1_0000_0000, 0x10_0000, RW);
    const g = new IommuIotlbGather();
    d.unmapFast(0, 0x1000, g);
    d.unmapFast(0x1000, 0x1000, g); // adjacent: merged
    strictEqual(d.stats.iotlbSyncs, 0);
    d.unmapFast(0x8000, 0x1000, g); // disjoint: sync first
    strictEqual(d.stats.iotlbSyncs, 1);
    strictEqual(g.start, 0x8000);
    strictEqual(g.end, 0x8fff);
  });
});

Deno.test("flush queue: a full ring forces a flush", () => {
  const w = new Kernel();
  const d = new IommuDomain(w, "dma-fq");
  const fq = new FlushQueue(d, { size: 4 });
  let released = 0;
  for (let i = 0; i < 4; i++) fq.queue(() => released++, new IommuIotlbGather());
  strictEqual(released, 0);
  fq.queue(() => released++, new IommuIotlbGather());
  strictEqual(fq.stats.fullFlushes, 1);
  strictEqual(released, 4, "entries queued before the flush are released");
  strictEqual(fq.pending, 1);
  fq.destroy();
  strictEqual(released, 5);
});
