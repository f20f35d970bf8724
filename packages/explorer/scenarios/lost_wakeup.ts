/**
 * DOC: lost wake-up
 *
 * A waiter that tests a condition and then goes to sleep without being on a
 * wait queue can miss its wake-up: when the waker sets the condition and
 * calls `wake_up_process()` between the waiter's test and its sleep, the
 * wake-up finds the waiter still running and does nothing, and the waiter
 * then sleeps forever (the "lost wake-up" problem the wait_event macros of
 * include/linux/wait.h solve by queueing the waiter and setting its state
 * before re-testing the condition). {@linkcode lostWakeup} has the bug; the
 * explorer finds the schedule and the scheduler reports the deadlock.
 * {@linkcode waitQueueWakeup} uses {@linkcode WaitQueueHead.waitEvent} and
 * `wake_up()` and is clean.
 *
 * Locking rules: `ready` is written by the waker only; the waiter's task
 * state is touched by the waiter's sleep and the waker's wake-up (declared
 * as one object so the two are never reordered blindly).
 *
 * @module
 */
import { type Kernel, type Task, WaitQueueHead, type WaitTarget } from "@dmalab/kernel";
import { NO_RAM, type Scenario } from "../scenario.ts";

/** Shared state of the wake-up scenarios. */
export interface WakeupState {
  /** The condition the waiter waits for. */
  ready: boolean;
  /** The waiter saw the condition and ran on. */
  woken: boolean;
}

/** `lost-wakeup`: test-then-sleep without a wait queue; the explorer finds the hang. */
export const lostWakeup: Scenario<WakeupState> = {
  name: "lost-wakeup",
  description:
    "waiter tests a flag then sleeps without a wait queue; wake_up_process in the window is lost",
  expect: "bug",
  worldOptions: NO_RAM,
  build(world: Kernel): WakeupState {
    const s: WakeupState = { ready: false, woken: false };
    const readyId = world.nextId();
    const taskStateId = world.nextId();
    const sched = world.sched;
    const sleepOn: WaitTarget = { name: "schedule() without a wait queue", owners: () => [] };
    let waiter: Task | null = null;
    waiter = world.spawn("waiter", async () => {
      await sched.preempt("load ready", readyId, "read");
      if (!s.ready) {
        // BUG: between the test and the sleep a wake-up is not seen.
        await sched.preempt("set_current_state(TASK_UNINTERRUPTIBLE)", taskStateId, "write");
        await sched.block(sleepOn, { label: "schedule" });
      }
      s.woken = true;
    });
    world.spawn("waker", async () => {
      await sched.preempt("store ready", readyId, "write");
      s.ready = true;
      await sched.preempt("wake_up_process", taskStateId, "write");
      sched.wake(waiter!);
    });
    return s;
  },
  fingerprint: (_w: Kernel, s: WakeupState): string => `${+s.ready}${+s.woken}`,
};

/** `waitqueue-wakeup`: the same hand-off with `wait_event` / `wake_up`; clean. */
export const waitQueueWakeup: Scenario<WakeupState> = {
  name: "waitqueue-wakeup",
  description: "the same hand-off with wait_event() and wake_up() on a wait queue: no lost wake-up",
  expect: "clean",
  worldOptions: NO_RAM,
  build(world: Kernel): WakeupState {
    const s: WakeupState = { ready: false, woken: false };
    const readyId = world.nextId();
    const sched = world.sched;
    const wq = new WaitQueueHead(sched, "ready_wq");
    const wqId = world.nextId();
    world.spawn("waiter", async () => {
      // wait_event tests, queues, sleeps and re-tests: it touches `ready` and the queue
      await sched.preempt("wait_event(ready_wq)");
      await wq.waitEvent(() => s.ready);
      s.woken = true;
    });
    world.spawn("waker", async () => {
      await sched.preempt("store ready", readyId, "write");
      s.ready = true;
      await sched.preempt("wake_up(ready_wq)", wqId, "write");
      wq.wakeUp();
    });
    return s;
  },
  check: (_w: Kernel, s: WakeupState): string[] =>
    s.woken ? [] : ["waiter never saw the condition"],
  fingerprint: (_w: Kernel, s: WakeupState): string => `${+s.ready}${+s.woken}`,
};
