import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { Kernel } from "@dmalab/kernel";
import { dmaBufInvalidateMappings, dmaHeapSystemAlloc } from "@dmalab/dma-buf";
import { GPU_DOMAIN_GTT, GPU_DOMAIN_VRAM, gpuBoExport } from "@dmalab/gpu";
import {
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_REMOTE_READ,
  type IbUmemDmabuf,
  ibUmemDmabufGet,
  mlx5IbDeregMr,
  mlx5IbRegUserMrDmabuf,
  mlx5Probe,
} from "./mod.ts";
import { ACCESS_ALL, buildRig, connect, registerUserMr, registerVramMr } from "./scenarios.ts";
import { defaultMachine } from "@dmalab/pci-p2p";

Deno.test("ib_umem_dmabuf_get: errnos", async (t) => {
  const world = new Kernel();
  const rig = buildRig(world);
  await world.runTask("reg", async () => {
    const buf = dmaHeapSystemAlloc(world, 64 << 10);
    const fd = buf.fd(2);
    await t.step("ops without an invalidate callback: -EINVAL", async () => {
      await rejects(ibUmemDmabufGet(rig.nic, 0, 4096, fd, { allowPeer2peer: true }), /EINVAL/);
    });
    await t.step("window beyond the buffer: -EINVAL, no attachment left", async () => {
      await rejects(
        ibUmemDmabufGet(rig.nic, 4096, 64 << 10, fd, { invalidateMappings: () => {} }),
        /EINVAL/,
      );
      strictEqual(buf.attachments.length, 0);
    });
    await t.step("offset + size overflow: -EINVAL", async () => {
      await rejects(
        ibUmemDmabufGet(rig.nic, Number.MAX_SAFE_INTEGER, 4096, fd, {
          invalidateMappings: () => {},
        }),
        /EINVAL/,
      );
    });
    await t.step("a bad fd: -EBADF", async () => {
      await rejects(
        ibUmemDmabufGet(rig.nic, 0, 4096, 999, { invalidateMappings: () => {} }),
        /EBADF/,
      );
    });
    await t.step("dynamic MR without ODP: -EOPNOTSUPP", async () => {
      const w2 = new Kernel();
      const m = defaultMachine(w2);
      const noOdp = mlx5Probe(m.nic, { odp: false });
      await w2.runTask("r", async () => {
        const b = dmaHeapSystemAlloc(w2, 8192);
        const f = b.fd(2);
        await rejects(
          mlx5IbRegUserMrDmabuf(noOdp.allocPd(), 0, 8192, 0, f, ACCESS_ALL),
          /EOPNOTSUPP/,
        );
      });
    });
  });
  deepStrictEqual(world.check(), []);
});

Deno.test("pinned dma-buf MR: the object stays, an invalidate only warns", async () => {
  const world = new Kernel();
  const rig = buildRig(world);
  await world.runTask("app", async () => {
    const bo = rig.gpu.boCreate(1 << 20);
    await rig.gpu.fill(bo, 9);
    const t = await registerVramMr(rig, rig.nic, bo, { mode: "pinned" });
    strictEqual(bo.pinCount, 1);
    await bo.resv.lock(null);
    await rejects(rig.gpu.validate(bo, GPU_DOMAIN_GTT), /EINVAL/, "pinned objects do not move");
    dmaBufInvalidateMappings((t.mr.umem as IbUmemDmabuf).dmabuf);
    bo.resv.unlock();
    strictEqual(rig.nic.stats.pinnedInvalidateWarnings, 1);
    ok(world.dmesg.includes("Invalidate callback should not be called when memory is pinned"));
    await mlx5IbDeregMr(t.mr);
    strictEqual(bo.pinCount, 0);
  });
});

