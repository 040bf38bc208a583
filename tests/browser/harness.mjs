// What every browser test shares: the real ssehub binary, a page server of
// another origin (the app's, in the usual deployment), headless Chromium, and
// waits on conditions with a deadline (never a sleep as synchronisation).
//
// Run by tests/browser.rs, which passes SSEHUB_BIN (the binary under test),
// BROWSER_ENV (where npm ci put playwright-core and terser) and CHROMIUM.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as createNetServer } from "node:net";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these through tests/browser.rs (cargo test --test browser)`);
  return value;
};

export const require = createRequire(join(env("BROWSER_ENV"), "node_modules", "/"));
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLIENT = join(ROOT, "clients", "js", "ssehub.js");
/** How long any one wait may take before the test fails. */
export const TIMEOUT = 15_000;

/** Polls `condition` (sync or async) until it returns a truthy value, or fails naming `what`. */
export async function until(condition, what, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await condition();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((go) => setTimeout(go, 10));
  }
}

/**
 * A free loopback port below the kernel's ephemeral range: a hub restarted on
 * it cannot find it taken by a client's own outgoing connection meanwhile.
 */
export async function quietPort() {
  let low = 32768;
  try {
    low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0]) || low;
  } catch {}
  for (let tries = 0; tries < 200; tries++) {
    const port = 10_000 + Math.floor(Math.random() * Math.max(100, low - 10_000));
    const free = await new Promise((go) => {
      const probe = createNetServer().once("error", () => go(false));
      probe.listen(port, "127.0.0.1", () => probe.close(() => go(true)));
    });
    if (free) return port;
  }
  throw new Error("no free port below the ephemeral range");
}

