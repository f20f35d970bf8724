import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { isErrno, Kernel, KernelBug } from "@dmalab/kernel";
import {
  dmaBufAttach,
  dmaBufAttachMapType,
  dmaBufDynamicAttach,
  dmaBufExport,
  dmaBufGetPfnUnlocked,
  dmaBufMappingAttach,
  dmaBufMechanisms,
  dmaBufPalMapPhys,
  dmaBufPalUnmapPhys,
  dmaBufPfnAttach,
  type DmaBufPfnRange,
  dmaHeapSystemAlloc,
  type SgTable,
} from "../mod.ts";
import { BarExporter } from "./testdata/bar_exporter.ts";

const v = (pfn: string, extra: Record<string, string> = {}) => ({
  variants: { "dma-buf.pfn": pfn, ...extra },
});
const revocableImporter = { allowPeer2peer: true, invalidateMappings: () => {} };

Deno.test("pfn variant 1: dma_buf_get_pfn_unlocked (Xu Yilun's RFC)", async (t) => {
  await t.step(
    "mainline: the call does not exist (-ENOSYS) and pfn-only exporters are refused at export",
    async () => {
      const world = new Kernel({ strict: false });
      const bar = new BarExporter(world);
      await world.runTask("kvm", async () => {
        const a = await dmaBufDynamicAttach(bar.buf, bar.m.nic, revocableImporter, null);
        await rejects(dmaBufGetPfnUnlocked(a, 0), (e) => isErrno(e, "ENOSYS"));
      });
      throws(
        () => new BarExporter(new Kernel({ strict: false }), { pfnOnly: true }),
        (e) => isErrno(e, "EINVAL"),
      );
    },
  );
  await t.step(
    "export validation of the RFC: map and unmap both or neither; map_dma_buf or get_pfn",
    () => {
      const world = new Kernel({ ...v("rfc-get-pfn"), strict: false });
      const release = () => {};
      throws(() =>
        dmaBufExport(world, {
          expName: "x",
          size: 4096,
          priv: {},
          ops: { release, mapDmaBuf: () => null },
        }), (e) => isErrno(e, "EINVAL"));
      throws(
        () => dmaBufExport(world, { expName: "x", size: 4096, priv: {}, ops: { release } }),
        (e) => isErrno(e, "EINVAL"),
      );
      const ok1 = dmaBufExport(world, {
        expName: "x",
        size: 4096,
        priv: {},
        ops: { release, getPfn: () => ({ pfn: 1, maxOrder: 0 }) },
      });
      ok(ok1);
    },
  );
  await t.step(
    "a NULL-device attachment to a pfn-only exporter; get_pfn under the lock; map refused",
    async () => {
      const world = new Kernel(v("rfc-get-pfn"));
      const bar = new BarExporter(world, { pfnOnly: true });
      await world.runTask("kvm", async () => {
        const a = await dmaBufDynamicAttach(bar.buf, null, revocableImporter, null);
        const r = await dmaBufGetPfnUnlocked(a, 3);
        deepStrictEqual(r, { pfn: Number(bar.paddr / 4096n) + 3, maxOrder: 0 });
        await rejects(dmaBufGetPfnUnlocked(a, 512), (e) => isErrno(e, "EINVAL"));
        await rejects(
          a.mapUnlocked("DMA_BIDIRECTIONAL"),
          (e) => e instanceof KernelBug && e.kind === "WARN",
        );
        await bar.buf.resv.lock(null);
        await rejects(
          dmaBufGetPfnUnlocked(a, 0),
          (e) => e instanceof KernelBug && e.kind === "lockdep",
        );
        bar.buf.resv.unlock();
      });
    },
  );
  await t.step(
    "no get_pfn: WARN + -EINVAL (the system heap); dynamic exporter without move_notify: -ENOENT",
    async () => {
      const world = new Kernel({ ...v("rfc-get-pfn"), strict: false });
      const sys = dmaHeapSystemAlloc(world, 4096);
      const old = new Kernel({ ...v("rfc-get-pfn", { "dma-buf.version": "6.19" }) });
      const bar = new BarExporter(old, { dynamic: true });
      await world.runTask("kvm", async () => {
        const a = await dmaBufDynamicAttach(sys, bar.m.nic, revocableImporter, null);
        await rejects(dmaBufGetPfnUnlocked(a, 0), (e) => isErrno(e, "EINVAL"));
      });
      strictEqual(world.bugs.length, 1);
      await old.runTask("kvm", async () => {
        const a = await dmaBufDynamicAttach(bar.buf, bar.m.nic, {
          allowPeer2peer: true,
          moveNotify: () => {},
        }, null);
        await rejects(dmaBufGetPfnUnlocked(a, 0), (e) => isErrno(e, "ENOENT"));
      });
    },
  );
  await t.step(
    "after a revoke the exporter returns -ENODEV; the importer heard move_notify",
    async () => {
      const world = new Kernel(v("rfc-get-pfn"));
      const bar = new BarExporter(world);
      let zapped = 0;
      await world.runTask("kvm", async () => {
        const a = await dmaBufDynamicAttach(bar.buf, bar.m.nic, {
          allowPeer2peer: true,
          invalidateMappings: () => void zapped++,
        }, null);
        await dmaBufGetPfnUnlocked(a, 0);
        await bar.revoker.revoke();
        await rejects(dmaBufGetPfnUnlocked(a, 0), (e) => isErrno(e, "ENODEV"));
      });
      strictEqual(zapped, 1);
    },
  );
});

