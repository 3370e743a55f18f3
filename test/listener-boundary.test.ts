// The public listener boundary (local listener / worker pool) as the gateway
// starts and stops it: start failures, smoke checks and 1001s in worker mode.

import t, { type Test } from 'tap'
import net, { type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { parseConfig } from '../src/config/load.js'
import { Gateway } from '../src/gateway.js'
import { admin, closedPort, configFile, listening, openWs, refuses, serve, serviceYaml, startBackend, tempDir } from './helpers/index.js'

/** A server holding a port, closed at teardown. */
async function holdPort (t: Test): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => await new Promise<void>((resolve) => s.close(() => resolve())))
  return (s.address() as AddressInfo).port
}

for (const taken of ['public', 'admin'] as const) {
  t.test(`a start that fails on a taken ${taken} port leaves nothing behind`, async (t) => {
    const b = await startBackend(t, 'blue')
    const g = await startBackend(t, 'green')
    const dir = tempDir(t)
    const file = join(dir, 'sy.yaml')
    const yaml = `log: { access: false }\nservices:\n${serviceYaml('svc', '/', [b], [g], '    health: { interval: 50ms, timeout: 40ms }\n')}`
    writeFileSync(file, yaml)
    const busy = await holdPort(t)
    const other = await closedPort()
    const [pub, adm] = taken === 'public' ? [busy, other] : [other, busy]
    const gateway = new Gateway(parseConfig(yaml, { file, env: {} }), { env: {}, listen: { host: '127.0.0.1', port: pub }, adminListen: { host: '127.0.0.1', port: adm } })
    t.teardown(async () => await gateway.stop(0))
    await t.rejects(gateway.start(), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${busy}`), 'the start fails naming the taken port')
    t.ok(await refuses(other), `the ${taken === 'public' ? 'admin' : 'public'} port is not left listening`)
    // Probes stop with the failed start: no /healthz after a few intervals.
    await new Promise((resolve) => setTimeout(resolve, 150))
    const probes = b.probes.length + g.probes.length
    await new Promise((resolve) => setTimeout(resolve, 300))
    t.equal(b.probes.length + g.probes.length, probes, 'no probe runs after the failed start')
  })
}

t.test('serve --workers 2: the gate\'s smoke checks go to the workers, pinned to the color being flipped to', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [b], [g], '    passive: false\n    smoke: [{ path: /smoke, expectStatus: 200, bodyContains: green }]\n')}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  await listening(p)
  const up = p.lines.find((l) => l.msg === 'switchyard listening')
  const adminUrl = `http://${up.admin as string}`

  const toGreen = await admin(adminUrl, 'POST', '/v1/flip', {})
  t.equal(toGreen.status, 200, 'the smoke check passes on green, answered by a worker')
  t.ok(g.seen.some((s) => s.url === '/smoke'), 'green got the smoke request while blue was live')
  t.notOk(b.seen.some((s) => s.url === '/smoke'), 'blue did not')
  const toBlue = await admin(adminUrl, 'POST', '/v1/flip', {})
  t.equal(toBlue.status, 409, 'the smoke check run on blue fails (its body names blue)')
  t.equal(toBlue.json.error, 'gate_failed')
  t.ok(b.seen.some((s) => s.url === '/smoke'), 'blue got that smoke request while green was live')
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)
})

t.test('serve --workers 2: SIGTERM tells open WebSockets 1001 and exits 0', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [b], [g], '    drain: { timeout: 3s }\n')}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  const { port } = await listening(p)
  const { ws, next, closed } = await openWs(`ws://127.0.0.1:${port}/ws`)
  ws.send('hi')
  t.equal(await next(), 'blue: hi')
  p.kill('SIGTERM')
  t.equal(await closed, 1001, 'the WebSocket is told 1001 going away')
  t.equal(await p.exit, 0)
})
