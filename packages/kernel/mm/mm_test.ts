import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { KernelBug, KernelError } from "../errors.ts";
import { Kernel } from "../world.ts";
import { AddressSpace, type VmFile } from "./address_space.ts";
import {
  followPfnmapEnd,
  followPfnmapStart,
  remapPfnRange,
  vmfInsertPfn,
  vmfInsertPfnPmd,
} from "./memory.ts";
import { MmStruct } from "./mm_struct.ts";
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_PRIVATE,
  MAP_SHARED,
  MREMAP_MAYMOVE,
  PROT_READ,
  PROT_WRITE,
  VM_DONTDUMP,
  VM_DONTEXPAND,
  VM_FAULT_NOPAGE,
  VM_FAULT_SIGBUS,
  VM_IO,
  VM_PFNMAP,
  type Vma,
  type VmOperations,
} from "./vma.ts";

const PAGE = 4096;

async function expectErrno(p: Promise<unknown>, code: string, re?: RegExp): Promise<KernelError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  ok(caught instanceof KernelError, `expected KernelError ${code}, got ${caught}`);
  strictEqual(caught.code, code, caught.message);
  if (re) ok(re.test(caught.message), `${caught.message} !~ ${re}`);
  return caught;
}

/** A device file whose mmap installs a BAR with remap_pfn_range (like vfio-pci's old mmap path). */
function barFile(w: Kernel, bar: bigint): VmFile & { refs: number } {
  const mapping = new AddressSpace(w, "bar");
  const f = {
    mapping,
    name: "bar",
    refs: 1,
    mmap(vma: Vma) {
      remapPfnRange(
        vma,
        vma.vmStart,
        Number(bar / 4096n) + vma.vmPgoff,
        vma.vmEnd - vma.vmStart,
        vma.vmPageProt,
      );
    },
    get() {
      f.refs++;
    },
    put() {
      f.refs--;
    },
  };
  return f;
}

/** A device file that maps pfns lazily from its fault handler (like vfio-pci today). */
function faultFile(w: Kernel, pfnOf: (pgoff: number) => number, extra: Partial<VmOperations> = {}) {
  const mapping = new AddressSpace(w, "dev");
  const faults: number[] = [];
  const ops: VmOperations = {
    name: "dev",
    fault(vmf) {
      faults.push(vmf.pgoff);
      return vmfInsertPfn(vmf.vma, vmf.address, pfnOf(vmf.pgoff));
    },
    ...extra,
  };
  const file: VmFile = {
    mapping,
    name: "dev",
    mmap(vma) {
      vma.vmFlags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP;
      vma.vmOps = ops;
    },
  };
  return { file, mapping, faults };
}

Deno.test("mm: anonymous memory", async (t) => {
  await t.step("mmap, store, load, munmap; the zero page backs reads", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w, "app");
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: 3 * PAGE });
      strictEqual(a % PAGE, 0);
      deepStrictEqual([...await mm.read(a + PAGE, 4)], [0, 0, 0, 0]);
      strictEqual(mm.translate(a + PAGE)!.pfn, mm.zeroPfn);
      strictEqual(mm.translate(a + PAGE)!.writable, false);
      await mm.write(a + PAGE - 2, new Uint8Array([1, 2, 3, 4]));
      deepStrictEqual([...await mm.read(a + PAGE - 2, 4)], [1, 2, 3, 4]);
      ok(mm.translate(a + PAGE)!.pfn !== mm.zeroPfn, "the write replaced the zero page (COW)");
      const free = w.mem.freeRamPages;
      await mm.munmap(a, 3 * PAGE);
      strictEqual(w.mem.freeRamPages, free + 2, "both anon pages went back to the buddy allocator");
      strictEqual(mm.vmas.length, 0);
      strictEqual(mm.pgtable.entries, 0);
      deepStrictEqual(w.check(), []);
    });
  });
  await t.step(
    "world.check() catches a mapped page whose references were dropped behind mm's back",
    async () => {
      const w = new Kernel({ strict: false });
      const mm = new MmStruct(w, "app");
      await w.runTask("app", async () => {
        const a = await mm.mmap({ length: PAGE });
        await mm.write(a, new Uint8Array([1]));
        deepStrictEqual(w.check(), []);
        const page = w.mem.pfnToPage(mm.translate(a)!.pfn)!;
        page.put(); // a driver's stray put_page: the page is freed while still mapped
        const v = w.check();
        ok(v.some((m) => m.startsWith(`mm:${mm.id}: app: PTE at`)), v.join("\n"));
      });
    },
  );
  await t.step(
    "SIGSEGV outside a VMA and on a protection violation is -EFAULT; state intact",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w, "app");
      await w.runTask("app", async () => {
        const a = await mm.mmap({ length: PAGE, prot: PROT_READ });
        await expectErrno(mm.read(a + 2 * PAGE, 1), "EFAULT", /SIGSEGV.*SEGV_MAPERR/);
        await expectErrno(mm.write(a, new Uint8Array([1])), "EFAULT", /SIGSEGV.*SEGV_ACCERR/);
        deepStrictEqual([...await mm.read(a, 1)], [0]);
        strictEqual(mm.vmas.length, 1);
        ok(!mm.mmapLock.sem.isLocked(), "mmap_lock released on the error path");
      });
    },
  );
  await t.step("MAP_SHARED|MAP_ANONYMOUS is shmem: data survives partial munmap", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: 2 * PAGE, flags: MAP_SHARED | MAP_ANONYMOUS });
      await mm.write(a + PAGE, new Uint8Array([9]));
      await mm.munmap(a, PAGE);
      deepStrictEqual([...await mm.read(a + PAGE, 1)], [9]);
      await expectErrno(mm.read(a, 1), "EFAULT");
    });
  });
});

