// HTTP forwarding of one request to one upstream endpoint on undici's
// dispatcher: raw header arrays, bodies streamed both ways with backpressure.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { ERRORS, errorBody, type ErrorCode } from '../errors.js'
import type { Finished, OpenExchange, UpstreamErrorKind } from '../upstream/color-stats.js'
import type { Endpoint } from '../upstream/target-set.js'
import { downstreamResponseHeaders, upstreamRequestHeaders } from './headers.js'
import { MAX_HEAD, MAX_INFORMATIONAL } from './limits.js'
import { keepAliveRace, recordOutcome } from './outcome.js'
import { newRequestId } from './request-id.js'
import type { Forwarding } from './trust.js'

/** Where a retry may go; proxy knows sets of endpoints, not colors. */
export interface EndpointPicker {
  pick (exclude?: Endpoint): Endpoint | undefined
}

/**
 * Per-color accounting: `begin` at start and `end` when the response closes,
 * exactly once each; `record` once per request that got an answer;
 * `upstreamError` for every failed attempt (a retried one too).
 */
export interface ExchangeStats {
  begin: (x: Exchange) => void
  end: (x: Exchange, done: Finished) => void
  record: (isError: boolean) => void
  upstreamError: (kind: UpstreamErrorKind) => void
}

/** The upstream-error metric kind of each coded failure (both engines). */
export const ERROR_KIND: Partial<Record<ErrorCode, UpstreamErrorKind>> = {
  upstream_connect_failed: 'connect_failed',
  upstream_timeout: 'timeout',
  upstream_error: 'reset',
}

/** The client's X-Request-Id, or a new one (added to the upstream request). */
export function requestIdFor (req: IncomingMessage, headers: string[] | undefined): string {
  const given = req.headers['x-request-id']
  if (typeof given === 'string' && given !== '') return given
  const id = newRequestId()
  headers?.push('x-request-id', id)
  return id
}


/**
 * undici pools whose every connection is busy (a dispatch said so; their
 * 'drain' clears it): a request dispatched to one now waits in its queue.
 */
const saturated = new WeakSet<Dispatcher>()

function markSaturated (pool: Dispatcher): void {
  if (saturated.has(pool)) return
  saturated.add(pool)
  pool.once('drain', () => saturated.delete(pool))
}

/** Methods a failed attempt may be retried for (both engines). */
export const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
/** Errors that mean the request never reached the upstream application. */
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
])

/** undici refusing the request itself (say, a method or target it will not send). */
const REQUEST_ERRORS = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED'])

