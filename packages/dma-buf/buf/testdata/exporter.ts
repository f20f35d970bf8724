// A configurable exporter for the dma-buf core tests: RAM pages, optionally
// dynamic (pin/unpin, moves on request) and revocable, counting every op call.
import { Device, dmaBitMask, type Kernel, KernelError, type Page } from "@dmalab/kernel";
import {
  type DmaBuf,
  dmaBufAttachRevocable,
  dmaBufExport,
  type DmaBufExportInfo,
  dmaBufInvalidateMappings,
  type DmaBufOps,
  DmaBufRevocable,
  dmaMapSgtable,
  dmaUnmapSgtable,
  IosysMap,
  Scatterlist,
  SgTable,
} from "../../mod.ts";

export interface TestExporterOptions {
  pages?: number;
  dynamic?: boolean;
  revocable?: boolean;
  nullTable?: boolean;
  mapError?: "EINTR" | "ENOMEM";
  vmap?: boolean;
  extra?: Partial<DmaBufOps>;
  info?: Partial<DmaBufExportInfo>;
}

export class TestExporter {
  readonly calls: Record<string, number> = {};
  readonly pages: Page[] = [];
  pinned = 0;
  generation = 0;
  buf!: DmaBuf;
  readonly world: Kernel;
  nullTable: boolean;
  mapError: "EINTR" | "ENOMEM" | null;

  constructor(world: Kernel, opts: TestExporterOptions = {}) {
    this.world = world;
    this.nullTable = opts.nullTable ?? false;
    this.mapError = opts.mapError ?? null;
    const n = opts.pages ?? 4;
    for (let i = 0; i < n; i++) this.pages.push(world.mem.allocPages(0, { zero: true })!);
    // deno-lint-ignore no-this-alias
    const self = this;
    const count = (k: string) => (this.calls[k] = (this.calls[k] ?? 0) + 1);
    const ops: DmaBufOps = {
      attach(_b, a) {
        count("attach");
        if (opts.revocable) {
          if (self.revoker!.state !== "ok") {
            throw new KernelError("ENODEV", "test exporter: revoked");
          }
          if (!dmaBufAttachRevocable(a)) {
            throw new KernelError("EOPNOTSUPP", "test exporter: importer cannot be revoked");
          }
        }
      },
      detach() {
        count("detach");
      },
      mapDmaBuf(a, dir) {
        if (opts.revocable && self.revoker!.state !== "ok") {
          throw new KernelError("ENODEV", "test exporter: revoked");
        }
        if (self.mapError) throw new KernelError(self.mapError, "test exporter: map failed");
        if (self.nullTable) return null;
        const sgt = new SgTable(self.pages.map((p) => new Scatterlist(p, 4096, 0)));
        dmaMapSgtable(self.world, a.dev!, sgt, dir);
        count("map");
        return sgt;
      },
      unmapDmaBuf(a, sgt, dir) {
        count("unmap");
        dmaUnmapSgtable(self.world, a.dev!, sgt, dir);
      },
      release() {
        count("release");
        for (const p of self.pages) world.mem.freePages(p, 0);
      },
      ...(opts.vmap
        ? {
          vmap: () => {
            count("vmap");
            return IosysMap.fromResolver(world, n * 4096, false, (off) => ({
              phys: world.mem.pageToPhys(self.pages[Math.floor(off / 4096)]!) + BigInt(off % 4096),
              contiguous: 4096 - (off % 4096),
            }));
          },
          vunmap: () => void count("vunmap"),
        }
        : {}),
      ...(opts.dynamic
        ? {
          pin: () => {
            count("pin");
            self.pinned++;
          },
          unpin: () => {
            count("unpin");
            self.pinned--;
          },
        }
        : {}),
      ...opts.extra,
    };
    this.buf = dmaBufExport(world, {
      expName: "test",
      ops,
      size: n * 4096,
      priv: this,
      ...opts.info,
    });
    this.revoker = opts.revocable ? new DmaBufRevocable(this.buf) : null;
  }

  revoker: DmaBufRevocable | null;

  /** Moves the buffer (dynamic exporters): needs the resv lock, notifies importers. */
  move(): void {
    this.generation++;
    dmaBufInvalidateMappings(this.buf);
  }
}

export function dev64(world: Kernel, name = "dev0"): Device {
  return new Device(world, name, { dmaMask: dmaBitMask(64), coherentDmaMask: dmaBitMask(64) });
}
