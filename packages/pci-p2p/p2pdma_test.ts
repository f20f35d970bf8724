import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { Device, Kernel, KernelBug, KernelError } from "@dmalab/kernel";
import {
  buildMachine,
  calcMapTypeAndDist,
  defaultMachine,
  endpoint,
  type FnSpec,
  gpu,
  hostBridgeFn,
  intelUnlisted,
  type MachineSpec,
  mapTypeName,
  nic,
  P2pdmaMapState,
  p2pdmaProviderOf,
  p2pmemSysfs,
  PCI_ACS_EC,
  PCI_ACS_RR,
  pciAllocP2pmem,
  pciBridgeHasAcsRedir,
  type PciDev,
  pciEnableAcs,
  pcieSwitch,
  pciFreeP2pmem,
  pciHostBridgeDev,
  pcimP2pdmaInit,
  pcimP2pdmaProvider,
  pciP2pdmaAddResource,
  pciP2pdmaBusAddrMap,
  pciP2pdmaDistance,
  pciP2pdmaDistanceMany,
  PciP2pdmaMapType,
  pciP2pdmaMapType,
  pciP2pdmaRelease,
  pciP2pmemFind,
  pciP2pmemFindMany,
  pciP2pmemPublish,
  pciP2pmemVirtToBus,
  pciRequestAcs,
  pciUpstreamBridge,
  rootPort,
  server8Gpu,
  whitelistProbe,
} from "./mod.ts";

const T = PciP2pdmaMapType;
const name = (d: { mapType: PciP2pdmaMapType }) => mapTypeName(d.mapType);

function intelHost(hostDev: [number, number], extra: Partial<MachineSpec> = {}): MachineSpec {
  return {
    cpu: { vendor: "Intel", family: 6, model: 0x55 },
    hostBridges: [
      {
        bus: 0,
        devices: [
          hostBridgeFn(hostDev[0], hostDev[1]),
          rootPort([gpu()], { slot: 1 }),
          rootPort([gpu()], { slot: 2 }),
        ],
      },
      {
        bus: 0x80,
        devices: [hostBridgeFn(hostDev[0], hostDev[1]), rootPort([gpu()], { slot: 1 })],
      },
    ],
    ...extra,
  };
}

Deno.test("calc_map_type_and_dist: distances and types on the default machine", async (t) => {
  const world = new Kernel();
  const m = defaultMachine(world);
  await t.step("same function: BUS_ADDR, 0", () => {
    const r = calcMapTypeAndDist(m.gpu, m.gpu, false);
    deepStrictEqual([name(r), r.dist], ["BUS_ADDR", 0]);
  });
  await t.step("switch-local pair: BUS_ADDR, 4", () => {
    const r = calcMapTypeAndDist(m.gpu, m.nic, false);
    deepStrictEqual([name(r), r.dist], ["BUS_ADDR", 4]);
  });
  await t.step("across the root complex on Zen: THRU_HOST_BRIDGE, depth sum", () => {
    // GPU depth: GPU, DSP, USP, RP = 4; NIC2 depth: NIC, RP = 2.
    const r = calcMapTypeAndDist(m.gpu, m.nic2, false);
    deepStrictEqual([name(r), r.dist], ["THRU_HOST_BRIDGE", 6]);
    const r2 = calcMapTypeAndDist(m.nvme, m.nic2, false);
    deepStrictEqual([name(r2), r2.dist], ["THRU_HOST_BRIDGE", 4]);
  });
  await t.step("a bridge is its own common device", () => {
    const r = calcMapTypeAndDist(m.gpu, m.dsp[0], false);
    deepStrictEqual([name(r), r.dist], ["BUS_ADDR", 1]);
  });
  await t.step("no warnings without verbose", () => {
    strictEqual(world.dmesg.records.filter((r) => r.level === "warn").length, 0);
  });
});

