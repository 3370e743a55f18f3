// The targets of one service color with their dispatchers, and round-robin
// selection over the healthy ones: O(1) while all are healthy.

import type { Dispatcher } from 'undici'
import type { H1Pool } from './h1-pool.js'
import type { H2Pool } from './h2-pool.js'
import type { Target } from './registry.js'

export interface Endpoint {
  readonly target: Target
  /** undici's pool, for the node:http path. */
  readonly dispatcher: Dispatcher
  /** Raw keep-alive connections, for the fast path. */
  readonly h1: H1Pool
  /** HTTP/2 sessions, for services with protocol h2c or h2 (undefined for http1 ones: they pay nothing for it). */
  readonly h2?: H2Pool | undefined
}

export class TargetSet {
  readonly endpoints: readonly Endpoint[]
  /** Percent; below this share of healthy targets, pick from all (Envoy's panic mode). 0: off. */
  private readonly panicThreshold: number
  private cursor = 0

  constructor (endpoints: readonly Endpoint[], panicThreshold = 0) {
    this.endpoints = endpoints
    this.panicThreshold = panicThreshold
  }

  get healthyCount (): number {
    let n = 0
    for (const e of this.endpoints) if (e.target.healthy) n++
    return n
  }

  /** True when panic mode is on and too few targets are healthy to trust health at all. */
  get inPanic (): boolean {
    return this.panicThreshold > 0 && this.endpoints.length > 0 && this.healthyCount * 100 < this.panicThreshold * this.endpoints.length
  }

  /** Next healthy endpoint in round-robin order, skipping `exclude`; undefined when none. */
  pick (exclude?: Endpoint): Endpoint | undefined {
    const list = this.endpoints
    const n = list.length
    const any = this.inPanic
    for (let i = 0; i < n; i++) {
      const e = list[this.cursor]
      this.cursor = this.cursor + 1 === n ? 0 : this.cursor + 1
      if ((any || e.target.healthy) && e !== exclude) return e
    }
    return undefined
  }
}
