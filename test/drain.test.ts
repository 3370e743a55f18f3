import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { writeFileSync } from 'node:fs'
import WebSocket from 'ws'
import { run } from '../src/commands.js'
import { closeFrame, FrameCursor } from '../src/proxy/ws-relay.js'
import { admin, eventually, http1, openWs, serviceYaml, startBackend, startGateway, type Backend, type TestGateway } from './helpers/index.js'

async function st (gw: TestGateway): Promise<any> {
  return (await admin(gw.adminUrl, 'GET', '/v1/state')).json
}

async function pair (t: Tap.Test, extra = '', head = ''): Promise<{ b: Backend, g: Backend, gw: TestGateway }> {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `${head}services:\n${serviceYaml('svc', '/', [b], [g], extra)}`)
  return { b, g, gw }
}

t.test('frame cursor: boundaries across split headers and all length forms', async (t) => {
  const frame = (len: number, masked: boolean): Buffer => {
    const head = len < 126 ? [0x82, len] : len < 65536 ? [0x82, 126, len >> 8, len & 255] : [0x82, 127, 0, 0, 0, 0, (len >>> 24) & 255, (len >> 16) & 255, (len >> 8) & 255, len & 255]
    if (masked) head[1] |= 0x80
    return Buffer.concat([Buffer.from(head), masked ? Buffer.alloc(4, 9) : Buffer.alloc(0), Buffer.alloc(len, 1)])
  }
  for (const [len, masked] of [[0, false], [5, true], [125, false], [300, true], [70000, false]] as Array<[number, boolean]>) {
    const f = frame(len, masked)
    const c = new FrameCursor()
    // One byte at a time: the header straddles chunks.
    let boundaries = 0
    for (let i = 0; i < f.length; i++) {
      c.consume(f.subarray(i, i + 1), false)
      if (c.atBoundary) boundaries++
    }
    t.equal(boundaries, 1, `${len}${masked ? ' masked' : ''}: one boundary, at the end`)
  }
  const two = Buffer.concat([frame(10, false), frame(3, false)])
  const c = new FrameCursor()
  t.equal(c.consume(two.subarray(0, 5), true), 0, 'between frames already: stop at once')
  c.consume(two.subarray(0, 5), false)
  t.equal(c.consume(two.subarray(5), true), 7, 'inside a frame: pass on up to where it ends')
  t.ok(c.atBoundary)
  t.same([...closeFrame(1001, 'bye', false)], [0x88, 5, 0x03, 0xe9, 98, 121, 101])
  const masked = closeFrame(1001, '', true)
  t.equal(masked[1], 0x82, 'masked, length 2')
  t.same([masked[6] ^ masked[2], masked[7] ^ masked[3]], [0x03, 0xe9])
})

t.test('a 2 s request started before a flip finishes with 200 on the old color; then the color drains', async (t) => {
  const { b, gw } = await pair(t)
  const slow = http1(`${gw.url}/slow?ms=2000`)
  await eventually(() => b.seen.length === 1)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const during = (await st(gw)).services.svc.environments.blue
  t.match(during, { state: 'draining', inflight: 1, drain: { sticky: false } })
  t.equal((await http1(`${gw.url}/fresh`)).json.backend, 'green')
  const r = await slow
  t.equal(r.status, 200)
  t.equal(r.json.backend, 'blue')
  await eventually(async () => (await st(gw)).services.svc.environments.blue.state === 'idle')
  const drained = (await admin(gw.adminUrl, 'GET', '/v1/events?type=drained')).json.events
  t.equal(drained.length, 1)
  t.match(drained[0], { type: 'drained', service: 'svc', color: 'blue', how: 'empty', closedWebsockets: 0, closedRequests: 0 })
  t.ok(drained[0].durationMs >= 1500, `drained when the request ended (${drained[0].durationMs as number} ms)`)
})