Deno.test("pfn variant 2: a separate dma_buf_pfn_attachment (Simona Vetter's proposal)", async (t) => {
  await t.step("mainline: -ENOSYS", async () => {
    const world = new Kernel();
    const bar = new BarExporter(world);
    await world.runTask("t", async () => {
      await rejects(
        dmaBufPfnAttach(bar.buf, { acceptModels: ["revocable"], invalidate: () => {} }, null),
        (e) => isErrno(e, "ENOSYS"),
      );
    });
  });
  await t.step(
    "explicit memory models: an importer that refuses revocable memory gets -EOPNOTSUPP",
    async () => {
      const world = new Kernel(v("pfn-attachment"));
      const bar = new BarExporter(world);
      await world.runTask("compositor", async () => {
        await rejects(
          dmaBufPfnAttach(
            bar.buf,
            { acceptModels: ["pinned", "dynamic"], invalidate: () => {} },
            null,
          ),
          (e) => isErrno(e, "EOPNOTSUPP"),
        );
        const pa = await dmaBufPfnAttach(bar.buf, {
          acceptModels: ["revocable"],
          invalidate: () => {},
        }, null);
        strictEqual(pa.model, "revocable");
      });
    },
  );
  await t.step(
    "no struct device; every range carries its provider; map/unmap under the lock",
    async () => {
      const world = new Kernel(v("pfn-attachment"));
      const bar = new BarExporter(world);
      await world.runTask("kvm", async () => {
        const pa = await dmaBufPfnAttach(bar.buf, {
          acceptModels: ["revocable", "dynamic"],
          invalidate: () => {},
        }, "slot");
        await bar.buf.resv.lock(null);
        const ranges = pa.map(8, 16);
        strictEqual(ranges[0]!.provider, bar.provider);
        ok(ranges[0]!.mmio);
        strictEqual(ranges[0]!.pfn, Number(bar.paddr / 4096n) + 8);
        pa.checkAccess(ranges);
        throws(() => pa.map(510, 4), (e) => isErrno(e, "EINVAL"));
        pa.unmap(ranges);
        bar.buf.resv.unlock();
        throws(() => pa.map(0, 1), (e) => e instanceof KernelBug && e.kind === "lockdep");
        await pa.detach();
      });
      strictEqual(bar.calls.pfn_unmap, 1);
    },
  );
  await t.step(
    "revoke: invalidate under the lock, stale ranges reported, -ENODEV afterwards, revoke waits for unmap",
    async () => {
      const world = new Kernel(v("pfn-attachment"));
      const bar = new BarExporter(world);
      let ranges: DmaBufPfnRange[] = [];
      const log: string[] = [];
      const pa = await world.runTask("kvm", async () => {
        const p = await dmaBufPfnAttach(bar.buf, {
          acceptModels: ["revocable"],
          invalidate: (x) => {
            ok(x.dmabuf.resv.held());
            log.push("invalidate");
            world.spawn("kvm-zap", async () => {
              await world.sched.msleep(2);
              await bar.buf.resv.lock(null);
              p.unmap(ranges);
              bar.buf.resv.unlock();
              log.push("unmapped");
            });
          },
        }, null);
        await bar.buf.resv.lock(null);
        ranges = p.map(0, 1);
        bar.buf.resv.unlock();
        return p;
      });
      await world.runTask("reset", async () => {
        const done = bar.revoker.revoke();
        await world.sched.msleep(1);
        throws(
          () => pa.checkAccess(ranges),
          (e) => e instanceof KernelBug && e.kind === "invariant",
        );
        await done;
        log.push("revoked");
        await bar.buf.resv.lock(null);
        throws(() => pa.map(0, 1), (e) => isErrno(e, "ENODEV"));
        bar.buf.resv.unlock();
      });
      deepStrictEqual(log, ["invalidate", "unmapped", "revoked"]);
    },
  );
  await t.step("an exporter that promised pinned memory and invalidates anyway: WARN", async () => {
    const world = new Kernel(v("pfn-attachment"));
    const bar = new BarExporter(world, { model: "pinned" });
    await world.runTask("t", async () => {
      await dmaBufPfnAttach(bar.buf, { acceptModels: ["pinned"], invalidate: () => {} }, null);
      await rejects(bar.revoker.revoke(), (e) => e instanceof KernelBug && e.kind === "WARN");
    });
  });
  await t.step("exporters without pfn access (system heap): -EOPNOTSUPP", async () => {
    const world = new Kernel(v("pfn-attachment"));
    await world.runTask("t", async () => {
      await rejects(
        dmaBufPfnAttach(dmaHeapSystemAlloc(world, 4096), {
          acceptModels: ["pinned", "dynamic", "revocable"],
          invalidate: () => {},
        }, null),
        (e) => isErrno(e, "EOPNOTSUPP"),
      );
    });
  });
});

