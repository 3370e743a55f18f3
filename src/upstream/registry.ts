// Runtime state that must outlive any one snapshot: targets keyed by URL
// (connection pools, health, in-flight) and per service/color counters.

import { Pool } from 'undici'
import type { Color, Timeouts } from '../config/schema.js'

/** One upstream origin. Survives flips, target updates that keep the URL, and reloads. */
export class Target {
  readonly url: string
  /** Routing uses only healthy targets; probes (when configured) move this. */
  healthy = true
  inflight = 0
  private readonly pools = new Map<string, Pool>()

  constructor (url: string) {
    this.url = url
  }

  /** The keep-alive pool for these timeouts (services may time one origin differently). */
  dispatcher (timeouts: Timeouts): Pool {
    const key = `${timeouts.connect}/${timeouts.idleUpstream}/${timeouts.response}`
    let pool = this.pools.get(key)
    if (pool === undefined) {
      pool = new Pool(this.url, {
        connect: { timeout: timeouts.connect },
        keepAliveTimeout: timeouts.idleUpstream,
        keepAliveMaxTimeout: timeouts.idleUpstream,
        headersTimeout: timeouts.response,
        pipelining: 1,
      })
      this.pools.set(key, pool)
    }
    return pool
  }

  /** Closes the pools once their in-flight requests finish. */
  async close (): Promise<void> {
    const pools = [...this.pools.values()]
    this.pools.clear()
    await Promise.all(pools.map(async (p) => await p.close()))
  }

  /** Closes the pools now, failing whatever is still in flight. */
  async destroy (): Promise<void> {
    const pools = [...this.pools.values()]
    this.pools.clear()
    await Promise.all(pools.map(async (p) => await p.destroy()))
  }
}

/** In-flight HTTP requests and open WebSockets of one service's color. */
export class ColorStats {
  inflight = 0
  websockets = 0
}

export class TargetRegistry {
  private readonly targets = new Map<string, Target>()
  private readonly stats = new Map<string, ColorStats>()

  target (url: string): Target {
    let t = this.targets.get(url)
    if (t === undefined) {
      t = new Target(url)
      this.targets.set(url, t)
    }
    return t
  }

  colorStats (service: string, color: Color): ColorStats {
    const key = `${service}/${color}`
    let s = this.stats.get(key)
    if (s === undefined) {
      s = new ColorStats()
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
