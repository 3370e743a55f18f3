// Forwarding over HTTP/2 to a service's targets (protocol h2c or h2): gRPC
// calls and streams, trailers included, whatever the client speaks (the
// Downstream hides it). One stream per request on the target's sessions
// (upstream/h2-pool.ts); bodies flow both ways at once (bidirectional
// streams), each side held back while the other is behind.

import http2, { type ClientHttp2Stream, type IncomingHttpHeaders, type IncomingHttpStatusHeader, type OutgoingHttpHeaders } from 'node:http2'
import { ERRORS, type ErrorCode } from '../../errors.js'
import type { ColorStats, Finished, OpenExchange, RequestTrace } from '../../upstream/color-stats.js'
import type { H2Session } from '../../upstream/h2-pool.js'
import type { Endpoint } from '../../upstream/target-set.js'
import { judgeAttempt, nextAttempt, type AttemptVerdict, type FailureKind } from '../attempt.js'
import type { Readable } from 'node:stream'
import type { Downstream } from '../downstream.js'
import { encodeGrpcMessage, grpcStatusOf, GrpcStatus, isGrpc } from '../grpc.js'
import { FORBIDDEN_TRAILERS, HOP_BY_HOP } from '../headers.js'
import { recordOutcome } from '../outcome.js'
import type { Resolution, UpstreamGroup } from '../resolve.js'

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants

/**
 * Request body bytes kept until the answer's head comes, so that a stream the
 * upstream refused unprocessed can be sent again (a gRPC call is a POST with
 * a body: without them it could never be retried). Past this, no retry.
 */
const REPLAY_MAX = 64 * 1024

/**
 * What nghttp2 takes in :authority (its check_authority): a Host outside it would be reset by the target's own
 * HTTP/2 stack, and a client's bad Host counted as the target's error.
 */
