/**
 * DOC: app 2, userspace mmap
 *
 * A process allocates a buffer from the system dma-heap
 * (`DMA_HEAP_IOCTL_ALLOC`), mmaps the dma-buf fd (`dma_buf_mmap_internal`,
 * the heap's `remap_pfn_range`), and the NIC's driver imports the same fd
 * (`dma_buf_attach` + `dma_buf_map_attachment`, `dma_map_sgtable` through
 * dma-direct). Round one: the process brackets its CPU writes with
 * `DMA_BUF_IOCTL_SYNC` (START|WRITE ... END|WRITE) and the NIC reads the
 * buffer by DMA. Round two: the NIC writes by DMA under a fence it put in
 * the buffer's reservation object (WRITE usage); the process's
 * SYNC START|READ waits for that fence (`dma_buf_begin_cpu_access`) and then
 * reads through its mapping.
 *
 * Variants: `coherent` (x86: the device snoops CPU caches), `bounce` (the
 * device reaches memory only through swiotlb bounce slots, as a device
 * with `swiotlb=force` or a confidential-computing guest does: the model's
 * CPU caches are coherent, so bouncing is its non-coherent device: the
 * device sees only what a sync copied), and `-nosync` forms that skip the
 * SYNC END after writing and the SYNC START before reading. On `coherent`
 * a missing SYNC goes unnoticed (as on x86); on `bounce` the device reads
 * stale bytes and the CPU reads stale bytes, as on real non-coherent
 * hardware. Both are expected findings, not failures.
 *
 * Locking: the app's task holds no lock across ioctls; the fence is added
 * under the reservation lock (`dma_resv_lock`, `dma_resv_reserve_fences`);
 * SYNC runs with no dma-buf lock held, as the kernel requires.
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
  worldSplats,
  worldViolations,
} from "@dmalab/app-kit";
import {
  dmaBitMask,
  filesOf,
  KernelError,
  MAP_SHARED,
  MmStruct,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
} from "@dmalab/kernel";
import { deviceDmaRead, deviceDmaStats, deviceDmaWrite, dmaDevSetup } from "@dmalab/dma-api";
import {
  DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
  DMA_BUF_IOCTL_SYNC,
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_START,
  DMA_BUF_SYNC_WRITE,
  DMA_HEAP_IOCTL_ALLOC,
  dmaBufAttach,
  dmaBufBufinfo,
  dmaBufGet,
  dmaBufSyncArg,
  dmaBufSyncFileArg,
  DmaFence,
  dmaFenceContextAlloc,
  dmaHeapAllocArg,
  dmaHeapOpen,
  dmaHeapSystemInit,
  DmaResvUsage,
  type SgTable,
  syncFileGetFence,
} from "@dmalab/dma-buf";

/** Variants of the mmap app. */
export const MMAP_VARIANTS: readonly string[] = [
  "coherent",
  "coherent-nosync",
  "bounce",
  "bounce-nosync",
];

const SIZE = 64 * 1024;

/** Reads an sg table's DMA side through `dev` (what the device fetches). */
function deviceReadSgt(dev: Parameters<typeof deviceDmaRead>[0], sgt: SgTable): Uint8Array {
  const out = new Uint8Array(sgt.dmaSize());
  let off = 0;
  for (let i = 0; i < sgt.nents; i++) {
    const sg = sgt.sgl[i]!;
    out.set(deviceDmaRead(dev, sg.dmaAddress, sg.dmaLength), off);
    off += sg.dmaLength;
  }
  return out;
}

function deviceWriteSgt(
  dev: Parameters<typeof deviceDmaWrite>[0],
  sgt: SgTable,
  bytes: Uint8Array,
): void {
  let off = 0;
  for (let i = 0; i < sgt.nents; i++) {
    const sg = sgt.sgl[i]!;
    deviceDmaWrite(dev, sg.dmaAddress, bytes.subarray(off, off + sg.dmaLength));
    off += sg.dmaLength;
  }
}

/**
 * Runs the mmap app.
 *
 * @example
 * ```ts
 * import { runMmap } from "@dmalab/app-mmap";
 * const { result } = await runMmap();
 * result.bytesVerified; // 131072: 64 KiB each way
 * ```
 */
