/**
 * DOC: lazy flush queue
 *
 * The flush queue of a `dma-fq` domain (drivers/iommu/dma-iommu.c:
 * `queue_iova()`, `fq_flush_iotlb()`, `fq_ring_free_locked()`,
 * `fq_flush_timeout()`): in lazy mode an unmap clears the PTEs but does not
 * invalidate the IOTLB; the IOVA range and the freed table pages wait in a
 * ring of `IOVA_FQ_SIZE` (256) entries, each stamped with the flush-start
 * counter. A flush (`flush_iotlb_all`) runs when the ring is full or
 * `IOVA_FQ_TIMEOUT` (10 ms) after the first queued entry; only entries queued
 * before a completed flush are released, so the IOVA cannot be handed out
 * again while a stale IOTLB entry might still translate it.
 *
 * Locking: `fq->lock` (a spinlock) in the kernel; callable from atomic
 * context; the timer runs in interrupt context on the scheduler.
 *
 * @module
 */
import type { IommuDomain } from "./domain.ts";
import type { IommuIotlbGather } from "./gather.ts";
import type { PtPagePool } from "./pt_pages.ts";

/** `IOVA_FQ_SIZE`. */
export const IOVA_FQ_SIZE = 256;
/** `IOVA_FQ_TIMEOUT` in ms. */
export const IOVA_FQ_TIMEOUT_MS = 10;

interface FqEntry {
  release: () => void;
  pool: PtPagePool | null;
  pages: number[];
  counter: number;
}

/** Options for a {@linkcode FlushQueue}. */
export interface FlushQueueOptions {
  /** Ring size (default 256). */
  size?: number;
  /** Timeout in ms (default 10). */
  timeoutMs?: number;
}

/** Counters of a flush queue. */
export interface FlushQueueStats {
  /** Entries queued. */
  queued: number;
  /** `fq_flush_iotlb` runs. */
  flushes: number;
  /** Flushes forced by a full ring. */
  fullFlushes: number;
  /** Flushes run by the timer. */
  timerFlushes: number;
  /** Entries released. */
  released: number;
}

/** A lazy-mode flush queue bound to one domain. */
export class FlushQueue {
  /** The domain it flushes. */
  readonly domain: IommuDomain;
  /** Ring capacity. */
  readonly size: number;
  /** Timeout, ns. */
  readonly timeoutNs: number;
  /** Counters. */
  readonly stats: FlushQueueStats = {
    queued: 0,
    flushes: 0,
    fullFlushes: 0,
    timerFlushes: 0,
    released: 0,
  };
  #ring: FqEntry[] = [];
  #startCnt = 0;
  #finishCnt = 0;
  #cancelTimer: (() => boolean) | null = null;

  /** `iommu_dma_init_fq()` for `domain`. */
  constructor(domain: IommuDomain, options: FlushQueueOptions = {}) {
    this.domain = domain;
    this.size = options.size ?? IOVA_FQ_SIZE;
    this.timeoutNs = (options.timeoutMs ?? IOVA_FQ_TIMEOUT_MS) * 1_000_000;
  }

  /** Entries waiting for a flush. */
  get pending(): number {
    return this.#ring.length;
  }

  /** `fq_ring_free_locked()`: releases entries queued before the last completed flush. */
  #ringFree(): void {
    while (this.#ring.length && this.#ring[0]!.counter < this.#finishCnt) {
      const e = this.#ring.shift()!;
      if (e.pool) e.pool.freeIds(e.pages, true);
      e.release();
      this.stats.released++;
    }
  }

  /** `fq_flush_iotlb()`. */
  #flushIotlb(): void {
    this.#startCnt++;
    this.stats.flushes++;
    this.domain.flushIotlbAll();
    this.#finishCnt++;
  }

  /**
   * `queue_iova()`: defers `release` (the IOVA free) and the gather's freed
   * table pages until a flush covers them.
   */
  queue(release: () => void, gather: IommuIotlbGather): void {
    this.#ringFree();
    if (this.#ring.length >= this.size) {
      this.stats.fullFlushes++;
      this.#flushIotlb();
      this.#ringFree();
    }
    this.#ring.push({
      release,
      pool: gather.pool,
      pages: gather.freelist,
      counter: this.#startCnt,
    });
    gather.freelist = [];
    gather.pool = null;
    this.stats.queued++;
    if (!this.#cancelTimer) {
      this.#cancelTimer = this.domain.world.sched.addTimer(this.timeoutNs, () => {
        this.#cancelTimer = null;
        this.stats.timerFlushes++;
        this.flush();
      });
    }
  }

  /** `fq_flush_timeout()` body: flush, then release everything queued. */
  flush(): void {
    this.#flushIotlb();
    this.#ringFree();
  }

  /** `iommu_dma_free_fq()`: flushes and releases everything, stops the timer. */
  destroy(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = null;
    if (this.#ring.length) this.flush();
  }
}
