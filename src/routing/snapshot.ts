// The immutable routing snapshot: every service's route, both colors' target
// sets and the live color, plus a precompiled matcher. Built whole, then swapped in.

import { COLORS, DEFAULTS, otherColor, type Color, type Config, type ServiceConfig, type ShadowConfig, type Timeouts, type UpstreamProtocol } from '../config/schema.js'
import type { AnswerTap } from '../proxy/resolve.js'
import type { Comparer, ShadowPlan, ShadowTally } from '../shadow/types.js'
import type { ColorStats, Target, TargetRegistry } from '../upstream/registry.js'
import { TargetSet } from '../upstream/target-set.js'
import { PeerList, protocolMismatch } from '../config/values.js'
import { BAGGAGE_KEY, KeptSnapshots, type PinLookup, type PinResult } from './pinning.js'
import { stickySetCookie, thresholdOf } from './split.js'

/** What changes at run time and persists: the controller owns it. */
export interface ServiceState {
  live: Color
  previous: Color | null
  /** Targets set through the admin API; they override the config's for that color. */
  targets: Partial<Record<Color, string[]>>
  /** A release's traffic split in force: `weight` percent (1..99) of ordinary traffic goes to `color` (not live); `seed` (u32) is the release's. */
  split?: { color: Color, weight: number, seed: number }
  /** The id of the running release this service belongs to (latency sampling is on while set). */
  release?: string
  /**
   * The admin API's word on shadow traffic, over the config's: on at
   * `sample` (0 < sample <= 1) until `until` (epoch ms; unset: until
   * stopped), or off even where the config turns it on. Unset: as configured.
   */
  shadow?: ShadowOverride
}

export type ShadowOverride = { sample: number, until?: number } | { off: true }

/** A color that keeps serving its pinned sessions after a flip, until `until` (epoch ms). */
export interface StickyHold {
  color: Color
  until: number
}

export interface RoutingState {
  generation: number
  services: Record<string, ServiceState>
  /**
   * Per service, the draining color that still serves sticky sessions. Part
   * of what every worker process is given, and ends by time, so a worker needs
   * no message when it does. Not persisted: a drain does not outlive its process.
   */
  sticky?: Record<string, StickyHold>
  /**
   * Call chains pinned to a generation below this one route by the current
   * snapshot: a rollback or revert set it to its own generation, since the
   * colors the earlier generations routed to are the ones it left. Unset: 0.
   */
  pinFloor?: number
}

/** `pinning` as the resolve step reads it, built once per snapshot. */
export interface PinningSettings {
  readonly keepMs: number
  /** The peers whose `switchyard-gen` entry is believed. */
  readonly trust: PeerList
}

export interface ColorRoute {
  readonly service: string
  readonly color: Color
  readonly targets: TargetSet
  readonly stats: ColorStats
  readonly timeouts: Timeouts
  readonly protocol: UpstreamProtocol
}

/** A split in force on a service: keys whose bucket is below `threshold` go to `to`, the rest to live. */
export interface RouteSplit {
  readonly to: ColorRoute
  /** u32: `floor(weight * 2^32 / 100)`. */
  readonly threshold: number
  /** The release's seed (u32), shared by every service of the release, so a key lands alike in each. */
  readonly seed: number
  /** Percent of ordinary traffic on `to`. */
  readonly weight: number
}

export interface ServiceRoute {
  readonly name: string
  readonly host: string | undefined
  readonly prefix: string
  readonly live: Color
  readonly colors: Readonly<Record<Color, ColorRoute>>
  readonly previewHeader: string | undefined
  readonly previewCookie: string | undefined
  /** Sticky sessions: the cookie's name, and the Set-Cookie value that pins each color. */
  readonly stickyCookie: string | undefined
  readonly stickySetCookie: Readonly<Record<Color, string>> | undefined
  /** The draining color still serving sticky sessions, and until when; only on services with sticky sessions. */
  readonly stickyHold: StickyHold | undefined
  /** Undefined when no split is in force: the fast path checks this one field and nothing more. */
  readonly split: RouteSplit | undefined
  /** Latency sampling on for this service's colors (a release runs). */
  readonly sampled: boolean
  /** Shadow traffic to the idle color; undefined when off (the fast path checks this one field and nothing more). */
  readonly shadow: ShadowSampler | undefined
  /**
   * The comparison a shadow copy of this snapshot counts in: the live and
   * idle colors and the idle targets (`blue>green|http://a,http://b`), set
   * whether shadow traffic is on or not (the gate reads the comparison of
   * the idle targets in force); undefined for h2c/h2 services, which have none.
   */
  readonly shadowKey: string | undefined
  readonly config: ServiceConfig
}

/** A route's shadow traffic as the resolve step sees it (shadow/mirror.ts ShadowRoute): a tap for a request picked, else undefined. */
export interface ShadowSampler {
  sample: (method: string) => AnswerTap | undefined
}

