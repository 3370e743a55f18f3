// The fast path of the public listener: HTTP/1.1 on raw sockets both ways.
// Request heads are parsed here and forwarded as rewritten text; bodies pass
// through as bytes (a chunked response is not decoded, only scanned for its
// end). Anything else goes, with its whole connection, to node:http (the
// `fallback` server), which takes it from the first byte it has not answered:
// HTTP/1.0, chunked uploads, Expect, WebSocket upgrades, odd or malformed heads.

import type http from 'node:http'
import type { Http2Server } from 'node:http2'
import net from 'node:net'
import type { ClientTimeouts } from '../../config/schema.js'
import { startsWithPreface } from '../h2/edge.js'
import type { Resolve } from '../resolve.js'
import type { Forwarding } from '../trust.js'
import { ClientConn, type ConnOwner } from './client.js'

export class FastEdge implements ConnOwner {
  readonly server: net.Server
  /** Connections the fast path does not serve, from the byte it stopped at. */
  readonly fallback: http.Server
  readonly resolve: Resolve
  /** The scheme served and the peers whose forwarding headers are believed. */
  readonly forwarding: Forwarding
  readonly conns = new Set<ClientConn>()
  /** Client-side deadlines (the same ones node:http is given for what it takes). */
  readonly client: ClientTimeouts
  /** Where a connection opening with the HTTP/2 preface goes (h2c with prior knowledge); none: node:http refuses it. */
  h2: Http2Server | undefined = undefined
  closing = false

  constructor (resolve: Resolve, fallback: http.Server, forwarding: Forwarding, opts: { client: ClientTimeouts }) {
    this.client = opts.client
    this.resolve = resolve
    this.fallback = fallback
    this.forwarding = forwarding
    // Sets up node:http's own connection tracking and timeout checks, as if it listened itself.
    fallback.emit('listening')
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket))
    this.server.on('close', () => fallback.close(() => {}))
  }

  /**
   * Serves a connection accepted elsewhere: its own server's, or a TLS
   * socket once the handshake chose HTTP/1.1 (a TLSSocket is a net.Socket
   * reading plaintext, so everything here works on it unchanged).
   */
  accept (socket: net.Socket): void {
    this.conns.add(new ClientConn(this, socket))
  }

  /**
   * The hand-over: a connection the fast path will not serve goes on under
   * node:http from its first unanswered byte (`unread`, put back in front of
   * what the socket has not yet read).
   */
  handOver (socket: net.Socket, unread: Buffer | undefined): void {
    socket.pause()
    if (unread !== undefined) socket.unshift(unread)
    // The head parser stopped at `PRI * HTTP/2.0`: an HTTP/2 session, which reads what was unshifted itself (and must not be resumed here).
    // Only as a plain connection's first bytes (RFC 9113 3.4), as node:http's hand-over has it: after an answer went out, the
    // preface is a bad request, or one HTTP/1.1 connection (a front proxy's, shared by its clients) would turn into HTTP/2
    // midway. Over TLS, HTTP/2 is chosen by ALPN alone (3.3): node:http2 would answer this one 403.
    if (this.h2 !== undefined && unread !== undefined && socket.bytesWritten === 0 && !(socket as { encrypted?: boolean }).encrypted && startsWithPreface(unread)) return void this.h2.emit('connection', socket)
    // node:http would read the handle natively and miss the bytes unshifted above.
    const handle = (socket as unknown as { _handle?: { _consumed?: boolean } })._handle
    if (handle != null) handle._consumed = true
    this.fallback.emit('connection', socket)
    socket.resume()
  }

  /** Graceful stop: idle connections close now, busy ones after their response. */
  closeIdle (): void {
    this.closing = true
    for (const c of this.conns) if (c.idle) c.socket.destroy()
    this.fallback.closeIdleConnections()
  }

  closeAll (): void {
    for (const c of this.conns) c.socket.destroy()
    this.fallback.closeAllConnections()
  }
}
