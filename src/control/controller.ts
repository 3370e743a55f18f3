// The only code that changes routing state. Every change is serialized,
// built into a whole new snapshot, persisted, then swapped in with one assignment.

import { COLORS, otherColor, type Color, type Config } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { buildSnapshot, colorTargets, configureTargets, snapshotTargets, Switcher, type RoutingState, type ServiceState, type Snapshot, type StickyHold } from '../routing/snapshot.js'
import { Guard, type GuardTrip } from '../health/guard.js'
import type { Prober } from '../health/prober.js'
import type { SmokeFailure, SmokeRunner } from '../health/smoke.js'
import { log } from '../log.js'
import type { FileStateStore, PersistedState } from '../state/file-store.js'
import type { HealthChange, TargetRegistry } from '../upstream/registry.js'
import { Drain, type DrainResult } from './drain.js'
import type { ColorChange, EventLog, NewEvent, SwitchyardEvent } from './events.js'
import { deliver } from './webhook.js'

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

export interface ChangeResult {
  generation: number
  changes: ColorChange[]
  event?: SwitchyardEvent
}

/** A flip planned on one generation, whose smoke checks run outside the queue. */
interface FlipPlan {
  generation: number
  config: Config
  changes: ColorChange[]
  /** The targets of each change's new color, in the order of `changes`. */
  targets: string[][]
}

/** Whether a smoke verdict on `a` holds for `b`: the same changes into the same targets under the same config. */
function samePlan (a: FlipPlan, b: FlipPlan): boolean {
  return a.config === b.config && JSON.stringify([a.changes, a.targets]) === JSON.stringify([b.changes, b.targets])
}

function gateFailed (failures: GateFailure[]): SwitchyardError {
  return new SwitchyardError('gate_failed', `flip refused: ${failures.map((f) => `${f.service}/${f.color}: ${f.reason}`).join('; ')}`, { failures })
}

export type FlipTrigger = 'manual' | 'rollback' | 'auto_revert'

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

/** Why the gate refused one service's flip. */
export interface GateFailure {
  service: string
  color: Color
  reason: string
  healthy?: number
  minHealthy?: number
  targets?: Array<Record<string, unknown>>
  smoke?: SmokeFailure[]
}

/** Health machinery the controller drives; absent in unit setups that need none. */
export interface HealthDeps {
  prober: Prober
  smoke: SmokeRunner
  /**
   * With worker processes: hands every new routing state (and config) to
   * them; a change is answered only once this resolves.
   */
  publish?: (config: Config, state: RoutingState) => Promise<void>
}

export class Controller {
  readonly switcher: Switcher
  private config: Config
  private state: PersistedState
  private readonly registry: TargetRegistry
  private readonly store: FileStateStore
  readonly events: EventLog
  private readonly health: HealthDeps
  private readonly guards = new Set<Guard>()
  private readonly drains = new Map<string, Drain>()
  /** Colors still serving sticky sessions, by service: routing state every process gets, kept out of the state file. */
  private sticky: Record<string, StickyHold> = {}
  private queue: Promise<unknown> = Promise.resolve()
  /** Color changes since start, per service and trigger (switchyard_flips_total). */
  readonly flipCounts = new Map<string, Record<FlipTrigger, number>>()

  private constructor (config: Config, state: PersistedState, registry: TargetRegistry, store: FileStateStore, events: EventLog, snapshot: Snapshot, health: HealthDeps) {
    this.config = config
    this.state = state
    this.registry = registry
    this.store = store
    this.events = events
    this.health = health
    this.switcher = new Switcher(snapshot)
    registry.onHealthChange((change) => this.onHealthChange(change))
    this.afterSwap(snapshot)
  }

  /** Loads saved state (which wins over the config's `live`) and builds the first snapshot. */
  static async create (config: Config, registry: TargetRegistry, store: FileStateStore, events: EventLog, health: HealthDeps): Promise<Controller> {
    const saved = await store.load()
    const state: PersistedState = saved ?? { generation: 0, services: {}, lastChange: [] }
    for (const svc of Object.values(config.services)) {
      state.services[svc.name] ??= { live: svc.live, previous: null, targets: {} }
    }
    // No state file is generation 0: a change event without one is of a first change killed before its state write.
    await events.restore(saved?.generation ?? 0)
    let snapshot: Snapshot
    try {
      snapshot = buildSnapshot(config, state, registry)
    } catch (err) {
      throw new Error(`state file ${store.file} does not fit the config: ${(err as Error).message}`)
    }
    return new Controller(config, state, registry, store, events, snapshot, health)
  }

