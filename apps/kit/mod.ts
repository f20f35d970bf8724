/**
 * @dmalab/app-kit: what the five access-mechanism apps share. The machine
 * an app runs on (the default machine or a loaded topology), the
 * {@linkcode AppResult} every app returns, a {@linkcode Recorder} for
 * transfers and spans (report and trace material), and byte checks.
 *
 * @example
 * ```ts
 * import { appMachine, pattern, Recorder } from "@dmalab/app-kit";
 * const m = appMachine();
 * const rec = new Recorder(m.world, m.fabric);
 * const t = rec.transfer({ label: "peek", src: m.nic, dst: m.gpu, mapType: "BUS_ADDR", ats: false, bytes: 4096 });
 * t.gbps > 0; // true: Gen5 x16 under one switch
 * pattern(1, 4).length; // 4
 * ```
 *
 * @module
 */
export * from "./types.ts";
export * from "./recorder.ts";
export * from "./machine.ts";
export * from "./verify.ts";
export * from "./locks.ts";
