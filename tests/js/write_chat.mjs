// A chat written the way browsers and a Node agent would: people's writes through the page's library
// (web/src/lib: createThread, reply, edit, softDelete, one transaction each), an agent's turns and the
// damage by hand with yjs, following SCHEMA.md: a message's fixed fields (and its text, when sent whole)
// are one plain `head` object, a streamed agent reply's text a Y.Text `body`.
//
//   node write_chat.mjs OUT [--damage | --misplace]
//
// Writes Y.encodeStateAsUpdate(doc) to OUT and prints to stdout, as JSON, what it wrote: each thread's
// messages in schema order (date, then message id) with the content a reader must show, and with
// --damage (broken invariants) or --misplace (message fields stored where the schema does not put them),
// the ids each integrity counter must name.
import { writeFileSync } from 'node:fs'
import { Y, createThread as libCreateThread, edit as libEdit, formatDate as iso, newUlid as ulid, reply as libReply, softDelete as libDelete } from '../../web/src/lib/index.js'

// A message's head, by hand (the damage below writes some wrongly on purpose).
function messageHead (threadId, senderId, ms, replyTo, body) {
  const head = { thread_id: threadId, sender_id: senderId, date: iso(ms) }
  if (replyTo) head.reply_to_message_id = replyTo
  if (body !== undefined) head.body = body
  return head
}
function withHead (head, extra) {
  const map = new Y.Map()
  map.set('head', head)
  for (const [k, v] of Object.entries(extra)) map.set(k, v)
  return map
}
const messageMap = (threadId, senderId, ms, content, replyTo) => withHead(messageHead(threadId, senderId, ms, replyTo, content), {})
// An agent's streamed reply: no body in the head, the text a Y.Text that grows by appends.
const streamedRecord = (threadId, senderId, ms, content, replyTo, extra = {}) =>
  withHead(messageHead(threadId, senderId, ms, replyTo), { ...extra, body: new Y.Text(content) })

// Dates advance a few seconds per message, like a conversation; `same()` reuses the last millisecond.
let now = Date.UTC(2026, 0, 10, 12, 0, 0, 0)
const tick = () => (now += 1000 + Math.floor(Math.random() * 60000))

// Each participant is its own Y.Doc (its own client id); `sync` exchanges what the other lacks, as a
// provider would.
function peer (name) {
  const doc = new Y.Doc()
  const root = (n) => doc.getMap(n)
  return { name, doc, messages: root('messages'), threads: root('threads'), configs: root('thread_configs'), states: root('thread_states'), meta: root('meta') }
}
function sync (...peers) {
  for (const a of peers) {
    for (const b of peers) {
      if (a !== b) Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc, Y.encodeStateVector(b.doc)), 'sync')
    }
  }
}

const written = new Map() // message id -> {thread_id, date, sender_id, content, deleted}

function createThread (p, { content, config = {}, acp = null, withConfig = true }) {
  const ms = tick()
  const { threadId, messageId: rootId } = libCreateThread(p.doc, { sender: p.name, text: content, config: { ...config, acp_config: acp ?? {} }, now: ms })
  // A peer that knows nothing of configs: the thread without one.
  if (!withConfig) p.doc.transact(() => p.configs.delete(threadId), 'no config')
  written.set(rootId, { thread_id: threadId, date: iso(ms), sender_id: p.name, content, deleted: false })
  return { threadId, rootId, agent: acp !== null && Object.keys(acp).length > 0, name: config.name ?? null }
}

// Through the library a reply points at the root; `replyTo` is a misbehaving peer's raw write.
function reply (p, thread, content, { ms = tick(), replyTo = null } = {}) {
  let id
  if (replyTo) {
    id = ulid(ms)
    p.doc.transact(() => p.messages.set(id, messageMap(thread.threadId, p.name, ms, content, replyTo)), 'reply')
  } else {
    id = libReply(p.doc, { threadId: thread.threadId, sender: p.name, text: content, now: ms })
  }
  written.set(id, { thread_id: thread.threadId, date: iso(ms), sender_id: p.name, content, deleted: false })
  return id
}

