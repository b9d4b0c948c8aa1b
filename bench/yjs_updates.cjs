// What the Node Yjs engines of bench/ share: the chat's root maps and the update files bench/*.py write.
const fs = require("fs");

const ROOTS = ["meta", "threads", "thread_configs", "messages", "thread_states"];

// A file of u32-LE-length-prefixed update bytes, in the order they are to be applied.
function readUpdates(path) {
  const data = fs.readFileSync(path);
  const updates = [];
  for (let at = 0; at < data.length; ) {
    const n = data.readUInt32LE(at);
    updates.push(data.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return updates;
}

module.exports = { ROOTS, readUpdates };
