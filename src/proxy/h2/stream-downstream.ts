// The client side of one exchange when the client speaks HTTP/2: one stream
// of a session from the h2 edge (edge.ts), for whichever forwarder serves it.

import http2, { type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import type { Readable } from 'node:stream'
import { ERRORS, errorBody, type ErrorCode } from '../../errors.js'
import type { Downstream } from '../downstream.js'
import { encodeGrpcMessage, grpcStatusOf, isGrpc } from '../grpc.js'
import { stripH2RequestHeaders } from '../headers.js'
import { MAX_HEAD } from '../limits.js'
import { newRequestId } from '../request-id.js'
import type { SentForwarding } from '../trust.js'
import type { H2RequestFacts } from './facts.js'

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants

/** Asks a client that is still sending to stop, once its answer has gone out (resetAfterAnswer). */
function resetStream (stream: ServerHttp2Stream): void {
  if (!stream.readableEnded && !stream.closed && !stream.destroyed) stream.close(NGHTTP2_NO_ERROR)
}

/** What the edge keeps per session: its open streams (an idle session has none) and its peer, read once. */
export interface SessionTally {
  open: number
  readonly peer: string
  /** client.idle, ms (0 or absent: none): the longest a stream's client may take none of its answer. */
  readonly stallMs?: number
}

/** Flat [name, value, ...] fields (lower-case names) as an HTTP/2 header object; repeated names become arrays. */
export function fieldsObject (flat: readonly string[], into: OutgoingHttpHeaders = {}): OutgoingHttpHeaders {
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i].toLowerCase()
    const had = into[name]
    if (had === undefined) into[name] = flat[i + 1]
    else if (Array.isArray(had)) had.push(flat[i + 1])
    else into[name] = [String(had), flat[i + 1]]
  }
  return into
}

/**
 * Fields HTTP/2 forbids in a message (RFC 9113 8.2.2), and the ones node:http2
 * also refuses in a response (Host: :authority says it; HTTP2-Settings: h2c's
 * upgrade): node:http2 throws on them, so an answer handed over with one left
 * loses it here instead of failing whole.
 */
const CONNECTION_SPECIFIC = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'http2-settings']

/** Told once when the client side is over (see `notifyClose`). */
export interface StreamCloser {
  clientClosed: () => void
}

function noop (): void {}

/**
 * The largest answer head the h2 edge sends (its maxSendHeaderBlockLength): an upstream's head is at most MAX_HEAD
 * (undici's and the fast engine's limit) plus the sticky cookie. An HTTP/2 upstream may send more.
 */
export const MAX_SEND_HEAD = 2 * MAX_HEAD

/**
 * nghttp2's bound on a head's encoded size (nghttp2_hd_deflate_bound), which it holds against
 * maxSendHeaderBlockLength: over it, the head is never sent and the stream is reset (FRAME_SIZE_ERROR).
 */
function headBound (headers: OutgoingHttpHeaders): number {
  let n = 12
  for (const name in headers) {
    const v = headers[name]
    if (v === undefined) continue
    for (const line of Array.isArray(v) ? v : [v]) n += 6 + name.length + Buffer.byteLength(String(line))
  }
  return n
}

const NOTHING = Buffer.alloc(0)

export class StreamDownstream implements Downstream {
  readonly method: string
  readonly path: string
  readonly authority: string | undefined
  readonly requestId: string
  readonly grpc: boolean
  /** The request body (the stream's readable side), or null when the request ended with its head. */
  readonly body: Readable | null
  /** The :status answered; 0 before any. */
  status = 0
  private readonly stream: ServerHttp2Stream
  private readonly facts: H2RequestFacts
  private readonly tally: SessionTally
  /** The request id was made here: it goes upstream. */
  private readonly madeId: boolean
  /** Longest silence between two reads of the request body, ms (client.body; 0: none). */
  private readonly bodyMs: number
  private lines: string[] | undefined
  /** Trailers for 'wantTrailers', once the answer's end is known. */
  private trailers: OutgoingHttpHeaders | undefined
  private waitsForTrailers = false
  private closeFn: (() => void) | undefined
  private closer: StreamCloser | undefined = undefined
  private stallTimer: NodeJS.Timeout | undefined

  /** `path`: the normalized target (the resolve step's), else the one received. */
  constructor (stream: ServerHttp2Stream, facts: H2RequestFacts, path: string, tally: SessionTally, bodyMs: number) {
    this.stream = stream
    this.facts = facts
    this.tally = tally
    this.method = facts.method
    this.path = path
    this.authority = facts.host
    const given = facts.headers['x-request-id']
    this.madeId = typeof given !== 'string' || given === ''
    this.requestId = this.madeId ? newRequestId() : given as string
    this.grpc = isGrpc(facts.headers['content-type'])
    this.body = stream.endAfterHeaders ? null : stream
    this.bodyMs = bodyMs
    tally.open++
    // A client's RST_STREAM with an error code is an 'error' here: the 'close' below is what counts.
    stream.on('error', noop)
    stream.on('close', this.onStreamClose)
    if (this.body !== null && bodyMs > 0) {
      stream.setTimeout(bodyMs)
      stream.on('timeout', this.onBodySilent)
    }
  }

