import { ok, rejects, strictEqual, throws } from "node:assert/strict";
import { isErrno, Kernel, KernelError } from "@dmalab/kernel";
import {
  dmaBufAttach,
  dmaHeapSystemAlloc,
  isVirtioDmaBuf,
  SgTable,
  virtioDmaBufAttach,
  virtioDmaBufExport,
  virtioDmaBufGetUuid,
  type VirtioDmaBufOps,
} from "../mod.ts";
import { dev64 } from "../buf/testdata/exporter.ts";

const base = { mapDmaBuf: () => new SgTable([]), unmapDmaBuf: () => {}, release: () => {} };

Deno.test("virtio_dma_buf", async (t) => {
  await t.step("export needs virtio_dma_buf_attach and get_uuid (-EINVAL)", () => {
    const world = new Kernel();
    throws(
      () =>
        virtioDmaBufExport(world, {
          expName: "v",
          size: 4096,
          priv: {},
          ops: { ...base, getUuid: () => new Uint8Array(16) },
        }),
      (e) => isErrno(e, "EINVAL"),
    );
    throws(
      () =>
        virtioDmaBufExport(world, {
          expName: "v",
          size: 4096,
          priv: {},
          ops: { ...base, attach: async () => {}, getUuid: () => new Uint8Array(16) },
        }),
      (e) => isErrno(e, "EINVAL"),
    );
    throws(
      () =>
        virtioDmaBufExport(world, {
          expName: "v",
          size: 4096,
          priv: {},
          ops: { ...base, attach: virtioDmaBufAttach },
        }),
      (e) => isErrno(e, "EINVAL"),
    );
  });
  await t.step(
    "get_uuid: -EINVAL for other buffers; the host assigns the UUID asynchronously (virtio-gpu waits, -ENODEV on failure)",
    async () => {
      const world = new Kernel();
      let state: "INITIALIZING" | "OK" | "ERR" = "INITIALIZING";
      const uuid = Uint8Array.from({ length: 16 }, (_, i) => i);
      const ops: VirtioDmaBufOps = {
        ...base,
        attach: virtioDmaBufAttach,
        async getUuid() {
          while (state === "INITIALIZING") await world.sched.msleep(1);
          if (state === "ERR") throw new KernelError("ENODEV", "virtgpu: uuid assignment failed");
          return uuid;
        },
      };
      const buf = virtioDmaBufExport(world, { expName: "virtio-gpu", size: 4096, priv: {}, ops });
      ok(isVirtioDmaBuf(buf));
      const sys = dmaHeapSystemAlloc(world, 4096);
      ok(!isVirtioDmaBuf(sys));
      let got: Uint8Array | null = null;
      world.spawn("virtio-video", async () => {
        await rejects(virtioDmaBufGetUuid(sys), (e) => isErrno(e, "EINVAL"));
        got = await virtioDmaBufGetUuid(buf);
      });
      world.spawn("host", async () => {
        await world.sched.msleep(5);
        state = "OK";
      });
      await world.run();
      strictEqual(got![15], 15);
      state = "ERR";
      await world.runTask("again", async () => {
        await rejects(virtioDmaBufGetUuid(buf), (e) => isErrno(e, "ENODEV"));
      });
    },
  );
  await t.step("device_attach runs on attach and its error aborts it", async () => {
    const world = new Kernel();
    let calls = 0;
    const buf = virtioDmaBufExport(world, {
      expName: "v",
      size: 4096,
      priv: {},
      ops: {
        ...base,
        attach: virtioDmaBufAttach,
        getUuid: () => new Uint8Array(16),
        deviceAttach: (_b, a) => {
          calls++;
          if (a.dev!.name === "bad") {
            throw new KernelError("EBUSY", "device cannot use this buffer");
          }
        },
      },
    });
    await world.runTask("t", async () => {
      await dmaBufAttach(buf, dev64(world, "good"));
      await rejects(dmaBufAttach(buf, dev64(world, "bad")), (e) => isErrno(e, "EBUSY"));
    });
    strictEqual(calls, 2);
    strictEqual(buf.attachments.length, 1);
  });
});
