import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { Device, dmaBitMask, isErrno, Kernel } from "@dmalab/kernel";
import { deviceDmaRead, deviceDmaWrite } from "@dmalab/dma-api";
import { iommuSetup } from "@dmalab/iommu";
import {
  defaultMachine,
  pcimP2pdmaInit,
  pcimP2pdmaProvider,
  PciP2pdmaMapType,
} from "@dmalab/pci-p2p";
import {
  type DmaBuf,
  type DmaBufDmaSgt,
  dmaBufDynamicAttach,
  dmaBufExport,
  dmaBufFreeSgt,
  dmaBufPhysVecToSgt,
  type PhysVec,
  UINT_MAX,
} from "../mod.ts";

function setup(iommu: boolean) {
  const world = new Kernel();
  const m = defaultMachine(world, { iommu });
  if (iommu) iommuSetup(world, { strict: true });
  for (const d of [m.nic, m.nic2, m.nvme]) d.setMaskAndCoherent(dmaBitMask(64));
  pcimP2pdmaInit(m.gpu);
  const provider = pcimP2pdmaProvider(m.gpu, 1)!;
  const bar = m.gpu.bars[1]!;
  return { world, m, provider, barStart: bar.start! };
}

/** A BAR exporter like vfio-pci's: map_dma_buf = dma_buf_phys_vec_to_sgt. */
function barExporter(
  world: Kernel,
  provider: ReturnType<typeof pcimP2pdmaProvider>,
  vec: PhysVec[],
): DmaBuf {
  const size = vec.reduce((a, v) => a + v.len, 0);
  return dmaBufExport(world, {
    expName: "vfio_pci",
    size,
    priv: {},
    ops: {
      mapDmaBuf: (a, dir) => dmaBufPhysVecToSgt(a, provider, vec, size, dir),
      unmapDmaBuf: (a, sgt, dir) => dmaBufFreeSgt(a, sgt, dir),
      release: () => {},
    },
  });
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("dma_buf_phys_vec_to_sgt", async (t) => {
  await t.step(
    "BUS_ADDR (switch-local peer): bus addresses, no IOVA, bytes land in the BAR",
    async () => {
      const { world, m, provider, barStart } = setup(false);
      const buf = barExporter(world, provider, [{ paddr: barStart, len: 1 << 20 }, {
        paddr: barStart + (4n << 20n),
        len: 8192,
      }]);
      await world.runTask("nic", async () => {
        const a = await dmaBufDynamicAttach(buf, m.nic, {
          allowPeer2peer: true,
          invalidateMappings: () => {},
        }, null);
        await buf.resv.lock(null);
        const sgt = await a.map("DMA_BIDIRECTIONAL");
        strictEqual(sgt.nents, 2);
        strictEqual(sgt.sgl[0]!.dmaAddress, barStart + provider.busOffset);
        strictEqual(sgt.sgl[1]!.dmaLength, 8192);
        const orig = (sgt as unknown as { original: DmaBufDmaSgt }).original;
        strictEqual(orig.mapType, PciP2pdmaMapType.BUS_ADDR);
        strictEqual(orig.origNents, 0);
        strictEqual(orig.sgl[0]!.page, null);
        deviceDmaWrite(m.nic, sgt.sgl[1]!.dmaAddress, enc("p2p!"));
        a.unmap(sgt, "DMA_BIDIRECTIONAL");
        buf.resv.unlock();
      });
      strictEqual(dec(world.mem.read(barStart + (4n << 20n), 4)), "p2p!");
    },
  );
  await t.step("THRU_HOST_BRIDGE with an IOMMU: one contiguous IOVA over all ranges", async () => {
    const { world, m, provider, barStart } = setup(true);
    const vec = [{ paddr: barStart, len: 64 << 10 }, {
      paddr: barStart + (1n << 20n),
      len: 64 << 10,
    }];
    const buf = barExporter(world, provider, vec);
    await world.runTask("nvme", async () => {
      const a = await dmaBufDynamicAttach(buf, m.nic2, {
        allowPeer2peer: true,
        invalidateMappings: () => {},
      }, null);
      await buf.resv.lock(null);
      const sgt = await a.map("DMA_BIDIRECTIONAL");
      strictEqual(sgt.nents, 1);
      strictEqual(sgt.sgl[0]!.dmaLength, 128 << 10);
      const orig = (sgt as unknown as { original: DmaBufDmaSgt }).original;
      strictEqual(orig.mapType, PciP2pdmaMapType.THRU_HOST_BRIDGE);
      world.mem.write(barStart + (1n << 20n), enc("second"));
      strictEqual(
        dec(deviceDmaRead(m.nic2, sgt.sgl[0]!.dmaAddress + BigInt(64 << 10), 6)),
        "second",
      );
      a.unmap(sgt, "DMA_BIDIRECTIONAL");
      buf.resv.unlock();
    });
  });
  await t.step(
    "THRU_HOST_BRIDGE without an IOMMU: dma_map_phys(DMA_ATTR_MMIO) per range",
    async () => {
      const { world, m, provider, barStart } = setup(false);
      const buf = barExporter(world, provider, [{ paddr: barStart, len: 4096 }, {
        paddr: barStart + 65536n,
        len: 4096,
      }]);
      await world.runTask("nic2", async () => {
        const a = await dmaBufDynamicAttach(buf, m.nic2, {
          allowPeer2peer: true,
          invalidateMappings: () => {},
        }, null);
        const sgt = await a.mapUnlocked("DMA_TO_DEVICE");
        deepStrictEqual(sgt.sgl.map((s) => s.dmaAddress), [barStart, barStart + 65536n]);
        await a.unmapUnlocked(sgt, "DMA_TO_DEVICE");
      });
    },
  );
  await t.step("a device that cannot reach the provider: -EINVAL", async () => {
    const { world, provider, barStart } = setup(false);
    const plat = new Device(world, "platform-dev", { dmaMask: dmaBitMask(64) });
    const buf = barExporter(world, provider, [{ paddr: barStart, len: 4096 }]);
    await world.runTask("plat", async () => {
      const a = await dmaBufDynamicAttach(buf, plat, {
        allowPeer2peer: true,
        invalidateMappings: () => {},
      }, null);
      await rejects(a.mapUnlocked("DMA_TO_DEVICE"), (e) => isErrno(e, "EINVAL"));
    });
  });
  await t.step(
    "dma_map_phys failing is -ENOMEM (dma_mapping_error), nothing left mapped",
    async () => {
      const world = new Kernel({ strict: false });
      const m = defaultMachine(world, { iommu: false });
      pcimP2pdmaInit(m.gpu);
      const provider = pcimP2pdmaProvider(m.gpu, 1)!;
      const barStart = m.gpu.bars[1]!.start!;
      ok(barStart >= 1n << 32n); // beyond nic2's default 32-bit mask: dma-direct refuses it
      const buf = barExporter(world, provider, [{ paddr: barStart, len: 4096 }]);
      await world.runTask("nic2", async () => {
        const a = await dmaBufDynamicAttach(buf, m.nic2, {
          allowPeer2peer: true,
          invalidateMappings: () => {},
        }, null);
        await rejects(a.mapUnlocked("DMA_TO_DEVICE"), (e) => isErrno(e, "ENOMEM"));
        strictEqual(buf.outstandingMappings, 0);
        await a.detach();
      });
    },
  );
  await t.step(
    "no ranges (or only empty ones): sg_alloc_table of 0 entries is -EINVAL",
    async () => {
      const { world, m, provider, barStart } = setup(false);
      for (const vec of [[], [{ paddr: barStart, len: 0 }]]) {
        const buf = barExporter(world, provider, vec);
        await world.runTask("nic", async () => {
          const a = await dmaBufDynamicAttach(buf, m.nic, {
            allowPeer2peer: true,
            invalidateMappings: () => {},
          }, null);
          await rejects(a.mapUnlocked("DMA_BIDIRECTIONAL"), (e) => isErrno(e, "EINVAL"));
          await a.detach();
        });
        buf.put();
      }
    },
  );
  await t.step("ranges of 4 GiB and more are split at UINT_MAX", async () => {
    const { world, m, provider, barStart } = setup(false);
    const buf = barExporter(world, provider, [{ paddr: barStart, len: 8 * 2 ** 30 }]);
    await world.runTask("nic", async () => {
      const a = await dmaBufDynamicAttach(buf, m.nic, {
        allowPeer2peer: true,
        invalidateMappings: () => {},
      }, null);
      const sgt = await a.mapUnlocked("DMA_BIDIRECTIONAL");
      deepStrictEqual(sgt.sgl.map((s) => s.dmaLength), [UINT_MAX, UINT_MAX, 2]);
      strictEqual(sgt.sgl[1]!.dmaAddress, barStart + provider.busOffset + BigInt(UINT_MAX));
      await a.unmapUnlocked(sgt, "DMA_BIDIRECTIONAL");
    });
  });
  await t.step("without the reservation lock: lockdep report", async () => {
    const { world, m, provider, barStart } = setup(false);
    const buf = barExporter(world, provider, [{ paddr: barStart, len: 4096 }]);
    await world.runTask("nic", async () => {
      const a = await dmaBufDynamicAttach(buf, m.nic, { allowPeer2peer: true }, null);
      let err: unknown = null;
      try {
        dmaBufPhysVecToSgt(a, provider, [{ paddr: barStart, len: 4096 }], 4096, "DMA_TO_DEVICE");
      } catch (e) {
        err = e;
      }
      ok(err instanceof Error && err.message.includes("dma_buf_phys_vec_to_sgt"));
    });
  });
});
