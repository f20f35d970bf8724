/**
 * DOC: dma_fence
 *
 * `struct dma_fence` (drivers/dma-buf/dma-fence.c, include/linux/dma-fence.h):
 * a one-shot completion point of some DMA work, on a timeline (`context`)
 * where fences are totally ordered by `seqno`.
 *
 * Locking rules:
 * - `fence.lock` (an irq-safe spinlock, inline or shared) protects the
 *   callback list, the flags and the error. The `*Locked` methods require it
 *   held (checked as `lockdep_assert_held` does); the others take it.
 * - Callbacks run with the lock held, in atomic context, in registration
 *   order; they must not sleep and must not take this fence's lock.
 * - `signal()` wraps the signalling in `dma_fence_begin_signalling()` /
 *   `dma_fence_end_signalling()`; every wait passes `__dma_fence_might_wait()`,
 *   so lockdep sees the dependencies (see signalling.ts).
 * - A wait may sleep: it is `async`, runs only inside a task and never with a
 *   spinlock held.
 *
 * Contexts and the stub fence are per world (the kernel has them global).
 * Time stamps are the world's virtual time in ns (`ktime_get()`); timeouts are
 * in jiffies of the world's HZ.
 *
 * @module
 */
import {
  Errno,
  type Kernel,
  KernelError,
  Kref,
  MAX_SCHEDULE_TIMEOUT,
  type Task,
} from "@dmalab/kernel";
import { FenceLock } from "./fence_lock.ts";
import { dmaFenceBeginSignalling, dmaFenceEndSignalling, dmaFenceMightWait } from "./signalling.ts";

/** `DMA_FENCE_FLAG_INITIALIZED_BIT` (NEW flag order). */
export const DMA_FENCE_FLAG_INITIALIZED_BIT = 0;
/** `DMA_FENCE_FLAG_INLINE_LOCK_BIT`: the fence uses its own lock. */
export const DMA_FENCE_FLAG_INLINE_LOCK_BIT = 1;
/** `DMA_FENCE_FLAG_SEQNO64_BIT`: seqnos compare as 64-bit numbers. */
export const DMA_FENCE_FLAG_SEQNO64_BIT = 2;
/** `DMA_FENCE_FLAG_SIGNALED_BIT`. */
export const DMA_FENCE_FLAG_SIGNALED_BIT = 3;
/** `DMA_FENCE_FLAG_TIMESTAMP_BIT`: `timestamp` is valid. */
export const DMA_FENCE_FLAG_TIMESTAMP_BIT = 4;
/** `DMA_FENCE_FLAG_ENABLE_SIGNAL_BIT`: software signalling was requested. */
export const DMA_FENCE_FLAG_ENABLE_SIGNAL_BIT = 5;
/** `DMA_FENCE_FLAG_USER_BITS`: first bit drivers may use. */
export const DMA_FENCE_FLAG_USER_BITS = 6;

/** `MAX_ERRNO`. */
export const MAX_ERRNO = 4095;

const SIGNALED = 1 << DMA_FENCE_FLAG_SIGNALED_BIT;
const TIMESTAMP = 1 << DMA_FENCE_FLAG_TIMESTAMP_BIT;
const ENABLE_SIGNAL = 1 << DMA_FENCE_FLAG_ENABLE_SIGNAL_BIT;
const SEQNO64 = 1 << DMA_FENCE_FLAG_SEQNO64_BIT;

/**
 * `struct dma_fence_ops`. Only the two name callbacks are mandatory
 * (`dma_fence_init` BUGs without them).
 */
export interface DmaFenceOps {
  /** `get_driver_name`. */
  getDriverName(fence: DmaFence): string;
  /** `get_timeline_name`. */
  getTimelineName(fence: DmaFence): string;
  /**
   * `enable_signaling`: called once, with the fence lock held, when someone
   * first needs the fence to signal by itself. Returning false signals it
   * at once.
   */
  enableSignaling?(fence: DmaFence): boolean;
  /** `signaled`: peeks at the hardware; true makes `isSignaled` signal the fence. */
  signaled?(fence: DmaFence): boolean;
  /** `wait` (deprecated custom wait): returns like `dma_fence_wait_timeout`. */
  wait?(fence: DmaFence, intr: boolean, timeout: number): Promise<number>;
  /** `release`: called on the last put; should end with `fence.free()`. */
  release?(fence: DmaFence): void;
  /** `set_deadline`: a hint of when a waiter needs the fence (ns). */
  setDeadline?(fence: DmaFence, deadline: number): void;
}

