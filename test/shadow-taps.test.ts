// The engines' side of shadow traffic: a recording AnswerTap added to every
// Resolution (through the resolve function the edge is built with) must see the
// request as it went upstream and the answer exactly as the client got it, on
// the fast and node engines, over HTTP/1.1 and h2c, and end once, or abort.

import t from 'tap'
import { createHash } from 'node:crypto'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import http2, { type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2'
import net, { type AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import { request } from 'undici'
import { parseConfig } from '../src/config/load.js'
import { Gateway } from '../src/gateway.js'
import { closeGracefully, listen, type ListenerDeps, type PublicListener } from '../src/listen/public-listener.js'
import { createEdgeServer, type EdgeServer } from '../src/proxy/edge.js'
import type { AnswerTap, Resolve } from '../src/proxy/resolve.js'
import { createResolver } from '../src/routing/resolve.js'
import { h2Call, h2Session } from './helpers/h2.js'
import { eventually, openWs, tempDir } from './helpers/index.js'

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex')

/** Bytes no two offsets of which repeat soon: a misplaced or lost chunk changes the digest. */
function pattern (n: number, seed: number): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 8)) & 0xff
  return b
}

/** Decodes an HTTP/1.1 chunked body (extensions and trailers dropped); throws on bad framing or a missing last chunk. */
function dechunk (raw: Buffer): Buffer {
  const out: Buffer[] = []
  let pos = 0
  for (;;) {
    const eol = raw.indexOf('\r\n', pos)
    if (eol === -1) throw new Error(`chunked body cut at ${pos}`)
    const size = parseInt(raw.toString('latin1', pos, eol).split(';')[0].trim(), 16)
    if (Number.isNaN(size)) throw new Error(`bad chunk size at ${pos}`)
    pos = eol + 2
    if (size === 0) break
    out.push(raw.subarray(pos, pos + size))
    pos += size
    if (raw.toString('latin1', pos, pos + 2) !== '\r\n') throw new Error(`no CRLF after chunk data at ${pos}`)
    pos += 2
  }
  // Trailer lines, then the empty line.
  for (;;) {
    const eol = raw.indexOf('\r\n', pos)
    if (eol === -1) throw new Error('chunked body without its final CRLF')
    if (eol === pos) break
    pos = eol + 2
  }
  return Buffer.concat(out)
}

/** Fields as [lower-case name, value] pairs, from either shape a tap is shown. */
function pairsOf (fields: string | ReadonlyArray<string | Buffer>): Array<[string, string]> {
  const out: Array<[string, string]> = []
  if (typeof fields === 'string') {
    for (const line of fields.split('\r\n')) {
      if (line === '') continue
      const colon = line.indexOf(':')
      out.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()])
    }
    return out
  }
  for (let i = 0; i < fields.length; i += 2) out.push([String(fields[i]).toLowerCase(), String(fields[i + 1]).trim()])
  return out
}

/** What one tap was shown. */
class Recorded implements AnswerTap {
  method = ''
  target = ''
  fields: Array<[string, string]> = []
  readonly requestChunks: Buffer[] = []
  lastFlags: boolean[] = []
  status = 0
  headFields: Array<[string, string]> = []
  chunked = false
  readonly bodyChunks: Buffer[] = []
  readonly events: string[] = []
  ends = 0
  aborts = 0
  readonly done: Promise<'end' | 'abort'>
  private settle!: (how: 'end' | 'abort') => void

  constructor (readonly path: string) {
    this.done = new Promise((resolve) => { this.settle = resolve })
  }

  request (method: string, target: string, fields: string | readonly string[]): void {
    this.events.push('request')
    this.method = method
    this.target = target
    this.fields = pairsOf(fields)
  }

  requestBody (chunk: Buffer, last: boolean): void {
    this.events.push('requestBody')
    // Copied: an engine may reuse its buffers once the call returns.
    this.requestChunks.push(Buffer.from(chunk))
    this.lastFlags.push(last)
  }

