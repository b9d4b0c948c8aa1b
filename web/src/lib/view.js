// Typed reads of a chat document, for a page: threads in order, a thread's messages in order, its config
// and state, whether it is an agent thread, and the integrity summary (SCHEMA.md section 5). The JavaScript
// twin of chatdoc/view.py + the read side of chatdoc/document.py + chatdoc/integrity.py (checks only: a
// browser does not repair).
//
// Each record is validated once, when a transaction touches it (a deep observer names the record ids), so
// an update costs what it touched; orders and the integrity summary are recomputed lazily on the next read.
// Quarantined records are left out of every read and never throw.
import * as Y from 'yjs'
import {
  EDIT_PREFIX, isPlainObject, MESSAGES, RECORD_ROOTS, TERMINAL_STATES, THREAD_CONFIGS, THREAD_STATES, THREADS,
  quarantines, recordProblems, storedFields
} from './records.js'

export const COUNTERS = {
  orphan_messages: 'chat.integrity.orphan_messages',
  multi_root_per_thread: 'chat.integrity.multi_root_per_thread',
  missing_thread_config: 'chat.integrity.missing_thread_config',
  duplicate_date_rows: 'chat.integrity.duplicate_date_rows',
  invalid_reply_targets: 'chat.integrity.invalid_reply_targets',
  missing_root_message: 'chat.integrity.missing_root_message',
  invalid_records: 'chat.integrity.invalid_records',
  finalize_mismatch: 'chat.acp.finalize_mismatch'
}
const DIAGNOSTICS = new Set([COUNTERS.duplicate_date_rows])
// What the per-thread checks read of a message (see `_checkThread`).
const CHECKED_FIELDS = ['thread_id', 'date', 'sender_id', 'reply_to_message_id', 'generating']

const STRAY = '<list items>'

// How many list items sit in a root map (yjs keeps them in the map's list of items without a key).
function strayItems (map) {
  let count = 0
  for (let item = map._start; item !== null; item = item.right) if (!item.deleted) count += item.length
  return count
}

const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0)
const views = new WeakMap()

/** The one view of `doc` (made on first use, kept current by its observers). */
export function viewOf (doc) {
  let view = views.get(doc)
  if (view === undefined) views.set(doc, (view = new ChatView(doc)))
  return view
}

export class ChatView {
  constructor (doc) {
    this.doc = doc
    this.roots = Object.fromEntries(RECORD_ROOTS.map((name) => [name, doc.getMap(name)]))
    // Per root: id -> {fields (the good ones), problems, quarantined}. Rebuilt per touched record.
    this.rows = Object.fromEntries(RECORD_ROOTS.map((name) => [name, new Map()]))
    this._cache = new Map() // whole-document reads (thread order, the integrity summary): dropped on any change
    // Per thread: its message ids (a Set), their order (kept until a member joins, leaves or moves) and its
    // checks (kept until a record of the thread changes), so an agent streaming into a 10,000-message
    // thread costs one record's validation and one thread's re-check, not the document's.
    this._members = new Map()
    this._orders = new Map()
    this._checks = new Map()
    // List items (Y.Array or Y.Text content) a peer wrote straight into a record root, which is a map: no
    // reader sees them; they are counted as the root's own problem, `root:<list items>`, as chatdoc does.
    this._stray = Object.fromEntries(RECORD_ROOTS.map((name) => [name, strayItems(this.roots[name])]))
    for (const name of RECORD_ROOTS) {
      this.roots[name].forEach((_, id) => this._index(name, id))
      this.roots[name].observeDeep((events) => this._changed(name, events))
    }
  }

  _changed (root, events) {
    const ids = new Set()
    for (const event of events) {
      if (event.target === this.roots[root]) for (const key of event.keysChanged) ids.add(key)
      else ids.add(event.path[0])
    }
    for (const id of ids) {
      if (id === null) this._stray[root] = strayItems(this.roots[root]) // a list item: it has no key
      else this._index(root, id)
    }
    this._cache.clear()
  }

