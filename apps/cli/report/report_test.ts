import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { main } from "../main.ts";
import { captureIo } from "../io.ts";
import { apps } from "../apps.ts";

// Debian's chromium, installed by tools/repo/ensure_chromium.sh (CI and
// `npm test` run it). Flags: what a sandbox-less root machine with a closed
// network needs.
const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const SHOT_DIR = new URL("../../../out/report/", import.meta.url).pathname;

Deno.test("tour --report writes a page that loads cleanly in headless Chromium", async (t) => {
  ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run tools/repo/ensure_chromium.sh`);
  const dir = mkdtempSync(join(tmpdir(), "dmalab-report-"));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    const io = captureIo();
    strictEqual(
      await main(
        ["tour", "--report", dir, "--trace", `${dir}/t.json`, "--ftrace", `${dir}/t.txt`],
        io,
      ),
      0,
    );
    ok(io.stdout.includes(`report: ${dir}/index.html`));
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`file://${dir}/index.html`);

    await t.step("--trace holds one process per app; --ftrace one section per app", async () => {
      const doc = JSON.parse(await Deno.readTextFile(`${dir}/t.json`));
      const procs = doc.traceEvents.filter((e: { name: string }) => e.name === "process_name");
      deepStrictEqual(
        procs.map((e: { args: { name: string } }) => e.args.name),
        apps.map((a) => a.name),
      );
      const text = await Deno.readTextFile(`${dir}/t.txt`);
      strictEqual(text.split("# dmalab run ").length - 1, apps.length);
    });
    await t.step("no console errors", () => {
      deepStrictEqual(errors, []);
    });
    await t.step("topology SVG: every PCI transfer's path, switch and root complex", async () => {
      strictEqual(await page.locator("svg#topology").count(), 1);
      const n = await page.locator("#topology .transfer").count();
      ok(n >= 6, `${n} transfers drawn`);
      const sw = await page.locator("#topology .transfer.via-switch").count();
      ok(sw >= 2, "p2pdma stop and app 3's RDMA writes below the switch");
      strictEqual(await page.locator("#topology .transfer.via-rc").count(), n - sw);
      ok(await page.locator('#topology .node[data-id="0000:03:00.0"]').isVisible());
      const titles = await page.locator("#topology .transfer title").allTextContents();
      ok(titles.some((x) => x.includes("-> system RAM") && x.includes("(root complex)")));
      ok(titles.some((x) => x.startsWith("pfn: NIC read") && x.includes("ATS on")));
      ok(titles.some((x) => x.startsWith("attach: RDMA WRITE") && x.includes("BUS_ADDR")));
    });
    await t.step("summary: one row per app, with bytes verified; the stops below", async () => {
      strictEqual(await page.locator("#summary tbody tr").count(), apps.length);
      const text = await page.locator("#summary").innerText();
      ok(text.includes("userspace mmap") && text.includes("pfn attachment"));
      ok(text.includes("131072"), "mmap bytes verified");
      ok(!text.includes("VIOLATION"));
      strictEqual(await page.locator("#stops tbody tr").count(), 4);
      ok((await page.locator("#stops").innerText()).includes("as kernel"));
    });
    await t.step("transfers table says switch or root complex and ATS on or off", async () => {
      const text = await page.locator("#transfers").innerText();
      ok(text.includes("root complex"));
      ok(text.includes("ATS on") && text.includes("ATS off"));
      ok(await page.locator("#transfers tbody tr").count() >= 6);
    });
    await t.step("a timeline per app, with fence and DMA lanes", async () => {
      strictEqual(await page.locator("svg.timeline").count(), apps.length);
      strictEqual(await page.locator("#timeline").count(), 1);
      const labels = await page.locator("#timeline .lane-label").allTextContents();
      ok(labels.some((l) => l.startsWith("fence ")), labels.join(","));
      ok(labels.some((l) => l.startsWith("dma ")), labels.join(","));
      ok(await page.locator("#timeline .slice").count() > 0);
    });
    await t.step("per-app details and the variant table of app 5", async () => {
      strictEqual(await page.locator("#apps section.app").count(), apps.length);
      const pfn = apps.findIndex((a) => a.name === "pfn");
      const v = await page.locator(`#variants-${pfn}`).innerText();
      ok(v.includes("B-get-pfn-unlocked-no-recheck") && v.includes("found (invariant)"));
    });
    await t.step("splats are shown", async () => {
      ok((await page.locator("#splats").innerText()).includes(
        "possible circular locking dependency detected",
      ));
    });
    await t.step("legend click focuses one path", async () => {
      const n = await page.locator("#topology .transfer").count();
      await page.locator('.legend button[data-transfer="0"]').click();
      strictEqual(await page.locator("#topology .transfer.dim").count(), n - 1);
      const first = await page.locator('#topology .transfer[data-transfer="0"]').getAttribute(
        "class",
      );
      ok(first && !first.includes("dim"), `${first}`);
      const second = await page.locator('#topology .transfer[data-transfer="1"]').getAttribute(
        "class",
      );
      ok(second?.endsWith(" dim"), `${second}`);
    });
    await t.step("screenshot saved in the test output", async () => {
      mkdirSync(SHOT_DIR, { recursive: true });
      await page.screenshot({ path: `${SHOT_DIR}tour.png`, fullPage: true });
      ok(existsSync(`${SHOT_DIR}tour.png`));
    });
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
