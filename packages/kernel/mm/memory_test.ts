import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { KernelBug, KernelError } from "../errors.ts";
import { Mutex } from "../locking/mutex.ts";
import { Kernel } from "../world.ts";
import { AddressSpace, type VmFile } from "./address_space.ts";
import { vmfInsertMixed, vmfInsertPfnPmd, vmInsertPage } from "./memory.ts";
import { MmStruct } from "./mm_struct.ts";
import { MmuIntervalNotifier, MmuNotifier } from "./mmu_notifier.ts";
import {
  MAP_PRIVATE,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  VM_FAULT_NOPAGE,
  VM_FAULT_SIGBUS,
  VM_IO,
  VM_MIXEDMAP,
  VM_PFNMAP,
  type Vma,
} from "./vma.ts";

const PAGE = 4096;

function throwsErrno(fn: () => unknown, code: string): void {
  throws(fn, (e: unknown) => e instanceof KernelError && e.code === code);
}

async function rejectsErrno(p: Promise<unknown>, code: string): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  ok(caught instanceof KernelError && caught.code === code, `expected ${code}, got ${caught}`);
}

/** A file whose mmap just records the VMA (and lets the test pick the flags). */
function plainFile(w: Kernel, flags = 0): VmFile & { vma: Vma | null } {
  const f = {
    mapping: new AddressSpace(w),
    vma: null as Vma | null,
    mmap(vma: Vma) {
      vma.vmFlags |= flags;
      f.vma = vma;
    },
  };
  return f;
}

Deno.test("vm_insert_page (p2pmem-style mmap of refcounted pages)", async (t) => {
  await t.step(
    "sets VM_MIXEDMAP, maps the page with a reference; errors leave PTEs alone",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      const page = w.mem.allocPages(0)!;
      const f = plainFile(w);
      await w.runTask("t", async () => {
        const a = await mm.mmap({ length: 2 * PAGE, file: f });
        const vma = f.vma!;
        await mm.mmapLock.writeLock();
        vmInsertPage(vma, a, page);
        ok(vma.vmFlags & VM_MIXEDMAP);
        strictEqual(page.refcount, 2);
        strictEqual(page.mapcount, 1);
        throwsErrno(() => vmInsertPage(vma, a, page), "EBUSY");
        throwsErrno(() => vmInsertPage(vma, a + 4 * PAGE, page), "EFAULT");
        const free = w.mem.allocPages(0)!;
        w.mem.freePages(free, 0);
        throwsErrno(() => vmInsertPage(vma, a + PAGE, free), "EINVAL");
        mm.mmapLock.writeUnlock();
        strictEqual(page.refcount, 2);
        strictEqual(mm.pgtable.entries, 1);
        await mm.munmap(a, 2 * PAGE);
        strictEqual(page.refcount, 1, "the mapping's reference went with the PTE");
      });
    },
  );
  await t.step("a VM_PFNMAP VMA is a BUG", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const f = plainFile(w, VM_PFNMAP | VM_IO);
    const page = w.mem.allocPages(0)!;
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: PAGE, file: f });
      await mm.mmapLock.writeLock();
      throws(() => vmInsertPage(f.vma!, a, page), KernelBug);
      mm.mmapLock.writeUnlock();
    });
  });
});

