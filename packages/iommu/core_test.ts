import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { Bus, Device, isErrno, Kernel, KernelBug } from "@dmalab/kernel";
import {
  buildMachine,
  defaultMachine,
  endpoint,
  gpu,
  hostBridgeFn,
  nic,
  PCI_ACS_RR,
  pcieSwitch,
  rootPort,
} from "@dmalab/pci-p2p";
import { iommuSetup } from "./core.ts";
import { IOMMU_READ, IOMMU_WRITE } from "./prot.ts";
import { IommuFaultError, iommuTranslate } from "./translate.ts";
import { IommuIotlbGather } from "./gather.ts";

const RW = IOMMU_READ | IOMMU_WRITE;

function noAcsSwitchMachine(world: Kernel) {
  return buildMachine(world, {
    cpu: { vendor: "AMD", family: 0x19 },
    hostBridges: [{
      bus: 0,
      devices: [
        hostBridgeFn(0x1022, 0x14a4),
        rootPort([pcieSwitch([gpu(), nic()], { acs: false })], { slot: 1, fn: 1 }),
        rootPort(
          [[
            endpoint({ slot: 0, fn: 0, classCode: 0x020000, vendor: 0x8086, device: 0x1572 }),
            endpoint({ slot: 0, fn: 1, classCode: 0x020000, vendor: 0x8086, device: 0x1572 }),
          ]].flat(),
          { slot: 2, fn: 0 },
        ),
      ],
    }],
  });
}

Deno.test("iommu groups from the PCI topology (pci_device_group)", async (t) => {
  await t.step("enabling the IOMMU turns ACS on: every function is its own group", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    ok(!(m.dsp[0].acsCtrl & PCI_ACS_RR));
    const io = iommuSetup(world);
    ok(m.dsp[0].acsCtrl & PCI_ACS_RR, "pci_request_acs + pci_enable_acs ran");
    ok(io.groupOf(m.gpu) !== io.groupOf(m.nic));
    strictEqual(io.groupOf(m.gpu)!.devices.length, 1);
    ok(world.dmesg.includes("pci 0000:03:00.0: Adding to iommu group"));
    const sysfs = io.sysfsGroups();
    ok(sysfs.includes(`/sys/kernel/iommu_groups/${io.groupOf(m.gpu)!.id}/devices/0000:03:00.0`));
    ok(sysfs.includes(`/sys/kernel/iommu_groups/${io.groupOf(m.gpu)!.id}/type: DMA-FQ`));
  });

  await t.step("an endpoint below a downstream port without ACS joins the port's group", () => {
    const world = new Kernel();
    const f = noAcsSwitchMachine(world);
    const io = iommuSetup(world);
    const g = f.dev("0000:03:00.0");
    const n = f.dev("0000:04:00.0");
    strictEqual(io.groupOf(g), io.groupOf(f.dev("0000:02:00.0")));
    strictEqual(io.groupOf(n), io.groupOf(f.dev("0000:02:01.0")));
    // mainline's known gap: sibling ports are separate groups
    ok(io.groupOf(g) !== io.groupOf(n));
    ok(io.groupOf(f.dev("0000:00:01.1")) !== io.groupOf(g), "root port with ACS is isolated");
  });

  await t.step("variant iommu.groups=pcie-switch: one group below the non-isolated switch", () => {
    const world = new Kernel({ variants: { "iommu.groups": "pcie-switch" } });
    const f = noAcsSwitchMachine(world);
    const io = iommuSetup(world);
    strictEqual(io.groupOf(f.dev("0000:03:00.0")), io.groupOf(f.dev("0000:04:00.0")));
    strictEqual(io.groupOf(f.dev("0000:03:00.0"))!.devices.length, 4);
  });

  await t.step("functions of a multifunction device without ACS share a group", () => {
    const world = new Kernel();
    const f = noAcsSwitchMachine(world);
    const io = iommuSetup(world);
    const f0 = f.devices.find((d) => d.busNr === 5 && d.fn === 0)!;
    const f1 = f.devices.find((d) => d.busNr === 5 && d.fn === 1)!;
    strictEqual(io.groupOf(f0), io.groupOf(f1));
  });

  await t.step("attach rules: singleton groups only, -EBUSY when already owned", () => {
    const world = new Kernel();
    const f = noAcsSwitchMachine(world);
    const io = iommuSetup(world);
    const g = f.dev("0000:03:00.0");
    const d = io.pagingDomainAlloc(g);
    throws(() => io.attachDevice(d, g), (e) => isErrno(e, "EINVAL"));
    const group = io.groupOf(g)!;
    io.attachGroup(d, group);
    strictEqual(io.domainFor(g), d);
    const d2 = io.pagingDomainAlloc(g);
    throws(() => io.attachGroup(d2, group), (e) => isErrno(e, "EBUSY"));
    io.detachGroup(d, group);
    strictEqual(io.domainFor(g), group.defaultDomain);
    deepStrictEqual(world.check(), []);
    d.free();
    d2.free();
  });
});

