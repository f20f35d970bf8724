/**
 * DOC: scenario builders: a device BAR shared into a VM and an IOAS, then revoked
 *
 * The question the seed thread asks, as runnable worlds. A GPU-like
 * endpoint (the default machine's 0000:03:00.0, a 128 GiB prefetchable
 * BAR 1) is bound to vfio-pci; QEMU exports part of BAR 1 as a dma-buf
 * (`VFIO_DEVICE_FEATURE_DMA_BUF`), maps it into an IOAS
 * (`IOMMU_IOAS_MAP_FILE`) that an mlx5-like NIC under the same switch
 * is attached to, and gives it to the guest through KVM by one of two
 * import paths:
 *
 * - path "A" (mainline): QEMU mmaps the BAR from the vfio device fd and
 *   registers that user range as a memslot; stage-2 faults go through
 *   `follow_pfnmap` and the vfio fault handler, invalidation through the
 *   mmu_notifier when vfio zaps the mapping;
 * - path "B" (RFC): a `KVM_MEM_VFIO_DMABUF` slot on the dma-buf fd;
 *   faults fetch pfns from the exporter (`dma-buf.pfn`: `rfc-get-pfn` in
 *   the `kvm.dmabuf-fault` form `unlocked` or `locked`, or
 *   `pfn-attachment`), invalidation is the dma-buf `move_notify`.
 *
 * {@linkcode setupBarShare} builds all of it inside a task;
 * {@linkcode barMappings} counts what still points at the exported BAR
 * range (stage-2 leaves, IOMMU bytes, user PTEs); {@linkcode barShareScenario}
 * packages a vCPU hammering the BAR against a function reset as an
 * explorer {@linkcode Scenario} whose invariant is the one that matters:
 * while the device does not decode its BAR, nothing (no stage-2 leaf, no
 * IOMMU entry) points at it.
 *
 * Locking: builders run in tasks; checks are synchronous reads.
 *
 * @module
 */
import { type Kernel, type KernelOptions, MAP_SHARED, MmStruct } from "@dmalab/kernel";
import type { Scenario } from "@dmalab/explorer";
import { type DefaultMachine, defaultMachine } from "@dmalab/pci-p2p";
import { iommuSetup } from "@dmalab/iommu";
import {
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  type VfioDmaBufExport,
  VfioPciCoreDevice,
  vfioPciCoreFeatureDmaBuf,
  vfioPciIndexToOffset,
} from "@dmalab/vfio";
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IommufdCtx,
  iommufdIoasMapDmabuf,
} from "@dmalab/iommufd";
import { createVm } from "./create_vm.ts";
import { KVM_MEM_VFIO_DMABUF, PAGE_SIZE } from "./constants.ts";
import type { Kvm } from "./kvm.ts";
import { KvmExit, type KvmVcpu } from "./vcpu.ts";

/** KVM import path. */
export type KvmImportPath = "A" | "B";

/** The pfn mechanism and fault form for path B (ignored by path A). */
export type PathBVariant = "get-pfn-unlocked" | "get-pfn-locked" | "pfn-attachment";

/** Options for {@linkcode setupBarShare} and {@linkcode barShareVariants}. */
export interface BarShareOptions {
  /** Import path. */
  path: KvmImportPath;
  /** Path B pfn mechanism. Default "get-pfn-unlocked". */
  pathB?: PathBVariant;
  /** dma-buf / vfio kernel version. Default "7.1". */
  version?: "6.19" | "7.1";
  /** Bytes of BAR 1 to share (page multiple). Default 2 MiB. */
  size?: number;
  /** Guest physical address of the slot. Default 4 GiB. */
  gpa?: number;
  /** IOVA of the buffer in the IOAS. Default 1 GiB. */
  iova?: number;
}

/** The world options (variants) a configuration needs. */
export function barShareVariants(o: BarShareOptions): Record<string, string> {
  const v: Record<string, string> = { "dma-buf.version": o.version ?? "7.1" };
  if (o.path === "B") {
    const b = o.pathB ?? "get-pfn-unlocked";
    v["kvm.vfio-dmabuf"] = "rfc";
    v["dma-buf.pfn"] = b === "pfn-attachment" ? "pfn-attachment" : "rfc-get-pfn";
    v["kvm.dmabuf-fault"] = b === "get-pfn-locked" ? "locked" : "unlocked";
    // The RFC's KVM_VFIO_DMABUF Kconfig selects DMABUF_MOVE_NOTIFY (always on from 7.1).
    v["CONFIG_DMABUF_MOVE_NOTIFY"] = "y";
  }
  return v;
}

/** A one-line name of a configuration (`B/get-pfn-unlocked/7.1`). */
export function barShareName(o: BarShareOptions): string {
  return o.path === "A"
    ? `A/follow_pfnmap/${o.version ?? "7.1"}`
    : `B/${o.pathB ?? "get-pfn-unlocked"}/${o.version ?? "7.1"}`;
}

