// What each change would make of the persisted state, worked out on a copy and
// refused with a coded error before anything is touched; the controller commits it.

import { otherColor, type Config } from '../config/schema.js'
import { protocolMismatch } from '../config/values.js'
import { SwitchyardError } from '../errors.js'
import { colorTargets } from '../routing/snapshot.js'
import type { PersistedState } from '../state/file-store.js'
import type { ColorChange } from '../state/events.js'
import type { FlipRequest, TargetsRequest } from './requests.js'

/** A flip planned on one generation, whose smoke checks run outside the queue. */
export interface FlipPlan {
  generation: number
  config: Config
  changes: ColorChange[]
  /** The targets of each change's new color, in the order of `changes`. */
  targets: string[][]
}

/** Whether a smoke verdict on `a` holds for `b`: the same changes into the same targets under the same config. */
export function isSamePlan (a: FlipPlan, b: FlipPlan): boolean {
  return a.config === b.config && JSON.stringify([a.changes, a.targets]) === JSON.stringify([b.changes, b.targets])
}

/**
 * What a flip of the services `names` would change, from the state in force;
 * throws for an empty color. Planned again after its gate (`first` is the
 * plan the gate ran on), a flip without `to` keeps the colors it was asked
 * toward: "the other color" has turned around if a revert or rollback landed
 * meanwhile, and would undo it.
 */
export function planFlip (req: FlipRequest, names: readonly string[], state: PersistedState, config: Config, first?: FlipPlan): FlipPlan {
  const changes: ColorChange[] = []
  const targets: string[][] = []
  for (const name of names) {
    const st = state.services[name]
    const to = req.to ?? (first === undefined ? otherColor(st.live) : first.changes.find((c) => c.service === name)?.to)
    if (to === undefined || to === st.live) continue
    const urls = colorTargets(config.services[name], st, to)
    if (urls.length === 0) throw new SwitchyardError('no_targets', `service ${name}: ${to} has no targets; set them first (PUT /v1/services/${name}/environments/${to}/targets)`, { service: name, color: to })
    changes.push({ service: name, from: st.live, to })
    targets.push(urls)
  }
  return { generation: state.generation, config, changes, targets }
}

/** The next state after a flip or revert: each service's live color changed, one generation on. */
export function applyColorChanges (state: PersistedState, changes: readonly ColorChange[]): PersistedState {
  const next = structuredClone(state)
  for (const c of changes) {
    const st = { ...next.services[c.service], live: c.to, previous: c.from }
    // A split toward the color that becomes live splits nothing, and the state file refuses one.
    if (st.split?.color === c.to) delete st.split
    next.services[c.service] = st
  }
  next.generation++
  next.lastChange = changes.map((c) => c.service)
  return next
}

/** A rollback of `names`: each goes back to its previous color, which must still have targets. */
export function planRollback (names: readonly string[], state: PersistedState, config: Config): { next: PersistedState, changes: ColorChange[] } {
  const changes: ColorChange[] = []
  for (const name of names) {
    const st = state.services[name]
    if (st.previous === null) throw new SwitchyardError('nothing_to_roll_back', `service ${name} has no previous color to roll back to`, { service: name })
    if (colorTargets(config.services[name], st, st.previous).length === 0) {
      throw new SwitchyardError('no_targets', `service ${name}: previous color ${st.previous} has no targets any more`, { service: name, color: st.previous })
    }
    changes.push({ service: name, from: st.live, to: st.previous })
  }
  return { next: applyColorChanges(state, changes), changes }
}

/**
 * New targets for one color of `service`: the live color only with `force`,
 * and never none. Targets equal to those in force change nothing (`next` undefined).
 */
export function planTargets (service: string, req: TargetsRequest, state: PersistedState, config: Config): { next?: PersistedState, before: string[], isLive: boolean } {
  const st = state.services[service]
  const isLive = st.live === req.color
  if (isLive && req.force !== true) {
    throw new SwitchyardError('live_color', `${req.color} is the live color of ${service}; change the idle color, or pass force: true`, { service, color: req.color })
  }
  if (isLive && req.targets.length === 0) {
    throw new SwitchyardError('no_targets', `the live color ${req.color} of ${service} cannot be left without targets`, { service, color: req.color })
  }
  const protocol = config.services[service].protocol
  for (const t of req.targets) {
    const wrong = protocolMismatch(protocol, t)
    if (wrong !== undefined) throw new SwitchyardError('bad_request', `targets: ${wrong} (services.${service}.protocol is ${protocol})`, { field: 'targets', service })
  }
  const before = colorTargets(config.services[service], st, req.color)
  if (before.length === req.targets.length && before.every((u, i) => u === req.targets[i])) return { before, isLive }
  const next = structuredClone(state)
  next.services[service] = { ...st, targets: { ...st.targets, [req.color]: req.targets } }
  next.generation++
  return { next, before, isLive }
}

/** A reload: services it adds start on their configured live color, with nothing to roll back to. */
export function planReload (added: readonly string[], state: PersistedState, config: Config): PersistedState {
  const next = structuredClone(state)
  for (const n of added) next.services[n] ??= { live: config.services[n].live, previous: null, targets: {} }
  next.generation++
  return next
}
