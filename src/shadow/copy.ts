// One shadow copy: a live request sent again to one target over its raw
// keep-alive pool, and the answer read whole (body kept up to maxBody) for the comparison.
//
// A copy is invisible to everything that judges traffic: it never waits for
// a connection (none free: it is not sent), and it touches no target health,
// passive ejection, in-flight count, request metric or access log. Whatever
// goes wrong (a socket error, bad framing, no answer within `timeout`) ends it
// as 'failed' with its connection closed; a bug in here fails the copy, never
// the process (the pool calls in from socket events, where a throw would be uncaught).

import { HOP_BY_HOP, SHADOW_HEADER } from '../proxy/headers.js'
import { writeHeadAndBody } from '../proxy/h1/io.js'
import { ChunkedScanner, Framing, parseResponseHead, type ResponseHead } from '../proxy/h1/parse.js'
import { MAX_HEAD, MAX_INFORMATIONAL } from '../proxy/limits.js'
import type { H1Pool, UpstreamConn, UpstreamUser } from '../upstream/h1-pool.js'
import type { Endpoint } from '../upstream/target-set.js'
import { SAFE_METHODS } from '../config/schema.js'
import { answerHeaders } from './compare.js'
import type { Answer, DropReason } from './types.js'


const EMPTY = Buffer.alloc(0)
const CRLF2 = Buffer.from('\r\n\r\n')

/**
 * A body above maxBody is still read to its end, so the connection can be
 * kept, unless that means reading more than this past the cap: then the
 * connection is closed instead (its head is all that is compared anyway).
 */
const DRAIN_LIMIT = 1024 * 1024

/** Methods a copy may be sent again for on a new connection when a kept one turned out closed. */
const SAFE: ReadonlySet<string> = new Set(SAFE_METHODS)

/** Bytes kept up to a cap, in one buffer grown by doubling; past the cap nothing is kept (and `over` says so). */
export class Capped {
  private buf: Buffer | undefined = undefined
  length = 0
  over = false
  private readonly cap: number

  constructor (cap: number) {
    this.cap = cap
  }

  add (chunk: Buffer): void {
    if (this.over || chunk.length === 0) return
    const need = this.length + chunk.length
    if (need > this.cap) {
      this.over = true
      this.buf = undefined
      return
    }
    if (this.buf === undefined || need > this.buf.length) {
      // Copied, never kept by reference: an engine may reuse the buffer a chunk is a view of.
      const grown = Buffer.allocUnsafe(Math.min(this.cap, Math.max(need, 2 * (this.buf?.length ?? 0), 1024)))
      if (this.buf !== undefined) this.buf.copy(grown, 0, 0, this.length)
      this.buf = grown
    }
    chunk.copy(this.buf, this.length)
    this.length = need
  }

  /** The bytes kept; undefined once past the cap. */
  bytes (): Buffer | undefined {
    if (this.over) return undefined
    return this.buf === undefined ? EMPTY : this.buf.subarray(0, this.length)
  }
}

/** Lines the copy's head sets itself: the body's framing (the body is sent decoded, with its length), hop-by-hop ones, and the shadow mark. */
const OWN_LINES = /^(?:content-length|transfer-encoding|connection|keep-alive|x-switchyard-shadow)[ \t]*:[^\r\n]*(?:\r\n|$)/gim
const HAS_OWN_LINE = /^(?:content-length|transfer-encoding|connection|keep-alive|x-switchyard-shadow)[ \t]*:/im
const HAS_HOST = /^host[ \t]*:/im

/**
 * The copy's request head: the live request's, plus `x-switchyard-shadow: 1`,
 * with a content-length for the body when the live one had framing or a
 * body (a chunked original is sent with its decoded length), and the
 * target's host when the fields carry none (undici adds it for the node engine).
 */
export function copyHead (method: string, target: string, fields: string | readonly string[], bodyLength: number, host: string): string {
  let lines: string
  let framed = false
  let hasHost: boolean
  if (typeof fields === 'string') {
    lines = fields
    if (HAS_OWN_LINE.test(lines)) {
      framed = /^(?:content-length|transfer-encoding)[ \t]*:/im.test(lines)
      lines = lines.replace(OWN_LINES, '')
    }
    if (lines.length > 0 && !lines.endsWith('\r\n')) lines += '\r\n'
    hasHost = HAS_HOST.test(lines)
  } else {
    lines = ''
    hasHost = false
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i]
      const lower = name.toLowerCase()
      if (lower === 'content-length' || lower === 'transfer-encoding') {
        framed = true
        continue
      }
      if (HOP_BY_HOP.has(lower) || lower === SHADOW_HEADER) continue
      if (lower === 'host') hasHost = true
      lines += `${name}: ${fields[i + 1]}\r\n`
    }
  }
  let head = `${method} ${target} HTTP/1.1\r\n`
  if (!hasHost) head += `host: ${host}\r\n`
  head += lines
  if (framed || bodyLength > 0) head += `content-length: ${bodyLength}\r\n`
  return `${head}${SHADOW_HEADER}: 1\r\n\r\n`
}

