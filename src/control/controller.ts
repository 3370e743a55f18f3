// The only code that changes routing state. Every change is serialized,
// built into a whole new snapshot, persisted, then swapped in with one assignment.

import type { Config } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { buildSnapshot, configureTargets, snapshotTargets, Switcher, type RoutingState, type Snapshot, type SnapshotView, type StickyHold } from '../routing/snapshot.js'
import type { Guard, GuardTrip } from '../health/guard.js'
import type { Prober } from '../health/prober.js'
import type { SmokeRunner } from '../health/smoke.js'
import { log } from '../log.js'
import type { FileStateStore, PersistedState } from '../state/file-store.js'
import type { HealthChange, TargetRegistry } from '../upstream/registry.js'
import { Drains } from './drains.js'
import type { ColorChange, EventLog, NewEvent, SwitchyardEvent } from '../state/events.js'
import { applyColorChanges, isSamePlan, planFlip, planReload, planRollback, planTargets, type FlipPlan } from './plans.js'
import { checkHealthGate, checkReadiness, gateFailed, runSmokeGate, type GateFailure } from './gate.js'
import { describeTrip, Guards } from './guards.js'
import { diffConfigs } from './reload-diff.js'
import { FlipCounts, type ChangeResult, type DrainRequest, type FlipRequest, type ReloadResult, type RollbackRequest, type TargetsRequest, type TargetsResult } from './requests.js'
import { describeState, listColorsUsing } from './state-view.js'

/** Health machinery the controller drives; absent in unit setups that need none. */
export interface HealthDeps {
  prober: Prober
  smoke: SmokeRunner
  /**
   * With worker processes: hands every new routing state (and config) to
   * them; a change is answered only once this resolves.
   */
  publish?: () => Promise<void>
}

export class Controller {
  /** The one holder of the routing snapshot: only commit() and holdSticky() swap it. */
  readonly #switcher: Switcher
  /** What the request path, metrics and workers read routing from. */
  readonly snapshots: SnapshotView
  private config: Config
  private state: PersistedState
  private readonly registry: TargetRegistry
  private readonly store: FileStateStore
  readonly events: EventLog
  private readonly health: HealthDeps
  private readonly guards: Guards
  private readonly drains: Drains
  /** A change is being applied: the sticky holds its drains move go into the one snapshot it swaps in. */
  private applying = false
  private queue: Promise<unknown> = Promise.resolve()
  readonly flipCounts = new FlipCounts()

