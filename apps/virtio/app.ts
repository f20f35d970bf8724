/**
 * DOC: app 4, driver-private sharing by UUID (virtio_dma_buf)
 *
 * A virtio-gpu-like device renders a frame into a resource and exports it
 * as a virtio dma-buf; a second virtio device (virtio-video-like) imports
 * the fd, asks for the buffer's UUID (`virtio_dma_buf_get_uuid`: the
 * exporter sends `RESOURCE_ASSIGN_UUID` to the host and sleeps until it
 * answers), and hands only the UUID to its host backend, which finds the
 * resource in the VMM's shared-object table and copies the frame into an
 * output resource (also a virtio-gpu buffer shared by UUID). No guest DMA
 * mapping exists on the UUID path. The guest then reads the output and the
 * bytes must equal the frame.
 *
 * Variants: `uuid` (default) and `no-uuid`, where the input is a
 * system-heap buffer: `virtio_dma_buf_get_uuid` refuses it (-EINVAL, not a
 * virtio dma-buf) and the importer falls back to attaching, mapping and
 * sending guest addresses.
 *
 * Locking: see drivers.ts; the app's task holds no lock across commands.
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
import { filesOf, KernelError } from "@dmalab/kernel";
import {
  type DmaBuf,
  dmaBufBufinfo,
  dmaBufGet,
  dmaBufVmapUnlocked,
  dmaBufVunmapUnlocked,
  dmaHeapSystemAlloc,
  SgTable,
  virtioDmaBufExport,
} from "@dmalab/dma-buf";
import { uuidHex, VirtioGpu, VirtioHost, VirtioVideo } from "./drivers.ts";

/** Variants of the virtio app. */
export const VIRTIO_VARIANTS: readonly string[] = ["uuid", "no-uuid"];

const FRAME = 64 * 1024;

/**
 * Runs the virtio app.
 *
 * @example
 * ```ts
 * import { runVirtio } from "@dmalab/app-virtio";
 * const { result } = await runVirtio();
 * result.path; // "host object by UUID (no guest DMA mapping)"
 * ```
 */
