// ssehub.js: subscribe a page to an ssehub hub, with one connection shared by
// every tab of the origin that asks for the same hub and topics. One ES module,
// no dependencies, no build step. The README beside this file is the manual.
//
// Shape: `connect` is one stream (fetch, the WHATWG event-stream parser, resume
// with Last-Event-ID, token refresh, back-off). `subscribe` decides who runs it:
// a SharedWorker (this very file, when it is served from the page's own origin),
// else the tab holding a Web Lock named after the subscription, which relays
// every event to the other tabs over a BroadcastChannel; when it closes, the
// next tab in the lock's queue resumes from the last id it saw. Every tab drops
// an event whose id is not newer than its last one, so a take-over can repeat
// nothing. What a stream delivers travels as arrays (all that one read of the
// response held, so a burst costs one message per tab, not one per event) of
//   {t: "e", e: {id, type, data}}  an event        {t: "g", d}   ssehub-gap data
//   {t: "x", m, s}   an error (message, HTTP status or 0)   {t: "p", id}  where a
//   stream starts (the hub's SSEHub-Position header): a take-over before any event resumes from it
// and the rest as single objects:
//   {t: "h"} a tab asks for the leader's last id  {t: "a", id}  the answer
//   {t: "s", k, o} / {t: "q"}: a page joins / leaves the SharedWorker.

const SELF = import.meta.url;

// Statuses a retry cannot fix: a bad topic, a grant that does not cover it, no such hub.
const FATAL = [400, 403, 404, 405];

// a is a later id than b (ssehub ids are "<ms>-<seq>"; anything else counts as new).
function newer(a, b) {
  if (!a || !b) return true;
  const x = a.split("-"), y = b.split("-"), d = x[0] - y[0] || x[1] - y[1];
  return d > 0 || (d != d && a != b);
}

