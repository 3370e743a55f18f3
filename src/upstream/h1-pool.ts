// Keep-alive HTTP/1.1 connections to one upstream origin for the fast path.
// A connection serves one exchange at a time (no pipelining); its socket
// events go to whichever exchange holds it, so nothing is attached per request.
// Idle ones are reused newest first and closed by one sweep per pool; at
// `limits.maxConnections` a request waits for one, in order.
//
// Bytes an upstream sends that no request asked for (a body after a 204, 304
// or HEAD answer, more than its Content-Length, an answer out of nowhere) must
// never reach a client. Bytes in the same read as the answer are seen by the
// exchange; for later ones, a released connection "settles" for one read of
// the event loop before anyone may reuse it, it is closed if anything arrives
// while it is idle, and one reused from the idle list is closed (the request
// retried on a new connection when safe) if bytes arrive in the same turn of
// the event loop as the request was written: they were on their way before
// the request left. (A request written outside the poll phase, such as a
// pipelined one after an error, keeps that mark one turn longer: a genuine
// answer arriving within microseconds would then be retried as on a stale
// connection.) That "same turn" holds only while libuv reads every ready
// socket in one epoll batch: a batch that fills its 1024 slots is followed,
// in the same poll phase, by another, so a genuine fast answer could come
// "early". The mark is therefore set only while the fast engine holds fewer
// than EARLY_MARK_LIMIT sockets (client and upstream, counted in `heldSockets`),
// which leaves room for node:http's, the admin's and other descriptors.
// Above it, those in-flight bytes go unnoticed (the residual below); what
// node:http holds beyond that room is not counted.
//
// Residual limit: bytes an upstream sends later than that (say, a separate
// write its Nagle algorithm holds back until the gateway's next packet
// acknowledges the answer), once the next request is on its way, cannot be
// told from that request's answer (HTTP/1.1 has no request ids); they are
// taken as its answer, and the real answer that follows them closes the
// connection.

import net from 'node:net'
import tls from 'node:tls'
import type { LimitsConfig, Timeouts } from '../config/schema.js'

/** The exchange holding a connection hears of its socket through this. */
export interface UpstreamUser {
  onUpstreamData: (chunk: Buffer) => void
  /** The upstream sent EOF (a close-delimited body ends here). */
  onUpstreamEnd: () => void
  /** The socket is gone; `err` says why when it failed. */
  onUpstreamClose: (err: (Error & { code?: string }) | undefined, reused: boolean) => void
  /** No byte moved for `timeouts.response` while the exchange waited. */
  onUpstreamTimeout: () => void
  /** A connection for an `acquire` that had to wait. */
  onUpstreamReady: (conn: UpstreamConn) => void
  /** Waited `timeouts.connect` for a connection and got none. */
  onUpstreamOverloaded: () => void
}

interface Waiter {
  user: UpstreamUser
  timer: NodeJS.Timeout
}

/** What a connection that sent bytes nobody asked for is closed with. */
function unsolicited (): Error & { code: string } {
  return Object.assign(new Error('the upstream sent bytes no request asked for'), { code: 'UND_ERR_SOCKET' })
}

export interface Origin {
  tls: boolean
  host: string
  port: number
}

/** Keep-alive announced by the upstream is trusted up to this much less, as undici does. */
const KEEP_ALIVE_MARGIN_MS = 1000
const SWEEP_MS = 1000

/** Sockets the fast engine holds now: client connections (handed-off ones until they close) and upstream ones across pools. */
export const heldSockets = { count: 0 }

/**
 * Below this many held sockets, no epoll batch (1024 events in libuv) can fill,
 * so a reused connection's `early` mark is exact; at or above it, none is set.
 */
export let EARLY_MARK_LIMIT = 512

/** For tests: the held-socket count from which `early` is no longer set. */
export function setEarlyMarkLimit (n: number): void {
  EARLY_MARK_LIMIT = n
}

export class UpstreamConn {
  readonly socket: net.Socket
  readonly pool: H1Pool
  user: UpstreamUser | undefined
  /** Served an exchange before: a failure before any answer may be a stale keep-alive. */
  reused = false
  connected = false
  /** The pool's turn in which it was reused; see `early`. */
  private reusedIn = -1
  private idleUntil = 0
  private error: (Error & { code?: string }) | undefined

  constructor (pool: H1Pool, socket: net.Socket) {
    this.pool = pool
    this.socket = socket
    heldSockets.count++
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
    const user = this.user
    if (user !== undefined && this.reusedIn !== this.pool.turn) return user.onUpstreamData(chunk)
    // Bytes nobody asked for: the connection cannot be trusted, and they go nowhere.
    this.socket.destroy(user === undefined ? undefined : unsolicited())
  }

  private readonly onEnd = (): void => {
    this.pool.forget(this)
    this.user?.onUpstreamEnd()
  }

  private readonly onError = (err: Error): void => {
    this.error = err
  }

  private readonly onClose = (): void => {
    heldSockets.count--
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
    // An exchange may have timed its body by timeouts.body: the next one waits for its head by timeouts.response.
    if (this.socket.timeout !== this.pool.timeouts.response) this.socket.setTimeout(this.pool.timeouts.response)
    let idleMs = this.pool.timeouts.idleUpstream
    if (keepAliveSeconds > 0) idleMs = Math.min(idleMs, keepAliveSeconds * 1000 - KEEP_ALIVE_MARGIN_MS)
    if (idleMs <= 0 || this.pool.closing) {
      this.socket.destroy()
      return
    }
    this.idleUntil = Date.now() + idleMs
    this.pool.settle(this)
  }

