/**
 * DOC: GPU command stream (drivers/gpu/drm/scheduler, amdgpu_job.c, SDMA)
 *
 * A ring executes jobs in submission order, each after its dependencies
 * (the fences the submitter collected from reservation objects, as
 * `drm_sched_job_add_resv_dependencies` does). A job is a real memory
 * operation on physical ranges resolved at submission time (the GPU's page
 * tables point at the backing the buffer had then): fill, copy, or a
 * checksum (FNV-1a over the bytes). The engine reads and writes the world's
 * memory directly (VRAM through its BAR range, system memory pages; GART
 * translation is not modelled), advances virtual time by the modelled
 * transfer time, then signals the job's fence (`dma_fence_signal` from the
 * scheduler's completion path).
 *
 * Each job runs as its own scheduler task ("gpu ring" context), waiting for
 * the previous job's fence first, so the ring stays in order and
 * `world.run()` ends when the ring is idle.
 *
 * Locking: `submit` is called with the reservation locks of the buffers
 * involved held (the caller adds the returned fence to them before
 * unlocking); the job body holds no lock and only waits on fences.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import { type DmaFence, DmaFence as Fence, dmaFenceContextAlloc } from "@dmalab/dma-buf";

/** A physical byte range (VRAM BAR range or a system-memory page run). */
export interface PhysRange {
  /** Physical address. */
  readonly phys: number;
  /** Length in bytes. */
  readonly len: number;
}

/** What a job does. */
export type GpuJobOp =
  | { readonly kind: "fill"; readonly dst: readonly PhysRange[]; readonly value: number }
  | {
    readonly kind: "copy";
    readonly src: readonly PhysRange[];
    readonly dst: readonly PhysRange[];
    /** Rate of this copy when it crosses a slower path (VRAM <-> system memory over PCIe). */
    readonly gbps?: number;
  }
  | { readonly kind: "checksum"; readonly src: readonly PhysRange[] };

/** A submitted job. */
export interface GpuJob {
  /** Sequence number on the ring. */
  readonly seqno: number;
  /** What it does. */
  readonly op: GpuJobOp;
  /** Signalled when it completed. */
  readonly fence: DmaFence;
  /** Checksum result (checksum jobs), set before the fence signals. */
  result: number | null;
  /** Why it was submitted ("eviction", "user"). */
  readonly label: string;
}

/** Counters of a ring. */
export interface GpuRingStats {
  /** Jobs completed. */
  jobs: number;
  /** Bytes written by fill and copy jobs. */
  bytesWritten: number;
  /** Bytes read by copy and checksum jobs. */
  bytesRead: number;
  /** Virtual ns spent executing. */
  busyNs: number;
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a (32 bit) over `bytes`, continuing from `h`. */
export function fnv1a(bytes: Uint8Array, h: number = FNV_OFFSET): number {
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, FNV_PRIME) >>> 0;
  }
  return h >>> 0;
}

/** The checksum a checksum job computes, for bytes the test holds. */
export function gpuChecksumOf(bytes: Uint8Array): number {
  return fnv1a(bytes);
}

function total(r: readonly PhysRange[]): number {
  let n = 0;
  for (const x of r) n += x.len;
  return n;
}

/** Walks two range lists in step, calling `fn` for each common piece. */
function zip(
  a: readonly PhysRange[],
  b: readonly PhysRange[],
  fn: (pa: number, pb: number, n: number) => void,
): void {
  let ia = 0;
  let ib = 0;
  let oa = 0;
  let ob = 0;
  while (ia < a.length && ib < b.length) {
    const ra = a[ia]!;
    const rb = b[ib]!;
    const n = Math.min(ra.len - oa, rb.len - ob);
    fn(ra.phys + oa, rb.phys + ob, n);
    oa += n;
    ob += n;
    if (oa === ra.len) {
      ia++;
      oa = 0;
    }
    if (ob === rb.len) {
      ib++;
      ob = 0;
    }
  }
}

const CHUNK = 1 << 20;