  _index (root, id) {
    const rows = this.rows[root]
    const before = rows.get(id)
    let row
    if (this.roots[root].has(id)) {
      const fields = storedFields(root, this.roots[root].get(id))
      const problems = recordProblems(root, id, fields)
      const bad = Object.keys(problems).length > 0
      const good = fields && bad ? Object.fromEntries(Object.entries(fields).filter(([k]) => !(k in problems))) : fields
      row = { id, fields: good, problems: bad ? problems : null, quarantined: bad && quarantines(root, problems), read: null }
      rows.set(id, row)
    } else {
      rows.delete(id)
    }
    if (root !== MESSAGES) {
      this._checks.delete(id) // a thread's record, config or state: that thread's checks
      return
    }
    const was = before && !before.quarantined ? before.fields : null
    const now = row && !row.quarantined ? row.fields : null
    // A streamed chunk, an edit or a tombstone changes nothing a thread check reads: keep the checks.
    if (!(was && now && CHECKED_FIELDS.every((k) => was[k] === now[k]))) {
      if (was) this._checks.delete(was.thread_id)
      if (now) this._checks.delete(now.thread_id)
    }
    if (was && now && was.thread_id === now.thread_id && was.date === now.date) return // same place in the same thread
    if (was) {
      this._members.get(was.thread_id)?.delete(id)
      this._orders.delete(was.thread_id)
    }
    if (now) {
      let members = this._members.get(now.thread_id)
      if (!members) this._members.set(now.thread_id, (members = new Set()))
      members.add(id)
      this._orders.delete(now.thread_id)
    }
  }

  _cached (key, compute) {
    if (!this._cache.has(key)) this._cache.set(key, compute())
    return this._cache.get(key)
  }

  _good (root, id) {
    const row = this.rows[root].get(id)
    return row && !row.quarantined ? row.fields : undefined
  }

  // -- reads -----------------------------------------------------------------------------------------

  /** Thread ids by (created_at, thread_id); quarantined thread records are left out. */
  threadIds () {
    return this._cached('threads', () => [...this.rows[THREADS].values()]
      .filter((r) => !r.quarantined)
      .sort((a, b) => cmp(a.fields.created_at, b.fields.created_at) || cmp(a.id, b.id))
      .map((r) => r.id))
  }

  /** {thread_id, created_at, created_by, root_message_id, schema_version} or null. */
  thread (threadId) {
    const f = this._good(THREADS, threadId)
    return f ? { thread_id: threadId, schema_version: 2, ...f } : null
  }

  /** Threads in order, each with its config, state and whether it is an agent thread (one call for a list). */
  threads () {
    return this.threadIds().map((id) => ({ ...this.thread(id), config: this.threadConfig(id), state: this.threadState(id), agent: this.isAgentThread(id) }))
  }

  // A thread's (non-quarantined) message ids by (date, id), kept until its membership or a date changes.
  _order (threadId) {
    let order = this._orders.get(threadId)
    if (order === undefined) {
      const rows = this.rows[MESSAGES]
      const keyed = [...(this._members.get(threadId) ?? [])].map((id) => [rows.get(id).fields.date, id])
      keyed.sort((a, b) => cmp(a[0], b[0]) || cmp(a[1], b[1]))
      order = keyed.map(([, id]) => id)
      this._orders.set(threadId, order)
    }
    return order
  }

  /** Message ids of a thread by (date, message_id). */
  messageIds (threadId) {
    return [...this._order(threadId)]
  }

  /** A thread's messages in order, read (see `message`). */
  messages (threadId) {
    const rows = this.rows[MESSAGES]
    return this._order(threadId).map((id) => this._read(rows.get(id)))
  }

  /** One message, read: null when absent or quarantined. */
  message (messageId) {
    const row = this.rows[MESSAGES].get(messageId)
    return row && !row.quarantined ? this._read(row) : null
  }

