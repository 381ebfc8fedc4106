// Drives the explorer in Debian's headless Chromium (playwright-core, no browser download).
//
//   node js/explorer-check.mjs <graphiql url> <api key> <screenshot.png>
//
// Every request to a non-loopback host is blocked and reported, so the page must work
// with no internet. Prints one JSON line: what the result pane showed, what was blocked,
// and what localStorage kept.
import { chromium } from "playwright-core";

const [url, apiKey, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const blocked = [];
const consoleErrors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (message) => message.type() === "error" && consoleErrors.push(message.text()));
  await page.route("**/*", (route) => {
    const { hostname } = new URL(route.request().url());
    if (["127.0.0.1", "localhost", "[::1]"].includes(hostname)) return route.continue();
    blocked.push(route.request().url());
    return route.abort();
  });
  await page.goto(url);
  await page.waitForSelector(".graphiql-container", { timeout: 15000 });
  const initialQuery = await page.evaluate(
    () => document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.getValue());
  const headersEditor = page.locator(".graphiql-editor-tool .CodeMirror").filter({ visible: true });
  const headersHint = await headersEditor.evaluate((el) => el.CodeMirror.getValue());

  // What a person does: open the Headers pane and paste their key into it.
  await page.getByText("Headers", { exact: true }).click();
  await headersEditor.locator(".CodeMirror-lines").click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(JSON.stringify({ "X-API-Key": apiKey }));
  await page.click(".graphiql-execute-button");
  try {
    await page.waitForFunction(
      () => document.querySelector(".result-window")?.innerText.includes("sizeBytes"),
      null, { timeout: 15000 });
  } finally {
    await page.screenshot({ path: screenshot, fullPage: true });
  }
  const result = await page.evaluate(() => document.querySelector(".result-window").innerText);
  await page.screenshot({ path: screenshot, fullPage: true });
  const storage = await page.evaluate(() => JSON.stringify({ ...localStorage }));
  console.log(JSON.stringify({ initialQuery, headersHint, result, blocked, consoleErrors, storage }));
} finally {
  await browser.close();
}
