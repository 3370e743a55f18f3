// The only code that changes routing state. Every change is serialized,
// built into a whole new snapshot, persisted, then swapped in with one assignment.

import type { Color, Config } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { buildSnapshot, configureSampling, configureTargets, Switcher, type RoutingState, type ShadowWiring, type Snapshot, type SnapshotView, type StickyHold } from '../routing/snapshot.js'
import type { Guard, GuardTrip } from '../health/guard.js'
import type { Prober } from '../health/prober.js'
import type { SmokeRunner } from '../health/smoke.js'
import { log } from '../log.js'
import type { PersistedState } from '../state/file-store.js'
import { StoreConflict, type ColorCounts, type EventSink, type Fleet, type StateStore, type StoreChange, type StoreStatus } from '../state/store.js'
import type { HealthChange, TargetRegistry } from '../upstream/registry.js'
import { Drains } from './drains.js'
import type { ColorChange, EventType, NewEvent, SwitchyardEvent } from '../state/events.js'
import { FleetTally } from './fleet-tally.js'
import { applyColorChanges, isSamePlan, planFlip, planReload, planRollback, planTargets, type FlipPlan } from './plans.js'
import { checkHealthGate, checkReadiness, checkShadowGate, gateFailed, runSmokeGate, type GateFailure } from './gate.js'
import { describeShadow, emptyView, nextShadowExpiry, planShadowExpiry, planShadowStart, planShadowStop, type ShadowReader, type ShadowStartRequest, type ShadowStopRequest } from './shadow.js'
import type { ShadowView } from '../shadow/types.js'
import { describeTrip, Guards } from './guards.js'
import { diffConfigs } from './reload-diff.js'
import { FlipCounts, type ChangeResult, type DrainRequest, type FlipRequest, type FlipTrigger, type ReloadResult, type RollbackRequest, type TargetsRequest, type TargetsResult } from './requests.js'
import { describeState, lastGuardedFlip, listColorsUsing } from './state-view.js'
import { describePinning, type PinningReader } from './pinning.js'
import { describeRelease, isRunning, newRelease, parseReleaseRequest, releaseInProgress, runningReleaseOf, type Release, type ReleaseOutcome } from '../release/model.js'
import { endOverridden, planCreate, planEnd, planForward, planPause, planResume, type ReleaseMove } from './release-moves.js'
import type { SampleSource } from '../release/verdict.js'
import { Releases } from './releases.js'
import { randomInt } from 'node:crypto'

/** Health machinery the controller drives; absent in unit setups that need none. */
export interface HealthDeps {
  prober: Prober
  smoke: SmokeRunner
  /**
   * With worker processes: hands every new routing state (and config) to
   * them; a change is answered only once this resolves.
   */
  publish?: () => Promise<void>
  /**
   * Hears of every reload this controller accepts, services changed or not,
   * before its routing changes: the public listener reads its certificates
   * again here. Throwing refuses the reload, nothing changed.
   */
  reloading?: (config: Config) => Promise<void>
  /**
   * Shadow traffic: `wiring` builds shadow routes into this process's
   * snapshots (absent where workers serve the requests, or when the shadow
   * parts are not in this build); `reader` gives the comparisons GET
   * .../shadow and the gate read (this process's, or its workers' summed).
   */
  shadow?: { wiring?: ShadowWiring, reader?: ShadowReader }
  /** The pinning counts where workers serve the requests (their sums); absent: this process's own. */
  pinning?: PinningReader
}

export class Controller {
  /** The one holder of the routing snapshot: only commit() and holdSticky() swap it. */
  readonly #switcher: Switcher
  /** What the request path, metrics and workers read routing from. */
  readonly snapshots: SnapshotView
  /** What the metrics and /v1/state read of pinning: the workers' sums, or this process's kept snapshots' counts. */
  readonly pinning: PinningReader
  private config: Config
  private state: PersistedState
  /** The store revision `state` is at: what a write is conditioned on, and how changes already applied are recognized. */
  private revision: number
  private readonly registry: TargetRegistry
  private readonly store: StateStore
  readonly fleet: Fleet
  readonly events: EventSink
  /** The fleet's summed counts the guard judges; undefined for a fleet of one, whose guard reads this process's counts. */
  private readonly tally: FleetTally | undefined
  private readonly fleetWaiters = new Set<() => void>()
  /** The newest change from the fleet that did not fit this replica's config, kept for a reload that fixes it. */
  private unfit: StoreChange | undefined
  private readonly health: HealthDeps
  private readonly guards: Guards
  private readonly drains: Drains
  /** A change is being applied: the sticky holds its drains move go into the one snapshot it swaps in. */
  private applying = false
  private queue: Promise<unknown> = Promise.resolve()
  private stopped = false
  readonly flipCounts = new FlipCounts()
  /** Releases ended here, by outcome (switchyard_releases_total). */
  readonly releaseOutcomes: Record<ReleaseOutcome, number> = { done: 0, reverted: 0, aborted: 0, failed: 0 }
  private readonly releases: Releases
  /** Ends the admin API's shadow sessions when their duration runs out (on the leader). */
  private shadowTimer: NodeJS.Timeout | undefined

