// Model-based tests (fast-check): random sequences of export / attach / map /
// unmap / access / move / revoke / unrevoke / fd dup+close / detach against
// two exporters, with the invariants checked after every step:
// - no mapping survives its notify (every importer here drops its mappings
//   in response to invalidate_mappings, synchronously or from a worker);
// - no access after revoke (the revoke returns only once nothing is mapped,
//   and every later map/attach fails with -ENODEV);
// - refcounts balanced (buffer = file refs, exporter pins = mapped static
//   importers, exporter map calls = unmaps + live mappings), release once.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import fc from "fast-check";
import { filesOf, isErrno, Kernel } from "@dmalab/kernel";
import {
  dmaBufAttach,
  type DmaBufAttachment,
  dmaBufDynamicAttach,
  dmaBufGet,
  type SgTable,
} from "../mod.ts";
import { dev64, TestExporter } from "./testdata/exporter.ts";

type Kind = "static" | "dynamic" | "lazy";
type Cmd =
  | { op: "attach"; buf: 0 | 1; kind: Kind }
  | { op: "detach"; i: number }
  | { op: "map"; i: number }
  | { op: "unmap"; i: number }
  | { op: "access"; i: number }
  | { op: "move" }
  | { op: "revoke"; permanent: boolean }
  | { op: "unrevoke" }
  | { op: "dupfd"; buf: 0 | 1 }
  | { op: "closefd"; buf: 0 | 1 };

const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  w(
    3,
    fc.record({
      op: fc.constant("attach" as const),
      buf: fc.constantFrom(0 as const, 1 as const),
      kind: fc.constantFrom<Kind>("static", "dynamic", "lazy"),
    }),
  ),
  w(1, fc.record({ op: fc.constant("detach" as const), i: fc.nat(7) })),
  w(5, fc.record({ op: fc.constant("map" as const), i: fc.nat(7) })),
  w(2, fc.record({ op: fc.constant("unmap" as const), i: fc.nat(7) })),
  w(3, fc.record({ op: fc.constant("access" as const), i: fc.nat(7) })),
  w(2, fc.record({ op: fc.constant("move" as const) })),
  w(1, fc.record({ op: fc.constant("revoke" as const), permanent: fc.boolean() })),
  w(1, fc.record({ op: fc.constant("unrevoke" as const) })),
  w(
    1,
    fc.record({ op: fc.constant("dupfd" as const), buf: fc.constantFrom(0 as const, 1 as const) }),
  ),
  w(
    1,
    fc.record({
      op: fc.constant("closefd" as const),
      buf: fc.constantFrom(0 as const, 1 as const),
    }),
  ),
);

interface Imp {
  attach: DmaBufAttachment;
  kind: Kind;
  maps: SgTable[];
  exp: TestExporter;
}

const stats = { runs: 0, steps: 0, revokes: 0, moves: 0, maps: 0 };

