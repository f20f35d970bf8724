/**
 * Benchmarks with a raw baseline in the same group:
 * - all-pairs P2PDMA map type on a generated 1,024-endpoint fabric
 *   (calcMapTypeAndDist over PciDev objects vs the same walk over typed arrays);
 * - max-min fair sharing of 1,000 flows (BandwidthModel.share with routing vs
 *   progressive filling over pre-resolved integer routes).
 */
import { Kernel } from "@dmalab/kernel";
import {
  BandwidthModel,
  buildMachine,
  calcMapTypeAndDist,
  endpoint,
  type FnSpec,
  hostBridgeFn,
  maxMinFair,
  PCI_ACS_RR,
  pciBridgeHasAcsRedir,
  type PciDev,
  pcieSwitch,
  pciUpstreamBridge,
  rootPort,
} from "./mod.ts";

/** 16 host bridges (one domain each) x 2 root ports x switch(8 DSPs) x switch(4 endpoints) = 1,024 endpoints. */
function fabric1024() {
  const world = new Kernel({ strict: false });
  const leafSwitch = (): FnSpec =>
    pcieSwitch(
      [0, 1, 2, 3].map(() => endpoint({ vendor: 0x10de, bars: [{ size: "1M", prefetch: true }] })),
    );
  const f = buildMachine(world, {
    cpu: { vendor: "Intel", family: 6, model: 0x6a },
    hostBridges: Array.from({ length: 16 }, (_, h) => ({
      domain: h,
      bus: 0,
      numaNode: h >> 3,
      devices: [
        hostBridgeFn(0x8086, h % 4 === 3 ? 0x6f00 : 0x09a2),
        ...[0, 1].map((r) =>
          rootPort([pcieSwitch([0, 1, 2, 3, 4, 5, 6, 7].map(leafSwitch))], { slot: r + 1 })
        ),
      ],
    })),
  });
  // ACS redirect on every 5th downstream port, so every branch is exercised
  f.devices.filter((d) => d.type === "switch_downstream").forEach((d, i) => {
    if (i % 5 === 0) d.acsCtrl = PCI_ACS_RR;
  });
  return { world, f, eps: f.endpoints() };
}

const { f, eps } = fabric1024();
if (eps.length !== 1024) throw new Error(`expected 1024 endpoints, got ${eps.length}`);

// Raw baseline: the same walks over typed arrays (parent index, redirect bit, whitelisted host).
const index = new Map<PciDev, number>(f.devices.map((d, i) => [d, i]));
const up = new Int32Array(f.devices.length).fill(-1);
const redir = new Uint8Array(f.devices.length);
const host = new Int32Array(f.devices.length);
const hostOk = f.hostBridges.map((h) => h.bus.devices[0]!.deviceId === 0x09a2);
f.devices.forEach((d, i) => {
  const u = pciUpstreamBridge(d);
  up[i] = u ? index.get(u)! : -1;
  redir[i] = pciBridgeHasAcsRedir(d) ? 1 : 0;
  host[i] = f.hostBridges.indexOf(d.host);
});
const epIdx = Int32Array.from(eps.map((d) => index.get(d)!));
function rawMapType(p: number, c: number): number {
  let acs = 0;
  let a = p;
  while (a >= 0) {
    acs += redir[a]!;
    let bb = c;
    while (bb >= 0) {
      if (bb === a) {
        let x = c;
        while (x !== a) {
          acs += redir[x]!;
          x = up[x]!;
        }
        if (acs === 0) return 3;
        return hostOk[host[p]!]! && hostOk[host[c]!]! ? 4 : 2;
      }
      bb = up[bb]!;
    }
    a = up[a]!;
  }
  return hostOk[host[p]!]! && hostOk[host[c]!]! ? 4 : 2;
}

