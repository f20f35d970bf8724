import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { KernelBug, KernelError } from "../errors.ts";
import { GUP_PIN_COUNTING_BIAS } from "../memory/page.ts";
import { Kernel } from "../world.ts";
import { AddressSpace, type VmFile } from "./address_space.ts";
import {
  fixupUserFault,
  FOLL_FORCE,
  FOLL_GET,
  FOLL_LONGTERM,
  FOLL_PCI_P2PDMA,
  FOLL_WRITE,
  getUserPages,
  getUserPagesFast,
  pinUserPages,
  pinUserPagesFast,
  unpinUserPages,
} from "./gup.ts";
import { followPfnmapEnd, followPfnmapStart, remapPfnRange, vmfInsertPfn } from "./memory.ts";
import { MmStruct } from "./mm_struct.ts";
import { MAP_SHARED, PROT_READ } from "./vma.ts";

const PAGE = 4096;

async function expectErrno(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  ok(caught instanceof KernelError, `expected KernelError ${code}, got ${caught}`);
  strictEqual(caught.code, code, caught.message);
  if (re) ok(re.test(caught.message), `${caught.message} !~ ${re}`);
}

Deno.test("gup: pin_user_pages on anonymous memory", async (t) => {
  await t.step("FOLL_WRITE|FOLL_LONGTERM faults pages in and pins them past munmap", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    await w.runTask("rdma", async () => {
      const a = await mm.mmap({ length: 4 * PAGE });
      await mm.write(a + PAGE, new Uint8Array([3]));
      const pages = await pinUserPagesFast(mm, a, 4, FOLL_WRITE | FOLL_LONGTERM);
      strictEqual(pages.length, 4);
      ok(pages.every((p) => p.maybeDmaPinned && p.isAnon));
      strictEqual(
        w.mem.readU8(w.mem.pageToPhys(pages[1]!)),
        3,
        "the pinned page holds the user's data",
      );
      const free = w.mem.freeRamPages;
      await mm.munmap(a, 4 * PAGE);
      strictEqual(w.mem.freeRamPages, free, "pinned pages outlive the mapping");
      ok(pages.every((p) => p.refcount === GUP_PIN_COUNTING_BIAS));
      unpinUserPages(pages);
      strictEqual(w.mem.freeRamPages, free + 4);
      deepStrictEqual(w.check(), []);
    });
  });
  await t.step("read pins of untouched memory pin the zero page without a reference", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: 2 * PAGE });
      const pages = await pinUserPagesFast(mm, a, 2);
      strictEqual(pages[0]!.pfn, mm.zeroPfn);
      strictEqual(pages[0]!.refcount, 1);
      unpinUserPages(pages);
      strictEqual(pages[0]!.refcount, 1);
    });
  });
  await t.step("get_user_pages takes plain references and needs mmap_lock", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: PAGE });
      const [p] = await getUserPagesFast(mm, a, 1, FOLL_WRITE);
      strictEqual(p!.refcount, 2);
      ok(!p!.maybeDmaPinned);
      p!.put();
      let bug: unknown;
      try {
        await getUserPages(mm, a, 1);
      } catch (e) {
        bug = e;
      }
      ok(bug instanceof KernelBug && /mmap_assert_locked/.test(bug.message));
      await mm.mmapLock.readLock();
      const got = await pinUserPages(mm, a, 1);
      mm.mmapLock.readUnlock();
      unpinUserPages(got);
    });
  });
});

