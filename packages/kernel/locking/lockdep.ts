/**
 * DOC: lockdep, the runtime locking correctness validator
 *
 * A model of kernel/locking/lockdep.c (CONFIG_PROVE_LOCKING). Locks are
 * grouped into classes (one per {@linkcode LockClassKey} and subclass, the way
 * a `lock_class_key` and `mutex_lock_nested` subclass pick a class); every
 * task keeps a stack of the locks it holds (`task.heldLocks`); every time a
 * task takes lock B while holding A, the dependency A -> B is added to a
 * global graph. Before an edge is added the graph is searched for a path back
 * (`check_noncircular`), so an AB-BA inversion is reported the first time both
 * orders have been *seen*, even when the run itself never deadlocked.
 *
 * Rules, all reported through `world.bug("lockdep", ...)` in the kernel's
 * wording:
 * - "possible circular locking dependency detected" with the existing chain
 *   (`-> #1 (lock_A){+.+.}-{4:4}:`) and the CPU0/CPU1 scenario table;
 * - "possible recursive locking detected" (same class taken twice without a
 *   `nest_lock`, except recursive read after read);
 * - "bad unlock balance detected!" (releasing a lock the task does not hold);
 * - "Nested lock was not taken" (a `nest_lock` that is not held);
 * - `lockdep_assert_held` / `lockdep_assert_not_held`.
 *
 * Read locks follow the modern recursive-read rules (lockdep-design.rst,
 * "Dependency types and strong dependency paths"): every edge records whether
 * its source was held exclusive (E) or shared (S) and whether its target was a
 * recursive reader (R) or not (N); a cycle is reported only when it is a
 * strong path (no `-(xR)->` followed by `-(Sx)->`). `down_read` is a
 * non-recursive read (read=1), so rwsem reader recursion is reported, as in
 * lib/locking-selftest.c `rsem_AA1`.
 *
 * Like the kernel, the first report turns lockdep off for the rest of the
 * world's life (`debug_locks = 0`); {@linkcode Lockdep.reset} turns it back on
 * (the selftests' `reset_locks`). `new Kernel({ lockdep: false })` skips all
 * of it, including held-lock tracking, for benchmarks.
 *
 * While the world traces, every recorded acquisition and release emits the
 * `lock_acquire` / `lock_release` tracepoints (include/trace/events/lock.h),
 * so ftrace and Perfetto exports show locks taken and dropped between two
 * scheduling points too.
 *
 * Pseudo-locks (`struct lockdep_map` without a lock) are
 * {@linkcode LockdepMap}s from {@linkcode Lockdep.map}; dma-buf uses one for
 * `dma_fence_begin_signalling`.
 *
 * Not modelled: irq-safe/irq-unsafe inversion checks, wait-type (`{4:4}`)
 * nesting checks, lock statistics, and real stack traces: each acquisition
 * records a site label and the task instead.
 *
 * @module
 */
import type { Task } from "../sched/task.ts";
import { Task as TaskClass } from "../sched/task.ts";
import type { Kernel } from "../world.ts";

/** `MAX_LOCK_DEPTH`: held locks per task. */
export const MAX_LOCK_DEPTH = 48;

/** `MAX_LOCKDEP_SUBCLASSES`. */
export const MAX_LOCKDEP_SUBCLASSES = 8;

/**
 * lockdep wait types (`enum lockdep_wait_type`), printed as `-{outer:inner}`.
 * `SLEEP` for mutexes and rwsems, `CONFIG` for `spinlock_t`, `SPIN` for
 * `raw_spinlock_t`, `INV` (0) for pseudo-locks.
 */
export const LdWait = { INV: 0, FREE: 1, SPIN: 2, CONFIG: 3, SLEEP: 4 } as const;

/**
 * How a lock is taken: 0 exclusive (write), 1 shared non-recursive read
 * (`down_read`), 2 recursive read (`read_lock`), as lockdep's `read` argument.
 */
export type LockReadMode = 0 | 1 | 2;

/**
 * A `struct lock_class_key`: the identity of a lock class. Locks built with
 * the same key share a class; by default a lock's key is its name (as every
 * `mutex_init(&obj->lock)` call site gets one static key).
 */
export class LockClassKey {
  /** The class name lockdep prints (`&obj->lock`). */
  readonly name: string;
  /** Creates a key; `name` is what splats print. */
  constructor(name: string) {
    this.name = name;
  }
}

/**
 * `__lockdep_no_validate__` (`lockdep_set_novalidate_class`): locks of this
 * key are tracked as held but never validated nor used as the source of a
 * dependency, as the kernel does for `device->mutex`.
 */
