// Review of the issue-14 HTTP/2 paths: defects found by reading the code,
// each pinned by a test that failed before its fix.

import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { readFileSync, writeFileSync } from 'node:fs'
import WebSocket from 'ws'
import { makeCert } from './helpers/certs.js'
import { admin, eventually, serviceYaml, startBackend, startGateway, tempDir, type TestGateway } from './helpers/index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

interface H2Reply {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  trailers: IncomingHttpHeaders | undefined
  rstCode: number
}

/** One h2c session to the gateway, closed at teardown. */
function connect (t: Teardown, gw: TestGateway): ClientHttp2Session {
  const session = http2.connect(gw.url)
  session.on('error', () => {})
  t.teardown(() => { session.destroy() })
  return session
}

/** One request on `session`: what came back when the stream closed, reset or not. */
async function h2 (session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}, body?: Buffer, onSent?: () => void): Promise<H2Reply> {
  return await new Promise((resolve) => {
    const req = session.request({ ':path': path, ':method': body === undefined ? 'GET' : 'POST', ...headers }, { endStream: body === undefined })
    let head: IncomingHttpHeaders = {}
    let trailers: IncomingHttpHeaders | undefined
    const chunks: Buffer[] = []
    req.on('response', (h) => { head = h })
    req.on('trailers', (h) => { trailers = h })
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('error', () => {})
    req.on('close', () => resolve({ status: Number(head[':status'] ?? 0), headers: head, body: Buffer.concat(chunks), trailers, rstCode: req.rstCode ?? 0 }))
    if (body !== undefined) req.end(body, onSent)
  })
}

/** An h2c upstream: /hold answers when `release` is called; /echo answers with the body's length and hash. */
async function startH2Upstream (t: Teardown, settings: http2.Settings = {}): Promise<{ url: string, held: ServerHttp2Stream[], arrived: () => Promise<void> }> {
  const server = http2.createServer({ settings })
  const held: ServerHttp2Stream[] = []
  let waiters: Array<() => void> = []
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {})
    if (headers[':path'] === '/hold') {
      held.push(stream)
      const w = waiters
      waiters = []
      for (const fn of w) fn()
      return
    }
    const hash = createHash('sha256')
    let length = 0
    stream.on('data', (c: Buffer) => { hash.update(c); length += c.length })
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' })
      stream.end(JSON.stringify({ length, sha: hash.digest('hex') }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held,
    arrived: async () => await new Promise<void>((resolve) => waiters.push(resolve)),
  }
}

t.test('a request body that arrives while the request waits for a stream slot reaches the upstream whole', async (t) => {
  // One session (maxConnections 1) whose peer allows one stream: the second request waits for the first to finish.
  const up = await startH2Upstream(t, { maxConcurrentStreams: 1 })
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${up.url}] }
    limits: { maxConnections: 1 }
    timeouts: { connect: 5s, response: 5s }
`)
  const svc = gw.gateway.config.services.svc
  const pool = gw.gateway.registry.target(up.url).h2Pool(svc.timeouts, svc.limits)
  const s = connect(t, gw)
  const arrived = up.arrived()
  const first = h2(s, '/hold')
  await arrived
  const payload = randomBytes(300 * 1024)
  let sent: () => void = () => {}
  const allSent = new Promise<void>((resolve) => { sent = resolve })
  const second = h2(s, '/echo', { 'content-type': 'application/octet-stream' }, payload, () => sent())
  await eventually(() => pool.waiting === 1)
  // The client sends all it can while the request waits: the whole body when the gateway reads it meanwhile,
  // else as much as the stream's window lets it (then nothing says so but time: bounded at 1s).
  await Promise.race([allSent, new Promise<void>((resolve) => setTimeout(resolve, 1000).unref())])
  ;(up.held.shift() as ServerHttp2Stream).respond({ ':status': 200 }, { endStream: true })
  t.equal((await first).status, 200)
  const r = await second
  t.equal(r.status, 200)
  t.same(JSON.parse(r.body.toString()), { length: payload.length, sha: createHash('sha256').update(payload).digest('hex') }, 'the upstream got the body whole')
})

t.test('an HTTP/2 stream to an h2c service still open at the drain deadline is reset with CANCEL, counted once', async (t) => {
  const blue = await startH2Upstream(t)
  const green = await startH2Upstream(t)
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
    drain: { timeout: 1m }
`)
  const s = connect(t, gw)
  const arrived = blue.arrived()
  const held = h2(s, '/hold')
  await arrived
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const r = await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', { color: 'blue', wait: true, timeout: '200ms' })
  t.match(r.json, { state: 'idle', how: 'timeout', closedRequests: 1 })
  const cut = await held
  t.equal(cut.rstCode, http2.constants.NGHTTP2_CANCEL, 'RST_STREAM CANCEL, as on HTTP/1.1 upstreams (README: a drain deadline resets it with CANCEL)')
  t.equal(gw.gateway.registry.target(blue.url).inflight, 0)
  t.equal(gw.gateway.registry.colorStats('svc', 'blue').inflight, 0)
})

