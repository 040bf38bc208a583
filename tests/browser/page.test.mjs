// The live page at /: loads with no console error (its CSP blocks nothing it
// needs), its numbers move when events are published, and a topic name or
// event data that is markup shows as text.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT, launch, startHub, until } from "./harness.mjs";

const EVIL_TOPIC = "<img src=x onerror=alert(1)>";
const EVIL_DATA = '<b id="bold">x</b><img src=y onerror=alert(2)><script>alert(3)</script>';
const VERSION = /^version = "(.*)"$/m.exec(readFileSync(join(ROOT, "Cargo.toml"), "utf8"))[1];

test("the live page: no console error, numbers move, markup in topics and data is text", async (t) => {
  const hub = await startHub(["--retry", "200"]);
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await hub.stop();
  });
  const page = await (await browser.newContext()).newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("console", (message) => message.type() == "error" && problems.push(`console: ${message.text()}`));
  page.on("dialog", (dialog) => (problems.push(`dialog: ${dialog.message()}`), dialog.dismiss()));
  page.on("requestfailed", (request) => problems.push(`request failed: ${request.url()}`));
  const text = (selector) => page.textContent(selector);
  const number = async (selector) => Number((await text(selector)).replace(/,/g, ""));

  await page.goto(`${hub.url}/?topic=${encodeURIComponent(EVIL_TOPIC)}`);
  await until(async () => (await text("#version")) == `v${VERSION}`, "the version from /metrics");
  await until(async () => /^\d+s$/.test(await text("#uptime")), "the uptime");
  assert.equal(await page.inputValue("#topics"), EVIL_TOPIC, "the topic from the URL, as a value");

  // Published events move the counters and the rate.
  const before = await number("#events-total");
  await hub.publish(Array.from({ length: 25 }, (_, i) => ({ topic: "load", data: `e${i}` })));
  await until(async () => (await number("#events-total")) == before + 25, "events published to show 25 more");
  await until(async () => (await number("#events-rate")) > 0, "events/s above zero");

  // Try it: subscribe to the markup topic through ssehub.js, publish markup to it from the page.
  await page.click("#sub-button");
  await until(async () => (await hub.subscribers()) == 1, "the try-it subscription");
  await until(async () => (await text("#subscribers")) == "1", "subscribers to show 1");
  assert.equal(await text("#subscribed"), EVIL_TOPIC);
  assert.equal(await page.inputValue("#pub-topic"), EVIL_TOPIC);
  await page.fill("#pub-data", EVIL_DATA);
  await page.fill("#pub-event", "update");
  await page.click("#pub-form button");
  await until(async () => (await text("#pub-answer")).startsWith("published, id "), "the publish answer");
  const logged = await until(async () => (await page.$$eval("#log li", (items) => items.map((li) => li.textContent)))[0], "the event in the log");
  assert.match(logged, /^\d+-\d+  update  /);
  assert.ok(logged.endsWith(EVIL_DATA), logged);
  await until(async () => (await number("#deliveries-rate")) > 0, "deliveries/s above zero");

  assert.equal(await page.$$eval("img", (images) => images.length), 0, "no <img> was made");
  assert.equal(await page.$("#bold"), null, "no <b> was made");
  assert.equal(await page.$$eval("#log script", (scripts) => scripts.length), 0);
  assert.deepEqual(problems, []);
});

test("--ui off: no page, no module", async (t) => {
  const hub = await startHub(["--ui", "off"]);
  t.after(() => hub.stop());
  for (const path of ["/", "/ssehub.js"]) {
    const response = await fetch(hub.url + path);
    assert.equal(response.status, 404, path);
    await response.text();
  }
});