export const LOCKDEP_NO_VALIDATE: LockClassKey = new LockClassKey("&dev->mutex");

/** One lock class (`struct lock_class`): a key plus a subclass. */
export class LockClass {
  /** Index, unique within the world's lockdep. */
  readonly id: number;
  /** The key. */
  readonly key: LockClassKey;
  /** `mutex_lock_nested` subclass (0..7). */
  readonly subclass: number;
  /** Inner wait type. */
  readonly waitInner: number;
  /** Outer wait type (0: same as inner). */
  readonly waitOuter: number;
  /** Usage bits: 1 write with irqs on, 2 read with irqs on, 4 write in irq, 8 read in irq. */
  usage = 0;
  /** `locks_after`: dependencies this class -> other, with their dep bits and trace. */
  readonly after: Map<LockClass, LockDep> = new Map();

  /** Created by {@linkcode Lockdep}. */
  constructor(
    id: number,
    key: LockClassKey,
    subclass: number,
    waitInner: number,
    waitOuter: number,
  ) {
    this.id = id;
    this.key = key;
    this.subclass = subclass;
    this.waitInner = waitInner;
    this.waitOuter = waitOuter;
  }

  /** The name as lockdep prints it: `name` or `name/subclass`. */
  get name(): string {
    return this.subclass ? `${this.key.name}/${this.subclass}` : this.key.name;
  }

  /** `(name){+.+.}-{4:4}` as `print_lock_name` formats it. */
  get label(): string {
    const c = (w: number, r: number): string => {
      const en = (this.usage & w) !== 0;
      const used = (this.usage & r) !== 0;
      return en && used ? "?" : en ? "+" : used ? "-" : ".";
    };
    const usage = c(1, 4) + c(2, 8) + c(1, 4) + c(2, 8);
    return `(${this.name}){${usage}}-{${this.waitOuter || this.waitInner}:${this.waitInner}}`;
  }
}

/** Dependency type bits (kernel `DEP_*_MASK`): source E/S, target R/N. */
const DEP_SR = 1;
const DEP_ER = 2;
const DEP_SN = 4;
const DEP_EN = 8;

/** A dependency edge `from -> to` (`struct lock_list`). */
export interface LockDep {
  /** Target class. */
  readonly to: LockClass;
  /** Dependency type bits (SR=1, ER=2, SN=4, EN=8). */
  dep: number;
  /** Where the dependency was first seen (site and task), for splats. */
  readonly trace: readonly string[];
}

/** An entry of a task's held-lock stack (`struct held_lock`). */
export class HeldLock {
  /** The map (lock instance) acquired. */
  instance: LockdepMap;
  /** Its class. */
  readonly cls: LockClass;
  /** 0 exclusive, 1 read, 2 recursive read. */
  read: LockReadMode;
  /** Acquired by a trylock. */
  readonly trylock: boolean;
  /** `nest_lock` given at acquisition. */
  readonly nestLock: LockdepMap | null;
  /** Merged same-class nested acquisitions (`references`). */
  references = 0;
  /** Acquisition site label. */
  readonly site: string;
  /** Chain key of the stack up to and including this lock. */
  chainKey = "";
  /** `hlock->check`: false for no-validate classes. */
  check = true;

  /** Created by {@linkcode Lockdep}. */
  constructor(
    instance: LockdepMap,
    cls: LockClass,
    read: LockReadMode,
    trylock: boolean,
    nestLock: LockdepMap | null,
    site: string,
  ) {
    this.instance = instance;
    this.cls = cls;
    this.read = read;
    this.trylock = trylock;
    this.nestLock = nestLock;
    this.site = site;
  }

  /** Class name (`HeldLockLike`). */
  get className(): string {
    return this.cls.name;
  }
}

/** Options for {@linkcode LockdepMap.acquire} (`lock_acquire` arguments). */
export interface LockAcquireOptions {
  /** 0 exclusive (default), 1 shared read, 2 recursive read. */
  read?: LockReadMode;
  /** A successful trylock: recorded, but adds no dependency and runs no checks. */
  trylock?: boolean;
  /** Subclass (`*_nested`), 0..7. */
  subclass?: number;
  /** The lock that serializes nesting of this class (`*_nest_lock`, ww ctx). */
  nestLock?: LockdepMap | null;
  /** Site label printed in splats (default: the map's name). */
  site?: string;
}

/** Options for a new {@linkcode LockdepMap}. */
export interface LockdepMapOptions {
  /** Class key; default: a key shared by every map of this name in the world. */
  key?: LockClassKey;
  /** Inner wait type (default `LdWait.INV`, as a bare `lockdep_map`). */
  waitInner?: number;
  /** Outer wait type (default 0: same as inner). */
  waitOuter?: number;
}

