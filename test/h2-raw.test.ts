// HTTP/2 clients to HTTP/1.1 upstreams on the fast engine's raw connections
// (src/proxy/h2/raw-exchange.ts): chunked answers decoded into DATA frames,
// trailers, close-delimited bodies, 1xx, keep-alive reuse and its race, request
// bodies both sized and not, and upstreams that break their answer.

import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import http2 from 'node:http2'
import net from 'node:net'
import { ChunkedScanner } from '../src/proxy/h1/parse.js'
import { MAX_HEAD } from '../src/proxy/limits.js'
import { h2Request, h2Session } from './helpers/h2.js'
import { eventually, startBackend, startGateway, type TestGateway } from './helpers/index.js'

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')

/** Decodes `body` fed in pieces of `step` bytes: the data, the trailers, and the end in the whole (or the first negative answer). */
function decodeInSteps (body: Buffer, step: number): { data: Buffer, trailers: string[] | undefined, end: number } {
  const s = new ChunkedScanner(true)
  const parts: Buffer[] = []
  for (let at = 0; at < body.length; at += step) {
    const r = s.scan(body.subarray(at, at + step), 0)
    parts.push(...(s.parts as Buffer[]))
    ;(s.parts as Buffer[]).length = 0
    if (r === -2) return { data: Buffer.concat(parts), trailers: s.trailers, end: -2 }
    if (r >= 0) return { data: Buffer.concat(parts), trailers: s.trailers, end: at + r }
  }
  return { data: Buffer.concat(parts), trailers: s.trailers, end: -1 }
}

t.test('chunked decoding: the payload and trailers come out whole however the bytes arrive', async (t) => {
  const payload = randomBytes(3000)
  const framed = Buffer.concat([
    Buffer.from('A;ext=1\r\n', 'latin1'), payload.subarray(0, 10), Buffer.from('\r\n'),
    Buffer.from('1;a;b="c \\"d\\"\té";e=f\r\n', 'latin1'), payload.subarray(10, 11), Buffer.from('\r\n'),
    Buffer.from(`${(payload.length - 11).toString(16)}\r\n`), payload.subarray(11), Buffer.from('\r\n'),
    Buffer.from('0\r\nX-Sum: \t abc \r\nx-more:2\té\r\nContent-Length: 5\r\nset-cookie: a=b\r\n\r\n', 'latin1'),
  ])
  const body = Buffer.concat([framed, Buffer.from('NEXT')])
  for (const step of [1, 2, 3, 7, 100, 1024, body.length]) {
    const r = decodeInSteps(body, step)
    t.equal(r.end, framed.length, `the end, in steps of ${step}`)
    t.equal(sha(r.data), sha(payload), `the payload without the framing, in steps of ${step}`)
    t.same(r.trailers, ['x-sum', 'abc', 'x-more', '2\té'], `trailers (lower-case names, trimmed values, forbidden ones left out), in steps of ${step}`)
  }
  t.equal(new ChunkedScanner().scan(framed, 0), -2, 'scanning alone still refuses a forbidden trailer (the fast engine relays bytes as they are)')
  const none = decodeInSteps(Buffer.from('0\r\n\r\n'), 1)
  t.same([none.end, none.data.length, none.trailers], [5, 0, undefined], 'an empty body')
  const huge = Buffer.from(`0\r\nx-big: ${'v'.repeat(MAX_HEAD)}\r\n\r\n`)
  t.equal(decodeInSteps(huge, 4096).end, -2, 'a trailer section over MAX_HEAD is refused when it is kept')
  t.equal(new ChunkedScanner().scan(huge, 0), huge.length, '...while scanning passes it on')
  for (const text of ['5\r\nhello0\r\n', '1;a\nb', '0\r\nx\ny', '1234567890123\r\n']) t.equal(decodeInSteps(Buffer.from(text), 1).end, -2, `invalid: ${JSON.stringify(text)}`)
})

interface RawBackend {
  url: string
  /** Connections that carried a client request (health probes left out). */
  conns: Set<net.Socket>
  /** Every connection accepted. */
  accepted: number
  /** Request heads from clients, in order. */
  heads: string[]
  /** Answers one request head; `nth`: requests before it on this connection. */
  answer: (socket: net.Socket, head: string, nth: number) => void
}

