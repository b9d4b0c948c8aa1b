// One chat: its connection and presence, its integrity, the thread list and the open thread.
import { html } from 'htm/preact'
import { useMemo, useState } from 'preact/hooks'
import { viewOf } from '../lib/index.js'
import { ConnectionBadge, IntegrityBanner, Presence } from './status.js'
import { NewThread, ThreadList } from './thread-list.js'
import { ThreadView } from './thread-view.js'
import { ReadMarks } from './unread.js'
import { useRoom } from './use-room.js'

export function ChatView ({ room, thread, token, user, readOnly }) {
  const { opened, connection, version, people } = useRoom(room, token, user)
  const readMarks = useMemo(() => new ReadMarks(room, user), [room, user])
  const [creating, setCreating] = useState(false)
  const view = opened && viewOf(opened.doc)
  const messagesOf = useMessages(view, version)
  if (!opened) return html`<main class="notice">Opening ${room}…</main>`
  const doc = opened.doc
  const list = view.threads()
  const current = thread && view.thread(thread) ? thread : null
  const report = view.integrity()
  const writable = !readOnly && connection.state !== 'refused'

  return html`<div class="chat" data-version=${version}>
    <div class="chat-status">
      <${ConnectionBadge} connection=${connection} />
      <${Presence} people=${people} />
    </div>
    <${IntegrityBanner} report=${report} />
    <div class="panes">
      <aside class="sidebar">
        ${writable && html`<button class="new-thread-button" onClick=${() => setCreating(!creating)}>${creating ? 'Cancel' : 'New thread'}</button>`}
        ${creating && writable && html`<${NewThread} doc=${doc} user=${user} room=${room} models=${modelsIn(list)} onDone=${() => setCreating(false)} />`}
        <${ThreadList} messagesOf=${messagesOf} room=${room} threads=${list} current=${current} user=${user} readMarks=${readMarks} />
      </aside>
      ${current
        ? html`<${ThreadView} key=${current} doc=${doc} room=${room} threadId=${current} user=${user} writable=${writable}
                 readMarks=${readMarks} messages=${messagesOf(current)} />`
        : html`<main class="thread empty">${list.length ? 'Choose a thread.' : 'No threads yet.'}</main>`}
    </div>
  </div>`
}

// A thread's messages, read once per document version: the thread list and the open thread share them, and
// a render caused by anything else (connection, presence, typing) reads nothing again.
function useMessages (view, version) {
  return useMemo(() => {
    const read = new Map()
    return (threadId) => {
      if (!read.has(threadId)) read.set(threadId, view.messages(threadId))
      return read.get(threadId)
    }
  }, [view, version])
}

// The models this chat's agent threads use: what the new-thread form offers (any other name may be typed).
const modelsIn = (threads) => [...new Set(threads.map((t) => t.config.acp_config?.model).filter(Boolean))].sort()
