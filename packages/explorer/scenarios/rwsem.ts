/**
 * DOC: readers and a writer on a two-field record
 *
 * A writer updates a record's two fields one after the other; two readers
 * read both fields and must never see them disagree (a torn read). With the
 * record under a {@linkcode RwSemaphore} (`down_read`/`up_read` for the
 * readers, `down_write`/`up_write` for the writer, kernel/locking/rwsem.c)
 * no schedule tears; {@linkcode tornRead} drops the semaphore and the
 * explorer finds the reader that sees the half-written record.
 *
 * Locking rules: `a` and `b` are written only under the write side, read
 * under the read side. Each access is a preemption point naming the record
 * with its access, so the readers' reads commute with each other and
 * partial-order reduction skips their reorderings.
 *
 * @module
 */
import { type Kernel, RwSemaphore } from "@dmalab/kernel";
import { NO_RAM, type Scenario } from "../scenario.ts";

/** Shared state of the record scenarios. */
export interface RecordState {
  /** Object id of the record. */
  readonly id: number;
  /** First field. */
  a: number;
  /** Second field; equal to `a` whenever no write is half done. */
  b: number;
  /** Torn reads seen: `[a, b]` pairs that disagree. */
  readonly torn: [number, number][];
}

function recordScenario(name: string, locked: boolean): Scenario<RecordState> {
  return {
    name,
    description: locked
      ? "two readers and a writer on a two-field record under an rw_semaphore: no torn read"
      : "two readers and a writer on a two-field record without a lock: a torn read",
    expect: locked ? "clean" : "bug",
    worldOptions: NO_RAM,
    build(world: Kernel): RecordState {
      const s: RecordState = { id: world.nextId(), a: 0, b: 0, torn: [] };
      const sem = locked ? new RwSemaphore(world, "record_rwsem") : null;
      const sched = world.sched;
      world.spawn("writer", async () => {
        if (sem) await sem.downWrite();
        await sched.preempt("store a", s.id, "write");
        s.a = 1;
        await sched.preempt("store b", s.id, "write");
        s.b = 1;
        if (sem) sem.upWrite();
      });
      for (const n of ["reader0", "reader1"]) {
        world.spawn(n, async () => {
          if (sem) await sem.downRead();
          await sched.preempt("load a", s.id, "read");
          const a = s.a;
          await sched.preempt("load b", s.id, "read");
          const b = s.b;
          if (a !== b) s.torn.push([a, b]);
          if (sem) sem.upRead();
        });
      }
      return s;
    },
    invariants(_world: Kernel, s: RecordState): string[] {
      return s.torn.map(([a, b]) => `torn read: a=${a} b=${b}`);
    },
    fingerprint(_world: Kernel, s: RecordState): number {
      return s.a * 4 + s.b * 2 + (s.torn.length ? 1 : 0);
    },
  };
}

/** `torn-read`: readers without the semaphore see the half-written record. */
export const tornRead: Scenario<RecordState> = recordScenario("torn-read", false);

/** `rwsem-readers`: the same under an rw_semaphore; clean. */
export const rwsemReaders: Scenario<RecordState> = recordScenario("rwsem-readers", true);
