// HTTP/2 from clients: the h2 edge takes sessions (TLS with ALPN h2, or h2c
// with prior knowledge on the plain listener), resolves each stream once, and
// forwards it like any request (HTTP/1.1 upstreams here, HTTP/2 ones in upstream.ts).

import http2, { type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { MAX_HEAD, MAX_HEADER_LINES } from '../limits.js'
import type { Resolve } from '../resolve.js'
import type { Forwarding } from '../trust.js'
import type { Config } from '../../config/schema.js'
import { H2Exchange } from './exchange.js'
import { H2RequestFacts } from './facts.js'
import { H2RawExchange } from './raw-exchange.js'
import { MAX_SEND_HEAD, StreamDownstream, type SessionTally } from './stream-downstream.js'
import { forwardOverH2 } from './upstream.js'

export interface H2Edge {
  /** http2.createServer(...) with the 'stream' handler; it never listens itself: sockets arrive by emit('connection'). */
  readonly server: http2.Http2Server
  /** Graceful stop: GOAWAY to every session (session.close()); sessions end when their open streams finish. */
  closeIdle: () => void
  /** Destroys every session now. */
  closeAll: () => void
  /** Open sessions (tests, stop). */
  readonly sessions: ReadonlySet<http2.ServerHttp2Session>
}

/** The connection preface's first line and its blank line (RFC 9113 3.4): no HTTP/1.1 request starts so. */
const PREFACE_START = Buffer.from('PRI * HTTP/2.0\r\n\r\n', 'latin1')
/** The whole client connection preface. */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

/** `bytes`, the first a connection sent, open an HTTP/2 connection with prior knowledge (h2c). */
export function startsWithPreface (bytes: Buffer): boolean {
  return bytes.length >= PREFACE_START.length && bytes.compare(PREFACE_START, 0, PREFACE_START.length, 0, PREFACE_START.length) === 0
}

/** node:http's parser on a socket, as far as giving the socket up needs it (its upgrade path does the same). */
interface SocketParser { _consumed?: boolean, unconsume: () => void, remove: () => void }

/**
 * node:http's parser stopped at the HTTP/2 preface (llhttp pauses there,
 * HPE_PAUSED_H2_UPGRADE, after its 24 bytes): the connection goes on as an
 * HTTP/2 session, from the whole preface. node:http lets go of the socket as
 * it does for an upgrade: its data listener off, the parser no longer reading
 * the handle nor tracked for header deadlines. Its other listeners stay and
 * find nothing to do; the parser is freed when the socket closes.
 */
export function handOverFromNodeHttp (h2: H2Edge, socket: Duplex, rawPacket: Buffer, parsed: number): void {
  socket.removeAllListeners('data')
  const parser = (socket as Duplex & { parser?: SocketParser | null }).parser
  if (parser != null) {
    if (parser._consumed === true) {
      parser.unconsume()
      parser._consumed = false
    }
    parser.remove()
  }
  socket.pause()
  socket.unshift(Buffer.concat([H2_PREFACE, rawPacket.subarray(parsed)]))
  h2.server.emit('connection', socket)
  // node:http's 'pause' listener stopped the handle reading; the session reads it natively from here.
  const handle = (socket as unknown as { _handle?: { reading?: boolean, readStart: () => number } | null })._handle
  if (handle != null && handle.reading !== true) {
    handle.reading = true
    handle.readStart()
  }
}

/** Streams open at once on one session (SETTINGS_MAX_CONCURRENT_STREAMS; Go's default is 250, nginx's 128). */
export const MAX_CONCURRENT_STREAMS = 256

/** Pseudo-header fields a request may carry (:method, :scheme, :authority, :path, :protocol): counted in node's pair limit. */
const PSEUDO_FIELDS = 5

const kTally = Symbol('tally')
type TalliedSession = ServerHttp2Session & { [kTally]?: SessionTally }

/** client.idle passed with no frame: a session with no open stream is closed (GOAWAY); open streams keep their own deadlines. */
function onSessionIdle (this: TalliedSession): void {
  if (this[kTally]?.open === 0) this.close()
}

function noop (): void {}

/**
 * The HTTP/2 side of the public listener for `resolve`, with the same
 * forwarding trust and client deadlines as the HTTP/1.1 side. Each stream is
 * resolved once, then refused (a JSON error, or a gRPC status for a gRPC
 * request) or forwarded: HTTP/1.1 upstreams by H2RawExchange on the fast engine
 * (H2Exchange, on undici, on the node engine), HTTP/2 ones by forwardOverH2.
 */
export function createH2Edge (resolve: Resolve, forwarding: Forwarding, opts: Pick<Config, 'client' | 'engine'>): H2Edge {
  const sessions = new Set<ServerHttp2Session>()
  const bodyMs = opts.client.body
  const stallMs = opts.client.idle
  const rawPool = opts.engine === 'fast'
  let closing = false

  const onStream = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]): void => {
    // node:http2 emits 'stream' on the next tick: a RST_STREAM read with the HEADERS (rapid reset) has destroyed it
    // by now (and taken its session away). Nothing of it goes upstream.
    if (stream.destroyed) return
    const tally = (stream.session as TalliedSession)[kTally] as SessionTally
    const facts = new H2RequestFacts(headers, raw, tally.peer, forwarding)
    if (facts.method === 'CONNECT') {
      // A tunnel (RFC 9113 8.5) or extended CONNECT (RFC 8441, never enabled in SETTINGS): not for a reverse proxy.
      new StreamDownstream(stream, facts, '', tally, 0).fail('request_refused', 'CONNECT is not supported: the gateway forwards requests, it opens no tunnels')
      return
    }
    const to = resolve(facts)
    const down = new StreamDownstream(stream, facts, to.target ?? facts.target, tally, bodyMs)
    if (to.endpoint === undefined) {
      const started = performance.now()
      const bytes = down.fail(to.code, to.message)
      to.stats?.rejected(facts.method, down.path, down.requestId, bytes, performance.now() - started, to.trace)
      return
    }
    if (headers.expect !== undefined) down.continueBody()
    if (to.group.protocol !== 'http1') forwardOverH2(down, to)
    // The fast engine's raw connections take every http:// and https:// target; the node engine keeps undici for all.
    else if (rawPool) new H2RawExchange(down, to).start()
    else new H2Exchange(down, to).start()
  }

  const server = http2.createServer({
    settings: {
      maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
      // HPACK's size counts 32 bytes per field besides name and value: a head the HTTP/1.1 side takes fits.
      maxHeaderListSize: MAX_HEAD + 32 * (MAX_HEADER_LINES + PSEUDO_FIELDS),
      enablePush: false,
    },
    // Over these, node:http2 resets the stream (ENHANCE_YOUR_CALM), as the HTTP/1.1 side answers 431.
    maxHeaderListPairs: MAX_HEADER_LINES + PSEUDO_FIELDS,
    // A larger answer head is refused before it is sent (StreamDownstream.respondWith).
    maxSendHeaderBlockLength: MAX_SEND_HEAD,
    // A peer sending malformed frames is cut off sooner than node's default 1000.
    maxSessionInvalidFrames: 100,
  })
  server.on('stream', onStream)
  server.on('session', (session: TalliedSession) => {
    const socket = session.socket as Socket | undefined
    session[kTally] = { open: 0, peer: socket?.remoteAddress ?? '', stallMs }
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
    session.on('error', noop)
    if (opts.client.idle > 0) session.setTimeout(opts.client.idle, onSessionIdle)
    // Arrived as the gateway stops: GOAWAY at once (the socket was accepted before the listener closed).
    if (closing) session.close()
  })
  server.on('sessionError', noop)

  return {
    server,
    sessions,
    closeIdle: () => {
      closing = true
      for (const s of sessions) s.close()
    },
    closeAll: () => {
      for (const s of sessions) s.destroy()
    },
  }
}
