// Child process: a Switchyard gateway from dist/ (run `npm run build` first).
//   node switchyard.js --dir TEMPDIR --config-json '{"svc": {"blue": [...], "green": [...]}}'
// A service may also carry `health`, `passive`, `guard`, `gate`, `timeouts`,
// `drain` or `shadow`: an object (durations as strings, e.g. "500ms") or false, written into
// the YAML as they are (JSON is YAML flow syntax).
// The YAML config and the state file live in TEMPDIR (removed on exit, by this
// process and by the parent).
// --top-json '{"metrics": {"enabled": false}}': extra top-level config sections (optional;
// the access log is off unless this turns it on).
// Reports { type: 'ready', url, adminUrl }.
// { type: 'memory', gc } replies with process.memoryUsage() (after a full GC
// when gc is true and the child runs with --expose-gc).
// --trace: install the diagnostics of trace-gateway.js (fsyncs, commits, state
// file saves, routing swaps, target picks, event-loop lag); { type: 'trace',
// after } replies with them. A module it cannot find only turns tracing off.

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
let tracer
process.on('message', (msg) => {
  if (msg?.type === 'stop') void go(0)
  else if (msg?.type === 'trace') process.send({ type: 'reply', id: msg.id, trace: tracer?.snapshot(msg.after) ?? null })
  else if (msg?.type === 'memory') {
    // { gc: true } runs a full GC first when the child has --expose-gc (soak.js starts it so).
    const gcRan = msg.gc === true && typeof globalThis.gc === 'function'
    if (gcRan) globalThis.gc()
    process.send({ type: 'reply', id: msg.id, gcRan, memory: process.memoryUsage() })
  }
})

try {
  if (typeof args.dir !== 'string') throw new Error('--dir is required')
  const services = JSON.parse(String(args['config-json']))
  if (args.trace === true) {
    tracer = await import('./trace-gateway.js')
    await tracer.install()
    const from = async (path, name) => { try { return (await import(path))[name] } catch { return undefined } }
    tracer.attach({
      Controller: await from('../../dist/control/controller.js', 'Controller'),
      FileStateStore: await from('../../dist/state/file-store.js', 'FileStateStore'),
      Switcher: await from('../../dist/routing/snapshot.js', 'Switcher'),
      TargetSet: await from('../../dist/upstream/target-set.js', 'TargetSet'),
    })
  }
  const { parseConfig } = await import('../../dist/config/load.js')
  const { Gateway } = await import('../../dist/gateway.js')

  const lines = ['listen: 127.0.0.1:0', 'admin:', '  listen: 127.0.0.1:0', 'services:']
  // --top-json: extra top-level sections, e.g. '{"log": {"access": false}}', written before `services:` as they are.
  // The access log is off unless asked for: benches measure the proxy, not a terminal.
  const top = { log: { access: false }, ...(typeof args['top-json'] === 'string' ? JSON.parse(args['top-json']) : {}) }
  for (const [k, v] of Object.entries(top)) lines.splice(lines.length - 1, 0, `${k}: ${JSON.stringify(v)}`)
  for (const [name, svc] of Object.entries(services)) {
    lines.push(`  ${name}:`)
    lines.push(`    match: { pathPrefix: ${svc.pathPrefix ?? '/'} }`)
    if (svc.live !== undefined) lines.push(`    live: ${svc.live}`)
    lines.push(`    blue: { targets: [${svc.blue.join(', ')}] }`)
    lines.push(`    green: { targets: [${svc.green.join(', ')}] }`)
    for (const key of ['timeouts', 'health', 'passive', 'gate', 'guard', 'drain', 'shadow']) {
      if (svc[key] !== undefined) lines.push(`    ${key}: ${JSON.stringify(svc[key])}`)
    }
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
