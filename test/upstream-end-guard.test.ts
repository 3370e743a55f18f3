// undici 7 asserts, uncaught, when an upstream's FIN arrives while its parser
// is paused by backpressure on an answer that ends the connection
// (nodejs/undici#5360): on the node engine that took the whole gateway down.
// An HTTP/2 client's 64 KiB flow-control window pauses the parser on every
// answer larger than that, so these answers made it happen every time. The
// guard (src/upstream/end-guard.ts) holds the socket's end until the resume,
// and hands undici a reset while paused as its own socket error.

import t, { type Test } from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import dc from 'node:diagnostics_channel'
import { createHash } from 'node:crypto'
import { h2Call, h2Session } from './helpers/h2.js'
import { eventually, http1, startGateway, type TestGateway } from './helpers/index.js'
import { holdEndWhilePaused } from '../src/upstream/end-guard.js'

const BODY = Buffer.alloc(90_000)
for (let i = 0; i < BODY.length; i++) BODY[i] = (i * 7 + 3) & 0xff

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** The heads of answers that end their connection: `/close` has no length (the FIN ends the body), `/cl` has one. */
const HEADS: Record<string, string> = {
  '/close': 'HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n',
  '/cl': `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${BODY.length}\r\nconnection: close\r\n\r\n`,
  '/http10': 'HTTP/1.0 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n',
}

