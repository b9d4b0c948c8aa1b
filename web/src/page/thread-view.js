// One thread: its settings (rename, colour, icon, pin), the agent's state with an interrupt button, the
// messages (only those on screen are rendered) and the composer.
import { html } from 'htm/preact'
import { useEffect, useState } from 'preact/hooks'
import { patchConfig, reply, requestInterrupt, viewOf } from '../lib/index.js'
import { MessageRow } from './message.js'
import { threadTitle } from './thread-list.js'
import { VirtualList } from './virtual-list.js'

export function ThreadView ({ doc, room, threadId, user, writable, readMarks, messages }) {
  const view = viewOf(doc)
  const config = view.threadConfig(threadId)
  const agent = view.isAgentThread(threadId)
  const state = view.threadState(threadId)
  useEffect(() => { readMarks.markRead(threadId, messages) })

  return html`<main class="thread" data-thread=${threadId}>
    <${ThreadHeader} doc=${doc} threadId=${threadId} config=${config} title=${threadTitle(config, messages)} user=${user} writable=${writable} />
    ${agent && html`<${AgentBar} doc=${doc} view=${view} config=${config} state=${state} user=${user} writable=${writable} />`}
    <${VirtualList} className="messages" items=${messages} keyOf=${(m) => m.message_id}
      renderItem=${(m) => html`<${MessageRow} doc=${doc} room=${room} threadId=${threadId} message=${m} user=${user} writable=${writable} />`} />
    ${writable
      ? html`<${Composer} onSend=${(text) => reply(doc, { threadId, sender: user, text })} />`
      : html`<div class="composer read-only-note">You can read this chat but not write to it.</div>`}
  </main>`
}

function ThreadHeader ({ doc, threadId, config, title, user, writable }) {
  const [renaming, setRenaming] = useState(false)
  const patch = (fields) => patchConfig(doc, { threadId, patch: fields, by: user })
  if (!writable) {
    return html`<header class="thread-header"><h2 class="thread-title">${config.thread_icon || ''} ${title}</h2></header>`
  }
  return html`<header class="thread-header" style=${{ borderBottomColor: config.thread_color || '#ddd' }}>
    ${renaming
      ? html`<form class="rename" onSubmit=${(e) => { e.preventDefault(); const name = e.target.elements.name.value.trim(); if (name) patch({ name }); setRenaming(false) }}>
          <input name="name" class="rename-input" value=${config.name || ''} autoFocus /><button type="submit">Rename</button></form>`
      : html`<h2 class="thread-title" title="rename" onClick=${() => setRenaming(true)}>${config.thread_icon || ''} ${title}</h2>`}
    <span class="thread-tools">
      <button class="rename-button" onClick=${() => setRenaming(!renaming)}>Rename</button>
      <label title="colour"><input type="color" class="colour-input" value=${config.thread_color || '#3f51b5'}
        onChange=${(e) => patch({ thread_color: e.target.value })} /></label>
      <input class="icon-input" size="2" maxLength="4" placeholder="icon" value=${config.thread_icon || ''}
        onChange=${(e) => patch({ thread_icon: e.target.value || null })} />
      <button class="pin-button ${config.pin ? 'on' : ''}" onClick=${() => patch({ pin: !config.pin })}>${config.pin ? 'Unpin' : 'Pin'}</button>
    </span>
  </header>`
}

// The agent's side of the thread: which model, what state the turn is in, and the button that asks the
// runner to stop the reply that is being written (SCHEMA section 8: an interrupt request on the reply).
function AgentBar ({ doc, view, config, state, user, writable }) {
  const active = state.active_message_id && view.message(state.active_message_id)
  const streaming = active && active.generating
  const asked = streaming && active.acp_interrupt_requested_at
  return html`<div class="agent-bar">
    <span class="model">agent: ${(config.acp_config && config.acp_config.model) || 'default'}</span>
    <span class="state-badge ${state.state}" data-state=${state.state}>${state.state}</span>
    ${state.state === 'error' && state.error && html`<span class="agent-error">${state.error}</span>`}
    ${writable && streaming && html`<button class="interrupt-button" disabled=${!!asked}
        onClick=${() => requestInterrupt(doc, { messageId: active.message_id, by: user })}>${asked ? 'Stopping…' : 'Interrupt'}</button>`}
  </div>`
}

function Composer ({ onSend }) {
  const [text, setText] = useState('')
  const send = () => { if (text.trim()) { onSend(text); setText('') } }
  return html`<form class="composer" onSubmit=${(e) => { e.preventDefault(); send() }}>
    <textarea class="composer-input" placeholder="Write a message (Markdown; Enter sends, Shift+Enter a new line)" value=${text}
      onInput=${(e) => setText(e.target.value)}
      onKeyDown=${(e) => { if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send() } }} />
    <button type="submit" class="send-button">Send</button>
  </form>`
}
