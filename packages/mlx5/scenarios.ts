/**
 * DOC: scenario rigs (GPU VRAM exported to mlx5 NICs)
 *
 * Builders shared by the scenario tests, the benchmarks and the explorer:
 * a world with a GPU (`@dmalab/gpu`) and one or two mlx5 NICs on a preset
 * machine, optionally with an IOMMU (the pci-p2p labelled IOTLB-miss and
 * ATS-translation costs wired into the units), and
 * {@linkcode mlx5EvictionRaceScenario}: a dynamic dma-buf MR over GPU VRAM
 * receiving an RDMA WRITE stream while the GPU evicts the object, in the
 * shape of `@dmalab/explorer`'s `Scenario` (declared structurally here so
 * the explorer does not depend on this package; apps register it).
 *
 * Locking: builders run before the world's tasks; the scenario's tasks
 * follow the rules of qp.ts, mr.ts and the GPU driver.
 *
 * @module
 */
import { Kernel, type KernelOptions, MmStruct } from "@dmalab/kernel";
import { dmaHeapSystemAlloc } from "@dmalab/dma-buf";
import {
  buildMachine,
  DEFAULT_BANDWIDTH_PARAMS,
  defaultMachineSpec,
  intelUnlistedSpec,
  type MachineSpec,
  mapTypeName,
  nic,
  type PciDev,
  type PciFabric,
  rootPort,
} from "@dmalab/pci-p2p";
import { iommuSetup } from "@dmalab/iommu";
import { type GpuBo, gpuBoExport, gpuChecksumOf, type GpuDevice, gpuProbe } from "@dmalab/gpu";
import { IbUmemDmabuf } from "./umem.ts";
import {
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_RELAXED_ORDERING,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  mappingP2pType,
} from "./ats.ts";
import { type IbPd, type Mlx5Device, mlx5Probe } from "./device.ts";
import {
  mlx5IbRegUserMr,
  mlx5IbRegUserMrDmabuf,
  type Mlx5Mr,
  type RegDmabufOptions,
} from "./mr.ts";
import { ibConnectQps, IbCq, IbQp } from "./qp.ts";

/** Every access right plus relaxed ordering (what the ATS rule looks at). */
export const ACCESS_ALL: number = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE |
  IB_ACCESS_REMOTE_READ | IB_ACCESS_RELAXED_ORDERING;

/** Machines a rig can run on. */
export type RigMachine = "amd" | "intel-unlisted";

/** Options for {@linkcode buildRig}. */
export interface RigOptions {
  /** "amd" (the default machine) or "intel-unlisted" (plus a NIC on its own root port). */
  machine?: RigMachine;
  /** Turn the IOMMU on (ACS redirect on switch ports, ATS on the NICs). */
  iommu?: boolean;
  /** VRAM the GPU driver manages (default 64 MiB). */
  vramSize?: number;
}

/** A built rig. */
export interface Rig {
  /** The world. */
  readonly world: Kernel;
  /** The fabric. */
  readonly fabric: PciFabric;
  /** The GPU. */
  readonly gpu: GpuDevice;
  /** NIC under the GPU's switch (AMD) or on another root port (Intel). */
  readonly nic: Mlx5Device;
  /** NIC under another host bridge (AMD only; null on Intel). */
  readonly nic2: Mlx5Device | null;
  /** A user address space for user-memory MRs. */
  readonly mm: MmStruct;
}

function intelWithNic(): MachineSpec {
  const spec = intelUnlistedSpec();
  const hb = spec.hostBridges[0]!;
  return {
    ...spec,
    name: `${spec.name} + mlx5 NIC on root port 00:1c.0`,
    hostBridges: [{
      ...hb,
      devices: [
        ...hb.devices,
        rootPort([nic({ link: { gen: 3, width: 16 } })], {
          vendor: 0x8086,
          device: 0x6f10,
          slot: 0x1c,
          fn: 0,
          link: { gen: 3, width: 16 },
        }),
      ],
    }],
  };
}