t.test('counts return to exactly zero after client aborts and upstream resets, HTTP and WebSocket', async (t) => {
  const { b, gw } = await pair(t)
  const blue = (): any => gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.stats
  // Client abort mid-request.
  const ac = new AbortController()
  const aborted = http1(`${gw.url}/slow?ms=5000`, { signal: ac.signal }).catch((e: Error) => e)
  await eventually(() => blue().inflight === 1)
  ac.abort()
  await aborted
  await eventually(() => blue().inflight === 0)
  // Upstream reset mid-response.
  b.handler = (req, res) => {
    res.writeHead(200, { 'content-length': '100' })
    res.write('x')
    setTimeout(() => req.socket.destroy(), 10)
  }
  const reset = await http1(`${gw.url}/reset`).catch((e: Error) => e)
  t.type(reset, Error)
  await eventually(() => blue().inflight === 0)
  b.handler = undefined
  // WebSockets: the client hangs up, then the upstream does.
  const wsUrl = gw.url.replace('http', 'ws') + '/ws'
  const one = await openWs(wsUrl)
  const two = await openWs(wsUrl)
  t.equal(blue().websockets, 2)
  one.ws.terminate()
  await eventually(() => blue().websockets === 1)
  await b.close()
  await two.closed
  await eventually(() => blue().websockets === 0)
  t.equal(blue().inflight, 0)
  t.equal(blue().openHttp.size + blue().openWs.size, 0, 'nothing left tracked')
})

t.test('a WebSocket on the old color keeps talking after the flip, then gets 1001 at the drain timeout', async (t) => {
  const { gw } = await pair(t, '    drain: { timeout: 600ms }\n')
  const ws = await openWs(gw.url.replace('http', 'ws') + '/chat')
  ws.ws.send('before')
  t.equal(await ws.next(), 'blue: before')
  const flipped = Date.now()
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  ws.ws.send('after')
  t.equal(await ws.next(), 'blue: after', 'still on blue after the flip')
  t.equal((await st(gw)).services.svc.environments.blue.state, 'draining')
  const code = await ws.closed
  t.equal(code, 1001, 'closed with 1001 going away')
  const waited = Date.now() - flipped
  t.ok(waited >= 550 && waited < 3000, `at the drain timeout (${waited} ms)`)
  await eventually(async () => (await st(gw)).services.svc.environments.blue.state === 'idle')
  const ev = (await admin(gw.adminUrl, 'GET', '/v1/events?type=drained')).json.events[0]
  t.match(ev, { how: 'timeout', closedWebsockets: 1 })
  // A big message in flight when the close comes is not cut: the cursor waits for its end.
  const again = await openWs(gw.url.replace('http', 'ws') + '/chat')
  again.ws.send('x'.repeat(200_000))
  t.equal((await again.next()).length, 'green: '.length + 200_000)
  again.ws.close()
})

t.test('drain --wait returns when the last request ends; the API refuses to drain the live color', async (t) => {
  const { b, gw } = await pair(t, '    drain: { timeout: 20s }\n')
  const slow = http1(`${gw.url}/slow?ms=700`)
  await eventually(() => b.seen.length === 1)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const out: string[] = []
  const started = Date.now()
  const code = await run(['drain', 'svc', '--wait'], { out: (s) => out.push(s), err: (s) => out.push(s), env: { SWITCHYARD_ADMIN_URL: gw.adminUrl } })
  t.equal(code, 0)
  t.ok(Date.now() - started < 5000, 'not the 20 s timeout')
  t.equal((await slow).status, 200)
  t.match(out.at(-1), /^svc blue: drained in \d+\.\ds, empty$/)
  t.match(out[0], /^svc blue: draining, 1 in-flight, 0 WebSockets, \d+s left$/, 'progress while waiting')

  const live = await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', { color: 'green' })
  t.equal(live.status, 409)
  t.equal(live.json.error, 'live_color')
  const idle = await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', {})
  t.match(idle.json, { service: 'svc', color: 'blue' })
  const bad = await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', { timeout: 'soon' })
  t.equal(bad.status, 400)
  t.match(bad.json.message, /"timeout" must be a duration/)
})

t.test('a manual drain with a short timeout closes what is left and answers with wait', async (t) => {
  const { b, gw } = await pair(t, '    drain: { timeout: 1m }\n')
  const slow = http1(`${gw.url}/slow?ms=10000`).catch((e: Error) => e)
  await eventually(() => b.seen.length === 1)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const r = await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', { color: 'blue', wait: true, timeout: '200ms' })
  t.equal(r.status, 200)
  t.match(r.json, { service: 'svc', color: 'blue', state: 'idle', how: 'timeout', closedRequests: 1 })
  const cut = await slow
  t.type(cut, Error, `the long request was cut at the deadline (${JSON.stringify(cut)})`)
})

