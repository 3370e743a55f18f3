// Attacks on the issue 14 code: a hostile HTTP/2 client, a broken upstream and
// an unlucky operator. Each test names the property it holds; after each, the
// gateway must still serve and its colors must have nothing left open.

import t from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { execFileSync } from 'node:child_process'
import { appendFileSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { CertFiles } from '../src/config/schema.js'
import { CertStore, readCert } from '../src/listen/certs.js'
import { GrpcProbeSessions } from '../src/health/grpc-health.js'
import { fingerprintOf, logCollector, makeCert, servedFingerprint } from './helpers/certs.js'
import { exchange } from './helpers/raw.js'
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import { echoClient, grpc, startEchoServer, unary, type Msg } from './helpers/grpc.js'
import { h2Request, h2Session, type H2Reply } from './helpers/h2.js'
import { eventually, serviceYaml, startBackend, startGateway, tempDir, type Backend, type TestGateway } from './helpers/index.js'

/** One HTTP/2 frame, bytes as on the wire (RFC 9113 4.1). */
function frame (type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream, 5)
  return Buffer.concat([head, payload])
}

/** An HPACK literal without indexing, its name from the static table (`index`), for short values. */
function literal (index: number, value: string): Buffer {
  return Buffer.concat([Buffer.from([index, value.length]), Buffer.from(value, 'latin1')])
}

/** A GET's header block: :method GET, :scheme http, :path, :authority. */
function getBlock (path: string, authority: string): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x86]), literal(4, path), literal(1, authority)])
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
const HEADERS = 0x1
const RST_STREAM = 0x3
const SETTINGS = 0x4
const END_STREAM = 0x1
const END_HEADERS = 0x4

function forwarded (b: Backend, prefix: string): number {
  return b.seen.filter((r) => r.url.startsWith(prefix)).length
}

function blueStats (gw: TestGateway, service = 'svc'): { inflight: number, errors: number } {
  return gw.gateway.registry.colorStats(service, 'blue')
}

async function pair (t: Tap.Test, engine: string, head = ''): Promise<{ b: Backend, g: Backend, gw: TestGateway }> {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `engine: ${engine}\n${head}services:\n${serviceYaml('svc', '/', [b], [g])}`)
  return { b, g, gw }
}

for (const engine of ['fast', 'node']) {
  t.test(`${engine}: rapid reset (CVE-2023-44487): streams reset in the packet that opened them never reach the upstream`, async (t) => {
    const { b, gw } = await pair(t, engine)
    const port = Number(new URL(gw.url).port)
    const authority = new URL(gw.url).host
    const n = 200
    const parts = [PREFACE, frame(SETTINGS, 0, 0)]
    for (let i = 0; i < n; i++) {
      const id = 1 + 2 * i
      parts.push(frame(HEADERS, END_STREAM | END_HEADERS, id, getBlock('/rapid/slow?ms=2000', authority)))
      parts.push(frame(RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])))
    }
    const socket = net.connect(port, '127.0.0.1')
    socket.on('error', () => {})
    t.teardown(() => { socket.destroy() })
    socket.write(Buffer.concat(parts))
    // The same gateway serves a normal request afterwards; by then every reset stream is settled.
    const s = h2Session(t, gw.url)
    t.equal((await h2Request(s, '/after')).status, 200, 'still serving')
    await eventually(() => blueStats(gw).inflight === 0)
    const reached = forwarded(b, '/rapid')
    t.equal(reached, 0, `upstream requests for ${n} streams reset at once: ${reached}`)
  })
}

/** What came back for stream 1 of a raw session: its response head (status when HPACK indexed it), a reset, or the session's end. */
interface RawOutcome { kind: 'headers' | 'rst' | 'goaway' | 'closed', status?: number, code?: number }

/** :status values from HPACK's static table (RFC 7541 Appendix A). */
const STATIC_STATUS: Record<number, number> = { 0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500 }

/** HPACK Huffman codes of the digits (RFC 7541 Appendix B), enough to read a :status. */
const HUFF_DIGITS: Array<[string, number, number]> = [['0', 0x0, 5], ['1', 0x1, 5], ['2', 0x2, 5], ['3', 0x19, 6], ['4', 0x1a, 6], ['5', 0x1b, 6], ['6', 0x1c, 6], ['7', 0x1d, 6], ['8', 0x1e, 6], ['9', 0x1f, 6]]

function statusOf (block: Buffer): number | undefined {
  const first = block[0]
  if (STATIC_STATUS[first] !== undefined) return STATIC_STATUS[first]
  // A literal with the name :status (static index 8), indexed or not.
  if (first !== 0x48 && first !== 0x08 && first !== 0x18) return undefined
  const len = block[1] & 0x7f
  const value = block.subarray(2, 2 + len)
  if ((block[1] & 0x80) === 0) return Number(value.toString('latin1'))
  let bits = ''
  for (const byte of value) bits += byte.toString(2).padStart(8, '0')
  let out = ''
  while (out.length < 3) {
    const hit = HUFF_DIGITS.find(([, code, n]) => bits.length >= n && parseInt(bits.slice(0, n), 2) === code)
    if (hit === undefined) return undefined
    out += hit[0]
    bits = bits.slice(hit[2])
  }
  return Number(out)
}

/** Sends the preface, an empty SETTINGS and `frames` on a fresh connection; resolves with what stream 1 got. */
async function rawH2 (t: Tap.Test, port: number, frames: Buffer[]): Promise<RawOutcome> {
  return await new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    t.teardown(() => { socket.destroy() })
    let buf = Buffer.alloc(0)
    const done = (o: RawOutcome): void => {
      socket.destroy()
      resolve(o)
    }
    socket.on('error', () => {})
    socket.on('close', () => resolve({ kind: 'closed' }))
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3)
        if (buf.length < 9 + len) break
        const type = buf[3]
        const id = buf.readUInt32BE(5) & 0x7fffffff
        const payload = buf.subarray(9, 9 + len)
        buf = buf.subarray(9 + len)
        // SETTINGS (not an ACK) are acknowledged, as a client must.
        if (type === SETTINGS && (d[4] & 1) === 0) socket.write(frame(SETTINGS, 1, 0))
        if (type === 0x7) return done({ kind: 'goaway', code: payload.readUInt32BE(4) })
        if (id !== 1) continue
        if (type === RST_STREAM) return done({ kind: 'rst', code: payload.readUInt32BE(0) })
        if (type === HEADERS) return done({ kind: 'headers', status: statusOf(payload) })
      }
    })
    socket.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0), ...frames]))
  })
}