/** `dma_fence_func_t`. Runs in atomic context with the fence lock held. */
export type DmaFenceFunc = (fence: DmaFence, cb: DmaFenceCb) => void;

/**
 * `struct dma_fence_cb`: a callback slot. One slot can be queued on one
 * fence at a time.
 */
export class DmaFenceCb {
  /** The function, set by `addCallback`. */
  func: DmaFenceFunc | null = null;
  /** Linked-list node (`cb->node`); null when not queued. */
  prev: DmaFenceCb | null = null;
  /** Linked-list node (`cb->node`); null when not queued. */
  next: DmaFenceCb | null = null;
  /** The fence whose list holds this slot, or null (`list_empty(&cb->node)`). */
  owner: DmaFence | null = null;
}

/** Options of {@linkcode DmaFence}'s constructor. */
export interface DmaFenceInitOptions {
  /** External lock (`spinlock_t *lock`); omitted: the fence's inline lock. */
  lock?: FenceLock;
  /** `dma_fence_init64`: compare seqnos as 64-bit numbers. */
  seqno64?: boolean;
}

/** Per-world fence state: the context counter, the stub, live-fence accounting. */
export class DmaFenceWorld {
  /** Next fence context (`dma_fence_context_counter`, starts at 1 as in NEW kernels). */
  nextContext = 1;
  /** Fences initialised and not yet freed (the stub excluded). */
  live = 0;
  /** Fences initialised so far. */
  created = 0;
  /** The stub fence, made on first use. */
  stub: DmaFence | null = null;
}

/** The fence state of `world`. */
export function dmaFenceWorld(world: Kernel): DmaFenceWorld {
  return world.ext("dma-buf:fence", () => new DmaFenceWorld());
}

/**
 * `dma_fence_context_alloc(num)`: the first of `num` fresh consecutive
 * contexts. WARNs when `num` is 0 (and still returns the counter).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaFenceContextAlloc } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * dmaFenceContextAlloc(world, 2); // 1
 * dmaFenceContextAlloc(world, 1); // 3
 * ```
 */
export function dmaFenceContextAlloc(world: Kernel, num: number): number {
  world.warnOn(num === 0, "dma_fence_context_alloc: num == 0 (WARN_ON(!num))");
  const st = dmaFenceWorld(world);
  const ctx = st.nextContext;
  st.nextContext += num;
  return ctx;
}

/**
 * `__dma_fence_is_later(fence, f1, f2)`: seqno `f1` is after `f2` on `fence`'s
 * timeline, with 32-bit wrap-around unless the fence has 64-bit seqnos.
 */
export function dmaFenceSeqnoIsLater(seqno64: boolean, f1: number, f2: number): boolean {
  if (seqno64) return f1 > f2;
  return ((f1 - f2) | 0) > 0;
}

/** Where a fence is in its life. */
export type DmaFenceKind = "fence" | "array" | "chain";

/**
 * A dma_fence. Construct one per `dma_fence_init`; subclasses are the
 * containers (array, chain).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { DmaFence, DmaFenceCb, dmaFenceContextAlloc } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const ops = { getDriverName: () => "gpu", getTimelineName: () => "gfx" };
 * const f = new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1);
 * const seen: number[] = [];
 * f.addCallback(new DmaFenceCb(), () => seen.push(1)); // 0
 * f.signal();
 * seen.length; // 1
 * f.getStatus(); // 1
 * f.put();
 * ```
 */
export class DmaFence {
  /** The world the fence lives in. */
  readonly world: Kernel;
  /** The lock protecting this fence (inline or shared). */
  readonly lock: FenceLock;
  /** Timeline (`context`). */
  readonly context: number;
  /** Position on the timeline (`seqno`). */
  readonly seqno: number;
  /** `flags`: the DMA_FENCE_FLAG_* bits plus driver bits from `DMA_FENCE_FLAG_USER_BITS`. */
  flags: number;
  #ops: DmaFenceOps | null;
  #error = 0;
  readonly #ref: Kref;
  #timestamp = 0;
  #head: DmaFenceCb | null = null;
  #tail: DmaFenceCb | null = null;
  #freed = false;
  readonly #counted: boolean;

