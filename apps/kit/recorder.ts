/**
 * DOC: recording transfers and spans
 *
 * A {@linkcode Recorder} collects what the report and the trace exporters
 * draw beyond the world's own trace events: DMA transfers (with their route
 * and the bandwidth model's duration) and slices on named tracks (a fence
 * from emission to signal, a reservation lock held, an eviction). Transfer
 * durations come from `@dmalab/pci-p2p`'s {@linkcode BandwidthModel}: peer
 * to peer between two functions, or the issuing function's own link when
 * the other side is system RAM. A transfer also lands in the world's trace
 * as a `dmalab_dma_transfer` event so ftrace text shows it in order.
 *
 * Locking: none; recording is synchronous and callable from any task.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import { BandwidthModel, linkPayloadGBps, type PciDev, type PciFabric } from "@dmalab/pci-p2p";
import type { AppSpan, AppTransfer } from "./types.ts";

/** What {@linkcode Recorder.transfer} needs. */
export interface TransferInit {
  /** Label. */
  label: string;
  /** Issuing function (null for the CPU). */
  src: PciDev | null;
  /** Target function (null for system RAM). */
  dst: PciDev | null;
  /** Target name when `dst` is null (`system RAM`). */
  dstName?: string;
  /** Source name when `src` is null (`CPU`). */
  srcName?: string;
  /** Route / map type. */
  mapType: string;
  /** ATS used. */
  ats: boolean;
  /** Bytes. */
  bytes: number;
}

/** Transfers and spans of one run. */
export class Recorder {
  /** The world. */
  readonly world: Kernel;
  /** Transfers, in order. */
  readonly transfers: AppTransfer[] = [];
  /** Spans, in order of their end. */
  readonly spans: AppSpan[] = [];
  readonly #bw: BandwidthModel | null;

  /** A recorder for `world` (with `fabric` for the bandwidth model). */
  constructor(world: Kernel, fabric: PciFabric | null) {
    this.world = world;
    this.#bw = fabric ? new BandwidthModel(fabric) : null;
  }

  /** Records a transfer at the current virtual time; returns it. */
  transfer(t: TransferInit): AppTransfer {
    let gbps = 0;
    if (t.src && t.dst && this.#bw) gbps = this.#bw.soloGBps(t.src, t.dst);
    else if ((t.src ?? t.dst)?.link) gbps = linkPayloadGBps((t.src ?? t.dst)!.link!, 256);
    const durNs = gbps > 0 ? Math.ceil(BandwidthModel.transferNs(t.bytes, gbps)) : 0;
    const rec: AppTransfer = {
      label: t.label,
      src: t.src,
      dst: t.dst,
      srcName: t.src?.name ?? t.srcName ?? "CPU",
      dstName: t.dst?.name ?? t.dstName ?? "system RAM",
      mapType: t.mapType,
      ats: t.ats,
      bytes: t.bytes,
      ns: this.world.sched.now,
      durNs,
      gbps,
    };
    this.transfers.push(rec);
    this.world.trace.event("dmalab_dma_transfer", {
      label: t.label,
      src: rec.srcName,
      dst: rec.dstName,
      map_type: t.mapType,
      ats: t.ats ? 1 : 0,
      bytes: t.bytes,
    });
    return rec;
  }

  /** Records a finished span. */
  span(
    track: string,
    name: string,
    startNs: number,
    endNs: number,
    args: Record<string, string | number | boolean> = {},
  ): void {
    this.spans.push({ track, name, startNs, endNs, args });
  }

  /**
   * Runs `fn` and records a span on `track` around it (a lock held, a phase
   * of the run); returns what `fn` returned.
   */
  async slice<T>(track: string, name: string, fn: () => Promise<T>): Promise<T> {
    const t0 = this.world.sched.now;
    try {
      return await fn();
    } finally {
      this.span(track, name, t0, this.world.sched.now);
    }
  }

  /** Total bytes of the transfers. */
  get bytes(): number {
    return this.transfers.reduce((n, t) => n + t.bytes, 0);
  }
}