/** An HPACK literal without indexing with a new name: anything at all, as a hostile encoder may send it. */
function field (name: string, value: string): Buffer {
  const n = Buffer.from(name, 'latin1')
  const v = Buffer.from(value, 'latin1')
  if (n.length > 126 || v.length > 126) throw new Error('short fields only')
  return Buffer.concat([Buffer.from([0x00, n.length]), n, Buffer.from([v.length]), v])
}

/** A request head on stream 1: the pseudo-headers given (absent when undefined) and extra fields. */
function requestBlock (pseudo: { method?: string, path?: string, authority?: string, scheme?: string }, extra: Array<[string, string]> = []): Buffer {
  const parts: Buffer[] = []
  if (pseudo.method !== undefined) parts.push(literal(2, pseudo.method))
  if (pseudo.scheme !== undefined) parts.push(literal(6, pseudo.scheme))
  if (pseudo.path !== undefined) parts.push(literal(4, pseudo.path))
  if (pseudo.authority !== undefined) parts.push(literal(1, pseudo.authority))
  for (const [n, v] of extra) parts.push(field(n, v))
  return Buffer.concat(parts)
}

t.test('malformed or smuggling request heads: refused, or the bad field dropped; nothing injected reaches the upstream', async (t) => {
  const { b, gw } = await pair(t, 'fast')
  const port = Number(new URL(gw.url).port)
  const authority = new URL(gw.url).host
  const base = { method: 'GET', scheme: 'http', authority }
  // nghttp2 (as node sets it up) drops a field whose name or value HTTP/2 does not allow and goes on with the rest.
  const dropped: Array<[string, Buffer]> = [
    ['CR LF in a value', requestBlock({ ...base, path: '/drop/crlf' }, [['x-a', 'a\r\nx-injected: 1']])],
    ['LF in a value', requestBlock({ ...base, path: '/drop/lf' }, [['x-a', 'a\nGET /evil HTTP/1.1']])],
    ['NUL in a value', requestBlock({ ...base, path: '/drop/nul' }, [['x-a', 'a\0b']])],
    ['a colon inside a name', requestBlock({ ...base, path: '/drop/colon' }, [['x:a', 'b']])],
    ['a space in a name', requestBlock({ ...base, path: '/drop/space' }, [['x a', 'b']])],
  ]
  const refused: Array<[string, Buffer]> = [
    ['an upper-case name', requestBlock({ ...base, path: '/smuggle/upper' }, [['X-Upper', 'b']])],
    ['transfer-encoding', requestBlock({ ...base, path: '/smuggle/te' }, [['transfer-encoding', 'chunked']])],
    ['connection', requestBlock({ ...base, path: '/smuggle/conn' }, [['connection', 'keep-alive']])],
    ['te other than trailers', requestBlock({ ...base, path: '/smuggle/tegzip' }, [['te', 'gzip']])],
    ['two content-length fields', requestBlock({ ...base, path: '/smuggle/cl2' }, [['content-length', '0'], ['content-length', '5']])],
    ['a pseudo-header after a field', Buffer.concat([requestBlock(base, [['x-a', 'b']]), literal(4, '/smuggle/late')])],
    ['an unknown pseudo-header', requestBlock({ ...base, path: '/smuggle/unknown' }, [[':evil', 'b']])],
    ['no :path', requestBlock(base)],
    ['an empty :path', requestBlock({ ...base, path: '' })],
    ['* with GET', requestBlock({ ...base, path: '*' })],
  ]
  for (const [name, block] of refused) {
    const got = await rawH2(t, port, [frame(HEADERS, END_STREAM | END_HEADERS, 1, block)])
    t.match(got, { kind: 'rst', code: http2.constants.NGHTTP2_PROTOCOL_ERROR }, `${name}: the stream is reset`)
  }
  t.equal(forwarded(b, '/smuggle'), 0, 'none of those reached the upstream')
  for (const [name, block] of dropped) {
    const got = await rawH2(t, port, [frame(HEADERS, END_STREAM | END_HEADERS, 1, block)])
    t.ok(got.kind === 'rst' || (got.kind === 'headers' && got.status === 200), `${name}: refused or forwarded without it (${JSON.stringify(got)})`)
  }
  for (const r of b.seen.filter((r) => r.url.startsWith('/drop'))) {
    const names = Object.keys(r.headers)
    t.notOk(names.some((n) => n === 'x-a' || n === 'x-injected' || n.includes(':') || n.includes(' ')), `${r.url}: no bad or injected field upstream (${names.join(' ')})`)
    t.notOk(Object.values(r.headers).some((v) => /[\r\n\0]/.test(String(v))), `${r.url}: no CR, LF or NUL in a value upstream`)
  }
  const s = h2Session(t, gw.url)
  t.equal((await h2Request(s, '/after')).status, 200, 'still serving')
})

t.test(':path forms HTTP/1.1 would not take reach an HTTP/1.1 upstream only as an origin-form target', async (t) => {
  const { b, gw } = await pair(t, 'fast')
  const port = Number(new URL(gw.url).port)
  const authority = new URL(gw.url).host
  const base = { method: 'GET', scheme: 'http', authority }
  for (const path of ['evil.example/x', 'http://evil.example/x', '//evil.example/x', '/a/../../etc', '/a b', '/a\tb']) {
    const got = await rawH2(t, port, [frame(HEADERS, END_STREAM | END_HEADERS, 1, requestBlock({ ...base, path }))])
    t.not(got.kind, 'closed', `${JSON.stringify(path)}: an answer (${JSON.stringify(got)})`)
  }
  const seen = b.seen.map((r) => r.url)
  for (const url of seen) t.ok(url.startsWith('/') && !url.startsWith('//') && !/[\s]/.test(url), `origin-form upstream target: ${JSON.stringify(url)}`)
  const s = h2Session(t, gw.url)
  t.equal((await h2Request(s, '/after')).status, 200, 'still serving')
  await eventually(() => blueStats(gw).inflight === 0)
})

