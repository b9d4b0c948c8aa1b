// The `--key value` command line of the Node test peers: {key: value}; a `--flag` followed by another
// option (or nothing) is true.
export function parseArgs (argv) {
  const args = {}
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '')
    const next = argv[i + 1]
    if (next === undefined || next.startsWith('--')) args[key] = true
    else { args[key] = next; i++ }
  }
  return args
}
