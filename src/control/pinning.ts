// Generation pinning as the control side sees it: the counts of requests that
// carried `switchyard-gen` and the pinned requests per kept generation, from
// this process (its Switcher's KeptSnapshots) or summed over its workers, and
// the `pinning` of GET /v1/state.

import type { PinningConfig } from '../config/schema.js'
import { MAX_KEPT, noPinCounts, PIN_RESULTS, type KeptGeneration, type PinResult } from '../routing/pinning.js'

/** What the metrics, /v1/state and the dashboard read of pinning: this process's counts, or its workers' summed. */
export interface PinningReader {
  /** switchyard_pinned_requests_total: requests carrying `switchyard-gen`, by what became of them. */
  readonly counts: Readonly<Record<PinResult, number>>
  /** Requests routed by each kept generation since it stopped being current. */
  pinnedByGeneration: () => Record<number, number>
}

/** What a worker reports of its pinning with its counts (its KeptSnapshots). */
export interface PinReport {
  counts: Record<PinResult, number>
  byGeneration: Record<number, number>
}

/**
 * The workers' pinning summed. A worker that exited keeps its part: its
 * requests happened. Its per-generation counts are kept for the MAX_KEPT
 * newest generations only: every generation still kept anywhere is among
 * them (generations only grow, and the kept ones are the newest retired).
 */
export class PooledPinning implements PinningReader {
  private readonly reports = new Map<number, PinReport>()
  private readonly retiredCounts = noPinCounts()
  private readonly retiredByGeneration = new Map<number, number>()

  get counts (): Readonly<Record<PinResult, number>> {
    const sum = { ...this.retiredCounts }
    for (const r of this.reports.values()) for (const k of PIN_RESULTS) sum[k] += r.counts[k]
    return sum
  }

  pinnedByGeneration (): Record<number, number> {
    const sum: Record<number, number> = Object.fromEntries(this.retiredByGeneration)
    for (const r of this.reports.values()) for (const [g, n] of Object.entries(r.byGeneration)) sum[Number(g)] = (sum[Number(g)] ?? 0) + n
    return sum
  }

  /** A worker's latest report (its counts since it started). */
  report (worker: number, report: PinReport): void {
    this.reports.set(worker, report)
  }

  /** A worker exited: its last report counts on. */
  retire (worker: number): void {
    const last = this.reports.get(worker)
    if (last === undefined) return
    this.reports.delete(worker)
    for (const k of PIN_RESULTS) this.retiredCounts[k] += last.counts[k]
    for (const [g, n] of Object.entries(last.byGeneration)) this.retiredByGeneration.set(Number(g), (this.retiredByGeneration.get(Number(g)) ?? 0) + n)
    const newest = [...this.retiredByGeneration.keys()].sort((a, b) => b - a)
    for (const g of newest.slice(MAX_KEPT)) this.retiredByGeneration.delete(g)
  }
}

/**
 * GET /v1/state's `pinning`. `kept`: the controller's own kept generations
 * (it swaps the same generations its workers do), each with the pinned
 * requests `reader` counted on it (this process's, or the workers' summed).
 */
export function describePinning (config: PinningConfig, floor: number, kept: readonly KeptGeneration[], reader: PinningReader): Record<string, unknown> {
  const pinned = reader.pinnedByGeneration()
  return {
    keep: config.keep,
    trust: config.trust,
    floor,
    requests: { ...reader.counts },
    kept: kept.map((k) => ({ ...k, pinned: pinned[k.generation] ?? 0 })),
  }
}
