// Writes a person's client makes (SCHEMA.md section 4), one transaction each, with an origin naming it;
// records are addressed by id, never by date. The JavaScript twin of chatdoc/operations.py and of the
// interrupt request of chatdoc/turns.py (a browser never runs turns: the agent runner does).
//
// Every function takes the Y.Doc and an options object. `now` (ms; default Date.now()) and the ids are
// options so that the conformance vectors (tests/conformance) can replay the same writes in Python and
// JavaScript and compare the records.
import * as Y from 'yjs'
import { formatDate, newUlid, parseDate } from './ids.js'
import { ACP_KEYS, acpValueOk, HEAD, EDIT_PREFIX, MESSAGES, META, SCHEMA_VERSION, THREAD_CONFIGS, THREAD_STATES, THREADS } from './records.js'
import { viewOf } from './view.js'

export class ChatError extends Error {}

const CONFIG_KEYS = ['name', 'thread_color', 'thread_icon', 'pin']
const roots = (doc) => ({
  meta: doc.getMap(META), threads: doc.getMap(THREADS), configs: doc.getMap(THREAD_CONFIGS),
  messages: doc.getMap(MESSAGES), states: doc.getMap(THREAD_STATES)
})
const mapOf = (entries) => {
  const map = new Y.Map()
  for (const [k, v] of Object.entries(entries)) map.set(k, v)
  return map
}

// A message sent whole: its text in the head, which nobody edits later.
function messageRecord (threadId, senderId, date, text, replyTo) {
  const head = { thread_id: threadId, sender_id: senderId, date }
  if (replyTo != null) head.reply_to_message_id = replyTo // absent on a thread's root, never null
  head.body = text
  return mapOf({ [HEAD]: head })
}

/**
 * A new thread: its root message, thread record, config (with an `acp_config` map, possibly empty) and
 * state, in one transaction. `config` is a patch (see `patchConfig`); an `acp_config` with at least one key
 * (e.g. {model}) makes it an agent thread. Returns {threadId, messageId}.
 */
export function createThread (doc, { sender, text, config = null, threadId, messageId, now = Date.now() }) {
  if (config) checkPatch(config)
  const date = formatDate(now)
  threadId ??= newUlid(now)
  messageId ??= newUlid(now)
  const r = roots(doc)
  doc.transact(() => {
    if (r.meta.get('schema_version') === undefined) {
      r.meta.set('schema_version', SCHEMA_VERSION)
      r.meta.set('created_at', date)
    }
    r.messages.set(messageId, messageRecord(threadId, sender, date, text, null))
    // Every thread field follows from the root message (a repairing peer can recreate it exactly).
    r.threads.set(threadId, mapOf({ created_at: date, created_by: sender, root_message_id: messageId, schema_version: SCHEMA_VERSION }))
    r.configs.set(threadId, mapOf({ acp_config: new Y.Map(), updated_at: date, updated_by: sender }))
    r.states.set(threadId, mapOf({ state: 'idle', updated_at: date }))
    if (config) writePatch(r.configs.get(threadId), config, sender, now)
  }, 'chatdoc.create_thread')
  return { threadId, messageId }
}

/** A reply in a thread: it points at the thread's root (never at the previous reply). Returns its id. */
export function reply (doc, { threadId, sender, text, messageId, now = Date.now() }) {
  const thread = viewOf(doc).thread(threadId)
  if (!thread) throw new ChatError(`no thread ${threadId}`)
  messageId ??= newUlid(now)
  doc.transact(() => {
    roots(doc).messages.set(messageId, messageRecord(threadId, sender, formatDate(now), text, thread.root_message_id))
  }, 'chatdoc.reply')
  return messageId
}

/** A new version of a message's text under its own `edit:<ULID>` key (concurrent edits all survive). */
export function edit (doc, { messageId, author, text, editId, now = Date.now() }) {
  const record = messageMap(doc, messageId)
  editId ??= newUlid(now)
  doc.transact(() => record.set(EDIT_PREFIX + editId, { author_id: author, date: formatDate(now), content: text }), 'chatdoc.edit')
  return editId
}

/** Soft delete: a tombstone (who, when); the text stays. */
export function softDelete (doc, { messageId, by, now = Date.now() }) {
  const record = messageMap(doc, messageId)
  doc.transact(() => {
    record.set('deleted_at', formatDate(now))
    record.set('deleted_by', by)
  }, 'chatdoc.delete')
}

/**
 * A new thread holding copies (new ids, same sender and date, the shown text as the head's body, no edits)
 * of the thread's messages up to `atMessageId`, deleted ones left out. The config is copied except the
 * agent's `sessionId` (the fork starts its own session). Returns {threadId, ids: {old id: new id}}.
 */
