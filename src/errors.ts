// One catalogue of coded errors: every error the gateway or the admin API
// answers with has a stable code and HTTP status defined here, rendered in one place.

import { randomBytes } from 'node:crypto'
import { STATUS_CODES, type ServerResponse } from 'node:http'
import { log } from './log.js'

export interface ErrorSpec {
  readonly status: number
  readonly message: string
}

export const ERRORS = {
  // Data plane (docs/admin-api.md, "Data-plane errors").
  no_route: { status: 404, message: 'no route matches this request' },
  no_healthy_upstream: { status: 503, message: 'no healthy upstream for this service and color' },
  upstream_connect_failed: { status: 502, message: 'could not connect to the upstream' },
  upstream_timeout: { status: 504, message: 'the upstream did not answer in time' },
  upstream_error: { status: 502, message: 'the upstream connection failed' },
  request_refused: { status: 400, message: 'this request cannot be forwarded' },
  upstream_overloaded: { status: 503, message: 'every connection to the upstream is busy' },
  request_timeout: { status: 408, message: 'the request was not received in time' },
  header_too_large: { status: 431, message: 'request head too large' },
  upgrade_refused: { status: 400, message: 'only complete WebSocket handshakes are upgraded' },
  // Admin API.
  bad_request: { status: 400, message: 'bad request' },
  config_invalid: { status: 400, message: 'the config file is invalid' },
  unauthorized: { status: 401, message: 'missing or wrong bearer token' },
  forbidden_origin: { status: 403, message: 'cross-origin requests are not accepted' },
  forbidden_host: { status: 403, message: 'this Host is not one the admin API answers to' },
  not_found: { status: 404, message: 'not found' },
  unknown_service: { status: 404, message: 'unknown service' },
  method_not_allowed: { status: 405, message: 'method not allowed' },
  live_color: { status: 409, message: 'that color is live' },
  no_targets: { status: 409, message: 'that color has no targets' },
  nothing_to_roll_back: { status: 409, message: 'nothing to roll back' },
  gate_failed: { status: 409, message: 'the new color did not pass the gate' },
  release_in_progress: { status: 409, message: 'a running release holds that service' },
  release_state: { status: 409, message: 'the release is not in a phase that allows this' },
  stale_generation: { status: 412, message: 'ifGeneration does not match the current generation' },
  payload_too_large: { status: 413, message: 'request body too large' },
  unsupported_media_type: { status: 415, message: 'send application/json' },
  state_write_failed: { status: 500, message: 'could not persist the state file' },
  event_write_failed: { status: 500, message: 'could not persist the event log' },
  store_unavailable: { status: 503, message: 'the state store (etcd) cannot be reached; nothing changed' },
  internal: { status: 500, message: 'internal error' },
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERRORS

/** A coded error: handlers throw it, one renderer turns it into a response. */
export class SwitchyardError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly details: Record<string, unknown> | undefined

  constructor (code: ErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? ERRORS[code].message)
    this.name = 'SwitchyardError'
    this.code = code
    this.status = ERRORS[code].status
    this.details = details
  }

  toJSON (): Record<string, unknown> {
    return { error: this.code, message: this.message, ...this.details }
  }
}

/** The JSON body for an error code; data-plane errors are pre-rendered once. */
export function errorBody (code: ErrorCode, message?: string): string {
  return JSON.stringify({ error: code, message: message ?? ERRORS[code].message })
}

/**
 * A coded JSON error as raw HTTP/1.1 text, for sockets no ServerResponse
 * speaks on (the fast engine, a refused upgrade, a request node:http gave up
 * on); `bytes` is the body's size. To a HEAD request (`method`), the head
 * alone (RFC 9110 9.3.2).
 */
export function rawError (code: ErrorCode, close: boolean, message?: string, method?: string): { text: string, bytes: number } {
  const status = ERRORS[code].status
  const body = errorBody(code, message)
  const bytes = Buffer.byteLength(body)
  return {
    text: `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${bytes}\r\n${close ? 'connection: close\r\n' : ''}\r\n${method === 'HEAD' ? '' : body}`,
    bytes: method === 'HEAD' ? 0 : bytes,
  }
}

/**
 * A coded JSON error on a node:http response (the node engine); returns the
 * body's size, or 0 when the head had gone out and the response could only
 * be cut. `close` ends the connection after it (a request body may still be
 * coming and is not worth reading).
 */
export function writeError (res: ServerResponse, code: ErrorCode, message?: string, close = false): number {
  if (res.headersSent) {
    res.destroy()
    return 0
  }
  const body = errorBody(code, message)
  const size = Buffer.byteLength(body)
  if (close) res.shouldKeepAlive = false
  res.writeHead(ERRORS[code].status, { 'content-type': 'application/json', 'content-length': size })
  res.end(body)
  return size
}

/** Logs an unexpected error under the id its answer carries. */
export type InternalReport = (id: string, err: unknown) => void

const logInternal: InternalReport = (id, err) => {
  log('error', 'internal error', { id, error: err instanceof Error ? err.message : String(err), ...(err instanceof Error && err.stack !== undefined ? { stack: err.stack } : {}) })
}

/**
 * Any thrown value as a SwitchyardError. An unknown error becomes `internal`
 * with a fixed message: its own text (a path, a stack, a peer's words) is for
 * the log, never for the client; the answer carries the id of the log line.
 */
export function toSwitchyardError (err: unknown, report: InternalReport = logInternal): SwitchyardError {
  if (err instanceof SwitchyardError) return err
  const id = randomBytes(8).toString('hex')
  report(id, err)
  return new SwitchyardError('internal', ERRORS.internal.message, { id })
}
