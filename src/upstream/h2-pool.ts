// HTTP/2 sessions to one upstream origin (services with protocol h2c or h2).
// One session carries many streams; it is opened on first use, and another
// is opened when every open one has as many streams as its peer allows
// (SETTINGS_MAX_CONCURRENT_STREAMS), up to `limits.maxConnections` sessions.
// A session that got GOAWAY, closed or failed takes no new stream (the ones
// already open on it finish); the next request opens a fresh one. A session
// with no stream for `timeouts.idleUpstream` is closed.

import http2 from 'node:http2'
import net from 'node:net'
import type { LimitsConfig, Timeouts } from '../config/schema.js'
import type { Origin } from './h1-pool.js'

/** Streams assumed allowed on a session whose peer has not sent its SETTINGS yet (RFC 9113 6.5.2 recommends at least 100). */
const ASSUMED_STREAMS = 100

/** One session and what the pool knows of it. */
export class H2Session {
  readonly session: http2.ClientHttp2Session
  readonly pool: H2Pool
  /** Streams open on it now. */
  active = 0
  /** The TCP (and TLS) handshake finished and the peer's preface arrived. */
  connected = false
  /** Takes no new stream: GOAWAY received, closed, failed, or closing when idle. */
  done = false
  /** Served a stream before this one: a failure may be the session going away, not the target. */
  used = false
  /** Why it failed, when it did (a stream that fails with it reads this). */
  error: (Error & { code?: string }) | undefined
  private connectTimer: NodeJS.Timeout | undefined
  private idleTimer: NodeJS.Timeout | undefined

  constructor (pool: H2Pool) {
    this.pool = pool
    const { tls, host, port } = pool.origin
    const authority = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`
    this.session = http2.connect(authority, {
      // h2: TLS with ALPN h2 and SNI from the host name, as the HTTP/1.1 pool sends it; h2c: prior knowledge (no upgrade).
      ...(tls ? { servername: net.isIP(host) === 0 ? host : undefined, ALPNProtocols: ['h2'], ...pool.tlsOptions } : {}),
      // node's default session memory (maxSessionMemory, 10 MB of outstanding frames): set lower, a busy session would be cut with ENHANCE_YOUR_CALM.
    })
    const s = this.session
    this.connectTimer = setTimeout(this.onConnectTimeout, pool.timeouts.connect)
    s.once('connect', this.onConnect)
    s.once('goaway', this.retire)
    s.on('error', this.onError)
    s.once('close', this.onClose)
    // A session never keeps the process up by itself (the gateway's stop closes them).
    s.unref()
  }

  private readonly onConnect = (): void => {
    this.connected = true
    clearTimeout(this.connectTimer)
    this.connectTimer = undefined
  }

  /** No session within timeouts.connect: its streams fail as a connect failure. */
  private readonly onConnectTimeout = (): void => {
    this.connectTimer = undefined
    if (this.connected) return
    this.error = Object.assign(new Error(`no HTTP/2 connection to ${this.pool.url} within ${this.pool.timeouts.connect}ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' })
    this.session.destroy(this.error)
  }

  private readonly onError = (err: Error & { code?: string }): void => {
    this.error ??= err
    this.retire()
  }

  private readonly onClose = (): void => {
    clearTimeout(this.connectTimer)
    clearTimeout(this.idleTimer)
    this.retire()
  }

  /** Takes no more streams; open ones go on to their end. */
  readonly retire = (): void => {
    if (this.done) return
    this.done = true
    this.pool.forget(this)
  }

  /** How many streams the peer allows at once (assumed until its SETTINGS arrive). */
  get limit (): number {
    const max = this.session.remoteSettings.maxConcurrentStreams
    return !this.connected || max === undefined ? ASSUMED_STREAMS : max
  }

  get hasRoom (): boolean {
    return !this.done && !this.session.destroyed && this.active < this.limit
  }

  /** A stream starts on it. */
  take (): void {
    this.active++
    if (this.idleTimer !== undefined) {
      clearTimeout(this.idleTimer)
      this.idleTimer = undefined
    }
  }

