/**
 * DOC: dmalab explore
 *
 * Wires `@dmalab/explorer` (systematic and PCT exploration of task
 * interleavings, replayable schedules) into the CLI, with the driver
 * scenarios of apps.ts registered first.
 *
 * @module
 */
import { exploreMain, exploreUsage } from "@dmalab/explorer";
import type { Command, Io } from "../io.ts";
import { registerDriverScenarios } from "../apps.ts";

/** `dmalab explore`. */
export const exploreCommand: Command = {
  name: "explore",
  summary: "explore task interleavings of a scenario; print a replayable failing schedule",
  usage: exploreUsage,
  run(args: string[], io: Io): Promise<number> {
    registerDriverScenarios();
    return exploreMain(args, { out: (s) => io.out(s), err: (s) => io.err(s), isTty: io.isTty });
  },
};