Deno.test("two functions and VFs of one device: distance 2", () => {
  const world = new Kernel();
  const f = buildMachine(world, {
    cpu: { vendor: "AMD", family: 0x17 },
    hostBridges: [{
      devices: [
        hostBridgeFn(0x1022, 0x1480),
        rootPort([
          nic({
            slot: 0,
            fn: 0,
            sriov: {
              totalVfs: 4,
              numVfs: 2,
              offset: 2,
              stride: 1,
              bars: [{ size: "1M", prefetch: true }],
            },
          }),
          nic({ slot: 0, fn: 1 }),
        ]),
      ],
    }],
  });
  const pf0 = f.dev("0000:01:00.0");
  const pf1 = f.dev("0000:01:00.1");
  const vf0 = f.dev("0000:01:00.2");
  const vf1 = f.dev("0000:01:00.3");
  ok(vf0.isVirtfn && vf0.physfn === pf0);
  strictEqual(pciUpstreamBridge(vf0), pciUpstreamBridge(pf0));
  for (const [a, b] of [[pf0, pf1], [pf0, vf0], [vf0, vf1], [vf1, pf1]] as const) {
    const r = calcMapTypeAndDist(a, b, false);
    deepStrictEqual([name(r), r.dist], ["BUS_ADDR", 2], `${a.name} ${b.name}`);
  }
  ok(vf0.bars[0]!.start !== null);
});

Deno.test("ACS redirect: downgrade, warning texts, disable_acs_redir hint", async (t) => {
  await t.step("IOMMU requested ACS: switch-local pair goes THRU_HOST_BRIDGE on Zen", () => {
    const world = new Kernel();
    const m = defaultMachine(world, { iommu: true });
    ok(pciBridgeHasAcsRedir(m.dsp[0]) && pciBridgeHasAcsRedir(m.dsp[1]));
    const r = calcMapTypeAndDist(m.gpu, m.nic, true);
    deepStrictEqual([name(r), r.dist], ["THRU_HOST_BRIDGE", 4]);
    const lines = world.dmesg.records.map((x) => x.text);
    ok(
      lines.includes(
        "pci 0000:04:00.0: ACS redirect is set between the client and provider (0000:03:00.0)",
      ),
    );
    ok(lines.includes(
      "pci 0000:04:00.0: to disable ACS redirect for this path, add the kernel parameter: pci=disable_acs_redir=0000:02:00.0;0000:02:01.0",
    ));
  });
  await t.step("the hinted parameter restores BUS_ADDR", () => {
    const world = new Kernel();
    const m = defaultMachine(world, {
      iommu: true,
      disableAcsRedir: ["0000:02:00.0", "0000:02:01.0"],
    });
    strictEqual(calcMapTypeAndDist(m.gpu, m.nic, true).mapType, T.BUS_ADDR);
    ok(!pciBridgeHasAcsRedir(m.dsp[0]));
  });
  await t.step("the root port (above the common device) does not count", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    const rp = pciUpstreamBridge(pciUpstreamBridge(m.dsp[0])!)!;
    rp.acsCtrl = PCI_ACS_RR;
    strictEqual(calcMapTypeAndDist(m.gpu, m.nic, false).mapType, T.BUS_ADDR);
  });
  await t.step("EC alone counts as redirect; the common device itself counts", () => {
    const world = new Kernel();
    const m = defaultMachine(world);
    m.dsp[0].acsCtrl = PCI_ACS_EC;
    strictEqual(calcMapTypeAndDist(m.gpu, m.nic, false).mapType, T.THRU_HOST_BRIDGE);
    m.dsp[0].acsCtrl = 0;
    // GPU vs its own DSP: the DSP is the common device and is on the provider chain.
    m.dsp[0].acsCtrl = PCI_ACS_RR;
    strictEqual(calcMapTypeAndDist(m.gpu, m.dsp[0], false).mapType, T.THRU_HOST_BRIDGE);
  });
  await t.step("unlisted Intel host with redirect: NOT_SUPPORTED plus whitelist warning", () => {
    const world = new Kernel();
    const f = intelUnlisted(world, { iommu: true });
    const [, , g3, g4] = f.endpoints();
    const r = calcMapTypeAndDist(g3!, g4!, false);
    strictEqual(r.mapType, T.NOT_SUPPORTED);
    // warn = acs_redirects, independent of verbose
    ok(world.dmesg.includes("pci 0000:00:00.0: Host bridge not in P2PDMA whitelist: 8086:6f00"));
    strictEqual(r.dist, 4);
  });
});

