/**
 * DOC: errors
 *
 * Two kinds of failure, as DESIGN.md sets out. Where the kernel returns
 * `-Exxx`, model code throws {@linkcode KernelError}; where the kernel would
 * WARN, BUG or print a lockdep / DMA-API-debug splat, the world records it in
 * dmesg and (in strict mode) throws {@linkcode KernelBug}.
 *
 * @module
 */
import { Errno, type ErrnoName } from "./errno.ts";

/**
 * An `-Exxx` return, as an exception. `errno` is the positive number.
 *
 * @example
 * ```ts
 * import { KernelError } from "@dmalab/kernel";
 * const err = new KernelError("EINVAL", "dma_buf_export: exp_info->size is 0");
 * err.errno; // 22
 * ```
 */
export class KernelError extends Error {
  /** Positive errno value (22 for EINVAL). */
  readonly errno: number;
  /** Errno name ("EINVAL"). */
  readonly code: ErrnoName;

  /** Builds the error; `message` names the object, the rule and the kernel function. */
  constructor(code: ErrnoName, message: string, options?: ErrorOptions) {
    super(`${message} (-${code})`, options);
    this.name = "KernelError";
    this.code = code;
    this.errno = Errno[code];
  }

  /** The value the kernel function would return (`-errno`). */
  get ret(): number {
    return -this.errno;
  }
}

/** What kind of splat a {@linkcode KernelBug} stands for. */
export type BugKind =
  | "WARN"
  | "BUG"
  | "lockdep"
  | "might_sleep"
  | "deadlock"
  | "dma-api-debug"
  | "refcount"
  | "scheduler"
  | "invariant";

/**
 * A WARN/BUG/lockdep/DMA-API-debug report, thrown in strict mode after it has
 * been recorded in the world's dmesg.
 */
export class KernelBug extends Error {
  /** The kind of report. */
  readonly kind: BugKind;
  /** The text as it appears in dmesg (possibly several lines). */
  readonly report: string;

  /** Builds the bug from its kind, a one-line summary and the full report. */
  constructor(kind: BugKind, summary: string, report: string = summary) {
    super(summary);
    this.name = "KernelBug";
    this.kind = kind;
    this.report = report;
  }
}

/** True when `e` is a {@linkcode KernelError} with the given errno name. */
export function isErrno(e: unknown, code: ErrnoName): e is KernelError {
  return e instanceof KernelError && e.code === code;
}
