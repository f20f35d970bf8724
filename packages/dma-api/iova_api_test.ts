import { ok, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { Device, dmaBitMask, isErrno, Kernel, KernelBug } from "@dmalab/kernel";
import { iommuCoreOf, IommuFaultError, iommuSetup } from "@dmalab/iommu";
import { defaultMachine } from "@dmalab/pci-p2p";
import {
  deviceDmaRead,
  deviceDmaWrite,
  dmaIovaDestroy,
  dmaIovaFree,
  dmaIovaLink,
  DmaIovaState,
  dmaIovaSync,
  dmaIovaTryAlloc,
  dmaIovaUnlink,
  dmaMapPhys,
  dmaMappingError,
  dmaUnmapPhys,
  dmaUseIova,
  IovaDomain,
} from "./mod.ts";

function iommuWorld(strict = true) {
  const world = new Kernel();
  const m = defaultMachine(world);
  iommuSetup(world, { strict });
  m.nic.setMaskAndCoherent(dmaBitMask(64));
  return { world, m, dom: iommuCoreOf(world)!.domainFor(m.nic)! };
}

Deno.test("IOVA allocator (drivers/iommu/iova.c)", async (t) => {
  await t.step("top-down, size-aligned, below the limit", () => {
    const iovad = new IovaDomain(4096, 1);
    strictEqual(iovad.allocIova(1, 0xfffff, true), 0xfffff);
    strictEqual(iovad.allocIova(4, 0xfffff, true), 0xffff8, "aligned to 4 pages below the first");
    strictEqual(iovad.allocIova(3, 0xfffff, true), 0xffff4, "below the cached node, aligned to 4");
    strictEqual(iovad.allocIova(3, 0xfffff, true), 0xffff0);
    ok(iovad.find(0xffff9));
    ok(iovad.freeIova(0xffff8), "a free above the cached node moves it up");
    strictEqual(
      iovad.allocIova(2, 0xfffff, true),
      0xffffc,
      "so the search sees the holes up there",
    );
    strictEqual(iovad.allocIova(8, 7, true), 0, "no room below pfn 8 from start_pfn 1");
  });

  await t.step("range caches: freed small ranges come back first; flush on exhaustion", () => {
    const iovad = new IovaDomain(4096, 1);
    const a = iovad.allocIovaFast(1, 0xfffff, true);
    iovad.freeIovaFast(a, 1);
    strictEqual(iovad.cachedRanges, 1);
    strictEqual(iovad.allocIovaFast(1, 0xfffff, true), a);
    strictEqual(iovad.stats.rcacheHits, 1);
    // fill a tiny space, cache everything, then ask for a larger size
    const small = new IovaDomain(4096, 1);
    const got: number[] = [];
    for (let i = 0; i < 15; i++) got.push(small.allocIovaFast(1, 15, true));
    for (const p of got) small.freeIovaFast(p, 1);
    strictEqual(small.allocatedRanges, 15, "cached ranges stay allocated");
    ok(small.allocIovaFast(8, 15, true) > 0, "cache flush made room");
    strictEqual(small.stats.rcacheFlushes, 1);
  });

  await t.step("magazines hold 127; overflow goes to the depot", () => {
    const iovad = new IovaDomain(4096, 1);
    const pfns = Array.from({ length: 300 }, () => iovad.allocIovaFast(1, 0xfffff, true));
    for (const p of pfns) iovad.freeIovaFast(p, 1);
    strictEqual(iovad.cachedRanges, 300);
    strictEqual(iovad.stats.treeFrees, 0);
  });
});

Deno.test("IOVA-based DMA API", async (t) => {
  await t.step("dma_iova_try_alloc is false without dma-iommu (use the streaming API)", () => {
    const world = new Kernel();
    const dev = new Device(world, "direct", { dmaMask: dmaBitMask(64) });
    const st = new DmaIovaState();
    ok(!dmaIovaTryAlloc(dev, st, 0, 65536));
    ok(!dmaUseIova(st));
    const pt = new Kernel();
    const m = defaultMachine(pt);
    iommuSetup(pt, { passthrough: true });
    ok(!dmaIovaTryAlloc(m.nic, st, 0, 65536), "identity domain: dma-direct");
  });

  await t.step("link, one sync, device reads, unlink, free", () => {
    const { world, m, dom } = iommuWorld();
    const pages = [0, 1, 2, 3].map(() => world.mem.allocPages(0)!.pfn * 4096);
    pages.forEach((p, i) => world.mem.write(p, new Uint8Array([i + 1])));
    const st = new DmaIovaState();
    ok(dmaIovaTryAlloc(m.nic, st, pages[0]!, 4 * 4096));
    ok(dmaUseIova(st));
    const syncs = dom.stats.syncMaps;
    pages.forEach((p, i) => dmaIovaLink(m.nic, st, p, i * 4096, 4096, "DMA_TO_DEVICE"));
    strictEqual(dom.stats.syncMaps, syncs, "link does not sync");
    dmaIovaSync(m.nic, st, 0, 4 * 4096);
    strictEqual(dom.stats.syncMaps, syncs + 1);
    for (let i = 0; i < 4; i++) strictEqual(deviceDmaRead(m.nic, st.addr + i * 4096, 1)[0], i + 1);
    const iotlb = dom.stats.iotlbSyncs;
    dmaIovaUnlink(m.nic, st, 0, 4 * 4096, "DMA_TO_DEVICE");
    strictEqual(dom.stats.iotlbSyncs, iotlb + 1, "one IOTLB sync for the whole unlink");
    throws(() => deviceDmaRead(m.nic, st.addr, 1), IommuFaultError);
    dmaIovaFree(m.nic, st);
    ok(!dmaUseIova(st));
  });

  await t.step("merge-boundary rules: unaligned phys at offset>0 is WARN + -EIO", () => {
    const { world, m } = iommuWorld();
    const w = new Kernel({ strict: false });
    void w;
    const p = world.mem.allocPages(1)!.pfn * 4096;
    const st = new DmaIovaState();
    ok(dmaIovaTryAlloc(m.nic, st, p, 3 * 4096));
    dmaIovaLink(m.nic, st, p, 0, 4096, "DMA_TO_DEVICE");
    throws(() => dmaIovaLink(m.nic, st, p + 0x100, 4096, 100, "DMA_TO_DEVICE"), KernelBug);
    // a first range that is not a multiple of the boundary makes the next land unaligned
    const st2 = new DmaIovaState();
    ok(dmaIovaTryAlloc(m.nic, st2, p, 3 * 4096));
    dmaIovaLink(m.nic, st2, p, 0, 1000, "DMA_TO_DEVICE");
    throws(
      () => dmaIovaLink(m.nic, st2, p + 4096, 1000, 4096, "DMA_TO_DEVICE"),
      (e) => isErrno(e, "EINVAL"),
    );
  });

  await t.step(
    "dma_iova_free with ranges still linked is a WARN; destroy unlinks and frees",
    () => {
      const { world, m } = iommuWorld();
      const p = world.mem.allocPages(0)!.pfn * 4096;
      const st = new DmaIovaState();
      ok(dmaIovaTryAlloc(m.nic, st, p, 4096));
      dmaIovaLink(m.nic, st, p, 0, 4096, "DMA_BIDIRECTIONAL");
      dmaIovaSync(m.nic, st, 0, 4096);
      throws(() => dmaIovaFree(m.nic, st), KernelBug);
      const addr = st.addr;
      dmaIovaDestroy(m.nic, st, 4096, "DMA_BIDIRECTIONAL");
      ok(!dmaUseIova(st));
      throws(() => deviceDmaRead(m.nic, addr, 1), IommuFaultError);
    },
  );
});

Deno.test("IOVA API on an untrusted device: partial granules bounce (DMA_IOVA_USE_SWIOTLB)", () => {
  const world = new Kernel();
  const m = defaultMachine(world);
  m.nvme.untrusted = true;
  iommuSetup(world);
  const p = world.mem.allocPages(1)!.pfn * 4096;
  world.mem.write(p + 4000, new TextEncoder().encode("0123456789abcdefghij"));
  world.mem.write(p + 3800, new Uint8Array(190).fill(0x5a)); // a neighbour before the data
  const st = new DmaIovaState();
  ok(dmaIovaTryAlloc(m.nvme, st, p + 4000, 20), "untrusted devices may use the IOVA API");
  dmaIovaLink(m.nvme, st, p + 4000, 0, 20, "DMA_BIDIRECTIONAL");
  dmaIovaSync(m.nvme, st, 0, 20);
  ok(st.useSwiotlb);
  strictEqual(new TextDecoder().decode(deviceDmaRead(m.nvme, st.addr, 20)), "0123456789abcdefghij");
  strictEqual(deviceDmaRead(m.nvme, st.addr - 100, 1)[0], 0, "padding zeroed, neighbour hidden");
  deviceDmaWrite(m.nvme, st.addr, new TextEncoder().encode("ZZ"));
  dmaIovaDestroy(m.nvme, st, 20, "DMA_BIDIRECTIONAL");
  strictEqual(
    new TextDecoder().decode(world.mem.read(p + 4000, 4)),
    "ZZ23",
    "copied back at unlink",
  );
});

Deno.test("property: the IOVA API equals the streaming API in effect", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 6 }),
      (orders) => {
        const { world, m } = iommuWorld();
        const chunks = orders.map((o, i) => {
          const p = world.mem.allocPages(o - 1)!.pfn * 4096;
          const len = 4096 * 2 ** (o - 1);
          world.mem.write(p, new Uint8Array(len).fill(i + 7));
          return { p, len };
        });
        const total = chunks.reduce((a, c) => a + c.len, 0);
        // streaming: one mapping per chunk
        const viaStreaming: number[] = [];
        const addrs = chunks.map((c) => {
          const a = dmaMapPhys(m.nic, c.p, c.len, "DMA_TO_DEVICE");
          ok(!dmaMappingError(m.nic, a));
          return a;
        });
        chunks.forEach((c, i) => viaStreaming.push(...deviceDmaRead(m.nic, addrs[i]!, c.len)));
        chunks.forEach((c, i) => dmaUnmapPhys(m.nic, addrs[i]!, c.len, "DMA_TO_DEVICE"));
        // IOVA API: one contiguous IOVA range
        const st = new DmaIovaState();
        ok(dmaIovaTryAlloc(m.nic, st, chunks[0]!.p, total));
        let off = 0;
        for (const c of chunks) {
          dmaIovaLink(m.nic, st, c.p, off, c.len, "DMA_TO_DEVICE");
          off += c.len;
        }
        dmaIovaSync(m.nic, st, 0, total);
        const viaIova = [...deviceDmaRead(m.nic, st.addr, total)];
        dmaIovaDestroy(m.nic, st, total, "DMA_TO_DEVICE");
        strictEqual(viaIova.length, viaStreaming.length);
        ok(viaIova.every((b, i) => b === viaStreaming[i]));
      },
    ),
    { numRuns: 40, seed: 42 },
  );
});