export function classifyUpstreamError (err: Error & { code?: string }): ErrorCode {
  const code = err.code ?? ''
  if (REQUEST_ERRORS.has(code)) return 'request_refused'
  if (CONNECT_ERRORS.has(code)) return 'upstream_connect_failed'
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'upstream_timeout'
  return 'upstream_error'
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
function upstreamHeadSize (method: string, path: string, headers: readonly string[]): number {
  let n = method.length + path.length + 14 + 64
  for (let i = 0; i < headers.length; i++) n += headers[i].length + 2
  return n
}

/**
 * Answers with a coded JSON error; returns the body's size (0 when it could
 * only cut the response). `close` ends the connection after it (a request
 * body may still be coming and is not worth reading).
 */
export function sendError (res: ServerResponse, code: ErrorCode, status: number, message?: string, close = false): number {
  if (res.headersSent) {
    res.destroy()
    return 0
  }
  const body = errorBody(code, message)
  const size = Buffer.byteLength(body)
  if (close) res.shouldKeepAlive = false
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': size })
  res.end(body)
  return size
}

/**
 * One request's trip upstream. It is the undici handler itself (the legacy
 * callback interface is what undici's HTTP/1 client calls natively; the newer
 * controller interface is wrapped and copies headers into objects).
 *
 * Its outcome is settled once, when it ends (SPEC "Edge trust"): a complete
 * answer by its status, an answer the upstream broke after its head as an
 * upstream error, one the client walked away from by its status.
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
  private readonly picker: EndpointPicker
  private readonly stats: ExchangeStats
  private readonly headers: string[]
  private readonly retryable: boolean
  private readonly body: IncomingMessage | null
  /** A Set-Cookie the gateway adds to the response (sticky sessions). */
  private readonly setCookie: string | undefined
  /** Longest silence between two reads of the request body, ms (0: none). */
  private bodyTimeout = 0
  private bodyTimer: NodeJS.Timeout | undefined
  /** Longest wait for a connection when all of the target's are busy, ms (timeouts.connect). */
  private waitMs = 0
  private waitTimer: NodeJS.Timeout | undefined
  /** Longest wait for the client to take some of the answer, ms (client.idleTimeout; 0: none). */
  private stallMs = 0
  private stallTimer: NodeJS.Timeout | undefined
  /** undici paused the body (upstream backpressure): silence is not the client's. */
  private bodyHeld = false
  private endpoint: Endpoint
  private abortUpstream: ((err?: Error) => void) | undefined
  private resumeUpstream: (() => void) | undefined
  private retried = false
  private closed = false
  /** The upstream's response head went to the client: the outcome waits for the end. */
  private answered = false
  /** 1xx answers seen. */
  private informational = 0
  /** The outcome was recorded (exactly once per answered exchange). */
  private settled = false

  constructor (req: IncomingMessage, res: ServerResponse, endpoint: Endpoint, picker: EndpointPicker, stats: ExchangeStats, forwarding: Forwarding, setCookie?: string) {
    this.req = req
    this.res = res
    this.endpoint = endpoint
    this.picker = picker
    this.stats = stats
    this.setCookie = setCookie
    this.headers = upstreamRequestHeaders(req, forwarding)
    this.requestId = requestIdFor(req, this.headers)
    this.body = hasBody(req) ? req : null
    this.retryable = this.body === null && IDEMPOTENT.has(req.method as string)
  }

  /**
   * Sends the request on its way; `bodyTimeout` is the client's body deadline
   * (client.bodyTimeout, ms), `waitMs` how long it may wait for a connection
   * when limits.maxConnections are all busy (timeouts.connect, ms), `stallMs`
   * how long a client may take none of its answer (client.idleTimeout, ms).
   */
  start (bodyTimeout = 0, waitMs = 0, stallMs = 0): void {
    this.bodyTimeout = bodyTimeout
    this.waitMs = waitMs
    this.stallMs = stallMs
    // What the upstream would refuse for its size (X-Forwarded-* and the request id added) is refused here.
    if (upstreamHeadSize(this.req.method as string, this.req.url as string, this.headers) > MAX_HEAD) {
      sendError(this.res, 'header_too_large', ERRORS.header_too_large.status, `request head larger than ${MAX_HEAD} bytes once forwarding headers are added`, true)
      return
    }
    this.stats.begin(this)
    this.endpoint.target.inflight++
    this.res.once('close', this.onClientClose)
    this.dispatch()
  }

  private dispatch (): void {
    const req = this.req
    const pool = this.endpoint.dispatcher
    const queued = saturated.has(pool)
    if (!pool.dispatch({
      path: req.url as string,
      method: req.method as Dispatcher.HttpMethod,
      headers: this.headers,
      body: this.body,
    }, this)) markSaturated(pool)
    // Every connection busy: it waits its turn up to timeouts.connect, as on the fast engine (README, limits.maxConnections).
    if (queued && this.waitMs > 0 && this.abortUpstream === undefined && this.waitTimer === undefined) {
      this.waitTimer = setTimeout(this.onOverloaded, this.waitMs)
    }
  }

  /** Waited timeouts.connect in undici's queue: an error for the guard (the color cannot serve), not against the target (busy, not broken). */
  private readonly onOverloaded = (): void => {
    this.waitTimer = undefined
    if (this.abortUpstream !== undefined || this.closed || this.res.headersSent) return
    this.stats.record(true)
    // undici gives the request a connection later: onConnect then aborts it (the answer is already out).
    this.bytes += sendError(this.res, 'upstream_overloaded', ERRORS.upstream_overloaded.status, undefined, this.body !== null)
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

  /** Records the outcome of an exchange that got the upstream's head, once. */
  private settle (failure: UpstreamErrorKind | undefined): void {
    if (this.settled) return
    this.settled = true
    recordOutcome(this.stats, this.endpoint.target, this.res.statusCode, failure)
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
    if (!this.res.writableFinished) this.abortUpstream?.()
  }

  /** Ends the exchange now (drain deadline, shutdown): a long stream is cut, the upstream aborted. */
  close (): void {
    this.res.destroy()
    this.abortUpstream?.()
  }

  private readonly onDrain = (): void => {
    clearTimeout(this.stallTimer)
    this.stallTimer = undefined
    this.resumeUpstream?.()
  }

  /** The client took none of its answer for client.idleTimeout: cut, or it holds the upstream connection forever. */
  private readonly onStalled = (): void => {
    this.stallTimer = undefined
    if (!this.closed) this.res.destroy()
  }

  onConnect (abort: (err?: Error) => void): void {
    this.abortUpstream = abort
    if (this.waitTimer !== undefined) {
      clearTimeout(this.waitTimer)
      this.waitTimer = undefined
    }
    // Gone, or already answered by the gateway (overloaded, body deadline): the request must not leave.
    if (this.closed || this.res.writableEnded) {
      abort()
      return
    }
    // undici starts reading the body right after this, in the same tick: the listeners see every chunk.
    // A body the client has sent whole cannot go quiet on its side.
    if (this.body !== null && this.bodyTimeout > 0 && this.bodyTimer === undefined && !this.body.complete) this.watchBody(this.body)
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
      this.abortUpstream?.()
      return
    }
    this.bytes += sendError(this.res, 'request_timeout', ERRORS.request_timeout.status, `no request body bytes for ${this.bodyTimeout}ms`, true)
    // Aborting destroys the request body, and with it the client socket: only once the 408 is out.
    this.res.once('finish', this.onTimeoutSent)
  }

  private readonly onTimeoutSent = (): void => {
    this.abortUpstream?.()
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (this.closed || this.res.writableEnded) return false
    if (statusCode < 200) {
      // A flood of 1xx would be relayed without end (memory grows if the client does not read): past a few, the upstream is broken.
      if (++this.informational > MAX_INFORMATIONAL) {
        this.onError(Object.assign(new Error('too many informational answers'), { code: 'UND_ERR_INFO_FLOOD' }))
        this.abortUpstream?.()
        return false
      }
      // Informational: 103 Early Hints go on to the client; the final answer is still to come.
      if (statusCode === 103) this.earlyHints(rawHeaders)
      return true
    }
    this.resumeUpstream = resume
    this.upstreamMs = performance.now() - this.startedAt
    try {
      const headers = downstreamResponseHeaders(rawHeaders)
      if (this.setCookie !== undefined) headers.push('set-cookie', this.setCookie)
      this.res.writeHead(statusCode, statusText, headers)
    } catch {
      // Node refuses what undici's parser accepted (say, a header value it deems invalid).
      this.bytes += sendError(this.res, 'upstream_error', 502, 'the upstream sent response headers that cannot be relayed')
      this.settle(undefined)
      this.abortUpstream?.()
      return false
    }
    // The outcome is known at the end: onComplete, onError or the client's close.
    this.answered = true
    return !this.res.writableEnded
  }

  /** Relays a 103's Link values. Hints are advisory: ones node:http will not write (it throws) are dropped, never the exchange. */
  private earlyHints (rawHeaders: Buffer[]): void {
    const hints = earlyHints(rawHeaders)
    if (hints.link.length === 0) return
    try {
      this.res.writeEarlyHints(hints)
    } catch {}
  }

  onData (chunk: Buffer): boolean {
    if (this.closed) return false
    this.bytes += chunk.length
    const ok = this.res.write(chunk)
    if (!ok) {
      this.res.once('drain', this.onDrain)
      if (this.stallMs > 0 && this.stallTimer === undefined) this.stallTimer = setTimeout(this.onStalled, this.stallMs)
    }
    return ok
  }

  onComplete (): void {
    if (this.closed) return
    this.res.end()
    this.settle(undefined)
  }

  onError (err: Error & { code?: string }): void {
    if (this.closed) return
    if (this.answered) {
      // Mid-body failure: an upstream error, and the client must see a truncated response, not a clean end.
      this.settle(err.code === 'UND_ERR_BODY_TIMEOUT' ? 'timeout' : 'reset')
      if (!this.res.destroyed) this.res.destroy(err)
      return
    }
    if (this.res.writableEnded || this.res.destroyed) return
    const code = classifyUpstreamError(err)
    const stale = isStaleConnection(err) && keepAliveRace(false, servedBefore(err))
    // An error undici raised about the request itself is not the target's fault; nor is the keep-alive race.
    if (code !== 'request_refused') {
      if (!stale) this.endpoint.target.recordResult(false)
      this.stats.upstreamError(ERROR_KIND[code] ?? 'reset')
    }
    if (this.retryable && !this.retried && (code === 'upstream_connect_failed' || isStaleConnection(err))) {
      const next = this.picker.pick(this.endpoint) ?? (isStaleConnection(err) ? this.endpoint : undefined)
      if (next !== undefined) {
        this.retried = true
        this.endpoint.target.inflight--
        next.target.inflight++
        this.endpoint = next
        this.abortUpstream = undefined
        this.dispatch()
        return
      }
    }
    this.stats.record(code !== 'request_refused')
    this.bytes += sendError(this.res, code, ERRORS[code].status)
  }
}

/** The link headers of a 103, as `res.writeEarlyHints` takes them. */
function earlyHints (raw: Buffer[]): { link: string[] } {
  const links: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].toString('latin1').toLowerCase() === 'link') links.push(raw[i + 1].toString('latin1'))
  }
  return { link: links }
}

/**
 * The connection of an undici socket error had read bytes before (no answer
 * to this request had begun): it served earlier exchanges. A bare ECONNRESET
 * carries no counts and is taken as a fresh connection's failure.
 */
function servedBefore (err: Error & { socket?: { bytesRead?: number } }): boolean {
  return (err.socket?.bytesRead ?? 0) > 0
}

/** A reused keep-alive connection the upstream had already closed. */
function isStaleConnection (err: Error & { code?: string }): boolean {
  return err.code === 'UND_ERR_SOCKET' || err.code === 'ECONNRESET'
}