Deno.test("pfn variant 3: mapping types and the Physical Address List (Gunthorpe's RFC)", async (t) => {
  await t.step("mainline: -ENOSYS", async () => {
    const world = new Kernel();
    const bar = new BarExporter(world);
    await world.runTask("t", async () => {
      await rejects(
        dmaBufMappingAttach(bar.buf, null, ["PAL"], revocableImporter, null),
        (e) => isErrno(e, "ENOSYS"),
      );
    });
  });
  await t.step(
    "iommufd matches PAL without a device and gets the physical list under the lock",
    async () => {
      const world = new Kernel(v("pal"));
      const bar = new BarExporter(world);
      await world.runTask("iommufd", async () => {
        const a = await dmaBufMappingAttach(bar.buf, null, ["PAL"], revocableImporter, null, {
          importerModule: "iommufd",
        });
        strictEqual(dmaBufAttachMapType(a), "PAL");
        strictEqual(a.dev, null);
        throws(() => dmaBufPalMapPhys(a), (e) => e instanceof KernelBug && e.kind === "lockdep");
        await bar.buf.resv.lock(null);
        const list = dmaBufPalMapPhys(a);
        deepStrictEqual(list.phys, [{ paddr: bar.paddr, len: bar.size }]);
        dmaBufPalUnmapPhys(a, list);
        bar.buf.resv.unlock();
        await a.detach();
      });
    },
  );
  await t.step(
    "PAL is exported to iommufd only: a KVM importer fails to link (-ENOENT) unless the variant widens it",
    async () => {
      const world = new Kernel(v("pal"));
      const bar = new BarExporter(world);
      const widened = new Kernel(v("pal", { "dma-buf.pal.modules": "iommufd,kvm" }));
      const bar2 = new BarExporter(widened);
      for (const [w, b, code] of [[world, bar, "ENOENT"], [widened, bar2, null]] as const) {
        await w.runTask("kvm", async () => {
          const a = await dmaBufMappingAttach(b.buf, null, ["PAL"], revocableImporter, null, {
            importerModule: "kvm",
          });
          await b.buf.resv.lock(null);
          if (code) throws(() => dmaBufPalMapPhys(a), (e) => isErrno(e, code));
          else dmaBufPalUnmapPhys(a, dmaBufPalMapPhys(a));
          b.buf.resv.unlock();
        });
      }
    },
  );
  await t.step(
    "type matching: SGT_P2P needs a P2P importer; no common type is -EOPNOTSUPP; compat SGT for old exporters",
    async () => {
      const world = new Kernel(v("pal"));
      const bar = new BarExporter(world);
      await world.runTask("t", async () => {
        await rejects(
          dmaBufMappingAttach(bar.buf, bar.m.nic, ["SGT"], { invalidateMappings: () => {} }, null),
          (e) => isErrno(e, "EOPNOTSUPP"),
        );
        const p2p = await dmaBufMappingAttach(bar.buf, bar.m.nic, ["SGT"], revocableImporter, null);
        strictEqual(dmaBufAttachMapType(p2p), "SGT_P2P");
        const sgt: SgTable = await p2p.mapUnlocked("DMA_BIDIRECTIONAL");
        strictEqual(sgt.sgl[0]!.dmaAddress, bar.paddr + bar.provider.busOffset);
        await p2p.unmapUnlocked(sgt, "DMA_BIDIRECTIONAL");
        const sys = dmaHeapSystemAlloc(world, 4096);
        await rejects(
          dmaBufMappingAttach(sys, null, ["PAL"], revocableImporter, null, {
            importerModule: "iommufd",
          }),
          (e) => isErrno(e, "EOPNOTSUPP"),
        );
        strictEqual(
          dmaBufAttachMapType(
            await dmaBufMappingAttach(sys, bar.m.nic, ["SGT", "PAL"], null, null),
          ),
          "SGT",
        );
      });
    },
  );
  await t.step("revoke waits until the PAL importer called unmap_phys", async () => {
    const world = new Kernel(v("pal"));
    const bar = new BarExporter(world);
    let unmappedAt = -1;
    await world.runTask("iommufd", async () => {
      let list: ReturnType<typeof dmaBufPalMapPhys> | null = null;
      const a = await dmaBufMappingAttach(
        bar.buf,
        null,
        ["PAL"],
        {
          invalidateMappings: (at) => {
            world.spawn("iopt_revoke", async () => {
              await world.sched.msleep(3);
              await bar.buf.resv.lock(null);
              dmaBufPalUnmapPhys(at, list!);
              bar.buf.resv.unlock();
              unmappedAt = world.sched.now;
            });
          },
        },
        null,
        { importerModule: "iommufd" },
      );
      await bar.buf.resv.lock(null);
      list = dmaBufPalMapPhys(a);
      bar.buf.resv.unlock();
      await bar.revoker.revoke();
      ok(unmappedAt > 0 && world.sched.now >= unmappedAt);
      await bar.buf.resv.lock(null);
      throws(() => dmaBufPalMapPhys(a), (e) => isErrno(e, "ENODEV"));
      bar.buf.resv.unlock();
    });
  });
});

Deno.test("each exporter states its access mechanisms", async () => {
  const world = new Kernel(v("pal"));
  const bar = new BarExporter(world);
  deepStrictEqual(dmaBufMechanisms(dmaHeapSystemAlloc(world, 4096)), [
    "vmap",
    "mmap",
    "attach-sgt",
  ]);
  deepStrictEqual(dmaBufMechanisms(bar.buf), ["attach-sgt", "get-pfn", "pfn-attachment", "pal"]);
  await world.runTask("t", async () => {
    await rejects(dmaBufAttach(bar.buf, bar.m.nic), (e) => isErrno(e, "EOPNOTSUPP")); // static importers cannot be revoked
  });
});
