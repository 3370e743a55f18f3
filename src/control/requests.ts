// What each controller operation is asked, and what it answers (the shapes the
// admin API fills in and sends back), and the color changes metrics count.

import type { Color } from '../config/schema.js'
import type { ColorChange, SwitchyardEvent } from '../state/events.js'

export interface FlipRequest {
  services?: string[]
  to?: Color
  force?: boolean
  reason?: string
  ifGeneration?: number
  /** false leaves the post-flip guard off for this flip. */
  guard?: boolean
  actor?: string
}

export interface RollbackRequest {
  services?: string[]
  reason?: string
  ifGeneration?: number
  actor?: string
}

export interface TargetsRequest {
  service: string
  color: Color
  targets: string[]
  force?: boolean
  reason?: string
  ifGeneration?: number
  actor?: string
}

export interface TargetsResult {
  generation: number
  service: string
  color: Color
  targets: string[]
  /** Absent when the targets were already these: nothing changed. */
  event?: SwitchyardEvent
}

export interface ChangeResult {
  generation: number
  changes: ColorChange[]
  event?: SwitchyardEvent
}

/** What made a color change, as switchyard_flips_total counts it. */
export type FlipTrigger = 'manual' | 'rollback' | 'auto_revert' | 'release'

/** Color changes since start, per service and trigger (switchyard_flips_total). */
export class FlipCounts extends Map<string, Record<FlipTrigger, number>> {
  add (changes: readonly ColorChange[], trigger: FlipTrigger): void {
    for (const c of changes) {
      let counts = this.get(c.service)
      if (counts === undefined) {
        counts = { manual: 0, rollback: 0, auto_revert: 0, release: 0 }
        this.set(c.service, counts)
      }
      counts[trigger]++
    }
  }
}

export interface DrainRequest {
  service: string
  /** Default: the color that is not live. */
  color?: Color
  /** Deadline for what is left, ms; only brings an existing drain's deadline forward. Default drain.timeout. */
  timeout?: number
  wait?: boolean
}

export interface ReloadResult {
  generation: number
  changed: boolean
  added: string[]
  removed: string[]
  updated: string[]
}
