// Drives running releases through their phases on the fleet's leader: a tick per
// release reads where it stands in the state, judges the new color and commits the next move.

import type { Color, Config } from '../config/schema.js'
import { log } from '../log.js'
import { isRunning, type Release, type ReleaseVerdict, type StoredSample } from '../release/model.js'
import { LatencyHistogram } from '../upstream/latency.js'
import { planDeploy, planEnd, planForward, planPhase, planStep, type ReleaseMove } from './release-moves.js'
import { judge, sampleOf, sampleSince, type ColorSample, type SampleSource, type ServiceVerdict } from '../release/verdict.js'
import type { ColorChange } from '../state/events.js'
import type { PersistedState } from '../state/file-store.js'
import type { GateFailure } from './gate.js'

export interface ReleaseDeps {
  state: () => PersistedState
  config: () => Config
  isLeader: () => boolean
  /**
   * Commits the move `plan` makes of the state in force, in the controller's
   * queue (planned again if another replica's commit got in first);
   * `plan` returns undefined when the release is no longer where the move
   * expected it: nothing is committed.
   */
  apply: (plan: (state: PersistedState) => ReleaseMove | undefined, actor: string) => Promise<ReleaseMove | undefined>
  /** The health half of the gate for these changes: its failures (none: passed). */
  healthGate: (changes: ColorChange[]) => GateFailure[]
  /** The smoke checks of the gate, run outside the queue. */
  smoke: (changes: ColorChange[]) => Promise<GateFailure[]>
  /** The shadow half of the gate (gate.maxShadowDiff) on the comparisons in force: its failures (none: passed), `pending` ones still short of pairs. */
  shadowGate: (changes: ColorChange[]) => GateFailure[]
  /** Healthy targets of a color; undefined while its targets have not all had their first probe. */
  healthyTargets: (service: string, color: Color) => number | undefined
  /** Whether smoke checks can reach the gateway's own listener yet (a restart runs releases before it listens). */
  canSmoke: () => boolean
  /** A color's counters (they only grow): a window's data is the difference of two readings. */
  counters: (service: string, color: Color) => SampleSource
  /** Whether the color still has a drain running. */
  isDraining: (service: string, color: Color) => boolean
}

/** How often a running release is looked at, and how often its new color is judged early. */
const TICK_MS = 250
const LOOK_MS = 1_000
/**
 * An early look judges the last this many seconds of the window, not all
 * of it: a new color that goes bad late in a long hold would otherwise be
 * diluted by its good minutes before (5% failing showed as 1.4% after 10 s
 * of good answers, and took 3.7 s instead of 1.5 s to revert).
 */
const RECENT_LOOKS = 5
/** A `draining` phase ends at the latest this long after the services' drain timeouts. */
const DRAIN_SLACK_MS = 5_000

/** The runs in force: one per running release, on the leader only. */
export class Releases {
  private readonly runs = new Map<string, ReleaseRun>()
  private readonly deps: ReleaseDeps
  private stopped = false

  constructor (deps: ReleaseDeps) {
    this.deps = deps
  }

  /** After every change of state or leadership: a run for each running release while this replica leads, none otherwise. */
  sync (): void {
    const leading = this.deps.isLeader() && !this.stopped
    const running = new Set((this.deps.state().releases ?? []).filter((r) => isRunning(r.phase)).map((r) => r.id))
    for (const [id, run] of this.runs) {
      if (!leading || !running.has(id)) {
        run.stop()
        this.runs.delete(id)
      }
    }
    if (!leading) return
    for (const id of running) if (!this.runs.has(id)) this.runs.set(id, new ReleaseRun(id, this.deps))
  }

  /** The leader's latest look at a running release's step or window, per service. */
  current (id: string): Record<string, ServiceVerdict> | undefined {
    return this.runs.get(id)?.current
  }

  /** The old colors' window so far, for a promotion made here: what `verifying` compares against. */
  baseline (id: string): Record<string, StoredSample> {
    return this.runs.get(id)?.baseline() ?? {}
  }

  stop (): void {
    this.stopped = true
    for (const run of this.runs.values()) run.stop()
    this.runs.clear()
  }
}

