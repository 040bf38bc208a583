// The event-stream parser of ssehub.js against a scripted stream from a plain
// Node server, sent in pieces that split a CRLF and a UTF-8 character: every
// line-ending style, a BOM, comments, fields without a colon, an id with NUL,
// an event without data, retry, the gap event; then the reconnect carries
// Last-Event-ID and Accept.
import assert from "node:assert/strict";
import { test } from "node:test";
import { launch, openTab, startPages, until } from "./harness.mjs";

const PIECES = [
  Buffer.from("\uFEFFretry: 50\n: a comment\n\nid: 1-0\ndata: first\n\n"),
  Buffer.from("id: 2-0\r\nevent: update\r\ndata: a\r"),
  Buffer.from("\ndata:b\r\n\r\nid: 3-0\rdata: cr only\r\rid: 4-0\ndata\n\n"),
  Buffer.from("id: 5-0\nevent: nodata\n\nid: 6\u00000\ndata: nul id ignored\n\n"),
  Buffer.concat([Buffer.from("id: 7-0\ndata: caf"), Buffer.from([0xc3])]),
  Buffer.concat([Buffer.from([0xa9]), Buffer.from("\n\nid: 8-0\ndata:  two spaces\n\n")]),
  Buffer.from('event: ssehub-gap\ndata: {"reason":"evicted"}\n\nid: 10-0\ndata: last\n\n'),
];

test("the parser: line ends, BOM, comments, odd fields, split chunks; the reconnect resumes", async (t) => {
  const requests = [];
  const events = (request, response) => {
    requests.push({ url: request.url, accept: request.headers.accept, last: request.headers["last-event-id"] });
    response.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    if (requests.length > 1) return response.write("id: 11-0\ndata: resumed\n\n");
    (async () => {
      for (const piece of PIECES) {
        response.write(piece);
        await new Promise((go) => setTimeout(go, 20)); // separate reads, so pieces arrive as chunks
      }
      response.end();
    })();
  };
  const pages = await startPages({ routes: { "/events": events } });
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await pages.close();
  });
  const tab = await openTab(await browser.newContext(), pages, { url: pages.origin }, { topics: ["a b", "c"], from: "page", share: false });
  await until(async () => (await tab.ids()).includes("11-0"), "the event after the reconnect");
  assert.deepEqual(await tab.evaluate(() => window.got), [
    { id: "1-0", type: "message", data: "first" },
    { id: "2-0", type: "update", data: "a\nb" },
    { id: "3-0", type: "message", data: "cr only" },
    { id: "4-0", type: "message", data: "" },
    { id: "5-0", type: "message", data: "nul id ignored" },
    { id: "7-0", type: "message", data: "café" },
    { id: "8-0", type: "message", data: " two spaces" },
    { id: "10-0", type: "message", data: "last" },
    { id: "11-0", type: "message", data: "resumed" },
  ]);
  assert.deepEqual(await tab.evaluate(() => window.gaps), [{ reason: "evicted" }]);
  assert.deepEqual(requests, [
    { url: "/events?topic=a+b&topic=c", accept: "text/event-stream", last: undefined },
    { url: "/events?topic=a+b&topic=c", accept: "text/event-stream", last: "10-0" },
  ]);
  assert.deepEqual(await tab.evaluate(() => window.errors), []);
});
