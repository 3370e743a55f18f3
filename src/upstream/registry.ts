// Runtime state that must outlive any one snapshot: targets keyed by URL
// (connection pools, active and passive health, in-flight) and per service/color counters.

import { Client, Pool, type Dispatcher } from 'undici'
import { H1Pool } from './h1-pool.js'
import { H2Pool } from './h2-pool.js'
import type { Color, HealthConfig, PassiveConfig, LimitsConfig, Timeouts } from '../config/schema.js'
import { closeSpread, ColorStats, type Observers } from './color-stats.js'
import { guardedConnector } from './end-guard.js'

export { ColorStats } from './color-stats.js'
export type { Closable, EmptyWatcher, OutcomeWatcher } from './color-stats.js'

/** The connection (undici Client) each dispatch through a target's pool went out on, by its options object. */
const usedClient = new WeakMap<object, Dispatcher>()

/** A pool connection that remembers which dispatches it took. */
class TrackedClient extends Client {
  override dispatch (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    usedClient.set(opts, this)
    return super.dispatch(opts, handler)
  }
}

/**
 * The pool connection a dispatch (by its options object) went out on. After
 * the keep-alive race its socket is gone: a retry sent to it connects afresh,
 * inside the pool and its connection cap, where the pool itself might have
 * handed the retry another idle connection the upstream closed just the same.
 */
export function connectionOf (opts: object): Dispatcher | undefined {
  return usedClient.get(opts)
}

/** One pool per origin and per set of timeouts and limits (services may treat one origin differently). */
function poolKey (timeouts: Timeouts, limits: LimitsConfig): string {
  return `${timeouts.connect}/${timeouts.idleUpstream}/${timeouts.response}/${limits.maxConnections}`
}

/** TLS options for h2 targets' sessions; tests set a CA of their own (production trusts the system's, as undici does for h1). */
let h2Tls: { ca?: string | Buffer } | undefined

/** For tests: the CA h2 (TLS) sessions and gRPC probes opened from now on trust. */
export function setH2TlsOptions (opts: { ca?: string | Buffer } | undefined): void {
  h2Tls = opts
}

/** The TLS options h2 sessions are opened with now. */
export function h2TlsOptions (): { ca?: string | Buffer } | undefined {
  return h2Tls
}

/** What active probes say: `unchecked` when no probes are configured for the target. */
export type ProbeState = 'unchecked' | 'unknown' | 'healthy' | 'unhealthy'

/** What a target is, for people: probe state, or `ejected` by passive health. */
export type TargetStatus = 'healthy' | 'unhealthy' | 'unknown' | 'ejected'

export interface HealthChange {
  target: Target
  from: TargetStatus
  to: TargetStatus
  healthy: boolean
  cause: string
}

/** One upstream origin. Survives flips, target updates that keep the URL, and reloads. */
export class Target {
  readonly url: string
  /** Routing uses only healthy targets. Derived: probes say so (or none run) and not ejected. */
  healthy = true
  inflight = 0
  probe: ProbeState = 'unchecked'
  /** The probe config in force, set by whichever service uses this URL with probes. */
  health: HealthConfig | undefined
  passive: PassiveConfig | undefined
  private passes = 0
  private fails = 0
  /** Passive accounting, as Envoy's outlier detection: consecutive failures, growing ejections. */
  private consecutiveFailures = 0
  private ejections = 0
  private lastEjectionEnd = 0
  ejectedUntil = 0
  private configured = false
  private servingUntilProbed = false
  private lastStatus: TargetStatus = 'healthy'
  private ejectTimer: NodeJS.Timeout | undefined
  private readonly pools = new Map<string, Pool>()
  private readonly h1Pools = new Map<string, H1Pool>()
  /** HTTP/2 sessions (services with protocol h2c or h2); none for HTTP/1.1-only targets. */
  private h2Pools: Map<string, H2Pool> | undefined
  private readonly onChange: (change: HealthChange) => void

  /** The URL taken apart once, for connections made by hand (WebSocket handshakes). */
  readonly origin: { tls: boolean, host: string, port: number }

  constructor (url: string, onChange: (change: HealthChange) => void) {
    this.url = url
    this.onChange = onChange
    const u = new URL(url)
    const tls = u.protocol === 'https:'
    this.origin = { tls, host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port === '' ? (tls ? 443 : 80) : Number(u.port) }
  }

