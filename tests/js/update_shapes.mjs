// Updates made by Yjs for every kind of struct content, each with what Yjs's own decoder reads from it, for
// tests/test_causal.py: chatdoc/causal.py must read the same clock ranges, references and delete set.
//
//   node update_shapes.mjs          (prints one JSON array)
//   node update_shapes.mjs decode   (reads a JSON array of base64 updates on stdin: what Yjs reads in each)
//
// Kinds: string (with a surrogate pair: lengths count UTF-16 code units), embed, format, type (plain, and
// XML element / hook, which carry a name), any (every lib0 `any` tag), binary, deleted, doc (a subdoc),
// GC (a collected deleted range), Skip (a merged update with a gap), and json (legacy ContentJSON, which
// Yjs 13 reads but no longer writes: hand-encoded here).
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'

const cases = []
function add (name, update) {
  const { structs, ds } = Y.decodeUpdate(update)
  const structsOut = structs.map((s) => ({
    kind: s.constructor.name,
    client: s.id.client,
    clock: s.id.clock,
    length: s.length,
    origin: s.origin ? [s.origin.client, s.origin.clock] : null,
    rightOrigin: s.rightOrigin ? [s.rightOrigin.client, s.rightOrigin.clock] : null,
    parent: s.parent && s.parent.client !== undefined ? [s.parent.client, s.parent.clock] : null
  }))
  const deletes = []
  ds.clients.forEach((items, client) => items.forEach((d) => deletes.push([client, d.clock, d.clock + d.len])))
  cases.push({ name, update: Buffer.from(update).toString('base64'), structs: structsOut, deletes })
}

function doc (clientID) {
  const d = new Y.Doc()
  d.clientID = clientID
  return d
}
// Each transaction's update, as a provider would send it.
function updatesOf (d, write) {
  const out = []
  const on = (u) => out.push(u)
  d.on('update', on)
  write()
  d.off('update', on)
  return out
}

{
  const d = doc(7)
  const t = d.getText('text')
  const m = d.getMap('map')
  const a = d.getArray('array')
  const us = updatesOf(d, () => {
    t.insert(0, 'hello wörld 😀 ok')
    t.insert(5, ',')
    t.insertEmbed(2, { image: 'x.png' })
    t.format(0, 4, { bold: true })
    m.set('any', [1, -7, 2 ** 40, -(2 ** 53), 1.5, 1e300, null, undefined, true, false, 'str', { k: [1, { z: 'é' }] }])
    m.set('bin', new Uint8Array([0, 1, 255]))
    m.set('big', 2n ** 62n)
    a.insert(0, [new Uint8Array([9, 9])])
    m.set('nested', new Y.Map([['inner', 'v']]))
    const el = new Y.XmlElement('p')
    const frag = d.getXmlFragment('xml')
    frag.insert(0, [el, new Y.XmlText('tx')])
    el.setAttribute('class', 'c')
    frag.insert(0, [new Y.XmlHook('hooky')])
    m.set('sub', new Y.Doc({ guid: 'sub-guid', meta: { a: 1 } }))
    t.delete(1, 3)
    m.delete('any')
    a.insert(1, ['x', 'y', 'z'])
    a.delete(1, 2)
  })
  us.forEach((u, i) => add(`transaction ${i}`, u))
  add('whole document', Y.encodeStateAsUpdate(d))
  const first = doc(8) // a peer that has only the first transaction
  Y.applyUpdate(first, us[0])
  add('after a state vector', Y.encodeStateAsUpdate(d, Y.encodeStateVector(first)))
}

{
  // Deleted content and GC: a document with gc on collects the deleted text into GC structs.
  const d = doc(11)
  d.gc = true
  const t = d.getText('t')
  t.insert(0, 'abcdef')
  t.delete(1, 4)
  add('gc and deleted', Y.encodeStateAsUpdate(d))
  const e = doc(12)
  e.gc = false
  const te = e.getText('t')
  te.insert(0, 'keep')
  te.delete(0, 2)
  add('deleted kept (gc off)', Y.encodeStateAsUpdate(e))
  // A deleted nested type's children are collected into GC structs.
  const m = d.getMap('m')
  m.set('n', new Y.Map([['a', 'b'], ['c', 'd']]))
  m.delete('n')
  add('gc of a deleted type', Y.encodeStateAsUpdate(d))
}

{
  // Skip: merging two updates of one client with a gap between them.
  const d = doc(21)
  const t = d.getText('t')
  const us = updatesOf(d, () => { t.insert(0, 'a'); t.insert(1, 'bb'); t.insert(3, 'c') })
  add('skip (merged around a gap)', Y.mergeUpdates([us[0], us[2]]))
  // A document with pending structs re-encodes them: an update whose first clock is past the start.
  add('starts past zero', us[2])
}

{
  // Two clients, a reference across them, and a delete of the other's item.
  const a = doc(31)
  const b = doc(32)
  a.getText('t').insert(0, 'from a')
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a))
  const us = updatesOf(b, () => { b.getText('t').insert(3, 'B'); b.getText('t').delete(0, 2) })
  us.forEach((u, i) => add(`cross-client ${i}`, u))
}

{
  // Legacy ContentJSON (kind 2): hand-encoded, one struct of client 41 at clock 0 in root map 'm' key 'j'.
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, 1) // clients
  encoding.writeVarUint(enc, 1) // structs
  encoding.writeVarUint(enc, 41) // client
  encoding.writeVarUint(enc, 0) // clock
  encoding.writeUint8(enc, 2 | 0x20) // ContentJSON, has parentSub
  encoding.writeVarUint(enc, 1) // parent by name
  encoding.writeVarString(enc, 'm')
  encoding.writeVarString(enc, 'j')
  encoding.writeVarUint(enc, 3)
  for (const s of ['1', '"two"', 'undefined']) encoding.writeVarString(enc, s)
  encoding.writeVarUint(enc, 0) // delete set: no clients
  add('json (legacy)', encoding.toUint8Array(enc))
}

if (process.argv[2] === 'decode') {
  cases.length = 0
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  JSON.parse(Buffer.concat(chunks).toString()).forEach((b64, i) => add(`given ${i}`, new Uint8Array(Buffer.from(b64, 'base64'))))
}
process.stdout.write(JSON.stringify(cases))