  /**
   * The request fields for an HTTP/1.1 upstream, flat: Host from :authority
   * first, cookies on one line, X-Forwarded-* per the listener's trust, the
   * request id when the client sent none. No TE (hop-by-hop on HTTP/1.1).
   */
  upstreamLines (): string[] {
    if (this.lines !== undefined) return this.lines
    const sent: SentForwarding = { xff: '', xfProto: undefined, xfHost: undefined, forwarded: undefined }
    const f = stripH2RequestHeaders(this.facts.raw, sent)
    const out = this.authority === undefined ? f.fields : ['host', this.authority, ...f.fields]
    if (f.cookie !== undefined) out.push('cookie', f.cookie)
    this.facts.forwarding.appendHeaders(out, this.tally.peer, this.authority, sent)
    if (this.madeId) out.push('x-request-id', this.requestId)
    this.lines = out
    return out
  }

  /** The same fields for an HTTP/2 upstream, as a header object: no Host (the forwarder sets :authority), `te: trailers` kept. */
  upstreamHeaders (): OutgoingHttpHeaders {
    const sent: SentForwarding = { xff: '', xfProto: undefined, xfHost: undefined, forwarded: undefined }
    const f = stripH2RequestHeaders(this.facts.raw, sent)
    const out = f.fields
    if (f.cookie !== undefined) out.push('cookie', f.cookie)
    if (f.teTrailers) out.push('te', 'trailers')
    this.facts.forwarding.appendHeaders(out, this.tally.peer, this.authority, sent)
    if (this.madeId) out.push('x-request-id', this.requestId)
    return fieldsObject(out)
  }

  get headersSent (): boolean {
    return this.stream.headersSent
  }

  get closed (): boolean {
    return this.stream.closed || this.stream.destroyed
  }

  /** A gRPC answer (or one announcing trailers) waits for its trailers before it ends. */
  respond (status: number, headers: OutgoingHttpHeaders, trailers = false): void {
    this.respondWith(status, headers, trailers || this.grpc || headers.trailer !== undefined || isGrpc(headers['content-type'] as string | undefined))
  }

  /** `respond`, saying whether trailers may follow the body (then the stream ends with a HEADERS frame, not on the last DATA). */
  respondWith (status: number, headers: OutgoingHttpHeaders, trailers: boolean): void {
    for (const name of CONNECTION_SPECIFIC) if (headers[name] !== undefined) delete headers[name]
    headers[':status'] = status
    // Thrown, as node:http2 throws on a field it cannot send, so the forwarder answers upstream_error instead
    // (the stream would be reset with nothing to say why, and the exchange counted a success).
    if (headBound(headers) > MAX_SEND_HEAD) throw new Error(`answer head larger than ${MAX_SEND_HEAD} bytes`)
    this.status = status
    if (trailers) {
      this.waitsForTrailers = true
      this.stream.once('wantTrailers', this.onWantTrailers)
      this.stream.respond(headers, { waitForTrailers: true })
    } else {
      this.stream.respond(headers)
    }
  }

  /**
   * The whole answer at once: the head, and the body (if any) ending the
   * stream in its last DATA frame; with no body, one HEADERS frame ends it.
   * For an answer that is complete when its head is sent (no trailers).
   */
  respondEnd (status: number, headers: OutgoingHttpHeaders, body: Buffer | undefined): void {
    for (const name of CONNECTION_SPECIFIC) if (headers[name] !== undefined) delete headers[name]
    headers[':status'] = status
    this.status = status
    if (body === undefined || body.length === 0) {
      this.stream.respond(headers, { endStream: true })
    } else {
      this.stream.respond(headers)
      this.stream.end(body)
    }
  }

  /**
   * The answer is complete (or going out) while the request body still comes:
   * RST_STREAM NO_ERROR once the answer is out tells the client to stop sending (RFC 9113 8.1).
   */
  refuseBody (): void {
    if (!this.closed) this.resetAfterAnswer()
  }

  /**
   * RST_STREAM NO_ERROR to a client still sending, on the next turn: sent in
   * the same turn as the answer, Node 22's http2 drops the answer's HEADERS
   * (the client sees only the reset; Node 20 and 24 send both).
   */
  private resetAfterAnswer (): void {
    if (this.stream.readableEnded) return
    setImmediate(resetStream, this.stream)
  }

  /** An informational answer (103 Early Hints) ahead of the final one. */
  inform (status: number, headers: OutgoingHttpHeaders): void {
    headers[':status'] = status
    this.stream.additionalHeaders(headers)
  }

  write (chunk: Buffer): boolean {
    return this.stream.write(chunk)
  }

  /** The answer's last body bytes, and its end (no trailers follow). */
  endWith (chunk: Buffer): void {
    if (this.stream.writableEnded) return
    this.stream.end(chunk)
    if (!this.waitsForTrailers) this.stopBody()
  }

