import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import fc from "fast-check";
import { dmaBitMask, Kernel } from "@dmalab/kernel";
import { defaultMachine, intelUnlisted, PciP2pdmaMapType } from "@dmalab/pci-p2p";
import {
  type DmaBufAttachment,
  DmaBufDmaSgt,
  dmaBufDynamicAttach,
  dmaBufVmap,
  dmaBufVunmap,
  DmaResvUsage,
  type SgTable,
} from "@dmalab/dma-buf";
import {
  GPU_DOMAIN_GTT,
  GPU_DOMAIN_VRAM,
  gpuAttachP2p,
  gpuBoExport,
  gpuChecksumOf,
  gpuProbe,
  VramManager,
} from "./mod.ts";

function setup(vramSize = 4 << 20) {
  const world = new Kernel();
  const m = defaultMachine(world);
  for (const d of [m.nic, m.nic2, m.nvme]) d.setMaskAndCoherent(dmaBitMask(64));
  const gpu = gpuProbe(m.gpu, { vramSize });
  return { world, m, gpu };
}

Deno.test("VRAM manager (drm_buddy)", async (t) => {
  await t.step("blocks never overlap and frees restore every page", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 200 }), { maxLength: 30 }), (sizes) => {
        const mgr = new VramManager(1000, 6);
        const live: { start: number; order: number }[][] = [];
        for (const s of sizes) {
          const b = mgr.alloc(s);
          if (b) live.push(b);
          const used = new Set<number>();
          for (const bl of live.flat()) {
            for (let p = bl.start; p < bl.start + 2 ** bl.order; p++) {
              if (used.has(p) || p >= 1000) return false;
              used.add(p);
            }
          }
          if (used.size !== mgr.usedPages) return false;
        }
        for (const b of live) mgr.free(b);
        return mgr.freePages === 1000 && mgr.alloc(64, true) !== null;
      }),
    );
  });
  await t.step("a failed allocation keeps nothing", () => {
    const mgr = new VramManager(64);
    strictEqual(mgr.alloc(65), null);
    strictEqual(mgr.freePages, 64);
  });
});

Deno.test("command stream: fill, copy, checksum move real bytes", async () => {
  const { world, gpu } = setup();
  const a = gpu.boCreate(64 << 10);
  const b = gpu.boCreate(64 << 10);
  const sums = await world.runTask("app", async () => {
    await gpu.fill(a, 0x5a);
    await gpu.fill(a, 0x01, 4096, 16);
    await gpu.copy(a, b);
    const j = await gpu.checksum(b);
    await j.fence.wait(false);
    return j.result;
  });
  const expect = new Uint8Array(64 << 10).fill(0x5a);
  expect.fill(0x01, 4096, 4112);
  strictEqual(sums, gpuChecksumOf(expect));
  // the bytes are in VRAM behind the BAR: the CPU reads them at the BAR address
  strictEqual(b.placement, "VRAM");
  strictEqual(world.mem.readU8(BigInt(b.ranges[0]!.phys + 4096)), 0x01);
  ok(b.ranges[0]!.phys >= gpu.vramBase && b.ranges[0]!.phys < gpu.vramBase + gpu.vramSize);
  ok(world.sched.now > 0, "jobs take virtual time");
  deepStrictEqual(world.check(), []);
});