async function runScenario(cmds: Cmd[], opts: { brokenImporter?: boolean } = {}): Promise<void> {
  stats.runs++;
  const world = new Kernel({ seed: 3 });
  const files = filesOf(world, null);
  // A: dynamic exporter that moves; B: revocable (vfio-like) exporter
  const A = new TestExporter(world, { dynamic: true });
  const B = new TestExporter(world, { revocable: true });
  const exps = [A, B];
  const fds: number[][] = [[], []];
  const imps: Imp[] = [];
  let revokedPermanently = false;

  const dropMappings = (imp: Imp) => {
    for (const s of imp.maps) imp.attach.unmap(s, "DMA_BIDIRECTIONAL");
    imp.maps.length = 0;
  };

  const invariants = (step: string) => {
    deepStrictEqual(world.check(), [], step);
    for (const imp of imps) {
      for (const info of imp.attach.mappings.values()) {
        ok(!info.stale, `${step}: a mapping survived its notify`);
      }
      strictEqual(
        imp.attach.mappings.size,
        imp.maps.length,
        `${step}: importer's view of its mappings`,
      );
    }
    if (B.revoker!.state !== "ok") {
      strictEqual(B.buf.outstandingMappings, 0, `${step}: mapping left after revoke`);
    }
    const staticMaps = imps.filter((m) => m.exp === A && m.kind === "static").reduce(
      (n, m) => n + m.maps.length,
      0,
    );
    strictEqual(A.pinned, staticMaps, `${step}: exporter pins = mapped static importers`);
    for (const [k, e] of exps.entries()) {
      strictEqual(e.buf.refcount, 1 + fds[k]!.length, `${step}: refcount of buffer ${k}`);
      strictEqual(
        (e.calls.map ?? 0) - (e.calls.unmap ?? 0),
        e.buf.outstandingMappings,
        `${step}: map/unmap balance ${k}`,
      );
      strictEqual(e.calls.release ?? 0, 0, `${step}: released early`);
    }
  };

  for (const [n, c] of cmds.entries()) {
    const step = `step ${n} ${JSON.stringify(c)}`;
    await world.runTask("actor", async () => {
      const imp = imps.length ? imps[("i" in c ? c.i : 0) % imps.length]! : null;
      switch (c.op) {
        case "attach": {
          const exp = exps[c.buf]!;
          const holder: { imp: Imp | null } = { imp: null };
          const ops = c.kind === "static" ? null : {
            allowPeer2peer: true,
            invalidateMappings: () => {
              const me = holder.imp!;
              if (opts.brokenImporter) return;
              if (me.kind === "dynamic") dropMappings(me);
              else {
                world.spawn("importer-worker", async () => {
                  await world.sched.msleep(1);
                  await exp.buf.resv.lock(null);
                  dropMappings(me);
                  exp.buf.resv.unlock();
                });
              }
            },
          };
          try {
            const attach = c.kind === "static"
              ? await dmaBufAttach(exp.buf, dev64(world))
              : await dmaBufDynamicAttach(exp.buf, dev64(world), ops, null);
            holder.imp = { attach, kind: c.kind, maps: [], exp };
            imps.push(holder.imp);
          } catch (e) {
            const expected = exp === B && (c.kind === "static" || B.revoker!.state !== "ok");
            ok(
              expected && (isErrno(e, "EOPNOTSUPP") || isErrno(e, "ENODEV")),
              `${step}: unexpected ${e}`,
            );
          }
          break;
        }
        case "detach":
          if (!imp) break;
          await imp.exp.buf.resv.lock(null);
          dropMappings(imp);
          imp.exp.buf.resv.unlock();
          await imp.attach.detach();
          imps.splice(imps.indexOf(imp), 1);
          break;
        case "map":
          if (!imp) break;
          try {
            imp.maps.push(await imp.attach.mapUnlocked("DMA_BIDIRECTIONAL"));
          } catch (e) {
            ok(
              imp.exp === B && B.revoker!.state !== "ok" && isErrno(e, "ENODEV"),
              `${step}: unexpected ${e}`,
            );
          }
          break;
        case "unmap":
          if (!imp || !imp.maps.length) break;
          await imp.attach.unmapUnlocked(imp.maps.pop()!, "DMA_BIDIRECTIONAL");
          break;
        case "access":
          if (!imp || !imp.maps.length) break;
          imp.attach.checkAccess(imp.maps[imp.maps.length - 1]!);
          break;
        case "move":
          await A.buf.resv.lock(null);
          A.move();
          A.buf.resv.unlock();
          break;
        case "revoke":
          await B.revoker!.revoke(c.permanent);
          revokedPermanently ||= c.permanent;
          break;
        case "unrevoke":
          if (revokedPermanently || B.revoker!.state === "ok") break;
          await B.buf.resv.lock(null);
          B.revoker!.unrevoke();
          B.buf.resv.unlock();
          break;
        case "dupfd":
          fds[c.buf]!.push(exps[c.buf]!.buf.get().fd(0));
          break;
        case "closefd": {
          const fd = fds[c.buf]!.pop();
          if (fd !== undefined) {
            strictEqual(dmaBufGet(world, fd), exps[c.buf]!.buf);
            exps[c.buf]!.buf.put();
            files.close(fd);
          }
          break;
        }
      }
    });
    invariants(step);
    stats.steps++;
    if (c.op === "revoke") stats.revokes++;
    if (c.op === "move") stats.moves++;
  }
  stats.maps += (A.calls.map ?? 0) + (B.calls.map ?? 0);
  // tear down: everything unmapped, detached, closed; each exporter released exactly once
  await world.runTask("teardown", async () => {
    for (const imp of [...imps]) {
      await imp.exp.buf.resv.lock(null);
      dropMappings(imp);
      imp.exp.buf.resv.unlock();
      await imp.attach.detach();
    }
    for (const [k, list] of fds.entries()) for (const fd of list) files.close(fd), void k;
    for (const e of exps) e.buf.put();
  });
  for (const e of exps) strictEqual(e.calls.release, 1);
  deepStrictEqual(world.check(), []);
}

Deno.test("dma-buf model: random export/attach/map/unmap/move/revoke/detach sequences keep the invariants", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(cmdArb, { minLength: 10, maxLength: 60 }),
      (cmds) => runScenario(cmds),
    ),
    {
      numRuns: 150,
      seed: 20261125,
    },
  );
  // the property really exercised the interesting paths
  ok(
    stats.runs >= 150 && stats.steps > 2000 && stats.revokes > 100 && stats.moves > 200 &&
      stats.maps > 300,
    JSON.stringify(stats),
  );
});

Deno.test("dma-buf model: negative control — an importer that ignores invalidate_mappings is caught", async () => {
  const cmds: Cmd[] = [{ op: "attach", buf: 0, kind: "dynamic" }, { op: "map", i: 0 }, {
    op: "move",
  }];
  let caught: unknown = null;
  try {
    await runScenario(cmds, { brokenImporter: true });
  } catch (e) {
    caught = e;
  }
  ok(caught instanceof Error && caught.message.includes("survived its notify"), String(caught));
});
