// Step 2 of routing: which color serves a request. A valid preview header or
// cookie picks its color strictly; otherwise the live color.

import { isColor, type Color } from '../config/schema.js'
import type { ColorRoute, ServiceRoute } from './snapshot.js'

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
export function previewColor (route: ServiceRoute, headers: Record<string, string | string[] | undefined>): Color | undefined {
  if (route.previewHeader !== undefined) {
    const v = headers[route.previewHeader]
    if (typeof v === 'string' && isColor(v)) return v
  }
  if (route.previewCookie !== undefined) {
    const v = cookieValue(headers.cookie as string | undefined, route.previewCookie)
    if (isColor(v)) return v
  }
  return undefined
}

/**
 * Preview (strict) first; then a sticky cookie naming a color that is still
 * draining; else the live color.
 */
export function chooseColor (route: ServiceRoute, headers: Record<string, string | string[] | undefined>): ColorRoute {
  if (route.previewHeader !== undefined || route.previewCookie !== undefined) {
    const preview = previewColor(route, headers)
    if (preview !== undefined) return route.colors[preview]
  }
  if (route.stickyCookie !== undefined) {
    const pinned = cookieValue(headers.cookie as string | undefined, route.stickyCookie)
    // Pinned to a color that is still draining and can still serve: stay there.
    if (isColor(pinned) && pinned !== route.live && route.colors[pinned].stats.drain !== undefined && route.colors[pinned].targets.healthyCount > 0) return route.colors[pinned]
  }
  return route.colors[route.live]
}

/**
 * The Set-Cookie a sticky service answers with: only when the session's
 * cookie does not already name the color that served it, and never for preview traffic.
 */
export function stickySetCookie (route: ServiceRoute, headers: Record<string, string | string[] | undefined>, served: ColorRoute): string | undefined {
  if (route.stickySetCookie === undefined) return undefined
  if ((route.previewHeader !== undefined || route.previewCookie !== undefined) && previewColor(route, headers) !== undefined) return undefined
  const pinned = cookieValue(headers.cookie as string | undefined, route.stickyCookie as string)
  return pinned === served.color ? undefined : route.stickySetCookie[served.color]
}
