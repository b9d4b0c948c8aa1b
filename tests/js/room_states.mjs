// The library's Room as a page uses it, driven line by line for a test: prints each connection state as a
// JSON line ({state, pending, code, reason}) and takes commands on stdin:
//
//   write TEXT   a new thread with TEXT as its root (through the library)
//   threads      prints {threads: [root texts]}
//   quit
//
//   node room_states.mjs --url ws://127.0.0.1:PORT --room R [--token T]
import { createInterface } from 'node:readline'
import WebSocket from 'ws'
import { createThread, openRoom, viewOf } from '../../web/src/lib/index.js'
import { parseArgs } from './args.mjs'

const args = parseArgs(process.argv.slice(2))
const room = openRoom({ url: args.url, room: args.room, token: args.token, WebSocketPolyfill: WebSocket })
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n')
const report = () => say({ state: room.state, pending: room.pending, code: room.code, reason: room.reason })
room.on(report)
report()

for await (const line of createInterface({ input: process.stdin })) {
  const [command, ...rest] = line.split(' ')
  if (command === 'write') {
    createThread(room.doc, { sender: 'node', text: rest.join(' ') })
  } else if (command === 'threads') {
    const view = viewOf(room.doc)
    say({ threads: view.threads().map((t) => view.message(t.root_message_id).text) })
  } else if (command === 'quit') {
    break
  } else {
    say({ error: `unknown command ${JSON.stringify(line)}` })
  }
}
room.destroy()
setTimeout(() => process.exit(0), 50)
