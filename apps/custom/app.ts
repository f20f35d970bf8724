/**
 * DOC: the example app: your own machine, two drivers
 *
 * What a user writes to ask their own question. The machine is declared
 * with `@dmalab/pci-p2p`'s builder (an AMD Zen 4 host; a Gen4 switch with a
 * GPU and a copy engine below it; a second copy engine on a root port of
 * another host bridge), enumerated as the kernel would (bus numbers, BARs,
 * ACS). Two drivers are bound: `@dmalab/gpu` on the GPU (the exporter) and
 * {@linkcode CopyEngine}, a dynamic importer written in this app, on both
 * engines. The GPU fills a VRAM buffer; both engines read it by DMA (the
 * near one peer to peer below the switch, the far one through the host
 * bridge); then a second VRAM user evicts the buffer to system memory, the
 * GPU notifies the importers (`move_notify`), they drop their tables, map
 * again (now system memory) and read the same bytes.
 *
 * Locking: see copy_engine.ts; the GPU driver takes the reservation lock
 * around validation, and the eviction runs under it.
 *
 * @module
 */
import {
  type AppDefinition,
  type AppOptions,
  type AppRun,
  countEqual,
  Recorder,
  trackLocks,
  worldViolations,
} from "@dmalab/app-kit";
import { Kernel } from "@dmalab/kernel";
import {
  buildMachine,
  calcMapTypeAndDist,
  endpoint,
  gpu as gpuFn,
  hostBridgeFn,
  type MachineSpec,
  mapTypeName,
  pcieSwitch,
  rootPort,
} from "@dmalab/pci-p2p";
import { dmaBufBufinfo } from "@dmalab/dma-buf";
import { GPU_DOMAIN_GTT, GPU_DOMAIN_VRAM, gpuBoExport, gpuProbe } from "@dmalab/gpu";
import { CopyEngine } from "./copy_engine.ts";

const copyEngine = (label: string) =>
  endpoint({
    vendor: 0x1d0f,
    device: 0xcd01,
    label,
    bars: [{ size: "1M", is64: true, prefetch: false }],
    link: { gen: 4, width: 16 },
  });

/** The example machine. */
export function customMachineSpec(): MachineSpec {
  return {
    name: "example: GPU + copy engine under a Gen4 switch, a far engine on another host bridge",
    cpu: { vendor: "AMD", family: 0x19, model: 0x11 },
    hostBridges: [
      {
        bus: 0x00,
        numaNode: 0,
        devices: [
          hostBridgeFn(0x1022, 0x14a4, "AMD Root Complex"),
          rootPort([
            pcieSwitch([gpuFn({ vram: "16G" }), copyEngine("near copy engine")], {
              link: { gen: 4, width: 16 },
            }),
          ], { slot: 1, fn: 1, link: { gen: 4, width: 16 } }),
        ],
      },
      {
        bus: 0x80,
        numaNode: 1,
        devices: [
          hostBridgeFn(0x1022, 0x14a4, "AMD Root Complex"),
          rootPort([copyEngine("far copy engine")], {
            slot: 1,
            fn: 1,
            link: { gen: 4, width: 16 },
          }),
        ],
      },
    ],
  };
}

/**
 * Runs the example.
 *
 * @example
 * ```ts
 * import { runCustom } from "@dmalab/app-custom";
 * const { result } = await runCustom();
 * result.path; // "near: BUS_ADDR, far: THRU_HOST_BRIDGE; after eviction: RAM, RAM"
 * ```
 */
