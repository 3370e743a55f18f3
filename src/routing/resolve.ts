// Step one of every request, on every engine and for WebSocket upgrades: from
// what a request says to where it goes, or the coded reason it goes nowhere.

import type { Color } from '../config/schema.js'
import type { Refusal, RequestFacts, RequestTracer, Resolution, Resolve } from '../proxy/resolve.js'
import { ambiguousRouting, chooseFor, previewColor, readsHeaders, routesByHeaders } from './choose.js'
import { normalizeTarget, TARGET_ABOVE_ROOT } from './path.js'
import { baggageGeneration, INVALID, outgoingBaggage, type PinLookup, type PinResult } from './pinning.js'
import type { ColorRoute, PinningSettings, ServiceRoute, Snapshot, SnapshotView } from './snapshot.js'

/** Who may pin a color on a request (the smoke checks of a flip's gate). */
export interface ColorPins {
  /** The color the gateway's own pin header names, or undefined when the header is not genuine. */
  colorOf: (header: string) => Color | undefined
}

const NO_ROUTE: Refusal = { code: 'no_route', message: undefined, target: undefined, stats: undefined }
const NOT_A_PATH: Refusal = { code: 'bad_request', message: 'the request target must be a path starting with /', target: undefined, stats: undefined }
const ABOVE_ROOT: Refusal = { code: 'bad_request', message: TARGET_ABOVE_ROOT, target: undefined, stats: undefined }

/**
 * The resolve step over the snapshot `snapshots` holds at the moment of each
 * call (read once per request, so a flip never splits one): the target is
 * normalized, the service matched, a request whose routing headers could be
 * read two ways refused, the color chosen (pin, preview, sticky, live) and a
 * target picked. A request the live color serves by the ordinary route may
 * be picked for shadow traffic (its route's `shadow`, when on). With
 * pinning on, a request whose baggage names a kept generation, from a
 * trusted peer, is routed by that generation's snapshot instead, and every
 * request is told the baggage to forward. With `tracer` (tracing on),
 * each request routed gets its span; without, the one check is of a constant.
 */
