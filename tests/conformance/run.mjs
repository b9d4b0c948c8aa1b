// The conformance vectors run through the JavaScript library (the twin of vectors.py; see it for the
// notation). Prints {case name: {records, verdict, refused}} as one JSON line.
//
//   node tests/conformance/run.mjs operations.json damaged.json
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  COUNTERS, Y, createThread, edit, fork, isAgentThread, patchConfig, reply, requestInterrupt, softDelete, viewOf
} from '../../web/src/lib/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const ROOTS = ['meta', 'threads', 'thread_configs', 'messages', 'thread_states']

function build (doc, spec) {
  // List items in a root: written by a peer that took the root for a Y.Array (a doc can type a root once).
  if (spec.$lists) {
    const other = new Y.Doc()
    for (const [root, items] of Object.entries(spec.$lists)) other.getArray(root).push(items)
    Y.applyUpdate(doc, Y.encodeStateAsUpdate(other))
  }
  doc.transact(() => {
    for (const [root, records] of Object.entries(spec)) {
      if (root === '$lists') continue
      const target = doc.getMap(root)
      for (const [key, value] of Object.entries(records)) target.set(key, record(value))
    }
  }, 'conformance.doc')
}
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)
function record (value) {
  if (isObject(value) && '$plain' in value) return value.$plain
  if (isObject(value) && '$text' in value) return new Y.Text(value.$text)
  return mapOf(value)
}
function mapOf (fields) {
  const map = new Y.Map()
  for (const [k, v] of Object.entries(fields)) map.set(k, inner(v))
  return map
}
function inner (value) {
  if (isObject(value) && Object.keys(value).join() === '$map') return mapOf(value.$map)
  if (isObject(value) && Object.keys(value).join() === '$text') return new Y.Text(value.$text)
  return value
}

function dump (doc) {
  const out = {}
  for (const root of ROOTS) {
    out[root] = {}
    doc.getMap(root).forEach((v, k) => { out[root][k] = root === 'meta' ? v : dumpRecord(v) })
  }
  return out
}
function dumpRecord (value) {
  if (value instanceof Y.Map) return Object.fromEntries([...value.entries()].map(([k, v]) => [k, dumpInner(v)]))
  if (value instanceof Y.Text) return { $text: value.toString() }
  return { $plain: value }
}
function dumpInner (value) {
  if (value instanceof Y.Map) return { $map: Object.fromEntries([...value.entries()].map(([k, v]) => [k, dumpInner(v)])) }
  if (value instanceof Y.Text) return { $text: value.toString() }
  if (value instanceof Y.Array) return value.toArray().map(dumpInner)
  return value
}

const OPS = {
  create_thread: (doc, o) => createThread(doc, { sender: o.sender, text: o.text, config: o.config ?? null, threadId: o.thread_id, messageId: o.message_id, now: o.now }),
  reply: (doc, o) => reply(doc, { threadId: o.thread_id, sender: o.sender, text: o.text, messageId: o.message_id, now: o.now }),
  edit: (doc, o) => edit(doc, { messageId: o.message_id, author: o.author, text: o.text, editId: o.edit_id, now: o.now }),
  delete: (doc, o) => softDelete(doc, { messageId: o.message_id, by: o.by, now: o.now }),
  fork: (doc, o) => fork(doc, { threadId: o.thread_id, atMessageId: o.at_message_id, by: o.by, newThreadId: o.new_thread_id, ids: o.ids, now: o.now }),
  patch_config: (doc, o) => patchConfig(doc, { threadId: o.thread_id, patch: o.patch, by: o.by, now: o.now }),
  request_interrupt: (doc, o) => requestInterrupt(doc, { messageId: o.message_id, by: o.by, now: o.now })
}

function verdict (doc) {
  const view = viewOf(doc)
  const report = view.integrity()
  const counts = {}
  for (const name of Object.values(COUNTERS)) if (report.ids[name].length) counts[name] = report.ids[name]
  return {
    quarantined: report.quarantined,
    counts,
    threads: view.threadIds().map((tid) => ({
      thread_id: tid,
      agent: isAgentThread(doc, tid),
      messages: view.messages(tid).map((m) => [m.message_id, m.text, m.deleted])
    }))
  }
}

function run (c) {
  const doc = new Y.Doc()
  build(doc, c.doc ?? {})
  const refused = []
  ;(c.ops ?? []).forEach((op, i) => {
    const before = Y.encodeStateVector(doc).toString()
    try {
      OPS[op.op](doc, op)
    } catch (err) {
      refused.push(i)
      if (Y.encodeStateVector(doc).toString() !== before) throw new Error(`op ${i} was refused (${err.message}) but wrote something`)
    }
  })
  return { records: dump(doc), verdict: verdict(doc), refused }
}

const out = {}
for (const file of process.argv.slice(2)) {
  for (const c of JSON.parse(readFileSync(join(here, file), 'utf8'))) out[`${file}:${c.name}`] = run(c)
}
process.stdout.write(JSON.stringify(out) + '\n')