  head (status: number, fields: string | ReadonlyArray<string | Buffer>, chunked: boolean): void {
    this.events.push('head')
    this.status = status
    this.headFields = pairsOf(fields)
    this.chunked = chunked
  }

  body (chunk: Buffer): void {
    this.events.push('body')
    this.bodyChunks.push(Buffer.from(chunk))
  }

  end (): void {
    this.events.push('end')
    this.ends++
    this.settle('end')
  }

  abort (): void {
    this.events.push('abort')
    this.aborts++
    this.settle('abort')
  }

  /** The answer body as the client got it (chunk framing decoded when the tap was told so). */
  get answer (): Buffer {
    const raw = Buffer.concat(this.bodyChunks)
    return this.chunked ? dechunk(raw) : raw
  }

  field (name: string): string | undefined {
    return this.fields.find(([n]) => n === name)?.[1]
  }
}

/** The public listener of the gateway under test: LocalListener's, with a recording tap added to each Resolution. */
class TapListener implements PublicListener {
  readonly taps: Recorded[] = []
  private edge: EdgeServer | undefined
  private deps: ListenerDeps | undefined

  async start (deps: ListenerDeps): Promise<void> {
    this.deps = deps
    const resolve = createResolver(deps.controller.snapshots, deps.smoke)
    const tapped: Resolve = (facts) => {
      const to = resolve(facts)
      if (to.endpoint === undefined) return to
      const tap = new Recorded(facts.target)
      this.taps.push(tap)
      return { ...to, shadow: tap }
    }
    this.edge = createEdgeServer(tapped, deps.config)
    await listen(this.edge.server, deps.listen)
  }

  get address (): AddressInfo | undefined {
    return (this.edge?.server.address() ?? undefined) as AddressInfo | undefined
  }

  async stop (graceMs: number): Promise<void> {
    this.deps?.registry.closeWebSockets(0)
    await closeGracefully([this.edge], this.edge?.upgraded ?? new Set(), graceMs)
  }

  /** The one tap made for requests to `path`. */
  tapOf (path: string): Recorded {
    const found = this.taps.filter((x) => x.path === path)
    if (found.length !== 1) throw new Error(`${found.length} taps for ${path}`)
    return found[0]
  }
}

const BIG = pattern(200_000, 7)
const CHUNKED = [pattern(5000, 1), pattern(70_000, 2), pattern(3, 3), pattern(40_000, 4)]
const CLOSED = pattern(90_000, 5)

/** What the upstream saw of each request, by path. */
interface Upstream {
  url: string
  seen: Map<string, { raw: string[], body: Buffer }>
  /** Answers the held /busy request. */
  release: () => void
}

/** One upstream answering by the last path segment, every framing the tests need; WebSockets echo. */
async function startUpstream (t: Tap.Test): Promise<Upstream> {
  const seen = new Map<string, { raw: string[], body: Buffer }>()
  let held: ServerResponse | undefined
  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    const url = req.url ?? '/'
    seen.set(url, { raw: req.rawHeaders, body })
    const kind = url.slice(url.lastIndexOf('/') + 1).replace(/\?.*/, '')
    const socket = req.socket
    switch (kind) {
      case 'cl':
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(BIG.length), 'x-kind': 'cl', 'x-two': ['a', 'b'] })
        res.end(BIG)
        return
      case 'chunked': {
        res.writeHead(201, { 'content-type': 'text/plain', 'x-kind': 'chunked' })
        let i = 0
        const next = (): void => {
          if (i === CHUNKED.length) return void res.end()
          res.write(CHUNKED[i++])
          setImmediate(next)
        }
        return next()
      }
      case 'close':
        // No length, no chunking: the body runs until the upstream closes.
        socket.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-kind: close\r\nconnection: close\r\n\r\n'), CLOSED]))
        return
      case 'head':
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1234', 'x-kind': 'head' })
        res.end()
        return
      case 'empty':
        res.writeHead(204, { 'x-kind': 'empty' })
        res.end()
        return
      case 'post':
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ sha: sha256(body), length: body.length }))
        return
      case 'reset':
        // Part of the body, then the connection goes: the client must see a cut answer.
        res.writeHead(200, { 'content-length': String(BIG.length) })
        res.write(BIG.subarray(0, 1000), () => setTimeout(() => socket.destroy(), 20))
        return
      case 'hold':
        // Part of the body, then nothing until the client is gone.
        res.writeHead(200, { 'content-length': String(BIG.length) })
        res.write(BIG.subarray(0, 1000))
        return
      case 'garbage':
        socket.end('SPDY/9 nonsense\r\n\r\n')
        return
      case 'hang':
        return
      case 'busy':
        held = res
        return
      default:
        res.writeHead(200, { 'content-type': 'text/plain', 'x-kind': 'plain' })
        res.end(`answer from upstream for ${url}`)
    }
  }
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => handle(req, res, Buffer.concat(chunks)))
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => ws.on('message', (d) => ws.send(`echo ${(d as Buffer).toString()}`)))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate()
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    release: () => {
      held?.writeHead(200, { 'content-type': 'text/plain' })
      held?.end('released')
      held = undefined
    },
  }
}

