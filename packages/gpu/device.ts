/**
 * DOC: the GPU device (amdgpu_device.c, amdgpu_ttm.c, ttm_bo.c eviction)
 *
 * A PCI driver bound to a pci-p2p endpoint. VRAM sits behind a large
 * 64-bit prefetchable BAR ("resizable BAR" fully open, so every VRAM byte
 * is CPU- and peer-visible): the BAR is the MMIO region the PCI core
 * claimed with sparse backing, so VRAM holds real bytes and a peer's DMA
 * lands in it. The BAR is registered as a P2PDMA provider
 * (`pcim_p2pdma_init`) so importers learn the map type of their path.
 *
 * Buffer objects are validated into a placement (`ttm_bo_validate`,
 * `amdgpu_bo_placement_from_domain` tries VRAM before GTT). When VRAM is
 * full, `ttm_mem_evict_first` walks the VRAM LRU, skips pinned objects and
 * objects whose reservation it cannot trylock, and evicts the first one to
 * GTT. Every move (`amdgpu_bo_move`):
 * 1. tells dma-buf importers first (`amdgpu_bo_move_notify` ->
 *    `dma_buf_move_notify`, reservation lock held) when the object was
 *    exported and had a placement;
 * 2. queues a copy job on the SDMA ring that depends on every fence in the
 *    reservation object (BOOKKEEP and below);
 * 3. adds the copy fence with `DMA_RESV_USAGE_KERNEL`
 *    (`ttm_bo_move_accel_cleanup`), so every later user, and every dynamic
 *    importer re-mapping, waits for the data to arrive;
 * 4. frees the old backing when the copy fence signals (TTM's ghost
 *    object), so nothing reuses VRAM that is still being read.
 *
 * Locking: `validate`, `pin`, `unpin`, `boFree` and job submission need
 * the object's reservation lock (asserted, `dma_resv_assert_held`);
 * eviction trylocks victims while holding the caller's lock, as TTM does
 * without a ww ticket. `boCreate` takes no lock.
 *
 * @module
 */
import { Errno, type Kernel, KernelError, WwAcquireCtx } from "@dmalab/kernel";
import {
  devIsPci,
  linkPayloadGBps,
  type P2pdmaProvider,
  type PciDev,
  pcimP2pdmaInit,
  pcimP2pdmaProvider,
} from "@dmalab/pci-p2p";
import {
  dmaBufMoveNotify,
  type DmaFence,
  DmaFenceCb,
  DmaResv,
  DmaResvUsage,
  reservationWwClass,
} from "@dmalab/dma-buf";
import { blockPages, type VramBlock, VramManager } from "./vram_mgr.ts";
import {
  GPU_DOMAIN_GTT,
  GPU_DOMAIN_VRAM,
  GpuBo,
  type GpuPlacement,
  mergeRanges,
  sliceRanges,
} from "./bo.ts";
import { type GpuJob, GpuRing, type PhysRange } from "./ring.ts";

/** Options for {@linkcode gpuProbe}. */
export interface GpuProbeOptions {
  /** VRAM size the driver uses (default 256 MiB; at most the BAR size). */
  vramSize?: number;
  /** The VRAM BAR (default the largest 64-bit prefetchable BAR). */
  bar?: number;
  /** SDMA copy bandwidth for VRAM-local jobs, GB/s (default 200, a labelled assumption). */
  copyGBps?: number;
}

/** Counters of one GPU. */
export interface GpuStats {
  /** Objects evicted from VRAM. */
  evictions: number;
  /** Bytes copied by moves. */
  movedBytes: number;
  /** `dma_buf_move_notify` calls made. */
  moveNotifies: number;
  /** Moves of any kind. */
  moves: number;
}

