import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import {
  anonInodeGetfile,
  bindFiles,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  FdTable,
  File,
  filesOf,
  Inode,
  isErrno,
  Kernel,
  memfdCreate,
  memfdFile,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_HUGETLB,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
} from "../mod.ts";

Deno.test("fs: struct file and fd tables", async (t) => {
  await t.step("last fput runs release exactly once", () => {
    const world = new Kernel();
    let released = 0;
    const f = new File(world, new Inode(1, "anon"), { release: () => released++ });
    const files = new FdTable(world, { stdio: false });
    const fd = files.installNew(f, 0);
    strictEqual(fd, 0);
    const again = files.fget(fd);
    strictEqual(again.count, 2);
    files.close(fd);
    strictEqual(released, 0);
    again.put();
    strictEqual(released, 1);
    ok(f.released);
  });
  await t.step("fput on a released file is a refcount bug", () => {
    const world = new Kernel();
    const f = new File(world, new Inode(1, "anon"), {});
    f.put();
    throws(() => f.put(), /underflow/);
  });
  await t.step("lowest free fd, -EBADF, -EMFILE, O_CLOEXEC", () => {
    const world = new Kernel();
    const files = new FdTable(world, { rlimitNofile: 5 });
    const mk = () => new File(world, new Inode(world.nextId(), "anon"), {});
    strictEqual(files.installNew(mk(), O_CLOEXEC), 3);
    strictEqual(files.installNew(mk(), 0), 4);
    throws(() => files.installNew(mk(), 0), (e) => isErrno(e, "EMFILE"));
    ok(files.isCloexec(3));
    ok(!files.isCloexec(4));
    files.close(3);
    throws(() => files.close(3), (e) => isErrno(e, "EBADF"));
    throws(() => files.fget(-1), (e) => isErrno(e, "EBADF"));
    strictEqual(files.installNew(mk(), 0), 3);
    files.closeOnExec();
    deepStrictEqual(files.fds(), [0, 1, 2, 3, 4]);
  });
  await t.step("reserved fds count against the limit and can be given back", () => {
    const world = new Kernel();
    const files = new FdTable(world, { rlimitNofile: 4 });
    const fd = files.getUnusedFd(0);
    throws(() => files.getUnusedFd(0), (e) => isErrno(e, "EMFILE"));
    files.putUnusedFd(fd);
    strictEqual(files.getUnusedFd(0), 3);
  });
  await t.step("missing f_op members: -ENOTTY ioctl, -ESPIPE llseek", () => {
    const world = new Kernel();
    const f = anonInodeGetfile(world, "x", {}, null, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    strictEqual(f.flags, O_RDWR | O_NONBLOCK);
    throws(() => f.ioctl(1, null), (e) => isErrno(e, "ENOTTY"));
    throws(() => f.llseek(0, 0), (e) => isErrno(e, "ESPIPE"));
  });
  await t.step("filesOf follows bindFiles, else the world default", async () => {
    const world = new Kernel();
    const mine = new FdTable(world, { name: "proc" });
    let seen: FdTable | null = null;
    const task = world.spawn("p", async () => {
      seen = filesOf(world);
    });
    bindFiles(world, task, mine);
    await world.run();
    strictEqual(seen, mine);
    strictEqual(filesOf(world, null), filesOf(world, null));
    ok(filesOf(world, null) !== mine);
  });
});

Deno.test("fs: memfd", async (t) => {
  await t.step("seals need MFD_ALLOW_SEALING; F_SEAL_SEAL stops sealing", () => {
    const world = new Kernel();
    const files = filesOf(world, null);
    const plain = memfdFile(files.lookup(memfdCreate(world, "a", 0)));
    strictEqual(plain.getSeals(), F_SEAL_SEAL);
    throws(() => plain.addSeals(F_SEAL_SHRINK), (e) => isErrno(e, "EPERM"));
    const fd = memfdCreate(world, "b", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    ok(files.isCloexec(fd));
    const m = memfdFile(files.lookup(fd));
    throws(() => m.addSeals(0x100), (e) => isErrno(e, "EINVAL"));
    m.ftruncate(4096 * 4);
    m.addSeals(F_SEAL_SHRINK | F_SEAL_GROW);
    throws(() => m.ftruncate(4096), (e) => isErrno(e, "EPERM"));
    throws(() => m.ftruncate(4096 * 8), (e) => isErrno(e, "EPERM"));
    throws(() => memfdCreate(world, "c", 0x100), (e) => isErrno(e, "EINVAL"));
  });
  await t.step("bytes written are in the folios; pinning past EOF is -EINVAL", () => {
    const world = new Kernel();
    const files = filesOf(world, null);
    const m = memfdFile(files.lookup(memfdCreate(world, "d", MFD_ALLOW_SEALING)));
    m.ftruncate(3 * 4096);
    m.pwrite(new Uint8Array([7, 8, 9]), 4095);
    deepStrictEqual([...m.pread(3, 4095)], [7, 8, 9]);
    const { folios, offset } = m.pinFolios(4095, 4097);
    strictEqual(folios.length, 2);
    strictEqual(offset, 4095);
    strictEqual(world.mem.readU8(world.mem.pageToPhys(folios[1]!)), 8);
    ok(folios[0]!.maybeDmaPinned);
    throws(() => m.pinFolios(0, 3 * 4096), (e) => isErrno(e, "EINVAL"));
    for (const f of folios) m.unpinFolio(f);
    ok(!folios[0]!.maybeDmaPinned);
  });
  await t.step("hugetlb memfds use 2 MiB folios and 2 MiB sizes", () => {
    const world = new Kernel();
    const files = filesOf(world, null);
    const m = memfdFile(files.lookup(memfdCreate(world, "h", MFD_HUGETLB | MFD_ALLOW_SEALING)));
    throws(() => m.ftruncate(4096), (e) => isErrno(e, "EINVAL"));
    m.ftruncate(4 << 20);
    const { folios } = m.pinFolios(0, (4 << 20) - 1);
    strictEqual(folios.length, 2);
    strictEqual(world.mem.allocationOrder(folios[0]!.pfn), 9);
  });
});
