// The post-flip guards in force: one per guarded flip, started after it commits,
// ended by a later change; a trip is handed to the controller, which reverts.

import type { Color, Config } from '../config/schema.js'
import { Guard, type GuardStats, type GuardTrip } from '../health/guard.js'
import type { ColorChange } from '../state/events.js'

export interface GuardsDeps {
  /** Healthy targets the service's color has in the snapshot in force. */
  healthyTargets: (service: string, color: Color) => number
  colorStats: (service: string, color: Color) => GuardStats
  /** A guard tripped (and has ended): the controller reverts its flip. */
  onTrip: (guard: Guard, trip: GuardTrip) => void
}

export class Guards {
  private readonly active = new Set<Guard>()
  private readonly deps: GuardsDeps

  constructor (deps: GuardsDeps) {
    this.deps = deps
  }

  /**
   * Watches the services of a flip committed as event `id` (at `startedAt`,
   * when taken over from another replica); those without a guard window, or
   * whose window is over, are left alone.
   */
  start (config: Config, changes: readonly ColorChange[], id: number, startedAt = Date.now()): void {
    const entries = changes
      .filter((c) => config.services[c.service] !== undefined && startedAt + config.services[c.service].guard.window > Date.now())
      .map((c) => ({ service: c.service, color: c.to, from: c.from, config: config.services[c.service].guard, stats: this.deps.colorStats(c.service, c.to) }))
    if (entries.length === 0) return
    const guard = new Guard(id, entries, {
      healthyTargets: this.deps.healthyTargets,
      onTrip: this.deps.onTrip,
      onEnd: (g) => { this.active.delete(g) },
    }, startedAt)
    this.active.add(guard)
    // The new color may already be down.
    guard.checkHealth()
  }

  /** Ends every guard watching one of these services (a manual change overrides it). */
  end (services: readonly string[]): void {
    for (const g of [...this.active]) {
      if (services.some((s) => g.covers(s))) g.end()
    }
  }

  endAll (): void {
    for (const g of [...this.active]) g.end()
  }

  /** After a health change: a guarded color may have just lost its last target. */
  checkHealth (): void {
    for (const g of [...this.active]) g.checkHealth()
  }

  /** The guard watching a service, as /v1/state shows it; null when none is. */
  describe (service: string): Record<string, unknown> | null {
    for (const g of this.active) {
      const d = g.describe(service)
      if (d !== undefined) return d
    }
    return null
  }
}

/** The reason an auto-revert records for a trip. */
export function describeTrip (trip: GuardTrip, config: Config): string {
  return trip.reason === 'error_rate'
    ? `${trip.service}/${trip.color}: error rate ${(trip.errorRate * 100).toFixed(1)}% over ${trip.requests} requests exceeds ${(config.services[trip.service].guard.maxErrorRate * 100).toFixed(1)}%`
    : `${trip.service}/${trip.color}: no healthy target`
}
