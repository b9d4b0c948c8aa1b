// Several peers edit one chat through the library while their updates arrive late, out of order and
// twice; at the end every peer holds the same records, each peer's incrementally kept view reads exactly
// what a view built from scratch reads, and the document is clean. Writes the converged state and the
// reads to OUT so that the Python test can read the same bytes through chatdoc and compare.
//
//   node tests/conformance/converge.mjs --seed N --steps K --out FILE
import { writeFileSync } from 'node:fs'
import {
  ChatError, Y, createThread, edit, fork, patchConfig, reply, requestInterrupt, softDelete, viewOf
} from '../../web/src/lib/index.js'
import { parseArgs } from '../js/args.mjs'

const args = parseArgs(process.argv.slice(2))
let seed = Number(args.seed ?? 1) >>> 0
const random = () => { // mulberry32: a seeded run replays exactly
  seed = (seed + 0x6D2B79F5) >>> 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const pick = (list) => list[Math.floor(random() * list.length)]

const names = ['alice', 'bob', 'carol']
const peers = names.map((name) => {
  const doc = new Y.Doc()
  const view = viewOf(doc) // made first: it is kept current through every update that arrives
  const peer = { name, doc, view, inbox: [] }
  doc.on('update', (update, origin) => {
    if (origin === 'remote') return
    for (const other of peers) if (other !== peer) other.inbox.push(update)
  })
  return peer
})

let clock = Date.UTC(2026, 0, 10, 12)
const ops = {
  thread: (p) => createThread(p.doc, {
    sender: p.name, text: `thread by ${p.name}`, now: (clock += 1000),
    config: random() < 0.3 ? { name: 'agents', acp_config: { model: 'gpt-5.3-codex' } } : { name: `t${clock}` }
  }),
  reply: (p, tid) => reply(p.doc, { threadId: tid, sender: p.name, text: `reply ${clock}`, now: (clock += random() < 0.2 ? 0 : 1000) }),
  edit: (p, tid) => edit(p.doc, { messageId: pick(p.view.messageIds(tid)), author: p.name, text: `edit ${clock}`, now: (clock += 1000) }),
  delete: (p, tid) => softDelete(p.doc, { messageId: pick(p.view.messageIds(tid)), by: p.name, now: (clock += 1000) }),
  fork: (p, tid) => fork(p.doc, { threadId: tid, atMessageId: pick(p.view.messageIds(tid)), by: p.name, now: (clock += 1000) }),
  patch: (p, tid) => patchConfig(p.doc, {
    threadId: tid, by: p.name, now: (clock += 1000),
    patch: pick([{ name: `renamed ${clock}` }, { pin: random() < 0.5 }, { thread_color: null }, { acp_config: { reasoning: 'high' } }])
  }),
  stream: (p, tid) => { // an agent peer's turn, by hand as the runner writes it (the library does not run turns)
    const root = p.view.thread(tid).root_message_id
    const id = `01KEKWE4G0STREAM${String(Math.floor(random() * 1e9)).padStart(10, '0')}`
    p.doc.transact(() => {
      const m = new Y.Map()
      m.set('head', { thread_id: tid, sender_id: 'agent', date: new Date((clock += 1000)).toISOString(), reply_to_message_id: root })
      m.set('body', new Y.Text('partial '))
      m.set('generating', true)
      p.doc.getMap('messages').set(id, m)
    })
    requestInterrupt(p.doc, { messageId: id, by: p.name })
    p.doc.transact(() => { p.doc.getMap('messages').get(id).get('body').insert(8, 'answer'); p.doc.getMap('messages').get(id).set('generating', false) })
  }
}

// Deliver some of a peer's inbox: a random subset, shuffled, some twice; the rest stays for later.
function deliver (peer, all = false) {
  const now = []
  const later = []
  for (const update of peer.inbox) (all || random() < 0.5 ? now : later).push(update)
  for (let i = now.length - 1; i > 0; i--) { const j = Math.floor(random() * (i + 1)); [now[i], now[j]] = [now[j], now[i]] }
  for (const update of now) {
    Y.applyUpdate(peer.doc, update, 'remote')
    if (random() < 0.2) Y.applyUpdate(peer.doc, update, 'remote') // duplicated
  }
  peer.inbox = later
}

const steps = Number(args.steps ?? 200)
let refused = 0
for (let i = 0; i < steps; i++) {
  const p = pick(peers)
  const threads = p.view.threadIds()
  const kind = threads.length === 0 || random() < 0.1 ? 'thread' : pick(Object.keys(ops).filter((k) => k !== 'thread'))
  try {
    ops[kind](p, pick(threads))
  } catch (err) {
    if (!(err instanceof ChatError)) throw err
    refused++ // e.g. a fork at a message this peer has not seen in order yet: refused, nothing written
  }
  if (random() < 0.3) deliver(pick(peers))
}
for (let round = 0; round < 3; round++) for (const p of peers) deliver(p, true)

const reads = (view) => ({
  threads: view.threads(),
  messages: Object.fromEntries(view.threadIds().map((tid) => [tid, view.messages(tid)])),
  integrity: view.integrity()
})
// Key order is not content (a Y.Map lists keys in the order they arrived): compare with keys sorted.
const sorted = (v) => Array.isArray(v) ? v.map(sorted) : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])])) : v
const json = (v) => JSON.stringify(sorted(v))

const records = (doc) => Object.fromEntries(['meta', 'threads', 'thread_configs', 'messages', 'thread_states'].map((r) => [r, doc.getMap(r).toJSON()]))
const fresh = new Y.Doc()
Y.applyUpdate(fresh, Y.encodeStateAsUpdate(peers[0].doc))
const expected = reads(viewOf(fresh))
const failures = []
for (const p of peers) {
  if (json(records(p.doc)) !== json(records(fresh))) failures.push(`${p.name}: records differ`)
  if (json(reads(p.view)) !== json(expected)) failures.push(`${p.name}: its incremental view reads differently from a fresh one`)
}
const { integrity } = expected
if (!integrity.clean) failures.push(`not clean: ${json(integrity.counts)}`)
if (failures.length) { console.error(failures.join('\n')); process.exit(1) }
writeFileSync(args.out, Y.encodeStateAsUpdate(fresh))
process.stdout.write(json({
  refused,
  threads: expected.threads.map((t) => ({ thread_id: t.thread_id, agent: t.agent, name: t.config.name, pin: t.config.pin, state: t.state.state })),
  messages: Object.fromEntries(Object.entries(expected.messages).map(([tid, ms]) => [tid, ms.map((m) => [m.message_id, m.text, m.deleted, m.edited])])),
  duplicate_date_rows: integrity.ids['chat.integrity.duplicate_date_rows']
}) + '\n')