/** The GPU driver state of one device (`struct amdgpu_device`). */
export class GpuDevice {
  /** The world. */
  readonly world: Kernel;
  /** The PCI function. */
  readonly pdev: PciDev;
  /** VRAM BAR index. */
  readonly bar: number;
  /** CPU physical address of VRAM byte 0 (the BAR start). */
  readonly vramBase: number;
  /** VRAM bytes managed. */
  readonly vramSize: number;
  /** The buddy allocator. */
  readonly vram: VramManager;
  /** SDMA ring for user jobs and moves. */
  readonly ring: GpuRing;
  /** The P2PDMA provider of the VRAM BAR. */
  readonly provider: P2pdmaProvider;
  /** Live buffer objects. */
  readonly bos: Set<GpuBo> = new Set();
  /** Counters. */
  readonly stats: GpuStats = { evictions: 0, movedBytes: 0, moveNotifies: 0, moves: 0 };
  /** VRAM-resident objects, least recently used first (`man->lru`). */
  readonly lru: GpuBo[] = [];
  /** Page index of VRAM -> owning object, for the checkers (released when the move fence signals). */
  readonly #owner = new Map<number, GpuBo>();
  /** Move fences whose signal frees VRAM (TTM ghost objects). */
  readonly #ghosts = new Set<DmaFence>();
  /** Bandwidth of moves across the GPU's PCIe link, GB/s. */
  readonly linkGBps: number;
  #nextId = 1;

  /** Built by {@linkcode gpuProbe}. */
  constructor(world: Kernel, pdev: PciDev, options: GpuProbeOptions = {}) {
    this.world = world;
    this.pdev = pdev;
    const bar = options.bar ?? pdev.bars.reduce(
      (best, b, i) =>
        b && b.mem && b.is64 && b.prefetch && b.mmio &&
          (best < 0 || b.size > pdev.bars[best]!.size)
          ? i
          : best,
      -1,
    );
    const b = bar >= 0 ? pdev.bars[bar] : null;
    if (!b || !b.mmio || b.start === null) {
      throw new KernelError("ENODEV", `gpu ${pdev.name}: no assigned 64-bit prefetchable BAR`);
    }
    this.bar = bar;
    this.vramBase = Number(b.start);
    const size = options.vramSize ?? 256 << 20;
    if (size <= 0 || size % 4096 !== 0 || BigInt(size) > b.size) {
      throw new KernelError(
        "EINVAL",
        `gpu ${pdev.name}: VRAM size ${size} does not fit BAR ${bar}`,
      );
    }
    this.vramSize = size;
    this.vram = new VramManager(size / 4096);
    this.ring = new GpuRing(world, `${pdev.name}:sdma0`, options.copyGBps ?? 200);
    this.linkGBps = pdev.link ? linkPayloadGBps(pdev.link, pdev.mps) : 16;
    pcimP2pdmaInit(pdev);
    const prov = pcimP2pdmaProvider(pdev, bar);
    if (!prov) throw new KernelError("ENODEV", `gpu ${pdev.name}: BAR ${bar} is no P2P provider`);
    this.provider = prov;
  }

  /** Name for messages. */
  toString(): string {
    return `gpu ${this.pdev.name}`;
  }

  /** The object owning VRAM byte at physical `phys`, or null (free or not VRAM). */
  vramOwnerAt(phys: number): GpuBo | null {
    if (phys < this.vramBase || phys >= this.vramBase + this.vramSize) return null;
    return this.#owner.get(Math.floor((phys - this.vramBase) / 4096)) ?? null;
  }

  /**
   * The dma-buf whose object currently has VRAM byte `phys` as backing
   * (null: free, not exported, or the object moved away and the page only
   * waits for its copy to finish).
   */
  dmabufBackingAt(phys: number): unknown {
    const bo = this.vramOwnerAt(phys);
    if (!bo || bo.placement !== "VRAM" || !bo.vramBlocks) return null;
    const pg = Math.floor((phys - this.vramBase) / 4096);
    const inCurrent = bo.vramBlocks.some((b) => pg >= b.start && pg < b.start + blockPages(b));
    return inCurrent ? bo.dmabuf : null;
  }

  /** True when `phys` is inside the VRAM this driver manages. */
  isVram(phys: number): boolean {
    return phys >= this.vramBase && phys < this.vramBase + this.vramSize;
  }

