/**
 * @dmalab/mlx5: an mlx5-like RDMA NIC for dmalab worlds. Protection
 * domains; memory regions over user memory (GUP-pinned) and over dma-bufs
 * (dynamic ODP-style with invalidate + re-fault, pinned, pinned-revocable);
 * the ATS decision under the mainline rule ("every dma-buf is P2P") or the
 * P2P-aware rule, switched by `world.variant("mlx5.ats", ...)`; RDMA WRITE
 * and READ that move real bytes through the P2P bus path or the IOMMU,
 * costed by the pci-p2p bandwidth model; completions with error statuses.
 *
 * @example
 * ```ts
 * import { Kernel, MmStruct } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import {
 *   IB_ACCESS_LOCAL_WRITE,
 *   IB_ACCESS_REMOTE_WRITE,
 *   ibConnectQps,
 *   IbCq,
 *   IbQp,
 *   mlx5IbRegUserMr,
 *   mlx5Probe,
 * } from "@dmalab/mlx5";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * const a = mlx5Probe(m.nic);
 * const b = mlx5Probe(m.nic2);
 * const mm = new MmStruct(world, "app");
 * const wc = await world.runTask("app", async () => {
 *   const src = await mm.mmap({ length: 8192 });
 *   const dst = await mm.mmap({ length: 8192 });
 *   await mm.write(src, new TextEncoder().encode("hello"));
 *   const pa = a.allocPd();
 *   const pb = b.allocPd();
 *   const acc = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE;
 *   const smr = await mlx5IbRegUserMr(pa, mm, src, 8192, src, acc);
 *   const dmr = await mlx5IbRegUserMr(pb, mm, dst, 8192, dst, acc);
 *   const qa = new IbQp(pa, new IbCq(a));
 *   const qb = new IbQp(pb, new IbCq(b));
 *   ibConnectQps(qa, qb);
 *   qa.postSend({
 *     wrId: 1,
 *     opcode: "RDMA_WRITE",
 *     sge: { mr: smr, addr: src, length: 8192 },
 *     remoteAddr: dst,
 *     rkey: dmr.rkey,
 *   });
 *   await qa.cq.waitTotal(1);
 *   return qa.cq.poll()[0]!;
 * });
 * wc.status; // "SUCCESS"
 * ```
 *
 * @module
 */
export * from "./ats.ts";
export * from "./dma.ts";
export * from "./device.ts";
export * from "./umem.ts";
export * from "./mr.ts";
export * from "./qp.ts";