Deno.test("default domains follow iommu.passthrough and iommu.strict", async (t) => {
  await t.step("lazy by default (x86 Kconfig): dma-fq with a flush queue", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world);
    strictEqual(io.domainFor(m.gpu)!.type, "dma-fq");
    ok(io.domainFor(m.gpu)!.fq);
    ok(world.dmesg.includes("lazy mode"));
  });
  await t.step("iommu.strict=1 via world variant", () => {
    const world = new Kernel({ variants: { "iommu.strict": "1" } });
    const m = defaultMachine(world);
    strictEqual(iommuSetup(world).domainFor(m.gpu)!.type, "dma");
  });
  await t.step("iommu.passthrough=1: identity, DMA untranslated", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world, { passthrough: true });
    strictEqual(io.domainFor(m.gpu)!.type, "identity");
    strictEqual(iommuTranslate(m.gpu, 0x1234_5000, true).phys, 0x1234_5000);
    ok(!m.nic.ats.enabled, "no ATS on identity");
  });
  await t.step("one unit per host bridge or per segment", () => {
    const w1 = new Kernel();
    const m1 = defaultMachine(w1);
    const io1 = iommuSetup(w1);
    strictEqual(io1.units.length, 2);
    ok(io1.devIommu(m1.nic2)!.unit !== io1.devIommu(m1.nic)!.unit);
    const w2 = new Kernel();
    const m2 = defaultMachine(w2);
    const io2 = iommuSetup(w2, { per: "segment" });
    strictEqual(io2.units.length, 1);
    strictEqual(io2.devIommu(m2.nic2)!.unit, io2.devIommu(m2.nic)!.unit);
    const w3 = new Kernel();
    defaultMachine(w3);
    const io3 = iommuSetup(w3, { unitDefaults: { iotlb: { reach: 512, missPenaltyNs: 300 } } });
    strictEqual(io3.units[1]!.iotlb.reach, 512);
    strictEqual(io3.units[1]!.iotlb.missPenaltyNs, 300);
  });
});

Deno.test("DMA translation: IOTLB reach, misses, faults, ATS device TLB", async (t) => {
  await t.step("a 64-entry IOTLB covers 256 KiB of 4 KiB pages; 2 MiB leaves cover more", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world, {
      strict: true,
      units: [{ segments: [0], iotlb: { reach: 64 } }],
    });
    const dom = io.pagingDomainAlloc(m.nvme);
    io.attachDevice(dom, m.nvme);
    dom.map(0x4000_0000, 0x1_0000_0000, 0x40_0000, RW);
    dom.map(0x8000_0000, 0x2_0000_0000 + 0x1000, 0x40_0000, RW); // misaligned: 4 KiB leaves
    const st = io.devIommu(m.nvme)!.stats;
    // 2 MiB leaves: 1 MiB touched page by page costs 1 miss
    for (let off = 0; off < 0x10_0000; off += 0x1000) {
      iommuTranslate(m.nvme, 0x4000_0000 + off, false);
    }
    strictEqual(st.iotlbMisses, 1);
    // 4 KiB leaves: 64 pages fit, the 65th evicts; a second sweep over 128 pages misses every time
    for (let round = 0; round < 2; round++) {
      for (let p = 0; p < 128; p++) iommuTranslate(m.nvme, 0x8000_0000 + p * 0x1000, true);
    }
    strictEqual(st.iotlbMisses, 1 + 256);
    const before = st.iotlbMisses;
    for (let round = 0; round < 2; round++) {
      for (let p = 0; p < 64; p++) iommuTranslate(m.nvme, 0x8000_0000 + p * 0x1000, true);
    }
    strictEqual(st.iotlbMisses - before, 64, "within reach only the first sweep misses");
    strictEqual(st.costNs, (1 + 256 + 64) * 250);
  });

  await t.step("unmapped and read-only IOVAs fault and are logged", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world);
    const dom = io.pagingDomainAlloc(m.nvme);
    io.attachDevice(dom, m.nvme);
    dom.map(0x1000, 0x9000_0000, 0x1000, IOMMU_READ);
    strictEqual(iommuTranslate(m.nvme, 0x1008, false).phys, 0x9000_0008);
    throws(
      () => iommuTranslate(m.nvme, 0x1008, true),
      (e) => e instanceof IommuFaultError && e.fault.reason === 0x05,
    );
    throws(
      () => iommuTranslate(m.nvme, 0x5000, false),
      (e) => e instanceof IommuFaultError && e.fault.reason === 0x06,
    );
    strictEqual(io.devIommu(m.nvme)!.unit.faults.length, 2);
    ok(
      world.dmesg.includes(
        "DMAR: [DMA Write NO_PASID] Request device [05:00.0] fault addr 0x1008 [fault reason 0x05] PTE Write access is not set",
      ),
    );
  });

  await t.step("blocked domain (claimed DMA owner) faults every request", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world);
    const g = io.groupOf(m.nvme)!;
    io.claimDmaOwner(g, "vfio");
    throws(() => io.claimDmaOwner(g, "other"), (e) => isErrno(e, "EPERM"));
    throws(
      () => iommuTranslate(m.nvme, 0, false),
      (e) => e instanceof IommuFaultError && e.fault.reason === 0x02,
    );
    io.releaseDmaOwner(g);
    strictEqual(io.domainFor(m.nvme), g.defaultDomain);
  });

  await t.step("ATS: the device TLB answers, and unmap sends device-TLB invalidations", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world, { strict: true });
    const dom = io.pagingDomainAlloc(m.nic);
    io.attachDevice(dom, m.nic);
    ok(m.nic.ats.enabled, "ATS enabled on attach to a paging domain");
    const unit = io.devIommu(m.nic)!.unit;
    dom.map(0x10_0000, 0x3_0000_0000, 0x10_000, RW);
    iommuTranslate(m.nic, 0x10_0000, false);
    iommuTranslate(m.nic, 0x10_0010, false);
    const st = io.devIommu(m.nic)!.stats;
    strictEqual(st.atcMisses, 1);
    strictEqual(st.atcHits, 1);
    strictEqual(st.iotlbMisses, 1);
    const inv = unit.stats.devTlbInvalidations;
    strictEqual(dom.unmap(0x10_0000, 0x1000), 0x1000);
    strictEqual(unit.stats.devTlbInvalidations, inv + 1);
    throws(() => iommuTranslate(m.nic, 0x10_0000, false), IommuFaultError);
  });
});

