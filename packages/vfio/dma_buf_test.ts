import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { Kernel } from "@dmalab/kernel";
import { dmaBufAttach, dmaBufDynamicAttach, dmaBufGet, dmaBufRevokeState } from "@dmalab/dma-buf";
import { defaultMachine } from "@dmalab/pci-p2p";
import {
  PCI_COMMAND,
  PCI_COMMAND_MEMORY,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  type VfioDeviceFeatureDmaBuf,
  VfioPciCoreDevice,
  vfioPciCoreFeatureDmaBuf,
  vfioPciDmaBufIommufdMap,
} from "./mod.ts";

const GET = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
const GiB = 2 ** 30;
const errno = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

function setup(variants: Record<string, string>) {
  const world = new Kernel({ variants: { "dma-buf.pfn": "pfn-attachment", ...variants } });
  const m = defaultMachine(world);
  const vdev = new VfioPciCoreDevice(world, m.gpu);
  return { world, m, vdev };
}

const req = (o: Partial<VfioDeviceFeatureDmaBuf> = {}): VfioDeviceFeatureDmaBuf => ({
  regionIndex: 1,
  openFlags: 2,
  flags: 0,
  dmaRanges: [{ offset: 0, length: GiB }],
  ...o,
});

Deno.test("VFIO_DEVICE_FEATURE_DMA_BUF validation (vfio_pci_core_feature_dma_buf)", async (t) => {
  const { world, vdev } = setup({});
  await world.runTask("qemu", async () => {
    await t.step("registration gone (device not open) is -ENODEV", async () => {
      await rejects(vfioPciCoreFeatureDmaBuf(vdev, GET, req()), errno("ENODEV"));
    });
    await vdev.open();
    await t.step("PROBE answers, SET is -EINVAL", async () => {
      strictEqual(
        await vfioPciCoreFeatureDmaBuf(vdev, GET | VFIO_DEVICE_FEATURE_PROBE, req()),
        null,
      );
      await rejects(
        vfioPciCoreFeatureDmaBuf(
          vdev,
          VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_BUF,
          req(),
        ),
        errno("EINVAL"),
      );
    });
    await t.step("nr_ranges 0 and flags != 0 are -EINVAL", async () => {
      await rejects(vfioPciCoreFeatureDmaBuf(vdev, GET, req({ dmaRanges: [] })), errno("EINVAL"));
      await rejects(vfioPciCoreFeatureDmaBuf(vdev, GET, req({ flags: 1 })), errno("EINVAL"));
    });
    await t.step("region_index >= ROM is -ENODEV", async () => {
      await rejects(vfioPciCoreFeatureDmaBuf(vdev, GET, req({ regionIndex: 6 })), errno("ENODEV"));
    });
    await t.step("unaligned or empty ranges, length reaching bit 63 are -EINVAL", async () => {
      await rejects(
        vfioPciCoreFeatureDmaBuf(vdev, GET, req({ dmaRanges: [{ offset: 100, length: 4096 }] })),
        errno("EINVAL"),
      );
      await rejects(
        vfioPciCoreFeatureDmaBuf(vdev, GET, req({ dmaRanges: [{ offset: 0, length: 0 }] })),
        errno("EINVAL"),
      );
      await rejects(
        vfioPciCoreFeatureDmaBuf(
          vdev,
          GET,
          req({ dmaRanges: [{ offset: 0, length: 2 ** 62 }, { offset: 0, length: 2 ** 62 }] }),
        ),
        errno("EINVAL"),
      );
    });
    await t.step("a range past the BAR is -EINVAL, one that overflows is -EOVERFLOW", async () => {
      await rejects(
        vfioPciCoreFeatureDmaBuf(
          vdev,
          GET,
          req({ dmaRanges: [{ offset: 127 * GiB, length: 2 * GiB }] }),
        ),
        errno("EINVAL"),
      );
      await rejects(
        vfioPciCoreFeatureDmaBuf(
          vdev,
          GET,
          req({ dmaRanges: [{ offset: 2 ** 64 - 2 ** 45, length: 2 ** 45 }] }),
        ),
        errno("EOVERFLOW"),
      );
    });
    await t.step("a BAR without a P2P provider (not a memory BAR) is -EINVAL", async () => {
      await rejects(vfioPciCoreFeatureDmaBuf(vdev, GET, req({ regionIndex: 5 })), errno("EINVAL"));
    });
    await t.step("success returns an fd for the buffer", async () => {
      const e = (await vfioPciCoreFeatureDmaBuf(vdev, GET, req()))!;
      const b = dmaBufGet(world, e.fd);
      strictEqual(b, e.dmabuf);
      strictEqual(b.size, GiB);
      b.put();
    });
  });
});