/**
 * Builds the GPU + NIC world.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { buildRig } from "@dmalab/mlx5/scenarios";
 * const rig = buildRig(new Kernel());
 * rig.nic.pdev.name; // "0000:04:00.0"
 * ```
 */
export function buildRig(world: Kernel, options: RigOptions = {}): Rig {
  const machine = options.machine ?? "amd";
  const spec = machine === "amd" ? defaultMachineSpec({ iommu: !!options.iommu }) : {
    ...intelWithNic(),
    iommu: !!options.iommu,
  };
  const fabric = buildMachine(world, spec);
  if (options.iommu) {
    iommuSetup(world, {
      strict: true,
      unitDefaults: {
        iotlb: { missPenaltyNs: DEFAULT_BANDWIDTH_PARAMS.iotlbMissNs.value },
        devTlb: { translationRequestNs: DEFAULT_BANDWIDTH_PARAMS.atsTranslationNs.value },
      },
    });
  }
  const isGpu = (d: PciDev) => (d.classCode >> 16) === 0x03;
  const isNic = (d: PciDev) => (d.classCode >> 16) === 0x02;
  const gpuDev = fabric.devices.find(isGpu)!;
  const nics = fabric.devices.filter(isNic);
  const gpu = gpuProbe(gpuDev, { vramSize: options.vramSize ?? 64 << 20 });
  const n1 = machine === "amd" ? fabric.dev("0000:04:00.0") : nics[0]!;
  const nicDev = mlx5Probe(n1);
  const nic2 = machine === "amd" ? mlx5Probe(fabric.dev("0000:41:00.0")) : null;
  return { world, fabric, gpu, nic: nicDev, nic2, mm: new MmStruct(world, "app") };
}

/** A GPU object exported as a dma-buf fd and registered as an MR on `nic`. */
export interface VramMr {
  /** The object. */
  readonly bo: GpuBo;
  /** The fd in the world's default table. */
  readonly fd: number;
  /** The MR. */
  readonly mr: Mlx5Mr;
}

/** Exports `bo` and registers it on `nic` (in a task). */
export async function registerVramMr(
  rig: Rig,
  nicDev: Mlx5Device,
  bo: GpuBo,
  options: RegDmabufOptions & { access?: number } = {},
): Promise<VramMr> {
  const buf = gpuBoExport(rig.gpu, bo);
  const fd = buf.fd(2); // dma_buf_fd: the fd takes over the export reference
  const mr = await mlx5IbRegUserMrDmabuf(
    nicDev.allocPd(),
    0,
    bo.size,
    0x10_0000_0000,
    fd,
    options.access ?? ACCESS_ALL,
    options,
  );
  return { bo, fd, mr };
}

/** A user-memory MR of `length` bytes filled by `fill(i)` (in a task). */
export async function registerUserMr(
  rig: Rig,
  nicDev: Mlx5Device,
  length: number,
  fill?: (i: number) => number,
  pd: IbPd = nicDev.allocPd(),
): Promise<Mlx5Mr> {
  const addr = await rig.mm.mmap({ length });
  if (fill) {
    const bytes = new Uint8Array(length);
    for (let i = 0; i < length; i++) bytes[i] = fill(i);
    await rig.mm.write(addr, bytes);
  }
  return await mlx5IbRegUserMr(pd, rig.mm, addr, length, addr, ACCESS_ALL);
}

/** A loopback or two-NIC QP pair for MRs on `a` (requester) and `b`. */
export function connect(
  a: Mlx5Device,
  pa: IbPd,
  b: Mlx5Device,
  pb: IbPd,
  chunk?: number,
): { qa: IbQp; qb: IbQp } {
  const opts = chunk === undefined ? {} : { chunk };
  const qa = new IbQp(pa, new IbCq(a), opts);
  const qb = new IbQp(pb, new IbCq(b), opts);
  ibConnectQps(qa, qb);
  return { qa, qb };
}

/**
 * `@dmalab/explorer`'s `Scenario` shape (structural copy: name,
 * description, expect, worldOptions, build, invariants, check, fingerprint).
 */
