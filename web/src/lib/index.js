// The chatdoc client library: to browsers what chatdoc/ (operations, turns, the read side of ChatDoc) is to
// Python. Import Y from here, not from 'yjs': one copy of yjs per program (two break `instanceof`).
import * as Y from 'yjs'
import { viewOf } from './view.js'

export { Y }
export { WebsocketProvider } from 'y-websocket'
export { formatDate, isDate, isUlid, newUlid, parseDate } from './ids.js'
export * from './records.js'
export { COUNTERS, ChatView, viewOf } from './view.js'
export { ChatError, createThread, edit, fork, patchConfig, reply, requestInterrupt, softDelete } from './operations.js'
export { CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, Room, RoomRefused, openRoom } from './room.js'

// Reads by document (one view per Y.Doc, kept current by its observers).
export const threads = (doc) => viewOf(doc).threads()
export const threadIds = (doc) => viewOf(doc).threadIds()
export const messagesOf = (doc, threadId) => viewOf(doc).messages(threadId)
export const message = (doc, messageId) => viewOf(doc).message(messageId)
export const threadConfig = (doc, threadId) => viewOf(doc).threadConfig(threadId)
export const threadState = (doc, threadId) => viewOf(doc).threadState(threadId)
export const isAgentThread = (doc, threadId) => viewOf(doc).isAgentThread(threadId)
export const integrity = (doc) => viewOf(doc).integrity()
