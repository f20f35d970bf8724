/**
 * DOC: queue pairs, completions, RDMA WRITE and READ (drivers/infiniband/hw/mlx5/wr.c, cq.c)
 *
 * A reliable-connected QP pair between two NICs (or a NIC and itself,
 * loopback). `postSend` queues a work request; the requester executes the
 * QP's requests in order, each as its own task, in chunks (64 KiB by
 * default) so other tasks (GPU eviction, invalidations) interleave with a
 * long transfer:
 *
 * - RDMA WRITE: the local NIC reads the local MR (lkey) and the remote NIC
 *   writes the remote MR (rkey, needs REMOTE_WRITE);
 * - RDMA READ: the remote NIC reads the remote MR (needs REMOTE_READ) and
 *   the local NIC writes the local MR (needs LOCAL_WRITE).
 *
 * Every access translates through the MR's MTT; a zapped entry of a
 * dynamic dma-buf MR takes an ODP page fault (re-map under the reservation
 * lock, waiting for KERNEL fences) and retries. The DMA itself goes through
 * the P2P bus path or the IOMMU (with or without ATS) and moves real bytes
 * (dma.ts); virtual time advances by the chunk's bytes over its max-min
 * fair share of every resource it crosses (read path, wire between two
 * NICs, write path), computed among all transfers in flight when the chunk
 * starts, plus the overlapped translation latency.
 *
 * Completion statuses as `enum ib_wc_status`: SUCCESS; LOC_PROT_ERR (bad
 * lkey, PD mismatch, out of bounds, missing LOCAL_WRITE, or a revoked local
 * mkey); REM_ACCESS_ERR (the same on the responder's side); after an error
 * the QP is in the error state and later requests complete with
 * WR_FLUSH_ERR.
 *
 * Locking: `postSend` does not sleep; execution tasks sleep only on
 * scheduler primitives (the fault path takes the reservation lock).
 *
 * @module
 */
import { Completion, type Kernel, KernelError, WaitQueueHead } from "@dmalab/kernel";
import { IbUmemDmabuf } from "./umem.ts";
import { IB_ACCESS_LOCAL_WRITE, IB_ACCESS_REMOTE_READ, IB_ACCESS_REMOTE_WRITE } from "./ats.ts";
import { activeFlows, deviceMemoryOwners, type FlowHop, nicDma, sharedGBps } from "./dma.ts";
import type { IbPd, Mlx5Device } from "./device.ts";
import { type Mlx5Mr, mlx5PagefaultDmabufMr } from "./mr.ts";

/** `enum ib_wc_status` (the values used here). */
export type IbWcStatus = "SUCCESS" | "LOC_PROT_ERR" | "REM_ACCESS_ERR" | "WR_FLUSH_ERR";

/** A completion queue entry (`struct ib_wc`). */
export interface IbWc {
  /** `wr_id`. */
  readonly wrId: number;
  /** Status. */
  readonly status: IbWcStatus;
  /** Opcode of the request. */
  readonly opcode: "RDMA_WRITE" | "RDMA_READ";
  /** Bytes transferred (0 on error). */
  readonly byteLen: number;
  /** Virtual time of completion, ns. */
  readonly ns: number;
}

/** A completion queue. */
export class IbCq {
  /** The world. */
  readonly world: Kernel;
  /** Entries not polled yet. */
  readonly entries: IbWc[] = [];
  /** Every entry ever queued. */
  total = 0;
  readonly #wq: WaitQueueHead;

  /** A CQ on `dev`. */
  constructor(dev: Mlx5Device) {
    this.world = dev.world;
    this.#wq = new WaitQueueHead(dev.world.sched, `${dev.name} cq`);
  }

  /** @internal queues a completion and wakes waiters. */
  push(wc: IbWc): void {
    this.entries.push(wc);
    this.total++;
    this.#wq.wakeUpAll();
  }

  /** `ib_poll_cq`: up to `max` entries. */
  poll(max = Infinity): IbWc[] {
    return this.entries.splice(0, Math.min(max, this.entries.length));
  }

  /** Sleeps until `total` reaches `n` (a completion-channel wait). */
  async waitTotal(n: number): Promise<void> {
    await this.#wq.waitEvent(() => this.total >= n);
  }
}

/** The scatter/gather element of a request. */
export interface IbSge {
  /** Local MR. */
  readonly mr: Mlx5Mr;
  /** Virtual address inside the MR. */
  readonly addr: number;
  /** Bytes. */
  readonly length: number;
}

/** An RDMA work request (`struct ib_rdma_wr`). */
export interface IbRdmaWr {
  /** `wr_id`. */
  readonly wrId: number;
  /** Operation. */
  readonly opcode: "RDMA_WRITE" | "RDMA_READ";
  /** Local buffer. */
  readonly sge: IbSge;
  /** Remote virtual address. */
  readonly remoteAddr: number;
  /** Remote key. */
  readonly rkey: number;
}

