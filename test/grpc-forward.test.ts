// The HTTP/2 forwarder (proxy/h2/upstream.ts) on its own: a small HTTP/2
// server in the test stands in for the gateway's h2 edge, hands each stream
// to forwardOverH2 through a Downstream adapter of its own, and real grpc-js
// servers and clients sit on both ends.

import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import type { AddressInfo } from 'node:net'
import type { Readable } from 'node:stream'
import { DEFAULTS, type LimitsConfig, type Timeouts } from '../src/config/schema.js'
import { ERRORS, errorBody, type ErrorCode } from '../src/errors.js'
import type { Downstream } from '../src/proxy/downstream.js'
import { encodeGrpcMessage, grpcStatusOf, isGrpc } from '../src/proxy/grpc.js'
import { forwardOverH2 } from '../src/proxy/h2/upstream.js'
import type { Resolution, UpstreamGroup } from '../src/proxy/resolve.js'
import { setH2TlsOptions, TargetRegistry, type ColorStats } from '../src/upstream/registry.js'
import { TargetSet } from '../src/upstream/target-set.js'
import { echoClient, grpc, startEchoServer, unary, type EchoClient, type Msg } from './helpers/grpc.js'
import { eventually, refusedUrl } from './helpers/index.js'

/** A Downstream over an HTTP/2 server stream, as small as the test needs (the gateway's own is helper B's). */
class TestDownstream implements Downstream {
  readonly method: string
  readonly path: string
  readonly authority: string | undefined
  readonly requestId: string
  readonly grpc: boolean
  readonly body: Readable | null
  private readonly stream: ServerHttp2Stream
  private readonly headers: IncomingHttpHeaders
  private trailersOnly = false

  constructor (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) {
    this.stream = stream
    this.headers = headers
    this.method = headers[':method'] as string
    this.path = headers[':path'] as string
    this.authority = headers[':authority']
    this.requestId = `test-${++ids}`
    this.grpc = isGrpc(headers['content-type'])
    this.body = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 ? null : stream
  }

  upstreamHeaders (): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {}
    for (const [k, v] of Object.entries(this.headers)) if (!k.startsWith(':')) out[k] = v
    out['x-request-id'] = this.requestId
    return out
  }

  get headersSent (): boolean {
    return this.stream.headersSent
  }

  get closed (): boolean {
    return this.stream.closed
  }

  /** As the gateway's h2 edge does: a gRPC answer always waits for its trailers (a status in the head alone would be lost). */
  respond (status: number, headers: OutgoingHttpHeaders): void {
    this.trailersOnly = !this.grpc && headers['grpc-status'] !== undefined
    this.stream.respond({ ':status': status, ...headers }, this.trailersOnly ? { endStream: true } : { waitForTrailers: true })
  }

  write (chunk: Buffer): boolean {
    return this.stream.write(chunk)
  }

  onDrain (fn: () => void): void {
    this.stream.once('drain', fn)
  }

  end (trailers: OutgoingHttpHeaders | undefined): void {
    if (this.trailersOnly) return
    this.stream.once('wantTrailers', () => this.stream.sendTrailers(trailers ?? {}))
    this.stream.end()
  }

  fail (code: ErrorCode, message?: string): number {
    if (this.stream.headersSent) {
      this.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
      return 0
    }
    if (this.grpc) {
      this.stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatusOf(code)), 'grpc-message': encodeGrpcMessage(message ?? ERRORS[code].message) }, { endStream: true })
      return 0
    }
    const body = errorBody(code, message)
    this.stream.respond({ ':status': ERRORS[code].status, 'content-type': 'application/json' })
    this.stream.end(body)
    return Buffer.byteLength(body)
  }

  destroy (): void {
    if (!this.stream.closed) this.stream.close(http2.constants.NGHTTP2_CANCEL)
  }

  onClose (fn: () => void): void {
    if (this.stream.closed) fn()
    else this.stream.once('close', fn)
  }
}

let ids = 0

const LIMITS: LimitsConfig = { maxConnections: 4 }
const TIMEOUTS: Timeouts = { ...DEFAULTS.defaults.timeouts, connect: 500, response: 2000 }

interface Edge {
  /** host:port of the test's h2c edge. */
  hostPort: string
  stats: ColorStats
  registry: TargetRegistry
  group: UpstreamGroup
}

