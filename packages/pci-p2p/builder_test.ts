import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { Device, Kernel, KernelError } from "@dmalab/kernel";
import {
  amdWorkstationSpec,
  buildMachine,
  calcMapTypeAndDist,
  checkFabric,
  defaultMachine,
  defaultMachineSpec,
  formatBar,
  formatLspciTree,
  gpu,
  hostBridgeFn,
  intelUnlisted,
  type MachineSpec,
  nic,
  parseBdf,
  pciAllocP2pmem,
  pciFabric,
  pcimP2pdmaInit,
  pciP2pdmaAddResource,
  pciP2pdmaDistanceMany,
  pciP2pdmaEnableShow,
  pciP2pdmaEnableStore,
  pciP2pmemFind,
  pciP2pmemPublish,
  rootPort,
  server8GpuSpec,
} from "./mod.ts";

Deno.test("enumeration: bus numbers, devfn order, BAR windows, names", () => {
  const world = new Kernel();
  const m = defaultMachine(world);
  const rp = m.fabric.dev("0000:00:01.1");
  deepStrictEqual([rp.subordinate!.number, rp.subordinate!.subordinate], [1, 4]);
  deepStrictEqual(m.fabric.hostBridges[0]!.bus.devices.map((d) => d.bdf), [
    "0000:00:00.0",
    "0000:00:01.1",
    "0000:00:03.1",
  ]);
  const bar1 = m.gpu.bars[1]!;
  ok(bar1.is64 && bar1.prefetch && bar1.size === 128n << 30n);
  ok(bar1.start! >= 1n << 44n, "64-bit prefetchable BAR in the 64-bit window");
  ok(m.gpu.bars[0]!.start! < 1n << 32n, "non-prefetchable BAR below 4 GiB");
  strictEqual(
    formatBar(m.gpu.bars[0]!),
    `[mem 0x${m.gpu.bars[0]!.start!.toString(16)}-0x${
      (m.gpu.bars[0]!.start! + (16n << 20n) - 1n).toString(16)
    }]`,
  );
  strictEqual(m.gpu.parent, m.dsp[0]);
  ok(m.gpu.registered && m.gpu.bus?.name === "pci");
  deepStrictEqual(world.check(), []);
  deepStrictEqual(parseBdf("0000:c1:00.1"), { domain: 0, bus: 0xc1, devfn: 1 });
  throws(() => parseBdf("c1:20.0"), /slot/);
});

Deno.test("the JSON form builds the same machine", () => {
  for (
    const spec of [defaultMachineSpec(), server8GpuSpec(), amdWorkstationSpec({ iommu: true })]
  ) {
    const a = buildMachine(new Kernel(), spec);
    const b = buildMachine(new Kernel(), JSON.parse(JSON.stringify(spec)) as MachineSpec);
    strictEqual(formatLspciTree(b, { nn: true }), formatLspciTree(a, { nn: true }));
    deepStrictEqual(
      b.devices.map((d) => [d.name, d.acsCtrl, d.bars.map((x) => x?.start ?? null)]),
      a.devices.map((d) => [d.name, d.acsCtrl, d.bars.map((x) => x?.start ?? null)]),
    );
  }
});

Deno.test("malformed specs fail with the path of the bad node", async (t) => {
  const build = (spec: unknown) => () => buildMachine(new Kernel(), spec as MachineSpec);
  await t.step("no hostBridges", () => throws(build({}), /hostBridges must be an array/));
  await t.step(
    "devfn twice",
    () =>
      throws(
        build({ hostBridges: [{ devices: [{ slot: 1 }, { slot: 1 }] }] }),
        /hostBridges\[0\]\/1: devfn 01.0 used twice/,
      ),
  );
  await t.step(
    "bad slot",
    () => throws(build({ hostBridges: [{ devices: [{ slot: 40 }] }] }), /out of range/),
  );
  await t.step(
    "BAR not a power of two",
    () =>
      throws(
        build({ hostBridges: [{ devices: [rootPort([{ bars: [{ size: 3000 }] }])] }] }),
        /hostBridges\[0\]\/0\/0\.bars\[0\]: size 3000 is not a power of two/,
      ),
  );
  await t.step(
    "bad size text",
    () =>
      throws(
        build({ hostBridges: [{ devices: [rootPort([{ bars: [{ size: "lots" }] }])] }] }),
        /cannot parse "lots"/,
      ),
  );
  await t.step(
    "bad ACS bit",
    () =>
      throws(
        build({ hostBridges: [{ devices: [rootPort([], { acs: { cap: "SV|XX" } })] }] }),
        /unknown ACS bit "XX"/,
      ),
  );
  await t.step(
    "children under an endpoint",
    () =>
      throws(
        build({ hostBridges: [{ devices: [rootPort([{ type: "endpoint", children: [{}] }])] }] }),
        /has no secondary bus/,
      ),
  );
  await t.step(
    "bad link",
    () =>
      throws(
        build({ hostBridges: [{ devices: [rootPort([{ link: { gen: 9, width: 4 } }])] }] }),
        /link.gen: 9 not in 1..6/,
      ),
  );
  await t.step(
    "numVfs > totalVfs",
    () =>
      throws(
        build({
          hostBridges: [{ devices: [rootPort([nic({ sriov: { totalVfs: 2, numVfs: 3 } })])] }],
        }),
        /numVfs 3 > totalVfs 2/,
      ),
  );
  await t.step("a failed build leaves the world unchanged and buildable", () => {
    const w = new Kernel();
    const bad = defaultMachineSpec();
    bad.hostBridges[1]!.devices.push({ slot: 0 }); // devfn 00.0 twice on the second root bus
    throws(() => buildMachine(w, bad), /used twice/);
    strictEqual(pciFabric(w).devices.length, 0);
    strictEqual(w.mem.mmioAt(0xc000_0000n), null);
    const m = defaultMachine(w);
    strictEqual(m.gpu.name, "0000:03:00.0");
  });
  await t.step("a world has one fabric", () => {
    const w = new Kernel();
    defaultMachine(w);
    throws(() => defaultMachine(w), (e) => e instanceof KernelError && e.code === "EEXIST");
  });
  await t.step("a BAR no window can hold is logged and left unassigned", () => {
    const w = new Kernel();
    const f = buildMachine(w, {
      hostBridges: [{
        windows: [{ cpuStart: "0x4000000000", size: "1G", prefetch: true }],
        devices: [hostBridgeFn(0x1022, 0x14a4), rootPort([gpu({ vram: "2G" })])],
      }],
    });
    const g = f.endpoints()[0]!;
    strictEqual(g.bars[1]!.start, null);
    ok(
      w.dmesg.includes(
        `pci ${g.name}: BAR 1 [mem size 0x80000000 64bit pref]: can't assign; no space`,
      ),
    );
    throws(
      () => pciP2pdmaAddResource(g, 1),
      (e) => e instanceof KernelError && e.code === "EINVAL",
    );
  });
});

