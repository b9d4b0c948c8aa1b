// What a record is (SCHEMA.md section 3) and what is wrong with a stored one (section 5): the JavaScript
// twin of chatdoc/records.py. Every check returns a reason instead of throwing: a damaged record is
// reported and left out of reads, never a crash.
import * as Y from 'yjs'
import { isDate, isUlid } from './ids.js'

export const SCHEMA_VERSION = 2
export const META = 'meta'
export const THREADS = 'threads'
export const THREAD_CONFIGS = 'thread_configs'
export const MESSAGES = 'messages'
export const THREAD_STATES = 'thread_states'
export const RECORD_ROOTS = [THREADS, THREAD_CONFIGS, MESSAGES, THREAD_STATES]

export const HEAD = 'head'
export const EDIT_PREFIX = 'edit:'
const HEAD_FIELDS = new Set(['thread_id', 'sender_id', 'date', 'reply_to_message_id', 'body'])
const OUTSIDE_HEAD = ' (outside head)'
const CONFIG_ONLY = new Set(['name', 'thread_color', 'thread_icon', 'pin', 'acp_config'])
export const THREAD_STATE_NAMES = ['idle', 'queued', 'running', 'interrupted', 'error', 'complete']
export const TERMINAL_STATES = new Set(['idle', 'interrupted', 'error', 'complete'])
const INTERRUPT_REASONS = ['interrupt', 'server_restart', 'error']

export const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Y.AbstractType)

// Field types as checks: each returns a reason, or null when the value may be stored there. `opt`
// accepts null too, as the Python types `X | None` do.
const str = (v) => (typeof v === 'string' ? null : 'expected a string')
const bool = (v) => (typeof v === 'boolean' ? null : 'expected a boolean')
const int = (v) => (typeof v === 'number' && Number.isInteger(v) ? null : 'expected an integer')
const nonNegative = (v) => int(v) ?? (v >= 0 ? null : 'expected an integer >= 0')
const ulidType = (v) => (isUlid(v) ? null : 'expected a ULID')
const dateType = (v) => (isDate(v) ? null : 'expected a date like 2026-01-10T12:00:00.000Z')
const oneOf = (names) => (v) => (names.includes(v) ? null : `expected one of ${names.join(', ')}`)
const opt = (check) => (v) => (v === null ? null : check(v))
const object = (fields, { unknown, required = [] }) => (v) => {
  if (!isPlainObject(v)) return 'expected an object'
  for (const k of required) if (!(k in v)) return `missing required field '${k}'`
  for (const [k, item] of Object.entries(v)) {
    const check = fields[k]
    if (check === undefined) { if (!unknown) return `unknown field '${k}'`; continue }
    const why = check(item)
    if (why) return `'${k}': ${why}`
  }
  return null
}
const USAGE = object({
  input_tokens: nonNegative, output_tokens: nonNegative, cached_input_tokens: nonNegative,
  reasoning_output_tokens: nonNegative, total_tokens: nonNegative, model_context_window: opt(nonNegative)
}, { unknown: true })
const ACP_TYPES = Object.fromEntries(['sessionId', 'model', 'reasoning', 'workingDirectory', 'envHome', 'envPath',
  'sessionMode', 'codexPathOverride', 'agent'].map((k) => [k, opt(str)]).concat([['allowWrite', opt(bool)]]))
// The agent config keys chatdoc knows (others are kept in the document and ignored).
export const ACP_KEYS = Object.keys(ACP_TYPES)
/** Whether `value` may be stored under the known `acp_config` key `key`. */
export const acpValueOk = (key, value) => ACP_TYPES[key]?.(value) === null
const EDIT = object({ author_id: str, date: dateType, content: str }, { unknown: false, required: ['author_id', 'date', 'content'] })

// The fields each root's records may store (a record's own id is its key, never a field).
const FIELDS = {
  [THREADS]: { created_at: dateType, created_by: str, root_message_id: ulidType, schema_version: int },
  [THREAD_CONFIGS]: {
    name: opt(str), thread_color: opt(str), thread_icon: opt(str), pin: bool, acp_config: acpConfigProblem,
    forked_from_thread_id: opt(ulidType), forked_from_message_id: opt(ulidType), updated_at: opt(dateType), updated_by: opt(str)
  },
  [THREAD_STATES]: { state: oneOf(THREAD_STATE_NAMES), active_message_id: opt(ulidType), error: opt(str), updated_at: opt(dateType) },
  [MESSAGES]: {
    thread_id: ulidType, sender_id: str, date: dateType, body: str, reply_to_message_id: opt(ulidType),
    generating: bool, acp_thread_id: opt(str), acp_usage: opt(USAGE), acp_interrupted: bool,
    acp_interrupted_reason: opt(oneOf(INTERRUPT_REASONS)), acp_interrupted_text: opt(str),
    acp_prompt_message_id: opt(ulidType), acp_claimed_by: opt(str), acp_lease_until: opt(dateType),
    acp_interrupt_requested_at: opt(dateType), acp_interrupt_requested_by: opt(str), deleted_at: opt(dateType), deleted_by: opt(str)
  }
}
// Without one of these a record cannot be placed: it is quarantined (kept, counted, left out of reads).
export const REQUIRED = {
  [THREADS]: ['created_at', 'created_by', 'root_message_id'],
  [THREAD_CONFIGS]: [],
  [THREAD_STATES]: [],
  [MESSAGES]: ['thread_id', 'sender_id', 'date', 'body']
}