interface Under {
  gw: Gateway
  taps: TapListener
  up: Upstream
  /** Every tap must have ended or aborted exactly once by the time the gateway stopped. */
  stop: () => Promise<void>
}

async function startUnder (t: Tap.Test, engine: string): Promise<Under> {
  const up = await startUpstream(t)
  const yaml = `engine: ${engine}
log: { access: false }
services:
  a:
    match: { pathPrefix: /a }
    blue: { targets: [${up.url}] }
    timeouts: { response: 500ms }
    passive: false
  busy:
    match: { pathPrefix: /busy }
    blue: { targets: [${up.url}] }
    limits: { maxConnections: 1 }
    timeouts: { connect: 300ms }
    passive: false
  retry:
    match: { pathPrefix: /retry }
    blue: { targets: ['http://127.0.0.1:1', ${up.url}] }
    passive: false
`
  const dir = tempDir(t)
  const config = parseConfig(yaml, { file: `${dir}/switchyard.yaml`, env: {} })
  const taps = new TapListener()
  const gw = new Gateway(config, { env: {}, listener: taps, listen: { host: '127.0.0.1', port: 0 }, adminListen: { host: '127.0.0.1', port: 0 } })
  await gw.start()
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    await gw.stop(1000)
    for (const tap of taps.taps) t.equal(tap.ends + tap.aborts, 1, `${tap.path}: one ending (${tap.events.join(' ')})`)
  }
  t.teardown(stop)
  return { gw, taps, up, stop }
}

