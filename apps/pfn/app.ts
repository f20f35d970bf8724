/**
 * DOC: app 5, the pfn attachment
 *
 * vfio-pci exports 2 MiB of the GPU's BAR 1 as a dma-buf
 * (`VFIO_DEVICE_FEATURE_DMA_BUF`); iommufd maps it into an IOAS the NIC
 * is attached to (`IOMMU_IOAS_MAP_FILE`); KVM gives it to a guest by one of
 * its import paths. `@dmalab/kvm`'s `setupBarShare` builds all of it. For
 * each configuration the app checks bytes both ways (guest writes, the NIC
 * reads over P2P through the IOMMU; the NIC writes, the guest reads), then
 * resets the function (`VFIO_DEVICE_RESET`, which revokes the buffer) with
 * the invariant "while the BAR does not decode, no stage-2 leaf and no
 * IOMMU entry points at it" checked at every scheduling point, and runs
 * `@dmalab/explorer` over the guest-access-vs-reset scenario.
 *
 * Configurations: `A` (mainline: memslot over the mmap'ed BAR,
 * `follow_pfnmap` + mmu_notifier), `B-get-pfn-unlocked` and
 * `B-get-pfn-locked` (Xu Yilun's `dma_buf_get_pfn` RFC in its two fault
 * forms), `B-pfn-attachment` (the separate pfn attachment). For the
 * unlocked get_pfn form the app also forces the race window with a fixed
 * schedule (the reset lands between the vCPU fetching the pfn and
 * installing it): KVM's `mmu_invalidate_seq` recheck refuses the stale
 * pfn. `B-get-pfn-unlocked-no-recheck` is the negative control: an
 * importer of the unlocked call without a retry protocol, which installs
 * the stale pfn and breaks the invariant (an expected finding).
 *
 * Locking: everything runs in tasks; the KVM mmu lock, vfio memory_lock
 * and the reservation lock are the drivers' own; the invariant is a
 * synchronous read taken by the scheduler's observer.
 *
 * @module
 */
import type { AppDefinition, AppOptions, AppRun, AppVariantRow } from "@dmalab/app-kit";
import { countEqual, pattern, Recorder, trackLocks } from "@dmalab/app-kit";
import { ChooserPolicy, Kernel, type PickContext, type Task } from "@dmalab/kernel";
import { calcMapTypeAndDist, mapTypeName } from "@dmalab/pci-p2p";
import { dmaBufBufinfo } from "@dmalab/dma-buf";
import { IommuFaultError } from "@dmalab/iommu";
import { deviceDmaRead, deviceDmaWrite } from "@dmalab/iommufd";
import { explore, type Scenario } from "@dmalab/explorer";
import {
  barMappings,
  type BarShare,
  barShareInvariant,
  type BarShareOptions,
  barShareScenario,
  type BarShareState,
  barShareVariants,
  type DmabufBacking,
  type FaultContext,
  KvmExit,
  setupBarShare,
} from "@dmalab/kvm";

/** The configurations, by `--variant` name. */
export const PFN_CONFIGS: Readonly<Record<string, BarShareOptions>> = {
  "A": { path: "A" },
  "B-get-pfn-unlocked": { path: "B", pathB: "get-pfn-unlocked" },
  "B-get-pfn-locked": { path: "B", pathB: "get-pfn-locked" },
  "B-pfn-attachment": { path: "B", pathB: "pfn-attachment" },
};

/** `--variant` values: `all` (default), each configuration, and the negative control. */
export const PFN_VARIANTS: readonly string[] = [
  "all",
  ...Object.keys(PFN_CONFIGS),
  "B-get-pfn-unlocked-no-recheck",
];

interface ConfigOutcome {
  row: AppVariantRow;
  bufinfo: string | null;
  world: Kernel;
  share: BarShare;
  verified: number;
  unexpected: string[];
}

function errText(e: unknown): string {
  if (e instanceof KvmExit) return `exit ret ${e.exit.ret}`;
  throw e;
}