  /** A stream on it ended; the last one starts the idle clock (or closes a retired session). */
  release (): void {
    this.active--
    this.used = true
    if (this.pool.waiting > 0) this.pool.serveWaiters()
    if (this.active > 0) return
    if (this.done) {
      if (!this.session.closed) this.session.close()
      return
    }
    const idle = this.pool.timeouts.idleUpstream
    if (idle > 0) {
      this.idleTimer = setTimeout(this.onIdle, idle)
      this.idleTimer.unref()
    }
  }

  private readonly onIdle = (): void => {
    this.idleTimer = undefined
    if (this.active > 0) return
    this.retire()
    this.session.close()
  }
}

interface Waiter {
  fn: (s: H2Session | undefined) => void
  timer: NodeJS.Timeout
}

export class H2Pool {
  readonly origin: Origin
  readonly url: string
  readonly timeouts: Timeouts
  readonly limits: LimitsConfig
  /** Extra TLS options for h2 (tests trust their own CA with `ca`). */
  readonly tlsOptions: { ca?: string | Buffer } | undefined
  /** Sessions that take new streams, oldest first. */
  private readonly open: H2Session[] = []
  /** Every session not yet closed, retired ones included (close/destroy reach them). */
  private readonly all = new Set<H2Session>()
  /** Requests waiting for a stream slot, in order (every session full at limits.maxConnections). */
  private readonly waiters: Waiter[] = []
  private closed = false

  constructor (url: string, origin: Origin, timeouts: Timeouts, limits: LimitsConfig, tlsOptions?: { ca?: string | Buffer }) {
    this.url = url
    this.origin = origin
    this.timeouts = timeouts
    this.limits = limits
    this.tlsOptions = tlsOptions
  }

  /**
   * A session with room for one more stream (the caller `take`s it), opening
   * one when every session is full; undefined when `limits.maxConnections`
   * sessions are all full (then `wait`) or the pool is closed.
   */
  acquire (): H2Session | undefined {
    if (this.closed) return undefined
    for (const s of this.open) if (s.hasRoom) return s
    if (this.all.size >= this.limits.maxConnections) return undefined
    const s = new H2Session(this)
    this.open.push(s)
    this.all.add(s)
    s.session.once('close', () => {
      this.all.delete(s)
      // Room for a new session now.
      if (this.waiters.length > 0) this.serveWaiters()
    })
    return s
  }

  /**
   * Waits, in order, for a session with room, up to `timeouts.connect` (as the
   * HTTP/1.1 pool waits for a connection); `fn` gets it (and must `take` it at
   * once) or undefined when the wait ran out. Returns the cancel.
   */
  wait (fn: (s: H2Session | undefined) => void): () => void {
    const waiter: Waiter = {
      fn,
      timer: setTimeout(() => {
        this.dropWaiter(waiter)
        fn(undefined)
      }, this.timeouts.connect),
    }
    this.waiters.push(waiter)
    return () => {
      clearTimeout(waiter.timer)
      this.dropWaiter(waiter)
    }
  }

  get waiting (): number {
    return this.waiters.length
  }

  private dropWaiter (w: Waiter): void {
    const i = this.waiters.indexOf(w)
    if (i !== -1) this.waiters.splice(i, 1)
  }

  /** A stream slot or a session's place came free: the first waiters get sessions while there is room. */
  serveWaiters (): void {
    while (this.waiters.length > 0) {
      const s = this.acquire()
      if (s === undefined) return
      const w = this.waiters.shift() as Waiter
      clearTimeout(w.timer)
      w.fn(s)
    }
  }

  /** Sessions that take no more streams leave the open list. */
  forget (s: H2Session): void {
    const i = this.open.indexOf(s)
    if (i !== -1) this.open.splice(i, 1)
    if (s.active === 0 && !s.session.closed) s.session.close()
  }

  /** Sessions not yet closed (tests). */
  get size (): number {
    return this.all.size
  }

  /** Waiting requests get no session (the pool is closing). */
  private failWaiters (): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer)
      w.fn(undefined)
    }
  }

  /** GOAWAY to every session: each closes once its open streams finish. */
  close (): void {
    this.closed = true
    this.failWaiters()
    for (const s of [...this.all]) {
      s.retire()
      if (!s.session.closed) s.session.close()
    }
  }

  /** Every session now, failing whatever is still open on it. */
  destroy (): void {
    this.closed = true
    this.failWaiters()
    for (const s of [...this.all]) {
      s.retire()
      s.session.destroy()
    }
    this.all.clear()
  }
}