Deno.test("vmf_insert_mixed / vmf_insert_pfn_pmd rules", async (t) => {
  await t.step("mixed: pfn_valid pfns are refcounted pages, others special", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const f = plainFile(w, VM_MIXEDMAP);
    const page = w.mem.allocPages(0)!;
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: 2 * PAGE, file: f });
      strictEqual(vmfInsertMixed(f.vma!, a, page.pfn), VM_FAULT_NOPAGE);
      strictEqual(vmfInsertMixed(f.vma!, a + PAGE, 0x80_0000_0), VM_FAULT_NOPAGE);
      ok(!mm.translate(a)!.special);
      ok(mm.translate(a + PAGE)!.special);
      strictEqual(page.refcount, 2);
      strictEqual(vmfInsertMixed(f.vma!, a + 8 * PAGE, 1), VM_FAULT_SIGBUS);
    });
  });
  await t.step("pmd: outside the VMA or an unaligned pfn is SIGBUS", async () => {
    const w = new Kernel({ strict: false });
    const mm = new MmStruct(w);
    const f = plainFile(w, VM_PFNMAP | VM_IO);
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: 4 << 20, file: f });
      const al = Math.ceil(a / (2 << 20)) * (2 << 20);
      const vmf = { vma: f.vma!, address: al, realAddress: al, flags: 0, pgoff: 0, page: null };
      strictEqual(vmfInsertPfnPmd(vmf, 0x201, false), VM_FAULT_SIGBUS);
      ok(w.bugs.some((b) => b.summary.includes("not PMD aligned")));
      strictEqual(vmfInsertPfnPmd({ ...vmf, address: a - PAGE }, 0x200, false), VM_FAULT_SIGBUS);
      strictEqual(vmfInsertPfnPmd(vmf, 0x200, false), VM_FAULT_NOPAGE);
      strictEqual(vmfInsertPfnPmd(vmf, 0x400, false), VM_FAULT_NOPAGE, "already mapped");
      strictEqual(mm.translate(al + PAGE)!.pfn, 0x201);
      strictEqual(
        mm.translate(al)!.writable,
        true,
        "vm_page_prot of a shared writable VM_PFNMAP VMA",
      );
    });
  });
  await t.step("zap_vma_ptes only on VM_PFNMAP, inside the VMA", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: PAGE });
      await rejectsErrno(mm.zapVmaPtes(mm.vmaLookup(a)!, a, PAGE), "EINVAL");
    });
  });
});

Deno.test("mm lifetime and mremap MREMAP_FIXED", async (t) => {
  await t.step("registering on a dead mm is a BUG; mmput below zero is a BUG", async () => {
    const w = new Kernel({ strict: false });
    const mm = new MmStruct(w);
    await w.runTask("t", async () => {
      await mm.put();
      const sub = new MmuNotifier({});
      await rejectsErrno(sub.register(mm), "EINVAL");
      ok(w.bugs.some((b) => b.summary.includes("mm_users")));
      await mm.put();
      ok(w.bugs.some((b) => b.summary.includes("mmput")));
      strictEqual(mm.getNotZero(), false);
    });
  });
  await t.step("MREMAP_FIXED moves to the given address; needs MAYMOVE; no overlap", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    await w.runTask("t", async () => {
      const a = await mm.mmap({ length: 2 * PAGE, flags: MAP_PRIVATE | 0x20 });
      await mm.write(a, new Uint8Array([4]));
      const target = 0x5000_0000_0000;
      await rejectsErrno(mm.mremap(a, 2 * PAGE, 2 * PAGE, MREMAP_FIXED, target), "EINVAL");
      await rejectsErrno(
        mm.mremap(a, 2 * PAGE, 2 * PAGE, MREMAP_FIXED | MREMAP_MAYMOVE, a + PAGE),
        "EINVAL",
      );
      strictEqual(
        await mm.mremap(a, 2 * PAGE, 2 * PAGE, MREMAP_FIXED | MREMAP_MAYMOVE, target),
        target,
      );
      deepStrictEqual([...await mm.read(target, 1)], [4]);
      strictEqual(mm.vmas.length, 1);
    });
  });
});

Deno.test("lockdep sees read_begin under a lock the invalidate callback takes", async () => {
  const w = new Kernel();
  const mm = new MmStruct(w);
  const userLock = new Mutex(w, "user_lock");
  let err: unknown;
  await w.runTask("t", async () => {
    const a = await mm.mmap({ length: PAGE });
    const sub = await MmuIntervalNotifier.insert(mm, a, PAGE, {
      invalidate: async (s, _r, seq) => {
        await userLock.lock();
        s.setSeq(seq);
        userLock.unlock();
        return true;
      },
    });
    await mm.munmap(a, PAGE); // records range_start_map -> user_lock
    await userLock.lock();
    try {
      await sub.readBegin(); // user_lock -> range_start_map: the inversion
    } catch (e) {
      err = e;
    } finally {
      userLock.unlock();
    }
  });
  ok(err instanceof KernelBug && err.kind === "lockdep", `${err}`);
  ok(w.dmesg.text().includes("possible circular locking dependency detected"));
});
