// The live page: /metrics every second, rates and charts from its counters,
// and a try-it panel on /ssehub.js and POST /publish. Everything that comes
// from the hub or the URL reaches the DOM as text (textContent, attribute
// values of SVG points), never as markup.
import { subscribe } from "/ssehub.js";

const $ = (id) => document.getElementById(id);
const SAMPLES = 300; // five minutes at one a second
const history = { events: [], deliveries: [] };
let previous = null;

// Prometheus text to a map from "name{labels}" to its value.
function parse(text) {
  const values = new Map();
  for (const line of text.split("\n")) {
    if (!line || line[0] == "#") continue;
    const space = line.lastIndexOf(" ");
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

const number = (n) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString("en") : n.toFixed(1));

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return m ? `${m}m ${s % 60}s` : `${s}s`;
}

function draw(name, samples) {
  const svg = $(`${name}-chart`), peak = Math.max(1, ...samples);
  const x0 = 300 - (samples.length - 1) * (300 / (SAMPLES - 1));
  const points = samples.map((v, i) => `${(x0 + i * (300 / (SAMPLES - 1))).toFixed(1)},${(58 - (v / peak) * 56).toFixed(1)}`);
  svg.querySelector("polyline").setAttribute("points", points.join(" "));
  $(`${name}-peak`).textContent = `peak ${number(Math.max(0, ...samples))}`;
}

async function sample() {
  let values;
  try {
    const response = await fetch("/metrics", { cache: "no-store" });
    if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
    values = parse(await response.text());
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = `hub unreachable (${error.message})`;
    return;
  }
  const now = performance.now();
  const get = (name) => values.get(name) ?? 0;
  const counters = { events: get("ssehub_events_published_total"), deliveries: get("ssehub_frames_written_total") };
  $("subscribers").textContent = number(get('ssehub_connections{kind="subscriber"}'));
  $("publishers").textContent = number(get('ssehub_connections{kind="http"}'));
  $("events-total").textContent = number(counters.events);
  $("slow").textContent = number(get("ssehub_slow_consumers_dropped_total"));
  $("uptime").textContent = duration(get("ssehub_uptime_seconds"));
  for (const key of values.keys()) {
    const version = /^ssehub_build_info\{version="(.*)"\}$/.exec(key);
    if (version) $("version").textContent = `v${version[1]}`;
  }
  if (previous) {
    const seconds = (now - previous.at) / 1000;
    for (const name of ["events", "deliveries"]) {
      // A restarted hub starts its counters again: count that second as zero.
      const rate = Math.max(0, counters[name] - previous[name]) / seconds;
      history[name].push(rate);
      if (history[name].length > SAMPLES) history[name].shift();
      $(`${name}-rate`).textContent = number(rate);
      draw(name, history[name]);
    }
  }
  previous = { at: now, ...counters };
}

// The try-it panel.
let subscription = null;
const topicsOf = () => $("topics").value.split("\n").map((t) => t.trim()).filter(Boolean);

function log(text, kind) {
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.className = kind;
  $("log").prepend(item);
  while ($("log").children.length > 200) $("log").lastElementChild.remove();
}

$("sub-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (subscription) {
    subscription.close();
    subscription = null;
    $("sub-button").textContent = "Subscribe";
    $("subscribed").textContent = "nothing";
    return;
  }
  const topics = topicsOf();
  if (!topics.length) return;
  const token = $("token").value.trim() || undefined;
  subscription = subscribe({
    url: location.origin + "/",
    topics,
    token,
    onEvent: (e) => log(`${e.id}  ${e.type}  ${e.data}`),
    onGap: (gap) => log(`gap: ${JSON.stringify(gap)} (events may have been missed)`, "gap"),
    onError: (error) => log(`error: ${error.message}`, "error"),
  });
  $("sub-button").textContent = "Unsubscribe";
  $("subscribed").textContent = topics.join(", ");
  if (!$("pub-topic").value) $("pub-topic").value = topics[0];
});

$("pub-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = new URLSearchParams({ topic: $("pub-topic").value, data: $("pub-data").value });
  if ($("pub-event").value) body.set("event", $("pub-event").value);
  const headers = { "Content-Type": "application/x-www-form-urlencoded" };
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch("/publish", { method: "POST", headers, body });
    const text = (await response.text()).trim();
    $("pub-answer").textContent = response.ok ? `published, id ${text}` : text;
  } catch (error) {
    $("pub-answer").textContent = error.message;
  }
});

// `/?topic=a&topic=b` fills in the topics (shown as text like any other).
const asked = new URLSearchParams(location.search).getAll("topic");
$("topics").value = (asked.length ? asked : ["demo"]).join("\n");
$("pub-topic").value = asked[0] ?? "demo";

sample();
setInterval(sample, 1000);
