// The node engine's forwarding of one request to one upstream endpoint, on
// undici's dispatcher and its current handler interface: raw header arrays,
// bodies streamed both ways with backpressure, trailers relayed.

import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { writeError, type ErrorCode } from '../errors.js'
import type { ColorStats, Finished, OpenExchange, RequestTrace } from '../upstream/color-stats.js'
import { connectionOf } from '../upstream/registry.js'
import type { Endpoint } from '../upstream/target-set.js'
import { failureKindOf, judgeAttempt, metricOf, nextAttempt, type AttemptVerdict } from './attempt.js'
import { connectionNames, countHeader, downstreamResponseHeaders, listValue, PIN_HEADER, responseTrailers, upstreamRequestHeaders, withPropagation } from './headers.js'
import { MAX_HEAD, MAX_INFORMATIONAL } from './limits.js'
import { recordOutcome } from './outcome.js'
import { newRequestId } from './request-id.js'
import { clientAddress, finishTap, type AnswerTap, type RequestFacts, type Resolution, type UpstreamGroup } from './resolve.js'
import type { Forwarding } from './trust.js'

/** The client's X-Request-Id, or a new one (added to the upstream request). */
export function requestIdFor (req: IncomingMessage, headers: string[] | undefined): string {
  const given = req.headers['x-request-id']
  if (typeof given === 'string' && given !== '') return given
  const id = newRequestId()
  headers?.push('x-request-id', id)
  return id
}

/**
 * A node:http request as the resolve step reads it (the Connection names and
 * the client address are only worked out when asked for).
 */
export class NodeRequestFacts implements RequestFacts {
  readonly target: string
  readonly host: string | undefined
  readonly smoke: string | undefined
  readonly cookie: string | undefined
  private readonly req: IncomingMessage
  private readonly forwarding: Forwarding

  /** `forwarding`: the listener's, for whose word a trusted proxy's X-Forwarded-For is taken. */
  constructor (req: IncomingMessage, forwarding: Forwarding) {
    this.req = req
    this.forwarding = forwarding
    this.target = req.url as string
    this.host = req.headers.host
    const smoke = req.headers[PIN_HEADER]
    this.smoke = typeof smoke === 'string' ? smoke : undefined
    this.cookie = req.headers.cookie
  }

  get method (): string {
    return this.req.method as string
  }

  get connectionNames (): readonly string[] | undefined {
    return connectionNames(this.req.rawHeaders)
  }

  get baggage (): string | undefined {
    return listValue(this.req.headers.baggage)
  }

  get peer (): string {
    return this.req.socket.remoteAddress ?? ''
  }

  clientAddress (): string {
    const peer = this.peer
    const xff = this.req.headers['x-forwarded-for']
    return clientAddress(peer, this.forwarding.trusts(peer), typeof xff === 'string' ? xff : undefined)
  }

  /** node:http joins a repeated header's lines into one value: the line count tells them apart from one line. */
  header (lowerName: string): string | undefined {
    const v = this.req.headers[lowerName]
    return typeof v === 'string' && countHeader(this.req.rawHeaders, lowerName) === 1 ? v : undefined
  }

  headerLines (lowerName: string): number {
    return countHeader(this.req.rawHeaders, lowerName)
  }
}

/**
 * undici pools whose every connection is busy (a dispatch said so; their
 * 'drain' clears it): a request dispatched to one now waits in its queue.
 */
export const saturated = new WeakSet<Dispatcher>()

export function markSaturated (pool: Dispatcher): void {
  if (saturated.has(pool)) return
  saturated.add(pool)
  pool.once('drain', () => saturated.delete(pool))
}

function hasBody (req: IncomingMessage): boolean {
  const len = req.headers['content-length']
  return (len !== undefined && len !== '0') || req.headers['transfer-encoding'] !== undefined
}

/**
 * The size of the head undici will send for these headers: request line,
 * header lines, the final CRLF, and room for what undici adds itself
 * (connection, content-length or transfer-encoding).
 */
export function upstreamHeadSize (method: string, path: string, headers: readonly string[]): number {
  let n = method.length + path.length + 14 + 64
  for (let i = 0; i < headers.length; i++) n += headers[i].length + 2
  return n
}

/**
 * Header lines as undici hands them: the raw array its controller carries
 * (names as sent, order and repeats kept), else the parsed object.
 */