/** A reliable-connected queue pair. */
export class IbQp {
  /** The device. */
  readonly dev: Mlx5Device;
  /** Its PD. */
  readonly pd: IbPd;
  /** Send CQ. */
  readonly cq: IbCq;
  /** qpn. */
  readonly qpn: number;
  /** The connected peer (RTS once set). */
  remote: IbQp | null = null;
  /** `IB_QPS_RTS` or `IB_QPS_ERR`. */
  state: "INIT" | "RTS" | "ERR" = "INIT";
  /** Chunk size of execution. */
  chunk: number;
  #last: Completion | null = null;

  /** `ib_create_qp`. */
  constructor(pd: IbPd, cq: IbCq, options: { chunk?: number } = {}) {
    this.dev = pd.dev;
    this.pd = pd;
    this.cq = cq;
    this.qpn = pd.dev.world.nextId();
    this.chunk = options.chunk ?? 64 << 10;
  }

  /** `ib_post_send`: queues `wr` (executed by its own task, in order). */
  postSend(wr: IbRdmaWr): void {
    if (this.state === "INIT" || !this.remote) {
      throw new KernelError("EINVAL", `qp ${this.qpn}: not connected (ib_post_send)`);
    }
    const prev = this.#last;
    const done = new Completion(this.dev.world.sched, `qp ${this.qpn} wr ${wr.wrId}`);
    this.#last = done;
    this.dev.world.spawn(`${this.dev.name}:qp${this.qpn}:wr${wr.wrId}`, async () => {
      if (prev) await prev.waitForCompletion();
      try {
        await execute(this, wr);
      } finally {
        done.completeAll();
      }
    });
  }
}

/** Connects two QPs (INIT -> RTR -> RTS on both sides). */
export function ibConnectQps(a: IbQp, b: IbQp): void {
  a.remote = b;
  b.remote = a;
  a.state = "RTS";
  b.state = "RTS";
}

type Side = { mr: Mlx5Mr; off: number } | IbWcStatus;

function checkMr(
  dev: Mlx5Device,
  pd: IbPd,
  key: number,
  addr: number,
  len: number,
  need: number,
  err: IbWcStatus,
): Side {
  const mr = dev.mkeys.get(key);
  if (!mr || mr.deregistered || mr.revoked || mr.pd !== pd) return err;
  if ((mr.access & need) !== need) return err;
  const off = addr - mr.iova;
  if (off < 0 || off + len > mr.length) return err;
  return { mr, off };
}

/** DMA pieces of [off, off+n) of `mr`, or "fault" when an entry is zapped. */
function pieces(mr: Mlx5Mr, off: number, n: number): { addr: number; len: number }[] | "fault" {
  const u = mr.umem;
  const base = (u instanceof IbUmemDmabuf ? u.offset : u.address) % 4096;
  const out: { addr: number; len: number }[] = [];
  let at = base + off;
  let left = n;
  while (left > 0) {
    const pg = Math.floor(at / 4096);
    const a = mr.mtt[pg];
    if (a === undefined || a < 0) return "fault";
    const k = Math.min(left, 4096 - (at % 4096));
    out.push({ addr: a + (at % 4096), len: k });
    at += k;
    left -= k;
  }
  return out;
}

/** Resolves an access, faulting in dynamic MRs; null when the mkey died meanwhile. */
async function translate(
  mr: Mlx5Mr,
  off: number,
  n: number,
): Promise<{ addr: number; len: number }[] | null> {
  for (let tries = 0; tries < 16; tries++) {
    if (mr.revoked || mr.deregistered) return null;
    const p = pieces(mr, off, n);
    if (p !== "fault") {
      const u = mr.umem;
      if (u instanceof IbUmemDmabuf && u.sgt) u.attach.checkAccess(u.sgt);
      return p;
    }
    if (!mr.isDynamic) return null;
    try {
      await mlx5PagefaultDmabufMr(mr);
    } catch {
      return null;
    }
  }
  return null;
}

function checkOwners(dev: Mlx5Device, mr: Mlx5Mr, phys: number[]): void {
  const owners = deviceMemoryOwners(dev.world);
  if (owners.length === 0) return;
  const want = mr.umem instanceof IbUmemDmabuf ? mr.umem.dmabuf : null;
  for (const p of phys) {
    for (const o of owners) {
      if (p < o.start || p >= o.end) continue;
      const got = o.owner(p);
      if (got !== want) {
        dev.staleDma.push(
          `${mr}: DMA at 0x${p.toString(16)} in device memory that no longer backs its buffer`,
        );
      }
    }
  }
}

