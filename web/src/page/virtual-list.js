// A list that renders only the rows on screen (plus a margin), so a 10,000-message thread costs what a
// screenful costs. Rows have different heights: each is measured once rendered and remembered by key;
// rows never seen count as `estimate`. The list keeps to the bottom while the reader is there (new
// messages and streamed text stay in view) and otherwise keeps still.
import { html } from 'htm/preact'
import { useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks'

const OVERSCAN_PX = 600
const AT_BOTTOM_PX = 40

export function VirtualList ({ items, keyOf, renderItem, estimate = 72, className = '' }) {
  const viewport = useRef(null)
  const heights = useRef(new Map())
  const stick = useRef(true)
  const [measured, setMeasured] = useState(0) // bumps when a row's height was learnt or changed
  const [view, setView] = useState({ top: 0, height: 800 })

  // Offsets of every row from the measured heights: recomputed when the rows or a height change, not on scroll.
  const offsets = useMemo(() => {
    const out = new Float64Array(items.length + 1)
    for (let i = 0; i < items.length; i++) out[i + 1] = out[i] + (heights.current.get(keyOf(items[i])) ?? estimate)
    return out
  }, [items, measured, estimate])
  const total = offsets[items.length]
  const top = stick.current ? Math.max(0, total - view.height) : view.top
  const first = Math.max(0, upperBound(offsets, top - OVERSCAN_PX) - 1)
  const last = Math.min(items.length, upperBound(offsets, top + view.height + OVERSCAN_PX))

  useLayoutEffect(() => {
    const el = viewport.current
    let changed = false
    for (const row of el.querySelectorAll(':scope > .vl-inner > [data-key]')) {
      const h = row.offsetHeight
      if (heights.current.get(row.dataset.key) !== h) { heights.current.set(row.dataset.key, h); changed = true }
    }
    if (stick.current) el.scrollTop = el.scrollHeight
    if (changed) setMeasured((n) => n + 1)
  })

  useLayoutEffect(() => {
    const el = viewport.current
    const onScroll = () => {
      stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < AT_BOTTOM_PX
      setView({ top: el.scrollTop, height: el.clientHeight })
    }
    const resize = new ResizeObserver(onScroll)
    resize.observe(el)
    el.addEventListener('scroll', onScroll, { passive: true })
    return () => { el.removeEventListener('scroll', onScroll); resize.disconnect() }
  }, [])

  const rows = []
  for (let i = first; i < last; i++) {
    const key = keyOf(items[i])
    rows.push(html`<div key=${key} data-key=${key} data-index=${i}>${renderItem(items[i], i)}</div>`)
  }
  return html`<div class="vl ${className}" ref=${viewport} data-rows=${items.length}>
    <div class="vl-inner" style=${{ paddingTop: `${offsets[first]}px`, paddingBottom: `${total - offsets[last]}px` }}>${rows}</div>
  </div>`
}

// The first index whose offset is greater than `y`.
function upperBound (offsets, y) {
  let lo = 0
  let hi = offsets.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (offsets[mid] <= y) lo = mid + 1
    else hi = mid
  }
  return lo
}