/** Starts `ssehub ARGS` on 127.0.0.1 (port 0 unless `port`), resolved once it listens. */
export async function startHub(args = [], port = 0) {
  const child = spawn(env("SSEHUB_BIN"), ["--listen", `127.0.0.1:${port}`, ...args], {
    stdio: ["ignore", "pipe", process.env.SSEHUB_TEST_LOG ? "inherit" : "ignore"],
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SSEHUB_") && k != "RUST_LOG")),
  });
  const exited = new Promise((go) => child.once("exit", (code, signal) => go(code ?? signal)));
  const line = await new Promise((go, fail) => {
    const lines = createInterface({ input: child.stdout });
    lines.once("line", go);
    child.once("exit", (code) => fail(new Error(`ssehub exited (${code}) before listening`)));
  });
  const addr = line.replace(/^listening on /, "");
  const url = `http://${addr}`;
  return {
    url,
    port: Number(addr.split(":").pop()),
    pid: child.pid,
    /** Sends `signal` to the hub and waits until it has exited; returns its exit code. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    /** One sample of /metrics, e.g. `ssehub_connections{kind="subscriber"}`. */
    async metric(name) {
      const text = await (await fetch(`${url}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(name + " "));
      if (!line) throw new Error(`no metric ${name}`);
      return Number(line.slice(name.length + 1));
    },
    subscribers() {
      return this.metric('ssehub_connections{kind="subscriber"}');
    },
    /** Publishes one event per item ({topic: [..], data, event}); returns the ids. */
    async publish(items, token) {
      const headers = { "Content-Type": "application/json" };
      if (token) headers.Authorization = `Bearer ${token}`;
      const response = await fetch(`${url}/publish`, { method: "POST", headers, body: JSON.stringify(items) });
      const text = await response.text();
      if (!response.ok) throw new Error(`publish answered ${response.status}: ${text}`);
      return text.trim().split("\n");
    },
  };
}

/** An HS256 JWT for `claims`, as an app's token view would mint it. */
export function jwt(secret, claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/**
 * The app's origin: serves tests/browser/tab.html, its own copy of ssehub.js
 * (a page that imports it from here gets the SharedWorker), and `/token`,
 * whose answer `{token}` is whatever `mint()` returns (counted in `tokens`);
 * `routes` maps more paths to node:http handlers.
 */
export async function startPages({ mint, routes = {} } = {}) {
  const tab = readFileSync(join(ROOT, "tests", "browser", "tab.html"));
  const pages = { tokens: 0, origin: "" };
  const server = createServer((request, response) => {
    const path = new URL(request.url, "http://x").pathname;
    if (path == "/tab.html") {
      response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(tab);
    } else if (path == "/ssehub.js") {
      response.writeHead(200, { "Content-Type": "text/javascript" }).end(readFileSync(CLIENT));
    } else if (routes[path]) {
      routes[path](request, response);
    } else if (path == "/token" && mint) {
      pages.tokens++;
      response.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" });
      response.end(JSON.stringify({ token: mint() }));
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((go) => server.listen(0, "127.0.0.1", go));
  pages.origin = `http://127.0.0.1:${server.address().port}`;
  pages.close = () => new Promise((go) => (server.closeAllConnections(), server.close(go)));
  return pages;
}

/** Headless Debian Chromium, flags as this machine needs them (no network beyond loopback). */
export async function launch() {
  const { chromium } = require("playwright-core");
  return chromium.launch({
    executablePath: env("CHROMIUM"),
    args: [
      "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
    ],
  });
}

/**
 * Opens tests/browser/tab.html: subscribes to `topics` of `hub` through
 * ssehub.js loaded from the hub (`from: "hub"`, another origin: leader
 * election) or from the page's origin (`from: "page"`: the SharedWorker).
 * The page keeps what it got in `window.got`, `gaps`, `errors`.
 */
export async function openTab(context, pages, hub, { topics, from = "hub", share = true, tokenUrl, token } = {}) {
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("console", (message) => message.type() == "error" && problems.push(`console: ${message.text()}`));
  const query = new URLSearchParams({ hub: hub.url, from, share: share ? "1" : "0" });
  for (const topic of topics) query.append("topic", topic);
  if (tokenUrl) query.set("tokenUrl", tokenUrl);
  if (token) query.set("token", token);
  await page.goto(`${pages.origin}/tab.html?${query}`);
  await page.waitForFunction(() => window.ready === true || window.failed, null, { timeout: TIMEOUT });
  const failed = await page.evaluate(() => window.failed);
  if (failed) throw new Error(`the tab failed to start: ${failed}`);
  page.problems = problems;
  page.ids = () => page.evaluate(() => window.got.map((e) => e.id));
  return page;
}

/** The shared workers running in `browser` (Chromium's own list of targets). */
export async function sharedWorkers(browser) {
  const cdp = await browser.newBrowserCDPSession();
  try {
    const { targetInfos } = await cdp.send("Target.getTargets");
    return targetInfos.filter((t) => t.type == "shared_worker");
  } finally {
    await cdp.detach();
  }
}

/**
 * Every tab in `tabs` has exactly `ids`, in order: nothing missing, nothing
 * twice. A last event to `topic` is published and awaited first, so anything
 * still in flight before it is counted too.
 */
export async function expectExactly(hub, tabs, ids, topic, what, token) {
  const all = [...ids, ...(await hub.publish([{ topic, data: "last" }], token))];
  const want = all.join(" ");
  for (const [i, tab] of tabs.entries()) {
    await until(async () => (await tab.ids()).includes(all.at(-1)), `${what}: tab ${i} to get the last event`);
    const got = await tab.ids();
    if (got.join(" ") != want) {
      const missing = all.filter((id) => !got.includes(id));
      const twice = got.filter((id, k) => got.indexOf(id) != k);
      throw new Error(`${what}: tab ${i} got ${got.length} of ${all.length}; missing ${missing.slice(0, 5)}, twice ${twice.slice(0, 5)}`);
    }
  }
}

/**
 * Publishes to `topic` until every tab has received one event (a tab is
 * subscribed once it does), then empties what the tabs got: from here on,
 * every event must reach every tab exactly once.
 */
export async function warmUp(hub, tabs, topic, token) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const [id] = await hub.publish([{ topic, data: "warm-up" }], token);
    const has = async () => (await Promise.all(tabs.map(async (tab) => (await tab.ids()).includes(id)))).every(Boolean);
    try {
      await until(has, "warm-up", 300);
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`the tabs never all received an event: ${error.message}`);
    }
  }
  await Promise.all(tabs.map((tab) => tab.evaluate(() => (window.got.length = 0))));
}

/** Publishes `count` events one at a time (a stream, not a burst), calling `at(i)` before the i-th. */
export async function stream(hub, count, topics, { at, token } = {}) {
  const ids = [];
  for (let i = 0; i < count; i++) {
    await at?.(i);
    const topic = topics[i % topics.length];
    const item = i % 5 == 4 ? { topic, data: `line ${i}\nsecond line`, event: "update" } : { topic, data: `event ${i}` };
    ids.push(...(await hub.publish([item], token)));
  }
  return ids;
}

/**
 * The usual stage: the app's origin (`startPages`), a hub allowing it
 * (`args(origin)` are its flags), Chromium and one context, all stopped when
 * test `t` ends (a test that restarts the hub replaces `stage.hub`).
 */
export async function stage(t, args, { mint, port = 0 } = {}) {
  const pages = await startPages({ mint });
  const stage = { pages, hub: await startHub(args(pages.origin), port), browser: await launch() };
  t.after(async () => {
    await stage.browser.close();
    await stage.hub.stop();
    await pages.close();
  });
  stage.context = await stage.browser.newContext();
  return stage;
}
