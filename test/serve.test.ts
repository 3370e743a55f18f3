import t from 'tap'
import net from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseConfig } from '../src/config/load.js'
import { startDemoBackends, stopDemoBackends } from '../src/demo.js'
import WebSocket from 'ws'
import { eventually, http1, listening, serve, serviceYaml, startBackend, tempDir } from './helpers/index.js'

t.test('SIGTERM stops accepting, lets the in-flight request finish, exits 0', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const dir = tempDir(t)
  const file = join(dir, 'sy.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nservices:\n${serviceYaml('svc', '/', [b], [g])}`)
  const p = serve(t, ['serve', '--config', file])
  const { port } = await listening(p)
  const slow = http1(`http://127.0.0.1:${port}/slow?ms=600`)
  for (let i = 0; i < 100 && b.seen.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  p.kill('SIGTERM')
  const r = await slow
  t.equal(r.status, 200, 'the in-flight request finished')
  t.equal(r.json.backend, 'blue')
  t.equal(await p.exit, 0)
  t.ok(p.lines.some((l) => l.msg === 'stopped'))
  const refused = await new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', () => resolve(true))
  })
  t.ok(refused, 'no longer listening')
})

t.test('SIGHUP reloads the config; SIGTERM sends open WebSockets 1001 and exits 0', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const o = await startBackend(t, 'other')
  const dir = tempDir(t)
  const file = join(dir, 'sy.yaml')
  const head = 'listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nservices:\n'
  writeFileSync(file, head + serviceYaml('svc', '/', [b], [g]))
  const p = serve(t, ['serve', '--config', file])
  const { port } = await listening(p)
  t.equal((await http1(`http://127.0.0.1:${port}/other/x`)).json.backend, 'blue')

  writeFileSync(file, head + serviceYaml('svc', '/', [b], [g]) + serviceYaml('other', '/other', [o], [o]))
  p.kill('SIGHUP')
  await eventually(() => p.lines.some((l) => l.msg === 'config reloaded'))
  t.match(p.lines.find((l) => l.msg === 'config reloaded'), { added: ['other'], generation: 1 })
  t.equal((await http1(`http://127.0.0.1:${port}/other/x`)).json.backend, 'other')

  writeFileSync(file, 'services: [')
  p.kill('SIGHUP')
  await eventually(() => p.lines.some((l) => l.msg === 'reload refused, the running config stays'))
  t.equal((await http1(`http://127.0.0.1:${port}/other/x`)).json.backend, 'other', 'an invalid file changes nothing')

  const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`)
  await new Promise((resolve) => ws.once('open', resolve))
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  p.kill('SIGTERM')
  t.equal(await closed, 1001, 'the WebSocket is told the server is going away')
  t.equal(await p.exit, 0)
})

t.test('an invalid config exits non-zero without listening', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'bad.yaml')
  writeFileSync(file, 'listen: 127.0.0.1:0\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [nope] }\n')
  const p = serve(t, ['serve', '--config', file])
  t.equal(await p.exit, 1)
  t.match(p.stderr(), /services\.svc\.blue\.targets\[0\]: not a URL/)
  t.notOk(p.lines.some((l) => l.msg === 'switchyard listening'))
})

t.test('demo backends answer with service, color and version on each loopback target', async (t) => {
  const ports = await Promise.all([0, 1].map(async () => await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })))
  const config = parseConfig(`services:
  users:
    match: { pathPrefix: /api/users }
    blue: { targets: [http://127.0.0.1:${ports[0]}] }
    green: { targets: [http://127.0.0.1:${ports[1]}, https://example.com] }
`)
  const demo = await startDemoBackends(config)
  t.teardown(async () => await stopDemoBackends(demo))
  t.equal(demo.length, 2, 'only loopback http targets get a demo backend')
  const blue = await http1(`http://127.0.0.1:${ports[0]}/api/users/1`)
  t.match(blue.json, { service: 'users', color: 'blue', version: '1.0.0', path: '/api/users/1' })
  const green = await http1(`http://127.0.0.1:${ports[1]}/api/users/1`)
  t.match(green.json, { service: 'users', color: 'green', version: '1.1.0' })
  await t.rejects(startDemoBackends(config), /cannot listen/, 'a taken port is a clear error')
})
