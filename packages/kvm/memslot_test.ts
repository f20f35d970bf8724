import { rejects, strictEqual } from "node:assert/strict";
import { Kernel, MmStruct } from "@dmalab/kernel";
import {
  createVm,
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_MEM_VFIO_DMABUF,
  KVM_USER_MEM_SLOTS,
  type KvmUserspaceMemoryRegion2,
} from "./mod.ts";

const MB = 1 << 20;

Deno.test("KVM_SET_USER_MEMORY_REGION2 validation follows __kvm_set_memory_region", async (t) => {
  const world = new Kernel({ variants: { "kvm.vfio-dmabuf": "rfc" } });
  const mm = new MmStruct(world, "qemu");
  await world.runTask("qemu", async () => {
    const { kvm } = await createVm(world, { mm });
    const hva = await mm.mmap({ length: 4 * MB });
    const r = (o: Partial<KvmUserspaceMemoryRegion2>): KvmUserspaceMemoryRegion2 => ({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0,
      memorySize: 2 * MB,
      userspaceAddr: hva,
      ...o,
    });
    const code = (e: unknown, c: string) => (e as { code?: string }).code === c;
    await t.step("slot id beyond KVM_USER_MEM_SLOTS is -EINVAL", async () => {
      await rejects(
        kvm.setUserMemoryRegion2(r({ slot: KVM_USER_MEM_SLOTS })),
        (e) => code(e, "EINVAL"),
      );
    });
    await t.step("unknown and private flags on a default VM are -EINVAL", async () => {
      await rejects(kvm.setUserMemoryRegion2(r({ flags: 1 << 7 })), (e) => code(e, "EINVAL"));
      await rejects(
        kvm.setUserMemoryRegion2(r({ flags: KVM_MEM_GUEST_MEMFD })),
        (e) => code(e, "EINVAL"),
      );
      await rejects(
        kvm.setUserMemoryRegion2(r({ flags: KVM_MEM_VFIO_DMABUF })),
        (e) => code(e, "EINVAL"),
      );
    });
    await t.step("unaligned size, gpa or hva are -EINVAL", async () => {
      await rejects(kvm.setUserMemoryRegion2(r({ memorySize: 4097 })), (e) => code(e, "EINVAL"));
      await rejects(
        kvm.setUserMemoryRegion2(r({ guestPhysAddr: 0x800 })),
        (e) => code(e, "EINVAL"),
      );
      await rejects(
        kvm.setUserMemoryRegion2(r({ userspaceAddr: hva + 1 })),
        (e) => code(e, "EINVAL"),
      );
    });
    await t.step("address space 1 without SMM is -EINVAL", async () => {
      await rejects(kvm.setUserMemoryRegion2(r({ slot: 1 << 16 })), (e) => code(e, "EINVAL"));
    });
    await t.step("deleting a missing slot is -EINVAL", async () => {
      await rejects(kvm.setUserMemoryRegion2(r({ memorySize: 0 })), (e) => code(e, "EINVAL"));
    });
    await t.step("create, overlap -EEXIST, resize -EINVAL, READONLY toggle -EINVAL", async () => {
      await kvm.setUserMemoryRegion2(r({}));
      strictEqual(kvm.memslots.length, 1);
      await rejects(
        kvm.setUserMemoryRegion2(r({ slot: 1, guestPhysAddr: MB, userspaceAddr: hva + 2 * MB })),
        (e) => code(e, "EEXIST"),
      );
      await rejects(kvm.setUserMemoryRegion2(r({ memorySize: 4 * MB })), (e) => code(e, "EINVAL"));
      await rejects(
        kvm.setUserMemoryRegion2(r({ flags: KVM_MEM_READONLY })),
        (e) => code(e, "EINVAL"),
      );
    });
    await t.step(
      "flags-only change and move are accepted; a moved slot's leaves are zapped",
      async () => {
        await kvm.setUserMemoryRegion2(r({ flags: KVM_MEM_LOG_DIRTY_PAGES }));
        strictEqual(kvm.slot(0)!.dirtyLogging, true);
        const v = kvm.createVcpu();
        await v.write(0x10, new Uint8Array([9]));
        strictEqual(kvm.stage2.leaves() > 0, true);
        await kvm.setUserMemoryRegion2(
          r({ flags: KVM_MEM_LOG_DIRTY_PAGES, guestPhysAddr: 8 * MB }),
        );
        strictEqual(kvm.stage2.leaves(), 0);
        strictEqual((await v.read(8 * MB + 0x10, 1))[0], 9);
      },
    );
    await t.step("delete drops the slot and its pages count", async () => {
      await kvm.setUserMemoryRegion2(r({ memorySize: 0, guestPhysAddr: 8 * MB }));
      strictEqual(kvm.memslots.length, 0);
      strictEqual(kvm.nrMemslotPages, 0);
    });
  });
});

Deno.test("private VM: VFIO_DMABUF and GUEST_MEMFD exclusive, no dirty logging, no READONLY", async () => {
  const world = new Kernel({ variants: { "kvm.vfio-dmabuf": "rfc" } });
  const mm = new MmStruct(world, "qemu");
  await world.runTask("qemu", async () => {
    const { kvm } = await createVm(world, { mm, type: "sw-protected" });
    const base = { slot: 0, guestPhysAddr: 0, memorySize: 4096, userspaceAddr: 0 };
    const isInval = (e: unknown) => (e as { code?: string }).code === "EINVAL";
    await rejects(
      kvm.setUserMemoryRegion2({ ...base, flags: KVM_MEM_VFIO_DMABUF | KVM_MEM_GUEST_MEMFD }),
      isInval,
    );
    await rejects(
      kvm.setUserMemoryRegion2({ ...base, flags: KVM_MEM_VFIO_DMABUF | KVM_MEM_LOG_DIRTY_PAGES }),
      isInval,
    );
    await rejects(
      kvm.setUserMemoryRegion2({ ...base, flags: KVM_MEM_VFIO_DMABUF | KVM_MEM_READONLY }),
      isInval,
    );
    // Valid flags, but guest_memfd does not name an open fd: dma_buf_get fails.
    await rejects(
      kvm.setUserMemoryRegion2({ ...base, flags: KVM_MEM_VFIO_DMABUF, guestMemfd: 77 }),
      (e) => (e as { code?: string }).code === "EBADF",
    );
    strictEqual(kvm.memslots.length, 0);
  });
});
