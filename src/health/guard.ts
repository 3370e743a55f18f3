// The post-flip guard: for guard.window after a flip, watch each flipped
// service's new live color and report a trip when it has no healthy target
// or its error rate over at least minRequests exceeds maxErrorRate.

import type { Color, GuardConfig } from '../config/schema.js'
import type { ColorStats, OutcomeWatcher } from '../upstream/registry.js'

/** The counts a guard judges: one process's ColorStats, or a fleet's sum of them. */
export type GuardStats = Pick<ColorStats, 'requests' | 'errors' | 'watcher'>

export interface GuardEntry {
  service: string
  /** The color the flip left live, and the one a revert returns to. */
  color: Color
  from: Color
  config: GuardConfig
  stats: GuardStats
}

export interface GuardTrip {
  service: string
  color: Color
  reason: 'error_rate' | 'no_healthy_target'
  requests: number
  errors: number
  errorRate: number
  healthyTargets: number
}

interface Watch extends GuardEntry {
  baseRequests: number
  baseErrors: number
  until: number
  timer: NodeJS.Timeout
  active: boolean
}

export interface GuardHooks {
  /** Healthy targets the service's color has right now. */
  healthyTargets: (service: string, color: Color) => number
  /** Called once, on the first trip; the guard has already ended. */
  onTrip: (guard: Guard, trip: GuardTrip) => void
  /** Called once when the guard ends for any reason. */
  onEnd: (guard: Guard) => void
}

/** Watches the services of one flip together: a trip of one reverts them all. */
export class Guard implements OutcomeWatcher {
  readonly id: number
  readonly startedAt: number
  private readonly watches: Watch[]
  private readonly hooks: GuardHooks
  private ended = false

  /** `startedAt`: when the flip was made, for a guard taken over mid-window (it judges the counts from now on). */
  constructor (id: number, entries: GuardEntry[], hooks: GuardHooks, startedAt = Date.now()) {
    this.id = id
    this.startedAt = startedAt
    this.hooks = hooks
    this.watches = entries.map((e) => {
      const w: Watch = {
        ...e,
        baseRequests: e.stats.requests,
        baseErrors: e.stats.errors,
        until: this.startedAt + e.config.window,
        timer: setTimeout(() => this.expire(w), Math.max(0, startedAt + e.config.window - Date.now())),
        active: true,
      }
      w.timer.unref()
      e.stats.watcher = this
      return w
    })
  }

  get services (): string[] {
    return this.watches.map((w) => w.service)
  }

  covers (service: string): boolean {
    return this.watches.some((w) => w.service === service && w.active)
  }

  /** Which color each service returns to on a revert. */
  get reverts (): Array<{ service: string, from: Color, to: Color }> {
    return this.watches.map((w) => ({ service: w.service, from: w.color, to: w.from }))
  }

  /** On the request path: a watched color finished a request. Plain arithmetic only. */
  onOutcome (): void {
    if (this.ended) return
    for (const w of this.watches) {
      if (!w.active) continue
      const requests = w.stats.requests - w.baseRequests
      if (requests < w.config.minRequests) continue
      const errors = w.stats.errors - w.baseErrors
      if (errors > w.config.maxErrorRate * requests) {
        return this.trip(w, 'error_rate')
      }
    }
  }

  /** After a health change: a watched color with no healthy target trips the guard. */
  checkHealth (): void {
    if (this.ended) return
    for (const w of this.watches) {
      if (w.active && this.hooks.healthyTargets(w.service, w.color) === 0) return this.trip(w, 'no_healthy_target')
    }
  }

  private trip (w: Watch, reason: GuardTrip['reason']): void {
    const requests = w.stats.requests - w.baseRequests
    const errors = w.stats.errors - w.baseErrors
    const trip: GuardTrip = {
      service: w.service,
      color: w.color,
      reason,
      requests,
      errors,
      errorRate: requests === 0 ? 0 : errors / requests,
      healthyTargets: this.hooks.healthyTargets(w.service, w.color),
    }
    this.end()
    this.hooks.onTrip(this, trip)
  }

  private expire (w: Watch): void {
    w.active = false
    if (w.stats.watcher === this) w.stats.watcher = undefined
    if (this.watches.every((x) => !x.active)) this.end()
  }

  /** Stops watching (window over, a manual change, a trip, or shutdown). */
  end (): void {
    if (this.ended) return
    this.ended = true
    for (const w of this.watches) {
      clearTimeout(w.timer)
      w.active = false
      if (w.stats.watcher === this) w.stats.watcher = undefined
    }
    this.hooks.onEnd(this)
  }

  /** The guard's view of one service for /v1/state. */
  describe (service: string): Record<string, unknown> | undefined {
    const w = this.watches.find((x) => x.service === service && x.active)
    if (w === undefined || this.ended) return undefined
    const requests = w.stats.requests - w.baseRequests
    const errors = w.stats.errors - w.baseErrors
    return {
      active: true,
      color: w.color,
      revertsTo: w.from,
      startedAt: new Date(this.startedAt).toISOString(),
      endsAt: new Date(w.until).toISOString(),
      requests,
      errors,
      errorRate: requests === 0 ? 0 : errors / requests,
      maxErrorRate: w.config.maxErrorRate,
      minRequests: w.config.minRequests,
      healthyTargets: this.hooks.healthyTargets(w.service, w.color),
      services: this.services,
    }
  }
}
