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

export function chooseColor (route: ServiceRoute, headers: Record<string, string | string[] | undefined>): ColorRoute {
  if (route.previewHeader === undefined && route.previewCookie === undefined) return route.colors[route.live]
  return route.colors[previewColor(route, headers) ?? route.live]
}