Deno.test("eviction: copy job fence is KERNEL usage, move_notify comes first, bytes survive", async () => {
  const { world, m, gpu } = setup(4 << 20);
  const a = gpu.boCreate(3 << 20);
  const b = gpu.boCreate(3 << 20);
  const buf = gpuBoExport(gpu, a);
  const seen: string[] = [];
  let sgt: SgTable | null = null;
  const expectA = new Uint8Array(3 << 20).fill(0x11);
  const out = await world.runTask("app", async () => {
    const attach: DmaBufAttachment = await dmaBufDynamicAttach(buf, m.nic, {
      allowPeer2peer: true,
      invalidateMappings: (at) => {
        seen.push(`notify while ${a.placement}`);
        if (sgt) at.unmap(sgt, "DMA_BIDIRECTIONAL");
        sgt = null;
      },
    }, null);
    await gpu.fill(a, 0x11);
    await buf.resv.lock(null);
    sgt = await attach.map("DMA_BIDIRECTIONAL");
    buf.resv.unlock();
    ok(sgt instanceof Object);
    await gpu.fill(b, 0x22); // needs A's VRAM: A is evicted to GTT
    seen.push(`after ${a.placement}`);
    await a.resv.lock(null);
    const k = [...a.resv.forEachFence(DmaResvUsage.KERNEL)].length;
    a.resv.unlock();
    const ja = await gpu.checksum(a);
    const jb = await gpu.checksum(b);
    await ja.fence.wait(false);
    await jb.fence.wait(false);
    await buf.resv.lock(null);
    const again = await attach.map("DMA_BIDIRECTIONAL"); // now system memory
    const isP2p = again instanceof DmaBufDmaSgt;
    attach.unmap(again, "DMA_BIDIRECTIONAL");
    buf.resv.unlock();
    await attach.detach();
    return { k, sa: ja.result, sb: jb.result, isP2p };
  });
  deepStrictEqual(seen, ["notify while VRAM", "after GTT"]);
  strictEqual(out.k, 1, "the eviction copy fence sits in the resv as KERNEL usage");
  strictEqual(out.sa, gpuChecksumOf(expectA));
  strictEqual(out.sb, gpuChecksumOf(new Uint8Array(3 << 20).fill(0x22)));
  strictEqual(out.isP2p, false);
  strictEqual(gpu.stats.evictions, 1);
  strictEqual(gpu.stats.moveNotifies, 1);
  strictEqual(b.placement, "VRAM");
  deepStrictEqual(world.check(), []);
});

Deno.test("exporter: P2P map types and the system-memory fallback", async (t) => {
  await t.step("NIC under the same switch gets BUS_ADDR VRAM addresses", async () => {
    const { world, m, gpu } = setup();
    const bo = gpu.boCreate(1 << 20);
    const buf = gpuBoExport(gpu, bo);
    const r = await world.runTask("imp", async () => {
      const at = await dmaBufDynamicAttach(buf, m.nic, {
        allowPeer2peer: true,
        invalidateMappings: () => {},
      }, null);
      await buf.resv.lock(null);
      const sgt = await at.map("DMA_BIDIRECTIONAL");
      const mt = (sgt as unknown as { mapType?: number }).mapType;
      const addr = sgt.sgl[0]!.dmaAddress;
      at.unmap(sgt, "DMA_BIDIRECTIONAL");
      buf.resv.unlock();
      await at.detach();
      return { mt, addr, p2p: gpuAttachP2p(at) };
    });
    strictEqual(bo.placement, "VRAM");
    strictEqual(r.p2p, true);
    // the wrapped table hides the exporter's object: check the address is in the BAR
    ok(r.addr >= BigInt(gpu.vramBase) && r.addr < BigInt(gpu.vramBase + gpu.vramSize));
    void r.mt;
  });
  await t.step("an importer without allow_peer2peer makes the BO migrate to GTT", async () => {
    const { world, m, gpu } = setup();
    const bo = gpu.boCreate(1 << 20);
    const buf = gpuBoExport(gpu, bo);
    await world.runTask("imp", async () => {
      await gpu.fill(bo, 0x33);
      const at = await dmaBufDynamicAttach(buf, m.nic, { invalidateMappings: () => {} }, null);
      await buf.resv.lock(null);
      const sgt = await at.map("DMA_BIDIRECTIONAL");
      at.unmap(sgt, "DMA_BIDIRECTIONAL");
      buf.resv.unlock();
      await at.detach();
    });
    strictEqual(bo.placement, "GTT");
    strictEqual(world.mem.readU8(BigInt(bo.ranges[0]!.phys + 10)), 0x33, "moved bytes");
  });
  await t.step("pin goes to GTT when any attachment cannot do P2P", async () => {
    const w = new Kernel();
    const pf = intelUnlisted(w);
    const gpus = pf.devices.filter((d) => d.classCode === 0x030200 || d.classCode === 0x030000);
    const gpu = gpuProbe(gpus[0]!, { vramSize: 4 << 20 });
    const peer = gpus[1]!; // another root port on a non-whitelisted host bridge
    peer.setMaskAndCoherent(dmaBitMask(64));
    const bo = gpu.boCreate(1 << 20);
    const buf = gpuBoExport(gpu, bo);
    await w.runTask("imp", async () => {
      const at = await dmaBufDynamicAttach(buf, peer, {
        allowPeer2peer: true,
        invalidateMappings: () => {},
      }, null);
      strictEqual(gpuAttachP2p(at), false, "pci_p2pdma_distance < 0 clears peer2peer");
      await buf.resv.lock(null);
      await at.pin();
      const sgt = await at.map("DMA_BIDIRECTIONAL");
      at.unmap(sgt, "DMA_BIDIRECTIONAL");
      at.unpin();
      buf.resv.unlock();
      await at.detach();
    });
    strictEqual(bo.placement, "GTT");
    strictEqual(bo.pinCount, 0);
  });
  await t.step(
    "a pinned object cannot be moved; validate to another domain is -EINVAL",
    async () => {
      const { world, gpu } = setup();
      const bo = gpu.boCreate(1 << 20);
      await world.runTask("pin", async () => {
        await bo.resv.lock(null);
        await gpu.pin(bo, GPU_DOMAIN_VRAM);
        await rejects(gpu.validate(bo, GPU_DOMAIN_GTT), /EINVAL/);
        strictEqual(bo.placement, "VRAM");
        gpu.unpin(bo);
        bo.resv.unlock();
      });
    },
  );
  void PciP2pdmaMapType;
});