Deno.test("strict vs lazy invalidation is observable", async (t) => {
  await t.step(
    "lazy: a stale IOTLB entry keeps translating until the flush queue flushes",
    async () => {
      const world = new Kernel();
      const m = defaultMachine(world);
      const io = iommuSetup(world);
      const dom = io.domainFor(m.nvme)!;
      strictEqual(dom.type, "dma-fq");
      dom.map(0x20_0000, 0x5_0000_0000, 0x1000, RW);
      strictEqual(iommuTranslate(m.nvme, 0x20_0000, false).phys, 0x5_0000_0000);
      const g = new IommuIotlbGather();
      g.queued = true;
      strictEqual(dom.unmapFast(0x20_0000, 0x1000, g), 0x1000);
      strictEqual(dom.iovaToPhys(0x20_0000), 0, "PTE cleared");
      let released = false;
      dom.fq!.queue(() => (released = true), g);
      strictEqual(iommuTranslate(m.nvme, 0x20_0000, false).phys, 0x5_0000_0000, "stale IOTLB hit");
      ok(!released);
      await world.runTask("idle", async () => {
        await world.sched.msleep(11);
      });
      ok(released, "IOVA_FQ_TIMEOUT flush released the entry");
      strictEqual(dom.fq!.stats.timerFlushes, 1);
      throws(() => iommuTranslate(m.nvme, 0x20_0000, false), IommuFaultError);
    },
  );

  await t.step(
    "strict: iommu_unmap invalidates at once; freed tables released only at sync",
    () => {
      const world = new Kernel();
      const m = defaultMachine(world);
      const io = iommuSetup(world, { strict: true });
      const dom = io.domainFor(m.nvme)!;
      dom.map(0x40_0000, 0x6_0000_0000, 0x20_0000, RW);
      // misaligned pa forces 4 KiB leaves in a leaf table
      dom.map(0x80_0000, 0x6_1000_1000, 0x20_0000, RW);
      iommuTranslate(m.nvme, 0x80_0000, false);
      const pool = dom.pgtable!.pool;
      const g = new IommuIotlbGather();
      const before = pool.inUse;
      strictEqual(dom.unmapFast(0x80_0000, 0x20_0000, g), 0x20_0000);
      strictEqual(g.freelist.length, 1, "the emptied leaf table is on the gather");
      strictEqual(pool.inUse, before, "not released before the sync");
      strictEqual(
        iommuTranslate(m.nvme, 0x80_0000, false).phys,
        0x6_1000_1000,
        "not yet invalidated",
      );
      dom.iotlbSync(g);
      strictEqual(pool.inUse, before - 1);
      throws(() => iommuTranslate(m.nvme, 0x80_0000, false), IommuFaultError);
      deepStrictEqual([g.start, g.end, g.freelist.length], [Number.MAX_SAFE_INTEGER, 0, 0]);
    },
  );

  await t.step("gather merges ranges and widens over gaps (FLUSH_RANGE)", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world, { strict: true });
    const dom = io.domainFor(m.nvme)!;
    dom.map(0x10000, 0x7_0000_0000, 0x10000, RW);
    const g = new IommuIotlbGather();
    dom.unmapFast(0x10000, 0x1000, g);
    dom.unmapFast(0x18000, 0x1000, g);
    deepStrictEqual([g.start, g.end], [0x10000, 0x18fff]);
    const unit = io.devIommu(m.nvme)!.unit;
    const r = unit.stats.rangeInvalidations;
    dom.iotlbSync(g);
    strictEqual(unit.stats.rangeInvalidations, r + 1, "one invalidation for both");
  });

  await t.step("freeing a domain still attached is a WARN", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world);
    const d = io.pagingDomainAlloc(m.nvme);
    io.attachDevice(d, m.nvme);
    throws(() => d.free(), KernelBug);
  });
});