async function execute(qp: IbQp, wr: IbRdmaWr): Promise<void> {
  const dev = qp.dev;
  const world = dev.world;
  const remote = qp.remote!;
  const rdev = remote.dev;
  const complete = (status: IbWcStatus, byteLen: number) => {
    if (status !== "SUCCESS") {
      dev.stats.errors++;
      if (status !== "WR_FLUSH_ERR") qp.state = "ERR";
    }
    qp.cq.push({ wrId: wr.wrId, status, opcode: wr.opcode, byteLen, ns: world.sched.now });
  };
  if (qp.state === "ERR") return complete("WR_FLUSH_ERR", 0);
  const len = wr.sge.length;
  const write = wr.opcode === "RDMA_WRITE";
  const data = new Uint8Array(Math.min(qp.chunk, len));
  for (let done = 0; done < len;) {
    const n = Math.min(qp.chunk, len - done);
    const local = checkMr(
      dev,
      qp.pd,
      wr.sge.mr.key,
      wr.sge.addr + done,
      n,
      write ? 0 : IB_ACCESS_LOCAL_WRITE,
      "LOC_PROT_ERR",
    );
    if (typeof local === "string") return complete(local, 0);
    const rem = checkMr(
      rdev,
      remote.pd,
      wr.rkey,
      wr.remoteAddr + done,
      n,
      write ? IB_ACCESS_REMOTE_WRITE : IB_ACCESS_REMOTE_READ,
      "REM_ACCESS_ERR",
    );
    if (typeof rem === "string") return complete(rem, 0);
    // source first, then destination: each side faults in its own MR
    const [srcMr, srcOff, srcDev] = write ? [local.mr, local.off, dev] : [rem.mr, rem.off, rdev];
    const [dstMr, dstOff, dstDev] = write ? [rem.mr, rem.off, rdev] : [local.mr, local.off, dev];
    const srcErr: IbWcStatus = write ? "LOC_PROT_ERR" : "REM_ACCESS_ERR";
    const dstErr: IbWcStatus = write ? "REM_ACCESS_ERR" : "LOC_PROT_ERR";
    const sp = await translate(srcMr, srcOff, n);
    if (!sp) return complete(srcErr, 0);
    const dp = await translate(dstMr, dstOff, n);
    if (!dp) return complete(dstErr, 0);
    // a fault on one side may have slept: re-check the other is still valid
    const sp2 = pieces(srcMr, srcOff, n);
    const dp2 = pieces(dstMr, dstOff, n);
    if (sp2 === "fault" || dp2 === "fault" || srcMr.revoked || dstMr.revoked) {
      if (srcMr.revoked) return complete(srcErr, 0);
      if (dstMr.revoked) return complete(dstErr, 0);
      continue; // moved while we faulted the other side: retry this chunk
    }
    const buf = data.subarray(0, n);
    const r = nicDma(srcDev.pdev, sp2, false, srcMr.ats, buf);
    const w = nicDma(dstDev.pdev, dp2, true, dstMr.ats, buf);
    checkOwners(srcDev, srcMr, r.phys);
    checkOwners(dstDev, dstMr, w.phys);
    srcMr.atsTranslations += r.atsTranslations;
    dstMr.atsTranslations += w.atsTranslations;
    // the hops of this chunk: read side, wire (two NICs), write side; the
    // rate is the max-min fair share among every transfer in flight
    const hops: FlowHop[] = [
      ...srcDev.cost.pathHops(srcDev.pdev, r.phys[0]!, false),
      ...dstDev.cost.pathHops(dstDev.pdev, w.phys[0]!, true),
    ];
    if (srcDev !== dstDev) {
      hops.push({
        id: `wire:${srcDev.name}->${dstDev.name}`,
        capacity: dev.cost.params.wireGBps.value,
        weight: 1,
      });
    }
    const flow = { hops };
    const gbps = sharedGBps(world, flow);
    const trans = r.translationNs + w.translationNs;
    const ns = n / gbps + dev.cost.stallNs(trans);
    for (const [d, x] of [[srcDev, r], [dstDev, w]] as const) {
      d.stats.atsTranslations += x.atsTranslations;
      d.stats.iotlbMisses += x.iotlbMisses;
      d.stats.translationNs += x.translationNs;
    }
    dev.stats.bytes += n;
    dev.stats.busyNs += ns;
    const flows = activeFlows(world);
    flows.add(flow);
    try {
      await world.sched.sleepNs(Math.max(1, Math.ceil(ns)), "rdma");
    } finally {
      flows.delete(flow);
    }
    done += n;
  }
  dev.stats.wrs++;
  complete("SUCCESS", len);
}