Deno.test("RDMA access errors complete in error and flush the QP", async (t) => {
  const cases: [string, (x: { rkey: number; len: number; addr: number }) => void, string][] = [
    ["bad rkey", (x) => (x.rkey = 0xdead00), "REM_ACCESS_ERR"],
    ["length beyond the local MR", (x) => (x.len = 128 << 10), "LOC_PROT_ERR"],
    ["remote address below the MR", (x) => (x.addr -= 4096), "REM_ACCESS_ERR"],
  ];
  for (const [name, mutate, status] of cases) {
    await t.step(name, async () => {
      const world = new Kernel();
      const rig = buildRig(world);
      const st = await world.runTask("app", async () => {
        const dst = await registerUserMr(rig, rig.nic, 64 << 10);
        const src = await registerUserMr(rig, rig.nic, 64 << 10, (i) => i & 0xff, dst.pd);
        const { qa } = connect(rig.nic, dst.pd, rig.nic, dst.pd);
        const x = { rkey: dst.rkey, len: 64 << 10, addr: dst.iova };
        mutate(x);
        qa.postSend({
          wrId: 1,
          opcode: "RDMA_WRITE",
          sge: { mr: src, addr: src.iova, length: x.len },
          remoteAddr: x.addr,
          rkey: x.rkey,
        });
        qa.postSend({
          wrId: 2,
          opcode: "RDMA_WRITE",
          sge: { mr: src, addr: src.iova, length: 4096 },
          remoteAddr: dst.iova,
          rkey: dst.rkey,
        });
        await qa.cq.waitTotal(2);
        return qa.cq.poll().map((w) => w.status);
      });
      deepStrictEqual(st, [status, "WR_FLUSH_ERR"]);
    });
  }
  await t.step("RDMA READ needs REMOTE_READ on the target and LOCAL_WRITE locally", async () => {
    const world = new Kernel();
    const rig = buildRig(world);
    const st = await world.runTask("app", async () => {
      const pd = rig.nic.allocPd();
      const addr = await rig.mm.mmap({ length: 8192 });
      const { mlx5IbRegUserMr } = await import("./mr.ts");
      const noRead = await mlx5IbRegUserMr(pd, rig.mm, addr, 4096, addr, IB_ACCESS_LOCAL_WRITE);
      const noLocalWrite = await mlx5IbRegUserMr(
        pd,
        rig.mm,
        addr + 4096,
        4096,
        addr + 4096,
        IB_ACCESS_REMOTE_READ,
      );
      const out: string[] = [];
      for (const [local, remote] of [[noRead, noRead], [noLocalWrite, noLocalWrite]]) {
        const { qa } = connect(rig.nic, pd, rig.nic, pd);
        qa.postSend({
          wrId: 1,
          opcode: "RDMA_READ",
          sge: { mr: local!, addr: local!.iova, length: 4096 },
          remoteAddr: remote!.iova,
          rkey: remote!.rkey,
        });
        await qa.cq.waitTotal(1);
        out.push(qa.cq.poll()[0]!.status);
      }
      return out;
    });
    deepStrictEqual(st, ["REM_ACCESS_ERR", "LOC_PROT_ERR"]);
  });
});

Deno.test("two NICs: RDMA READ from remote VRAM, capped by the wire", async () => {
  const world = new Kernel();
  const rig = buildRig(world);
  const r = await world.runTask("app", async () => {
    const bo = rig.gpu.boCreate(4 << 20);
    await rig.gpu.fill(bo, 0x42);
    const t = await registerVramMr(rig, rig.nic, bo); // served by the NIC under the GPU's switch
    const local = await registerUserMr(rig, rig.nic2!, 4 << 20);
    const { qa } = connect(rig.nic2!, local.pd, rig.nic, t.mr.pd);
    const t0 = world.sched.now;
    qa.postSend({
      wrId: 7,
      opcode: "RDMA_READ",
      sge: { mr: local, addr: local.iova, length: 4 << 20 },
      remoteAddr: t.mr.iova,
      rkey: t.mr.rkey,
    });
    await qa.cq.waitTotal(1);
    const ns = world.sched.now - t0;
    const bytes = await rig.mm.read(local.iova + 12345, 3);
    return { wc: qa.cq.poll()[0]!, ns, bytes: [...bytes] };
  });
  strictEqual(r.wc.status, "SUCCESS");
  strictEqual(r.wc.byteLen, 4 << 20);
  deepStrictEqual(r.bytes, [0x42, 0x42, 0x42]);
  const gbps = (4 << 20) / r.ns;
  ok(gbps <= 50 + 1e-9 && gbps > 45, `wire-bound (50 GB/s NDR), got ${gbps.toFixed(2)}`);
});