/**
 * How a process with a request path builds shadow routes into its
 * snapshots: the tally of a comparison comes from its ShadowBook (outside
 * every snapshot, so a rebuild keeps the counts), the comparer and the route
 * from the shadow parts. Absent: no snapshot of that process copies anything.
 */
export interface ShadowWiring {
  tallyFor: (service: string, key: string) => ShadowTally
  comparer: (settings: ShadowConfig) => Comparer
  route: (plan: ShadowPlan) => ShadowSampler
  /** `snapshot` (built with this wiring) is in force now; a build that never is (a refused change) changes no comparison. */
  installed: (snapshot: Snapshot) => void
}

/** The shadow traffic in force on a service, and whose word it is; undefined when off. */
export interface ShadowSession {
  settings: ShadowConfig
  /** Epoch ms when the admin API's session ends; undefined: until stopped. */
  until: number | undefined
  source: 'config' | 'api'
}

/** The settings of a session the admin API starts on a service with no `shadow` section: DEFAULTS, nothing ignored. */
const API_SHADOW: ShadowConfig = { ...DEFAULTS.shadow, methods: [...DEFAULTS.shadow.methods], sample: 0.1, ignore: { headers: [], json: [] }, redact: [] }

/**
 * The admin API's override wins over the config: `off` stops a configured
 * shadow, a session replaces its sample until it ends (then the config's
 * word is back). h2c/h2 services never have one (the config refuses it; an
 * override carried over a reload that changed the protocol is ignored).
 */
export function shadowSession (svc: ServiceConfig, st: ServiceState | undefined, now = Date.now()): ShadowSession | undefined {
  if (svc.protocol !== 'http1') return undefined
  const o = st?.shadow
  if (o !== undefined && 'off' in o) return undefined
  if (o !== undefined && (o.until === undefined || o.until > now)) return { settings: { ...(svc.shadow ?? API_SHADOW), sample: o.sample }, until: o.until, source: 'api' }
  return svc.shadow === undefined ? undefined : { settings: svc.shadow, until: undefined, source: 'config' }
}

/**
 * The comparison key: a flip or new idle targets start a fresh tally (the old
 * counts are of another version), and so do new comparison rules (`ignore`,
 * `maxBody` from the config's shadow section): pairs judged by the old rules
 * would keep a gate shut over a place the operator now ignores. So does a new
 * `redact` list: the examples kept so far would go on showing what it hides.
 */
export function comparisonKey (live: Color, idle: Color, idleTargets: readonly string[], rules?: ShadowConfig): string {
  const key = `${live}>${idle}|${[...idleTargets].sort().join(',')}`
  if (rules === undefined) return key
  return `${key}|${JSON.stringify([[...rules.ignore.headers].sort(), [...rules.ignore.json].sort(), rules.maxBody, [...rules.redact].sort()])}`
}

/** Routes of one host (or of any host), longest prefix first. */
type RouteList = readonly ServiceRoute[]

export class Snapshot {
  readonly generation: number
  readonly services: ReadonlyMap<string, ServiceRoute>
  /** Generation-pinned call chains; undefined when off (the fast path checks this one field and nothing more). */
  readonly pinning: PinningSettings | undefined
  /** RoutingState.pinFloor: generations below it pin nothing. */
  readonly pinFloor: number
  /** The baggage list-member naming this generation (`switchyard-gen=N`), made once. */
  readonly baggageMember: string
  private readonly byHost: ReadonlyMap<string, RouteList>
  private readonly anyHost: RouteList

  constructor (generation: number, services: ServiceRoute[], pinning?: PinningSettings, pinFloor = 0) {
    this.generation = generation
    this.pinning = pinning
    this.pinFloor = pinFloor
    this.baggageMember = `${BAGGAGE_KEY}=${generation}`
    this.services = new Map(services.map((s) => [s.name, s]))
    const sorted = [...services].sort((a, b) => b.prefix.length - a.prefix.length)
    const byHost = new Map<string, ServiceRoute[]>()
    for (const s of sorted) {
      if (s.host === undefined) continue
      const list = byHost.get(s.host) ?? []
      list.push(s)
      byHost.set(s.host, list)
    }
    this.byHost = byHost
    this.anyHost = sorted.filter((s) => s.host === undefined)
  }

  /**
   * The service for a request. Routes naming the request's host are tried
   * first (as Envoy picks a virtual host before a route), then host-less ones;
   * within each, the longest prefix on whole path segments wins.
   */
  match (hostHeader: string | undefined, url: string): ServiceRoute | undefined {
    if (this.byHost.size > 0 && hostHeader !== undefined) {
      const list = this.byHost.get(normalizeHost(hostHeader))
      if (list !== undefined) {
        const hit = matchPrefix(list, url)
        if (hit !== undefined) return hit
      }
    }
    return matchPrefix(this.anyHost, url)
  }
}

