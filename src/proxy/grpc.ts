// gRPC at the edge, decided once for every engine: which requests are gRPC,
// which gRPC status a gateway-made error becomes, and which statuses an
// upstream answers with count as its fault for the guard.

import type { ErrorCode } from '../errors.js'

/** gRPC status codes (grpc/doc/statuscodes.md) the gateway names. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
} as const

/** A request is gRPC when its content-type is application/grpc, bare or with a +suffix or parameters. */
export function isGrpc (contentType: string | undefined): boolean {
  if (contentType === undefined || contentType.length < 16) return false
  if (contentType.charCodeAt(0) !== 97 && contentType.charCodeAt(0) !== 65) return false
  const lower = contentType.slice(0, 16).toLowerCase()
  if (lower !== 'application/grpc') return false
  if (contentType.length === 16) return true
  const next = contentType.charCodeAt(16)
  // `application/grpc+proto`, `application/grpc; charset=...`; not `application/grpc-web` (a different framing).
  return next === 43 /* + */ || next === 59 /* ; */
}

/**
 * The gRPC status a gateway-made error becomes (as Envoy maps HTTP statuses:
 * 404 → UNIMPLEMENTED, 502/503 → UNAVAILABLE, 504 → DEADLINE_EXCEEDED).
 */
const STATUS_OF: Readonly<Record<string, number>> = {
  no_route: GrpcStatus.UNIMPLEMENTED,
  no_healthy_upstream: GrpcStatus.UNAVAILABLE,
  upstream_connect_failed: GrpcStatus.UNAVAILABLE,
  upstream_timeout: GrpcStatus.DEADLINE_EXCEEDED,
  upstream_error: GrpcStatus.UNAVAILABLE,
  upstream_overloaded: GrpcStatus.UNAVAILABLE,
  request_refused: GrpcStatus.INTERNAL,
  request_timeout: GrpcStatus.DEADLINE_EXCEEDED,
  header_too_large: GrpcStatus.RESOURCE_EXHAUSTED,
}

export function grpcStatusOf (code: ErrorCode): number {
  return STATUS_OF[code] ?? GrpcStatus.INTERNAL
}

/**
 * Statuses that are the server's fault, for the guard and the error rate:
 * those whose HTTP counterpart is a 5xx (UNKNOWN, INTERNAL, DATA_LOSS → 500,
 * UNIMPLEMENTED → 501, UNAVAILABLE → 503, DEADLINE_EXCEEDED → 504). A client's
 * own mistake (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED...) is not.
 * UNIMPLEMENTED counts: a new version that lost a method is a bad release.
 */
export function isServerFault (grpcStatus: string | number | undefined): boolean {
  if (grpcStatus === undefined) return false
  const n = typeof grpcStatus === 'number' ? grpcStatus : Number(grpcStatus)
  return n === 2 || n === 4 || n === 12 || n === 13 || n === 14 || n === 15
}

/** grpc-message is percent-encoded (grpc PROTOCOL-HTTP2: printable ASCII but %, else %XX). */
export function encodeGrpcMessage (message: string): string {
  let out = ''
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}
