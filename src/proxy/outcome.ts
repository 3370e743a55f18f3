// How an answered exchange counts, decided once for every engine: its outcome
// is known when the exchange ends, not when the response head arrives.

import type { UpstreamErrorKind } from '../upstream/color-stats.js'
import { isServerFault } from './grpc.js'

export interface OutcomeStats {
  record: (isError: boolean) => void
  upstreamError: (kind: UpstreamErrorKind) => void
}

export interface OutcomeTarget {
  recordResult: (ok: boolean) => void
}

/**
 * Settles an exchange whose response head came from the upstream, once, when
 * it ends. `failure` is set when the upstream broke the answer after its head
 * (reset, truncated body, deadline mid-body): that is an upstream error for
 * the guard, passive health and the metrics, whatever the status said. A
 * client that went away is not the upstream's fault: the status decides.
 * `grpcStatus`: a gRPC answer's grpc-status (from its trailers, or a
 * trailers-only head); one that is the server's fault (grpc.ts
 * isServerFault: INTERNAL, UNAVAILABLE...) is an error though HTTP said 200.
 */
export function recordOutcome (stats: OutcomeStats, target: OutcomeTarget, status: number, failure: UpstreamErrorKind | undefined, grpcStatus?: string): void {
  const failed = failure !== undefined || status >= 500 || (grpcStatus !== undefined && isServerFault(grpcStatus))
  if (failure !== undefined) stats.upstreamError(failure)
  // The color's count first: an ejection below may trip the guard, which reports it.
  stats.record(failed)
  target.recordResult(!failed)
}