function acpConfigProblem (value) {
  if (!(value instanceof Y.Map)) return "'acp_config' must be a Y.Map"
  for (const [k, v] of value.entries()) {
    const check = ACP_TYPES[k]
    const why = check && check(plain(v))
    if (why) return `'acp_config.${k}': ${why}`
  }
  return null
}

// A stored value as the checks see it: shared types other than a Y.Text or Y.Map of a known field are
// compared as their JSON, which no plain-value check accepts.
const plain = (v) => (v instanceof Y.AbstractType ? v.toJSON() : v)

/**
 * A message map's entries as the read model's fields (chatdoc.records.flatten_message): the head's fields
 * beside the others. What is stored where the schema does not put it keeps a name of its own, so it is
 * reported and never read as the field it names.
 */
export function flattenMessage (record) {
  const flat = {}
  const head = record.get(HEAD)
  if (isPlainObject(head)) {
    for (const [k, v] of Object.entries(head)) flat[HEAD_FIELDS.has(k) ? k : `${HEAD}.${k}`] = v
  } else if (record.has(HEAD)) {
    flat[HEAD] = head
  }
  for (const [k, v] of record.entries()) {
    if (k === HEAD) continue
    let key = k
    if ((HEAD_FIELDS.has(k) && k !== 'body') || (k === 'body' && !(v instanceof Y.Text))) {
      key = k + OUTSIDE_HEAD
    } else if (k === 'body' && 'body' in flat) {
      flat[`${HEAD}.body`] = flat.body // the text stored twice: the Y.Text is read
    }
    flat[key] = v
  }
  return flat
}

/** The stored fields of one record, as read: a message flattened, other records their map's entries. */
export function storedFields (root, record) {
  if (!(record instanceof Y.Map)) return null
  return root === MESSAGES ? flattenMessage(record) : Object.fromEntries(record.entries())
}

/**
 * What is wrong with one stored record: {field: reason}; empty when it is well formed. `fields` is null when
 * the stored value is not a map at all. Mirrors chatdoc.view._problems.
 */
export function recordProblems (root, id, fields) {
  const problems = {}
  if (!isUlid(id)) problems['<key>'] = `record key ${JSON.stringify(id)} is not a ULID`
  if (fields === null) {
    problems['<record>'] = 'record is not a Y.Map'
    return problems
  }
  const types = FIELDS[root]
  for (const [name, value] of Object.entries(fields)) {
    const why = Object.hasOwn(types, name) ? valueProblem(root, name, value, types[name]) : layoutProblem(root, name, value)
    if (why) problems[name] = why
  }
  for (const name of REQUIRED[root]) if (!(name in fields)) problems[name] = `required field '${name}' is missing`
  return problems
}

function valueProblem (root, name, value, check) {
  if (value instanceof Y.Text) return root === MESSAGES && name === 'body' ? null : `'${name}' must be a plain value`
  if (name === 'acp_config') return check(value)
  const why = check(plain(value))
  return why && `'${name}': ${why}`
}

function layoutProblem (root, name, value) {
  if (root !== MESSAGES) return `unknown field '${name}'`
  if (name.startsWith(EDIT_PREFIX)) {
    if (!isUlid(name.slice(EDIT_PREFIX.length))) return `'${name}': the edit id is not a ULID`
    const why = EDIT(plain(value))
    return why && `'${name}': ${why}`
  }
  if (CONFIG_ONLY.has(name)) return `thread setting '${name}' written onto a message`
  if (name === HEAD) return "'head' must be a plain object (not a Y.Map or a scalar)"
  if (name === `${HEAD}.body`) return 'the body is stored twice: in the head and as a Y.Text'
  if (name.startsWith(`${HEAD}.`)) return `unknown field '${name.slice(HEAD.length + 1)}' in the head`
  if (name.endsWith(OUTSIDE_HEAD)) return `'${name.slice(0, -OUTSIDE_HEAD.length)}' belongs in the head`
  return `unknown field '${name}'`
}

/** Whether these problems quarantine the record (a bad key, not a map, or a bad required field). */
export const quarantines = (root, problems) =>
  '<key>' in problems || '<record>' in problems || REQUIRED[root].some((name) => name in problems)