Deno.test("mm: mmap/munmap/mremap rules", async (t) => {
  await t.step("mmap errors leave the layout unchanged", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: PAGE });
      const before = mm.maps();
      await expectErrno(mm.mmap({ length: 0 }), "EINVAL");
      await expectErrno(mm.mmap({ length: PAGE, offset: 12 }), "EINVAL");
      await expectErrno(mm.mmap({ length: PAGE, flags: MAP_ANONYMOUS }), "EINVAL");
      await expectErrno(mm.mmap({ length: PAGE, flags: MAP_PRIVATE }), "EBADF");
      const noMmap: VmFile = { mapping: new AddressSpace(w), name: "ro" };
      await expectErrno(mm.mmap({ length: PAGE, file: noMmap }), "ENODEV");
      const ro: VmFile = { mapping: new AddressSpace(w), name: "ro", writable: false, mmap() {} };
      await expectErrno(
        mm.mmap({ length: PAGE, file: ro, prot: PROT_READ | PROT_WRITE }),
        "EACCES",
      );
      await expectErrno(
        mm.mmap({
          addr: a,
          length: PAGE,
          flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
        }),
        "EEXIST",
      );
      await expectErrno(
        mm.mmap({ addr: a + 1, length: PAGE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED }),
        "EINVAL",
      );
      const failing: VmFile = {
        mapping: new AddressSpace(w),
        mmap() {
          throw new KernelError("EINVAL", "driver refuses");
        },
      };
      await expectErrno(mm.mmap({ length: PAGE, file: failing }), "EINVAL", /driver refuses/);
      strictEqual(mm.maps(), before);
      await expectErrno(mm.munmap(a + 1, PAGE), "EINVAL");
      await expectErrno(mm.munmap(a, 0), "EINVAL");
      strictEqual(mm.maps(), before);
    });
  });
  await t.step("MAP_FIXED replaces; munmap in the middle splits with the right pgoff", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const opened: number[] = [];
    const { file } = faultFile(w, (pg) => 0x100 + pg, { open: (v) => opened.push(v.vmPgoff) });
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: 4 * PAGE, file, offset: 8 * PAGE });
      await mm.munmap(a + PAGE, PAGE);
      deepStrictEqual(mm.vmas.map((v) => [v.vmStart - a, v.vmEnd - a, v.vmPgoff]), [
        [0, PAGE, 8],
        [2 * PAGE, 4 * PAGE, 10],
      ]);
      deepStrictEqual(
        opened,
        [8, 10],
        "vm_ops->open ran for both split-off VMAs (new_below, then above)",
      );
      strictEqual(file.mapping.vmas.length, 2);
      strictEqual((await mm.read(a + 2 * PAGE, 1)).length, 1);
      strictEqual(mm.translate(a + 2 * PAGE)!.pfn, 0x100 + 10);
      const b = await mm.mmap({
        addr: a,
        length: PAGE,
        flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
      });
      strictEqual(b, a);
      ok(mm.vmaLookup(a)!.isAnonymous);
    });
  });
  await t.step("vm_ops->may_split refuses: munmap fails and nothing changes", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const { file } = faultFile(w, (pg) => pg, { maySplit: () => -22 });
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: 4 * PAGE, file });
      await mm.read(a + 3 * PAGE, 1);
      const before = mm.maps();
      await expectErrno(mm.munmap(a + PAGE, PAGE), "EINVAL", /may_split/);
      strictEqual(mm.maps(), before);
      ok(mm.translate(a + 3 * PAGE), "PTEs untouched");
      await mm.munmap(a, 4 * PAGE);
      strictEqual(mm.vmas.length, 0);
    });
  });
  await t.step("mprotect: drops write in PTEs at once, splits, and checks VM_MAY*", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const events: string[] = [];
    const { MmuNotifier } = await import("./mmu_notifier.ts");
    const sub = new MmuNotifier({ invalidateRangeStart: (_s, r) => void events.push(r.event) });
    await w.runTask("app", async () => {
      await sub.register(mm);
      const a = await mm.mmap({ length: 3 * PAGE });
      await mm.write(a + PAGE, new Uint8Array([1]));
      await mm.mprotect(a + PAGE, PAGE, PROT_READ);
      deepStrictEqual(mm.vmas.map((v) => (v.vmEnd - v.vmStart) / PAGE), [1, 1, 1]);
      strictEqual(mm.translate(a + PAGE)!.writable, false);
      deepStrictEqual(events, ["protection_vma"]);
      await expectErrno(mm.write(a + PAGE, new Uint8Array([2])), "EFAULT", /SEGV_ACCERR/);
      deepStrictEqual([...await mm.read(a + PAGE, 1)], [1]);
      await mm.mprotect(a + PAGE, PAGE, PROT_READ | PROT_WRITE);
      strictEqual(
        mm.translate(a + PAGE)!.writable,
        true,
        "an exclusive anonymous page keeps its write bit",
      );
      await mm.write(a + PAGE, new Uint8Array([2]));
      // Errors: nothing changes.
      const before = mm.maps();
      await expectErrno(mm.mprotect(a + 1, PAGE, PROT_READ), "EINVAL");
      await expectErrno(mm.mprotect(a, PAGE, 0x40), "EINVAL");
      await expectErrno(mm.mprotect(a, 4 * PAGE, PROT_READ), "ENOMEM");
      strictEqual(mm.maps(), before);
      strictEqual(mm.translate(a + PAGE)!.writable, true);
      const ro: VmFile = { mapping: new AddressSpace(w), writable: false, mmap() {} };
      const r = await mm.mmap({ length: PAGE, file: ro, prot: PROT_READ, flags: MAP_SHARED });
      const before2 = mm.maps();
      await expectErrno(mm.mprotect(r, PAGE, PROT_READ | PROT_WRITE), "EACCES");
      strictEqual(mm.maps(), before2);
    });
  });
  await t.step("mremap: shrink, grow in place, move keeps data, PFNMAP cannot grow", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: 2 * PAGE });
      await mm.write(a, new Uint8Array([5]));
      strictEqual(await mm.mremap(a, 2 * PAGE, PAGE), a);
      strictEqual(mm.vmas[0]!.vmEnd, a + PAGE);
      strictEqual(await mm.mremap(a, PAGE, 2 * PAGE), a, "grows in place into the free gap");
      await mm.mmap({
        addr: a + 2 * PAGE,
        length: PAGE,
        flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
      });
      await expectErrno(mm.mremap(a, 2 * PAGE, 4 * PAGE), "ENOMEM");
      const b = await mm.mremap(a, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE);
      ok(b !== a);
      deepStrictEqual([...await mm.read(b, 1)], [5]);
      await expectErrno(mm.read(a, 1), "EFAULT");
      await expectErrno(mm.mremap(a + 5 * PAGE * 1000, PAGE, PAGE), "EFAULT");
      const { file } = faultFile(w, (pg) => pg);
      const c = await mm.mmap({ length: PAGE, file });
      await expectErrno(mm.mremap(c, PAGE, 2 * PAGE, MREMAP_MAYMOVE), "EFAULT", /VM_DONTEXPAND/);
      await expectErrno(mm.mremap(c, PAGE, PAGE, 99), "EINVAL");
    });
  });
});