t.test('HTTPS HTTP/1.1 clients of an h2c service, on both engines: handed to the HTTP/2 forwarder with X-Forwarded-Proto https, keep-alive kept', async (t) => {
  const dir = tempDir(t)
  const cert = makeCert(dir, 'site', { names: ['site.test'] })
  const ca = readFileSync(cert.cert)
  const server = http2.createServer()
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' })
      stream.end(JSON.stringify({ path: headers[':path'], proto: headers['x-forwarded-proto'], length: Buffer.concat(chunks).length }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  for (const engine of ['fast', 'node']) {
    const gw = await startGateway(t, `engine: ${engine}
tls:
  certs:
    - { cert: ${cert.cert}, key: ${cert.key} }
services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
`)
    const agent = new https.Agent({ keepAlive: true, ca, servername: 'site.test' })
    t.teardown(() => agent.destroy())
    const port = new URL(gw.url).port
    const ask = async (path: string, body?: Buffer): Promise<{ status: number, json: any, socket: unknown }> => await new Promise((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port, path, method: body === undefined ? 'GET' : 'POST', headers: { host: 'site.test' }, agent }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()), socket: res.socket }))
      })
      req.on('error', reject)
      req.end(body)
    })
    const one = await ask('/one')
    t.same([one.status, one.json], [200, { path: '/one', proto: 'https', length: 0 }], `${engine}: a GET`)
    const two = await ask('/two', randomBytes(100_000))
    t.same([two.status, two.json], [200, { path: '/two', proto: 'https', length: 100_000 }], `${engine}: a POST with its body, on the same connection`)
    t.equal(two.socket, one.socket, `${engine}: keep-alive`)
  }
})

t.test('an HTTP/1.1 upstream answer carrying Host or HTTP2-Settings reaches an HTTP/2 client without them, not as a 502', async (t) => {
  const b = await startBackend(t, 'blue')
  b.handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', host: 'upstream.internal', 'http2-settings': 'AAMAAABkAAQAAP__', 'x-kept': 'yes' })
    res.end('hello')
  }
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [b])}`)
  const r = await h2(connect(t, gw), '/x')
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'hello')
  t.equal(r.headers['x-kept'], 'yes')
  t.equal(r.headers.host, undefined, 'Host is no response field on HTTP/2 (node:http2 refuses to send it)')
  t.equal(r.headers['http2-settings'], undefined)
  t.equal(gw.gateway.registry.colorStats('svc', 'blue').errors, 0)
})

t.test('an HTTP/1.1 upstream trailer node:http2 refuses to send (HTTP2-Settings) is dropped; the answer ends cleanly and the gateway lives on', async (t) => {
  const b = await startBackend(t, 'blue')
  b.handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-sum, http2-settings' })
    res.write('hello')
    res.addTrailers({ 'x-sum': '42', 'http2-settings': 'AAMAAABkAAQAAP__' })
    res.end()
  }
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [b])}`)
  const s = connect(t, gw)
  const r = await h2(s, '/x')
  t.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR)
  t.equal(r.body.toString(), 'hello')
  t.equal(r.trailers?.['x-sum'], '42', 'the other trailer goes on')
  t.equal(r.trailers?.['http2-settings'], undefined)
  t.equal((await h2(s, '/y')).status, 200, 'the gateway still serves')
})