Deno.test("ACS hint: the 128-byte seq_buf overflows on long paths", () => {
  const world = new Kernel();
  // five nested switches on each side of the common upstream port, every downstream port redirecting
  let a: FnSpec = gpu();
  let b: FnSpec = gpu();
  for (let i = 0; i < 5; i++) {
    a = pcieSwitch([a], { acs: { cap: "SV|RR|CR|UF", ctrl: "RR" } });
    b = pcieSwitch([b], { acs: { cap: "SV|RR|CR|UF", ctrl: "RR" } });
  }
  const f = buildMachine(world, {
    cpu: { vendor: "AMD", family: 0x19 },
    hostBridges: [{
      devices: [
        hostBridgeFn(0x1022, 0x14a4),
        rootPort([pcieSwitch([a, b], { acs: { cap: "SV|RR|CR|UF", ctrl: "RR" } })]),
      ],
    }],
  });
  const [p, c] = f.endpoints();
  const r = calcMapTypeAndDist(p!, c!, true);
  strictEqual(r.mapType, T.THRU_HOST_BRIDGE);
  strictEqual(r.dist, 24);
  const line = world.dmesg.records.map((x) => x.text).find((x) =>
    x.includes("disable_acs_redir=")
  )!;
  const list = line.split("disable_acs_redir=")[1]!;
  strictEqual(list.length, 127, "truncated at the buffer size");
  ok(list.startsWith(`${pciUpstreamBridge(p!)!.name};`));
  // a short list loses exactly its final ';'
  const w2 = new Kernel();
  const m = defaultMachine(w2, { iommu: true });
  calcMapTypeAndDist(m.gpu, m.nic, true);
  ok(w2.dmesg.includes("pci=disable_acs_redir=0000:02:00.0;0000:02:01.0"));
  ok(!w2.dmesg.includes("0000:02:01.0;"));
});

