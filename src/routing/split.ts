// A release's traffic split: which color one request's key falls on. Pure
// arithmetic, so every engine, worker and replica puts a key in the same place.

import type { Color } from '../config/schema.js'

/** The request header that may carry a split key (SPEC "Releases"). */
export const SPLIT_HEADER = 'x-switchyard-key'

/**
 * FNV-1a, 32 bits, over the string's bytes. Header values reach routing
 * decoded as latin1 on both engines (one char per byte); a char above 0xff
 * (only from code, never from the wire) is taken as its two bytes.
 */
export function fnv1a32 (text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c > 0xff) {
      h = Math.imul(h ^ (c >>> 8), 0x01000193)
    }
    h = Math.imul(h ^ (c & 0xff), 0x01000193)
  }
  return h >>> 0
}

/**
 * murmur3's fmix32: every input bit flips each output bit with probability
 * about 1/2, so `point ^ seed` for nearby points (FNV of similar keys) or
 * nearby seeds still lands uniformly.
 */
export function mix32 (x: number): number {
  x ^= x >>> 16
  x = Math.imul(x, 0x85ebca6b)
  x ^= x >>> 13
  x = Math.imul(x, 0xc2b2ae35)
  x ^= x >>> 16
  return x >>> 0
}

/** Where a key's point falls for a release's seed: a u32 compared with the split's threshold. */
export function bucketOf (point: number, seed: number): number {
  return mix32((point ^ seed) >>> 0)
}

/**
 * The bucket bound for `weight` percent: buckets below it go to the new
 * color. Monotone in the weight, so raising it only moves keys old -> new.
 */
export function thresholdOf (weight: number): number {
  return Math.floor(weight * 2 ** 32 / 100)
}

/** A point as the sticky cookie carries it: 8 lowercase hex digits. */
export function pointHex (point: number): string {
  return (point >>> 0).toString(16).padStart(8, '0')
}

/** What a sticky cookie's value says: its color part (what holds read) and, when it has one, the split point. */
export interface StickyValue {
  /** The text before the first dot (the whole value without one): a color, or anything a client made up. */
  readonly color: string
  /** The point after the dot, when it is exactly 8 hex digits; else undefined (no key in the cookie). */
  readonly point: number | undefined
}

const HEX8 = /^[0-9a-f]{8}$/i

/** Reads a sticky cookie's value: `blue`, `green`, or `<color>.<8 hex>` while a split is (or was) in force. */
export function parseSticky (value: string): StickyValue {
  const dot = value.indexOf('.')
  if (dot === -1) return { color: value, point: undefined }
  const hex = value.slice(dot + 1)
  return { color: value.slice(0, dot), point: HEX8.test(hex) ? parseInt(hex, 16) : undefined }
}

/** The Set-Cookie that gives a browser sticky cookie `name` with `value`: one spelling for every path that sets it. */
export function stickySetCookie (name: string, value: string): string {
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Lax`
}

/** The sticky cookie's value naming `color` and carrying `point`. */
export function stickyValue (color: Color, point: number): string {
  return `${color}.${pointHex(point)}`
}
