// Reads a chatdoc document with the page's library (web/src/lib), as a browser does, and prints what it
// finds as JSON:
//
//   node read_chat.mjs FILE
//
// {threads: [{thread_id, root_message_id, name, agent, messages: [{message_id, sender_id, content,
// deleted}]}]}: threads by (created_at, thread_id), messages by (date, message_id), the content shown
// (the newest edit, else the text), quarantined records left out, exactly as the library reads them.
import { readFileSync } from 'node:fs'
import { Y, viewOf } from '../../web/src/lib/index.js'

const [file] = process.argv.slice(2)
if (!file) {
  console.error('usage: node read_chat.mjs FILE')
  process.exit(2)
}
const doc = new Y.Doc()
Y.applyUpdate(doc, readFileSync(file))
const view = viewOf(doc)
const threads = view.threadIds().map((tid) => ({
  thread_id: tid,
  root_message_id: view.thread(tid).root_message_id,
  name: view.threadConfig(tid).name,
  agent: view.isAgentThread(tid),
  messages: view.messages(tid).map((m) => ({ message_id: m.message_id, sender_id: m.sender_id, content: m.text, deleted: m.deleted }))
}))
process.stdout.write(JSON.stringify({ threads }) + '\n')