/** Runs one configuration end to end (bytes, reset, explorer). */
async function runConfig(
  name: string,
  o: BarShareOptions,
  rec: (w: Kernel, s: BarShare) => Recorder,
  seed: number,
): Promise<ConfigOutcome & { recorder: Recorder }> {
  const world = new Kernel({ variants: barShareVariants(o), strict: false, seed });
  world.trace.enable();
  let s!: BarShare;
  await world.runTask("qemu", async () => {
    s = await setupBarShare(world, o);
  }, "user");
  const recorder = rec(world, s);
  const bufinfo = await world.runTask("cat", () => dmaBufBufinfo(world));
  const { gpu, nic } = s.machine;
  const mapType = mapTypeName(calcMapTypeAndDist(gpu, nic, false).mapType);
  const unexpected: string[] = [];
  let violations: string[] = [];
  const locks = trackLocks(world, recorder);
  locks.also(() => {
    const v = barShareInvariant(s);
    if (v.length && violations.length === 0) violations = v;
  });
  // Bytes: guest -> BAR -> NIC, NIC -> BAR -> guest.
  const a = pattern(0x5a + seed, 4096);
  const b = pattern(0xa5 + seed, 4096);
  await world.runTask("guest", () => s.vcpu.write(s.gpa + 0x1000, a), "vcpu");
  recorder.transfer({
    label: "guest store",
    src: null,
    srcName: "vCPU (stage-2)",
    dst: gpu,
    mapType: "CPU",
    ats: false,
    bytes: a.length,
  });
  const seen = deviceDmaRead(nic, s.iova + 0x1000, a.length);
  recorder.transfer({
    label: "NIC read",
    src: nic,
    dst: gpu,
    mapType,
    ats: nic.ats.enabled,
    bytes: seen.length,
  });
  deviceDmaWrite(nic, s.iova + 0x3000, b);
  recorder.transfer({
    label: "NIC write",
    src: nic,
    dst: gpu,
    mapType,
    ats: nic.ats.enabled,
    bytes: b.length,
  });
  const back = await world.runTask("guest", () => s.vcpu.read(s.gpa + 0x3000, b.length), "vcpu");
  let verified = 0;
  if (countEqual(a, seen) === a.length) verified += a.length;
  else unexpected.push("the NIC did not read what the guest wrote");
  if (countEqual(b, back) === b.length) verified += b.length;
  else unexpected.push("the guest did not read what the NIC wrote");

  // Reset: revoke; the invariant is checked at every scheduling point.
  let during = "";
  let mappingsDuring = "";
  let nicFault = false;
  const t0 = world.sched.now;
  world.spawn("qemu-reset", () => s.vdev.reset(), { kind: "user" });
  world.spawn("observer", async () => {
    await world.sched.msleep(20);
    const m = barMappings(s);
    mappingsDuring = `stage2 ${m.stage2}, iommu ${m.iommu} B, user ${m.user}`;
    try {
      deviceDmaRead(nic, s.iova, 4);
    } catch (e) {
      if (!(e instanceof IommuFaultError)) throw e;
      nicFault = true;
    }
    try {
      await s.vcpu.read(s.gpa + 0x1000, 4);
      during = `read at +${Math.round((world.sched.now - t0) / 1e6)} ms`;
    } catch (e) {
      during = `${errText(e)} at +${Math.round((world.sched.now - t0) / 1e6)} ms`;
    }
  }, { kind: "vcpu" });
  await world.run();
  recorder.span("vfio 0000:03:00.0", "function reset (revoked)", t0, world.sched.now);
  const after = await world.runTask("guest", async () => {
    try {
      const r = await s.vcpu.read(s.gpa + 0x1000, 4);
      return countEqual(a.subarray(0, 4), r) === 4 ? "guest re-faults, reads the BAR" : "stale";
    } catch (e) {
      return errText(e);
    }
  }, "vcpu");
  locks.finish();

  // Explorer: guest accesses racing the reset, every interleaving up to 2 preemptions.
  const ex = await explore(resetRaceScenario(name), { bound: 2, maxSchedules: 60 });
  const explored = ex.failure
    ? `FAILED (${ex.failure.kind}) in ${ex.schedules} schedules`
    : `clean over ${ex.schedules} schedules${ex.complete ? "" : " (bounded)"}`;
  if (ex.failure) unexpected.push(`explorer: ${ex.failure.message}`);
  if (violations.length) unexpected.push(...violations);
  if (!nicFault) unexpected.push("NIC DMA during the reset did not fault in the IOMMU");

  const cells: Record<string, string> = {
    "guest during reset": during,
    "mappings during reset": mappingsDuring,
    "NIC during reset": nicFault ? "IOMMU fault" : "reached the BAR",
    "after reset": after,
    "explorer": explored,
  };
  if (o.pathB === "get-pfn-unlocked") {
    const w = await raceWindow(o, false, seed);
    cells["revoke window (fixed schedule)"] = w.phase === 1
      ? `KVM refused the stale pfn (${w.retries} retry), ${w.outcome}`
      : "window not reached";
    if (w.violations.length) unexpected.push(...w.violations);
  }
  return {
    row: {
      variant: name,
      cells,
      violations: [...violations],
      keepsInvariants: unexpected.length === 0,
      asExpected: unexpected.length === 0,
    },
    world,
    share: s,
    verified,
    unexpected,
    recorder,
    bufinfo,
  };
}