const ADDR_BASE = 0xffff888000000000n;

/**
 * A `struct lockdep_map`: what lockdep tracks for one lock instance. Every
 * lock has one (`lock.depMap`); a bare map is a pseudo-lock such as
 * `dma_fence_lockdep_map`, acquired and released around a section that
 * behaves like a lock.
 *
 * @example Signalling critical sections (dma_fence_begin/end_signalling)
 * ```ts
 * import { Kernel, Mutex } from "@dmalab/kernel";
 * const w = new Kernel({ strict: false });
 * const map = w.lockdep.map("dma_fence_map");
 * const lock = new Mutex(w, "driver_lock");
 * await w.runTask("t", async () => {
 *   // signalling path: takes driver_lock inside the section
 *   map.acquireRead({ trylock: true });
 *   await lock.lock();
 *   lock.unlock();
 *   map.release();
 *   // waiting path: waits for a fence (might_wait: the map as a write lock) under driver_lock
 *   await lock.lock();
 *   map.acquire();
 *   map.release();
 *   lock.unlock();
 * });
 * w.dmesg.includes("WARNING: possible circular locking dependency detected"); // true
 * ```
 */
export class LockdepMap {
  /** The name (class name unless a key says otherwise). */
  readonly name: string;
  /** Instance number (also the fake address in splats). */
  readonly id: number;
  readonly #lockdep: Lockdep;
  #key: LockClassKey;
  readonly #waitInner: number;
  readonly #waitOuter: number;
  readonly #classes: (LockClass | undefined)[] = [];

  /** Use {@linkcode Lockdep.map} or {@linkcode Lockdep.newMap}. */
  constructor(lockdep: Lockdep, name: string, id: number, options: LockdepMapOptions = {}) {
    this.#lockdep = lockdep;
    this.name = name;
    this.id = id;
    this.#key = options.key ?? lockdep.keyFor(name);
    this.#waitInner = options.waitInner ?? LdWait.INV;
    this.#waitOuter = options.waitOuter ?? 0;
  }

  /** The class key. */
  get key(): LockClassKey {
    return this.#key;
  }

  /** `lockdep_set_class`: moves this (unheld) lock to another class. */
  setClass(key: LockClassKey): void {
    this.#key = key;
    this.#classes.length = 0;
  }

  /** The class for `subclass` (`look_up_lock_class` / `register_lock_class`). */
  classFor(subclass = 0): LockClass {
    let c = this.#classes[subclass];
    if (c === undefined) {
      c = this.#lockdep.registerClass(this.#key, subclass, this.#waitInner, this.#waitOuter);
      this.#classes[subclass] = c;
    }
    return c;
  }

  /** Fake kernel address for splats. */
  get address(): string {
    return (ADDR_BASE + BigInt(this.id) * 0x40n).toString(16);
  }

  /** `lock_acquire` (`lock_map_acquire` with no options). */
  acquire(options: LockAcquireOptions = {}): void {
    this.#lockdep.acquire(this, options);
  }

  /** `lock_map_acquire_read`-style shared acquisition (read=1 unless `read` is given). */
  acquireRead(options: LockAcquireOptions = {}): void {
    this.#lockdep.acquire(this, { ...options, read: options.read ?? 1 });
  }

  /** Recursive read acquisition (read=2, `lock_map_acquire_read`). */
  acquireRecursiveRead(options: LockAcquireOptions = {}): void {
    this.#lockdep.acquire(this, { ...options, read: 2 });
  }

  /** `lock_release`. */
  release(site?: string): void {
    this.#lockdep.release(this, site);
  }

