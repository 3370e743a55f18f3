// Child process: a Switchyard gateway from dist/ (run `npm run build` first).
//   node switchyard.js --dir TEMPDIR --config-json '{"svc": {"blue": [...], "green": [...]}}'
// The YAML config and the state file live in TEMPDIR (removed on exit, by this
// process and by the parent).
// Reports { type: 'ready', url, adminUrl }.

import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { exitWithParent, parseArgs, reportStartupError } from './children.js'

const args = parseArgs()
let gw

// The dir is this process's own: it removes it too, so nothing is left even
// when the parent was killed with SIGKILL and could not clean up.
const go = exitWithParent(async () => {
  try {
    if (gw !== undefined) await gw.stop(1000)
  } finally {
    if (typeof args.dir === 'string') rmSync(args.dir, { recursive: true, force: true })
  }
})
process.on('message', (msg) => { if (msg?.type === 'stop') void go(0) })

try {
  if (typeof args.dir !== 'string') throw new Error('--dir is required')
  const services = JSON.parse(String(args['config-json']))
  const { parseConfig } = await import('../../dist/config/load.js')
  const { Gateway } = await import('../../dist/gateway.js')

  const lines = ['listen: 127.0.0.1:0', 'admin:', '  listen: 127.0.0.1:0', 'services:']
  for (const [name, svc] of Object.entries(services)) {
    lines.push(`  ${name}:`)
    lines.push(`    match: { pathPrefix: ${svc.pathPrefix ?? '/'} }`)
    if (svc.live !== undefined) lines.push(`    live: ${svc.live}`)
    lines.push(`    blue: { targets: [${svc.blue.join(', ')}] }`)
    lines.push(`    green: { targets: [${svc.green.join(', ')}] }`)
  }
  const yaml = lines.join('\n') + '\n'
  const file = join(args.dir, 'switchyard.yaml')
  writeFileSync(file, yaml)
  const config = parseConfig(yaml, { file, env: {} })
  gw = new (Gateway)(config, { listen: { host: '127.0.0.1', port: 0 }, adminListen: { host: '127.0.0.1', port: 0 } })
  await gw.start()
  process.send({ type: 'ready', url: gw.url, adminUrl: gw.adminUrl, pid: process.pid })
} catch (err) {
  reportStartupError(err)
}