/** A backend on a raw socket, for answers node:http would never write (GET requests only). */
async function rawBackend (t: Tap.Test, answer: RawBackend['answer']): Promise<RawBackend> {
  const b = { conns: new Set(), accepted: 0, heads: [], answer } as unknown as RawBackend
  const server = net.createServer((socket) => {
    b.accepted++
    socket.setNoDelay(true)
    socket.on('error', () => {})
    let buf = ''
    let nth = 0
    socket.on('data', (chunk) => {
      buf += chunk.toString('latin1')
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end)
        buf = buf.slice(end + 4)
        if (head.startsWith('GET /healthz ')) {
          socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
          continue
        }
        b.conns.add(socket)
        b.heads.push(head)
        b.answer(socket, head, nth++)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  b.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
  t.teardown(async () => await new Promise<void>((resolve) => {
    server.close(() => resolve())
    for (const s of b.conns) s.destroy()
  }))
  return b
}

/** Writes `pieces` one at a time, each in its own turn of the event loop and its own TCP segment (so the gateway reads them apart). */
async function writeApart (socket: net.Socket, pieces: Array<Buffer | string>): Promise<void> {
  for (const p of pieces) {
    socket.write(p)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

async function gatewayFor (t: Tap.Test, url: string, extra = ''): Promise<TestGateway> {
  return await startGateway(t, `engine: fast\ndefaults:\n  health: { interval: 60s, assumeHealthy: true }\n${extra}services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
`)
}

function statsOf (gw: TestGateway): { errors: number, inflight: number, upstreamErrors: Record<string, number> } {
  return gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.stats as unknown as { errors: number, inflight: number, upstreamErrors: Record<string, number> }
}

t.test('a chunked answer is decoded into DATA frames: split chunk lines, extensions, trailers relayed', async (t) => {
  const payload = randomBytes(64 * 1024)
  const b = await rawBackend(t, (socket) => {
    const framed = Buffer.concat([
      Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\nx-kept: yes\r\n\r\n'),
      Buffer.from('7;ext=1;q="a b"\r\n'), payload.subarray(0, 7), Buffer.from('\r\n'),
      Buffer.from(`${(payload.length - 7).toString(16)}\r\n`), payload.subarray(7), Buffer.from('\r\n'),
      Buffer.from(`0\r\nx-checksum: ${sha(payload)}\r\n\r\n`),
    ])
    // Cut at awkward places: inside the head, the chunk size line, the CRLF after data, the last chunk and its trailer.
    const cuts = [30, 100, 105, 120, framed.length - 60, framed.length - 3, framed.length]
    const pieces: Buffer[] = []
    let from = 0
    for (const cut of cuts) {
      pieces.push(framed.subarray(from, cut))
      from = cut
    }
    void writeApart(socket, pieces)
  })
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  for (let i = 0; i < 2; i++) {
    const r = await h2Request(s, `/chunked/${i}`)
    t.equal(r.status, 200)
    t.equal(r.body.length, payload.length, 'the payload length, without the chunk framing')
    t.equal(sha(r.body), sha(payload), 'the payload bytes')
    t.equal(r.headers['transfer-encoding'], undefined, 'no transfer-encoding on HTTP/2')
    t.equal(r.headers['x-kept'], 'yes')
    t.equal(r.trailers?.['x-checksum'], sha(payload), 'the trailer arrives as HTTP/2 trailers')
  }
  t.equal(b.conns.size, 1, 'both answers on one kept upstream connection')
  await eventually(() => statsOf(gw).inflight === 0)
  t.equal(statsOf(gw).errors, 0)
})

t.test('a chunked answer whole in one read, unannounced trailers, and a body of several chunks in one read', async (t) => {
  const b = await rawBackend(t, (socket, head) => {
    if (head.startsWith('GET /one ')) socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nx-late: 1\r\n\r\n')
    else socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n')
  })
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  const one = await h2Request(s, '/one')
  t.equal(one.body.toString(), 'hello, world')
  t.equal(one.trailers, undefined, 'trailers nobody announced are not waited for (as on the node engine)')
  const empty = await h2Request(s, '/empty')
  t.equal(empty.status, 200)
  t.equal(empty.body.length, 0)
  t.equal(b.conns.size, 1)
})

t.test('a close-delimited answer runs until the upstream closes, and ends the stream cleanly', async (t) => {
  const payload = randomBytes(100 * 1024)
  const b = await rawBackend(t, (socket) => {
    void writeApart(socket, ['HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n', payload.subarray(0, 1000), payload.subarray(1000)]).then(() => socket.end())
  })
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  for (let i = 0; i < 2; i++) {
    const r = await h2Request(s, `/close/${i}`)
    t.equal(r.status, 200)
    t.equal(sha(r.body), sha(payload), 'the whole body')
  }
  t.equal(b.conns.size, 2, 'a connection the body ended with is not reused')
  await eventually(() => statsOf(gw).inflight === 0)
  t.equal(statsOf(gw).errors, 0, 'not an error')
})

t.test('1xx: a 100 from the upstream is swallowed, a 103 is relayed, then the 200', async (t) => {
  const b = await rawBackend(t, (socket) => {
    void writeApart(socket, [
      'HTTP/1.1 100 Continue\r\n\r\n',
      'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok',
    ])
  })
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  const r = await h2Request(s, '/hints')
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'ok')
  t.equal(r.informational.length, 1, 'one informational head reaches the client')
  t.equal(r.informational[0][':status'], 103)
  t.equal(r.informational[0].link, '</style.css>; rel=preload')
})

t.test('sequential streams reuse one upstream connection; HEAD, 204 and 304 end with their head', async (t) => {
  const b = await startBackend(t, 'blue')
  const conns = new Set<unknown>()
  b.handler = (req, res) => {
    // Health probes come on undici's own connections.
    if (req.url !== '/healthz') conns.add(req.socket)
    if (req.url === '/204') return void res.writeHead(204).end()
    if (req.url === '/304') return void res.writeHead(304, { etag: '"x"' }).end()
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' })
    res.end(req.method === 'HEAD' ? undefined : 'hello')
  }
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  for (let i = 0; i < 5; i++) t.equal((await h2Request(s, `/seq/${i}`)).body.toString(), 'hello')
  const head = await h2Request(s, '/h', { ':method': 'HEAD' })
  t.same([head.status, head.headers['content-length'], head.body.length], [200, '5', 0])
  t.equal((await h2Request(s, '/204')).status, 204)
  const notModified = await h2Request(s, '/304')
  t.same([notModified.status, notModified.headers.etag, notModified.body.length], [304, '"x"', 0])
  t.equal(conns.size, 1, 'one upstream connection for every stream')
})

t.test('the keep-alive race: a kept connection the upstream closes as it is reused is retried on a new one, not blamed', async (t) => {
  const b = await rawBackend(t, (socket, _head, nth) => {
    // The first request on a connection is answered; the next one finds it closing.
    if (nth === 0) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    else socket.destroy()
  })
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  for (let i = 0; i < 3; i++) t.equal((await h2Request(s, `/race/${i}`)).body.toString(), 'ok', `request ${i} answered`)
  t.equal(b.heads.length, 5, 'two requests were sent twice')
  t.equal(b.conns.size, 3, 'each retry on a new connection')
  await eventually(() => statsOf(gw).inflight === 0)
  t.equal(statsOf(gw).errors, 0, 'not an error for the guard')
  const target = (await (await fetch(`${gw.adminUrl}/v1/state`)).json()).services.svc.environments.blue.targets[0]
  t.equal(target.healthy, true, 'the target is not ejected')
})

t.test('POST bodies with content-length are streamed upstream whole, no faster than the upstream reads them', async (t) => {
  const b = await startBackend(t, 'blue')
  let readFrom = 0
  b.handler = (req, res) => {
    // The upstream reads nothing for a while: the client must be held back, not buffered in the gateway.
    req.pause()
    setTimeout(() => {
      readFrom = performance.now()
      const hash = createHash('sha256')
      let n = 0
      req.on('data', (c: Buffer) => { hash.update(c); n += c.length })
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ n, sha: hash.digest('hex'), length: req.headers['content-length'], te: req.headers['transfer-encoding'] ?? null })))
      req.resume()
    }, 600)
  }
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  const body = randomBytes(1024 * 1024)
  const r = await h2Request(s, '/upload', { 'content-length': String(body.length) }, body)
  t.same(JSON.parse(r.body.toString()), { n: body.length, sha: sha(body), length: String(body.length), te: null }, '1 MiB: every byte, with the length as sent')
  // Loopback sockets buffer a few MiB in the kernel (a 64 KiB MSS grows the send buffer up to tcp_wmem's 4 MiB):
  // only a body well past that shows whether the gateway holds the client back or reads it all into memory.
  const big = randomBytes(24 * 1024 * 1024)
  const r2 = await h2Request(s, '/upload-big', { 'content-length': String(big.length) }, big)
  t.same(JSON.parse(r2.body.toString()), { n: big.length, sha: sha(big), length: String(big.length), te: null }, '24 MiB: every byte')
  t.ok(r2.sentAt > readFrom, `the client finished sending only after the upstream began reading (${(r2.sentAt - readFrom).toFixed(0)} ms after)`)
})

