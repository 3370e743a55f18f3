// Attacks on src/upstream/end-guard.ts (undici#5360): the guard holds an
// upstream socket's 'end' while undici's parser is paused. undici 7 makes the
// same `assert(!this.paused)` (Parser.finish) from its 'error' handler too, on
// ECONNRESET, when the answer ends its connection (no length, `connection:
// close`, HTTP/1.0). An upstream that resets its connection (crash, SO_LINGER
// 0, a close with unread bytes) while a slow client has the parser paused
// threw outside any callback, and the gateway process died: the guard now
// hands undici such a reset as its own socket error.

import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import dc from 'node:diagnostics_channel'
import { http1, startGateway } from './helpers/index.js'

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
const HEADS: Record<string, string> = {
  '/close': 'HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n',
  '/cl': 'HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 10000000\r\nconnection: close\r\n\r\n',
  '/http10': 'HTTP/1.0 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n',
}

interface Upstream { url: string, reset: () => void }

/** An upstream sending its answer's body 8 KiB every 15 ms, for as long as the connection lasts; reset() sends an RST. */
async function tricklingUpstream (t: Tap.Test): Promise<Upstream> {
  let current: net.Socket | undefined
  const server = net.createServer((socket) => {
    socket.on('error', () => {})
    let head = ''
    socket.on('data', (c: Buffer) => {
      if (head.includes('\r\n\r\n')) return
      head += c.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      const path = /^\S+ (\S+)/.exec(head)?.[1] ?? '/'
      const answer = HEADS[path]
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

const config = (up: string): string => `engine: node
services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${up}] }
    green: { targets: [${up}] }
    health: { path: /healthz, interval: 1h, assumeHealthy: true }
    passive: false
`

t.test('node engine: an upstream RST while undici\'s parser is paused for an h2c client that does not read resets the stream; the gateway lives on (close-delimited, connection: close, HTTP/1.0)', async (t) => {
  // The first of these takes the process down (tap reports the AssertionError); each fails alone as well.
  for (const path of Object.keys(HEADS)) {
    const up = await tricklingUpstream(t)
    const gw = await startGateway(t, config(up.url))
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
