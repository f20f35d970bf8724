/**
 * The example app: a machine of your own (`@dmalab/pci-p2p` builder) with
 * two drivers, `@dmalab/gpu` and a copy-engine importer written here.
 *
 * @example
 * ```ts
 * import { runCustom } from "@dmalab/app-custom";
 * const { result } = await runCustom();
 * result.ok; // true
 * ```
 *
 * @module
 */
export * from "./copy_engine.ts";
export * from "./app.ts";