/** An h2c edge that forwards every stream to `urls` (one color) with forwardOverH2. */
async function startEdge (tt: Test, urls: string[], timeouts: Timeouts = TIMEOUTS, name = 'svc', limits: LimitsConfig = LIMITS): Promise<Edge> {
  const registry = new TargetRegistry()
  const targets = new TargetSet(urls.map((u) => {
    const target = registry.target(u)
    target.configure(undefined, { consecutiveFailures: 100, baseEjectionTime: 1000, maxEjectionTime: 1000 })
    return { target, dispatcher: target.dispatcher(timeouts, limits), h1: target.h1Pool(timeouts, limits), h2: target.h2Pool(timeouts, limits) }
  }))
  const stats = registry.colorStats(name, 'blue')
  const group: UpstreamGroup = { targets, stats, timeouts, protocol: urls[0]?.startsWith('https:') === true ? 'h2' : 'h2c' }
  const server = http2.createServer()
  server.on('stream', (stream, headers, flags) => {
    const endpoint = targets.pick()
    const down = new TestDownstream(stream, headers, flags)
    if (endpoint === undefined) return void down.fail('no_healthy_upstream')
    const to: Resolution = { target: down.path, endpoint, group, setCookie: 'sticky=blue' }
    forwardOverH2(down, to)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  tt.teardown(async () => {
    await registry.destroy()
    server.close()
  })
  return { hostPort: `127.0.0.1:${(server.address() as AddressInfo).port}`, stats, registry, group }
}

async function collect<T> (call: NodeJS.ReadableStream): Promise<T[]> {
  const out: T[] = []
  for await (const m of call) out.push(m as T)
  return out
}

t.test('unary, server, client and bidirectional streaming calls go through, trailers included', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const edge = await startEdge(t, [blue.url])
  const client = echoClient(t, edge.hostPort)

  const u = await unary(client, { text: 'hi' })
  t.same(u, { msg: { text: 'hi', color: 'blue' }, code: 0 }, 'unary answer and status 0 (from the trailers)')

  const ss = await collect<Msg>(client.serverStream({ text: 's', count: 5 }))
  t.same(ss.map((m) => m.n), [0, 1, 2, 3, 4], 'server streaming: every message in order')

  const cs = await new Promise<Msg>((resolve, reject) => {
    const call = client.clientStream((err: Error | null, res: Msg) => err !== null ? reject(err) : resolve(res))
    for (const text of ['a', 'b', 'c']) call.write({ text })
    call.end()
  })
  t.same(cs, { text: 'a,b,c', color: 'blue' }, 'client streaming: the server saw every message')

  // Bidirectional: each answer comes before the next message is sent (flow both ways on one stream).
  const call = client.bidi()
  const got: Msg[] = []
  for (const text of ['x', 'y', 'z']) {
    const next = new Promise<Msg>((resolve) => call.once('data', resolve))
    call.write({ text })
    got.push(await next)
  }
  call.end()
  await new Promise((resolve) => call.on('status', resolve))
  t.same(got.map((m) => m.text), ['x', 'y', 'z'])
  t.equal(blue.calls.unary, 1)
  t.equal(edge.stats.requests, 4, 'four exchanges counted')
  t.equal(edge.stats.errors, 0)
  await eventually(() => edge.stats.inflight === 0)
})

t.test('large messages both ways keep flow control (a slow side holds the other back, nothing is lost)', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const edge = await startEdge(t, [blue.url])
  const client = echoClient(t, edge.hostPort)
  const big = 'x'.repeat(3 * 1024 * 1024)
  const u = await unary(client, { text: big }, 20_000)
  t.equal(u.code, 0)
  t.equal(u.msg?.text?.length, big.length, '3 MiB each way, past every default window')
  const ss = await collect<Msg>(client.serverStream({ text: 'y'.repeat(256 * 1024), count: 40 }))
  t.equal(ss.length, 40, '10 MiB streamed to the client')
})

t.test('a server fault in grpc-status counts as an error, a client mistake does not', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const edge = await startEdge(t, [blue.url])
  const client = echoClient(t, edge.hostPort)
  const bad = await unary(client, { fail: grpc.status.INVALID_ARGUMENT })
  t.equal(bad.code, grpc.status.INVALID_ARGUMENT, 'the upstream status reaches the client')
  t.equal(edge.stats.errors, 0, 'INVALID_ARGUMENT is the client\'s mistake')
  const internal = await unary(client, { fail: grpc.status.INTERNAL })
  t.equal(internal.code, grpc.status.INTERNAL)
  t.equal(edge.stats.errors, 1, 'INTERNAL counts against the color')
  const unavailable = await unary(client, { fail: grpc.status.UNAVAILABLE })
  t.equal(unavailable.code, grpc.status.UNAVAILABLE)
  t.equal(edge.stats.errors, 2)
  t.equal(edge.stats.requests, 3)
})

