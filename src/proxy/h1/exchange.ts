// One request's trip upstream on the fast path: a pooled connection, the rewritten
// head and body out, the answer relayed back, one retry when safe, and the counts.

import type net from 'node:net'
import { ERRORS, rawError, type ErrorCode } from '../../errors.js'
import type { ColorStats, Finished, OpenExchange, RequestTrace, UpstreamErrorKind } from '../../upstream/color-stats.js'
import type { H1Pool as UpstreamPool, UpstreamConn, UpstreamUser } from '../../upstream/h1-pool.js'
import type { Endpoint } from '../../upstream/target-set.js'
import { failureKindOf, judgeAttempt, metricOf, nextAttempt, type FailureKind } from '../attempt.js'
import { MAX_HEAD, MAX_INFORMATIONAL } from '../limits.js'
import { recordOutcome } from '../outcome.js'
import { newRequestId } from '../request-id.js'
import { finishTap, type AnswerTap, type Resolution, type UpstreamGroup } from '../resolve.js'
import type { Forwarding } from '../trust.js'
import { CRLF2, gather, headWork, writeHeadAndBody, type Gatherer } from './io.js'
import { ChunkedScanner, Framing, parseResponseHead, type RequestHead, type ResponseHead } from './parse.js'

/** What an exchange needs of the client connection it answers (so it never depends on how that connection reads). */
export interface ClientSide {
  readonly socket: net.Socket
  readonly remote: string
  /** The gateway is stopping: this answer is the connection's last. */
  readonly closing: boolean
  write: (head: string, body: Buffer | undefined) => boolean
  writeBody: (chunk: Buffer) => boolean
  done: (close: boolean) => void
  resumeBody: () => void
  onceDrained: (fn: () => void) => void
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
  private readonly conn: ClientSide
  private readonly head: RequestHead
  /** The color's targets (where a retry may go) and counters. */
  private readonly group: UpstreamGroup
  private readonly stats: ColorStats
  private readonly setCookie: string | undefined
  private readonly upstreamHead: string
  /** Longest silence within the response body, ms (timeouts.body; 0: none). */
  private readonly bodyMs: number
  private endpoint: Endpoint
  private up: UpstreamConn | undefined
  private phase = Phase.Waiting
  private retries = 0
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
  /** Shown the request and the answer as relayed (shadow traffic); undefined on every other request: one check per event. */
  private shadow: AnswerTap | undefined
  /** The request's span (tracing on), recorded when it ends (ColorStats.end); undefined with tracing off. */
  readonly trace: RequestTrace | undefined

  constructor (conn: ClientSide, head: RequestHead, to: Resolution, forwarding: Forwarding) {
    this.conn = conn
    this.head = head
    this.method = head.method
    this.path = head.target
    this.endpoint = to.endpoint
    this.group = to.group
    this.stats = to.group.stats
    this.bodyMs = to.group.timeouts.body ?? 0
    this.setCookie = to.setCookie
    this.shadow = to.shadow
    let extra = forwarding.headerLines(conn.remote, head.host, head)
    if (head.requestId === undefined) {
      this.requestId = newRequestId()
      extra += `x-request-id: ${this.requestId}\r\n`
    } else {
      this.requestId = head.requestId
    }
    let lines = head.lines
    if (to.baggage !== undefined) {
      // Pinning on: one baggage line in place of the client's (which it carries the members of).
      if (head.baggage !== undefined) lines = head.linesWithoutBaggage()
      extra += `baggage: ${to.baggage}\r\n`
    }
    this.trace = to.trace
    // Tracing on, and the gateway started the trace: the services below join it under this request's span.
    if (to.trace?.traceparent !== undefined) extra += `traceparent: ${to.trace.traceparent}\r\n`
    this.upstreamHead = `${head.method} ${head.target} HTTP/1.1\r\n${lines}${extra}\r\n`
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
    if (this.shadow !== undefined) this.showRequest(body, complete)
    this.dispatch(body, complete)
  }