export async function runCustom(o: AppOptions = {}): Promise<AppRun> {
  const world = new Kernel({ strict: false, seed: o.seed ?? 1 });
  world.trace.enable();
  const fabric = buildMachine(world, customMachineSpec());
  const endpoints = fabric.devices.filter((d) => d.type === "endpoint");
  const gpuDev = endpoints.find((d) => d.classCode >> 16 === 0x03)!;
  const [nearDev, farDev] = endpoints.filter((d) => d.vendor === 0x1d0f);
  const rec = new Recorder(world, fabric);
  const locks = trackLocks(world, rec);
  const gpu = gpuProbe(gpuDev, { vramSize: 4 << 20 });
  const near = new CopyEngine(nearDev!);
  const far = new CopyEngine(farDev!);
  const steps: string[] = [];
  const failures: string[] = [];
  let verified = 0;
  let bufinfo: string | null = null;
  const SIZE = 1 << 20;
  const routes: string[] = [];

  await world.runTask("example", async () => {
    const bo = gpu.boCreate(SIZE, GPU_DOMAIN_VRAM, GPU_DOMAIN_VRAM | GPU_DOMAIN_GTT);
    const fill = await gpu.fill(bo, 0x5a);
    await fill.fence.wait(false);
    const buf = gpuBoExport(gpu, bo);
    steps.push(`GPU ${gpuDev.name} filled ${bo} with 0x5a and exported it`);
    await near.import(buf);
    await far.import(buf);
    const want = new Uint8Array(SIZE).fill(0x5a);
    const readBoth = async (when: string) => {
      for (const [name, e] of [["near", near], ["far", far]] as const) {
        const got = await e.read(SIZE);
        // Importers only see DMA addresses; the route follows from where the BO lives.
        const route = bo.placement === "VRAM"
          ? mapTypeName(calcMapTypeAndDist(gpuDev, e.pdev, false).mapType)
          : "RAM";
        rec.transfer({
          label: `${name} read ${when}`,
          src: e.pdev,
          dst: route === "RAM" ? null : gpuDev,
          mapType: route,
          ats: false,
          bytes: SIZE,
        });
        routes.push(route);
        if (countEqual(want, got) === SIZE) verified += SIZE;
        else failures.push(`${name} engine read wrong bytes ${when}`);
        steps.push(`${name} engine ${e.pdev.name} read 1 MiB ${when} via ${route}`);
      }
    };
    await readBoth("from VRAM");
    bufinfo = await dmaBufBufinfo(world);
    // Another VRAM user: the exported BO is evicted to system memory.
    const hog = gpu.boCreate(4 << 20, GPU_DOMAIN_VRAM);
    await hog.resv.lock(null);
    await gpu.validate(hog, GPU_DOMAIN_VRAM);
    hog.resv.unlock();
    steps.push(
      `a 4 MiB VRAM user evicted ${bo} to ${bo.placement}; invalidations: near ${near.invalidations}, far ${far.invalidations}`,
    );
    if (near.invalidations === 0 || far.invalidations === 0) {
      failures.push("an importer was not told about the move");
    }
    await readBoth("after eviction");
    await near.release();
    await far.release();
    buf.put();
    await gpu.boFree(hog);
  });

  locks.finish();
  const violations = [...worldViolations(world), ...failures];
  const path = `near: ${routes[0]}, far: ${routes[1]}; after eviction: ${routes[2]}, ${routes[3]}`;
  return {
    world,
    fabric,
    recorder: rec,
    bufinfo,
    result: {
      app: "custom",
      mechanism: "dma_buf_attach (example machine)",
      variant: "default",
      machine: fabric.name,
      exporter: `gpu ${gpuDev.name}`,
      importer: `copy engines ${nearDev!.name}, ${farDev!.name}`,
      path,
      ats: "off",
      bytesVerified: verified,
      violations,
      expectedFindings: [],
      costs: {
        "GPU evictions": gpu.stats.evictions,
        "move_notify calls": gpu.stats.moveNotifies,
        "importer maps": near.maps + far.maps,
        "lock holds across scheduling points": locks.holds,
        "virtual time ns": world.sched.now,
      },
      rulesChecked: [
        "dma_buf_dynamic_attach without the reservation lock",
        "map and checkAccess under the reservation lock (no stale table used)",
        "invalidate_mappings drops the table before the exporter moves the memory",
      ],
      steps,
      variants: [],
      ok: violations.length === 0,
    },
  };
}

/** The example as the CLI lists it. */
export const customApp: AppDefinition = {
  name: "custom",
  mechanism: "dma_buf_attach (example machine)",
  summary:
    "example: a custom machine (pci-p2p builder), the gpu driver and an importer of your own",
  variants: ["default"],
  topology: false,
  run: runCustom,
};
