// Shadow traffic as the control side sees it: the admin API's start and stop
// worked out on a copy of the state, this process's comparisons (the book the
// snapshots draw tallies from), and what GET .../shadow, the gate and the metrics read.

import type { ServiceConfig, ShadowConfig } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { colorTargets, shadowSession, type ShadowSampler, type ShadowWiring, type Snapshot } from '../routing/snapshot.js'
import type { Comparer, ShadowBook, ShadowPlan, ShadowResult, ShadowTally, ShadowView, TallyData } from '../shadow/types.js'
import type { PersistedState } from '../state/file-store.js'
import { createComparer } from '../shadow/compare.js'
import { ShadowRoute } from '../shadow/mirror.js'
import { createShadowBook, mergeTallyData, viewOf } from '../shadow/tally.js'
import { otherColor } from '../config/schema.js'

/**
 * The pieces of shadow/ the control side drives, behind one seam: the
 * tallies (shadow/tally.ts), the comparison (shadow/compare.ts) and the
 * mirror (shadow/mirror.ts). The gateway and every worker take them from
 * SHADOW_PARTS.
 */
export interface ShadowParts {
  /** Every service's current comparison; `onResult` hears each result as it is judged (the metric). */
  createBook: (onResult: (service: string, result: ShadowResult) => void) => ShadowBook
  /** Sums the workers' comparisons of one key. */
  mergeTallyData: (list: readonly TallyData[]) => TallyData
  /** The view of a comparison's data, judged against the noise it learnt. */
  viewOf: (data: TallyData) => ShadowView
  /** A comparer for a service's settings (its `ignore` lists and `redact` names). */
  createComparer: (settings: ShadowConfig) => Comparer
  /** The route the resolve step samples requests with (shadow/mirror.ts `new ShadowRoute(plan)`). */
  createRoute: (plan: ShadowPlan) => ShadowSampler
}

/** The shadow parts this build copies and compares with (tests may hand the gateway their own). */
export const SHADOW_PARTS: ShadowParts = {
  createBook: createShadowBook,
  mergeTallyData,
  viewOf,
  createComparer: (settings) => createComparer(settings.ignore, settings.redact),
  createRoute: (plan) => new ShadowRoute(plan),
}

/** switchyard_shadow_total's counts: per service, each result as judged when it completed. */
export class ShadowResults extends Map<string, Record<ShadowResult, number>> {
  add (service: string, result: ShadowResult, n = 1): void {
    let counts = this.get(service)
    if (counts === undefined) {
      counts = { sent: 0, dropped: 0, matched: 0, differed: 0, noise: 0 }
      this.set(service, counts)
    }
    counts[result] += n
  }
}

/** One service's comparison in one process, as a worker reports it. */
export interface ShadowReport {
  service: string
  /** The comparison key it counts (ServiceRoute.shadowKey). */
  key: string
  data: TallyData
  /** Copies in flight now. */
  inflight: number
}

/** What the control side reads of the comparisons: this process's, or its workers' summed. */
export interface ShadowReader {
  /** The data of `service`'s comparison `key`; undefined when none counted under that key. */
  comparison: (service: string, key: string) => TallyData | undefined
  /** Copies in flight per service. */
  inflight: () => Iterable<[string, number]>
  /** switchyard_shadow_total. */
  results: () => ReadonlyMap<string, Record<ShadowResult, number>>
  /** The view of a comparison's data. */
  viewOf: (data: TallyData) => ShadowView
}

/**
 * This process's comparisons: the snapshots it builds draw their tallies
 * from its book (ShadowWiring), and remember which key each service's tally
 * counts, so a reader asks for the comparison of the idle targets in force
 * and never gets an older one's counts.
 */
export class LocalShadow implements ShadowWiring, ShadowReader {
  readonly book: ShadowBook
  private readonly parts: ShadowParts
  private readonly counts = new ShadowResults()
  private readonly current = new Map<string, { key: string, tally: ShadowTally }>()
  /**
   * The comparison of a snapshot built but not in force yet, per service. A
   * snapshot is built before its change commits, which may then be refused:
   * until it goes in, the one in force is what is read and kept.
   */
  private readonly pending = new Map<string, { key: string, tally: ShadowTally }>()
  /** One comparer per `ignore` lists (a settings object is rebuilt with each snapshot, its lists are the config's). */
  private readonly comparers = new WeakMap<ShadowConfig['ignore'], Comparer>()

  constructor (parts: ShadowParts) {
    this.parts = parts
    this.book = parts.createBook((service, result) => { this.counts.add(service, result) })
  }

  readonly tallyFor = (service: string, key: string): ShadowTally => {
    const cur = this.current.get(service)
    if (cur?.key === key) return cur.tally
    let next = this.pending.get(service)
    if (next?.key !== key) {
      next = { key, tally: this.book.tallyFor(service, key) }
      // The first comparison of a service replaces none.
      if (cur === undefined) this.current.set(service, next)
      else this.pending.set(service, next)
    }
    return next.tally
  }

  readonly installed = (snapshot: Snapshot): void => {
    for (const [service, next] of this.pending) {
      if (snapshot.services.get(service)?.shadowKey !== next.key) continue
      this.current.set(service, next)
      this.pending.delete(service)
    }
  }

  readonly comparer = (settings: ShadowConfig): Comparer => {
    let c = this.comparers.get(settings.ignore)
    if (c === undefined) {
      c = this.parts.createComparer(settings)
      this.comparers.set(settings.ignore, c)
    }
    return c
  }