export function headerPairs (raw: Dispatcher.DispatchController['rawHeaders'], parsed: IncomingHttpHeaders): Array<Buffer | string> {
  if (Array.isArray(raw)) return raw
  const out: string[] = []
  for (const [name, value] of Object.entries(raw ?? parsed)) {
    if (Array.isArray(value)) for (const v of value) out.push(name, v)
    else if (value !== undefined) out.push(name, String(value))
  }
  return out
}

/** Client-side deadlines of one exchange, ms (0: none). */
export interface ClientDeadlines {
  /** Longest silence between two reads of the request body (client.bodyTimeout). */
  body: number
  /** Longest time the client may take none of its answer (client.idleTimeout). */
  stall: number
}

/**
 * One request's trip upstream. It is the undici handler itself, on undici's
 * current interface (onRequestStart, onResponseStart, onResponseData,
 * onResponseEnd, onResponseError).
 *
 * Its outcome is settled once, when it ends: a complete answer by its status,
 * an answer the upstream broke after its head as an upstream error, one the
 * client walked away from by its status. A failure before any answer goes to
 * the attempt policy (proxy/attempt.ts), the same one the fast engine uses.
 */
export class Exchange implements Dispatcher.DispatchHandler, Finished, OpenExchange {
  readonly requestId: string
  prevOpen: OpenExchange | undefined = undefined
  nextOpen: OpenExchange | undefined = undefined
  /** Response body bytes sent to the client. */
  bytes = 0
  durationMs = 0
  upstreamMs = -1
  private readonly startedAt = performance.now()
  private readonly req: IncomingMessage
  private readonly res: ServerResponse
  /** The color's targets (where a retry may go) and counters. */
  private readonly group: UpstreamGroup
  private readonly stats: ColorStats
  private readonly headers: string[]
  private readonly body: IncomingMessage | null
  /** A Set-Cookie the gateway adds to the response (sticky sessions). */
  private readonly setCookie: string | undefined
  /** Longest wait for a connection when all of the target's are busy, ms (timeouts.connect). */
  private readonly waitMs: number
  /** Longest silence within the upstream's response body, ms (timeouts.body; 0: none). */
  private readonly upstreamBodyMs: number
  /** The current attempt's dispatch options. */
  private attempt: Dispatcher.DispatchOptions | undefined
  /** Longest silence between two reads of the request body, ms (0: none). */
  private bodyTimeout = 0
  private bodyTimer: NodeJS.Timeout | undefined
  private waitTimer: NodeJS.Timeout | undefined
  /** Longest wait for the client to take some of the answer, ms (client.idleTimeout; 0: none). */
  private stallMs = 0
  private stallTimer: NodeJS.Timeout | undefined
  /** undici paused the body (upstream backpressure): silence is not the client's. */
  private bodyHeld = false
  private endpoint: Endpoint
  /** The current attempt's handle on undici (abort, pause, resume); set when a connection takes it. */
  private controller: Dispatcher.DispatchController | undefined
  private retries = 0
  private closed = false
  /** The upstream's response head went to the client: the outcome waits for the end. */
  private answered = false
  /** 1xx answers seen. */
  private informational = 0
  /** The outcome was recorded (exactly once per answered exchange). */
  private settled = false
  /** Shown the request and the answer as relayed (shadow traffic); undefined on every other request: one check per event. */
  private shadow: AnswerTap | undefined
  /** The request's span (tracing on), recorded when it ends (ColorStats.end); undefined with tracing off. */
  readonly trace: RequestTrace | undefined
  /** The tap's listeners on the request body, made only for a tapped request with a body. */
  private tapData: ((chunk: Buffer) => void) | undefined = undefined

  constructor (req: IncomingMessage, res: ServerResponse, to: Resolution, forwarding: Forwarding) {
    this.req = req
    this.res = res
    this.endpoint = to.endpoint
    this.group = to.group
    this.stats = to.group.stats
    this.waitMs = to.group.timeouts.connect
    this.upstreamBodyMs = to.group.timeouts.body ?? 0
    this.setCookie = to.setCookie
    this.shadow = to.shadow
    this.trace = to.trace
    this.headers = withPropagation(upstreamRequestHeaders(req, forwarding), to.baggage, to.trace?.traceparent)
    this.requestId = requestIdFor(req, this.headers)
    this.body = hasBody(req) ? req : null
  }

