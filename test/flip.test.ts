import t from 'tap'
import WebSocket from 'ws'
import { admin, eventually, http1, openWs, serviceYaml, startBackend, startGateway } from './helpers/index.js'

t.test('a flip of several services is one swap: no request started after it returns sees an old color', async (t) => {
  const [ub, ug, ob, og] = await Promise.all(['users-blue', 'users-green', 'orders-blue', 'orders-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:
${serviceYaml('users', '/users', [ub], [ug])}
${serviceYaml('orders', '/orders', [ob], [og])}`)
  let flippedAt = Infinity
  let stop = false
  const samples: Array<{ service: string, started: number, color: string }> = []
  const loop = async (service: string): Promise<void> => {
    while (!stop) {
      const started = performance.now()
      const r = await http1(`${gw.url}/${service}/x`)
      if (r.status !== 200) throw new Error(`status ${r.status}`)
      samples.push({ service, started, color: String(r.json.backend).split('-')[1] })
    }
  }
  const loops = ['users', 'orders', 'users', 'orders', 'users', 'orders'].map(loop)
  await eventually(() => samples.length > 50)
  const res = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users', 'orders'], reason: 'release 2' })
  flippedAt = performance.now()
  await eventually(() => samples.filter((s) => s.started > flippedAt).length > 50)
  stop = true
  await Promise.all(loops)

  t.equal(res.status, 200)
  t.same(res.json.changes, [{ service: 'users', from: 'blue', to: 'green' }, { service: 'orders', from: 'blue', to: 'green' }])
  t.equal(res.json.generation, 1, 'one generation for the whole flip')
  const after = samples.filter((s) => s.started > flippedAt)
  t.same(after.filter((s) => s.color !== 'green'), [], 'every request after the flip returned went to green')
  t.ok(samples.some((s) => s.color === 'blue'), 'blue served before the flip')
  // No service ever goes back to blue once one of its requests saw green.
  for (const service of ['users', 'orders']) {
    const seq = samples.filter((s) => s.service === service).sort((a, b) => a.started - b.started)
    const firstGreen = seq.findIndex((s) => s.color === 'green')
    const lateBlue = seq.slice(firstGreen).filter((s) => s.color === 'blue' && s.started > seq[firstGreen].started)
    t.ok(lateBlue.every((s) => s.started < flippedAt), `${service}: blue only for requests that started before the flip`)
  }
})

t.test('an in-flight slow request finishes on its old color after a flip', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const slow = http1(`${gw.url}/slow?ms=800`)
  await eventually(() => b.seen.some((s) => s.url.startsWith('/slow')))
  const flip = await admin(gw.adminUrl, 'POST', '/v1/services/svc/flip', {})
  t.equal(flip.status, 200)
  const state = await admin(gw.adminUrl, 'GET', '/v1/state')
  const envs = state.json.services.svc.environments
  t.equal(envs.blue.state, 'draining', 'the old color still has a request')
  t.equal(envs.blue.inflight, 1)
  t.equal(envs.blue.targets[0].inflight, 1)
  t.equal(envs.green.state, 'live')
  t.equal((await http1(`${gw.url}/now`)).json.backend, 'green', 'new requests go to the new color')
  const done = await slow
  t.equal(done.status, 200)
  t.equal(done.json.backend, 'blue', 'the slow request finished on blue')
  await eventually(async () => (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments.blue.state === 'idle')
})

t.test('client abort of an in-flight request settles the counters', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const ac = new AbortController()
  const pending = http1(`${gw.url}/slow?ms=5000`, { signal: ac.signal }).catch((err: Error) => err)
  await eventually(() => b.seen.length === 1)
  const route = gw.gateway.controller.snapshots.current.services.get('svc')
  t.equal(route?.colors.blue.stats.inflight, 1)
  ac.abort()
  t.type(await pending, Error)
  await eventually(() => route?.colors.blue.stats.inflight === 0)
  t.equal(route?.colors.blue.targets.endpoints[0].target.inflight, 0)
})

t.test('WebSockets go to the live color and keep working on the old one after a flip', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/ws', [b], [g], '    preview: { header: x-switchyard-color }\n')}`)
  const wsUrl = gw.url.replace('http', 'ws') + '/ws/chat'
  const first = await openWs(wsUrl)
  first.ws.send('hello')
  t.equal(await first.next(), 'blue: hello')
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments.blue.websockets, 1)

  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const second = await openWs(wsUrl)
  second.ws.send('hi')
  t.equal(await second.next(), 'green: hi', 'a new WebSocket goes to the new live color')
  first.ws.send('still there?')
  t.equal(await first.next(), 'blue: still there?', 'the old WebSocket stays on its color')
  const state = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments
  t.equal(state.blue.websockets, 1)
  t.equal(state.blue.state, 'draining')
  t.equal(state.green.websockets, 1)

  first.ws.close()
  second.ws.close()
  await eventually(async () => {
    const e = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments
    return e.blue.websockets === 0 && e.green.websockets === 0 && e.blue.state === 'idle'
  })
})

t.test('WebSocket upgrade errors: no route 404, refused by upstream relayed, dead upstream 502', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  b.server.removeAllListeners('upgrade')
  b.server.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'))
  const gw = await startGateway(t, `services:
${serviceYaml('svc', '/ws', [b], [g])}
  dead:
    match: { pathPrefix: /dead }
    blue: { targets: [http://127.0.0.1:1] }
`)
  const status = async (path: string): Promise<number> => await new Promise((resolve) => {
    const ws = new WebSocket(gw.url.replace('http', 'ws') + path)
    ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); ws.terminate() })
    ws.on('error', () => {})
  })
  t.equal(await status('/nowhere'), 404)
  t.equal(await status('/ws'), 403)
  t.equal(await status('/dead'), 502)
})