  private constructor (config: Config, state: PersistedState, revision: number, registry: TargetRegistry, store: StateStore, fleet: Fleet, snapshot: Snapshot, health: HealthDeps) {
    this.config = config
    this.state = state
    this.revision = revision
    this.registry = registry
    this.store = store
    this.fleet = fleet
    this.events = store.events
    this.health = health
    // Kept snapshots that go (pinning's `keep` ran out) may free targets only they used.
    this.#switcher = new Switcher(snapshot, () => { this.syncTargets() })
    this.snapshots = this.#switcher.view
    this.pinning = health.pinning ?? this.#switcher.kept
    const tally = store.kind === 'file' ? undefined : new FleetTally(fleet.id)
    this.tally = tally
    this.guards = new Guards({
      healthyTargets: (service, color) => this.#switcher.current.services.get(service)?.colors[color].targets.healthyCount ?? 0,
      colorStats: tally === undefined ? (service, color) => registry.colorStats(service, color) : (service, color) => tally.stats(service, color, registry.colorStats(service, color)),
      onTrip: (g, trip) => { void this.autoRevert(g, trip) },
    })
    this.drains = new Drains({
      config: () => this.config,
      colorStats: (service, color) => registry.colorStats(service, color),
      holdsChanged: () => this.onHoldsChanged(),
      // `generation` second, where the line of a drained event has always had it.
      record: ({ type, ...rest }) => this.events.append({ type, generation: this.state.generation, ...rest }),
    })
    this.releases = new Releases({
      state: () => this.state,
      config: () => this.config,
      isLeader: () => fleet.isLeader,
      apply: async (plan, actor) => await this.applyRelease(plan, actor),
      healthGate: (changes) => checkHealthGate(this.config, this.#switcher.current, changes).failures,
      smoke: async (changes) => await runSmokeGate(this.health.smoke, () => this.config, changes),
      shadowGate: (changes) => this.shadowGate(changes),
      healthyTargets: (service, color) => {
        const set = this.#switcher.current.services.get(service)?.colors[color].targets
        if (set === undefined) return 0
        // Right after a restart no probe has run yet: unknown is not unhealthy.
        return set.endpoints.every((e) => this.health.prober.hasProbed(e.target)) ? set.healthyCount : undefined
      },
      canSmoke: () => this.health.smoke.canRun(),
      counters: (service, color) => this.counters(service, color),
      isDraining: (service, color) => this.drains.get(service, color) !== undefined,
    })
    registry.onHealthChange((change) => this.onHealthChange(change))
    this.afterSwap(snapshot)
    this.report()
    this.scheduleShadowExpiry()
    fleet.onReplicas(() => {
      tally?.update(fleet.replicas())
      for (const wake of this.fleetWaiters) wake()
    })
    fleet.onLeadership((leading) => { this.onLeadership(leading) })
    store.watch(revision, (change) => {
      this.exclusive(() => { this.applyChange(change) }).catch((err: Error) => {
        log('error', 'a change from the fleet could not be applied; this replica stays on its generation', { revision: change.revision, error: err.message })
      })
    })
  }

  /**
   * Loads saved state (which wins over the config's `live`), builds the first
   * snapshot and follows the store's changes from there. The fleet is joined
   * by the caller once the gateway serves.
   */
  static async create (config: Config, registry: TargetRegistry, store: StateStore, fleet: Fleet, health: HealthDeps): Promise<Controller> {
    const { state: saved, revision } = await store.load()
    const state = withConfigServices(saved ?? { generation: 0, services: {}, lastChange: [] }, config)
    let snapshot: Snapshot
    try {
      snapshot = buildSnapshot(config, state, registry, health.shadow?.wiring)
    } catch (err) {
      throw new Error(`the state in ${store.where} does not fit the config: ${(err as Error).message}`)
    }
    return new Controller(config, state, revision, registry, store, fleet, snapshot, health)
  }

  /**
   * Runtime state follows the snapshot now in force: each target takes the
   * probe and passive settings of the first service (in config order) that
   * uses it, probes run for exactly the targets in use, unused ones go.
   */
  private afterSwap (snapshot: Snapshot): void {
    this.health.shadow?.wiring?.installed(snapshot)
    this.syncTargets()
    configureSampling(snapshot)
    // The constructor swaps before the runs exist; it syncs them itself once they do.
    this.releases.sync()
  }

  /**
   * Probes run for exactly the targets the current and kept snapshots use
   * (a chain pinned to a kept one is sent only to its healthy targets), and
   * the registry keeps those open and forgets the rest.
   */
  private syncTargets (): void {
    const switcher = this.#switcher
    this.health.prober.sync(configureTargets(switcher.current, ...switcher.kept.snapshots()))
    this.registry.prune(switcher.targets())
  }

  get generation (): number {
    return this.state.generation
  }

  storeStatus (): StoreStatus {
    return this.store.status()
  }

  get currentConfig (): Config {
    return this.config
  }

  /** Runs mutations one at a time, so ifGeneration checks and store commits never race. */
  private async exclusive<T> (fn: () => Promise<T> | T): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return await run
  }