  /** Sends the request on its way, under the client's deadlines. */
  start (client: ClientDeadlines): void {
    this.bodyTimeout = client.body
    this.stallMs = client.stall
    // What the upstream would refuse for its size (X-Forwarded-* and the request id added) is refused here.
    if (upstreamHeadSize(this.req.method as string, this.req.url as string, this.headers) > MAX_HEAD) {
      writeError(this.res, 'header_too_large', `request head larger than ${MAX_HEAD} bytes once forwarding headers are added`, true)
      this.shadow = finishTap(this.shadow, false)
      return
    }
    if (this.shadow !== undefined) this.shadow.request(this.req.method as string, this.req.url as string, this.headers)
    this.stats.begin(this)
    this.endpoint.target.inflight++
    this.res.once('close', this.onClientClose)
    this.dispatch()
  }

  /** Sends this attempt through the target's pool, or on `via`, one connection of it. */
  private dispatch (via?: Dispatcher): void {
    const req = this.req
    const pool = via ?? this.endpoint.dispatcher
    const queued = saturated.has(pool)
    // A new object per attempt: it names the attempt's connection afterwards (connectionOf).
    this.attempt = {
      path: req.url as string,
      method: req.method as Dispatcher.HttpMethod,
      headers: this.headers,
      body: this.body,
      // Set here, not left to undici's default (300 s): a quiet stream is cut only when timeouts.body says so.
      bodyTimeout: this.upstreamBodyMs,
    }
    if (!pool.dispatch(this.attempt, this)) markSaturated(pool)
    // Every connection busy: it waits its turn up to timeouts.connect, as on the fast engine (README, limits.maxConnections).
    if (queued && this.waitMs > 0 && this.controller === undefined && this.waitTimer === undefined) {
      this.waitTimer = setTimeout(this.onOverloaded, this.waitMs)
    }
  }

  /** Waited timeouts.connect in undici's queue: the attempt policy's `overloaded` (the color cannot serve; the target is busy, not broken). */
  private readonly onOverloaded = (): void => {
    this.waitTimer = undefined
    if (this.controller !== undefined || this.closed || this.res.headersSent) return
    // undici gives the request a connection later: onRequestStart then aborts it (the answer is already out).
    this.answerError(judgeAttempt('overloaded', false, false, this.method, this.body !== null, this.retries).code, true, this.body !== null)
  }

  get method (): string {
    return this.req.method as string
  }

  get path (): string {
    return this.req.url as string
  }

  get status (): number {
    return this.res.headersSent ? this.res.statusCode : 0
  }

  get target (): string {
    return this.endpoint.target.url
  }

  /**
   * The tap sees the request body as undici reads it: listening to 'data'
   * alongside undici's own listener, added in the same tick, neither starts
   * nor holds the flow (undici's pause and resume still decide it).
   */
  private tapBody (body: IncomingMessage): void {
    this.tapData = (chunk: Buffer): void => this.shadow?.requestBody(chunk, false)
    body.on('data', this.tapData)
    // node:http tells the end apart from the last chunk: an empty last chunk marks it.
    body.once('end', () => this.shadow?.requestBody(Buffer.alloc(0), true))
  }

  /** Records the outcome of an exchange that got the upstream's head, once. */
  private settle (failure: Parameters<typeof recordOutcome>[3]): void {
    if (this.settled) return
    this.settled = true
    recordOutcome(this.stats, this.endpoint.target, this.res.statusCode, failure)
  }

  /** Stops the current attempt upstream (undici then reports it to onResponseError, which finds the exchange over). */
  private abortUpstream (): void {
    const c = this.controller
    if (c !== undefined && !c.aborted) c.abort(new Error('the gateway ended this exchange'))
  }

  /** The gateway answers in the upstream's place; `isError`: an error for the guard. */
  private answerError (code: ErrorCode, isError: boolean, close = false): void {
    this.stats.record(isError)
    this.bytes += writeError(this.res, code, undefined, close)
  }

  /** The response is done or the client went away: settle counters once, stop the upstream. */
  private readonly onClientClose = (): void => {
    this.closed = true
    this.stopBodyTimer()
    clearTimeout(this.waitTimer)
    clearTimeout(this.stallTimer)
    // A client that went away mid-answer: the status decides (a no-op when the end was already settled).
    if (this.answered) this.settle(undefined)
    this.durationMs = performance.now() - this.startedAt
    this.stats.end(this, this)
    this.endpoint.target.inflight--
    // Any ending but onResponseEnd's (which ended the tap already).
    if (this.shadow !== undefined) this.shadow = finishTap(this.shadow, false)
    if (!this.res.writableFinished) this.abortUpstream()
  }

