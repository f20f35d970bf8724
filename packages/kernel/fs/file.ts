/**
 * DOC: struct file
 *
 * The generic VFS object behind every file descriptor (include/linux/fs.h,
 * fs/file_table.c): an inode, `f_op`, `f_flags`/`f_mode`, `private_data`
 * and a reference count (`f_count`). {@linkcode File.get} is `get_file`,
 * {@linkcode File.put} is `fput`: the last put runs `f_op->release` exactly
 * once, synchronously (the kernel defers `__fput` to task work on the way
 * back to user space, where the caller holds no locks; callers here must
 * likewise hold no lock that `release` takes).
 *
 * `f_op` members are optional as in the kernel: a missing `unlocked_ioctl`
 * is -ENOTTY, a missing `mmap` is -ENODEV, a missing `llseek` means
 * `noop_llseek`/`no_llseek` per {@linkcode FileOperations.llseek}.
 *
 * Locking: `f_count` is atomic; no lock is held while `f_op` callbacks run.
 *
 * @module
 */
import { KernelError } from "../errors.ts";
import type { Kernel } from "../world.ts";
import { AddressSpace, type VmFile } from "../mm/address_space.ts";
import type { Vma } from "../mm/vma.ts";

/** `O_RDONLY`. */
export const O_RDONLY = 0o0;
/** `O_WRONLY`. */
export const O_WRONLY = 0o1;
/** `O_RDWR`. */
export const O_RDWR = 0o2;
/** `O_ACCMODE`. */
export const O_ACCMODE = 0o3;
/** `O_NONBLOCK`. */
export const O_NONBLOCK = 0o4000;
/** `O_CLOEXEC` (x86 value 02000000). */
export const O_CLOEXEC = 0o2000000;

/** `SEEK_SET`. */
export const SEEK_SET = 0;
/** `SEEK_CUR`. */
export const SEEK_CUR = 1;
/** `SEEK_END`. */
export const SEEK_END = 2;

/** `EPOLLIN`. */
export const EPOLLIN = 0x001;
/** `EPOLLPRI`. */
export const EPOLLPRI = 0x002;
/** `EPOLLOUT`. */
export const EPOLLOUT = 0x004;
/** `EPOLLERR`. */
export const EPOLLERR = 0x008;

/** The kinds of inode the model distinguishes (`S_IFMT` plus the fs that owns it). */
export type InodeKind = "anon" | "chr" | "shmem" | "hugetlbfs" | "reg";

/** `struct inode`, reduced to what the files here need. */
export class Inode {
  /** `i_ino`. */
  readonly ino: number;
  /** The filesystem / file type. */
  readonly kind: InodeKind;
  /** `i_size` in bytes (bigint-free: buffers stay below 2^53). */
  size: number;
  /** `i_private`. */
  private: unknown = null;
  #mapping: AddressSpace | null = null;

  /** Builds an inode; `ino` is unique within its filesystem. */
  constructor(ino: number, kind: InodeKind, size = 0) {
    this.ino = ino;
    this.kind = kind;
    this.size = size;
  }

  /** `i_mapping` (created on first use): the VMAs mapping this inode, for `unmap_mapping_range`. */
  mapping(world: Kernel): AddressSpace {
    this.#mapping ??= new AddressSpace(world, `${this.kind}:${this.ino}`);
    return this.#mapping;
  }
}

/**
 * `struct file_operations`: every member optional. Callbacks that may sleep
 * in the kernel may return a promise.
 */
export interface FileOperations {
  /** Name of the owning driver for reports (`THIS_MODULE`-ish). */
  readonly owner?: string;
  /** `release(inode, file)`: last `fput`. */
  release?(file: File): void;
  /**
   * `unlocked_ioctl(file, cmd, arg)`: returns the non-negative result or
   * throws a {@linkcode KernelError}. `arg` is the user buffer the command's
   * struct is copied from/to (a `DataView`), a number, or whatever the
   * driver documents.
   */
  ioctl?(file: File, cmd: number, arg: unknown): number | Promise<number>;
  /** `llseek(file, offset, whence)`: new position or throws. Absent means -ESPIPE. */
  llseek?(file: File, offset: number, whence: number): number;
  /** `poll(file, wait)`: the ready mask (EPOLL* bits); may sleep (dma-buf takes the resv lock). */
  poll?(file: File): number | Promise<number>;
  /** `mmap(file, vma)`: the VMA type is the mm package's. */
  mmap?(file: File, vma: unknown): void | Promise<void>;
  /** `show_fdinfo(seq, file)`: lines of /proc/<pid>/fdinfo/<fd> after the generic ones. */
  showFdinfo?(file: File): string;
}

/** Options for {@linkcode File}. */
export interface FileOptions {
  /** `f_flags` (O_* bits). Default O_RDWR. */
  flags?: number;
  /** `private_data`. */
  privateData?: unknown;
  /** Path shown in reports and /proc (`d_path`), e.g. `/dmabuf:` or `/dev/udmabuf`. */
  path?: string;
}

