/**
 * Benchmarks of the BAR-sharing scenario: a 128 GiB BAR mapped into a guest
 * (largest leaves each import path allows) and into an IOAS; revoke /
 * unrevoke cycles with both importers attached; memory per mapped GiB is
 * printed by the mapping benches with DMALAB_BENCH_VERBOSE=1 (heap delta
 * per GiB; run with `--v8-flags=--expose-gc` for a collected heap).
 */
import { Kernel } from "@dmalab/kernel";
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  iommufdIoasMapDmabuf,
} from "@dmalab/iommufd";
import { type BarShare, type BarShareOptions, barShareVariants, setupBarShare } from "./mod.ts";

const GiB = 2 ** 30;

async function mapWhole(o: BarShareOptions, size: number, step: number): Promise<void> {
  const world = new Kernel({ variants: barShareVariants(o) });
  (globalThis as { gc?: () => void }).gc?.();
  const before = Deno.memoryUsage().heapUsed;
  await world.runTask("qemu", async () => {
    const s = await setupBarShare(world, { ...o, size, gpa: 2 ** 40, iova: 2 ** 40 });
    for (let off = 0; off < size; off += step) await s.vcpu.read(s.gpa + off, 1);
    (globalThis as { gc?: () => void }).gc?.();
    const mb = (Deno.memoryUsage().heapUsed - before) / 2 ** 20;
    if (Deno.env.get("DMALAB_BENCH_VERBOSE")) {
      console.log(
        `${o.path}/${o.pathB ?? "follow_pfnmap"}: ${s.kvm.stage2.leaves()} stage-2 leaves, ` +
          `${(mb / (size / GiB)).toFixed(3)} MiB heap per mapped GiB`,
      );
    }
  });
}

Deno.bench({
  name: "128 GiB BAR -> guest + IOAS, path B pfn-attachment (1 GiB leaves)",
  n: 3,
  warmup: 1,
  fn: async () => {
    await mapWhole({ path: "B", pathB: "pfn-attachment" }, 128 * GiB, GiB);
  },
});

Deno.bench({
  name: "128 GiB BAR -> guest + IOAS, path A follow_pfnmap (2 MiB leaves)",
  n: 1,
  warmup: 0,
  fn: async () => {
    await mapWhole({ path: "A" }, 128 * GiB, 2 << 20);
  },
});

Deno.bench({
  name: "1 GiB of BAR -> guest, path B rfc get_pfn (max_order 0: 4 KiB leaves)",
  n: 1,
  warmup: 0,
  fn: async () => {
    await mapWhole({ path: "B", pathB: "get-pfn-unlocked" }, GiB, 4096);
  },
});

// Revoke/unrevoke cycles with both importers attached: memory disable +
// enable (KVM zapped and re-faulted, iommufd revoked and remapped by QEMU).
for (const o of [{ path: "A" }, { path: "B", pathB: "pfn-attachment" }] as BarShareOptions[]) {
  const world = new Kernel({ variants: barShareVariants(o) });
  let s!: BarShare;
  await world.runTask("qemu", async () => {
    s = await setupBarShare(world, { ...o, size: 64 << 20 });
  });
  Deno.bench(
    `revoke/unrevoke cycle (memory disable/enable, re-fault, IOAS remap), ${o.path}`,
    async () => {
      await world.runTask("qemu", async () => {
        await s.vdev.configWrite(4, 2, 0);
        await s.vdev.configWrite(4, 2, 2);
        await s.vcpu.read(s.gpa, 8);
        await s.ictx.ioasUnmap(s.ioasId, s.iova, s.size);
        await iommufdIoasMapDmabuf(
          s.ictx,
          s.ioasId,
          IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA,
          s.exp.fd,
          0,
          s.size,
          s.iova,
        );
      });
    },
  );
}