t.test('a POST without content-length goes upstream chunked; a bodiless POST gets content-length 0', async (t) => {
  const b = await startBackend(t, 'blue')
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  const body = Buffer.from(randomBytes(100 * 1024).toString('hex'))
  const r = await new Promise<string>((resolve, reject) => {
    const req = s.request({ ':path': '/echo', ':method': 'POST' }, { endStream: false })
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString()))
    req.on('error', reject)
    // In pieces, over time: each read of the stream is one chunk upstream.
    void (async () => {
      for (let at = 0; at < body.length; at += 50 * 1024) {
        req.write(body.subarray(at, at + 50 * 1024))
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      req.end()
    })()
  })
  t.equal(sha(JSON.parse(r).body as string), sha(body), 'the body arrived whole')
  const seen = (): typeof b.seen => b.seen
  t.equal(seen()[0].headers['transfer-encoding'], 'chunked')
  t.equal(seen()[0].headers['content-length'], undefined)
  t.equal((await h2Request(s, '/empty', { ':method': 'POST' })).status, 200)
  t.equal(seen()[1].headers['content-length'], '0')
})

/** Resolves once `seen()` is called: the upstream's rest waits for the client to hold the head (5 ms apart is one read on a loaded machine). */
function headGate (): { seen: () => void, passed: Promise<void> } {
  let seen!: () => void
  const passed = new Promise<void>((resolve) => { seen = resolve })
  return { seen, passed }
}

