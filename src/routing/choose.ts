// Step 2 of routing: which color serves a request. A smoke pin or a valid
// preview header or cookie picks its color strictly; then sticky holds, a release's split, live.

import { isColor, type Color } from '../config/schema.js'
import type { ColorRoute, RouteSplit, ServiceRoute } from './snapshot.js'
import { bucketOf, fnv1a32, parseSticky, SPLIT_HEADER, stickySetCookie, stickyValue } from './split.js'

/** What choosing a color reads of a request: the Cookie header, a service's preview header, and a split's key. */
export interface ChoiceHeaders {
  readonly cookie: string | undefined
  /** The header's value when it has exactly one line. */
  header: (lowerName: string) => string | undefined
  /** The client's address (trusted proxies considered); asked only when a split keys a request by it. */
  clientAddress: () => string
}

/**
 * A request's split point when its cookie carries none: the split key
 * header's when it has exactly one non-empty line, else the client address's.
 */
export function keyPoint (headers: ChoiceHeaders): number {
  const key = headers.header(SPLIT_HEADER)
  return fnv1a32(key === undefined || key === '' ? headers.clientAddress() : key)
}

/** The color a point falls on under `split`: the same point and seed land alike in every service of a release. */
export function splitColor (route: ServiceRoute, split: RouteSplit, point: number): ColorRoute {
  return bucketOf(point, split.seed) < split.threshold ? split.to : route.colors[route.live]
}

/** The value of cookie `name` in a Cookie header, without allocating a map. */
export function cookieValue (header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  let i = 0
  while (i < header.length) {
    while (header.charCodeAt(i) === 32) i++
    const semi = header.indexOf(';', i)
    const end = semi === -1 ? header.length : semi
    const eq = header.indexOf('=', i)
    if (eq !== -1 && eq < end && header.slice(i, eq).trim() === name) {
      return header.slice(eq + 1, end).trim()
    }
    i = end + 1
  }
  return undefined
}

/** The color a preview header or cookie asks for, when it names one. */
export function previewColor (route: ServiceRoute, headers: ChoiceHeaders): Color | undefined {
  if (route.previewHeader !== undefined) {
    const v = headers.header(route.previewHeader)
    if (v !== undefined && isColor(v)) return v
  }
  if (route.previewCookie !== undefined) {
    const v = cookieValue(headers.cookie, route.previewCookie)
    if (isColor(v)) return v
  }
  return undefined
}

/**
 * A request whose routing headers could be read two ways is
 * refused (400 bad_request), the same on every engine: the service's preview
 * header on more than one line (even with equal values), or the preview
 * header or `cookie` (when a cookie routes this service) named in
 * `Connection`, which makes it hop-by-hop. `previewLines`: how many lines of
 * the preview header the request carries; `connection`: the names its
 * Connection header lists. Returns the message naming the header, or
 * undefined when the request is clear.
 */
export function ambiguousRouting (route: ServiceRoute, previewLines: number, connection: readonly string[] | undefined): string | undefined {
  const header = route.previewHeader
  if (header !== undefined && previewLines > 1) return `the ${header} header appears more than once`
  if (connection === undefined) return undefined
  if (header !== undefined && connection.includes(header)) return `Connection names ${header}, which routes this request`
  if ((route.previewCookie !== undefined || route.stickyCookie !== undefined) && connection.includes('cookie')) return 'Connection names cookie, which routes this request'
  return undefined
}

/** Preview (strict) first, then a split by the request's key, else the live color. Services with sticky sessions use `chooseSticky`. */
export function chooseColor (route: ServiceRoute, headers: ChoiceHeaders): ColorRoute {
  if (route.previewHeader !== undefined || route.previewCookie !== undefined) {
    const preview = previewColor(route, headers)
    if (preview !== undefined) return route.colors[preview]
  }
  const split = route.split
  return split === undefined ? route.colors[route.live] : splitColor(route, split, keyPoint(headers))
}

export interface StickyChoice {
  color: ColorRoute
  /** The Set-Cookie to answer with: only when the session's cookie does not already name the color, never for preview traffic. */
  setCookie: string | undefined
}

/**
 * A service with sticky sessions: preview (strict) first; then a cookie
 * naming the color the snapshot holds for sticky sessions (draining, before
 * its deadline, with a healthy target); then a split in force, keyed by the
 * point the cookie carries (else the split key header, else the address),
 * whose cookie `<color>.<point>` keeps a browser's key when its address
 * changes; else live. Each header and cookie is read once.
 */
export function chooseSticky (route: ServiceRoute, headers: ChoiceHeaders): StickyChoice {
  if (route.previewHeader !== undefined || route.previewCookie !== undefined) {
    const preview = previewColor(route, headers)
    if (preview !== undefined) return { color: route.colors[preview], setCookie: undefined }
  }
  const cookie = cookieValue(headers.cookie, route.stickyCookie as string)
  // Holds read the color part: `green` and `green.0a1b2c3d` pin alike. A plain color is read as it is, with nothing parsed or allocated.
  const parsed = cookie === undefined || !cookie.includes('.') ? undefined : parseSticky(cookie)
  const pinned = parsed === undefined ? cookie : parsed.color
  const live = route.colors[route.live]
  // The hold comes with the snapshot (every worker has it) and ends by the clock, so no process waits on a message.
  const hold = route.stickyHold
  if (hold !== undefined && pinned === hold.color && route.colors[hold.color].targets.healthyCount > 0 && Date.now() < hold.until) {
    return { color: route.colors[hold.color], setCookie: undefined }
  }
  const split = route.split
  const cookies = route.stickySetCookie as Readonly<Record<Color, string>>
  const kept = parsed?.point
  if (split === undefined) {
    if (pinned === live.color) return { color: live, setCookie: undefined }
    // A cookie's key outlives the split (a revert, the next release): the browser keeps it, and with it its place in the next split.
    return { color: live, setCookie: kept === undefined ? cookies[live.color] : stickySetCookie(route.stickyCookie as string, stickyValue(live.color, kept)) }
  }
  const point = kept ?? keyPoint(headers)
  const color = splitColor(route, split, point)
  const value = stickyValue(color.color, point)
  return { color, setCookie: cookie === value ? undefined : stickySetCookie(route.stickyCookie as string, value) }
}

/** Whether a header or cookie can pick `route`'s color (preview or sticky settings): what `ambiguousRouting` checks. */
export function routesByHeaders (route: ServiceRoute): boolean {
  return route.previewHeader !== undefined || route.previewCookie !== undefined || route.stickyCookie !== undefined
}

/** Whether choosing a color for `route` reads request headers at all (preview or sticky settings, a split in force). */
export function readsHeaders (route: ServiceRoute): boolean {
  return route.split !== undefined || routesByHeaders(route)
}

/**
 * The color for one request, for both engines and WebSocket upgrades: the
 * color a smoke check pinned first, then preview, sticky holds and a
 * release's split (from `headers`, which may be left out when `readsHeaders`
 * is false), else live. Pinned and preview requests never see weights.
 */
export function chooseFor (route: ServiceRoute, pinned: Color | undefined, headers: ChoiceHeaders | undefined): StickyChoice {
  if (pinned !== undefined) return { color: route.colors[pinned], setCookie: undefined }
  if (headers === undefined) return { color: route.colors[route.live], setCookie: undefined }
  if (route.stickyCookie !== undefined) return chooseSticky(route, headers)
  return { color: chooseColor(route, headers), setCookie: undefined }
}