/** Whether `pool` could still open a connection for someone else once a copy took one (new or idle). */
function roomLeft (pool: H1Pool): boolean {
  return pool.size + 1 < pool.limits.maxConnections
}

/** How a copy ended: the answer, or why there is none to compare. */
export type CopyDone = (result: Answer | DropReason) => void

export interface CopyOptions {
  /** Answer bodies above this many bytes are not kept (the answer's body is undefined). */
  maxBody: number
  /** The whole copy, connection to last byte, ms. */
  timeout: number
  /**
   * Sent only while the pool keeps room for one more connection after it (a
   * noise probe to the live color): a probe holding one of a live target's
   * last connections made the next live request wait for it.
   */
  leaveRoom?: boolean
}

const enum Phase { Head, Body, Done }

/** One copy request on a pooled connection of one target. */
export class ShadowCopy implements UpstreamUser {
  private readonly endpoint: Endpoint
  private readonly method: string
  private readonly head: string
  private readonly body: Buffer | undefined
  private readonly maxBody: number
  private readonly leaveRoom: boolean
  private done: CopyDone | undefined
  private conn: UpstreamConn | undefined = undefined
  private phase = Phase.Head
  private timer: NodeJS.Timeout | undefined
  /** Head bytes gathered so far (heads that arrive in pieces: rare, so simply concatenated). */
  private pending: Buffer | undefined = undefined
  private response: ResponseHead | undefined = undefined
  private remaining = 0
  private scanner: ChunkedScanner | undefined = undefined
  private kept: Capped | undefined = undefined
  /** Body bytes read past the cap and thrown away. */
  private drained = 0
  private informational = 0
  private answered = false
  private written = false
  /** A write waits for the pool's tick (see write). */
  private deferred = false
  private retried = false

  private constructor (endpoint: Endpoint, method: string, head: string, body: Buffer | undefined, opts: CopyOptions, done: CopyDone) {
    this.endpoint = endpoint
    this.method = method
    this.head = head
    this.body = body
    this.maxBody = opts.maxBody
    this.leaveRoom = opts.leaveRoom === true
    this.done = done
    this.timer = setTimeout(this.expire, opts.timeout)
    this.timer.unref()
  }

  /**
   * Sends a copy to `endpoint`: `head` (from copyHead) and `body`. False when
   * the target's pool has no connection free now: nothing was sent and `done`
   * is never called. Else `done` is called once, later, never in this call.
   */
  static send (endpoint: Endpoint, method: string, head: string, body: Buffer | undefined, opts: CopyOptions, done: CopyDone): boolean {
    const pool = endpoint.h1
    if (opts.leaveRoom === true && !roomLeft(pool)) return false
    const copy = new ShadowCopy(endpoint, method, head, body, opts, done)
    const conn = pool.acquire(copy)
    if (conn === undefined) {
      // The pool queued a wait: a copy never waits (it would take a connection a live request is about to want).
      pool.cancel(copy)
      copy.finish(undefined)
      return false
    }
    copy.conn = conn
    copy.write()
    return true
  }

  /**
   * The request goes out. A connection reused from the idle list is marked
   * `early` until its pool's turn of the event loop ends: an answer read
   * while the mark holds is taken for stale bytes and the connection closed.
   * A live exchange writes in the poll phase, so the mark is gone by the next
   * read; a copy starts from setImmediate (the check phase), where the pool's
   * tick that clears it may come only after the next poll. So the write waits
   * for that tick (queued already by the acquire, so it runs first).
   */
  private write (): void {
    const conn = this.conn
    if (conn === undefined || this.phase === Phase.Done || this.written) return
    if (conn.early) {
      if (!this.deferred) {
        this.deferred = true
        setImmediate(this.writeLater)
      }
      return
    }
    try {
      this.written = true
      writeHeadAndBody(conn.socket, this.head, this.body)
    } catch {
      // Not in this call: `send` promises its caller `done` comes later.
      setImmediate(() => this.fail())
    }
  }

  private readonly writeLater = (): void => {
    this.deferred = false
    this.write()
  }

  onUpstreamData (chunk: Buffer): void {
    // Bytes before the request was written (while the write waited for the pool's tick) answer nothing of ours:
    // stale, so the connection goes, and the copy tries once on a new one (nothing was sent: any method may).
    if (!this.written) {
      const conn = this.conn
      if (conn !== undefined) {
        conn.user = undefined
        conn.socket.destroy()
      }
      return this.onUpstreamClose(undefined, true)
    }
    this.answered = true
    try {
      if (this.phase === Phase.Body) this.onBody(chunk)
      else if (this.phase === Phase.Head) this.onHeadBytes(chunk)
    } catch {
      this.fail()
    }
  }