  // A message as shown: `text` is the newest edit's content, else its text; `body` the first version.
  // Kept on its row until the record changes (a new row is made then): reads are shared, never mutate them.
  _read (row) {
    if (row.read === null) row.read = Object.freeze(this._readFields(row))
    return row.read
  }

  _readFields (row) {
    const f = row.fields
    const body = f.body instanceof Y.Text ? f.body.toString() : f.body
    const history = []
    for (const [k, v] of Object.entries(f)) if (k.startsWith(EDIT_PREFIX)) history.push({ edit_id: k.slice(EDIT_PREFIX.length), ...v })
    history.sort((a, b) => cmp(a.date, b.date) || cmp(a.edit_id, b.edit_id))
    const message = {
      message_id: row.id,
      thread_id: f.thread_id,
      sender_id: f.sender_id,
      date: f.date,
      reply_to_message_id: f.reply_to_message_id ?? null,
      body,
      text: history.length ? history[history.length - 1].content : body,
      history,
      edited: history.length > 0,
      deleted: f.deleted_at != null,
      generating: f.generating === true,
      acp_interrupted: f.acp_interrupted === true,
      streamed: f.body instanceof Y.Text
    }
    for (const [k, v] of Object.entries(f)) if (!(k in message) && !k.startsWith(EDIT_PREFIX) && k !== 'body') message[k] = v ?? null
    return message
  }

  /** The thread's config with defaults; `acp_config` a plain object of its keys. */
  threadConfig (threadId) {
    const f = this._good(THREAD_CONFIGS, threadId) ?? {}
    const acp = this.roots[THREAD_CONFIGS].get(threadId)?.get?.('acp_config')
    return {
      thread_id: threadId,
      name: f.name ?? null,
      thread_color: f.thread_color ?? null,
      thread_icon: f.thread_icon ?? null,
      pin: f.pin === true,
      acp_config: acp instanceof Y.Map ? acp.toJSON() : isPlainObject(acp) ? { ...acp } : null, // a plain one is a bad peer's write, still read
      forked_from_thread_id: f.forked_from_thread_id ?? null,
      forked_from_message_id: f.forked_from_message_id ?? null,
      updated_at: f.updated_at ?? null,
      updated_by: f.updated_by ?? null
    }
  }

  /** {state (default idle), active_message_id, error, updated_at}. */
  threadState (threadId) {
    const f = this._good(THREAD_STATES, threadId) ?? {}
    return { thread_id: threadId, state: f.state ?? 'idle', active_message_id: f.active_message_id ?? null, error: f.error ?? null, updated_at: f.updated_at ?? null }
  }

  /**
   * An agent thread exactly when its config's `acp_config` holds at least one key (SCHEMA.md 3.2): never
   * inferred from who wrote messages. Read from the stored value, as chatdoc does: one bad key must not
   * turn an agent thread into a people thread.
   */
  isAgentThread (threadId) {
    const row = this.rows[THREAD_CONFIGS].get(threadId)
    if (!row || row.quarantined) return false
    const acp = this.roots[THREAD_CONFIGS].get(threadId).get('acp_config')
    return acp instanceof Y.Map ? acp.size > 0 : isPlainObject(acp) && Object.keys(acp).length > 0
  }

  // -- integrity -------------------------------------------------------------------------------------

  /**
   * The integrity summary: {clean, violations, counts: {counter: n}, ids: {counter: [ids]}, quarantined:
   * ['root:id'], problems: {'root:id': {field: reason}}}. Same counters and ids as chatdoc's full check.
   */
  integrity () {
    return this._cached('integrity', () => this._check())
  }

