import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { ChooserPolicy, Kernel, MmStruct, type PickContext, type Task } from "@dmalab/kernel";
import {
  barShareInvariant,
  barShareVariants,
  createVm,
  type HvaBacking,
  KvmExit,
  PG_LEVEL_2M,
  PG_LEVEL_4K,
  setupBarShare,
} from "./mod.ts";

const MB = 1 << 20;

Deno.test("path A over RAM: GUP, 2 MiB-aligned slots, munmap zaps through the mmu_notifier", async (t) => {
  const world = new Kernel();
  const mm = new MmStruct(world, "qemu");
  await world.runTask("qemu", async () => {
    const { kvm } = await createVm(world, { mm });
    const hva = await mm.mmap({ length: 4 * MB });
    await kvm.setUserMemoryRegion2({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0,
      memorySize: 4 * MB,
      userspaceAddr: hva,
    });
    const v = kvm.createVcpu();
    await t.step("guest and host see the same bytes", async () => {
      await v.write(0x3000, new Uint8Array([1, 2, 3]));
      deepStrictEqual([...(await mm.read(hva + 0x3000, 3))], [1, 2, 3]);
      await mm.write(hva + 0x5000, new Uint8Array([9]));
      strictEqual((await v.read(0x5000, 1))[0], 9);
      const b = kvm.slot(0)!.backing as HvaBacking;
      ok(b.stats.gup >= 2);
      // Anonymous 4 KiB pages: 4 KiB leaves.
      strictEqual(kvm.stage2.lookup(3)!.level, PG_LEVEL_4K);
    });
    await t.step(
      "munmap runs invalidate_range_start/end: leaves gone, sequence bumped",
      async () => {
        const seq = kvm.mmuInvalidateSeq;
        await mm.munmap(hva, 4 * MB);
        strictEqual(kvm.stage2.leaves(), 0);
        strictEqual(kvm.mmuInvalidateSeq, seq + 1);
        strictEqual(kvm.mmuInvalidateInProgress, 0);
        strictEqual(kvm.mnActiveInvalidateCount, 0);
      },
    );
    await t.step("a fault on the unmapped range is a memory-fault exit with -EFAULT", async () => {
      let ret = 0;
      try {
        await v.read(0x3000, 1);
      } catch (e) {
        ok(e instanceof KvmExit);
        ret = e.exit.ret;
      }
      strictEqual(ret, -14);
    });
    await t.step("a gpa without a slot exits for MMIO emulation", async () => {
      let reason = 0;
      try {
        await v.read(64 * MB, 4);
      } catch (e) {
        ok(e instanceof KvmExit);
        reason = e.exit.exitReason;
      }
      strictEqual(reason, 6);
    });
  });
});

Deno.test("path A over a vfio BAR: 2 MiB leaves from PFNMAP PMDs", async () => {
  const o = { path: "A" as const };
  const world = new Kernel({ variants: barShareVariants(o) });
  await world.runTask("qemu", async () => {
    const s = await setupBarShare(world, { ...o, size: 8 * MB });
    await s.vcpu.read(s.gpa + 3 * MB, 1);
    strictEqual(s.kvm.stage2.lookup((s.gpa + 3 * MB) / 4096)!.level, PG_LEVEL_2M);
    const b = s.kvm.slot(0)!.backing as HvaBacking;
    ok(b.stats.followPfnmap >= 1 && b.stats.fixups >= 1);
  });
});

/**
 * The mmu_notifier retry protocol with a fixed schedule: the vCPU has read
 * the PFNMAP PTE and dropped mmap_lock; vfio disables memory (zap ->
 * invalidate_range_start/end) before the vCPU installs. The install sees
 * the sequence moved, retries, and the vfio fault handler's SIGBUS ends the
 * access with -EFAULT. No leaf ever points at the BAR while it does not
 * decode.
 */
Deno.test("path A: invalidation between follow_pfnmap and install is caught by mmu_invalidate_seq", async () => {
  const o = { path: "A" as const };
  const world = new Kernel({ variants: barShareVariants(o) });
  let s!: Awaited<ReturnType<typeof setupBarShare>>;
  await world.runTask("qemu", async () => {
    s = await setupBarShare(world, o);
  });
  let phase = 0;
  world.sched.policy = new ChooserPolicy("zap-in-the-window", (ctx: PickContext): Task => {
    if (phase === 0 && ctx.current?.kind === "vcpu" && ctx.point.label === "kvm_tdp_mmu_map") {
      phase = 1;
    }
    if (phase === 1) {
      const q = ctx.runnable.find((x) => x.name === "qemu-disable");
      if (q) return q;
    }
    if (ctx.current && ctx.runnable.includes(ctx.current)) return ctx.current;
    return ctx.runnable.find((x) => x.kind === "vcpu") ?? ctx.runnable[0]!;
  });
  const violations: string[] = [];
  world.sched.observer = () => violations.push(...barShareInvariant(s));
  let outcome = 0;
  world.spawn("vcpu", async () => {
    try {
      await s.vcpu.read(s.gpa, 4);
    } catch (e) {
      if (!(e instanceof KvmExit)) throw e;
      outcome = e.exit.ret;
    }
  }, { kind: "vcpu" });
  world.spawn("qemu-disable", () => s.vdev.configWrite(4, 2, 0), { kind: "user" });
  await world.run();
  strictEqual(phase, 1, "the schedule hit the window");
  ok(s.kvm.stats.pfRetries >= 1);
  strictEqual(outcome, -14);
  deepStrictEqual(violations, []);
  strictEqual(s.kvm.stage2.leaves(), 0);
});

Deno.test("KVM_CREATE_VM teardown: deleting a dma-buf slot detaches and drops the buffer", async () => {
  const o = { path: "B" as const, pathB: "pfn-attachment" as const };
  const world = new Kernel({ variants: barShareVariants(o) });
  await world.runTask("qemu", async () => {
    const s = await setupBarShare(world, o);
    await s.vcpu.read(s.gpa, 1);
    const buf = s.exp.dmabuf;
    strictEqual(buf.pfnAttachments.length, 1);
    const refs = buf.refcount;
    await s.kvm.destroy();
    strictEqual(buf.pfnAttachments.length, 0);
    strictEqual(buf.refcount, refs - 1);
    strictEqual(s.kvm.stage2.leaves(), 0);
    strictEqual(s.kvm.destroyed, true);
  });
});
