/**
 * DOC: command table
 *
 * The list of `dmalab` subcommands, in help order. Packages that add a
 * command export a {@linkcode Command} and it is registered here.
 *
 * @module
 */
import type { Command } from "../io.ts";
import { exploreCommand } from "./explore.ts";
import { lockdepCommand } from "./lockdep.ts";
import { topoCommand } from "./topo.ts";
import { tourCommand } from "./tour.ts";
import { runCommand } from "./run.ts";
import { bufinfoCommand } from "./bufinfo.ts";

/** Every subcommand. */
export const commands: readonly Command[] = [
  tourCommand,
  runCommand,
  bufinfoCommand,
  topoCommand,
  exploreCommand,
  lockdepCommand,
];
