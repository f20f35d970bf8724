/**
 * DOC: schedule strings
 *
 * A schedule is the pid the scheduler resumed at each decision point of a
 * run (a point where more than one task was runnable), in order. Printed as
 * pids joined by `.`, with a run of three or more equal pids shortened to
 * `pid*count` (`1.2*3.1` is `1.2.2.2.1`). Decisions after the last printed
 * one take the default: the current task keeps the CPU when it is still
 * runnable, else the longest-waiting runnable task runs. Trailing default
 * decisions are therefore dropped, and the all-default schedule prints as
 * `-`. Pure functions; no locking.
 *
 * @module
 */

/**
 * Formats decisions as a schedule string.
 *
 * @example
 * ```ts
 * import { formatSchedule } from "@dmalab/explorer";
 * formatSchedule([1, 2, 2, 2, 1]); // "1.2*3.1"
 * formatSchedule([]); // "-"
 * ```
 */
export function formatSchedule(decisions: readonly number[]): string {
  if (decisions.length === 0) return "-";
  const parts: string[] = [];
  for (let i = 0; i < decisions.length;) {
    const pid = decisions[i]!;
    let j = i + 1;
    while (j < decisions.length && decisions[j] === pid) j++;
    const n = j - i;
    if (n >= 3) parts.push(`${pid}*${n}`);
    else for (let k = 0; k < n; k++) parts.push(String(pid));
    i = j;
  }
  return parts.join(".");
}

/**
 * Parses a schedule string back into decisions. Throws a `SyntaxError`
 * naming the bad part.
 *
 * @example
 * ```ts
 * import { parseSchedule } from "@dmalab/explorer";
 * parseSchedule("1.2*3.1"); // [1, 2, 2, 2, 1]
 * ```
 */
export function parseSchedule(text: string): number[] {
  const s = text.trim();
  if (s === "" || s === "-") return [];
  const out: number[] = [];
  for (const part of s.split(".")) {
    const m = /^([1-9][0-9]*)(?:\*([1-9][0-9]*))?$/.exec(part);
    if (!m) {
      throw new SyntaxError(
        `schedule '${text}': '${part}' is not a pid or pid*count (pids are positive integers)`,
      );
    }
    const pid = Number(m[1]);
    const n = m[2] === undefined ? 1 : Number(m[2]);
    if (n > 10_000_000) throw new SyntaxError(`schedule '${text}': repeat count ${n} too large`);
    for (let k = 0; k < n; k++) out.push(pid);
  }
  return out;
}

/** Drops trailing decisions that equal the default (`isDefault[i]` true). */
export function trimDefaults(
  decisions: readonly number[],
  isDefault: readonly boolean[],
): number[] {
  let end = decisions.length;
  while (end > 0 && isDefault[end - 1]) end--;
  return decisions.slice(0, end);
}