Deno.test("mm: remap_pfn_range and follow_pfnmap", async (t) => {
  await t.step("a BAR mapped with remap_pfn_range reads the BAR's bytes", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const bar = 0x80_0000_0000n;
    w.mem.registerMmio({ name: "BAR0", start: bar, size: 1n << 20n });
    w.mem.write(bar + 0x1004n, new Uint8Array([0xab]));
    const file = barFile(w, bar);
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: 4 * PAGE, file, offset: PAGE });
      const vma = mm.vmaLookup(a)!;
      strictEqual(
        vma.vmFlags & (VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP),
        VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP,
      );
      deepStrictEqual([...await mm.read(a + 4, 1)], [0xab]);
      await mm.write(a + 8, new Uint8Array([0xcd]));
      strictEqual(w.mem.readU8(bar + 0x1008n), 0xcd);
      strictEqual(file.refs, 2, "the VMA holds a file reference");
      await mm.mmapLock.readLock();
      const r = followPfnmapStart({ vma, address: a + PAGE });
      strictEqual(r.pfn, Number(bar / 4096n) + 2);
      ok(r.special && r.writable);
      ok(w.sched.current!.atomic, "the PTE lock is held until follow_pfnmap_end");
      followPfnmapEnd(r);
      ok(!w.sched.current!.atomic);
      mm.mmapLock.readUnlock();
      await mm.munmap(a, 4 * PAGE);
      strictEqual(file.refs, 1);
    });
  });
  await t.step(
    "follow_pfnmap_start: -EINVAL for non-PFNMAP VMAs and holes; BUG without mmap_lock",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      const { file } = faultFile(w, (pg) => 0x5000 + pg);
      await w.runTask("app", async () => {
        const anon = await mm.mmap({ length: PAGE });
        const dev = await mm.mmap({ length: 2 * PAGE, file });
        await mm.mmapLock.readLock();
        await expectErrno(
          Promise.resolve().then(() =>
            followPfnmapStart({ vma: mm.vmaLookup(anon)!, address: anon })
          ),
          "EINVAL",
          /not VM_IO\|VM_PFNMAP/,
        );
        await expectErrno(
          Promise.resolve().then(() =>
            followPfnmapStart({ vma: mm.vmaLookup(dev)!, address: dev })
          ),
          "EINVAL",
          /no PTE/,
        );
        await expectErrno(
          Promise.resolve().then(() =>
            followPfnmapStart({ vma: mm.vmaLookup(dev)!, address: dev + 8 * PAGE })
          ),
          "EINVAL",
          /outside/,
        );
        ok(!w.sched.current!.atomic, "no lock leaked on error paths");
        mm.mmapLock.readUnlock();
        throws(() => followPfnmapStart({ vma: mm.vmaLookup(dev)!, address: dev }), KernelBug);
        // The file's i_mmap_rwsem is as good as mmap_lock (pfnmap_lockdep_assert).
        const vma = mm.vmaLookup(dev)!;
        await mm.read(dev, 1);
        await vma.mapping!.iMmapRwsem.downRead();
        const r = followPfnmapStart({ vma, address: dev });
        strictEqual(r.pfn, 0x5000);
        followPfnmapEnd(r);
        vma.mapping!.iMmapRwsem.upRead();
      });
    },
  );
  await t.step(
    "remap_pfn_range rules: COW mappings whole only; an existing PTE is -EACCES",
    async () => {
      const w = new Kernel({ strict: false });
      const mm = new MmStruct(w);
      await w.runTask("app", async () => {
        let mode = "partial";
        const f: VmFile = {
          mapping: new AddressSpace(w),
          mmap(vma) {
            if (mode === "partial") remapPfnRange(vma, vma.vmStart, 0x9000, PAGE, vma.vmPageProt);
            else {
              remapPfnRange(vma, vma.vmStart, 0x9000, PAGE, vma.vmPageProt);
              remapPfnRange(vma, vma.vmStart, 0x9000, 2 * PAGE, vma.vmPageProt);
            }
          },
        };
        await expectErrno(
          mm.mmap({ length: 2 * PAGE, file: f, flags: MAP_PRIVATE }),
          "EINVAL",
          /COW mapping/,
        );
        const whole = await mm.mmap({ length: PAGE, file: f, flags: MAP_PRIVATE });
        strictEqual(mm.vmaLookup(whole)!.vmPgoff, 0x9000, "COW remap sets vm_pgoff = pfn");
        mode = "twice";
        await expectErrno(mm.mmap({ length: 2 * PAGE, file: f }), "EACCES");
        ok(w.bugs.some((b) => b.summary.includes("remap_pfn_range: PTE")));
        strictEqual(mm.vmas.length, 1, "the failed mmap left no VMA");
        strictEqual(mm.pgtable.entries, 1, "and no PTEs");
      });
    },
  );
  await t.step("vmf_insert_pfn BUG_ONs: a VMA without VM_PFNMAP|VM_MIXEDMAP", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const f: VmFile = {
      mapping: new AddressSpace(w),
      mmap(vma) {
        vma.vmOps = { fault: (vmf) => vmfInsertPfn(vmf.vma, vmf.address, 0x42) };
      },
    };
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: PAGE, file: f });
      await rejects(
        mm.read(a, 1),
        (e: unknown) => e instanceof KernelBug && /VM_PFNMAP\|VM_MIXEDMAP/.test(e.message),
      );
    });
  });
});

