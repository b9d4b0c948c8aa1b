// What this person has read, per chat and thread: the date of the newest message they have seen. Kept in
// localStorage (it is this browser's view, not part of the shared document).
export class ReadMarks {
  constructor (room, user, storage = window.localStorage) {
    this.key = `chatdoc.read.${user}.${room}`
    this.storage = storage
    try { this.marks = JSON.parse(storage.getItem(this.key)) || {} } catch { this.marks = {} }
  }

  unread (threadId, messages, me) {
    const seen = this.marks[threadId] || ''
    let count = 0
    for (const m of messages) if (m.date > seen && m.sender_id !== me && !m.deleted) count++
    return count
  }

  markRead (threadId, messages) {
    const newest = messages.length ? messages[messages.length - 1].date : ''
    if ((this.marks[threadId] || '') >= newest) return false
    this.marks[threadId] = newest
    try { this.storage.setItem(this.key, JSON.stringify(this.marks)) } catch { /* storage full: unread is best effort */ }
    return true
  }
}
