// Review of the issue-14 HTTP/2 paths: defects found by reading the code,
// each pinned by a test that failed before its fix.

import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { admin, eventually, startGateway, type TestGateway } from './helpers/index.js'

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