export async function runMmap(o: AppOptions = {}): Promise<AppRun> {
  const variant = o.variant ?? "coherent";
  if (!MMAP_VARIANTS.includes(variant)) {
    throw new RangeError(`mmap: unknown variant "${variant}" (${MMAP_VARIANTS.join(", ")})`);
  }
  const bounce = variant.startsWith("bounce");
  const sync = !variant.endsWith("-nosync");
  const m = appMachine({
    ...(o.topology ? { topology: o.topology } : {}),
    world: { strict: false, seed: o.seed ?? 1 },
  });
  const { world, nic } = m;
  world.trace.enable();
  const rec = new Recorder(world, m.fabric);
  const locks = trackLocks(world, rec);
  nic.setMaskAndCoherent(dmaBitMask(64));
  if (bounce) dmaDevSetup(nic, { forceBounce: true });
  dmaHeapSystemInit(world);
  const steps: string[] = [];
  const rules: string[] = [];
  const findings: string[] = [];
  const failures: string[] = [];
  let verified = 0;
  let bufinfo: string | null = null;
  const mm = new MmStruct(world, "app");
  const files = filesOf(world, null);
  const ioctl = (fd: number, cmd: number, arg: DataView) => files.lookup(fd).ioctl(cmd, arg);
  const syncIoctl = (fd: number, flags: number) =>
    ioctl(fd, DMA_BUF_IOCTL_SYNC, dmaBufSyncArg(flags));
  const toDevice = pattern(0x1234 + (o.seed ?? 1), SIZE);
  const fromDevice = pattern(0x4321 + (o.seed ?? 1), SIZE);

  await world.runTask("app", async () => {
    const heapFd = dmaHeapOpen(world, "system", O_RDONLY | O_CLOEXEC, files);
    const arg = dmaHeapAllocArg(SIZE, O_RDWR | O_CLOEXEC);
    await ioctl(heapFd, DMA_HEAP_IOCTL_ALLOC, arg);
    const fd = arg.getUint32(8, true);
    steps.push(`DMA_HEAP_IOCTL_ALLOC on /dev/dma_heap/system: fd ${fd}, ${SIZE} bytes`);
    const va = await mm.mmap({
      length: SIZE,
      prot: PROT_READ | PROT_WRITE,
      flags: MAP_SHARED,
      file: files.lookup(fd).asVmFile(),
    });
    steps.push(`mmap(fd ${fd}) at 0x${va.toString(16)} (remap_pfn_range of the heap pages)`);

    // The NIC driver imports the fd (what an RDMA or V4L2 import does).
    const buf = dmaBufGet(world, fd, files);
    const attach = await dmaBufAttach(buf, nic);
    const sgt = await attach.mapUnlocked("DMA_BIDIRECTIONAL");
    steps.push(
      `${nic.name} attached and mapped: ${sgt.nents} DMA segment(s) via ${
        bounce ? "swiotlb bounce slots" : "dma-direct"
      }`,
    );
    rules.push("dma_buf_map_attachment takes dma_resv (lockdep-checked)");
    bufinfo = await dmaBufBufinfo(world);

    // uapi rule: unknown SYNC flags are -EINVAL.
    try {
      await syncIoctl(fd, 0x8);
      failures.push("DMA_BUF_IOCTL_SYNC accepted flags 0x8");
    } catch (e) {
      if (!(e instanceof KernelError) || e.code !== "EINVAL") throw e;
      rules.push("DMA_BUF_IOCTL_SYNC rejects unknown flags with -EINVAL");
    }

    // Round 1: CPU writes, the device reads.
    await rec.slice("app", "cpu write", async () => {
      if (sync) await syncIoctl(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
      await mm.write(va, toDevice);
      if (sync) await syncIoctl(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
    });
    steps.push(
      sync
        ? "CPU wrote 64 KiB between SYNC START|WRITE and SYNC END|WRITE"
        : "CPU wrote 64 KiB with no DMA_BUF_IOCTL_SYNC",
    );
    const seen = deviceReadSgt(nic, sgt);
    const t1 = rec.transfer({
      label: "device read",
      src: nic,
      dst: null,
      mapType: bounce ? "swiotlb" : "RAM",
      ats: false,
      bytes: seen.length,
    });
    await world.sched.sleepNs(t1.durNs);
    const good1 = countEqual(toDevice, seen);
    if (good1 === SIZE) {
      verified += SIZE;
      steps.push(`${nic.name} read all ${SIZE} bytes the CPU wrote`);
      if (!sync) findings.push("missing SYNC unnoticed: the device is cache-coherent");
    } else {
      steps.push(`${nic.name} read stale data from byte ${good1} on (no SYNC END before DMA)`);
      if (sync || !bounce) failures.push(`device read stale data at byte ${good1}`);
      else findings.push(`device read stale bytes from offset ${good1}: SYNC END was skipped`);
    }

    // Round 2: the device writes under a fence; the CPU waits in SYNC START.
    const ops = { getDriverName: () => nic.name, getTimelineName: () => "dma" };
    const fence = new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1);
    const emitted = world.sched.now;
    await rec.slice("lock dma_resv", "reserve+add_fence", async () => {
      await buf.resv.lock(null);
      buf.resv.reserveFences(1);
      buf.resv.addFence(fence, DmaResvUsage.WRITE);
      buf.resv.unlock();
    });
    rules.push("dma_resv_add_fence under the reservation lock with a reserved slot");
    world.spawn("nic-dma", async () => {
      deviceWriteSgt(nic, sgt, fromDevice);
      const t = rec.transfer({
        label: "device write",
        src: nic,
        dst: null,
        mapType: bounce ? "swiotlb" : "RAM",
        ats: false,
        bytes: SIZE,
      });
      await world.sched.sleepNs(Math.max(1000, t.durNs));
      fence.signal();
      rec.span(`fence ${nic.name}/dma`, "dma_fence 1", emitted, world.sched.now);
    });
    const waitStart = world.sched.now;
    if (sync) {
      // dma_buf_begin_cpu_access runs the exporter's hook (the heap's
      // dma_sync_sgtable_for_cpu) before it waits for the fences, so a
      // process that wants the device's bytes waits for the write fence
      // first: here through an exported sync_file, as Mesa/Vulkan do.
      const sf = dmaBufSyncFileArg(DMA_BUF_SYNC_READ);
      await ioctl(fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, sf);
      const sfd = sf.getInt32(4, true);
      const f = syncFileGetFence(world, sfd, files)!;
      await f.wait(true);
      f.put();
      files.close(sfd);
      steps.push(
        `waited ${
          world.sched.now - waitStart
        } ns on the write fence exported as sync_file fd ${sfd}`,
      );
      rules.push("DMA_BUF_IOCTL_EXPORT_SYNC_FILE gives the fences a READ must wait for");
      await syncIoctl(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
      steps.push("SYNC START|READ (dma_buf_begin_cpu_access: heap sync for CPU, fence wait)");
      rules.push("begin_cpu_access waits for the WRITE fences (dma_resv_usage_rw)");
    } else {
      await world.sched.msleep(1); // no SYNC: the app just waits "long enough"
      steps.push("CPU read without SYNC START|READ after sleeping 1 ms");
    }
    const back = await mm.read(va, SIZE);
    if (sync) await syncIoctl(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
    const good2 = countEqual(fromDevice, back);
    if (good2 === SIZE) {
      verified += SIZE;
      steps.push(`CPU read all ${SIZE} bytes the device wrote`);
    } else {
      steps.push(`CPU read stale data from byte ${good2} on (no SYNC START before reading)`);
      if (sync || !bounce) failures.push(`CPU read stale data at byte ${good2}`);
      else findings.push(`CPU read stale bytes from offset ${good2}: SYNC START was skipped`);
    }
    fence.put();

    await attach.unmapUnlocked(sgt, "DMA_BIDIRECTIONAL");
    await attach.detach();
    buf.put();
    await mm.munmap(va, SIZE);
    files.close(fd);
    files.close(heapFd);
    steps.push("unmapped, detached, munmapped, closed: the buffer was released");
    if (!buf.released) failures.push("the dma-buf was not released after the last reference");
    rules.push("the last fput releases the dma-buf (no attachment, no vmap left)");
  });

  locks.finish();
  const violations = [...worldViolations(world), ...failures];
  const stats = deviceDmaStats(nic);
  return {
    world,
    fabric: m.fabric,
    recorder: rec,
    bufinfo,
    result: {
      app: "mmap",
      mechanism: "userspace mmap",
      variant,
      machine: m.fabric.name,
      exporter: "system heap",
      importer: `process + ${nic.name}`,
      path: bounce ? "RAM via swiotlb bounce" : "RAM, dma-direct",
      ats: "n/a",
      bytesVerified: verified,
      violations,
      expectedFindings: findings,
      costs: {
        "device bytes read": stats.bytesRead,
        "device bytes written": stats.bytesWritten,
        "modelled DMA ns": rec.transfers.reduce((n, t) => n + t.durNs, 0),
        "lock holds across scheduling points": locks.holds,
        "virtual time ns": world.sched.now,
      },
      rulesChecked: rules,
      steps,
      variants: [],
      ok: violations.length === 0 && worldSplats(world).length === 0,
    },
  };
}

/** The mmap app as the CLI lists it. */
export const mmapApp: AppDefinition = {
  name: "mmap",
  mechanism: "userspace mmap",
  summary: "a process mmaps a dma-buf, brackets CPU access with DMA_BUF_IOCTL_SYNC; a NIC reads it",
  variants: MMAP_VARIANTS,
  topology: true,
  run: runMmap,
};
