/**
 * DOC: timer heap
 *
 * A binary min-heap of virtual-time timers ordered by (expiry, insertion
 * sequence), so timers with the same expiry fire in the order they were
 * armed: deterministic, like the kernel's timer wheel within one bucket.
 *
 * @module
 */

/** An armed timer. Cancelled timers stay in the heap and are skipped. */
export interface Timer {
  /** Expiry, virtual ns. */
  readonly when: number;
  /** Insertion order, the tie-break. */
  readonly seq: number;
  /** Runs at expiry, in atomic context. */
  readonly fn: () => void;
  /** Set by cancel(). */
  cancelled: boolean;
}

/** Min-heap of timers. */
export class TimerHeap {
  readonly #a: Timer[] = [];
  #seq = 0;
  #live = 0;

  /** Arms `fn` at `when`. */
  add(when: number, fn: () => void): Timer {
    const t: Timer = { when, seq: this.#seq++, fn, cancelled: false };
    const a = this.#a;
    a.push(t);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
    this.#live++;
    return t;
  }

  /** Cancels a timer that has not fired; returns whether it was pending. */
  cancel(t: Timer): boolean {
    if (t.cancelled) return false;
    t.cancelled = true;
    this.#live--;
    return true;
  }

  /** Number of pending (not cancelled, not fired) timers. */
  get size(): number {
    return this.#live;
  }

  /** The earliest pending timer, or undefined. */
  peek(): Timer | undefined {
    this.#dropCancelled();
    return this.#a[0];
  }

  /** Removes and returns the earliest pending timer (marked so cancel is a no-op). */
  pop(): Timer | undefined {
    this.#dropCancelled();
    const t = this.#removeTop();
    if (t) {
      t.cancelled = true;
      this.#live--;
    }
    return t;
  }

  #dropCancelled(): void {
    while (this.#a.length > 0 && this.#a[0]!.cancelled) this.#removeTop();
  }

  #removeTop(): Timer | undefined {
    const a = this.#a;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && before(a[l]!, a[m]!)) m = l;
        if (r < a.length && before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(x: Timer, y: Timer): boolean {
  return x.when < y.when || (x.when === y.when && x.seq < y.seq);
}
