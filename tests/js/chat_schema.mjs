// What the Node peers of the tests share to write chatdoc records by SCHEMA.md: ULIDs, ISO dates, the
// message record (a plain `head` object; a streamed reply's text a Y.Text `body`), and the `--key value`
// command line they take.
import { webcrypto } from 'node:crypto'
import * as Y from 'yjs'

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'

// 48 bits of milliseconds, then 80 random bits, in Crockford base32 (26 characters).
export function ulid (ms) {
  let time = ''
  for (let i = 0, t = ms; i < 10; i++, t = Math.floor(t / 32)) time = CROCKFORD[t % 32] + time
  const random = webcrypto.getRandomValues(new Uint8Array(16))
  return time + Array.from(random, (byte) => CROCKFORD[byte & 31]).join('')
}

// Dates are ISO strings with milliseconds.
export const iso = (ms) => new Date(ms).toISOString()

// A message's head: what is fixed when it is sent, as ONE plain object (never a Y.Map, never edited).
// `body` is the text when the message is sent whole; a streamed reply's head has none.
export function messageHead (threadId, senderId, ms, replyTo, body) {
  const head = { thread_id: threadId, sender_id: senderId, date: iso(ms) }
  if (replyTo) head.reply_to_message_id = replyTo // absent on a thread's root
  if (body !== undefined) head.body = body
  return head
}

// A message sent whole: a Y.Map whose `head` holds its text; a reply points at its thread's root.
// `extra` fields (generating, acp_*, ...) are keys of their own, beside the head.
export function messageRecord (threadId, senderId, ms, content, replyTo, extra = {}) {
  return withHead(messageHead(threadId, senderId, ms, replyTo, content), extra)
}

// A reply an agent streams into: the head without a body, and the text as a Y.Text `body` that grows by
// appends. Exactly one of the two holds a message's text.
export function streamedRecord (threadId, senderId, ms, content, replyTo, extra = {}) {
  return withHead(messageHead(threadId, senderId, ms, replyTo), { ...extra, body: new Y.Text(content) })
}

function withHead (head, extra) {
  const map = new Y.Map()
  map.set('head', head)
  for (const [k, v] of Object.entries(extra)) map.set(k, v)
  return map
}

// How a reader finds a message's text: the Y.Text `body` of a streamed reply, else the head's `body`.
export function bodyText (record) {
  const body = record.get('body')
  return body instanceof Y.Text ? body.toString() : record.get('head').body
}

// `--key value` pairs into {key: value}; a `--flag` followed by another option (or nothing) is true.
export function parseArgs (argv) {
  const args = {}
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '')
    const next = argv[i + 1]
    if (next === undefined || next.startsWith('--')) args[key] = true
    else { args[key] = next; i++ }
  }
  return args
}