  /** `might_lock`: checks the dependency of taking this lock now, without holding it. */
  mightLock(read: LockReadMode = 0): void {
    if (!this.#lockdep.active) return;
    this.#lockdep.acquire(this, { read, site: `might_lock(${this.name})` });
    this.#lockdep.release(this);
  }

  /** `lock_downgrade`: a held write acquisition becomes a read. */
  downgrade(): void {
    this.#lockdep.downgrade(this);
  }

  /**
   * `lock_is_held_type(map, read)`: -1 any mode, 0 held exclusive, 1 held for
   * (any) read. True when lockdep is off, as `lock_is_held` with `!debug_locks`.
   */
  isHeld(read: -1 | 0 | 1 = -1): boolean {
    return this.#lockdep.isHeld(this, read);
  }

  /** `lockdep_assert_held`: reports when the current task does not hold this lock. */
  assertHeld(): void {
    this.#lockdep.assertHeld(this, -1);
  }

  /** `lockdep_assert_held_write`. */
  assertHeldWrite(): void {
    this.#lockdep.assertHeld(this, 0);
  }

  /** `lockdep_assert_held_read`. */
  assertHeldRead(): void {
    this.#lockdep.assertHeld(this, 1);
  }

  /** `lockdep_assert_not_held`. */
  assertNotHeld(): void {
    this.#lockdep.assertNotHeld(this);
  }

  /** The name, for messages. */
  toString(): string {
    return this.name;
  }
}

interface BfsNode {
  readonly cls: LockClass;
  readonly onlyXr: boolean;
  readonly parent: BfsNode | null;
  readonly edge: LockDep | null;
}

const TASK_LOCAL_IRQS_OFF = "kernel.hardirqs_off";

/**
 * The lock validator of one world (`world.lockdep`).
 *
 * @example An AB-BA inversion reported although the run did not deadlock
 * ```ts
 * import { Kernel, Mutex } from "@dmalab/kernel";
 * const w = new Kernel({ strict: false });
 * const a = new Mutex(w, "lock_A");
 * const b = new Mutex(w, "lock_B");
 * w.spawn("task1", async () => { await a.lock(); await b.lock(); b.unlock(); a.unlock(); });
 * w.spawn("task2", async () => {
 *   await w.sched.msleep(1);
 *   await b.lock(); await a.lock(); a.unlock(); b.unlock();
 * });
 * await w.run();
 * w.dmesg.includes("WARNING: possible circular locking dependency detected"); // true
 * ```
 */
export class Lockdep {
  readonly #world: Kernel;
  /** CONFIG_PROVE_LOCKING for this world (`world.lockdepEnabled`). */
  readonly enabled: boolean;
  #debugLocks = true;
  readonly #keys = new Map<string, LockClassKey>();
  readonly #classes = new Map<LockClassKey, LockClass[]>();
  readonly #allClasses: LockClass[] = [];
  readonly #maps = new Map<string, LockdepMap>();
  readonly #chains = new Set<string>();
  readonly #holders = new Set<Task>();
  #nextMapId = 1;
  #nrDeps = 0;
  #bootTask: Task | null = null;