Deno.test("mm: faults through vm_ops", async (t) => {
  await t.step(
    "unmap_mapping_range zaps every VMA mapping the range; the next access refaults",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      let base = 0x1000;
      const { file, mapping, faults } = faultFile(w, (pg) => base + pg);
      await w.runTask("app", async () => {
        const a = await mm.mmap({ length: 4 * PAGE, file });
        const b = await mm.mmap({ length: 2 * PAGE, file, offset: 2 * PAGE });
        for (let i = 0; i < 4; i++) await mm.read(a + i * PAGE, 1);
        await mm.read(b, 1);
        strictEqual(mm.translate(b)!.pfn, 0x1002);
        base = 0x2000;
        await mapping.unmapMappingRange(2 * PAGE, 2 * PAGE);
        ok(mm.translate(a + PAGE), "outside the range stays");
        strictEqual(mm.translate(a + 2 * PAGE), null);
        strictEqual(mm.translate(b), null, "the second VMA of the same file range is zapped too");
        await mm.read(b, 1);
        strictEqual(mm.translate(b)!.pfn, 0x2002);
        deepStrictEqual(faults, [0, 1, 2, 3, 2, 2]);
      });
    },
  );
  await t.step(
    "VM_FAULT_SIGBUS is -EFAULT naming SIGBUS; a file without vm_ops faults SIGBUS",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      const sigbus: VmFile = {
        mapping: new AddressSpace(w),
        mmap(vma) {
          vma.vmOps = { fault: () => VM_FAULT_SIGBUS };
        },
      };
      const noOps: VmFile = { mapping: new AddressSpace(w), mmap() {} };
      await w.runTask("app", async () => {
        const a = await mm.mmap({ length: PAGE, file: sigbus });
        await expectErrno(mm.read(a, 1), "EFAULT", /SIGBUS/);
        const b = await mm.mmap({ length: PAGE, file: noOps });
        await expectErrno(mm.read(b, 1), "EFAULT", /SIGBUS/);
        strictEqual(mm.pgtable.entries, 0);
      });
    },
  );
  await t.step("VM_FAULT_RETRY drops mmap_lock and retries with FAULT_FLAG_TRIED", async () => {
    const w = new Kernel();
    const mm = new MmStruct(w);
    const flags: number[] = [];
    const f: VmFile = {
      mapping: new AddressSpace(w),
      mmap(vma) {
        vma.vmFlags |= VM_PFNMAP | VM_IO;
        vma.vmOps = {
          fault(vmf) {
            flags.push(vmf.flags);
            if (flags.length === 1) {
              vma.mm.mmapLock.readUnlock();
              return 0x400; // VM_FAULT_RETRY
            }
            return vmfInsertPfn(vmf.vma, vmf.address, 0x77);
          },
        };
      },
    };
    await w.runTask("app", async () => {
      const a = await mm.mmap({ length: PAGE, file: f });
      await mm.read(a, 1);
      strictEqual(flags.length, 2);
      ok((flags[1]! & (1 << 5)) !== 0, "FAULT_FLAG_TRIED on the retry");
      ok(!mm.mmapLock.sem.isLocked());
    });
  });
  await t.step(
    "private file mapping: a write makes an anonymous COW copy; even_cows decides its fate",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      const filePage = w.mem.allocPages(0)!;
      w.mem.write(w.mem.pageToPhys(filePage), new Uint8Array([7, 7]));
      const mapping = new AddressSpace(w, "file");
      const f: VmFile = {
        mapping,
        mmap(vma) {
          vma.vmOps = {
            fault(vmf) {
              filePage.get();
              vmf.page = filePage;
              return 0;
            },
          };
        },
      };
      await w.runTask("app", async () => {
        const a = await mm.mmap({ length: PAGE, file: f, flags: MAP_PRIVATE });
        deepStrictEqual([...await mm.read(a, 2)], [7, 7]);
        strictEqual(mm.translate(a)!.pfn, filePage.pfn);
        await mm.write(a, new Uint8Array([1]));
        ok(mm.translate(a)!.pfn !== filePage.pfn);
        deepStrictEqual([...await mm.read(a, 2)], [1, 7]);
        deepStrictEqual(
          [...w.mem.read(w.mem.pageToPhys(filePage), 2)],
          [7, 7],
          "the file page is untouched",
        );
        strictEqual(filePage.refcount, 1, "the mapping's reference on the file page was dropped");
        await mapping.unmapMappingRange(0, 0, false);
        ok(mm.translate(a), "truncate-style unmap keeps private COW pages");
        await mapping.unmapMappingRange(0, 0, true);
        strictEqual(mm.translate(a), null);
      });
    },
  );
  await t.step(
    "huge_fault maps 2 MiB with vmf_insert_pfn_pmd; a partial zap drops the whole entry",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      const { file } = faultFile(w, (pg) => 0x40000 + pg, {
        hugeFault: (vmf) => vmfInsertPfnPmd(vmf, 0x40000 + vmf.pgoff, true),
      });
      await w.runTask("app", async () => {
        const a = await mm.mmap({ length: 4 << 20, file });
        const al = Math.ceil(a / (2 << 20)) * (2 << 20);
        await mm.read(al + 5 * PAGE, 1);
        const pte = mm.translate(al + 5 * PAGE)!;
        ok(pte.huge);
        strictEqual(pte.pfn, 0x40000 + (al - a) / PAGE + 5);
        strictEqual(mm.pgtable.entries, 1);
        await mm.vmaLookup(a)!.mapping!.unmapMappingRange((al - a) + PAGE, PAGE);
        strictEqual(mm.translate(al + 5 * PAGE), null);
        strictEqual(mm.pgtable.entries, 0);
        strictEqual(VM_FAULT_NOPAGE, 0x100);
        // Refault huge, then munmap one page inside the block: the split drops the PMD and
        // later faults fall back to 4 KiB entries (the block no longer fits one VMA).
        await mm.read(al, 1);
        ok(mm.translate(al)!.huge);
        await mm.munmap(al + 3 * PAGE, PAGE);
        strictEqual(mm.translate(al), null);
        await mm.read(al, 1);
        const small = mm.translate(al)!;
        ok(!small.huge);
        strictEqual(small.pfn, 0x40000 + (al - a) / PAGE);
        await expectErrno(mm.read(al + 3 * PAGE, 1), "EFAULT");
        deepStrictEqual(w.check(), []);
      });
    },
  );
  await t.step(
    "mm teardown closes VMAs, drops file references and frees anonymous pages",
    async () => {
      const w = new Kernel();
      const mm = new MmStruct(w);
      const file = barFile(w, 0x90_0000_0000n);
      const free = w.mem.freeRamPages;
      await w.runTask("app", async () => {
        await mm.mmap({ length: PAGE, file });
        const a = await mm.mmap({ length: 2 * PAGE });
        await mm.write(a, new Uint8Array(2 * PAGE).fill(1));
        await mm.put();
      });
      ok(mm.dead);
      strictEqual(file.refs, 1);
      strictEqual(w.mem.freeRamPages, free, "every anonymous page went back");
      await expectErrno(w.runTask("again", () => mm.mmap({ length: PAGE })), "EINVAL");
    },
  );
});
