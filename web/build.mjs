// Builds the page into server/static/ (shipped in the Python package, so `chatdoc serve` needs no Node):
//
//   npm run build --prefix web              # into server/static
//   node web/build.mjs --outdir DIR         # elsewhere (the test that the shipped bundle is what this builds)
//
// esbuild bundles src/page/main.js into app-<hash>.js and app-<hash>.css; index.html is web/index.html with `/static/app.js` and `/static/app.css` rewritten to the
// hashed names, so the server can serve the bundle as immutable and only index.html as no-cache. The output
// is a function of the sources and the pinned esbuild: no paths of the build machine, no dates.
import { build } from 'esbuild'
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const argv = process.argv.slice(2)
const at = argv.indexOf('--outdir')
const outdir = resolve(at >= 0 ? argv[at + 1] : join(here, '..', 'server', 'static'))

const entry = join(here, 'src', 'page', 'main.js')

mkdirSync(outdir, { recursive: true })
for (const name of readdirSync(outdir)) {
  if (/^app-[A-Z0-9]+\.(js|css)$/.test(name) || name === 'index.html') rmSync(join(outdir, name))
}

const result = await build({
  absWorkingDir: here, // paths in the output are relative to web/, never the build machine's
  entryPoints: { app: relative(here, entry) },
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  minify: true,
  legalComments: 'eof', // the bundled packages' licence notices stay with their code
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  outdir,
  metafile: true,
  logLevel: 'warning'
})

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p))
const js = outputs.find((n) => n.endsWith('.js'))
const css = outputs.find((n) => n.endsWith('.css'))
let html = readFileSync(join(here, 'index.html'), 'utf8')
html = html.replaceAll('/static/app.js', `/static/${js}`)
html = css ? html.replaceAll('/static/app.css', `/static/${css}`) : html.replace(/<link[^>]*href="\/static\/app\.css"[^>]*>\n?/g, '')
writeFileSync(join(outdir, 'index.html'), html)
const size = (name) => readFileSync(join(outdir, name)).length
console.log(`built ${relative(process.cwd(), outdir) || '.'}: ${[js, css].filter(Boolean).map((n) => `${n} ${size(n)} B`).join(', ')}, index.html`)