  /** Ends the exchange now (drain deadline, shutdown): a long stream is cut, the upstream aborted. */
  close (): void {
    this.res.destroy()
    this.abortUpstream()
  }

  private readonly onDrain = (): void => {
    clearTimeout(this.stallTimer)
    this.stallTimer = undefined
    this.controller?.resume()
  }

  /** The client took none of its answer for client.idleTimeout: cut, or it holds the upstream connection forever. */
  private readonly onStalled = (): void => {
    this.stallTimer = undefined
    if (!this.closed) this.res.destroy()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.waitTimer !== undefined) {
      clearTimeout(this.waitTimer)
      this.waitTimer = undefined
    }
    // Gone, or already answered by the gateway (overloaded, body deadline): the request must not leave.
    if (this.closed || this.res.writableEnded) {
      this.abortUpstream()
      return
    }
    // undici starts reading the body right after this, in the same tick: the listeners see every chunk.
    // A body the client has sent whole cannot go quiet on its side.
    if (this.body !== null && this.bodyTimeout > 0 && this.bodyTimer === undefined && !this.body.complete) this.watchBody(this.body)
    if (this.shadow !== undefined && this.body !== null && this.tapData === undefined) this.tapBody(this.body)
  }

  /**
   * The client's body deadline: armed while the gateway waits for body bytes,
   * refreshed by each read; while undici holds the body back (the upstream
   * is slow, not the client) an expiry only re-arms it.
   */
  private watchBody (body: IncomingMessage): void {
    this.bodyTimer = setTimeout(this.onBodyTimeout, this.bodyTimeout)
    body.on('data', this.onBodyRead)
    body.on('pause', this.onBodyPause)
    body.on('resume', this.onBodyResume)
    body.once('end', this.stopBodyTimer)
  }

  private readonly onBodyRead = (): void => {
    this.bodyTimer?.refresh()
  }

  private readonly onBodyPause = (): void => {
    this.bodyHeld = true
  }

  private readonly onBodyResume = (): void => {
    this.bodyHeld = false
    this.bodyTimer?.refresh()
  }

  private readonly stopBodyTimer = (): void => {
    if (this.bodyTimer === undefined) return
    clearTimeout(this.bodyTimer)
    this.bodyTimer = undefined
    const body = this.body as IncomingMessage
    body.off('data', this.onBodyRead)
    body.off('pause', this.onBodyPause)
    body.off('resume', this.onBodyResume)
    body.off('end', this.stopBodyTimer)
  }

  /** The client went quiet mid-body: 408 if nothing was answered yet, else cut; the upstream request ends either way. */
  private readonly onBodyTimeout = (): void => {
    if (this.bodyHeld) {
      this.bodyTimer?.refresh()
      return
    }
    this.stopBodyTimer()
    if (this.closed) return
    if (this.res.headersSent) {
      if (this.answered) this.settle(undefined)
      this.res.destroy()
      this.abortUpstream()
      return
    }
    this.bytes += writeError(this.res, 'request_timeout', `no request body bytes for ${this.bodyTimeout}ms`, true)
    // Aborting destroys the request body, and with it the client socket: only once the 408 is out.
    this.res.once('finish', this.onTimeoutSent)
  }

  private readonly onTimeoutSent = (): void => {
    this.abortUpstream()
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    if (this.closed || this.res.writableEnded) {
      this.abortUpstream()
      return
    }
    if (statusCode < 200) {
      // A flood of 1xx would be relayed without end (memory grows if the client does not read): past a few, the upstream is broken.
      if (++this.informational > MAX_INFORMATIONAL) {
        this.onResponseError(controller, Object.assign(new Error('too many informational answers'), { code: 'UND_ERR_INFO_FLOOD' }))
        this.abortUpstream()
        return
      }
      // Informational: 103 Early Hints go on to the client; the final answer is still to come.
      if (statusCode === 103) this.earlyHints(headerPairs(controller.rawHeaders, headers))
      return
    }
    this.upstreamMs = performance.now() - this.startedAt
    try {
      const out = downstreamResponseHeaders(headerPairs(controller.rawHeaders, headers))
      // The upstream's fields as relayed, without the gateway's sticky cookie (a copy: the list grows below).
      if (this.shadow !== undefined) this.shadow.head(statusCode, this.setCookie === undefined ? out : out.slice(), false)
      if (this.setCookie !== undefined) out.push('set-cookie', this.setCookie)
      this.res.writeHead(statusCode, statusMessage ?? '', out)
    } catch {
      // Node refuses what undici's parser accepted (say, a header value it deems invalid).
      this.bytes += writeError(this.res, 'upstream_error', 'the upstream sent response headers that cannot be relayed')
      this.settle(undefined)
      this.abortUpstream()
      return
    }
    // The outcome is known at the end: onResponseEnd, onResponseError or the client's close.
    this.answered = true
  }

  /**
   * Relays a 103 with its header fields (less hop-by-hop ones), as the fast
   * engine does. node:http writes a 103 only when it carries Link, and throws
   * on Link values it will not write: hints are advisory, so such a 103 is
   * dropped, never the exchange.
   */
  private earlyHints (pairs: ReadonlyArray<Buffer | string>): void {
    const fields = downstreamResponseHeaders(pairs)
    const hints: Record<string, string | string[]> = {}
    const links: string[] = []
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i].toLowerCase()
      if (name === 'link') links.push(fields[i + 1])
      else hints[name] = hints[name] === undefined ? fields[i + 1] : `${hints[name] as string}, ${fields[i + 1]}`
    }
    if (links.length === 0) return
    hints.link = links
    try {
      this.res.writeEarlyHints(hints)
    } catch {}
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.closed) return
    this.bytes += chunk.length
    if (this.shadow !== undefined) this.shadow.body(chunk)
    if (this.res.write(chunk)) return
    // The client reads more slowly than the upstream sends: undici stops reading until it catches up.
    controller.pause()
    this.res.once('drain', this.onDrain)
    if (this.stallMs > 0 && this.stallTimer === undefined) this.stallTimer = setTimeout(this.onStalled, this.stallMs)
  }

  onResponseEnd (controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    if (this.closed) return
    // Trailers go on when the client's response is chunked (node:http drops them otherwise, as HTTP/1.0 has none).
    const relayed = responseTrailers(headerPairs(controller.rawTrailers, trailers))
    if (relayed.length > 0) {
      try {
        this.res.addTrailers(relayed)
      } catch {}
    }
    this.res.end()
    if (this.shadow !== undefined) this.shadow = finishTap(this.shadow, true)
    this.settle(undefined)
  }

  onResponseError (_controller: Dispatcher.DispatchController | undefined, err: Error & { code?: string }): void {
    if (this.closed) return
    if (this.answered) {
      // Mid-body failure: an upstream error, and the client must see a truncated response, not a clean end.
      this.settle(metricOf(failureKindOf(err)) ?? 'reset')
      if (!this.res.destroyed) this.res.destroy(err)
      return
    }
    if (this.res.writableEnded || this.res.destroyed) return
    const r = retryAfter(err, this.method, this.body !== null, this.retries, this.endpoint, this.group, this.attempt)
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

/** What the attempt policy makes of an undici attempt that failed before any answer. */
export interface AfterFailure {
  readonly verdict: AttemptVerdict
  /** Where the retry goes (its in-flight count already moved there); undefined: answer `verdict.code`. */
  readonly next: Endpoint | undefined
  /** The connection to retry on, when the retry goes back to the same target after a reset. */
  readonly via: Dispatcher | undefined
}

/**
 * An undici attempt failed before any answer (every client protocol's
 * undici handler asks here): the attempt policy's verdict, acted on. `attempt`:
 * the failed attempt's dispatch options (they name its connection).
 */
export function retryAfter (err: Error & { code?: string }, method: string, hasBody: boolean, retries: number, failed: Endpoint, group: UpstreamGroup, attempt: Dispatcher.DispatchOptions | undefined): AfterFailure {
  const kind = failureKindOf(err)
  // A reused connection the upstream closed as it was reused (the keep-alive race) is not the target failing.
  const verdict = judgeAttempt(kind, false, kind === 'reset' && servedBefore(err), method, hasBody, retries)
  const next = nextAttempt(verdict, failed, group)
  // Back on the same target after a reset: on the connection that failed, which now connects afresh
  // (the pool's other idle connections were likely closed at the same moment), as on the fast engine.
  const via = next !== undefined && kind === 'reset' && next === failed && attempt !== undefined ? connectionOf(attempt) : undefined
  return { verdict, next, via }
}

/**
 * The connection of an undici socket error had read bytes before (no answer
 * to this request had begun): it served earlier exchanges. A bare ECONNRESET
 * carries no counts and is taken as a fresh connection's failure.
 */
function servedBefore (err: Error & { socket?: { bytesRead?: number } }): boolean {
  return (err.socket?.bytesRead ?? 0) > 0
}