  /**
   * `exclusive`, run again when another replica's commit got in first: the
   * change is planned again on the state it left (a stale `ifGeneration`
   * then gets its 412 from the plan). Losing three times in a row is a 412.
   */
  private async exclusiveRetried<T> (fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.exclusive(fn)
      } catch (err) {
        if (!(err instanceof StoreConflict)) throw err
        if (attempt === CONFLICT_ATTEMPTS) throw conflictRefusal(this.state.generation)
      }
    }
  }

  private checkGeneration (ifGeneration: number | undefined): void {
    if (ifGeneration !== undefined && ifGeneration !== this.state.generation) {
      throw new SwitchyardError('stale_generation', `ifGeneration ${ifGeneration} is stale: the current generation is ${this.state.generation}`, { generation: this.state.generation })
    }
  }

  private resolveServices (names: string[] | undefined): string[] {
    if (names === undefined) return Object.keys(this.config.services)
    for (const name of names) {
      if (!Object.hasOwn(this.config.services, name)) throw new SwitchyardError('unknown_service', `unknown service: ${name}`, { service: name })
    }
    return [...new Set(names)]
  }

  /**
   * Build, persist, swap. If building or committing throws, neither the
   * routing nor the in-memory state has changed. The store decides what
   * committed means (the file store: event line and state file fsynced; etcd:
   * a transaction conditioned on `revision`) and calls back to swap the new
   * snapshot in at that moment. Another replica's commit that got there
   * first is applied here before the StoreConflict goes up, so the caller can
   * plan again on it.
   *
   * `applyFirst` is for the guard's auto-revert: nobody waits for an answer,
   * and every moment on the failing color costs requests, so a store that can
   * (the file store) swaps at once and persists after. `base` is the store
   * revision `next` was planned on (a reload that takes in a fleet change
   * this replica could not apply plans on that change).
   */
  private async commit (next: PersistedState, event: Omit<NewEvent, 'generation'> & Pick<NewEvent, 'type' | 'reason' | 'actor'>, applyFirst = false, config = this.config, base = this.revision): Promise<SwitchyardEvent> {
    if (this.unfit !== undefined && base === this.revision) {
      throw new SwitchyardError('stale_generation', `this replica could not apply generation ${this.unfit.state.generation} from ${this.store.where} (it does not fit this replica's config, see its log) and stays on generation ${this.state.generation}: reload a config it fits; nothing changed`, { generation: this.state.generation })
    }
    // A rollback or revert leaves the colors earlier generations routed to: chains pinned to them pin no more.
    if (endsPins(event)) next = { ...next, pinFloor: next.generation }
    let snapshot: Snapshot
    const holds = this.drains.holds()
    try {
      snapshot = this.build(config, { ...next, sticky: holds })
    } catch (err) {
      throw new SwitchyardError('bad_request', `${event.type} refused: ${(err as Error).message}; nothing changed`)
    }
    let applied: SwitchyardEvent | undefined
    let published: Promise<void> | undefined
    try {
      this.revision = await this.store.commit(next, { ...event, generation: next.generation }, (stored) => {
        applied = stored
        this.countEndedReleases(this.state, next)
        const changes = event.changes as ColorChange[] | undefined
        this.install(next, config, snapshot, holds, colorChangesBetween(this.state, next), event)
        const trigger = FLIP_TRIGGERS[event.type]
        if (trigger !== undefined && changes !== undefined) this.flipCounts.add(changes, trigger)
        published = this.health.publish?.()
      }, { base, applyFirst })
    } catch (err) {
      if (err instanceof StoreConflict) this.applyChange(err.current)
      throw err
    }
    this.report()
    await published
    return applied as SwitchyardEvent
  }

  /**
   * Swaps in a committed state: drains and sticky holds follow its color
   * changes exactly as on the replica that made it; one snapshot, with the
   * holds in force now, goes in.
   */
  private install (next: PersistedState, config: Config, snapshot: Snapshot, holds: Readonly<Record<string, StickyHold>>, changes: readonly ColorChange[], event: Pick<NewEvent, 'type'> & Partial<NewEvent> | undefined): void {
    const abandoned = abandonedSplits(this.state, next, config)
    const taken = takenByRelease(this.state, next)
    this.config = config
    this.state = next
    this.unfit = undefined
    // A release owns its services from its first commit, on every replica: a guard still watching an earlier flip must not revert under it, nor a drain of the idle color close what it sends there.
    if (taken.length > 0) {
      this.guards.end(taken)
      this.drains.cancel(taken)
    }
    const draining = releaseDrains(next, event)
    if (changes.length > 0 || abandoned.length > 0 || draining.length > 0) {
      this.applying = true
      try {
        // A release's switch to its new colors drains nothing yet: the old colors stay whole (no drain, no onDrained hook to scale them down) until the verdict is in, and drain in `draining`.
        // Sessions are pinned to the old color only when it is a good one to stay on: not after a rollback or revert away from it.
        if (event?.forward !== true) this.drains.retire(changes, event?.type === 'flip')
        for (const c of draining) this.drains.start(c.service, c.color, config.services[c.service].drain.timeout, true)
        // A split ended without its color going live (a revert or abort while shifting): the WebSockets it sent there drain as a left color's do.
        for (const { service, color } of abandoned) this.drains.start(service, color, config.services[service].drain.timeout, false)
      } finally {
        this.applying = false
      }
    }
    // Drains start and end holds (here, and on their own clock while the change was written).
    const now = this.drains.holds()
    if (!sameHolds(now, holds)) snapshot = this.build(config, { ...next, sticky: now })
    this.#switcher.swap(snapshot)
    this.afterSwap(snapshot)
    this.scheduleShadowExpiry()
  }

  /** A snapshot of `state` under `config`, with this process's shadow routes. */
  private build (config: Config, state: RoutingState): Snapshot {
    return buildSnapshot(config, state, this.registry, this.health.shadow?.wiring)
  }

  /**
   * A change another replica committed (from the store's watch, or the
   * state a lost race found): swapped in as a local one would be. One this
   * replica has already applied is recognized by its revision. A state that
   * does not fit this replica's config is logged and not applied: the
   * replica shows as lagging in the fleet view, and its writes are refused
   * until a reload brings a config it fits (`config`: the one being loaded).
   */
  private applyChange (change: StoreChange, config = this.config): void {
    if (change.revision <= this.revision) return
    const next = withConfigServices(change.state, config)
    const changes = colorChangesBetween(this.state, next)
    const holds = this.drains.holds()
    let snapshot: Snapshot
    try {
      snapshot = this.build(config, { ...next, sticky: holds })
    } catch (err) {
      this.unfit = change
      log('error', 'a change from the fleet does not fit this replica\'s config; it stays on its generation until a reload brings one it fits', { where: this.store.where, generation: this.state.generation, offered: change.state.generation, error: (err as Error).message })
      return
    }
    const event = change.event
    this.install(next, config, snapshot, holds, changes, event)
    this.revision = change.revision
    this.guards.end(changes.map((c) => c.service))
    if (event?.type === 'flip' && event.guard !== false && this.fleet.isLeader) this.guards.start(this.config, changes, event.id)
    this.health.publish?.().catch((err: Error) => log('error', 'could not hand a fleet change to the workers', { error: err.message }))
    this.report()
  }

  /** This replica's record in the fleet: the generation it serves and its counts per color. */
  private report (): void {
    this.fleet.report({ generation: this.state.generation, revision: this.revision }, () => this.counts())
  }

  private counts (): ColorCounts {
    const out: ColorCounts = {}
    // Latency only while a release samples the color: the record is written every second, and most colors have none.
    const countsOf = ({ requests, errors, latency }: ReturnType<TargetRegistry['colorStats']>): ColorCounts[string]['blue'] =>
      latency === undefined ? { requests, errors } : { requests, errors, latency: latency.toSparse() }
    for (const name of Object.keys(this.config.services)) {
      out[name] = { blue: countsOf(this.registry.colorStats(name, 'blue')), green: countsOf(this.registry.colorStats(name, 'green')) }
    }
    return out
  }

  /**
   * The guard runs on the fleet's leader only. A replica that takes the lead
   * takes over the window of the last guarded flip, if it is still open and
   * its colors still live, judging only the counts from now on.
   */
  private onLeadership (leading: boolean): void {
    this.releases.sync()
    this.scheduleShadowExpiry()
    if (!leading) {
      this.guards.endAll()
      return
    }
    const flip = lastGuardedFlip(this.events.list(), this.state)
    if (flip === undefined) return
    this.guards.end(flip.changes.map((c) => c.service))
    this.guards.start(this.config, flip.changes, flip.id, Date.parse(flip.time))
  }

  /**
   * Resolves when every registered replica has applied `generation`, or at
   * `timeoutMs`: whether it converged, and the replicas still behind.
   */
  async waitForFleet (generation: number, timeoutMs: number): Promise<{ converged: boolean, lagging: string[] }> {
    const lagging = (): string[] => this.fleet.replicas().filter((r) => r.generation < generation).map((r) => r.id)
    if (lagging().length === 0) return { converged: true, lagging: [] }
    return await new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer)
        this.fleetWaiters.delete(check)
        const behind = lagging()
        resolve({ converged: behind.length === 0, lagging: behind })
      }
      const check = (): void => { if (lagging().length === 0) finish() }
      const timer = setTimeout(finish, timeoutMs)
      this.fleetWaiters.add(check)
    })
  }

  /** The kept generations, oldest first, each with when it stopped being current (for a worker started after they were retired). */
  keptGenerations (): Array<{ generation: number, retiredAt: number }> {
    return this.#switcher.kept.retired()
  }

  /** Target URLs the current and kept snapshots route to. */
  targetsInUse (): Set<string> {
    return this.#switcher.targets()
  }

  /** The routing state and config now in force (what worker processes are given). */
  routing (): { config: Config, state: RoutingState } {
    // Workers route; the releases' records (verdicts and all) are not theirs to carry.
    const { releases: _releases, ...state } = this.state
    return { config: this.config, state: { ...state, sticky: this.drains.holds() } }
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
    const snapshot = this.build(this.config, this.routing().state)
    this.#switcher.swap(snapshot)
    this.health.shadow?.wiring?.installed(snapshot)
    this.health.publish?.().catch((err: Error) => log('error', 'could not hand a sticky hold to the workers', { error: err.message }))
  }

  /** POST /v1/services/NAME/drain: start (or hurry) the drain of a color that is not live. */
  async drain (req: DrainRequest): Promise<Record<string, unknown>> {
    const [name] = this.resolveServices([req.service])
    // A release sends traffic to the idle color and drains the old one itself.
    this.refuseIfReleasing([name], 'a drain')
    return await this.drains.request(name, this.state.services[name].live, req)
  }

  /**
   * Applies a re-read config: a new snapshot with the live colors from state
   * and target health from the registry; open connections are untouched.
   * A config that changes nothing does nothing.
   */
  async reload (config: Config, actor = 'api'): Promise<ReloadResult> {
    return await this.exclusiveRetried(async () => {
      const { restart, added, removed, updated, tokenChanged, hostsChanged } = diffConfigs(this.config, config)
      if (restart.length > 0) throw new SwitchyardError('bad_request', `reload cannot change ${restart.join(', ')}: restart the gateway for that; nothing changed`, { fields: restart })
      this.refuseIfReleasing(removed, 'a reload that removes a service')
      await this.health.reloading?.(config)
      if (added.length + removed.length + updated.length === 0 && !tokenChanged && !hostsChanged) {
        return { generation: this.state.generation, changed: false, added, removed, updated }
      }
      // A fleet change the running config could not take may fit the new one: the reload is planned on it, one commit and one swap.
      const unfit = this.unfit
      const next = planReload(added, unfit === undefined ? this.state : withConfigServices(unfit.state, config), config)
      await this.commit(next, { type: 'reload', reason: null, actor, added, removed, updated, ...(tokenChanged ? { adminToken: 'changed' } : {}), ...(hostsChanged ? { allowedHosts: config.admin.allowedHosts } : {}) }, false, config, unfit?.revision)
      this.guards.end(removed)
      this.drains.cancel(removed)
      return { generation: next.generation, changed: true, added, removed, updated }
    })
  }

  /**
   * The guard tripped: every service of its flip goes back in one swap, no
   * gate. While the store cannot be reached the revert is tried again every
   * second, as long as this replica leads and nothing else changed those services.
   */
  private async autoRevert (guard: Guard, trip: GuardTrip): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.revert(guard, trip)
        return
      } catch (err) {
        const unreachable = err instanceof SwitchyardError && err.code === 'store_unavailable'
        log('error', 'auto-revert failed', { error: (err as Error).message, trip, ...(unreachable ? { retryInMs: REVERT_RETRY_MS } : {}) })
        if (!unreachable || attempt === REVERT_ATTEMPTS || this.stopped || !this.fleet.isLeader) return
        await new Promise((resolve) => setTimeout(resolve, REVERT_RETRY_MS).unref())
      }
    }
  }

  private async revert (guard: Guard, trip: GuardTrip): Promise<void> {
    await this.exclusiveRetried(async () => {
      // A manual change since the trip (here or on another replica) wins; revert only what is still as the guarded flip left it.
      // A release that took a service over since (on another replica, or while this revert waited in the queue) owns its colors.
      const reverts = guard.reverts.filter((r) => this.state.services[r.service]?.live === r.from && this.state.services[r.service]?.release === undefined)
      if (reverts.length === 0) return
      const next = applyColorChanges(this.state, reverts)
      const reason = describeTrip(trip, this.config)
      await this.commit(next, { type: 'auto_revert', reason, actor: 'guard', changes: reverts, trip, flipEvent: guard.id }, true)
      log('warn', 'auto-revert', { reason, changes: reverts })
    })
  }

  /** Health transitions are events; a guarded color may have just lost its last target. */
  private onHealthChange (change: HealthChange): void {
    void this.events.append({
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
    this.stopped = true
    clearTimeout(this.shadowTimer)
    this.#switcher.stop()
    this.releases.stop()
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
   * `ifGeneration`, whose premise is gone) is refused with 412. A commit
   * lost to another replica's is planned again on the state that won, as
   * every change is (exclusiveRetried): a flip the other replica already made
   * is then no change.
   */
  async flip (req: FlipRequest): Promise<ChangeResult> {
    let first: FlipPlan | undefined
    let smoked: FlipPlan | undefined
    for (let race = 1; ; race++) {
      const step = await this.exclusiveRetried(async (): Promise<ChangeResult | { plan: FlipPlan, failures: GateFailure[], smoke: ColorChange[] }> => {
        this.checkGeneration(req.ifGeneration)
        const names = this.resolveServices(req.services)
        if (req.force !== true) this.refuseIfReleasing(names, 'flip')
        const plan = planFlip(req, names, this.state, this.config, first)
        first ??= plan
        if (plan.changes.length === 0) return { generation: plan.generation, changes: [] }
        const gate = req.force === true ? { failures: [], smoke: [] } : checkHealthGate(this.config, this.#switcher.current, plan.changes)
        // Too few pairs yet: a flip is not held for them (the shadow gate does not judge).
        const failures = req.force === true ? gate.failures : [...gate.failures, ...this.shadowGate(plan.changes).filter((f) => f.pending !== true)]
        const smoke = gate.smoke
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
      }).catch((err: unknown) => {
        if (err instanceof StoreConflict) return undefined
        throw err
      })
      if (result !== undefined) return result
      if (req.ifGeneration !== undefined || race === 2) {
        throw new SwitchyardError('stale_generation', `flip refused: another change (generation ${this.state.generation}) landed while the smoke checks ran on generation ${plan.generation}; nothing changed, try again`, { generation: this.state.generation })
      }
    }
  }

  /** In the queue, on the generation the plan was made from. */
  private async commitFlip (req: FlipRequest, plan: FlipPlan): Promise<ChangeResult> {
    // A forced flip over a running release ends it: its weights go, the flip decides the colors of its services, the release's others go back.
    const moved: ColorChange[] = []
    const before = this.state
    const next = endOverridden(applyColorChanges(this.state, plan.changes), plan.changes.map((c) => c.service), Date.now(), `overridden by a forced flip (${req.actor ?? 'api'})`, moved)
    const changes = [...plan.changes, ...moved]
    const guarded = req.guard !== false
    const event = await this.commit(next, {
      type: 'flip', reason: req.reason ?? null, actor: req.actor ?? 'api', changes,
      ...(req.force === true ? { forced: true } : {}),
      ...(guarded ? {} : { guard: false }),
    })
    this.recordOverridden(before, next, req.actor ?? 'api')
    this.guards.end(changes.map((c) => c.service))
    if (guarded && this.fleet.isLeader) this.guards.start(this.config, changes, event.id)
    return { generation: next.generation, changes, event }
  }

  async rollback (req: RollbackRequest): Promise<ChangeResult> {
    return await this.exclusiveRetried(async () => {
      this.checkGeneration(req.ifGeneration)
      const names = req.services === undefined ? this.state.lastChange.filter((n) => this.config.services[n] !== undefined) : this.resolveServices(req.services)
      if (names.length === 0) throw new SwitchyardError('nothing_to_roll_back', 'nothing to roll back: no color change has been made yet')
      this.refuseIfReleasing(names, 'rollback')
      const { next, changes } = planRollback(names, this.state, this.config)
      const event = await this.commit(next, { type: 'rollback', reason: req.reason ?? null, actor: req.actor ?? 'api', changes })
      this.guards.end(names)
      return { generation: next.generation, changes, event }
    })
  }

  async setTargets (req: TargetsRequest): Promise<TargetsResult> {
    return await this.exclusiveRetried(async () => {
      this.checkGeneration(req.ifGeneration)
      const [name] = this.resolveServices([req.service])
      if (req.force !== true) this.refuseIfReleasing([name], 'setting targets')
      const plan = planTargets(name, req, this.state, this.config)
      if (plan.next === undefined) return { generation: this.state.generation, service: name, color: req.color, targets: plan.before }
      const { before, isLive } = plan
      const was = this.state
      const next = endOverridden(plan.next, [name], Date.now(), `overridden by new targets set with force (${req.actor ?? 'api'})`)
      const event = await this.commit(next, {
        type: 'targets', reason: req.reason ?? null, actor: req.actor ?? 'api',
        service: name, color: req.color, from: before, to: req.targets, ...(isLive ? { forced: true } : {}),
      })
      this.recordOverridden(was, next, req.actor ?? 'api')
      return { generation: next.generation, service: name, color: req.color, targets: req.targets, event }
    })
  }

  /**
   * A forced flip or targets change ended these releases inside its own
   * commit (one event, the flip's): each still gets its `release` event, as
   * every phase change does, so the events say how it ended.
   */
  private recordOverridden (before: PersistedState, after: PersistedState, actor: string): void {
    for (const was of before.releases ?? []) {
      const now = after.releases?.find((r) => r.id === was.id)
      if (!isRunning(was.phase) || now === undefined || isRunning(now.phase)) continue
      void this.events.append({ type: 'release', generation: after.generation, reason: now.reason, actor, release: now.id, phase: now.phase, from: was.phase, ...(now.outcome === null ? {} : { outcome: now.outcome }) })
      log('warn', `release ${now.id} ${now.phase}`, { release: now.id, outcome: now.outcome })
    }
  }

  /** switchyard_releases_total: releases running before a commit made here and ended by it (a forced flip ends one too). */
  private countEndedReleases (before: PersistedState, after: PersistedState): void {
    const running = new Set((before.releases ?? []).filter((r) => isRunning(r.phase)).map((r) => r.id))
    for (const r of after.releases ?? []) if (running.has(r.id) && !isRunning(r.phase)) this.releaseOutcomes[r.phase as ReleaseOutcome]++
  }

  /** 409 release_in_progress when a running release holds one of `names`. */
  private refuseIfReleasing (names: readonly string[], what: string): void {
    for (const name of names) {
      const r = runningReleaseOf(this.state.releases, name)
      if (r !== undefined) throw releaseInProgress(r, names.filter((n) => r.services[n] !== undefined), what)
    }
  }

  /** A color's counters: requests and errors as the guard sees them, latency as sampled (the fleet's sums on etcd). */
  private counters (service: string, color: Color): SampleSource {
    const local = this.registry.colorStats(service, color)
    return this.tally === undefined ? local : this.tally.stats(service, color, local)
  }

  /**
   * POST /v1/releases: checked against the config, then in the queue
   * against the state (a running release holding one of its services is a
   * 409), then committed in phase `deploying`. The leader's run takes it
   * from there, here or on another replica.
   */
  async startRelease (body: Record<string, unknown>, actor: string): Promise<Record<string, unknown>> {
    const req = parseReleaseRequest(body, this.config)
    return await this.exclusiveRetried(async () => {
      this.checkGeneration(req.ifGeneration)
      const names = Object.keys(req.services)
      for (const name of names) {
        if (!Object.hasOwn(this.config.services, name)) throw new SwitchyardError('bad_request', `services.${name}: unknown service`, { field: `services.${name}` })
      }
      this.refuseIfReleasing(names, 'a second release')
      // Above every id the state keeps: an imported state may carry releases numbered past this store's generation.
      const id = `r${Math.max(this.state.generation + 1, ...(this.state.releases ?? []).map((r) => Number(r.id.slice(1)) + 1).filter(Number.isSafeInteger))}`
      const now = new Date().toISOString()
      const release = newRelease(id, req, (n) => this.state.services[n].live, this.config, actor, randomInt(0, 0x100000000), now)
      const next = planCreate(this.state, release)
      await this.commit(next, { type: 'release', reason: release.reason, actor, release: id, phase: 'deploying', services: Object.fromEntries(Object.entries(release.services).map(([n, s]) => [n, { targets: s.targets, version: s.version, from: s.from, to: s.to }])), steps: release.steps })
      return describeRelease(release)
    })
  }

  /**
   * One move of a release, planned in the queue on the state in force and
   * committed as a `release` event; its color changes count as flips
   * (a release's own as `release`, a revert as `auto_revert`, an abort as `manual`).
   */
  private async applyRelease (plan: (state: PersistedState) => ReleaseMove | undefined, actor: string): Promise<ReleaseMove | undefined> {
    return await this.exclusiveRetried(async () => {
      const move = plan(this.state)
      if (move === undefined) return undefined
      await this.commit(move.next, { type: 'release', actor, ...move.event })
      if (move.changes.length > 0) {
        this.guards.end(move.changes.map((c) => c.service))
        this.flipCounts.add(move.changes, move.event.forward === true ? 'release' : move.release.phase === 'aborted' ? 'manual' : 'auto_revert')
      }
      const phase = move.release.phase
      if (!isRunning(phase)) {
        log(phase === 'done' ? 'info' : 'warn', `release ${move.release.id} ${phase}`, { release: move.release.id, outcome: move.release.outcome })
      } else if (move.event.from !== phase || move.event.step !== undefined) {
        log('info', `release ${move.release.id} ${phase}`, { release: move.release.id, step: move.release.step, weight: move.release.weight })
      }
      return move
    })
  }

  /** POST /v1/releases/ID/ACTION: pause, resume, promote (to 100% now, while shifting), abort (back to the old colors at once). */
  async releaseAction (id: string, action: 'pause' | 'resume' | 'promote' | 'abort', actor: string): Promise<Record<string, unknown>> {
    const find = (state: PersistedState): Release => {
      const r = state.releases?.find((x) => x.id === id)
      if (r === undefined) throw new SwitchyardError('not_found', `no release ${id}`, { release: id })
      if (!isRunning(r.phase)) throw new SwitchyardError('release_state', `release ${id} is ${r.phase}: ${action} applies only to a running release`, { release: id, phase: r.phase })
      return r
    }
    const move = await this.applyRelease((state) => {
      const r = find(state)
      const now = Date.now()
      switch (action) {
        case 'pause': return r.pausedAt === null ? planPause(state, id, now) : undefined
        case 'resume': return r.pausedAt === null ? undefined : planResume(state, id, now)
        case 'abort': return planEnd(state, id, 'aborted', now, `aborted by ${actor}`)
        case 'promote':
          if (r.phase === 'shifting') return planForward(state, id, now, this.releases.baseline(id))
          // Only while shifting: a second promote (a double click, a retried request) must not skip the verify window.
          throw new SwitchyardError('release_state', `release ${id} is ${r.phase}: promote (to 100% now) applies only while shifting`, { release: id, phase: r.phase })
      }
      return undefined
    }, actor)
    return this.getRelease(move?.release.id ?? id)
  }

  /** GET /v1/releases: newest first. */
  listReleases (): Array<Record<string, unknown>> {
    return [...(this.state.releases ?? [])].reverse().map((r) => describeRelease(r, this.releases.current(r.id)))
  }

  getRelease (id: string): Record<string, unknown> {
    const r = this.state.releases?.find((x) => x.id === id)
    if (r === undefined) throw new SwitchyardError('not_found', `no release ${id}`, { release: id })
    return describeRelease(r, isRunning(r.phase) ? this.releases.current(id) : undefined)
  }

  /** The shadow half of the gate for `changes`, on the comparisons in force: its failures (none: passed). */
  private shadowGate (changes: readonly ColorChange[]): GateFailure[] {
    return checkShadowGate(this.config, this.#switcher.current, changes, (service, key) => this.shadowComparison(service, key))
  }

  /** The view of a service's comparison `key`; undefined when nothing was counted under it. */
  private shadowComparison (service: string, key: string): ShadowView | undefined {
    const reader = this.health.shadow?.reader
    const data = reader?.comparison(service, key)
    return reader === undefined || data === undefined ? undefined : reader.viewOf(data)
  }

  /**
   * POST /v1/services/NAME/shadow: the admin API's session over the
   * config's word (sample, and an end when `duration` is given), committed
   * as a `shadow` event. Refused for an h2c/h2 service and for one whose
   * idle color has no targets (nothing to copy to).
   */
  async startShadow (req: ShadowStartRequest): Promise<Record<string, unknown>> {
    return await this.exclusiveRetried(async () => {
      const [name] = this.resolveServices([req.service])
      const { next, sample, until } = planShadowStart(req, this.state, this.config.services[name], Date.now())
      const event = await this.commit(next, {
        type: 'shadow', reason: req.reason ?? null, actor: req.actor ?? 'api', service: name, action: 'start', sample,
        ...(until === undefined ? {} : { until: new Date(until).toISOString() }),
      })
      return { generation: next.generation, event: event.id, ...this.shadowView(name) }
    })
  }

  /** DELETE /v1/services/NAME/shadow: off, over the config's word too; already off changes nothing. */
  async stopShadow (req: ShadowStopRequest): Promise<Record<string, unknown>> {
    return await this.exclusiveRetried(async () => {
      const [name] = this.resolveServices([req.service])
      const next = planShadowStop(this.state, this.config.services[name])
      if (next === undefined) return { generation: this.state.generation, ...this.shadowView(name) }
      const event = await this.commit(next, { type: 'shadow', reason: req.reason ?? null, actor: req.actor ?? 'api', service: name, action: 'stop' })
      return { generation: next.generation, event: event.id, ...this.shadowView(name) }
    })
  }

  /** GET /v1/services/NAME/shadow: what is in force, and the comparison of the idle targets in force (empty before any). */
  shadowView (name: string): Record<string, unknown> {
    const [service] = this.resolveServices([name])
    const key = this.#switcher.current.services.get(service)?.shadowKey
    const view = key === undefined ? undefined : this.shadowComparison(service, key)
    return describeShadow(this.config.services[service], this.state, view ?? emptyView())
  }

  /**
   * The admin API's sessions end by the clock: the resolve step stops
   * sampling at `until` on its own; the leader then drops the override (a
   * `shadow` event, one generation on) so the state says so too.
   */
  private scheduleShadowExpiry (retryMs?: number): void {
    clearTimeout(this.shadowTimer)
    this.shadowTimer = undefined
    const first = nextShadowExpiry(this.state)
    if (this.stopped || first === undefined || !this.fleet.isLeader) return
    const delay = retryMs ?? Math.min(Math.max(0, first - Date.now()) + SHADOW_EXPIRY_SLACK_MS, 2 ** 31 - 1)
    this.shadowTimer = setTimeout(() => { void this.expireShadow() }, delay)
    this.shadowTimer.unref()
  }

  private async expireShadow (): Promise<void> {
    try {
      await this.exclusiveRetried(async () => {
        const plan = this.fleet.isLeader && !this.stopped ? planShadowExpiry(this.state, Date.now()) : undefined
        // Woken before any end (a delay past setTimeout's 24.8-day limit is cut to it): wait again.
        if (plan === undefined) return this.scheduleShadowExpiry()
        await this.commit(plan.next, { type: 'shadow', reason: 'the shadow session\'s duration ran out', actor: 'shadow', action: 'expired', services: plan.services })
      })
    } catch (err) {
      log('error', 'an ended shadow session could not be cleared; tried again', { error: (err as Error).message, retryInMs: REVERT_RETRY_MS })
      this.scheduleShadowExpiry(REVERT_RETRY_MS)
    }
  }

  /** The view served by GET /v1/state. */
  describe (): Record<string, unknown> {
    return describeState({
      snapshot: this.#switcher.current,
      state: this.state,
      drainOf: (service, color) => this.drains.get(service, color),
      guardOf: (service) => this.guards.describe(service),
      store: this.store,
      fleet: this.fleet,
      pinning: this.config.pinning === undefined ? null : describePinning(this.config.pinning, this.state.pinFloor ?? 0, this.#switcher.kept.list(this.config.pinning.keep), this.pinning),
    })
  }

  async idle (): Promise<void> {
    await this.queue
    await this.events.flush()
  }
}

/** What switchyard_flips_total counts a color change made here as (changes other replicas made are theirs to count). */
const FLIP_TRIGGERS: Partial<Record<EventType, FlipTrigger>> = { flip: 'manual', rollback: 'rollback', auto_revert: 'auto_revert' }

/** A change that goes back from the colors the generations before it routed to: a rollback, the guard's revert, a release ending on its old colors. */
function endsPins (event: Pick<NewEvent, 'type'> & Partial<NewEvent>): boolean {
  if (event.type === 'rollback' || event.type === 'auto_revert') return true
  return event.type === 'release' && (event.phase === 'reverted' || event.phase === 'aborted' || event.phase === 'failed')
}

/** An auto-revert the store refused for being unreachable is tried again this often, this many times. */
const REVERT_RETRY_MS = 1_000
const REVERT_ATTEMPTS = 30

/** An ended shadow session is cleared this long after its end (the resolve step already stopped at the end itself). */
const SHADOW_EXPIRY_SLACK_MS = 50

/** Tries at a change that keeps losing to other replicas' commits before it is refused. */
const CONFLICT_ATTEMPTS = 3

function conflictRefusal (generation: number): SwitchyardError {
  return new SwitchyardError('stale_generation', `refused: other replicas changed the state (now generation ${generation}) each time this change was about to commit; nothing changed, try again`, { generation })
}

/** Every service of the config has a state: one the state does not know yet starts on its configured live color. */
function withConfigServices (state: PersistedState, config: Config): PersistedState {
  const services = { ...state.services }
  for (const svc of Object.values(config.services)) services[svc.name] ??= { live: svc.live, previous: null, targets: {} }
  return { ...state, services }
}

/** Colors a split sent traffic to that lose it in `after` without becoming live: nothing else would close their WebSockets. */
function abandonedSplits (before: PersistedState, after: PersistedState, config: Config): Array<{ service: string, color: Color }> {
  const out: Array<{ service: string, color: Color }> = []
  for (const [service, st] of Object.entries(after.services)) {
    const was = before.services[service]?.split
    if (was !== undefined && st.split === undefined && st.live !== was.color && Object.hasOwn(config.services, service)) out.push({ service, color: was.color })
  }
  return out
}

/** Services a running release holds in `after` and did not in `before`. */
function takenByRelease (before: PersistedState, after: PersistedState): string[] {
  return Object.entries(after.services).filter(([name, st]) => st.release !== undefined && before.services[name]?.release !== st.release).map(([name]) => name)
}

/** The move to `draining` (after the verdict passed): each service's old color starts its drain, on every replica. */
function releaseDrains (next: PersistedState, event: Partial<NewEvent> | undefined): Array<{ service: string, color: Color }> {
  if (event?.type !== 'release' || event.phase !== 'draining') return []
  const r = next.releases?.find((x) => x.id === event.release)
  if (r === undefined) return []
  return Object.entries(r.services).filter(([name, s]) => next.services[name]?.live === s.to).map(([name, s]) => ({ service: name, color: s.from }))
}

/** The services whose live color differs between two states. */
function colorChangesBetween (before: PersistedState, after: PersistedState): ColorChange[] {
  const changes: ColorChange[] = []
  for (const [service, st] of Object.entries(after.services)) {
    const was = before.services[service]
    if (was !== undefined && was.live !== st.live) changes.push({ service, from: was.live, to: st.live })
  }
  return changes
}

/** The same sticky holds (service, color and deadline), so the snapshot built with the one fits the other. */
function sameHolds (a: Readonly<Record<string, StickyHold>>, b: Readonly<Record<string, StickyHold>>): boolean {
  const keys = Object.keys(a)
  if (keys.length !== Object.keys(b).length) return false
  return keys.every((k) => b[k] !== undefined && a[k].color === b[k].color && a[k].until === b[k].until)
}
