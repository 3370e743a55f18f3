// One HTTP/2 stream forwarded to an HTTP/1.1 upstream on undici's dispatcher:
// the node engine's Exchange (forward.ts) with an HTTP/2 stream for the client
// side. The decisions (attempts, outcome, header passes) are the shared ones.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2'
import { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { ErrorCode } from '../../errors.js'
import type { ColorStats, Finished, OpenExchange, RequestTrace } from '../../upstream/color-stats.js'
import type { Endpoint } from '../../upstream/target-set.js'
import { failureKindOf, judgeAttempt, metricOf } from '../attempt.js'
import { headerPairs, markSaturated, retryAfter, saturated, upstreamHeadSize } from '../forward.js'
import { grpcStatusOf, isGrpc } from '../grpc.js'
import { downstreamResponseHeaders, responseTrailers, withPropagation } from '../headers.js'
import { MAX_HEAD, MAX_INFORMATIONAL } from '../limits.js'
import { recordOutcome } from '../outcome.js'
import { finishTap, type AnswerTap, type Resolution, type UpstreamGroup } from '../resolve.js'
import { fieldsObject, type StreamDownstream } from './stream-downstream.js'

/**
 * The client's request body as a Readable of undici's own. undici destroys
 * the body it was given once the request is written (or fails); given the
 * HTTP/2 stream itself, that would reset the stream before the answer.
 */
class BodyReader extends Readable {
  private readonly src: Readable
  /** Shown each chunk as it is handed to undici (shadow traffic); undefined on every other request. */
  tap: AnswerTap | undefined

  constructor (src: Readable, tap: AnswerTap | undefined) {
    super()
    this.src = src
    this.tap = tap
    src.on('data', this.onData)
    src.once('end', this.onEnd)
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.tap !== undefined) this.tap.requestBody(chunk, false)
    // undici reads more slowly than the client sends: the stream stops reading, and HTTP/2 flow control holds the client.
    if (!this.push(chunk)) this.src.pause()
  }

  private readonly onEnd = (): void => {
    // node:http2 ends the readable side of a stream the client reset, too: that body is cut, not whole (no last chunk).
    const code = (this.src as Readable & { rstCode?: number }).rstCode
    if (code !== undefined && code !== 0) this.destroy(new Error('the client reset its request body'))
    else {
      // The stream tells the end apart from the last chunk: an empty last chunk marks it.
      if (this.tap !== undefined) this.tap.requestBody(Buffer.alloc(0), true)
      this.push(null)
    }
  }

  override _read (): void {
    this.src.resume()
  }

  override _destroy (err: Error | null, cb: (err: Error | null) => void): void {
    this.src.off('data', this.onData)
    this.src.off('end', this.onEnd)
    cb(err)
  }
}

/**
 * One HTTP/2 stream's trip to an HTTP/1.1 upstream; the undici handler
 * itself, as Exchange is. Its outcome is settled once, when it ends (see
 * Exchange): a complete answer by its status, one the upstream broke after
 * its head as an upstream error, one the client reset by its status.
 */
export class H2Exchange implements Dispatcher.DispatchHandler, Finished, OpenExchange {
  readonly requestId: string
  prevOpen: OpenExchange | undefined = undefined
  nextOpen: OpenExchange | undefined = undefined
  /** Response body bytes sent to the client. */
  bytes = 0
  durationMs = 0
  upstreamMs = -1
  private readonly startedAt = performance.now()
  private readonly down: StreamDownstream
  /** The color's targets (where a retry may go) and counters. */
  private readonly group: UpstreamGroup
  private readonly stats: ColorStats
  private readonly setCookie: string | undefined
  /** Longest wait for a connection when all of the target's are busy, ms (timeouts.connect). */
  private readonly waitMs: number
  /** Longest silence within the upstream's response body, ms (timeouts.body; 0: none). */
  private readonly upstreamBodyMs: number
  private readonly headers: string[]
  private body: Readable | null = null
  private attempt: Dispatcher.DispatchOptions | undefined
  private endpoint: Endpoint
  private controller: Dispatcher.DispatchController | undefined
  private waitTimer: NodeJS.Timeout | undefined
  private retries = 0
  /** The client side is over (the stream closed). */
  private closed = false
  /** The answer is complete, or the gateway answered in the upstream's place. */
  private ended = false
  /** The upstream's response head went to the client: the outcome waits for the end. */
  private answered = false
  private informational = 0
  private settled = false
  /** Body bytes the answer's Content-Length says are still to come; -1 when it has none. */
  private remaining = -1
  /** Shown the request and the answer as relayed (shadow traffic); undefined on every other request: one check per event. */
  private shadow: AnswerTap | undefined
  /** The request's span (tracing on), recorded when it ends (ColorStats.end); undefined with tracing off. */
  readonly trace: RequestTrace | undefined