  private onHeadBytes (chunk: Buffer): void {
    let buf = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk])
    for (;;) {
      const end = buf.indexOf(CRLF2)
      if (end === -1 || end > MAX_HEAD) {
        if (buf.length > MAX_HEAD) return this.fail()
        this.pending = buf
        return
      }
      this.pending = undefined
      const r = parseResponseHead(buf.toString('latin1', 0, end), this.method === 'HEAD')
      if (typeof r === 'string' || r.status === 101) return this.fail()
      buf = buf.subarray(end + 4)
      if (r.status >= 200) {
        this.response = r
        this.phase = Phase.Body
        this.kept = new Capped(this.maxBody)
        if (r.framing === Framing.Length) this.remaining = r.contentLength
        else if (r.framing === Framing.Chunked) this.scanner = new ChunkedScanner(true)
        else if (r.framing === Framing.None) return this.complete(buf.length > 0)
        if (r.framing === Framing.Length && r.contentLength > this.maxBody + DRAIN_LIMIT) {
          // Too long to be worth reading to the end: compared by its head, and the connection closed.
          this.kept.over = true
          return this.complete(true)
        }
        if (buf.length > 0 || r.framing === Framing.Length) this.onBody(buf)
        return
      }
      // 1xx: the final answer is still to come; past a few, the upstream is broken.
      if (++this.informational > MAX_INFORMATIONAL) return this.fail()
      if (buf.length === 0) return
    }
  }

  private onBody (chunk: Buffer): void {
    const r = this.response as ResponseHead
    switch (r.framing) {
      case Framing.Length: {
        if (chunk.length < this.remaining) {
          this.remaining -= chunk.length
          this.keep(chunk)
          return
        }
        const n = this.remaining
        this.remaining = 0
        this.keep(n === chunk.length ? chunk : chunk.subarray(0, n))
        return this.complete(n < chunk.length)
      }
      case Framing.Chunked: {
        const scanner = this.scanner as ChunkedScanner
        const end = scanner.scan(chunk, 0)
        const parts = scanner.parts as Buffer[]
        for (const part of parts) this.keep(part)
        parts.length = 0
        if (end === -2) return this.fail()
        if (end !== -1) return this.complete(end < chunk.length)
        return
      }
      default:
        // Close-delimited: the upstream's EOF ends it (onUpstreamEnd).
        this.keep(chunk)
    }
  }

  /** Body bytes: kept up to maxBody, then counted and thrown away (too many: the answer is taken as it is and the connection closed). */
  private keep (chunk: Buffer): void {
    const kept = this.kept
    if (kept === undefined) return
    kept.add(chunk)
    if (!kept.over) return
    this.drained += chunk.length
    if (this.drained > DRAIN_LIMIT) this.complete(true)
  }

  /** The whole answer is in. `close`: the connection cannot be kept (extra bytes, or the body was not read to its end). */
  private complete (close: boolean): void {
    if (this.phase === Phase.Done) return
    const r = this.response as ResponseHead
    const conn = this.conn
    this.conn = undefined
    if (conn !== undefined) {
      // A request body still unsent (the upstream answered before reading it) would be read as the next request.
      if (close || r.close || conn.socket.writableLength > 0) {
        conn.user = undefined
        conn.socket.destroy()
      } else {
        conn.release(r.keepAliveSeconds)
      }
    }
    this.finish({ status: r.status, headers: answerHeaders(r.lines), body: (this.kept as Capped).bytes() })
  }

  onUpstreamEnd (): void {
    try {
      if (this.phase === Phase.Body && this.response?.framing === Framing.Close) this.complete(true)
    } catch {
      this.fail()
    }
  }

  onUpstreamClose (_err: (Error & { code?: string }) | undefined, reused: boolean): void {
    this.conn = undefined
    if (this.phase === Phase.Done) return
    try {
      // A kept connection the upstream closed as the copy went out (the keep-alive race): once more on a new one, when that cannot repeat a side effect.
      if (this.phase === Phase.Head && reused && !this.answered && !this.retried && (!this.written || SAFE.has(this.method))) {
        this.retried = true
        this.written = false
        const pool = this.endpoint.h1
        if (this.leaveRoom && !roomLeft(pool)) return this.fail()
        const conn = pool.acquire(this, true)
        if (conn === undefined) {
          pool.cancel(this)
          return this.fail()
        }
        this.conn = conn
        this.write()
        return
      }
    } catch {}
    this.fail()
  }

  onUpstreamTimeout (): void {
    this.fail()
  }

  onUpstreamReady (conn: UpstreamConn): void {
    // Never asked for (every wait is cancelled at once); handed back unused.
    conn.release(0)
  }

  onUpstreamOverloaded (): void {}

  private readonly expire = (): void => {
    this.timer = undefined
    this.fail()
  }

  /** The copy ends without an answer; its connection (if any) is closed, never reused. */
  private fail (): void {
    if (this.phase === Phase.Done) return
    const conn = this.conn
    this.conn = undefined
    if (conn !== undefined) {
      conn.user = undefined
      conn.socket.destroy()
    }
    this.finish('failed')
  }

  /** Settles once: the timer stops, nothing is held, `done` hears the result (undefined: never sent, nobody is told). */
  private finish (result: Answer | DropReason | undefined): void {
    this.phase = Phase.Done
    clearTimeout(this.timer)
    this.timer = undefined
    this.pending = undefined
    this.scanner = undefined
    this.kept = undefined
    const done = this.done
    this.done = undefined
    if (done === undefined || result === undefined) return
    try {
      done(result)
    } catch {}
  }
}
