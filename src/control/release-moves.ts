// Each move a release can make, worked out on a copy of the persisted state:
// the release's new phase and the routing it carries (targets, weights, live color), one commit each.

import type { PersistedState } from '../state/file-store.js'
import type { ColorChange } from '../state/events.js'
import { isRunning, KEEP_VERDICTS, pruneReleases, type Release, type ReleasePhase, type ReleaseVerdict, type StoredSample } from '../release/model.js'

/** A planned move: the state to commit and what its `release` event says. */
export interface ReleaseMove {
  next: PersistedState
  release: Release
  /** Live colors this move changes (the flip to the new color, or back). */
  changes: ColorChange[]
  /** The event's fields besides type, generation and actor. */
  event: { reason: string | null, release: string, phase: ReleasePhase, from: ReleasePhase, step?: number, weight?: number, outcome?: string, verdict?: ReleaseVerdict, changes?: ColorChange[], forward?: boolean, action?: 'pause' | 'resume' }
}

/** The state with the release added (phase `deploying`): its services are marked, so sampling starts and nothing else may take them. */
export function planCreate (state: PersistedState, release: Release): PersistedState {
  const next = structuredClone(state)
  for (const name of Object.keys(release.services)) next.services[name] = { ...next.services[name], release: release.id }
  next.releases = pruneReleases([...(next.releases ?? []), release])
  next.generation++
  return next
}

/** An ended release lets its services go: no weights, no mark (in `next`, a copy being built). */
function letGo (next: PersistedState, r: Release): void {
  for (const name of Object.keys(r.services)) {
    const st = next.services[name]
    if (st === undefined) continue
    delete st.split
    if (st.release === r.id) delete st.release
  }
}

/** Moves the release (by id, in a copy of `state`) to `phase`; `edit` changes the copy's routing and release further. */
function move (state: PersistedState, id: string, phase: ReleasePhase, now: number, edit: (next: PersistedState, r: Release) => Partial<ReleaseMove['event']> | undefined): ReleaseMove {
  const next = structuredClone(state)
  const r = (next.releases ?? []).find((x) => x.id === id)
  if (r === undefined) throw new Error(`release ${id} is not in the state`)
  const before = r.phase
  const liveBefore = Object.fromEntries(Object.keys(r.services).map((n) => [n, next.services[n]?.live]))
  const at = new Date(now).toISOString()
  const extra = edit(next, r) ?? {}
  if (r.phase !== phase || extra.step !== undefined) {
    r.phaseStartedAt = at
    // A pause goes on into the new phase (a promote while paused): only time paused in this phase may move its start on resume.
    if (r.pausedAt !== null) r.pausedAt = at
    r.history.push({ phase, at, ...(phase === 'shifting' ? { step: r.step, weight: r.weight } : {}) })
  }
  r.phase = phase
  r.updatedAt = at
  if (!isRunning(phase)) {
    letGo(next, r)
    next.releases = pruneReleases(next.releases ?? [])
  }
  next.generation++
  const changes: ColorChange[] = []
  for (const name of Object.keys(r.services)) {
    const was = liveBefore[name]
    const now2 = next.services[name]?.live
    if (was !== undefined && now2 !== undefined && was !== now2) changes.push({ service: name, from: was, to: now2 })
  }
  return {
    next,
    release: r,
    changes,
    event: { reason: r.reason, release: id, phase, from: before, ...extra, ...(changes.length > 0 ? { changes } : {}) },
  }
}

/** deploying -> warming: the new targets go to each service's idle color. */
export function planDeploy (state: PersistedState, id: string, now: number): ReleaseMove {
  return move(state, id, 'warming', now, (next, r) => {
    for (const [name, s] of Object.entries(r.services)) {
      const st = next.services[name]
      next.services[name] = { ...st, targets: { ...st.targets, [s.to]: s.targets } }
    }
    return undefined
  })
}

/** To a phase that changes no routing (warming -> testing, verifying -> draining). */
export function planPhase (state: PersistedState, id: string, phase: ReleasePhase, now: number, verdict?: ReleaseVerdict): ReleaseMove {
  return move(state, id, phase, now, (_next, r) => {
    if (verdict !== undefined) pushVerdict(r, verdict)
    return verdict === undefined ? undefined : { verdict }
  })
}

/** Step `i` of a stepped release: every service sends the step's weight to its new color, in one commit. */
export function planStep (state: PersistedState, id: string, i: number, now: number, verdict?: ReleaseVerdict): ReleaseMove {
  return move(state, id, 'shifting', now, (next, r) => {
    const weight = r.steps[i].weight
    r.step = i
    r.weight = weight
    if (verdict !== undefined) pushVerdict(r, verdict)
    for (const [name, s] of Object.entries(r.services)) next.services[name] = { ...next.services[name], split: { color: s.to, weight, seed: r.seed } }
    return { step: i, weight, ...(verdict === undefined ? {} : { verdict }) }
  })
}

