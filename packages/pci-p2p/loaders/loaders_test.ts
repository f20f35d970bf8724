import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import fc from "fast-check";
import { Kernel } from "@dmalab/kernel";
import {
  buildMachine,
  calcMapTypeAndDist,
  cpuList,
  formatLspciTree,
  gpu,
  hostBridgeFn,
  loadSysfsTree,
  lspciToSpec,
  mapTypeName,
  nic,
  parseConfigCaps,
  parseLspciTree,
  parseNcclTopo,
  parseXml,
  PCI_ACS_CR,
  PCI_ACS_RR,
  pcieSwitch,
  rootPort,
  SysfsParseError,
  TopologyParseError,
} from "../mod.ts";

const isParseError = (line: number, col?: number) => (e: unknown) =>
  e instanceof TopologyParseError && e.line === line && (col === undefined || e.col === col);

Deno.test("xml: elements, attributes, entities, comments", () => {
  const r = parseXml(
    `<?xml version="1.0"?>\n<!-- c -->\n<a x='1' y="&lt;&#x41;&amp;">\n  <b/> text &gt; <![CDATA[raw<]]>\n</a>`,
  );
  strictEqual(r.name, "a");
  deepStrictEqual(r.attrs, { x: "1", y: "<A&" });
  strictEqual(r.children[0]!.name, "b");
  strictEqual(r.children[0]!.line, 4);
  strictEqual(r.text, "text >raw<");
});

Deno.test("xml: malformed input names line and column", async (t) => {
  const cases: [string, string, number, number][] = [
    ["unclosed", "<a>\n<b>\n</a>", 3, 1],
    ["mismatch", "<a>\n  </b>", 2, 3],
    ["unquoted", '<a x=1 y="2"/>', 1, 6],
    ["duplicate attr", '<a x="1" x="2"/>', 1, 12],
    ["bare &", '<a x="a & b"/>', 1, 6],
    ["two roots", "<a/><b/>", 1, 5],
    ["text outside", "hello <a/>", 1, 1],
    ["unterminated comment", "<a><!-- x", 1, 4],
    ["never closed", "<a>\n<b>", 2, 1],
  ];
  for (const [name, text, line, col] of cases) {
    await t.step(name, () => throws(() => parseXml(text), isParseError(line, col)));
  }
  await t.step("empty", () => throws(() => parseXml("  "), TopologyParseError));
});

Deno.test("xml: fuzz: any string parses or fails with a TopologyParseError", () => {
  const alphabet = fc.constantFrom(
    "<",
    ">",
    "/",
    "=",
    '"',
    "'",
    "a",
    "b",
    " ",
    "\n",
    "&",
    ";",
    "!",
    "-",
    "?",
    "[",
    "]",
    "#",
    "x",
    "1",
  );
  fc.assert(
    fc.property(fc.array(alphabet, { maxLength: 60 }).map((a) => a.join("")), (s) => {
      try {
        parseXml(s);
      } catch (e) {
        ok(e instanceof TopologyParseError, String(e));
      }
    }),
    { numRuns: 3000 },
  );
});

Deno.test("xml: fuzz: generated documents round-trip", () => {
  type Node = { name: string; attrs: Record<string, string>; children: Node[] };
  const name = fc.constantFrom("system", "cpu", "pci", "gpu", "nic", "net");
  const attrs = fc.dictionary(
    fc.constantFrom("busid", "class", "x", "numaid"),
    fc.string({ maxLength: 8 }),
  );
  const node: fc.Arbitrary<Node> = fc.letrec<{ n: Node }>((tie) => ({
    n: fc.oneof(
      { depthSize: "small" },
      fc.record({ name, attrs, children: fc.constant([] as Node[]) }),
      fc.record({ name, attrs, children: fc.array(tie("n"), { maxLength: 3 }) }),
    ),
  })).n;
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;");
  const ser = (n: Node): string =>
    `<${n.name}${Object.entries(n.attrs).map(([k, v]) => ` ${k}="${esc(v)}"`).join("")}${
      n.children.length ? `>\n${n.children.map(ser).join("\n")}\n</${n.name}>` : "/>"
    }`;
  const strip = (e: ReturnType<typeof parseXml>): Node => ({
    name: e.name,
    attrs: { ...e.attrs },
    children: e.children.map(strip),
  });
  fc.assert(
    fc.property(
      node,
      (n) => deepStrictEqual(strip(parseXml(ser(n))), JSON.parse(JSON.stringify(n))),
    ),
    { numRuns: 300 },
  );
});

