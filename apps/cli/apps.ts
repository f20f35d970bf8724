/**
 * DOC: the apps the CLI runs
 *
 * The access-mechanism apps in tour order, and the driver scenarios the CLI
 * registers with `@dmalab/explorer` so `dmalab explore --list` shows them
 * (issue 9's scenario 1: the KVM importer of a vfio BAR during a function
 * reset in every import path: `@dmalab/kvm`'s own scenarios, app 5's
 * first-access races, and the unrechecked get_pfn importer the explorer
 * must catch), and scenarios 2 and 5 from `@dmalab/mlx5` (dynamic MR
 * invalidation racing RDMA traffic and GPU eviction; the importer that
 * ignores the invalidate).
 *
 * @module
 */
import type { AppDefinition } from "@dmalab/app-kit";
import { attachApp, attachScenarios } from "@dmalab/app-attach";
import { customApp } from "@dmalab/app-custom";
import { mmapApp } from "@dmalab/app-mmap";
import { vmapApp } from "@dmalab/app-vmap";
import { virtioApp } from "@dmalab/app-virtio";
import { noRecheckScenario, PFN_CONFIGS, pfnApp, resetRaceScenario } from "@dmalab/app-pfn";
import { dmaBufScenarios } from "@dmalab/dma-buf";
import { registerScenario, scenarios } from "@dmalab/explorer";
import { barShareScenarios } from "@dmalab/kvm";

/** Every app, in tour order. */
export const apps: readonly AppDefinition[] = [vmapApp, mmapApp, attachApp, virtioApp, pfnApp];

/** Example apps: runnable with `dmalab run`, not part of the tour. */
export const examples: readonly AppDefinition[] = [customApp];

/** Looks an app up by name (the tour's apps, then the examples). */
export function findApp(name: string): AppDefinition | undefined {
  return [...apps, ...examples].find((a) => a.name === name);
}

let registered = false;

/** Registers the driver scenarios with the explorer (once). */
export function registerDriverScenarios(): void {
  if (registered) return;
  registered = true;
  const have = new Set(scenarios().map((s) => s.name));
  const mine = [
    ...barShareScenarios(),
    ...Object.keys(PFN_CONFIGS).map((c) => resetRaceScenario(c)),
    noRecheckScenario(),
    ...attachScenarios(),
    ...dmaBufScenarios(),
  ];
  for (const s of mine) {
    if (!have.has(s.name)) registerScenario(s);
  }
}
