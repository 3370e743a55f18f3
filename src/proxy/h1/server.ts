// The fast path of the public listener: HTTP/1.1 on raw sockets both ways.
// Request heads are parsed here and forwarded as rewritten text; bodies pass
// through as bytes (a chunked response is not decoded, only scanned for its
// end). Anything else goes, with its whole connection, to node:http (the
// `fallback` server), which takes it from the first byte it has not answered:
// HTTP/1.0, chunked uploads, Expect, WebSocket upgrades, odd or malformed heads.

import http from 'node:http'
import net from 'node:net'
import { ERRORS, rawError, type ErrorCode } from '../../errors.js'
import type { ClientTimeouts } from '../../config/schema.js'
import type { SmokeRunner } from '../../health/smoke.js'
import { ambiguousRouting, chooseFor, readsHeaders } from '../../routing/choose.js'
import { normalizeTarget, TARGET_ABOVE_ROOT } from '../../routing/path.js'
import type { ServiceRoute, SnapshotView } from '../../routing/snapshot.js'
import type { ColorStats, Finished, OpenExchange, UpstreamErrorKind } from '../../upstream/color-stats.js'
import type { Endpoint, TargetSet } from '../../upstream/target-set.js'
import { classifyUpstreamError, ERROR_KIND, IDEMPOTENT } from '../forward.js'
import { MAX_HEAD, MAX_HEADER_LINES, MAX_INFORMATIONAL } from '../limits.js'
import { keepAliveRace, recordOutcome } from '../outcome.js'
import { newRequestId } from '../request-id.js'
import type { Forwarding } from '../trust.js'
import { ChunkedScanner, Framing, parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from './parse.js'
import { heldSockets, type H1Pool as UpstreamPool, type UpstreamConn, type UpstreamUser } from './pool.js'

const CRLF2 = Buffer.from('\r\n\r\n')
const LF2 = Buffer.from('\n\n')

/**
 * Bytes copied and scanned while gathering heads that arrive in pieces (not
 * counted for a head that arrives whole): tests check it grows linearly.
 */
export const headWork = { copied: 0, scanned: 0 }

/** Whatever gathers a head that arrives in pieces: the buffer it grows in. */
interface Gatherer {
  room: Buffer | undefined
}

/**
 * `buf` followed by `chunk`. When `buf` is a view at the start of `g.room`
 * (what this returned last time), `chunk` is copied after it in place while
 * there is room, and the room doubles when there is not: a head arriving a
 * byte at a time costs linear time, not quadratic.
 */
function gather (g: Gatherer, buf: Buffer, chunk: Buffer): Buffer {
  const length = buf.length + chunk.length
  const room = g.room
  if (room !== undefined && buf.buffer === room.buffer && buf.byteOffset === room.byteOffset && length <= room.length) {
    chunk.copy(room, buf.length)
    headWork.copied += chunk.length
    return room.subarray(0, length)
  }
  const grown = Buffer.allocUnsafeSlow(Math.max(2 * length, 1024))
  buf.copy(grown, 0)
  chunk.copy(grown, buf.length)
  headWork.copied += length
  g.room = grown
  return grown.subarray(0, length)
}

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
/** Bodies up to this size leave in the same write as their head. */
const COALESCE = 16 * 1024

/** How many lines of header `lowerName` forwarded header lines hold (routing by a preview header; rare). */
function linesOf (lines: string, lowerName: string): number {
  let n = 0
  let at = 0
  while (at < lines.length) {
    const colon = lines.indexOf(':', at)
    if (colon === -1) break
    if (colon - at === lowerName.length && lines.slice(at, colon).toLowerCase() === lowerName) n++
    const eol = lines.indexOf('\r\n', colon)
    if (eol === -1) break
    at = eol + 2
  }
  return n
}

/** A header's value in forwarded header lines (routing by a preview header; rare). */
export function headerIn (lines: string, lowerName: string): string | undefined {
  for (const line of lines.split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon === lowerName.length && line.slice(0, colon).toLowerCase() === lowerName) return line.slice(colon + 1).trim()
  }
  return undefined
}

