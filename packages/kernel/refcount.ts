/**
 * DOC: refcount_t and kref
 *
 * {@linkcode Refcount} models `refcount_t` (include/linux/refcount.h,
 * lib/refcount.c): a 32-bit signed counter that never wraps. Any operation
 * that would overflow, add to zero, or drop below zero pins the counter at
 * `REFCOUNT_SATURATED` (INT_MIN / 2) and warns once per event, so the object
 * leaks instead of being freed twice. The warnings carry the kernel's texts
 * ("refcount_t: addition on 0; use-after-free.", "refcount_t: underflow;
 * use-after-free.", "refcount_t: saturated; leaking memory.", "refcount_t:
 * decrement hit 0; leaking memory.") and go through `world.bug("refcount")`,
 * so strict worlds throw {@linkcode KernelBug} after the counter saturated,
 * as the kernel saturates before it prints.
 *
 * {@linkcode Kref} is `struct kref` (include/linux/kref.h) on top of it.
 *
 * Locking: none. Every operation is a single atomic step (the scheduler runs
 * one task at a time), callable in any context.
 *
 * @module
 */
import type { Kernel } from "./world.ts";

/** `REFCOUNT_SATURATED`: `INT_MIN / 2`. */
export const REFCOUNT_SATURATED: number = -0x4000_0000;
/** `REFCOUNT_MAX`: `INT_MAX`. */
export const REFCOUNT_MAX = 0x7fff_ffff;

/** `enum refcount_saturation_type` of include/linux/refcount.h. */
export type RefcountSaturation =
  | "add_not_zero_ovf"
  | "add_ovf"
  | "add_uaf"
  | "sub_uaf"
  | "dec_leak";

const MESSAGES: Record<RefcountSaturation, string> = {
  "add_not_zero_ovf": "saturated; leaking memory.",
  "add_ovf": "saturated; leaking memory.",
  "add_uaf": "addition on 0; use-after-free.",
  "sub_uaf": "underflow; use-after-free.",
  "dec_leak": "decrement hit 0; leaking memory.",
};

/** Wraps to a signed 32-bit integer, as `atomic_t` arithmetic does. */
function s32(v: number): number {
  return v | 0;
}

/** True when `old + i` overflows int32 or `old` is already negative (saturated). */
function badAdd(old: number, i: number): boolean {
  return old < 0 || old + i > REFCOUNT_MAX;
}

/**
 * `refcount_t`.
 *
 * @example
 * ```ts
 * import { Kernel, Refcount } from "@dmalab/kernel";
 * const world = new Kernel();
 * const r = new Refcount(world, 1, "obj->refs");
 * r.inc();
 * r.decAndTest(); // false
 * r.decAndTest(); // true: the last reference is gone
 * r.incNotZero(); // false: a dead object is never resurrected
 * ```
 */
export class Refcount {
  #refs: number;
  readonly #world: Kernel;
  /** Name used in warnings. */
  readonly name: string;

  /** `refcount_set(r, n)` at creation (`REFCOUNT_INIT(n)`). */
  constructor(world: Kernel, n = 1, name = "refcount") {
    this.#world = world;
    this.#refs = s32(n);
    this.name = name;
  }

  /** `refcount_read`. */
  read(): number {
    return this.#refs;
  }

  /** `refcount_set`. */
  set(n: number): void {
    this.#refs = s32(n);
  }

  /** True once saturated (the object leaks from now on). */
  get saturated(): boolean {
    return this.#refs < 0;
  }