/** Everything {@linkcode setupBarShare} built. */
export interface BarShare {
  /** Options used. */
  readonly options: BarShareOptions;
  /** The world. */
  readonly world: Kernel;
  /** The machine. */
  readonly machine: DefaultMachine;
  /** The GPU bound to vfio-pci. */
  readonly vdev: VfioPciCoreDevice;
  /** The exported dma-buf. */
  readonly exp: VfioDmaBufExport;
  /** QEMU's address space. */
  readonly mm: MmStruct;
  /** The iommufd context. */
  readonly ictx: IommufdCtx;
  /** The IOAS. */
  readonly ioasId: number;
  /** IOVA of the buffer. */
  readonly iova: number;
  /** The VM. */
  readonly kvm: Kvm;
  /** Its vCPU. */
  readonly vcpu: KvmVcpu;
  /** Guest physical address of the shared range. */
  readonly gpa: number;
  /** Bytes shared. */
  readonly size: number;
  /** User address of the BAR mapping (path A), else 0. */
  readonly hva: number;
  /** First and one-past-last pfn of the shared BAR range. */
  readonly pfns: readonly [number, number];
}

/**
 * Builds the sharing set-up (see the module doc). Run it inside a task of
 * a world made with `variants: barShareVariants(options)`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { barShareVariants, setupBarShare } from "@dmalab/kvm";
 * import { deviceDmaRead } from "@dmalab/iommufd";
 * const o = { path: "B" as const };
 * const world = new Kernel({ variants: barShareVariants(o) });
 * const byte = await world.runTask("qemu", async () => {
 *   const s = await setupBarShare(world, o);
 *   await s.vcpu.write(s.gpa + 8, new Uint8Array([0x42]));
 *   return deviceDmaRead(s.machine.nic, s.iova + 8, 1)[0];
 * });
 * byte; // 0x42: written by the guest, read by the NIC over PCIe P2P
 * ```
 */
export async function setupBarShare(world: Kernel, options: BarShareOptions): Promise<BarShare> {
  const size = options.size ?? 2 << 20;
  const gpa = options.gpa ?? 2 ** 32;
  const iovaWanted = options.iova ?? 2 ** 30;
  const machine = defaultMachine(world, { iommu: true });
  iommuSetup(world);
  const vdev = new VfioPciCoreDevice(world, machine.gpu, { flrMs: 100 });
  const mm = new MmStruct(world, "qemu");
  await vdev.open();
  const exp =
    (await vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, {
      regionIndex: 1,
      openFlags: 2,
      flags: 0,
      dmaRanges: [{ offset: 0, length: size }],
    }))!;
  const ictx = new IommufdCtx(world);
  const ioasId = ictx.ioasAlloc();
  await ictx.attach(ictx.bindDevice(machine.nic), ioasId);
  const iova = await iommufdIoasMapDmabuf(
    ictx,
    ioasId,
    IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA,
    exp.fd,
    0,
    size,
    iovaWanted,
  );
  const { kvm } = await createVm(world, {
    mm,
    type: options.path === "B" ? "sw-protected" : "default",
  });
  let hva = 0;
  if (options.path === "A") {
    hva = await mm.mmap({
      length: size,
      file: vdev.file,
      flags: MAP_SHARED,
      offset: vfioPciIndexToOffset(1),
    });
    await kvm.setUserMemoryRegion2({
      slot: 0,
      flags: 0,
      guestPhysAddr: gpa,
      memorySize: size,
      userspaceAddr: hva,
    });
  } else {
    await kvm.setUserMemoryRegion2({
      slot: 0,
      flags: KVM_MEM_VFIO_DMABUF,
      guestPhysAddr: gpa,
      memorySize: size,
      userspaceAddr: 0,
      guestMemfd: exp.fd,
    });
  }
  const vcpu = kvm.createVcpu();
  const first = Number(exp.priv.physVec[0]!.paddr) / PAGE_SIZE;
  return {
    options,
    world,
    machine,
    vdev,
    exp,
    mm,
    ictx,
    ioasId,
    iova,
    kvm,
    vcpu,
    gpa,
    size,
    hva,
    pfns: [first, first + size / PAGE_SIZE],
  };
}

/** What still points at the shared BAR range. */
export interface BarMappings {
  /** Stage-2 leaves. */
  readonly stage2: number;
  /** Bytes mapped in the NIC's IOMMU domain (the IOAS holds only the buffer). */
  readonly iommu: number;
  /** User PTEs of QEMU's BAR mapping (path A). */
  readonly user: number;
}

