// A browser-like peer for the agent tests: unmodified `yjs` + `y-websocket` (from tests/js/node_modules)
// that joins a room, waits until a thread's agent turn is streaming, then writes what a person's browser
// would, following SCHEMA.md alone: a patch of the thread's name and colour, and optionally an interrupt
// request on the streaming reply followed at once by a new prompt (sent whole: its text in its head).
//
//   node --input-type=module -e "$(cat browser_peer.mjs)" -- --url ws://127.0.0.1:PORT --room R --token T
//        --thread THREAD_ID [--min-chars N] [--name NAME --color COLOR] [--interrupt --prompt TEXT]
//
// (run with tests/js as the working directory, so that the bare imports resolve there)
// Prints one JSON line: {streaming_reply, chars_seen, prompt_id}.
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
// Relative to this file, and equally to tests/js when run there with -e.
import { iso, messageRecord, parseArgs, ulid } from '../js/chat_schema.mjs'

const args = parseArgs(process.argv.slice(process.argv.indexOf('--') + 1))
const fail = (why) => { console.error(why); process.exit(2) }
const timeout = setTimeout(() => fail('timed out'), Number(args.timeout || 20000))

const doc = new Y.Doc()
const provider = new WebsocketProvider(args.url, args.room, doc, {
  WebSocketPolyfill: WebSocket, params: args.token ? { token: args.token } : {}, disableBc: true
})
await new Promise((resolve) => provider.on('sync', (synced) => { if (synced) resolve() }))

const messages = doc.getMap('messages')
const threadId = args.thread
// The streaming reply: the thread state's active reply, while it is generating with enough text (a
// streamed reply's text is its Y.Text `body`; its head holds none).
function streaming () {
  const state = doc.getMap('thread_states').get(threadId)
  const active = state && state.get('active_message_id')
  const reply = active && messages.get(active)
  if (!reply || reply.get('generating') !== true) return null
  return reply.get('body').length >= Number(args['min-chars'] || 1) ? active : null
}
while (!streaming()) await new Promise((resolve) => setTimeout(resolve, 10))
const replyId = streaming()
const out = { streaming_reply: replyId, chars_seen: messages.get(replyId).get('body').length }

doc.transact(() => {
  const config = doc.getMap('thread_configs').get(threadId)
  if (args.name) config.set('name', args.name) // a patch: only the fields the person changed
  if (args.color) config.set('thread_color', args.color)
  config.set('updated_at', iso(Date.now()))
  config.set('updated_by', 'browser')
}, 'browser')

if (args.interrupt) {
  doc.transact(() => {
    const reply = messages.get(replyId)
    reply.set('acp_interrupt_requested_at', iso(Date.now()))
    reply.set('acp_interrupt_requested_by', 'browser')
  }, 'browser')
}
if (args.prompt) {
  const ms = Date.now() + 1
  const id = ulid(ms)
  const rootId = doc.getMap('threads').get(threadId).get('root_message_id')
  doc.transact(() => messages.set(id, messageRecord(threadId, 'browser', ms, args.prompt, rootId)), 'browser')
  out.prompt_id = id
}

await new Promise((resolve) => setTimeout(resolve, 300)) // let the updates reach the server
clearTimeout(timeout)
process.stdout.write(JSON.stringify(out) + '\n')
provider.destroy()
setTimeout(() => process.exit(0), 50)
