/**
 * DOC: dmalab topo
 *
 * Wires `@dmalab/pci-p2p`'s topology command (loaders for NCCL XML,
 * `lspci -tv` and sysfs trees; tree, matrix and P2PDMA outputs) into the CLI.
 *
 * @module
 */
import { TOPO_USAGE, topoMain } from "@dmalab/pci-p2p";
import type { Command, Io } from "../io.ts";

/** `dmalab topo`. */
export const topoCommand: Command = {
  name: "topo",
  summary: "load a machine topology; print lspci tree, P2P matrix or P2PDMA pairs",
  usage: TOPO_USAGE,
  run(args: string[], io: Io): Promise<number> {
    return topoMain(args, { stdout: (s) => io.out(s), stderr: (s) => io.err(s) });
  },
};
