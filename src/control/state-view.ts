// How routing state is shown: GET /v1/state, the answer to a drain request, the
// colors a health event names. Reads only; what it shows comes from the controller.

import { COLORS, otherColor, type Color } from '../config/schema.js'
import { weightOf, type Snapshot } from '../routing/snapshot.js'
import { isChange, type ColorChange, type SwitchyardEvent } from '../state/events.js'
import type { PersistedState } from '../state/file-store.js'
import type { Fleet, StateStore } from '../state/store.js'
import type { ColorStats, Target } from '../upstream/registry.js'
import type { Drain, DrainResult } from './drain.js'

export interface StateViewSource {
  snapshot: Snapshot
  state: PersistedState
  drainOf: (service: string, color: Color) => Drain | undefined
  /** The guard watching a service, already described; null when none is. */
  guardOf: (service: string) => Record<string, unknown> | null
  store: StateStore
  fleet: Fleet
  /** Generation pinning, already described (control/pinning.ts describePinning); null when `pinning` is off. */
  pinning: Record<string, unknown> | null
}

/** The view served by GET /v1/state. */
export function describeState (src: StateViewSource): Record<string, unknown> {
  const services: Record<string, unknown> = {}
  for (const route of src.snapshot.services.values()) {
    const st = src.state.services[route.name]
    const environments: Record<string, unknown> = {}
    for (const color of COLORS) {
      const c = route.colors[color]
      const drain = src.drainOf(route.name, color)
      environments[color] = {
        state: route.live === color ? 'live' : drain !== undefined ? 'draining' : 'idle',
        ...(drain !== undefined ? { drain: drain.describe() } : {}),
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
      // Percent of ordinary traffic per color, as routing has it (the snapshot's split, which a color without targets does not get).
      weights: { [route.live]: weightOf(route, route.live), [otherColor(route.live)]: weightOf(route, otherColor(route.live)) },
      ...(st.release === undefined ? {} : { release: st.release }),
      route: { ...(route.host === undefined ? {} : { host: route.host }), pathPrefix: route.prefix },
      guard: src.guardOf(route.name),
      environments,
    }
  }
  return { generation: src.state.generation, services, store: { ...src.store.status(), where: src.store.where }, fleet: describeFleet(src.fleet, src.state.generation), pinning: src.pinning }
}

/** The fleet as GET /v1/state shows it: every replica and the generation it has applied; converged when all have this one's. */
export function describeFleet (fleet: Fleet, generation: number): Record<string, unknown> {
  const now = Date.now()
  const leader = fleet.leader()
  const replicas = fleet.replicas().map((r) => ({
    id: r.id, admin: r.admin, generation: r.generation, revision: r.revision, ageMs: Math.max(0, now - Date.parse(r.heartbeat)), leader: r.id === leader,
  }))
  return { id: fleet.id, leader, replicas, converged: replicas.every((r) => r.generation === generation) }
}

/**
 * The flip whose guard window a replica taking the lead may take over: the
 * last change event, when it is a guarded flip, with only the services it
 * left live still so. Undefined when there is none.
 */
export function lastGuardedFlip (events: readonly SwitchyardEvent[], state: PersistedState): { id: number, time: string, changes: ColorChange[] } | undefined {
  let last: SwitchyardEvent | undefined
  // A shadow start or stop changes no color: the flip before it still has its window.
  for (let i = events.length - 1; i >= 0 && last === undefined; i--) if (isChange(events[i].type) && events[i].type !== 'shadow') last = events[i]
  if (last === undefined || last.type !== 'flip' || last.guard === false || !Array.isArray(last.changes)) return undefined
  const changes = last.changes.filter((c) => state.services[c.service]?.live === c.to)
  return changes.length === 0 ? undefined : { id: last.id, time: last.time, changes }
}

/** The answer to a drain request that does not wait: where the drain stands now. */
export function describeDrainStarted (service: string, color: Color, drain: Drain, stats: ColorStats): Record<string, unknown> {
  return { service, color, state: drain.isDone ? 'idle' : 'draining', inflight: stats.inflight, websockets: stats.websockets, ...(drain.isDone ? {} : drain.describe()) }
}

/** The answer to a drain request that waited for the end. */
export function describeDrainEnded (result: DrainResult): Record<string, unknown> {
  return { ...result, state: result.how === 'cancelled' ? 'live' : 'idle' }
}

/** The service colors a target serves, as a health event names them. */
export function listColorsUsing (snapshot: Snapshot, target: Target): Array<{ service: string, color: Color }> {
  const users: Array<{ service: string, color: Color }> = []
  for (const route of snapshot.services.values()) {
    for (const color of COLORS) {
      if (route.colors[color].targets.endpoints.some((e) => e.target === target)) users.push({ service: route.name, color })
    }
  }
  return users
}