  /**
   * `amdgpu_bo_create`: a new object of `size` bytes (rounded up to pages),
   * not placed yet. `domains` are the preferred domains (default VRAM),
   * `allowed` default VRAM|GTT.
   */
  boCreate(size: number, domains: number = GPU_DOMAIN_VRAM, allowed?: number): GpuBo {
    if (!(size > 0)) throw new KernelError("EINVAL", "amdgpu_bo_create: size 0");
    const pages = Math.ceil(size / 4096);
    const bo = new GpuBo(
      this.#nextId++,
      pages * 4096,
      domains,
      allowed ?? (domains | GPU_DOMAIN_GTT),
      new DmaResv(this.world),
    );
    this.bos.add(bo);
    return bo;
  }

  #assertHeld(bo: GpuBo, fn: string): void {
    bo.resv.assertHeld(fn);
  }

  /**
   * `ttm_bo_validate` with the placements of `domains` (VRAM first): keeps
   * the object where it is when that is allowed, else moves it, evicting
   * others from VRAM when needed. Pinned objects cannot move (-EINVAL);
   * no room anywhere is -ENOMEM.
   */
  async validate(bo: GpuBo, domains: number): Promise<void> {
    this.#assertHeld(bo, "ttm_bo_validate");
    if (bo.freed) throw new KernelError("EINVAL", `ttm_bo_validate: ${bo} was freed`);
    domains &= bo.allowedDomains;
    if (!domains) throw new KernelError("EINVAL", `ttm_bo_validate: ${bo}: no allowed domain`);
    if (bo.placement && domains & domainBit(bo.placement)) {
      this.#touch(bo);
      return;
    }
    if (bo.pinCount > 0) {
      throw new KernelError("EINVAL", `ttm_bo_validate: ${bo} is pinned and cannot move`);
    }
    if (domains & GPU_DOMAIN_VRAM) {
      const blocks = await this.#allocVram(bo);
      if (blocks) {
        this.#move(bo, "VRAM", blocks.ranges, blocks);
        return;
      }
    }
    if (domains & GPU_DOMAIN_GTT) {
      const pages = [];
      for (let i = 0; i < bo.npages; i++) {
        const p = this.world.mem.allocPages(0);
        if (!p) {
          for (const q of pages) this.world.mem.freePages(q, 0);
          throw new KernelError("ENOMEM", `ttm_bo_validate: no system memory for ${bo}`);
        }
        pages.push(p);
      }
      const ranges = mergeRanges(
        pages.map((p) => ({ phys: Number(this.world.mem.pageToPhys(p)), len: 4096 })),
      );
      this.#move(bo, "GTT", ranges, null, pages);
      return;
    }
    throw new KernelError("ENOMEM", `ttm_bo_validate: no room in VRAM for ${bo}`);
  }

  async #allocVram(
    bo: GpuBo,
  ): Promise<{ blocks: VramBlock[]; ranges: PhysRange[] } | null> {
    for (;;) {
      const blocks = this.vram.alloc(bo.npages);
      if (blocks) {
        // the object's bytes follow block order
        const ranges = mergeRanges(blocks.map((b) => ({
          phys: this.vramBase + b.start * 4096,
          len: blockPages(b) * 4096,
        })));
        return { blocks, ranges };
      }
      // ghost objects first: VRAM whose move copy has not finished yet
      // (TTM keeps them on the LRU and waits for their fence)
      const ghost = [...this.#ghosts][0];
      const fence = ghost ? ghost.get() : await this.#evictFirst(bo);
      if (!fence) return null;
      await fence.wait(false); // the victim's VRAM is free once its copy is done
      fence.put();
    }
  }

  /**
   * `ttm_mem_evict_first`: the first VRAM object on the LRU that is not
   * `busy` (the one being placed), not pinned and whose reservation can be
   * trylocked is moved to GTT. Returns the move fence (referenced) or null.
   */
  async #evictFirst(busy: GpuBo): Promise<DmaFence | null> {
    for (const victim of [...this.lru]) {
      if (victim === busy || victim.pinCount > 0) continue;
      if (!victim.resv.trylock()) continue;
      try {
        if (victim.pinCount > 0 || victim.placement !== "VRAM") continue;
        this.stats.evictions++;
        this.world.trace.event("gpu_bo_evict", { bo: victim.id, size: victim.size });
        await this.validate(victim, GPU_DOMAIN_GTT);
        const f = victim.resv.getFences(DmaResvUsage.KERNEL);
        // the last KERNEL fence is the eviction copy
        const last = f.pop() ?? null;
        for (const x of f) x.put();
        return last;
      } finally {
        victim.resv.unlock();
      }
    }
    return null;
  }

  #touch(bo: GpuBo): void {
    const i = this.lru.indexOf(bo);
    if (i >= 0) {
      this.lru.splice(i, 1);
      this.lru.push(bo);
    }
  }

  /** `amdgpu_bo_move`: see the module doc. */
  #move(
    bo: GpuBo,
    to: GpuPlacement,
    ranges: PhysRange[],
    vram: { blocks: VramBlock[] } | null,
    pages: GpuBo["gttPages"] = null,
  ): void {
    const old = { placement: bo.placement, ranges: bo.ranges, blocks: bo.vramBlocks };
    const oldPages = bo.gttPages;
    if (bo.dmabuf && old.placement !== null) {
      this.stats.moveNotifies++;
      dmaBufMoveNotify(bo.dmabuf); // importers drop their mappings before the move
    }
    bo.placement = to;
    bo.ranges = ranges;
    bo.vramBlocks = vram ? vram.blocks : null;
    bo.gttPages = pages;
    bo.moves++;
    this.stats.moves++;
    if (vram) {
      for (const b of vram.blocks) {
        for (let p = 0; p < blockPages(b); p++) this.#owner.set(b.start + p, bo);
      }
      this.lru.push(bo);
    } else {
      const i = this.lru.indexOf(bo);
      if (i >= 0) this.lru.splice(i, 1);
    }
    const releaseOld = () => {
      if (old.blocks) {
        for (const b of old.blocks) {
          for (let p = 0; p < blockPages(b); p++) {
            if (this.#owner.get(b.start + p) === bo) this.#owner.delete(b.start + p);
          }
        }
        this.vram.free(old.blocks);
      }
      if (oldPages) { for (const p of oldPages) this.world.mem.freePages(p, 0); }
    };
    if (old.placement === null) {
      releaseOld();
      return;
    }
    const deps = bo.resv.getFences(DmaResvUsage.BOOKKEEP);
    const job = this.ring.submit(
      // VRAM <-> GTT crosses the GPU's PCIe link
      { kind: "copy", src: old.ranges, dst: ranges, gbps: Math.min(this.ring.gbps, this.linkGBps) },
      deps,
      to === "GTT" ? "evict" : "move",
    );
    for (const d of deps) d.put();
    this.stats.movedBytes += bo.size;
    bo.resv.reserveFences(1);
    bo.resv.addFence(job.fence, DmaResvUsage.KERNEL);
    if (old.blocks) this.#ghosts.add(job.fence);
    job.fence.addCallback(new DmaFenceCb(), () => {
      this.#ghosts.delete(job.fence);
      releaseOld();
    });
  }

  /**
   * `amdgpu_bo_pin(bo, domains)`: validates into `domains` (VRAM first) and
   * raises the pin count; an object pinned already must already be in one
   * of `domains` (-EINVAL otherwise).
   */
  async pin(bo: GpuBo, domains: number): Promise<void> {
    this.#assertHeld(bo, "amdgpu_bo_pin");
    if (bo.pinCount > 0) {
      if (!bo.placement || !(domains & domainBit(bo.placement))) {
        throw new KernelError("EINVAL", `amdgpu_bo_pin: ${bo} is pinned elsewhere`);
      }
      bo.pinCount++;
      return;
    }
    await this.validate(bo, domains);
    bo.pinCount++;
  }

  /** `amdgpu_bo_unpin`: WARN when not pinned. */
  unpin(bo: GpuBo): void {
    this.#assertHeld(bo, "amdgpu_bo_unpin");
    if (this.world.warnOn(bo.pinCount <= 0, `amdgpu_bo_unpin: ${bo} is not pinned`)) return;
    bo.pinCount--;
  }

  /**
   * Frees the object once its fences signalled (`ttm_bo_put` with the
   * delayed-destroy wait). Exported objects stay until the dma-buf is
   * released.
   */
  async boFree(bo: GpuBo): Promise<void> {
    if (bo.freed) return;
    await bo.resv.waitTimeout(DmaResvUsage.BOOKKEEP, false, Number.MAX_SAFE_INTEGER);
    await bo.resv.lock(null);
    try {
      this.world.warnOn(bo.pinCount > 0, `ttm_bo_put: ${bo} freed while pinned`);
      if (bo.vramBlocks) {
        for (const b of bo.vramBlocks) {
          for (let p = 0; p < blockPages(b); p++) this.#owner.delete(b.start + p);
        }
        this.vram.free(bo.vramBlocks);
      }
      if (bo.gttPages) { for (const p of bo.gttPages) this.world.mem.freePages(p, 0); }
      const i = this.lru.indexOf(bo);
      if (i >= 0) this.lru.splice(i, 1);
      bo.vramBlocks = null;
      bo.gttPages = null;
      bo.ranges = [];
      bo.placement = null;
      bo.freed = true;
      this.bos.delete(bo);
    } finally {
      bo.resv.unlock();
    }
  }

  async #submit(
    bos: { bo: GpuBo; write: boolean }[],
    make: () => Parameters<GpuRing["submit"]>[0],
    label: string,
  ): Promise<GpuJob> {
    const ctx = await lockAll(this.world, bos.map((x) => x.bo.resv));
    try {
      for (const { bo } of bos) {
        if (!bo.placement) await this.validate(bo, bo.preferredDomains);
        else this.#touch(bo);
      }
      const deps = [];
      for (const { bo, write } of bos) {
        deps.push(...bo.resv.getFences(write ? DmaResvUsage.READ : DmaResvUsage.WRITE));
        deps.push(...bo.resv.getFences(DmaResvUsage.KERNEL));
      }
      const job = this.ring.submit(make(), deps, label);
      for (const d of deps) d.put();
      for (const { bo, write } of bos) {
        bo.resv.reserveFences(1);
        bo.resv.addFence(job.fence, write ? DmaResvUsage.WRITE : DmaResvUsage.READ);
      }
      return job;
    } finally {
      for (const { bo } of [...bos].reverse()) bo.resv.unlock();
      ctx.fini();
    }
  }

  /** A fill job: bytes [off, off+len) of `bo` become `value`. Places the object if needed. */
  fill(bo: GpuBo, value: number, off = 0, len: number = bo.size - off): Promise<GpuJob> {
    checkRange(bo, off, len);
    return this.#submit(
      [{ bo, write: true }],
      () => ({ kind: "fill", dst: sliceRanges(bo.ranges, off, len), value }),
      "fill",
    );
  }

  /** A copy job: all of `src` into `dst` (sizes must match; the two must differ). */
  copy(src: GpuBo, dst: GpuBo): Promise<GpuJob> {
    if (src === dst || src.size !== dst.size) {
      throw new KernelError("EINVAL", `gpu copy: ${src} -> ${dst}: sizes differ or same object`);
    }
    return this.#submit(
      [{ bo: src, write: false }, { bo: dst, write: true }],
      () => ({ kind: "copy", src: src.ranges, dst: dst.ranges }),
      "copy",
    );
  }

  /** A checksum job over bytes [off, off+len) of `bo` (result on the job once its fence signalled). */
  checksum(bo: GpuBo, off = 0, len: number = bo.size - off): Promise<GpuJob> {
    checkRange(bo, off, len);
    return this.#submit(
      [{ bo, write: false }],
      () => ({ kind: "checksum", src: sliceRanges(bo.ranges, off, len) }),
      "checksum",
    );
  }

  /** Invariants: VRAM accounting and ownership agree with the objects. */
  checkInvariants(): string[] {
    const out: string[] = [];
    let vramPages = 0;
    for (const bo of this.bos) {
      if (bo.placement === "VRAM") {
        if (!bo.vramBlocks) out.push(`${bo} in VRAM without blocks`);
        else {
          for (const b of bo.vramBlocks) {
            vramPages += blockPages(b);
            if (this.#owner.get(b.start) !== bo) out.push(`${bo}: VRAM page ${b.start} not owned`);
          }
        }
        if (!this.lru.includes(bo)) out.push(`${bo} in VRAM but not on the LRU`);
      }
      if (bo.pinCount < 0) out.push(`${bo}: negative pin count`);
    }
    if (vramPages > this.vram.usedPages) {
      out.push(`objects hold ${vramPages} VRAM pages, manager has ${this.vram.usedPages} used`);
    }
    return out;
  }
}

