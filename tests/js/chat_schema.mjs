// What the Node peers of the tests share to write chatdoc records by SCHEMA.md: ULIDs, ISO dates, the
// message record, and the `--key value` command line they take.
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

// A message record: a Y.Map whose body is a Y.Text; a reply points at its thread's root.
export function messageRecord (threadId, senderId, ms, content, replyTo, extra = {}) {
  const record = new Y.Map()
  record.set('thread_id', threadId)
  record.set('sender_id', senderId)
  record.set('date', iso(ms))
  record.set('body', new Y.Text(content))
  if (replyTo) record.set('reply_to_message_id', replyTo)
  for (const [k, v] of Object.entries(extra)) record.set(k, v)
  return record
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