Deno.test("nccl: CPU masks become nvidia-smi CPU lists", () => {
  strictEqual(cpuList("00000000,00000000,00ffffff"), "0-23");
  strictEqual(cpuList("ffffff00,00000000,00000000"), "72-95");
  strictEqual(cpuList("00000005"), "0,2");
  strictEqual(cpuList(""), "");
});

Deno.test("nccl: validation errors carry lines", async (t) => {
  await t.step("wrong root", () => throws(() => parseNcclTopo("<graphs/>"), /NCCL_GRAPH_FILE/));
  await t.step(
    "version",
    () =>
      throws(
        () => parseNcclTopo('<system version="2"><cpu numaid="0"/></system>'),
        isParseError(1, 1),
      ),
  );
  await t.step(
    "cpu without numaid",
    () => throws(() => parseNcclTopo("<system>\n<cpu/></system>"), isParseError(2, 1)),
  );
  await t.step(
    "bad busid",
    () =>
      throws(
        () => parseNcclTopo('<system><cpu numaid="0">\n <pci busid="zz"/></cpu></system>'),
        isParseError(2, 2),
      ),
  );
  await t.step(
    "bad number",
    () =>
      throws(
        () => parseNcclTopo('<system><cpu numaid="x"/></system>'),
        /numaid="x" is not a number/,
      ),
  );
  await t.step("duplicate busid", () =>
    throws(
      () =>
        parseNcclTopo(
          '<system><cpu numaid="0">\n<pci busid="0000:01:00.0"/>\n<pci busid="0000:01:00.0"/></cpu></system>',
        ),
      (e) => e instanceof TopologyParseError && e.line === 3 && /first at line 2/.test(e.message),
    ));
  await t.step("unknown elements are warnings", () => {
    const topo = parseNcclTopo('<system><cpu numaid="0"><foo/></cpu><bar/></system>');
    strictEqual(topo.warnings.length, 2);
  });
});

function smallTree(): string {
  const world = new Kernel();
  const f = buildMachine(world, {
    hostBridges: [{
      devices: [
        hostBridgeFn(0x1022, 0x14a4, "Advanced Micro Devices, Inc. [AMD] Device 14a4"),
        rootPort([
          pcieSwitch([gpu({ label: "NVIDIA Corporation Device" }), [
            nic({ fn: 0 }),
            nic({ fn: 1 }),
          ]]),
        ], { slot: 1, fn: 1 }),
        rootPort([], { slot: 3, fn: 1 }),
      ],
    }],
  });
  return formatLspciTree(f, { nn: true });
}
const LSPCI = smallTree();

Deno.test("lspci: -tvnn ids, single root bus, empty bridge round-trip", () => {
  const hosts = parseLspciTree(LSPCI);
  strictEqual(hosts.length, 1);
  strictEqual(
    LSPCI.split("\n")[0],
    "-[0000:00]-+-00.0  Advanced Micro Devices, Inc. [AMD] Device 14a4 [1022:14a4]",
  );
  const rp = hosts[0]!.children[1]!;
  deepStrictEqual([rp.secondary, rp.subordinate], [1, 4]);
  const nicNode = rp.children[0]!.children[1]!.children[1]!;
  deepStrictEqual([nicNode.fn, nicNode.vendor, nicNode.device], [1, 0x15b3, 0x1021]);
  strictEqual(nicNode.label, "Mellanox Technologies MT2910 Family [ConnectX-7]");
  const world = new Kernel();
  const f = buildMachine(world, lspciToSpec(hosts));
  strictEqual(formatLspciTree(f, { nn: true }), LSPCI);
  const r = calcMapTypeAndDist(f.dev("0000:03:00.0"), f.dev("0000:04:00.1"), false);
  deepStrictEqual([mapTypeName(r.mapType), r.dist], ["BUS_ADDR", 4]);
});

Deno.test("lspci: malformed trees name line and column", async (t) => {
  const cases: [string, string, number, number][] = [
    ["no leading dash", "[0000:00]-+-00.0  x", 1, 1],
    ["bad connector", "-[0000:00]-+-00.0  x\n           *-01.0  y", 2, 12],
    ["missing sibling", "-[0000:00]-+-00.0  x\n", 2, 12],
    ["bad function", "-[0000:00]---0g.0  x", 1, 14],
    ["slot > 1f", "-[0000:00]---20.0  x", 1, 14],
    ["reversed range", "-[0000:00]---01.0-[05-03]--", 1, 19],
    ["junk after name spacing", "-[0000:00]---01.0x", 1, 18],
    [
      "missing continuation bar",
      `-[0000:00]-+-01.0-[01]--+-00.0  a\n${" ".repeat(24)}\\-00.1  b\n           \\-02.0  c`,
      2,
      12,
    ],
    ["text after tree", "-[0000:00]---00.0  x\nmore", 2, 1],
  ];
  for (const [name, text, line, col] of cases) {
    await t.step(name, () => throws(() => parseLspciTree(text), isParseError(line, col)));
  }
  await t.step("empty", () => throws(() => parseLspciTree("\n\n"), TopologyParseError));
});

