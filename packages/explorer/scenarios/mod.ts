/**
 * DOC: kernel-only scenarios
 *
 * The scenarios that need nothing but @dmalab/kernel, registered in the
 * explorer's registry when this module loads (driver packages register
 * theirs with `registerScenario`).
 *
 * @module
 */
import { registerScenario, type Scenario } from "../scenario.ts";
import { abbaDeadlock, abbaLockdep, abbaOrdered } from "./abba.ts";
import { counterMutex, counterRace } from "./counter.ts";
import { lostWakeup, waitQueueWakeup } from "./lost_wakeup.ts";
import { rwsemReaders, tornRead } from "./rwsem.ts";
import { wwWaitDie, wwWoundWait } from "./ww_mutex.ts";

export * from "./abba.ts";
export * from "./counter.ts";
export * from "./lost_wakeup.ts";
export * from "./rwsem.ts";
export * from "./ww_mutex.ts";

/** The scenarios this package ships, in listing order. */
// deno-lint-ignore no-explicit-any
export const builtinScenarios: readonly Scenario<any>[] = [
  counterRace,
  counterMutex,
  lostWakeup,
  waitQueueWakeup,
  abbaLockdep,
  abbaDeadlock,
  abbaOrdered,
  tornRead,
  rwsemReaders,
  wwWaitDie,
  wwWoundWait,
];

for (const s of builtinScenarios) registerScenario(s);
