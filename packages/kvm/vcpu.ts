/**
 * DOC: vCPUs, guest memory accesses and stage-2 faults
 *
 * A vCPU reads and writes guest physical memory. Each page of an access is
 * translated by the stage-2 table; a miss (or a write to a read-only leaf)
 * is an EPT violation handled as arch/x86/kvm/mmu/mmu.c does for the TDP
 * MMU (`kvm_tdp_page_fault` -> `kvm_mmu_faultin_pfn` -> `kvm_tdp_mmu_map`):
 *
 * 1. no memslot: emulated MMIO, an exit to user space (`KVM_EXIT_MMIO`);
 *    a write to a `KVM_MEM_READONLY` slot exits the same way;
 * 2. snapshot `mmu_invalidate_seq`; an invalidation in progress over the
 *    gfn (the lockless pre-check) means retry;
 * 3. the slot's backing resolves the pfn (may sleep);
 * 4. under `mmu_lock`: stale (sequence moved, range in progress, slot
 *    invalid) means retry, else install a leaf at the largest level the
 *    host mapping, the slot's alignment and the table allow.
 *
 * A pfn that cannot be had ends the access: `KVM_PFN_ERR_FAULT` becomes
 * `KVM_EXIT_MEMORY_FAULT` with `-EFAULT` from `KVM_RUN`
 * (`kvm_handle_error_pfn` / `kvm_mmu_prepare_memory_fault_exit`), the RFC's
 * dma-buf slot returns `-EIO`. Once a leaf is present the access goes to
 * the host physical address in the same step, so it can only ever see what
 * the leaf pointed at when it was read.
 *
 * Locking: `read`/`write` sleep (fault handling); the per-page translate
 * and copy is one scheduling step.
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import {
  KVM_EXIT_MEMORY_FAULT,
  KVM_EXIT_MMIO,
  PAGE_SIZE,
  pagesPerHpage,
  PG_LEVEL_1G,
  PG_LEVEL_4K,
} from "./constants.ts";
import type { FaultContext, FaultinPfn, InstallResult } from "./backing.ts";
import type { Kvm } from "./kvm.ts";
import type { KvmMemorySlot } from "./memslot.ts";

/** Why `KVM_RUN` returned to user space in the middle of an access. */
export interface KvmRunExit {
  /** `KVM_EXIT_MMIO` or `KVM_EXIT_MEMORY_FAULT`. */
  readonly exitReason: number;
  /** `KVM_RUN`'s return: 0, -EFAULT or -EIO. */
  readonly ret: number;
  /** Guest physical address of the access that exited. */
  readonly gpa: number;
  /** Write access. */
  readonly write: boolean;
  /** What failed, for messages. */
  readonly why: string;
}

/**
 * An access that left the guest (thrown by {@linkcode KvmVcpu.read} and
 * {@linkcode KvmVcpu.write}).
 */
export class KvmExit extends Error {
  /** The exit. */
  readonly exit: KvmRunExit;

  /** Builds the exit. */
  constructor(exit: KvmRunExit) {
    super(
      `KVM_RUN: ${exit.why} at gpa 0x${exit.gpa.toString(16)} (exit ${
        exit.exitReason === KVM_EXIT_MMIO ? "KVM_EXIT_MMIO" : "KVM_EXIT_MEMORY_FAULT"
      }, ret ${exit.ret})`,
    );
    this.name = "KvmExit";
    this.exit = exit;
  }
}

/** Virtual time of one guest re-entry after RET_PF_RETRY, ns. */
export const RETRY_NS = 1000;

/** Bound on RET_PF_RETRY loops before the model reports a livelock. */
const MAX_RETRIES = 10_000;

/**
 * `kvm_mmu_max_mapping_level` for the slot: the largest level whose block
 * around `gfn` lies inside the slot and keeps gfn and hva equally aligned
 * (`disallow_lpage` from `kvm_alloc_memslot_metadata`).
 */
