/**
 * DOC: errno
 *
 * Linux errno names and numbers as include/uapi/asm-generic/errno-base.h and
 * include/uapi/asm-generic/errno.h define them (the values x86, arm64 and
 * riscv share), plus the kernel-internal ERESTARTSYS family from
 * include/linux/errno.h that never reaches user space.
 *
 * @module
 */

/** Every errno the model uses, by name. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  EIDRM: 43,
  ENOSTR: 60,
  ENODATA: 61,
  ETIME: 62,
  ENOSR: 63,
  EREMOTE: 66,
  ENOLINK: 67,
  EPROTO: 71,
  EBADMSG: 74,
  EOVERFLOW: 75,
  EBADFD: 77,
  EILSEQ: 84,
  ERESTART: 85,
  EUSERS: 87,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
  EALREADY: 114,
  EINPROGRESS: 115,
  ESTALE: 116,
  EREMOTEIO: 121,
  EDQUOT: 122,
  ENOMEDIUM: 123,
  EMEDIUMTYPE: 124,
  ECANCELED: 125,
  ENOKEY: 126,
  EKEYEXPIRED: 127,
  EOWNERDEAD: 130,
  ENOTRECOVERABLE: 131,
  ERFKILL: 132,
  EHWPOISON: 133,
  /** Kernel internal (include/linux/errno.h): restart the syscall after the signal. */
  ERESTARTSYS: 512,
  /** Kernel internal: restart if no handler. */
  ERESTARTNOINTR: 513,
  /** Kernel internal: restart if no handler, else fail with EINTR. */
  ERESTARTNOHAND: 514,
  /** Kernel internal: driver requests probe retry. */
  EPROBE_DEFER: 517,
  /** Kernel internal: operation not supported (NFS/internal). */
  ENOTSUPP: 524,
} as const;

/** The name of an errno, such as `"EINVAL"`. */
export type ErrnoName = keyof typeof Errno;

/** `ENOTSUP` is an alias for `EOPNOTSUPP` and `EWOULDBLOCK` for `EAGAIN`, as in Linux. */
export const ENOTSUP: number = Errno.EOPNOTSUPP;
/** Alias of `EAGAIN`, as in Linux. */
export const EWOULDBLOCK: number = Errno.EAGAIN;
/** Alias of `EDEADLK`, as in Linux. */
export const EDEADLOCK: number = Errno.EDEADLK;

const byNumber = new Map<number, ErrnoName>();
for (const [name, value] of Object.entries(Errno) as [ErrnoName, number][]) {
  byNumber.set(value, name);
}

/**
 * The errno name for a number (positive or negative, as a kernel return value).
 *
 * @example
 * ```ts
 * import { errnoName } from "@dmalab/kernel";
 * errnoName(-22); // "EINVAL"
 * ```
 */
export function errnoName(errno: number): ErrnoName | undefined {
  return byNumber.get(Math.abs(errno));
}
