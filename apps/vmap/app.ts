/**
 * DOC: app 1, kernel vmap
 *
 * A console-like kernel client (what drm's fbdev emulation and `drm_log`
 * do with `dma_buf_vmap`) draws into two dma-bufs through kernel mappings:
 * a shadow framebuffer from the system heap (system memory,
 * `vmap` of its pages) and the scanout buffer, a GPU buffer object in VRAM
 * exported by `@dmalab/gpu` (`amdgpu_dma_buf_vmap`: the BO is pinned and
 * the mapping is I/O memory, an ioremap of the VRAM BAR). The client
 * renders text rows into the shadow buffer and blits the damage into VRAM,
 * as fbdev's deferred I/O does; the GPU's own checksum job then reads VRAM
 * and must agree with the bytes the CPU drew.
 *
 * Visible on the way: vmap reference counting (a second client vmaps the
 * same buffer: same mapping, `vmapping_counter` 2, the exporter's `vmap`
 * ran once), the pin a VRAM vmap holds (an eviction storm moves another BO
 * out of VRAM but never the vmapped one), and `dma_buf_vunmap` on a buffer
 * that is not vmapped being a kernel BUG (shown in a scratch strict world).
 *
 * Locking: `dma_buf_vmap_unlocked` takes the reservation lock around the
 * exporter's `vmap` (the core asserts it); draws through an `iosys_map`
 * take no lock; the GPU's moves run under the BO's reservation lock.
 *
 * @module
 */
import {
  type AppDefinition,
  appMachine,
  type AppOptions,
  type AppRun,
  countEqual,
  pattern,
  Recorder,
  trackLocks,
  worldViolations,
} from "@dmalab/app-kit";
import { Kernel, KernelBug } from "@dmalab/kernel";
import {
  dmaBufBufinfo,
  dmaBufVmapUnlocked,
  dmaBufVunmap,
  dmaBufVunmapUnlocked,
  dmaHeapSystemAlloc,
  IosysMap,
} from "@dmalab/dma-buf";
import { GPU_DOMAIN_VRAM, gpuBoExport, gpuChecksumOf, gpuProbe } from "@dmalab/gpu";

/** Variants of the vmap app. */
export const VMAP_VARIANTS: readonly string[] = ["default"];

const FB = 1 << 20; // a 512 x 512 x 32 bpp framebuffer
const PITCH = 2048;

/**
 * Runs the vmap app.
 *
 * @example
 * ```ts
 * import { runVmap } from "@dmalab/app-vmap";
 * const { result } = await runVmap();
 * result.bytesVerified; // 2097152: shadow read back, VRAM checked by the GPU
 * ```
 */
