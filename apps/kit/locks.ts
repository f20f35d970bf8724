/**
 * DOC: locks held, as spans
 *
 * {@linkcode trackLocks} samples every task's held-lock stack (lockdep's
 * `task.heldLocks`, `struct held_lock`) at every scheduling point, through
 * the scheduler's step observer, and records each hold as a span on the
 * track `lock <name>` of the {@linkcode Recorder}. Only holds that span a
 * scheduling point are seen (a sleeping lock held across a sleep, a
 * reservation lock held around a fence wait); a spinlock taken and
 * released without a scheduling point in between is not, which is also
 * why the figures say "held across a scheduling point". Needs lockdep on
 * (the default).
 *
 * Locking: the observer runs synchronously at scheduling points; it only
 * reads task state.
 *
 * @module
 */
import type { Kernel, PickContext, Task } from "@dmalab/kernel";
import type { Recorder } from "./recorder.ts";

/** A running lock tracker. */
export interface LockTracker {
  /** Runs `fn` too at every scheduling point (apps that need their own observer). */
  also(fn: ((ctx: PickContext, next: Task) => void) | null): void;
  /** Closes the spans still open and removes the observer. */
  finish(): void;
  /** Holds recorded so far. */
  readonly holds: number;
}

/** Starts tracking lock holds of `world` into `rec`. */
export function trackLocks(world: Kernel, rec: Recorder): LockTracker {
  const open = new Map<string, { start: number; lock: string; task: string }>();
  let extra: ((ctx: PickContext, next: Task) => void) | null = null;
  let holds = 0;
  const close = (key: string, now: number) => {
    const o = open.get(key)!;
    open.delete(key);
    holds++;
    rec.span(`lock ${o.lock}`, `held by ${o.task}`, o.start, now);
  };
  const observer = (ctx: PickContext, next: Task) => {
    extra?.(ctx, next);
    const now = world.sched.now;
    const seen = new Set<string>();
    for (const t of world.sched.tasks) {
      if (t.state === "done") continue;
      for (const h of t.heldLocks as { instance?: { name?: string } }[]) {
        const lock = h.instance?.name ?? "?";
        const key = `${t.pid}:${lock}`;
        seen.add(key);
        if (!open.has(key)) open.set(key, { start: now, lock, task: `${t.name}-${t.pid}` });
      }
    }
    for (const key of [...open.keys()]) if (!seen.has(key)) close(key, now);
  };
  world.sched.observer = observer;
  return {
    also(fn) {
      extra = fn;
    },
    finish() {
      for (const key of [...open.keys()]) close(key, world.sched.now);
      if (world.sched.observer === observer) world.sched.observer = null;
    },
    get holds() {
      return holds;
    },
  };
}