  private constructor (config: Config, state: PersistedState, registry: TargetRegistry, store: FileStateStore, events: EventLog, snapshot: Snapshot, health: HealthDeps) {
    this.config = config
    this.state = state
    this.registry = registry
    this.store = store
    this.events = events
    this.health = health
    this.#switcher = new Switcher(snapshot)
    this.snapshots = this.#switcher.view
    this.guards = new Guards({
      healthyTargets: (service, color) => this.#switcher.current.services.get(service)?.colors[color].targets.healthyCount ?? 0,
      colorStats: (service, color) => registry.colorStats(service, color),
      onTrip: (g, trip) => { void this.autoRevert(g, trip) },
    })
    this.drains = new Drains({
      config: () => this.config,
      colorStats: (service, color) => registry.colorStats(service, color),
      holdsChanged: () => this.onHoldsChanged(),
      // `generation` second, where the line of a drained event has always had it.
      record: ({ type, ...rest }) => this.events.append({ type, generation: this.state.generation, ...rest }),
    })
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
    const holds = this.drains.holds()
    try {
      snapshot = buildSnapshot(config, { ...next, sticky: holds }, this.registry)
    } catch (err) {
      throw new SwitchyardError('bad_request', `${event.type} refused: ${(err as Error).message}; nothing changed`)
    }
    const prepared = this.events.prepare({ ...event, generation: next.generation })
    const apply = (): SwitchyardEvent => {
      // First: the change is decided, and a prepared event left pending would hold back every later one.
      this.events.publish(prepared)
      this.config = config
      this.state = next
      if (Array.isArray(event.changes)) {
        this.applying = true
        try {
          // Sessions are pinned to the old color only when it is a good one to stay on: not after a rollback or revert away from it.
          this.drains.retire(event.changes as ColorChange[], event.type === 'flip')
        } finally {
          this.applying = false
        }
      }
      // Drains start and end holds (here, and on their own clock while the change was written):
      // one snapshot, with the holds in force now, is swapped in.
      const now = this.drains.holds()
      if (!sameHolds(now, holds)) snapshot = buildSnapshot(config, { ...next, sticky: now }, this.registry)
      this.#switcher.swap(snapshot)
      this.afterSwap(snapshot)
      return prepared
    }
    if (swapFirst) {
      const applied = apply()
      const published = this.health.publish?.()
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
    await this.health.publish?.()
    return applied
  }

  /** The routing state and config now in force (what worker processes are given). */
  routing (): { config: Config, state: RoutingState } {
    return { config: this.config, state: { ...this.state, sticky: this.drains.holds() } }
  }

  /**
   * A sticky hold starts, moves or ends with its drain, often outside any
   * commit (a hurried or cancelled drain): swap in a snapshot rebuilt with
   * the holds and hand it to the workers. Workers end a hold by its time on
   * their own; the primary still publishes every change so none lingers or
   * comes late. Within a commit, the commit swaps them in itself.
   */
  private onHoldsChanged (): void {
    if (this.applying) return
    this.#switcher.swap(buildSnapshot(this.config, this.routing().state, this.registry))
    this.health.publish?.().catch((err: Error) => log('error', 'could not hand a sticky hold to the workers', { error: err.message }))
  }

  /** POST /v1/services/NAME/drain: start (or hurry) the drain of a color that is not live. */
  async drain (req: DrainRequest): Promise<Record<string, unknown>> {
    const [name] = this.resolveServices([req.service])
    return await this.drains.request(name, this.state.services[name].live, req)
  }

  /**
   * Applies a re-read config: a new snapshot with the live colors from state
   * and target health from the registry; open connections are untouched.
   * A config that changes nothing does nothing.
   */
  async reload (config: Config, actor = 'api'): Promise<ReloadResult> {
    return await this.exclusive(async () => {
      const { restart, added, removed, updated, tokenChanged, hostsChanged } = diffConfigs(this.config, config)
      if (restart.length > 0) throw new SwitchyardError('bad_request', `reload cannot change ${restart.join(', ')}: restart the gateway for that; nothing changed`, { fields: restart })
      if (added.length + removed.length + updated.length === 0 && !tokenChanged && !hostsChanged) {
        return { generation: this.state.generation, changed: false, added, removed, updated }
      }
      const next = planReload(added, this.state, config)
      await this.commit(next, { type: 'reload', reason: null, actor, added, removed, updated, ...(tokenChanged ? { adminToken: 'changed' } : {}), ...(hostsChanged ? { allowedHosts: config.admin.allowedHosts } : {}) }, false, config)
      this.guards.end(removed)
      this.drains.cancel(removed)
      return { generation: next.generation, changed: true, added, removed, updated }
    })
  }

  /** The guard tripped: every service of its flip goes back in one swap, no gate. */
  private async autoRevert (guard: Guard, trip: GuardTrip): Promise<void> {
    try {
      await this.exclusive(async () => {
        // A manual change since the trip wins; revert only what is still as the guarded flip left it.
        const reverts = guard.reverts.filter((r) => this.state.services[r.service]?.live === r.from)
        if (reverts.length === 0) return
        const next = applyColorChanges(this.state, reverts)
        const reason = describeTrip(trip, this.config)
        const applied = this.commit(next, { type: 'auto_revert', reason, actor: 'guard', changes: reverts, trip, flipEvent: guard.id }, true)
        // commit() has swapped synchronously by now; only the file write is pending.
        this.flipCounts.add(reverts, 'auto_revert')
        await applied
        log('warn', 'auto-revert', { reason, changes: reverts })
      })
    } catch (err) {
      log('error', 'auto-revert failed', { error: (err as Error).message, trip })
    }
  }

  /** Health transitions are events; a guarded color may have just lost its last target. */
  private onHealthChange (change: HealthChange): void {
    this.events.append({
      type: 'health', generation: this.state.generation, reason: change.cause, actor: 'health',
      target: change.target.url, from: change.from, to: change.to, healthy: change.healthy, services: listColorsUsing(this.#switcher.current, change.target),
    })
    this.guards.checkHealth()
  }

  /** Readiness: config loaded and every live color's targets have had their first probe. */
  readiness (): { ready: boolean, waiting: string[] } {
    return checkReadiness(this.#switcher.current, this.health.prober)
  }

  async stop (): Promise<void> {
    this.guards.endAll()
    this.drains.cancelAll()
    await this.idle()
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
        this.checkGeneration(req.ifGeneration)
        const plan = planFlip(req, this.resolveServices(req.services), this.state, this.config, smoked)
        if (plan.changes.length === 0) return { generation: plan.generation, changes: [] }
        const { failures, smoke } = req.force === true ? { failures: [], smoke: [] } : checkHealthGate(this.config, this.#switcher.current, plan.changes)
        if (smoke.length === 0 || (smoked !== undefined && isSamePlan(smoked, plan))) {
          if (failures.length > 0) throw gateFailed(failures, plan.changes)
          return await this.commitFlip(req, plan)
        }
        return { plan, failures, smoke }
      })
      if (!('plan' in step)) return step
      const { plan, smoke } = step
      const failures = [...step.failures, ...await runSmokeGate(this.health.smoke, () => this.config, smoke)]
      if (failures.length > 0) throw gateFailed(failures, plan.changes)
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

  /** In the queue, on the generation the plan was made from. */
  private async commitFlip (req: FlipRequest, plan: FlipPlan): Promise<ChangeResult> {
    const changes = plan.changes
    const next = applyColorChanges(this.state, changes)
    const guarded = req.guard !== false
    const event = await this.commit(next, {
      type: 'flip', reason: req.reason ?? null, actor: req.actor ?? 'api', changes,
      ...(req.force === true ? { forced: true } : {}),
      ...(guarded ? {} : { guard: false }),
    })
    this.flipCounts.add(changes, 'manual')
    this.guards.end(changes.map((c) => c.service))
    if (guarded) this.guards.start(this.config, changes, event.id)
    return { generation: next.generation, changes, event }
  }

  async rollback (req: RollbackRequest): Promise<ChangeResult> {
    return await this.exclusive(async () => {
      this.checkGeneration(req.ifGeneration)
      const names = req.services === undefined ? this.state.lastChange.filter((n) => this.config.services[n] !== undefined) : this.resolveServices(req.services)
      if (names.length === 0) throw new SwitchyardError('nothing_to_roll_back', 'nothing to roll back: no color change has been made yet')
      const { next, changes } = planRollback(names, this.state, this.config)
      const event = await this.commit(next, { type: 'rollback', reason: req.reason ?? null, actor: req.actor ?? 'api', changes })
      this.flipCounts.add(changes, 'rollback')
      this.guards.end(names)
      return { generation: next.generation, changes, event }
    })
  }

  async setTargets (req: TargetsRequest): Promise<TargetsResult> {
    return await this.exclusive(async () => {
      this.checkGeneration(req.ifGeneration)
      const [name] = this.resolveServices([req.service])
      const plan = planTargets(name, req, this.state, this.config)
      if (plan.next === undefined) return { generation: this.state.generation, service: name, color: req.color, targets: plan.before }
      const { next, before, isLive } = plan
      const event = await this.commit(next, {
        type: 'targets', reason: req.reason ?? null, actor: req.actor ?? 'api',
        service: name, color: req.color, from: before, to: req.targets, ...(isLive ? { forced: true } : {}),
      })
      return { generation: next.generation, service: name, color: req.color, targets: req.targets, event }
    })
  }

  /** The view served by GET /v1/state. */
  describe (): Record<string, unknown> {
    return describeState({
      snapshot: this.#switcher.current,
      state: this.state,
      drainOf: (service, color) => this.drains.get(service, color),
      guardOf: (service) => this.guards.describe(service),
    })
  }

  async idle (): Promise<void> {
    await this.queue
    await this.events.flush()
  }
}

/** The same sticky holds (service, color and deadline), so the snapshot built with the one fits the other. */
function sameHolds (a: Readonly<Record<string, StickyHold>>, b: Readonly<Record<string, StickyHold>>): boolean {
  const keys = Object.keys(a)
  if (keys.length !== Object.keys(b).length) return false
  return keys.every((k) => b[k] !== undefined && a[k].color === b[k].color && a[k].until === b[k].until)
}
