/**
 * DOC: preset machines
 *
 * Ready-made {@linkcode MachineSpec}s: the default machine of the tour (AMD
 * Zen host; a GPU and an mlx5-like NIC under one PCIe switch, a second NIC on
 * another host bridge, an NVMe drive on its own root port), an 8-GPU/8-NIC
 * two-socket server with switches, an AMD workstation shaped like the Puget
 * WRX90 in ../shared/topologies, and an Intel Broadwell-EP host whose root
 * complex (8086:6f00) is not on the P2PDMA whitelist.
 *
 * Locking: pure data plus one {@linkcode buildMachine} call.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import {
  buildMachine,
  type FnSpec,
  gpu,
  hostBridgeFn,
  type MachineSpec,
  nic,
  nvme,
  pcieSwitch,
  rootPort,
} from "./builder.ts";
import type { PciDev } from "./fabric.ts";
import type { PciFabric } from "./machine.ts";

/** Options shared by the presets. */
export interface PresetOptions {
  /** An IOMMU driver requested ACS before enumeration (`pci_request_acs`). */
  iommu?: boolean;
  /** `pci=disable_acs_redir=` list. */
  disableAcsRedir?: string[];
  /** `pci=noats`. */
  noats?: boolean;
}

function params(o: PresetOptions): Pick<MachineSpec, "iommu" | "kernelParams"> {
  return {
    iommu: o.iommu ?? false,
    kernelParams: { noats: o.noats ?? false, disableAcsRedir: o.disableAcsRedir ?? [] },
  };
}

const AMD_RC = (label = "Advanced Micro Devices, Inc. [AMD] Genoa/Bergamo Root Complex"): FnSpec =>
  hostBridgeFn(0x1022, 0x14a4, label);

/** The spec of {@linkcode defaultMachine}. */
export function defaultMachineSpec(o: PresetOptions = {}): MachineSpec {
  return {
    name: "default (AMD Zen 4, GPU + NIC under one switch)",
    cpu: { vendor: "AMD", family: 0x19, model: 0x11 },
    ...params(o),
    hostBridges: [
      {
        bus: 0x00,
        numaNode: 0,
        devices: [
          AMD_RC(),
          rootPort([pcieSwitch([gpu(), nic()], { link: { gen: 5, width: 16 } })], {
            slot: 1,
            fn: 1,
            link: { gen: 5, width: 16 },
          }),
          rootPort([nvme()], { slot: 3, fn: 1, link: { gen: 4, width: 4 } }),
        ],
      },
      {
        bus: 0x40,
        numaNode: 0,
        devices: [AMD_RC(), rootPort([nic()], { slot: 1, fn: 1, link: { gen: 5, width: 16 } })],
      },
    ],
  };
}

/** The default machine and its interesting devices. */
export interface DefaultMachine {
  /** The fabric. */
  readonly fabric: PciFabric;
  /** GPU-like endpoint (64-bit prefetchable 128 GiB BAR 1), 0000:03:00.0. */
  readonly gpu: PciDev;
  /** mlx5-like NIC with ATS under the same switch, 0000:04:00.0. */
  readonly nic: PciDev;
  /** Second NIC on another host bridge, 0000:41:00.0. */
  readonly nic2: PciDev;
  /** NVMe drive on its own root port, 0000:05:00.0. */
  readonly nvme: PciDev;
  /** The switch downstream ports above the GPU and the NIC. */
  readonly dsp: readonly [PciDev, PciDev];
}

/**
 * The tour's machine: AMD Zen 4 (so host-bridge paths are THRU_HOST_BRIDGE),
 * a GPU and an mlx5-like NIC under one switch, a NIC on another host
 * bridge, an NVMe drive.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { defaultMachine } from "@dmalab/pci-p2p";
 * const m = defaultMachine(new Kernel());
 * m.gpu.name; // "0000:03:00.0"
 * ```
 */
export function defaultMachine(world: Kernel, o: PresetOptions = {}): DefaultMachine {
  const fabric = buildMachine(world, defaultMachineSpec(o));
  return {
    fabric,
    gpu: fabric.dev("0000:03:00.0"),
    nic: fabric.dev("0000:04:00.0"),
    nic2: fabric.dev("0000:41:00.0"),
    nvme: fabric.dev("0000:05:00.0"),
    dsp: [fabric.dev("0000:02:00.0"), fabric.dev("0000:02:01.0")],
  };
}

/**
 * An 8-GPU/8-NIC two-socket server (Intel Ice Lake-SP, host bridge 8086:09a2
 * on the whitelist): per socket two host bridges, each with one root port
 * and a Gen5 switch holding two GPUs and two NICs.
 */
export function server8GpuSpec(o: PresetOptions = {}): MachineSpec {
  const hbs = [0x00, 0x40, 0x80, 0xc0].map((bus, i) => ({
    bus,
    numaNode: i < 2 ? 0 : 1,
    devices: [
      hostBridgeFn(0x8086, 0x09a2, "Intel Corporation Ice Lake Memory Map/VT-d"),
      rootPort([pcieSwitch([gpu(), nic(), gpu(), nic()], { link: { gen: 5, width: 16 } })], {
        vendor: 0x8086,
        device: 0x347a,
        slot: 2,
        fn: 0,
        link: { gen: 5, width: 16 },
      }),
    ],
  }));
  return {
    name: "server: 2-socket Ice Lake-SP, 8 GPUs + 8 NICs behind 4 switches",
    cpu: { vendor: "Intel", family: 6, model: 0x6a },
    ...params(o),
    hostBridges: hbs,
  };
}

