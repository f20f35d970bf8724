/**
 * @dmalab/pci-p2p: the PCI fabric of a dmalab world. Host bridges, ports,
 * switches, endpoints, VFs, BARs, links, ACS/ATS/PASID/PRI; enumeration;
 * P2PDMA exactly as drivers/pci/p2pdma.c decides it; ATS enable rules;
 * loaders for NCCL topology XML, `lspci -tv` trees and sysfs trees;
 * `lspci -tv` / `nvidia-smi topo -m` / P2P listings; a PCIe bandwidth model.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { calcMapTypeAndDist, defaultMachine, mapTypeName } from "@dmalab/pci-p2p";
 * const world = new Kernel();
 * const m = defaultMachine(world);
 * const r = calcMapTypeAndDist(m.gpu, m.nic, false);
 * mapTypeName(r.mapType); // "BUS_ADDR"
 * r.dist; // 4
 * ```
 *
 * @module
 */
export * from "./constants.ts";
export * from "./fabric.ts";
export * from "./machine.ts";
export * from "./builder.ts";
export * from "./acs.ts";
export * from "./ats.ts";
export * from "./gen_pool.ts";
export * from "./p2pdma.ts";
export * from "./presets.ts";
export * from "./loaders/xml.ts";
export * from "./loaders/nccl.ts";
export * from "./loaders/lspci.ts";
export * from "./loaders/sysfs.ts";
export * from "./output.ts";
export * from "./cli.ts";
export * from "./bandwidth.ts";