function normalizeHost (host: string): string {
  let end = host.length
  if (host.charCodeAt(0) === 91 /* [ */) {
    end = host.indexOf(']') + 1
  } else {
    const colon = host.lastIndexOf(':')
    if (colon !== -1) end = colon
  }
  // A fully qualified name's trailing dot (`shop.example.com.`) names the same host.
  if (end > 1 && host.charCodeAt(end - 1) === 46 /* . */) end--
  const h = end === host.length ? host : host.slice(0, end)
  return h.toLowerCase()
}

/** `url` is the request target (path and query). A prefix matches whole segments. */
function matchPrefix (list: RouteList, url: string): ServiceRoute | undefined {
  for (let i = 0; i < list.length; i++) {
    const p = list[i].prefix
    if (p.length === 1) return list[i] // "/" matches everything
    if (url.startsWith(p)) {
      const next = url.charCodeAt(p.length)
      // end of string (NaN), '/', '?'
      if (Number.isNaN(next) || next === 47 || next === 63) return list[i]
    }
  }
  return undefined
}

/** The targets a color serves: the admin override if one is set, else the config's. */
export function colorTargets (svc: ServiceConfig, state: ServiceState | undefined, color: Color): string[] {
  return state?.targets[color] ?? svc[color].targets
}

/** Builds a whole snapshot; throws before anything is swapped if the inputs are inconsistent. */
export function buildSnapshot (config: Config, state: RoutingState, registry: TargetRegistry, shadow?: ShadowWiring): Snapshot {
  const routes: ServiceRoute[] = []
  for (const svc of Object.values(config.services)) {
    const st = state.services[svc.name]
    const live = st?.live ?? svc.live
    const colors = {} as Record<Color, ColorRoute>
    for (const color of COLORS) {
      const urls = colorTargets(svc, st, color)
      colors[color] = {
        service: svc.name,
        color,
        targets: new TargetSet(urls.map((u) => {
          // Targets set through the admin API before a reload changed the protocol: refused here, nothing swapped.
          const wrong = protocolMismatch(svc.protocol, u)
          if (wrong !== undefined) throw new Error(`service ${svc.name}: ${color} target ${u}: ${wrong}`)
          const target = registry.target(u)
          // One object shape for every service (h2 undefined for http1): the pick loop stays monomorphic.
          return {
            target,
            dispatcher: target.dispatcher(svc.timeouts, svc.limits),
            h1: target.h1Pool(svc.timeouts, svc.limits),
            h2: svc.protocol === 'http1' ? undefined : target.h2Pool(svc.timeouts, svc.limits),
          }
        }), svc.health?.panicThreshold),
        stats: registry.colorStats(svc.name, color),
        timeouts: svc.timeouts,
        protocol: svc.protocol,
      }
    }
    if (colors[live].targets.endpoints.length === 0) {
      throw new Error(`service ${svc.name}: live color ${live} has no targets`)
    }
    const idle = colors[otherColor(live)]
    const shadowKey = svc.protocol === 'http1' ? comparisonKey(live, idle.color, idle.targets.endpoints.map((e) => e.target.url), svc.shadow) : undefined
    routes.push({
      name: svc.name,
      host: svc.match.host,
      prefix: svc.match.pathPrefix,
      live,
      colors,
      previewHeader: svc.preview?.header,
      previewCookie: svc.preview?.cookie,
      stickyCookie: svc.sticky?.cookie,
      stickySetCookie: svc.sticky === undefined
        ? undefined
        : { blue: stickySetCookie(svc.sticky.cookie, 'blue'), green: stickySetCookie(svc.sticky.cookie, 'green') },
      stickyHold: svc.sticky === undefined ? undefined : stickyHold(state.sticky?.[svc.name], live),
      split: routeSplit(st?.split, live, colors),
      sampled: st?.release !== undefined,
      shadow: shadow === undefined || shadowKey === undefined ? undefined : shadowRoute(shadow, svc, st, colors[live], idle, shadowKey),
      shadowKey,
      config: svc,
    })
  }
  const pinning = config.pinning === undefined ? undefined : { keepMs: config.pinning.keep, trust: new PeerList(config.pinning.trust) }
  return new Snapshot(state.generation, routes, pinning, state.pinFloor ?? 0)
}

/** The service's shadow route when its traffic is on and the idle color has targets to copy to. */
function shadowRoute (wiring: ShadowWiring, svc: ServiceConfig, st: ServiceState | undefined, live: ColorRoute, idle: ColorRoute, key: string): ShadowSampler | undefined {
  const session = shadowSession(svc, st)
  if (session === undefined || idle.targets.endpoints.length === 0) return undefined
  return wiring.route({
    service: svc.name,
    settings: session.settings,
    live: live.targets,
    idle: idle.targets,
    tally: wiring.tallyFor(svc.name, key),
    comparer: wiring.comparer(session.settings),
    until: session.until,
  })
}

