import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { KernelBug, KernelError } from "../errors.ts";
import { Kernel } from "../world.ts";
import { e820Layout, formatE820 } from "./e820.ts";
import { GUP_PIN_COUNTING_BIAS } from "./page.ts";
import { PAGE_SIZE } from "./sparse_store.ts";

const GiB = 1n << 30n;
const TiB = 1n << 40n;

function errno(fn: () => unknown, code: string): KernelError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  ok(caught instanceof KernelError, `expected KernelError ${code}, got ${caught}`);
  strictEqual(caught.code, code);
  return caught;
}

Deno.test("e820 layout", async (t) => {
  await t.step("two nodes around the 32-bit PCI hole", () => {
    const l = e820Layout({ nodes: [4n * GiB, 4n * GiB] });
    deepStrictEqual(l.ram.map((r) => [r.start, r.end, r.nid]), [
      [0n, 0xa0000n, 0],
      [0x100000n, 3n * GiB, 0],
      [4n * GiB, 4n * GiB + GiB + 0x60000n, 0],
      [4n * GiB + GiB + 0x60000n, 9n * GiB + 0x60000n, 1],
    ]);
    const text = formatE820(l.entries);
    ok(text.includes("BIOS-e820: [mem 0x00000000000a0000-0x00000000000fffff] reserved"));
    ok(text.includes("BIOS-e820: [mem 0x00000000c0000000-0x00000000ffffffff] reserved"));
  });
});

