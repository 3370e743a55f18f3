// One HTTP/2 stream forwarded to an HTTP/1.1 upstream on the fast engine's
// raw keep-alive connections (upstream/h1-pool.ts), as FastExchange forwards
// an HTTP/1.1 request: a pooled connection, the request head written once as
// text, the answer parsed by the same parser and relayed, one retry when safe,
// the same counts. What differs is the client side: the answer goes out as
// HTTP/2 (fields as a header object, a chunked body decoded into DATA frames,
// its trailers as HTTP/2 trailers), and the request body comes off the stream.
// undici's dispatcher (H2Exchange) stays the node engine's way.

import type { OutgoingHttpHeaders } from 'node:http2'
import type { Readable } from 'node:stream'
import type { ErrorCode } from '../../errors.js'
import type { ColorStats, Finished, OpenExchange, RequestTrace, UpstreamErrorKind } from '../../upstream/color-stats.js'
import type { H1Pool, UpstreamConn, UpstreamUser } from '../../upstream/h1-pool.js'
import type { Endpoint } from '../../upstream/target-set.js'
import { failureKindOf, judgeAttempt, metricOf, nextAttempt, type FailureKind } from '../attempt.js'
import { grpcStatusOf, isGrpc } from '../grpc.js'
import { MAX_HEAD, MAX_INFORMATIONAL } from '../limits.js'
import { withPropagation } from '../headers.js'
import { recordOutcome } from '../outcome.js'
import { finishTap, type AnswerTap, type Resolution, type UpstreamGroup } from '../resolve.js'
import { CRLF2, gather, headWork, type Gatherer } from '../h1/io.js'
import { ChunkedScanner, Framing, parseResponseHead, type ResponseHead } from '../h1/parse.js'
import type { StreamCloser, StreamDownstream } from './stream-downstream.js'

const enum Phase { Waiting, Body, Done }

/** How the request body goes upstream. */
const enum Send { None, Length, Chunked }

/** A request target HTTP/1.1 can carry in its request line (undici refuses the same ones). */
const SENDABLE_TARGET = /^[\x21-\xff]+$/

/** Methods whose request means something with a body: sent with `content-length: 0` when they come without one (as undici does). */
const BODY_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH'])

/** `s` from `a` to `b` without optional whitespace (SP, HTAB) at either end. */
function trimmed (s: string, a: number, b: number): string {
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--
  return s.slice(a, b)
}

/** Adds a field to an HTTP/2 header object; a repeated name becomes an array. */
function addField (out: OutgoingHttpHeaders, name: string, value: string): void {
  const had = out[name]
  if (had === undefined) out[name] = value
  else if (Array.isArray(had)) had.push(value)
  else out[name] = [had as string, value]
}

/**
 * A response head's lines (parseResponseHead's, hop-by-hop fields already
 * gone) into `out` with lower-case names. The framing fields kept for a
 * chunked body (Transfer-Encoding, Trailer) are not HTTP/2's: left out.
 * Returns whether a Trailer field announced trailers.
 */
function responseFields (lines: string, out: OutgoingHttpHeaders): boolean {
  let announced = false
  let pos = 0
  while (pos < lines.length) {
    const colon = lines.indexOf(':', pos)
    const eol = lines.indexOf('\r\n', colon)
    const name = lines.slice(pos, colon).toLowerCase()
    pos = eol + 2
    if (name.length === 17 && name === 'transfer-encoding') continue
    if (name.length === 7 && name === 'trailer') {
      announced = true
      continue
    }
    addField(out, name, trimmed(lines, colon + 1, eol))
  }
  return announced
}

/** A chunked body's trailer fields (flat, lower-case names) as an HTTP/2 header object. */
function trailerObject (flat: string[] | undefined): OutgoingHttpHeaders | undefined {
  if (flat === undefined) return undefined
  const out: OutgoingHttpHeaders = {}
  for (let i = 0; i < flat.length; i += 2) addField(out, flat[i], flat[i + 1])
  return out
}