  constructor (down: StreamDownstream, to: Resolution) {
    this.down = down
    this.endpoint = to.endpoint
    this.group = to.group
    this.stats = to.group.stats
    this.waitMs = to.group.timeouts.connect
    this.upstreamBodyMs = to.group.timeouts.body ?? 0
    this.setCookie = to.setCookie
    this.shadow = to.shadow
    this.requestId = down.requestId
    this.trace = to.trace
    this.headers = withPropagation(down.upstreamLines(), to.baggage, to.trace?.traceparent)
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
    if (upstreamHeadSize(this.down.method, this.down.path, this.headers) > MAX_HEAD) {
      this.down.fail('header_too_large', `request head larger than ${MAX_HEAD} bytes once forwarding headers are added`)
      this.endTap(false)
      return
    }
    if (this.shadow !== undefined) this.shadow.request(this.down.method, this.down.path, this.headers)
    if (this.down.body !== null) this.body = new BodyReader(this.down.body, this.shadow)
    this.stats.begin(this)
    this.endpoint.target.inflight++
    this.down.onClose(this.onClientClose)
    this.dispatch()
  }

  private dispatch (via?: Dispatcher): void {
    const pool = via ?? this.endpoint.dispatcher
    const queued = saturated.has(pool)
    // A new object per attempt: it names the attempt's connection afterwards (connectionOf).
    this.attempt = {
      path: this.down.path,
      method: this.down.method,
      headers: this.headers,
      body: this.body,
      bodyTimeout: this.upstreamBodyMs,
    }
    if (!pool.dispatch(this.attempt, this)) markSaturated(pool)
    if (queued && this.waitMs > 0 && this.controller === undefined && this.waitTimer === undefined) {
      this.waitTimer = setTimeout(this.onOverloaded, this.waitMs)
    }
  }

  /** Waited timeouts.connect in undici's queue: the attempt policy's `overloaded`. */
  private readonly onOverloaded = (): void => {
    this.waitTimer = undefined
    if (this.controller !== undefined || this.closed || this.down.headersSent) return
    this.answerError(judgeAttempt('overloaded', false, false, this.down.method, this.body !== null, this.retries).code, true)
  }

  /** `grpcStatus`: the one a gRPC client was answered with, when the gateway answered it. */
  private settle (failure: Parameters<typeof recordOutcome>[3], grpcStatus?: string): void {
    if (this.settled) return
    this.settled = true
    recordOutcome(this.stats, this.endpoint.target, this.down.status, failure, grpcStatus)
  }

  /** The tap hears how the exchange ended, once: `whole`, the answer went to the client complete. */
  private endTap (whole: boolean): void {
    if (this.body !== null) (this.body as BodyReader).tap = undefined
    this.shadow = finishTap(this.shadow, whole)
  }

  private abortUpstream (): void {
    const c = this.controller
    if (c !== undefined && !c.aborted) c.abort(new Error('the gateway ended this exchange'))
  }

  /** The gateway answers in the upstream's place; `isError`: an error for the guard. */
  private answerError (code: ErrorCode, isError: boolean): void {
    this.ended = true
    this.stats.record(isError)
    this.bytes += this.down.fail(code)
  }

  /** The stream closed: answered, reset by the client, or cut. Counters settle once; an unfinished upstream request stops. */
  private readonly onClientClose = (): void => {
    this.closed = true
    clearTimeout(this.waitTimer)
    if (this.answered) this.settle(undefined)
    this.durationMs = performance.now() - this.startedAt
    this.stats.end(this, this)
    this.endpoint.target.inflight--
    // Any ending but onResponseEnd's (which ended the tap already).
    if (this.shadow !== undefined) this.endTap(false)
    if (!this.ended) this.abortUpstream()
  }