export function slotMaxLevel(slot: KvmMemorySlot, gfn: number, hvaOffsetPages: number): number {
  for (let level = PG_LEVEL_1G; level > PG_LEVEL_4K; level--) {
    const span = pagesPerHpage(level);
    const start = gfn - (gfn % span);
    if (start < slot.baseGfn || start + span > slot.endGfn) continue;
    if ((slot.baseGfn - hvaOffsetPages) % span !== 0) continue;
    return level;
  }
  return PG_LEVEL_4K;
}

/** One vCPU. */
export class KvmVcpu {
  /** The VM. */
  readonly kvm: Kvm;
  /** vCPU id. */
  readonly id: number;
  /** The last exit, if any. */
  lastExit: KvmRunExit | null = null;

  /** Use {@linkcode Kvm.createVcpu}. */
  constructor(kvm: Kvm, id: number) {
    this.kvm = kvm;
    this.id = id;
  }

  /**
   * Guest read of `len` bytes at `gpa`. Throws {@linkcode KvmExit} when the
   * access leaves the guest.
   */
  async read(gpa: number, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const a = gpa + done;
      const n = Math.min(len - done, PAGE_SIZE - (a % PAGE_SIZE));
      const phys = await this.#translate(a, false);
      this.kvm.world.mem.readInto(phys, out.subarray(done, done + n));
      done += n;
    }
    return out;
  }

  /** Guest write of `data` at `gpa`. Throws {@linkcode KvmExit} when it leaves the guest. */
  async write(gpa: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const a = gpa + done;
      const n = Math.min(data.length - done, PAGE_SIZE - (a % PAGE_SIZE));
      const phys = await this.#translate(a, true);
      this.kvm.world.mem.write(phys, data.subarray(done, done + n));
      done += n;
    }
  }

  /**
   * Host physical address of `gpa`, faulting as needed. The caller uses
   * the result before its next scheduling point.
   */
  async #translate(gpa: number, write: boolean): Promise<number> {
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const off = gpa % PAGE_SIZE;
    const s2 = this.kvm.stage2;
    let leaf = s2.lookup(gfn);
    if (leaf && (!write || leaf.writable)) return leaf.pfn * PAGE_SIZE + off;
    await this.pageFault(gpa, write);
    leaf = s2.lookup(gfn);
    if (!leaf || (write && !leaf.writable)) {
      // Zapped again before we got back to the guest: the hardware would
      // fault again.
      return this.#translate(gpa, write);
    }
    return leaf.pfn * PAGE_SIZE + off;
  }

  #exit(exitReason: number, ret: number, gpa: number, write: boolean, why: string): never {
    const exit: KvmRunExit = { exitReason, ret, gpa, write, why };
    this.lastExit = exit;
    if (exitReason === KVM_EXIT_MMIO) this.kvm.stats.mmioExits++;
    else this.kvm.stats.faultExits++;
    throw new KvmExit(exit);
  }

  /**
   * `kvm_tdp_page_fault` for `gpa`: returns once a leaf was installed (or
   * another vCPU installed one), throws {@linkcode KvmExit} otherwise.
   */
  async pageFault(gpa: number, write: boolean): Promise<void> {
    const kvm = this.kvm;
    const gfn = Math.floor(gpa / PAGE_SIZE);
    kvm.stats.pfFaults++;
    for (let tries = 0;; tries++) {
      if (tries > MAX_RETRIES) {
        kvm.world.bug(
          "WARN",
          `WARNING: ${kvm.name}: vcpu ${this.id} page fault livelock at gfn 0x${gfn.toString(16)}`,
        );
      }
      if (tries > 0) {
        // RET_PF_RETRY: back into the guest, which faults again. Entering
        // and leaving the guest takes time, and other CPUs run meanwhile
        // (an invalidation in progress finishes), so the retry sleeps a
        // vmexit's worth of virtual time rather than spinning.
        await kvm.world.sched.sleepNs(RETRY_NS, "RET_PF_RETRY");
      }
      await kvm.world.sched.preempt("kvm_mmu_page_fault", kvm.id);
      const slot = kvm.gfnToMemslot(gfn);
      if (!slot || slot.invalid) {
        if (slot?.invalid) {
          kvm.stats.pfRetries++;
          continue;
        }
        this.#exit(KVM_EXIT_MMIO, 0, gpa, write, "no memslot: emulated MMIO");
      }
      if (write && slot.readonly) {
        this.#exit(KVM_EXIT_MMIO, 0, gpa, write, `write to read-only ${slot}`);
      }
      const mmuSeq = kvm.mmuInvalidateSeq;
      if (kvm.invalidateRetryGfnUnsafe(mmuSeq, gfn)) {
        kvm.stats.pfRetries++;
        continue;
      }
      const ctx: FaultContext = {
        kvm,
        slot,
        gfn,
        write,
        mmuSeq,
        install: (p) => this.#install(slot, gfn, write, mmuSeq, p),
      };
      const r = await slot.backing.faultin(ctx);
      if (r === "mapped") {
        kvm.stats.pfFixed++;
        return;
      }
      if (r === "stale") {
        kvm.stats.pfRetries++;
        continue;
      }
      if (r === "eio") {
        this.#exit(
          KVM_EXIT_MEMORY_FAULT,
          -5,
          gpa,
          write,
          `dma-buf slot has no pfn for gfn 0x${gfn.toString(16)} (-EIO)`,
        );
      }
      if (r === "ro") this.#exit(KVM_EXIT_MMIO, 0, gpa, write, "write to a read-only host mapping");
      if (r === "hwpoison") {
        throw new KernelError(
          "EHWPOISON",
          `KVM_RUN: ${kvm.name}: gfn 0x${gfn.toString(16)} is poisoned`,
        );
      }
      this.#exit(
        KVM_EXIT_MEMORY_FAULT,
        -14,
        gpa,
        write,
        `no host pfn for gfn 0x${gfn.toString(16)} in ${slot}`,
      );
    }
  }

  /** `is_page_fault_stale` + `kvm_tdp_mmu_map` under `mmu_lock`. */
  #install(
    slot: KvmMemorySlot,
    gfn: number,
    write: boolean,
    mmuSeq: number,
    p: FaultinPfn,
  ): InstallResult {
    const kvm = this.kvm;
    kvm.mmuLock.lock();
    try {
      if (slot.invalid || kvm.invalidateRetryGfn(mmuSeq, gfn)) {
        p.release?.();
        return "stale";
      }
      if (write && !p.writable) {
        p.release?.();
        kvm.world.bug(
          "WARN",
          `WARNING: ${kvm.name}: backing ${slot.backing.describe()} answered a write fault with a read-only pfn`,
        );
        return "stale";
      }
      const hvaOffPages = Math.floor(slot.userspaceAddr / PAGE_SIZE);
      let level = Math.min(
        p.hostLevel,
        slotMaxLevel(slot, gfn, slot.backing.kind === "hva" ? hvaOffPages : 0),
      );
      // The pfn must be aligned like the gfn at the chosen level.
      while (
        level > PG_LEVEL_4K && (gfn % pagesPerHpage(level)) !== (p.pfn % pagesPerHpage(level))
      ) {
        level--;
      }
      level = kvm.stage2.fitLevel(gfn, level);
      const existing = kvm.stage2.lookup(gfn);
      if (existing && existing.level > level) {
        // Another vCPU installed a bigger leaf meanwhile: nothing to do
        // unless it is read-only and we write (then drop and remap).
        if (!write || existing.writable) {
          p.release?.();
          return "mapped";
        }
        kvm.stage2.zapGfnRange(gfn, gfn + 1);
      }
      kvm.stage2.map(gfn, p.pfn, level, p.writable && !slot.readonly);
      p.release?.();
      return "mapped";
    } finally {
      kvm.mmuLock.unlock();
    }
  }
}
