/**
 * DOC: app 3, dma_buf_attach (dynamic import, move_notify, re-fault)
 *
 * The mlx5-like NIC imports GPU VRAM dynamically: the GPU exports a buffer
 * object (`amdgpu_gem_prime_export`), the NIC registers it as an ODP
 * dma-buf MR (`mlx5_ib_reg_user_mr_dmabuf`: `dma_buf_dynamic_attach` with
 * `allow_peer2peer` and an invalidate callback; the initial mapping made
 * under the reservation lock). A user-memory MR streams RDMA WRITEs into
 * it, one work request after another, while a GPU task fills another
 * object that needs the VRAM: the GPU evicts the target to system memory,
 * calling `dma_buf_move_notify` first (the NIC zaps its MTT), and queues
 * the copy with a KERNEL fence. The next RDMA WRITE takes an ODP page
 * fault, re-maps (waiting for the move fence) and lands in system memory.
 * At the end the app reads the target back through a vmap and the GPU
 * checksums it: every byte written must be there.
 *
 * Variants: `default` (the NIC under the GPU's switch: `BUS_ADDR`),
 * `iommu` (IOMMU on: ACS redirect sends peer traffic through the root
 * complex, `THRU_HOST_BRIDGE`, and the NIC uses ATS), `remote-nic` (the NIC
 * on another host bridge), and the negative control `broken-importer`, an
 * importer that ignores the invalidate: it keeps DMAing to VRAM the object
 * left, which the world's checkers report (an expected finding).
 *
 * Locking: the invalidate callback runs with the reservation lock held and
 * does not sleep; ODP faults take the reservation lock; the eviction runs
 * under the object's lock (all inside @dmalab/mlx5 and @dmalab/gpu).
 *
 * @module
 */
import {
  type AppDefinition,
  type AppOptions,
  type AppRun,
  countEqual,
  Recorder,
  trackLocks,
  worldViolations,
} from "@dmalab/app-kit";
import { Kernel } from "@dmalab/kernel";
import { calcMapTypeAndDist, mapTypeName } from "@dmalab/pci-p2p";
import { dmaBufBufinfo, dmaBufVmapUnlocked, dmaBufVunmapUnlocked } from "@dmalab/dma-buf";
import { gpuChecksumOf } from "@dmalab/gpu";
import {
  buildRig,
  connect,
  mlx5EvictionRaceScenario,
  registerUserMr,
  registerVramMr,
  type VramMr,
} from "@dmalab/mlx5/scenarios";

/** Variants of the attach app. */
export const ATTACH_VARIANTS: readonly string[] = [
  "default",
  "iommu",
  "remote-nic",
  "broken-importer",
];

const WRS = 8;
const WR_BYTES = 16 << 10;
const TOTAL = WRS * WR_BYTES;

function pattern(i: number): number {
  return (i * 7 + 3) & 0xff;
}

/**
 * Runs the attach app.
 *
 * @example
 * ```ts
 * import { runAttach } from "@dmalab/app-attach";
 * const { result } = await runAttach();
 * result.bytesVerified; // 131072
 * ```
 */