  /** Built by the world; see {@linkcode Kernel.lockdep}. */
  constructor(world: Kernel) {
    this.#world = world;
    this.enabled = world.lockdepEnabled;
    if (this.enabled) {
      world.addChecker("lockdep", () => this.#checkExited());
    }
  }

  /** `debug_locks`: false after the first report, until {@linkcode Lockdep.reset}. */
  get debugLocks(): boolean {
    return this.#debugLocks;
  }

  /** True when checks run: enabled and no report yet (`lockdep_enabled()`). */
  get active(): boolean {
    return this.enabled && this.#debugLocks;
  }

  /** Number of dependencies in the graph. */
  get dependencyCount(): number {
    return this.#nrDeps;
  }

  /** Every registered class. */
  get classes(): readonly LockClass[] {
    return this.#allClasses;
  }

  /** The shared key for class name `name` (one per world). */
  keyFor(name: string): LockClassKey {
    let k = this.#keys.get(name);
    if (!k) {
      k = new LockClassKey(name);
      this.#keys.set(name, k);
    }
    return k;
  }

  /**
   * The world-wide pseudo-lock named `name` (one per name, like a static
   * `struct lockdep_map`), e.g. `map("dma_fence_map")`.
   */
  map(name: string, options: LockdepMapOptions = {}): LockdepMap {
    let m = this.#maps.get(name);
    if (!m) {
      m = this.newMap(name, options);
      this.#maps.set(name, m);
    }
    return m;
  }

  /** A new lock instance map (`lockdep_init_map`); locks call this. */
  newMap(name: string, options: LockdepMapOptions = {}): LockdepMap {
    return new LockdepMap(this, name, this.#nextMapId++, options);
  }

  /** `register_lock_class`. */
  registerClass(
    key: LockClassKey,
    subclass: number,
    waitInner: number,
    waitOuter: number,
  ): LockClass {
    if (subclass < 0 || subclass >= MAX_LOCKDEP_SUBCLASSES) {
      this.#report(
        "BUG: looking up invalid subclass",
        [
          `BUG: looking up invalid subclass: ${subclass}`,
          "turning off the locking correctness validator.",
        ],
      );
      subclass = 0;
    }
    let list = this.#classes.get(key);
    if (!list) {
      list = [];
      this.#classes.set(key, list);
    }
    let c = list[subclass];
    if (!c) {
      c = new LockClass(this.#allClasses.length, key, subclass, waitInner, waitOuter);
      list[subclass] = c;
      this.#allClasses.push(c);
    }
    return c;
  }

  /** The task lockdep charges: the running one, the irq context, or swapper/0 outside a run. */
  current(): Task {
    const t = this.#world.sched.current;
    if (t) return t;
    this.#bootTask ??= new TaskClass(0, "swapper/0", "kthread");
    return this.#bootTask;
  }

  /** The held-lock stack of `task` (default: current). */
  heldLocks(task: Task = this.current()): readonly HeldLock[] {
    return task.heldLocks as HeldLock[];
  }

  /** True when `from -> to` is in the dependency graph (class names, subclass 0 unless `name/N`). */
  hasDependency(from: string, to: string): boolean {
    const f = this.#allClasses.find((c) => c.name === from);
    if (!f) return false;
    for (const c of f.after.keys()) if (c.name === to) return true;
    return false;
  }

  /** Every dependency as `[from, to]` class names. */
  dependencies(): [string, string][] {
    const out: [string, string][] = [];
    for (const c of this.#allClasses) for (const t of c.after.keys()) out.push([c.name, t.name]);
    return out;
  }

  /**
   * `lockdep_reset` + `debug_locks = 1`: forgets the graph, chains and every
   * live task's held locks, and turns checking back on.
   */
  reset(): void {
    for (const c of this.#allClasses) {
      c.after.clear();
      c.usage = 0;
    }
    this.#chains.clear();
    this.#nrDeps = 0;
    for (const t of this.#holders) (t.heldLocks as HeldLock[]).length = 0;
    this.#holders.clear();
    for (const t of this.#world.sched.tasks) (t.heldLocks as HeldLock[]).length = 0;
    if (this.#bootTask) (this.#bootTask.heldLocks as HeldLock[]).length = 0;
    this.#debugLocks = true;
  }

  /**
   * `debug_locks_off()`: turns checking off; returns true when it was on
   * (the caller then prints its report).
   */
  debugLocksOff(): boolean {
    const was = this.#debugLocks;
    this.#debugLocks = false;
    return was;
  }

  /**
   * `DEBUG_LOCKS_WARN_ON(cond)`: the first time any such check fires in this
   * world it prints `DEBUG_LOCKS_WARN_ON(expr)` and turns lockdep off; later
   * ones are silent. Returns `cond`.
   */
  debugLocksWarnOn(cond: boolean, expr: string, where: string): boolean {
    if (!cond) return false;
    if (!this.#debugLocks) return true;
    this.#debugLocks = false;
    const t = this.current();
    this.#world.bug(
      "WARN",
      `DEBUG_LOCKS_WARN_ON(${expr})`,
      [
        `------------[ cut here ]------------`,
        `DEBUG_LOCKS_WARN_ON(${expr})`,
        `WARNING: CPU: 0 PID: ${t.pid} at ${where}`,
        `Comm: ${t.name}`,
        `---[ end trace 0000000000000000 ]---`,
      ].join("\n"),
    );
    return true;
  }

  /** `local_irq_disable` depth of `task` (spin_lock_irqsave). */
  irqsOff(task: Task): number {
    return (task.local.get(TASK_LOCAL_IRQS_OFF) as number | undefined) ?? 0;
  }

  /** Adjusts `task`'s irqs-off depth by `delta`. */
  setIrqsOff(task: Task, delta: number): void {
    task.local.set(TASK_LOCAL_IRQS_OFF, this.irqsOff(task) + delta);
  }

  /** `lock_acquire`. */
  acquire(map: LockdepMap, options: LockAcquireOptions = {}): void {
    if (!this.active) return;
    const curr = this.current();
    const held = curr.heldLocks as HeldLock[];
    const read = options.read ?? 0;
    const trylock = options.trylock ?? false;
    const nest = options.nestLock ?? null;
    const cls = map.classFor(options.subclass ?? 0);
    const site = options.site ?? map.name;
    this.#markUsage(curr, cls, read);

    // Same class as the top of the stack under a nest_lock: merge (references).
    const top = held.length ? held[held.length - 1]! : null;
    if (top && top.cls === cls && nest) {
      if (!top.references) top.references = 1;
      top.references++;
      return;
    }
    if (held.length >= MAX_LOCK_DEPTH) {
      this.#report("BUG: MAX_LOCK_DEPTH too low!", [
        "BUG: MAX_LOCK_DEPTH too low!",
        "turning off the locking correctness validator.",
        `depth: ${held.length}  max: ${MAX_LOCK_DEPTH}!`,
        ...this.#heldLines(curr),
      ]);
      return;
    }
    const hlock = new HeldLock(map, cls, read, trylock, nest, site);
    if (nest && !this.#isHeldBy(curr, nest, -1)) {
      this.#reportNestNotHeld(curr, hlock);
      return;
    }
    hlock.chainKey = `${top ? top.chainKey : ""}/${cls.id}${read ? "r" + read : ""}`;
    if (map.key === LOCKDEP_NO_VALIDATE) hlock.check = false;
    else if (!trylock && !this.#validateChain(curr, hlock)) return;
    held.push(hlock);
    if (held.length === 1) this.#holders.add(curr);
    const trace = this.#world.trace;
    if (trace.enabled) {
      // include/trace/events/lock.h: lock_acquire prints "try " / "read " and the name.
      trace.event("lock_acquire", { lock: map.name, try: trylock ? 1 : 0, read });
    }
  }

  #markUsage(curr: Task, cls: LockClass, read: LockReadMode): void {
    if (curr.kind === "irq") cls.usage |= read ? 8 : 4;
    else if (this.irqsOff(curr) === 0) cls.usage |= read ? 2 : 1;
  }

  /** `validate_chain`: chain cache, `check_deadlock`, `check_prevs_add`. Returns false after a report. */
  #validateChain(curr: Task, next: HeldLock): boolean {
    if (this.#chains.has(next.chainKey)) return true;
    const held = curr.heldLocks as HeldLock[];
    const dl = this.#checkDeadlock(curr, held, next);
    if (dl === 0) return false;
    if (dl !== 2 && held.length > 0) {
      // check_prevs_add: from the top down to and including the first non-trylock entry.
      for (let i = held.length - 1; i >= 0; i--) {
        const prev = held[i]!;
        if (!prev.check) continue;
        if (!this.#checkPrevAdd(curr, prev, next)) return false;
        if (!prev.trylock) break;
      }
    }
    this.#chains.add(next.chainKey);
    return true;
  }

  /** `check_deadlock`: 0 reported, 1 fine, 2 fine and nested under its nest_lock. */
  #checkDeadlock(curr: Task, held: HeldLock[], next: HeldLock): 0 | 1 | 2 {
    let nest: HeldLock | null = null;
    for (const prev of held) {
      if (next.nestLock !== null && prev.instance === next.nestLock) nest = prev;
      if (prev.cls !== next.cls) continue;
      if (next.read === 2 && prev.read) continue;
      if (nest) return 2;
      this.#reportRecursive(curr, prev, next);
      return 0;
    }
    return 1;
  }

  /** `check_prev_add`: cycle check, then record prev -> next. */
  #checkPrevAdd(curr: Task, prev: HeldLock, next: HeldLock): boolean {
    if (prev.cls === next.cls) return true;
    const found = this.#bfsCircular(next, prev);
    if (found) {
      this.#reportCircular(curr, prev, next, found);
      return false;
    }
    const bits = prev.read === 0
      ? (next.read === 2 ? DEP_ER : DEP_EN)
      : (next.read === 2 ? DEP_SR : DEP_SN);
    const existing = prev.cls.after.get(next.cls);
    if (existing) {
      existing.dep |= bits;
      return true;
    }
    prev.cls.after.set(next.cls, {
      to: next.cls,
      dep: bits,
      trace: [next.site, `${curr.name}/${curr.pid}`],
    });
    this.#nrDeps++;
    return true;
  }

  /** `check_noncircular`: a strong path next -> ... -> prev class, or null. */
  #bfsCircular(next: HeldLock, prev: HeldLock): BfsNode | null {
    const root: BfsNode = { cls: next.cls, onlyXr: next.read === 2, parent: null, edge: null };
    const seen = new Map<LockClass, boolean>(); // class -> visited with onlyXr (false dominates)
    const queue: BfsNode[] = [root];
    for (let qi = 0; qi < queue.length; qi++) {
      const node = queue[qi]!;
      const v = seen.get(node.cls);
      if (v === false || (v === true && node.onlyXr)) continue;
      seen.set(node.cls, node.onlyXr);
      if (node !== root && node.cls === prev.cls && (prev.read === 0 || !node.onlyXr)) return node;
      for (const edge of node.cls.after.values()) {
        let dep = edge.dep;
        if (node.onlyXr) dep &= ~(DEP_SR | DEP_SN);
        if (!dep) continue;
        queue.push({
          cls: edge.to,
          onlyXr: (dep & (DEP_SN | DEP_EN)) === 0,
          parent: node,
          edge,
        });
      }
    }
    return null;
  }

  /** `lock_release`. */
  release(map: LockdepMap, site?: string): void {
    if (!this.active) return;
    const curr = this.current();
    const held = curr.heldLocks as HeldLock[];
    const i = this.#findHeld(held, map);
    if (i < 0) {
      this.#reportUnlockImbalance(curr, map, site ?? map.name);
      return;
    }
    const h = held[i]!;
    if (h.references) {
      h.references--;
      if (h.references) return;
    }
    held.splice(i, 1);
    const trace = this.#world.trace;
    if (trace.enabled) trace.event("lock_release", { lock: map.name });
    // Entries above keep their chain keys recomputed (reacquire_held_locks).
    for (let j = i; j < held.length; j++) {
      const below = j ? held[j - 1]!.chainKey : "";
      const e = held[j]!;
      e.chainKey = `${below}/${e.cls.id}${e.read ? "r" + e.read : ""}`;
    }
    if (held.length === 0) this.#holders.delete(curr);
  }

  /** `lock_downgrade`. */
  downgrade(map: LockdepMap): void {
    if (!this.active) return;
    const curr = this.current();
    const held = curr.heldLocks as HeldLock[];
    const i = this.#findHeld(held, map);
    if (i < 0) {
      this.#reportUnlockImbalance(curr, map, `downgrade(${map.name})`);
      return;
    }
    held[i]!.read = 1;
  }

  /** `match_held_lock` over the stack, top first. */
  #findHeld(held: HeldLock[], map: LockdepMap): number {
    for (let i = held.length - 1; i >= 0; i--) {
      const h = held[i]!;
      if (h.instance === map) return i;
      if (h.references && h.cls.key === map.key && h.cls === map.classFor(h.cls.subclass)) return i;
    }
    return -1;
  }

  #isHeldBy(task: Task, map: LockdepMap, read: -1 | 0 | 1): boolean {
    const held = task.heldLocks as HeldLock[];
    const i = this.#findHeld(held, map);
    if (i < 0) return false;
    return read === -1 || (held[i]!.read ? 1 : 0) === read;
  }

