import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { PciP2pdmaMapType } from "@dmalab/pci-p2p";
import { formatAtsTable, measureAtsPaths } from "./scenarios.ts";
import { IB_ACCESS_RELAXED_ORDERING, mlx5UmemNeedsAts } from "./ats.ts";

Deno.test("mlx5_umem_needs_ats: both rules over every input", () => {
  const rows: string[] = [];
  for (const rule of ["mainline", "p2p-aware"] as const) {
    for (const capAts of [false, true]) {
      for (const isDmabuf of [false, true]) {
        for (const ro of [false, true]) {
          for (
            const mapType of [
              PciP2pdmaMapType.NONE,
              PciP2pdmaMapType.BUS_ADDR,
              PciP2pdmaMapType.THRU_HOST_BRIDGE,
            ]
          ) {
            const r = mlx5UmemNeedsAts(rule, {
              capAts,
              isDmabuf,
              access: ro ? IB_ACCESS_RELAXED_ORDERING : 0,
              mapType,
            });
            if (r) rows.push(`${rule}:${mapType}`);
          }
        }
      }
    }
  }
  // ATS needs the capability, a dma-buf umem and relaxed ordering under both rules;
  // mainline then says yes whatever the memory, p2p-aware only for PCI P2P map types
  deepStrictEqual(rows, [
    "mainline:1",
    "mainline:3",
    "mainline:4",
    "p2p-aware:3",
    "p2p-aware:4",
  ]);
});

Deno.test("ATS cost: mainline rule on CPU-memory dma-bufs versus the P2P-aware rule", async () => {
  const bytes = 4 << 20;
  const mainline = await measureAtsPaths("mainline", bytes);
  const aware = await measureAtsPaths("p2p-aware", bytes);
  console.log(`\n${formatAtsTable([...mainline, ...aware])}\n`);
  const row = (rows: typeof mainline, path: string) => rows.find((r) => r.path === path)!;
  const mCpu = row(mainline, "cpu-dmabuf");
  const aCpu = row(aware, "cpu-dmabuf");
  strictEqual(mCpu.ats, true, "mainline assumes a dma-buf is P2P");
  strictEqual(aCpu.ats, false, "the P2P-aware rule sees CPU memory");
  ok(mCpu.atsTranslations >= bytes / 4096, "one ATS translation per new target page");
  strictEqual(aCpu.atsTranslations, 0);
  ok(aCpu.iotlbMisses > 0, "untranslated requests walk in the IOMMU instead");
  ok(mCpu.modelledUs > aCpu.modelledUs, "ATS costs time on CPU memory");
  for (const p of ["vram-switch", "vram-other-hb"]) {
    const m = row(mainline, p);
    const a = row(aware, p);
    strictEqual(m.mapType, "THRU_HOST_BRIDGE", `${p}: IOMMU on, ACS redirect`);
    strictEqual(m.ats, true);
    strictEqual(a.ats, true, `${p}: P2P keeps ATS under both rules`);
    strictEqual(m.atsTranslations, a.atsTranslations);
    strictEqual(m.modelledUs, a.modelledUs);
  }
  for (const rows of [mainline, aware]) {
    const u = row(rows, "user");
    strictEqual(u.ats, false);
    strictEqual(u.atsTranslations, 0);
    for (const r of rows) ok(r.gbps <= r.linkGBps + 1e-9, `${r.path}: never above the PCIe link`);
  }
});
