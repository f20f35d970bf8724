/**
 * DOC: struct dma_buf — export, file descriptors, references, release
 *
 * drivers/dma-buf/dma-buf.c. A dma-buf IS a file of the "dmabuf" pseudo
 * filesystem: its reference count is the file's (`get_dma_buf` =
 * `get_file`, `dma_buf_put` = `fput`), and the last put runs the
 * exporter's `release` exactly once (`dma_buf_release`, after the file
 * release unlinked it from the world's buffer list). Release BUGs if a vmap
 * or a poll callback is still outstanding and WARNs if attachments remain.
 *
 * {@linkcode dmaBufExport} validates the export info as the kernel does
 * (WARN + -EINVAL for missing priv/ops/map/unmap/release, pin without unpin;
 * -ENOENT when the owner module is going away). The get_pfn RFC (world
 * variant `dma-buf.pfn=rfc-get-pfn`) relaxes it: map and unmap both or
 * neither, and at least one of `mapDmaBuf` or `getPfn`. The pfn-attachment
 * and PAL variants likewise accept an exporter that offers only their
 * mechanism (`pfnMap` / `mapPhys`).
 *
 * Kernel version switch `dma-buf.version` ("7.1" default, or "6.19"):
 * 7.1 renames move_notify to invalidate_mappings, makes it optional and
 * always builds CONFIG_DMABUF_MOVE_NOTIFY; 6.19 requires `move_notify` from
 * dynamic importers and reads `CONFIG_DMABUF_MOVE_NOTIFY` (default "n").
 *
 * Locking: `dma_buf_export`, `dma_buf_fd`, `dma_buf_get`, `dma_buf_put` must
 * be called WITHOUT the buffer's reservation lock (checked). The global
 * list is the kernel's `dmabuf_list` (its mutex is not needed here: list
 * updates are atomic under the cooperative scheduler). The attachment list
 * changes only under the reservation lock (attachment.ts).
 *
 * @module
 */
import {
  EPOLLIN,
  EPOLLOUT,
  type FdTable,
  File,
  filesOf,
  type Kernel,
  KernelError,
  O_ACCMODE,
  O_NONBLOCK,
  pseudoFsInode,
  SEEK_END,
  SEEK_SET,
  WaitQueueHead,
} from "@dmalab/kernel";
import { DmaFenceCb } from "../fence/dma_fence.ts";
import { DmaResv, DmaResvIter, dmaResvUsageRw } from "../resv/dma_resv.ts";
import type { DmaBufAttachOps, DmaBufExportInfo, DmaBufOps, DmaBufVma } from "./ops.ts";
import type { IosysMap } from "./iosys_map.ts";
import { dmaBufAssertResvNotHeld } from "./locking.ts";
import {
  dmaBufAttach,
  type DmaBufAttachment,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufInvalidateMappings,
} from "./attachment.ts";
import type { DmaBufAttachOps as AttachOps } from "./ops.ts";
import type { Device } from "@dmalab/kernel";
import type { DmaBufPfnAttachment } from "../pfn/types.ts";

/** `DMA_BUF_NAME_LEN`: userspace names, including the NUL. */
export const DMA_BUF_NAME_LEN = 32;

/** The kernel version this world's dma-buf core follows (`dma-buf.version`). */
export function dmaBufVersion(world: Kernel): "6.19" | "7.1" {
  return world.variant("dma-buf.version", "7.1") === "6.19" ? "6.19" : "7.1";
}

/** True when move notification is built in (always in 7.1; `CONFIG_DMABUF_MOVE_NOTIFY` in 6.19). */
export function dmaBufMoveNotifyEnabled(world: Kernel): boolean {
  return dmaBufVersion(world) === "7.1" || world.variant("CONFIG_DMABUF_MOVE_NOTIFY", "n") === "y";
}

/** The pfn mechanism this world runs (`dma-buf.pfn`): none (mainline), rfc-get-pfn, pfn-attachment, pal. */
export type DmaBufPfnVariant = "none" | "rfc-get-pfn" | "pfn-attachment" | "pal";

