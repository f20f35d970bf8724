/**
 * Ports of tools/testing/selftests/mm cases, under their kernel names.
 */
import { ok, strictEqual } from "node:assert/strict";
import { KernelError } from "../errors.ts";
import { Kernel } from "../world.ts";
import { MmStruct } from "./mm_struct.ts";
import { MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "./vma.ts";

const PAGE = 4096;
const FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;

Deno.test("map_fixed_noreplace", async (t) => {
  const w = new Kernel();
  const mm = new MmStruct(w, "map_fixed_noreplace");
  const base = 0x2000_0000_0000;
  const map = (start: number, pages: number) =>
    mm.mmap({ addr: start, length: pages * PAGE, prot: PROT_READ | PROT_WRITE, flags: FLAGS });
  const eexist = async (start: number, pages: number) => {
    let err: unknown;
    try {
      await map(start, pages);
    } catch (e) {
      err = e;
    }
    ok(
      err instanceof KernelError && err.code === "EEXIST",
      `expected EEXIST at +${(start - base) / PAGE}`,
    );
  };
  const step = (name: string, body: () => Promise<void>) =>
    t.step(name, () => w.runTask(name, body));
  {
    await step("map 5 pages, then punch the first and last", async () => {
      strictEqual(await map(base, 5), base);
      await mm.munmap(base, PAGE);
      await mm.munmap(base + 4 * PAGE, PAGE);
      strictEqual(mm.vmas.length, 1);
      strictEqual(mm.vmas[0]!.vmStart, base + PAGE);
      strictEqual(mm.vmas[0]!.vmEnd, base + 4 * PAGE);
    });
    await step("any overlap with the 3 remaining pages fails with EEXIST", async () => {
      await eexist(base, 5); // covers it all
      await eexist(base + 2 * PAGE, 1); // inside
      await eexist(base + 3 * PAGE, 2); // overlaps its end
      await eexist(base, 2); // overlaps its start
      await eexist(base + PAGE, 3); // exactly it
      strictEqual(mm.vmas.length, 1);
    });
    await step("the holes on either side can be filled", async () => {
      strictEqual(await map(base, 1), base);
      strictEqual(await map(base + 4 * PAGE, 1), base + 4 * PAGE);
      strictEqual(mm.vmas.length, 3);
    });
  }
});