/**
 * One HTTP/2 stream's trip to an HTTP/1.1 upstream on a raw pooled
 * connection. Counted like H2Exchange: begun when sent, ended when the
 * stream closes; the outcome settled once (a complete answer by its status,
 * one the upstream broke after its head as an upstream error, one the client
 * or the gateway cut by its status).
 */
export class H2RawExchange implements UpstreamUser, Finished, OpenExchange, Gatherer, StreamCloser {
  readonly requestId: string
  prevOpen: OpenExchange | undefined = undefined
  nextOpen: OpenExchange | undefined = undefined
  /** Response body bytes sent to the client. */
  bytes = 0
  durationMs = 0
  upstreamMs = -1
  room: Buffer | undefined = undefined
  private readonly startedAt = performance.now()
  private readonly down: StreamDownstream
  /** The color's targets (where a retry may go) and counters. */
  private readonly group: UpstreamGroup
  private readonly stats: ColorStats
  private readonly setCookie: string | undefined
  /** Longest silence within the upstream's response body, ms (timeouts.body; 0: none). */
  private readonly bodyMs: number
  private endpoint: Endpoint
  /** The request head as it goes upstream. */
  private head = ''
  private sending = Send.None
  private up: UpstreamConn | undefined = undefined
  /** Waiting for a connection from this pool (all busy). */
  private waitingOn: H1Pool | undefined = undefined
  private phase = Phase.Waiting
  private retries = 0
  /** Response bytes seen (a failure before any is a candidate for a retry). */
  private answered = false
  /** The whole request (head and body) went upstream. */
  private requestSent = false
  /** The stream closed: answered, reset, or cut. */
  private closed = false
  /** The outcome was recorded. */
  private settled = false
  private pending: Buffer | undefined = undefined
  /** How far `pending` was searched for the end of a head. */
  private scanned = 0
  private response: ResponseHead | undefined = undefined
  private remaining = 0
  private scanner: ChunkedScanner | undefined = undefined
  /** The body bytes `take` found in the last read (decoded). */
  private part: Buffer | undefined = undefined
  /** The answer ends with HTTP/2 trailers (announced, or gRPC): the stream waits for them. */
  private withTrailers = false
  /** 1xx answers seen so far. */
  private informational = 0
  /** Reading from the upstream is paused until the stream drains. */
  private upstreamPaused = false
  /** Listeners made only when needed (a body, backpressure): most exchanges need none. */
  private onBodyData: ((chunk: Buffer) => void) | undefined = undefined
  private onBodyEnd: (() => void) | undefined = undefined
  private resumeBodyFn: (() => void) | undefined = undefined
  private resumeUpstreamFn: (() => void) | undefined = undefined
  /** Shown the request and the answer as relayed (shadow traffic); undefined on every other request: one check per event. */
  private shadow: AnswerTap | undefined
  /** The baggage to forward in place of the client's (pinning on); undefined: the client's as sent. */
  private readonly baggage: string | undefined
  /** The request's span (tracing on), recorded when it ends (ColorStats.end); undefined with tracing off. */
  readonly trace: RequestTrace | undefined

  constructor (down: StreamDownstream, to: Resolution) {
    this.down = down
    this.endpoint = to.endpoint
    this.group = to.group
    this.stats = to.group.stats
    this.bodyMs = to.group.timeouts.body ?? 0
    this.setCookie = to.setCookie
    this.shadow = to.shadow
    this.baggage = to.baggage
    this.trace = to.trace
    this.requestId = down.requestId
  }

  get method (): string {
    return this.down.method
  }

  get path (): string {
    return this.down.path
  }

  get status (): number {
    return this.down.status
  }

  get target (): string {
    return this.endpoint.target.url
  }

