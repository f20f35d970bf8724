/**
 * DOC: dma-buf export of GPU buffers (drivers/gpu/drm/amd/amdgpu/amdgpu_dma_buf.c)
 *
 * `amdgpu_gem_prime_export`: the buffer object becomes a dma-buf sharing
 * its reservation object, with a dynamic exporter's ops:
 * - `attach` (`amdgpu_dma_buf_attach`): an importer that allows peer2peer
 *   keeps that right only when `pci_p2pdma_distance(gpu, importer)` is not
 *   negative (a P2P path exists); the model records the result per
 *   attachment ({@linkcode gpuAttachP2p}) because the core's flag is
 *   read-only here.
 * - `pin` (`amdgpu_dma_buf_pin`): pins into the allowed domains minus VRAM
 *   as soon as one attachment cannot do P2P, so RDMA NICs without ODP get
 *   VRAM only when every importer can reach it; `unpin` drops the pin.
 * - `map_dma_buf` (`amdgpu_dma_buf_map`): an unpinned object is first
 *   validated into GTT, or GTT|VRAM when it prefers VRAM and the importer
 *   can do P2P (this is the "migrate to system memory first" path); then a
 *   GTT object becomes an sg_table of its pages mapped for the importer
 *   (`dma_map_sgtable`, `DMA_ATTR_SKIP_CPU_SYNC`), a VRAM object a DMA-only
 *   table of its BAR ranges through `dma_buf_phys_vec_to_sgt` (BUS_ADDR:
 *   bus addresses; THRU_HOST_BRIDGE: an IOVA or `dma_map_phys` with
 *   `DMA_ATTR_MMIO`).
 * - `vmap` (`amdgpu_dma_buf_vmap` + `ttm_bo_vmap`): pins into GTT|VRAM and
 *   returns an I/O-memory `iosys_map` for VRAM (ioremap of the BAR) and a
 *   system-memory map for GTT; `vunmap` unpins.
 *
 * Moves of an exported object call `dma_buf_move_notify` before the copy
 * (see device.ts), under the shared reservation lock.
 *
 * Locking: `attach`/`release` unlocked; `pin`, `unpin`, `map`, `unmap`,
 * `vmap`, `vunmap` with the reservation lock held (the dma-buf core checks).
 *
 * @module
 */
import { KernelError } from "@dmalab/kernel";
import { DMA_ATTR_SKIP_CPU_SYNC } from "@dmalab/dma-api";
import { pciP2pdmaDistance } from "@dmalab/pci-p2p";
import {
  type DmaBuf,
  type DmaBufAttachment,
  DmaBufDmaSgt,
  dmaBufExport,
  dmaBufFreeSgt,
  type DmaBufOps,
  dmaBufPhysVecToSgt,
  dmaMapSgtable,
  dmaUnmapSgtable,
  IosysMap,
  sgAllocTableFromPages,
  type SgTable,
} from "@dmalab/dma-buf";
import { GPU_DOMAIN_GTT, GPU_DOMAIN_VRAM, type GpuBo } from "./bo.ts";
import type { GpuDevice } from "./device.ts";

const p2pOf = new WeakMap<DmaBufAttachment, boolean>();

/** Whether `attach` may get VRAM addresses (allow_peer2peer and a P2P path). */
export function gpuAttachP2p(attach: DmaBufAttachment): boolean {
  return p2pOf.get(attach) ?? attach.peer2peer;
}

/** Counters of the exporter. */
export interface GpuExportStats {
  /** Maps that returned VRAM (P2P) addresses. */
  vramMaps: number;
  /** Maps that returned system-memory addresses. */
  gttMaps: number;
  /** Unmaps. */
  unmaps: number;
}

/** Per-GPU export counters. */
export function gpuExportStats(gpu: GpuDevice): GpuExportStats {
  return gpu.world.ext(
    `gpu.export:${gpu.pdev.name}`,
    () => ({ vramMaps: 0, gttMaps: 0, unmaps: 0 }),
  );
}

