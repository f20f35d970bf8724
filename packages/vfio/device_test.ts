import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { Kernel, MAP_SHARED, MmStruct } from "@dmalab/kernel";
import { defaultMachine } from "@dmalab/pci-p2p";
import {
  EXP_CAP_OFFSET,
  PCI_COMMAND,
  PCI_COMMAND_MEMORY,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_PM_CTRL,
  PM_CAP_OFFSET,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VfioPciCoreDevice,
  vfioPciIndexToOffset,
} from "./mod.ts";

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

Deno.test("vfio-pci regions, config space and memory enable", async (t) => {
  const world = new Kernel();
  const m = defaultMachine(world);
  const vdev = new VfioPciCoreDevice(world, m.gpu);
  const bar1 = vdev.bars[1]!;
  await world.runTask("qemu", async () => {
    await vdev.open();
    await t.step("GET_INFO and GET_REGION_INFO", () => {
      ok(vdev.getInfo().flags & VFIO_DEVICE_FLAGS_RESET);
      const r1 = vdev.getRegionInfo(1);
      strictEqual(r1.size, 128 * 2 ** 30);
      strictEqual(r1.offset, vfioPciIndexToOffset(1));
      strictEqual(
        r1.flags,
        VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP,
      );
      strictEqual(vdev.getRegionInfo(VFIO_PCI_CONFIG_REGION_INDEX).size, 256);
      strictEqual(vdev.getRegionInfo(6).flags, 0);
    });
    await t.step("region index beyond num_regions is -EINVAL", () => {
      let err: unknown;
      try {
        vdev.getRegionInfo(9);
      } catch (e) {
        err = e;
      }
      ok(code("EINVAL")(err));
    });
    await t.step("BAR read/write through the fd; -EIO with memory disabled", async () => {
      await vdev.regionWrite(vfioPciIndexToOffset(1) + 0x100, new Uint8Array([1, 2, 3]));
      deepStrictEqual([...world.mem.read(bar1.start + 0x100, 3)], [1, 2, 3]);
      await vdev.configWrite(PCI_COMMAND, 2, 0);
      strictEqual(vdev.memoryEnabled, false);
      await rejects(vdev.regionRead(vfioPciIndexToOffset(1), 4), code("EIO"));
      // The hardware does not decode: a peer read gets all ones.
      deepStrictEqual([...world.mem.read(bar1.start + 0x100, 2)], [0xff, 0xff]);
      await vdev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
      deepStrictEqual([...(await vdev.regionRead(vfioPciIndexToOffset(1) + 0x100, 3))], [1, 2, 3]);
    });
    await t.step("D3hot disables memory, D0 restores it", async () => {
      await vdev.configWrite(PM_CAP_OFFSET + PCI_PM_CTRL, 2, 3);
      strictEqual(vdev.memoryEnabled, false);
      await vdev.configWrite(PM_CAP_OFFSET + PCI_PM_CTRL, 2, 0);
      strictEqual(vdev.memoryEnabled, true);
    });
    await t.step(
      "FLR through DEVCTL and VFIO_DEVICE_RESET take virtual time, keep memory enabled",
      async () => {
        const t0 = world.sched.now;
        await vdev.configWrite(EXP_CAP_OFFSET + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR);
        await vdev.reset();
        strictEqual(vdev.stats.resets, 2);
        ok(world.sched.now - t0 >= 200e6);
        strictEqual(vdev.memoryEnabled, true);
      },
    );
  });
});