let sink = 0;
Deno.bench({
  name: "all-pairs map type, 1,024 endpoints (calcMapTypeAndDist)",
  group: "all-pairs",
  n: 3,
  warmup: 1,
  fn() {
    let s = 0;
    for (const p of eps) for (const c of eps) s += calcMapTypeAndDist(p, c, false).mapType;
    sink += s;
  },
});
Deno.bench({
  name: "all-pairs map type, 1,024 endpoints (raw typed arrays)",
  group: "all-pairs",
  baseline: true,
  n: 3,
  warmup: 1,
  fn() {
    let s = 0;
    for (let i = 0; i < epIdx.length; i++) {
      for (let j = 0; j < epIdx.length; j++) s += rawMapType(epIdx[i]!, epIdx[j]!);
    }
    sink += s;
  },
});

// 1,000 flows between random endpoints whose paths are supported (seeded LCG).
const world2 = new Kernel();
const amd = buildMachine(world2, {
  cpu: { vendor: "AMD", family: 0x19 },
  hostBridges: [0, 1, 2, 3].map((h) => ({
    bus: h * 0x40,
    numaNode: h >> 1,
    devices: [
      hostBridgeFn(0x1022, 0x14a4),
      ...[0, 1, 2, 3].map((r) =>
        rootPort([
          pcieSwitch([0, 1, 2, 3, 4, 5, 6, 7].map(() =>
            endpoint({ vendor: 0x10de, link: { gen: 4, width: 16 } })
          )),
        ], { slot: r + 1 })
      ),
    ],
  })),
});
const aeps = amd.endpoints();
let seed = 12345;
const rnd = (n: number) => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed % n;
};
const flows = Array.from({ length: 1000 }, () => {
  const src = aeps[rnd(aeps.length)]!;
  let dst = aeps[rnd(aeps.length)]!;
  while (dst === src) dst = aeps[rnd(aeps.length)]!;
  return { src, dst };
});
const model = new BandwidthModel(amd);
const routes = flows.map((fl) => model.route(fl.src, fl.dst));
const resIds = new Map<string, number>();
const capArr: number[] = [];
const rawRoutes = routes.map((r) =>
  Int32Array.from(r.hops.map((h) => {
    let i = resIds.get(h.res.id);
    if (i === undefined) {
      i = resIds.size;
      resIds.set(h.res.id, i);
      capArr.push(h.res.capacity);
    }
    return i;
  }))
);
const rawCap = Float64Array.from(capArr);
function rawProgressiveFilling(): Float64Array {
  const cap = rawCap.slice();
  const rate = new Float64Array(rawRoutes.length);
  const frozen = new Uint8Array(rawRoutes.length);
  const load = new Float64Array(cap.length);
  let active = rawRoutes.length;
  while (active > 0) {
    load.fill(0);
    for (let i = 0; i < rawRoutes.length; i++) {
      if (!frozen[i]) { for (const j of rawRoutes[i]!) load[j]! += 1; }
    }
    let delta = Infinity;
    for (let j = 0; j < cap.length; j++) {
      if (load[j]! > 0) delta = Math.min(delta, cap[j]! / load[j]!);
    }
    if (!(delta < Infinity)) break;
    for (let j = 0; j < cap.length; j++) cap[j]! -= delta * load[j]!;
    for (let i = 0; i < rawRoutes.length; i++) {
      if (frozen[i]) continue;
      rate[i]! += delta;
      for (const j of rawRoutes[i]!) {
        if (cap[j]! <= 1e-9) {
          frozen[i] = 1;
          active--;
          break;
        }
      }
    }
  }
  return rate;
}
// the two agree
{
  const a = model.share(flows);
  const b = rawProgressiveFilling();
  for (let i = 0; i < a.length; i++) {
    if (Math.abs(a[i]! - b[i]!) > 1e-6) throw new Error(`flow ${i}: ${a[i]} vs ${b[i]}`);
  }
  void maxMinFair;
}
Deno.bench({
  name: "max-min fair sharing, 1,000 flows (BandwidthModel.share: route + fill)",
  group: "max-min",
  fn() {
    sink += model.share(flows)[0]!;
  },
});
Deno.bench({
  name: "max-min fair sharing, 1,000 flows (raw progressive filling, pre-routed)",
  group: "max-min",
  baseline: true,
  fn() {
    sink += rawProgressiveFilling()[0]!;
  },
});
addEventListener("unload", () => {
  if (sink === 0.5) console.log(sink);
});