/** The new color takes all traffic: live flips, weights go; `baseline` is the old color's last window. */
export function planForward (state: PersistedState, id: string, now: number, baseline: Record<string, StoredSample>, verdict?: ReleaseVerdict): ReleaseMove {
  return move(state, id, 'verifying', now, (next, r) => {
    r.weight = 100
    r.baseline = baseline
    if (verdict !== undefined) pushVerdict(r, verdict)
    for (const [name, s] of Object.entries(r.services)) {
      const st = { ...next.services[name], live: s.to, previous: s.from }
      delete st.split
      next.services[name] = st
    }
    next.lastChange = Object.keys(r.services)
    return { weight: 100, forward: true, ...(verdict === undefined ? {} : { verdict }) }
  })
}

/**
 * The end of a release. `reverted`, `aborted` (and `failed`) leave every
 * service on its old color with no weights; `done` keeps the new one.
 */
export function planEnd (state: PersistedState, id: string, phase: 'done' | 'reverted' | 'aborted' | 'failed', now: number, outcome: string | null, verdict?: ReleaseVerdict): ReleaseMove {
  return move(state, id, phase, now, (next, r) => {
    r.outcome = outcome
    r.pausedAt = null
    if (verdict !== undefined) pushVerdict(r, verdict)
    if (phase !== 'done') {
      r.weight = 0
      const back: string[] = []
      for (const [name, s] of Object.entries(r.services)) {
        const st = next.services[name]
        if (st !== undefined && st.live === s.to) {
          next.services[name] = { ...st, live: s.from, previous: s.to }
          back.push(name)
        }
      }
      if (back.length > 0) next.lastChange = back
    }
    return { ...(outcome === null ? {} : { outcome }), ...(verdict === undefined ? {} : { verdict }) }
  })
}

/** Pause: the release holds where it is (its safety checks go on). */
export function planPause (state: PersistedState, id: string, now: number): ReleaseMove {
  return move(state, id, phaseOf(state, id), now, (_next, r) => {
    r.pausedAt = new Date(now).toISOString()
    return { action: 'pause' }
  })
}

/** Resume: the time paused is added to the phase's start, so a hold or window keeps what it had left. */
export function planResume (state: PersistedState, id: string, now: number): ReleaseMove {
  return move(state, id, phaseOf(state, id), now, (_next, r) => {
    if (r.pausedAt !== null) r.phaseStartedAt = new Date(Date.parse(r.phaseStartedAt) + (now - Date.parse(r.pausedAt))).toISOString()
    r.pausedAt = null
    return { action: 'resume' }
  })
}

function phaseOf (state: PersistedState, id: string): ReleasePhase {
  const r = state.releases?.find((x) => x.id === id)
  if (r === undefined) throw new Error(`release ${id} is not in the state`)
  return r.phase
}

function pushVerdict (r: Release, v: ReleaseVerdict): void {
  r.verdicts.push(v)
  if (r.verdicts.length > KEEP_VERDICTS) r.verdicts.splice(0, r.verdicts.length - KEEP_VERDICTS)
}

/**
 * A forced change (a flip or targets with `force`) over services a running
 * release holds ends that release as `aborted`, in the same commit: its
 * weights and marks go. A flip (`moved` given) decides the colors of the
 * services it names, and the release's other services go back to their old
 * colors with them, as any aborted release leaves them (pushed onto
 * `moved`): all services of a release move together. A targets change
 * decides no color, and moves none. `next` is the state the change makes;
 * it is returned as is when no release is touched.
 */
export function endOverridden (next: PersistedState, services: readonly string[], now: number, outcome: string, moved?: ColorChange[]): PersistedState {
  const hit = (next.releases ?? []).filter((r) => isRunning(r.phase) && services.some((s) => r.services[s] !== undefined))
  if (hit.length === 0) return next
  const out = structuredClone(next)
  const at = new Date(now).toISOString()
  for (const id of hit.map((r) => r.id)) {
    const r = (out.releases ?? []).find((x) => x.id === id) as Release
    r.phase = 'aborted'
    r.outcome = outcome
    r.pausedAt = null
    r.updatedAt = at
    r.phaseStartedAt = at
    r.history.push({ phase: 'aborted', at })
    r.weight = 0
    letGo(out, r)
    for (const [name, s] of Object.entries(r.services)) {
      const st = out.services[name]
      if (st === undefined) continue
      // All services of a release move together: those the change did not name leave the new color with it.
      if (moved !== undefined && !services.includes(name) && st.live === s.to) {
        out.services[name] = { ...st, live: s.from, previous: s.to }
        moved.push({ service: name, from: s.to, to: s.from })
      }
    }
  }
  out.releases = pruneReleases(out.releases ?? [])
  return out
}