t.test('a request body that goes quiet on an h2c service: the 408 the client got is what the access log and metrics count', async (t) => {
  const up = await startH2Upstream(t)
  const gw = await startGateway(t, `client: { bodyTimeout: 200ms }
services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${up.url}] }
`)
  const logged: Array<{ status: number }> = []
  gw.gateway.registry.observers.accessLog = (_stats, done) => { logged.push({ status: done.status }) }
  const s = connect(t, gw)
  const r = await new Promise<{ status: number }>((resolve) => {
    const req = s.request({ ':path': '/echo', ':method': 'POST' })
    let status = 0
    req.on('response', (h) => { status = Number(h[':status']) })
    req.on('error', () => {})
    req.on('close', () => resolve({ status }))
    req.write('part of a body that never ends')
    req.resume()
  })
  t.equal(r.status, 408)
  await eventually(() => logged.length === 1)
  t.same(logged, [{ status: 408 }], 'the access log has the status the client got')
})

t.test('a reload that turns health.grpc off closes the target\'s probe session (HTTP probes take over)', async (t) => {
  // An h2c target answering grpc.health.v1 SERVING (and anything else 200), counting its open sessions.
  const server = http2.createServer()
  let open = 0
  let checks = 0
  server.on('session', (session) => {
    open++
    session.once('close', () => { open-- })
  })
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {})
    if (headers[':path'] !== '/grpc.health.v1.Health/Check') return void stream.respond({ ':status': 200 }, { endStream: true })
    checks++
    stream.resume()
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const yaml = (grpc: boolean): string => `services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
    health: { grpc: ${grpc}, interval: 100ms, timeout: 80ms }
`
  const gw = await startGateway(t, yaml(true))
  await eventually(() => checks > 0 && open === 1)
  writeFileSync(gw.configFile, `log: { access: false }\n${yaml(false)}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/reload', {})).status, 200)
  await eventually(() => open === 0)
  t.pass('the probe session closed')
})

t.test('a WebSocket handshake for an h2c service is refused, saying why, and never reaches the target', async (t) => {
  const server = http2.createServer()
  let reached = 0
  server.on('connection', () => { reached++ })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const gw = await startGateway(t, `services:\n  svc:\n    protocol: h2c\n    match: { pathPrefix: / }\n    blue: { targets: [${url}] }\n`)
  const r = await new Promise<{ status: number, json: any }>((resolve, reject) => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/socket`)
    ws.on('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(body) }))
    })
    ws.on('error', reject)
    ws.on('open', () => reject(new Error('opened')))
  })
  t.equal(r.status, 400)
  t.equal(r.json.error, 'upgrade_refused')
  t.match(r.json.message, /HTTP\/2/, 'the message says the service speaks HTTP/2 to its targets')
  t.equal(reached, 0, 'no connection to the target')
})