Deno.test("host bridge whitelist", async (t) => {
  await t.step(
    "unlisted host, cross root port: NOT_SUPPORTED, verbose text, no whitelist warn",
    () => {
      const world = new Kernel();
      const f = intelUnlisted(world);
      const [g1, g2, g3, g4] = f.endpoints();
      const r = calcMapTypeAndDist(g1!, g2!, true);
      deepStrictEqual([name(r), r.dist], ["NOT_SUPPORTED", 4]);
      ok(world.dmesg.includes(
        `pci ${g2!.name}: cannot be used for peer-to-peer DMA as the client and provider (${
          g1!.name
        }) do not share an upstream bridge or whitelisted host bridge`,
      ));
      ok(!world.dmesg.includes("whitelist: 8086"));
      strictEqual(calcMapTypeAndDist(g3!, g4!, false).mapType, T.BUS_ADDR);
    },
  );
  await t.step("Skylake-E listed entries: same and different host bridges", () => {
    const world = new Kernel();
    const f = buildMachine(world, intelHost([0x8086, 0x2020]));
    const [a, b, c] = f.endpoints();
    strictEqual(calcMapTypeAndDist(a!, b!, false).mapType, T.THRU_HOST_BRIDGE);
    strictEqual(calcMapTypeAndDist(a!, c!, false).mapType, T.THRU_HOST_BRIDGE);
  });
  await t.step("REQ_SAME_HOST_BRIDGE: Haswell-EP allows only the same host bridge", () => {
    const world = new Kernel();
    const f = buildMachine(world, intelHost([0x8086, 0x2f00]));
    const [a, b, c] = f.endpoints();
    strictEqual(calcMapTypeAndDist(a!, b!, false).mapType, T.THRU_HOST_BRIDGE);
    strictEqual(calcMapTypeAndDist(a!, c!, false).mapType, T.NOT_SUPPORTED);
  });
  await t.step("Google PCI_ANY_ID matches any device id", () => {
    const world = new Kernel();
    const f = buildMachine(world, intelHost([0x1ae0, 0x1234]));
    const [a, , c] = f.endpoints();
    strictEqual(calcMapTypeAndDist(a!, c!, false).mapType, T.THRU_HOST_BRIDGE);
  });
  await t.step("first device on the root bus must be 00.0 or a Root Port", () => {
    const world = new Kernel();
    // Root bus: a listed Skylake root port at 00:01.0 first (no 00.0) -> accepted.
    const f = buildMachine(world, {
      cpu: { vendor: "Intel", family: 6 },
      hostBridges: [{
        devices: [
          rootPort([gpu()], { vendor: 0x8086, device: 0x2030, slot: 1 }),
          rootPort([gpu()], { vendor: 0x8086, device: 0x2031, slot: 2 }),
        ],
      }],
    });
    const [a, b] = f.endpoints();
    strictEqual(pciHostBridgeDev(f.hostBridges[0]!)!.deviceId, 0x2030);
    strictEqual(calcMapTypeAndDist(a!, b!, false).mapType, T.THRU_HOST_BRIDGE);
    // An RCiEP at 00:05.0 first (not 00.0, not a root port) -> rejected even if listed.
    const w2 = new Kernel();
    const f2 = buildMachine(w2, {
      cpu: { vendor: "Intel", family: 6 },
      hostBridges: [{
        devices: [
          endpoint({ type: "rc_endpoint", slot: 5, vendor: 0x8086, device: 0x09a2 }),
          rootPort([gpu()], { slot: 6 }),
          rootPort([gpu()], { slot: 7 }),
        ],
      }],
    });
    strictEqual(pciHostBridgeDev(f2.hostBridges[0]!), null);
    const [x, y] = f2.endpoints().filter((d) => d.type === "endpoint");
    strictEqual(calcMapTypeAndDist(x!, y!, false).mapType, T.NOT_SUPPORTED);
    // Empty root bus would have no device at all: the host bridge check fails.
  });
  await t.step(
    "variant pci-p2pdma=rdma: no Zhaoxin entries, whitelist warning follows verbose",
    () => {
      const zx = (variants: Record<string, string>) => {
        const world = new Kernel({ variants });
        const f = buildMachine(world, {
          ...intelHost([0x1d17, 0x1008]),
          cpu: { vendor: "Zhaoxin", family: 7 },
        });
        const [a, , c] = f.endpoints();
        return calcMapTypeAndDist(a!, c!, false).mapType;
      };
      strictEqual(zx({}), T.THRU_HOST_BRIDGE);
      strictEqual(zx({ "pci-p2pdma": "rdma" }), T.NOT_SUPPORTED);
      const w = new Kernel({ variants: { "pci-p2pdma": "rdma" } });
      const f = intelUnlisted(w);
      const [g1, g2] = f.endpoints();
      calcMapTypeAndDist(g1!, g2!, true);
      ok(w.dmesg.includes("Host bridge not in P2PDMA whitelist: 8086:6f00"));
      const w2 = new Kernel();
      const f2 = intelUnlisted(w2);
      const [h1, h2] = f2.endpoints();
      calcMapTypeAndDist(h1!, h2!, true);
      ok(!w2.dmesg.includes("Host bridge not in P2PDMA whitelist"));
    },
  );
  await t.step("cpu_supports_p2pdma: AMD family 0x17 yes, 0x16 no, non-x86 no", () => {
    for (
      const [cpu, want] of [
        [{ vendor: "AMD", family: 0x17 }, T.THRU_HOST_BRIDGE],
        [{ vendor: "AMD", family: 0x16 }, T.NOT_SUPPORTED],
        [{ vendor: "AMD", family: 0x19, arch: "arm64" }, T.NOT_SUPPORTED],
        [{ vendor: "Hygon", family: 0x18 }, T.NOT_SUPPORTED],
      ] as const
    ) {
      const world = new Kernel();
      const f = buildMachine(world, { ...intelHost([0x1022, 0x1450]), cpu });
      const [a, b] = f.endpoints();
      strictEqual(calcMapTypeAndDist(a!, b!, false).mapType, want, JSON.stringify(cpu));
    }
  });
});