/** Counts of both colors of each service at one moment. */
type Reading = Map<string, { new: ColorSample, old: ColorSample }>

/** The current step's or phase's window: the counts at its start, and at each of the last early looks. */
interface WindowStart {
  key: string
  /** When this run opened it: after a restart, later than the phase or step began. */
  openedAt: number
  at: Reading
  recent: Reading[]
}

class ReleaseRun {
  readonly id: string
  private readonly deps: ReleaseDeps
  private readonly timer: NodeJS.Timeout
  private busy = false
  private window: WindowStart | undefined
  /** Counts when this run began: an all-at-once release's baseline is the old color from here to the flip. */
  private readonly origin = new Map<string, ColorSample>()
  private lastLook = 0
  /**
   * The old colors' window of the step a promote made elsewhere ended (a
   * follower has no window to store): what `verifying` compares against
   * where the stored baseline lacks a service.
   */
  private carried = new Map<string, ColorSample>()
  current: Record<string, ServiceVerdict> | undefined

  constructor (id: string, deps: ReleaseDeps) {
    this.id = id
    this.deps = deps
    const r = this.release()
    if (r !== undefined) for (const [name, s] of Object.entries(r.services)) this.origin.set(name, sampleOf(deps.counters(name, s.from)))
    this.timer = setInterval(() => { this.tick() }, TICK_MS)
    this.timer.unref()
    // The first look at once: a new release deploys without waiting for a tick.
    setImmediate(() => { this.tick() })
  }

  stop (): void {
    clearInterval(this.timer)
  }

  private release (): Release | undefined {
    return this.deps.state().releases?.find((r) => r.id === this.id)
  }

  private tick (): void {
    if (this.busy) return
    this.busy = true
    this.advance().catch((err: Error) => {
      log('error', 'a release could not move on; it is tried again', { release: this.id, error: err.message })
    }).finally(() => { this.busy = false })
  }

  /**
   * A move for the release as this look found it: committed only if the
   * release is still in the same phase, step and pause state when its turn
   * in the queue comes (an operator or another replica may have moved it).
   */
  private async commit (seen: Release, plan: (state: PersistedState) => ReleaseMove, actor = 'release'): Promise<void> {
    await this.deps.apply((state) => {
      const r = state.releases?.find((x) => x.id === this.id)
      // phaseStartedAt too: a pause and resume in between moves it, and a move planned before them is stale.
      if (r === undefined || r.phase !== seen.phase || r.step !== seen.step || r.pausedAt !== seen.pausedAt || r.phaseStartedAt !== seen.phaseStartedAt) return undefined
      return plan(state)
    }, actor)
  }