t.test('Host and :authority disagree: the one that routes is the one the upstream gets', async (t) => {
  const a = await startBackend(t, 'a')
  const b = await startBackend(t, 'b')
  const gw = await startGateway(t, `services:
  a:
    match: { host: a.test }
    blue: { targets: [${a.url}] }
  b:
    match: { host: b.test }
    blue: { targets: [${b.url}] }
`)
  const port = Number(new URL(gw.url).port)
  const both = await rawH2(t, port, [frame(HEADERS, END_STREAM | END_HEADERS, 1, requestBlock({ method: 'GET', scheme: 'http', authority: 'a.test', path: '/both' }, [['host', 'b.test']]))])
  t.match(both, { kind: 'headers', status: 200 })
  const onlyHost = await rawH2(t, port, [frame(HEADERS, END_STREAM | END_HEADERS, 1, requestBlock({ method: 'GET', scheme: 'http', path: '/host-only' }, [['host', 'b.test']]))])
  t.match(onlyHost, { kind: 'headers', status: 200 })
  const atA = a.seen.filter((r) => r.url === '/both')
  const atB = b.seen.filter((r) => r.url === '/both')
  t.equal(atA.length + atB.length, 1, 'routed once')
  for (const r of [...atA, ...atB]) {
    t.equal(r.headers.host, atA.length === 1 ? 'a.test' : 'b.test', 'the Host the upstream gets names the service that took it')
    t.equal(r.headers.host, 'a.test', ':authority wins (RFC 9113 8.3.1)')
  }
  t.same(b.seen.filter((r) => r.url === '/host-only').map((r) => r.headers.host), ['b.test'], 'without :authority, Host routes and is sent')
})

/** An h2c upstream whose every stream `answer` handles; closed at teardown. */
async function h2Upstream (t: Tap.Test, answer: (stream: http2.ServerHttp2Stream, headers: IncomingHttpHeaders) => void): Promise<{ url: string, server: http2.Http2Server, streams: () => number }> {
  const server = http2.createServer()
  let streams = 0
  server.on('stream', (stream, headers) => {
    streams++
    stream.on('error', () => {})
    answer(stream, headers)
  })
  server.on('session', (s) => { s.on('error', () => {}) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const sessions = new Set<http2.ServerHttp2Session>()
  server.on('session', (s) => { sessions.add(s) })
  t.teardown(() => {
    for (const s of sessions) s.destroy()
    server.close()
  })
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, server, streams: () => streams }
}

const GRPC_REQ = { ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' }
/** One empty gRPC message (flag 0, length 0). */
const EMPTY_MSG = Buffer.alloc(5)

t.test('gRPC: an upstream answer that ends without a grpc-status is an error for the client and for the guard', async (t) => {
  const up = await h2Upstream(t, (stream, headers) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...(headers[':path'] === '/pkg.S/HeadOnly' ? { 'grpc-status': '0' } : {}) })
    stream.end(EMPTY_MSG)
  })
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: /pkg.S }
    blue: { targets: [${up.url}] }