  /**
   * `dma_fence_init` (or `dma_fence_init64` with `seqno64`). BUGs when `ops`
   * lacks a name callback. The new fence holds one reference.
   */
  constructor(
    world: Kernel,
    ops: DmaFenceOps,
    context: number,
    seqno: number,
    options: DmaFenceInitOptions = {},
  ) {
    if (
      !ops || typeof ops.getDriverName !== "function" || typeof ops.getTimelineName !== "function"
    ) {
      world.bug(
        "BUG",
        "kernel BUG at drivers/dma-buf/dma-fence.c: dma_fence_init: ops without get_driver_name/get_timeline_name",
      );
    }
    this.world = world;
    this.#ref = new Kref(world, "dma_fence.refcount");
    this.#ops = ops;
    this.context = context;
    this.seqno = seqno;
    this.lock = options.lock ?? new FenceLock(world);
    this.flags = (1 << DMA_FENCE_FLAG_INITIALIZED_BIT) |
      (options.lock ? 0 : 1 << DMA_FENCE_FLAG_INLINE_LOCK_BIT) |
      (options.seqno64 ? SEQNO64 : 0);
    const st = dmaFenceWorld(world);
    st.created++;
    this.#counted = !(options as { stub?: boolean }).stub;
    if (this.#counted) st.live++;
    this.#trace("dma_fence_init");
  }

  /** What kind of fence this is (`dma_fence_is_array`/`is_chain`). */
  get kind(): DmaFenceKind {
    return "fence";
  }

  /** `fence->ops`; null once detached at signal time. */
  get ops(): DmaFenceOps | null {
    return this.#ops;
  }

  /** `fence->error` (0 or a negative errno). */
  get error(): number {
    return this.#error;
  }

  /**
   * Writes `fence->error` directly, with no checks, as containers do for
   * their internal PENDING_ERROR marker. Drivers use {@linkcode DmaFence.setError}.
   */
  setErrorRaw(error: number): void {
    this.#error = error;
  }

  /** Current reference count (`kref_read`). */
  get refcount(): number {
    return this.#ref.read();
  }

  /** True after the last reference was dropped and the memory freed. */
  get freed(): boolean {
    return this.#freed;
  }

  /** True when the fence compares seqnos as 64-bit numbers. */
  get seqno64(): boolean {
    return (this.flags & SEQNO64) !== 0;
  }

  /** `kind` is array or chain (`dma_fence_is_container`). */
  get isContainer(): boolean {
    return this.kind !== "fence";
  }

  #names(): { driver: string; timeline: string } {
    const ops = this.#ops;
    if (!ops) return { driver: "detached-driver", timeline: "signaled-timeline" };
    return { driver: ops.getDriverName(this), timeline: ops.getTimelineName(this) };
  }