Deno.test("lspci: fuzz: mutated trees parse or fail with a TopologyParseError", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.nat(LSPCI.length - 1),
          fc.constantFrom("", "+", "\\", "-", "|", " ", "[", "]", "\n", "0", "."),
        ),
        { minLength: 1, maxLength: 4 },
      ),
      (muts) => {
        let s = LSPCI;
        for (const [at, ch] of muts) s = s.slice(0, at) + ch + s.slice(at + 1);
        try {
          const hosts = parseLspciTree(s);
          try {
            buildMachine(new Kernel(), lspciToSpec(hosts));
          } catch (e) {
            ok(e instanceof Error && !(e instanceof TypeError), String(e));
          }
        } catch (e) {
          ok(e instanceof TopologyParseError, String(e));
        }
      },
    ),
    { numRuns: 2000 },
  );
});

// ---------- sysfs ----------

function configWith(opts: { type?: number; acs?: [number, number]; ats?: boolean }): Uint8Array {
  const cfg = new Uint8Array(4096);
  const dv = new DataView(cfg.buffer);
  dv.setUint16(6, 0x10, true); // capabilities list
  cfg[0x34] = 0x40;
  cfg[0x40] = 0x10; // PCIe cap
  cfg[0x41] = 0;
  dv.setUint16(0x42, ((opts.type ?? 0) << 4) | 2, true);
  let at = 0x100;
  const caps: [number, (o: number) => void][] = [];
  if (opts.acs) {
    caps.push([0x0d, (o) => {
      dv.setUint16(o + 4, opts.acs![0], true);
      dv.setUint16(o + 6, opts.acs![1], true);
    }]);
  }
  if (opts.ats) caps.push([0x0f, (o) => dv.setUint16(o + 4, 0x20, true)]);
  caps.forEach(([id, fill], i) => {
    const next = i === caps.length - 1 ? 0 : at + 0x10;
    dv.setUint32(at, (id | (1 << 16) | (next << 20)) >>> 0, true);
    fill(at);
    at += 0x10;
  });
  return cfg;
}

function writeDev(
  dir: string,
  a: {
    cls: number;
    vendor: number;
    device: number;
    bar?: [bigint, bigint];
    type?: number;
    acs?: [number, number];
    ats?: boolean;
    numa?: number;
  },
) {
  Deno.mkdirSync(dir, { recursive: true });
  const w = (n: string, v: string) => Deno.writeTextFileSync(`${dir}/${n}`, v + "\n");
  w("class", `0x${a.cls.toString(16).padStart(6, "0")}`);
  w("vendor", `0x${a.vendor.toString(16).padStart(4, "0")}`);
  w("device", `0x${a.device.toString(16).padStart(4, "0")}`);
  const zero = "0x0000000000000000 0x0000000000000000 0x0000000000000000";
  const lines = [0, 1, 2, 3, 4, 5].map((i) =>
    i === 0 && a.bar
      ? `0x${a.bar[0].toString(16).padStart(16, "0")} 0x${
        (a.bar[0] + a.bar[1] - 1n).toString(16).padStart(16, "0")
      } 0x000000000014220c`
      : zero
  );
  w("resource", lines.join("\n"));
  w("current_link_speed", "16.0 GT/s PCIe");
  w("current_link_width", "16");
  w("max_link_speed", "32.0 GT/s PCIe");
  w("max_link_width", "16");
  w("numa_node", String(a.numa ?? 0));
  Deno.writeFileSync(`${dir}/config`, configWith(a));
}