Deno.test("BAR mmap: VM_PFNMAP, huge faults, SIGBUS and zap on memory disable", async (t) => {
  const world = new Kernel();
  const m = defaultMachine(world);
  const vdev = new VfioPciCoreDevice(world, m.gpu);
  const mm = new MmStruct(world, "qemu");
  await world.runTask("qemu", async () => {
    await vdev.open();
    const len = 4 << 20;
    const addr = await mm.mmap({
      length: len,
      file: vdev.file,
      flags: MAP_SHARED,
      offset: vfioPciIndexToOffset(1),
    });
    await t.step("user writes land in the BAR", async () => {
      await mm.write(addr + 0x2000, new Uint8Array([7, 8]));
      deepStrictEqual([...world.mem.read(vdev.bars[1]!.start + 0x2000, 2)], [7, 8]);
      ok(vdev.stats.faults >= 1);
      ok(mm.translate(addr)?.special);
    });
    await t.step(
      "memory disable zaps the mapping; the next fault is SIGBUS (-EFAULT)",
      async () => {
        await vdev.configWrite(PCI_COMMAND, 2, 0);
        strictEqual(mm.translate(addr + 0x2000), null);
        await rejects(mm.read(addr + 0x2000, 1), code("EFAULT"));
        ok(vdev.stats.sigbus >= 1);
        await vdev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
        deepStrictEqual([...(await mm.read(addr + 0x2000, 2))], [7, 8]);
      },
    );
    await t.step("private mapping and out-of-range offset are -EINVAL", async () => {
      await rejects(
        mm.mmap({ length: 4096, file: vdev.file, flags: 0x02, offset: vfioPciIndexToOffset(1) }),
        code("EINVAL"),
      );
      await rejects(
        mm.mmap({
          length: 4096,
          file: vdev.file,
          flags: MAP_SHARED,
          offset: vfioPciIndexToOffset(6),
        }),
        code("EINVAL"),
      );
    });
  });
});

Deno.test("vfio_pci_bar_rw and vfio_config_do_rw bounds: short BAR access at the end, -EFAULT past config space", async () => {
  const world = new Kernel();
  const m = defaultMachine(world);
  const vdev = new VfioPciCoreDevice(world, m.gpu);
  const bar1 = vdev.bars[1]!;
  await world.runTask("qemu", async () => {
    await vdev.open();
    const end = vfioPciIndexToOffset(1) + bar1.size;
    // A write running past the BAR's end writes what fits and says so.
    strictEqual(await vdev.regionWrite(end - 2, new Uint8Array([7, 8, 9, 10])), 2);
    deepStrictEqual([...world.mem.read(bar1.start + bar1.size - 2, 2)], [7, 8]);
    const r = await vdev.regionRead(end - 2, 8);
    deepStrictEqual([...r], [7, 8], "the read is short, not -EINVAL");
    // Starting at the end is -EINVAL.
    await rejects(vdev.regionRead(end, 1), code("EINVAL"));
    // Config space: an access past cfg_size is -EFAULT.
    const cfg = vfioPciIndexToOffset(VFIO_PCI_CONFIG_REGION_INDEX);
    await rejects(vdev.regionRead(cfg + 254, 4), code("EFAULT"));
    strictEqual((await vdev.regionRead(cfg + 252, 4)).length, 4);
  });
});

Deno.test("vfio_pci_ioctl_get_region_info: the VGA region of a non-VGA device is -EINVAL", async () => {
  const world = new Kernel();
  const vdev = new VfioPciCoreDevice(world, defaultMachine(world).gpu);
  await world.runTask("qemu", async () => {
    await vdev.open();
    throws(() => vdev.getRegionInfo(8), code("EINVAL"));
    strictEqual(vdev.getRegionInfo(6).size, 0, "a missing ROM reads as size 0");
  });
});

Deno.test("vfio_basic_config_write: a one-byte write to PCI_COMMAND clears and sets MEMORY", async () => {
  const world = new Kernel();
  const vdev = new VfioPciCoreDevice(world, defaultMachine(world).gpu);
  await world.runTask("qemu", async () => {
    await vdev.open();
    const cfg = vfioPciIndexToOffset(VFIO_PCI_CONFIG_REGION_INDEX);
    const zaps = vdev.stats.zaps;
    strictEqual(await vdev.regionWrite(cfg + PCI_COMMAND, new Uint8Array([0])), 1);
    strictEqual(vdev.memoryEnabled, false);
    strictEqual(vdev.stats.zaps, zaps + 1, "the BARs were zapped");
    await rejects(vdev.regionRead(vfioPciIndexToOffset(1), 4), code("EIO"));
    await vdev.regionWrite(cfg + PCI_COMMAND, new Uint8Array([PCI_COMMAND_MEMORY]));
    strictEqual(vdev.memoryEnabled, true);
  });
});