  readonly route = (plan: ShadowPlan): ShadowSampler => this.parts.createRoute(plan)

  comparison (service: string, key: string): TallyData | undefined {
    const cur = this.current.get(service)
    return cur === undefined || cur.key !== key ? undefined : cur.tally.data()
  }

  * inflight (): Iterable<[string, number]> {
    for (const [service, { tally }] of this.current) yield [service, tally.inflight]
  }

  results (): ReadonlyMap<string, Record<ShadowResult, number>> {
    return this.counts
  }

  viewOf (data: TallyData): ShadowView {
    return this.parts.viewOf(data)
  }

  /** What a worker tells the primary: each comparison it counts. */
  reports (): ShadowReport[] {
    return [...this.current].map(([service, { key, tally }]) => ({ service, key, data: tally.data(), inflight: tally.inflight }))
  }
}

/** The view of a comparison nothing has counted in yet (the tally's own view of no data). */
export function emptyView (): ShadowView {
  return viewOf(mergeTallyData([]))
}

export interface ShadowStartRequest {
  service: string
  /** Default: the config's sample, else 0.1. */
  sample?: number
  /** How long the session lasts, ms; default until stopped. */
  duration?: number
  reason?: string
  actor?: string
}

export interface ShadowStopRequest {
  service: string
  reason?: string
  actor?: string
}

/** The admin API's default sample on a service with no `shadow` section. */
const API_SAMPLE = 0.1

/** 409s and 400s a start is refused with before anything is touched. */
function refuseShadow (svc: ServiceConfig, state: PersistedState): void {
  if (svc.protocol !== 'http1') {
    throw new SwitchyardError('bad_request', `service ${svc.name} speaks ${svc.protocol} to its targets: shadow traffic is for HTTP/1.1 services; nothing changed`, { field: 'service', service: svc.name })
  }
  const idle = otherColor(state.services[svc.name].live)
  if (colorTargets(svc, state.services[svc.name], idle).length === 0) {
    throw new SwitchyardError('no_targets', `service ${svc.name}: the idle color ${idle} has no targets to copy to; set them first (PUT /v1/services/${svc.name}/environments/${idle}/targets); nothing changed`, { service: svc.name, color: idle })
  }
}

/** A start: the session replaces any override; one generation on. */
export function planShadowStart (req: ShadowStartRequest, state: PersistedState, svc: ServiceConfig, now: number): { next: PersistedState, sample: number, until: number | undefined } {
  refuseShadow(svc, state)
  const sample = req.sample ?? svc.shadow?.sample ?? API_SAMPLE
  const until = req.duration === undefined ? undefined : now + Math.ceil(req.duration)
  const next = structuredClone(state)
  next.services[svc.name] = { ...next.services[svc.name], shadow: until === undefined ? { sample } : { sample, until } }
  next.generation++
  return { next, sample, until }
}

/**
 * A stop: `off` over a configured shadow, no override where the config has
 * none (a later reload that adds a `shadow` section then applies); undefined
 * when shadow traffic is already off that way, and nothing changes.
 */
export function planShadowStop (state: PersistedState, svc: ServiceConfig): PersistedState | undefined {
  const st = state.services[svc.name]
  const next = structuredClone(state)
  const copy = { ...next.services[svc.name] }
  if (svc.shadow === undefined) {
    if (st.shadow === undefined) return undefined
    delete copy.shadow
  } else {
    if (st.shadow !== undefined && 'off' in st.shadow) return undefined
    copy.shadow = { off: true }
  }
  next.services[svc.name] = copy
  next.generation++
  return next
}

/** Services whose admin API session has ended by `now`: the next state drops their override (the config's word is back). */
export function planShadowExpiry (state: PersistedState, now: number): { next: PersistedState, services: string[] } | undefined {
  const ended = Object.entries(state.services).filter(([, st]) => st.shadow !== undefined && 'sample' in st.shadow && st.shadow.until !== undefined && st.shadow.until <= now).map(([name]) => name)
  if (ended.length === 0) return undefined
  const next = structuredClone(state)
  for (const name of ended) {
    const copy = { ...next.services[name] }
    delete copy.shadow
    next.services[name] = copy
  }
  next.generation++
  return { next, services: ended }
}

/** The earliest end of an admin API session in `state`; undefined when none has one. */
export function nextShadowExpiry (state: PersistedState): number | undefined {
  let first: number | undefined
  for (const st of Object.values(state.services)) {
    const until = st.shadow !== undefined && 'sample' in st.shadow ? st.shadow.until : undefined
    if (until !== undefined && (first === undefined || until < first)) first = until
  }
  return first
}

/** GET /v1/services/NAME/shadow: what is in force and the comparison of the idle targets in force. */
export function describeShadow (svc: ServiceConfig, state: PersistedState, view: ShadowView, now = Date.now()): Record<string, unknown> {
  const session = shadowSession(svc, state.services[svc.name], now)
  const idle = otherColor(state.services[svc.name].live)
  return {
    service: svc.name,
    active: session !== undefined && colorTargets(svc, state.services[svc.name], idle).length > 0,
    sample: session?.settings.sample ?? null,
    until: session?.until === undefined ? null : new Date(session.until).toISOString(),
    source: session?.source ?? null,
    methods: session?.settings.methods ?? null,
    live: state.services[svc.name].live,
    idle,
    // What a flip into `idle` would be judged against (null: no shadow gate).
    gate: { maxShadowDiff: svc.gate.maxShadowDiff ?? null, minShadowCompared: svc.gate.minShadowCompared },
    ...view,
  }
}