export function fork (doc, { threadId, atMessageId, by, newThreadId, ids = {}, now = Date.now() }) {
  const view = viewOf(doc)
  const order = view.messageIds(threadId)
  const at = order.indexOf(atMessageId)
  if (at < 0) throw new ChatError(`message ${atMessageId} is not in thread ${threadId}`)
  const copies = view.messages(threadId).slice(0, at + 1).filter((m) => !m.deleted)
  if (!copies.length) throw new ChatError(`nothing to fork in thread ${threadId}`)
  const config = view.threadConfig(threadId)
  newThreadId ??= newUlid(now)
  const mapping = Object.fromEntries(copies.map((m) => [m.message_id, ids[m.message_id] ?? newUlid(parseDate(m.date))]))
  const root = copies[0]
  // As chatdoc reads it: the known keys with good values; not the session (the fork starts its own).
  const acp = {}
  for (const k of ACP_KEYS) {
    const v = config.acp_config?.[k]
    if (k !== 'sessionId' && v != null && acpValueOk(k, v)) acp[k] = v
  }
  const r = roots(doc)
  doc.transact(() => {
    for (const m of copies) {
      r.messages.set(mapping[m.message_id], messageRecord(newThreadId, m.sender_id, m.date, m.text, m === root ? null : mapping[root.message_id]))
    }
    r.threads.set(newThreadId, mapOf({ created_at: root.date, created_by: root.sender_id, root_message_id: mapping[root.message_id], schema_version: SCHEMA_VERSION }))
    const record = mapOf({
      acp_config: mapOf(acp), forked_from_thread_id: threadId, forked_from_message_id: atMessageId, updated_at: formatDate(now), updated_by: by
    })
    r.configs.set(newThreadId, record)
    r.states.set(newThreadId, mapOf({ state: 'idle', updated_at: formatDate(now) }))
    // Like chatdoc's fork: the settings as a patch (a null name writes nothing, pin is always written).
    const settings = { name: config.name, thread_color: config.thread_color, thread_icon: config.thread_icon, pin: config.pin }
    writePatch(record, settings, by, now)
  }, 'chatdoc.fork')
  return { threadId: newThreadId, ids: mapping }
}

/**
 * The one way thread settings change: only the keys `patch` names are written (`null` clears one), then
 * `updated_at` / `updated_by`. `patch.acp_config` is patched key by key too, so naming `model` never
 * touches `sessionId` (the CoCalc bug that wiped Codex settings came from writing unchanged keys).
 */
export function patchConfig (doc, { threadId, patch, by, now = Date.now() }) {
  checkPatch(patch)
  if (!viewOf(doc).thread(threadId)) throw new ChatError(`no thread ${threadId}`)
  const configs = roots(doc).configs
  doc.transact(() => {
    let record = configs.get(threadId)
    if (!(record instanceof Y.Map)) {
      // Absent (a damaged document): create it. Every thread is created with its config, so this is rare.
      configs.set(threadId, (record = mapOf({ acp_config: new Y.Map() })))
    }
    writePatch(record, patch, by, now)
  }, 'chatdoc.patch_thread_config')
}

function writePatch (record, patch, by, now) {
  for (const k of CONFIG_KEYS) if (k in patch) setOrClear(record, k, patch[k])
  if (patch.acp_config !== undefined) {
    let acp = record.get('acp_config')
    if (!(acp instanceof Y.Map)) {
      // A plain object here is a misbehaving peer's write: keep its keys, the patch names only some.
      const kept = acp !== null && typeof acp === 'object' && !(acp instanceof Y.AbstractType) ? acp : {}
      record.set('acp_config', (acp = mapOf(kept)))
    }
    for (const [k, v] of Object.entries(patch.acp_config)) setOrClear(acp, k, v)
  }
  record.set('updated_at', formatDate(now))
  record.set('updated_by', by)
}

const PATCH_TYPES = { name: 'string', thread_color: 'string', thread_icon: 'string', pin: 'boolean' }

// A bad patch is refused before anything is written (Python: msgspec.convert of ThreadConfigPatch).
function checkPatch (patch) {
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) throw new ChatError(`config patch: '${k}' is undefined (leave the key out to keep its value)`)
    if (k === 'acp_config') {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ChatError('config patch: acp_config must be an object')
      for (const [key, item] of Object.entries(v)) {
        // A known key takes its type; an unknown one (kept, ignored by chatdoc) a string or a boolean.
        const ok = item === null || (ACP_KEYS.includes(key) ? acpValueOk(key, item) : typeof item === 'string' || typeof item === 'boolean')
        if (!ok) throw new ChatError(`config patch: acp_config.${key} has the wrong type (${JSON.stringify(item)})`)
      }
    } else if (!(k in PATCH_TYPES)) {
      throw new ChatError(`config patch: unknown field '${k}'`)
    } else if (v !== null ? typeof v !== PATCH_TYPES[k] : k === 'pin') {
      throw new ChatError(`config patch: '${k}' must be a ${PATCH_TYPES[k]}`)
    }
  }
}

/**
 * Ask whoever runs an agent turn to stop it (SCHEMA.md section 8): stamps `acp_interrupt_requested_at` and
 * `_by` on the generating reply; the first request stands. Returns false, writing nothing, when the reply
 * is not generating any more.
 */
export function requestInterrupt (doc, { messageId, by, now = Date.now() }) {
  const record = messageMap(doc, messageId)
  let asked = false
  doc.transact(() => {
    if (record.get('generating') !== true || record.get('acp_interrupted') === true) return
    asked = true
    if (record.get('acp_interrupt_requested_at') == null) {
      record.set('acp_interrupt_requested_at', formatDate(now))
      record.set('acp_interrupt_requested_by', by)
    }
  }, 'chatdoc.turn.request_interrupt')
  return asked
}

function messageMap (doc, messageId) {
  const record = roots(doc).messages.get(messageId)
  if (!(record instanceof Y.Map)) throw new ChatError(`no message ${messageId}`)
  return record
}

function setOrClear (record, key, value) {
  if (value === null) { if (record.has(key)) record.delete(key) } else if (record.get(key) !== value) record.set(key, value)
}
