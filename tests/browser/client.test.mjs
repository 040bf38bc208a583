// ssehub.js itself: its size, and the hub serving exactly this file, with
// CORS for --cors-origin so pages of another origin can import it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { CLIENT, require, startHub } from "./harness.mjs";

const LIMIT = 4096;

test(`ssehub.js is at most ${LIMIT} bytes minified and gzipped`, async () => {
  const { minify } = require("terser");
  const source = readFileSync(CLIENT, "utf8");
  const { code } = await minify(source, { module: true, compress: { passes: 2 } });
  const size = gzipSync(code, { level: 9 }).length;
  console.log(`ssehub.js: ${source.length} B source, ${code.length} B minified (terser), ${size} B minified + gzip -9`);
  assert.ok(size <= LIMIT, `${size} B`);
});

test("the hub serves ssehub.js as it is in clients/js, to allowed origins only", async (t) => {
  const hub = await startHub(["--cors-origin", "http://app.example"]);
  t.after(() => hub.stop());
  const ask = (origin) => fetch(`${hub.url}/ssehub.js`, { headers: origin ? { Origin: origin } : {} });
  const allowed = await ask("http://app.example");
  assert.equal(allowed.status, 200);
  assert.equal(allowed.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.equal(allowed.headers.get("access-control-allow-origin"), "http://app.example");
  assert.equal(await allowed.text(), readFileSync(CLIENT, "utf8"), "the embedded copy is the file");
  const other = await ask("http://elsewhere.example");
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  await other.text();
});