  /** Reused in this turn of the event loop: a byte now was sent before the request could arrive. */
  get early (): boolean {
    return this.reusedIn === this.pool.turn
  }

  /** Marks the connection reused now (until the pool's turn ends). */
  markEarly (): void {
    this.reusedIn = this.pool.turn
  }

  expired (now: number): boolean {
    return now >= this.idleUntil
  }
}

export class H1Pool {
  readonly origin: Origin
  readonly timeouts: Timeouts
  readonly limits: LimitsConfig
  closing = false
  private readonly idle: UpstreamConn[] = []
  private readonly all = new Set<UpstreamConn>()
  /**
   * Turns of the event loop this pool has seen end (its check phase): a
   * connection reused in the current one is `early`, so ending the turn
   * clears every mark at once, with no list of them.
   */
  turn = 0
  /** Released in this turn of the event loop, and in the one before: not yet reusable. */
  private settling: UpstreamConn[] = []
  private settled: UpstreamConn[] = []
  /** An empty list the two above take turns with (no array is made per turn). */
  private spare: UpstreamConn[] = []
  private ticking = false
  /** Requests waiting for a connection, first come first served. */
  private readonly waiters: Waiter[] = []
  private sweeper: NodeJS.Timeout | undefined

  constructor (origin: Origin, timeouts: Timeouts, limits: LimitsConfig) {
    this.origin = origin
    this.timeouts = timeouts
    this.limits = limits
  }

  /**
   * An idle connection (newest first) or a new one (always, when `fresh`),
   * held by `user`. Undefined when `limits.maxConnections` are all busy: the
   * pool calls `user.onUpstreamReady` or `user.onUpstreamOverloaded` later.
   */
  acquire (user: UpstreamUser, fresh = false): UpstreamConn | undefined {
    let conn = fresh ? undefined : this.idle.pop()
    while (conn !== undefined && (conn.socket.destroyed || !conn.socket.writable)) conn = this.idle.pop()
    if (conn !== undefined) {
      // Exact only while no epoll batch can fill (see the header); above that, not set.
      if (heldSockets.count < EARLY_MARK_LIMIT) {
        conn.markEarly()
        this.schedule()
      }
    } else {
      if (this.all.size >= this.limits.maxConnections) {
        // A fresh connection is wanted: an idle one makes room for it.
        const oldest = this.idle.shift()
        if (oldest === undefined) {
          this.wait(user)
          return undefined
        }
        this.all.delete(oldest)
        oldest.socket.destroy()
      }
      conn = this.open()
    }
    conn.user = user
    return conn
  }

  private open (): UpstreamConn {
    const { tls: secure, host, port } = this.origin
    const socket = secure
      ? tls.connect({ host, port, servername: net.isIP(host) === 0 ? host : undefined, ALPNProtocols: ['http/1.1'] })
      : net.connect({ host, port })
    const conn = new UpstreamConn(this, socket)
    this.all.add(conn)
    return conn
  }

  private wait (user: UpstreamUser): void {
    const waiter: Waiter = {
      user,
      timer: setTimeout(() => {
        const i = this.waiters.indexOf(waiter)
        if (i !== -1) this.waiters.splice(i, 1)
        user.onUpstreamOverloaded()
      }, this.timeouts.connect),
    }
    this.waiters.push(waiter)
  }

  /** `user` no longer wants the connection it waits for. */
  cancel (user: UpstreamUser): void {
    const i = this.waiters.findIndex((w) => w.user === user)
    if (i === -1) return
    clearTimeout(this.waiters[i].timer)
    this.waiters.splice(i, 1)
  }

  /** A released connection: reusable once the event loop has read its socket again. */
  settle (conn: UpstreamConn): void {
    this.settling.push(conn)
    this.schedule()
  }

  private schedule (): void {
    if (this.ticking) return
    this.ticking = true
    setImmediate(this.tick)
  }

  /** The end of a turn of the event loop (its check phase, after the poll that read the sockets). */
  private readonly tick = (): void => {
    this.ticking = false
    this.turn++
    // Released two turns ago: a poll has read their sockets since, and found nothing, or they are closed.
    const ready = this.settled
    this.settled = this.settling
    this.settling = this.spare
    for (const conn of ready) {
      if (conn.socket.destroyed || conn.user !== undefined || !this.all.has(conn)) continue
      if (this.closing) {
        conn.socket.destroy()
        continue
      }
      const waiter = this.waiters.shift()
      if (waiter !== undefined) {
        this.handOver(waiter, conn)
        continue
      }
      this.idle.push(conn)
      if (this.sweeper === undefined) {
        this.sweeper = setInterval(this.sweep, SWEEP_MS)
        this.sweeper.unref()
      }
    }
    ready.length = 0
    this.spare = ready
    if (this.settled.length > 0) this.schedule()
  }

  forget (conn: UpstreamConn): void {
    if (!this.all.delete(conn)) return
    const i = this.idle.indexOf(conn)
    if (i !== -1) this.idle.splice(i, 1)
    // Room for a new connection: the first waiter gets it.
    if (this.waiters.length > 0 && this.all.size < this.limits.maxConnections) this.handOver(this.waiters.shift() as Waiter, this.open())
  }

  /** A waiting request gets `conn`; its overload deadline no longer runs. */
  private handOver (waiter: Waiter, conn: UpstreamConn): void {
    clearTimeout(waiter.timer)
    conn.user = waiter.user
    waiter.user.onUpstreamReady(conn)
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
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer)
      w.user.onUpstreamOverloaded()
    }
    for (const conn of [...this.all]) conn.socket.destroy()
  }
}