/** Makes the vCPU's dma-buf slot install whatever pfn it fetched (no `mmu_invalidate_seq` recheck). */
function dropRecheck(s: BarShare): void {
  const backing = s.kvm.slot(0)!.backing as DmabufBacking;
  const orig = backing.faultin.bind(backing);
  backing.faultin = (ctx: FaultContext) =>
    orig({
      ...ctx,
      install: (p) => {
        s.kvm.mmuLock.lock();
        s.kvm.stage2.map(ctx.gfn, p.pfn, 1, true);
        s.kvm.mmuLock.unlock();
        return "mapped";
      },
    });
}

/**
 * Guest accesses racing a function reset, with no prefault (the guest's
 * first access faults, so fetching a pfn can race the revoke), for one
 * configuration; `recheck: false` removes the importer's
 * `mmu_invalidate_seq` recheck (path B only). The invariant and checks
 * are `@dmalab/kvm`'s.
 *
 * @example
 * ```ts
 * import { explore } from "@dmalab/explorer";
 * import { resetRaceScenario } from "@dmalab/app-pfn";
 * const r = await explore(resetRaceScenario("B-get-pfn-unlocked", false), { bound: 2 });
 * r.failure?.kind; // "invariant"
 * ```
 */
export function resetRaceScenario(config: string, recheck = true): Scenario<BarShareState> {
  const o = PFN_CONFIGS[config];
  if (!o) throw new RangeError(`resetRaceScenario: unknown configuration ${config}`);
  if (!recheck && o.path !== "B") throw new RangeError("only path B has a recheck to drop");
  const base = barShareScenario(o);
  return {
    ...base,
    name: `pfn-reset-race-${config.toLowerCase()}${recheck ? "" : "-no-recheck"}`,
    description: `first guest access races a function reset, ${config}${
      recheck ? "" : ", importer without the mmu_invalidate_seq recheck"
    }`,
    expect: recheck ? "clean" : "bug",
    build(world) {
      const st: BarShareState = { share: null, accesses: [], abortedReads: 0 };
      world.spawn("qemu", async () => {
        const s = await setupBarShare(world, o);
        if (!recheck) dropRecheck(s);
        st.share = s;
        s.kvm.spawnVcpu(s.vcpu, async () => {
          for (let i = 0; i < 2; i++) {
            try {
              const b = await s.vcpu.read(s.gpa, 4);
              if (b.every((x) => x === 0xff)) st.abortedReads++;
              st.accesses.push("ok");
            } catch (e) {
              st.accesses.push(errText(e));
            }
          }
        });
        world.spawn("qemu-reset", () => s.vdev.reset(), { kind: "user" });
      }, { kind: "user" });
      return st;
    },
  };
}

