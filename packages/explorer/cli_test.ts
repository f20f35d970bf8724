import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import {
  exploreCommand,
  type ExploreIo,
  exploreMain,
  getScenario,
  registerScenario,
  type Scenario,
  scenarios,
} from "./mod.ts";

function capture(isTty = false): ExploreIo & {
  stdout: string;
  stderr: string;
  files: Map<string, string>;
} {
  const io = {
    stdout: "",
    stderr: "",
    files: new Map<string, string>(),
    isTty,
    out(s: string) {
      io.stdout += s;
    },
    err(s: string) {
      io.stderr += s;
    },
    writeFile(path: string, text: string) {
      io.files.set(path, text);
    },
  };
  return io;
}

Deno.test("dmalab explore", async (t) => {
  await t.step("--list names every scenario", async () => {
    const io = capture();
    strictEqual(await exploreMain(["--list"], io), 0);
    for (const s of scenarios()) ok(io.stdout.includes(s.name), s.name);
    const j = capture();
    strictEqual(await exploreMain(["--list", "--json"], j), 0);
    const list = JSON.parse(j.stdout) as { name: string; expect: string }[];
    deepStrictEqual(list.find((s) => s.name === "counter-race")?.expect, "bug");
  });
  await t.step("a bug: exit 1, the shrunk schedule and the replay command", async () => {
    const io = capture();
    strictEqual(await exploreMain(["counter-race", "--bound", "2"], io), 1);
    ok(io.stdout.includes("FAILED (invariant): lost update"));
    const m = /replay: dmalab explore counter-race --replay (\S+)/.exec(io.stdout);
    ok(m, io.stdout);
    ok(io.stdout.includes("explorer_failure: kind=invariant"), "the ftrace text is printed");
    strictEqual(io.stderr, "", "no progress without a TTY");
    const again = capture();
    strictEqual(await exploreMain(["counter-race", "--replay", m[1]!], again), 1);
    ok(again.stdout.includes("FAILED (invariant): lost update"));
  });
  await t.step("clean: exit 0", async () => {
    const io = capture();
    strictEqual(await exploreMain(["counter-mutex"], io), 0);
    ok(io.stdout.includes("clean: "));
    ok(io.stdout.includes("every schedule within the bound explored"));
  });
  await t.step("--json is one document with the counts and the failure", async () => {
    const io = capture();
    strictEqual(await exploreMain(["abba-deadlock", "--json"], io), 1);
    const r = JSON.parse(io.stdout);
    strictEqual(r.failure.kind, "deadlock");
    strictEqual(r.mode, "dfs");
    ok(r.schedules >= 1);
    strictEqual(r.failure.chrome, undefined);
    const clean = capture();
    strictEqual(await exploreMain(["abba-ordered", "--json"], clean), 0);
    strictEqual(JSON.parse(clean.stdout).failure, null);
  });
  await t.step("--trace and --ftrace write the failing run", async () => {
    const io = capture();
    strictEqual(
      await exploreMain(["lost-wakeup", "--trace", "t.json", "--ftrace", "t.txt"], io),
      1,
    );
    const chrome = JSON.parse(io.files.get("t.json")!);
    ok(Array.isArray(chrome.traceEvents) && chrome.traceEvents.length > 0);
    ok(io.files.get("t.txt")!.startsWith("# tracer: nop"));
    ok(!io.stdout.includes("# tracer: nop"), "the ftrace text went to the file");
  });
  await t.step("exploreCommand runs exploreMain", async () => {
    const io = capture();
    strictEqual(await exploreCommand.run(["abba-ordered"], io), 0);
    ok(exploreCommand.usage.startsWith("usage: dmalab explore"));
  });
  await t.step("--dpor", async () => {
    const io = capture();
    strictEqual(await exploreMain(["abba-ordered", "--dpor"], io), 0);
    ok(io.stdout.includes("sleep sets on, DPOR"));
  });
  await t.step("PCT from the command line", async () => {
    const io = capture();
    strictEqual(
      await exploreMain(["counter-race", "--pct", "2", "--runs", "200", "--seed", "3"], io),
      1,
    );
    ok(io.stdout.includes("PCT depth 2, 200 runs, seed 3"));
    const clean = capture();
    strictEqual(await exploreMain(["counter-mutex", "--pct", "3", "--runs", "50"], clean), 0);
    ok(clean.stdout.includes("all runs clean"));
  });
  await t.step("progress goes to stderr on a TTY", async () => {
    const io = capture(true);
    strictEqual(await exploreMain(["abba-ordered"], io), 0);
    ok(/\d+ schedules \(\d+\/s\), \d+ states, \d+ pruned, [0-9.]+ s/.test(io.stderr), io.stderr);
  });
  await t.step("usage errors exit 2", async () => {
    const cases = [
      [],
      ["no-such-scenario"],
      ["counter-race", "counter-mutex"],
      ["counter-race", "--bogus"],
      ["counter-race", "--bound", "-1"],
      ["counter-race", "--bound", "x"],
      ["counter-race", "--runs", "5"],
      ["counter-race", "--pct", "2", "--bound", "1"],
      ["counter-race", "--replay", "1.x"],
      ["counter-race", "--replay", "9"],
      ["counter-race", "--seed"],
    ];
    for (const args of cases) {
      const io = capture();
      strictEqual(await exploreMain(args, io), 2, args.join(" "));
      ok(io.stderr.includes("usage: dmalab explore"), args.join(" "));
    }
    const help = capture();
    strictEqual(await exploreMain(["--help"], help), 0);
    ok(help.stdout.startsWith("usage: dmalab explore"));
  });
  await t.step("registered scenarios are explorable by name", async () => {
    const s: Scenario<{ n: number }> = {
      name: "cli-test-registered",
      description: "two tasks bump a counter under no lock, invariant-free",
      build(world) {
        const st = { n: 0 };
        for (const x of ["a", "b"]) {
          world.spawn(x, async () => {
            await world.sched.preempt("bump");
            st.n++;
          });
        }
        return st;
      },
      check: (_w, st) => st.n === 2 ? [] : ["lost"],
    };
    registerScenario(s);
    strictEqual(getScenario("cli-test-registered"), s);
    throws(() => registerScenario(s), /is registered/);
    throws(() => registerScenario({ ...s, name: "Bad Name" }), /must be lower-case/);
    const io = capture();
    strictEqual(await exploreMain(["cli-test-registered"], io), 0);
  });
});