/** Checks a tap that ended: the request as the upstream got it, the answer as the client did. */
function checkWhole (t: Tap.Test, u: Under, path: string, method: string, status: number, clientHeaders: Record<string, string | string[] | undefined>, clientBody: Buffer, h2: boolean): Recorded {
  const tap = u.taps.tapOf(path)
  t.equal(tap.ends, 1, `${path}: end once`)
  t.equal(tap.aborts, 0, `${path}: never aborted`)
  t.equal(tap.events[0], 'request', `${path}: request first`)
  t.equal(tap.events.filter((e) => e === 'head').length, 1, `${path}: one head`)
  t.equal(tap.events.at(-1), 'end', `${path}: end last`)
  t.ok(tap.events.every((e, i) => e !== 'body' || i > tap.events.indexOf('head')), `${path}: the body after the head`)
  t.equal(tap.method, method, `${path}: method`)
  t.equal(tap.target, path, `${path}: target`)
  // The request fields are those the upstream got (forwarding headers and request id included).
  const upstream = u.up.seen.get(path)
  t.ok(upstream !== undefined, `${path}: reached the upstream`)
  if (upstream !== undefined) {
    const raw = pairsOf(upstream.raw)
    for (const [name, value] of tap.fields) t.ok(raw.some(([n, v]) => n === name && v === value), `${path}: ${name}: ${value} went upstream`)
    const told = new Set(tap.fields.map(([n]) => n))
    for (const [name] of raw) {
      if (!['connection', 'content-length', 'transfer-encoding', 'keep-alive', 'host'].includes(name)) t.ok(told.has(name), `${path}: upstream field ${name} shown to the tap`)
    }
    t.equal(tap.field('x-forwarded-for'), '127.0.0.1', `${path}: x-forwarded-for`)
    const id = raw.find(([n]) => n === 'x-request-id')?.[1]
    t.ok(id !== undefined && id !== '', `${path}: the upstream got a request id`)
    t.equal(tap.field('x-request-id'), id, `${path}: the tap saw the request id the upstream got`)
  }
  t.equal(tap.status, status, `${path}: status`)
  t.equal(tap.chunked && h2, false, `${path}: HTTP/2 bodies are shown decoded`)
  // The answer's fields: each one the tap saw reached the client, and the client got none the tap did not see.
  const framing = ['connection', 'keep-alive', 'transfer-encoding', 'date']
  const shown = new Map<string, string[]>()
  for (const [name, value] of tap.headFields) shown.set(name, [...(shown.get(name) ?? []), value])
  for (const [name, values] of shown) {
    if (h2 && (name === 'transfer-encoding' || name === 'connection')) continue
    // Compared as one list: node:http2 joins a repeated field's values (set-cookie aside) with ', '.
    const got = clientHeaders[name]
    t.equal(Array.isArray(got) ? got.join(', ') : got, values.join(', '), `${path}: answer field ${name} reached the client as shown`)
  }
  for (const name of Object.keys(clientHeaders)) {
    if (name.startsWith(':') || framing.includes(name)) continue
    t.ok(tap.headFields.some(([n]) => n === name), `${path}: client field ${name} shown to the tap`)
  }
  t.equal(sha256(tap.answer), sha256(clientBody), `${path}: the tap's body is the client's (${clientBody.length} bytes)`)
  return tap
}

/** An HTTP/1.1 request whose whole answer the client reads. */
async function h1 (u: Under, path: string, method = 'GET', body?: Buffer): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: Buffer }> {
  const res = await request(u.gw.url + path, { method: method as 'GET', body })
  const got = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body: got }
}

/** Sends a raw HTTP/1.1 GET (or `head`); `cut` destroys the socket at the first answer bytes. Resolves when the socket closes. */
async function rawGet (u: Under, path: string, cut: boolean, head = `GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`): Promise<Buffer> {
  const { port } = new URL(u.gw.url)
  return await new Promise((resolve) => {
    const chunks: Buffer[] = []
    const s = net.connect(Number(port), '127.0.0.1', () => s.write(head))
    s.on('data', (c: Buffer) => {
      chunks.push(c)
      if (cut) s.destroy()
    })
    s.on('error', () => {})
    s.on('close', () => resolve(Buffer.concat(chunks)))
  })
}

/**
 * The answers every engine must show whole. The close-delimited one is larger than an
 * HTTP/2 client's window, so on the node engine the upstream's FIN finds undici's parser
 * paused (nodejs/undici#5360, which src/upstream/end-guard.ts guards against).
 */
function answers (): Array<{ path: string, method: string, status: number, chunked: boolean }> {
  return [
    { path: '/a/x/cl', method: 'GET', status: 200, chunked: false },
    { path: '/a/x/chunked', method: 'GET', status: 201, chunked: true },
    { path: '/a/x/close', method: 'GET', status: 200, chunked: false },
    { path: '/a/x/head', method: 'HEAD', status: 200, chunked: false },
    { path: '/a/x/empty', method: 'GET', status: 204, chunked: false },
  ]
}