  /** Sends the request on its way (a client that takes none of its answer for client.idle is cut by the downstream's onDrain). */
  start (): void {
    const down = this.down
    if (!SENDABLE_TARGET.test(down.path)) {
      down.fail('request_refused', 'the request target has characters an HTTP/1.1 request line cannot carry')
      this.shadow = finishTap(this.shadow, false)
      return
    }
    const lines = withPropagation(down.upstreamLines(), this.baggage, this.trace?.traceparent)
    let head = `${down.method} ${down.path} HTTP/1.1\r\n`
    // Host comes first, from :authority; without one, the target's own (as undici sends).
    if (down.authority === undefined) head += `host: ${new URL(this.endpoint.target.url).host}\r\n`
    let sized = false
    for (let i = 0; i < lines.length; i += 2) {
      const name = lines[i]
      if (name.length === 14 && name === 'content-length') sized = true
      head += `${name}: ${lines[i + 1]}\r\n`
    }
    if (down.body === null) {
      if (!sized && BODY_METHODS.has(down.method)) head += 'content-length: 0\r\n'
    } else if (sized) {
      // nghttp2 holds the stream's DATA to its content-length (a mismatch resets it): the length is the body's.
      this.sending = Send.Length
    } else {
      // An HTTP/2 body of unknown length goes chunked (HTTP/1.1 has no other way to end it on a kept connection).
      this.sending = Send.Chunked
      head += 'transfer-encoding: chunked\r\n'
    }
    // Said outright, as undici does: the connection is kept for the next exchange.
    head += 'connection: keep-alive\r\n\r\n'
    if (head.length > MAX_HEAD) {
      down.fail('header_too_large', `request head larger than ${MAX_HEAD} bytes once forwarding headers are added`)
      this.shadow = finishTap(this.shadow, false)
      return
    }
    // The fields as forwarded (the framing and connection lines the head adds for HTTP/1.1 aside).
    if (this.shadow !== undefined) this.shadow.request(down.method, down.path, lines)
    this.head = head
    this.stats.begin(this)
    this.endpoint.target.inflight++
    down.notifyClose(this)
    this.dispatch(false)
  }

  private dispatch (fresh: boolean): void {
    const pool = this.endpoint.h1
    const up = pool.acquire(this, fresh)
    if (up === undefined) {
      // Every connection to the target is busy: the pool calls back; the body waits unread on the stream.
      this.waitingOn = pool
      return
    }
    this.send(up)
  }

  private send (up: UpstreamConn): void {
    this.up = up
    const ok = up.socket.write(this.head, 'latin1')
    if (this.sending === Send.None) {
      this.requestSent = true
      return
    }
    // The body is read from the stream only now: until a connection takes it, HTTP/2 flow control holds the client.
    const body = this.down.body as Readable
    this.onBodyData = (chunk: Buffer): void => this.bodyData(chunk)
    this.onBodyEnd = (): void => this.bodyEnd()
    body.on('data', this.onBodyData)
    body.once('end', this.onBodyEnd)
    if (!ok) this.holdBody(up)
  }

  onUpstreamReady (up: UpstreamConn): void {
    this.waitingOn = undefined
    this.send(up)
  }

  onUpstreamOverloaded (): void {
    this.waitingOn = undefined
    // An error for the guard (the color cannot serve), not against the target: it is busy, not broken.
    this.fail('overloaded')
  }

  private bodyData (chunk: Buffer): void {
    const up = this.up
    if (up === undefined || chunk.length === 0) return
    if (this.shadow !== undefined) this.shadow.requestBody(chunk, false)
    const socket = up.socket
    let ok: boolean
    if (this.sending === Send.Chunked) {
      // One chunk per read of the stream, in one write to the socket.
      socket.cork()
      socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1')
      socket.write(chunk)
      ok = socket.write('\r\n', 'latin1')
      socket.uncork()
    } else {
      ok = socket.write(chunk)
    }
    if (!ok) this.holdBody(up)
  }

  private bodyEnd (): void {
    this.detachBody()
    const up = this.up
    if (up === undefined) return
    // node:http2 ends the readable side of a stream the client reset, too: that body is cut, not whole.
    // No last chunk: the upstream connection goes (the stream's close settles the exchange).
    const code = (this.down.body as Readable & { rstCode?: number }).rstCode
    if (code !== undefined && code !== 0) return this.dropUpstream()
    if (this.sending === Send.Chunked) up.socket.write('0\r\n\r\n', 'latin1')
    this.requestSent = true
    // The stream tells the end apart from the last chunk: an empty last chunk marks it.
    if (this.shadow !== undefined) this.shadow.requestBody(Buffer.alloc(0), true)
  }

