// One client connection on the fast path: gathers request heads, takes pipelined
// requests in turn, keeps the client deadlines, routes each request and answers or refuses it.

import type net from 'node:net'
import { rawError, type ErrorCode } from '../../errors.js'
import type { ClientTimeouts } from '../../config/schema.js'
import { heldSockets } from '../../upstream/h1-pool.js'
import { MAX_HEAD, MAX_HEADER_LINES } from '../limits.js'
import { newRequestId } from '../request-id.js'
import type { Resolve } from '../resolve.js'
import type { Forwarding } from '../trust.js'
import { FastExchange, type ClientSide } from './exchange.js'
import { CRLF2, gather, headWork, writeHeadAndBody, type Gatherer } from './io.js'
import { parseRequestHead, type RequestHead } from './parse.js'

const LF2 = Buffer.from('\n\n')

/** More than MAX_HEADER_LINES header lines between `start` and `end` (the head without its final empty line)? */
function tooManyLines (buf: Buffer, start: number, end: number): boolean {
  // Each line is at least `a:` and its line end: shorter heads cannot have too many.
  if (end - start <= 4 * MAX_HEADER_LINES) return false
  let lines = 0
  for (let i = buf.indexOf(10, start); i !== -1 && i < end; i = buf.indexOf(10, i + 1)) {
    if (++lines > MAX_HEADER_LINES) return true
  }
  return false
}

/** What a client connection reads of the listener that accepted it (the listener owns the connection set). */
export interface ConnOwner {
  /** Gives the connection to node:http, which reads `unread` first. */
  handOver: (socket: net.Socket, unread: Buffer | undefined) => void
  /** Where each request goes (the resolve step): the fast engine routes nothing itself. */
  readonly resolve: Resolve
  readonly forwarding: Forwarding
  readonly conns: Set<ClientConn>
  readonly client: ClientTimeouts
  readonly closing: boolean
}

export class ClientConn implements Gatherer, ClientSide {
  readonly socket: net.Socket
  readonly remote: string
  private readonly edge: ConnOwner
  /** Bytes read but not yet taken: the next request's head (or part of it). */
  private buf: Buffer | undefined
  private x: FastExchange | undefined
  /** Request body bytes still to come for the current exchange. */
  private bodyLeft = 0
  /** Answered its last request; what still arrives is ignored. */
  private ended = false
  /** When the first byte of a head still incomplete arrived; 0 when none is pending. */
  private headSince = 0
  /** Where the incomplete head in `buf` starts (past empty lines) and how far it was searched. */
  private headStart = 0
  private scanned = 0
  /** The buffer `buf` grows in while a head arrives in pieces. */
  room: Buffer | undefined = undefined
  /** Reading is paused until the client reads what was written to it. */
  private drainWait = false

  constructor (edge: ConnOwner, socket: net.Socket) {
    this.edge = edge
    this.socket = socket
    this.remote = socket.remoteAddress ?? ''
    // Counted until it closes, here or on node:http: see upstream/h1-pool.ts on epoll batches.
    heldSockets.count++
    socket.setTimeout(edge.client.idle)
    socket.on('data', this.onData)
    socket.on('error', noop)
    socket.on('close', this.onClose)
    socket.on('timeout', this.onTimeout)
  }

  /** The gateway is stopping: answers in progress are the connection's last. */
  get closing (): boolean {
    return this.edge.closing
  }

