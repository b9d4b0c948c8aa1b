// What the person should know about the chat itself: the connection, who else is here, and whether the
// document holds records that no reader can use (quarantined) or broken rules (violations).
import { html } from 'htm/preact'
import { useState } from 'preact/hooks'

const LABEL = { connecting: 'connecting…', live: 'live', offline: 'offline', refused: 'refused' }

export function ConnectionBadge ({ connection }) {
  const { state, reason, pending } = connection
  return html`<span class="connection ${state}" data-state=${state} data-pending=${pending ? 'yes' : 'no'}>
    ${LABEL[state] || state}
    ${state === 'offline' && pending && html` — edits pending, they are sent on reconnect`}
    ${state === 'offline' && !pending && html` — reconnecting`}
    ${state === 'refused' && html`: <span class="reason">${reason || 'the server refused the connection'}</span> (not retrying)`}
  </span>`
}

export function Presence ({ people }) {
  if (!people.length) return html`<span class="presence muted">nobody else here</span>`
  return html`<span class="presence" data-count=${people.length}>${people.map((p) => html`
    <span key=${p.clientId} class="person" style=${{ borderColor: p.color }} title=${p.name}>${p.name}</span>`)}</span>`
}

export function IntegrityBanner ({ report }) {
  const [open, setOpen] = useState(false)
  const quarantined = report.quarantined.length
  if (!quarantined && !report.violations) return null
  // Which: every counter that found something, with the ids it names, and each damaged record's problems.
  const found = Object.entries(report.ids).filter(([, ids]) => ids.length)
  return html`<div class="integrity" role="alert" data-quarantined=${quarantined} data-violations=${report.violations}>
    This chat holds ${quarantined} quarantined record${quarantined === 1 ? '' : 's'} and ${report.violations}
    violation${report.violations === 1 ? '' : 's'}: quarantined records are left out of the threads and kept for a person to look at.
    <button class="link integrity-toggle" onClick=${() => setOpen(!open)}>${open ? 'hide' : 'show which'}</button>
    ${open && html`<ul class="integrity-list">
      ${found.map(([counter, ids]) => html`<li key=${counter}>${counter}: ${ids.join(', ')}</li>`)}
      ${Object.entries(report.problems).map(([where, fields]) => html`<li key=${where}>${where}${report.quarantined.includes(where) ? ' (quarantined)' : ''}:
        ${Object.entries(fields).map(([field, why]) => `${field}: ${why}`).join('; ')}</li>`)}
    </ul>`}
  </div>`
}