export async function runVirtio(o: AppOptions = {}): Promise<AppRun> {
  const variant = o.variant ?? "uuid";
  if (!VIRTIO_VARIANTS.includes(variant)) {
    throw new RangeError(`virtio: unknown variant "${variant}" (${VIRTIO_VARIANTS.join(", ")})`);
  }
  const m = appMachine({
    ...(o.topology ? { topology: o.topology } : {}),
    world: { strict: false, seed: o.seed ?? 1 },
  });
  const { world } = m;
  world.trace.enable();
  const rec = new Recorder(world, m.fabric);
  const locks = trackLocks(world, rec);
  const host = new VirtioHost(world);
  host.onCommand = (dev, cmd, a, b) => rec.span(`virtqueue ${dev}`, cmd, a, b);
  const gpu = new VirtioGpu(host, "virtio0");
  const video = new VirtioVideo(host, "virtio1");
  const steps: string[] = [];
  const rules: string[] = [];
  const failures: string[] = [];
  const findings: string[] = [];
  let verified = 0;
  let bufinfo: string | null = null;
  let pathTaken = "";
  const frame = pattern(0xf00d + (o.seed ?? 1), FRAME);

  await world.runTask("app", async () => {
    // The export rule: a virtio exporter must use virtio_dma_buf_attach and get_uuid.
    try {
      virtioDmaBufExport(world, {
        expName: "bogus",
        size: 4096,
        priv: null,
        ops: { mapDmaBuf: () => new SgTable([]), unmapDmaBuf: () => {}, release: () => {} },
      });
      failures.push("virtio_dma_buf_export accepted ops without virtio_dma_buf_attach");
    } catch (e) {
      if (!(e instanceof KernelError) || e.code !== "EINVAL") throw e;
      rules.push("virtio_dma_buf_export: -EINVAL without virtio_dma_buf_attach/get_uuid");
    }

    const out = await gpu.createResource(FRAME);
    const outBuf = gpu.export(out);
    let inBuf: DmaBuf;
    if (variant === "uuid") {
      const input = await gpu.createResource(FRAME);
      gpu.draw(input, 0, frame);
      inBuf = gpu.export(input);
      steps.push(`virtio-gpu: resources ${input.id} (frame) and ${out.id} (output), 64 KiB each`);
    } else {
      inBuf = dmaHeapSystemAlloc(world, FRAME);
      const map = await dmaBufVmapUnlocked(inBuf);
      map.memcpyTo(0, frame);
      await dmaBufVunmapUnlocked(inBuf, map);
      steps.push(
        `system heap: frame buffer (64 KiB, written through a vmap); virtio-gpu output ${out.id}`,
      );
    }
    rec.transfer({
      label: "frame drawn",
      src: null,
      srcName: "CPU",
      dst: null,
      mapType: "CPU",
      ats: false,
      bytes: FRAME,
    });
    const inFd = inBuf.fd(0);
    const outFd = outBuf.fd(0);

    // The importer gets the fds (as through a V4L2 QBUF with DMABUF memory).
    const t0 = world.sched.now;
    const inRef = await video.import(dmaBufGet(world, inFd));
    const fallback = video.lastFallback;
    const outRef = await video.import(dmaBufGet(world, outFd));
    if (inRef.kind === "object") {
      steps.push(
        `virtio-video: get_uuid slept ${world.sched.now - t0} ns for RESOURCE_ASSIGN_UUID; input ${
          uuidHex(inRef.uuid)
        }`,
      );
      rules.push("virtio_dma_buf_get_uuid may sleep: called with no dma-buf lock held");
      pathTaken = "host object by UUID (no guest DMA mapping)";
    } else {
      steps.push(
        `virtio-video: ${
          fallback ?? "not a virtio buffer"
        }; fell back to ${inRef.addrs.length} guest address range(s)`,
      );
      rules.push("virtio_dma_buf_get_uuid: -EINVAL for a buffer that is not a virtio dma-buf");
      findings.push("non-virtio input: no UUID, the importer mapped guest pages instead");
      pathTaken = "guest pages (dma_map_sgtable, dma-direct)";
    }
    bufinfo = await dmaBufBufinfo(world);
    if (outRef.kind !== "object") failures.push("the virtio-gpu output was not shared by UUID");
    if (inRef.buf.attachments.length !== (inRef.kind === "object" ? 0 : 1)) {
      failures.push("attachment count does not match the path taken");
    }

    await video.decode(inRef, outRef, FRAME);
    rec.transfer({
      label: "backend copy",
      src: null,
      srcName: "host (virtio-video)",
      dst: null,
      dstName: "guest pages",
      mapType: "host",
      ats: false,
      bytes: FRAME,
    });
    steps.push(
      `virtio-video host backend copied the frame into output ${
        uuidHex((outRef as { uuid: Uint8Array }).uuid)
      }`,
    );
    const back = gpu.read(out, 0, FRAME);
    const good = countEqual(frame, back);
    if (good === FRAME) {
      verified += FRAME;
      steps.push(`guest read the output: all ${FRAME} bytes equal the frame`);
    } else failures.push(`output differs from the frame at byte ${good}`);

    await video.release(inRef);
    await video.release(outRef);
    inRef.buf.put();
    outRef.buf.put();
    filesOf(world).close(inFd);
    filesOf(world).close(outFd);
    if (!inRef.buf.released || !outRef.buf.released) {
      failures.push("a buffer outlived its last reference");
    }
    steps.push(
      `host commands: ${Object.entries(host.commands).map(([k, v]) => `${k} x${v}`).join(", ")}`,
    );
  });

  locks.finish();
  const violations = [...worldViolations(world), ...failures];
  return {
    world,
    fabric: m.fabric,
    recorder: rec,
    bufinfo,
    result: {
      app: "virtio",
      mechanism: "driver-private (virtio uuid)",
      variant,
      machine: m.fabric.name,
      exporter: variant === "uuid" ? "virtio-gpu (virtio0)" : "system heap",
      importer: "virtio-video (virtio1)",
      path: pathTaken,
      ats: "n/a",
      bytesVerified: verified,
      violations,
      expectedFindings: findings,
      costs: {
        "host commands": Object.values(host.commands).reduce((a, b) => a + b, 0),
        "virtqueue round trip ns": host.latencyNs,
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

/** The virtio app as the CLI lists it. */
export const virtioApp: AppDefinition = {
  name: "virtio",
  mechanism: "driver-private (virtio uuid)",
  summary: "a virtio-gpu-like exporter and a virtio-video-like device share a buffer by UUID",
  variants: VIRTIO_VARIANTS,
  topology: true,
  run: runVirtio,
};
