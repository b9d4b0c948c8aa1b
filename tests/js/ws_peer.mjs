// A browser-like peer for the server tests: an unmodified `yjs` + `y-websocket` client (with `ws` as its
// WebSocket) that joins a chatdoc room, writes records the way SCHEMA.md says, and prints what it reads.
//
//   node ws_peer.mjs --url ws://127.0.0.1:PORT --room a.chat [--token T] [--create-thread]
//        [--reply THREAD_ID --count K] [--edit MESSAGE_ID] [--expect-messages N] [--settle MS]
//        [--presence NAME]
//
// Prints one JSON line: {wrote: {...}, records: {root map -> plain JSON}, presence: [states of others]}.
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { iso, messageRecord as message, parseArgs, ulid } from './chat_schema.mjs'

const args = parseArgs(process.argv.slice(2))

let lastMs = 0
const now = () => { lastMs = Math.max(Date.now(), lastMs + 1); return lastMs } // distinct, increasing dates

const fail = (why) => { console.error(why); process.exit(2) }
const timeout = setTimeout(() => fail('timed out'), Number(args.timeout || 20000))

const doc = new Y.Doc()
const provider = new WebsocketProvider(args.url, args.room, doc, {
  WebSocketPolyfill: WebSocket,
  params: args.token ? { token: args.token } : {},
  disableBc: true
})
if (args.presence) provider.awareness.setLocalState({ user: args.presence })

await new Promise((resolve) => {
  if (provider.synced) resolve()
  provider.on('sync', (synced) => { if (synced) resolve() })
})

const root = (name) => doc.getMap(name)
const wrote = {}

if (args['create-thread']) {
  const ms = now()
  const threadId = ulid(ms)
  const rootId = ulid(ms)
  doc.transact(() => {
    if (root('meta').get('schema_version') === undefined) root('meta').set('schema_version', 2)
    root('messages').set(rootId, message(threadId, 'node', ms, 'hello from node', null))
    const thread = new Y.Map()
    thread.set('created_at', iso(ms))
    thread.set('created_by', 'node')
    thread.set('root_message_id', rootId)
    thread.set('schema_version', 2)
    root('threads').set(threadId, thread)
    const config = new Y.Map()
    config.set('name', 'from node')
    config.set('acp_config', new Y.Map())
    root('thread_configs').set(threadId, config)
    const state = new Y.Map()
    state.set('state', 'idle')
    root('thread_states').set(threadId, state)
  }, 'node')
  wrote.thread_id = threadId
  wrote.root_id = rootId
}

if (args.reply) {
  const thread = root('threads').get(args.reply)
  if (!thread) fail(`no thread ${args.reply}`)
  wrote.reply_ids = []
  for (let i = 0; i < Number(args.count || 1); i++) {
    const ms = now()
    const id = ulid(ms)
    doc.transact(() => {
      root('messages').set(id, message(args.reply, 'node', ms, `node reply ${i}`, thread.get('root_message_id')))
    }, 'node')
    wrote.reply_ids.push(id)
    await new Promise((resolve) => setTimeout(resolve, 5)) // interleave with the other peers
  }
}

if (args.edit) {
  const record = root('messages').get(args.edit)
  if (!record) fail(`no message ${args.edit}`)
  const ms = now()
  const editId = ulid(ms)
  record.set(`edit:${editId}`, { author_id: 'node', date: iso(ms), content: 'edited by node' })
  wrote.edit_id = editId
}

const expect = Number(args['expect-messages'] || 0)
while (root('messages').size < expect) await new Promise((resolve) => setTimeout(resolve, 20))
await new Promise((resolve) => setTimeout(resolve, Number(args.settle || 300)))

const records = {}
for (const name of ['meta', 'threads', 'thread_configs', 'messages', 'thread_states']) records[name] = root(name).toJSON()
const presence = []
for (const [clientId, state] of provider.awareness.getStates()) {
  if (clientId !== doc.clientID) presence.push(state)
}
clearTimeout(timeout)
process.stdout.write(JSON.stringify({ wrote, records, presence }) + '\n')
provider.destroy()
setTimeout(() => process.exit(0), 50) // let the close frame go out