  /** Sets the probe and passive configs; a target that gains probes starts unknown. */
  configure (health: HealthConfig | undefined, passive: PassiveConfig | undefined): void {
    this.passive = passive
    if (health === undefined) {
      this.health = undefined
      if (this.probe !== 'unchecked') {
        this.probe = 'unchecked'
        this.passes = this.fails = 0
      }
    } else {
      this.health = health
      if (this.probe === 'unchecked') {
        this.probe = 'unknown'
        // Serving already (probes just turned on by a reload): keep serving until the first probe decides.
        this.servingUntilProbed = this.configured && this.healthy
      }
    }
    this.update('config', !this.configured)
    this.configured = true
  }

  get ejected (): boolean {
    return this.ejectedUntil !== 0
  }

  get status (): TargetStatus {
    if (this.ejected) return 'ejected'
    return this.probe === 'unchecked' ? 'healthy' : this.probe
  }

  /** Recomputes `healthy` and reports a change of status, unless `silent` (a brand-new target). */
  private update (cause: string, silent = false): void {
    const byProbe = this.probe === 'unchecked' || this.probe === 'healthy' || (this.probe === 'unknown' && (this.health?.assumeHealthy === true || this.servingUntilProbed))
    this.healthy = byProbe && !this.ejected
    const status = this.status
    if (status !== this.lastStatus) {
      const from = this.lastStatus
      this.lastStatus = status
      if (!silent) this.onChange({ target: this, from, to: status, healthy: this.healthy, cause })
    }
  }

  /**
   * One probe result. Hysteresis: a pass resets the failure streak and vice
   * versa; the first probe decides an unknown target, as Envoy does.
   */
  recordProbe (ok: boolean, detail: string): void {
    if (this.health === undefined) return
    this.servingUntilProbed = false
    if (ok) {
      this.fails = 0
      this.passes++
      if (this.probe !== 'healthy' && (this.probe === 'unknown' || this.passes >= this.health.healthyThreshold)) this.probe = 'healthy'
      // A passing probe ends an ejection early.
      if (this.ejected) this.unEject()
    } else {
      this.passes = 0
      this.fails++
      if (this.probe !== 'unhealthy' && (this.probe === 'unknown' || this.fails >= this.health.unhealthyThreshold)) this.probe = 'unhealthy'
    }
    this.update(`probe: ${detail}`)
  }

  /** Worker processes: the primary's probes decided this target's state. */
  setProbe (probe: ProbeState): void {
    if (this.health === undefined || probe === 'unchecked') return
    this.probe = probe
    this.servingUntilProbed = false
    if (probe === 'healthy' && this.ejected) this.unEject()
    this.update('probe (primary)')
  }

  /** A proxied request's outcome (passive health). */
  recordResult (ok: boolean): void {
    if (ok) {
      this.consecutiveFailures = 0
      return
    }
    const p = this.passive
    if (p === undefined || this.ejected) return
    if (++this.consecutiveFailures < p.consecutiveFailures) return
    this.consecutiveFailures = 0
    const now = Date.now()
    // Ejections in a row grow; a whole maxEjectionTime without one resets the count.
    if (now - this.lastEjectionEnd > p.maxEjectionTime) this.ejections = 0
    const duration = Math.min(p.baseEjectionTime * 2 ** this.ejections, p.maxEjectionTime)
    this.ejections++
    this.ejectedUntil = now + duration
    this.ejectTimer = setTimeout(() => this.unEject(), duration)
    this.ejectTimer.unref()
    this.update(`ejected for ${duration}ms after ${p.consecutiveFailures} failures in a row`)
  }

  private unEject (): void {
    clearTimeout(this.ejectTimer)
    this.ejectTimer = undefined
    this.ejectedUntil = 0
    this.lastEjectionEnd = Date.now()
    this.update('ejection over')
  }

  /** Current health for /v1/state. */
  describe (): Record<string, unknown> {
    return {
      url: this.url,
      healthy: this.healthy,
      inflight: this.inflight,
      probe: this.probe,
      ...(this.ejected ? { ejectedUntil: new Date(this.ejectedUntil).toISOString() } : {}),
    }
  }