`)
  const s = h2Session(t, gw.url)
  for (const path of ['/pkg.S/NoTrailers', '/pkg.S/HeadOnly']) {
    const r = await h2Request(s, path, GRPC_REQ, EMPTY_MSG).catch((e: Error) => e)
    if (r instanceof Error) {
      t.pass(`${path}: the stream was reset (${r.message})`)
      continue
    }
    const status = r.trailers?.['grpc-status']
    t.ok(status !== undefined && status !== '0', `${path}: the client gets a failing grpc-status in the trailers, not OK (${String(status)} ${String(r.trailers?.['grpc-message'])})`)
  }
  const stats = gw.gateway.registry.colorStats('svc', 'blue')
  await eventually(() => stats.inflight === 0)
  t.equal(stats.errors, 2, 'both count as errors for the guard (a release whose server drops its status is broken)')
})

/** Writes `chunk` to `w` until `limit` bytes, waiting for 'drain' when told to; `progress` hears each write. */
function pump (w: NodeJS.WritableStream & { destroyed?: boolean }, limit: number, progress: (total: number) => void): void {
  const chunk = Buffer.alloc(64 * 1024, 120)
  let total = 0
  const more = (): void => {
    while (total < limit && w.destroyed !== true) {
      total += chunk.length
      progress(total)
      if (!w.write(chunk)) {
        w.once('drain', more)
        return
      }
    }
    if (total >= limit) w.end()
  }
  more()
}

/** A client that opens one GET and never grants the gateway flow-control window past the initial 64 KiB. */
function nonReadingClient (t: Tap.Test, port: number, authority: string, path: string): { received: () => number } {
  const socket = net.connect(port, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  let received = 0
  socket.on('data', (d: Buffer) => { received += d.length })
  socket.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0), frame(SETTINGS, 1, 0), frame(HEADERS, END_STREAM | END_HEADERS, 1, getBlock(path, authority))]))
  return { received: () => received }
}

const BIG = 64 * 1024 * 1024

for (const protocol of ['http1', 'h2c']) {
  t.test(`${protocol} upstream: a client that takes nothing holds the upstream back (memory stays bounded)`, async (t) => {
    let written = 0
    let lastWrite = performance.now()
    const progress = (n: number): void => { written = n; lastWrite = performance.now() }
    let url: string
    if (protocol === 'http1') {
      const b = await startBackend(t, 'blue')
      b.handler = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        pump(res, BIG, progress)
      }
      url = b.url
    } else {
      url = (await h2Upstream(t, (stream) => {
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' })
        pump(stream, BIG, progress)
      })).url
    }
    const gw = await startGateway(t, `services:
  svc:
    protocol: ${protocol}
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
`)
    const client = nonReadingClient(t, Number(new URL(gw.url).port), new URL(gw.url).host, '/big')
    // The upstream writes until the gateway stops taking its bytes; then nothing moves for a while.
    await eventually(() => written > 0 && performance.now() - lastWrite > 500, { timeout: 20000 })
    t.ok(written < 16 * 1024 * 1024, `the upstream got to write ${(written / 1048576).toFixed(1)} MiB of ${BIG / 1048576} MiB while the client took ${client.received()} bytes`)
    t.ok(client.received() < 256 * 1024, 'the client got no more than its window')
    const s = h2Session(t, gw.url)
    t.equal((await h2Request(s, '/small', {}).catch((e: Error) => e) as H2Reply).status, 200, 'another client is served meanwhile')
  })
}

t.test('h2c configured for an upstream that speaks HTTP/1.1: a prompt 502/503, not a hang, and nothing left open', async (t) => {
  const b = await startBackend(t, 'blue')
  // A plain TCP server that reads and never answers: only the response deadline ends that.
  const silent = net.createServer((s) => { s.on('error', () => {}); s.resume() })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  const silentConns = new Set<net.Socket>()
  silent.on('connection', (s) => silentConns.add(s))
  t.teardown(() => { for (const s of silentConns) s.destroy(); silent.close() })
  const gw = await startGateway(t, `services:
  h1:
    protocol: h2c
    match: { pathPrefix: /h1 }
    blue: { targets: [${b.url}] }
    timeouts: { response: 5s }
  silent:
    protocol: h2c
    match: { pathPrefix: /silent }
    blue: { targets: [http://127.0.0.1:${(silent.address() as net.AddressInfo).port}] }
    timeouts: { connect: 300ms, response: 600ms }
`)
  const s = h2Session(t, gw.url)
  for (const [path, service] of [['/h1/x', 'h1'], ['/silent/x', 'silent']]) {
    const started = performance.now()
    const r = await h2Request(s, path)
    const ms = performance.now() - started
    t.ok(r.status === 502 || r.status === 503 || r.status === 504, `${path}: a gateway error (${r.status} ${r.body.toString()}) in ${ms.toFixed(0)} ms`)
    t.ok(ms < 3000, `${path}: not waiting out anything but its own deadlines`)
    const grpc = await h2Request(s, path, GRPC_REQ, EMPTY_MSG)
    t.ok(grpc.headers['grpc-status'] !== undefined && grpc.headers['grpc-status'] !== '0', `${path}: a gRPC call gets a failing status (${String(grpc.headers['grpc-status'])})`)
    const stats = gw.gateway.registry.colorStats(service, 'blue')
    await eventually(() => stats.inflight === 0)
    t.ok(stats.errors >= 2, `${path}: counted as errors (${stats.errors})`)
  }
})

t.test('gRPC: a client that cancels mid-stream or at its deadline resets the upstream stream, leaves nothing open, and is not the upstream\'s fault', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const gw = await startGateway(t, `services:
  echo:
    protocol: h2c
    match: { pathPrefix: /test.Echo }
    blue: { targets: [${blue.url}] }
`)
  const client = echoClient(t, new URL(gw.url).host)
  const call = client.bidi()
  call.on('error', () => {})
  const first = new Promise<Msg>((resolve) => call.once('data', resolve))
  call.write({ text: 'open' })
  t.equal((await first).color, 'blue')
  call.cancel()
  await eventually(() => blue.calls.bidiCancelled === 1)
  t.pass('the upstream saw its stream cancelled')
  const late = await unary(client, { text: 'slow', delay: 3000 }, 300)
  t.equal(late.code, grpc.status.DEADLINE_EXCEEDED, 'the client\'s own deadline')
  const stats = gw.gateway.registry.colorStats('echo', 'blue')
  await eventually(() => stats.inflight === 0)
  t.equal(stats.errors, 0, 'a client that gave up is no error of the upstream')
  t.same(await unary(client, { text: 'after' }), { msg: { text: 'after', color: 'blue' }, code: 0 }, 'still serving')
})

t.test('gRPC: grpc-timeout and te: trailers reach an h2c upstream as sent', async (t) => {
  let seen: IncomingHttpHeaders | undefined
  const up = await h2Upstream(t, (stream, headers) => {
    seen = headers
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
    stream.end(EMPTY_MSG)
  })
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: /pkg.S }
    blue: { targets: [${up.url}] }
`)
  const s = h2Session(t, gw.url)
  const r = await h2Request(s, '/pkg.S/M', { ...GRPC_REQ, 'grpc-timeout': '250m' }, EMPTY_MSG)
  t.equal(r.trailers?.['grpc-status'], '0')
  t.equal(seen?.['grpc-timeout'], '250m')
  t.equal(seen?.te, 'trailers')
})

/** Writes `bytes` one at a time, each after the previous left (a preface split across packets). */
async function dribble (socket: net.Socket, bytes: Buffer): Promise<void> {
  for (const byte of bytes) {
    await new Promise<void>((resolve) => socket.write(Buffer.from([byte]), () => resolve()))
    await new Promise<void>((resolve) => setTimeout(resolve, 2))
  }
}

for (const engine of ['fast', 'node']) {
  t.test(`${engine}: h2c preface detection: one byte per packet still starts a session; after an HTTP/1.1 request it is refused`, async (t) => {
    const { b, gw } = await pair(t, engine)
    const port = Number(new URL(gw.url).port)
    const authority = new URL(gw.url).host
    // One byte at a time, the whole preface and the SETTINGS after it.
    const got = await new Promise<RawOutcome>((resolve) => {
      const socket = net.connect(port, '127.0.0.1')
      t.teardown(() => { socket.destroy() })
      socket.on('error', () => {})
      let buf = Buffer.alloc(0)
      socket.on('close', () => resolve({ kind: 'closed' }))
      socket.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d])
        while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
          const len = buf.readUIntBE(0, 3)
          const [type, id] = [buf[3], buf.readUInt32BE(5)]
          const payload = buf.subarray(9, 9 + len)
          buf = buf.subarray(9 + len)
          if (type === HEADERS && id === 1) return resolve({ kind: 'headers', status: statusOf(payload) })
          if (type === RST_STREAM && id === 1) return resolve({ kind: 'rst', code: payload.readUInt32BE(0) })
        }
      })
      void dribble(socket, Buffer.concat([PREFACE, frame(SETTINGS, 0, 0)])).then(() => socket.write(frame(HEADERS, END_STREAM | END_HEADERS, 1, getBlock('/dribbled', authority))))
    })
    t.match(got, { kind: 'headers', status: 200 }, 'answered over HTTP/2')
    t.equal(forwarded(b, '/dribbled'), 1)

    // HTTP/1.1 first, then the preface on the same connection: not a way into HTTP/2 (RFC 9113 3.4: the preface comes first).
    const text = await exchange(port, `GET /first HTTP/1.1\r\nHost: ${authority}\r\n\r\n${PREFACE.toString('latin1')}${frame(SETTINGS, 0, 0).toString('latin1')}${frame(HEADERS, END_STREAM | END_HEADERS, 1, getBlock('/smuggled', authority)).toString('latin1')}`, undefined, 1500)
    t.match(text, /^HTTP\/1\.1 200 /, 'the HTTP/1.1 request is answered')
    t.match(text, /HTTP\/1\.1 400 /, 'the preface after it is a bad request')
    t.equal(forwarded(b, '/smuggled'), 0, 'no HTTP/2 request was served on it')
    // A partial preface, then garbage: an HTTP/1.1 bad request (node:http reads all 24 bytes) or a GOAWAY with an error
    // (the fast engine hands over at the first blank line), and the connection closes.
    const partial = Buffer.from(await exchange(port, 'PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n', undefined, 3000), 'latin1')
    const goaway = partial.indexOf(Buffer.from([0, 0, 8, 7, 0, 0, 0, 0, 0]))
    t.ok(partial.toString('latin1').startsWith('HTTP/1.1 400 ') || (goaway >= 0 && partial.readUInt32BE(goaway + 13) !== http2.constants.NGHTTP2_NO_ERROR), `a broken preface is refused (${JSON.stringify(partial.toString('latin1').slice(0, 20))})`)
    const s = h2Session(t, gw.url)
    t.equal((await h2Request(s, '/after')).status, 200, 'still serving')
  })
}