/** Builds {@linkcode server8GpuSpec}. */
export function server8Gpu(world: Kernel, o: PresetOptions = {}): PciFabric {
  return buildMachine(world, server8GpuSpec(o));
}

/**
 * An AMD Threadripper PRO workstation shaped like the Puget WRX90 in
 * ../shared/topologies: GPUs on two root ports of host bridge c0, a
 * two-function ConnectX-7 on 20:01.1, NVMe drives behind a switch cascade.
 */
export function amdWorkstationSpec(o: PresetOptions = {}): MachineSpec {
  const samsung = () =>
    nvme({ label: "Samsung Electronics Co Ltd NVMe SSD Controller S4LV008[Pascal]" });
  const ada = (): FnSpec =>
    gpu({
      device: 0x26b1,
      classCode: 0x030000,
      label: "NVIDIA Corporation AD102GL [RTX 6000 Ada Generation]",
      vram: "64G",
      link: { gen: 4, width: 16 },
      ats: false,
      pasid: false,
    });
  const cx7 = (fn: number): FnSpec => nic({ fn, slot: 0, link: { gen: 5, width: 16 } });
  return {
    name: "AMD workstation: Threadripper PRO 7965WX, 2 GPUs, ConnectX-7, NVMe switch cascade",
    cpu: { vendor: "AMD", family: 0x19, model: 0x18 },
    ...params(o),
    hostBridges: [
      {
        bus: 0x00,
        devices: [
          AMD_RC(),
          rootPort([
            pcieSwitch([
              pcieSwitch([samsung(), samsung()], { vendor: 0x1000, device: 0xc010 }),
              pcieSwitch([samsung(), samsung()], { vendor: 0x1000, device: 0xc010 }),
            ], { vendor: 0x1000, device: 0xc030 }),
          ], { slot: 3, fn: 1 }),
        ],
      },
      { bus: 0x20, devices: [AMD_RC(), rootPort([cx7(0), cx7(1)], { slot: 1, fn: 1 })] },
      {
        bus: 0xc0,
        devices: [
          AMD_RC(),
          rootPort([ada()], { slot: 1, fn: 1, link: { gen: 4, width: 16 } }),
          rootPort([ada()], { slot: 3, fn: 1, link: { gen: 4, width: 16 } }),
        ],
      },
    ],
  };
}

/** Builds {@linkcode amdWorkstationSpec}. */
export function amdWorkstation(world: Kernel, o: PresetOptions = {}): PciFabric {
  return buildMachine(world, amdWorkstationSpec(o));
}

/**
 * An Intel Xeon E5 v4 (Broadwell-EP) host: its 00.0 device 8086:6f00 is not
 * on the whitelist, so GPUs on different root ports are NOT_SUPPORTED while
 * two GPUs under a PLX switch are BUS_ADDR (until an IOMMU turns ACS
 * redirect on).
 */
export function intelUnlistedSpec(o: PresetOptions = {}): MachineSpec {
  const g = (): FnSpec =>
    gpu({
      device: 0x1db4,
      label: "NVIDIA Corporation GV100GL [Tesla V100 PCIe 16GB]",
      vram: "16G",
      link: { gen: 3, width: 16 },
    });
  return {
    name: "Intel Broadwell-EP host (8086:6f00 not whitelisted)",
    cpu: { vendor: "Intel", family: 6, model: 0x4f },
    ...params(o),
    hostBridges: [{
      bus: 0x00,
      devices: [
        hostBridgeFn(
          0x8086,
          0x6f00,
          "Intel Corporation Xeon E7 v4/Xeon E5 v4/Xeon E3 v4/Xeon D DMI2",
        ),
        rootPort([g()], {
          vendor: 0x8086,
          device: 0x6f02,
          slot: 1,
          fn: 0,
          link: { gen: 3, width: 16 },
        }),
        rootPort([g()], {
          vendor: 0x8086,
          device: 0x6f04,
          slot: 2,
          fn: 0,
          link: { gen: 3, width: 16 },
        }),
        rootPort([
          pcieSwitch([g(), g()], {
            vendor: 0x10b5,
            device: 0x8747,
            label:
              "PLX Technology, Inc. PEX 8747 48-Lane, 5-Port PCI Express Gen 3 (8.0 GT/s) Switch",
            link: { gen: 3, width: 16 },
          }),
        ], {
          vendor: 0x8086,
          device: 0x6f08,
          slot: 3,
          fn: 0,
          link: { gen: 3, width: 16 },
        }),
      ],
    }],
  };
}

/** Builds {@linkcode intelUnlistedSpec}. */
export function intelUnlisted(world: Kernel, o: PresetOptions = {}): PciFabric {
  return buildMachine(world, intelUnlistedSpec(o));
}

/** Every preset by name (for the CLI). */
export const PRESETS: Readonly<Record<string, (o?: PresetOptions) => MachineSpec>> = {
  default: defaultMachineSpec,
  server8gpu: server8GpuSpec,
  "amd-workstation": amdWorkstationSpec,
  "intel-unlisted": intelUnlistedSpec,
};