t.test('drain.onDrained gets the event, retried until it is accepted', async (t) => {
  const got: any[] = []
  let calls = 0
  const hook = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => { body += String(c) })
    req.on('end', () => {
      calls++
      got.push(JSON.parse(body))
      res.writeHead(calls === 1 ? 503 : 204).end()
    })
  })
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve))
  t.teardown(() => hook.close())
  const url = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/scale-down`
  const { gw } = await pair(t, `    drain: { timeout: 5s, onDrained: '${url}' }\n`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { reason: 'v2' })).status, 200)
  await eventually(() => calls === 2, { timeout: 5000 })
  t.match(got[1], { type: 'drained', service: 'svc', color: 'blue', how: 'empty' })
  t.same(got[0], got[1], 'the same event again after a refusal')
})

t.test('sticky sessions stay on the draining color, then move to live with the cookie rewritten', async (t) => {
  const { gw } = await pair(t, '    sticky: { cookie: sy-color }\n    drain: { timeout: 800ms }\n    preview: { header: x-color }\n')
  const first = await http1(`${gw.url}/a`)
  t.equal(first.json.backend, 'blue')
  t.equal(first.headers['set-cookie'], 'sy-color=blue; Path=/; HttpOnly; SameSite=Lax', 'the gateway sets the cookie')
  const again = await http1(`${gw.url}/a`, { headers: { cookie: 'sy-color=blue' } })
  t.equal(again.headers['set-cookie'], undefined, 'no need to set it again')
  t.equal((await http1(`${gw.url}/a`, { headers: { 'x-color': 'green' } })).headers['set-cookie'], undefined, 'preview traffic is not pinned')

  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const pinned = await http1(`${gw.url}/a`, { headers: { cookie: 'other=1; sy-color=blue' } })
  t.equal(pinned.json.backend, 'blue', 'a pinned session stays on the draining color')
  t.equal(pinned.headers['set-cookie'], undefined)
  t.equal((await st(gw)).services.svc.environments.blue.state, 'draining', 'sticky keeps the color draining though nothing is in flight')
  const fresh = await http1(`${gw.url}/a`)
  t.equal(fresh.json.backend, 'green', 'a new session goes live')
  t.equal(fresh.headers['set-cookie'], 'sy-color=green; Path=/; HttpOnly; SameSite=Lax')

  await eventually(async () => (await st(gw)).services.svc.environments.blue.state === 'idle')
  const moved = await http1(`${gw.url}/a`, { headers: { cookie: 'sy-color=blue' } })
  t.equal(moved.json.backend, 'green', 'once idle, the session moves to live')
  t.equal(moved.headers['set-cookie'], 'sy-color=green; Path=/; HttpOnly; SameSite=Lax', 'and the cookie is rewritten')
})

t.test('reload: an invalid file is refused and the old routes serve; a valid one adds a service without dropping anything', async (t) => {
  const { b, g, gw } = await pair(t)
  const ws = await openWs(gw.url.replace('http', 'ws') + '/chat')
  const slow = http1(`${gw.url}/slow?ms=800`)
  await eventually(() => b.seen.some((s) => s.url.startsWith('/slow')))

  const same = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
  t.same(same.json, { generation: 0, changed: false, added: [], removed: [], updated: [] }, 'an unchanged file does nothing')

  writeFileSync(gw.configFile, `log: { access: false }\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [not a url] }\n`)
  const bad = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
  t.equal(bad.status, 400)
  t.equal(bad.json.error, 'config_invalid')
  t.match(bad.json.problems, [{ path: 'services.svc.blue.targets[0]', message: /not a URL/ }])
  t.equal((await http1(`${gw.url}/x`)).json.backend, 'blue', 'the running config stays')

  const other = await startBackend(t, 'other')
  writeFileSync(gw.configFile, `log: { access: false }\nservices:\n${serviceYaml('svc', '/', [b], [g])}\n${serviceYaml('other', '/other', [other], [other])}`)
  const ok = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
  t.equal(ok.status, 200)
  t.same(ok.json, { generation: 1, changed: true, added: ['other'], removed: [], updated: [] })
  t.equal((await http1(`${gw.url}/other/1`)).json.backend, 'other', 'the new service routes')
  ws.ws.send('still here')
  t.equal(await ws.next(), 'blue: still here', 'the open WebSocket survived')
  const r = await slow
  t.equal(r.status, 200, 'the in-flight request survived')
  t.match((await admin(gw.adminUrl, 'GET', '/v1/events?type=reload')).json.events, [{ type: 'reload', generation: 1, added: ['other'] }])

  writeFileSync(gw.configFile, `log: { access: false }\nlisten: 127.0.0.1:1\nservices:\n${serviceYaml('svc', '/', [b], [g])}`)
  const restart = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
  t.equal(restart.status, 400)
  t.match(restart.json.message, /cannot change listen/)
  ws.ws.close()
})

t.test('a client leaving during the WebSocket handshake leaves nothing counted or open', async (t) => {
  const { b, gw } = await pair(t)
  let upstreamSockets = 0
  // The upstream's 101 comes late, after the client left: wait for that moment, not a guessed time.
  let lateAnswer!: () => void
  const answeredLate = new Promise<void>((resolve) => { lateAnswer = resolve })
  b.server.removeAllListeners('upgrade')
  b.server.on('upgrade', (req, socket) => {
    upstreamSockets++
    // The gateway hanging up shows as FIN (end) on this half-open server socket.
    let open = true
    const gone = (): void => {
      if (open) {
        open = false
        upstreamSockets--
        socket.destroy()
      }
    }
    socket.on('end', gone)
    socket.on('close', gone)
    socket.on('error', gone)
    setTimeout(() => {
      lateAnswer()
      if (socket.destroyed || !socket.writable) return
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: x\r\n\r\n`)
    }, 150)
  })
  const net = await import('node:net')
  const s = net.connect(gw.gateway.address.port, '127.0.0.1')
  s.on('error', () => {})
  s.once('connect', () => {
    s.write('GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  })
  await eventually(() => upstreamSockets === 1)
  s.destroy()
  await eventually(() => upstreamSockets === 0, { timeout: 2000 })
  await answeredLate
  // Whatever the late 101 could have set off has run once the loop turns after it.
  await new Promise((resolve) => setImmediate(resolve))
  const blue = gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.stats
  t.equal(blue?.websockets, 0)
  t.equal(blue?.openWs.size, 0)
})

t.test('a refused upgrade is relayed whole and length-delimited', async (t) => {
  const { b, gw } = await pair(t)
  b.server.removeAllListeners('upgrade')
  b.server.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\nx-why: token\r\n\r\n5\r\nnope!\r\n0\r\n\r\n'))
  const reply = await new Promise<{ code: number, body: string, headers: Record<string, unknown> }>((resolve) => {
    const ws = new WebSocket(gw.url.replace('http', 'ws') + '/ws')
    ws.on('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body, headers: res.headers }))
    })
    ws.on('error', () => {})
  })
  t.equal(reply.code, 401)
  t.equal(reply.body, 'nope!')
  t.equal(reply.headers['x-why'], 'token')
  t.equal(reply.headers['content-length'], '5')
  t.equal(reply.headers['transfer-encoding'], undefined)
})

t.test('after an auto-revert, sticky sessions are not held on the failing color', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g], '    sticky: { cookie: sy }\n    passive: false\n    guard: { window: 30s, maxErrorRate: 0.1, minRequests: 3 }\n    drain: { timeout: 30s }\n')}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  g.handler = (_req, res) => { res.writeHead(500).end('broken') }
  for (let i = 0; i < 3; i++) await http1(`${gw.url}/x`, { headers: { cookie: 'sy=green' } })
  await eventually(async () => (await st(gw)).services.svc.live === 'blue')
  const r = await http1(`${gw.url}/x`, { headers: { cookie: 'sy=green' } })
  t.equal(r.status, 200)
  t.equal(r.json.backend, 'blue', 'the pinned session moved off the reverted color')
  t.equal(r.headers['set-cookie'], 'sy=blue; Path=/; HttpOnly; SameSite=Lax')
})
