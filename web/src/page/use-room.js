// One open room as Preact state: the document (re-read once per animation frame after any change, so a
// streaming agent reply costs one render per frame, not one per chunk), the connection state and who is here.
import { useEffect, useRef, useState } from 'preact/hooks'
import { openRoom } from '../lib/index.js'

export function useRoom (room, token, user) {
  const [opened, setOpened] = useState(null)
  const [connection, setConnection] = useState({ state: 'connecting' })
  const [version, setVersion] = useState(0)
  const [people, setPeople] = useState([])
  const frame = useRef(0)

  useEffect(() => {
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
    const r = openRoom({ url: `${scheme}://${window.location.host}`, room, token })
    const bump = () => {
      if (!frame.current) frame.current = requestAnimationFrame(() => { frame.current = 0; setVersion((v) => v + 1) })
    }
    const onState = () => setConnection({ state: r.state, reason: r.reason, pending: r.pending })
    const awareness = r.awareness
    const onAwareness = () => {
      const here = []
      for (const [clientId, state] of awareness.getStates()) {
        if (clientId !== awareness.clientID && state && state.user) here.push({ clientId, ...state.user })
      }
      setPeople(here)
    }
    // The browser knows before the socket does: a connection that silently died would take y-websocket 30 s
    // to notice. Going offline on the browser's word shows it at once, and coming back resyncs what was typed.
    const offline = () => r.provider.disconnect()
    const online = () => { if (r.state !== 'refused') r.provider.connect() }
    window.addEventListener('offline', offline)
    window.addEventListener('online', online)
    awareness.setLocalStateField('user', { name: user, color: colourOf(user) })
    r.doc.on('update', bump)
    const offState = r.on(onState)
    awareness.on('change', onAwareness)
    onState()
    setOpened(r)
    // For tests and the bench: the open document, read through the same library the page uses.
    window.chatdoc = { room: r }
    return () => {
      cancelAnimationFrame(frame.current)
      frame.current = 0
      offState()
      window.removeEventListener('offline', offline)
      window.removeEventListener('online', online)
      awareness.off('change', onAwareness)
      r.doc.off('update', bump)
      r.destroy()
    }
  }, [room, token, user])

  return { opened, connection, version, people }
}

// A stable colour per name, so each person looks the same in every browser.
export function colourOf (name) {
  let h = 0
  for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) >>> 0
  return `hsl(${h % 360} 55% 45%)`
}