  /** The tap sees the head as it goes upstream (forwarding lines and request id included) and the body read with it. */
  private showRequest (body: Buffer | undefined, complete: boolean): void {
    const tap = this.shadow as AnswerTap
    const head = this.upstreamHead
    // Between the request line and the final CRLF: the header lines exactly as sent.
    tap.request(this.method, this.head.target, head.slice(head.indexOf('\r\n') + 2, head.length - 2))
    if (body !== undefined) tap.requestBody(body, complete)
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
    this.fail('overloaded')
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
    if (this.shadow !== undefined) this.shadow.requestBody(chunk, last)
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
    // Silence while the gateway held the upstream back was not the upstream's: timeouts.body starts afresh.
    if (this.bodyMs > 0 && this.phase === Phase.Body) this.up?.socket.setTimeout(this.bodyMs)
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
        if (buf.length > MAX_HEAD) return this.fail('protocol')
        headWork.scanned += buf.length - from
        this.pending = buf
        this.scanned = buf.length
        return
      }
      this.pending = undefined
      this.room = undefined
      from = 0
      const r = parseResponseHead(buf.toString('latin1', 0, end), this.method === 'HEAD')
      if (typeof r === 'string') return this.fail('protocol')
      buf = buf.subarray(end + 4)
      if (r.status >= 200) return this.respond(r, buf)
      if (r.status === 101) return this.fail('protocol')
      // A flood of 1xx would be relayed (or parsed) without end: past a few, the upstream is broken.
      if (++this.informational > MAX_INFORMATIONAL) return this.fail('protocol')
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
    if (end === -2) return this.fail('protocol')
    this.upstreamMs = performance.now() - this.startedAt
    this.status = r.status
    // Counted when the body ends (see endBody): a reset or short body after this head is a failure.
    this.phase = Phase.Body
    // From here the upstream's silence is timed by timeouts.body (if set), not timeouts.response.
    if (this.bodyMs > 0) this.up?.socket.setTimeout(this.bodyMs)
    this.closeClient = this.head.close || r.framing === Framing.Close || !this.requestSent || this.conn.closing
    let head = `${r.statusLine}\r\n${r.lines}`
    if (this.setCookie !== undefined) head += `set-cookie: ${this.setCookie}\r\n`
    if (this.closeClient) head += 'connection: close\r\n'
    head += '\r\n'
    if (part !== undefined) this.bytes += part.length
    // The tap sees the upstream's fields as relayed, not the gateway's own (sticky cookie, connection: close); a chunked body with its framing.
    if (this.shadow !== undefined) this.showHead(r, part)
    const ok = this.conn.write(head, part)
    if (end !== -1) return this.complete(end < rest.length)
    if (!ok) this.pauseUpstream()
  }

  private showHead (r: ResponseHead, part: Buffer | undefined): void {
    const tap = this.shadow as AnswerTap
    tap.head(r.status, r.lines, r.framing === Framing.Chunked)
    if (part !== undefined && part.length > 0) tap.body(part)
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
    if (end === -2) return this.fail('protocol')
    let ok = true
    if (part !== undefined && part.length > 0) {
      this.bytes += part.length
      if (this.shadow !== undefined) this.shadow.body(part)
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
    if (this.shadow !== undefined) this.shadow = finishTap(this.shadow, true)
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
    this.fail(failureKindOf(err ?? Object.assign(new Error('upstream closed the connection'), { code: 'UND_ERR_SOCKET' })), reused)
  }

  onUpstreamTimeout (): void {
    if (this.phase === Phase.Waiting) return this.fail('timeout')
    // Once the answer has begun, a quiet stream (server-sent events, say) is left alone unless timeouts.body says otherwise.
    if (this.phase === Phase.Body && this.bodyMs > 0 && !this.upstreamPaused) this.fail('timeout')
  }

  /**
   * Gives up on this attempt (its connection is closed, never reused). Before
   * the answer, the attempt policy decides: tried again, or a coded answer
   * to the client. After the head went out, the response is cut.
   */
  private fail (kind: FailureKind, reused = false): void {
    this.dropUpstream()
    if (this.phase === Phase.Body) {
      // Head already sent: cut the response; the upstream broke it.
      this.endBody(metricOf(kind) ?? 'reset')
      this.conn.socket.destroy()
      return
    }
    const verdict = judgeAttempt(kind, this.answered, reused, this.method, this.head.contentLength > 0, this.retries)
    const next = nextAttempt(verdict, this.endpoint, this.group)
    if (next !== undefined) {
      this.retries++
      this.answered = false
      this.endpoint = next
      // On a new connection: the idle ones were likely closed at the same moment as this one.
      this.dispatch(undefined, true, true)
      return
    }
    this.answerError(verdict.code, verdict.countsForGuard)
  }

  /** The gateway answers in the upstream's place; `isError`: an error for the guard. */
  private answerError (code: ErrorCode, isError: boolean): void {
    // Done before the count: a guard the count trips finds this exchange over.
    this.phase = Phase.Done
    this.stats.record(isError)
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
    // Every ending but a whole answer (complete() ended the tap): a failure, a cut, the gateway's own answer.
    if (this.shadow !== undefined) this.shadow = finishTap(this.shadow, false)
    this.durationMs = performance.now() - this.startedAt
    this.endpoint.target.inflight--
    this.stats.end(this, this)
  }
}