/** Writes text and bytes as one buffer when small, else as two writes in one syscall. */
function writeHeadAndBody (socket: net.Socket, head: string, body: Buffer | undefined): boolean {
  if (body === undefined || body.length === 0) return socket.write(head, 'latin1')
  if (body.length <= COALESCE) {
    const headLen = head.length
    const out = Buffer.allocUnsafe(headLen + body.length)
    out.write(head, 0, headLen, 'latin1')
    body.copy(out, headLen)
    return socket.write(out)
  }
  socket.cork()
  socket.write(head, 'latin1')
  const ok = socket.write(body)
  socket.uncork()
  return ok
}

export class FastEdge {
  readonly server: net.Server
  /** Connections the fast path does not serve, from the byte it stopped at. */
  readonly fallback: http.Server
  readonly switcher: SnapshotView
  readonly smoke: SmokeRunner
  /** The scheme served and the peers whose forwarding headers are believed. */
  readonly forwarding: Forwarding
  readonly conns = new Set<ClientConn>()
  /** Client-side deadlines (the same ones node:http is given for what it takes). */
  readonly client: ClientTimeouts
  closing = false

  constructor (switcher: SnapshotView, smoke: SmokeRunner, fallback: http.Server, forwarding: Forwarding, opts: { client: ClientTimeouts }) {
    this.client = opts.client
    this.switcher = switcher
    this.smoke = smoke
    this.fallback = fallback
    this.forwarding = forwarding
    // Sets up node:http's own connection tracking and timeout checks, as if it listened itself.
    fallback.emit('listening')
    this.server = net.createServer({ noDelay: true }, (socket) => {
      const conn = new ClientConn(this, socket)
      this.conns.add(conn)
    })
    this.server.on('close', () => fallback.close(() => {}))
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

export class ClientConn implements Gatherer {
  readonly socket: net.Socket
  readonly remote: string
  private readonly edge: FastEdge
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

  constructor (edge: FastEdge, socket: net.Socket) {
    this.edge = edge
    this.socket = socket
    this.remote = socket.remoteAddress ?? ''
    // Counted until it closes, here or on node:http: see pool.ts on epoll batches.
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
      buf = buf.subarray(end + 4)
      let body: Buffer | undefined
      if (head.contentLength > 0 && buf.length > 0) {
        body = buf.length <= head.contentLength ? buf : buf.subarray(0, head.contentLength)
        buf = buf.subarray(body.length)
      }
      this.buf = buf.length === 0 ? undefined : buf
      this.bodyLeft = head.contentLength - (body?.length ?? 0)
      if (this.bodyLeft > 0) this.socket.setTimeout(this.edge.client.body)
      this.route(head, body)
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
    socket.pause()
    if (this.buf !== undefined) socket.unshift(this.buf)
    this.buf = undefined
    // node:http would read the handle natively and miss the bytes unshifted above.
    const handle = (socket as unknown as { _handle?: { _consumed?: boolean } })._handle
    if (handle != null) handle._consumed = true
    this.edge.fallback.emit('connection', socket)
    socket.resume()
  }

  private route (head: RequestHead, body: Buffer | undefined): void {
    const edge = this.edge
    // The target is routed and forwarded normalized; the check is one scan of its slashes.
    const target = normalizeTarget(head.target)
    if (target === undefined) {
      this.answer(head, 'bad_request', TARGET_ABOVE_ROOT)
      return
    }
    head.target = target
    const route = edge.switcher.current.match(head.host, target)
    if (route === undefined) {
      this.answer(head, 'no_route')
      return
    }
    let headers: Record<string, string | undefined> | undefined
    if (readsHeaders(route)) {
      const ambiguous = ambiguousRouting(route, route.previewHeader === undefined ? 0 : linesOf(head.lines, route.previewHeader), head.connectionNames)
      if (ambiguous !== undefined) {
        this.answer(head, 'bad_request', ambiguous)
        return
      }
      headers = routingHeaders(route, head)
    }
    const pinned = head.smoke === undefined ? undefined : edge.smoke.colorOf(head.smoke)
    const { color, setCookie: cookie } = chooseFor(route, pinned, headers)
    const endpoint = color.targets.pick()
    if (endpoint === undefined) {
      const started = performance.now()
      const bytes = this.answer(head, 'no_healthy_upstream', `no healthy upstream for ${route.name} (${color.color})`)
      color.stats.rejected(head.method, head.target, head.requestId ?? newRequestId(), bytes, performance.now() - started)
      return
    }
    const x = new FastExchange(this, head, endpoint, color.targets, color.stats, cookie, edge.forwarding)
    // The added X-Forwarded-* and request id must not push the head past what an upstream takes.
    if (!x.fitsUpstream) return void this.answer(head, 'header_too_large')
    this.x = x
    x.start(body, this.bodyLeft === 0)
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

/** The headers a service's preview and sticky settings read, as `chooseFor` takes them. */
function routingHeaders (route: ServiceRoute, head: RequestHead): Record<string, string | undefined> {
  const headers: Record<string, string | undefined> = { cookie: head.cookie }
  if (route.previewHeader !== undefined) headers[route.previewHeader] = headerIn(head.lines, route.previewHeader)
  return headers
}

const enum Phase { Waiting, Body, Done }

/** One request's trip upstream on the fast path. */
export class FastExchange implements UpstreamUser, Finished, OpenExchange, Gatherer {
  readonly requestId: string
  prevOpen: OpenExchange | undefined = undefined
  nextOpen: OpenExchange | undefined = undefined
  readonly method: string
  readonly path: string
  status = 0
  bytes = 0
  durationMs = 0
  upstreamMs = -1
  private readonly startedAt = performance.now()
  private readonly conn: ClientConn
  private readonly head: RequestHead
  private readonly picker: TargetSet
  private readonly stats: ColorStats
  private readonly setCookie: string | undefined
  private readonly upstreamHead: string
  private readonly retryable: boolean
  private endpoint: Endpoint
  private up: UpstreamConn | undefined
  private phase = Phase.Waiting
  private retried = false
  private settled = false
  /** Response bytes seen (a failure before any is a candidate for a retry). */
  private answered = false
  private requestSent = false
  private pending: Buffer | undefined
  private response: ResponseHead | undefined
  private remaining = 0
  private scanner: ChunkedScanner | undefined
  private closeClient = false
  /** How far `pending` was searched for the end of a head. */
  private scanned = 0
  room: Buffer | undefined = undefined
  /** 1xx answers seen so far. */
  private informational = 0
  /** Reading from the upstream is paused until the client catches up. */
  private upstreamPaused = false
  /** Waiting for a connection from this pool (all busy); the body to send once one comes. */
  private waitingOn: UpstreamPool | undefined
  private held: Buffer | undefined

  constructor (conn: ClientConn, head: RequestHead, endpoint: Endpoint, picker: TargetSet, stats: ColorStats, setCookie: string | undefined, forwarding: Forwarding) {
    this.conn = conn
    this.head = head
    this.method = head.method
    this.path = head.target
    this.endpoint = endpoint
    this.picker = picker
    this.stats = stats
    this.setCookie = setCookie
    let extra = forwarding.headerLines(conn.remote, head.host, head)
    if (head.requestId === undefined) {
      this.requestId = newRequestId()
      extra += `x-request-id: ${this.requestId}\r\n`
    } else {
      this.requestId = head.requestId
    }
    this.upstreamHead = `${head.method} ${head.target} HTTP/1.1\r\n${head.lines}${extra}\r\n`
    this.retryable = head.contentLength === 0 && IDEMPOTENT.has(head.method)
  }

  get target (): string {
    return this.endpoint.target.url
  }

  /** The head as it goes upstream is within MAX_HEAD (else the client gets 431). */
  get fitsUpstream (): boolean {
    return this.upstreamHead.length <= MAX_HEAD
  }

  start (body: Buffer | undefined, complete: boolean): void {
    this.stats.begin(this)
    this.endpoint.target.inflight++
    this.dispatch(body, complete)
  }

  private dispatch (body: Buffer | undefined, complete: boolean, fresh = false): void {
    this.requestSent = complete
    const pool = this.endpoint.h1
    const up = pool.acquire(this, fresh)
    if (up === undefined) {
      // Every connection to the target is busy: the pool calls back; the client's body waits unread.
      this.waitingOn = pool
      this.held = body
      if (!complete) this.conn.socket.pause()
      return
    }
    this.send(up, body)
  }

  private send (up: UpstreamConn, body: Buffer | undefined): void {
    this.up = up
    if (!writeHeadAndBody(up.socket, this.upstreamHead, body) && !this.requestSent) this.pauseClient(up)
  }

  onUpstreamReady (up: UpstreamConn): void {
    this.waitingOn = undefined
    const body = this.held
    this.held = undefined
    this.send(up, body)
    if (!this.requestSent && this.up === up && !up.socket.writableNeedDrain) this.conn.resumeBody()
  }

  onUpstreamOverloaded (): void {
    this.waitingOn = undefined
    this.held = undefined
    // An error for the guard (the color cannot serve), not against the target: it is busy, not broken.
    this.answerError('upstream_overloaded')
  }

  /** Lets go of the upstream: its connection is closed (never reused), or the wait for one ends. */
  private dropUpstream (): void {
    const up = this.up
    this.up = undefined
    if (up !== undefined) {
      up.user = undefined
      up.socket.destroy()
    }
    if (this.waitingOn !== undefined) {
      this.waitingOn.cancel(this)
      this.waitingOn = undefined
      this.held = undefined
    }
  }

  /** The upstream takes the body more slowly than the client sends it. */
  private pauseClient (up: UpstreamConn): void {
    this.conn.socket.pause()
    up.socket.once('drain', this.resumeClient)
  }

  /** More of the request body from the client. */
  sendBody (chunk: Buffer, last: boolean): void {
    if (last) this.requestSent = true
    const up = this.up
    if (up === undefined) {
      // Read before the pause took effect, while waiting for a connection.
      if (this.waitingOn !== undefined) this.held = this.held === undefined ? chunk : Buffer.concat([this.held, chunk])
      return
    }
    if (!up.socket.write(chunk)) this.pauseClient(up)
  }

  private readonly resumeClient = (): void => {
    if (this.phase !== Phase.Done) this.conn.resumeBody()
  }

  private readonly resumeUpstream = (): void => {
    this.upstreamPaused = false
    this.up?.socket.resume()
  }

  onUpstreamData (chunk: Buffer): void {
    this.answered = true
    if (this.phase === Phase.Body) return this.relay(chunk)
    this.onHeadBytes(chunk)
  }

  private onHeadBytes (chunk: Buffer): void {
    let buf = chunk
    let from = 0
    if (this.pending !== undefined) {
      buf = gather(this, this.pending, chunk)
      // Only what was not searched before (a terminator may straddle the old end).
      from = Math.max(0, this.scanned - 3)
    }
    for (;;) {
      const end = buf.indexOf(CRLF2, from)
      if (end === -1 || end > MAX_HEAD) {
        if (buf.length > MAX_HEAD) return this.fail('upstream_error')
        headWork.scanned += buf.length - from
        this.pending = buf
        this.scanned = buf.length
        return
      }
      this.pending = undefined
      this.room = undefined
      from = 0
      const r = parseResponseHead(buf.toString('latin1', 0, end), this.method === 'HEAD')
      if (typeof r === 'string') return this.fail('upstream_error')
      buf = buf.subarray(end + 4)
      if (r.status >= 200) return this.respond(r, buf)
      if (r.status === 101) return this.fail('upstream_error')
      // A flood of 1xx would be relayed (or parsed) without end: past a few, the upstream is broken.
      if (++this.informational > MAX_INFORMATIONAL) return this.fail('upstream_error')
      // Informational: 103 Early Hints go on to the client (no faster than it reads); the final answer is still to come.
      if (r.status === 103 && !this.conn.write(`${r.statusLine}\r\n${r.lines}\r\n`, undefined)) this.pauseUpstream()
      if (buf.length === 0) return
    }
  }

  private respond (r: ResponseHead, rest: Buffer): void {
    this.response = r
    if (r.framing === Framing.Length) this.remaining = r.contentLength
    else if (r.framing === Framing.Chunked) this.scanner = new ChunkedScanner()
    const { part, end } = this.take(rest)
    if (end === -2) return this.fail('upstream_error')
    this.upstreamMs = performance.now() - this.startedAt
    this.status = r.status
    // Counted when the body ends (see endBody): a reset or short body after this head is a failure.
    this.phase = Phase.Body
    this.closeClient = this.head.close || r.framing === Framing.Close || !this.requestSent || this.conn.closing
    let head = `${r.statusLine}\r\n${r.lines}`
    if (this.setCookie !== undefined) head += `set-cookie: ${this.setCookie}\r\n`
    if (this.closeClient) head += 'connection: close\r\n'
    head += '\r\n'
    if (part !== undefined) this.bytes += part.length
    const ok = this.conn.write(head, part)
    if (end !== -1) return this.complete(end < rest.length)
    if (!ok) this.pauseUpstream()
  }

  /**
   * The part of `chunk` that belongs to the body, and where the body ended
   * in it: -1 not yet, -2 invalid framing, else the index past its end.
   */
  private take (chunk: Buffer): { part: Buffer | undefined, end: number } {
    const r = this.response as ResponseHead
    switch (r.framing) {
      case Framing.None:
        return { part: undefined, end: 0 }
      case Framing.Length:
        if (chunk.length < this.remaining) {
          this.remaining -= chunk.length
          return { part: chunk, end: -1 }
        } else {
          const n = this.remaining
          this.remaining = 0
          return { part: n === chunk.length ? chunk : chunk.subarray(0, n), end: n }
        }
      case Framing.Chunked: {
        const end = (this.scanner as ChunkedScanner).scan(chunk, 0)
        if (end < 0) return { part: end === -1 ? chunk : undefined, end }
        return { part: end === chunk.length ? chunk : chunk.subarray(0, end), end }
      }
      default:
        return { part: chunk, end: -1 }
    }
  }

  private relay (chunk: Buffer): void {
    const { part, end } = this.take(chunk)
    if (end === -2) return this.fail('upstream_error')
    let ok = true
    if (part !== undefined && part.length > 0) {
      this.bytes += part.length
      ok = this.conn.writeBody(part)
    }
    if (end !== -1) return this.complete(end < chunk.length)
    if (!ok) this.pauseUpstream()
  }

  private pauseUpstream (): void {
    if (this.upstreamPaused) return
    this.upstreamPaused = true
    this.up?.socket.pause()
    this.conn.onceDrained(this.resumeUpstream)
  }

  /** The whole response went to the client. `extra`: the upstream sent bytes past its end. */
  private complete (extra: boolean): void {
    const up = this.up as UpstreamConn
    const r = this.response as ResponseHead
    this.up = undefined
    if (r.close || extra || !this.requestSent) {
      up.user = undefined
      up.socket.destroy()
    } else {
      up.release(r.keepAliveSeconds)
    }
    this.endBody(undefined)
    this.conn.done(this.closeClient)
  }

  /**
   * The answer the upstream began is over: whole (`failure` undefined) or
   * broken by the upstream. The one place an answered exchange is counted.
   */
  private endBody (failure: UpstreamErrorKind | undefined): void {
    this.phase = Phase.Done
    recordOutcome(this.stats, this.endpoint.target, this.status, failure)
    this.settle()
  }

  onUpstreamEnd (): void {
    // A body that runs until the upstream closes ends here.
    if (this.phase === Phase.Body && this.response?.framing === Framing.Close) this.complete(false)
  }

  onUpstreamClose (err: (Error & { code?: string }) | undefined, reused: boolean): void {
    this.up = undefined
    if (this.phase === Phase.Done) return
    if (this.phase === Phase.Body) {
      // Mid-body: the client must see a truncated response, not a clean end; the upstream failed.
      this.endBody('reset')
      this.conn.socket.destroy()
      return
    }
    const e = err ?? Object.assign(new Error('upstream closed the connection'), { code: 'UND_ERR_SOCKET' })
    this.upstreamFailed(e, reused)
  }

  onUpstreamTimeout (): void {
    // Once the answer has begun, a quiet stream (server-sent events, say) is left alone.
    if (this.phase !== Phase.Waiting) return
    this.fail('upstream_timeout')
  }

  /** A failure before the answer: retried once when safe, else a coded error to the client. */
  private upstreamFailed (err: Error & { code?: string }, reused: boolean): void {
    const code = classifyUpstreamError(err)
    this.stats.upstreamError(ERROR_KIND[code] ?? 'reset')
    // A kept-alive connection the upstream closed just as it was reused: the request never got there.
    const stale = keepAliveRace(this.answered, reused)
    if (this.retryable && !this.retried && (code === 'upstream_connect_failed' || stale || (!this.answered && (err.code === 'ECONNRESET' || err.code === 'UND_ERR_SOCKET')))) {
      const next = this.picker.pick(this.endpoint) ?? (code === 'upstream_connect_failed' ? undefined : this.endpoint)
      if (next !== undefined) {
        if (!stale) this.endpoint.target.recordResult(false)
        this.retried = true
        this.endpoint.target.inflight--
        next.target.inflight++
        this.endpoint = next
        // On a new connection: the idle ones were likely closed at the same moment as this one.
        this.dispatch(undefined, true, true)
        return
      }
    }
    // A stale connection is the keep-alive race, not the target failing: it does not count toward ejection.
    if (!stale) this.endpoint.target.recordResult(false)
    this.answerError(code)
  }

  /** Gives up on the upstream: its connection is closed and the client gets `code`. */
  private fail (code: ErrorCode): void {
    this.dropUpstream()
    if (this.phase === Phase.Body) {
      // Head already sent: cut the response; the upstream broke it.
      this.endBody(ERROR_KIND[code] ?? 'reset')
      this.conn.socket.destroy()
      return
    }
    this.endpoint.target.recordResult(false)
    this.stats.upstreamError(ERROR_KIND[code] ?? 'reset')
    this.answerError(code)
  }

  /** The gateway answers in the upstream's place: an error for the guard. */
  private answerError (code: ErrorCode): void {
    // Done before the count: a guard the count trips finds this exchange over.
    this.phase = Phase.Done
    this.stats.record(true)
    this.answerLocal(code, this.head.close || !this.requestSent)
  }

  /** A coded answer from the gateway ends the exchange (the upstream is already let go). */
  private answerLocal (code: ErrorCode, close: boolean): void {
    this.phase = Phase.Done
    this.status = ERRORS[code].status
    const r = rawError(code, close, undefined, this.method)
    this.bytes += r.bytes
    this.conn.write(r.text, undefined)
    this.settle()
    this.conn.done(close)
  }

  /** The client went away: the upstream connection cannot be reused. */
  clientGone (): void {
    if (this.phase !== Phase.Done) {
      this.dropUpstream()
      // Not the upstream's fault: an answer under way counts by its status alone.
      if (this.phase === Phase.Body) this.endBody(undefined)
      this.phase = Phase.Done
    }
    this.settle()
  }

  /**
   * The client went quiet mid-body for client.body: before the answer, a 408
   * and the connection closes; after it began, both sides are cut. Either
   * way the upstream connection is closed, never reused, and not blamed.
   */
  bodyTimeout (): void {
    if (this.phase === Phase.Done) return
    this.dropUpstream()
    if (this.phase === Phase.Body) {
      this.endBody(undefined)
      this.conn.socket.destroy()
      return
    }
    this.answerLocal('request_timeout', true)
  }

  /** Ends the exchange now (drain deadline, shutdown). */
  close (): void {
    this.conn.socket.destroy()
  }

  /** Counters settle exactly once. */
  private settle (): void {
    if (this.settled) return
    this.settled = true
    this.durationMs = performance.now() - this.startedAt
    this.endpoint.target.inflight--
    this.stats.end(this, this)
  }
}