  /** Ends the exchange now (drain deadline, shutdown): RST_STREAM CANCEL, the upstream aborted. */
  close (): void {
    this.down.destroy(true)
    this.abortUpstream()
  }

  private readonly onDrain = (): void => {
    this.controller?.resume()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.waitTimer !== undefined) {
      clearTimeout(this.waitTimer)
      this.waitTimer = undefined
    }
    // Gone, or already answered by the gateway (overloaded, body deadline): the request must not leave.
    if (this.closed || this.ended || this.down.headersSent) this.abortUpstream()
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (this.closed || this.ended || this.down.headersSent) {
      this.abortUpstream()
      return
    }
    if (statusCode < 200) {
      if (++this.informational > MAX_INFORMATIONAL) {
        this.onResponseError(controller, Object.assign(new Error('too many informational answers'), { code: 'UND_ERR_INFO_FLOOD' }))
        this.abortUpstream()
        return
      }
      // 103 Early Hints go on; a 100 was the gateway's to send (continueBody), not the upstream's.
      if (statusCode === 103) {
        try {
          this.down.inform(103, fieldsObject(downstreamResponseHeaders(headerPairs(controller.rawHeaders, headers))))
        } catch {}
      }
      return
    }
    this.upstreamMs = performance.now() - this.startedAt
    const length = headers['content-length']
    if (typeof length === 'string') this.remaining = Number(length)
    try {
      const fields = downstreamResponseHeaders(headerPairs(controller.rawHeaders, headers))
      // The upstream's fields as relayed, without the gateway's sticky cookie; DATA carries the body decoded.
      if (this.shadow !== undefined) this.shadow.head(statusCode, fields, false)
      const out = fieldsObject(fields)
      if (this.setCookie !== undefined) fieldsObject(['set-cookie', this.setCookie], out)
      // Trailers come only after an announcement (Trailer) or on gRPC: only then does the stream wait for them.
      this.down.respondWith(statusCode, out, headers.trailer !== undefined || isGrpc(headers['content-type']))
    } catch {
      // node:http2 refuses what undici's parser accepted (say, two Content-Type lines).
      this.bytes += this.down.fail('upstream_error', 'the upstream sent response headers that cannot be relayed')
      this.ended = true
      // A gRPC client got HTTP 200 with UNAVAILABLE: the status says what it was, an error like the REST 502.
      this.settle(undefined, this.down.grpc ? String(grpcStatusOf('upstream_error')) : undefined)
      this.abortUpstream()
      return
    }
    this.answered = true
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.closed) return
    this.bytes += chunk.length
    if (this.shadow !== undefined) this.shadow.body(chunk)
    // The last bytes of a sized answer end the stream in the same frame (no empty DATA frame after them).
    if (this.remaining >= 0 && (this.remaining -= chunk.length) === 0) return this.down.endWith(chunk)
    if (this.down.write(chunk)) return
    // The client (or its flow-control window) is behind: undici stops reading until it catches up.
    controller.pause()
    this.down.onDrain(this.onDrain)
  }

  onResponseEnd (controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    if (this.closed) return
    const relayed = responseTrailers(headerPairs(controller.rawTrailers, trailers))
    let out: OutgoingHttpHeaders | undefined
    if (relayed.length > 0) {
      out = {}
      for (const [name, value] of relayed) fieldsObject([name, value], out)
    }
    this.ended = true
    this.down.end(out)
    if (this.shadow !== undefined) this.endTap(true)
    this.settle(undefined)
  }

  onResponseError (_controller: Dispatcher.DispatchController | undefined, err: Error & { code?: string }): void {
    if (this.closed) return
    if (this.answered) {
      // Mid-body failure: an upstream error, and the client must see a reset stream, not a clean end.
      this.settle(metricOf(failureKindOf(err)) ?? 'reset')
      this.down.destroy()
      return
    }
    if (this.ended || this.down.headersSent) return
    const r = retryAfter(err, this.down.method, this.body !== null, this.retries, this.endpoint, this.group, this.attempt)
    if (r.next !== undefined) {
      this.retries++
      this.endpoint = r.next
      this.controller = undefined
      this.dispatch(r.via)
      return
    }
    this.answerError(r.verdict.code, r.verdict.countsForGuard)
  }
}
