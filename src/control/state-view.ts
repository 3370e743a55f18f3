// How routing state is shown: GET /v1/state, the answer to a drain request, the
// colors a health event names. Reads only; what it shows comes from the controller.

import { COLORS, type Color } from '../config/schema.js'
import type { Snapshot } from '../routing/snapshot.js'
import type { PersistedState } from '../state/file-store.js'
import type { ColorStats, Target } from '../upstream/registry.js'
import type { Drain, DrainResult } from './drain.js'

export interface StateViewSource {
  snapshot: Snapshot
  state: PersistedState
  drainOf: (service: string, color: Color) => Drain | undefined
  /** The guard watching a service, already described; null when none is. */
  guardOf: (service: string) => Record<string, unknown> | null
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
      route: { ...(route.host === undefined ? {} : { host: route.host }), pathPrefix: route.prefix },
      guard: src.guardOf(route.name),
      environments,
    }
  }
  return { generation: src.state.generation, services }
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