export interface Mlx5Scenario<S> {
  /** Name on the command line. */
  readonly name: string;
  /** One line for listings. */
  readonly description: string;
  /** "clean" or "bug". */
  readonly expect?: "clean" | "bug";
  /** World options of each run. */
  readonly worldOptions?: Omit<KernelOptions, "policy">;
  /** Spawns the tasks; returns shared state. */
  build(world: Kernel): S;
  /** Checked at every scheduling point. */
  invariants?(world: Kernel, state: S): string[];
  /** Checked when every task ended. */
  check?(world: Kernel, state: S): string[];
  /** State beyond task positions. */
  fingerprint?(world: Kernel, state: S): string | number;
}

/** State of {@linkcode mlx5EvictionRaceScenario}. */
export interface EvictionRaceState {
  /** The rig (set by build). */
  rig: Rig | null;
  /** The VRAM MR (set by the RDMA task). */
  target: VramMr | null;
  /** Completion statuses. */
  statuses: string[];
  /** The GPU's checksum of the target at the end. */
  checksum: number | null;
  /** The checksum the written bytes must give. */
  expected: number;
  /** Whether the eviction ran. */
  evicted: boolean;
  /** The work requests are posted (the GPU task starts its allocation after this). */
  streaming: boolean;
}

/** Options for {@linkcode mlx5EvictionRaceScenario}. */
export interface EvictionRaceOptions {
  /** Work requests in the stream (default 4). */
  wrs?: number;
  /** Bytes per work request (default 16 KiB). */
  wrBytes?: number;
  /** An importer that ignores invalidate (negative control: expect "bug"). */
  brokenImporter?: boolean;
  /**
   * RDMA_WRITE (default): the stream writes a pattern into the VRAM MR.
   * RDMA_READ: the GPU fills the object first and the stream reads it into
   * a user MR, so reads after the move must wait for the copy (KERNEL fence).
   */
  opcode?: "RDMA_WRITE" | "RDMA_READ";
}

/**
 * "mlx5 dynamic MR invalidation racing RDMA traffic and GPU eviction": a
 * user MR streams RDMA WRITEs into a dynamic dma-buf MR over a GPU object
 * in VRAM while a GPU task fills a second object that forces the first out
 * to system memory. Invariants at every step: the world's checkers (no MTT
 * survives its invalidate, no DMA to VRAM the object left); at the end:
 * every completion succeeded and the GPU's checksum of the target equals
 * the bytes written.
 */
