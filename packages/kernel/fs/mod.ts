/**
 * The generic VFS pieces dmalab's file-descriptor interfaces need: `struct
 * file`, fd tables, anon/pseudo inodes and memfd (shmem/hugetlbfs) files.
 *
 * @module
 */
export * from "./file.ts";
export * from "./fd_table.ts";
export * from "./anon_inode.ts";
export * from "./memfd.ts";