t.test('an upstream that dies mid-body (chunked) resets the stream and counts as an upstream error', async (t) => {
  const head = headGate()
  const b = await rawBackend(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n')
    void head.passed.then(() => socket.destroy())
  })
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  const cut = await h2Request(s, '/dies', {}, undefined, undefined, head.seen).catch((e: Error) => e)
  t.type(cut, Error)
  t.match((cut as Error).message, `code ${http2.constants.NGHTTP2_INTERNAL_ERROR}`, 'RST_STREAM INTERNAL_ERROR, not a clean end')
  await eventually(() => statsOf(gw).inflight === 0)
  t.equal(statsOf(gw).errors, 1, 'an error for the guard')
  t.equal(statsOf(gw).upstreamErrors.reset, 1, 'an upstream reset')
})

t.test('invalid chunked framing mid-body resets the stream; before the head it is a 502', async (t) => {
  const gate = headGate()
  const b = await rawBackend(t, (socket, head) => {
    if (head.startsWith('GET /mid ')) {
      socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n')
      void gate.passed.then(() => socket.write('zz\r\n'))
    } else socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX')
  })
  const gw = await gatewayFor(t, b.url)
  const s = h2Session(t, gw.url)
  const cut = await h2Request(s, '/mid', {}, undefined, undefined, gate.seen).catch((e: Error) => e)
  t.match((cut as Error).message, `code ${http2.constants.NGHTTP2_INTERNAL_ERROR}`)
  const early = await h2Request(s, '/early')
  t.equal(early.status, 502)
  t.match(JSON.parse(early.body.toString()), { error: 'upstream_error' })
})