t.test('certificate files an unlucky operator writes: each refused with a message naming what is wrong, the old set serving on', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const other = makeCert(dir, 'other', { names: ['other.test'] })
  const siteCert = readFileSync(site.cert, 'latin1')
  const otherCert = readFileSync(other.cert, 'latin1')
  const refused = (files: CertFiles): string => {
    try {
      readCert(files, 'tls.certs[0]', 'TLSv1.2')
    } catch (err) {
      return (err as Error).message
    }
    return 'accepted'
  }
  // The chain in the wrong order: the key's certificate last.
  const leafLast = join(dir, 'leaf-last.pem')
  writeFileSync(leafLast, otherCert + siteCert)
  t.match(refused({ cert: leafLast, key: site.key }), /certificate 2 .* is the key's: it must come first/, 'leaf last: says the order is wrong, not that the key is someone else\'s')
  // Half of a chain written: the leaf whole, its issuer cut off.
  const half = join(dir, 'half.pem')
  writeFileSync(half, siteCert + otherCert.slice(0, otherCert.length >> 1))
  t.match(refused({ cert: half, key: site.key }), /certificate 2 is cut off/, 'a chain cut off mid-block is refused, not served without its issuer')
  // Cert and key swapped.
  t.match(refused({ cert: site.key, key: site.cert }), /is not a PEM certificate/, 'cert and key swapped')
  // A key with a passphrase.
  const encrypted = join(dir, 'enc-key.pem')
  execFileSync('openssl', ['pkey', '-in', site.key, '-out', encrypted, '-aes256', '-passout', 'pass:secret'])
  t.match(refused({ cert: site.cert, key: encrypted }), /is encrypted; the gateway takes a key without a passphrase/)
  t.equal(refused(site), 'accepted')
})

t.test('a watched certificate deleted, then written in two steps: the old one serves throughout, the whole new one is taken', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const next = makeCert(dir, 'next', { names: ['site.test'] })
  const { lines, log } = logCollector()
  const store = new CertStore({ certs: [site], minVersion: 'TLSv1.2' }, { log })
  const server = tls.createServer(store.serverOptions(), (s) => s.end())
  store.attach(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const port = (server.address() as net.AddressInfo).port
  t.teardown(store.watch())
  const oldFp = fingerprintOf(site)
  const refusals = (): number => lines.filter((l) => l.level === 'error').length

  unlinkSync(site.cert)
  await eventually(() => lines.some((l) => l.level === 'error' && String(l.fields.error).includes('no such file')))
  t.equal(await servedFingerprint(t, port, 'site.test'), oldFp, 'deleted: the old certificate serves on')

  // In place, in two writes with the watcher's settle time between: the first half is refused, never served.
  const pem = readFileSync(next.cert, 'latin1')
  const before = refusals()
  writeFileSync(site.cert, pem.slice(0, pem.length >> 1))
  await eventually(() => refusals() > before)
  t.equal(await servedFingerprint(t, port, 'site.test'), oldFp, 'half written: the old certificate serves on')
  appendFileSync(site.cert, pem.slice(pem.length >> 1))
  writeFileSync(site.key, readFileSync(next.key))
  const nextFp = fingerprintOf(next)
  await eventually(async () => await servedFingerprint(t, port, 'site.test') === nextFp)
  t.pass('the whole new pair is served once both files are written')
})

t.test('an h2c upstream that refuses every stream (GOAWAY at once, or REFUSED_STREAM): a bounded number of tries, then an error, nothing left open', async (t) => {
  let sessions = 0
  const goaway = http2.createServer()
  goaway.on('session', (s) => {
    sessions++
    s.on('error', () => {})
    // Nothing will be processed: last stream id 0, before any stream arrives.
    s.goaway(http2.constants.NGHTTP2_NO_ERROR, 0)
  })
  await new Promise<void>((resolve) => goaway.listen(0, '127.0.0.1', resolve))
  t.teardown(() => goaway.close())
  const refusing = await h2Upstream(t, (stream) => { stream.close(http2.constants.NGHTTP2_REFUSED_STREAM) })
  const gw = await startGateway(t, `services:
  goaway:
    protocol: h2c
    match: { pathPrefix: /goaway }
    blue: { targets: [http://127.0.0.1:${(goaway.address() as net.AddressInfo).port}] }
  refusing:
    protocol: h2c
    match: { pathPrefix: /refusing }
    blue: { targets: [${refusing.url}] }
`)
  const s = h2Session(t, gw.url)
  for (const service of ['goaway', 'refusing']) {
    const started = performance.now()
    const r = await h2Request(s, `/${service}/x`, GRPC_REQ, EMPTY_MSG)
    const ms = performance.now() - started
    t.ok(r.headers['grpc-status'] !== undefined && r.headers['grpc-status'] !== '0', `${service}: a failing gRPC status (${String(r.headers['grpc-status'])} ${String(r.headers['grpc-message'])}) in ${ms.toFixed(0)} ms`)
    const get = await h2Request(s, `/${service}/y`)
    t.ok(get.status >= 500, `${service}: a GET gets ${get.status}`)
    const stats = gw.gateway.registry.colorStats(service, 'blue')
    await eventually(() => stats.inflight === 0)
  }
  t.ok(sessions <= 10, `upstream sessions opened for two requests to the GOAWAY one: ${sessions}`)
  t.ok(refusing.streams() <= 10, `streams tried on the refusing one: ${refusing.streams()}`)
})

