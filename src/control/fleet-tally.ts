// The fleet's requests, errors (and sampled latencies) per service color, as the guard and a
// release's verdict on the leading replica judge them: this process's own counts (live) plus
// what every other replica last published in its record (about every second).

import type { Color } from '../config/schema.js'
import type { GuardStats } from '../health/guard.js'
import { LatencyHistogram } from '../upstream/latency.js'
import type { ColorCounts, ReplicaRecord } from '../state/store.js'
import type { ColorStats, OutcomeWatcher } from '../upstream/registry.js'

interface Count {
  requests: number
  errors: number
  latency: LatencyHistogram
}

/** One color as the fleet sees it: what the guard reads, and what a release's verdict samples. */
export type FleetStats = GuardStats & { readonly latency: LatencyHistogram | undefined }

/**
 * The others' counts only ever grow here: a replica's published counts start
 * again at zero when it restarts, and vanish when it leaves, so what is kept
 * is the sum of each record's increases, never its current value.
 */
export class FleetTally {
  private readonly selfId: string
  private readonly others = new Map<string, Count>()
  private readonly last = new Map<string, ColorCounts>()
  private readonly views = new Map<string, FleetColorStats>()

  constructor (selfId: string) {
    this.selfId = selfId
  }

  /** The replicas' records changed: add what each count grew by, then let the guards judge again. */
  update (replicas: readonly ReplicaRecord[]): void {
    for (const r of replicas) {
      if (r.id === this.selfId) continue
      const before = this.last.get(r.id)
      for (const [service, colors] of Object.entries(r.counts)) {
        for (const [color, now] of Object.entries(colors)) {
          const was = before?.[service]?.[color as Color]
          const sum = this.sum(`${service}/${color}`)
          sum.requests += grownBy(was?.requests, now.requests)
          sum.errors += grownBy(was?.errors, now.errors)
          if (Array.isArray(now.latency)) latencyGrowth(sum.latency, was, now)
        }
      }
      // Kept when its record goes (a lapsed lease in an etcd blip): back again, only its growth counts.
      this.last.set(r.id, r.counts)
    }
    for (const view of this.views.values()) view.watcher?.onOutcome()
  }

  private sum (key: string): Count {
    let c = this.others.get(key)
    if (c === undefined) this.others.set(key, c = { requests: 0, errors: 0, latency: new LatencyHistogram() })
    return c
  }

  /** The fleet's counts of one color, with this process's `local` stats folded in live. */
  stats (service: string, color: Color, local: ColorStats): FleetStats {
    const key = `${service}/${color}`
    let view = this.views.get(key)
    if (view === undefined || view.local !== local) this.views.set(key, view = new FleetColorStats(local, this.sum(key)))
    return view
  }
}

/** A count that went down belongs to a restarted replica: all of it is new. */
function grownBy (was: number | undefined, now: number): number {
  return was === undefined || now < was ? now : now - was
}

type Reported = NonNullable<ColorCounts[string]['blue']>

/**
 * Adds what a replica's latency histogram grew by. All of it is new when the
 * replica restarted (its requests went down), when it had none (sampling just
 * started) or when its histogram shrank (sampling was switched off and on).
 */
function latencyGrowth (into: LatencyHistogram, was: Reported | undefined, now: Reported): void {
  const grown = new LatencyHistogram()
  grown.addSparse(now.latency ?? [])
  if (was !== undefined && Array.isArray(was.latency) && now.requests >= was.requests) {
    const before = new LatencyHistogram()
    before.addSparse(was.latency)
    if (grown.total >= before.total) {
      into.merge(LatencyHistogram.diff(grown, before))
      return
    }
  }
  into.merge(grown)
}

/** Sums one color's counts; a guard watching it hears this process's outcomes at once and the others' at each record. */
class FleetColorStats implements FleetStats {
  readonly local: ColorStats
  private readonly others: Count
  private watching: OutcomeWatcher | undefined

  constructor (local: ColorStats, others: Count) {
    this.local = local
    this.others = others
  }

  get requests (): number {
    return this.local.requests + this.others.requests
  }

  get errors (): number {
    return this.local.errors + this.others.errors
  }

  /** A fresh sum (the verdict copies and diffs it); undefined while nothing anywhere is sampled. */
  get latency (): LatencyHistogram | undefined {
    const mine = this.local.latency
    if (mine === undefined && this.others.latency.total === 0) return undefined
    const sum = this.others.latency.copy()
    return mine === undefined ? sum : sum.merge(mine)
  }

  get watcher (): OutcomeWatcher | undefined {
    return this.watching
  }

  set watcher (w: OutcomeWatcher | undefined) {
    this.watching = w
    this.local.watcher = w
  }
}
