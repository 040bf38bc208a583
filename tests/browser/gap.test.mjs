// A standalone hub keeps no history across a restart: a client resuming from
// an id of the old process gets ssehub-gap (before-start), every tab calls
// onGap, then events flow again.
import assert from "node:assert/strict";
import { test } from "node:test";
import { openTab, quietPort, stage, startHub, until, warmUp } from "./harness.mjs";

test("after a hub restart every tab gets onGap, then the new events", async (t) => {
  const port = await quietPort();
  const args = (origin) => ["--cors-origin", origin, "--retry", "100"];
  const s = await stage(t, args, { port });
  const { pages, context } = s;
  let hub = s.hub;
  const tabs = [await openTab(context, pages, hub, { topics: ["news"] })];
  await until(async () => (await hub.subscribers()) == 1, "the first tab's connection");
  tabs.push(await openTab(context, pages, hub, { topics: ["news"] }));
  await warmUp(hub, tabs, "news");
  const [before] = await hub.publish([{ topic: "news", data: "before the restart" }]);
  for (const tab of tabs) await until(async () => (await tab.ids()).includes(before), "the event before the restart");

  assert.equal(await hub.stop("SIGTERM"), 0, "a clean stop");
  hub = s.hub = await startHub(args(pages.origin), port);
  for (const tab of tabs) {
    const gaps = await until(async () => {
      const gaps = await tab.evaluate(() => window.gaps);
      return gaps.length && gaps;
    }, "onGap");
    assert.deepEqual(gaps, [{ reason: "before-start" }]);
  }
  const [after] = await hub.publish([{ topic: "news", data: "after the restart" }]);
  for (const tab of tabs) {
    await until(async () => (await tab.ids()).includes(after), "the event after the restart");
    assert.deepEqual(await tab.ids(), [before, after]);
  }
  assert.equal(await hub.subscribers(), 1);
});