Deno.test("vmap of VRAM is iomem, of GTT is system memory", async () => {
  const { world, gpu } = setup();
  const bo = gpu.boCreate(64 << 10);
  const bo2 = gpu.boCreate(64 << 10, GPU_DOMAIN_GTT);
  const buf = gpuBoExport(gpu, bo);
  const buf2 = gpuBoExport(gpu, bo2);
  await world.runTask("cpu", async () => {
    await gpu.fill(bo, 0x7e);
    await bo.resv.waitTimeout(DmaResvUsage.BOOKKEEP, false, 1000);
    await buf.resv.lock(null);
    const map = await dmaBufVmap(buf);
    strictEqual(map.isIomem, true);
    strictEqual(map.memcpyFrom(100, 1)[0], 0x7e);
    strictEqual(bo.pinCount, 1);
    dmaBufVunmap(buf, map);
    buf.resv.unlock();
    await buf2.resv.lock(null);
    const map2 = await dmaBufVmap(buf2);
    strictEqual(map2.isIomem, false);
    dmaBufVunmap(buf2, map2);
    buf2.resv.unlock();
  });
  strictEqual(bo.pinCount, 0);
  strictEqual(bo2.placement, "GTT");
});

Deno.test("back-to-back moves wait for ghost VRAM instead of failing -ENOMEM", async () => {
  const { world, gpu } = setup(16 << 20);
  const bo = gpu.boCreate(4 << 20);
  const sum = await world.runTask("mover", async () => {
    await gpu.fill(bo, 0x5a);
    for (let c = 0; c < 12; c++) {
      await bo.resv.lock(null);
      await gpu.validate(bo, c % 2 === 0 ? GPU_DOMAIN_GTT : GPU_DOMAIN_VRAM);
      bo.resv.unlock();
    }
    const j = await gpu.checksum(bo);
    await j.fence.wait(false);
    return j.result;
  });
  strictEqual(bo.placement, "VRAM");
  strictEqual(sum, gpuChecksumOf(new Uint8Array(4 << 20).fill(0x5a)), "12 copies kept the bytes");
  strictEqual(gpu.vram.usedPages, 1024, "every ghost was freed");
  deepStrictEqual(world.check(), []);
});

Deno.test("a static importer: the core pins on map, amdgpu pins into GTT and waits", async () => {
  const { dmaBufAttach } = await import("@dmalab/dma-buf");
  const { world, m, gpu } = setup();
  const bo = gpu.boCreate(1 << 20);
  const buf = gpuBoExport(gpu, bo);
  const seen = await world.runTask("static", async () => {
    await gpu.fill(bo, 0x44);
    const at = await dmaBufAttach(buf, m.nic); // no importer ops: not dynamic, no peer2peer
    const sgt = await at.mapUnlocked("DMA_TO_DEVICE"); // pin + map + wait for KERNEL fences
    const during = { placement: bo.placement, pins: bo.pinCount };
    await at.unmapUnlocked(sgt, "DMA_TO_DEVICE");
    await at.detach();
    return during;
  });
  deepStrictEqual(seen, { placement: "GTT", pins: 1 });
  strictEqual(bo.pinCount, 0, "unmap dropped the implicit pin");
  strictEqual(world.mem.readU8(BigInt(bo.ranges[0]!.phys)), 0x44, "the move copied the bytes");
  deepStrictEqual(world.check(), []);
});
