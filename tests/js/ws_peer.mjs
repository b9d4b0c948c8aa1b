// A browser-like peer for the server tests: the page's library (web/src/lib: `openRoom`, an unmodified
// y-websocket client, with `ws` as its WebSocket) that joins a chatdoc room, writes records through the
// library's operations, and prints what it reads.
//
//   node ws_peer.mjs --url ws://127.0.0.1:PORT --room a.chat [--token T] [--create-thread]
//        [--reply THREAD_ID --count K] [--edit MESSAGE_ID] [--expect-messages N] [--settle MS]
//        [--presence NAME]
//
// Prints one JSON line: {wrote: {...}, records: {root map -> plain JSON}, presence: [states of others]}.
import WebSocket from 'ws'
import { createThread, edit, openRoom, reply } from '../../web/src/lib/index.js'
import { parseArgs } from './args.mjs'

const args = parseArgs(process.argv.slice(2))

let lastMs = 0
const now = () => { lastMs = Math.max(Date.now(), lastMs + 1); return lastMs } // distinct, increasing dates

const fail = (why) => { console.error(why); process.exit(2) }
const timeout = setTimeout(() => fail('timed out'), Number(args.timeout || 20000))

const room = openRoom({ url: args.url, room: args.room, token: args.token, WebSocketPolyfill: WebSocket })
const { doc, provider } = room
if (args.presence) provider.awareness.setLocalState({ user: args.presence })

try {
  await room.whenLive()
} catch (refused) {
  // Refused by the server (an application close code): say so and stop, as the library does.
  clearTimeout(timeout)
  process.stdout.write(JSON.stringify({ refused: { code: refused.code, reason: refused.reason } }) + '\n')
  room.destroy()
  process.exit(0)
}

const root = (name) => doc.getMap(name)
const wrote = {}

if (args['create-thread']) {
  const { threadId, messageId } = createThread(doc, { sender: 'node', text: 'hello from node', config: { name: 'from node' }, now: now() })
  wrote.thread_id = threadId
  wrote.root_id = messageId
}

if (args.reply) {
  if (!root('threads').get(args.reply)) fail(`no thread ${args.reply}`)
  wrote.reply_ids = []
  for (let i = 0; i < Number(args.count || 1); i++) {
    wrote.reply_ids.push(reply(doc, { threadId: args.reply, sender: 'node', text: `node reply ${i}`, now: now() }))
    await new Promise((resolve) => setTimeout(resolve, 5)) // interleave with the other peers
  }
}

if (args.edit) {
  if (!root('messages').get(args.edit)) fail(`no message ${args.edit}`)
  wrote.edit_id = edit(doc, { messageId: args.edit, author: 'node', text: 'edited by node', now: now() })
}

const expect = Number(args['expect-messages'] || 0)
while (root('messages').size < expect) await new Promise((resolve) => setTimeout(resolve, 20))
await new Promise((resolve) => setTimeout(resolve, Number(args.settle || 300)))

// A write the server refused closes the connection: report it (4403 read-only, SCHEMA.md section 13).
const refused = room.state === 'refused' ? { code: room.code, reason: room.reason } : null
const records = {}
for (const name of ['meta', 'threads', 'thread_configs', 'messages', 'thread_states']) records[name] = root(name).toJSON()
const presence = []
for (const [clientId, state] of provider.awareness.getStates()) {
  if (clientId !== doc.clientID) presence.push(state)
}
clearTimeout(timeout)
process.stdout.write(JSON.stringify({ wrote, records, presence, refused }) + '\n')
room.destroy()
setTimeout(() => process.exit(0), 50) // let the close frame go out
