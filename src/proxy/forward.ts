// HTTP forwarding of one request to one upstream endpoint on undici's
// dispatcher: raw header arrays, bodies streamed both ways with backpressure.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { ERRORS, errorBody, type ErrorCode } from '../errors.js'
import type { Finished, OpenExchange, UpstreamErrorKind } from '../upstream/color-stats.js'
import type { Endpoint } from '../upstream/target-set.js'
import { downstreamResponseHeaders, upstreamRequestHeaders } from './headers.js'
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

/** Answers with a coded JSON error; returns the body's size (0 when it could only cut the response). */
export function sendError (res: ServerResponse, code: ErrorCode, status: number, message?: string): number {
  if (res.headersSent) {
    res.destroy()
    return 0
  }
  const body = errorBody(code, message)
  const size = Buffer.byteLength(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': size })
  res.end(body)
  return size
}

/**
 * One request's trip upstream. It is the undici handler itself (the legacy
 * callback interface is what undici's HTTP/1 client calls natively; the newer
 * controller interface is wrapped and copies headers into objects).
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
  private endpoint: Endpoint
  private abortUpstream: ((err?: Error) => void) | undefined
  private resumeUpstream: (() => void) | undefined
  private retried = false
  private closed = false

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

  start (): void {
    this.stats.begin(this)
    this.endpoint.target.inflight++
    this.res.once('close', this.onClientClose)
    this.dispatch()
  }

  private dispatch (): void {
    const req = this.req
    this.endpoint.dispatcher.dispatch({
      path: req.url as string,
      method: req.method as Dispatcher.HttpMethod,
      headers: this.headers,
      body: this.body,
    }, this)
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

  /** The response is done or the client went away: settle counters once, stop the upstream. */
  private readonly onClientClose = (): void => {
    this.closed = true
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
    this.resumeUpstream?.()
  }

  onConnect (abort: (err?: Error) => void): void {
    this.abortUpstream = abort
    if (this.closed) abort()
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (this.closed) return false
    if (statusCode < 200) {
      // Informational: 103 Early Hints go on to the client; the final answer is still to come.
      if (statusCode === 103) this.res.writeEarlyHints(earlyHints(rawHeaders))
      return true
    }
    this.resumeUpstream = resume
    this.upstreamMs = performance.now() - this.startedAt
    let failed = statusCode >= 500
    try {
      const headers = downstreamResponseHeaders(rawHeaders)
      if (this.setCookie !== undefined) headers.push('set-cookie', this.setCookie)
      this.res.writeHead(statusCode, statusText, headers)
    } catch {
      // Node refuses what undici's parser accepted (say, a header value it deems invalid).
      failed = true
      this.bytes += sendError(this.res, 'upstream_error', 502, 'the upstream sent response headers that cannot be relayed')
      this.abortUpstream?.()
    }
    // The color's count first: an ejection below may trip the guard, which reports it.
    this.stats.record(failed)
    this.endpoint.target.recordResult(!failed)
    return !this.res.writableEnded
  }

  onData (chunk: Buffer): boolean {
    if (this.closed) return false
    this.bytes += chunk.length
    const ok = this.res.write(chunk)
    if (!ok) this.res.once('drain', this.onDrain)
    return ok
  }

  onComplete (): void {
    if (!this.closed) this.res.end()
  }

  onError (err: Error): void {
    if (this.closed || this.res.writableEnded || this.res.destroyed) return
    if (this.res.headersSent) {
      // Mid-body failure: the client must see a truncated response, not a clean end.
      this.res.destroy(err)
      return
    }
    const code = classifyUpstreamError(err)
    // An error undici raised about the request itself is not the target's fault.
    if (code !== 'request_refused') {
      this.endpoint.target.recordResult(false)
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
function earlyHints (raw: Buffer[]): Record<string, string | string[]> {
  const links: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].toString('latin1').toLowerCase() === 'link') links.push(raw[i + 1].toString('latin1'))
  }
  return { link: links }
}

/** A reused keep-alive connection the upstream had already closed. */
function isStaleConnection (err: Error & { code?: string }): boolean {
  return err.code === 'UND_ERR_SOCKET' || err.code === 'ECONNRESET'
}