  /** `lock_is_held_type` for the current task. */
  isHeld(map: LockdepMap, read: -1 | 0 | 1 = -1): boolean {
    if (!this.active) return true;
    return this.#isHeldBy(this.current(), map, read);
  }

  /** `lockdep_assert_held*`. */
  assertHeld(map: LockdepMap, read: -1 | 0 | 1): void {
    if (!this.active) return;
    const curr = this.current();
    if (this.#isHeldBy(curr, map, read)) return;
    const what = read === -1
      ? "lockdep_assert_held"
      : read === 0
      ? "lockdep_assert_held_write"
      : "lockdep_assert_held_read";
    this.#world.bug(
      "lockdep",
      `WARNING: ${what}(${map.name}) failed in ${curr.name}/${curr.pid}`,
      [
        "------------[ cut here ]------------",
        `WARNING: CPU: 0 PID: ${curr.pid} at ${what}(${map.name})`,
        `${curr.name}/${curr.pid} does not hold ${map.address} (${map.name})${
          read === -1 ? "" : read === 0 ? " for write" : " for read"
        }`,
        ...this.#heldLines(curr),
        "---[ end trace 0000000000000000 ]---",
      ].join("\n"),
    );
  }

  /** `lockdep_assert_not_held`. */
  assertNotHeld(map: LockdepMap): void {
    if (!this.active) return;
    const curr = this.current();
    if (!this.#isHeldBy(curr, map, -1)) return;
    this.#world.bug(
      "lockdep",
      `WARNING: lockdep_assert_not_held(${map.name}) failed in ${curr.name}/${curr.pid}`,
      [
        "------------[ cut here ]------------",
        `WARNING: CPU: 0 PID: ${curr.pid} at lockdep_assert_not_held(${map.name})`,
        ...this.#heldLines(curr),
        "---[ end trace 0000000000000000 ]---",
      ].join("\n"),
    );
  }

