/**
 * DOC: file descriptor tables
 *
 * `struct files_struct` (fs/file.c): a process's fd → file map with the
 * close-on-exec bits. Allocation hands out the lowest free number below
 * `RLIMIT_NOFILE` (default 1024) or fails with -EMFILE; an fd that is not
 * open is -EBADF for `fget`/`close`. {@linkcode FdTable.getUnusedFd} and
 * {@linkcode FdTable.install} are the kernel's two-step
 * `get_unused_fd_flags` + `fd_install` (a reserved slot counts against the
 * limit and is released with {@linkcode FdTable.putUnusedFd}).
 *
 * Which table a task uses: {@linkcode filesOf} returns the table bound to a
 * task with {@linkcode bindFiles}, or the world's default table (one
 * process, the common case in tests).
 *
 * Locking: `files->file_lock` is a spinlock in the kernel; every operation
 * here is synchronous and atomic with respect to the scheduler.
 *
 * @module
 */
import { KernelError } from "../errors.ts";
import type { Task } from "../sched/task.ts";
import type { Kernel } from "../world.ts";
import { File, Inode, O_CLOEXEC, O_RDWR } from "./file.ts";

/** Default `RLIMIT_NOFILE` soft limit. */
export const NR_OPEN_DEFAULT = 1024;

interface Slot {
  file: File | null;
  cloexec: boolean;
}

/** Options for {@linkcode FdTable}. */
export interface FdTableOptions {
  /** `RLIMIT_NOFILE`; default 1024. */
  rlimitNofile?: number;
  /** Open fds 0, 1, 2 on a tty (`/dev/pts/0`), as a shell-started process has. Default true. */
  stdio?: boolean;
  /** Name for reports (`comm`). */
  name?: string;
}

/**
 * `struct files_struct`.
 *
 * @example
 * ```ts
 * import { FdTable, File, Inode, Kernel, O_CLOEXEC } from "@dmalab/kernel";
 * const world = new Kernel();
 * const files = new FdTable(world);
 * const fd = files.installNew(new File(world, new Inode(9, "anon"), {}), O_CLOEXEC);
 * fd; // 3: 0-2 are stdio
 * files.isCloexec(fd); // true
 * files.close(fd);
 * ```
 */
export class FdTable {
  /** The world. */
  readonly world: Kernel;
  /** Name for reports. */
  readonly name: string;
  /** `RLIMIT_NOFILE`. */
  rlimitNofile: number;
  readonly #slots: (Slot | undefined)[] = [];

  /** A table; with `stdio` (default) fds 0-2 are open on a tty. */
  constructor(world: Kernel, options: FdTableOptions = {}) {
    this.world = world;
    this.name = options.name ?? "init";
    this.rlimitNofile = options.rlimitNofile ?? NR_OPEN_DEFAULT;
    if (options.stdio ?? true) {
      const tty = new File(world, new Inode(world.nextId(), "chr"), {}, {
        flags: O_RDWR,
        path: "/dev/pts/0",
      });
      for (let fd = 0; fd < 3; fd++) {
        if (fd > 0) tty.get();
        this.#slots[fd] = { file: tty, cloexec: false };
      }
    }
  }

