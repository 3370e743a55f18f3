// The targets of one service color with their dispatchers, and round-robin
// selection over the healthy ones: O(1) while all are healthy.

import type { Dispatcher } from 'undici'
import type { Target } from './registry.js'

export interface Endpoint {
  readonly target: Target
  readonly dispatcher: Dispatcher
}

export class TargetSet {
  readonly endpoints: readonly Endpoint[]
  private cursor = 0

  constructor (endpoints: readonly Endpoint[]) {
    this.endpoints = endpoints
  }

  get healthyCount (): number {
    let n = 0
    for (const e of this.endpoints) if (e.target.healthy) n++
    return n
  }

  /** Next healthy endpoint in round-robin order, skipping `exclude`; undefined when none. */
  pick (exclude?: Endpoint): Endpoint | undefined {
    const list = this.endpoints
    const n = list.length
    for (let i = 0; i < n; i++) {
      const e = list[this.cursor]
      this.cursor = this.cursor + 1 === n ? 0 : this.cursor + 1
      if (e.target.healthy && e !== exclude) return e
    }
    return undefined
  }
}