  /** Nothing in flight, nothing half-read and nothing left to send. */
  get idle (): boolean {
    return this.x === undefined && this.buf === undefined && !this.ended && this.socket.writableLength === 0
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.ended) return
    if (this.bodyLeft > 0) {
      const x = this.x as FastExchange
      if (chunk.length <= this.bodyLeft) {
        this.bodyLeft -= chunk.length
        if (this.bodyLeft === 0) this.socket.setTimeout(this.edge.client.idle)
        x.sendBody(chunk, this.bodyLeft === 0)
        return
      }
      this.socket.setTimeout(this.edge.client.idle)
      x.sendBody(chunk.subarray(0, this.bodyLeft), true)
      chunk = chunk.subarray(this.bodyLeft)
      this.bodyLeft = 0
    }
    this.buf = this.buf === undefined ? chunk : gather(this, this.buf, chunk)
    if (this.x === undefined) this.next()
    // A pipelined request waits, unread, until the current answer is out.
    else this.socket.pause()
  }

  private readonly onClose = (): void => {
    heldSockets.count--
    this.edge.conns.delete(this)
    this.x?.clientGone()
  }

  private readonly onTimeout = (): void => {
    if (this.x === undefined) {
      // client.header: a head begun and not finished (README: 408, the connection closes).
      if (this.headSince !== 0 && !this.ended) return this.refuse('request_timeout')
      return void this.socket.destroy()
    }
    // client.body: the client went quiet mid-body (not while the gateway itself holds it back).
    if (this.bodyLeft > 0) {
      if (!this.socket.isPaused()) this.x.bodyTimeout()
    } else if (this.socket.writableNeedDrain) {
      // client.idle: the client took none of its answer for that long; it would hold the upstream connection forever.
      // (A quiet stream the client keeps up with has nothing pending: it is left alone.)
      this.socket.destroy()
    }
  }

  /** Parses and starts the requests in the buffer while they are whole and nothing is in flight. */
  private next (): void {
    while (this.x === undefined && this.buf !== undefined && !this.ended) {
      // The client is not reading its answers: no further request is taken until it does, so a
      // pipelined flood cannot pile answers up in memory (node:http stops its parser the same way).
      if (this.socket.writableNeedDrain) return this.holdUntilDrained()
      let buf = this.buf
      // RFC 9112 2.2: empty lines before a request line are ignored.
      let start = this.headStart
      while (start + 1 < buf.length && buf[start] === 13 && buf[start + 1] === 10) start += 2
      // Only what was not searched before (a terminator may straddle the old end).
      const from = Math.max(start, this.scanned - 3)
      const end = buf.indexOf(CRLF2, from)
      if (end === -1) {
        headWork.scanned += buf.length - from
        // Too long, ended by bare LFs, or trickling in for too long: node:http answers (431, 400) or times it out.
        if (buf.length > MAX_HEAD || buf.indexOf(LF2, Math.max(start, from - 1)) !== -1) return this.handOff()
        this.headStart = start
        this.scanned = buf.length
        const now = Date.now()
        if (this.headSince === 0) {
          this.headSince = now
          // A head that stops coming: onTimeout answers 408 once client.header passes without a byte.
          this.socket.setTimeout(this.edge.client.header)
        } else if (now - this.headSince > this.edge.client.header) {
          return this.refuse('request_timeout')
        }
        return
      }
      if (this.headSince !== 0) this.socket.setTimeout(this.edge.client.idle)
      this.headSince = 0
      this.headStart = 0
      this.scanned = 0
      this.room = undefined
      if (end - start > MAX_HEAD) return this.handOff()
      // node:http would keep only the first 2000 header lines and judge the body from those.
      if (tooManyLines(buf, start, end)) return this.refuse('header_too_large')
      const head = parseRequestHead(buf.toString('latin1', start, end))
      if (head === undefined) return this.handOff()
      const whole = buf
      buf = buf.subarray(end + 4)
      let body: Buffer | undefined
      if (head.contentLength > 0 && buf.length > 0) {
        body = buf.length <= head.contentLength ? buf : buf.subarray(0, head.contentLength)
        buf = buf.subarray(body.length)
      }
      this.buf = buf.length === 0 ? undefined : buf
      this.bodyLeft = head.contentLength - (body?.length ?? 0)
      if (this.bodyLeft > 0) this.socket.setTimeout(this.edge.client.body)
      if (!this.route(head, body)) {
        // Not for this engine (an HTTP/2 service): node:http takes the connection from this request's first byte.
        this.bodyLeft = 0
        this.buf = whole.subarray(start)
        return this.handOff()
      }
    }
  }

  /** A head the gateway will not read: a coded answer, and the connection closes (its framing is unknown). */
  private refuse (code: ErrorCode): void {
    this.socket.write(rawError(code, true).text, 'latin1')
    this.end()
  }

  /** This connection continues on node:http, from the first byte not yet answered. */
  private handOff (): void {
    const socket = this.socket
    socket.removeListener('data', this.onData)
    socket.removeListener('close', this.onClose)
    socket.removeListener('timeout', this.onTimeout)
    socket.removeListener('error', noop)
    socket.setTimeout(0)
    this.edge.conns.delete(this)
    socket.once('close', uncount)
    const unread = this.buf
    this.buf = undefined
    this.edge.handOver(socket, unread)
  }

  /** Answers or forwards the request; false when it is not this engine's to serve (nothing was done with it). */
  private route (head: RequestHead, body: Buffer | undefined): boolean {
    head.peer = this.remote
    head.forwarding = this.edge.forwarding
    const to = this.edge.resolve(head)
    if (to.endpoint === undefined) {
      const started = performance.now()
      const bytes = this.answer(head, to.code, to.message)
      if (to.stats !== undefined) to.stats.rejected(head.method, to.target ?? head.target, head.requestId ?? newRequestId(), bytes, performance.now() - started, to.trace)
      return true
    }
    // The fast engine speaks HTTP/1.1 upstream only: node:http's edge forwards over HTTP/2 (proxy/h2/upstream.ts).
    // It resolves the request again: this Resolution's tap (never set for such services) sees nothing.
    if (to.group.protocol !== 'http1') {
      if (to.shadow !== undefined) to.shadow.abort()
      return false
    }
    // The target is forwarded normalized.
    head.target = to.target
    const x = new FastExchange(this, head, to, this.edge.forwarding)
    // The added X-Forwarded-* and request id must not push the head past what an upstream takes.
    if (!x.fitsUpstream) {
      if (to.shadow !== undefined) to.shadow.abort()
      this.answer(head, 'header_too_large')
      return true
    }
    this.x = x
    x.start(body, this.bodyLeft === 0)
    return true
  }

  /** The gateway's own answer to a request it does not forward; returns the body size. */
  private answer (head: RequestHead, code: ErrorCode, message?: string): number {
    // A body that is still on its way is not read: the connection closes after the answer.
    const close = head.close || this.bodyLeft > 0 || this.edge.closing
    const r = rawError(code, close, message, head.method)
    this.socket.write(r.text, 'latin1')
    if (close) this.end()
    return r.bytes
  }

  /** Raw bytes to the client; false when it should stop sending for now. */
  write (head: string, body: Buffer | undefined): boolean {
    return writeHeadAndBody(this.socket, head, body)
  }

  writeBody (chunk: Buffer): boolean {
    return this.socket.write(chunk)
  }

  /** No more requests on this connection: it ends once what was written is out. */
  private end (): void {
    this.ended = true
    this.bodyLeft = 0
    this.buf = undefined
    this.room = undefined
    this.socket.end()
    // Read (and ignore) what the client still sends, so its FIN is seen and the socket closes.
    this.socket.resume()
  }

  /** The current exchange is over; `close`: so is the connection. */
  done (close: boolean): void {
    this.x = undefined
    if (close || this.edge.closing || this.bodyLeft > 0) return this.end()
    this.proceed()
  }

  /** Takes the next buffered request if any, and reads on unless a request waits its turn or the client must catch up. */
  private proceed (): void {
    if (this.buf === undefined) return void this.socket.resume()
    this.next()
    if (!this.drainWait && (this.x === undefined || this.bodyLeft > 0)) this.socket.resume()
  }

  /** Reading stops until the client has taken what was written to it. */
  private holdUntilDrained (): void {
    this.socket.pause()
    if (this.drainWait) return
    this.drainWait = true
    this.socket.once('drain', this.onClientDrained)
  }

  private readonly onClientDrained = (): void => {
    this.drainWait = false
    if (!this.ended && this.x === undefined) this.proceed()
  }

  /** Reads the request body again after the gateway held it back; client.body runs afresh. */
  resumeBody (): void {
    this.socket.resume()
    // The deadline may have fired (and been ignored) while reading was paused: arm it again.
    if (this.bodyLeft > 0) this.socket.setTimeout(this.edge.client.body)
  }

  /** The client reads too slowly: `fn` runs once it has caught up. */
  onceDrained (fn: () => void): void {
    this.socket.once('drain', fn)
  }
}

function noop (): void {}

function uncount (): void {
  heldSockets.count--
}
