// A browser-like peer for the agent tests: the page's library (web/src/lib; y-websocket with `ws` from
// tests/js/node_modules) that joins a room, waits until a thread's agent turn is streaming, then writes
// what a person's page does, through the library: a patch of the thread's name and colour, and optionally
// an interrupt request on the streaming reply followed at once by a new prompt.
//
//   node --input-type=module -e "$(cat browser_peer.mjs)" -- --url ws://127.0.0.1:PORT --room R --token T
//        --thread THREAD_ID [--min-chars N] [--name NAME --color COLOR] [--interrupt --prompt TEXT]
//
// (run with tests/js as the working directory, so that `ws` resolves there)
// Prints one JSON line: {streaming_reply, chars_seen, prompt_id}.
import WebSocket from 'ws'
// Relative to this file, and equally to tests/js when run there with -e.
import { openRoom, patchConfig, reply, requestInterrupt } from '../../web/src/lib/index.js'
import { parseArgs } from '../js/args.mjs'

const args = parseArgs(process.argv.slice(process.argv.indexOf('--') + 1))
const fail = (why) => { console.error(why); process.exit(2) }
const timeout = setTimeout(() => fail('timed out'), Number(args.timeout || 20000))

const room = openRoom({ url: args.url, room: args.room, token: args.token, WebSocketPolyfill: WebSocket })
const doc = room.doc
await room.whenLive()

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

// A patch: only the fields the person changed.
const patch = {}
if (args.name) patch.name = args.name
if (args.color) patch.thread_color = args.color
patchConfig(doc, { threadId, patch, by: 'browser' })

if (args.interrupt) requestInterrupt(doc, { messageId: replyId, by: 'browser' })
if (args.prompt) out.prompt_id = reply(doc, { threadId, sender: 'browser', text: args.prompt, now: Date.now() + 1 })

await new Promise((resolve) => setTimeout(resolve, 300)) // let the updates reach the server
clearTimeout(timeout)
process.stdout.write(JSON.stringify(out) + '\n')
room.destroy()
setTimeout(() => process.exit(0), 50)
