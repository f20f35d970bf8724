/**
 * DOC: checking bytes and collecting violations
 *
 * {@linkcode pattern} makes the bytes an app writes (a seeded, position
 * dependent pattern, so a shifted or stale page never compares equal by
 * accident); {@linkcode countEqual} compares what came back.
 * {@linkcode worldViolations} gathers every rule violation a world
 * recorded: WARN/BUG/lockdep/DMA-API-debug reports (`world.bugs`) and what
 * every package's invariant checker says now (`world.check()`).
 *
 * Locking: synchronous reads; call after the tasks finished.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";

/** `n` bytes of a pattern seeded by `seed`. */
export function pattern(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** How many leading bytes of `got` equal `want` (the whole length when all match). */
export function countEqual(want: Uint8Array, got: Uint8Array): number {
  const n = Math.min(want.length, got.length);
  for (let i = 0; i < n; i++) if (want[i] !== got[i]) return i;
  return n;
}

/** True when `got` equals `want` byte for byte. */
export function sameBytes(want: Uint8Array, got: Uint8Array): boolean {
  return want.length === got.length && countEqual(want, got) === want.length;
}

/** Every rule violation `world` recorded, and its checkers' current complaints. */
export function worldViolations(world: Kernel): string[] {
  return [...world.bugs.map((b) => `${b.kind}: ${b.summary}`), ...world.check()];
}

/** The full text of every splat in `world`'s dmesg (one string per report). */
export function worldSplats(world: Kernel): string[] {
  return world.bugs.length ? [world.dmesg.text()] : [];
}