export async function runVmap(o: AppOptions = {}): Promise<AppRun> {
  const variant = o.variant ?? "default";
  if (!VMAP_VARIANTS.includes(variant)) {
    throw new RangeError(`vmap: unknown variant "${variant}" (${VMAP_VARIANTS.join(", ")})`);
  }
  const m = appMachine({
    ...(o.topology ? { topology: o.topology } : {}),
    world: { strict: false, seed: o.seed ?? 1 },
  });
  const { world } = m;
  world.trace.enable();
  const rec = new Recorder(world, m.fabric);
  const locks = trackLocks(world, rec);
  const gpu = gpuProbe(m.gpu, { vramSize: 4 << 20 });
  const steps: string[] = [];
  const rules: string[] = [];
  const failures: string[] = [];
  let verified = 0;
  let bufinfo: string | null = null;
  let iomem = false;
  // ttm_bo_validate needs the BO's reservation lock.
  const place = async (b: ReturnType<typeof gpu.boCreate>) => {
    await b.resv.lock(null);
    try {
      await gpu.validate(b, GPU_DOMAIN_VRAM);
    } finally {
      b.resv.unlock();
    }
  };
  const frame = pattern(0xc0 + (o.seed ?? 1), FB);

  await world.runTask("fbcon", async () => {
    const shadow = dmaHeapSystemAlloc(world, FB);
    const bo = gpu.boCreate(FB, GPU_DOMAIN_VRAM);
    await place(bo);
    const scanout = gpuBoExport(gpu, bo);
    steps.push(`shadow framebuffer: system heap, ${FB} bytes; scanout: ${bo} in VRAM`);

    // vmap both; a second client vmaps the shadow too.
    const sMap = await dmaBufVmapUnlocked(shadow);
    const again = await rec.slice("drm_log", "vmap", () => dmaBufVmapUnlocked(shadow));
    if (!again.isEqual(sMap) || shadow.vmappingCounter !== 2) {
      failures.push("a nested vmap did not share the mapping");
    }
    steps.push(
      `shadow vmapped twice (fbcon, drm_log): one mapping, vmapping_counter ${shadow.vmappingCounter}`,
    );
    rules.push("nested dma_buf_vmap shares vmap_ptr; the exporter's vmap runs on 0 -> 1 only");
    const vMap = await dmaBufVmapUnlocked(scanout);
    iomem = vMap.isIomem;
    steps.push(
      `scanout vmapped: ${
        vMap.isIomem ? "I/O memory (ioremap of the VRAM BAR)" : "system memory"
      }, BO pinned (pin count ${bo.pinCount})`,
    );
    rules.push("dma_buf_vmap with the reservation lock held (dma_buf_vmap_unlocked takes it)");
    bufinfo = await dmaBufBufinfo(world);

    // Draw text rows into the shadow, then blit the damage into VRAM.
    await rec.slice("fbcon", "draw", async () => {
      for (let row = 0; row < FB / PITCH; row += 16) {
        sMap.memcpyTo(row * PITCH, frame.subarray(row * PITCH, (row + 16) * PITCH));
      }
    });
    rec.transfer({
      label: "draw (CPU vmap)",
      src: null,
      srcName: "CPU",
      dst: null,
      mapType: "CPU",
      ats: false,
      bytes: FB,
    });
    const back = sMap.memcpyFrom(0, FB);
    if (countEqual(frame, back) === FB) verified += FB;
    else failures.push("the shadow buffer does not hold what was drawn");
    await rec.slice("fbcon", "damage blit", async () => {
      vMap.memcpyTo(0, sMap.memcpyFrom(0, FB));
    });
    rec.transfer({
      label: "blit to VRAM (iomem)",
      src: null,
      srcName: "CPU",
      dst: m.gpu,
      mapType: "CPU",
      ats: false,
      bytes: FB,
    });
    steps.push("drew 512 text rows into the shadow and blitted the damage into VRAM");

    // An eviction storm: another BO wants all of VRAM; the vmapped scanout stays.
    const big = gpu.boCreate(3 << 20, GPU_DOMAIN_VRAM);
    await place(big);
    const other = gpu.boCreate(3 << 20, GPU_DOMAIN_VRAM);
    await place(other);
    steps.push(
      `eviction pressure: ${gpu.stats.evictions} eviction(s); the vmapped scanout is ${bo.placement} (pinned), ${big} went to ${big.placement}`,
    );
    if (bo.placement !== "VRAM") failures.push("the vmapped (pinned) BO was evicted");
    rules.push("a vmapped VRAM BO is pinned: eviction skips it");
    rules.push("ttm_bo_validate with the BO's reservation lock held");

    // The GPU reads VRAM and checks what the CPU wrote.
    const job = await gpu.checksum(bo);
    await job.fence.wait(false);
    rec.transfer({
      label: "GPU checksum",
      src: m.gpu,
      dst: m.gpu,
      mapType: "VRAM",
      ats: false,
      bytes: FB,
    });
    rec.span(
      `fence ${m.gpu.name}/sdma`,
      "checksum job",
      job.fence.timestamp() - 1,
      job.fence.timestamp(),
    );
    if (job.result === gpuChecksumOf(frame)) {
      verified += FB;
      steps.push(`GPU checksum of VRAM = ${job.result!.toString(16)}, equal to the frame's`);
    } else failures.push("the GPU read different bytes from VRAM than the CPU wrote");

    // Tear down: the counts go back to 0; the pin goes with the last vunmap.
    await dmaBufVunmapUnlocked(shadow, again);
    await dmaBufVunmapUnlocked(shadow, sMap);
    await dmaBufVunmapUnlocked(scanout, vMap);
    steps.push(
      `vunmapped: shadow vmapping_counter ${shadow.vmappingCounter}, scanout BO pin count ${bo.pinCount}`,
    );
    if (shadow.vmappingCounter !== 0 || bo.pinCount !== 0) {
      failures.push("vmap count or pin leaked");
    }
    shadow.put();
    scanout.put();
    await gpu.boFree(big);
    await gpu.boFree(other);
  });

  locks.finish();
  // The rule the kernel BUGs on, in a scratch strict world.
  const scratch = new Kernel();
  await scratch.runTask("bad-client", async () => {
    const buf = dmaHeapSystemAlloc(scratch, 4096);
    await buf.resv.lock(null);
    try {
      dmaBufVunmap(buf, IosysMap.cleared());
      failures.push("dma_buf_vunmap of a buffer that is not vmapped went through");
    } catch (e) {
      if (!(e instanceof KernelBug)) throw e;
      rules.push("dma_buf_vunmap on a buffer that is not vmapped: kernel BUG");
    } finally {
      buf.resv.unlock();
    }
    buf.put();
  });

  const violations = [...worldViolations(world), ...failures];
  return {
    world,
    fabric: m.fabric,
    recorder: rec,
    bufinfo,
    result: {
      app: "vmap",
      mechanism: "kernel vmap",
      variant,
      machine: m.fabric.name,
      exporter: `system heap + gpu ${m.gpu.name} VRAM`,
      importer: "fbcon-like kernel client",
      path: iomem ? "CPU: vmap (RAM) + ioremap (VRAM BAR)" : "CPU: vmap (RAM)",
      ats: "n/a",
      bytesVerified: verified,
      violations,
      expectedFindings: [],
      costs: {
        "GPU evictions": gpu.stats.evictions,
        "GPU moved bytes": gpu.stats.movedBytes,
        "lock holds across scheduling points": locks.holds,
        "virtual time ns": world.sched.now,
      },
      rulesChecked: rules,
      steps,
      variants: [],
      ok: violations.length === 0,
    },
  };
}

/** The vmap app as the CLI lists it. */
export const vmapApp: AppDefinition = {
  name: "vmap",
  mechanism: "kernel vmap",
  summary: "a console-like kernel client vmaps a system-heap buffer and GPU VRAM (iomem) and draws",
  variants: VMAP_VARIANTS,
  topology: true,
  run: runVmap,
};