/** Issue 9's scenario 1 in its broken form: {@linkcode resetRaceScenario} without the recheck. */
export function noRecheckScenario(): Scenario<BarShareState> {
  return resetRaceScenario("B-get-pfn-unlocked", false);
}

/**
 * The unlocked get_pfn window with a fixed schedule: the vCPU has fetched
 * the pfn (it is at `kvm_tdp_mmu_map`) when the reset runs. With
 * `noRecheck` the importer installs whatever pfn it fetched.
 */
async function raceWindow(o: BarShareOptions, noRecheck: boolean, seed: number) {
  const world = new Kernel({ variants: barShareVariants(o), strict: false, seed });
  let s!: BarShare;
  await world.runTask("qemu", async () => {
    s = await setupBarShare(world, o);
  }, "user");
  if (noRecheck) dropRecheck(s);
  let violations: string[] = [];
  let phase = 0;
  world.sched.policy = new ChooserPolicy("revoke-in-the-window", (ctx: PickContext): Task => {
    if (phase === 0 && ctx.current?.kind === "vcpu" && ctx.point.label === "kvm_tdp_mmu_map") {
      phase = 1;
    }
    if (phase === 1) {
      const r = ctx.runnable.find((x) => x.name === "qemu-reset");
      if (r) return r;
    }
    if (ctx.current && ctx.runnable.includes(ctx.current)) return ctx.current;
    return ctx.runnable.find((x) => x.kind === "vcpu") ?? ctx.runnable[0]!;
  });
  world.sched.observer = () => {
    const v = barShareInvariant(s);
    if (v.length && violations.length === 0) violations = v;
  };
  let outcome = "";
  world.spawn("vcpu", async () => {
    try {
      const b = await s.vcpu.read(s.gpa, 4);
      outcome = `read ${[...b].map((x) => x.toString(16)).join(" ")}`;
    } catch (e) {
      outcome = errText(e);
    }
  }, { kind: "vcpu" });
  world.spawn("qemu-reset", () => s.vdev.reset(), { kind: "user" });
  await world.run();
  return { outcome, violations, retries: s.kvm.stats.pfRetries, phase, world, share: s };
}

/**
 * Runs the pfn app: every configuration (`all`) or one.
 *
 * @example
 * ```ts
 * import { runPfn } from "@dmalab/app-pfn";
 * const { result } = await runPfn({ variant: "B-pfn-attachment" });
 * result.variants[0]!.keepsInvariants; // true
 * ```
 */
