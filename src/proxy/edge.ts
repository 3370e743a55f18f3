// The public listener, on either engine: node:http's server (the node engine,
// and what the fast engine hands over), each request resolved once, then forwarded;
// with certificates, a TLS server in front that hands each connection to the engine.

import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type net from 'node:net'
import tls from 'node:tls'
import type { Duplex } from 'node:stream'
import type { Config } from '../config/schema.js'
import { rawError, writeError } from '../errors.js'
import { log } from '../log.js'
import { FastEdge } from './h1/listener.js'
import { NodeDownstream } from './h2/node-downstream.js'
import { forwardOverH2 } from './h2/upstream.js'
import { Exchange, NodeRequestFacts, requestIdFor } from './forward.js'
import { createH2Edge, handOverFromNodeHttp, type H2Edge } from './h2/edge.js'
import { MAX_HEAD, MAX_HEADER_LINES } from './limits.js'
import type { Resolve } from './resolve.js'
import { Forwarding } from './trust.js'
import { isWebSocketHandshake, proxyUpgrade, rejectUpgrade } from './websocket.js'

/** What a client offers by ALPN, in the server's order of preference. */
const ALPN = ['h2', 'http/1.1']
/** Failed handshakes are logged at most this often, as a count: scanners and clients that distrust the certificate fail many. */
const HANDSHAKE_LOG_MS = 60_000

/** A listener that can be stopped gracefully. */
export interface Closer {
  server: net.Server
  /** Closes keep-alive connections that have no request in flight. */
  closeIdle: () => void
  closeAll: () => void
}

export interface EdgeServer extends Closer {
  /** Upgraded client sockets: the HTTP server stops tracking them after the 101. */
  upgraded: Set<Duplex>
  /** On a TLS listener: handshakes that failed since it started (bad or no certificate trust, wrong version, timeouts, scanners). */
  readonly tls?: { failedHandshakes: number }
  /** The HTTP/2 side: h2c connections (prior knowledge) on this listener, and TLS ones that chose h2 by ALPN. */
  h2: H2Edge
}

/**
 * node:http parses pipelined requests ahead and emits them all at once; the
 * gateway forwards them one at a time per client connection (so pipelining
 * cannot open an upstream connection per request), and a malformed request
 * after them is answered after theirs. One per connection, made on its first request.
 */
class ClientTurns {
  readonly socket: Duplex
  /** A request of this connection is being served. */
  busy = false
  /** Parsed requests waiting their turn: req, res, req, res... */
  readonly waiting: Array<IncomingMessage | ServerResponse> = []
  /** The error answer for a malformed request, owed once the answers before it are out. */
  refusal: string | undefined
  /** An upgrade parsed behind requests still being answered: it goes on once they are. */
  upgrade: (() => void) | undefined

  constructor (socket: Duplex) {
    this.socket = socket
  }
}

/** Parsed requests that may wait on one connection before its parser is paused. */
const MAX_WAITING = 32

const kTurns = Symbol('turns')

const NO_HOST = 'an HTTP/1.1 request must carry a Host header'

/** An HTTP/1.1 request without Host, which RFC 9112 has a server refuse with 400 (the fast engine hands these over). */
function lacksHost (req: IncomingMessage): boolean {
  return req.headers.host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor === 1
}

/** node:http's own fields on its sockets: `_paused` stops the parser after the current read, `parser` restarts it. */
type TurnSocket = Duplex & { [kTurns]?: ClientTurns, _paused?: boolean, parser?: { resume: () => void } | null }

export function httpCloser (server: http.Server): Closer {
  return { server, closeIdle: () => server.closeIdleConnections(), closeAll: () => server.closeAllConnections() }
}

/**
 * What a TLS listener needs of its certificates (listen/certs.ts CertStore):
 * the options it starts with, and to be kept current on every reload.
 */
export interface ServerCerts {
  serverOptions: () => tls.TlsOptions
  /** Keeps `server`'s certificates current; returns what stops it. */
  attach: (server: tls.Server) => () => void
}