t.test('gateway errors are gRPC statuses: connect failure 14, upstream timeout 4', async (t) => {
  const deadUrl = await refusedUrl()
  const edge = await startEdge(t, [deadUrl])
  const client = echoClient(t, edge.hostPort)
  const r = await unary(client, { text: 'x' })
  t.equal(r.code, grpc.status.UNAVAILABLE, 'connect failure → UNAVAILABLE')
  t.equal(edge.stats.upstreamErrors.connect_failed, 1)
  t.equal(edge.stats.errors, 1)

  const blue = await startEchoServer(t, 'blue')
  const slow = await startEdge(t, [blue.url], { ...TIMEOUTS, response: 200 }, 'slow')
  const sc = echoClient(t, slow.hostPort)
  const started = Date.now()
  const late = await unary(sc, { text: 'x', delay: 1500 })
  t.equal(late.code, grpc.status.DEADLINE_EXCEEDED, 'no head within timeouts.response → DEADLINE_EXCEEDED')
  t.ok(Date.now() - started < 1400, 'answered at the gateway\'s deadline, not the upstream\'s answer')
  t.equal(slow.stats.upstreamErrors.timeout, 1)
})

t.test('a stream the upstream refuses unprocessed is sent again, body and all; the session is replaced', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  // An h2c front for the grpc server that refuses the first stream of each session with REFUSED_STREAM.
  const refusing = http2.createServer()
  let refused = 0
  const upstream = http2.connect(blue.url)
  t.teardown(() => upstream.close())
  refusing.on('session', (session) => {
    let first = true
    session.on('stream', (stream, headers) => {
      stream.on('error', () => {})
      if (first) {
        first = false
        refused++
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM)
        return
      }
      const out: OutgoingHttpHeaders = {}
      for (const [k, v] of Object.entries(headers)) if (k !== ':authority' && k !== ':scheme') out[k] = v
      const up = upstream.request(out)
      stream.pipe(up)
      up.on('response', (h) => stream.respond(h, { waitForTrailers: true }))
      up.on('trailers', (tr) => stream.once('wantTrailers', () => stream.sendTrailers(tr)))
      up.pipe(stream)
    })
  })
  await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve))
  t.teardown(() => refusing.close())
  const edge = await startEdge(t, [`http://127.0.0.1:${(refusing.address() as AddressInfo).port}`])
  const client = echoClient(t, edge.hostPort)
  const r = await unary(client, { text: 'again' })
  t.equal(refused, 1, 'the first stream was refused')
  t.same(r, { msg: { text: 'again', color: 'blue' }, code: 0 }, 'the POST with its body was sent again and answered')
  t.equal(edge.stats.errors, 0, 'a refused stream is not an error')
})

t.test('GOAWAY: open streams finish on the old session, new ones open a new session', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const edge = await startEdge(t, [blue.url])
  const client = echoClient(t, edge.hostPort)
  const call = client.bidi()
  const first = new Promise<Msg>((resolve) => call.once('data', resolve))
  call.write({ text: 'one' })
  t.equal((await first).text, 'one')
  const pool = edge.group.targets.endpoints[0].h2
  t.equal(pool?.size, 1, 'one session')
  // The upstream says goodbye (graceful server shutdown sends GOAWAY and lets open streams finish).
  blue.server.tryShutdown(() => {})
  await eventually(() => pool?.size === 1 && (pool as unknown as { open: unknown[] }).open.length === 0)
  const second = new Promise<Msg>((resolve) => call.once('data', resolve))
  call.write({ text: 'two' })
  t.equal((await second).text, 'two', 'the open stream goes on after GOAWAY')
  call.end()
  const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve))
  t.equal(status.code, 0)
})

t.test('close() at a drain deadline resets both sides of an open stream', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const edge = await startEdge(t, [blue.url])
  const client: EchoClient = echoClient(t, edge.hostPort)
  const call = client.bidi()
  const first = new Promise<Msg>((resolve) => call.once('data', resolve))
  call.write({ text: 'one' })
  await first
  t.equal(edge.stats.openHttp.size, 1, 'the open stream is listed on its color')
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve))
  call.on('error', () => {})
  for (const x of edge.stats.openHttp) x.close()
  t.not((await status).code, 0, 'the client sees the stream cut')
  await eventually(() => edge.stats.inflight === 0)
  t.equal(edge.group.targets.endpoints[0].target.inflight, 0)
  await eventually(() => blue.calls.bidiCancelled === 1)
  t.pass('the upstream stream was reset too')
})

/** A REST request over HTTP/2 to `hostPort`: status, headers and body. */
async function h2get (hostPort: string, path: string): Promise<{ status: number, headers: http2.IncomingHttpHeaders, body: string }> {
  const session = http2.connect(`http://${hostPort}`)
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({ ':path': path })
      let body = ''
      let head: http2.IncomingHttpHeaders = {}
      req.setEncoding('utf8')
      req.on('response', (h) => { head = h })
      req.on('data', (c: string) => { body += c })
      req.on('end', () => resolve({ status: Number(head[':status']), headers: head, body }))
      req.on('error', reject)
    })
  } finally {
    session.close()
  }
}