  /**
   * `report` followed by the current task's held locks, as `__might_sleep`
   * prints them (`debug_show_held_locks`); unchanged when lockdep is off.
   */
  withHeldLocks(report: string): string {
    if (!this.active) return report;
    return [report, ...this.#heldLines(this.current())].join("\n");
  }

  /** `debug_check_no_locks_held`: reports when `task` still holds locks. */
  checkNoLocksHeld(task: Task = this.current()): void {
    if (!this.active) return;
    const held = task.heldLocks as HeldLock[];
    if (held.length === 0) return;
    const title = `WARNING: ${task.name}/${task.pid} still has locks held!`;
    this.#report(title, [...this.#banner(title), ...this.#heldLines(task)]);
  }

  #checkExited(): string[] {
    const out: string[] = [];
    for (const t of this.#holders) {
      if (t.state === "done" && t.heldLocks.length) {
        out.push(
          `${t.name}/${t.pid} exited holding ${
            (t.heldLocks as HeldLock[]).map((h) => h.cls.name).join(", ")
          } (debug_check_no_locks_held)`,
        );
      }
    }
    return out;
  }

  // ---- reports ----

  #report(summary: string, lines: string[]): void {
    this.#debugLocks = false;
    this.#world.bug("lockdep", summary, lines.join("\n"));
  }