  onDrain (fn: () => void): void {
    // client.idle: a client that takes none of its answer for that long would hold the upstream stream forever.
    const ms = this.tally.stallMs ?? 0
    if (ms > 0 && this.stallTimer === undefined) this.stallTimer = setTimeout(this.onStalled, ms)
    this.stream.once('drain', () => {
      clearTimeout(this.stallTimer)
      this.stallTimer = undefined
      fn()
    })
  }

  private readonly onStalled = (): void => {
    this.stallTimer = undefined
    this.destroy(true)
  }

  end (trailers: OutgoingHttpHeaders | undefined): void {
    if (this.waitsForTrailers) this.trailers = trailers
    if (this.stream.writableEnded) return
    this.stream.end()
    if (!this.waitsForTrailers) this.stopBody()
  }

  /**
   * The answer is complete while the client still sends its body: RST_STREAM
   * NO_ERROR once the answer is out asks it to stop (RFC 9113 8.1), and the
   * stream (with the exchange's counts) ends with the answer, as on HTTP/1.1.
   * Not after trailers: a reset could overtake them, and a gRPC client ends
   * its side itself once it has the status.
   */
  private stopBody (): void {
    const stream = this.stream
    if (!stream.endAfterHeaders && !stream.closed) this.resetAfterAnswer()
  }

  private readonly onWantTrailers = (): void => {
    // An answer that announced trailers and sent none still ends with an (empty) HEADERS frame: a reset would read as a failure.
    const trailers = this.trailers ?? {}
    for (const name of CONNECTION_SPECIFIC) if (trailers[name] !== undefined) delete trailers[name]
    try {
      this.stream.sendTrailers(trailers)
    } catch {
      // A field node:http2 still refuses: thrown in an event handler it would take the process down; the answer is cut instead.
      this.destroy()
    }
  }

  fail (code: ErrorCode, message?: string): number {
    const stream = this.stream
    if (this.closed) return 0
    if (stream.headersSent) {
      this.destroy()
      return 0
    }
    const status = ERRORS[code].status
    let bytes = 0
    if (this.grpc) {
      // Trailers-only (gRPC over HTTP/2): the status is in the one HEADERS frame that ends the stream.
      this.status = 200
      stream.respond({
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': String(grpcStatusOf(code)),
        'grpc-message': encodeGrpcMessage(message ?? ERRORS[code].message),
      }, { endStream: true })
    } else {
      const body = errorBody(code, message)
      const size = Buffer.byteLength(body)
      this.status = status
      const head = this.method === 'HEAD'
      stream.respond({ ':status': status, 'content-type': 'application/json', 'content-length': size }, { endStream: head })
      if (!head) {
        stream.end(body)
        bytes = size
      }
    }
    // A request body still coming is not wanted: RST_STREAM NO_ERROR once the answer is out (RFC 9113 8.1).
    this.resetAfterAnswer()
    return bytes
  }

  /** Cuts the answer: RST_STREAM INTERNAL_ERROR (the answer broke), or CANCEL when the gateway ends it (drain deadline, stalled client). */
  destroy (cancel = false): void {
    const stream = this.stream
    if (stream.closed) return
    // node:http2's close() ends the writable side first: with no write in flight that END_STREAM goes out
    // before the RST_STREAM, and a cut answer reads as complete. An (empty) write in flight holds the end back.
    if (stream.headersSent && !stream.writableEnded) stream.write(NOTHING)
    stream.close(cancel ? NGHTTP2_CANCEL : NGHTTP2_INTERNAL_ERROR)
  }

  onClose (fn: () => void): void {
    this.closeFn = fn
  }

  /** As `onClose`, for a forwarder that is its own listener (no closure per stream): `x.clientClosed()` runs once. */
  notifyClose (x: StreamCloser): void {
    this.closer = x
  }

  /** A 100 Continue for a client waiting on one before it sends its body (node:http sends its own; node:http2's stream API does not). */
  continueBody (): void {
    if (this.body !== null && !this.stream.headersSent) this.stream.additionalHeaders({ ':status': 100 })
  }

  private readonly onStreamClose = (): void => {
    this.tally.open--
    clearTimeout(this.stallTimer)
    const fn = this.closeFn
    this.closeFn = undefined
    const x = this.closer
    this.closer = undefined
    if (x !== undefined) x.clientClosed()
    if (fn !== undefined) fn()
  }

  /**
   * client.body: the stream had no activity for that long. Only a body the
   * gateway is reading counts (one held back by a slow upstream does not):
   * 408 before the answer, a cut after it.
   */
  private readonly onBodySilent = (): void => {
    const stream = this.stream
    if (stream.readableEnded || this.closed) return
    if (stream.readableFlowing !== true) {
      stream.setTimeout(this.bodyMs)
      return
    }
    if (stream.headersSent) return this.destroy()
    this.fail('request_timeout', `no request body bytes for ${this.bodyMs}ms`)
  }
}
