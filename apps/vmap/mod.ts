/**
 * App 1, kernel vmap: a console-like kernel client draws into a
 * system-heap buffer and a GPU VRAM buffer (I/O memory) through
 * `dma_buf_vmap`; vmap reference counting and the VRAM pin are visible.
 *
 * @example
 * ```ts
 * import { runVmap } from "@dmalab/app-vmap";
 * const { result } = await runVmap();
 * result.path; // "CPU: vmap (RAM) + ioremap (VRAM BAR)"
 * ```
 *
 * @module
 */
export * from "./app.ts";
