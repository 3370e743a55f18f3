// The drains in progress, one per service color: started when a color stops being
// live (or on request), cancelled when it goes live again; sticky holds follow them.

import { otherColor, type Color, type Config } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { log } from '../log.js'
import type { StickyHold } from '../routing/snapshot.js'
import type { ColorStats } from '../upstream/registry.js'
import { Drain, type DrainResult } from './drain.js'
import type { ColorChange, NewEvent, SwitchyardEvent } from '../state/events.js'
import type { DrainRequest } from './requests.js'
import { describeDrainEnded, describeDrainStarted } from './state-view.js'
import { deliver } from './webhook.js'

export interface DrainsDeps {
  /** The config in force. */
  config: () => Config
  colorStats: (service: string, color: Color) => ColorStats
  /** The sticky holds (`holds()`) changed: they are routing state, so the controller swaps in a snapshot with them. */
  holdsChanged: () => void
  /** A drain finished: the controller appends its event (at the generation in force) and returns it. */
  record: (event: Omit<NewEvent, 'generation'> & Pick<NewEvent, 'type' | 'reason' | 'actor'>) => SwitchyardEvent | Promise<SwitchyardEvent>
}

export class Drains {
  private readonly byColor = new Map<string, Drain>()
  private readonly deps: DrainsDeps

  constructor (deps: DrainsDeps) {
    this.deps = deps
  }

  /**
   * The colors still serving sticky sessions, by service: the drains a flip
   * started that hold sessions, until their deadlines. Derived, never stored,
   * so it cannot drift from the drains.
   */
  holds (): Record<string, StickyHold> {
    const holds: Record<string, StickyHold> = {}
    for (const d of this.byColor.values()) if (d.holdsSessions) holds[d.service] = { color: d.color, until: d.deadline }
    return holds
  }

  /** The drain of a service color in progress, if any. */
  get (service: string, color: Color): Drain | undefined {
    return this.byColor.get(`${service}/${color}`)
  }

  /** After a color change: the new live color stops draining, the old one starts. */
  retire (changes: readonly ColorChange[], keepSessions: boolean): void {
    for (const c of changes) {
      this.get(c.service, c.to)?.cancel()
      // A service the config no longer has (a release that outlived it, ending): nothing of it is routed, nothing to drain.
      const svc = this.deps.config().services[c.service]
      if (svc === undefined) continue
      this.start(c.service, c.from, svc.drain.timeout, keepSessions)
    }
  }

  /** Starts a color's drain, or brings the deadline of the one in progress forward. */
  start (service: string, color: Color, timeoutMs: number, keepSessions = true): Drain {
    const key = `${service}/${color}`
    const existing = this.byColor.get(key)
    if (existing !== undefined) {
      const deadline = existing.deadline
      existing.shorten(timeoutMs)
      if (existing.holdsSessions && existing.deadline !== deadline) this.deps.holdsChanged()
      return existing
    }
    const svc = this.deps.config().services[service]
    const drain = new Drain(service, color, this.deps.colorStats(service, color), timeoutMs, keepSessions && svc.sticky !== undefined, (d, r) => this.onDrained(d, r))
    this.byColor.set(key, drain)
    drain.start()
    if (drain.holdsSessions) this.deps.holdsChanged()
    return drain
  }

  /** POST /v1/services/NAME/drain: start (or hurry) the drain of a color of `service` that is not `live`. */
  async request (service: string, live: Color, req: DrainRequest): Promise<Record<string, unknown>> {
    const color = req.color ?? otherColor(live)
    if (color === live) throw new SwitchyardError('live_color', `${color} is the live color of ${service}; flip first, then drain it`, { service, color })
    // Only a flip's drain holds sessions; one started here would send every cookie naming an idle color to it.
    const drain = this.start(service, color, req.timeout ?? this.deps.config().services[service].drain.timeout, false)
    if (req.wait === true) return describeDrainEnded(await drain.wait())
    return describeDrainStarted(service, color, drain, this.deps.colorStats(service, color))
  }

  /** Services removed by a reload, or taken over by a release: their drains stop, closing nothing. */
  cancel (services: readonly string[]): void {
    for (const [key, d] of this.byColor) if (services.includes(key.split('/')[0])) d.cancel()
  }

  cancelAll (): void {
    for (const d of [...this.byColor.values()]) d.cancel()
  }

  /** A drain ended: record it and tell the operator's automation. */
  private onDrained (drain: Drain, result: DrainResult): void {
    const key = `${drain.service}/${drain.color}`
    if (this.byColor.get(key) === drain) {
      this.byColor.delete(key)
      // Its sticky hold, if any, ends with it.
      if (drain.holdsSessions) this.deps.holdsChanged()
    }
    if (result.how === 'cancelled') return
    const event = this.deps.record({
      type: 'drained', reason: result.how === 'empty' ? 'no requests or WebSockets left' : 'drain timeout closed what was left', actor: 'drain', ...result,
    })
    log('info', 'drained', { ...result })
    const hook = this.deps.config().services[drain.service]?.drain.onDrained
    if (hook !== undefined) void Promise.resolve(event).then(async (ev) => { await deliver(hook, ev) }, () => {})
  }
}