for (const engine of ['fast', 'node']) {
  t.test(`${engine}, HTTP/1.1: the tap sees the request and the answer as relayed`, async (t) => {
    const u = await startUnder(t, engine)
    for (const a of answers()) {
      const r = await h1(u, a.path, a.method)
      t.equal(r.status, a.status, `${a.path}: answered`)
      await u.taps.tapOf(a.path).done
      const tap = checkWhole(t, u, a.path, a.method, a.status, r.headers, r.body, false)
      // The fast engine relays chunk framing as received (and says so); node:http's answer is decoded.
      t.equal(tap.chunked, engine === 'fast' && a.chunked, `${a.path}: chunked flag`)
      if (a.path.endsWith('/cl')) t.equal(sha256(r.body), sha256(BIG))
      if (a.path.endsWith('/chunked')) t.equal(sha256(r.body), sha256(Buffer.concat(CHUNKED)))
      if (a.path.endsWith('/close')) t.equal(sha256(r.body), sha256(CLOSED))
    }

    const sent = pattern(150_000, 9)
    const post = await h1(u, '/a/x/post', 'POST', sent)
    t.equal(JSON.parse(post.body.toString()).sha, sha256(sent), 'the upstream got the body')
    const tap = checkWhole(t, u, '/a/x/post', 'POST', 200, post.headers, post.body, false)
    t.equal(sha256(Buffer.concat(tap.requestChunks)), sha256(sent), 'requestBody: the body as sent upstream')
    t.same(tap.lastFlags.map((l, i) => l === (i === tap.lastFlags.length - 1)), tap.lastFlags.map(() => true), 'last: on the final chunk only')
    t.ok(tap.events.lastIndexOf('requestBody') < tap.events.indexOf('head'), 'the body went before the answer')
    await u.stop()
  })

  t.test(`${engine}, HTTP/1.1: the tap is aborted, never ended, when the answer is not whole`, async (t) => {
    const u = await startUnder(t, engine)
    const reset = await rawGet(u, '/a/x/reset', false)
    t.ok(reset.length < BIG.length, 'the client saw a cut answer')
    t.equal(await u.taps.tapOf('/a/x/reset').done, 'abort', 'upstream reset mid-body: abort')
    t.ok(u.taps.tapOf('/a/x/reset').events.includes('head'), 'after the head was shown')

    await rawGet(u, '/a/x/hold', true)
    t.equal(await u.taps.tapOf('/a/x/hold').done, 'abort', 'client gone mid-answer: abort')

    const bad = await h1(u, '/a/x/garbage')
    t.equal(bad.status, 502)
    t.equal(await u.taps.tapOf('/a/x/garbage').done, 'abort', 'a 502 of the gateway: abort')

    const slow = await h1(u, '/a/x/hang')
    t.equal(slow.status, 504)
    t.equal(await u.taps.tapOf('/a/x/hang').done, 'abort', 'a 504 of the gateway: abort')

    const first = h1(u, '/busy/1/busy')
    await eventually(() => u.up.seen.has('/busy/1/busy'))
    const busy = await h1(u, '/busy/2/cl')
    t.equal(busy.status, 503)
    t.equal(await u.taps.tapOf('/busy/2/cl').done, 'abort', 'a 503 of the gateway: abort')
    u.up.release()
    t.equal((await first).status, 200)
    t.equal(await u.taps.tapOf('/busy/1/busy').done, 'end', 'the held request ends')

    // 16,300 bytes: within 16 KiB at the edge, over it once X-Forwarded-* and the request id are added.
    const line = 'GET /a/x/big HTTP/1.1\r\n'
    const big = await rawGet(u, '/a/x/big', false, `${line}host: x\r\nconnection: close\r\nx-pad: ${'a'.repeat(16_300 - line.length - 9 - 19 - 9 - 2)}\r\n\r\n`)
    t.match(big.toString('latin1'), /^HTTP\/1\.1 431 /, 'refused before it goes upstream')
    t.equal(await u.taps.tapOf('/a/x/big').done, 'abort', 'a head too large once forwarded: abort')
    t.same(u.taps.tapOf('/a/x/big').events, ['abort'], 'shown nothing')

    const ws = await openWs(u.gw.url.replace('http', 'ws') + '/a/x/ws')
    ws.ws.send('hi')
    t.equal(await ws.next(), 'echo hi', 'the tunnel works')
    const wsTap = u.taps.tapOf('/a/x/ws')
    t.equal(await wsTap.done, 'abort', 'a WebSocket upgrade: abort')
    t.same(wsTap.events, ['abort'], 'at once, shown nothing')
    ws.ws.close()
    await ws.closed
    await u.stop()
  })

  t.test(`${engine}, HTTP/1.1: a retried request ends once with the answer relayed`, async (t) => {
    const u = await startUnder(t, engine)
    // Targets are picked in turn: of four requests, some go to the refusing port first and are retried.
    for (let i = 0; i < 4; i++) {
      const path = `/retry/${i}/cl`
      const r = await h1(u, path)
      t.equal(r.status, 200, `${path}: answered`)
      await u.taps.tapOf(path).done
      checkWhole(t, u, path, 'GET', 200, r.headers, r.body, false)
    }
    const blue = u.gw.controller.snapshots.current.services.get('retry')?.colors.blue.stats
    t.ok((blue?.upstreamErrors.connect_failed ?? 0) >= 1, 'some were retried after a refused connection')
    await u.stop()
  })

  t.test(`${engine}, h2c: the tap sees the request and the decoded answer`, async (t) => {
    const u = await startUnder(t, engine)
    const s = h2Session(t, u.gw.url)
    for (const a of answers()) {
      const r = await h2Call(s, a.path, { ':method': a.method })
      t.equal(r.status, a.status, `${a.path}: answered`)
      t.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR, `${a.path}: a clean end`)
      await u.taps.tapOf(a.path).done
      const tap = checkWhole(t, u, a.path, a.method, a.status, r.headers, r.body, true)
      t.equal(tap.chunked, false, `${a.path}: decoded`)
    }
    const sent = pattern(100_000, 11)
    const post = await h2Call(s, '/a/x/post', { 'content-length': String(sent.length) }, sent)
    t.equal(JSON.parse(post.body.toString()).sha, sha256(sent), 'the upstream got the body')
    const tap = checkWhole(t, u, '/a/x/post', 'POST', 200, post.headers, post.body, true)
    t.equal(sha256(Buffer.concat(tap.requestChunks)), sha256(sent), 'requestBody: the body as sent upstream')
    t.equal(tap.lastFlags.filter((l) => l).length, 1, 'one last chunk')
    t.equal(tap.lastFlags.at(-1), true, 'the final one')
    // Without a length: forwarded chunked on the fast engine's raw connections, shown decoded.
    const post2 = await h2Call(s, '/a/y/post', {}, sent)
    t.equal(JSON.parse(post2.body.toString()).sha, sha256(sent))
    t.equal(sha256(Buffer.concat(u.taps.tapOf('/a/y/post').requestChunks)), sha256(sent), 'a body of unknown length, decoded')

    const reset = await h2Call(s, '/a/x/reset')
    t.not(reset.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the client saw a reset stream')
    t.equal(await u.taps.tapOf('/a/x/reset').done, 'abort', 'upstream reset mid-body: abort')

    await cancelAtFirstData(s, '/a/x/hold')
    t.equal(await u.taps.tapOf('/a/x/hold').done, 'abort', 'client reset mid-answer: abort')

    t.equal((await h2Call(s, '/a/x/garbage')).status, 502)
    t.equal(await u.taps.tapOf('/a/x/garbage').done, 'abort', 'a 502 of the gateway: abort')
    t.equal((await h2Call(s, '/a/x/hang')).status, 504)
    t.equal(await u.taps.tapOf('/a/x/hang').done, 'abort', 'a 504 of the gateway: abort')

    for (let i = 0; i < 4; i++) {
      const path = `/retry/${i}/cl`
      const r = await h2Call(s, path)
      t.equal(r.status, 200, `${path}: answered`)
      await u.taps.tapOf(path).done
      checkWhole(t, u, path, 'GET', 200, r.headers, r.body, true)
    }
    await u.stop()
  })
}

/** Opens a stream and cancels it (RST_STREAM CANCEL) as the first answer bytes come. */
async function cancelAtFirstData (s: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}): Promise<void> {
  await new Promise<void>((resolve) => {
    const req = s.request({ ':path': path, ...headers })
    req.on('error', () => {})
    req.once('data', () => req.close(http2.constants.NGHTTP2_CANCEL))
    req.on('close', () => resolve())
  })
}