Deno.test("physical memory: RAM bytes are sparse and real", async (t) => {
  await t.step("untouched RAM reads zeros and costs no backing", () => {
    const w = new Kernel({ memory: { nodes: [TiB] } });
    deepStrictEqual([...w.mem.read(TiB - 8n, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
    strictEqual(w.mem.touchedRamPages, 0);
    w.mem.fill(8n * GiB, 3 * PAGE_SIZE, 0);
    strictEqual(w.mem.touchedRamPages, 0);
  });
  await t.step("writes spanning pages read back; u32/u64 little endian", () => {
    const w = new Kernel();
    const data = Uint8Array.from({ length: 10_000 }, (_, i) => i & 0xff);
    w.mem.write(0x10_0ff0n, data);
    deepStrictEqual(w.mem.read(0x10_0ff0n, 10_000), data);
    strictEqual(w.mem.touchedRamPages, 4);
    w.mem.writeU32(0x20_0000n, 0xdeadbeef);
    strictEqual(w.mem.readU32(0x20_0000n), 0xdeadbeef);
    strictEqual(w.mem.readU8(0x20_0000n), 0xef);
    w.mem.writeU64(0x20_0008n, 0x0123_4567_89ab_cdefn);
    strictEqual(w.mem.readU64(0x20_0008n), 0x0123_4567_89ab_cdefn);
    w.mem.copy(0x30_0000n, 0x20_0000n, 16);
    strictEqual(w.mem.readU32(0x30_0000n), 0xdeadbeef);
  });
  await t.step("/proc/iomem and /proc/buddyinfo", () => {
    const w = new Kernel({ memory: { nodes: [GiB] } });
    w.mem.registerMmio({ name: "0000:01:00.0", start: 0xe000_0000n, size: 0x100_0000n });
    w.mem.memremapPages({ type: "pci_p2pdma", start: 0xe080_0000n, size: 0x10_0000n });
    strictEqual(
      w.mem.iomem(),
      [
        "00000000-0009ffff : System RAM",
        "00100000-4005ffff : System RAM",
        "e0000000-e0ffffff : 0000:01:00.0",
        "  e0800000-e08fffff : pci_p2pdma",
      ].join("\n"),
    );
    w.mem.allocPages(0, { zone: "DMA" });
    ok(w.mem.buddyinfo().startsWith("Node 0, zone      DMA      1      1"), w.mem.buddyinfo());
  });
  await t.step("region_intersects for System RAM", () => {
    const w = new Kernel({ memory: { nodes: [GiB] } });
    strictEqual(w.mem.regionIntersectsRam(0x1000n, 0x1000n), "intersects");
    strictEqual(w.mem.regionIntersectsRam(0xa0000n, 0x1000n), "disjoint");
    strictEqual(w.mem.regionIntersectsRam(0x9f000n, 0x2000n), "mixed");
  });
  await t.step("unbacked addresses read all ones and drop writes (x86 master abort)", () => {
    const w = new Kernel({ memory: { nodes: [GiB] } });
    strictEqual(w.mem.readU32(0xfee0_0000n), 0xffffffff);
    w.mem.writeU32(0xfee0_0000n, 1);
    strictEqual(w.mem.readU32(0xfee0_0000n), 0xffffffff);
    strictEqual(w.mem.unbackedWrites, 1);
    ok(w.mem.unbackedReads >= 2);
    ok(!w.mem.isBacked(0xfee0_0000n, 4));
    ok(w.mem.isBacked(0x1000n, 4));
    // Beyond MAX_PHYSMEM_BITS.
    strictEqual(w.mem.readU8(1n << 60n), 0xff);
    // A read straddling the end of RAM: RAM bytes, then all ones.
    const r = w.mem.read(0xa0000n - 2n, 4);
    deepStrictEqual([...r], [0, 0, 0xff, 0xff]);
  });
});

Deno.test("physical memory: MMIO regions", async (t) => {
  await t.step("a BAR with VRAM behind it gets sparse backing", () => {
    const w = new Kernel();
    const bar = w.mem.registerMmio({
      name: "0000:01:00.0 BAR 0",
      start: 0x80_0000_0000n,
      size: 16n * GiB,
    });
    w.mem.write(0x80_0000_0000n + 5n * GiB, new Uint8Array([1, 2, 3]));
    deepStrictEqual([...w.mem.read(0x80_0000_0000n + 5n * GiB, 3)], [1, 2, 3]);
    strictEqual(bar.store!.touchedPages, 1);
    strictEqual(w.mem.touchedRamPages, 0);
    strictEqual(w.mem.mmioAt(0x80_0000_1000n), bar);
    ok(!w.mem.pfnValid(0x80_0000_1000n >> 12n));
    ok(!w.mem.isRam(0x80_0000_1000n));
  });
  await t.step("handlers see offsets within the region", () => {
    const w = new Kernel();
    const regs = new Map<number, number>();
    w.mem.registerMmio({
      name: "regs",
      start: 0xf000_0000n,
      size: 0x1000n,
      ops: {
        read: (off, dst) => dst.fill(regs.get(off) ?? 0),
        write: (off, src) => regs.set(off, src[0]!),
      },
    });
    w.mem.writeU8(0xf000_0010n, 7);
    strictEqual(regs.get(0x10), 7);
    strictEqual(w.mem.readU8(0xf000_0010n), 7);
  });
  await t.step("overlaps are -EBUSY, bad sizes -EINVAL, state intact", () => {
    const w = new Kernel({ memory: { nodes: [GiB] } });
    const bar = w.mem.registerMmio({ name: "a", start: 0xe000_0000n, size: 0x10000n });
    errno(() => w.mem.registerMmio({ name: "b", start: 0xe000_8000n, size: 0x10000n }), "EBUSY");
    errno(() => w.mem.registerMmio({ name: "ram", start: 0x1000n, size: 0x1000n }), "EBUSY");
    errno(() => w.mem.registerMmio({ name: "c", start: 0xe100_0000n, size: 0n }), "EINVAL");
    deepStrictEqual(w.mem.mmioRegions(), [bar]);
    w.mem.unregisterMmio(bar);
    errno(() => w.mem.unregisterMmio(bar), "ENOENT");
    strictEqual(w.mem.readU8(0xe000_0000n), 0xff);
  });
});

Deno.test("physical memory: page allocator", async (t) => {
  await t.step("alloc_pages returns RAM pages with a struct page", () => {
    const w = new Kernel({ memory: { nodes: [4n * GiB, GiB] } });
    const p = w.mem.allocPages(2)!;
    strictEqual(p.refcount, 1);
    ok(w.mem.pfnValid(p.pfn));
    strictEqual(w.mem.pfnToPage(p.pfn), p);
    strictEqual(p.nid, 0);
    strictEqual(p.zone, "Normal", "the highest allowed zone is tried first");
    strictEqual(w.mem.allocationOrder(p.pfn), 2);
    strictEqual(
      w.mem.allocPages(0, { nid: -1 })!.nid,
      0,
      "NUMA_NO_NODE: the first node with memory",
    );
    const q = w.mem.allocPages(0, { nid: 1 })!;
    strictEqual(q.nid, 1);
    strictEqual(q.zone, "Normal");
    const before = w.mem.freeRamPages;
    w.mem.freePages(p, 2);
    strictEqual(w.mem.freeRamPages, before + 4);
  });
  await t.step("mm_page_alloc / mm_page_free tracepoints", () => {
    const w = new Kernel();
    w.trace.enable();
    const p = w.mem.allocPages(1)!;
    w.mem.freePages(p, 1);
    const text = w.trace.ftrace();
    ok(text.includes(`mm_page_alloc: pfn=0x${p.pfn.toString(16)} order=1 nid=0`), text);
    ok(text.includes(`mm_page_free: pfn=0x${p.pfn.toString(16)} order=1`), text);
  });
  await t.step("GFP_DMA32 and __GFP_THISNODE restrict the zonelist", () => {
    const w = new Kernel({ memory: { nodes: [4n * GiB, 4n * GiB] } });
    const p = w.mem.allocPages(0, { nid: 1, zone: "DMA32" })!;
    ok(w.mem.pageToPhys(p) < 4n * GiB, "DMA32 page below 4 GiB");
    strictEqual(p.nid, 0, "falls back to node 0 for DMA32");
    strictEqual(w.mem.allocPages(0, { nid: 1, zone: "DMA32", thisNode: true }), null);
  });
  await t.step("exhaustion returns null; free restores", () => {
    const w = new Kernel({ memory: { ram: [{ start: 0x10_0000n, end: 0x10_8000n, nid: 0 }] } });
    const a = w.mem.allocPages(3)!;
    strictEqual(w.mem.allocPages(0), null);
    w.mem.freePages(a, 3);
    ok(w.mem.allocPages(3) !== null);
  });
  await t.step("order above MAX_PAGE_ORDER warns, or fails quietly with __GFP_NOWARN", () => {
    const w = new Kernel();
    throws(() => w.mem.allocPages(11), KernelBug);
    strictEqual(w.mem.allocPages(11, { noWarn: true }), null);
  });
  await t.step("double free is a Bad page state BUG; refcount keeps the block", () => {
    const w = new Kernel({ strict: false });
    const p = w.mem.allocPages(0)!;
    p.get();
    w.mem.freePages(p, 0);
    strictEqual(p.refcount, 1);
    strictEqual(w.mem.allocationOrder(p.pfn), 0);
    p.put();
    strictEqual(w.mem.allocationOrder(p.pfn), -1);
    w.mem.freePages(p, 0);
    ok(w.bugs.at(-1)!.summary.includes("Bad page state"));
  });
  await t.step("non-compound high order: a held head keeps only the first page", () => {
    const w = new Kernel();
    const p = w.mem.allocPages(2)!;
    const free0 = w.mem.freeRamPages;
    p.get();
    w.mem.freePages(p, 2);
    strictEqual(w.mem.freeRamPages, free0 + 3);
    strictEqual(w.mem.allocationOrder(p.pfn), 0);
    p.put();
    strictEqual(w.mem.freeRamPages, free0 + 4);
  });
  await t.step("__GFP_ZERO clears stale data", () => {
    const w = new Kernel({ memory: { ram: [{ start: 0x10_0000n, end: 0x10_1000n, nid: 0 }] } });
    const p = w.mem.allocPages(0)!;
    w.mem.writeU32(w.mem.pageToPhys(p), 42);
    w.mem.freePages(p, 0);
    const q = w.mem.allocPages(0)!;
    strictEqual(
      w.mem.readU32(w.mem.pageToPhys(q)),
      42,
      "freed data is not scrubbed (init_on_free off)",
    );
    w.mem.freePages(q, 0);
    const z = w.mem.allocPages(0, { zero: true })!;
    strictEqual(w.mem.readU32(w.mem.pageToPhys(z)), 0);
  });
});

Deno.test("physical memory: ZONE_DEVICE pages (memremap_pages)", async (t) => {
  await t.step("P2PDMA pages get a struct page; page_free on the last put", () => {
    const w = new Kernel();
    w.mem.registerMmio({ name: "BAR 2", start: 0x90_0000_0000n, size: 1n << 24n });
    const freed: number[] = [];
    const pg = w.mem.memremapPages({
      type: "pci_p2pdma",
      start: 0x90_0000_0000n,
      size: 1n << 24n,
      ops: { pageFree: (p) => freed.push(p.pfn) },
    });
    const pfn = 0x90_0000_0000 / PAGE_SIZE + 3;
    ok(w.mem.pfnValid(pfn));
    const page = w.mem.pfnToPage(pfn)!;
    ok(page.isPciP2pdma);
    strictEqual(page.zone, "Device");
    strictEqual(page.refcount, 0);
    page.initDeviceRef();
    strictEqual(pg.activePages, 1);
    page.get(GUP_PIN_COUNTING_BIAS);
    ok(page.maybeDmaPinned);
    page.put(GUP_PIN_COUNTING_BIAS);
    page.put();
    deepStrictEqual(freed, [pfn]);
    strictEqual(pg.activePages, 0);
  });
  await t.step("RAM is -ENXIO with a WARN, overlap -ENOMEM, misaligned -EINVAL", () => {
    const w = new Kernel({ strict: false });
    errno(
      () => w.mem.memremapPages({ type: "pci_p2pdma", start: 0x10_0000n, size: 0x1000n }),
      "ENXIO",
    );
    ok(w.bugs.at(-1)!.summary.includes("memremap_pages attempted on ram region"));
    const pg = w.mem.memremapPages({ type: "generic", start: 0x90_0000_0000n, size: 0x4000n });
    errno(
      () => w.mem.memremapPages({ type: "generic", start: 0x90_0000_2000n, size: 0x4000n }),
      "ENOMEM",
    );
    errno(
      () => w.mem.memremapPages({ type: "generic", start: 0x90_0001_0800n, size: 0x1000n }),
      "EINVAL",
    );
    deepStrictEqual(w.mem.pagemaps(), [pg]);
  });
  await t.step("memunmap_pages waits for the last page reference", async () => {
    const w = new Kernel();
    const pg = w.mem.memremapPages({ type: "pci_p2pdma", start: 0x90_0000_0000n, size: 0x4000n });
    const page = w.mem.pfnToPage(pg.startPfn)!;
    page.initDeviceRef();
    const log: string[] = [];
    w.spawn("unmap", async () => {
      await w.mem.memunmapPages(pg);
      log.push("unmapped");
    });
    w.spawn("user", async () => {
      await w.sched.msleep(5);
      log.push("put");
      ok(!page.tryGet(), "no new references while dying");
      page.put();
    });
    await w.run();
    deepStrictEqual(log, ["put", "unmapped"]);
    ok(!w.mem.pfnValid(pg.startPfn));
    await rejects(w.runTask("again", () => w.mem.memunmapPages(pg)), KernelError);
  });
});

Deno.test("property: sparse memory equals a dense shadow for random writes and reads", () => {
  const SPAN = 1 << 20; // window over RAM, an MMIO BAR and a hole
  const BASE = 0xbff8_0000; // RAM ends at 3 GiB (0xc0000000): window crosses into the hole
  const op = fc.record({
    kind: fc.constantFrom("write", "fill", "read", "copy"),
    off: fc.integer({ min: 0, max: SPAN - 1 }),
    len: fc.integer({ min: 0, max: 9000 }),
    val: fc.integer({ min: 0, max: 255 }),
    src: fc.integer({ min: 0, max: SPAN - 1 }),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
      const w = new Kernel({ memory: { nodes: [4n * GiB] } });
      // A memory-backed BAR in the middle of the window's hole part.
      w.mem.registerMmio({ name: "bar", start: BASE + 0xc0000, size: 0x20000 });
      const backed = (a: number) => a < 0xc000_0000 || (a >= BASE + 0xc0000 && a < BASE + 0xe0000);
      const shadow = new Uint8Array(SPAN);
      for (let i = 0; i < SPAN; i++) if (!backed(BASE + i)) shadow[i] = 0xff;
      for (const o of ops) {
        const len = Math.min(o.len, SPAN - o.off);
        const a = BASE + o.off;
        if (o.kind === "write") {
          const data = Uint8Array.from({ length: len }, (_, i) => (o.val + i) & 0xff);
          w.mem.write(a, data);
          for (let i = 0; i < len; i++) if (backed(a + i)) shadow[o.off + i] = data[i]!;
        } else if (o.kind === "fill") {
          w.mem.fill(a, len, o.val);
          for (let i = 0; i < len; i++) if (backed(a + i)) shadow[o.off + i] = o.val;
        } else if (o.kind === "copy") {
          const n = Math.min(len, SPAN - o.src);
          w.mem.copy(a, BASE + o.src, n);
          const tmp = shadow.slice(o.src, o.src + n);
          for (let i = 0; i < n; i++) if (backed(a + i)) shadow[o.off + i] = tmp[i]!;
        } else {
          deepStrictEqual(w.mem.read(a, len), shadow.subarray(o.off, o.off + len));
        }
      }
      const all = new Uint8Array(SPAN);
      w.mem.readInto(BASE, all);
      deepStrictEqual(all, shadow);
      deepStrictEqual(w.check(), []);
    }),
    { numRuns: 60 },
  );
});
