// The cost of sharing one connection across tabs, measured in headless
// Chromium (PERFORMANCE.md, "The browser client"), and the screenshot of the
// live page in docs/. Not a test: run by hand, after the browser suite has
// installed target/browser-env once:
//
//   cargo build --release
//   export SSEHUB_BIN=target/release/ssehub BROWSER_ENV=target/browser-env CHROMIUM=/usr/bin/chromium
//   node tests/browser/bench.mjs throughput [events]   # 8 tabs sharing vs 8 separate connections
//   node tests/browser/bench.mjs takeover               # leader closes: time until the others get events, 10 runs
//   node tests/browser/bench.mjs screenshot docs/live-page.png
//
// Every figure is printed as one JSON line, raw samples included.

import { connect } from "node:net";
import { join } from "node:path";
import { launch, openTab, ROOT, startHub, startPages, until, warmUp } from "./harness.mjs";

const TOPICS = ["news", "alerts"];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const payload = "x".repeat(100);

/** Publishes `count` events in JSON batches of 400 from two publishers at once, as fast as the hub answers. */
async function burst(hub, count) {
  let sent = 0;
  const publisher = async () => {
    while (sent < count) {
      const n = Math.min(400, count - sent);
      sent += n;
      await hub.publish(Array.from({ length: n }, (_, i) => ({ topic: TOPICS[i % 2], data: `${i} ${payload}` })));
    }
  };
  await Promise.all([publisher(), publisher()]);
}

/** Events per second each of 8 tabs received, sharing one connection or with one each. */
async function throughput(count) {
  const pages = await startPages();
  const hub = await startHub(["--cors-origin", pages.origin, "--max-backlog", "1000000", "--history", "16"]);
  const browser = await launch();
  try {
    const modes = {
      "8 tabs, one shared connection (leader election)": async () => {
        const context = await browser.newContext();
        const tabs = [];
        for (let i = 0; i < 8; i++) tabs.push(await openTab(context, pages, hub, { topics: TOPICS }));
        return { tabs, close: () => context.close() };
      },
      "8 tabs, one shared connection (SharedWorker)": async () => {
        const context = await browser.newContext();
        const tabs = [];
        for (let i = 0; i < 8; i++) tabs.push(await openTab(context, pages, hub, { topics: TOPICS, from: "page" }));
        return { tabs, close: () => context.close() };
      },
      // Separate contexts: one browser profile allows 6 connections per host, the problem this solves.
      "8 separate connections (share: false, 8 contexts)": async () => {
        const contexts = [], tabs = [];
        for (let i = 0; i < 8; i++) {
          contexts.push(await browser.newContext());
          tabs.push(await openTab(contexts[i], pages, hub, { topics: TOPICS, share: false }));
        }
        return { tabs, close: () => Promise.all(contexts.map((c) => c.close())) };
      },
    };
    for (const [mode, open] of Object.entries(modes)) {
      const { tabs, close } = await open();
      const connections = await until(async () => {
        await hub.publish([{ topic: "news", data: "warm-up" }]);
        const all = (await Promise.all(tabs.map((t) => t.evaluate(() => window.got.length)))).every((n) => n > 0);
        return all && (await hub.subscribers());
      }, "every tab subscribed");
      await Promise.all(tabs.map((t) => t.evaluate(() => (window.got.length = 0))));
      const started = Date.now();
      await burst(hub, count);
      const published = Date.now() - started;
      await until(async () => (await Promise.all(tabs.map((t) => t.evaluate(() => window.got.length)))).every((n) => n >= count), `${mode}: every event`, 300_000);
      const finished = await Promise.all(tabs.map((t) => t.evaluate(() => window.lastAt)));
      const rates = finished.map((at) => Math.round(count / ((at - started) / 1000)));
      console.log(JSON.stringify({ mode, connections, events: count, publish_ms: published, per_tab_events_per_s: rates, median_events_per_s: median(rates), slowest_ms: Math.max(...finished) - started }));
      await close();
      await until(async () => (await hub.subscribers()) == 0, "the connections closed");
    }
  } finally {
    await browser.close();
    await hub.stop();
    await pages.close();
  }
}