  _check () {
    const found = Object.fromEntries(Object.values(COUNTERS).map((name) => [name, []]))
    const problems = {}
    const quarantined = []
    for (const root of RECORD_ROOTS) {
      for (const row of this.rows[root].values()) {
        if (!row.problems) continue
        problems[`${root}:${row.id}`] = row.problems
        found[COUNTERS.invalid_records].push(`${root}:${row.id}`)
        if (row.quarantined) quarantined.push(`${root}:${row.id}`)
      }
    }
    for (const root of RECORD_ROOTS) {
      if (!this._stray[root]) continue
      const key = `${root}:${STRAY}`
      problems[key] = { [STRAY]: `${this._stray[root]} list item(s) written into the '${root}' map: not records, never read` }
      found[COUNTERS.invalid_records].push(key)
    }
    const tids = new Set([...this.rows[THREADS].keys(), ...this.rows[THREAD_STATES].keys(), ...this.rows[THREAD_CONFIGS].keys(), ...this._members.keys()])
    for (const tid of tids) {
      let checked = this._checks.get(tid)
      if (checked === undefined) this._checks.set(tid, (checked = this._checkThread(tid)))
      for (const [name, ids] of checked) found[name].push(...ids)
    }
    const ids = Object.fromEntries(Object.entries(found).map(([name, list]) => [name, list.sort()]))
    const counts = Object.fromEntries(Object.entries(ids).map(([name, list]) => [name, list.length]))
    const violations = Object.entries(counts).reduce((n, [name, c]) => n + (DIAGNOSTICS.has(name) ? 0 : c), 0)
    return { clean: violations === 0, violations, counts, ids, quarantined: quarantined.sort(), problems }
  }

  // The violations found in one thread and its messages: [[counter, [ids]]], only the non-empty ones.
  _checkThread (tid) {
    const out = []
    const add = (name, ids) => { if (ids.length) out.push([name, ids]) }
    const t = this._good(THREADS, tid)
    const msg = (mid) => this._good(MESSAGES, mid)
    const rows = this.rows[MESSAGES]
    const order = this._order(tid)
    const orphans = []
    const badTargets = []
    const roots = []
    const same = []
    for (let i = 0; i < order.length; i++) {
      const f = rows.get(order[i]).fields
      if (!t) orphans.push(order[i])
      else if (f.reply_to_message_id != null && f.reply_to_message_id !== t.root_message_id) badTargets.push(order[i])
      if (f.reply_to_message_id == null) roots.push(order[i])
      // Same thread, date and sender: legitimate with ULIDs, reported as a diagnostic. Found beside each other.
      const prev = i > 0 ? rows.get(order[i - 1]).fields : null
      if (prev && prev.date === f.date) {
        for (let j = i - 1; j >= 0 && rows.get(order[j]).fields.date === f.date; j--) {
          if (rows.get(order[j]).fields.sender_id === f.sender_id) { same.push(order[i], order[j]); break }
        }
      }
    }
    add(COUNTERS.orphan_messages, orphans)
    add(COUNTERS.invalid_reply_targets, badTargets)
    add(COUNTERS.duplicate_date_rows, [...new Set(same)])
    if (t) {
      if (roots.length && (roots.length > 1 || !roots.includes(t.root_message_id))) add(COUNTERS.multi_root_per_thread, [tid])
      const root = msg(t.root_message_id)
      if (!root || root.thread_id !== tid || root.reply_to_message_id != null) add(COUNTERS.missing_root_message, [tid])
      const config = this.rows[THREAD_CONFIGS].get(tid)
      if (!config || config.quarantined) add(COUNTERS.missing_thread_config, [tid])
    }
    const state = this._good(THREAD_STATES, tid)
    if (state && state.active_message_id != null) {
      const active = msg(state.active_message_id)
      const name = state.state ?? 'idle'
      if (active && active.thread_id === tid &&
          ((name === 'running' && active.generating !== true) || (TERMINAL_STATES.has(name) && active.generating === true))) {
        add(COUNTERS.finalize_mismatch, [tid])
      }
    }
    return out
  }
}