Deno.test("non-PCI devices on other buses; fault handlers", async (t) => {
  await t.step("a platform device covered by a unit predicate is probed and grouped alone", () => {
    const world = new Kernel();
    const platform = new Bus("platform");
    const early = new Device(world, "early-dev", { bus: platform });
    early.add();
    const io = iommuSetup(world, {
      units: [{ name: "smmu0", covers: (d) => d.bus === platform }],
      buses: [platform],
      strict: true,
    });
    ok(io.groupOf(early), "devices already on the bus are probed");
    const late = new Device(world, "late-dev", { bus: platform });
    late.add();
    ok(io.groupOf(late) && io.groupOf(late) !== io.groupOf(early), "generic_device_group");
    strictEqual(io.domainFor(late)!.type, "dma");
    late.del();
    strictEqual(io.groupOf(late), null, "iommu_release_device");
  });

  await t.step("report_iommu_fault calls the domain's fault handler", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world);
    const dom = io.pagingDomainAlloc(m.nvme);
    io.attachDevice(dom, m.nvme);
    const seen: string[] = [];
    dom.faultHandler = (dev, iova, write) =>
      seen.push(`${dev.name} 0x${iova.toString(16)} ${write}`);
    throws(() => iommuTranslate(m.nvme, 0x7000, true), IommuFaultError);
    deepStrictEqual(seen, ["0000:05:00.0 0x7000 true"]);
  });
});

Deno.test("x86_64 (first-stage) format: present means readable", () => {
  for (const format of ["vtdss", "x86_64"] as const) {
    const world = new Kernel();
    const m = defaultMachine(world);
    const io = iommuSetup(world, { strict: true, domain: { pgtable: { format } } });
    const dom = io.domainFor(m.nvme)!;
    strictEqual(dom.pgtable!.format, format);
    dom.map(0x1000, 0x9000_0000, 0x1000, IOMMU_WRITE); // a DMA_FROM_DEVICE mapping
    strictEqual(iommuTranslate(m.nvme, 0x1000, true).phys, 0x9000_0000);
    if (format === "x86_64") {
      strictEqual(iommuTranslate(m.nvme, 0x1000, false).phys, 0x9000_0000, "P implies read");
    } else {
      throws(() => iommuTranslate(m.nvme, 0x1000, false), IommuFaultError, "vtdss: no R bit");
    }
  }
});

Deno.test("iommu group type through sysfs (iommu_group_store_type)", () => {
  const world = new Kernel();
  const m = defaultMachine(world);
  const io = iommuSetup(world, { strict: true });
  const g = io.groupOf(m.nvme)!;
  io.setGroupType(g, "identity");
  strictEqual(io.domainFor(m.nvme)!.type, "identity");
  strictEqual(iommuTranslate(m.nvme, 0x1234, false).phys, 0x1234);
  io.setGroupType(g, "dma");
  io.useDefaultDomain(m.nvme); // a driver binds
  throws(() => io.setGroupType(g, "identity"), (e) => isErrno(e, "EBUSY"));
  const dom = io.domainFor(m.nvme)!;
  io.setGroupType(g, "dma-fq");
  strictEqual(io.domainFor(m.nvme), dom, "strict to lazy in place");
  strictEqual(dom.type, "dma-fq");
  ok(dom.fq);
  io.unuseDefaultDomain(m.nvme);
  deepStrictEqual(world.check(), []);
});