t.test('an HTTP/2 client that takes none of an h2c service\'s answer is reset after client.idleTimeout, as with HTTP/1.1 services', async (t) => {
  const server = http2.createServer()
  let upstreamClosed: number | undefined
  server.on('stream', (stream) => {
    stream.on('error', () => {})
    stream.on('close', () => { upstreamClosed = stream.rstCode })
    stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' })
    const chunk = Buffer.alloc(64 * 1024)
    const more = (): void => { while (!stream.destroyed && stream.write(chunk)); }
    stream.on('drain', more)
    more()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const gw = await startGateway(t, `client: { idleTimeout: 300ms }
services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
`)
  const s = connect(t, gw)
  const closed = await new Promise<number>((resolve) => {
    const req = s.request({ ':path': '/huge' })
    req.on('response', () => req.pause())
    req.on('error', () => {})
    req.on('close', () => resolve(req.rstCode ?? -1))
  })
  t.equal(closed, http2.constants.NGHTTP2_CANCEL, 'RST_STREAM CANCEL')
  const blue = gw.gateway.registry.colorStats('svc', 'blue')
  await eventually(() => blue.inflight === 0 && upstreamClosed !== undefined)
  t.equal(blue.errors, 0, 'not an error for the guard')
  t.not(upstreamClosed, http2.constants.NGHTTP2_NO_ERROR, 'the upstream stream is reset too')
})

t.test('an answer that ends before the client\'s request body does: the exchange ends with the answer (inflight back to 0), the client told to stop sending', async (t) => {
  const up = await startH2Upstream(t)
  const b = await startBackend(t, 'blue')
  b.handler = (_req, res) => { res.writeHead(413, { 'content-type': 'text/plain' }).end('too big') }
  const gw = await startGateway(t, `services:
  h2svc:
    protocol: h2c
    match: { pathPrefix: /hold }
    blue: { targets: [${up.url}] }
  h1svc:
    match: { pathPrefix: / }
    blue: { targets: [${b.url}] }
`)
  const s = connect(t, gw)
  for (const [svc, path] of [['h1svc', '/early'], ['h2svc', '/hold']]) {
    const answered = new Promise<{ status: number, rstCode: number }>((resolve) => {
      const req = s.request({ ':path': path, ':method': 'POST' })
      let status = 0
      req.on('response', (h) => { status = Number(h[':status']) })
      req.on('error', () => {})
      req.resume()
      req.on('close', () => resolve({ status, rstCode: req.rstCode ?? -1 }))
      // The body starts and never ends (a client still streaming when the answer comes).
      req.write('a first part')
    })
    if (svc === 'h2svc') {
      await eventually(() => up.held.length === 1)
      const held = up.held.shift() as ServerHttp2Stream
      held.respond({ ':status': 413 })
      held.end('too big')
    }
    const r = await answered
    t.equal(r.status, 413, `${svc}: answered`)
    t.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR, `${svc}: RST_STREAM NO_ERROR once the answer is out (RFC 9113 8.1)`)
    await eventually(() => gw.gateway.registry.colorStats(svc, 'blue').inflight === 0)
    t.pass(`${svc}: the exchange is over`)
  }
})

for (const engine of ['node', 'fast']) {
  // The fast engine forwards HTTP/2 clients to HTTP/1.1 upstreams with helper E's raw exchange, which settles as the undici one did.
  t.test(`${engine}: a gRPC call whose upstream answer cannot be relayed is an error for the guard, as the same REST request is`, async (t) => {
  const b = await startBackend(t, 'blue')
  // Two Content-Type lines: undici takes them, node:http2 refuses to send them (a single-value field).
  b.handler = (_req, res) => {
    res.writeHead(200, [['content-type', 'application/grpc'], ['content-type', 'application/grpc+proto']])
    res.end()
  }
  const gw = await startGateway(t, `engine: ${engine}\nservices:\n${serviceYaml('svc', '/', [b], [b])}`)
  const s = connect(t, gw)
  const stats = gw.gateway.registry.colorStats('svc', 'blue')
  const rest = await h2(s, '/rest', { 'content-type': 'application/json' }, Buffer.from('{}'))
  t.equal(rest.status, 502)
  await eventually(() => stats.requests === 1)
  t.equal(stats.errors, 1, 'REST: an error')
  const call = await h2(s, '/pkg.Svc/Call', { 'content-type': 'application/grpc', te: 'trailers' }, Buffer.from([0, 0, 0, 0, 0]))
  t.equal(call.headers['grpc-status'], '14', 'gRPC: UNAVAILABLE')
  await eventually(() => stats.requests === 2)
  t.equal(stats.errors, 2, 'gRPC: an error too')
  })
}

t.test('trailers of an h2c service\'s REST answer (announced by Trailer) reach an HTTP/2 client', async (t) => {
  const server = http2.createServer()
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'text/plain', trailer: 'x-sum' }, { waitForTrailers: true })
    stream.once('wantTrailers', () => stream.sendTrailers({ 'x-sum': '42' }))
    stream.end('hello')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const gw = await startGateway(t, `services:\n  svc:\n    protocol: h2c\n    match: { pathPrefix: / }\n    blue: { targets: [${url}] }\n`)
  const r = await h2(connect(t, gw), '/x')
  t.equal(r.body.toString(), 'hello')
  t.equal(r.trailers?.['x-sum'], '42')
})

t.test('timeouts.response on an h2c service counts from the end of the request, as on HTTP/1.1: a client-streaming upload longer than it is answered', async (t) => {
  const up = await startH2Upstream(t)
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${up.url}] }
    timeouts: { response: 300ms }
`)
  const s = connect(t, gw)
  const r = await new Promise<{ status: number, body: string }>((resolve) => {
    const req = s.request({ ':path': '/echo', ':method': 'POST' })
    let status = 0
    let body = ''
    req.on('response', (h) => { status = Number(h[':status']) })
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('error', () => {})
    req.on('close', () => resolve({ status, body }))
    // Six parts 100ms apart: the upload takes twice timeouts.response; the answer comes at once after it.
    let sent = 0
    const next = (): void => {
      if (++sent === 6) return void req.end('x')
      req.write('x')
      setTimeout(next, 100)
    }
    next()
  })
  t.equal(r.status, 200)
  t.same(JSON.parse(r.body), { length: 6, sha: createHash('sha256').update('xxxxxx').digest('hex') })
})
