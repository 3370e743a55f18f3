// Draining one service color after it stops being live: counted down to zero
// in-flight requests and WebSockets, or ended at the deadline (WebSockets get
// 1001 spread over a short jittered interval, long HTTP streams are cut).

import type { Color } from '../config/schema.js'
import type { ColorStats, EmptyWatcher } from '../upstream/registry.js'
import { closeSpread } from '../upstream/color-stats.js'

export interface DrainResult {
  service: string
  color: Color
  /** `empty`: everything finished; `timeout`: the deadline closed what was left; `cancelled`: the color went live again. */
  how: 'empty' | 'timeout' | 'cancelled'
  startedAt: string
  durationMs: number
  closedWebsockets: number
  closedRequests: number
}

/** Closing at the deadline is spread over at most this long, so clients do not all reconnect at once. */
const MAX_SPREAD_MS = 1000
/** After the spread, whatever has not gone yet is given this long before the drain is declared done. */
const SETTLE_MS = 1500

export class Drain implements EmptyWatcher {
  readonly service: string
  readonly color: Color
  readonly startedAt = Date.now()
  deadline: number
  /** Sticky sessions keep a draining color serving until its deadline, even when idle for a moment. */
  private readonly sticky: boolean
  private readonly stats: ColorStats
  private readonly onDone: (drain: Drain, result: DrainResult) => void
  private timer: NodeJS.Timeout | undefined
  private readonly closeTimers: NodeJS.Timeout[] = []
  private closing = false
  private closed = { websockets: 0, requests: 0 }
  private result: DrainResult | undefined
  private readonly waiters: Array<(r: DrainResult) => void> = []

  constructor (service: string, color: Color, stats: ColorStats, timeoutMs: number, sticky: boolean, onDone: (drain: Drain, result: DrainResult) => void) {
    this.service = service
    this.color = color
    this.stats = stats
    this.sticky = sticky
    this.onDone = onDone
    this.deadline = this.startedAt + timeoutMs
  }

  /** Whether this drain keeps the color serving sticky sessions until its deadline. */
  get holdsSessions (): boolean {
    return this.sticky
  }

  get isDone (): boolean {
    return this.result !== undefined
  }

  start (): void {
    this.stats.drain = this
    this.arm()
    if (!this.sticky && this.stats.isEmpty) queueMicrotask(() => this.onEmpty())
  }

  private arm (): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.expire(), Math.max(0, this.deadline - Date.now()))
    this.timer.unref()
  }

  /** Brings the deadline forward (a manual drain with a shorter timeout); never pushes it back. */
  shorten (timeoutMs: number): void {
    const next = Date.now() + timeoutMs
    if (next >= this.deadline || this.closing) return
    this.deadline = next
    this.arm()
  }

  onEmpty (): void {
    if (this.result !== undefined) return
    if (this.closing) return this.finish('timeout')
    if (!this.sticky) this.finish('empty')
  }

  /** The deadline: end what is left, WebSockets with 1001, spread out. */
  private expire (): void {
    if (this.result !== undefined) return
    this.closing = true
    const spread = Math.min(MAX_SPREAD_MS, (this.deadline - this.startedAt) / 10)
    if (this.stats.remote !== undefined) {
      // Worker processes hold the connections: they close them, and their reports bring the counts to zero.
      if (this.stats.isEmpty) return this.finish('empty')
      this.closed = { websockets: this.stats.websockets, requests: this.stats.inflight }
      this.stats.remote.closeAll(this.service, this.color, spread)
      const t = setTimeout(() => this.finish('timeout'), spread + SETTLE_MS)
      t.unref()
      this.closeTimers.push(t)
      return
    }
    const left = [...this.stats.openWs, ...this.stats.openHttp]
    if (left.length === 0) return this.finish('empty')
    this.closed = { websockets: this.stats.websockets, requests: this.stats.inflight }
    this.closeTimers.push(...closeSpread(left, spread))
    // Should a peer ignore its close, finish anyway; the relay hangs up on its own shortly after.
    const t = setTimeout(() => this.finish('timeout'), spread + SETTLE_MS)
    t.unref()
    this.closeTimers.push(t)
  }

  /** The color went live again: stop draining, close nothing. */
  cancel (): void {
    this.finish('cancelled')
  }

  private finish (how: DrainResult['how']): void {
    if (this.result !== undefined) return
    clearTimeout(this.timer)
    if (how === 'cancelled') for (const t of this.closeTimers) clearTimeout(t)
    if (this.stats.drain === this) this.stats.drain = undefined
    this.result = {
      service: this.service,
      color: this.color,
      how,
      startedAt: new Date(this.startedAt).toISOString(),
      durationMs: Date.now() - this.startedAt,
      closedWebsockets: this.closed.websockets,
      closedRequests: this.closed.requests,
    }
    for (const w of this.waiters.splice(0)) w(this.result)
    this.onDone(this, this.result)
  }

  async wait (): Promise<DrainResult> {
    if (this.result !== undefined) return this.result
    return await new Promise((resolve) => this.waiters.push(resolve))
  }

  describe (): Record<string, unknown> {
    return {
      startedAt: new Date(this.startedAt).toISOString(),
      deadline: new Date(this.deadline).toISOString(),
      sticky: this.sticky,
      closing: this.closing,
    }
  }
}
