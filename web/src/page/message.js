// One message: who, when, its text rendered as safe Markdown, and what happened to it (edited, deleted,
// streaming, interrupted, token usage); with edit/delete for its author and fork-from-here for anyone.
import { html } from 'htm/preact'
import { Component } from 'preact'
import { useState } from 'preact/hooks'
import { edit, fork, softDelete } from '../lib/index.js'
import { renderMarkdown } from './markdown.js'
import { go } from './route.js'
import { colourOf } from './use-room.js'

// A row re-renders only when its message (or who may act on it) changed: scrolling and a streamed chunk into
// one reply then cost the rows they touch, not every row on screen. The library returns the same object for a
// message that did not change.
export class MessageRow extends Component {
  shouldComponentUpdate (next) {
    for (const key in next) if (next[key] !== this.props[key]) return true
    return false
  }

  render (props) {
    return html`<${Message} ...${props} />`
  }
}

function Message ({ doc, room, threadId, message: m, user, writable }) {
  const [editing, setEditing] = useState(false)
  const mine = m.sender_id === user
  const classes = ['message', mine && 'mine', m.deleted && 'deleted', m.generating && 'generating', !m.reply_to_message_id && 'root']
  return html`<article class=${classes.filter(Boolean).join(' ')} data-id=${m.message_id}>
    <div class="meta">
      <span class="author" style=${{ color: colourOf(m.sender_id) }}>${m.sender_id}</span>
      <time datetime=${m.date} title=${m.date}>${formatTime(m.date)}</time>
      ${m.edited && !m.deleted && html`<span class="edited-marker" title=${editedTitle(m.history)}>(edited)</span>`}
      ${m.deleted && html`<span class="deleted-marker" title=${`by ${m.deleted_by || '?'} at ${m.deleted_at || '?'}`}>deleted</span>`}
      ${m.generating && html`<span class="generating-marker">writing…</span>`}
      ${m.acp_interrupted && html`<span class="interrupted-marker" title=${m.acp_interrupted_text || ''}>interrupted${m.acp_interrupted_reason ? ` (${m.acp_interrupted_reason})` : ''}</span>`}
      ${writable && !m.deleted && !m.generating && html`<span class="actions">
        ${mine && html`<button class="link edit-button" onClick=${() => setEditing(!editing)}>edit</button>`}
        ${mine && html`<button class="link delete-button" onClick=${() => softDelete(doc, { messageId: m.message_id, by: user })}>delete</button>`}
        <button class="link fork-button" title="a new thread with the messages up to this one"
          onClick=${() => go(room, fork(doc, { threadId, atMessageId: m.message_id, by: user }).threadId)}>fork</button>
      </span>`}
    </div>
    ${editing
      ? html`<${EditForm} text=${m.text} onSave=${(content) => { if (content !== m.text) edit(doc, { messageId: m.message_id, author: user, text: content }); setEditing(false) }} />`
      : m.deleted
        ? html`<div class="body deleted-body">This message was deleted.</div>`
        : html`<div class="body" dangerouslySetInnerHTML=${{ __html: renderMarkdown(m.text) }} />`}
    ${m.acp_usage && !m.generating && html`<div class="usage">${usageLine(m.acp_usage)}</div>`}
  </article>`
}

function EditForm ({ text, onSave }) {
  const [value, setValue] = useState(text)
  return html`<form class="edit-form" onSubmit=${(e) => { e.preventDefault(); onSave(value) }}>
    <textarea class="edit-input" value=${value} onInput=${(e) => setValue(e.target.value)} />
    <button type="submit" class="save-edit">Save</button>
  </form>`
}

function editedTitle (history) {
  const last = history[history.length - 1]
  return `${history.length} edit${history.length === 1 ? '' : 's'}; last by ${last.author_id} at ${last.date}`
}

function usageLine (u) {
  const parts = [`${u.input_tokens || 0} in`, `${u.output_tokens || 0} out`]
  if (u.cached_input_tokens) parts.push(`${u.cached_input_tokens} cached`)
  if (u.total_tokens) parts.push(`${u.total_tokens} total`)
  return 'tokens: ' + parts.join(', ')
}

// Formatters made once: Intl formatting is costly, and a scrolled list formats every row it brings in.
const TIME = new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit' })
const DAY = new Intl.DateTimeFormat([], { dateStyle: 'short' })
const dayOf = (d) => d.getFullYear() * 10000 + d.getMonth() * 100 + d.getDate()

function formatTime (iso) {
  const d = new Date(iso)
  return dayOf(d) === dayOf(new Date()) ? TIME.format(d) : `${DAY.format(d)} ${TIME.format(d)}`
}