/**
 * One GPU ring (an SDMA-like engine).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { GpuRing } from "@dmalab/gpu";
 * const world = new Kernel();
 * const page = world.mem.allocPages(0)!;
 * const phys = Number(world.mem.pageToPhys(page));
 * const ring = new GpuRing(world, "sdma0", 100);
 * const fill = ring.submit({ kind: "fill", dst: [{ phys, len: 4096 }], value: 7 }, [], "user");
 * const sum = ring.submit({ kind: "checksum", src: [{ phys, len: 4096 }] }, [], "user");
 * await world.run();
 * fill.fence.isSignaled(); // true
 * sum.result !== null; // true
 * ```
 */
export class GpuRing {
  /** The world. */
  readonly world: Kernel;
  /** Ring name (timeline name of its fences). */
  readonly name: string;
  /** Engine bandwidth, GB/s (= bytes per ns). */
  readonly gbps: number;
  /** Fence context of the ring. */
  readonly context: number;
  /** Counters. */
  readonly stats: GpuRingStats = { jobs: 0, bytesWritten: 0, bytesRead: 0, busyNs: 0 };
  #seqno = 0;
  #last: DmaFence | null = null;
  readonly #ops;

  /** A ring named `name` moving `gbps` GB/s. */
  constructor(world: Kernel, name: string, gbps: number) {
    this.world = world;
    this.name = name;
    this.gbps = gbps;
    this.context = dmaFenceContextAlloc(world, 1);
    this.#ops = {
      getDriverName: () => "gpu",
      getTimelineName: () => this.name,
    };
  }

  /** Jobs submitted so far. */
  get seqno(): number {
    return this.#seqno;
  }

  /**
   * `drm_sched_job_arm` + `drm_sched_entity_push_job`: queues `op` after
   * `deps` and every earlier job; returns the job (its fence has one
   * reference owned by the ring, dropped when the job retires).
   */
  submit(op: GpuJobOp, deps: readonly DmaFence[], label: string): GpuJob {
    const seqno = ++this.#seqno;
    const fence = new Fence(this.world, this.#ops, this.context, seqno);
    const job: GpuJob = { seqno, op, fence, result: null, label };
    const prev = this.#last;
    this.#last = fence;
    const waits = [...deps.map((f) => f.get()), ...(prev ? [prev.get()] : [])];
    this.world.spawn(`${this.name}:${label}#${seqno}`, async () => {
      for (const f of waits) {
        await f.wait(false);
        f.put();
      }
      const ns = this.#execute(job);
      this.stats.busyNs += ns;
      if (ns > 0) await this.world.sched.sleepNs(Math.ceil(ns), "gpu job");
      this.stats.jobs++;
      job.fence.signal();
      this.world.trace.event("gpu_job_done", { ring: this.name, seqno, kind: op.kind, label });
    });
    return job;
  }

  #execute(job: GpuJob): number {
    const mem = this.world.mem;
    const op = job.op;
    if (op.kind === "fill") {
      for (const r of op.dst) mem.fill(r.phys, r.len, op.value & 0xff);
      const n = total(op.dst);
      this.stats.bytesWritten += n;
      return n / this.gbps;
    }
    if (op.kind === "copy") {
      const n = Math.min(total(op.src), total(op.dst));
      const tmp = new Uint8Array(CHUNK);
      zip(op.src, op.dst, (ps, pd, len) => {
        for (let o = 0; o < len; o += CHUNK) {
          const k = Math.min(CHUNK, len - o);
          const view = tmp.subarray(0, k);
          mem.readInto(ps + o, view);
          mem.write(pd + o, view);
        }
      });
      this.stats.bytesRead += n;
      this.stats.bytesWritten += n;
      return n / (op.gbps ?? this.gbps);
    }
    let h = FNV_OFFSET;
    const tmp = new Uint8Array(CHUNK);
    for (const r of op.src) {
      for (let o = 0; o < r.len; o += CHUNK) {
        const k = Math.min(CHUNK, r.len - o);
        const view = tmp.subarray(0, k);
        mem.readInto(r.phys + o, view);
        h = fnv1a(view, h);
      }
    }
    job.result = h >>> 0;
    const n = total(op.src);
    this.stats.bytesRead += n;
    return n / this.gbps;
  }

  /** The fence of the last job submitted (null when none). */
  get lastFence(): DmaFence | null {
    return this.#last;
  }
}