Deno.test("distance_many, map_type cache, providers", async (t) => {
  const world = new Kernel({ strict: false });
  const m = defaultMachine(world);
  await t.step("distance_many sums; -1 for none, non-PCI, unsupported", () => {
    strictEqual(pciP2pdmaDistanceMany(m.gpu, [m.nic, m.nic2, m.gpu], false), 4 + 6 + 0);
    strictEqual(pciP2pdmaDistanceMany(m.gpu, [], false), -1);
    const platform = new Device(world, "serial8250");
    strictEqual(pciP2pdmaDistanceMany(m.gpu, [m.nic, platform], true), -1);
    ok(
      world.dmesg.includes(
        "serial8250: cannot be used for peer-to-peer DMA as it is not a PCI device",
      ),
    );
    // a child device of a PCI function resolves to its parent
    const ib = new Device(world, "mlx5_0", { parent: m.nic });
    strictEqual(pciP2pdmaDistance(m.gpu, ib, false), 4);
  });
  await t.step("map_type: NOT_SUPPORTED before init / for non-PCI; cached after", () => {
    const fake = { owner: m.gpu, bar: 1, busOffset: 0n };
    strictEqual(pciP2pdmaMapType(fake, m.nic), T.NOT_SUPPORTED);
    pcimP2pdmaInit(m.gpu);
    const prov = pcimP2pdmaProvider(m.gpu, 1)!;
    strictEqual(prov.owner, m.gpu);
    strictEqual(pciP2pdmaMapType(prov, new Device(world, "plat")), T.NOT_SUPPORTED);
    strictEqual(pciP2pdmaMapType(prov, m.nic), T.BUS_ADDR);
    // Change ACS afterwards: the cached value stays, as in Linux.
    m.dsp[1].acsCtrl = PCI_ACS_RR;
    strictEqual(pciP2pdmaMapType(prov, m.nic), T.BUS_ADDR);
    const key = (0 << 16) | (0x04 << 8);
    strictEqual(m.gpu.p2pdma!.mapTypes.get(key), T.BUS_ADDR);
    m.gpu.p2pdma!.mapTypes.clear();
    strictEqual(pciP2pdmaMapType(prov, m.nic), T.THRU_HOST_BRIDGE);
    m.dsp[1].acsCtrl = 0;
  });
  await t.step("provider: null for missing/IO BAR; WARN without init", () => {
    strictEqual(pcimP2pdmaProvider(m.gpu, 2), null);
    const before = world.bugs.length;
    strictEqual(pcimP2pdmaProvider(m.nic2, 0), null);
    strictEqual(world.bugs.length, before + 1);
    m.nic2.nonMappableBars = true;
    throws(
      () => pcimP2pdmaInit(m.nic2),
      (e) => e instanceof KernelError && e.code === "EOPNOTSUPP",
    );
    m.nic2.nonMappableBars = false;
  });
  await t.step("map state caches per provider; NONE for ordinary pages", () => {
    const st = new P2pdmaMapState();
    strictEqual(st.state(m.nic, null), T.NONE);
    const prov = pcimP2pdmaProvider(m.gpu, 1)!;
    // the cache still holds the THRU_HOST_BRIDGE computed while RR was set
    strictEqual(st.state(m.nic, prov), T.THRU_HOST_BRIDGE);
    m.gpu.p2pdma!.mapTypes.clear();
    strictEqual(st.state(m.nic, prov), T.THRU_HOST_BRIDGE, "state keeps its per-provider answer");
    strictEqual(new P2pdmaMapState().state(m.nic, prov), T.BUS_ADDR);
    strictEqual(st.mem, prov);
  });
});