/**
 * `struct file`.
 *
 * @example
 * ```ts
 * import { File, Inode, Kernel } from "@dmalab/kernel";
 * const world = new Kernel();
 * let released = 0;
 * const file = new File(world, new Inode(1, "anon"), { release: () => released++ });
 * file.get();
 * file.put();
 * file.put(); // last reference: release runs
 * released; // 1
 * ```
 */
export class File {
  /** The world. */
  readonly world: Kernel;
  /** `f_inode`. */
  readonly inode: Inode;
  /** `f_op`. */
  readonly fOp: FileOperations;
  /** `f_flags`. */
  flags: number;
  /** `f_pos`. */
  pos = 0;
  /** `private_data`. */
  privateData: unknown;
  /** `d_path`. */
  readonly path: string;
  /** A world-unique id (for reports). */
  readonly id: number;
  #count = 1;
  #released = false;
  #vmFile: VmFile | null = null;

  /** `alloc_file`: a file with one reference, owned by the caller. */
  constructor(world: Kernel, inode: Inode, fOp: FileOperations, options: FileOptions = {}) {
    this.world = world;
    this.inode = inode;
    this.fOp = fOp;
    this.flags = options.flags ?? O_RDWR;
    this.privateData = options.privateData ?? null;
    this.path = options.path ?? `anon_inode:[${inode.ino}]`;
    this.id = world.nextId();
  }

  /** `file_count`: the reference count. */
  get count(): number {
    return this.#count;
  }

  /** True once the last reference was dropped and `release` ran. */
  get released(): boolean {
    return this.#released;
  }

  /** `get_file`: takes a reference (a WARN on a released file, as refcount_inc on 0). */
  get(): this {
    if (this.#count <= 0) {
      this.world.bug("refcount", `refcount_t: addition on 0; use-after-free of file ${this.path}`);
      return this;
    }
    this.#count++;
    return this;
  }

  /** `get_file_rcu` / `get_file_active`: a reference unless the file is already dying. */
  tryGet(): boolean {
    if (this.#count <= 0) return false;
    this.#count++;
    return true;
  }

  /** `fput`: drops a reference; the last one runs `f_op->release` once. */
  put(): void {
    if (this.#count <= 0) {
      this.world.bug("refcount", `refcount_t: underflow; use-after-free of file ${this.path}`);
      return;
    }
    if (--this.#count > 0) return;
    this.#released = true;
    this.fOp.release?.(this);
  }

  /** `vfs_ioctl`: -ENOTTY without `unlocked_ioctl`. */
  ioctl(cmd: number, arg: unknown): number | Promise<number> {
    if (!this.fOp.ioctl) {
      throw new KernelError("ENOTTY", `${this.path}: no unlocked_ioctl (vfs_ioctl)`);
    }
    return this.fOp.ioctl(this, cmd, arg);
  }

  /** `vfs_llseek`: -ESPIPE without `llseek` (`no_llseek`). */
  llseek(offset: number, whence: number): number {
    if (!this.fOp.llseek) {
      throw new KernelError("ESPIPE", `${this.path}: not seekable (no_llseek)`);
    }
    const pos = this.fOp.llseek(this, offset, whence);
    this.pos = pos;
    return pos;
  }

  /** `vfs_poll`: `DEFAULT_POLLMASK` (IN|OUT|RDNORM|WRNORM) without `poll`. */
  poll(): number | Promise<number> {
    return this.fOp.poll ? this.fOp.poll(this) : EPOLLIN | EPOLLOUT | 0x40 | 0x100;
  }

  /** `seq_show` of /proc/<pid>/fdinfo: `pos`, `flags` (octal), `mnt_id`, `ino`, then the driver's lines. */
  fdinfo(): string {
    const base = `pos:\t${this.pos}\nflags:\t0${
      this.flags.toString(8)
    }\nmnt_id:\t0\nino:\t${this.inode.ino}\n`;
    return base + (this.fOp.showFdinfo?.(this) ?? "");
  }

  /**
   * The file as the mm package maps it (`vm_file`): `f_mapping`, `f_op->mmap`
   * (-ENODEV from mmap(2) when absent), FMODE_WRITE, and the reference a
   * VMA holds.
   */
  asVmFile(): VmFile {
    if (this.#vmFile) return this.#vmFile;
    const mmap = this.fOp.mmap;
    const vf: VmFile = {
      mapping: this.inode.mapping(this.world),
      name: this.path,
      writable: (this.flags & O_ACCMODE) !== O_RDONLY,
      get: () => void this.get(),
      put: () => this.put(),
      ...(mmap ? { mmap: (vma: Vma) => mmap(this, vma) } : {}),
    };
    this.#vmFile = vf;
    return vf;
  }

  /** `toString`: the path. */
  toString(): string {
    return this.path;
  }
}
