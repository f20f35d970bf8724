import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { main } from "../main.ts";
import { captureIo } from "../io.ts";

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
    strictEqual(await main(["tour", "--report", dir], io), 0);
    ok(io.stdout.includes(`report: ${dir}/index.html`));
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`file://${dir}/index.html`);

    await t.step("no console errors", () => {
      deepStrictEqual(errors, []);
    });
    await t.step("topology SVG with both paths, switch and root complex", async () => {
      strictEqual(await page.locator("svg#topology").count(), 1);
      strictEqual(await page.locator("#topology .transfer").count(), 2);
      strictEqual(await page.locator("#topology .transfer.via-switch").count(), 1);
      strictEqual(await page.locator("#topology .transfer.via-rc").count(), 1);
      ok(await page.locator('#topology .node[data-id="0000:03:00.0"]').isVisible());
    });
    await t.step("summary table has one row per stop", async () => {
      strictEqual(await page.locator("#summary tbody tr").count(), 4);
      ok((await page.locator("#summary").innerText()).includes("as kernel"));
    });
    await t.step("timeline and splats are shown", async () => {
      strictEqual(await page.locator("#timeline").count(), 1);
      ok((await page.locator("#splats").innerText()).includes(
        "possible circular locking dependency detected",
      ));
    });
    await t.step("legend click focuses one path", async () => {
      await page.locator('.legend button[data-transfer="0"]').click();
      strictEqual(await page.locator("#topology .transfer.dim").count(), 1);
      strictEqual(
        await page.locator('#topology .transfer[data-transfer="1"]').getAttribute("class"),
        "transfer via-rc ats-on dim",
      );
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