/** The pfn variant of `world`. */
export function dmaBufPfnVariant(world: Kernel): DmaBufPfnVariant {
  const v = world.variant("dma-buf.pfn", "none");
  return v === "rfc-get-pfn" || v === "pfn-attachment" || v === "pal" ? v : "none";
}

/** Per-world dma-buf core state: the buffer list, modules going away, counters for checkers. */
export class DmaBufCore {
  /** `dmabuf_list`, newest first (list_add). */
  readonly list: DmaBuf[] = [];
  /** Owner modules that are being unloaded (`try_module_get` fails). */
  readonly unloadingModules: Set<string> = new Set();
  /** Buffers released so far. */
  released = 0;

  /** Registers the dma-buf invariant checker on `world`. */
  constructor(world: Kernel) {
    world.addChecker("dma-buf", () => {
      const out: string[] = [];
      for (const b of this.list) out.push(...b.checkInvariants());
      return out;
    });
  }
}

/** The dma-buf core state of `world`. */
export function dmaBufCore(world: Kernel): DmaBufCore {
  return world.ext("dma-buf.core", () => new DmaBufCore(world));
}

/** `struct dma_buf_poll_cb_t`: one poll direction's fence callback. */
export class DmaBufPollCb extends DmaFenceCb {
  /** `active`: EPOLLIN/EPOLLOUT while armed, 0 otherwise. */
  active = 0;
}

/**
 * `struct dma_buf`.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaBufExport, dmaBufGet, SgTable } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const ops = {
 *   mapDmaBuf: () => new SgTable([]),
 *   unmapDmaBuf: () => {},
 *   release: () => {},
 * };
 * const buf = dmaBufExport(world, { expName: "demo", ops, size: 8192, priv: {} });
 * const fd = buf.fd(0);
 * const again = dmaBufGet(world, fd); // a second reference
 * again === buf; // true
 * again.put();
 * ```
 */
export class DmaBuf {
  /** The world. */
  readonly world: Kernel;
  /** `size` (constant for the buffer's life). */
  readonly size: number;
  /** `file`: the dma-buf's file; its refcount is the buffer's. */
  readonly file: File;
  /** `ops`. */
  readonly ops: DmaBufOps;
  /** `exp_name`. */
  readonly expName: string;
  /** `owner` module. */
  readonly owner: string;
  /** `priv`: exporter data. */
  readonly priv: unknown;
  /** `resv`. */
  readonly resv: DmaResv;
  /** `attachments`, newest first; changed only under `resv`. */
  readonly attachments: DmaBufAttachment[] = [];
  /** pfn attachments of the `pfn-attachment` variant, newest first; changed under `resv`. */
  readonly pfnAttachments: DmaBufPfnAttachment[] = [];
  /** `vmapping_counter`. */
  vmappingCounter = 0;
  /** `vmap_ptr`. */
  vmapPtr: IosysMap | null = null;
  /** Poll callbacks that fired (each wakes {@linkcode DmaBuf.pollWq}). */
  pollWakeups = 0;
  /** `poll`: the wait queue pollers sleep on. */
  readonly pollWq: WaitQueueHead;
  /** `cb_in`. */
  readonly cbIn: DmaBufPollCb = new DmaBufPollCb();
  /** `cb_out`. */
  readonly cbOut: DmaBufPollCb = new DmaBufPollCb();
  /** Mappings handed out and not yet unmapped, over every attachment (sg and PAL). */
  outstandingMappings = 0;
  readonly #embeddedResv: boolean;
  #name: string | null = null;

  /** Use {@linkcode dmaBufExport}. */
  constructor(world: Kernel, info: DmaBufExportInfo, file: File, resv: DmaResv, embedded: boolean) {
    this.world = world;
    this.size = info.size;
    this.ops = info.ops;
    this.expName = info.expName;
    this.owner = info.owner ?? "kernel";
    this.priv = info.priv;
    this.file = file;
    this.resv = resv;
    this.#embeddedResv = embedded;
    this.pollWq = new WaitQueueHead(world.sched, "dmabuf->poll");
  }

