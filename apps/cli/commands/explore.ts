/**
 * DOC: dmalab explore
 *
 * Wires `@dmalab/explorer` (systematic and PCT exploration of task
 * interleavings, replayable schedules) into the CLI.
 *
 * @module
 */
import { exploreMain, exploreUsage } from "@dmalab/explorer";
import type { Command, Io } from "../io.ts";

/** `dmalab explore`. */
export const exploreCommand: Command = {
  name: "explore",
  summary: "explore task interleavings of a scenario; print a replayable failing schedule",
  usage: exploreUsage,
  run(args: string[], io: Io): Promise<number> {
    return exploreMain(args, { out: (s) => io.out(s), err: (s) => io.err(s), isTty: io.isTty });
  },
};