  /** Open fds in ascending order. */
  fds(): number[] {
    const out: number[] = [];
    this.#slots.forEach((s, i) => {
      if (s?.file) out.push(i);
    });
    return out;
  }

  /**
   * `get_unused_fd_flags(flags)`: reserves the lowest free fd, honouring
   * `O_CLOEXEC`; -EMFILE at the limit.
   */
  getUnusedFd(flags: number): number {
    let fd = 0;
    while (fd < this.#slots.length && this.#slots[fd] !== undefined) fd++;
    if (fd >= this.rlimitNofile) {
      throw new KernelError(
        "EMFILE",
        `${this.name}: no free fd below RLIMIT_NOFILE ${this.rlimitNofile} (alloc_fd)`,
      );
    }
    this.#slots[fd] = { file: null, cloexec: (flags & O_CLOEXEC) !== 0 };
    return fd;
  }

  /** `put_unused_fd(fd)`: gives back a reserved, never installed slot. */
  putUnusedFd(fd: number): void {
    const s = this.#slots[fd];
    if (s && s.file === null) this.#slots[fd] = undefined;
  }

  /** `fd_install(fd, file)`: the caller's file reference moves into the table. BUG if the slot is not reserved. */
  install(fd: number, file: File): void {
    const s = this.#slots[fd];
    if (!s || s.file !== null) {
      this.world.bug("BUG", `BUG: fd_install(${fd}): slot not reserved or already in use`);
      return;
    }
    s.file = file;
  }

  /** `get_unused_fd_flags` + `fd_install` in one step (FD_ADD): returns the fd. */
  installNew(file: File, flags: number): number {
    const fd = this.getUnusedFd(flags);
    this.install(fd, file);
    return fd;
  }

  /** `fget(fd)`: the file with a new reference; -EBADF when `fd` is not open. */
  fget(fd: number): File {
    const f = this.lookup(fd);
    f.get();
    return f;
  }

  /** `fdget`/`files_lookup_fd_raw`: the file without a reference; -EBADF when not open. */
  lookup(fd: number): File {
    const s = Number.isInteger(fd) && fd >= 0 ? this.#slots[fd] : undefined;
    if (!s?.file) throw new KernelError("EBADF", `${this.name}: fd ${fd} is not open (fget)`);
    return s.file;
  }

  /** True when `fd` is open. */
  isOpen(fd: number): boolean {
    return !!this.#slots[fd]?.file;
  }

  /** `FD_CLOEXEC` of an open fd. */
  isCloexec(fd: number): boolean {
    this.lookup(fd);
    return this.#slots[fd]!.cloexec;
  }

  /** `close(fd)`: -EBADF when not open; drops the table's reference. */
  close(fd: number): void {
    const f = this.lookup(fd);
    this.#slots[fd] = undefined;
    f.put();
  }

  /** `dup(fd)`: lowest free fd on the same file, close-on-exec clear. */
  dup(fd: number): number {
    const f = this.lookup(fd);
    const nfd = this.getUnusedFd(0);
    this.install(nfd, f.get());
    return nfd;
  }

  /** `do_close_on_exec`: closes every close-on-exec fd. */
  closeOnExec(): void {
    this.#slots.forEach((s, fd) => {
      if (s?.file && s.cloexec) this.close(fd);
    });
  }

  /** `exit_files`: closes everything. */
  closeAll(): void {
    this.#slots.forEach((s, fd) => {
      if (s?.file) this.close(fd);
    });
  }

  /** /proc/<pid>/fdinfo/<fd>: the file's lines, with O_CLOEXEC folded into `flags` as the kernel shows it. */
  fdinfo(fd: number): string {
    const f = this.lookup(fd);
    const flags = f.flags | (this.#slots[fd]!.cloexec ? O_CLOEXEC : 0);
    return f.fdinfo().replace(/^flags:\t.*$/m, `flags:\t0${flags.toString(8)}`);
  }
}

class FilesState {
  readonly byTask = new WeakMap<Task, FdTable>();
  defaultTable: FdTable | null = null;
}

/** Binds `task` to `files` (the task is a thread of that process). */
export function bindFiles(world: Kernel, task: Task, files: FdTable): void {
  world.ext("kernel.fs.files", () => new FilesState()).byTask.set(task, files);
}

/**
 * `current->files`: the table bound to `task` (default: the running task),
 * else the world's default table, created on first use.
 */
export function filesOf(world: Kernel, task: Task | null = world.sched.current): FdTable {
  const st = world.ext("kernel.fs.files", () => new FilesState());
  const t = task ? st.byTask.get(task) : undefined;
  if (t) return t;
  st.defaultTable ??= new FdTable(world);
  return st.defaultTable;
}