function edit (p, messageId, content) {
  libEdit(p.doc, { messageId, author: p.name, text: content, now: tick() })
  written.get(messageId).content = content
}

function softDelete (p, messageId) {
  libDelete(p.doc, { messageId, by: p.name, now: tick() })
  written.get(messageId).deleted = true
}

// An agent turn: the reply is created `generating` with an empty Y.Text body (its head has none), streamed
// into by appending to that Y.Text (one transaction per chunk, as tokens arrive), then finalised with
// usage; the thread state follows.
function agentTurn (agent, thread, chunks, sessionId) {
  const ms = tick()
  const id = ulid(ms)
  agent.doc.transact(() => {
    agent.messages.set(id, streamedRecord(thread.threadId, agent.name, ms, '', thread.rootId, { generating: true }))
    const state = agent.states.get(thread.threadId)
    state.set('state', 'running')
    state.set('active_message_id', id)
    state.set('updated_at', iso(ms))
  }, 'turn.start')
  for (const chunk of chunks) {
    agent.doc.transact(() => {
      const body = agent.messages.get(id).get('body')
      body.insert(body.length, chunk)
    }, 'turn.stream')
  }
  agent.doc.transact(() => {
    const record = agent.messages.get(id)
    record.set('generating', false)
    record.set('acp_thread_id', sessionId)
    record.set('acp_usage', { input_tokens: 1200, output_tokens: 300, cached_input_tokens: 600, reasoning_output_tokens: 150, total_tokens: 1500, model_context_window: 400000 })
    const state = agent.states.get(thread.threadId)
    state.set('state', 'complete')
    state.set('updated_at', iso(tick()))
    // The session id lives in the thread's config only, patched key by key.
    agent.configs.get(thread.threadId).get('acp_config').set('sessionId', sessionId)
  }, 'turn.finalize')
  written.set(id, { thread_id: thread.threadId, date: iso(ms), sender_id: agent.name, content: chunks.join(''), deleted: false })
  return id
}

const [out, ...flags] = process.argv.slice(2)
if (!out) {
  console.error('usage: node write_chat.mjs OUT [--damage | --misplace]')
  process.exit(2)
}
const damage = flags.includes('--damage')
const misplace = flags.includes('--misplace')

const alice = peer('alice')
const bob = peer('bob')
const agent = peer('gpt-5.3-codex')
alice.doc.transact(() => {
  alice.meta.set('schema_version', 2)
  alice.meta.set('created_at', iso(now))
}, 'init')

const plan = createThread(alice, { content: 'Plan for the release', config: { name: 'Release', thread_color: '#3f51b5', pin: true } })
sync(alice, bob, agent)
const bobsReply = reply(bob, plan, 'I can take the migration.')
const sameMoment = tick() // two messages from one sender in one millisecond: both must survive
reply(alice, plan, 'Great.', { ms: sameMoment })
const aliceSecond = reply(alice, plan, 'And the tests?', { ms: sameMoment })
const concurrent = reply(bob, plan, 'Written concurrently with alice, before syncing.')
sync(alice, bob, agent)
edit(bob, bobsReply, 'I can take the migration and the export.')
edit(alice, bobsReply, 'Bob takes the migration and the export.')
softDelete(alice, aliceSecond)
sync(alice, bob, agent)

const codex = createThread(alice, {
  content: 'Why does the finalize write get lost?',
  config: { name: 'Codex: finalize' },
  acp: { model: 'gpt-5.3-codex', reasoning: 'medium', workingDirectory: '/home/user/project', allowWrite: false },
})
sync(alice, bob, agent)
agentTurn(agent, codex, ['Looking at ', 'the writer: ', 'it keys rows by date.'], 'sess-js-1')
sync(alice, bob, agent)
reply(alice, codex, 'Can you fix it?')
sync(alice, bob, agent)
const lastTurn = agentTurn(agent, codex, ['Yes: ', 'use message ids.'], 'sess-js-1')