export function mlx5EvictionRaceScenario(
  options: EvictionRaceOptions = {},
): Mlx5Scenario<EvictionRaceState> {
  const wrs = options.wrs ?? 4;
  const read = options.opcode === "RDMA_READ";
  const wrBytes = options.wrBytes ?? 16 << 10;
  const total = wrs * wrBytes;
  const pattern = read ? () => 0x3c : (i: number) => (i * 7 + 3) & 0xff;
  const expectedBytes = new Uint8Array(total);
  for (let i = 0; i < total; i++) expectedBytes[i] = pattern(i);
  return {
    name: `mlx5-eviction-race${read ? "-read" : ""}${options.brokenImporter ? "-broken" : ""}`,
    description: options.brokenImporter
      ? "negative control: an importer that keeps its MTT across invalidate while the GPU evicts"
      : `mlx5 dynamic MR invalidation racing RDMA ${
        read ? "READ" : "WRITE"
      } traffic and GPU eviction`,
    expect: options.brokenImporter ? "bug" : "clean",
    worldOptions: { strict: true, lockdep: false },
    build(world) {
      const s: EvictionRaceState = {
        rig: null,
        target: null,
        statuses: [],
        checksum: null,
        expected: gpuChecksumOf(expectedBytes),
        evicted: false,
        streaming: false,
      };
      const rig = buildRig(world, { vramSize: 2 * total });
      s.rig = rig;
      const bo = rig.gpu.boCreate(total);
      const hog = rig.gpu.boCreate(2 * total - 4096);
      world.spawn("rdma", async () => {
        if (read) {
          // the GPU writes the data; userspace waits for that job before RDMA
          const fill = await rig.gpu.fill(bo, 0x3c);
          await fill.fence.wait(false);
        }
        s.target = await registerVramMr(rig, rig.nic, bo);
        if (options.brokenImporter) {
          s.target.mr.zap = () => {}; // keeps stale translations
        }
        const local = await registerUserMr(
          rig,
          rig.nic,
          total,
          read ? undefined : pattern,
          s.target.mr.pd,
        );
        const { qa } = connect(rig.nic, local.pd, rig.nic, s.target.mr.pd, 4096);
        for (let k = 0; k < wrs; k++) {
          qa.postSend({
            wrId: k,
            opcode: read ? "RDMA_READ" : "RDMA_WRITE",
            sge: { mr: local, addr: local.iova + k * wrBytes, length: wrBytes },
            remoteAddr: s.target.mr.iova + k * wrBytes,
            rkey: s.target.mr.rkey,
          });
        }
        s.streaming = true;
        await qa.cq.waitTotal(wrs);
        s.statuses = qa.cq.poll().map((w) => w.status);
        if (read) {
          s.checksum = gpuChecksumOf(await rig.mm.read(local.iova, total));
        } else {
          const job = await rig.gpu.checksum(bo);
          await job.fence.wait(false);
          s.checksum = job.result;
        }
      });
      world.spawn("gpu", async () => {
        while (!s.streaming) await world.sched.sleepNs(200, "gpu idle");
        await world.sched.sleepNs(500, "gpu");
        await rig.gpu.fill(hog, 0xee); // needs the target's VRAM: evicts it
        s.evicted = rig.gpu.stats.evictions > 0;
      });
      return s;
    },
    invariants: (world) => world.check(),
    check(_world, s) {
      const out: string[] = [];
      if (s.statuses.length !== wrs || s.statuses.some((x) => x !== "SUCCESS")) {
        out.push(`completions: ${s.statuses.join(",")}`);
      }
      if (s.checksum !== s.expected) {
        out.push(`target checksum 0x${s.checksum?.toString(16)} != 0x${s.expected.toString(16)}`);
      }
      return out;
    },
    fingerprint: (_w, s) =>
      `${s.statuses.length}:${s.evicted}:${s.target?.mr.faults ?? 0}:${
        s.target?.bo.placement ?? "-"
      }`,
  };
}

/** One row of {@linkcode measureAtsPaths}. */
export interface AtsPathRow {
  /** ATS rule of the world. */
  readonly rule: string;
  /** Path of the target MR. */
  readonly path: string;
  /** Map type of the target's mapping (the P2P source information). */
  readonly mapType: string;
  /** Whether the target mkey uses ATS. */
  readonly ats: boolean;
  /** Bytes written. */
  readonly bytes: number;
  /** ATS translation requests on the target NIC. */
  readonly atsTranslations: number;
  /** IOTLB misses on the target NIC. */
  readonly iotlbMisses: number;
  /** Translation latency before overlap, µs. */
  readonly translationUs: number;
  /** Modelled time of the stream, µs. */
  readonly modelledUs: number;
  /** Modelled GB/s. */
  readonly gbps: number;
  /** Payload rate of the slowest link on the path, GB/s (PCIe limit). */
  readonly linkGBps: number;
}

/** Target kinds {@linkcode measureAtsPaths} streams into. */
export type AtsPathKind =
  | "cpu-dmabuf"
  | "vram-switch"
  | "vram-other-hb"
  | "vram-intel-fallback"
  | "user";

/**
 * Streams `bytes` of RDMA WRITEs (64 KiB requests from one 64 KiB user
 * source, loopback on the NIC that owns the target) into a target MR of
 * each kind, in a fresh world with the IOMMU on and `mlx5.ats` = `rule`,
 * and reports modelled time, bytes and translation counts per path.
 * `vram-intel-fallback` runs on the Intel preset, where the exporter moves
 * the object to system memory first.
 */
