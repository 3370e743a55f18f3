// The contract between the engines and routing: what the proxy tells about a
// request, and the one answer it gets back (where to send it, or why not).

import type { Timeouts, UpstreamProtocol } from '../config/schema.js'
import type { ErrorCode } from '../errors.js'
import type { ColorStats, RequestTrace } from '../upstream/color-stats.js'
import type { Endpoint } from '../upstream/target-set.js'

/**
 * What the resolve step reads of a request. Each engine answers from its own
 * parse (the fast engine's head, node:http's IncomingMessage, later HTTP/2
 * headers) and copies nothing the routing does not ask for.
 */
export interface RequestFacts {
  /** The request method, as sent (upper case for the standard ones). */
  readonly method: string
  /** The request target as received. */
  readonly target: string
  readonly host: string | undefined
  /** The gateway's own pin header (smoke checks), as sent. */
  readonly smoke: string | undefined
  /** The Cookie header, its lines joined. */
  readonly cookie: string | undefined
  /** The W3C Baggage header, its lines joined with `,`; undefined when absent. Read only with pinning on. */
  readonly baggage: string | undefined
  /** The header names the Connection header lists (besides close and keep-alive); undefined when none. */
  readonly connectionNames: readonly string[] | undefined
  /** The value of header `lowerName` when it has exactly one line; asked for a service's preview header and the split key header. */
  header: (lowerName: string) => string | undefined
  /** How many lines of header `lowerName` the request carries. */
  headerLines: (lowerName: string) => number
  /** The socket's remote address. */
  readonly peer: string
  /**
   * Set by an engine that forwards over HTTP/1.1 only (the fast one): it
   * hands a request for an HTTP/2 service to node:http, which resolves it
   * again, so its own resolve step must not count it.
   */
  readonly http1Only?: true
  /**
   * The client's address (`clientAddress` below, with the listener's trusted
   * proxies); asked only when a split keys a request by its address.
   */
  clientAddress: () => string
}

/**
 * The client address a split keys on when nothing else names the client:
 * the socket peer, or, when the peer is a trusted proxy, the last
 * X-Forwarded-For element (the address that proxy saw and added).
 * `forwardedFor`: the X-Forwarded-For lines as received, joined with ', '.
 * Only the last element is believed: those before it came through the
 * trusted proxy but from whoever it heard them from.
 */
export function clientAddress (peer: string, trusted: boolean, forwardedFor: string | undefined): string {
  if (!trusted || forwardedFor === undefined || forwardedFor === '') return peer
  let end = forwardedFor.length
  // Empty trailing elements (`a, b,`) are skipped: the engines join lines differently, the list means the same.
  while (end > 0) {
    const comma = forwardedFor.lastIndexOf(',', end - 1)
    const last = forwardedFor.slice(comma + 1, end).trim()
    if (last !== '') return last
    end = comma
  }
  return peer
}

/** Where the chosen color's requests go, as the proxy sees it (it never learns which color). */
export interface UpstreamGroup {
  /** Where a retry may go. */
  readonly targets: { pick: (exclude?: Endpoint) => Endpoint | undefined }
  readonly stats: ColorStats
  readonly timeouts: Timeouts
  /** How the targets are spoken to: anything but http1 goes through the HTTP/2 forwarder (proxy/h2/upstream.ts). */
  readonly protocol: UpstreamProtocol
}

/**
 * Sees the live answer of a request picked for shadow traffic (shadow/), as
 * the client gets it, so the copy sent to the idle color can be compared with
 * it. The exchange calls `request` once before it forwards, `requestBody` for
 * each request body chunk as it goes upstream, then `head`, `body` for each
 * answer chunk and `end` once the whole answer went to the client; `abort`
 * instead of `end` when the exchange ends any other way (an error, a cut, a
 * retry's failure, a WebSocket). A tap never throws and never delays: it only
 * copies what it is shown, up to its own size cap.
 */
export interface AnswerTap {
  /**
   * The request as it goes upstream: `fields` is either the fast engine's
   * forwarded header lines (`name: value\r\n` each, forwarding headers and
   * the request id included) or a flat [name, value, ...] list.
   */
  request: (method: string, target: string, fields: string | readonly string[]) => void
  /** Request body bytes as sent upstream (decoded: never chunk framing); `last`: the body ends with this chunk. */
  requestBody: (chunk: Buffer, last: boolean) => void
  /**
   * The final answer's head as relayed (hop-by-hop fields removed): `fields`
   * as in `request`; `chunked`: the body chunks that follow carry HTTP/1.1
   * chunk framing (the fast engine relays it as received) and must be decoded.
   */
  head: (status: number, fields: string | ReadonlyArray<string | Buffer>, chunked: boolean) => void
  body: (chunk: Buffer) => void
  end: () => void
  abort: () => void
}

/**
 * Tells `tap` how its exchange ended (`whole`: the answer went to the client
 * complete) and returns undefined, for the exchange to clear its field with:
 * `this.shadow = finishTap(this.shadow, whole)`. Every engine ends its tap here.
 */
export function finishTap (tap: AnswerTap | undefined, whole: boolean): undefined {
  if (tap === undefined) return undefined
  if (whole) tap.end()
  else tap.abort()
  return undefined
}

/** A request with somewhere to go. */
export interface Resolution {
  /** The target to forward: normalized (dot segments and doubled slashes resolved). */
  readonly target: string
  readonly endpoint: Endpoint
  readonly group: UpstreamGroup
  /** A Set-Cookie to answer with (sticky sessions), or undefined. */
  readonly setCookie: string | undefined
  /** Set when this request was picked for shadow traffic: the exchange shows it the answer. Undefined on every other request. */
  readonly shadow: AnswerTap | undefined
  /**
   * With pinning on, the Baggage the request goes upstream with, in place
   * of every baggage line the client sent (routing/pinning.ts
   * outgoingBaggage: the client's members, then `switchyard-gen=N`).
   * Undefined with pinning off: the client's lines go as sent.
   */
  readonly baggage: string | undefined
  /**
   * With tracing on, the request's span (its `traceparent` goes upstream
   * beside the baggage, and it is recorded when the request ends).
   * Undefined with tracing off: the engines pay one check for it.
   */
  readonly trace: RequestTrace | undefined
}

/**
 * Starts a request's span (tracing/tracer.ts), when tracing is on: the
 * resolve step calls it for each request it routes. `target`: the
 * normalized target; `generation`: the snapshot that routed it, `pinned`
 * when that is a kept one (baggage). Undefined: nothing to record or add.
 */
export interface RequestTracer {
  start: (facts: RequestFacts, target: string, generation: number, pinned: boolean) => RequestTrace | undefined
}

/** A request the gateway answers itself, with the coded reason. */
export interface Refusal {
  readonly endpoint?: undefined
  readonly code: ErrorCode
  readonly message: string | undefined
  /** The normalized target, once it is known. */
  readonly target: string | undefined
  /** The color that could not serve it (no healthy upstream): the refusal is counted there. */
  readonly stats: ColorStats | undefined
  /** With tracing on, the span of a request refused for its color (no healthy upstream), ended with the refusal. */
  readonly trace?: RequestTrace | undefined
}

/** The one resolve step every engine calls: route, color, target, or the error to answer. */
export type Resolve = (facts: RequestFacts) => Resolution | Refusal
