// The threads of a chat, pinned first (then newest first, as team chats list them), with their colour,
// icon, agent state and how many messages this person has not read; and the form that starts a thread.
import { html } from 'htm/preact'
import { useState } from 'preact/hooks'
import { createThread } from '../lib/index.js'
import { go } from './route.js'

export function ThreadList ({ messagesOf, room, threads, current, user, readMarks }) {
  const rows = threads.map((t) => ({ t, config: t.config, messages: messagesOf(t.thread_id), agent: t.agent, state: t.state.state }))
  rows.sort((a, b) => (Number(!!b.config.pin) - Number(!!a.config.pin)) || lastDate(b).localeCompare(lastDate(a)))
  return html`<ul class="thread-list">${rows.map(({ t, config, messages, agent, state }) => {
    const unread = t.thread_id === current ? 0 : readMarks.unread(t.thread_id, messages, user)
    return html`<li key=${t.thread_id} class="thread-item ${t.thread_id === current ? 'current' : ''}" data-thread=${t.thread_id}
                    onClick=${() => go(room, t.thread_id)} style=${{ borderLeftColor: config.thread_color || 'transparent' }}>
      <span class="icon">${config.thread_icon || (agent ? '✦' : '#')}</span>
      <span class="name">${threadTitle(config, messages)}</span>
      ${config.pin && html`<span class="pin" title="pinned">★</span>`}
      ${agent && state !== 'idle' && html`<span class="state-badge ${state}">${state}</span>`}
      ${unread > 0 && html`<span class="unread" title="unread">${unread}</span>`}
    </li>`
  })}</ul>`
}

export function threadTitle (config, messages) {
  if (config.name) return config.name
  const first = messages[0]
  return first ? first.text.slice(0, 60) || '(empty)' : '(untitled)'
}

const lastDate = (row) => (row.messages.length ? row.messages[row.messages.length - 1].date : '')

export function NewThread ({ doc, user, room, models, onDone }) {
  const [name, setName] = useState('')
  const [text, setText] = useState('')
  const [model, setModel] = useState('')
  const submit = (event) => {
    event.preventDefault()
    if (!text.trim()) return
    // An agent thread is one whose acp_config has a key (SCHEMA 3.2): a model makes it one.
    const config = {}
    if (name.trim()) config.name = name.trim()
    if (model.trim()) config.acp_config = { model: model.trim() }
    const { threadId } = createThread(doc, { sender: user, text, config })
    onDone()
    go(room, threadId)
  }
  return html`<form class="new-thread" onSubmit=${submit}>
    <input class="new-thread-name" placeholder="Thread name (optional)" value=${name} onInput=${(e) => setName(e.target.value)} />
    <textarea class="new-thread-text" placeholder="First message" value=${text} onInput=${(e) => setText(e.target.value)} />
    <input class="new-thread-model" placeholder="Agent model (empty: people only)" list="known-models" value=${model} onInput=${(e) => setModel(e.target.value)} />
    <datalist id="known-models">${models.map((m) => html`<option key=${m} value=${m} />`)}</datalist>
    <button type="submit">Start thread</button>
  </form>`
}