Deno.test("gup: error paths", async (t) => {
  await t.step("invalid flag combinations WARN and are -EINVAL", async () => {
    const w = new Kernel({ strict: false });
    const mm = new MmStruct(w);
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: PAGE });
      await expectErrno(
        getUserPagesFast(mm, a, 1, FOLL_LONGTERM),
        "EINVAL",
        /FOLL_LONGTERM without FOLL_PIN/,
      );
      await expectErrno(getUserPagesFast(mm, a, 1, FOLL_GET), "EINVAL", /internal/);
      await expectErrno(
        pinUserPagesFast(mm, a, 1, FOLL_LONGTERM | FOLL_PCI_P2PDMA),
        "EINVAL",
        /FOLL_PCI_P2PDMA/,
      );
      strictEqual(w.bugs.length, 3);
      strictEqual(mm.pgtable.entries, 0, "nothing was faulted in");
    });
    const strict = new Kernel();
    const mm2 = new MmStruct(strict);
    await strict.runTask("t", async () => {
      const a = await mm2.mmap({ length: PAGE });
      let e: unknown;
      try {
        await getUserPagesFast(mm2, a, 1, FOLL_LONGTERM);
      } catch (x) {
        e = x;
      }
      ok(e instanceof KernelBug);
    });
  });
  await t.step(
    "VM_IO|VM_PFNMAP is -EFAULT; holes are -EFAULT; partial success returns the prefix",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      const bar: VmFile = {
        mapping: new AddressSpace(w),
        mmap(vma) {
          remapPfnRange(vma, vma.vmStart, 0x900000, vma.vmEnd - vma.vmStart, vma.vmPageProt);
        },
      };
      await w.runTask("t", async () => {
        const b = await mm.mmap({ length: PAGE, file: bar });
        await expectErrno(pinUserPagesFast(mm, b, 1), "EFAULT", /VM_IO\|VM_PFNMAP/);
        await expectErrno(pinUserPagesFast(mm, 0x1000, 1), "EFAULT", /no VMA/);
        const a = await mm.mmap({ length: 2 * PAGE });
        await mm.munmap(a + PAGE, PAGE);
        const got = await pinUserPagesFast(mm, a, 3, FOLL_WRITE);
        strictEqual(got.length, 1, "i ? i : ret");
        unpinUserPages(got);
      });
    },
  );
  await t.step(
    "FOLL_WRITE on read-only: -EFAULT; FOLL_FORCE on a private mapping COWs",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      await w.runTask("t", async () => {
        const a = await mm.mmap({ length: PAGE, prot: PROT_READ });
        await expectErrno(pinUserPagesFast(mm, a, 1, FOLL_WRITE), "EFAULT", /read-only/);
        const [p] = await pinUserPagesFast(mm, a, 1, FOLL_WRITE | FOLL_FORCE);
        ok(p!.isAnon && p!.pfn !== mm.zeroPfn);
        unpinUserPages([p!]);
        const shared = await mm.mmap({ length: PAGE, prot: PROT_READ, flags: MAP_SHARED | 0x20 });
        await expectErrno(pinUserPagesFast(mm, shared, 1, FOLL_WRITE | FOLL_FORCE), "EFAULT");
      });
    },
  );
  await t.step(
    "fault errors map through vm_fault_to_errno: OOM -ENOMEM, SIGBUS -EFAULT",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      let code = 0x1; // VM_FAULT_OOM
      const f: VmFile = {
        mapping: new AddressSpace(w),
        mmap(vma) {
          vma.vmOps = { fault: () => code };
        },
      };
      await w.runTask("t", async () => {
        const a = await mm.mmap({ length: PAGE, file: f });
        await expectErrno(pinUserPagesFast(mm, a, 1), "ENOMEM");
        code = 0x2; // VM_FAULT_SIGBUS
        await expectErrno(pinUserPagesFast(mm, a, 1), "EFAULT");
        code = 0x10; // VM_FAULT_HWPOISON without FOLL_HWPOISON
        await expectErrno(pinUserPagesFast(mm, a, 1), "EFAULT");
        strictEqual(mm.pgtable.entries, 0);
      });
    },
  );
  await t.step("a PCI P2PDMA page needs FOLL_PCI_P2PDMA (-EREMOTEIO otherwise)", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const pg = w.mem.memremapPages({ type: "pci_p2pdma", start: 0x90_0000_0000n, size: 0x10000n });
    const p2p = w.mem.pfnToPage(pg.startPfn)!;
    p2p.initDeviceRef();
    const f: VmFile = {
      mapping: new AddressSpace(w),
      mmap(vma) {
        vma.vmOps = {
          fault(vmf) {
            p2p.get();
            vmf.page = p2p;
            return 0;
          },
        };
      },
    };
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: PAGE, file: f, flags: MAP_SHARED });
      await expectErrno(pinUserPagesFast(mm, a, 1), "EREMOTEIO", /FOLL_PCI_P2PDMA/);
      const got = await pinUserPagesFast(mm, a, 1, FOLL_PCI_P2PDMA);
      deepStrictEqual(got, [p2p]);
      ok(p2p.maybeDmaPinned);
      unpinUserPages(got);
      await mm.munmap(a, PAGE);
      strictEqual(p2p.refcount, 1);
    });
    throws(() => {
      p2p.put();
      p2p.put();
    }, KernelBug);
  });
});

Deno.test("fixup_user_fault: faults a VM_PFNMAP address in for follow_pfnmap users", async (t) => {
  await t.step(
    "fault in, then follow_pfnmap finds the pfn; -EFAULT for holes and forbidden writes",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      let retried = false;
      const f: VmFile = {
        mapping: new AddressSpace(w),
        mmap(vma) {
          vma.vmFlags |= 0x4000 | 0x400; // VM_IO | VM_PFNMAP
          vma.vmOps = {
            fault(vmf) {
              if (!retried && (vmf.flags & (1 << 2))) {
                retried = true;
                vmf.vma.mm.mmapLock.readUnlock();
                return 0x400; // VM_FAULT_RETRY
              }
              return vmfInsertPfn(vmf.vma, vmf.address, 0xabc00 + vmf.pgoff);
            },
          };
        },
      };
      await w.runTask("kvm", async () => {
        const a = await mm.mmap({ length: 2 * PAGE, file: f });
        const ro = await mm.mmap({ length: PAGE, prot: PROT_READ });
        await mm.mmapLock.readLock();
        const r = await fixupUserFault(mm, a + PAGE, 0, true);
        strictEqual(r.unlocked, true, "the handler dropped mmap_lock once");
        ok(mm.mmapLock.heldByCurrent(), "and it is held again on return");
        const got = followPfnmapStart({ vma: mm.vmaLookup(a)!, address: a + PAGE });
        strictEqual(got.pfn, 0xabc01);
        followPfnmapEnd(got);
        await expectErrno(fixupUserFault(mm, 0x1000, 0), "EFAULT", /no VMA/);
        await expectErrno(fixupUserFault(mm, ro, 1), "EFAULT", /vma_permits_fault/);
        mm.mmapLock.readUnlock();
      });
    },
  );
});