for (const version of ["6.19", "7.1"]) {
  Deno.test(`vfio dma-buf exporter rules (dma-buf.version ${version})`, async (t) => {
    const { world, m, vdev } = setup({ "dma-buf.version": version });
    await world.runTask("qemu", async () => {
      await vdev.open();
      const e = (await vfioPciCoreFeatureDmaBuf(vdev, GET, req()))!;
      const buf = e.dmabuf;
      let notified = 0;
      const importer = {
        allowPeer2peer: true,
        invalidateMappings: () => notified++,
        moveNotify: () => notified++,
      };
      await t.step("static importers (no peer2peer) are -EOPNOTSUPP", async () => {
        await rejects(dmaBufAttach(buf, m.nic), errno("EOPNOTSUPP"));
      });
      await t.step("pin: refused in 6.19, allowed for a revocable importer in 7.1", async () => {
        const a = await dmaBufDynamicAttach(buf, m.nic, importer, null);
        await buf.resv.lock(null);
        if (version === "6.19") await rejects(a.pin(), errno("EOPNOTSUPP"));
        else {
          await a.pin();
          a.unpin();
        }
        buf.resv.unlock();
        await a.detach();
      });
      await t.step(
        "memory disable revokes (notify), attach is -ENODEV, enable unrevokes",
        async () => {
          const a = await dmaBufDynamicAttach(buf, m.nic, importer, null);
          await vdev.configWrite(PCI_COMMAND, 2, 0);
          ok(e.priv.revoked);
          strictEqual(notified, 1);
          strictEqual(dmaBufRevokeState(buf), "revoked");
          await rejects(dmaBufDynamicAttach(buf, m.nic, importer, null), errno("ENODEV"));
          await buf.resv.lock(null);
          throws(() => vfioPciDmaBufIommufdMap(a), errno("ENODEV"));
          buf.resv.unlock();
          await vdev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
          ok(!e.priv.revoked);
          await buf.resv.lock(null);
          strictEqual(vfioPciDmaBufIommufdMap(a).len, GiB);
          buf.resv.unlock();
          await a.detach();
        },
      );
      await t.step("function reset revokes around the FLR and unrevokes after", async () => {
        const a = await dmaBufDynamicAttach(buf, m.nic, importer, null);
        const before = notified;
        await vdev.reset();
        // 6.19 calls move_notify on revoke and on unrevoke; 7.1 unrevokes silently.
        strictEqual(notified, before + (version === "6.19" ? 2 : 1));
        ok(!e.priv.revoked);
        await a.detach();
      });
      await t.step("a multi-range buffer is -EOPNOTSUPP for the iommufd interconnect", async () => {
        const two = (await vfioPciCoreFeatureDmaBuf(
          vdev,
          GET,
          req({
            dmaRanges: [{ offset: 0, length: 4096 }, { offset: 8192, length: 4096 }],
          }),
        ))!;
        const a = await dmaBufDynamicAttach(two.dmabuf, m.nic, importer, null);
        await two.dmabuf.resv.lock(null);
        throws(() => vfioPciDmaBufIommufdMap(a), errno("EOPNOTSUPP"));
        two.dmabuf.resv.unlock();
        await a.detach();
      });
      await t.step("close revokes for good", async () => {
        await vdev.close();
        strictEqual(dmaBufRevokeState(buf), "revoked-permanent");
        strictEqual(e.priv.vdev, null);
        await rejects(dmaBufDynamicAttach(buf, m.nic, importer, null), errno("ENODEV"));
      });
    });
  });
}

Deno.test("v7.1: importers that cannot be revoked are refused", async () => {
  const { world, m, vdev } = setup({ "dma-buf.version": "7.1" });
  await world.runTask("qemu", async () => {
    await vdev.open();
    const e = (await vfioPciCoreFeatureDmaBuf(vdev, GET, req()))!;
    await rejects(
      dmaBufDynamicAttach(e.dmabuf, m.nic, { allowPeer2peer: true }, null),
      errno("EOPNOTSUPP"),
    );
  });
});

Deno.test("D3hot and hot reset revoke; a bus reset of a device set unrevokes each with memory enabled", async () => {
  const world = new Kernel({ variants: { "dma-buf.pfn": "pfn-attachment" } });
  const m = defaultMachine(world);
  const gpu = new VfioPciCoreDevice(world, m.gpu);
  const nic = new VfioPciCoreDevice(world, m.nic);
  await world.runTask("qemu", async () => {
    await gpu.open();
    await nic.open();
    const e = (await vfioPciCoreFeatureDmaBuf(gpu, GET, req()))!;
    const states: string[] = [];
    const a = await dmaBufDynamicAttach(e.dmabuf, m.nic, {
      allowPeer2peer: true,
      invalidateMappings: () => states.push(dmaBufRevokeState(e.dmabuf)),
    }, null);
    await gpu.configWrite(0x44, 2, 3); // PMCSR: D3hot
    strictEqual(dmaBufRevokeState(e.dmabuf), "revoked");
    await gpu.configWrite(0x44, 2, 0); // back to D0: memory enabled again
    strictEqual(dmaBufRevokeState(e.dmabuf), "ok");
    const t0 = world.sched.now;
    await VfioPciCoreDevice.hotReset([gpu, nic]);
    ok(world.sched.now - t0 >= 100e6);
    strictEqual(dmaBufRevokeState(e.dmabuf), "ok");
    strictEqual(gpu.stats.resets, 1);
    strictEqual(nic.stats.resets, 1);
    deepStrictEqual(states, ["revoked", "revoked"]);
    await a.detach();
  });
});

