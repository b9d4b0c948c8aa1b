// Yjs in Node as a merge-trace engine: apply a delivery order's updates one by one, as bench/replay.py's
// Python engines do, and report the same numbers.
// Usage: NODE_PATH=<dir holding yjs> node bench/yjs_replay.cjs START_STATE|- UPDATES BUCKETS
//   UPDATES: u32-LE-length-prefixed update bytes, in delivery order (written by bench/replay.py).
// Prints one JSON line: per-update timings (p50/p99, total, and means over BUCKETS slices of the run for the
// plot), peak RSS, the final state's size, its state vector and the typed read of every root map (for the
// digests).
const fs = require("fs");
const Y = require("yjs");

const { ROOTS, readUpdates } = require("./yjs_updates.cjs");
const [startPath, updatesPath, bucketsArg] = process.argv.slice(2);

const updates = readUpdates(updatesPath);
const doc = new Y.Doc();
if (startPath !== "-") Y.applyUpdate(doc, fs.readFileSync(startPath));
const times = new Float64Array(updates.length);
let failed = null;
for (let i = 0; i < updates.length; i++) {
  const started = process.hrtime.bigint();
  try {
    Y.applyUpdate(doc, updates[i]);
  } catch (err) {
    failed = failed || `update ${i}: ${err}`;
  }
  times[i] = Number(process.hrtime.bigint() - started);
}
const total = times.reduce((a, b) => a + b, 0);
const buckets = [];
const nb = Math.min(Number(bucketsArg), times.length);
for (let b = 0; b < nb; b++) {
  const from = Math.floor((b * times.length) / nb);
  const to = Math.floor(((b + 1) * times.length) / nb);
  let sum = 0;
  for (let i = from; i < to; i++) sum += times[i];
  buckets.push(sum / Math.max(1, to - from) / 1000);
}
const sorted = Float64Array.from(times).sort();
const read = {};
for (const name of ROOTS) read[name] = doc.getMap(name).toJSON();
console.log(JSON.stringify({
  updates: times.length,
  seconds: total / 1e9,
  us_p50: times.length ? sorted[Math.floor(times.length / 2)] / 1000 : 0,
  us_p99: times.length ? sorted[Math.floor(times.length * 0.99)] / 1000 : 0,
  bucket_us: buckets,
  peak_rss_mib: process.resourceUsage().maxRSS / 1024,
  final_bytes: Y.encodeStateAsUpdate(doc).length,
  read,
  clocks: Object.fromEntries(Y.decodeStateVector(Y.encodeStateVector(doc))),
  failed,
  yjs_version: require("yjs/package.json").version,
}));