t.test('timeouts.response: no answer in time is a 504; timeouts.body: a body gone quiet resets the stream', async (t) => {
  const b = await rawBackend(t, (socket, head) => {
    if (head.startsWith('GET /quiet ')) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst part')
    // /silent: nothing at all.
  })
  const gw = await gatewayFor(t, b.url, '  timeouts: { response: 300ms, body: 300ms }\n')
  const s = h2Session(t, gw.url)
  const started = performance.now()
  const silent = await h2Request(s, '/silent')
  t.equal(silent.status, 504)
  t.match(JSON.parse(silent.body.toString()), { error: 'upstream_timeout' })
  t.ok(performance.now() - started >= 250, 'after timeouts.response')
  const quiet = await h2Request(s, '/quiet').catch((e: Error) => e)
  t.match((quiet as Error).message, `code ${http2.constants.NGHTTP2_INTERNAL_ERROR}`, 'the cut answer is reset')
  await eventually(() => statsOf(gw).inflight === 0)
  t.equal(statsOf(gw).upstreamErrors.timeout, 2, 'both counted as upstream timeouts')
  t.equal(statsOf(gw).errors, 2)
})

t.test('a stream open at the drain deadline is reset (CANCEL) and its upstream connection closed', async (t) => {
  const closed: string[] = []
  const b = await rawBackend(t, (socket, head) => {
    socket.on('close', () => closed.push(head.split(' ')[1]))
    // Answer begun, never finished.
    if (head.startsWith('GET /begun ')) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst part')
  })
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `engine: fast\ndefaults:\n  health: { interval: 60s, assumeHealthy: true }\nservices:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${b.url}] }
    green: { targets: [${g.url}] }
    drain: { timeout: 1m }
`)
  const s = h2Session(t, gw.url)
  const waiting = h2Request(s, '/waiting').catch((e: Error) => e)
  const begun = h2Request(s, '/begun').catch((e: Error) => e)
  await eventually(() => b.heads.length === 2)
  const flip = await fetch(`${gw.adminUrl}/v1/flip`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(flip.status, 200)
  const drain = await fetch(`${gw.adminUrl}/v1/services/svc/drain`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ color: 'blue', wait: true, timeout: '200ms' }) })
  t.match(await drain.json(), { how: 'timeout', closedRequests: 2 })
  for (const r of [await waiting, await begun]) t.match((r as Error).message, `code ${http2.constants.NGHTTP2_CANCEL}`, 'RST_STREAM CANCEL')
  await eventually(() => closed.length === 2)
  t.same(closed.sort(), ['/begun', '/waiting'], 'both upstream connections closed')
  t.equal(statsOf(gw).errors, 0, 'a drain cut is not the upstream\'s error')
})

t.test('limits.maxConnections: streams wait for a busy connection (bodies too), then 503 once timeouts.connect passes', async (t) => {
  const b = await startBackend(t, 'blue')
  const conns = new Set<unknown>()
  b.handler = (req, res) => {
    if (req.url !== '/healthz') conns.add(req.socket)
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const ms = req.url === '/stuck' ? 1000 : 30
      setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end(`${req.url ?? ''} ${Buffer.concat(chunks).length}`), ms)
    })
  }
  const gw = await gatewayFor(t, b.url, '  limits: { maxConnections: 2 }\n  timeouts: { connect: 300ms }\n')
  const s = h2Session(t, gw.url)
  const replies = await Promise.all(Array.from({ length: 8 }, async (_, i) => await h2Request(s, `/w${i}`, i % 2 === 0 ? {} : { 'content-length': '1000' }, i % 2 === 0 ? undefined : Buffer.alloc(1000))))
  t.same(replies.map((r) => r.body.toString()), Array.from({ length: 8 }, (_, i) => `/w${i} ${i % 2 === 0 ? 0 : 1000}`), 'every stream answered in turn, bodies whole')
  t.ok(conns.size <= 2, `at most two upstream connections (${conns.size})`)
  const stuck = [h2Request(s, '/stuck'), h2Request(s, '/stuck')]
  const late = await h2Request(s, '/late')
  t.equal(late.status, 503, 'no connection within timeouts.connect')
  t.match(JSON.parse(late.body.toString()), { error: 'upstream_overloaded' })
  t.same((await Promise.all(stuck)).map((r) => r.status), [200, 200])
})
