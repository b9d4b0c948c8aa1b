// The token a person opened the page with: taken from `?token=` once, kept in sessionStorage for this tab,
// and removed from the address bar (so it is not bookmarked, shared in a screenshot or sent as a Referer).
const KEY = 'chatdoc.token'

export function takeToken (location = window.location, history = window.history, storage = window.sessionStorage) {
  const url = new URL(location.href)
  const given = url.searchParams.get('token')
  if (given) {
    storage.setItem(KEY, given)
    url.searchParams.delete('token')
    history.replaceState(history.state, '', url.pathname + url.search + url.hash)
  }
  return storage.getItem(KEY)
}

// The chats the token may open: {chats: [{room, ...}], user, mode}; a refusal throws the server's reason.
export async function listChats (token) {
  let response
  try {
    response = await fetch('/api/chats', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' })
  } catch (err) {
    throw new ChatsUnavailable(`the server cannot be reached (${err.message})`, false)
  }
  const body = await response.json().catch(() => ({}))
  if (!response.ok) throw new ChatsUnavailable(body.error || `the server answered ${response.status}`, response.status === 401 || response.status === 403)
  return body
}

export class ChatsUnavailable extends Error {
  constructor (message, refused) {
    super(message)
    this.refused = refused // true: the token was refused (retrying will not help); false: a network problem
  }
}
