// The client side of one exchange as an upstream forwarder sees it, whatever
// the client speaks: an HTTP/2 stream, or a node:http request and response.
// Forwarders over HTTP/2 upstreams (gRPC) are written against this alone.

import type { OutgoingHttpHeaders } from 'node:http2'
import type { Readable } from 'node:stream'
import type { ErrorCode } from '../errors.js'

export interface Downstream {
  readonly method: string
  /** The request target, normalized (the resolve step's). */
  readonly path: string
  /** The host the client asked for (:authority, else Host). */
  readonly authority: string | undefined
  /** The client's X-Request-Id, or the one the gateway made (already in `upstreamHeaders`). */
  readonly requestId: string
  /** The request is gRPC (content-type application/grpc...): gateway errors are gRPC statuses. */
  readonly grpc: boolean
  /**
   * The request headers to send upstream: lower-case names, no pseudo-headers,
   * no hop-by-hop fields (but `te: trailers` kept), X-Forwarded-* and
   * x-request-id as the listener's trust rules say. Built once, on first use.
   */
  upstreamHeaders: () => OutgoingHttpHeaders
  /** The request body, or null when the request has none (ended with its head). */
  readonly body: Readable | null
  /** The response head went out. */
  readonly headersSent: boolean
  /**
   * The status the client was answered with, 0 before any: the forwarder's
   * own when it answered, or the client side's (client.bodyTimeout's 408)
   * when that answered first. Absent: the forwarder counts only its own.
   */
  readonly status?: number
  /** The client is gone, or the answer is complete. */
  readonly closed: boolean
  /**
   * The response head: `headers` without pseudo-headers or hop-by-hop fields
   * (the downstream drops any left). The answer's body and trailers follow;
   * `trailers`: the upstream announced some (its Trailer field, dropped as
   * hop-by-hop), so an HTTP/2 client's stream waits for them (a gRPC one always does).
   */
  respond: (status: number, headers: OutgoingHttpHeaders, trailers?: boolean) => void
  /** A body chunk; false when the client is behind (wait for `onDrain`). */
  write: (chunk: Buffer) => boolean
  onDrain: (fn: () => void) => void
  /** The end of the answer, with the upstream's trailers (gRPC's grpc-status) when it sent any. */
  end: (trailers: OutgoingHttpHeaders | undefined) => void
  /**
   * The gateway's own answer in the upstream's place: a JSON error, or for a
   * gRPC request a gRPC status (`grpc.ts` grpcStatusOf) in a trailers-only
   * answer. After the head went out it can only cut (as `destroy`). Returns
   * the body bytes written.
   */
  fail: (code: ErrorCode, message?: string) => number
  /**
   * Cuts the answer: RST_STREAM on HTTP/2 (INTERNAL_ERROR: the answer broke;
   * `cancel`: CANCEL, the gateway ends it, as at a drain deadline), the connection on HTTP/1.1.
   */
  destroy: (cancel?: boolean) => void
  /** Called once when the client side is over: answered completely, reset, or gone. */
  onClose: (fn: () => void) => void
}
