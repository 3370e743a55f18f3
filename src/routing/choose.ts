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

/** Preview (strict) first, else the live color. Services with sticky sessions use `chooseSticky`. */
export function chooseColor (route: ServiceRoute, headers: Record<string, string | string[] | undefined>): ColorRoute {
  if (route.previewHeader !== undefined || route.previewCookie !== undefined) {
    const preview = previewColor(route, headers)
    if (preview !== undefined) return route.colors[preview]
  }
  return route.colors[route.live]
}

export interface StickyChoice {
  color: ColorRoute
  /** The Set-Cookie to answer with: only when the session's cookie does not already name the color, never for preview traffic. */
  setCookie: string | undefined
}

/**
 * A service with sticky sessions: preview (strict) first; then a cookie
 * naming a color that is still draining and can still serve; else live.
 * Each header and cookie is read once.
 */
export function chooseSticky (route: ServiceRoute, headers: Record<string, string | string[] | undefined>): StickyChoice {
  if (route.previewHeader !== undefined || route.previewCookie !== undefined) {
    const preview = previewColor(route, headers)
    if (preview !== undefined) return { color: route.colors[preview], setCookie: undefined }
  }
  const pinned = cookieValue(headers.cookie as string | undefined, route.stickyCookie as string)
  let color = route.colors[route.live]
  if (isColor(pinned) && pinned !== route.live && route.colors[pinned].stats.drain !== undefined && route.colors[pinned].targets.healthyCount > 0) color = route.colors[pinned]
  const cookies = route.stickySetCookie as Readonly<Record<Color, string>>
  return { color, setCookie: pinned === color.color ? undefined : cookies[color.color] }
}
