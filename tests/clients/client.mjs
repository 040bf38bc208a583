// One Node SSE client of the client matrix (tests/clients.rs).
//
//     node client.mjs --lib eventsource|fetch-event-source URL
//
// Subscribes to URL with the chosen library and prints one JSON line per
// event on stdout ({"id", "event", "data"}, plus "json" when the data parses
// as a JSON object), {"open": true} when a response head arrives (the
// subscription is live from then on), and {"error": ...} when a stream fails
// or ends. Both libraries reconnect with Last-Event-ID; fetch-event-source
// only with the idiom below. The test copies this file next to the
// node_modules it installs (target/clients-env/node), where imports resolve.

import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  options: { lib: { type: "string" } },
  allowPositionals: true,
});
const url = positionals[0];

// Writes to a pipe are synchronous on Linux: each line leaves at once.
function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

function emitEvent(id, type, data) {
  const line = { id: id ?? "", event: type || "message", data };
  try {
    const parsed = JSON.parse(data);
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      line.json = parsed;
    }
  } catch {
    // Not JSON: the data alone.
  }
  emit(line);
}

function fatal(message) {
  emit({ error: message, fatal: true });
  process.exit(1);
}

// EventSource dispatches a named event only to listeners of that name.
const TYPES = ["message", "update", "ssehub-gap"];

async function runEventsource() {
  const { EventSource } = await import("eventsource");
  const source = new EventSource(url);
  source.onopen = () => emit({ open: true });
  source.onerror = (error) => {
    if (source.readyState === EventSource.CLOSED) {
      fatal(`eventsource gave up: ${error.message}`);
    }
    emit({ error: error.message ?? "stream ended or failed" });
  };
  for (const type of TYPES) {
    source.addEventListener(type, (event) => emitEvent(event.lastEventId, event.type, event.data));
  }
}

async function runFetchEventSource() {
  // Node shim: the library calls window.fetch, window.setTimeout and
  // window.clearTimeout, and document.removeEventListener when it stops.
  globalThis.window ??= globalThis;
  globalThis.document ??= { hidden: false, addEventListener() {}, removeEventListener() {} };
  const { fetchEventSource } = await import("@microsoft/fetch-event-source");
  class Fatal extends Error {}
  await fetchEventSource(url, {
    openWhenHidden: true, // no page visibility in Node
    async onopen(response) {
      const type = response.headers.get("content-type") ?? "";
      if (response.status !== 200 || !type.startsWith("text/event-stream")) {
        throw new Fatal(`status ${response.status}, content type ${type}`);
      }
      emit({ open: true });
    },
    onmessage(message) {
      emitEvent(message.id, message.event, message.data);
    },
    // A stream the server ended resolves the promise for good: throwing here
    // turns the end into an error, which is retried.
    onclose() {
      throw new Error("stream ended");
    },
    // Returning nothing retries after the server's `retry:` (a number would
    // override it); throwing stops for good.
    onerror(error) {
      if (error instanceof Fatal) {
        throw error;
      }
      emit({ error: String(error?.message ?? error) });
    },
  });
}

const LIBS = { eventsource: runEventsource, "fetch-event-source": runFetchEventSource };
const run = LIBS[values.lib];
if (!run || !url) {
  console.error(`usage: node client.mjs --lib ${Object.keys(LIBS).join("|")} URL`);
  process.exit(2);
}
run().catch((error) => fatal(String(error?.stack ?? error)));