t.test('a target\'s stream limit: another session opens, up to limits.maxConnections; past it, overloaded', async (t) => {
  // One stream at a time per session; each answer waits until the test lets it go.
  const server = http2.createServer({ settings: { maxConcurrentStreams: 1 } })
  const held: ServerHttp2Stream[] = []
  const arrived: Array<() => void> = []
  server.on('stream', (stream) => {
    held.push(stream)
    arrived.shift()?.()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const edge = await startEdge(t, [url], TIMEOUTS, 'svc', { maxConnections: 2 })
  const pool = edge.group.targets.endpoints[0].h2
  const next = async (): Promise<void> => await new Promise((resolve) => arrived.push(resolve))
  const first = h2get(edge.hostPort, '/1')
  await next()
  const second = h2get(edge.hostPort, '/2')
  await next()
  t.equal(pool?.size, 2, 'the first session was full (its peer allows one stream): a second one opened')
  // Both sessions full at maxConnections: the third waits for a slot (up to timeouts.connect)...
  const third = h2get(edge.hostPort, '/3')
  await eventually(() => pool?.waiting === 1)
  const thirdArrived = next()
  ;(held.shift() as ServerHttp2Stream).respond({ ':status': 200 }, { endStream: true })
  t.equal((await first).status, 200)
  await thirdArrived
  t.pass('...and goes out on the slot the first answer freed')
  // ...and one that waits longer than timeouts.connect (500ms) is answered overloaded.
  const started = Date.now()
  const fourth = await h2get(edge.hostPort, '/4')
  t.equal(fourth.status, 503, 'no slot within timeouts.connect: upstream_overloaded')
  t.match(JSON.parse(fourth.body), { error: 'upstream_overloaded' })
  t.ok(Date.now() - started >= 450, 'after waiting timeouts.connect')
  for (const s of held) s.respond({ ':status': 200 }, { endStream: true })
  t.same([(await second).status, (await third).status], [200, 200])
  t.equal(edge.stats.errors, 1, 'the overloaded answer counts for the guard')
  t.equal(pool?.waiting, 0)
})

t.test('an idle session closes after timeouts.idleUpstream; the next request opens a new one', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const edge = await startEdge(t, [blue.url], { ...TIMEOUTS, idleUpstream: 100 })
  const client = echoClient(t, edge.hostPort)
  t.equal((await unary(client, { text: 'a' })).code, 0)
  const pool = edge.group.targets.endpoints[0].h2
  t.equal(pool?.size, 1)
  await eventually(() => pool?.size === 0)
  t.pass('closed when idle')
  t.equal((await unary(client, { text: 'b' })).msg?.text, 'b', 'a new session serves the next call')
})

t.test('protocol h2: TLS with ALPN h2 and SNI from the target\'s host name', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sy-h2tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { stdio: ['ignore', 'ignore', 'pipe'] })
  const cert = readFileSync(join(dir, 'cert.pem'))
  const server = http2.createSecureServer({ cert, key: readFileSync(join(dir, 'key.pem')) })
  let servername: string | undefined
  let alpn: string | false | undefined
  server.on('stream', (stream, headers) => {
    const socket = stream.session?.socket as unknown as { servername?: string, alpnProtocol?: string | false }
    servername = socket.servername
    alpn = socket.alpnProtocol
    stream.respond({ ':status': 200 })
    stream.end(`tls ${headers[':scheme']}`)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  setH2TlsOptions({ ca: cert })
  t.teardown(() => setH2TlsOptions(undefined))
  const edge = await startEdge(t, [`https://localhost:${(server.address() as AddressInfo).port}`])
  const r = await h2get(edge.hostPort, '/secure')
  t.equal(r.status, 200)
  t.equal(r.body, 'tls https', ':scheme https upstream')
  t.same(r.headers['set-cookie'], ['sticky=blue'], 'the resolution\'s Set-Cookie goes on the answer\'s head')
  t.equal(servername, 'localhost', 'SNI is the target\'s host name')
  t.equal(alpn, 'h2')

  // A certificate the gateway does not trust: a connect failure, not an answer.
  setH2TlsOptions(undefined)
  const untrusting = await startEdge(t, [`https://localhost:${(server.address() as AddressInfo).port}`], TIMEOUTS, 'other')
  const bad = await h2get(untrusting.hostPort, '/secure')
  t.equal(bad.status, 502)
  t.match(JSON.parse(bad.body), { error: 'upstream_connect_failed' })
})