/** The leader tab closes; how long until every other tab has an event published right after. */
async function takeover(runs = 10) {
  const pages = await startPages();
  const hub = await startHub(["--cors-origin", pages.origin]);
  const browser = await launch();
  try {
    for (const from of ["hub", "page"]) {
      const context = await browser.newContext();
      const tabs = [];
      for (let i = 0; i < runs + 3; i++) {
        tabs.push(await openTab(context, pages, hub, { topics: TOPICS, from }));
        if (i == 0) await until(async () => (await hub.subscribers()) == 1, "the first connection");
      }
      // A take-over resumes from the last id a tab saw: give them one.
      await warmUp(hub, tabs, "news");
      const samples = [];
      for (let run = 0; run < runs; run++) {
        // The oldest tab holds the connection (the lock's queue is first come, first served).
        const [leader, ...rest] = tabs.splice(0, tabs.length);
        tabs.push(...rest);
        const t0 = Date.now();
        await leader.close();
        const closed = Date.now() - t0;
        const [id] = await hub.publish([{ topic: "news", data: `after close ${run}` }]);
        const at = await Promise.all(
          rest.map((tab) => until(() => tab.evaluate((id) => window.got.at(-1)?.id == id && window.lastAt, id), "the event after the close")),
        );
        samples.push({ close_ms: closed, all_tabs_have_it_ms: Math.max(...at) - t0 });
      }
      const mode = from == "hub" ? "leader election (module from the hub)" : "SharedWorker (module from the page's origin)";
      const total = samples.map((s) => s.all_tabs_have_it_ms);
      console.log(JSON.stringify({ mode, runs, median_ms: median(total), max_ms: Math.max(...total), samples }));
      await context.close();
    }
  } finally {
    await browser.close();
    await hub.stop();
    await pages.close();
  }
}

/** The live page after a minute of varying load, a few subscribers and one slow consumer. */
async function screenshot(file) {
  const hub = await startHub(["--max-backlog", "32"]);
  const browser = await launch();
  const streams = [];
  try {
    for (let i = 0; i < 40; i++) {
      const socket = connect(hub.port, "127.0.0.1");
      const topics = i ? `topic=${TOPICS[i % 2]}&topic=load` : "topic=bulk";
      socket.write(`GET /events?${topics} HTTP/1.1\r\nHost: hub\r\n\r\n`);
      if (i) socket.on("data", () => {});
      else socket.pause(); // never reads its 16 KB events: dropped as a slow consumer once 32 frames behind
      socket.on("error", () => {});
      streams.push(socket);
    }
    const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, colorScheme: "light" });
    const page = await context.newPage();
    await page.goto(`${hub.url}/?topic=news&topic=load`);
    await page.click("#sub-button");
    const big = "y".repeat(16 * 1024);
    const started = Date.now();
    for (let tick = 0; Date.now() - started < 75_000; tick++) {
      const n = Math.round(40 + 35 * Math.sin(tick / 40) + (tick % 97 < 8 ? 60 : 0));
      const events = Array.from({ length: n }, (_, i) => ({ topic: i % 3 ? "load" : "news", data: `{"n":${tick}}` }));
      await hub.publish([...events, { topic: "bulk", data: big }]);
      await new Promise((go) => setTimeout(go, 100)); // pacing the load, not waiting for anything
    }
    await page.fill("#pub-data", '{"hello": "from the try-it panel"}');
    await page.click("#pub-form button");
    await until(async () => (await page.textContent("#pub-answer")).startsWith("published"), "the publish");
    await page.screenshot({ path: join(ROOT, file), fullPage: true });
    console.log(JSON.stringify({ screenshot: file }));
  } finally {
    for (const socket of streams) socket.destroy();
    await browser.close();
    await hub.stop();
  }
}

const [what, arg] = process.argv.slice(2);
if (what == "throughput") await throughput(Number(arg) || 20_000);
else if (what == "takeover") await takeover();
else if (what == "screenshot") await screenshot(arg || "docs/live-page.png");
else throw new Error("usage: bench.mjs throughput [events] | takeover | screenshot [file]");