t.test('floods: CONTINUATION without end, PINGs never read, SETTINGS: the session is cut, the gateway serves on', async (t) => {
  const { b, gw } = await pair(t, 'fast')
  const port = Number(new URL(gw.url).port)
  const authority = new URL(gw.url).host
  const CONTINUATION = 0x9
  const PING = 0x6
  // CVE-2024-27983/27316: a header block that never ends, in many CONTINUATION frames.
  const filler = Buffer.concat(Array.from({ length: 100 }, (_, i) => field(`x-f${i}`, 'v'.repeat(100))))
  const cont: Buffer[] = [frame(HEADERS, 0, 1, getBlock('/flood', authority))]
  for (let i = 0; i < 400; i++) cont.push(frame(CONTINUATION, 0, 1, filler))
  const c = await rawH2(t, port, cont)
  t.ok(c.kind === 'goaway' || c.kind === 'closed' || c.kind === 'rst', `CONTINUATION flood: ${JSON.stringify(c)}`)
  // 20000 PINGs whose ACKs the client never reads.
  const pings = Buffer.concat(Array.from({ length: 20000 }, () => frame(PING, 0, 0, Buffer.alloc(8))))
  const p = await new Promise<string>((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    t.teardown(() => { socket.destroy() })
    socket.on('error', () => {})
    socket.pause()
    socket.on('close', () => resolve('closed'))
    socket.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0), pings]))
    // Read nothing until the gateway has had its say: it must end the session rather than queue ACKs forever.
    setTimeout(() => { socket.resume() }, 1000).unref()
  })
  t.equal(p, 'closed', 'PING flood: the session is closed')
  const settings = Buffer.concat(Array.from({ length: 20000 }, () => frame(SETTINGS, 0, 0, Buffer.from([0, 4, 0, 0, 0xff, 0xff]))))
  const st = await rawH2(t, port, [settings, frame(HEADERS, END_STREAM | END_HEADERS, 1, getBlock('/after-settings', authority))])
  t.ok(st.kind !== 'headers' || st.status === 200, `SETTINGS flood: ${JSON.stringify(st)}`)
  t.equal(forwarded(b, '/flood'), 0)
  const s = h2Session(t, gw.url)
  t.equal((await h2Request(s, '/after')).status, 200, 'still serving')
  await eventually(() => gw.gateway.listener !== undefined && blueStats(gw).inflight === 0)
})

t.test('request trailers from an HTTP/2 client never become header fields of an HTTP/1.1 upstream request', async (t) => {
  const { b, gw } = await pair(t, 'fast')
  let body = ''
  b.handler = (req, res) => {
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(JSON.stringify({ trailers: req.trailers }))
    })
  }
  const s = h2Session(t, gw.url)
  const reply = await new Promise<{ status: number, headers: IncomingHttpHeaders, body: Buffer }>((resolve, reject) => {
    const req = s.request({ ':path': '/upload', ':method': 'POST' }, { waitForTrailers: true })
    req.on('wantTrailers', () => req.sendTrailers({ 'x-trailer': 'late', authorization: 'Bearer smuggled' }))
    let head: IncomingHttpHeaders | undefined
    const chunks: Buffer[] = []
    req.on('response', (h) => { head = h })
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('error', reject)
    req.on('close', () => head === undefined ? reject(new Error(`reset ${req.rstCode}`)) : resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks) }))
    req.end('payload')
  })
  t.equal(reply.status, 200)
  t.equal(body, 'payload', 'the body arrived')
  const seen = b.seen.find((r) => r.url === '/upload')
  t.equal(seen?.headers['x-trailer'], undefined, 'no trailer became a header')
  t.equal(seen?.headers.authorization, undefined, 'no trailer became a header')
  await eventually(() => blueStats(gw).inflight === 0)
})

