// Yjs in Node as a baseline: load a document, then apply the same remote updates as bench/workers.py.
// Usage: NODE_PATH=<dir holding yjs> node bench/yjs_apply.cjs DOC UPDATES bare|observed
// Prints one JSON line: load time, peak RSS, microseconds per update.
const fs = require("fs");
const Y = require("yjs");

const { ROOTS, readUpdates } = require("./yjs_updates.cjs");
const [docPath, updatesPath, mode] = process.argv.slice(2);

const importRss = process.resourceUsage().maxRSS / 1024;
const state = fs.readFileSync(docPath);
const updates = readUpdates(updatesPath);
let started = process.hrtime.bigint();
const doc = new Y.Doc();
Y.applyUpdate(doc, state);
const loadSeconds = Number(process.hrtime.bigint() - started) / 1e9;
const loadRss = process.resourceUsage().maxRSS / 1024;
const roots = ROOTS.map((name) => doc.getMap(name));
if (mode === "observed") roots.forEach((root) => root.observeDeep(() => {}));
else if (mode !== "bare") throw new Error(mode);
const before = roots[3].size;
const times = [];
for (const update of updates) {
  started = process.hrtime.bigint();
  Y.applyUpdate(doc, update);
  times.push(Number(process.hrtime.bigint() - started));
}
const total = times.reduce((a, b) => a + b, 0);
times.sort((a, b) => a - b);
console.log(JSON.stringify({
  mode,
  updates: times.length,
  us_mean: total / times.length / 1000,
  us_p50: times[Math.floor(times.length / 2)] / 1000,
  us_p99: times[Math.floor(times.length * 0.99)] / 1000,
  added: roots[3].size - before,
  load_seconds: loadSeconds,
  import_rss_mib: importRss,
  load_peak_rss_mib: loadRss,
  yjs_version: require("yjs/package.json").version,
}));