const AUTHORITY = /^[A-Za-z0-9\-._~!$&'()*+,;=:%@[\]]+$/

/** The fields of a gRPC status (grpc PROTOCOL-HTTP2 "Trailers"). */
const GRPC_STATUS_FIELDS = ['grpc-status', 'grpc-message', 'grpc-status-details-bin']

/** Sends one request to `to` over HTTP/2 and relays the answer, trailers included, to `down`. */
export function forwardOverH2 (down: Downstream, to: Resolution): void {
  // The config refuses shadow traffic for HTTP/2 services (a gRPC stream is no request to replay): a tap here sees nothing.
  if (to.shadow !== undefined) to.shadow.abort()
  new H2Exchange(down, to).start()
}

/** Why an attempt got no answer, as far as this forwarder can tell. */
type AttemptFailure = FailureKind | 'unprocessed'

/**
 * One request's trip upstream over HTTP/2. Like the HTTP/1.1 forwarders, it
 * is counted from start to the client side's close (ColorStats begin/end),
 * settles its outcome once, and sends failures before any answer through
 * the attempt policy (proxy/attempt.ts).
 */
export class H2Exchange implements OpenExchange, Finished {
  readonly requestId: string
  readonly method: string
  readonly path: string
  prevOpen: OpenExchange | undefined = undefined
  nextOpen: OpenExchange | undefined = undefined
  /** Response body bytes sent to the client. */
  bytes = 0
  durationMs = 0
  upstreamMs = -1
  private readonly startedAt = performance.now()
  private readonly down: Downstream
  private readonly group: UpstreamGroup
  private readonly stats: ColorStats
  private readonly setCookie: string | undefined
  /** The baggage to forward in place of the client's (pinning on); undefined: the client's as sent. */
  private readonly baggage: string | undefined
  /** The request's span (tracing on), recorded when it ends (ColorStats.end); undefined with tracing off. */
  readonly trace: RequestTrace | undefined
  private endpoint: Endpoint
  /** The current attempt's stream. */
  private stream: ClientHttp2Stream | undefined
  private retries = 0
  /** The status the client was answered with (0: none yet). */
  private sent = 0
  /** The upstream's head went to the client: the outcome waits for the end. */
  private answered = false
  /** The upstream's answer ended (its END_STREAM arrived). */
  private upstreamDone = false
  /** The client side is over (answered, reset or gone). */
  private over = false
  private settled = false
  /** A gRPC answer's grpc-status (trailers, or a trailers-only head). */
  private grpcStatus: string | undefined
  /** The answer is gRPC (its content-type): it must end with a grpc-status. */
  private grpcAnswer = false
  private trailers: IncomingHttpHeaders | undefined
  /** Request body chunks kept for a resend, or undefined once too many (or the answer began). */
  private replay: Buffer[] | undefined = []
  private replayBytes = 0
  private bodyEnded = false
  private responseTimer: NodeJS.Timeout | undefined
  private bodyTimer: NodeJS.Timeout | undefined
  /** Which deadline cut the current attempt, if one did. */
  private timedOut = false
  /** Cancels the wait for a stream slot, while there is one. */
  private stopWaiting: (() => void) | undefined

  constructor (down: Downstream, to: Resolution) {
    this.down = down
    this.endpoint = to.endpoint
    this.group = to.group
    this.stats = to.group.stats
    this.setCookie = to.setCookie
    this.baggage = to.baggage
    this.trace = to.trace
    this.requestId = down.requestId
    this.method = down.method
    this.path = down.path
  }

  /** What the client got: the client side may have answered itself (a request body gone quiet: 408). */
  get status (): number {
    return this.sent !== 0 ? this.sent : this.down.status ?? 0
  }

  get target (): string {
    return this.endpoint.target.url
  }

  start (): void {
    const authority = this.down.authority
    if (authority !== undefined && authority !== '' && !AUTHORITY.test(authority)) {
      // The client's mistake (an HTTP/1.1 Host the upstream's protocol cannot carry): refused here, as the resolve
      // step refuses a request it cannot route, counted for no color.
      this.down.fail('bad_request', 'the Host header is not a valid authority for this HTTP/2 service')
      return
    }
    this.stats.begin(this)
    this.endpoint.target.inflight++
    this.down.onClose(this.onClientClose)
    const body = this.down.body
    if (body === null) this.bodyEnded = true
    else {
      body.on('data', this.onBodyData)
      body.once('end', this.onBodyEnd)
      // A client that breaks its body off: the onClose above ends the exchange.
      body.on('error', noop)
    }
    this.attempt()
  }

  /** Ends the exchange now (drain deadline, shutdown): RST_STREAM both ways, CANCEL to the client. */
  close (): void {
    this.cancelUpstream()
    this.down.destroy(true)
  }

  private attempt (): void {
    this.timedOut = false
    const pool = this.endpoint.h2
    const session = pool?.acquire()
    if (session !== undefined) return this.openStream(session)
    if (pool === undefined) return this.failed('overloaded', false)
    // Every session full at limits.maxConnections: wait for a stream slot up to timeouts.connect, as on HTTP/1.1.
    // The client's body waits too: with no stream to write to, what came past REPLAY_MAX would be dropped, and
    // the stream, once open, would get neither those bytes nor its end (the upstream waiting out its deadline).
    const body = this.down.body
    body?.pause()
    this.stopWaiting = pool.wait((s) => {
      this.stopWaiting = undefined
      if (this.over) return
      if (s === undefined) return this.failed('overloaded', false)
      this.openStream(s)
      if (this.stream !== undefined) body?.resume()
    })
  }

  private openStream (session: H2Session): void {
    let stream: ClientHttp2Stream
    try {
      stream = session.session.request(this.requestHeaders(session), { endStream: this.bodyEnded && this.replayBytes === 0 })
    } catch {
      // The session began closing (GOAWAY) in this very turn: nothing was sent, a fresh one will take it.
      if (session.session.closed || session.session.destroyed) {
        session.retire()
        return this.failed('unprocessed', false)
      }
      // Node refuses the request itself (a header HTTP/2 cannot carry): a request the gateway cannot send.
      return this.failed('refused', false)
    }
    session.take()
    this.stream = stream
    stream.on('response', (headers, flags: number) => { if (this.stream === stream) this.onResponse(headers, (flags & NGHTTP2_FLAG_END_STREAM) !== 0) })
    stream.on('data', (chunk: Buffer) => { if (this.stream === stream) this.onData(chunk) })
    stream.on('trailers', (trailers: IncomingHttpHeaders) => { if (this.stream === stream) this.trailers = trailers })
    stream.once('end', () => {
      // A stream reset (by the gateway: a deadline, a drain) also ends its readable side: that is no complete answer.
      if (this.stream === stream && (stream.rstCode === undefined || stream.rstCode === NGHTTP2_NO_ERROR)) this.onEnd()
    })
    stream.on('error', noop)
    stream.once('close', () => {
      session.release()
      if (this.stream === stream) this.onStreamClose(stream, session)
    })
    this.armResponseTimer()
    // A resend: what the client already sent goes first.
    if (this.replay !== undefined && this.replayBytes > 0) {
      for (const chunk of this.replay) stream.write(chunk)
      if (this.bodyEnded) stream.end()
    }
  }

  private requestHeaders (session: H2Session): OutgoingHttpHeaders {
    const given = this.down.upstreamHeaders()
    const out: OutgoingHttpHeaders = {
      ':method': this.method,
      ':scheme': session.pool.origin.tls ? 'https' : 'http',
      // An empty Host (HTTP/1.1 allows one) names nothing: the target's own.
      ':authority': this.down.authority === '' || this.down.authority === undefined ? hostOf(session) : this.down.authority,
      ':path': this.path,
    }
    for (const name in given) {
      // Host travels as :authority; connection-specific fields (and h2c's upgrade settings) are forbidden on HTTP/2 (te only as `trailers`).
      if (name === 'host' || name === 'http2-settings' || (HOP_BY_HOP.has(name) && name !== 'te')) continue
      out[name] = given[name]
    }
    if (out.te !== undefined && out.te !== 'trailers') delete out.te
    if (this.baggage !== undefined) out.baggage = this.baggage
    if (this.trace?.traceparent !== undefined) out.traceparent = this.trace.traceparent
    return out
  }

  private readonly onBodyData = (chunk: Buffer): void => {
    if (this.replay !== undefined) {
      if (this.replayBytes + chunk.length <= REPLAY_MAX) {
        this.replay.push(chunk)
        this.replayBytes += chunk.length
      } else {
        this.replay = undefined
      }
    }
    const stream = this.stream
    if (stream === undefined || stream.destroyed) return
    if (!stream.write(chunk)) {
      // The upstream (or its flow-control window) is behind: the client's body waits.
      const body = this.down.body
      if (body === null) return
      body.pause()
      stream.once('drain', () => body.resume())
    }
  }

  private readonly onBodyEnd = (): void => {
    // node:http ends an aborted request's body too, and node:http2 a stream the client reset (RST_STREAM CANCEL):
    // that is no whole body, and must not reach the upstream as one (END_STREAM), the reset following too late.
    const body = this.down.body as Readable & { complete?: boolean, rstCode?: number }
    if (body.complete === false || (body.rstCode !== undefined && body.rstCode !== NGHTTP2_NO_ERROR)) return
    this.bodyEnded = true
    const stream = this.stream
    if (stream !== undefined && !stream.destroyed) {
      stream.end()
      this.armResponseTimer()
    }
  }

  /**
   * timeouts.response: from the whole request sent to the answer's head, as
   * on HTTP/1.1 (a client-streaming call may upload for longer than that).
   */
  private armResponseTimer (): void {
    const wait = this.group.timeouts.response
    if (wait <= 0 || !this.bodyEnded || this.answered || this.responseTimer !== undefined) return
    this.responseTimer = setTimeout(this.onResponseTimeout, wait)
  }

  private readonly onResponseTimeout = (): void => {
    this.responseTimer = undefined
    if (this.answered || this.over) return
    this.timedOut = true
    this.cancelUpstream()
  }

  /** `ended`: the head carried END_STREAM (no body, no trailers follow). */
  private onResponse (headers: IncomingHttpHeaders & IncomingHttpStatusHeader, ended: boolean): void {
    clearTimeout(this.responseTimer)
    this.responseTimer = undefined
    if (this.over) return this.cancelUpstream()
    const status = headers[':status'] ?? 502
    const out: OutgoingHttpHeaders = {}
    for (const name in headers) {
      if (name.charCodeAt(0) === 58 /* : */ || HOP_BY_HOP.has(name)) continue
      out[name] = headers[name]
    }
    if (this.setCookie !== undefined) {
      const cookies = out['set-cookie']
      out['set-cookie'] = cookies === undefined ? [this.setCookie] : [...(Array.isArray(cookies) ? cookies : [String(cookies)]), this.setCookie]
    }
    this.grpcAnswer = isGrpc(headers['content-type'])
    // A trailers-only answer (gRPC's error answers) carries grpc-status in its head.
    const grpcStatus = headers['grpc-status']
    if (typeof grpcStatus === 'string') {
      this.grpcStatus = grpcStatus
      // Relayed as a head then trailers (as valid in gRPC): every client side can carry that, where
      // only an HTTP/2 one could end a stream on its head, and a client reads the status from either.
      if (ended) {
        const trailers: IncomingHttpHeaders = {}
        for (const name of GRPC_STATUS_FIELDS) {
          if (out[name] === undefined) continue
          trailers[name] = out[name] as string
          delete out[name]
        }
        this.trailers = trailers
      }
    }
    this.upstreamMs = performance.now() - this.startedAt
    this.answered = true
    this.replay = undefined
    this.sent = status
    try {
      // Trailer is hop-by-hop (left out above), but says trailers follow: an HTTP/2 client's stream must wait for them.
      this.down.respond(status, out, !ended && headers.trailer !== undefined)
    } catch {
      // The client's protocol refuses what HTTP/2 carried (say, a header value node:http will not write).
      this.sent = this.down.grpc ? 200 : ERRORS.upstream_error.status
      // A gRPC client gets UNAVAILABLE under an HTTP 200: the status it was given is what counts (an error for the guard).
      this.grpcStatus = this.down.grpc ? String(grpcStatusOf('upstream_error')) : undefined
      this.bytes += this.down.fail('upstream_error', 'the upstream sent response headers that cannot be relayed')
      // A gRPC client got HTTP 200 with UNAVAILABLE: that status decides the outcome, an error like the REST 502.
      if (this.down.grpc) this.grpcStatus = String(grpcStatusOf('upstream_error'))
      this.settle(undefined)
      this.cancelUpstream()
      return
    }
    this.armBodyTimer()
  }

  private onData (chunk: Buffer): void {
    if (this.over) return
    this.bytes += chunk.length
    this.bodyTimer?.refresh()
    if (this.down.write(chunk)) return
    // The client reads more slowly than the upstream sends: stop reading the stream (its window closes upstream).
    const stream = this.stream as ClientHttp2Stream
    stream.pause()
    clearTimeout(this.bodyTimer)
    this.down.onDrain(() => {
      if (this.stream !== stream || this.over) return
      stream.resume()
      this.armBodyTimer()
    })
  }

  /** timeouts.body: the longest silence within the answer's body, while the client keeps up. */
  private armBodyTimer (): void {
    const ms = this.group.timeouts.body ?? 0
    if (ms <= 0 || this.upstreamDone) return
    if (this.bodyTimer === undefined) this.bodyTimer = setTimeout(this.onBodyTimeout, ms)
    else this.bodyTimer.refresh()
  }

  private readonly onBodyTimeout = (): void => {
    if (this.over || this.upstreamDone) return
    this.timedOut = true
    this.cancelUpstream()
  }

  private onEnd (): void {
    this.upstreamDone = true
    clearTimeout(this.bodyTimer)
    if (this.over || !this.answered) return
    let trailers = this.trailers
    const grpcStatus = trailers?.['grpc-status']
    if (typeof grpcStatus === 'string') this.grpcStatus = grpcStatus
    else if (this.grpcAnswer) {
      // A gRPC answer that ended with no status (none in trailers, nor a trailers-only head): the client would read a
      // bare end as a failure with no reason, and the guard must count it; a status in a head that did not end is no status.
      this.grpcStatus = String(GrpcStatus.INTERNAL)
      trailers = { ...trailers, 'grpc-status': this.grpcStatus, 'grpc-message': encodeGrpcMessage('the upstream ended the call without a grpc-status') }
    }
    this.settle(undefined)
    this.down.end(trailers === undefined ? undefined : outgoingTrailers(trailers))
  }

  /** The stream is over. Without an answer: a failed attempt. Mid-answer: the upstream broke it off. */
  private onStreamClose (stream: ClientHttp2Stream, session: H2Session): void {
    clearTimeout(this.responseTimer)
    clearTimeout(this.bodyTimer)
    this.responseTimer = this.bodyTimer = undefined
    if (this.over || this.upstreamDone) return
    if (this.answered) {
      this.settle(this.timedOut ? 'timeout' : 'reset')
      this.down.destroy()
      return
    }
    let kind: AttemptFailure
    if (this.timedOut) kind = 'timeout'
    else if (!session.connected) kind = 'connect'
    // REFUSED_STREAM, or a stream past the last one a GOAWAY said the peer would process: it never ran.
    else if (stream.rstCode === NGHTTP2_REFUSED_STREAM) kind = 'unprocessed'
    else kind = 'reset'
    this.failed(kind, session.used)
  }

  /**
   * A failed attempt before any answer, per the attempt policy. A request
   * that cannot have reached the application (no connection, a refused or
   * GOAWAY'd stream) is sent again when its body was kept, whatever its
   * method; anything else only as the policy allows (idempotent, no body).
   */
  private failed (kind: AttemptFailure, reused: boolean): void {
    if (this.over) return
    const unprocessed = kind === 'unprocessed' || kind === 'connect'
    const replayable = this.replay !== undefined
    let verdict: AttemptVerdict
    if (kind === 'unprocessed') {
      // Not the target failing (as the keep-alive race is not): a resend, on it if nothing else is healthy.
      verdict = judgeAttempt('reset', false, true, replayable ? 'GET' : this.method, !replayable, this.retries)
    } else if (unprocessed && replayable) {
      verdict = judgeAttempt(kind, false, reused, 'GET', false, this.retries)
    } else {
      verdict = judgeAttempt(kind, false, reused, this.method, this.down.body !== null, this.retries)
    }
    const failed = this.endpoint
    const next = nextAttempt(verdict, failed, this.group)
    if (next !== undefined) {
      this.retries++
      this.endpoint = next
      this.stream = undefined
      // The failed stream may have held the client's body back: the new one takes it from here.
      const body = this.down.body
      if (body !== null && body.isPaused()) body.resume()
      this.attempt()
      return
    }
    this.answerError(verdict.code, verdict.countsForGuard)
  }

  /** The gateway answers in the upstream's place; `isError`: an error for the guard. */
  private answerError (code: ErrorCode, isError: boolean): void {
    this.cancelUpstream()
    this.stats.record(isError)
    this.sent = this.down.grpc ? 200 : ERRORS[code].status
    this.bytes += this.down.fail(code)
  }

  /** Records the outcome of an exchange that got the upstream's head, once. */
  private settle (failure: Parameters<typeof recordOutcome>[3]): void {
    if (this.settled) return
    this.settled = true
    recordOutcome(this.stats, this.endpoint.target, this.sent, failure, this.grpcStatus)
  }

  /**
   * Resets the upstream stream. While the request body is still open, node's
   * close(CANCEL) would first end it (an empty DATA frame with END_STREAM),
   * and the upstream would take a cut-off body for a whole one: destroying the
   * stream sends RST_STREAM alone (INTERNAL_ERROR, the one code node allows there).
   */
  private cancelUpstream (): void {
    const stream = this.stream
    if (stream === undefined || stream.closed || stream.destroyed) return
    if (stream.writableEnded) stream.close(NGHTTP2_CANCEL)
    else stream.destroy(new Error('the exchange ended before its request body did'))
  }

  /** The client side is over: settle counters once; an upstream stream still open is reset. */
  private readonly onClientClose = (): void => {
    if (this.over) return
    this.over = true
    this.stopWaiting?.()
    clearTimeout(this.responseTimer)
    clearTimeout(this.bodyTimer)
    // A client that went away mid-answer: the status (and grpc-status, if it came) decides.
    if (this.answered) this.settle(undefined)
    this.durationMs = performance.now() - this.startedAt
    this.stats.end(this, this)
    this.endpoint.target.inflight--
    const body = this.down.body
    if (body !== null) {
      body.off('data', this.onBodyData)
      body.off('end', this.onBodyEnd)
    }
    if (!this.upstreamDone) this.cancelUpstream()
    // Answered whole while the request body was still open (an upstream may answer early): that side is not wanted now.
    else if (this.stream !== undefined && !this.stream.closed) this.stream.close(NGHTTP2_CANCEL)
  }
}

/** The target's host:port, when the client named none. */
function hostOf (session: H2Session): string {
  const { host, port } = session.pool.origin
  return `${host.includes(':') ? `[${host}]` : host}:${port}`
}

/** Trailer fields for the client: no pseudo-headers, none a client must not get after a body. */
function outgoingTrailers (trailers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  for (const name in trailers) {
    if (name.charCodeAt(0) === 58 || FORBIDDEN_TRAILERS.has(name)) continue
    out[name] = trailers[name]
  }
  return out
}

function noop (): void {}