  #banner(title: string): string[] {
    return [
      "=".repeat(title.length),
      title,
      "6.12.0-dmalab #1 Not tainted",
      "-".repeat(title.length),
    ];
  }

  #lockLine(h: HeldLock): string {
    return `${h.instance.address} ${h.cls.label}, at: ${h.site}`;
  }

  #heldLines(task: Task): string[] {
    const held = task.heldLocks as HeldLock[];
    const who = `${task.name}/${task.pid}`;
    if (held.length === 0) return [`no locks held by ${who}.`];
    const lines = [`${held.length} lock${held.length > 1 ? "s" : ""} held by ${who}:`];
    held.forEach((h, i) => lines.push(` #${i}: ${this.#lockLine(h)}`));
    return lines;
  }

  #reportRecursive(curr: Task, prev: HeldLock, next: HeldLock): void {
    const title = "WARNING: possible recursive locking detected";
    const lk = (h: HeldLock) => `${h.read ? "rlock" : "lock"}(${h.cls.name});`;
    this.#report(title, [
      ...this.#banner(title),
      `${curr.name}/${curr.pid} is trying to acquire lock:`,
      this.#lockLine(next),
      "",
      "but task is already holding lock:",
      this.#lockLine(prev),
      "",
      "other info that might help us debug this:",
      " Possible unsafe locking scenario:",
      "",
      "       CPU0",
      "       ----",
      `  ${lk(prev)}`,
      `  ${lk(next)}`,
      "",
      " *** DEADLOCK ***",
      "",
      " May be due to missing lock nesting notation",
      "",
      ...this.#heldLines(curr),
    ]);
  }

  #reportCircular(curr: Task, prev: HeldLock, next: HeldLock, target: BfsNode): void {
    const title = "WARNING: possible circular locking dependency detected";
    const path: BfsNode[] = [];
    for (let n: BfsNode | null = target; n; n = n.parent) path.push(n);
    // path[0] is prev's class (deepest), path[last] is next's class (#0).
    const lines = [
      ...this.#banner(title),
      `${curr.name}/${curr.pid} is trying to acquire lock:`,
      this.#lockLine(next),
      "",
      "but task is already holding lock:",
      this.#lockLine(prev),
      "",
      "which lock already depends on the new lock.",
      "",
      "",
      "the existing dependency chain (in reverse order) is:",
    ];
    let depth = path.length - 1;
    for (const n of path) {
      lines.push("", `-> #${depth} ${n.cls.label}:`);
      const trace = n.edge ? n.edge.trace : [next.site, `${curr.name}/${curr.pid}`];
      for (const t of trace) lines.push(`       ${t}`);
      depth--;
    }
    const source = next.cls;
    const tgt = prev.cls;
    const parent = path.length > 1 ? path[1]!.cls : source;
    lines.push("", "other info that might help us debug this:", "");
    if (parent !== source) {
      lines.push("Chain exists of:", `  ${source.name} --> ${parent.name} --> ${tgt.name}`, "");
    }
    const lk = (read: LockReadMode, c: LockClass) => `${read ? "rlock" : "lock"}(${c.name});`;
    lines.push(
      " Possible unsafe locking scenario:",
      "",
      "       CPU0                    CPU1",
      "       ----                    ----",
      `  ${lk(prev.read, tgt)}`,
      `                               lock(${parent.name});`,
      `                               ${lk(prev.read, tgt)}`,
      `  ${lk(next.read, source)}`,
      "",
      " *** DEADLOCK ***",
      "",
      ...this.#heldLines(curr),
    );
    this.#report(title, lines);
  }

  #reportUnlockImbalance(curr: Task, map: LockdepMap, site: string): void {
    const title = "WARNING: bad unlock balance detected!";
    this.#report(title, [
      ...this.#banner(title),
      `${curr.name}/${curr.pid} is trying to release lock (${map.name}) at:`,
      site,
      "but there are no more locks to release!",
      "",
      "other info that might help us debug this:",
      ...this.#heldLines(curr),
    ]);
  }

  #reportNestNotHeld(curr: Task, hlock: HeldLock): void {
    const title = "WARNING: Nested lock was not taken";
    this.#report(title, [
      ...this.#banner(title),
      `${curr.name}/${curr.pid} is trying to lock:`,
      this.#lockLine(hlock),
      "",
      "but this task is not holding:",
      `${hlock.nestLock!.name}`,
      "",
      ...this.#heldLines(curr),
    ]);
  }
}