export async function measureAtsPaths(
  rule: "mainline" | "p2p-aware",
  bytes: number = 16 << 20,
  kinds: readonly AtsPathKind[] = ["cpu-dmabuf", "vram-switch", "vram-other-hb", "user"],
  iommu = true,
): Promise<AtsPathRow[]> {
  const rows: AtsPathRow[] = [];
  for (const kind of kinds) {
    const world = new Kernel({ variants: { "mlx5.ats": rule }, lockdep: false });
    const rig = buildRig(world, {
      iommu,
      vramSize: Math.max(64 << 20, 2 * bytes),
      machine: kind === "vram-intel-fallback" ? "intel-unlisted" : "amd",
    });
    const nicDev = kind === "vram-other-hb" ? rig.nic2! : rig.nic;
    const row = await world.runTask("stream", async () => {
      let target: Mlx5Mr;
      if (kind === "user") target = await registerUserMr(rig, nicDev, bytes);
      else if (kind === "cpu-dmabuf") {
        const buf = dmaHeapSystemAlloc(world, bytes);
        const fd = buf.fd(2);
        target = await mlx5IbRegUserMrDmabuf(
          nicDev.allocPd(),
          0,
          bytes,
          0x20_0000_0000,
          fd,
          ACCESS_ALL,
        );
      } else {
        const bo = rig.gpu.boCreate(bytes);
        await rig.gpu.fill(bo, 0);
        target = (await registerVramMr(rig, nicDev, bo)).mr;
      }
      const src = await registerUserMr(rig, nicDev, 64 << 10, (i) => i & 0xff, target.pd);
      const { qa } = connect(nicDev, target.pd, nicDev, target.pd);
      const s0 = { ...nicDev.stats };
      const t0 = world.sched.now;
      const n = Math.ceil(bytes / (64 << 10));
      for (let k = 0; k < n; k++) {
        qa.postSend({
          wrId: k,
          opcode: "RDMA_WRITE",
          sge: { mr: src, addr: src.iova, length: 64 << 10 },
          remoteAddr: target.iova + k * (64 << 10),
          rkey: target.rkey,
        });
      }
      await qa.cq.waitTotal(n);
      const ns = world.sched.now - t0;
      const u = target.umem;
      const mt = u instanceof IbUmemDmabuf && u.sgt ? mapTypeName(mappingP2pType(u.sgt)) : "NONE";
      const link = kind.startsWith("vram") && kind !== "vram-intel-fallback"
        ? nicDev.cost.pathGBps(nicDev.pdev, rig.gpu.vramBase, true)
        : nicDev.cost.memoryGBps(nicDev.pdev, "up");
      return {
        rule,
        path: kind,
        mapType: mt,
        ats: target.ats,
        bytes,
        atsTranslations: nicDev.stats.atsTranslations - s0.atsTranslations,
        iotlbMisses: nicDev.stats.iotlbMisses - s0.iotlbMisses,
        translationUs: (nicDev.stats.translationNs - s0.translationNs) / 1000,
        modelledUs: ns / 1000,
        gbps: bytes / ns,
        linkGBps: link,
      };
    });
    rows.push(row);
  }
  return rows;
}

/** Renders rows of {@linkcode measureAtsPaths} as a Markdown table. */
export function formatAtsTable(rows: readonly AtsPathRow[]): string {
  const head =
    "| rule | target | map type | ATS | bytes | ATS translations | IOTLB misses | translation µs | modelled µs | GB/s | link GB/s |";
  const sep = "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|";
  const lines = rows.map((r) =>
    `| ${r.rule} | ${r.path} | ${r.mapType} | ${
      r.ats ? "yes" : "no"
    } | ${r.bytes} | ${r.atsTranslations} | ${r.iotlbMisses} | ${r.translationUs.toFixed(1)} | ${
      r.modelledUs.toFixed(1)
    } | ${r.gbps.toFixed(1)} | ${r.linkGBps.toFixed(1)} |`
  );
  return [head, sep, ...lines].join("\n");
}