  /** The upstream takes the body more slowly than the client sends it: the stream stops reading (flow control holds the client). */
  private holdBody (up: UpstreamConn): void {
    (this.down.body as Readable).pause()
    up.socket.once('drain', this.resumeBodyFn ??= (): void => {
      if (this.phase !== Phase.Done && !this.requestSent) this.down.body?.resume()
    })
  }

  /** The stream's body is no longer read here. */
  private detachBody (): void {
    const body = this.down.body
    if (body === null || this.onBodyData === undefined) return
    body.off('data', this.onBodyData)
    body.off('end', this.onBodyEnd as () => void)
    this.onBodyData = undefined
  }

  onUpstreamData (chunk: Buffer): void {
    this.answered = true
    if (this.phase === Phase.Body) return this.relay(chunk)
    if (this.phase === Phase.Waiting) this.onHeadBytes(chunk)
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
        if (buf.length > MAX_HEAD) return this.fail('protocol')
        headWork.scanned += buf.length - from
        this.pending = buf
        this.scanned = buf.length
        return
      }
      this.pending = undefined
      this.room = undefined
      from = 0
      const r = parseResponseHead(buf.toString('latin1', 0, end), this.down.method === 'HEAD')
      if (typeof r === 'string') return this.fail('protocol')
      buf = buf.subarray(end + 4)
      if (r.status >= 200) return this.respond(r, buf)
      if (r.status === 101) return this.fail('protocol')
      // A flood of 1xx would be relayed (or parsed) without end: past a few, the upstream is broken.
      if (++this.informational > MAX_INFORMATIONAL) return this.fail('protocol')
      // 103 Early Hints go on; a 100 was the gateway's to send (continueBody), not the upstream's.
      if (r.status === 103) {
        const hints: OutgoingHttpHeaders = {}
        responseFields(r.lines, hints)
        try {
          this.down.inform(103, hints)
        } catch {}
      }
      if (buf.length === 0) return
    }
  }

  private respond (r: ResponseHead, rest: Buffer): void {
    if (this.down.closed) {
      // The client reset the stream; its close is on its way and counts the exchange.
      this.dropUpstream()
      this.phase = Phase.Done
      return
    }
    this.response = r
    if (r.framing === Framing.Length) this.remaining = r.contentLength
    else if (r.framing === Framing.Chunked) this.scanner = new ChunkedScanner(true)
    const end = this.take(rest)
    if (end === -2) return this.fail('protocol')
    const part = this.part
    this.part = undefined
    this.upstreamMs = performance.now() - this.startedAt
    const headers: OutgoingHttpHeaders = {}
    const announced = responseFields(r.lines, headers)
    if (this.setCookie !== undefined) addField(headers, 'set-cookie', this.setCookie)
    // Trailers are waited for only when announced or on gRPC (as H2Exchange does); only a chunked body can carry them.
    this.withTrailers = announced || isGrpc(headers['content-type'] as string | undefined)
    if (part !== undefined) this.bytes += part.length
    // The upstream's fields as relayed (HTTP/2 drops their framing lines), its body decoded: no chunk framing.
    if (this.shadow !== undefined) this.showHead(r, part)
    let ok = true
    try {
      if (end !== -1 && !this.withTrailers) {
        // The whole answer is here: head and body leave together, the stream ends with them.
        this.down.respondEnd(r.status, headers, part)
      } else {
        this.down.respondWith(r.status, headers, this.withTrailers)
        if (end !== -1) this.finish(part)
        else if (part !== undefined) ok = this.down.write(part)
      }
    } catch {
      // node:http2 refuses what the HTTP/1.1 parser accepted (say, two Content-Type lines).
      this.dropUpstream()
      this.bytes = this.down.fail('upstream_error', 'the upstream sent response headers that cannot be relayed')
      // A gRPC client got HTTP 200 with UNAVAILABLE: the status says what it was, an error like the REST 502.
      this.endBody(undefined, this.down.grpc ? String(grpcStatusOf('upstream_error')) : undefined)
      return
    }
    if (end !== -1) return this.complete(end < rest.length)
    this.phase = Phase.Body
    // From here the upstream's silence is timed by timeouts.body (if set), not timeouts.response.
    if (this.bodyMs > 0) this.up?.socket.setTimeout(this.bodyMs)
    if (!ok) this.pauseUpstream()
  }

  private showHead (r: ResponseHead, part: Buffer | undefined): void {
    const tap = this.shadow as AnswerTap
    tap.head(r.status, r.lines, false)
    if (part !== undefined) tap.body(part)
  }

  /**
   * Finds the body in `chunk` (decoded into `part`) and where the body ended
   * in it: -1 not yet, -2 invalid framing, else the index past its end.
   */
  private take (chunk: Buffer): number {
    const r = this.response as ResponseHead
    switch (r.framing) {
      case Framing.None:
        return 0
      case Framing.Length:
        if (chunk.length < this.remaining) {
          this.remaining -= chunk.length
          if (chunk.length > 0) this.part = chunk
          return -1
        } else {
          const n = this.remaining
          this.remaining = 0
          if (n > 0) this.part = n === chunk.length ? chunk : chunk.subarray(0, n)
          return n
        }
      case Framing.Chunked: {
        const scanner = this.scanner as ChunkedScanner
        const end = scanner.scan(chunk, 0)
        const parts = scanner.parts as Buffer[]
        if (parts.length === 1) this.part = parts[0]
        // Several chunks in one read go out as one DATA write, not one each.
        else if (parts.length > 1) this.part = Buffer.concat(parts)
        parts.length = 0
        return end
      }
      default:
        if (chunk.length > 0) this.part = chunk
        return -1
    }
  }

  private relay (chunk: Buffer): void {
    const end = this.take(chunk)
    if (end === -2) return this.fail('protocol')
    const part = this.part
    this.part = undefined
    if (part !== undefined) {
      this.bytes += part.length
      if (this.shadow !== undefined) this.shadow.body(part)
    }
    if (end !== -1) {
      this.finish(part)
      return this.complete(end < chunk.length)
    }
    if (part !== undefined && !this.down.write(part)) this.pauseUpstream()
  }

  /** The answer's last bytes and its end: in the last DATA frame, or in a HEADERS frame of trailers. */
  private finish (part: Buffer | undefined): void {
    if (this.withTrailers) {
      if (part !== undefined) this.down.write(part)
      this.down.end(trailerObject(this.scanner?.trailers) ?? {})
    } else if (part !== undefined) {
      this.down.endWith(part)
    } else {
      this.down.end(undefined)
    }
  }

  /** The client (or its flow-control window) is behind: the upstream is not read until it catches up. */
  private pauseUpstream (): void {
    if (this.upstreamPaused) return
    this.upstreamPaused = true
    this.up?.socket.pause()
    this.down.onDrain(this.resumeUpstreamFn ??= (): void => this.resumeUpstream())
  }

  private resumeUpstream (): void {
    if (!this.upstreamPaused) return
    this.upstreamPaused = false
    const up = this.up
    if (up === undefined) return
    up.socket.resume()
    // Silence while the gateway held the upstream back was not the upstream's: timeouts.body starts afresh.
    if (this.bodyMs > 0 && this.phase === Phase.Body) up.socket.setTimeout(this.bodyMs)
  }

  /** The whole answer went to the client. `extra`: the upstream sent bytes past its end. */
  private complete (extra: boolean): void {
    const up = this.up
    const r = this.response as ResponseHead
    this.up = undefined
    const sent = this.requestSent
    if (up === undefined) {
      // Let go of already (the stream closed as the answer went out).
    } else if (r.close || extra || !sent) {
      up.user = undefined
      up.socket.destroy()
    } else {
      up.release(r.keepAliveSeconds)
    }
    if (this.shadow !== undefined) this.shadow = finishTap(this.shadow, true)
    this.endBody(undefined)
    if (!sent) {
      // Answered before the client finished its body: the rest is not wanted.
      this.detachBody()
      this.down.refuseBody()
    }
  }

  /**
   * The answer the upstream began is over: whole (`failure` undefined),
   * broken by the upstream, or cut by the client or the gateway. The one
   * place an answered exchange is counted.
   */
  private endBody (failure: UpstreamErrorKind | undefined, grpcStatus?: string): void {
    this.phase = Phase.Done
    if (this.settled) return
    this.settled = true
    recordOutcome(this.stats, this.endpoint.target, this.down.status, failure, grpcStatus)
  }

  onUpstreamEnd (): void {
    // A body that runs until the upstream closes ends here.
    if (this.phase === Phase.Body && this.response?.framing === Framing.Close) {
      this.finish(undefined)
      this.complete(false)
    }
  }

  onUpstreamClose (err: (Error & { code?: string }) | undefined, reused: boolean): void {
    this.up = undefined
    if (this.phase === Phase.Done) return
    this.fail(failureKindOf(err ?? Object.assign(new Error('upstream closed the connection'), { code: 'UND_ERR_SOCKET' })), reused)
  }

  onUpstreamTimeout (): void {
    if (this.phase === Phase.Waiting) return this.fail('timeout')
    // Once the answer has begun, a quiet stream (server-sent events, say) is left alone unless timeouts.body says otherwise.
    if (this.phase === Phase.Body && this.bodyMs > 0 && !this.upstreamPaused) this.fail('timeout')
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
    }
  }

  /**
   * Gives up on this attempt (its connection is closed, never reused). Before
   * the answer, the attempt policy decides: tried again, or a coded answer
   * to the client. After the head went out, the stream is reset.
   */
  private fail (kind: FailureKind, reused = false): void {
    this.dropUpstream()
    if (this.phase === Phase.Body) {
      // Mid-body: the client must see a reset stream, not a clean end; the upstream failed.
      this.endBody(metricOf(kind) ?? 'reset')
      this.down.destroy()
      return
    }
    if (this.closed || this.phase === Phase.Done) return
    const verdict = judgeAttempt(kind, this.answered, reused, this.down.method, this.down.body !== null, this.retries)
    const next = nextAttempt(verdict, this.endpoint, this.group)
    if (next !== undefined) {
      this.retries++
      this.answered = false
      this.pending = undefined
      this.room = undefined
      this.informational = 0
      this.endpoint = next
      // On a new connection: the idle ones were likely closed at the same moment as this one.
      this.dispatch(true)
      return
    }
    this.answerError(verdict.code, verdict.countsForGuard)
  }

  /** The gateway answers in the upstream's place; `isError`: an error for the guard. */
  private answerError (code: ErrorCode, isError: boolean): void {
    this.phase = Phase.Done
    this.settled = true
    this.detachBody()
    this.stats.record(isError)
    this.bytes += this.down.fail(code)
  }

  /** The stream closed: answered, reset by the client, or cut. Counters settle once; an unfinished upstream request stops. */
  clientClosed (): void {
    this.closed = true
    if (this.phase !== Phase.Done) {
      this.dropUpstream()
      // Not the upstream's fault: an answer under way counts by its status alone.
      if (this.phase === Phase.Body) this.endBody(undefined)
      this.phase = Phase.Done
    }
    this.detachBody()
    // Any ending but complete()'s (which ended the tap already).
    if (this.shadow !== undefined) this.shadow = finishTap(this.shadow, false)
    this.durationMs = performance.now() - this.startedAt
    this.stats.end(this, this)
    this.endpoint.target.inflight--
  }

  /** Ends the exchange now (drain deadline, shutdown): RST_STREAM CANCEL, the upstream connection closed. */
  close (): void {
    if (this.phase !== Phase.Done) this.dropUpstream()
    this.down.destroy(true)
  }
}
