/**
 * DOC: dmalab bufinfo
 *
 * Runs an app and prints `/sys/kernel/debug/dma_buf/bufinfo` as the app
 * captured it while its buffers were live (attached and mapped), in the
 * kernel's format (`dma_buf_debug_show`).
 *
 * @module
 */
import { findApp } from "../apps.ts";
import { type Command, EXIT_OK, type Io, parseArgs, UsageError } from "../io.ts";
import { parseSeed } from "./run.ts";

/** `dmalab bufinfo`. */
export const bufinfoCommand: Command = {
  name: "bufinfo",
  summary: "print debugfs dma_buf/bufinfo as an app's run saw it",
  usage: [
    "usage: dmalab bufinfo [APP] [--variant V] [--seed N] [--json]",
    "",
    "Runs APP (default: mmap) and prints /sys/kernel/debug/dma_buf/bufinfo taken",
    "while its buffers were attached and mapped.",
  ].join("\n"),
  async run(args: string[], io: Io): Promise<number> {
    const { flags, positional } = parseArgs(args, ["json"], ["variant", "seed"]);
    if (positional.length > 1) throw new UsageError("at most one APP");
    const app = findApp(positional[0] ?? "mmap");
    if (!app) throw new UsageError(`unknown app '${positional[0]}'`);
    const variant = typeof flags.variant === "string" ? flags.variant : undefined;
    if (variant !== undefined && !app.variants.includes(variant)) {
      throw new UsageError(`app ${app.name}: unknown variant '${variant}'`);
    }
    const run = await app.run({ ...(variant ? { variant } : {}), seed: parseSeed(flags.seed) });
    const text = run.bufinfo ?? "";
    if (flags.json) {
      io.out(JSON.stringify({ app: app.name, bufinfo: text.split("\n") }, null, 2) + "\n");
    } else io.out(`# dmalab run ${app.name}: /sys/kernel/debug/dma_buf/bufinfo${text}`);
    return EXIT_OK;
  },
};
