// The gRPC health protocol (grpc.health.v1.Health/Check), by hand: its two
// messages have one field each, not worth a protobuf library.
//
//   message HealthCheckRequest { string service = 1; }
//   message HealthCheckResponse { enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; } ServingStatus status = 1; }
//
// On the wire each message is a gRPC frame: a compressed flag byte, a 4-byte
// big-endian length, then the protobuf bytes.

import http2 from 'node:http2'
import net from 'node:net'

/** The user-agent every health probe sends, HTTP and gRPC alike, so an upstream's logs can tell probes from traffic. */
export const PROBE_USER_AGENT = 'switchyard-health'

export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check'

/** The most of a health answer a probe reads (a HealthCheckResponse is about 7 bytes). */
const MAX_HEALTH_ANSWER = 64 * 1024

export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const

const STATUS_NAMES = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN']

/** The name of a ServingStatus value, as grpc's docs spell it. */
export function servingStatusName (status: number): string {
  return STATUS_NAMES[status] ?? `status ${status}`
}

function varint (n: number): number[] {
  const out: number[] = []
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  out.push(n)
  return out
}

/** A HealthCheckRequest for `service` ('' : the server as a whole), framed for gRPC. */
export function encodeHealthCheckRequest (service: string): Buffer {
  const name = Buffer.from(service, 'utf8')
  // proto3 leaves a default (empty) string out of the message.
  const message = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, ...varint(name.length)]), name])
  const frame = Buffer.alloc(5 + message.length)
  frame.writeUInt32BE(message.length, 1)
  message.copy(frame, 5)
  return frame
}

/** Reads a varint at `pos`; returns it and where the next field starts. */
function readVarint (buf: Buffer, pos: number): [number, number] {
  let value = 0
  let shift = 0
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated varint')
    const b = buf[pos++]
    // Values past 2^53 do not fit a number; no enum here is that large, so only the low bits matter.
    if (shift < 49) value += (b & 0x7f) * 2 ** shift
    shift += 7
    if ((b & 0x80) === 0) return [value, pos]
    if (shift > 63) throw new Error('varint longer than 10 bytes')
  }
}

/**
 * The status of a framed HealthCheckResponse (the first message of `body`).
 * Unknown fields are skipped, as protobuf readers must; a missing status is
 * UNKNOWN (proto3's default). Throws on a compressed or malformed message.
 */