Deno.test("p2p-aware rule re-decides ATS at each fault; mainline keeps it on system memory", async () => {
  for (const rule of ["mainline", "p2p-aware"] as const) {
    const world = new Kernel({ variants: { "mlx5.ats": rule } });
    const rig = buildRig(world, { iommu: true, vramSize: 8 << 20 });
    const r = await world.runTask("app", async () => {
      const bo = rig.gpu.boCreate(1 << 20);
      await rig.gpu.fill(bo, 1);
      const t = await registerVramMr(rig, rig.nic, bo);
      const before = t.mr.ats;
      const src = await registerUserMr(rig, rig.nic, 4096, () => 5, t.mr.pd);
      const { qa } = connect(rig.nic, t.mr.pd, rig.nic, t.mr.pd);
      await bo.resv.lock(null);
      await rig.gpu.validate(bo, GPU_DOMAIN_GTT); // evicted: move_notify zaps the MR
      bo.resv.unlock();
      qa.postSend({
        wrId: 1,
        opcode: "RDMA_WRITE",
        sge: { mr: src, addr: src.iova, length: 4096 },
        remoteAddr: t.mr.iova,
        rkey: t.mr.rkey,
      });
      await qa.cq.waitTotal(1);
      const inGtt = t.mr.ats;
      await bo.resv.lock(null);
      await rig.gpu.validate(bo, GPU_DOMAIN_VRAM);
      bo.resv.unlock();
      qa.postSend({
        wrId: 2,
        opcode: "RDMA_WRITE",
        sge: { mr: src, addr: src.iova, length: 4096 },
        remoteAddr: t.mr.iova + 4096,
        rkey: t.mr.rkey,
      });
      await qa.cq.waitTotal(2);
      return { before, inGtt, back: t.mr.ats, faults: t.mr.faults };
    });
    strictEqual(r.before, true, `${rule}: VRAM through the root complex uses ATS`);
    strictEqual(r.inGtt, rule === "mainline", `${rule}: ATS on system memory`);
    strictEqual(r.back, true);
    strictEqual(r.faults, 2);
    deepStrictEqual(world.check(), []);
  }
  void gpuBoExport;
});

Deno.test("concurrent streams share the links max-min fairly", async () => {
  const run = async (streams: number) => {
    const world = new Kernel({ lockdep: false });
    const rig = buildRig(world);
    return await world.runTask("app", async () => {
      const pd = rig.nic.allocPd();
      const qps = [];
      for (let k = 0; k < streams; k++) {
        const dst = await registerUserMr(rig, rig.nic, 4 << 20, undefined, pd);
        const src = await registerUserMr(rig, rig.nic, 4 << 20, (i) => i & 0xff, pd);
        qps.push({ ...connect(rig.nic, pd, rig.nic, pd), dst, src });
      }
      const t0 = world.sched.now;
      for (const q of qps) {
        q.qa.postSend({
          wrId: 1,
          opcode: "RDMA_WRITE",
          sge: { mr: q.src, addr: q.src.iova, length: 4 << 20 },
          remoteAddr: q.dst.iova,
          rkey: q.dst.rkey,
        });
      }
      for (const q of qps) await q.qa.cq.waitTotal(1);
      return world.sched.now - t0;
    });
  };
  const one = await run(1);
  const two = await run(2);
  const ratio = two / one;
  ok(ratio > 1.8 && ratio < 2.2, `two streams over the same links take ~2x: ${ratio.toFixed(2)}`);
});