/**
 * Locks every reservation object in `resvs` under one acquire context
 * (`drm_exec` style: on -EDEADLK drop everything, sleep on the contended
 * lock with `dma_resv_lock_slow`, retry the rest). Returns the context,
 * marked done; the caller unlocks and calls `fini`.
 */
export async function lockAll(world: Kernel, resvs: readonly DmaResv[]): Promise<WwAcquireCtx> {
  const ctx = new WwAcquireCtx(world, reservationWwClass);
  const held: DmaResv[] = [];
  let contended: DmaResv | null = null;
  for (;;) {
    let failed: DmaResv | null = null;
    for (const r of resvs) {
      if (r === contended) continue;
      const ret = await r.lock(ctx);
      if (ret === -Errno.EDEADLK) {
        failed = r;
        break;
      }
      if (ret === 0) held.push(r);
    }
    if (!failed) break;
    while (held.length) held.pop()!.unlock();
    await failed.lockSlow(ctx);
    held.push(failed);
    contended = failed;
  }
  ctx.done();
  return ctx;
}

function domainBit(p: GpuPlacement): number {
  return p === "VRAM" ? GPU_DOMAIN_VRAM : GPU_DOMAIN_GTT;
}

function checkRange(bo: GpuBo, off: number, len: number): void {
  if (off < 0 || len < 0 || off + len > bo.size) {
    throw new KernelError("EINVAL", `gpu job: range [${off}, ${off + len}) outside ${bo}`);
  }
}

