// Keep-alive HTTP/1.1 connections to one upstream origin for the fast path.
// A connection serves one exchange at a time (no pipelining); its socket
// events go to whichever exchange holds it, so nothing is attached per request.
// Idle ones are reused newest first and closed by one sweep per pool.

import net from 'node:net'
import tls from 'node:tls'
import type { LimitsConfig, Timeouts } from '../../config/schema.js'

/** The exchange holding a connection hears of its socket through this. */
export interface UpstreamUser {
  onUpstreamData: (chunk: Buffer) => void
  /** The upstream sent EOF (a close-delimited body ends here). */
  onUpstreamEnd: () => void
  /** The socket is gone; `err` says why when it failed. */
  onUpstreamClose: (err: (Error & { code?: string }) | undefined, reused: boolean) => void
  /** No byte moved for `timeouts.response` while the exchange waited. */
  onUpstreamTimeout: () => void
}

export interface Origin {
  tls: boolean
  host: string
  port: number
}

/** Keep-alive announced by the upstream is trusted up to this much less, as undici does. */
const KEEP_ALIVE_MARGIN_MS = 1000
const SWEEP_MS = 1000

export class UpstreamConn {
  readonly socket: net.Socket
  readonly pool: H1Pool
  user: UpstreamUser | undefined
  /** Served an exchange before: a failure before any answer may be a stale keep-alive. */
  reused = false
  connected = false
  private idleUntil = 0
  private error: (Error & { code?: string }) | undefined

  constructor (pool: H1Pool, socket: net.Socket) {
    this.pool = pool
    this.socket = socket
    socket.setNoDelay(true)
    socket.setTimeout(pool.timeouts.connect)
    socket.on('data', this.onData)
    socket.on('end', this.onEnd)
    socket.on('error', this.onError)
    socket.on('close', this.onClose)
    socket.on('timeout', this.onTimeout)
    socket.once(pool.origin.tls ? 'secureConnect' : 'connect', this.onConnect)
  }

  private readonly onConnect = (): void => {
    this.connected = true
    this.socket.setTimeout(this.pool.timeouts.response)
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.user !== undefined) this.user.onUpstreamData(chunk)
    else this.socket.destroy() // bytes nobody asked for: the connection cannot be trusted
  }

  private readonly onEnd = (): void => {
    this.pool.forget(this)
    this.user?.onUpstreamEnd()
  }

  private readonly onError = (err: Error): void => {
    this.error = err
  }

  private readonly onClose = (): void => {
    this.pool.forget(this)
    const user = this.user
    this.user = undefined
    user?.onUpstreamClose(this.error, this.reused)
  }

  private readonly onTimeout = (): void => {
    if (!this.connected) {
      this.socket.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' }))
    } else {
      this.user?.onUpstreamTimeout()
    }
  }

  /** Back to the pool after a complete exchange; `keepAliveSeconds` is what the upstream announced (0: nothing). */
  release (keepAliveSeconds: number): void {
    this.user = undefined
    this.reused = true
    if (this.socket.isPaused()) this.socket.resume()
    let idleMs = this.pool.timeouts.idleUpstream
    if (keepAliveSeconds > 0) idleMs = Math.min(idleMs, keepAliveSeconds * 1000 - KEEP_ALIVE_MARGIN_MS)
    if (idleMs <= 0 || !this.pool.keep(this)) {
      this.socket.destroy()
      return
    }
    this.idleUntil = Date.now() + idleMs
  }

  expired (now: number): boolean {
    return now >= this.idleUntil
  }
}

export class H1Pool {
  readonly origin: Origin
  readonly timeouts: Timeouts
  readonly limits: LimitsConfig
  private readonly idle: UpstreamConn[] = []
  private readonly all = new Set<UpstreamConn>()
  private sweeper: NodeJS.Timeout | undefined
  private closing = false

  constructor (origin: Origin, timeouts: Timeouts, limits: LimitsConfig) {
    this.origin = origin
    this.timeouts = timeouts
    this.limits = limits
  }

  /** An idle connection (newest first) or a new one (always, when `fresh`), held by `user`. */
  acquire (user: UpstreamUser, fresh = false): UpstreamConn {
    let conn = fresh ? undefined : this.idle.pop()
    while (conn !== undefined && (conn.socket.destroyed || !conn.socket.writable)) conn = this.idle.pop()
    if (conn === undefined) {
      const { tls: secure, host, port } = this.origin
      const socket = secure
        ? tls.connect({ host, port, servername: net.isIP(host) === 0 ? host : undefined, ALPNProtocols: ['http/1.1'] })
        : net.connect({ host, port })
      conn = new UpstreamConn(this, socket)
      this.all.add(conn)
    }
    conn.user = user
    return conn
  }

  /** Takes a connection back as idle; false when the pool is closing. */
  keep (conn: UpstreamConn): boolean {
    if (this.closing) return false
    this.idle.push(conn)
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(this.sweep, SWEEP_MS)
      this.sweeper.unref()
    }
    return true
  }

  forget (conn: UpstreamConn): void {
    this.all.delete(conn)
    const i = this.idle.indexOf(conn)
    if (i !== -1) this.idle.splice(i, 1)
  }

  private readonly sweep = (): void => {
    const now = Date.now()
    for (const conn of [...this.idle]) if (conn.expired(now)) conn.socket.destroy()
    if (this.all.size === 0) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
    }
  }

  get size (): number {
    return this.all.size
  }

  /** Closes idle connections now and busy ones as their exchanges end. */
  close (): void {
    this.closing = true
    clearInterval(this.sweeper)
    this.sweeper = undefined
    for (const conn of [...this.idle]) conn.socket.destroy()
  }

  /** Closes every connection now, failing what is in flight. */
  destroy (): void {
    this.close()
    for (const conn of [...this.all]) conn.socket.destroy()
  }
}