  private async advance (): Promise<void> {
    const r = this.release()
    if (r === undefined || !isRunning(r.phase)) return
    const now = Date.now()
    const since = Date.parse(r.phaseStartedAt)
    const paused = r.pausedAt !== null
    const key = `${r.phase}:${r.step}`
    if (this.window?.key !== key) {
      if (r.phase === 'verifying' && this.window?.key.startsWith('shifting:') === true) this.carry(r)
      this.openWindow(r, key)
    }
    // A restart with an edited config can drop a service (a reload may not): nothing could judge or gate it, so the release ends.
    const lost = Object.keys(r.services).filter((name) => !Object.hasOwn(this.deps.config().services, name))
    if (lost.length > 0) {
      const why = `the config no longer has ${lost.length === 1 ? 'service' : 'services'} ${lost.join(', ')}`
      return await this.commit(r, (st) => planEnd(st, this.id, 'aborted', Date.now(), why))
    }
    // Every service on the color the phase says (old before the switch, new after): anything else changed it under the release, which then cannot go on.
    const switched = r.phase === 'verifying' || r.phase === 'draining'
    const state = this.deps.state()
    const moved = Object.entries(r.services).filter(([name, s]) => state.services[name] !== undefined && state.services[name].live !== (switched ? s.to : s.from)).map(([name]) => name)
    if (moved.length > 0) {
      return await this.commit(r, (st) => planEnd(st, this.id, 'aborted', Date.now(), `the live color of ${moved.join(', ')} changed outside the release`))
    }
    const changes = Object.entries(r.services).map(([service, s]) => ({ service, from: s.from, to: s.to }))
    switch (r.phase) {
      case 'deploying':
        return await this.commit(r, (st) => planDeploy(st, this.id, Date.now()))
      case 'warming': {
        if (paused) return
        const failures = this.deps.healthGate(changes)
        if (failures.length === 0) return await this.commit(r, (st) => planPhase(st, this.id, 'testing', Date.now()))
        if (now >= since + r.timeout) {
          const why = `the gate did not pass within ${r.timeout / 1000}s: ${failures.map((f) => `${f.service}/${f.color}: ${f.reason}`).join('; ')}`
          return await this.commit(r, (st) => planEnd(st, this.id, 'failed', Date.now(), why))
        }
        return
      }
      case 'testing': {
        if (paused) return
        // After a restart the health the gate saw is gone: smoke checks wait for the new colors' first probe and for the listener.
        if (!this.deps.canSmoke() || changes.some((c) => this.deps.healthyTargets(c.service, c.to) === undefined)) return
        // The new colors' answers differ from the live ones beyond gate.maxShadowDiff: the release fails as a flip would be refused.
        const shadow = this.deps.shadowGate(changes)
        const differ = shadow.filter((f) => f.pending !== true)
        if (differ.length > 0) {
          const why = `the shadow comparison refused it: ${differ.map((f) => `${f.service}/${f.color}: ${f.reason}`).join('; ')}`
          return await this.commit(r, (st) => planEnd(st, this.id, 'failed', Date.now(), why))
        }
        // New targets start a new comparison at zero: testing waits for gate.minShadowCompared pairs (up to the release's timeout), or it would never judge.
        if (shadow.length > 0) {
          if (now < since + r.timeout) return
          const why = `the shadow comparison did not reach gate.minShadowCompared within ${r.timeout / 1000}s: ${shadow.map((f) => `${f.service}/${f.color}: ${f.reason}`).join('; ')}`
          return await this.commit(r, (st) => planEnd(st, this.id, 'failed', Date.now(), why))
        }
        const failures = await this.deps.smoke(changes)
        if (failures.length > 0) {
          const why = `smoke checks failed: ${failures.map((f) => `${f.service}/${f.color}: ${f.reason}`).join('; ')}`
          return await this.commit(r, (st) => planEnd(st, this.id, 'failed', Date.now(), why))
        }
        if (r.steps.length > 0) return await this.commit(r, (st) => planStep(st, this.id, 0, Date.now()))
        return await this.commit(r, (st) => planForward(st, this.id, Date.now(), this.baseline()))
      }
      case 'shifting':
      case 'verifying': {
        for (const c of changes) {
          if (this.deps.healthyTargets(c.service, c.to) === 0) {
            return await this.commit(r, (st) => planEnd(st, this.id, 'reverted', Date.now(), `${c.service}/${c.to}: no healthy target`))
          }
        }
        const hold = r.phase === 'shifting' ? r.steps[r.step].hold : r.verify.window
        let ended = !paused && now >= since + hold
        if (!ended && now - this.lastLook < LOOK_MS) return
        this.lastLook = now
        let verdict = this.look(r, ended)
        // Resumed late in a hold (a restart, a new leader), this run has seen only part of it: a final look with nothing to judge waits for more, up to a whole hold of its own.
        const seenMs = now - (this.window?.openedAt ?? now)
        if (ended && seenMs < hold - 1_000 && Object.values(verdict.services).every((v) => v.outcome === 'inconclusive')) {
          ended = false
          verdict = this.look(r, false)
        }
        if (!ended) this.remember(r)
        this.current = verdict.services
        if (!verdict.pass) {
          const why = Object.entries(verdict.services).filter(([, v]) => v.outcome === 'fail').map(([name, v]) => `${name}: ${v.reasons.join('; ')}`).join('; ')
          return await this.commit(r, (st) => planEnd(st, this.id, 'reverted', Date.now(), `the new color is worse than the old at ${r.weight}%: ${why}`, verdict))
        }
        if (!ended) return
        if (r.phase === 'verifying') return await this.commit(r, (st) => planPhase(st, this.id, 'draining', Date.now(), verdict))
        if (r.step + 1 < r.steps.length) return await this.commit(r, (st) => planStep(st, this.id, r.step + 1, Date.now(), verdict))
        return await this.commit(r, (st) => planForward(st, this.id, Date.now(), this.baseline(), verdict))
      }
      case 'draining': {
        const config = this.deps.config()
        const limit = Math.max(...changes.map((c) => config.services[c.service]?.drain.timeout ?? 0)) + DRAIN_SLACK_MS
        if (changes.some((c) => this.deps.isDraining(c.service, c.from)) && now < since + limit) return
        return await this.commit(r, (st) => planEnd(st, this.id, 'done', Date.now(), null))
      }
    }
  }