t.test('an h2c upstream answer head too large to relay to an HTTP/2 client is an upstream error, not a success the client never saw', async (t) => {
  const up = await h2Upstream(t, (stream) => {
    const big: OutgoingHttpHeaders = { ':status': 200, 'content-type': 'text/plain' }
    for (let i = 0; i < 12; i++) big[`x-big-${i}`] = 'v'.repeat(4000)
    stream.respond(big)
    stream.end('body')
  })
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${up.url}] }
`)
  const s = h2Session(t, gw.url)
  const r = await h2Request(s, '/big-head')
  t.equal(r.status, 502, `a 502 with the reason (${r.body.toString()})`)
  t.match(r.body.toString(), 'upstream_error')
  const grpcAnswer = await h2Request(s, '/pkg.S/M', GRPC_REQ, EMPTY_MSG)
  t.equal(grpcAnswer.headers['grpc-status'], '14', 'a gRPC call gets UNAVAILABLE')
  const stats = gw.gateway.registry.colorStats('svc', 'blue')
  await eventually(() => stats.inflight === 0)
  t.equal(stats.errors, 2, 'errors for the guard')
})

for (const protocol of ['http1', 'h2c']) {
  t.test(`${protocol} upstream: an upload the HTTP/2 client resets midway never reaches the upstream as a whole body`, async (t) => {
    const DATA = 0x0
    let started = 0
    const results: string[] = []
    let url: string
    if (protocol === 'http1') {
      const b = await startBackend(t, 'blue')
      b.handler = (req, res) => {
        started++
        let got = ''
        req.on('data', (c: Buffer) => { got += c.toString() })
        req.on('end', () => { results.push(`whole:${got}`); res.end('ok') })
        req.on('aborted', () => results.push(`aborted:${got}`))
        req.on('error', () => {})
      }
      url = b.url
    } else {
      url = (await h2Upstream(t, (stream) => {
        started++
        let got = ''
        let ended = false
        stream.on('data', (c: Buffer) => { got += c.toString() })
        stream.on('end', () => { ended = true })
        // END_STREAM is the whole body for the upstream, whatever comes after it: a server may act on it at once.
        stream.on('close', () => results.push(`${ended ? 'whole' : 'aborted'}:${got}`))
      })).url
    }
    const gw = await startGateway(t, `services:
  svc:
    protocol: ${protocol}
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
`)
    const port = Number(new URL(gw.url).port)
    const authority = new URL(gw.url).host
    const socket = net.connect(port, '127.0.0.1')
    t.teardown(() => { socket.destroy() })
    socket.on('error', () => {})
    socket.on('data', () => {})
    // A PUT with no content-length (an upload of unknown size), its first part, then nothing.
    const head = Buffer.concat([literal(2, 'PUT'), Buffer.from([0x86]), literal(4, '/upload'), literal(1, authority)])
    socket.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0), frame(SETTINGS, 1, 0), frame(HEADERS, END_HEADERS, 1, head), frame(DATA, 0, 1, Buffer.from('first part|'))]))
    await eventually(() => started === 1)
    // The client gives up: RST_STREAM CANCEL.
    socket.write(frame(RST_STREAM, 0, 1, Buffer.from([0, 0, 0, 8])))
    await eventually(() => results.length === 1)
    t.notMatch(results[0], /^whole:/, `the upstream saw: ${results[0]}`)
    await eventually(() => blueStats(gw).inflight === 0)
    t.equal(blueStats(gw).errors, 0, 'a client that gave up is no error of the upstream')
  })
}

for (const [engine, protocol] of [['fast', 'h2c'], ['node', 'h2c'], ['fast', 'http1'], ['node', 'http1']]) {
  t.test(`${engine}, ${protocol} upstream: an HTTP/1.1 client's chunked upload cut off midway never reaches the upstream whole, nor holds it open`, async (t) => {
    let started = 0
    const results: string[] = []
    let url: string
    if (protocol === 'h2c') {
      url = (await h2Upstream(t, (stream) => {
        started++
        let got = ''
        let ended = false
        stream.on('data', (c: Buffer) => { got += c.toString() })
        stream.on('end', () => { ended = true })
        stream.on('close', () => results.push(`${ended ? 'whole' : 'aborted'}:${got}`))
      })).url
    } else {
      const b = await startBackend(t, 'blue')
      b.handler = (req, res) => {
        started++
        let got = ''
        req.on('data', (c: Buffer) => { got += c.toString() })
        req.on('error', () => {})
        req.on('close', () => results.push(`${req.complete ? 'whole' : 'aborted'}:${got}`))
        req.on('end', () => res.end())
      }
      url = b.url
    }
    const gw = await startGateway(t, `engine: ${engine}
services:
  svc:
    protocol: ${protocol}
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
`)
    const socket = net.connect(Number(new URL(gw.url).port), '127.0.0.1')
    t.teardown(() => { socket.destroy() })
    socket.on('error', () => {})
    socket.on('data', () => {})
    socket.write(`PUT /upload HTTP/1.1\r\nHost: ${new URL(gw.url).host}\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nfirst part|\r\n`)
    await eventually(() => started === 1)
    // The client goes (FIN): well within client.bodyTimeout (60 s), which would end it otherwise.
    socket.destroy()
    await eventually(() => results.length === 1)
    t.notMatch(results[0], /^whole:/, `the upstream saw: ${results[0]}`)
    await eventually(() => blueStats(gw).inflight === 0)
    t.equal(blueStats(gw).errors, 0, 'not the upstream\'s fault')
  })
}

for (const engine of ['fast', 'node']) {
  t.test(`${engine}: over TLS, HTTP/2 only through ALPN h2; the preface on an http/1.1 connection is a bad request`, async (t) => {
    const dir = tempDir(t)
    const site = makeCert(dir, 'site', { names: ['site.test'] })
    const b = await startBackend(t, 'blue')
    const gw = await startGateway(t, `engine: ${engine}\ntls:\n  certs:\n    - { cert: ${site.cert}, key: ${site.key} }\nservices:\n${serviceYaml('svc', '/', [b], [b])}`)
    const port = gw.gateway.address.port
    const got = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'site.test', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
        t.equal(s.alpnProtocol, 'http/1.1')
        s.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0), frame(HEADERS, END_STREAM | END_HEADERS, 1, getBlock('/tls-prior', 'site.test'))]))
      })
      let text = ''
      s.on('data', (d: Buffer) => { text += d.toString('latin1') })
      s.on('error', reject)
      s.on('close', () => resolve(text))
      setTimeout(() => s.destroy(), 2000).unref()
    })
    t.match(got, /^HTTP\/1\.1 400 /, `refused as HTTP/1.1 (${JSON.stringify(got.slice(0, 16))})`)
    t.equal(forwarded(b, '/tls-prior'), 0)
  })
}

t.test('a gRPC health probe against a target that streams a huge answer gives up early instead of holding it all', async (t) => {
  let written = 0
  let lastWrite = performance.now()
  const up = await h2Upstream(t, (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' })
    pump(stream, BIG, (n) => { written = n; lastWrite = performance.now() })
  })
  const probes = new GrpcProbeSessions()
  t.teardown(() => probes.close())
  const r = await probes.check(up.url, '', 10000)
  t.equal(r.ok, false)
  t.match(r.detail, /larger than/, `a clear reason (${r.detail})`)
  await eventually(() => performance.now() - lastWrite > 200)
  t.ok(written < 8 * 1024 * 1024, `the target got to send ${(written / 1048576).toFixed(1)} MiB of ${BIG / 1048576} MiB`)
})

t.test(':scheme https on a plain h2c connection does not make X-Forwarded-Proto https', async (t) => {
  const { b, gw } = await pair(t, 'fast')
  const port = Number(new URL(gw.url).port)
  const got = await rawH2(t, port, [frame(HEADERS, END_STREAM | END_HEADERS, 1, requestBlock({ method: 'GET', scheme: 'https', authority: new URL(gw.url).host, path: '/scheme' }, [['x-forwarded-proto', 'https']]))])
  t.match(got, { kind: 'headers', status: 200 })
  t.equal(b.seen.find((r) => r.url === '/scheme')?.headers['x-forwarded-proto'], 'http', 'the listener says the scheme, not the client')
})

