// CONFIG_DMA_API_DEBUG checks (kernel/dma/debug.c), one step per report.
import { ok, strictEqual, throws } from "node:assert/strict";
import { Device, dmaBitMask, Kernel, KernelBug } from "@dmalab/kernel";
import {
  dmaDebugOf,
  dmaMapPhys,
  dmaMappingError,
  dmaMapSgtable,
  dmaSyncSingleForCpu,
  dmaSyncSingleForDevice,
  dmaUnmapPhys,
  dmaUnmapSgtable,
  SgTable,
} from "./mod.ts";
import { Bus } from "@dmalab/kernel";

function setup(strict = true) {
  const world = new Kernel({ strict });
  const bus = new Bus("pci");
  const dev = new Device(world, "0000:01:00.0", { dmaMask: dmaBitMask(64), bus });
  dev.driver = "mlx5_core";
  dev.add();
  const p = world.mem.allocPages(0)!.pfn * 4096;
  return { world, dev, p };
}

function expectReport(fn: () => void, text: string): void {
  throws(
    fn,
    (e) => e instanceof KernelBug && e.kind === "dma-api-debug" && e.message.includes(text),
  );
}

Deno.test("DMA-API debug", async (t) => {
  await t.step("unmap of memory never mapped", () => {
    const { dev } = setup();
    expectReport(
      () => dmaUnmapPhys(dev, 0x1234000n, 4096, "DMA_TO_DEVICE"),
      "DMA-API: mlx5_core 0000:01:00.0: device driver tries to free DMA memory it has not allocated [device address=0x0000000001234000] [size=4096 bytes]",
    );
  });

  await t.step("size mismatch", () => {
    const { dev, p } = setup();
    const a = dmaMapPhys(dev, p, 4096, "DMA_TO_DEVICE");
    dmaMappingError(dev, a);
    expectReport(
      () => dmaUnmapPhys(dev, a, 2048, "DMA_TO_DEVICE"),
      "device driver frees DMA memory with different size [device address=0x" +
        a.toString(16).padStart(16, "0") + "] [map size=4096 bytes] [unmap size=2048 bytes]",
    );
  });

  await t.step("direction mismatch", () => {
    const { dev, p } = setup();
    const a = dmaMapPhys(dev, p, 4096, "DMA_TO_DEVICE");
    dmaMappingError(dev, a);
    expectReport(
      () => dmaUnmapPhys(dev, a, 4096, "DMA_FROM_DEVICE"),
      "[mapped with DMA_TO_DEVICE] [unmapped with DMA_FROM_DEVICE]",
    );
  });

  await t.step("mapping error never checked", () => {
    const { dev, p } = setup();
    const a = dmaMapPhys(dev, p, 4096, "DMA_TO_DEVICE");
    expectReport(
      () => dmaUnmapPhys(dev, a, 4096, "DMA_TO_DEVICE"),
      "device driver failed to check map error[device address=",
    );
  });

  await t.step("checked mapping unmaps cleanly; a second unmap is reported", () => {
    const { dev, p, world } = setup();
    const a = dmaMapPhys(dev, p, 4096, "DMA_TO_DEVICE");
    ok(!dmaMappingError(dev, a));
    dmaUnmapPhys(dev, a, 4096, "DMA_TO_DEVICE");
    strictEqual(world.bugs.length, 0);
    expectReport(
      () => dmaUnmapPhys(dev, a, 4096, "DMA_TO_DEVICE"),
      "tries to free DMA memory it has not allocated",
    );
  });

  await t.step("syncs: unmapped, outside the mapping, wrong direction", () => {
    const { dev, p } = setup();
    expectReport(
      () => dmaSyncSingleForCpu(dev, 0x5000n, 64, "DMA_FROM_DEVICE"),
      "device driver tries to sync DMA memory it has not allocated [device address=0x0000000000005000] [size=64 bytes]",
    );
    const a = dmaMapPhys(dev, p, 4096, "DMA_FROM_DEVICE");
    dmaMappingError(dev, a);
    expectReport(
      () => dmaSyncSingleForCpu(dev, a + 4000n, 200, "DMA_FROM_DEVICE"),
      "device driver syncs DMA memory outside allocated range",
    );
    expectReport(
      () => dmaSyncSingleForDevice(dev, a, 64, "DMA_TO_DEVICE"),
      "device driver syncs DMA memory with different direction",
    );
    dmaSyncSingleForCpu(dev, a, 4096, "DMA_FROM_DEVICE");
    dmaUnmapPhys(dev, a, 4096, "DMA_FROM_DEVICE");
  });

  await t.step("sg list unmapped with a different entry count", () => {
    const { dev, world } = setup();
    const pages = [0, 1, 2].map(() => world.mem.allocPages(0)!.pfn * 4096);
    const sgt = new SgTable(pages.map((phys) => ({ phys, length: 4096 })));
    dmaMapSgtable(dev, sgt, "DMA_TO_DEVICE");
    sgt.sgl.pop();
    expectReport(
      () => dmaUnmapSgtable(dev, sgt, "DMA_TO_DEVICE"),
      "device driver frees DMA sg list with different entry count [map count=3] [unmap count=2]",
    );
  });

  await t.step("leaks reported when the device goes away", () => {
    const { dev, p, world } = setup(false);
    const a = dmaMapPhys(dev, p, 4096, "DMA_BIDIRECTIONAL");
    dmaMappingError(dev, a);
    dev.del();
    ok(world.dmesg.includes(
      "DMA-API: mlx5_core 0000:01:00.0: device driver has pending DMA allocations while released from device [count=1]",
    ));
    ok(world.dmesg.includes("One of leaked entries details: [device address=0x"));
    ok(world.dmesg.includes("[mapped with DMA_BIDIRECTIONAL] [mapped as phy]"));
    strictEqual(dmaDebugOf(world).entries(dev).length, 0);
  });

  await t.step("variant dma-api.debug=0 turns the checks off", () => {
    const world = new Kernel({ variants: { "dma-api.debug": "0" } });
    const dev = new Device(world, "quiet", { dmaMask: dmaBitMask(64) });
    dmaUnmapPhys(dev, 0x1000n, 4096, "DMA_TO_DEVICE");
    strictEqual(world.bugs.length, 0);
  });
});
