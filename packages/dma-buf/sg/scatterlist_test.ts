import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import { isErrno, Kernel, KernelBug, type Page } from "@dmalab/kernel";
import {
  dmaBufUnwrapSgTable,
  dmaBufWrapSgTable,
  IosysMap,
  Scatterlist,
  sgAllocTableFromPages,
  SgTable,
} from "../mod.ts";

function pagesOf(world: Kernel, head: Page, n: number): Page[] {
  return Array.from({ length: n }, (_, i) => world.mem.pfnToPage(head.pfn + i)!);
}

Deno.test("sg_alloc_table_from_pages_segment", async (t) => {
  await t.step("contiguous pages merge into one entry; a gap starts a new one", () => {
    const world = new Kernel();
    const a = pagesOf(world, world.mem.allocPages(2)!, 4);
    const b = pagesOf(world, world.mem.allocPages(1)!, 2);
    const sgt = sgAllocTableFromPages(world, [...a, ...b], 0, 6 * 4096);
    deepStrictEqual(
      sgt.sgl.map((s) => s.length),
      a[3]!.pfn + 1 === b[0]!.pfn ? [6 * 4096] : [4 * 4096, 2 * 4096],
    );
    strictEqual(sgt.cpuSize(), 6 * 4096);
  });
  await t.step(
    "max_segment splits runs (rounded down to a page); below a page is WARN + -EINVAL",
    () => {
      const world = new Kernel({ strict: false });
      const p = pagesOf(world, world.mem.allocPages(3)!, 8);
      deepStrictEqual(
        sgAllocTableFromPages(world, p, 0, 8 * 4096, 3 * 4096 + 100).sgl.map((s) => s.length),
        [12288, 12288, 8192],
      );
      throws(() => sgAllocTableFromPages(world, p, 0, 8 * 4096, 1000), (e) => isErrno(e, "EINVAL"));
      strictEqual(world.bugs.length, 1);
    },
  );
  await t.step("a first-page offset and a short tail", () => {
    const world = new Kernel();
    const p = pagesOf(world, world.mem.allocPages(1)!, 2);
    const sgt = sgAllocTableFromPages(world, p, 100, 5000);
    strictEqual(sgt.origNents, 1);
    strictEqual(sgt.sgl[0]!.offset, 100);
    strictEqual(sgt.sgl[0]!.length, 5000);
    strictEqual(sgt.sgl[0]!.phys(world), world.mem.pageToPhys(p[0]!) + 100n);
  });
});

Deno.test("dma_buf_wrap_sg_table", async (t) => {
  await t.step("the copy has the DMA side only; unwrap gives the original back", () => {
    const world = new Kernel();
    const page = world.mem.allocPages(0)!;
    const sg = new Scatterlist(page, 4096);
    sg.dmaAddress = 0x1000_0000n;
    sg.dmaLength = 4096;
    const orig = new SgTable([sg]);
    const w = dmaBufWrapSgTable(world, orig, "test");
    strictEqual(w.sgl[0]!.dmaAddress, 0x1000_0000n);
    strictEqual(w.sgl[0]!.length, 0);
    throws(() => w.sgl[0]!.page, (e) => e instanceof KernelBug && e.kind === "BUG");
    throws(() => (w.sgl[0]!.page = page), (e) => e instanceof KernelBug);
    strictEqual(dmaBufUnwrapSgTable(w), orig);
  });
});

Deno.test("iosys_map", async (t) => {
  await t.step(
    "system memory and I/O memory maps reach the world's bytes; null and out-of-range access",
    () => {
      const world = new Kernel({ strict: false });
      const mmio = world.mem.registerMmio({
        name: "bar",
        start: 0xf000_0000n,
        size: 0x10000n,
        owner: null,
      });
      const io = IosysMap.fromResolver(
        world,
        0x10000,
        true,
        (off) => ({ phys: BigInt(mmio.start) + BigInt(off), contiguous: 0x10000 - off }),
      );
      strictEqual(io.isIomem, true);
      io.memcpyTo(16, new Uint8Array([9, 8]));
      deepStrictEqual([...world.mem.read(0xf000_0010n, 2)], [9, 8]);
      const cleared = IosysMap.cleared();
      strictEqual(cleared.isNull(), true);
      throws(() => cleared.memcpyFrom(0, 1), (e) => isErrno(e, "EFAULT"));
      io.memcpyFrom(0x10000 - 1, 2);
      strictEqual(world.bugs.length, 1);
    },
  );
});
