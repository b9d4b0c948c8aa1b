// Opening a room of `chatdoc serve`: y-websocket's WebsocketProvider with the token in its params, and one
// connection state a page can show:
//
//   connecting  before the first sync, and while reconnecting with nothing typed meanwhile
//   live        connected and synced: what is typed reaches the server at once
//   offline     the connection is down; `pending` says whether edits were made since it went down (they
//               are kept in the document and sent on reconnect, as Yjs does)
//   refused     the server closed with an application code (SCHEMA.md section 13): 4401 the token is
//               invalid or expired, 4403 a write with a read-only token. `reason` is the server's text.
//               No retry: y-websocket stops reconnecting on 4400-4499, and so does this room.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

export const CLOSE_UNAUTHORIZED = 4401
export const CLOSE_FORBIDDEN = 4403

/**
 * Open the room `room` (the .chat file's path under the served folder) on the server at `url`
 * (`ws://host:port`). Returns a Room: {doc, provider, awareness, state, pending, reason, code, on(fn),
 * destroy()}. `WebSocketPolyfill` is for Node (the `ws` package); browsers leave it out.
 */
export function openRoom ({ url, room, token, doc = new Y.Doc(), params = {}, WebSocketPolyfill, connect = true }) {
  const provider = new WebsocketProvider(url, room, doc, {
    params: token ? { ...params, token } : params,
    connect,
    disableBc: true, // every tab talks to the server: a read-only tab must not write through a writer's channel
    ...(WebSocketPolyfill ? { WebSocketPolyfill } : {})
  })
  return new Room(doc, provider)
}

export class Room {
  constructor (doc, provider) {
    this.doc = doc
    this.provider = provider
    this.awareness = provider.awareness
    this.state = 'connecting'
    this.pending = false
    this.reason = null
    this.code = null
    this._listeners = new Set()
    provider.on('sync', (synced) => {
      if (synced) { this.pending = false; this._set('live') }
    })
    provider.on('status', ({ status }) => {
      if (status === 'disconnected' && this.state !== 'refused') this._set('offline')
      else if (status === 'connecting' && this.state !== 'offline' && this.state !== 'refused') this._set('connecting')
    })
    provider.on('connection-close', (event) => {
      if (event && event.code >= 4400 && event.code < 4500) {
        this.code = event.code
        this.reason = event.reason || `closed by the server (${event.code})`
        provider.shouldConnect = false // belt and braces: y-websocket 3.1 stops on these codes itself
        this._set('refused')
      } else if (this.state === 'live') {
        this._set('offline')
      }
    })
    this._onUpdate = (_, origin) => {
      if (origin !== provider && this.state !== 'live' && !this.pending) { this.pending = true; this._emit() }
    }
    doc.on('update', this._onUpdate)
  }

  /** Call `fn(room)` on every change of state (returns an unsubscribe function). */
  on (fn) {
    this._listeners.add(fn)
    return () => this._listeners.delete(fn)
  }

  /** Resolves once live; rejects with the server's reason when refused. */
  whenLive () {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.state === 'live') { off(); resolve(this) } else if (this.state === 'refused') { off(); reject(new RoomRefused(this.code, this.reason)) }
      }
      const off = this.on(check)
      check()
    })
  }

  _set (state) {
    if (this.state === state) return
    this.state = state
    this._emit()
  }

  _emit () {
    for (const fn of this._listeners) fn(this)
  }

  destroy () {
    this.doc.off('update', this._onUpdate)
    this.provider.destroy()
  }
}

export class RoomRefused extends Error {
  constructor (code, reason) {
    super(`${code}: ${reason}`)
    this.code = code
    this.reason = reason
  }
}