const small = createThread(bob, { content: 'Lunch?' })
sync(alice, bob, agent) // the library replies only in a thread its peer knows
reply(alice, small, 'Yes!')
sync(alice, bob, agent)

const expected = {}
let extra = null
if (damage) {
  // A legacy-minded peer that knows nothing of the invariants.
  const mallory = peer('mallory')
  sync(alice, bob, agent, mallory)
  const orphans = [...written].filter(([, m]) => m.thread_id === small.threadId).map(([id]) => id)
  mallory.doc.transact(() => mallory.threads.delete(small.threadId), 'lost thread record')
  const misdirected = reply(mallory, plan, 'Replying to bob, not to the root.', { replyTo: concurrent })
  mallory.doc.transact(() => mallory.messages.get(codex.rootId).set('acp_config', { model: 'gpt-5.2' }), 'legacy root write')
  extra = createThread(mallory, { content: 'A thread created without its config', withConfig: false })
  mallory.doc.transact(() => mallory.states.get(codex.threadId).set('state', 'running'), 'stale state')
  sync(alice, bob, agent, mallory)
  Object.assign(expected, {
    'chat.integrity.orphan_messages': orphans,
    'chat.integrity.invalid_reply_targets': [misdirected],
    'chat.integrity.invalid_records': [`messages:${codex.rootId}`],
    'chat.integrity.missing_thread_config': [extra.threadId],
    'chat.acp.finalize_mismatch': [codex.threadId],
  })
} else if (misplace) {
  // A peer that gets the message layout wrong (SCHEMA.md 3.3, "Misplaced storage"). Each mistake is
  // counted and none is read as the field it names: a head stored as a Y.Map leaves the message without
  // a head (quarantined, read by nobody), a body stored twice is read from its Y.Text, and a thread_id
  // written beside the head is ignored.
  const mallory = peer('mallory')
  sync(alice, bob, agent, mallory)
  const twice = reply(mallory, plan, 'The text in the head.')
  const beside = reply(mallory, plan, 'A reply with a thread_id beside its head.')
  const ms = tick()
  const headAsMap = ulid(ms)
  mallory.doc.transact(() => {
    const head = new Y.Map()
    for (const [k, v] of Object.entries(messageHead(plan.threadId, mallory.name, ms, plan.rootId, 'lost'))) head.set(k, v)
    const record = new Y.Map()
    record.set('head', head)
    mallory.messages.set(headAsMap, record)
    mallory.messages.get(twice).set('body', new Y.Text('The text as a Y.Text.'))
    mallory.messages.get(beside).set('thread_id', plan.threadId)
  }, 'misplaced')
  written.get(twice).content = 'The text as a Y.Text.'
  sync(alice, bob, agent, mallory)
  expected['chat.integrity.invalid_records'] = [headAsMap, twice, beside].map((id) => `messages:${id}`)
}
for (const ids of Object.values(expected)) ids.sort()

writeFileSync(out, Y.encodeStateAsUpdate(alice.doc))

// Schema order: by date, then message id (ULIDs sort like their creation time).
const byOrder = ([ia, a], [ib, b]) => (a.date < b.date ? -1 : a.date > b.date ? 1 : ia < ib ? -1 : ia > ib ? 1 : 0)
const threads = [plan, codex, small, ...(extra ? [extra] : [])].map((t) => ({
  thread_id: t.threadId,
  root_message_id: t.rootId,
  name: t.name,
  agent: t.agent,
  messages: [...written].filter(([, m]) => m.thread_id === t.threadId).sort(byOrder).map(([id, m]) => ({ message_id: id, ...m })),
}))
process.stdout.write(JSON.stringify({ threads, damage: expected, last_turn: lastTurn }) + '\n')