/** A hold on the live color means nothing (it serves everyone anyway). */
function stickyHold (hold: StickyHold | undefined, live: Color): StickyHold | undefined {
  return hold === undefined || hold.color === live ? undefined : { color: hold.color, until: hold.until }
}

/**
 * A split means something only towards a color other than live, with a
 * weight strictly between 0 and 100 and somewhere to send it; anything else
 * (a state written by hand, a release caught mid-finish) routes all to live.
 */
function routeSplit (split: ServiceState['split'], live: Color, colors: Readonly<Record<Color, ColorRoute>>): RouteSplit | undefined {
  if (split === undefined || split.color === live || !(split.weight >= 1 && split.weight <= 99)) return undefined
  const to = colors[split.color]
  if (to === undefined || to.targets.endpoints.length === 0) return undefined
  return { to, threshold: thresholdOf(split.weight), seed: split.seed >>> 0, weight: split.weight }
}

/**
 * Runtime state follows the snapshot now in force: each target takes the
 * probe and passive settings of the first service (in config order) that
 * uses it, in the current snapshot, else in the kept ones (`kept`, newest
 * first: a target only a pinned chain still reaches is probed as that
 * chain's generation had it). Returns the targets in use.
 */
export function configureTargets (snapshot: Snapshot, ...kept: Snapshot[]): Set<Target> {
  const seen = new Set<Target>()
  for (const s of [snapshot, ...kept]) {
    for (const route of s.services.values()) {
      for (const color of COLORS) {
        for (const e of route.colors[color].targets.endpoints) {
          if (seen.has(e.target)) continue
          seen.add(e.target)
          e.target.configure(route.config.health, route.config.passive)
        }
      }
    }
  }
  return seen
}

/** Latency sampling follows the snapshot: on for both colors of a service while a release runs, off (and free) otherwise. */
export function configureSampling (snapshot: Snapshot): void {
  for (const route of snapshot.services.values()) {
    for (const color of COLORS) route.colors[color].stats.setSampling(route.sampled)
  }
}

/** Percent of a route's ordinary traffic (not preview, not smoke) `color` gets: the split's, else all on live. */
export function weightOf (route: ServiceRoute, color: Color): number {
  const split = route.split
  if (split === undefined) return route.live === color ? 100 : 0
  return split.to.color === color ? split.weight : 100 - split.weight
}

/** Target URLs the snapshots use; the registry keeps these and forgets the rest. */
export function snapshotTargets (...snapshots: Snapshot[]): Set<string> {
  const urls = new Set<string>()
  for (const snapshot of snapshots) {
    for (const s of snapshot.services.values()) {
      for (const color of COLORS) for (const e of s.colors[color].targets.endpoints) urls.add(e.target.url)
    }
  }
  return urls
}

/** What readers of routing are handed: the snapshot in force, the kept ones to look up, and no way to replace either. */
export interface SnapshotView {
  readonly current: Snapshot
  readonly kept: PinLookup<Snapshot>
}

/**
 * Holds the one current snapshot. A request reads it once, when its headers
 * arrive. Only the holder's owner swaps: everyone else is given `view`.
 */
export class Switcher {
  private snapshot: Snapshot
  /** The snapshots that stopped being current, while pinning keeps them. */
  readonly kept: KeptSnapshots<Snapshot>
  /** A separate object, so a reader handed it cannot reach swap() even by a cast. */
  readonly view: SnapshotView

  /** `dropped`: kept snapshots went (expired, or pinning turned off): the targets only they used may go too. */
  constructor (initial: Snapshot, dropped?: () => void) {
    this.snapshot = initial
    const kept = new KeptSnapshots<Snapshot>(dropped)
    this.kept = kept
    const read = (): Snapshot => this.snapshot
    const lookup: PinLookup<Snapshot> = Object.freeze({
      find: (generation: number, keepMs: number, now: number) => kept.find(generation, keepMs, now),
      count: (result: PinResult, generation?: number) => kept.count(result, generation),
    })
    this.view = Object.freeze({ get current () { return read() }, kept: lookup })
  }

  get current (): Snapshot {
    return this.snapshot
  }

  swap (next: Snapshot, now = Date.now()): Snapshot {
    const prev = this.snapshot
    this.snapshot = next
    this.kept.retire(prev, next, now)
    return prev
  }

  /** Target URLs the current and kept snapshots use. */
  targets (): Set<string> {
    return snapshotTargets(this.snapshot, ...this.kept.snapshots())
  }

  /** Shutdown: the kept snapshots' expiry timer stops. */
  stop (): void {
    this.kept.stop()
  }
}
