// Sharing one connection across tabs: 8 tabs of one page, the connection
// counted on /metrics, and the tab holding it closed mid-stream. Run twice:
// with ssehub.js imported from the hub (another origin, the usual deployment:
// Web Locks leader election and BroadcastChannel), and served by the page's
// own origin (a SharedWorker).
import assert from "node:assert/strict";
import { test } from "node:test";
import { expectExactly, openTab, sharedWorkers, stage, stream, until, warmUp } from "./harness.mjs";

const TOPICS = ["news", "alerts", "team/7/chat"];

for (const from of ["hub", "page"]) {
  const how = from == "hub" ? "module from the hub's origin: leader election" : "module from the page's origin: SharedWorker";
  test(`8 tabs, one connection; the tab holding it closes mid-stream (${how})`, async (t) => {
    const { pages, hub, browser, context } = await stage(t, (origin) => ["--cors-origin", origin, "--retry", "200"]);
    const tabs = [await openTab(context, pages, hub, { topics: TOPICS, from })];
    await until(async () => (await hub.subscribers()) == 1, "the first tab's connection");
    for (let i = 1; i < 8; i++) {
      // The same set in another order (and once twice over) is the same subscription.
      const topics = i % 2 ? [...TOPICS].reverse() : [...TOPICS, TOPICS[0]];
      tabs.push(await openTab(context, pages, hub, { topics, from }));
    }
    await warmUp(hub, tabs, "news");

    const ids = await stream(hub, 60, TOPICS);
    await expectExactly(hub, tabs, ids, "news", "8 tabs");
    assert.equal(await hub.subscribers(), 1, "one subscriber connection for 8 tabs");
    const first = await tabs[0].evaluate(() => window.got);
    const named = first.find((e) => e.type == "update");
    assert.deepEqual(named, { id: ids[4], type: "update", data: "line 4\nsecond line" });
    for (const tab of tabs.slice(1)) assert.deepEqual(await tab.evaluate(() => window.got), first);
    assert.equal((await sharedWorkers(browser)).length, from == "page" ? 1 : 0, "SharedWorker only from the page's origin");

    // The first tab holds the connection (its lock, or it started the worker): close it at event 40 of 150.
    await Promise.all(tabs.map((tab) => tab.evaluate(() => (window.got.length = 0))));
    // Not awaited: events keep being published while the tab goes and another takes over.
    let closed;
    const ids2 = await stream(hub, 150, TOPICS, { at: (i) => i == 40 && (closed = tabs[0].close()) });
    await closed;
    const rest = tabs.slice(1);
    await expectExactly(hub, rest, ids2, "news", "after the tab holding the connection closed");
    await until(async () => (await hub.subscribers()) == 1, "one connection again");

    if (from == "hub") {
      // What a take-over that resumed from an older id looks like to the other
      // tabs: events they have, relayed again. Each tab drops them.
      const again = (await rest[0].evaluate(() => window.got)).slice(-3);
      const key = "ssehub " + JSON.stringify([hub.url + "/", [...TOPICS].sort(), false]);
      await rest[0].evaluate(
        ([key, events]) => {
          const channel = new BroadcastChannel(key);
          channel.postMessage(events.map((e) => ({ t: "e", e })));
          channel.close();
        },
        [key, again],
      );
      await expectExactly(hub, rest, [...ids2, await rest[0].evaluate(() => window.got.at(-1).id)], "news", "relayed twice");
    }

    // Another set of topics is another subscription, with its own connection.
    const other = await openTab(context, pages, hub, { topics: ["other"], from });
    await until(async () => (await hub.subscribers()) == 2, "a second connection for other topics");
    await other.close();
    await until(async () => (await hub.subscribers()) == 1, "the other topics' connection gone with its tab");
    for (const tab of rest) {
      assert.deepEqual(tab.problems, [], "no console error");
      assert.deepEqual(await tab.evaluate(() => window.errors), [], "no onError");
    }
  });
}

// A tab that takes over before any event arrived has no event id to resume
// from: it resumes from the position the hub named when the stream opened
// (the SSEHub-Position header). The new leader's request is held until events
// were published with no connection open, so they can only arrive by resume.
test("a take-over before any event resumes from the stream's position: nothing published meanwhile is lost", async (t) => {
  const { pages, hub, context } = await stage(t, (origin) => ["--cors-origin", origin, "--retry", "200"]);
  const tabs = [await openTab(context, pages, hub, { topics: ["quiet"] })];
  await until(async () => (await hub.subscribers()) == 1, "the first tab's connection");
  tabs.push(await openTab(context, pages, hub, { topics: ["quiet"] }));
  let open;
  const gate = new Promise((go) => (open = go));
  await context.route((url) => url.pathname == "/events", async (route) => (await gate, route.continue()));
  await tabs[0].close();
  await until(async () => (await hub.subscribers()) == 0, "the first tab's connection gone");
  const ids = await hub.publish([{ topic: "quiet", data: "one" }, { topic: "quiet", data: "two" }]);
  open();
  await until(async () => (await tabs[1].ids()).length >= 2, "the events published during the take-over");
  await expectExactly(hub, [tabs[1]], ids, "quiet", "after a take-over before any event");
  assert.deepEqual(await tabs[1].evaluate(() => window.gaps), [], "no gap");
  assert.deepEqual(tabs[1].problems, [], "no console error");
});
