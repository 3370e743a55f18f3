// undici 7 asserts, uncaught, when an upstream's FIN arrives while its parser
// is paused by backpressure on an answer that ends the connection
// (nodejs/undici#5360): on the node engine that took the whole gateway down.
// An HTTP/2 client's 64 KiB flow-control window pauses the parser on every
// answer larger than that, so these answers made it happen every time. The
// guard (src/upstream/end-guard.ts) holds the socket's end until the resume.

import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { h2Call, h2Session } from './helpers/h2.js'
import { http1, startGateway } from './helpers/index.js'
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

t.test('node engine, h2c client: answers that close their connection arrive whole, and the gateway lives on', async (t) => {
  const up = await closingUpstream(t)
  const gw = await startGateway(t, `engine: node
services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${up}] }
    green: { targets: [${up}] }
    health: { path: /healthz, interval: 1h, assumeHealthy: true }
    passive: false
`)
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
  const gw = await startGateway(t, `engine: node
services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${up}] }
    green: { targets: [${up}] }
    health: { path: /healthz, interval: 1h, assumeHealthy: true }
    passive: false
`)
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

t.test('the guard: an end held while the parser is paused, delivered after the resume, then our side ends', async (t) => {
  const server = net.createServer((s) => { s.on('error', () => {}); s.end('bye') })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  socket.on('error', () => {})
  t.teardown(() => { socket.destroy() })
  // A stand-in for undici's parser, under the symbol undici gives it.
  const parser = { paused: true }
  ;(socket as unknown as Record<symbol, unknown>)[Symbol('parser')] = parser
  holdEndWhilePaused(socket)
  let ends = 0
  socket.on('end', () => ends++)
  socket.on('data', () => {})
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
  // The FIN arrives while paused: no 'end', and the socket is kept (half-open) for the resume.
  await new Promise<void>((resolve) => setTimeout(resolve, 200))
  t.equal(ends, 0, 'no end while the parser is paused')
  t.equal(socket.destroyed, false, 'the socket is kept')
  t.equal(socket.allowHalfOpen, true, 'half-open until the resume')
  parser.paused = false
  t.equal(ends, 0, 'not in the resume itself: undici parses what is left first')
  await new Promise<void>((resolve) => process.nextTick(resolve))
  t.equal(ends, 1, 'delivered once the resume is over')
  t.equal(socket.allowHalfOpen, false, 'allowHalfOpen is back as it was')
  await closed
  t.pass('then the socket ends our side and closes, as it would have')
  parser.paused = true
  parser.paused = false
  await new Promise<void>((resolve) => setTimeout(resolve, 20))
  t.equal(ends, 1, 'the end is delivered once')
})

t.test('the guard: a parser paused again by what the resume parsed keeps the end held', async (t) => {
  const server = net.createServer((s) => { s.on('error', () => {}); s.end('bye') })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  socket.on('error', () => {})
  t.teardown(() => { socket.destroy() })
  const parser = { paused: true }
  ;(socket as unknown as Record<symbol, unknown>)[Symbol('parser')] = parser
  holdEndWhilePaused(socket)
  let ends = 0
  socket.on('end', () => ends++)
  socket.on('data', () => {})
  await new Promise<void>((resolve) => setTimeout(resolve, 200))
  parser.paused = false
  parser.paused = true
  await new Promise<void>((resolve) => setTimeout(resolve, 20))
  t.equal(ends, 0, 'paused again before the end was due: still held')
  parser.paused = false
  await new Promise<void>((resolve) => setTimeout(resolve, 20))
  t.equal(ends, 1, 'delivered after the second resume')
})

t.test('the guard: a socket without a paused parser ends as it always did', async (t) => {
  const server = net.createServer((s) => { s.on('error', () => {}); s.end('bye') })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  for (const parser of [undefined, { paused: false }]) {
    const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
    socket.on('error', () => {})
    if (parser !== undefined) (socket as unknown as Record<symbol, unknown>)[Symbol('parser')] = parser
    holdEndWhilePaused(socket)
    socket.on('data', () => {})
    const ended = new Promise<void>((resolve) => socket.on('end', () => resolve()))
    await ended
    await new Promise<void>((resolve) => socket.on('close', () => resolve()))
    t.pass(parser === undefined ? 'no parser: end and close' : 'a running parser: end and close')
  }
})