  /** The step just ended: the old colors' counts over it, kept for verifying. */
  private carry (r: Release): void {
    for (const [name, s] of Object.entries(r.services)) {
      const start = this.window?.at.get(name)?.old
      if (start !== undefined) this.carried.set(name, sampleSince(this.deps.counters(name, s.from), start))
    }
  }

  /** A new step or phase: the counts both colors have now start its window. */
  private openWindow (r: Release, key: string): void {
    const at = this.read(r)
    this.window = { key, openedAt: Date.now(), at, recent: [at] }
    this.lastLook = Date.now()
    this.current = undefined
  }

  private read (r: Release): Reading {
    const at: Reading = new Map()
    for (const [name, s] of Object.entries(r.services)) at.set(name, { new: sampleOf(this.deps.counters(name, s.to)), old: sampleOf(this.deps.counters(name, s.from)) })
    return at
  }

  /** Keeps this early look's counts: the next ones judge from the oldest kept. */
  private remember (r: Release): void {
    if (this.window === undefined) return
    this.window.recent.push(this.read(r))
    if (this.window.recent.length > RECENT_LOOKS) this.window.recent.shift()
  }

  /**
   * Every service judged now: the new color's window against the old
   * color's same window while both serve (shifting), or against the old
   * color's stored last window once the new one has all traffic (verifying).
   */
  private look (r: Release, final: boolean): ReleaseVerdict {
    const services: Record<string, ServiceVerdict> = {}
    for (const [name, s] of Object.entries(r.services)) {
      // The final look judges the whole window; an early one its last RECENT_LOOKS seconds.
      const start = (final ? this.window?.at : this.window?.recent[0])?.get(name)
      if (start === undefined) continue
      const fresh = sampleSince(this.deps.counters(name, s.to), start.new)
      const stored = r.baseline?.[name]
      const old = r.phase === 'shifting' ? sampleSince(this.deps.counters(name, s.from), start.old) : stored === undefined ? this.carried.get(name) ?? fromStored(undefined) : fromStored(stored)
      // With too little of the old color to compare with, the new one is held to the guard's absolute error rate instead.
      services[name] = judge(fresh, old, { ...r.verify, absoluteErrorRate: this.deps.config().services[name]?.guard.maxErrorRate }, final)
    }
    return {
      at: new Date().toISOString(),
      phase: r.phase,
      step: r.step,
      weight: r.weight,
      final,
      pass: Object.values(services).every((v) => v.outcome !== 'fail'),
      services,
    }
  }

  /** The old colors' counts over the current step (or, before any step, since this run began), for storing. */
  baseline (): Record<string, StoredSample> {
    const r = this.release()
    const out: Record<string, StoredSample> = {}
    if (r === undefined) return out
    for (const [name, s] of Object.entries(r.services)) {
      const start = r.phase === 'shifting' ? this.window?.at.get(name)?.old : this.origin.get(name)
      if (start === undefined) continue
      out[name] = toStored(sampleSince(this.deps.counters(name, s.from), start))
    }
    return out
  }
}

function toStored (s: ColorSample): StoredSample {
  return { requests: s.requests, errors: s.errors, latency: s.latency.toSparse() }
}

/** A stored baseline back as a sample; none stored (a restart lost it) is an empty one, and the latency test is then inconclusive. */
function fromStored (s: StoredSample | undefined): ColorSample {
  const latency = new LatencyHistogram()
  if (s === undefined) return { requests: 0, errors: 0, latency }
  latency.addSparse(s.latency)
  return { requests: s.requests, errors: s.errors, latency }
}
