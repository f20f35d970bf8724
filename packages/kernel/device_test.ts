import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { Bus, Device, dmaBitMask } from "./device.ts";
import { KernelError } from "./errors.ts";
import { Kernel } from "./world.ts";

function errno(fn: () => unknown, code: string): void {
  throws(fn, (e: unknown) => e instanceof KernelError && e.code === code);
}

Deno.test("driver model: devices and buses", async (t) => {
  await t.step("device_add / device_del run the bus notifiers in order", () => {
    const w = new Kernel();
    const pci = new Bus("pci");
    const seen: string[] = [];
    pci.registerNotifier((action, dev) => seen.push(`${action} ${dev}`));
    const bridge = new Device(w, "0000:00:01.0", { bus: pci });
    const ep = new Device(w, "0000:01:00.0", { bus: pci, parent: bridge, numaNode: 1 });
    bridge.add();
    ep.add();
    deepStrictEqual(pci.devices, [bridge, ep]);
    strictEqual(ep.parent, bridge);
    strictEqual(ep.numaNode, 1);
    ep.del();
    deepStrictEqual(seen, [
      "add_device 0000:00:01.0",
      "add_device 0000:01:00.0",
      "del_device 0000:01:00.0",
    ]);
    deepStrictEqual(pci.devices, [bridge]);
    ok(!ep.registered);
  });
  await t.step(
    "adding twice is -EEXIST, deleting an unregistered device -ENODEV; state intact",
    () => {
      const w = new Kernel();
      const bus = new Bus("platform");
      const d = new Device(w, "dev", { bus });
      errno(() => d.del(), "ENODEV");
      d.add();
      errno(() => d.add(), "EEXIST");
      deepStrictEqual(bus.devices, [d]);
      ok(d.registered);
    },
  );
  await t.step("DMA masks: defaults 32 bits; below 24 bits is -EIO and leaves the mask", () => {
    const w = new Kernel();
    const d = new Device(w, "nic");
    strictEqual(d.dmaMask, dmaBitMask(32));
    strictEqual(d.coherentDmaMask, dmaBitMask(32));
    d.setMaskAndCoherent(dmaBitMask(64));
    strictEqual(d.dmaMask, 0xffff_ffff_ffff_ffffn);
    errno(() => d.setMask(dmaBitMask(16)), "EIO");
    errno(() => d.setCoherentMask(dmaBitMask(20)), "EIO");
    strictEqual(d.dmaMask, dmaBitMask(64));
    strictEqual(d.coherentDmaMask, dmaBitMask(64));
    strictEqual(dmaBitMask(40), (1n << 40n) - 1n);
  });
  await t.step("a device owns MMIO regions in its world's physical memory", () => {
    const w = new Kernel();
    const d = new Device(w, "gpu");
    const bar = w.mem.registerMmio({
      name: "gpu BAR0",
      start: 0xa0_0000_0000n,
      size: 1n << 28n,
      owner: d,
    });
    strictEqual(w.mem.mmioAt(0xa0_0000_1000n)?.owner, d);
    w.mem.unregisterMmio(bar);
    strictEqual(w.mem.mmioAt(0xa0_0000_1000n), null);
  });
});