Deno.test("checker reports broken invariants", () => {
  const world = new Kernel();
  const m = defaultMachine(world);
  deepStrictEqual(world.check(), []);
  m.nic.bars[0]!.start = m.gpu.bars[1]!.start;
  const v = checkFabric(m.fabric);
  ok(v.some((x) => x.includes("overlaps")), v.join("; "));
  ok(world.check().some((x) => x.startsWith("pci-p2p: ")));
});

Deno.test("distance_many verbose keeps going to print every warning", () => {
  const world = new Kernel();
  const f = intelUnlisted(world);
  const [g1, g2, g3, g4] = f.endpoints();
  strictEqual(pciP2pdmaDistanceMany(g3!, [g1!, g2!, g4!], false), -1);
  strictEqual(world.dmesg.records.length, 0);
  strictEqual(pciP2pdmaDistanceMany(g3!, [g1!, g2!, g4!], true), -1);
  const warns = world.dmesg.records.filter((r) =>
    r.text.includes("cannot be used for peer-to-peer DMA")
  );
  deepStrictEqual(warns.map((r) => r.text.split(":")[0] + ":" + r.text.split(":")[1]), [
    `pci ${g1!.name.split(":")[0]}:${g1!.name.split(":")[1]}`,
    `pci ${g2!.name.split(":")[0]}:${g2!.name.split(":")[1]}`,
  ]);
  strictEqual(calcMapTypeAndDist(g3!, g4!, false).dist, 4);
});

Deno.test("pci_p2pdma_enable_store/show", () => {
  const world = new Kernel();
  const m = defaultMachine(world);
  const enodev = (e: unknown) => e instanceof KernelError && e.code === "ENODEV";
  deepStrictEqual(pciP2pdmaEnableStore(world, "1\n"), { use: true, dev: null });
  deepStrictEqual(pciP2pdmaEnableStore(world, "0"), { use: false, dev: null });
  deepStrictEqual(pciP2pdmaEnableStore(world, "on"), { use: true, dev: null });
  deepStrictEqual(pciP2pdmaEnableStore(world, "yes"), { use: true, dev: null });
  throws(() => pciP2pdmaEnableStore(world, "0000:09:00.0"), enodev); // not read as "0"
  ok(world.dmesg.includes("pci-p2pdma: No such PCI device: 0000:09:00.0"));
  throws(() => pciP2pdmaEnableStore(world, "0000:05:00.0\n"), enodev); // no p2pmem yet
  pciP2pdmaAddResource(m.nvme, 2);
  pciP2pmemPublish(m.nvme, true);
  const e = pciP2pdmaEnableStore(world, "0000:05:00.0\n");
  strictEqual(e.dev, m.nvme);
  strictEqual(pciP2pdmaEnableShow(e), "0000:05:00.0\n");
  strictEqual(pciP2pdmaEnableShow({ use: false, dev: null }), "0\n");
  strictEqual(pciP2pdmaEnableShow({ use: true, dev: null }), "1\n");
  ok(pciAllocP2pmem(m.nvme, 4096n) !== null);
  // published without a pool: found (pci_has_p2pmem does not look at the pool), but nothing to allocate
  pcimP2pdmaInit(m.nic2);
  pciP2pmemPublish(m.nic2, true);
  strictEqual(pciP2pmemFind(m.nic2), m.nic2);
  strictEqual(pciAllocP2pmem(m.nic2, 4096n), null);
  // a non-PCI child of the NIC is a valid client through its parent
  strictEqual(
    pciP2pdmaDistanceMany(m.nvme, [new Device(world, "nvmet", { parent: m.nic2 })], false),
    4,
  );
});
