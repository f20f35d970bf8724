/**
 * DOC: what an app returns
 *
 * Every access-mechanism app returns an {@linkcode AppRun}: a structured
 * {@linkcode AppResult} (the row the tour prints, plus costs, rules checked
 * and the narrative of the run) and the world it ran in, with the
 * {@linkcode Recorder} that holds the transfers and spans the report and the
 * trace exporters draw. No locking: results are plain data built after the
 * world's tasks finished.
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";
import type { PciDev, PciFabric } from "@dmalab/pci-p2p";
import type { Recorder } from "./recorder.ts";

/** One DMA or CPU transfer an app made, for the summary, report and trace. */
export interface AppTransfer {
  /** Short label (`RDMA write`, `device read`). */
  label: string;
  /** The PCI function that issued it, when one did. */
  src: PciDev | null;
  /** The PCI function whose memory it reached (a BAR), when one did. */
  dst: PciDev | null;
  /** Name of the source side (`0000:04:00.0`, `CPU`). */
  srcName: string;
  /** Name of the target side (`system RAM`, `0000:03:00.0 BAR1`). */
  dstName: string;
  /** How it was routed: a P2PDMA map type (`BUS_ADDR`, `THRU_HOST_BRIDGE`), `RAM`, `CPU`, `host`. */
  mapType: string;
  /** Whether the issuing device used ATS (translated requests). */
  ats: boolean;
  /** Bytes moved. */
  bytes: number;
  /** Virtual time at the start, ns. */
  ns: number;
  /** Modelled duration, ns (from the bandwidth model; 0 when not modelled). */
  durNs: number;
  /** Modelled rate, GB/s (0 when not modelled). */
  gbps: number;
}

/** A slice on a named track (a fence pending, a lock held, an eviction). */
export interface AppSpan {
  /** Track (`fence gpu/gfx`, `lock dma_resv`). */
  track: string;
  /** Slice name. */
  name: string;
  /** Start, ns. */
  startNs: number;
  /** End, ns. */
  endNs: number;
  /** Extra fields. */
  args: Record<string, string | number | boolean>;
}

/** One configuration of an app that runs several (app 5's variants). */
export interface AppVariantRow {
  /** Configuration name. */
  variant: string;
  /** What happened, one line per column. */
  cells: Record<string, string>;
  /** Invariant violations seen in this configuration. */
  violations: string[];
  /** True when the configuration kept the invariants. */
  keepsInvariants: boolean;
  /** True when the outcome is what this configuration is expected to do. */
  asExpected: boolean;
}

/** The structured result of one app run. */
export interface AppResult {
  /** App name (`mmap`). */
  app: string;
  /** Access mechanism (`userspace mmap`). */
  mechanism: string;
  /** Variant run (`coherent`, `bounce-nosync`, `all`). */
  variant: string;
  /** Machine name. */
  machine: string;
  /** Exporter (who owns the memory). */
  exporter: string;
  /** Importer (who accesses it). */
  importer: string;
  /** The path or map type the data took. */
  path: string;
  /** ATS on, off, or not applicable. */
  ats: "on" | "off" | "n/a";
  /** Bytes read back and compared equal, end to end. */
  bytesVerified: number;
  /** Rule violations and invariant failures that were NOT expected (the run fails on any). */
  violations: string[];
  /** Findings the run set out to show (stale data without SYNC, a revoke window...). */
  expectedFindings: string[];
  /** Costs: counters and modelled figures. */
  costs: Record<string, number | string>;
  /** Locks and rules the run went through (each checked by the model as it ran). */
  rulesChecked: string[];
  /** What happened, step by step. */
  steps: string[];
  /** Per-configuration rows (apps that run several). */
  variants: AppVariantRow[];
  /** True when the run behaved as the kernel would and every byte checked. */
  ok: boolean;
}

/** An app run: the result and what the CLI needs for traces and reports. */
export interface AppRun {
  /** The result. */
  result: AppResult;
  /** The world the run used (the last one for apps that run several). */
  world: Kernel;
  /** Its PCI fabric. */
  fabric: PciFabric;
  /** Transfers and spans. */
  recorder: Recorder;
  /** `/sys/kernel/debug/dma_buf/bufinfo` while the run's buffers were live (null: none taken). */
  bufinfo: string | null;
}

/** Options every app takes. */
export interface AppOptions {
  /** A topology file (NCCL XML, `lspci -tv` text, JSON MachineSpec, or a sysfs directory). */
  topology?: string;
  /** Variant name (each app documents its own). */
  variant?: string;
  /** Seed for the world. */
  seed?: number;
  /** Called with progress lines (the CLI shows them on a TTY only). */
  progress?: (line: string) => void;
}

/** An app as the CLI lists it. */
export interface AppDefinition {
  /** Name on the command line (`dmalab run NAME`). */
  name: string;
  /** Access mechanism. */
  mechanism: string;
  /** One line. */
  summary: string;
  /** Variants accepted by `--variant` (the first is the default). */
  variants: readonly string[];
  /** Whether `--topology FILE` is accepted. */
  topology: boolean;
  /** Runs the app. */
  run(options?: AppOptions): Promise<AppRun>;
}
