import { ok, strictEqual, throws } from "node:assert/strict";
import { Kernel, KernelBug } from "@dmalab/kernel";
import { Kvm, KVM_MAX_VCPU_IDS, KVM_MAX_VCPUS } from "./mod.ts";

Deno.test("mmu_invalidate_retry_gfn and its lockless pre-check (include/linux/kvm_host.h)", async (t) => {
  await t.step(
    "a begin without a range yet: the pre-check misses, the locked check WARNs and retries",
    () => {
      const world = new Kernel({ strict: false });
      const kvm = new Kvm(world);
      const seq = kvm.mmuInvalidateSeq;
      kvm.mmuLock.lock();
      kvm.invalidateBegin();
      kvm.mmuLock.unlock();
      strictEqual(kvm.invalidateRetryGfnUnsafe(seq, 5), false, "INVALID_GPA covers no gfn");
      kvm.mmuLock.lock();
      strictEqual(kvm.invalidateRetryGfn(seq, 5), true);
      strictEqual(world.bugs.length, 1);
      strictEqual(world.bugs[0]!.kind, "WARN");
      kvm.invalidateRangeAdd(0, 8);
      kvm.invalidateEnd();
      kvm.mmuLock.unlock();
      strictEqual(world.bugs.length, 1, "a balanced begin/range_add/end is silent");
    },
  );
  await t.step("in-progress range and sequence decide as before", () => {
    const world = new Kernel();
    const kvm = new Kvm(world);
    const seq = kvm.mmuInvalidateSeq;
    kvm.mmuLock.lock();
    kvm.invalidateBegin();
    kvm.invalidateRangeAdd(4, 8);
    ok(kvm.invalidateRetryGfn(seq, 4));
    ok(!kvm.invalidateRetryGfn(seq, 8));
    ok(kvm.invalidateRetryGfnUnsafe(seq, 7));
    kvm.invalidateEnd();
    ok(kvm.invalidateRetryGfn(seq, 100), "the sequence moved");
    kvm.mmuLock.unlock();
  });
  await t.step("kvm_mmu_invalidate_end without a range added is a WARN", () => {
    const world = new Kernel();
    const kvm = new Kvm(world);
    kvm.mmuLock.lock();
    kvm.invalidateBegin();
    throws(() => kvm.invalidateEnd(), (e) => e instanceof KernelBug && e.kind === "WARN");
    kvm.mmuLock.unlock();
  });
});

Deno.test("kvm_vm_ioctl_create_vcpu: id bound and max_vcpus are -EINVAL, a taken id -EEXIST", () => {
  const world = new Kernel();
  const kvm = new Kvm(world);
  throws(() => kvm.createVcpu(KVM_MAX_VCPU_IDS), (e) => (e as { code?: string }).code === "EINVAL");
  kvm.createVcpu(KVM_MAX_VCPU_IDS - 1);
  throws(
    () => kvm.createVcpu(KVM_MAX_VCPU_IDS - 1),
    (e) => (e as { code?: string }).code === "EEXIST",
  );
  for (let i = 0; kvm.vcpus.length < KVM_MAX_VCPUS; i++) kvm.createVcpu(i);
  throws(
    () => kvm.createVcpu(KVM_MAX_VCPUS + 5),
    (e) => (e as { code?: string }).code === "EINVAL",
  );
});