Deno.test("p2pmem: add_resource, publish, find_many, alloc/free, bus addresses", async (t) => {
  const world = new Kernel();
  const m = defaultMachine(world);
  await t.step("add_resource errno rules", () => {
    const e = (code: string) => (x: unknown) => x instanceof KernelError && x.code === code;
    throws(() => pciP2pdmaAddResource(m.nvme, 4), e("EINVAL"));
    throws(() => pciP2pdmaAddResource(m.nvme, 2, 0n, 64n << 20n), e("EINVAL"));
    throws(() => pciP2pdmaAddResource(m.nvme, 2, 64n << 20n, 4096n), e("EINVAL"));
    strictEqual(m.nvme.p2pdma, null);
  });
  await t.step("donate the NVMe CMB, publish, find", () => {
    pciP2pdmaAddResource(m.nvme, 2, 0n, 0n);
    const bar = m.nvme.bars[2]!;
    ok(
      world.dmesg.includes(
        `pci 0000:05:00.0: added peer-to-peer DMA memory 0x${bar.start!.toString(16)}-0x${
          (bar.start! + bar.size - 1n).toString(16)
        }`,
      ),
    );
    strictEqual(pciP2pmemFind(m.nic2), null, "not published");
    pciP2pmemPublish(m.nvme, true);
    strictEqual(pciP2pmemFind(m.nic2), m.nvme);
    deepStrictEqual(p2pmemSysfs(m.nvme), {
      size: 64n << 20n,
      available: 64n << 20n,
      published: true,
    });
  });
  await t.step("closest provider wins; ties resolved by the seeded random pick", () => {
    pciP2pdmaAddResource(m.gpu, 1, 1n << 30n, 0n);
    pciP2pmemPublish(m.gpu, true);
    strictEqual(pciP2pmemFindMany([m.nic]), m.gpu); // 4 vs 6
    strictEqual(pciP2pmemFindMany([m.nvme]), m.nvme); // 0
    const picks = new Set<string>();
    for (let i = 0; i < 20; i++) picks.add(pciP2pmemFindMany([m.nic2])!.name); // 6 vs 4: nvme
    deepStrictEqual([...picks], ["0000:05:00.0"]);
  });
  await t.step("alloc, virt_to_bus with a bus offset, free, release", async () => {
    const a = pciAllocP2pmem(m.nvme, 8192n)!;
    const b = pciAllocP2pmem(m.nvme, 1n)!;
    strictEqual(b - a, 8192n);
    strictEqual(pciP2pmemVirtToBus(m.nvme, a), a + m.nvme.bars[2]!.busOffset);
    strictEqual(pciP2pmemVirtToBus(m.nvme, null), 0n);
    strictEqual(pciAllocP2pmem(m.nvme, 1n << 40n), null);
    strictEqual(p2pmemSysfs(m.nvme)!.available, (64n << 20n) - 3n * 4096n);
    strictEqual(p2pdmaProviderOf(m.nvme, a)!.bar, 2);
    strictEqual(p2pdmaProviderOf(m.nvme, 0x1000n), null);
    pciFreeP2pmem(m.nvme, a, 8192n);
    throws(() => pciFreeP2pmem(m.nvme, a, 8192n), KernelBug);
    await rejects(() => pciP2pdmaRelease(m.nvme), KernelBug);
    pciFreeP2pmem(m.nvme, b, 1n);
    const maps = world.mem.pagemaps().length;
    await world.runTask("unbind", async () => await pciP2pdmaRelease(m.nvme));
    strictEqual(m.nvme.p2pdma, null);
    strictEqual(world.mem.pagemaps().length, maps - 1);
  });
  await t.step("BARs are MMIO regions; donated ranges get pci_p2pdma ZONE_DEVICE pages", () => {
    const bar = m.gpu.bars[1]!;
    strictEqual(world.mem.mmioAt(bar.start!)!.owner, m.gpu);
    strictEqual(bar.mmio!.size, Number(bar.size));
    ok(
      world.mem.pagemaps().some((p) =>
        p.type === "pci_p2pdma" && p.owner === pcimP2pdmaProvider(m.gpu, 1)
      ),
    );
    // donating the same range twice: memremap_pages WARNs (strict: throws) and the pool is unchanged
    const before = p2pmemSysfs(m.gpu)!.size;
    throws(() => pciP2pdmaAddResource(m.gpu, 1, 1n << 30n, 0n), KernelBug);
    strictEqual(p2pmemSysfs(m.gpu)!.size, before);
  });
});

Deno.test("pci_p2pdma_bus_addr_map uses the host bridge offset", () => {
  const world = new Kernel();
  const f = buildMachine(world, {
    cpu: { vendor: "AMD", family: 0x19 },
    hostBridges: [{
      windows: [{
        cpuStart: "0x4000000000",
        size: "0x4000000000",
        busOffset: "-0x3000000000",
        prefetch: true,
      }],
      devices: [
        hostBridgeFn(0x1022, 0x14a4),
        rootPort([gpu({ bars: [{ index: 0, size: "16G", prefetch: true }] })]),
      ],
    }],
  });
  const g = f.endpoints()[0]!;
  pcimP2pdmaInit(g);
  const p = pcimP2pdmaProvider(g, 0)!;
  strictEqual(p.busOffset, -0x30_0000_0000n);
  strictEqual(pciP2pdmaBusAddrMap(p, 0x40_0000_1000n), 0x10_0000_1000n);
});

Deno.test("pci_enable_acs when an IOMMU is present", () => {
  const world = new Kernel();
  const m = defaultMachine(world);
  strictEqual(calcMapTypeAndDist(m.gpu, m.nic, false).mapType, T.BUS_ADDR);
  pciRequestAcs(world);
  for (const d of m.fabric.devices) pciEnableAcs(d);
  // SV|RR|CR|UF from the default SV|TB|RR|CR|UF cap; TB only for noats/untrusted.
  strictEqual(m.dsp[0].acsCtrl, 0x1d);
  strictEqual(calcMapTypeAndDist(m.gpu, m.nic, false).mapType, T.THRU_HOST_BRIDGE);
  const w2 = new Kernel();
  const m2 = defaultMachine(w2, { iommu: true, noats: true });
  strictEqual(m2.dsp[0].acsCtrl, 0x1f);
});