  /** `file_inode(dmabuf->file)->i_ino`: unique per buffer. */
  get inodeNumber(): number {
    return this.file.inode.ino;
  }

  /** `dmabuf->name` (null until userspace sets one). */
  get name(): string | null {
    return this.#name;
  }

  /** Sets the name (`dma_buf_set_name` after validation; see uapi.ts). */
  setNameRaw(name: string): void {
    this.#name = name;
  }

  /** `file_count(dmabuf->file)`. */
  get refcount(): number {
    return this.file.count;
  }

  /** True once the buffer was released. */
  get released(): boolean {
    return this.file.released;
  }

  /** `dma_buf_is_dynamic`: the exporter has `pin`. */
  get isDynamic(): boolean {
    return this.ops.pin !== undefined;
  }

  /** `get_dma_buf`: takes a reference. */
  get(): this {
    this.file.get();
    return this;
  }

  /** `dma_buf_put`: drops a reference (must not hold the reservation lock). */
  put(): void {
    dmaBufAssertResvNotHeld(this, "dma_buf_put");
    this.file.put();
  }

  /**
   * `dma_buf_fd(dmabuf, flags)`: installs the caller's reference in an fd
   * table (default `current->files`); returns the fd. -EMFILE etc. propagate
   * and leave the reference with the caller.
   */
  fd(flags: number, files: FdTable = filesOf(this.world)): number {
    dmaBufAssertResvNotHeld(this, "dma_buf_fd");
    if (this.file.released) throw new KernelError("EINVAL", "dma_buf_fd: buffer has no file");
    return files.installNew(this.file, flags);
  }

  /** `dma_buf_attach(dmabuf, dev)`: a static importer (see attachment.ts). */
  attach(dev: Device): Promise<DmaBufAttachment> {
    return dmaBufAttach(this, dev);
  }

  /** `dma_buf_dynamic_attach(dmabuf, dev, importer_ops, importer_priv)`. */
  dynamicAttach(
    dev: Device | null,
    importerOps: AttachOps | null,
    importerPriv: unknown,
  ): Promise<DmaBufAttachment> {
    return dmaBufDynamicAttach(this, dev, importerOps, importerPriv);
  }

  /** `dma_buf_detach(dmabuf, attach)`. */
  detach(attach: DmaBufAttachment): Promise<void> {
    return dmaBufDetach(this, attach);
  }

  /** `dma_buf_invalidate_mappings(dmabuf)` (reservation lock held). */
  invalidateMappings(): void {
    dmaBufInvalidateMappings(this);
  }

  /** `dma_buf_move_notify(dmabuf)`: the pre-7.1 name. */
  moveNotify(): void {
    dmaBufInvalidateMappings(this);
  }

  /** Name for reports. */
  toString(): string {
    return `dmabuf:${this.inodeNumber}(${this.expName})`;
  }

  /** Invariant violations of this buffer (run by `world.check()`). */
  checkInvariants(): string[] {
    const out: string[] = [];
    if (this.vmappingCounter < 0) out.push(`${this}: vmapping_counter ${this.vmappingCounter} < 0`);
    if ((this.vmappingCounter > 0) !== (this.vmapPtr !== null)) {
      out.push(`${this}: vmapping_counter ${this.vmappingCounter} disagrees with vmap_ptr`);
    }
    let maps = 0;
    for (const a of this.attachments) {
      if (a.dmabuf !== this) out.push(`${this}: foreign attachment on the list`);
      maps += a.mappings.size + a.physMappings;
      if (a.pinCount < 0) out.push(`${a}: pin count ${a.pinCount} < 0`);
      if (a.exporterPins < 0) out.push(`${a}: exporter pins ${a.exporterPins} < 0`);
    }
    for (const pa of this.pfnAttachments) {
      maps += (pa as { outstanding?: Map<unknown, unknown> }).outstanding?.size ?? 0;
    }
    if (maps !== this.outstandingMappings) {
      out.push(
        `${this}: ${this.outstandingMappings} mappings counted, ${maps} found on attachments`,
      );
    }
    return out;
  }

