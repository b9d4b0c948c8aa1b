// Reads a chatdoc document with the yjs library, as a browser would, and prints what it finds as JSON:
//
//   node read_chat.mjs FILE
//
// {threads: [{thread_id, root_message_id, name, agent, messages: [{message_id, sender_id, content,
// deleted}]}]}, threads by (created_at, thread_id), messages by (date, message_id). The shown content is
// the newest `edit:<ULID>` entry by (date, edit id), else the body: a streamed reply's Y.Text `body`, or
// the text in the message's `head`; a thread is an agent thread when its config's acp_config map is not
// empty. A message's thread, sender and date are read from its head; one without a plain-object head
// cannot be placed in a thread and is left out, as chatdoc quarantines it.
import { readFileSync } from 'node:fs'
import * as Y from 'yjs'
import { bodyText } from './chat_schema.mjs'

const EDIT = 'edit:'
const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0)
const byKeys = (...keys) => (a, b) => keys.reduce((c, k) => c || compare(a[k], b[k]), 0)

function content (record) {
  const edits = []
  record.forEach((value, key) => {
    if (key.startsWith(EDIT) && value && typeof value === 'object') edits.push({ id: key.slice(EDIT.length), ...value })
  })
  edits.sort(byKeys('date', 'id'))
  return edits.length ? edits[edits.length - 1].content : bodyText(record)
}

// The head is a plain object: a Y.Map (a shared type), an array or a scalar in its place is damage.
const isPlainObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Y.AbstractType)

function readChat (doc) {
  const messages = []
  doc.getMap('messages').forEach((record, id) => {
    const head = record instanceof Y.Map ? record.get('head') : undefined
    if (!isPlainObject(head)) return
    messages.push({
      message_id: id,
      thread_id: head.thread_id,
      date: head.date,
      sender_id: head.sender_id,
      content: content(record),
      deleted: record.get('deleted_at') != null,
    })
  })
  messages.sort(byKeys('date', 'message_id'))
  const configs = doc.getMap('thread_configs')
  const threads = []
  doc.getMap('threads').forEach((record, id) => {
    if (!(record instanceof Y.Map)) return
    const config = configs.get(id)
    const acp = config instanceof Y.Map ? config.get('acp_config') : undefined
    threads.push({
      thread_id: id,
      created_at: record.get('created_at'),
      root_message_id: record.get('root_message_id'),
      name: config instanceof Y.Map ? config.get('name') ?? null : null,
      agent: acp instanceof Y.Map && acp.size > 0,
      messages: messages.filter((m) => m.thread_id === id).map(({ message_id, sender_id, content, deleted }) => ({ message_id, sender_id, content, deleted })),
    })
  })
  threads.sort(byKeys('created_at', 'thread_id'))
  return { threads: threads.map(({ created_at, ...t }) => t) }
}

const [file] = process.argv.slice(2)
if (!file) {
  console.error('usage: node read_chat.mjs FILE')
  process.exit(2)
}
const doc = new Y.Doc()
Y.applyUpdate(doc, readFileSync(file))
process.stdout.write(JSON.stringify(readChat(doc)) + '\n')