Deno.test("server preset: 8 GPUs and 8 NICs, whitelisted Ice Lake host bridges", () => {
  const world = new Kernel();
  const f = server8Gpu(world);
  const eps = f.endpoints();
  strictEqual(eps.filter((d) => d.vendor === 0x10de).length, 8);
  strictEqual(eps.filter((d) => d.vendor === 0x15b3).length, 8);
  strictEqual(calcMapTypeAndDist(eps[0]!, eps[1]!, false).mapType, T.BUS_ADDR);
  strictEqual(calcMapTypeAndDist(eps[0]!, eps[4]!, false).mapType, T.THRU_HOST_BRIDGE);
  for (const d of eps) {
    for (const b of d.bars) if (b) ok(b.start !== null, `${d.name} BAR ${b.index}`);
  }
});

// ---------- property tests ----------

/** A random subtree: endpoints and (nested) switches. */
const arbNode: fc.Arbitrary<FnSpec> = fc.letrec<{ node: FnSpec }>((tie) => ({
  node: fc.oneof(
    { depthSize: "small" },
    fc.constant(null).map(() =>
      endpoint({ vendor: 0x10de, bars: [{ size: "1M", prefetch: true }] })
    ),
    fc.array(tie("node"), { minLength: 1, maxLength: 3 }).map((kids) => pcieSwitch(kids)),
  ),
})).node;

function randomFabric(world: Kernel, roots: FnSpec[][], cpuAmd: boolean, redirMask: boolean[]) {
  const f = buildMachine(world, {
    cpu: cpuAmd ? { vendor: "AMD", family: 0x19 } : { vendor: "Intel", family: 6 },
    hostBridges: roots.map((r, i) => ({
      bus: i * 0x40,
      devices: [
        hostBridgeFn(0x8086, i % 2 ? 0x2f00 : 0x2020),
        ...r.map((x, j) => rootPort([x], { slot: j + 1 })),
      ],
    })),
  });
  f.devices.forEach((d, i) => {
    if (d.hasAcs && redirMask[i % redirMask.length]) d.acsCtrl |= PCI_ACS_RR;
  });
  return f;
}

function chain(d: PciDev): PciDev[] {
  const out: PciDev[] = [];
  for (let x: PciDev | null = d; x; x = pciUpstreamBridge(x)) out.push(x);
  return out;
}

Deno.test("property: BUS_ADDR iff a common upstream device and no redirect on the path", () => {
  fc.assert(
    fc.property(
      fc.array(fc.array(arbNode, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 3 }),
      fc.boolean(),
      fc.array(fc.integer({ min: 0, max: 3 }).map((x) => x === 0), { minLength: 1, maxLength: 7 }),
      (roots, amd, mask) => {
        const world = new Kernel({ strict: false });
        const f = randomFabric(world, roots, amd, mask);
        const eps = f.endpoints().filter((d) => d.type === "endpoint");
        for (const p of eps) {
          for (const c of eps) {
            const ca = chain(p);
            const cb = chain(c);
            const common = ca.find((x) => cb.includes(x)) ?? null;
            const redir = common !== null &&
              [...ca.slice(0, ca.indexOf(common) + 1), ...cb.slice(0, cb.indexOf(common))].some(
                pciBridgeHasAcsRedir,
              );
            const before = whitelistProbe.calls;
            const r = calcMapTypeAndDist(p, c, false);
            const consulted = whitelistProbe.calls > before;
            strictEqual(r.mapType === T.BUS_ADDR, common !== null && !redir);
            // whitelist only on host-bridge paths, and never on a Zen CPU
            if (consulted) ok(!amd && (common === null || redir));
            if (!amd && (common === null || redir)) ok(consulted);
            // symmetric distance; symmetric type when ACS is symmetric (same set of ports)
            const back = calcMapTypeAndDist(c, p, false);
            strictEqual(back.dist, r.dist);
            strictEqual(back.mapType, r.mapType);
            if (common) strictEqual(r.dist, ca.indexOf(common) + cb.indexOf(common));
            else strictEqual(r.dist, ca.length + cb.length);
          }
        }
      },
    ),
    { numRuns: 60 },
  );
});