/**
 * `amdgpu_gem_prime_export`: exports `bo` (once; a second export returns
 * the same dma-buf with a new reference, as `drm_gem_prime_export` caches
 * it in `obj->dma_buf`).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * import { gpuBoExport, gpuProbe } from "@dmalab/gpu";
 * const world = new Kernel();
 * const gpu = gpuProbe(defaultMachine(world).gpu, { vramSize: 16 << 20 });
 * const bo = gpu.boCreate(1 << 20);
 * const buf = gpuBoExport(gpu, bo);
 * buf.resv === bo.resv; // true
 * ```
 */
export function gpuBoExport(gpu: GpuDevice, bo: GpuBo): DmaBuf {
  if (bo.dmabuf && !bo.dmabuf.released) return bo.dmabuf.get();
  const world = gpu.world;
  const stats = gpuExportStats(gpu);
  const ops: DmaBufOps = {
    attach: (_buf, attach) => {
      let p2p = attach.peer2peer;
      if (p2p && (!attach.dev || pciP2pdmaDistance(gpu.pdev, attach.dev, false) < 0)) {
        p2p = false;
      }
      p2pOf.set(attach, p2p);
    },
    pin: async (attach) => {
      let domains = bo.allowedDomains;
      for (const a of attach.dmabuf.attachments) {
        if (!gpuAttachP2p(a)) domains &= ~GPU_DOMAIN_VRAM;
      }
      await gpu.pin(bo, domains);
    },
    unpin: () => gpu.unpin(bo),
    mapDmaBuf: async (attach, dir): Promise<SgTable> => {
      const dev = attach.dev;
      if (!dev) throw new KernelError("EINVAL", "amdgpu_dma_buf_map: attachment without device");
      if (bo.pinCount === 0) {
        let domains = GPU_DOMAIN_GTT;
        if (bo.preferredDomains & GPU_DOMAIN_VRAM && gpuAttachP2p(attach)) {
          domains |= GPU_DOMAIN_VRAM;
        }
        await gpu.validate(bo, domains);
      }
      if (bo.placement === "GTT") {
        const sgt = sgAllocTableFromPages(world, bo.gttPages!, 0, bo.size);
        dmaMapSgtable(world, dev, sgt, dir, DMA_ATTR_SKIP_CPU_SYNC);
        stats.gttMaps++;
        return sgt;
      }
      if (bo.placement === "VRAM") {
        if (!gpuAttachP2p(attach)) {
          throw new KernelError(
            "EINVAL",
            `amdgpu_dma_buf_map: ${bo} is pinned in VRAM and ${dev.name} cannot do P2P`,
          );
        }
        const vec = bo.ranges.map((r) => ({ paddr: BigInt(r.phys), len: r.len }));
        const sgt = dmaBufPhysVecToSgt(attach, gpu.provider, vec, bo.size, dir);
        stats.vramMaps++;
        return sgt;
      }
      throw new KernelError("EINVAL", `amdgpu_dma_buf_map: ${bo} has no placement`);
    },
    unmapDmaBuf: (attach, sgt, dir) => {
      stats.unmaps++;
      if (sgt instanceof DmaBufDmaSgt) {
        dmaBufFreeSgt(attach, sgt, dir);
        return;
      }
      dmaUnmapSgtable(world, attach.dev!, sgt, dir, DMA_ATTR_SKIP_CPU_SYNC);
      sgt.free();
    },
    vmap: async (buf) => {
      await gpu.pin(bo, GPU_DOMAIN_GTT | GPU_DOMAIN_VRAM);
      return IosysMap.fromResolver(world, buf.size, bo.placement === "VRAM", (off) => {
        const r = bo.physAt(off);
        return { phys: BigInt(r.phys), contiguous: r.contiguous };
      });
    },
    vunmap: () => gpu.unpin(bo),
    release: () => {
      bo.dmabuf = null;
    },
  };
  const buf = dmaBufExport(world, {
    expName: "amdgpu",
    ops,
    size: bo.size,
    resv: bo.resv,
    priv: bo,
    flags: 2,
  });
  bo.dmabuf = buf;
  return buf;
}
