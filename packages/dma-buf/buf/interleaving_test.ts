// Revoke racing with importers, under many seeded random schedules: the
// scheduler picks a random runnable task at every yield point (lock,
// sleep, fence wait), so each seed is a different interleaving of the
// exporter's revoke sequence with two importers mapping, "doing DMA" and
// unmapping (one synchronously from invalidate_mappings, one from a worker).
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { isErrno, Kernel, RandomPolicy } from "@dmalab/kernel";
import { dmaBufDynamicAttach, type SgTable } from "../mod.ts";
import { dev64, TestExporter } from "./testdata/exporter.ts";

async function scenario(
  seed: number,
  careless = false,
): Promise<{ revokes: number; dmas: number }> {
  const world = new Kernel({ policy: new RandomPolicy(seed), seed });
  const exp = new TestExporter(world, { revocable: true });
  const buf = exp.buf;
  let dmas = 0;
  let revokes = 0;
  let finished = 0;

  const importer = (name: string, lazy: boolean) =>
    world.spawn(name, async () => {
      let sgt: SgTable | null = null;
      let stopped = false;
      const attach = await dmaBufDynamicAttach(buf, dev64(world, name), {
        allowPeer2peer: true,
        invalidateMappings: (a) => {
          stopped = true; // no new DMA from now on
          if (!lazy) {
            if (sgt) a.unmap(sgt, "DMA_BIDIRECTIONAL");
            sgt = null;
            stopped = false;
            return;
          }
          world.spawn(`${name}-worker`, async () => {
            await world.sched.msleep(1);
            await buf.resv.lock(null);
            if (sgt) a.unmap(sgt, "DMA_BIDIRECTIONAL");
            sgt = null;
            stopped = false;
            buf.resv.unlock();
          });
        },
      }, null);
      for (let i = 0; i < 6; i++) {
        await buf.resv.lock(null);
        if (!sgt && !stopped) {
          try {
            sgt = await attach.map("DMA_BIDIRECTIONAL");
          } catch (e) {
            ok(isErrno(e, "ENODEV"), String(e));
          }
        }
        if (sgt && (!stopped || (careless && lazy))) {
          attach.checkAccess(sgt); // the DMA: must never hit a stale or revoked mapping
          dmas++;
        }
        buf.resv.unlock();
        await world.sched.msleep(1);
      }
      await buf.resv.lock(null);
      if (sgt) attach.unmap(sgt, "DMA_BIDIRECTIONAL");
      sgt = null;
      buf.resv.unlock();
      // a lazy worker may still be pending: let it run before detaching
      await world.sched.msleep(2);
      await attach.detach();
      finished++;
    });

  importer("rdma", false);
  importer("gpu", true);
  world.spawn("vfio", async () => {
    for (const permanent of [false, true]) {
      await world.sched.msleep(2);
      await exp.revoker!.revoke(permanent);
      revokes++;
      strictEqual(buf.outstandingMappings, 0, "revoke returned with a mapping left");
      if (!permanent) {
        await world.sched.msleep(1);
        await buf.resv.lock(null);
        exp.revoker!.unrevoke();
        buf.resv.unlock();
      }
    }
  });
  await world.run();
  strictEqual(finished, 2);
  deepStrictEqual(world.check(), []);
  strictEqual(world.bugs.length, 0);
  return { revokes, dmas };
}

Deno.test("revoke vs. importers under 200 random schedules", async () => {
  let dmas = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const r = await scenario(seed);
    strictEqual(r.revokes, 2, `seed ${seed}`);
    dmas += r.dmas;
  }
  ok(dmas > 200, `only ${dmas} DMAs happened across the schedules`);
});

Deno.test("negative control: a lazy importer that keeps doing DMA after invalidate is caught on some schedule", async () => {
  let caught = 0;
  for (let seed = 1; seed <= 50; seed++) {
    try {
      await scenario(seed, true);
    } catch (e) {
      ok(
        e instanceof Error && /invalidated by|after the buffer was revoked/.test(e.message),
        String(e),
      );
      caught++;
    }
  }
  ok(caught > 0, "no schedule exposed the careless importer");
});