t.test('a request body that arrives while its request waits for a free HTTP/2 stream reaches the upstream whole', async (t) => {
  const bodies: Record<string, number> = {}
  let releaseFirst: (() => void) | undefined
  const server = http2.createServer({ settings: { maxConcurrentStreams: 1 } })
  server.on('session', (s) => { s.on('error', () => {}) })
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {})
    const path = headers[':path'] as string
    let n = 0
    stream.on('data', (c: Buffer) => { n += c.length })
    stream.on('end', () => {
      bodies[path] = n
      const answer = (): void => { stream.respond({ ':status': 200 }); stream.end(String(n)) }
      if (path === '/hold') releaseFirst = answer
      else answer()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [http://127.0.0.1:${(server.address() as net.AddressInfo).port}] }
    limits: { maxConnections: 1 }
    timeouts: { connect: 5s, response: 3s }
`)
  const s = h2Session(t, gw.url)
  // The one stream the target allows is taken until released.
  const first = h2Request(s, '/hold', {}, 'x')
  await eventually(() => releaseFirst !== undefined)
  const size = 300 * 1024
  const second = h2Request(s, '/upload', { 'content-type': 'application/octet-stream' }, Buffer.alloc(size, 97))
  // The second request waits for the stream while its body comes in (flow control lets 64 KiB and more through).
  await eventually(() => blueStats(gw).inflight === 2)
  // Part of the attack, not a wait for something: time for the body to come in while no stream can take it.
  await new Promise<void>((resolve) => setTimeout(resolve, 300))
  releaseFirst?.()
  t.equal((await first).status, 200)
  const r = await second
  t.equal(r.status, 200, 'answered once the stream is free')
  t.equal(bodies['/upload'], size, `the upstream got the whole body (${String(bodies['/upload'])} of ${size} bytes)`)
  await eventually(() => blueStats(gw).inflight === 0)
  t.equal(blueStats(gw).errors, 0)
})

t.test('a gRPC health probe does not take a target for healthy on a status in a head that did not end the call', async (t) => {
  const SERVING = Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01])
  const up = await h2Upstream(t, (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' })
    stream.write(SERVING)
    // No trailers: the stream just ends (the answer is only as good as a status that never came).
    stream.end()
  })
  const reset = await h2Upstream(t, (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' })
    stream.write(SERVING, () => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR))
  })
  const probes = new GrpcProbeSessions()
  t.teardown(() => probes.close())
  const ended = await probes.check(up.url, '', 2000)
  t.equal(ended.ok, false, `no trailers: not healthy (${ended.detail})`)
  const cut = await probes.check(reset.url, '', 2000)
  t.equal(cut.ok, false, `reset after the message: not healthy (${cut.detail})`)
})

t.test('an HTTP/1.1 client\'s Host that HTTP/2 cannot carry as :authority is not counted against an h2c upstream', async (t) => {
  const up = await h2Upstream(t, (stream) => { stream.respond({ ':status': 200 }); stream.end('ok') })
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${up.url}] }
`)
  const port = Number(new URL(gw.url).port)
  for (const host of ['a b.test', 'a.test\\x', 'a"b', 'a{b}', '']) {
    const text = await exchange(port, `GET /h HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, undefined, 3000)
    t.match(text, /^HTTP\/1\.1 [2-4]\d\d /, `Host ${JSON.stringify(host)}: ${text.split('\r\n')[0]}`)
  }
  const stats = gw.gateway.registry.colorStats('svc', 'blue')
  await eventually(() => stats.inflight === 0)
  t.equal(stats.errors, 0, 'no error counted for the upstream')
})

t.test('request targets and header values an HTTP/1.1 client may send are not counted against an h2c upstream', async (t) => {
  const seen: string[] = []
  const up = await h2Upstream(t, (stream, headers) => { seen.push(headers[':path'] as string); stream.respond({ ':status': 200 }); stream.end('ok') })
  const gw = await startGateway(t, `services:
  svc:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${up.url}] }
`)
  const port = Number(new URL(gw.url).port)
  const heads = [
    'GET /a"b HTTP/1.1', 'GET /a{b}|c^d HTTP/1.1', 'GET /caf\xe9 HTTP/1.1', 'GET /a\\b HTTP/1.1', 'GET /x?q=`a` HTTP/1.1', 'OPTIONS * HTTP/1.1',
  ]
  for (const line of heads) {
    const text = await exchange(port, `${line}\r\nHost: a.test\r\nX-Odd: caf\xe9 "q"\r\nConnection: close\r\n\r\n`, undefined, 3000)
    t.match(text, /^HTTP\/1\.1 [2-4]\d\d /, `${JSON.stringify(line)}: ${text.split('\r\n')[0]}`)
  }
  const stats = gw.gateway.registry.colorStats('svc', 'blue')
  await eventually(() => stats.inflight === 0)
  t.equal(stats.errors, 0, `no error counted for the upstream (it saw ${JSON.stringify(seen)})`)
})

t.test('rapid reset spread over packets: the session is cut off (GOAWAY) after a bounded number of resets', async (t) => {
  const { b, gw } = await pair(t, 'fast')
  const port = Number(new URL(gw.url).port)
  const authority = new URL(gw.url).host
  const socket = net.connect(port, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  let goaway: number | undefined
  let buf = Buffer.alloc(0)
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d])
    while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
      const len = buf.readUIntBE(0, 3)
      if (buf[3] === 0x7) goaway = buf.readUInt32BE(9 + 4)
      buf = buf.subarray(9 + len)
    }
  })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  const write = async (b: Buffer): Promise<void> => await new Promise<void>((resolve) => socket.write(b, () => resolve()))
  await write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0), frame(SETTINGS, 1, 0)]))
  let sent = 0
  for (let id = 1; sent < 3000 && goaway === undefined && !socket.destroyed; id += 2, sent++) {
    await write(frame(HEADERS, END_STREAM | END_HEADERS, id, getBlock('/spread/slow?ms=5000', authority)))
    // Let the gateway take the stream before the reset comes: the attack's costly form.
    await new Promise<void>((resolve) => setImmediate(resolve))
    await write(frame(RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])))
  }
  await Promise.race([closed, eventually(() => goaway !== undefined)])
  t.ok(goaway !== undefined || socket.destroyed, `the session was ended after ${sent} resets (GOAWAY ${String(goaway)})`)
  t.ok(sent < 3000, 'before the client ran out of patience')
  await eventually(() => blueStats(gw).inflight === 0, { timeout: 15000 })
  t.comment(`upstream requests started for reset streams: ${forwarded(b, '/spread')}`)
  const s = h2Session(t, gw.url)
  t.equal((await h2Request(s, '/after')).status, 200, 'still serving')
})
