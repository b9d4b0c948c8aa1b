// The whole page: the chats this token may open, and the one being looked at.
import { html } from 'htm/preact'
import { useEffect, useState } from 'preact/hooks'
import { ChatView } from './chat-view.js'
import { go, useRoute } from './route.js'
import { listChats } from './session.js'

export function App ({ token }) {
  const route = useRoute()
  const [access, setAccess] = useState(null) // {chats, user, mode} from the server
  const [problem, setProblem] = useState(null)

  useEffect(() => {
    if (!token) return
    listChats(token).then(setAccess, (err) => setProblem({ text: err.message, refused: err.refused }))
  }, [token])

  useEffect(() => { // open the only chat, or the first, when none is chosen
    if (access && !route.room && access.chats.length) go(access.chats[0].room)
  }, [access, route.room])

  if (!token) {
    return html`<main class="notice"><h1>chatdoc</h1>
      <p>This page needs the link that <code>chatdoc serve</code> printed when it started (it ends in <code>?token=…</code>).
      Open that link, or mint one with <code>chatdoc token</code>.</p></main>`
  }
  if (problem) {
    return html`<main class="notice refused" data-state="refused"><h1>chatdoc</h1>
      <p>${problem.refused ? 'The server refused this link: ' : 'No connection: '}<strong class="reason">${problem.text}</strong></p>
      ${problem.refused && html`<p>Ask for a new link (restart <code>chatdoc serve</code> or run <code>chatdoc token</code>).</p>`}</main>`
  }
  if (!access) return html`<main class="notice">Loading…</main>`

  const readOnly = access.mode !== 'write'
  // The chat being looked at is listed even before its file exists (a new chat is written on its first edit).
  const chats = route.room && !access.chats.some((c) => c.room === route.room) ? [...access.chats, { room: route.room }] : access.chats
  return html`<div class="app ${readOnly ? 'read-only' : ''}">
    <header class="topbar">
      <span class="brand">chatdoc</span>
      <nav class="chats">${chats.map((c) => html`
        <a key=${c.room} class="chat-link ${c.room === route.room ? 'current' : ''}" href=${'#/' + encodeURIComponent(c.room)}>${c.room.replace(/\.chat$/, '')}</a>`)}
        ${chats.length === 0 && html`<span class="muted">no .chat files in this folder yet</span>`}
      </nav>
      ${!readOnly && html`<${NewChat} />`}
      <span class="me" title="you">${access.user}${readOnly && html` <span class="badge read-only-badge">read-only</span>`}</span>
    </header>
    ${route.room
      ? html`<${ChatView} key=${route.room} room=${route.room} thread=${route.thread} token=${token} user=${access.user} readOnly=${readOnly} />`
      : html`<main class="notice">Choose a chat.</main>`}
  </div>`
}

// A chat is a .chat file in the served folder; opening one that does not exist yet creates it on the first write.
function NewChat () {
  const submit = (event) => {
    event.preventDefault()
    const name = event.target.elements.chat.value.trim().replace(/^\/+/, '')
    if (name) go(name.endsWith('.chat') ? name : `${name}.chat`)
    event.target.reset()
  }
  return html`<form class="new-chat" onSubmit=${submit}><input name="chat" class="new-chat-name" placeholder="new chat" size="10" /><button type="submit">Open</button></form>`
}