/** What the public listener takes from the config; fixed for the life of the listener (a change needs a restart). */
export type EdgeOptions = Pick<Config, 'engine' | 'client' | 'trustedProxies'>

/**
 * The public listener for `resolve` (the resolve step: the listener routes
 * nothing itself). The fast engine serves what it can and hands the rest
 * over to the node:http server made here, which the node engine uses alone.
 * With `certs` the listener speaks TLS with them (see secureEdge).
 */
export function createEdgeServer (resolve: Resolve, opts: EdgeOptions, certs?: ServerCerts): EdgeServer {
  const upgraded = new Set<Duplex>()
  /** Which peers' X-Forwarded-* are believed, and the scheme told upstream: decided once for the listener, on every engine. */
  const forwarding = new Forwarding(certs === undefined ? 'http' : 'https', opts.trustedProxies)
  const deadlines = { body: opts.client.body, stall: opts.client.idle }
  const h2 = createH2Edge(resolve, forwarding, opts)

  /** The resolve step for a node:http request; its target is forwarded (and logged) normalized. */
  const resolveRequest = (req: IncomingMessage): ReturnType<Resolve> => {
    const to = resolve(new NodeRequestFacts(req, forwarding))
    if (to.target !== undefined) req.url = to.target
    return to
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const to = resolveRequest(req)
    if (to.endpoint === undefined) {
      const started = performance.now()
      const bytes = writeError(res, to.code, to.message)
      to.stats?.rejected(req.method as string, req.url as string, requestIdFor(req, undefined), bytes, performance.now() - started, to.trace)
      return
    }
    // Targets that speak HTTP/2 (protocol h2c or h2): the HTTP/2 forwarder, with this client as its Downstream.
    if (to.group.protocol !== 'http1') return forwardOverH2(new NodeDownstream(req, res, forwarding, deadlines), to)
    new Exchange(req, res, to, forwarding).start(deadlines)
  }

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const to = resolveRequest(req)
    if (to.endpoint === undefined) return rejectUpgrade(socket, to.code)
    // A tunnel has no answer to compare: shadow traffic is for requests (the tap is let go at once).
    if (to.shadow !== undefined) to.shadow.abort()
    // The tunnel is an HTTP/1.1 connection to the target, which a target speaking only HTTP/2 cannot take.
    if (to.group.protocol !== 'http1') {
      socket.end(rawError('upgrade_refused', true, `WebSockets are not forwarded to this service: its targets speak HTTP/2 (protocol ${to.group.protocol})`).text)
      return
    }
    proxyUpgrade(req, socket, head, to, forwarding)
  }

  /** A request whose head node:http took but the gateway will not (too many lines: node:http would have dropped some). */
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.rawHeaders.length > 2 * MAX_HEADER_LINES) {
      writeError(res, 'header_too_large', `more than ${MAX_HEADER_LINES} header lines`, true)
      return
    }
    if (lacksHost(req)) {
      writeError(res, 'bad_request', NO_HOST)
      return
    }
    onRequest(req, res)
  }

  /** One request at a time per client connection, in order (see ClientTurns). */
  const inTurn = (req: IncomingMessage, res: ServerResponse): void => {
    const socket = req.socket as TurnSocket
    const turns = socket[kTurns] ??= new ClientTurns(socket)
    if (turns.busy) {
      turns.waiting.push(req, res)
      // Enough parsed ahead: node:http stops its parser after this read (its own flag for output backpressure).
      if (turns.waiting.length >= 2 * MAX_WAITING && socket._paused !== true) {
        socket._paused = true
        socket.pause()
      }
      return
    }
    turns.busy = true
    res.once('close', () => nextTurn(turns))
    serve(req, res)
  }

  const nextTurn = (turns: ClientTurns): void => {
    const socket = turns.socket as TurnSocket
    if (socket.destroyed || !socket.writable) {
      // Nobody to answer: what waited never runs.
      turns.waiting.length = 0
      turns.busy = false
      turns.upgrade = undefined
      return
    }
    if (turns.waiting.length > 0) {
      const req = turns.waiting.shift() as IncomingMessage
      const res = turns.waiting.shift() as ServerResponse
      if (socket._paused === true && turns.waiting.length <= MAX_WAITING) {
        socket._paused = false
        socket.parser?.resume()
        socket.resume()
      }
      res.once('close', () => nextTurn(turns))
      serve(req, res)
      return
    }
    turns.busy = false
    const upgrade = turns.upgrade
    turns.upgrade = undefined
    if (upgrade !== undefined) upgrade()
    else if (turns.refusal !== undefined) socket.end(turns.refusal)
  }

  const onUpgradeChecked = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // node:http no longer watches the socket: its errors and its closing are the gateway's from here.
    socket.on('error', () => socket.destroy())
    upgraded.add(socket)
    socket.once('close', () => upgraded.delete(socket))
    // node:http hands over an upgrade as soon as it is parsed: one behind requests still being
    // answered waits for their answers, or its 101 (and the tunnel) would come out inside them.
    const turns = (socket as TurnSocket)[kTurns]
    if (turns?.busy === true) {
      turns.upgrade = () => upgradeInTurn(req, socket, head)
      return
    }
    upgradeInTurn(req, socket, head)
  }

  const upgradeInTurn = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // Only a complete WebSocket handshake becomes a tunnel (h2c, made-up protocols and keyless ones never do).
    if (req.rawHeaders.length > 2 * MAX_HEADER_LINES) return rejectUpgrade(socket, 'header_too_large')
    if (!isWebSocketHandshake(req)) return rejectUpgrade(socket, 'upgrade_refused')
    if (lacksHost(req)) return rejectUpgrade(socket, 'bad_request', NO_HOST)
    onUpgrade(req, socket, head)
  }

  const server = http.createServer({
    keepAliveTimeout: opts.client.idle,
    headersTimeout: opts.client.header,
    requestTimeout: 0,
    // Named, not left to node:http's default (which --max-http-header-size changes): the fast path refuses the same heads.
    maxHeaderSize: MAX_HEAD,
    // node:http would answer a bare 400 of its own: the gateway refuses in JSON, as it refuses everything (lacksHost).
    requireHostHeader: false,
    // Header deadlines are checked on this beat (node:http's default is every 30 s).
    connectionsCheckingInterval: Math.min(1000, Math.max(50, opts.client.header / 4)),
  }, inTurn)
  // Past this many lines node:http leaves headers out of req.headers (rawHeaders keeps them): such heads are refused above.
  server.maxHeadersCount = MAX_HEADER_LINES + 1
  server.on('upgrade', onUpgradeChecked)
  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer, bytesParsed?: number }, socket: TurnSocket & { _httpMessage?: { headersSent?: boolean, req?: IncomingMessage }, bytesWritten: number, encrypted?: boolean }) => {
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy()
    // h2c with prior knowledge, on a connection that sent nothing before it (the fast engine hands these over itself):
    // no request of node:http's (kTurns), and none the fast engine answered before handing the connection over; not over
    // TLS, where ALPN chose http/1.1 (HTTP/2 there is ALPN's alone, and node:http2 would answer 403).
    if (err.code === 'HPE_PAUSED_H2_UPGRADE' && socket[kTurns] === undefined && socket.bytesWritten === 0 && socket.encrypted !== true && err.rawPacket !== undefined && err.bytesParsed !== undefined) {
      return handOverFromNodeHttp(h2, socket, err.rawPacket, err.bytesParsed)
    }
    const refusal = err.code === 'HPE_HEADER_OVERFLOW'
      ? rawError('header_too_large', true, `request head larger than ${MAX_HEAD / 1024} KiB`).text
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? rawError('request_timeout', true, 'the request head was not received in time').text
        : rawError('bad_request', true, 'malformed HTTP request').text
    // The error is inside the body of the request being answered (the client ended its side midway, a bad chunk):
    // that body never comes whole, and its answer, waiting for it, would hold the upstream until client.bodyTimeout.
    if (socket._httpMessage?.req?.complete === false) return socket.destroy()
    // Requests parsed before the bad one ran (or wait their turn): their answers go first, in order.
    const turns = socket[kTurns]
    if (turns?.busy === true) {
      if (turns.refusal === undefined) socket.on('error', () => socket.destroy())
      turns.refusal = refusal
      return
    }
    // A response already under way on this socket cannot be followed by an error.
    if (socket._httpMessage?.headersSent === true) return socket.destroy()
    socket.end(refusal)
  })
  const fast = opts.engine === 'node' ? undefined : new FastEdge(resolve, server, forwarding, opts)
  if (fast !== undefined) fast.h2 = h2.server
  if (certs !== undefined) return secureEdge(certs, opts, server, fast, h2, upgraded)
  if (fast === undefined) {
    return {
      server,
      closeIdle: () => { server.closeIdleConnections(); h2.closeIdle() },
      closeAll: () => { server.closeAllConnections(); h2.closeAll() },
      upgraded,
      h2,
    }
  }
  return {
    server: fast.server,
    closeIdle: () => { fast.closeIdle(); h2.closeIdle() },
    closeAll: () => { fast.closeAll(); h2.closeAll() },
    upgraded,
    h2,
  }
}