/** Counts the mappings of the shared range (synchronous). */
export function barMappings(s: BarShare): BarMappings {
  const [start, end] = s.pfns;
  const stage2 = s.kvm.stage2.leavesPointingInto(start, end).length;
  const hwpt = s.ictx.ioas(s.ioasId).hwpts[0];
  const iommu = hwpt ? hwpt.domain.stats.mappedBytes : 0;
  let user = 0;
  if (s.hva) {
    for (let off = 0; off < s.size; off += PAGE_SIZE) {
      const pte = s.mm.translate(s.hva + off);
      if (pte && pte.pfn >= start && pte.pfn < end) user++;
    }
  }
  return { stage2, iommu, user };
}

/** The invariant: while the device does not decode its BAR, nothing points at it. */
export function barShareInvariant(s: BarShare | null): string[] {
  if (!s || s.vdev.decoding) return [];
  const m = barMappings(s);
  const out: string[] = [];
  if (m.stage2) out.push(`${m.stage2} stage-2 leaf(s) point at the BAR while it does not decode`);
  if (m.iommu) out.push(`${m.iommu} IOMMU bytes point at the BAR while it does not decode`);
  return out;
}

/** Shared state of {@linkcode barShareScenario}. */
export interface BarShareState {
  /** Set once the set-up task finished. */
  share: BarShare | null;
  /** Outcome of each guest access: "ok", or the exit. */
  readonly accesses: string[];
  /** Bytes the guest read that were all ones (a master abort reached the guest). */
  abortedReads: number;
}

/** Options for {@linkcode barShareScenario}. */
export interface BarShareScenarioOptions extends BarShareOptions {
  /** Guest accesses racing the reset. Default 3. */
  accesses?: number;
}

/**
 * An explorer scenario: after set-up, a vCPU reads the shared BAR
 * `accesses` times while QEMU resets the function (`VFIO_DEVICE_RESET`).
 *
 * @example
 * ```ts
 * import { barShareScenario } from "@dmalab/kvm";
 * const s = barShareScenario({ path: "B", pathB: "get-pfn-unlocked" });
 * s.name; // "kvm-bar-reset-b-get-pfn-unlocked-7.1"
 * ```
 */
export function barShareScenario(o: BarShareScenarioOptions): Scenario<BarShareState> {
  const name = `kvm-bar-reset-${
    barShareName(o).toLowerCase().replaceAll("/", "-").replaceAll("_", "-")
  }`;
  const worldOptions: Omit<KernelOptions, "policy"> = { variants: barShareVariants(o) };
  return {
    name,
    description: `guest access vs function reset, ${barShareName(o)}`,
    expect: "clean",
    worldOptions,
    build(world) {
      const st: BarShareState = { share: null, accesses: [], abortedReads: 0 };
      world.spawn("qemu", async () => {
        const s = await setupBarShare(world, o);
        await s.vcpu.write(s.gpa, new Uint8Array([1, 2, 3, 4]));
        st.share = s;
        s.kvm.spawnVcpu(s.vcpu, async () => {
          for (let i = 0; i < (o.accesses ?? 3); i++) {
            try {
              const b = await s.vcpu.read(s.gpa, 4);
              if (b.every((x) => x === 0xff)) st.abortedReads++;
              st.accesses.push("ok");
            } catch (e) {
              if (!(e instanceof KvmExit)) throw e;
              st.accesses.push(`exit ret ${e.exit.ret}`);
            }
          }
        });
        world.spawn("qemu-reset", async () => {
          await s.vdev.reset();
        }, { kind: "user" });
      }, { kind: "user" });
      return st;
    },
    invariants: (_w, st) => barShareInvariant(st.share),
    check: (_w, st) => {
      const out: string[] = [];
      if (st.abortedReads) {
        out.push(`${st.abortedReads} guest read(s) saw a master abort (stale mapping)`);
      }
      if (st.share && barMappings(st.share).iommu) {
        out.push("the IOAS was remapped without user space asking");
      }
      return out;
    },
    fingerprint: (_w, st) =>
      `${st.accesses.join(",")}|${st.share ? st.share.kvm.stage2.leaves() : -1}`,
  };
}

/** Every configuration the issue asks for: path A, and path B with each pfn form, on 7.1; A and B (unlocked) on 6.19. */
export const BAR_SHARE_CONFIGS: readonly BarShareOptions[] = [
  { path: "A" },
  { path: "B", pathB: "get-pfn-unlocked" },
  { path: "B", pathB: "get-pfn-locked" },
  { path: "B", pathB: "pfn-attachment" },
  { path: "A", version: "6.19" },
  { path: "B", pathB: "get-pfn-unlocked", version: "6.19" },
];

/** The configurations as explorer scenarios. */
export function barShareScenarios(): Scenario<BarShareState>[] {
  return BAR_SHARE_CONFIGS.map((o) => barShareScenario(o));
}