function makeSysfs(root: string, redirect: boolean) {
  const h = `${root}/devices/pci0000:00`;
  writeDev(`${h}/0000:00:00.0`, { cls: 0x060000, vendor: 0x1022, device: 0x14a4 });
  const rp = `${h}/0000:00:01.1`;
  writeDev(rp, { cls: 0x060400, vendor: 0x1022, device: 0x14a5, type: 4, acs: [0x1f, 0] });
  const usp = `${rp}/0000:01:00.0`;
  writeDev(usp, { cls: 0x060400, vendor: 0x1000, device: 0xc030, type: 5 });
  const d0 = `${usp}/0000:02:00.0`;
  const d1 = `${usp}/0000:02:01.0`;
  writeDev(d0, {
    cls: 0x060400,
    vendor: 0x1000,
    device: 0xc030,
    type: 6,
    acs: [0x5f, redirect ? PCI_ACS_RR | PCI_ACS_CR : 0],
  });
  writeDev(d1, { cls: 0x060400, vendor: 0x1000, device: 0xc030, type: 6, acs: [0x5f, 0] });
  writeDev(`${d0}/0000:03:00.0`, {
    cls: 0x030200,
    vendor: 0x10de,
    device: 0x2330,
    bar: [0x200000000000n, 1n << 34n],
    ats: true,
  });
  writeDev(`${d1}/0000:04:00.0`, {
    cls: 0x020700,
    vendor: 0x15b3,
    device: 0x1021,
    bar: [0x200400000000n, 1n << 25n],
    ats: true,
  });
  Deno.writeTextFileSync(`${d1}/0000:04:00.0/sriov_totalvfs`, "8\n");
  writeDev(`${d1}/0000:04:00.2`, { cls: 0x020700, vendor: 0x15b3, device: 0x101e, ats: true });
  Deno.symlinkSync("../0000:04:00.0", `${d1}/0000:04:00.2/physfn`);
  Deno.mkdirSync(`${root}/bus/pci/devices`, { recursive: true });
  for (
    const p of [
      `${h}/0000:00:00.0`,
      rp,
      usp,
      d0,
      d1,
      `${d0}/0000:03:00.0`,
      `${d1}/0000:04:00.0`,
      `${d1}/0000:04:00.2`,
    ]
  ) {
    Deno.symlinkSync(p, `${root}/bus/pci/devices/${p.split("/").pop()}`);
  }
}

Deno.test("sysfs: hierarchy and flat bus/pci/devices give the same machine", () => {
  const root = Deno.makeTempDirSync({ prefix: "dmalab-sysfs-" });
  try {
    makeSysfs(root, true);
    const cpu = { arch: "x86_64", vendor: "AMD", family: 0x19, model: 0 } as const;
    const a = loadSysfsTree(root, { cpu });
    const b = loadSysfsTree(`${root}/bus/pci/devices`, { cpu });
    deepStrictEqual(a.hostBridges, b.hostBridges);
    const world = new Kernel();
    const f = buildMachine(world, a);
    const gpu = f.dev("0000:03:00.0");
    const nic = f.dev("0000:04:00.0");
    strictEqual(gpu.bars[0]!.start, 0x200000000000n, "BAR kept where firmware put it");
    strictEqual(gpu.bars[0]!.size, 1n << 34n);
    ok(gpu.bars[0]!.prefetch && gpu.bars[0]!.is64);
    ok(gpu.ats.cap && gpu.ats.pageAligned);
    deepStrictEqual(gpu.link, { gen: 4, width: 16, capGen: 5, capWidth: 16 });
    strictEqual(f.dev("0000:02:00.0").type, "switch_downstream");
    strictEqual(f.dev("0000:02:00.0").acsCtrl, PCI_ACS_RR | PCI_ACS_CR);
    const vf = f.dev("0000:04:00.2");
    ok(vf.isVirtfn && vf.physfn === nic && nic.virtfns[0] === vf);
    strictEqual(nic.sriovTotalVfs, 8);
    const r = calcMapTypeAndDist(gpu, nic, true);
    deepStrictEqual([mapTypeName(r.mapType), r.dist], ["THRU_HOST_BRIDGE", 4]);
    ok(world.dmesg.includes("pci=disable_acs_redir=0000:02:00.0"));
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("sysfs: bad files are reported with their path", () => {
  const root = Deno.makeTempDirSync({ prefix: "dmalab-sysfs-" });
  try {
    makeSysfs(root, false);
    Deno.writeTextFileSync(`${root}/devices/pci0000:00/0000:00:01.1/class`, "bridge\n");
    throws(
      () => loadSysfsTree(root),
      (e) => e instanceof SysfsParseError && e.path.endsWith("0000:00:01.1/class"),
    );
    Deno.writeTextFileSync(`${root}/devices/pci0000:00/0000:00:01.1/class`, "0x060400\n");
    Deno.writeTextFileSync(`${root}/devices/pci0000:00/0000:00:01.1/current_link_speed`, "fast\n");
    throws(() => loadSysfsTree(root), /unknown link speed/);
    throws(() => loadSysfsTree(`${root}/nowhere`), SysfsParseError);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("sysfs: config parser survives arbitrary bytes (capability loops are bounded)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 4096 }), (bytes) => {
      const c = parseConfigCaps(bytes);
      ok(typeof c === "object");
    }),
    { numRuns: 300 },
  );
  // a self-referencing extended capability
  const cfg = new Uint8Array(4096);
  new DataView(cfg.buffer).setUint32(0x100, (0x0d | (1 << 16) | (0x100 << 20)) >>> 0, true);
  ok(parseConfigCaps(cfg).acs);
});
