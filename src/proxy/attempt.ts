// What a failed attempt upstream means, decided once for every engine:
// whether to try again, and whether the target (or the color) is to blame.

import type { ErrorCode } from '../errors.js'
import type { UpstreamErrorKind } from '../upstream/color-stats.js'
import type { Endpoint } from '../upstream/target-set.js'

/**
 * How an attempt failed. `connect`: no connection (the request never left);
 * `reset`: the connection closed or reset; `timeout`: no answer in time (or a
 * body gone quiet); `protocol`: the upstream sent something that is not HTTP
 * the gateway can relay; `refused`: the request itself cannot be sent;
 * `overloaded`: every connection to the target stayed busy.
 */
export type FailureKind = 'connect' | 'reset' | 'timeout' | 'protocol' | 'refused' | 'overloaded'

/** Methods a failed attempt may be retried for (RFC 9110 9.2.2: idempotent). */
export const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

/** Attempts after the first, at most. */
export const MAX_RETRIES = 1

export interface AttemptVerdict {
  /** Try again (on another target when there is one). */
  readonly retry: boolean
  /** A retry may go to the same target when no other is healthy (a fresh connection may well work). */
  readonly sameTargetOk: boolean
  /** Counts toward the target's passive ejection. */
  readonly countsAgainstTarget: boolean
  /** When it is the last attempt: an error for the guard and the error rate. */
  readonly countsForGuard: boolean
  /** The coded answer when it is the last attempt. */
  readonly code: ErrorCode
  /** The upstream-error metric kind, if the failure is the upstream's. */
  readonly metric: UpstreamErrorKind | undefined
}

const CODE: Readonly<Record<FailureKind, ErrorCode>> = {
  connect: 'upstream_connect_failed',
  reset: 'upstream_error',
  timeout: 'upstream_timeout',
  protocol: 'upstream_error',
  refused: 'request_refused',
  overloaded: 'upstream_overloaded',
}

const METRIC: Readonly<Record<FailureKind, UpstreamErrorKind | undefined>> = {
  connect: 'connect_failed',
  reset: 'reset',
  timeout: 'timeout',
  protocol: 'reset',
  refused: undefined,
  overloaded: undefined,
}

/** The coded answer for a failure of this kind. */
export function errorCodeOf (kind: FailureKind): ErrorCode {
  return CODE[kind]
}

/** The upstream-error metric kind for a failure of this kind (undefined: not the upstream's failure). */
export function metricOf (kind: FailureKind): UpstreamErrorKind | undefined {
  return METRIC[kind]
}

/**
 * The attempt policy. `answered`: response bytes had arrived; `reused`: the
 * connection had served an exchange before; `hasBody`: the request has a
 * body (it cannot be sent again); `retries`: retries made so far.
 *
 * - Retried once, only when nothing was answered and the request can be sent
 *   again (idempotent, no body), and only when it cannot have reached the
 *   application: no connection, or a connection that closed under it. A
 *   timeout or a garbled answer is never retried (the request may have run).
 * - The keep-alive race (a reused connection the upstream closed as it was
 *   reused, before any answer byte) is not the target failing: it never
 *   counts toward ejection.
 * - A request the gateway cannot send, and a busy target, are not the
 *   target's fault; only the first of them is not the color's fault either.
 */
export function judgeAttempt (kind: FailureKind, answered: boolean, reused: boolean, method: string, hasBody: boolean, retries: number): AttemptVerdict {
  const beforeAnswer = !answered && (kind === 'connect' || kind === 'reset')
  const keepAliveRace = kind === 'reset' && !answered && reused
  return {
    retry: beforeAnswer && retries < MAX_RETRIES && !hasBody && IDEMPOTENT.has(method),
    sameTargetOk: kind === 'reset',
    countsAgainstTarget: !keepAliveRace && kind !== 'refused' && kind !== 'overloaded',
    countsForGuard: kind !== 'refused',
    code: CODE[kind],
    metric: METRIC[kind],
  }
}

/** What acting on a verdict touches: the color's counters and where a retry may go. */
export interface AttemptContext {
  readonly stats: { upstreamError: (kind: UpstreamErrorKind) => void }
  readonly targets: { pick: (exclude?: Endpoint) => Endpoint | undefined }
}

/**
 * Acts on a failed attempt's verdict, the same way on every engine: the
 * upstream-error metric, the count against the target, and, when the policy
 * retries and somewhere is left to go, the endpoint for the next attempt
 * (the in-flight count moved to it). Undefined: answer `verdict.code`.
 */
export function nextAttempt (verdict: AttemptVerdict, failed: Endpoint, ctx: AttemptContext): Endpoint | undefined {
  if (verdict.metric !== undefined) ctx.stats.upstreamError(verdict.metric)
  if (verdict.countsAgainstTarget) failed.target.recordResult(false)
  if (!verdict.retry) return undefined
  const next = ctx.targets.pick(failed) ?? (verdict.sameTargetOk ? failed : undefined)
  if (next === undefined) return undefined
  failed.target.inflight--
  next.target.inflight++
  return next
}

/** Socket and undici error codes that mean no connection was made. */
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
])
/** ...that the connection closed or reset under the request. */
const RESET_ERRORS = new Set(['ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE', 'UND_ERR_CLOSED'])
/** undici refusing the request itself (say, a method or target it will not send). */
const REQUEST_ERRORS = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED'])
/** ...that no answer (or no more of the body) came in time. */
const TIMEOUT_ERRORS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

/** The kind of a socket or undici error (anything else, a parse error say, is `protocol`). */
export function failureKindOf (err: Error & { code?: string }): FailureKind {
  const code = err.code ?? ''
  if (RESET_ERRORS.has(code)) return 'reset'
  if (CONNECT_ERRORS.has(code)) return 'connect'
  if (TIMEOUT_ERRORS.has(code)) return 'timeout'
  if (REQUEST_ERRORS.has(code)) return 'refused'
  return 'protocol'
}
