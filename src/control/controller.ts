// The only code that changes routing state. Every change is serialized,
// built into a whole new snapshot, persisted, then swapped in with one assignment.

import { COLORS, otherColor, type Color, type Config } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { buildSnapshot, colorTargets, snapshotTargets, Switcher, type RoutingState, type ServiceState, type Snapshot } from '../routing/snapshot.js'
import type { FileStateStore, PersistedState } from '../state/file-store.js'
import type { TargetRegistry } from '../upstream/registry.js'
import type { ColorChange, EventLog, NewEvent, SwitchyardEvent } from './events.js'

export interface FlipRequest {
  services?: string[]
  to?: Color
  force?: boolean
  reason?: string
  ifGeneration?: number
  /** false leaves the post-flip guard off for this flip (the guard arrives with health probes). */
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

export type ColorState = 'live' | 'draining' | 'idle'

export class Controller {
  readonly switcher: Switcher
  private config: Config
  private state: PersistedState
  private readonly registry: TargetRegistry
  private readonly store: FileStateStore
  readonly events: EventLog
  private queue: Promise<unknown> = Promise.resolve()

  private constructor (config: Config, state: PersistedState, registry: TargetRegistry, store: FileStateStore, events: EventLog, snapshot: Snapshot) {
    this.config = config
    this.state = state
    this.registry = registry
    this.store = store
    this.events = events
    this.switcher = new Switcher(snapshot)
  }

  /** Loads saved state (which wins over the config's `live`) and builds the first snapshot. */
  static async create (config: Config, registry: TargetRegistry, store: FileStateStore, events: EventLog): Promise<Controller> {
    const saved = await store.load()
    const state: PersistedState = saved ?? { generation: 0, services: {}, lastChange: [] }
    for (const svc of Object.values(config.services)) {
      state.services[svc.name] ??= { live: svc.live, previous: null, targets: {} }
    }
    await events.restore()
    let snapshot: Snapshot
    try {
      snapshot = buildSnapshot(config, state, registry)
    } catch (err) {
      throw new Error(`state file ${store.file} does not fit the config: ${(err as Error).message}`)
    }
    return new Controller(config, state, registry, store, events, snapshot)
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
   */
  private async commit (next: PersistedState, event: Omit<NewEvent, 'generation'> & Pick<NewEvent, 'type' | 'reason' | 'actor'>): Promise<SwitchyardEvent> {
    const snapshot = buildSnapshot(this.config, next, this.registry)
    try {
      await this.store.save(next)
    } catch (err) {
      throw new SwitchyardError('state_write_failed', `could not write ${this.store.file}: ${(err as Error).message}; nothing changed`)
    }
    this.state = next
    this.switcher.swap(snapshot)
    this.registry.prune(snapshotTargets(snapshot))
    return this.events.append({ ...event, generation: next.generation })
  }

  private cloneState (): PersistedState {
    return structuredClone(this.state)
  }

  async flip (req: FlipRequest): Promise<ChangeResult> {
    return await this.exclusive(async () => {
      this.checkGeneration(req.ifGeneration)
      const names = this.resolveServices(req.services)
      const next = this.cloneState()
      const changes: ColorChange[] = []
      const failures: Array<{ service: string, color: Color, reason: string }> = []
      const snapshot = this.switcher.current
      for (const name of names) {
        const st = next.services[name]
        const to = req.to ?? otherColor(st.live)
        if (to === st.live) continue
        const set = snapshot.services.get(name)?.colors[to].targets
        const total = set?.endpoints.length ?? 0
        if (total === 0) throw new SwitchyardError('no_targets', `service ${name}: ${to} has no targets; set them first (PUT /v1/services/${name}/environments/${to}/targets)`, { service: name, color: to })
        const healthy = set?.healthyCount ?? 0
        const minHealthy = this.config.services[name].gate.minHealthy
        if (healthy < minHealthy) failures.push({ service: name, color: to, reason: `${healthy} healthy target(s), gate.minHealthy is ${minHealthy}` })
        changes.push({ service: name, from: st.live, to })
        next.services[name] = { ...st, live: to, previous: st.live }
      }
      if (failures.length > 0 && req.force !== true) {
        throw new SwitchyardError('gate_failed', `flip refused: ${failures.map((f) => `${f.service}/${f.color}: ${f.reason}`).join('; ')}`, { failures })
      }
      if (changes.length === 0) return { generation: this.state.generation, changes }
      next.generation++
      next.lastChange = changes.map((c) => c.service)
      const event = await this.commit(next, {
        type: 'flip', reason: req.reason ?? null, actor: req.actor ?? 'api', changes,
        ...(req.force === true ? { forced: true } : {}),
        ...(failures.length > 0 ? { gateFailures: failures } : {}),
      })
      return { generation: next.generation, changes, event }
    })
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
          state: colorState(route.live === color, c.stats.inflight + c.stats.websockets),
          inflight: c.stats.inflight,
          websockets: c.stats.websockets,
          targets: c.targets.endpoints.map((e) => ({ url: e.target.url, healthy: e.target.healthy, inflight: e.target.inflight })),
          ...(st.targets[color] === undefined ? {} : { targetsFrom: 'api' }),
        }
      }
      services[route.name] = {
        live: route.live,
        previous: st.previous,
        route: { ...(route.host === undefined ? {} : { host: route.host }), pathPrefix: route.prefix },
        guard: null,
        environments,
      }
    }
    return { generation: this.state.generation, services }
  }

  /** A copy of the persisted routing state (for tests and the CLI's --json). */
  snapshotState (): RoutingState {
    return structuredClone(this.state)
  }

  async idle (): Promise<void> {
    await this.queue
    await this.events.flush()
  }
}

function colorState (isLive: boolean, open: number): ColorState {
  if (isLive) return 'live'
  return open > 0 ? 'draining' : 'idle'
}
