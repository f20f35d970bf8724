// Property tests: random streaming map/unmap against a shadow, and strict
// versus lazy IOVA reuse.
import { ok, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { dmaBitMask, Kernel } from "@dmalab/kernel";
import { iommuCoreOf, IommuFaultError, iommuSetup, iommuTranslate } from "@dmalab/iommu";
import { defaultMachine } from "@dmalab/pci-p2p";
import { dmaMapPhys, dmaMappingError, dmaUnmapPhys } from "./mod.ts";

type Op = { kind: "map"; pages: number; off: number } | { kind: "unmap"; idx: number } | {
  kind: "flush";
};

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("map" as const),
    pages: fc.integer({ min: 1, max: 40 }),
    off: fc.integer({ min: 0, max: 4095 }),
  }),
  fc.record({ kind: fc.constant("unmap" as const), idx: fc.nat() }),
  fc.record({ kind: fc.constant("flush" as const) }),
);

function run(ops: Op[], strict: boolean): void {
  const world = new Kernel();
  const m = defaultMachine(world);
  iommuSetup(world, { strict });
  m.nic.setMaskAndCoherent(dmaBitMask(64));
  const dom = iommuCoreOf(world)!.domainFor(m.nic)!;
  const live: {
    addr: bigint;
    phys: number;
    len: number;
    page: ReturnType<typeof world.mem.allocPages>;
  }[] = [];
  const pending: [number, number][] = []; // lazily unmapped IOVA page ranges awaiting a flush
  for (const op of ops) {
    if (op.kind === "map") {
      const order = Math.ceil(Math.log2(op.pages + 1));
      const page = world.mem.allocPages(order)!;
      const phys = page.pfn * 4096 + op.off;
      const len = op.pages * 4096 - op.off;
      const addr = dmaMapPhys(m.nic, phys, len, "DMA_BIDIRECTIONAL");
      ok(!dmaMappingError(m.nic, addr));
      const a = Number(addr);
      const first = Math.floor(a / 4096);
      const last = Math.floor((a + len - 1) / 4096);
      for (const [s, e] of pending) {
        ok(last < s || first > e, "lazy: an IOVA awaiting its flush was handed out again");
      }
      for (const l of live) {
        const ls = Math.floor(Number(l.addr) / 4096);
        const le = Math.floor((Number(l.addr) + l.len - 1) / 4096);
        ok(last < ls || first > le, "two live mappings overlap");
      }
      live.push({ addr, phys, len, page });
    } else if (op.kind === "unmap" && live.length) {
      const [l] = live.splice(op.idx % live.length, 1);
      const a = Number(l!.addr);
      iommuTranslate(m.nic, a, false); // warm the IOTLB
      dmaUnmapPhys(m.nic, l!.addr, l!.len, "DMA_BIDIRECTIONAL");
      world.mem.freePages(
        l!.page!,
        Math.ceil(Math.log2(Math.ceil((l!.len + (l!.phys % 4096)) / 4096) + 1)),
      );
      if (strict) {
        throws(
          () => iommuTranslate(m.nic, a, false),
          IommuFaultError,
          "strict: no stale IOTLB entry",
        );
      } else {
        strictEqual(
          iommuTranslate(m.nic, a, false).phys,
          l!.phys,
          "lazy: stale entry until the flush",
        );
        const s = Math.floor(a / 4096);
        pending.push([s, Math.floor((a + l!.len - 1) / 4096)]);
      }
    } else if (op.kind === "flush") {
      dom.fq?.flush();
      pending.length = 0;
    }
    strictEqual(world.check().length, 0, world.check().join("; "));
    // every live mapping translates exactly like the shadow
    for (const l of live) {
      for (const off of [0, Math.floor(l.len / 2), l.len - 1]) {
        strictEqual(dom.iovaToPhys(Number(l.addr) + off), l.phys + off);
      }
    }
  }
}

Deno.test("property: random map/unmap against a shadow (strict)", () => {
  fc.assert(fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => run(ops, true)), {
    numRuns: 60,
    seed: 7,
  });
});

Deno.test("property: lazy mode never reuses an IOVA before its batched flush", () => {
  fc.assert(fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => run(ops, false)), {
    numRuns: 60,
    seed: 8,
  });
});

Deno.test("strict vs lazy IOVA reuse, directly", async (t) => {
  for (const strict of [true, false]) {
    await t.step(
      strict ? "strict: the freed IOVA comes straight back" : "lazy: only after the flush",
      () => {
        const world = new Kernel();
        const m = defaultMachine(world);
        iommuSetup(world, { strict });
        const dom = iommuCoreOf(world)!.domainFor(m.nic)!;
        const p = world.mem.allocPages(0)!.pfn * 4096;
        const a = dmaMapPhys(m.nic, p, 4096, "DMA_TO_DEVICE");
        dmaMappingError(m.nic, a);
        dmaUnmapPhys(m.nic, a, 4096, "DMA_TO_DEVICE");
        const b = dmaMapPhys(m.nic, p, 4096, "DMA_TO_DEVICE");
        dmaMappingError(m.nic, b);
        strictEqual(b === a, strict);
        if (!strict) {
          dom.fq!.flush();
          dmaUnmapPhys(m.nic, b, 4096, "DMA_TO_DEVICE");
          dom.fq!.flush();
          const c = dmaMapPhys(m.nic, p, 4096, "DMA_TO_DEVICE");
          dmaMappingError(m.nic, c);
          ok(c === a || c === b, "after the flush the cached IOVAs are reused");
          strictEqual(dom.fq!.stats.released, 2);
        }
      },
    );
  }
});