export async function runAttach(o: AppOptions = {}): Promise<AppRun> {
  const variant = o.variant ?? "default";
  if (!ATTACH_VARIANTS.includes(variant)) {
    throw new RangeError(`attach: unknown variant "${variant}" (${ATTACH_VARIANTS.join(", ")})`);
  }
  if (o.topology) {
    throw new RangeError(
      "attach: --topology is not supported: @dmalab/mlx5's buildRig builds the machine",
    );
  }
  const broken = variant === "broken-importer";
  const world = new Kernel({ strict: false, seed: o.seed ?? 1 });
  world.trace.enable();
  const rig = buildRig(world, { iommu: variant === "iommu", vramSize: 2 * TOTAL });
  const nic = variant === "remote-nic" ? rig.nic2! : rig.nic;
  const rec = new Recorder(world, rig.fabric);
  const locks = trackLocks(world, rec);
  const steps: string[] = [];
  const failures: string[] = [];
  const findings: string[] = [];
  const expected = new Uint8Array(TOTAL).map((_, i) => pattern(i));
  const bo = rig.gpu.boCreate(TOTAL);
  const hog = rig.gpu.boCreate(2 * TOTAL - 4096);
  let target: VramMr | null = null;
  let statuses: string[] = [];
  let bufinfo: string | null = null;
  let evictedAt = -1;
  const routes = new Set<string>();
  const gpuName = rig.gpu.pdev.name;
  const vramRoute = mapTypeName(calcMapTypeAndDist(rig.gpu.pdev, nic.pdev, false).mapType);
  // Where the NIC's MTT points: the object's placement, except that the
  // broken importer never drops its VRAM translations.
  const route = () => bo.placement === "VRAM" || broken ? vramRoute : "RAM";

  world.spawn("rdma", async () => {
    target = await registerVramMr(rig, nic, bo);
    if (broken) target.mr.zap = () => {}; // keeps stale translations
    steps.push(
      `${nic.pdev.name} registered ${bo} as a dynamic dma-buf MR (rkey ${target.mr.rkey}), ATS ${
        target.mr.ats ? "on" : "off"
      }, mapped via ${route()}`,
    );
    bufinfo = await dmaBufBufinfo(world);
    const src = await registerUserMr(rig, nic, TOTAL, pattern, target.mr.pd);
    const { qa } = connect(nic, src.pd, nic, target.mr.pd, 4096);
    for (let k = 0; k < WRS; k++) {
      const r = route();
      routes.add(r);
      const t0 = world.sched.now;
      qa.postSend({
        wrId: k,
        opcode: "RDMA_WRITE",
        sge: { mr: src, addr: src.iova + k * WR_BYTES, length: WR_BYTES },
        remoteAddr: target.mr.iova + k * WR_BYTES,
        rkey: target.mr.rkey,
      });
      await qa.cq.waitTotal(k + 1);
      const x = rec.transfer({
        label: `RDMA WRITE ${k}`,
        src: nic.pdev,
        dst: r === "RAM" ? null : rig.gpu.pdev,
        mapType: r,
        ats: target.mr.ats,
        bytes: WR_BYTES,
      });
      rec.span(`dma ${nic.pdev.name}`, `wr ${k} (${r})`, t0, world.sched.now, {
        bytes: x.bytes,
      });
    }
    statuses = qa.cq.poll().map((w) => w.status);
  });
  world.spawn("gpu", async () => {
    await world.sched.sleepNs(2000, "gpu");
    const t0 = world.sched.now;
    const job = await rig.gpu.fill(hog, 0xee); // needs the target's VRAM: evicts it
    evictedAt = rig.gpu.stats.evictions > 0 ? t0 : -1;
    await job.fence.wait(false);
    rec.span(`fence ${gpuName}/sdma`, "fill (after evicting the target)", t0, world.sched.now);
  });
  await world.run();

  locks.finish();
  const mr = (target as VramMr | null)?.mr;
  steps.push(
    evictedAt >= 0
      ? `GPU evicted ${bo} to ${bo.placement} at ${evictedAt} ns (move_notify first); NIC MTT zaps ${nic.stats.zaps}, ODP faults ${nic.stats.faults}`
      : "the GPU did not evict the target",
  );
  steps.push(
    `RDMA WRITEs took routes: ${[...routes].join(" then ")}; completions: ${statuses.join(",")}`,
  );
  if (evictedAt < 0) failures.push("no eviction happened during the stream");
  if (statuses.length !== WRS || statuses.some((s) => s !== "SUCCESS")) {
    failures.push(`completions: ${statuses.join(",")}`);
  }

  // Read the target back: through a vmap (CPU) and by the GPU (checksum).
  let verified = 0;
  await world.runTask("check", async () => {
    const buf = bo.dmabuf!;
    const map = await dmaBufVmapUnlocked(buf);
    const got = map.memcpyFrom(0, TOTAL);
    await dmaBufVunmapUnlocked(buf, map);
    const good = countEqual(expected, got);
    const job = await rig.gpu.checksum(bo);
    await job.fence.wait(false);
    const sumOk = job.result === gpuChecksumOf(expected);
    if (good === TOTAL && sumOk) {
      verified = TOTAL;
      steps.push(`target read back through a vmap and checksummed by the GPU: all ${TOTAL} bytes`);
    } else {
      const what = `target differs from what was written (first bad byte ${good}, GPU checksum ${
        sumOk ? "equal" : "different"
      })`;
      steps.push(what);
      if (broken) findings.push(`broken importer: ${what}`);
      else failures.push(what);
    }
  });

  const worldIssues = worldViolations(world);
  if (broken) {
    if (worldIssues.length || findings.length) {
      findings.push(...worldIssues.slice(0, 3).map((v) => `broken importer: ${v}`));
    } else failures.push("the broken importer went unnoticed");
  }
  const violations = broken ? failures : [...worldIssues, ...failures];
  const first = [...routes][0] ?? "unmapped";
  return {
    world,
    fabric: rig.fabric,
    recorder: rec,
    bufinfo,
    result: {
      app: "attach",
      mechanism: "dma_buf_attach (dynamic)",
      variant,
      machine: rig.fabric.name,
      exporter: `gpu ${gpuName} VRAM`,
      importer: `mlx5 ${nic.pdev.name} (ODP MR)`,
      path: [...routes].join(" -> ") || first,
      ats: mr?.ats ? "on" : "off",
      bytesVerified: verified,
      violations,
      expectedFindings: findings,
      costs: {
        "RDMA WRs": nic.stats.wrs,
        "payload bytes": nic.stats.bytes,
        "ODP faults": nic.stats.faults,
        "MTT zaps": nic.stats.zaps,
        "ATS translations": nic.stats.atsTranslations,
        "IOTLB misses": nic.stats.iotlbMisses,
        "NIC busy ns": nic.stats.busyNs,
        "GPU moves": rig.gpu.stats.moves,
        "move_notify calls": rig.gpu.stats.moveNotifies,
        "lock holds across scheduling points": locks.holds,
        "virtual time ns": world.sched.now,
      },
      rulesChecked: [
        "dma_buf_dynamic_attach with importer ops (allow_peer2peer, invalidate_mappings)",
        "move_notify before the move, under the reservation lock; the importer zaps without sleeping",
        "ODP re-fault maps again under the lock and waits for the KERNEL move fence",
        "world checkers at the end: no MTT entry survives its invalidate, no DMA to VRAM the object left",
      ],
      steps,
      variants: [],
      ok: violations.length === 0,
    },
  };
}

/** The attach app as the CLI lists it. */
export const attachApp: AppDefinition = {
  name: "attach",
  mechanism: "dma_buf_attach (dynamic)",
  summary: "an mlx5-like NIC imports GPU VRAM dynamically; RDMA writes stream while the GPU evicts",
  variants: ATTACH_VARIANTS,
  topology: false,
  run: runAttach,
};

/** Issue 9's scenarios 2 and 5 from @dmalab/mlx5, for the explorer registry. */
export function attachScenarios(): ReturnType<typeof mlx5EvictionRaceScenario>[] {
  return [mlx5EvictionRaceScenario(), mlx5EvictionRaceScenario({ brokenImporter: true })];
}
