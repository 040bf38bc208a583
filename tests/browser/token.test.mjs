// Tokens: a tab starts with an expired token (401), then lives on tokens of
// one to two seconds from tokenUrl; the hub ends each stream with
// ssehub-expired and the client reconnects with a fresh token and the last id.
import assert from "node:assert/strict";
import { test } from "node:test";
import { expectExactly, jwt, openTab, stage, stream, until, warmUp } from "./harness.mjs";

const SECRET = "browser-test-secret";
const PUBLISH = "browser-test-publish-token";
const grant = (exp) => ({ sub: "7", exp, ssehub: { subscribe: ["private/7/**"] } });
const now = () => Math.floor(Date.now() / 1000);

test("short-lived tokens are refreshed from tokenUrl, without losing or repeating an event", async (t) => {
  const flags = (origin) => [
    "--jwt-secret", SECRET, "--jwt-leeway", "0", "--publish-token", PUBLISH, "--cors-origin", origin, "--retry", "200",
  ];
  const { pages, hub, context } = await stage(t, flags, { mint: () => jwt(SECRET, grant(now() + 2)) });
  const topics = ["private/7/inbox", "private/7/alerts"];
  const tabs = [];
  for (let i = 0; i < 2; i++) {
    tabs.push(await openTab(context, pages, hub, { topics, token: jwt(SECRET, grant(now() - 60)), tokenUrl: `${pages.origin}/token` }));
  }
  await warmUp(hub, tabs, topics[0], PUBLISH);
  assert.ok((await hub.metric('ssehub_auth_failures_total{reason="expired"}')) >= 1, "the first token was refused");

  // About four seconds of events: at least two tokens expire meanwhile.
  const expiredBefore = await hub.metric("ssehub_streams_expired_total");
  const started = Date.now();
  const ids = [];
  while (Date.now() - started < 4500) ids.push(...(await stream(hub, 10, topics, { token: PUBLISH })));
  await until(async () => (await hub.metric("ssehub_streams_expired_total")) >= expiredBefore + 2, "two expiries");
  await expectExactly(hub, tabs, ids, topics[0], "across token expiries", PUBLISH);
  assert.ok(pages.tokens >= 3, `tokens fetched: ${pages.tokens}`);
  assert.equal(await hub.subscribers(), 1, "still one connection for both tabs");
  for (const tab of tabs) {
    assert.deepEqual(await tab.evaluate(() => window.errors), [], "a refresh is not an error");
    // Chromium logs the refused first token as a failed load; nothing else may appear.
    assert.deepEqual(tab.problems.filter((p) => !p.includes("status of 401")), []);
  }
});