  /**
   * Runtime state follows the snapshot now in force: each target takes the
   * probe and passive settings of the first service (in config order) that
   * uses it, probes run for exactly the targets in use, unused ones go.
   */
  private afterSwap (snapshot: Snapshot): void {
    this.health.prober.sync(configureTargets(snapshot))
    this.registry.prune(snapshotTargets(snapshot))
  }

  get generation (): number {
    return this.state.generation
  }

  get currentConfig (): Config {
    return this.config
  }

  /** Runs mutations one at a time, so ifGeneration checks and file writes never race. */
  private async exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return await run
  }

  private checkGeneration (ifGeneration: number | undefined): void {
    if (ifGeneration !== undefined && ifGeneration !== this.state.generation) {
      throw new SwitchyardError('stale_generation', `ifGeneration ${ifGeneration} is stale: the current generation is ${this.state.generation}`, { generation: this.state.generation })
    }
  }

  private resolveServices (names: string[] | undefined): string[] {
    if (names === undefined) return Object.keys(this.config.services)
    for (const name of names) {
      if (this.config.services[name] === undefined) throw new SwitchyardError('unknown_service', `unknown service: ${name}`, { service: name })
    }
    return [...new Set(names)]
  }

  /**
   * Build, persist, swap. If building or saving throws, neither the routing
   * nor the in-memory state has changed.
   *
   * Persisting is two writes, each fsynced before the change is answered:
   * the event line first, then the state file. The state file is the commit
   * point: a crash (or a failed state write) after the event leaves an event
   * of a change that did not happen, which EventLog.restore recognizes by
   * its generation and leaves out; the other order would leave a change in
   * force whose event is missing. A failed event write fails the change
   * (event_write_failed) before anything else is touched.
   *
   * `swapFirst` is for the guard's auto-revert: nobody waits for an answer,
   * and every moment on the failing color costs requests, so it swaps at once
   * and persists after. Should a write fail, routing stays on the
   * known-good color and the next change writes the file.
   */
  private async commit (next: PersistedState, event: Omit<NewEvent, 'generation'> & Pick<NewEvent, 'type' | 'reason' | 'actor'>, swapFirst = false, config = this.config): Promise<SwitchyardEvent> {
    let snapshot: Snapshot
    const sticky = this.sticky
    try {
      snapshot = buildSnapshot(config, { ...next, sticky }, this.registry)
    } catch (err) {
      throw new SwitchyardError('bad_request', `${event.type} refused: ${(err as Error).message}; nothing changed`)
    }
    const prepared = this.events.prepare({ ...event, generation: next.generation })
    const apply = (): SwitchyardEvent => {
      // First: the change is decided, and a prepared event left pending would hold back every later one.
      this.events.publish(prepared)
      // Drains start and end holds on their own clock, also while the change is being written:
      // swap in the holds in force now, not the ones seen before the write.
      if (this.sticky !== sticky) snapshot = buildSnapshot(config, { ...next, sticky: this.sticky }, this.registry)
      this.config = config
      this.state = next
      this.switcher.swap(snapshot)
      this.afterSwap(snapshot)
      // Sessions are pinned to the old color only when it is a good one to stay on: not after a rollback or revert away from it.
      if (Array.isArray(event.changes)) this.retire(event.changes as ColorChange[], event.type === 'flip')
      return prepared
    }
    if (swapFirst) {
      const applied = apply()
      const published = this.health.publish?.(config, next)
      await this.events.persist(prepared).catch((err: Error) => {
        log('error', 'events file write failed after an auto-revert; routing is reverted, the event is only in memory', { file: this.events.file, error: err.message })
      })
      await this.store.save(next).catch((err: Error) => {
        log('error', 'state file write failed after an auto-revert; routing is reverted, the file is behind', { file: this.store.file, error: err.message })
      })
      await published
      return applied
    }
    try {
      await this.events.persist(prepared)
    } catch (err) {
      this.events.discard(prepared)
      throw new SwitchyardError('event_write_failed', `could not append to ${this.events.file ?? 'the event log'}: ${(err as Error).message}; nothing changed`)
    }
    try {
      await this.store.save(next)
    } catch (err) {
      this.events.discard(prepared)
      throw new SwitchyardError('state_write_failed', `could not write ${this.store.file}: ${(err as Error).message}; nothing changed`)
    }
    const applied = apply()
    await this.health.publish?.(config, next)
    return applied
  }

  /** The routing state and config now in force (what worker processes are given). */
  routing (): { config: Config, state: RoutingState } {
    return { config: this.config, state: { ...this.state, sticky: this.sticky } }
  }

  private countFlips (changes: readonly ColorChange[], trigger: FlipTrigger): void {
    for (const c of changes) {
      let counts = this.flipCounts.get(c.service)
      if (counts === undefined) {
        counts = { manual: 0, rollback: 0, auto_revert: 0 }
        this.flipCounts.set(c.service, counts)
      }
      counts[trigger]++
    }
  }

  /** After a color change: the new live color stops draining, the old one starts. */
  private retire (changes: readonly ColorChange[], keepSessions: boolean): void {
    for (const c of changes) {
      this.drains.get(`${c.service}/${c.to}`)?.cancel()
      this.startDrain(c.service, c.from, this.config.services[c.service].drain.timeout, keepSessions)
    }
  }

  private startDrain (service: string, color: Color, timeoutMs: number, keepSessions = true): Drain {
    const key = `${service}/${color}`
    const existing = this.drains.get(key)
    if (existing !== undefined) {
      existing.shorten(timeoutMs)
      if (existing.holdsSessions && this.sticky[service]?.until !== existing.deadline) this.holdSticky(service, { color, until: existing.deadline })
      return existing
    }
    const svc = this.config.services[service]
    const drain = new Drain(service, color, this.registry.colorStats(service, color), timeoutMs, keepSessions && svc.sticky !== undefined, (d, r) => this.onDrained(d, r))
    this.drains.set(key, drain)
    drain.start()
    if (drain.holdsSessions) this.holdSticky(service, { color, until: drain.deadline })
    return drain
  }

  /**
   * A sticky hold starts, moves or ends with its drain, often outside any
   * commit (a hurried or cancelled drain): swap in a snapshot rebuilt with it
   * and hand it to the workers. Workers end a hold by its time on their own;
   * the primary still publishes every change so none lingers or comes late.
   */
  private holdSticky (service: string, hold: StickyHold | undefined): void {
    const sticky = { ...this.sticky }
    if (hold === undefined) delete sticky[service]
    else sticky[service] = hold
    this.sticky = sticky
    const state = { ...this.state, sticky }
    this.switcher.swap(buildSnapshot(this.config, state, this.registry))
    this.health.publish?.(this.config, state).catch((err: Error) => log('error', 'could not hand a sticky hold to the workers', { error: err.message }))
  }

  /** A drain ended: record it and tell the operator's automation. */
  private onDrained (drain: Drain, result: DrainResult): void {
    const key = `${drain.service}/${drain.color}`
    if (this.drains.get(key) === drain) this.drains.delete(key)
    if (this.sticky[drain.service]?.color === drain.color) this.holdSticky(drain.service, undefined)
    if (result.how === 'cancelled') return
    const event = this.events.append({
      type: 'drained', generation: this.state.generation, reason: result.how === 'empty' ? 'no requests or WebSockets left' : 'drain timeout closed what was left',
      actor: 'drain', ...result,
    })
    log('info', 'drained', { ...result })
    const hook = this.config.services[drain.service]?.drain.onDrained
    if (hook !== undefined) void deliver(hook, event)
  }

  /** POST /v1/services/NAME/drain: start (or hurry) the drain of a color that is not live. */
  async drain (req: DrainRequest): Promise<Record<string, unknown>> {
    const [name] = this.resolveServices([req.service])
    const live = this.state.services[name].live
    const color = req.color ?? otherColor(live)
    if (color === live) throw new SwitchyardError('live_color', `${color} is the live color of ${name}; flip first, then drain it`, { service: name, color })
    // Only a flip's drain holds sessions; one started here would send every cookie naming an idle color to it.
    const drain = this.startDrain(name, color, req.timeout ?? this.config.services[name].drain.timeout, false)
    if (req.wait === true) {
      const result = await drain.wait()
      return { ...result, state: result.how === 'cancelled' ? 'live' : 'idle' }
    }
    const stats = this.registry.colorStats(name, color)
    return { service: name, color, state: drain.isDone ? 'idle' : 'draining', inflight: stats.inflight, websockets: stats.websockets, ...(drain.isDone ? {} : drain.describe()) }
  }

  /**
   * Applies a re-read config: a new snapshot with the live colors from state
   * and target health from the registry; open connections are untouched.
   * A config that changes nothing does nothing.
   */
  async reload (config: Config, actor = 'api'): Promise<ReloadResult> {
    return await this.exclusive(async () => {
      // What the listeners and the state store were built with at start; the edge keeps its engine, deadlines and trust until a restart.
      const restart = ([
        ['listen', config.listen, this.config.listen], ['admin.listen', config.admin.listen, this.config.admin.listen],
        ['state.file', config.state.file, this.config.state.file], ['log', config.log, this.config.log], ['metrics', config.metrics, this.config.metrics],
        ['engine', config.engine, this.config.engine], ['client', config.client, this.config.client], ['trustedProxies', config.trustedProxies, this.config.trustedProxies],
      ] as const)
        .filter(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b)).map(([k]) => k)
      if (restart.length > 0) throw new SwitchyardError('bad_request', `reload cannot change ${restart.join(', ')}: restart the gateway for that; nothing changed`, { fields: restart })
      const before = this.config.services
      const after = config.services
      const added = Object.keys(after).filter((n) => before[n] === undefined)
      const removed = Object.keys(before).filter((n) => after[n] === undefined)
      const updated = Object.keys(after).filter((n) => before[n] !== undefined && JSON.stringify(before[n]) !== JSON.stringify(after[n]))
      const tokenChanged = config.admin.token !== this.config.admin.token
      const hostsChanged = JSON.stringify(config.admin.allowedHosts) !== JSON.stringify(this.config.admin.allowedHosts)
      if (added.length + removed.length + updated.length === 0 && !tokenChanged && !hostsChanged) {
        return { generation: this.state.generation, changed: false, added, removed, updated }
      }
      const next = this.cloneState()
      for (const n of added) next.services[n] ??= { live: after[n].live, previous: null, targets: {} }
      next.generation++
      await this.commit(next, { type: 'reload', reason: null, actor, added, removed, updated, ...(tokenChanged ? { adminToken: 'changed' } : {}), ...(hostsChanged ? { allowedHosts: config.admin.allowedHosts } : {}) }, false, config)
      this.endGuards(removed)
      for (const [key, d] of this.drains) if (removed.includes(key.split('/')[0])) d.cancel()
      return { generation: next.generation, changed: true, added, removed, updated }
    })
  }

  /** Shutdown: every open WebSocket gets 1001, spread over at most `spreadMs`. */
  closeWebSockets (spreadMs: number): number {
    let n = 0
    for (const stats of this.registry.allColorStats()) {
      for (const ws of stats.openWs) {
        n++
        setTimeout(() => ws.close(), Math.random() * spreadMs).unref()
      }
    }
    return n
  }

  /** Ends every guard watching one of these services (a manual change overrides it). */
  private endGuards (services: readonly string[]): void {
    for (const g of [...this.guards]) {
      if (services.some((s) => g.covers(s))) g.end()
    }
  }

  private startGuard (changes: ColorChange[], id: number): void {
    const entries = changes
      .filter((c) => this.config.services[c.service].guard.window > 0)
      .map((c) => ({ service: c.service, color: c.to, from: c.from, config: this.config.services[c.service].guard, stats: this.registry.colorStats(c.service, c.to) }))
    if (entries.length === 0) return
    const guard = new Guard(id, entries, {
      healthyTargets: (service, color) => this.switcher.current.services.get(service)?.colors[color].targets.healthyCount ?? 0,
      onTrip: (g, trip) => { void this.autoRevert(g, trip) },
      onEnd: (g) => { this.guards.delete(g) },
    })
    this.guards.add(guard)
    // The new color may already be down.
    guard.checkHealth()
  }

  /** The guard tripped: every service of its flip goes back in one swap, no gate. */
  private async autoRevert (guard: Guard, trip: GuardTrip): Promise<void> {
    try {
      await this.exclusive(async () => {
        // A manual change since the trip wins; revert only what is still as the guarded flip left it.
        const reverts = guard.reverts.filter((r) => this.state.services[r.service]?.live === r.from)
        if (reverts.length === 0) return
        const next = this.cloneState()
        for (const r of reverts) next.services[r.service] = { ...next.services[r.service], live: r.to, previous: r.from }
        next.generation++
        next.lastChange = reverts.map((r) => r.service)
        const reason = trip.reason === 'error_rate'
          ? `${trip.service}/${trip.color}: error rate ${(trip.errorRate * 100).toFixed(1)}% over ${trip.requests} requests exceeds ${(this.config.services[trip.service].guard.maxErrorRate * 100).toFixed(1)}%`
          : `${trip.service}/${trip.color}: no healthy target`
        const applied = this.commit(next, { type: 'auto_revert', reason, actor: 'guard', changes: reverts, trip, flipEvent: guard.id }, true)
        // commit() has swapped synchronously by now; only the file write is pending.
        this.countFlips(reverts, 'auto_revert')
        await applied
        log('warn', 'auto-revert', { reason, changes: reverts })
      })
    } catch (err) {
      log('error', 'auto-revert failed', { error: (err as Error).message, trip })
    }
  }

  /** Health transitions are events; a guarded color may have just lost its last target. */
  private onHealthChange (change: HealthChange): void {
    const users: Array<{ service: string, color: Color }> = []
    for (const route of this.switcher.current.services.values()) {
      for (const color of COLORS) {
        if (route.colors[color].targets.endpoints.some((e) => e.target === change.target)) users.push({ service: route.name, color })
      }
    }
    this.events.append({
      type: 'health', generation: this.state.generation, reason: change.cause, actor: 'health',
      target: change.target.url, from: change.from, to: change.to, healthy: change.healthy, services: users,
    })
    for (const g of [...this.guards]) g.checkHealth()
  }

  /** Readiness: config loaded and every live color's targets have had their first probe. */
  readiness (): { ready: boolean, waiting: string[] } {
    const waiting: string[] = []
    for (const route of this.switcher.current.services.values()) {
      for (const e of route.colors[route.live].targets.endpoints) {
        if (!this.health.prober.hasProbed(e.target)) waiting.push(`${route.name}/${route.live} ${e.target.url}`)
      }
    }
    return { ready: waiting.length === 0, waiting }
  }

  /** The first half of a service's gate, taken in the queue: enough healthy targets in the new color. */
  private healthGate (name: string, to: Color): GateFailure | undefined {
    const svc = this.config.services[name]
    const set = this.switcher.current.services.get(name)?.colors[to].targets
    const healthy = set?.healthyCount ?? 0
    if (healthy >= svc.gate.minHealthy) return undefined
    return {
      service: name, color: to, reason: `${healthy} healthy target(s), gate.minHealthy is ${svc.gate.minHealthy}`,
      healthy, minHealthy: svc.gate.minHealthy,
      targets: set?.endpoints.filter((e) => !e.target.healthy).map((e) => e.target.describe()),
    }
  }

  /** The second half, run outside the queue: every smoke check passes. */
  private async smokeGate (name: string, to: Color): Promise<GateFailure | undefined> {
    const smoke = await this.health.smoke.run(this.config.services[name], to)
    if (smoke.length === 0) return undefined
    return { service: name, color: to, reason: `${smoke.length} smoke check(s) failed: ${smoke.map((f) => `${f.check}: ${f.reason}`).join('; ')}`, smoke }
  }

  async stop (): Promise<void> {
    for (const g of [...this.guards]) g.end()
    for (const d of [...this.drains.values()]) d.cancel()
    await this.idle()
  }

  private cloneState (): PersistedState {
    return structuredClone(this.state)
  }

  /**
   * Smoke checks run outside the queue: they take seconds, and an
   * auto-revert (or any other change) must never wait on them. A flip is
   * planned in the queue and its health gate taken there; with no smoke
   * check to run it commits in that same turn. Otherwise the smoke checks
   * run outside, and the flip commits back in the queue only if the
   * generation is still the one it was planned on. If something else changed
   * meanwhile, it is planned again toward the same colors; the smoke verdict is kept when the plan,
   * the config and the gated colors' targets are the same, else the checks
   * run again. A flip that loses that race twice (or any flip with
   * `ifGeneration`, whose premise is gone) is refused with 412.
   */
  async flip (req: FlipRequest): Promise<ChangeResult> {
    let smoked: FlipPlan | undefined
    for (let attempt = 1; ; attempt++) {
      const step = await this.exclusive(async (): Promise<ChangeResult | { plan: FlipPlan, failures: GateFailure[], smoke: ColorChange[] }> => {
        const plan = this.planFlip(req, smoked)
        if (plan.changes.length === 0) return { generation: plan.generation, changes: [] }
        const failures: GateFailure[] = []
        const smoke: ColorChange[] = []
        if (req.force !== true) {
          for (const c of plan.changes) {
            const f = this.healthGate(c.service, c.to)
            if (f !== undefined) failures.push(f)
            else if (this.config.services[c.service].smoke.length > 0) smoke.push(c)
          }
        }
        if (smoke.length === 0 || (smoked !== undefined && samePlan(smoked, plan))) {
          if (failures.length > 0) throw gateFailed(failures)
          return await this.commitFlip(req, plan)
        }
        return { plan, failures, smoke }
      })
      if (!('plan' in step)) return step
      const { plan, failures, smoke } = step
      for (const c of smoke) {
        const f = await this.smokeGate(c.service, c.to)
        if (f !== undefined) failures.push(f)
      }
      if (failures.length > 0) {
        const order = plan.changes.map((c) => c.service)
        throw gateFailed(failures.sort((a, b) => order.indexOf(a.service) - order.indexOf(b.service)))
      }
      smoked = plan
      const result = await this.exclusive(async () => {
        if (this.state.generation !== plan.generation) return undefined
        return await this.commitFlip(req, plan)
      })
      if (result !== undefined) return result
      if (req.ifGeneration !== undefined || attempt === 2) {
        throw new SwitchyardError('stale_generation', `flip refused: another change (generation ${this.state.generation}) landed while the smoke checks ran on generation ${plan.generation}; nothing changed, try again`, { generation: this.state.generation })
      }
    }
  }

  /**
   * What a flip would change, from the state now in force; throws for a stale
   * ifGeneration, an unknown service or an empty color. Planned again after
   * its gate (`first` is the plan the gate ran on), a flip without `to` keeps
   * the colors it was asked toward: "the other color" has turned around if a
   * revert or rollback landed meanwhile, and would undo it.
   */
  private planFlip (req: FlipRequest, first?: FlipPlan): FlipPlan {
    this.checkGeneration(req.ifGeneration)
    const names = this.resolveServices(req.services)
    const changes: ColorChange[] = []
    const targets: string[][] = []
    for (const name of names) {
      const st = this.state.services[name]
      const to = req.to ?? (first === undefined ? otherColor(st.live) : first.changes.find((c) => c.service === name)?.to)
      if (to === undefined || to === st.live) continue
      const total = this.switcher.current.services.get(name)?.colors[to].targets.endpoints.length ?? 0
      if (total === 0) throw new SwitchyardError('no_targets', `service ${name}: ${to} has no targets; set them first (PUT /v1/services/${name}/environments/${to}/targets)`, { service: name, color: to })
      changes.push({ service: name, from: st.live, to })
      targets.push(colorTargets(this.config.services[name], st, to))
    }
    return { generation: this.state.generation, config: this.config, changes, targets }
  }

  /** In the queue, on the generation the plan was made from. */
  private async commitFlip (req: FlipRequest, plan: FlipPlan): Promise<ChangeResult> {
    const next = this.cloneState()
    for (const c of plan.changes) next.services[c.service] = { ...next.services[c.service], live: c.to, previous: c.from }
    const changes = plan.changes
    next.generation++
    next.lastChange = changes.map((c) => c.service)
    const guarded = req.guard !== false
    const event = await this.commit(next, {
      type: 'flip', reason: req.reason ?? null, actor: req.actor ?? 'api', changes,
      ...(req.force === true ? { forced: true } : {}),
      ...(guarded ? {} : { guard: false }),
    })
    this.countFlips(changes, 'manual')
    this.endGuards(changes.map((c) => c.service))
    if (guarded) this.startGuard(changes, event.id)
    return { generation: next.generation, changes, event }
  }

  async rollback (req: RollbackRequest): Promise<ChangeResult> {
    return await this.exclusive(async () => {
      this.checkGeneration(req.ifGeneration)
      const names = req.services === undefined ? this.state.lastChange.filter((n) => this.config.services[n] !== undefined) : this.resolveServices(req.services)
      if (names.length === 0) throw new SwitchyardError('nothing_to_roll_back', 'nothing to roll back: no color change has been made yet')
      const next = this.cloneState()
      const changes: ColorChange[] = []
      for (const name of names) {
        const st = next.services[name]
        if (st.previous === null) throw new SwitchyardError('nothing_to_roll_back', `service ${name} has no previous color to roll back to`, { service: name })
        if (colorTargets(this.config.services[name], st, st.previous).length === 0) {
          throw new SwitchyardError('no_targets', `service ${name}: previous color ${st.previous} has no targets any more`, { service: name, color: st.previous })
        }
        changes.push({ service: name, from: st.live, to: st.previous })
        next.services[name] = { ...st, live: st.previous, previous: st.live }
      }
      next.generation++
      next.lastChange = names
      const event = await this.commit(next, { type: 'rollback', reason: req.reason ?? null, actor: req.actor ?? 'api', changes })
      this.countFlips(changes, 'rollback')
      this.endGuards(names)
      return { generation: next.generation, changes, event }
    })
  }

  async setTargets (req: TargetsRequest): Promise<{ generation: number, service: string, color: Color, targets: string[], event?: SwitchyardEvent }> {
    return await this.exclusive(async () => {
      this.checkGeneration(req.ifGeneration)
      const [name] = this.resolveServices([req.service])
      const st = this.state.services[name]
      const isLive = st.live === req.color
      if (isLive && req.force !== true) {
        throw new SwitchyardError('live_color', `${req.color} is the live color of ${name}; change the idle color, or pass force: true`, { service: name, color: req.color })
      }
      if (isLive && req.targets.length === 0) {
        throw new SwitchyardError('no_targets', `the live color ${req.color} of ${name} cannot be left without targets`, { service: name, color: req.color })
      }
      const before = colorTargets(this.config.services[name], st, req.color)
      if (before.length === req.targets.length && before.every((u, i) => u === req.targets[i])) {
        return { generation: this.state.generation, service: name, color: req.color, targets: before }
      }
      const next = this.cloneState()
      next.services[name] = { ...st, targets: { ...st.targets, [req.color]: req.targets } }
      next.generation++
      const event = await this.commit(next, {
        type: 'targets', reason: req.reason ?? null, actor: req.actor ?? 'api',
        service: name, color: req.color, from: before, to: req.targets, ...(isLive ? { forced: true } : {}),
      })
      return { generation: next.generation, service: name, color: req.color, targets: req.targets, event }
    })
  }

  /** The view served by GET /v1/state. */
  describe (): Record<string, unknown> {
    const snap = this.switcher.current
    const services: Record<string, unknown> = {}
    for (const route of snap.services.values()) {
      const st: ServiceState = this.state.services[route.name]
      const environments: Record<string, unknown> = {}
      for (const color of COLORS) {
        const c = route.colors[color]
        environments[color] = {
          state: route.live === color ? 'live' : this.drains.has(`${route.name}/${color}`) ? 'draining' : 'idle',
          ...(this.drains.has(`${route.name}/${color}`) ? { drain: this.drains.get(`${route.name}/${color}`)?.describe() } : {}),
          inflight: c.stats.inflight,
          websockets: c.stats.websockets,
          targets: c.targets.endpoints.map((e) => e.target.describe()),
          healthy: c.targets.healthyCount,
          recent: c.stats.history,
          ...(c.targets.inPanic ? { panic: true } : {}),
          ...(st.targets[color] === undefined ? {} : { targetsFrom: 'api' }),
        }
      }
      services[route.name] = {
        live: route.live,
        previous: st.previous,
        route: { ...(route.host === undefined ? {} : { host: route.host }), pathPrefix: route.prefix },
        guard: this.describeGuard(route.name),
        environments,
      }
    }
    return { generation: this.state.generation, services }
  }

  private describeGuard (service: string): Record<string, unknown> | null {
    for (const g of this.guards) {
      const d = g.describe(service)
      if (d !== undefined) return d
    }
    return null
  }

  async idle (): Promise<void> {
    await this.queue
    await this.events.flush()
  }
}