/** An upstream that answers a request's head with the whole answer and its FIN in one write. */
async function closingUpstream (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const server = net.createServer((socket) => {
    socket.on('error', () => {})
    let head = ''
    socket.on('data', (c: Buffer) => {
      head += c.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      const path = /^\S+ (\S+)/.exec(head)?.[1] ?? '/'
      const answer = HEADS[path.split('?')[0]]
      if (answer === undefined) return void socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok')
      socket.end(Buffer.concat([Buffer.from(answer), BODY]))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
}

/** A node-engine gateway in front of `up` alone, probing it never (it answers every path with its test answer). */
async function nodeGateway (t: Test, up: string): Promise<TestGateway> {
  return await startGateway(t, `engine: node
services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${up}] }
    green: { targets: [${up}] }
    health: { path: /healthz, interval: 1h, assumeHealthy: true }
    passive: false
`)
}

t.test('node engine, h2c client: answers that close their connection arrive whole, and the gateway lives on', async (t) => {
  const up = await closingUpstream(t)
  const gw = await nodeGateway(t, up)
  const session = h2Session(t, gw.url)
  for (const path of Object.keys(HEADS)) {
    for (let i = 0; i < 5; i++) {
      const r = await h2Call(session, `${path}?i=${i}`)
      t.equal(r.status, 200, `${path} #${i}: 200`)
      t.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR, `${path} #${i}: a clean end`)
      t.equal(r.body.length, BODY.length, `${path} #${i}: every byte`)
      t.equal(sha(r.body), sha(BODY), `${path} #${i}: the bytes sent`)
    }
  }
  // Several at once on one session: they share its window, so each pauses many times.
  const all = await Promise.all(Array.from({ length: 6 }, async (_, i) => await h2Call(session, `${Object.keys(HEADS)[i % 3]}?all=${i}`)))
  t.same(all.map((r) => [r.status, sha(r.body)]), all.map(() => [200, sha(BODY)]), 'six at once, all whole')
  t.equal((await http1(`${gw.url}/other`)).text, 'ok', 'the gateway still answers')
})

t.test('node engine, a slow HTTP/1.1 reader: every byte, then the end', async (t) => {
  const up = await closingUpstream(t)
  const gw = await nodeGateway(t, up)
  const { port } = new URL(gw.url)
  for (const path of Object.keys(HEADS)) {
    const got = await new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = []
      const s = net.connect(Number(port), '127.0.0.1', () => s.write(`GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`))
      // Reads in small bites, with a pause after each: the gateway's buffers toward it fill up.
      s.pause()
      let done = false
      const bite = (): void => {
        if (done) return
        const c = s.read(4096) as Buffer | null
        if (c !== null) chunks.push(c)
        setTimeout(bite, 1)
      }
      s.on('readable', () => {})
      setTimeout(bite, 50)
      s.on('error', () => {})
      s.on('end', () => {
        done = true
        for (let c = s.read() as Buffer | null; c !== null; c = s.read() as Buffer | null) chunks.push(c)
        resolve(Buffer.concat(chunks))
      })
    })
    const text = got.toString('latin1')
    const end = text.indexOf('\r\n\r\n')
    t.match(text.slice(0, end), /^HTTP\/1\.1 200 /, `${path}: 200`)
    t.equal(sha(dechunk(got.subarray(end + 4), /transfer-encoding: chunked/i.test(text.slice(0, end)))), sha(BODY), `${path}: the bytes sent`)
  }
  t.equal((await http1(`${gw.url}/other`)).text, 'ok', 'the gateway still answers')
})

/** A chunked body decoded (node:http answers a length-less upstream answer chunked). */
function dechunk (body: Buffer, chunked: boolean): Buffer {
  if (!chunked) return body
  const out: Buffer[] = []
  let at = 0
  for (;;) {
    const eol = body.indexOf('\r\n', at)
    const size = parseInt(body.subarray(at, eol).toString('latin1'), 16)
    if (!(size > 0)) return Buffer.concat(out)
    out.push(body.subarray(eol + 2, eol + 2 + size))
    at = eol + 2 + size + 2
  }
}

/** A guarded socket to a server that sends a few bytes and its FIN at once, under a stand-in for undici's parser (none: no parser). */
async function guardedSocket (t: Test, parser?: { paused: boolean }): Promise<{ socket: net.Socket, ends: () => number, finRead: () => Promise<void> }> {
  const server = net.createServer((s) => { s.on('error', () => {}); s.end('bye') })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  socket.on('error', () => {})
  t.teardown(() => { socket.destroy() })
  // Under the symbol undici gives its parser.
  if (parser !== undefined) (socket as unknown as Record<symbol, unknown>)[Symbol('parser')] = parser
  holdEndWhilePaused(socket)
  let ends = 0
  socket.on('end', () => ends++)
  socket.on('data', () => {})
  // The stream marks its end as emitted before it emits it: set even while the guard holds the event.
  return { socket, ends: () => ends, finRead: async () => { await eventually(() => socket.readableEnded, { interval: 5 }) } }
}

t.test('the guard: an end held while the parser is paused, delivered after the resume, then our side ends', async (t) => {
  const parser = { paused: true }
  const { socket, ends, finRead } = await guardedSocket(t, parser)
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
  // The FIN arrives while paused: no 'end', and the socket is kept (half-open) for the resume.
  await finRead()
  t.equal(ends(), 0, 'no end while the parser is paused')
  t.equal(socket.destroyed, false, 'the socket is kept')
  t.equal(socket.allowHalfOpen, true, 'half-open until the resume')
  parser.paused = false
  t.equal(ends(), 0, 'not in the resume itself: undici parses what is left first')
  await new Promise<void>((resolve) => process.nextTick(resolve))
  t.equal(ends(), 1, 'delivered once the resume is over')
  t.equal(socket.allowHalfOpen, false, 'allowHalfOpen is back as it was')
  await closed
  t.pass('then the socket ends our side and closes, as it would have')
  parser.paused = true
  parser.paused = false
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.equal(ends(), 1, 'the end is delivered once')
})

t.test('the guard: a parser paused again by what the resume parsed keeps the end held', async (t) => {
  const parser = { paused: true }
  const { ends, finRead } = await guardedSocket(t, parser)
  await finRead()
  parser.paused = false
  parser.paused = true
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.equal(ends(), 0, 'paused again before the end was due: still held')
  parser.paused = false
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.equal(ends(), 1, 'delivered after the second resume')
})

t.test('the guard: a socket without a paused parser ends as it always did', async (t) => {
  for (const parser of [undefined, { paused: false }]) {
    const { socket, ends, finRead } = await guardedSocket(t, parser)
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    await finRead()
    await closed
    t.equal(ends(), 1, parser === undefined ? 'no parser: end, then close' : 'a running parser: end, then close')
  }
})

// undici makes the same assertion from its 'error' handler, on ECONNRESET: an upstream that resets
// (a crash, SO_LINGER 0, a close with unread bytes) while a slow client has the parser paused.

/** Every socket the gateway's undici clients connect (the gateway runs in this process). */
const sockets: net.Socket[] = []
dc.subscribe('undici:client:connected', (m) => { sockets.push((m as { socket: net.Socket }).socket) })

/** undici's parser on one of its sockets (the symbol property it names `parser`), as end-guard.ts finds it. */
function parserOf (s: net.Socket): { paused?: boolean } | undefined {
  const key = Object.getOwnPropertySymbols(s).find((k) => k.description === 'parser')
  return key === undefined ? undefined : (s as unknown as Record<symbol, { paused?: boolean } | undefined>)[key]
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function until (fn: () => boolean, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (fn()) return true
    await sleep(2)
  }
  return false
}

/** The heads of answers that end their connection (undici's parser: statusCode set, shouldKeepAlive false). */
const TRICKLED: Record<string, string> = {
  '/close': 'HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n',
  '/cl': 'HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 10000000\r\nconnection: close\r\n\r\n',
  '/http10': 'HTTP/1.0 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n',
}

interface Upstream { url: string, reset: () => void }

/** An upstream sending its answer's body 8 KiB every 15 ms, for as long as the connection lasts; reset() sends an RST. */
async function tricklingUpstream (t: Test): Promise<Upstream> {
  let current: net.Socket | undefined
  const server = net.createServer((socket) => {
    socket.on('error', () => {})
    let head = ''
    socket.on('data', (c: Buffer) => {
      if (head.includes('\r\n\r\n')) return
      head += c.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      const path = /^\S+ (\S+)/.exec(head)?.[1] ?? '/'
      const answer = TRICKLED[path]
      if (answer === undefined) return void socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok')
      current = socket
      socket.write(answer)
      const tick = (): void => {
        if (socket.destroyed) return
        socket.write(Buffer.alloc(8192, 0x61))
        setTimeout(tick, 15)
      }
      tick()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, reset: () => { current?.resetAndDestroy() } }
}

t.test('node engine: an upstream RST while undici\'s parser is paused for an h2c client that does not read resets the stream; the gateway lives on (close-delimited, connection: close, HTTP/1.0)', async (t) => {
  // The first of these takes the process down (tap reports the AssertionError); each fails alone as well.
  for (const path of Object.keys(TRICKLED)) {
    const up = await tricklingUpstream(t)
    const gw = await nodeGateway(t, up.url)
    const session = http2.connect(gw.url)
    session.on('error', () => {})
    t.teardown(() => { session.destroy() })
    const req = session.request({ ':path': path })
    req.on('error', () => {})
    const closed = new Promise<number>((resolve) => req.on('close', () => resolve(req.rstCode ?? -1)))
    // The client takes nothing: its 64 KiB window fills, the gateway's handler pauses undici's parser.
    req.pause()
    // Paused, with nothing left unparsed on the socket: node keeps reading it, so the RST is seen now.
    t.ok(await until(() => sockets.some((s) => !s.destroyed && parserOf(s)?.paused === true && s.readableLength === 0)), `${path}: the parser is paused for the client`)
    // undici: onHttpSocketError (ECONNRESET, statusCode set, !shouldKeepAlive) -> parser.finish() -> assert(!this.paused),
    // uncaught; then onHttpSocketClose (no kError was set) -> parser.finish() -> the same assertion again.
    up.reset()
    await sleep(300)
    req.resume()
    const code = await Promise.race([closed, sleep(5000).then(() => -2)])
    t.not(code, http2.constants.NGHTTP2_NO_ERROR, `${path}: the client sees its answer cut (a reset stream), not a clean end`)
    t.not(code, -2, `${path}: the client's stream closes`)
    t.equal((await http1(`${gw.url}/other`)).text, 'ok', `${path}: the gateway still answers`)
    await gw.stop()
  }
})