  /** @internal `dma_buf_file_release` + `dma_buf_release`. */
  releaseFromFile(): void {
    const core = dmaBufCore(this.world);
    const i = core.list.indexOf(this);
    if (i >= 0) core.list.splice(i, 1);
    if (this.vmappingCounter) {
      this.world.bug(
        "BUG",
        `kernel BUG at drivers/dma-buf/dma-buf.c: dma_buf_release: ${this} still vmapped (vmapping_counter ${this.vmappingCounter})`,
      );
    }
    if (this.cbIn.active || this.cbOut.active) {
      this.world.bug(
        "BUG",
        `kernel BUG at drivers/dma-buf/dma-buf.c: dma_buf_release: ${this} has an active poll callback`,
      );
    }
    this.ops.release?.(this);
    if (this.#embeddedResv) this.resv.fini();
    this.world.warnOn(
      this.attachments.length > 0 || this.pfnAttachments.length > 0,
      `dma_buf_release: ${this} released with ${this.attachments.length} attachment(s) still attached`,
    );
    core.released++;
    this.world.trace.event("dma_buf_release", { exp_name: this.expName, ino: this.inodeNumber });
  }

  // ---- file operations ---------------------------------------------------

  /** `dma_buf_llseek`: only offset 0 with SEEK_END (size) or SEEK_SET (0). */
  llseek(offset: number, whence: number): number {
    let base: number;
    if (whence === SEEK_END) base = this.size;
    else if (whence === SEEK_SET) base = 0;
    else {throw new KernelError(
        "EINVAL",
        `${this}: llseek whence ${whence} not supported (dma_buf_llseek)`,
      );}
    if (offset !== 0) {
      throw new KernelError("EINVAL", `${this}: llseek offset must be 0 (dma_buf_llseek)`);
    }
    return base + offset;
  }

  /**
   * `dma_buf_poll(file, events)`: EPOLLIN once the write fences (KERNEL +
   * WRITE) signalled, EPOLLOUT once every implicit fence (up to READ) did.
   * An armed callback holds a file reference until its fence signals.
   */
  async poll(events: number = EPOLLIN | EPOLLOUT): Promise<number> {
    events &= EPOLLIN | EPOLLOUT;
    if (!events) return 0;
    await this.resv.lock(null);
    try {
      for (
        const [bit, cb, write] of [[EPOLLOUT, this.cbOut, true], [
          EPOLLIN,
          this.cbIn,
          false,
        ]] as const
      ) {
        if (!(events & bit)) continue;
        if (cb.active) {
          events &= ~bit;
          continue;
        }
        cb.active = bit;
        this.file.get();
        if (this.#pollAddCb(write, cb)) events &= ~bit;
        else this.#pollCb(null, cb);
      }
    } finally {
      this.resv.unlock();
    }
    return events;
  }

  /**
   * poll(2) on the fd until one of `events` is ready: `dma_buf_poll`, and
   * while nothing is ready, sleep on the buffer's poll wait queue until a
   * callback fires, then poll again (`do_poll`). Interruptible: a signal
   * ends it with -ERESTARTSYS (-EINTR to user space).
   */
  async pollWait(events: number = EPOLLIN | EPOLLOUT): Promise<number> {
    for (;;) {
      const seen = this.pollWakeups;
      const mask = await this.poll(events);
      if (mask) return mask;
      const r = await this.pollWq.waitEventInterruptible(() => this.pollWakeups !== seen);
      if (r < 0) throw new KernelError("ERESTARTSYS", `${this}: poll interrupted`);
    }
  }

  #pollCb(fence: { put(): void } | null, cb: DmaBufPollCb): void {
    this.pollWakeups++;
    this.pollWq.wakeUpAll();
    cb.active = 0;
    fence?.put();
    this.file.put();
  }

  #pollAddCb(write: boolean, cb: DmaBufPollCb): boolean {
    const cursor = new DmaResvIter(this.resv, dmaResvUsageRw(write));
    for (let f = cursor.first(); f; f = cursor.next()) {
      f.get();
      if (f.addCallback(cb, (fence) => this.#pollCb(fence, cb)) === 0) return true;
      f.put();
    }
    return false;
  }

  /** `dma_buf_show_fdinfo`. */
  showFdinfo(): string {
    let s = `size:\t${this.size}\ncount:\t${this.file.count - 1}\nexp_name:\t${this.expName}\n`;
    if (this.#name !== null) s += `name:\t${this.#name}\n`;
    return s;
  }

  /** `dma_buf_mmap_internal`: mmap(2) of the fd; -EINVAL without `ops.mmap` or past the end. */
  async mmapInternal(vma: DmaBufVma): Promise<void> {
    if (!this.ops.mmap) {
      throw new KernelError("EINVAL", `${this}: exporter has no mmap (dma_buf_mmap_internal)`);
    }
    const pages = Math.ceil((vma.vmEnd - vma.vmStart) / 4096);
    if (vma.vmPgoff + pages > Math.floor(this.size / 4096)) {
      throw new KernelError(
        "EINVAL",
        `${this}: mmap of pages [${vma.vmPgoff}, ${vma.vmPgoff + pages}) beyond ${
          Math.floor(this.size / 4096)
        } (dma_buf_mmap_internal)`,
      );
    }
    this.world.trace.event("dma_buf_mmap_internal", {
      exp_name: this.expName,
      ino: this.inodeNumber,
    });
    await this.ops.mmap(this, vma);
  }
}

/** True when `file` is a dma-buf file (`is_dma_buf_file`). */
export function isDmaBufFile(file: File): boolean {
  return file.privateData instanceof DmaBuf && file.fOp === DMA_BUF_FOPS;
}

/** Installed by uapi.ts: the ioctl handler of dma-buf files. */
export const dmaBufIoctlHook: {
  fn: ((dmabuf: DmaBuf, cmd: number, arg: unknown) => Promise<number>) | null;
} = {
  fn: null,
};

/** `dma_buf_fops`. */
const DMA_BUF_FOPS = {
  owner: "dma-buf",
  release: (file: File) => (file.privateData as DmaBuf).releaseFromFile(),
  llseek: (file: File, offset: number, whence: number) =>
    (file.privateData as DmaBuf).llseek(offset, whence),
  poll: (file: File) => (file.privateData as DmaBuf).poll(),
  mmap: (file: File, vma: unknown) => (file.privateData as DmaBuf).mmapInternal(vma as DmaBufVma),
  ioctl: (file: File, cmd: number, arg: unknown): Promise<number> => {
    const hook = dmaBufIoctlHook.fn;
    if (!hook) throw new KernelError("ENOTTY", "dma-buf ioctl handler not loaded");
    return hook(file.privateData as DmaBuf, cmd, arg);
  },
  showFdinfo: (file: File) => (file.privateData as DmaBuf).showFdinfo(),
};

/** `f_mode` as bufinfo prints it: FMODE_READ/WRITE from the access mode, FMODE_LSEEK, FMODE_OPENED. */
export function dmaBufFmode(file: File): number {
  const acc = file.flags & O_ACCMODE;
  const rw = acc === 0 ? 1 : acc === 1 ? 2 : 3;
  return rw | 0x4 | 0x80000;
}

function tryModuleGet(core: DmaBufCore, owner: string): boolean {
  return !core.unloadingModules.has(owner);
}

/**
 * `dma_buf_export(exp_info)`: a new buffer holding one reference (the
 * caller's). Throws -EINVAL (after a WARN) for invalid export info,
 * -ENOENT when the owner module is being unloaded.
 */
export function dmaBufExport(world: Kernel, info: DmaBufExportInfo): DmaBuf {
  const ops = info.ops;
  const variant = dmaBufPfnVariant(world);
  const hasMap = !!ops?.mapDmaBuf;
  const hasUnmap = !!ops?.unmapDmaBuf;
  let bad: string | null = null;
  if (!info.priv) bad = "exp_info->priv is NULL";
  else if (!ops) bad = "exp_info->ops is NULL";
  else if (!ops.release) bad = "ops->release is NULL";
  else if (variant === "none" && (!hasMap || !hasUnmap)) {
    bad = "ops->map_dma_buf/unmap_dma_buf missing";
  } else if (variant !== "none" && hasMap !== hasUnmap) {
    bad = "ops->map_dma_buf and unmap_dma_buf must both be set or both be NULL";
  } else if (variant === "rfc-get-pfn" && !hasMap && !ops.getPfn) {
    bad = "neither ops->map_dma_buf nor ops->get_pfn";
  } else if (variant === "pfn-attachment" && !hasMap && !ops.pfnMap) {
    bad = "neither ops->map_dma_buf nor ops->pfn_map";
  } else if (variant === "pal" && !hasMap && !ops.mapPhys) {
    bad = "neither ops->map_dma_buf nor ops->map_phys";
  } else if (!ops.pin !== !ops.unpin) {
    bad = "ops->pin and ops->unpin must both be set or both be NULL";
  } else if (!!ops.mapPhys !== !!ops.unmapPhys) {
    bad = "ops->map_phys and ops->unmap_phys must both be set";
  } else if (ops.pfnMap && !ops.pfnMemoryModel) bad = "ops->pfn_map without a memory model";
  if (bad !== null) {
    world.warnOn(true, `dma_buf_export: ${bad}`);
    throw new KernelError("EINVAL", `dma_buf_export: ${bad}`);
  }
  if (info.resv) dmaBufAssertResvNotHeldRaw(world, info.resv, "dma_buf_export");
  const core = dmaBufCore(world);
  const owner = info.owner ?? "kernel";
  if (!tryModuleGet(core, owner)) {
    throw new KernelError(
      "ENOENT",
      `dma_buf_export: module ${owner} is going away (try_module_get)`,
    );
  }
  const inode = pseudoFsInode(world, "dmabuf", info.size);
  const file = new File(world, inode, DMA_BUF_FOPS, {
    flags: (info.flags ?? 0) & (O_ACCMODE | O_NONBLOCK),
    path: "/dmabuf:",
  });
  const embedded = !info.resv;
  const resv = info.resv ?? new DmaResv(world);
  const buf = new DmaBuf(world, info, file, resv, embedded);
  file.privateData = buf;
  core.list.unshift(buf);
  world.trace.event("dma_buf_export", {
    exp_name: buf.expName,
    ino: buf.inodeNumber,
    size: buf.size,
  });
  return buf;
}

function dmaBufAssertResvNotHeldRaw(world: Kernel, resv: DmaResv, fn: string): void {
  if (!resv.held()) return;
  world.bug(
    "lockdep",
    `WARNING: ${fn}() called with the exporter's dma_resv lock held (DOC: locking convention)`,
  );
}

/**
 * `dma_buf_get(fd)`: the buffer behind `fd` with a new reference; -EBADF
 * when `fd` is not open, -EINVAL when it is not a dma-buf.
 */
export function dmaBufGet(world: Kernel, fd: number, files: FdTable = filesOf(world)): DmaBuf {
  const file = files.fget(fd);
  if (!isDmaBufFile(file)) {
    file.put();
    throw new KernelError("EINVAL", `dma_buf_get: fd ${fd} (${file.path}) is not a dma-buf`);
  }
  const buf = file.privateData as DmaBuf;
  dmaBufAssertResvNotHeld(buf, "dma_buf_get");
  return buf;
}

/** The live buffers of `world` (`dmabuf_list`, newest first). */
export function dmaBufList(world: Kernel): readonly DmaBuf[] {
  return dmaBufCore(world).list;
}

/** `dma_buf_iter_begin`/`next` as an array snapshot of live buffers, each with a reference taken. */
export function dmaBufIterAll(world: Kernel): DmaBuf[] {
  const out: DmaBuf[] = [];
  for (const b of dmaBufCore(world).list) if (b.file.tryGet()) out.push(b);
  return out;
}

/** Importer ops helper: the invalidate callback (7.1 name first, then move_notify). */
export function importerInvalidate(
  ops: DmaBufAttachOps | null,
): ((a: DmaBufAttachment) => void) | null {
  if (!ops) return null;
  const f = ops.invalidateMappings ?? ops.moveNotify;
  return f ? f.bind(ops) : null;
}