export function decodeHealthCheckResponse (body: Buffer): number {
  if (body.length < 5) throw new Error(`a gRPC message needs a 5-byte frame header, got ${body.length} bytes`)
  if (body[0] !== 0) throw new Error('compressed health answer (the probe asks for none)')
  const len = body.readUInt32BE(1)
  if (body.length < 5 + len) throw new Error(`gRPC message of ${len} bytes cut off at ${body.length - 5}`)
  const msg = body.subarray(5, 5 + len)
  let status: number = ServingStatus.UNKNOWN
  let pos = 0
  while (pos < msg.length) {
    let key: number
    [key, pos] = readVarint(msg, pos)
    const field = Math.floor(key / 8)
    const wire = key & 7
    if (wire === 0) {
      let v: number
      [v, pos] = readVarint(msg, pos)
      if (field === 1) status = v
    } else if (wire === 1) {
      pos += 8
    } else if (wire === 2) {
      let n: number
      [n, pos] = readVarint(msg, pos)
      pos += n
    } else if (wire === 5) {
      pos += 4
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}`)
    }
    if (pos > msg.length) throw new Error('truncated protobuf field')
  }
  return status
}

/** What one probe found: `ok` only for grpc-status 0 with SERVING. */
export interface ProbeResult {
  ok: boolean
  detail: string
}

/**
 * HTTP/2 sessions for gRPC probes, one per target origin, kept between
 * probes (a probe must not cost a handshake) and replaced when one goes away.
 */
export class GrpcProbeSessions {
  private readonly sessions = new Map<string, http2.ClientHttp2Session>()
  private readonly failures = new WeakMap<http2.ClientHttp2Session, string>()
  private readonly tls: () => { ca?: string | Buffer } | undefined

  /** `tls`: extra TLS options for h2 targets (tests trust their own CA). */
  constructor (tls: () => { ca?: string | Buffer } | undefined = () => undefined) {
    this.tls = tls
  }

  private session (origin: string): http2.ClientHttp2Session {
    const had = this.sessions.get(origin)
    if (had !== undefined && !had.closed && !had.destroyed) return had
    const u = new URL(origin)
    const host = u.hostname.replace(/^\[|\]$/g, '')
    const s = http2.connect(origin, u.protocol === 'https:' ? { servername: net.isIP(host) === 0 ? host : undefined, ALPNProtocols: ['h2'], ...this.tls() } : {})
    // A failed connection fails its streams first, then the session says why: the probe reports the session's reason.
    s.on('error', (err: Error & { code?: string }) => { this.failures.set(s, err.code ?? err.message) })
    const forget = (): void => { if (this.sessions.get(origin) === s) this.sessions.delete(origin) }
    s.once('close', forget)
    s.once('goaway', forget)
    s.unref()
    this.sessions.set(origin, s)
    return s
  }

  /** One Health/Check of `service` on `origin` within `timeout` ms. */
  async check (origin: string, service: string, timeout: number): Promise<ProbeResult> {
    const what = service === '' ? 'gRPC health' : `gRPC health of ${service}`
    return await new Promise<ProbeResult>((resolve) => {
      let settled = false
      let stream: http2.ClientHttp2Stream | undefined
      const session = this.session(origin)
      const done = (r: ProbeResult): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        if (stream !== undefined && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL)
        resolve(r)
      }
      const timer = setTimeout(() => {
        // A session that never connected is not worth keeping for the next probe.
        if (session.connecting) session.destroy()
        done({ ok: false, detail: `${what} timed out after ${timeout}ms` })
      }, timeout)
      try {
        stream = session.request({
          ':method': 'POST',
          ':path': HEALTH_CHECK_PATH,
          'content-type': 'application/grpc',
          te: 'trailers',
          'user-agent': PROBE_USER_AGENT,
          'grpc-timeout': `${timeout}m`,
        })
      } catch (err) {
        done({ ok: false, detail: `${what}: ${(err as Error).message}` })
        return
      }
      const chunks: Buffer[] = []
      let grpcStatus: string | undefined
      let grpcMessage: string | undefined
      let httpStatus = 0
      stream.on('response', (h, flags: number) => {
        httpStatus = h[':status'] ?? 0
        // A status in the head counts only in a trailers-only answer (the head ends the stream), as gRPC clients read it:
        // a head saying 0, a message, then no trailers (or a reset) is no answer.
        if ((flags & http2.constants.NGHTTP2_FLAG_END_STREAM) === 0) return
        if (typeof h['grpc-status'] === 'string') grpcStatus = h['grpc-status']
        if (typeof h['grpc-message'] === 'string') grpcMessage = h['grpc-message']
      })
      stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
        if (typeof t['grpc-status'] === 'string') grpcStatus = t['grpc-status']
        if (typeof t['grpc-message'] === 'string') grpcMessage = t['grpc-message']
      })
      let received = 0
      stream.on('data', (c: Buffer) => {
        // A HealthCheckResponse is a few bytes: a target streaming more is broken, and is not held in memory.
        if ((received += c.length) > MAX_HEALTH_ANSWER) return done({ ok: false, detail: `${what}: answer larger than ${MAX_HEALTH_ANSWER} bytes` })
        chunks.push(c)
      })
      stream.on('error', (err: Error & { code?: string }) => {
        setImmediate(() => done({ ok: false, detail: `${what}: ${this.failures.get(session) ?? err.code ?? err.message}` }))
      })
      stream.once('end', () => {
        if (httpStatus !== 200) return done({ ok: false, detail: `${what} answered HTTP ${httpStatus}` })
        if (grpcStatus !== '0') return done({ ok: false, detail: `${what} answered grpc-status ${grpcStatus ?? 'none'}${grpcMessage === undefined ? '' : ` (${readable(grpcMessage)})`}` })
        let status: number
        try {
          status = decodeHealthCheckResponse(Buffer.concat(chunks))
        } catch (err) {
          return done({ ok: false, detail: `${what}: ${(err as Error).message}` })
        }
        done({ ok: status === ServingStatus.SERVING, detail: `${what} is ${servingStatusName(status)}` })
      })
      stream.once('close', () => {
        // After 'error' (which waits a turn for the session's reason) and 'end', when neither came.
        setImmediate(() => setImmediate(() => done({ ok: false, detail: `${what}: ${this.failures.get(session) ?? 'stream closed without an answer'}` })))
      })
      stream.end(encodeHealthCheckRequest(service))
    })
  }

  /** A target no longer probed: its session goes. */
  forget (origin: string): void {
    const s = this.sessions.get(origin)
    if (s === undefined) return
    this.sessions.delete(origin)
    s.close()
  }

  close (): void {
    for (const s of [...this.sessions.values()]) s.destroy()
    this.sessions.clear()
  }
}

/** grpc-message is percent-encoded; a malformed one is shown as sent. */
function readable (message: string): string {
  try {
    return decodeURIComponent(message)
  } catch {
    return message
  }
}
