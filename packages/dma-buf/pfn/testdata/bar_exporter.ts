// A vfio-pci-like BAR exporter for the pfn-mechanism tests: one MMIO range of
// a GPU BAR with its P2P provider, revocable, offering every mechanism.
import { dmaBitMask, type Kernel, KernelError } from "@dmalab/kernel";
import {
  type DefaultMachine,
  defaultMachine,
  type P2pdmaProvider,
  pcimP2pdmaInit,
  pcimP2pdmaProvider,
} from "@dmalab/pci-p2p";
import {
  type DmaBuf,
  dmaBufAssertResvHeld,
  dmaBufAttachRevocable,
  dmaBufExport,
  dmaBufFreeSgt,
  type DmaBufOps,
  dmaBufPhysVecToSgt,
  DmaBufRevocable,
  type PfnMemoryModel,
} from "../../mod.ts";

export interface BarExporterOptions {
  pages?: number;
  model?: PfnMemoryModel;
  pfnOnly?: boolean;
  dynamic?: boolean;
  extra?: Partial<DmaBufOps>;
}

export class BarExporter {
  readonly world: Kernel;
  readonly m: DefaultMachine;
  readonly provider: P2pdmaProvider;
  readonly paddr: bigint;
  readonly size: number;
  readonly buf: DmaBuf;
  readonly revoker: DmaBufRevocable;
  readonly calls: Record<string, number> = {};

  constructor(world: Kernel, opts: BarExporterOptions = {}) {
    this.world = world;
    this.m = defaultMachine(world);
    for (const d of [this.m.nic, this.m.nic2]) d.setMaskAndCoherent(dmaBitMask(64));
    pcimP2pdmaInit(this.m.gpu);
    this.provider = pcimP2pdmaProvider(this.m.gpu, 1)!;
    this.paddr = this.m.gpu.bars[1]!.start!;
    this.size = (opts.pages ?? 512) * 4096;
    const count = (k: string) => (this.calls[k] = (this.calls[k] ?? 0) + 1);
    const vec = [{ paddr: this.paddr, len: this.size }];
    const check = (fn: string) => this.revoker.check(fn);
    const ops: DmaBufOps = {
      attach: (_b, a) => {
        count("attach");
        check("attach");
        if (!dmaBufAttachRevocable(a)) {
          throw new KernelError("EOPNOTSUPP", "bar: importer cannot be revoked");
        }
      },
      release: () => void count("release"),
      getPfn: (a, pgoff) => {
        count("get_pfn");
        dmaBufAssertResvHeld(a.dmabuf, "vfio_pci_dma_buf_get_pfn");
        check("get_pfn");
        if (pgoff * 4096 >= this.size) {
          throw new KernelError("EINVAL", "bar: pgoff beyond the buffer");
        }
        return { pfn: Number(this.paddr / 4096n) + pgoff, maxOrder: 0 };
      },
      pfnMemoryModel: opts.model ?? "revocable",
      pfnMap: (_pa, pgoff, npages) => {
        count("pfn_map");
        check("pfn_map");
        return [{
          pfn: Number(this.paddr / 4096n) + pgoff,
          npages,
          pgoff,
          provider: this.provider,
          mmio: true,
          maxOrder: 9,
        }];
      },
      pfnUnmap: () => void count("pfn_unmap"),
      mappingTypes: ["PAL", "SGT_P2P"],
      mapPhys: () => {
        count("map_phys");
        check("map_phys");
        return { length: 1, phys: vec, mmio: true };
      },
      unmapPhys: () => void count("unmap_phys"),
      ...(opts.pfnOnly ? {} : {
        mapDmaBuf: (a, dir) => {
          check("map");
          return dmaBufPhysVecToSgt(a, this.provider, vec, this.size, dir);
        },
        unmapDmaBuf: (a, sgt, dir) => dmaBufFreeSgt(a, sgt, dir),
      }),
      ...(opts.dynamic ? { pin: () => {}, unpin: () => {} } : {}),
      ...opts.extra,
    };
    this.buf = dmaBufExport(world, { expName: "vfio_pci", ops, size: this.size, priv: this });
    this.revoker = new DmaBufRevocable(this.buf);
  }
}