/** The GPU bound to `pdev`, if any. */
export function gpuOf(pdev: PciDev): GpuDevice | null {
  return pdev.world.ext("gpu.devices", () => new Map<PciDev, GpuDevice>()).get(pdev) ?? null;
}

/** Every GPU of the world. */
export function gpuDevices(world: Kernel): GpuDevice[] {
  return [...world.ext("gpu.devices", () => new Map<PciDev, GpuDevice>()).values()];
}

/**
 * `amdgpu_pci_probe`: binds the GPU driver to `pdev` (driver name
 * "amdgpu"), registers its VRAM BAR as a P2P provider and the world
 * checker `gpu:<bdf>`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { gpuProbe } from "@dmalab/gpu";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * const gpu = gpuProbe(m.gpu, { vramSize: 16 << 20 });
 * gpu.vram.freePages; // 4096
 * ```
 */
export function gpuProbe(pdev: PciDev, options: GpuProbeOptions = {}): GpuDevice {
  if (!devIsPci(pdev)) throw new KernelError("ENODEV", "gpu: not a PCI device");
  const map = pdev.world.ext("gpu.devices", () => new Map<PciDev, GpuDevice>());
  if (map.has(pdev) || pdev.driver) {
    throw new KernelError("EBUSY", `gpu ${pdev.name}: already bound to ${pdev.driver}`);
  }
  const gpu = new GpuDevice(pdev.world, pdev, options);
  map.set(pdev, gpu);
  pdev.driver = "amdgpu";
  pdev.world.addChecker(`gpu:${pdev.name}`, () => gpu.checkInvariants());
  // device-memory owner registry (world extension "vram.owners"): importers'
  // DMA engines ask which dma-buf a VRAM byte backs right now
  pdev.world.ext("vram.owners", () => [] as unknown[]).push({
    start: gpu.vramBase,
    end: gpu.vramBase + gpu.vramSize,
    owner: (phys: number) => gpu.dmabufBackingAt(phys),
  });
  pdev.world.dmesg.printk(
    "info",
    `amdgpu ${pdev.name}: VRAM: ${gpu.vramSize >> 20}M 0x${
      gpu.vramBase.toString(16)
    } (BAR ${gpu.bar})`,
  );
  return gpu;
}
