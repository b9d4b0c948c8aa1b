// One measurement of the page's library (web/src/lib) in Node, for bench/jslib.py: prints one JSON line.
//
//   node bench/jslib.mjs UPDATE_FILE REPEATS
//
// Each figure beside its baseline from the same run: opening (Y.applyUpdate bare vs with the library's
// view attached), the first and a repeated read of the thread, the integrity summary, and an agent's
// streamed chunk into the big thread (a bare yjs append vs the append plus the page's reads).
import { readFileSync } from 'node:fs'
import { Y, viewOf } from '../web/src/lib/index.js'

const [file, repeatsArg] = process.argv.slice(2)
const update = readFileSync(file)
const repeats = Number(repeatsArg || 5)
const time = (fn) => { const t = performance.now(); fn(); return performance.now() - t }
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const bare = []
const viewed = []
for (let i = 0; i < repeats; i++) {
  bare.push(time(() => Y.applyUpdate(new Y.Doc(), update)))
  const doc = new Y.Doc()
  viewOf(doc)
  viewed.push(time(() => Y.applyUpdate(doc, update)))
}
const doc = new Y.Doc()
const view = viewOf(doc)
Y.applyUpdate(doc, update)
const tid = view.threadIds().reduce((a, b) => (view.messageIds(a).length >= view.messageIds(b).length ? a : b))
const firstRead = time(() => view.messages(tid))
const againRead = time(() => view.messages(tid))
const firstIntegrity = time(() => view.integrity())

// A streamed reply in the big thread: each chunk is one transaction, then what a page reads per frame.
function streamInto (target, read) {
  const root = target.getMap('threads').get(tid).get('root_message_id')
  const id = '01KEKWE4G0BENCHREPLY0000001'
  target.transact(() => {
    const m = new Y.Map()
    m.set('head', { thread_id: tid, sender_id: 'agent', date: new Date().toISOString(), reply_to_message_id: root })
    m.set('body', new Y.Text(''))
    m.set('generating', true)
    target.getMap('messages').set(id, m)
  })
  read()
  const chunks = []
  for (let i = 0; i < 200; i++) {
    chunks.push(time(() => {
      target.transact(() => { const body = target.getMap('messages').get(id).get('body'); body.insert(body.length, 'token ') })
      read()
    }))
  }
  return median(chunks)
}
const plain = new Y.Doc()
Y.applyUpdate(plain, update)
const chunkBare = streamInto(plain, () => {})
const chunkViewed = streamInto(doc, () => { view.messages(tid); view.integrity() })
process.stdout.write(JSON.stringify({
  messages_in_thread: view.messageIds(tid).length,
  open_bare_ms: median(bare),
  open_with_view_ms: median(viewed),
  first_read_ms: firstRead,
  repeated_read_ms: againRead,
  first_integrity_ms: firstIntegrity,
  chunk_bare_ms: chunkBare,
  chunk_with_reads_ms: chunkViewed
}) + '\n')
