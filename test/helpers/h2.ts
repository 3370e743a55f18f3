// An HTTP/2 test client: one session per test, closed at teardown, and one
// request collecting what the client sees (head, 1xx heads, data, trailers, reset code).

import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'

interface Teardown { teardown: (fn: () => unknown) => void }

export interface H2Reply {
  /** The final head's :status; 0 when the stream closed without one. */
  status: number
  /** The final head; {} without one. */
  headers: IncomingHttpHeaders
  /** Informational heads (103; node reports a 100 as 'continue' instead), in order. */
  informational: IncomingHttpHeaders[]
  body: Buffer
  trailers: IncomingHttpHeaders | undefined
  /** The stream's RST_STREAM code when it closed (NGHTTP2_NO_ERROR for a clean end). */
  rstCode: number
  /** The client's request body went out completely at this time (performance.now()); 0 without one. */
  sentAt: number
  /** What the stream emitted as 'error', if it did. */
  error: Error | undefined
}

/** One HTTP/2 session to `url`; its errors are the tests' to look at, not crashes. */
export function h2Session (t: Teardown, url: string): ClientHttp2Session {
  const session = http2.connect(url)
  session.on('error', () => {})
  t.teardown(() => { session.destroy() })
  return session
}

/**
 * One request on `session` (POST when there is a body): what came back when the stream
 * closed, reset or not. `onSent` runs when the body has gone out completely, `onHead` when the
 * answer's head arrives.
 */
export async function h2Call (session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}, body?: Buffer | string, onSent?: () => void, onHead?: () => void): Promise<H2Reply> {
  return await new Promise((resolve) => {
    const req = session.request({ ':path': path, ':method': body === undefined ? 'GET' : 'POST', ...headers }, { endStream: body === undefined })
    let head: IncomingHttpHeaders | undefined
    let trailers: IncomingHttpHeaders | undefined
    let error: Error | undefined
    let sentAt = 0
    const informational: IncomingHttpHeaders[] = []
    const chunks: Buffer[] = []
    req.on('headers', (h) => informational.push(h))
    req.on('response', (h) => { head = h; onHead?.() })
    req.on('trailers', (h) => { trailers = h })
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('error', (err) => { error = err })
    req.on('close', () => resolve({
      status: Number(head?.[':status'] ?? 0),
      headers: head ?? {},
      informational,
      body: Buffer.concat(chunks),
      trailers,
      rstCode: req.rstCode ?? 0,
      sentAt,
      error,
    }))
    if (body !== undefined) req.end(body, () => { sentAt = performance.now(); onSent?.() })
  })
}

/**
 * As h2Call, for a request expected to end cleanly: rejects when the stream closed without
 * a head, was reset, or failed. The message names the RST_STREAM code (`code 8`) and node's error.
 */
export async function h2Request (session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}, body?: Buffer | string, onSent?: () => void, onHead?: () => void): Promise<H2Reply> {
  const r = await h2Call(session, path, headers, body, onSent, onHead)
  if (r.status === 0 || r.rstCode !== http2.constants.NGHTTP2_NO_ERROR || r.error !== undefined) {
    throw new Error(`stream closed with code ${r.rstCode}${r.error === undefined ? '' : ` (${r.error.message})`}`)
  }
  return r
}