Deno.test("vfio_check_feature: a bare PROBE (no GET) reports DMA_BUF as supported", async () => {
  const { world, vdev } = setup({});
  await world.runTask("qemu", async () => {
    await vdev.open();
    strictEqual(
      await vfioPciCoreFeatureDmaBuf(
        vdev,
        VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_DMA_BUF,
        req(),
      ),
      null,
    );
    // Neither GET nor SET without PROBE stays -EINVAL.
    await rejects(
      vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_DMA_BUF, req()),
      errno("EINVAL"),
    );
  });
});

Deno.test("vfio_pci_dma_buf_iommufd_map: a revoked multi-range buffer is -ENODEV before the range rule", async () => {
  const { world, m, vdev } = setup({});
  await world.runTask("qemu", async () => {
    await vdev.open();
    const two = (await vfioPciCoreFeatureDmaBuf(
      vdev,
      GET,
      req({ dmaRanges: [{ offset: 0, length: 4096 }, { offset: 8192, length: 4096 }] }),
    ))!;
    const a = await dmaBufDynamicAttach(two.dmabuf, m.nic, {
      allowPeer2peer: true,
      moveNotify: () => {},
    }, null);
    await vdev.configWrite(PCI_COMMAND, 2, 0);
    await two.dmabuf.resv.lock(null);
    throws(() => vfioPciDmaBufIommufdMap(a), errno("ENODEV"));
    two.dmabuf.resv.unlock();
    await vdev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    await two.dmabuf.resv.lock(null);
    throws(() => vfioPciDmaBufIommufdMap(a), errno("EOPNOTSUPP"));
    two.dmabuf.resv.unlock();
    await a.detach();
  });
});

Deno.test("v7.1 vfio_pci_dma_buf_attach: revoked is -ENODEV before the revocable test", async () => {
  const { world, m, vdev } = setup({ "dma-buf.version": "7.1" });
  await world.runTask("qemu", async () => {
    await vdev.open();
    const e = (await vfioPciCoreFeatureDmaBuf(vdev, GET, req()))!;
    await vdev.configWrite(PCI_COMMAND, 2, 0);
    await rejects(
      dmaBufDynamicAttach(e.dmabuf, m.nic, { allowPeer2peer: true }, null),
      errno("ENODEV"),
    );
    await vdev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    await rejects(
      dmaBufDynamicAttach(e.dmabuf, m.nic, { allowPeer2peer: true }, null),
      errno("EOPNOTSUPP"),
    );
  });
});

Deno.test("vfio_pci_dev_set_hot_reset: -EBUSY unrevokes the devices already taken; success puts every device in D0", async () => {
  const world = new Kernel({ variants: { "dma-buf.pfn": "pfn-attachment" } });
  const m = defaultMachine(world);
  const gpu = new VfioPciCoreDevice(world, m.gpu);
  const nic = new VfioPciCoreDevice(world, m.nic);
  await world.runTask("qemu", async () => {
    await gpu.open();
    await nic.open();
    const e = (await vfioPciCoreFeatureDmaBuf(gpu, GET, req()))!;
    await nic.memoryLock.downWrite(); // contention on the second device
    await rejects(VfioPciCoreDevice.hotReset([gpu, nic]), errno("EBUSY"));
    nic.memoryLock.upWrite();
    strictEqual(dmaBufRevokeState(e.dmabuf), "ok", "the undo walk unrevoked the gpu");
    strictEqual(gpu.stats.resets, 0);
    ok(gpu.memoryLock.downWriteTrylock(), "the gpu's memory_lock was released");
    gpu.memoryLock.upWrite();

    await gpu.configWrite(0x44, 2, 3); // PMCSR: D3hot
    strictEqual(dmaBufRevokeState(e.dmabuf), "revoked");
    await VfioPciCoreDevice.hotReset([gpu, nic]);
    strictEqual(gpu.powerState, 0, "the reset path set D0");
    strictEqual(dmaBufRevokeState(e.dmabuf), "ok");
  });
});

Deno.test("vfio_ioctl_device_feature: unknown flag bits are -EINVAL before the feature dispatch", async () => {
  const { world, vdev } = setup({});
  await world.runTask("qemu", async () => {
    await vdev.open();
    await rejects(vfioPciCoreFeatureDmaBuf(vdev, GET | (1 << 20), req()), errno("EINVAL"));
    // Even with a feature the device does not have (-ENOTTY otherwise).
    await rejects(
      vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_GET | 99 | (1 << 20), req()),
      errno("EINVAL"),
    );
    await rejects(
      vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_GET | 99, req()),
      errno("ENOTTY"),
    );
  });
});