  /** The keep-alive pool for these timeouts and limits (services may time one origin differently). */
  dispatcher (timeouts: Timeouts, limits: LimitsConfig): Pool {
    const key = poolKey(timeouts, limits)
    let pool = this.pools.get(key)
    if (pool === undefined) {
      pool = new Pool(this.url, {
        // Built as undici would from { timeout }, with undici#5360's guard on every socket (end-guard.ts).
        connect: guardedConnector({ timeout: timeouts.connect }),
        keepAliveTimeout: timeouts.idleUpstream,
        keepAliveMaxTimeout: timeouts.idleUpstream,
        headersTimeout: timeouts.response,
        // Each dispatch sets its own (timeouts.body, which is per service); none here, not undici's 300 s.
        bodyTimeout: 0,
        connections: limits.maxConnections,
        pipelining: 1,
        factory: (origin, opts) => new TrackedClient(origin, opts),
      })
      this.pools.set(key, pool)
    }
    return pool
  }

  /** The fast path's connections for these timeouts. */
  h1Pool (timeouts: Timeouts, limits: LimitsConfig): H1Pool {
    const key = poolKey(timeouts, limits)
    let pool = this.h1Pools.get(key)
    if (pool === undefined) {
      pool = new H1Pool(this.origin, timeouts, limits)
      this.h1Pools.set(key, pool)
    }
    return pool
  }

  /** The HTTP/2 sessions for these timeouts and limits (protocol h2c or h2): nothing connects until a request needs it. */
  h2Pool (timeouts: Timeouts, limits: LimitsConfig): H2Pool {
    const key = poolKey(timeouts, limits)
    const pools = this.h2Pools ??= new Map<string, H2Pool>()
    let pool = pools.get(key)
    if (pool === undefined) {
      pool = new H2Pool(this.url, this.origin, timeouts, limits, h2Tls)
      pools.set(key, pool)
    }
    return pool
  }

  private stopTimers (): void {
    clearTimeout(this.ejectTimer)
  }

  /** Closes the pools once their in-flight requests finish. */
  async close (): Promise<void> {
    this.stopTimers()
    for (const p of this.h1Pools.values()) p.close()
    this.h1Pools.clear()
    for (const p of this.h2Pools?.values() ?? []) p.close()
    this.h2Pools?.clear()
    const pools = [...this.pools.values()]
    this.pools.clear()
    await Promise.all(pools.map(async (p) => await p.close()))
  }

  /** Closes the pools now, failing whatever is still in flight. */
  async destroy (): Promise<void> {
    this.stopTimers()
    for (const p of this.h1Pools.values()) p.destroy()
    this.h1Pools.clear()
    for (const p of this.h2Pools?.values() ?? []) p.destroy()
    this.h2Pools?.clear()
    const pools = [...this.pools.values()]
    this.pools.clear()
    await Promise.all(pools.map(async (p) => await p.destroy()))
  }
}

export class TargetRegistry {
  private readonly targets = new Map<string, Target>()
  private readonly stats = new Map<string, ColorStats>()
  private readonly listeners: Array<(change: HealthChange) => void> = []
  /** Shared by every ColorStats: what hears of finished requests (the access log). */
  readonly observers: Observers = { accessLog: undefined, metrics: true }

  /** Called on every change of a target's `healthy`. */
  onHealthChange (fn: (change: HealthChange) => void): void {
    this.listeners.push(fn)
  }

  private readonly emit = (change: HealthChange): void => {
    for (const fn of this.listeners) fn(change)
  }

  target (url: string): Target {
    let t = this.targets.get(url)
    if (t === undefined) {
      t = new Target(url, this.emit)
      this.targets.set(url, t)
    }
    return t
  }

  find (url: string): Target | undefined {
    return this.targets.get(url)
  }

  /** Shutdown: every open WebSocket gets 1001, spread over at most `spreadMs`. */
  closeWebSockets (spreadMs: number): void {
    for (const stats of this.allColorStats()) closeSpread(stats.openWs, spreadMs)
  }

  allColorStats (): IterableIterator<ColorStats> {
    return this.stats.values()
  }

  /** Once a second: each color's request and error counts go into its one-minute history. */
  sample (): void {
    for (const s of this.stats.values()) s.sample()
  }

  colorStats (service: string, color: Color): ColorStats {
    const key = `${service}/${color}`
    let s = this.stats.get(key)
    if (s === undefined) {
      s = new ColorStats(service, color, this.observers)
      this.stats.set(key, s)
    }
    return s
  }

  /** Forgets targets no snapshot uses any more; their pools close after their last request. */
  prune (inUse: ReadonlySet<string>): void {
    for (const [url, t] of this.targets) {
      if (!inUse.has(url)) {
        this.targets.delete(url)
        void t.close()
      }
    }
  }

  async destroy (): Promise<void> {
    const all = [...this.targets.values()]
    this.targets.clear()
    await Promise.all(all.map(async (t) => await t.destroy()))
  }
}