export async function runPfn(o: AppOptions = {}): Promise<AppRun> {
  const variant = o.variant ?? "all";
  if (!PFN_VARIANTS.includes(variant)) {
    throw new RangeError(`pfn: unknown variant "${variant}" (${PFN_VARIANTS.join(", ")})`);
  }
  if (o.topology) {
    throw new RangeError(
      "pfn: --topology is not supported: @dmalab/kvm's setupBarShare builds the default machine",
    );
  }
  const seed = o.seed ?? 1;
  const rows: AppVariantRow[] = [];
  const unexpected: string[] = [];
  const findings: string[] = [];
  let verified = 0;
  let last: (ConfigOutcome & { recorder: Recorder }) | null = null;
  const mk = (w: Kernel, s: BarShare) => new Recorder(w, s.machine.fabric);
  const names = variant === "all"
    ? Object.keys(PFN_CONFIGS)
    : variant in PFN_CONFIGS
    ? [variant]
    : [];
  for (const name of names) {
    o.progress?.(`pfn: ${name}`);
    const r = await runConfig(name, PFN_CONFIGS[name]!, mk, seed);
    rows.push(r.row);
    verified += r.verified;
    unexpected.push(...r.unexpected.map((u) => `${name}: ${u}`));
    last = r;
  }
  if (variant === "all" || variant === "B-get-pfn-unlocked-no-recheck") {
    o.progress?.("pfn: B-get-pfn-unlocked-no-recheck");
    const opts = PFN_CONFIGS["B-get-pfn-unlocked"]!;
    const w = await raceWindow(opts, true, seed);
    const ex = await explore(noRecheckScenario(), { bound: 2, maxSchedules: 60 });
    const broke = w.violations.length > 0 && ex.failure !== null;
    rows.push({
      variant: "B-get-pfn-unlocked-no-recheck",
      cells: {
        "revoke window (fixed schedule)": `stale pfn installed, guest ${w.outcome}`,
        "invariant": w.violations[0] ?? "held",
        "explorer": ex.failure
          ? `found (${ex.failure.kind}) at schedule ${ex.failure.schedule} after ${ex.schedules} schedules`
          : `missed over ${ex.schedules} schedules`,
      },
      violations: w.violations,
      keepsInvariants: !broke,
      asExpected: broke,
    });
    if (broke) {
      findings.push(
        `negative control: an unlocked get_pfn importer without a recheck broke the invariant (${
          w.violations[0]
        })`,
      );
    } else {unexpected.push(
        "negative control: the unrechecked importer did not break the invariant",
      );}
    if (!last) {
      const rec = new Recorder(w.world, w.share.machine.fabric);
      last = {
        row: rows[rows.length - 1]!,
        world: w.world,
        share: w.share,
        verified: 0,
        unexpected: [],
        recorder: rec,
        bufinfo: null,
      };
    }
  }
  const s = last!.share;
  const mapType = mapTypeName(calcMapTypeAndDist(s.machine.gpu, s.machine.nic, false).mapType);
  const kept = rows.filter((r) => r.keepsInvariants).map((r) => r.variant);
  return {
    world: last!.world,
    fabric: s.machine.fabric,
    recorder: last!.recorder,
    bufinfo: last!.bufinfo,
    result: {
      app: "pfn",
      mechanism: "pfn attachment",
      variant,
      machine: s.machine.fabric.name,
      exporter: `vfio-pci ${s.machine.gpu.name} BAR1`,
      importer: `KVM guest + iommufd ${s.machine.nic.name}`,
      path: `${mapType} (IOMMU, ACS redirect)`,
      ats: s.machine.nic.ats.enabled ? "on" : "off",
      bytesVerified: verified,
      violations: unexpected,
      expectedFindings: findings,
      costs: {
        "configurations": rows.length,
        "keep the invariants": kept.join(", ") || "none",
        "stage-2 faults (last)": last!.share.kvm.stats.pfFaults,
        "KVM invalidations (last)": last!.share.kvm.stats.invalidations,
        "virtual time ns (last)": last!.world.sched.now,
      },
      rulesChecked: [
        "VFIO_DEVICE_FEATURE_DMA_BUF validation (vfio_pci_core_feature_dma_buf)",
        "revoke on VFIO_DEVICE_RESET: nothing maps the BAR while it does not decode",
        "iommufd never remaps a revoked dma-buf by itself",
        "KVM mmu_invalidate_seq recheck before installing a pfn",
        "explorer: every interleaving up to 2 preemptions, invariants at every point",
      ],
      steps: rows.map((r) =>
        `${r.variant}: ${Object.entries(r.cells).map(([k, v]) => `${k}: ${v}`).join("; ")}`
      ),
      variants: rows,
      ok: unexpected.length === 0,
    },
  };
}

/** The pfn app as the CLI lists it. */
export const pfnApp: AppDefinition = {
  name: "pfn",
  mechanism: "pfn attachment",
  summary: "vfio exports a BAR, KVM and iommufd import it, a reset revokes it; each variant",
  variants: PFN_VARIANTS,
  topology: false,
  run: runPfn,
};
