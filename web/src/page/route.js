// Where the person is: `#/<room>` or `#/<room>/<thread id>`, so reload and back/forward keep the place.
import { useEffect, useState } from 'preact/hooks'

export function parseRoute (hash) {
  const [room, thread] = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent)
  return { room: room || null, thread: thread || null }
}

export function go (room, thread) {
  window.location.hash = '#/' + [room, thread].filter(Boolean).map(encodeURIComponent).join('/')
}

export function useRoute () {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash))
  useEffect(() => {
    const onHash = () => setRoute(parseRoute(window.location.hash))
    window.addEventListener('hashchange', onHash)
    return () => window.removeEventListener('hashchange', onHash)
  }, [])
  return route
}
