/**
 * DOC: dmesg
 *
 * The world's kernel log ring. Every WARN, BUG, lockdep or DMA-API-debug
 * splat is recorded here before it is (in strict mode) thrown as a
 * {@linkcode KernelBug}; ordinary `pr_info`-style lines are kept too. Lines
 * carry the virtual timestamp the way `dmesg` prints it: `[    1.000250] text`.
 *
 * @module
 */

/** printk levels, as include/linux/kern_levels.h numbers them. */
export type LogLevel = "emerg" | "alert" | "crit" | "err" | "warn" | "notice" | "info" | "debug";

/** One dmesg record. */
export interface DmesgRecord {
  /** Virtual time in nanoseconds when the line was logged. */
  readonly ns: number;
  /** printk level. */
  readonly level: LogLevel;
  /** The text (one line; splats are recorded line by line). */
  readonly text: string;
}

/** Formats nanoseconds as dmesg's `[seconds.micros]` stamp. */
export function formatDmesgTime(ns: number): string {
  const us = Math.floor(ns / 1000);
  const sec = Math.floor(us / 1_000_000);
  const frac = String(us % 1_000_000).padStart(6, "0");
  return `[${String(sec).padStart(5, " ")}.${frac}]`;
}

/**
 * The kernel log of one world.
 *
 * @example
 * ```ts
 * import { Dmesg } from "@dmalab/kernel";
 * const log = new Dmesg(() => 0);
 * log.printk("info", "hello");
 * log.text(); // "[    0.000000] hello"
 * ```
 */
export class Dmesg {
  readonly #records: DmesgRecord[] = [];
  readonly #clock: () => number;

  /** `clock` returns the current virtual time in ns. */
  constructor(clock: () => number) {
    this.#clock = clock;
  }

  /** Logs one or more lines (split on newlines) at `level`. */
  printk(level: LogLevel, text: string): void {
    const ns = this.#clock();
    for (const line of text.split("\n")) this.#records.push({ ns, level, text: line });
  }

  /** Every record so far. */
  get records(): readonly DmesgRecord[] {
    return this.#records;
  }

  /** The log as `dmesg` prints it. */
  text(): string {
    return this.#records.map((r) => `${formatDmesgTime(r.ns)} ${r.text}`).join("\n");
  }

  /** True when any line contains `needle`. */
  includes(needle: string): boolean {
    return this.#records.some((r) => r.text.includes(needle));
  }

  /** Drops every record (as `dmesg -C`). */
  clear(): void {
    this.#records.length = 0;
  }
}