  #trace(name: string, names?: { driver: string; timeline: string }): void {
    const tr = this.world.trace;
    if (!tr.enabled) return;
    const n = names ?? this.#names();
    tr.event(name, {
      driver: n.driver,
      timeline: n.timeline,
      context: this.context,
      seqno: this.seqno,
    });
  }

  /** `trace_dma_fence_emit`: drivers call it when the fence is handed to hardware. */
  traceEmit(): void {
    this.#trace("dma_fence_emit");
  }

  /**
   * `dma_fence_driver_name`: the driver name, or `"detached-driver"` once
   * signalled.
   */
  driverName(): string {
    if (this.testSignaledFlag()) return "detached-driver";
    return this.#ops!.getDriverName(this);
  }

  /**
   * `dma_fence_timeline_name`: the timeline name, or `"signaled-timeline"`
   * once signalled.
   */
  timelineName(): string {
    if (this.testSignaledFlag()) return "signaled-timeline";
    return this.#ops!.getTimelineName(this);
  }

  // ---- references ------------------------------------------------------

  /** `dma_fence_get`: takes a reference; returns the fence (warns on a dead one). */
  get(): this {
    this.#ref.get();
    return this;
  }

  /** `dma_fence_get_rcu`: a reference, or null when the count already hit zero. */
  getRcu(): this | null {
    return this.#ref.getUnlessZero() ? this : null;
  }

  /** `dma_fence_put`: drops a reference; the last one releases the fence. */
  put(): void {
    this.#ref.put(() => this.#release());
  }

  /** `dma_fence_release`: the kref release function. */
  #release(): void {
    this.#trace("dma_fence_destroy");
    if (this.#head !== null && !this.testSignaledFlag()) {
      const n = this.#names();
      this.world.bug(
        "WARN",
        `WARNING: Fence ${n.driver}:${n.timeline}:${this.context.toString(16)}:${
          this.seqno.toString(16)
        } released with pending signals!`,
      );
      this.lock.lock();
      this.#error = -Errno.EDEADLK;
      this.signalLocked();
      this.lock.unlock();
    }
    const ops = this.#ops;
    if (ops?.release) ops.release(this);
    else this.free();
  }

  /** `dma_fence_free`: frees the memory (kfree_rcu); called by a release op. */
  free(): void {
    if (this.#freed) {
      this.world.bug("BUG", `BUG: double free of dma_fence ${this.context}:${this.seqno}`);
      return;
    }
    this.#freed = true;
    if (this.#counted) dmaFenceWorld(this.world).live--;
  }

  // ---- signalling -------------------------------------------------------

  /** `dma_fence_test_signaled_flag`: the SIGNALED bit, no side effects. */
  testSignaledFlag(): boolean {
    return (this.flags & SIGNALED) !== 0;
  }

  /**
   * `dma_fence_signal_timestamp_locked`: signals with time stamp `ts` (ns),
   * runs the callbacks in registration order. No effect when already signalled.
   * Detaches `ops` when it has neither `wait` nor `release`.
   */
  signalTimestampLocked(ts: number): void {
    this.lock.assertHeld("dma_fence_signal_timestamp_locked");
    if (this.flags & SIGNALED) return;
    this.flags |= SIGNALED;
    const traced = this.world.trace.enabled ? this.#names() : undefined;
    const ops = this.#ops;
    if (ops && !ops.release && !ops.wait) this.#ops = null;
    let cb = this.#head;
    this.#head = this.#tail = null;
    this.#timestamp = ts;
    this.flags |= TIMESTAMP;
    if (traced) this.#trace("dma_fence_signaled", traced);
    while (cb !== null) {
      const next = cb.next;
      cb.prev = cb.next = null;
      cb.owner = null;
      cb.func!(this, cb);
      cb = next;
    }
  }

  /** `dma_fence_signal_locked`: signals now, lock held. */
  signalLocked(): void {
    this.signalTimestampLocked(this.world.sched.now);
  }

  /** `dma_fence_signal_timestamp`: takes the lock and signals with `ts`. */
  signalTimestamp(ts: number): void {
    this.lock.lock();
    try {
      this.signalTimestampLocked(ts);
    } finally {
      this.lock.unlock();
    }
  }

  /**
   * `dma_fence_signal`: signals now inside a signalling critical section.
   * Idempotent (NEW kernels return void; see {@linkcode DmaFence.checkAndSignal}).
   */
  signal(): void {
    const cookie = dmaFenceBeginSignalling(this.world);
    this.lock.lock();
    try {
      this.signalTimestampLocked(this.world.sched.now);
    } finally {
      this.lock.unlock();
      dmaFenceEndSignalling(this.world, cookie);
    }
  }

  /** `dma_fence_check_and_signal_locked`: signals; true if it already was. */
  checkAndSignalLocked(): boolean {
    const was = this.testSignaledFlag();
    this.signalLocked();
    return was;
  }

  /** `dma_fence_check_and_signal`: signals; true if it already was signalled. */
  checkAndSignal(): boolean {
    this.lock.lock();
    try {
      return this.checkAndSignalLocked();
    } finally {
      this.lock.unlock();
    }
  }

  /**
   * `dma_fence_is_signaled`: the SIGNALED bit, or `ops.signaled()` (which then
   * signals the fence). Does not enable signalling.
   */
  isSignaled(): boolean {
    if (this.flags & SIGNALED) return true;
    const ops = this.#ops;
    if (ops?.signaled && ops.signaled(this)) {
      this.signal();
      return true;
    }
    return false;
  }

  /** `dma_fence_is_signaled_locked`: as `isSignaled`, lock held. */
  isSignaledLocked(): boolean {
    this.lock.assertHeld("dma_fence_is_signaled_locked");
    if (this.flags & SIGNALED) return true;
    const ops = this.#ops;
    if (ops?.signaled && ops.signaled(this)) {
      this.signalLocked();
      return true;
    }
    return false;
  }

  /** `__dma_fence_enable_signaling`: lock held; false when the fence is (now) signalled. */
  #enableSignalingLocked(): boolean {
    const wasSet = (this.flags & ENABLE_SIGNAL) !== 0;
    this.flags |= ENABLE_SIGNAL;
    if (this.testSignaledFlag()) return false;
    const ops = this.#ops;
    if (!wasSet && ops?.enableSignaling) {
      this.#trace("dma_fence_enable_signal");
      if (!ops.enableSignaling(this)) {
        this.signalLocked();
        return false;
      }
    }
    return true;
  }

  /** `dma_fence_enable_sw_signaling`: asks the fence to signal by itself. */
  enableSwSignaling(): void {
    this.lock.lock();
    try {
      this.#enableSignalingLocked();
    } finally {
      this.lock.unlock();
    }
  }

  /**
   * `dma_fence_add_callback`: queues `func` to run at signal time. Returns 0,
   * or `-ENOENT` when the fence is already signalled (the callback is then
   * never called), or `-EINVAL` (with a WARN) without a function. The kernel's
   * int is returned as is because -ENOENT is an expected outcome, not a failure.
   */
  addCallback(cb: DmaFenceCb, func: DmaFenceFunc): number {
    if (this.world.warnOn(typeof func !== "function", "dma_fence_add_callback: !func")) {
      return -Errno.EINVAL;
    }
    if (cb.owner !== null) {
      this.world.bug(
        "BUG",
        "list_add double add: dma_fence_cb already queued on a fence",
        "list_add double add: dma_fence_cb already queued on a fence\n" +
          "a callback slot can be registered on only one fence at a time (dma_fence_add_callback)",
      );
    }
    if (this.testSignaledFlag()) {
      cb.prev = cb.next = null;
      cb.owner = null;
      return -Errno.ENOENT;
    }
    this.lock.lock();
    try {
      if (this.#enableSignalingLocked()) {
        cb.func = func;
        this.#linkTail(cb);
        return 0;
      }
      cb.prev = cb.next = null;
      cb.owner = null;
      return -Errno.ENOENT;
    } finally {
      this.lock.unlock();
    }
  }

  #linkTail(cb: DmaFenceCb): void {
    cb.owner = this;
    cb.next = null;
    cb.prev = this.#tail;
    if (this.#tail) this.#tail.next = cb;
    else this.#head = cb;
    this.#tail = cb;
  }

  #linkHead(cb: DmaFenceCb): void {
    cb.owner = this;
    cb.prev = null;
    cb.next = this.#head;
    if (this.#head) this.#head.prev = cb;
    else this.#tail = cb;
    this.#head = cb;
  }

  #unlink(cb: DmaFenceCb): void {
    if (cb.prev) cb.prev.next = cb.next;
    else if (this.#head === cb) this.#head = cb.next;
    if (cb.next) cb.next.prev = cb.prev;
    else if (this.#tail === cb) this.#tail = cb.prev;
    cb.prev = cb.next = null;
    cb.owner = null;
  }

  /**
   * `dma_fence_remove_callback`: true if `cb` was still queued (now removed),
   * false if it already ran or was never queued here.
   */
  removeCallback(cb: DmaFenceCb): boolean {
    this.lock.lock();
    try {
      if (cb.owner !== this) return false;
      this.#unlink(cb);
      return true;
    } finally {
      this.lock.unlock();
    }
  }

  /** Number of callbacks queued (for tests and invariant checks). */
  get pendingCallbacks(): number {
    let n = 0;
    for (let c = this.#head; c; c = c.next) n++;
    return n;
  }

  /** `dma_fence_get_status_locked`: 0 pending, 1 signalled, or the negative error. */
  getStatusLocked(): number {
    if (this.isSignaledLocked()) return this.#error || 1;
    return 0;
  }

  /** `dma_fence_get_status`: 0 pending, 1 signalled, or the negative error. */
  getStatus(): number {
    this.lock.lock();
    try {
      return this.getStatusLocked();
    } finally {
      this.lock.unlock();
    }
  }

  /**
   * `dma_fence_set_error`: records an error to report once signalled. WARNs
   * when already signalled or when `error` is not in [-MAX_ERRNO, -1]; the
   * value is stored anyway (permissive mode).
   */
  setError(error: number): void {
    this.world.warnOn(
      this.testSignaledFlag(),
      `dma_fence_set_error: fence ${this.context}:${this.seqno} already signaled (error must be set before signalling)`,
    );
    this.world.warnOn(
      error >= 0 || error < -MAX_ERRNO,
      `dma_fence_set_error: error ${error} is not a negative errno`,
    );
    this.#error = error;
  }

  /**
   * `dma_fence_timestamp`: the signal time (ns). WARNs and returns now when
   * the fence is not signalled.
   */
  timestamp(): number {
    if (this.world.warnOn(!this.testSignaledFlag(), "dma_fence_timestamp: fence not signaled")) {
      return this.world.sched.now;
    }
    return this.#timestamp;
  }

  /** `dma_fence_set_deadline`: forwards to `ops.setDeadline` while unsignalled. */
  setDeadline(deadline: number): void {
    const ops = this.#ops;
    if (ops?.setDeadline && !this.isSignaled()) ops.setDeadline(this, deadline);
  }

  /** `dma_fence_describe`: `"<context>:<seqno> <timeline> <driver> [un]signalled"`. */
  describe(): string {
    let timeline = "";
    let driver = "";
    let un = "";
    if (!this.isSignaled()) {
      timeline = this.timelineName();
      driver = this.driverName();
      un = "un";
    }
    return `${this.context}:${this.seqno} ${timeline} ${driver} ${un}signalled\n`;
  }

  // ---- waiting -----------------------------------------------------------

  /**
   * `dma_fence_wait_timeout(fence, intr, timeout)`: `timeout` in jiffies or
   * `MAX_SCHEDULE_TIMEOUT`. Returns the jiffies left (> 0) when signalled
   * (1 for timeout 0), 0 on timeout, `-ERESTARTSYS` when interrupted, or
   * `-EINVAL` (with a WARN) for a negative timeout. Custom `ops.wait` may
   * return other values.
   */
  async waitTimeout(intr: boolean, timeout: number): Promise<number> {
    if (this.world.warnOn(timeout < 0, `dma_fence_wait_timeout: timeout ${timeout} < 0`)) {
      return -Errno.EINVAL;
    }
    this.world.sched.mightSleep("dma_fence_wait_timeout");
    dmaFenceMightWait(this.world);
    this.enableSwSignaling();
    const names = this.world.trace.enabled ? this.#names() : undefined;
    if (names) this.#trace("dma_fence_wait_start", names);
    const ops = this.#ops;
    const ret = ops?.wait
      ? await ops.wait(this, intr, timeout)
      : await this.defaultWait(intr, timeout);
    if (names) this.#trace("dma_fence_wait_end", names);
    return ret;
  }

  /**
   * `dma_fence_wait(fence, intr)`: waits without a timeout; 0 or a negative
   * error (`-ERESTARTSYS`).
   */
  async wait(intr: boolean): Promise<number> {
    const ret = await this.waitTimeout(intr, MAX_SCHEDULE_TIMEOUT);
    return ret < 0 ? ret : 0;
  }

  /**
   * `dma_fence_default_wait`: sleeps on a callback queued at the head of the
   * list until signalled, timed out or interrupted. Returns as
   * {@linkcode DmaFence.waitTimeout}.
   */
  async defaultWait(intr: boolean, timeout: number): Promise<number> {
    const sched = this.world.sched;
    let ret = timeout ? timeout : 1;
    this.lock.lock();
    let locked = true;
    try {
      if (this.testSignaledFlag()) return ret;
      const task: Task | null = sched.current;
      if (intr && task?.signalPending) return -Errno.ERESTARTSYS;
      if (!timeout) return 0;
      if (!task || task.kind === "irq") {
        this.lock.unlock();
        locked = false;
        throw new KernelError(
          "EPERM",
          "dma_fence_default_wait: sleeping wait called outside a task (run it in world.spawn/runTask)",
        );
      }
      const cb = new DmaFenceCb();
      cb.func = () => {
        sched.wake(task);
      };
      this.#linkHead(cb);
      const infinite = timeout >= MAX_SCHEDULE_TIMEOUT;
      const expire = infinite ? 0 : sched.jiffies + timeout;
      const target = {
        name: `dma_fence ${this.context}:${this.seqno}`,
        owners: (): readonly Task[] => [],
      };
      while (!this.testSignaledFlag() && ret > 0) {
        this.lock.unlock();
        locked = false;
        if (infinite) {
          await sched.block(target, { interruptible: intr, label: "dma_fence_default_wait" });
        } else {
          const ns = sched.jiffiesToNs(expire) - sched.now;
          await sched.block(target, {
            interruptible: intr,
            timeoutNs: Math.max(ns, 0),
            label: "dma_fence_default_wait",
          });
          ret = Math.max(expire - sched.jiffies, 0);
        }
        this.lock.lock();
        locked = true;
        if (ret > 0 && intr && task.signalPending) ret = -Errno.ERESTARTSYS;
      }
      if (cb.owner === this) this.#unlink(cb);
      return ret;
    } finally {
      if (locked) this.lock.unlock();
    }
  }

  /** `"context:seqno"`. */
  toString(): string {
    return `dma_fence ${this.context}:${this.seqno}`;
  }
}

/** `dma_fence_is_array`. */
export function dmaFenceIsArray(fence: DmaFence): boolean {
  return fence.kind === "array";
}

/** `dma_fence_is_chain`. */
export function dmaFenceIsChain(fence: DmaFence): boolean {
  return fence.kind === "chain";
}

/** `dma_fence_is_container`: an array or a chain node. */
export function dmaFenceIsContainer(fence: DmaFence): boolean {
  return fence.kind !== "fence";
}

/** `dma_fence_get`, NULL-safe. */
export function dmaFenceGet<F extends DmaFence>(fence: F | null | undefined): F | null {
  return fence ? fence.get() : null;
}

/** `dma_fence_put`, NULL-safe. */
export function dmaFencePut(fence: DmaFence | null | undefined): void {
  if (fence) fence.put();
}

/**
 * `dma_fence_is_later(f1, f2)`: f1 is after f2 on their common timeline.
 * WARNs and returns false when the contexts differ.
 */
export function dmaFenceIsLater(f1: DmaFence, f2: DmaFence): boolean {
  if (
    f1.world.warnOn(
      f1.context !== f2.context,
      `dma_fence_is_later: fences on different contexts (${f1.context} vs ${f2.context})`,
    )
  ) {
    return false;
  }
  return dmaFenceSeqnoIsLater(f1.seqno64, f1.seqno, f2.seqno);
}

/** `dma_fence_is_later_or_same`: the same fence, or later. */
export function dmaFenceIsLaterOrSame(f1: DmaFence, f2: DmaFence): boolean {
  return f1 === f2 || dmaFenceIsLater(f1, f2);
}

/**
 * `dma_fence_later(f1, f2)`: the later of two fences of one context, or null
 * when it is already signalled; WARN and null for different contexts.
 */
export function dmaFenceLater(f1: DmaFence, f2: DmaFence): DmaFence | null {
  if (
    f1.world.warnOn(
      f1.context !== f2.context,
      `dma_fence_later: fences on different contexts (${f1.context} vs ${f2.context})`,
    )
  ) {
    return null;
  }
  const later = dmaFenceSeqnoIsLater(f1.seqno64, f1.seqno, f2.seqno) ? f1 : f2;
  return later.isSignaled() ? null : later;
}

const stubOps: DmaFenceOps = {
  getDriverName: () => "stub",
  getTimelineName: () => "stub",
};

/**
 * `dma_fence_get_stub`: a reference to the world's always-signalled stub
 * fence (context 0, seqno 0, signalled at boot, time 0).
 */
export function dmaFenceGetStub(world: Kernel): DmaFence {
  const st = dmaFenceWorld(world);
  if (!st.stub) {
    const f = new DmaFence(world, stubOps, 0, 0, { stub: true } as DmaFenceInitOptions);
    f.flags |= ENABLE_SIGNAL;
    f.signalTimestamp(0);
    st.stub = f;
  }
  return st.stub.get();
}

/**
 * `dma_fence_allocate_private_stub(timestamp)`: a new, signalled fence with
 * the given time stamp (ns).
 */
export function dmaFenceAllocatePrivateStub(world: Kernel, timestamp: number): DmaFence {
  const f = new DmaFence(world, stubOps, 0, 0);
  f.flags |= ENABLE_SIGNAL;
  f.signalTimestamp(timestamp);
  return f;
}

/** Result of {@linkcode dmaFenceWaitAnyTimeout}. */
export interface WaitAnyResult {
  /** Jiffies left (> 0), 0 on timeout, or a negative errno. */
  readonly ret: number;
  /** Index of the first signalled fence (meaningful when `ret > 0`). */
  readonly idx: number;
}

/**
 * `dma_fence_wait_any_timeout`: sleeps until any of `fences` signals.
 * `-EINVAL` (with a WARN) for an empty array or a negative timeout.
 */
export async function dmaFenceWaitAnyTimeout(
  world: Kernel,
  fences: readonly DmaFence[],
  intr: boolean,
  timeout: number,
): Promise<WaitAnyResult> {
  if (
    world.warnOn(
      fences.length === 0 || timeout < 0,
      "dma_fence_wait_any_timeout: !fences || !count || timeout < 0",
    )
  ) {
    return { ret: -Errno.EINVAL, idx: 0 };
  }
  const sched = world.sched;
  if (timeout === 0) {
    for (let i = 0; i < fences.length; i++) {
      if (fences[i]!.isSignaled()) return { ret: 1, idx: i };
    }
    return { ret: 0, idx: 0 };
  }
  sched.mightSleep("dma_fence_wait_any_timeout");
  const task = sched.current;
  const cbs: DmaFenceCb[] = [];
  let ret = timeout;
  let idx = 0;
  let i = 0;
  const wakeFn = () => {
    if (task) sched.wake(task);
  };
  let done = false;
  for (; i < fences.length; i++) {
    const cb = new DmaFenceCb();
    cbs.push(cb);
    if (fences[i]!.addCallback(cb, wakeFn)) {
      idx = i;
      done = true;
      break;
    }
  }
  if (!done) {
    if (!task) {
      for (let j = 0; j < cbs.length; j++) fences[j]!.removeCallback(cbs[j]!);
      throw new KernelError("EPERM", "dma_fence_wait_any_timeout: called outside a task");
    }
    const infinite = timeout >= MAX_SCHEDULE_TIMEOUT;
    const expire = infinite ? 0 : sched.jiffies + timeout;
    const target = { name: "dma_fence_wait_any", owners: (): readonly Task[] => [] };
    while (ret > 0) {
      const k = fences.findIndex((f) => f.testSignaledFlag());
      if (k >= 0) {
        idx = k;
        break;
      }
      if (intr && task.signalPending) {
        ret = -Errno.ERESTARTSYS;
        break;
      }
      if (infinite) {
        await sched.block(target, { interruptible: intr, label: "dma_fence_wait_any" });
      } else {
        await sched.block(target, {
          interruptible: intr,
          timeoutNs: Math.max(sched.jiffiesToNs(expire) - sched.now, 0),
          label: "dma_fence_wait_any",
        });
        ret = Math.max(expire - sched.jiffies, 0);
      }
      if (ret > 0 && intr && task.signalPending) ret = -Errno.ERESTARTSYS;
    }
    i = fences.length;
  }
  while (i-- > 0) fences[i]!.removeCallback(cbs[i]!);
  return { ret, idx };
}

/**
 * `dma_fence_get_rcu_safe(&ptr)`: a reference to the fence `read()` returns,
 * retrying while that fence is dying or the pointer changed meanwhile; null
 * when the pointer is null.
 */
export function dmaFenceGetRcuSafe(read: () => DmaFence | null): DmaFence | null {
  let dead: DmaFence | null = null;
  for (;;) {
    const fence = read();
    if (!fence) return null;
    if (!fence.getRcu()) {
      if (fence === dead) {
        fence.world.bug(
          "BUG",
          "dma_fence_get_rcu_safe: the pointer keeps naming a released fence",
          "dma_fence_get_rcu_safe: the pointer keeps naming a released fence\n" +
            "the kernel would spin forever: whoever dropped the last reference must clear the pointer first",
        );
        return null;
      }
      dead = fence;
      continue;
    }
    if (fence === read()) return fence;
    fence.put();
  }
}