/**
 * The TLS listener: one tls.Server whose certificates `certs` keeps current
 * (SNI, reloads), each connection handed once its handshake is done to the
 * engine its ALPN protocol asks for: h2 to the HTTP/2 edge (a plain
 * http2 server fed the TLS socket), the rest to HTTP/1.1, the fast engine
 * (measured 1.9-2x node:http over TLS: a TLSSocket is a net.Socket to it) or,
 * on the node engine, to node:http, exactly as a plain connection would.
 */
function secureEdge (certs: ServerCerts, opts: EdgeOptions, http1: http.Server, fast: FastEdge | undefined, h2: H2Edge, upgraded: Set<Duplex>): EdgeServer {
  // node:http never listens itself here: its connection tracking and deadline checks start as if it did (FastEdge does the same).
  if (fast === undefined) http1.emit('listening')
  const server = tls.createServer({
    ...certs.serverOptions(),
    ALPNProtocols: ALPN,
    // A handshake is part of getting a request's head in: the same deadline.
    handshakeTimeout: opts.client.header,
    noDelay: true,
  })
  const detach = certs.attach(server)
  /** Every open TCP connection, handshake done or not: closeAll reaches those still shaking hands too. */
  const sockets = new Set<net.Socket>()
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    if (socket.alpnProtocol === 'h2') h2.server.emit('connection', socket)
    else if (fast !== undefined) fast.accept(socket)
    else http1.emit('connection', socket)
  })
  const stats = { failedHandshakes: 0 }
  let unlogged = 0
  let loggedAt = -Infinity
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    socket.destroy()
    stats.failedHandshakes++
    unlogged++
    const now = performance.now()
    if (now - loggedAt < HANDSHAKE_LOG_MS) return
    log('info', 'tls handshakes failed', { count: unlogged, sinceMs: loggedAt === -Infinity ? undefined : Math.round(now - loggedAt), last: { peer: socket.remoteAddress, error: err.code ?? err.message } })
    loggedAt = now
    unlogged = 0
  })
  server.on('close', () => {
    detach()
    http1.close(() => {})
  })
  return {
    server,
    closeIdle: () => {
      if (fast !== undefined) fast.closeIdle()
      else http1.closeIdleConnections()
      // GOAWAY to every HTTP/2 session: their open streams go on until they finish.
      h2.closeIdle()
    },
    closeAll: () => {
      if (fast !== undefined) fast.closeAll()
      else http1.closeAllConnections()
      h2.closeAll()
      for (const s of sockets) s.destroy()
    },
    upgraded,
    h2,
    tls: stats,
  }
}