  /** `refcount_warn_saturate` (lib/refcount.c): pin, then warn. */
  #saturate(t: RefcountSaturation): void {
    this.#refs = REFCOUNT_SATURATED;
    const summary = `refcount_t: ${MESSAGES[t]}`;
    this.#world.bug(
      "refcount",
      summary,
      `------------[ cut here ]------------\n${summary}\nWARNING: at lib/refcount.c refcount_warn_saturate (${this.name})`,
    );
  }

  /** `refcount_add(i, r)`: warns "addition on 0" when the count was zero. */
  add(i: number): void {
    const old = this.#refs;
    this.#refs = s32(old + i);
    if (old === 0) this.#saturate("add_uaf");
    else if (badAdd(old, i)) this.#saturate("add_ovf");
  }

  /** `refcount_inc`. */
  inc(): void {
    this.add(1);
  }

  /**
   * `refcount_add_not_zero`: adds unless the count is zero; returns whether it
   * added. Saturates (and warns) on overflow.
   */
  addNotZero(i: number): boolean {
    const old = this.#refs;
    if (old === 0) return false;
    this.#refs = s32(old + i);
    if (badAdd(old, i)) this.#saturate("add_not_zero_ovf");
    return true;
  }

  /** `refcount_inc_not_zero`. */
  incNotZero(): boolean {
    return this.addNotZero(1);
  }

  /**
   * `refcount_sub_and_test`: subtracts `i`; true when the count reached zero.
   * Going below zero (or operating on a saturated count) saturates and warns
   * "underflow; use-after-free.".
   */
  subAndTest(i: number): boolean {
    const old = this.#refs;
    this.#refs = s32(old - i);
    if (old > 0 && old === i) return true;
    if (old <= 0 || old - i < 0) this.#saturate("sub_uaf");
    return false;
  }

  /** `refcount_dec_and_test`. */
  decAndTest(): boolean {
    return this.subAndTest(1);
  }

  /**
   * `refcount_dec`: a decrement that must not release; hitting zero (or
   * going below) saturates and warns "decrement hit 0; leaking memory.".
   */
  dec(): void {
    const old = this.#refs;
    this.#refs = s32(old - 1);
    if (old <= 1) this.#saturate("dec_leak");
  }

  /** `refcount_dec_if_one`: 1 -> 0 only; true when it did. */
  decIfOne(): boolean {
    if (this.#refs !== 1) return false;
    this.#refs = 0;
    return true;
  }

  /** `refcount_dec_not_one`: decrements unless the count is 1; false when it was 1. */
  decNotOne(): boolean {
    const old = this.#refs;
    if (old === REFCOUNT_SATURATED) return true;
    if (old === 1) return false;
    this.#refs = s32(old - 1);
    if (old <= 0) {
      this.#saturate("sub_uaf");
    }
    return true;
  }
}

/**
 * `struct kref`: a refcount with a release callback.
 *
 * @example
 * ```ts
 * import { Kernel, Kref } from "@dmalab/kernel";
 * const world = new Kernel();
 * const k = new Kref(world);
 * let freed = false;
 * k.get();
 * k.put(() => { freed = true; }); // false
 * k.put(() => { freed = true; }); // true, freed === true
 * ```
 */
export class Kref {
  /** The underlying `refcount_t`. */
  readonly refcount: Refcount;

  /** `kref_init`: starts at 1. */
  constructor(world: Kernel, name = "kref") {
    this.refcount = new Refcount(world, 1, name);
  }

  /** `kref_read`. */
  read(): number {
    return this.refcount.read();
  }

  /** `kref_init` again (reuse of an embedding object). */
  init(): void {
    this.refcount.set(1);
  }

  /** `kref_get`: warns "addition on 0; use-after-free." on a dead object. */
  get(): void {
    this.refcount.inc();
  }

  /**
   * `kref_put`: drops one reference and calls `release` when it was the last;
   * returns true when released (the kernel returns 1), else false (0).
   */
  put(release: (kref: Kref) => void): boolean {
    if (this.refcount.decAndTest()) {
      release(this);
      return true;
    }
    return false;
  }

  /** `kref_get_unless_zero`: takes a reference unless the object is dying. */
  getUnlessZero(): boolean {
    return this.refcount.incNotZero();
  }
}