// One stream from the hub, reconnecting until closed; `emit` gets the messages above.
function connect(o, emit) {
  let last = o.lastId || "", token = o.token || "", retry = 3000, fails = 0, closed = 0, ctl, timer;
  const url = new URL("events", o.url);
  for (const t of o.topics) url.searchParams.append("topic", t);
  const fail = (m, s = 0) => Object.assign(new Error(m), { s });

  async function refresh() {
    const r = await fetch(o.tokenUrl, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw fail("tokenUrl answered " + r.status, r.status);
    token = (await r.json()).token;
  }

  // Reads one response; resolves "end" when the hub ends it, "expired" on ssehub-expired.
  async function read(body) {
    const reader = body.getReader(), text = new TextDecoder();
    let buf = "", data = [], type = "", id = last;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return "end";
        buf += text.decode(value, { stream: true });
        // A CR at the very end may be the first half of a CRLF: keep it for the next chunk.
        // What one chunk holds goes out as one batch: one message per tab, not one per event.
        const out = [], cut = buf.length - (buf.endsWith("\r") ? 1 : 0), lines = buf.slice(0, cut).split(/\r\n|\r|\n/);
        buf = lines.pop() + buf.slice(cut);
        for (const line of lines) {
          if (!line) {
            last = id;
            if (data.length) {
              const d = data.join("\n");
              if (type == "ssehub-expired") return out.length && emit(out), "expired";
              if (type == "ssehub-gap") {
                let g = d;
                try { g = JSON.parse(d); } catch {}
                out.push({ t: "g", d: g });
              } else out.push({ t: "e", e: { id, type: type || "message", data: d } });
            }
            data = [];
            type = "";
            continue;
          }
          const i = line.indexOf(":");
          if (!i) continue; // a comment: heartbeats
          const name = i < 0 ? line : line.slice(0, i);
          let value = i < 0 ? "" : line.slice(i + 1);
          if (value[0] == " ") value = value.slice(1);
          if (name == "data") data.push(value);
          else if (name == "event") type = value;
          else if (name == "id" && !value.includes("\0")) id = value;
          else if (name == "retry" && /^\d+$/.test(value)) retry = +value;
        }
        if (out.length) emit(out);
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  (async () => {
    while (!closed) {
      let wait = retry, fresh = 0;
      try {
        if (!token && o.tokenUrl) {
          await refresh();
          fresh = 1;
        }
        const headers = { Accept: "text/event-stream" };
        if (token) headers.Authorization = "Bearer " + token;
        if (last) headers["Last-Event-ID"] = last;
        ctl = new AbortController();
        const r = await fetch(url, {
          headers, cache: "no-store", signal: ctl.signal,
          credentials: o.withCredentials ? "include" : "same-origin",
        });
        if (r.status == 401 && o.tokenUrl) {
          token = "";
          if (!fresh) continue; // the token we had expired: fetch one, at once
        }
        if (!r.ok || !/^text\/event-stream/i.test(r.headers.get("content-type"))) {
          r.body?.cancel().catch(() => {});
          throw fail("the hub answered " + r.status, r.status);
        }
        fails = 0;
        const p = r.headers.get("SSEHub-Position");
        if (p) emit([{ t: "p", id: (last = p) }]);
        if ((await read(r.body)) == "expired" && o.tokenUrl) {
          token = "";
          continue;
        }
      } catch (e) {
        if (closed) return;
        emit([{ t: "x", m: e.message, s: e.s || 0 }]);
        if (FATAL.includes(e.s)) return;
        wait = Math.min(30000, retry * 2 ** fails++) * (0.8 + Math.random() * 0.4);
      }
      if (!closed) await new Promise((go) => (timer = setTimeout(go, wait)));
    }
  })();

  return () => {
    closed = 1;
    clearTimeout(timer);
    ctl?.abort();
  };
}

/**
 * Subscribes to `topics` of the hub at `url` (default: where this module was
 * loaded from). Calls `onEvent({id, type, data})` for every event, `onGap(data)`
 * on `ssehub-gap` (events may have been missed: reload state), `onError(error)`
 * on every failure (`error.status`: the HTTP status, 0 for a network error).
 * Returns `{close()}`.
 */
export function subscribe({ url = new URL(".", SELF).href, topics, token, tokenUrl, withCredentials, onEvent, onGap, onError, share = true }) {
  const o = {
    url: new URL(url, location.href).href.replace(/\/?$/, "/"),
    topics: [...new Set(topics)].sort(),
    token, withCredentials: !!withCredentials,
    tokenUrl: tokenUrl && new URL(tokenUrl, location.href).href,
  };
  const key = "ssehub " + JSON.stringify([o.url, o.topics, o.withCredentials]);
  let last = "", closed = 0, stop = () => {};

  function deliver(batch) {
    for (const m of batch) {
      if (closed) return;
      if (m.t == "e") {
        if (newer(m.e.id, last)) (last = m.e.id || last), onEvent?.(m.e);
      } else if (m.t == "p") newer(m.id, last) && (last = m.id);
      else if (m.t == "g") onGap?.(m.d);
      else if (m.t == "x") onError?.(Object.assign(new Error(m.m), { status: m.s }));
    }
  }

  function lead() {
    if (!navigator.locks || typeof BroadcastChannel != "function") return (stop = connect(o, deliver));
    const ch = new BroadcastChannel(key), quit = new AbortController();
    let end, release, leader = 0;
    ch.onmessage = ({ data: m }) => {
      if (m.t == "h") leader && ch.postMessage({ t: "a", id: last });
      else if (m.t == "a") last ||= m.id;
      else if (Array.isArray(m)) deliver(m);
    };
    ch.postMessage({ t: "h" });
    navigator.locks
      .request(key, { signal: quit.signal }, () => new Promise((go) => {
        if (closed) return go();
        release = go;
        leader = 1;
        end = connect({ ...o, lastId: last }, (m) => (ch.postMessage(m), deliver(m)));
      }))
      .catch(() => {}); // aborted by close() while waiting in the queue
    // The stream first, then the lock: the next tab takes over at once.
    stop = () => (quit.abort(), end?.(), release?.(), ch.close());
  }

  if (!share) stop = connect(o, deliver);
  else if (typeof SharedWorker == "function" && new URL(SELF).origin == location.origin) {
    const w = new SharedWorker(SELF, { type: "module", name: "ssehub" }), port = w.port;
    const bye = () => port.postMessage({ t: "q" });
    port.onmessage = ({ data }) => deliver(data);
    port.postMessage({ t: "s", k: key, o });
    addEventListener("pagehide", bye);
    stop = () => (bye(), port.close(), removeEventListener("pagehide", bye));
    // No module workers here (or the worker failed to start): elect a leader instead.
    w.onerror = () => (stop(), closed || lead());
  } else lead();

  return { close: () => closed || ((closed = 1), stop()) };
}

// Evaluated as the SharedWorker: one stream per subscription key, relayed to every port on it.
if (typeof SharedWorkerGlobalScope != "undefined") {
  const hubs = new Map();
  onconnect = ({ ports: [port] }) => {
    let hub;
    port.onmessage = ({ data: m }) => {
      if (m.t == "s") {
        hub = hubs.get(m.k);
        if (!hub) {
          const ports = new Set();
          hubs.set(m.k, (hub = { k: m.k, ports, end: connect(m.o, (x) => ports.forEach((p) => p.postMessage(x))) }));
        }
        hub.ports.add(port);
      } else if (m.t == "q" && hub?.ports.delete(port) && !hub.ports.size) {
        hub.end();
        hubs.delete(hub.k);
      }
    };
  };
}
