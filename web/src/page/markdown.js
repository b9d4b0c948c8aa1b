// Message text to safe HTML. markdown-it with raw HTML off never emits a tag the author typed, and its
// link validator refuses `javascript:`/`vbscript:`/`data:` URLs; DOMPurify then removes anything that still
// could run (event handler attributes, script URLs), so a bug in either one alone does not open a hole. No
// inline style reaches the page: the CSP forbids them.
import MarkdownIt from 'markdown-it'
import DOMPurify from 'dompurify'

const md = new MarkdownIt({ html: false, linkify: true, breaks: true })
// markdown-it aligns table cells with a style attribute; a class does the same without an inline style (even
// parsing one inside DOMPurify's inert document reports a CSP violation).
md.core.ruler.push('alignment_as_class', (state) => {
  for (const token of state.tokens) {
    const style = token.attrGet && token.attrGet('style')
    if (style) {
      token.attrs = token.attrs.filter(([name]) => name !== 'style')
      const align = /text-align:\s*(left|right|center)/.exec(style)
      if (align) token.attrJoin('class', `align-${align[1]}`)
    }
  }
})

// Links open in a new tab without handing it `window.opener`.
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank')
    node.setAttribute('rel', 'noopener noreferrer nofollow')
  }
})

const cache = new Map() // text -> html; a thread re-renders often while an agent streams
const CACHE_LIMIT = 2000

export function renderMarkdown (text) {
  let html = cache.get(text)
  if (html === undefined) {
    html = DOMPurify.sanitize(md.render(text), { USE_PROFILES: { html: true }, FORBID_TAGS: ['style', 'form', 'input'], FORBID_ATTR: ['style'] })
    if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value)
    cache.set(text, html)
  }
  return html
}