export function createResolver (snapshots: SnapshotView, pins: ColorPins, tracer?: RequestTracer): Resolve {
  /** The request routed by `snapshot` (`current`, or a kept one); `pinning`: on, so the baggage to forward is set. */
  const routeOn = (snapshot: Snapshot, isCurrent: boolean, pinning: boolean, facts: RequestFacts, raw: string, target: string): Resolution | Refusal => {
    const route = snapshot.match(facts.host, target)
    if (route === undefined) return target === raw ? NO_ROUTE : { ...NO_ROUTE, target }
    let headers: RequestFacts | undefined
    if (readsHeaders(route)) {
      // A split alone reads only its key, which nothing can make ambiguous (two lines are no key): no Connection list to build.
      if (routesByHeaders(route)) {
        const ambiguous = ambiguousRouting(route, route.previewHeader === undefined ? 0 : facts.headerLines(route.previewHeader), facts.connectionNames)
        if (ambiguous !== undefined) return { code: 'bad_request', message: ambiguous, target, stats: undefined }
      }
      headers = facts
    }
    const pinned = facts.smoke === undefined ? undefined : pins.colorOf(facts.smoke)
    const { color, setCookie } = chooseFor(route, pinned, headers)
    const endpoint = color.targets.pick()
    const trace = tracer === undefined ? undefined : tracer.start(facts, target, snapshot.generation, !isCurrent)
    if (endpoint === undefined) {
      return { code: 'no_healthy_upstream', message: `no healthy upstream for ${route.name} (${color.color})`, target, stats: color.stats, trace }
    }
    const sent = pinning ? clientBaggage(facts) : undefined
    const baggage = !pinning ? undefined : sent === undefined ? snapshot.baggageMember : outgoingBaggage(sent, snapshot.baggageMember)
    const shadow = route.shadow
    // A kept snapshot's comparison is over: only the current one's routes copy.
    if (shadow === undefined || pinned !== undefined || !isCurrent || !isOrdinaryLive(route, color, headers)) return { target, endpoint, group: color, setCookie, shadow: undefined, baggage, trace }
    return { target, endpoint, group: color, setCookie, shadow: shadow.sample(facts.method), baggage, trace }
  }

  return (facts: RequestFacts): Resolution | Refusal => {
    const raw = facts.target
    // Origin-form only (`/path?query`): absolute-form, `*` and friends are not for a reverse proxy.
    if (raw.charCodeAt(0) !== 47) return NOT_A_PATH
    const target = normalizeTarget(raw)
    if (target === undefined) return ABOVE_ROOT
    const current = snapshots.current
    const pinning = current.pinning
    if (pinning === undefined) return routeOn(current, true, false, facts, raw, target)
    if (facts.baggage === undefined) return routeOn(current, true, true, facts, raw, target)
    const generation = baggageGeneration(facts.baggage)
    if (generation === undefined) return routeOn(current, true, true, facts, raw, target)
    let result = pinResult(snapshots.kept, current, pinning, facts.peer, generation)
    let to: Resolution | Refusal | undefined
    if (typeof result !== 'string') {
      to = routeOn(result, false, true, facts, raw, target)
      // The kept generation cannot serve it (its color's targets are down or gone, or it had no such service): the current one does, rather than fail a chain it can serve.
      if (to.endpoint === undefined && (to.code === 'no_route' || to.code === 'no_healthy_upstream')) {
        result = 'unavailable'
        to = undefined
      }
    }
    to ??= routeOn(current, true, true, facts, raw, target)
    // The fast engine hands a request for an HTTP/2 service to node:http, which resolves it again: counted there, once.
    if (facts.http1Only !== true || to.endpoint === undefined || to.group.protocol === 'http1') {
      if (typeof result === 'string') snapshots.kept.count(result)
      else snapshots.kept.count('pinned', result.generation)
    }
    return to
  }
}

/**
 * The client's baggage members to forward: none when its Connection header
 * names `baggage` (hop-by-hop: the gateway, this hop's recipient, reads its
 * entry, and forwards the gateway's own alone, as with pinning off it forwards nothing).
 */
function clientBaggage (facts: RequestFacts): string | undefined {
  if (facts.baggage === undefined || facts.connectionNames?.includes('baggage') === true) return undefined
  return facts.baggage
}

/**
 * What a request whose baggage names `generation` (or INVALID) routes by:
 * the kept snapshot of that generation, when the peer is trusted and it is
 * kept; else the current snapshot, and the result to count (`pinned` when
 * the generation named is the current one). Nothing is counted here: the
 * caller counts once it knows which engine forwards the request.
 */
function pinResult (kept: PinLookup<Snapshot>, current: Snapshot, pinning: PinningSettings, peer: string, generation: number): Snapshot | PinResult {
  // The socket's peer, never X-Forwarded-For: a client cannot speak for a service.
  if (!pinning.trust.has(peer)) return 'untrusted'
  if (generation === INVALID) return 'invalid'
  if (generation === current.generation) return 'pinned'
  return kept.find(generation, pinning.keepMs, Date.now()) ?? 'expired'
}

/**
 * Whether the live color serves a request that no pin chose by the
 * ordinary route: chooseFor picks live without reading a header (no
 * preview, sticky or split on the service), or by a split or sticky
 * cookie that lands on live. A sticky hold is never on the live color and a
 * split's other color is not live, so only a preview naming the live color
 * itself is left to tell apart: read again, only on a service with shadow on.
 */
function isOrdinaryLive (route: ServiceRoute, color: ColorRoute, headers: RequestFacts | undefined): boolean {
  if (color !== route.colors[route.live]) return false
  if (headers === undefined || (route.previewHeader === undefined && route.previewCookie === undefined)) return true
  return previewColor(route, headers) === undefined
}
