// W3C Trace Context (https://www.w3.org/TR/trace-context/): reading an
// incoming `traceparent`, and new trace and span ids for the spans the gateway starts.

import { randomFillSync } from 'node:crypto'

/** What a valid `traceparent` says. */
export interface ParentContext {
  /** 32 lower-case hex digits, not all zero. */
  readonly traceId: string
  /** The caller's span: 16 lower-case hex digits, not all zero. */
  readonly parentId: string
  /** The sampled flag (bit 0 of trace-flags): the caller records this trace. */
  readonly sampled: boolean
}

const HEX = /^[0-9a-f]+$/
const ZERO_TRACE = '0'.repeat(32)
const ZERO_SPAN = '0'.repeat(16)

/**
 * The context of a version-00 `traceparent` (`00-<trace>-<parent>-<flags>`),
 * or undefined when the value is anything else: another version, upper-case
 * or short ids, all-zero ids. An undefined answer makes the gateway start a
 * trace of its own; the client's value still goes upstream untouched.
 */
export function parseTraceparent (value: string): ParentContext | undefined {
  const v = value.trim()
  if (v.length !== 55 || v.charCodeAt(2) !== 45 || v.charCodeAt(35) !== 45 || v.charCodeAt(52) !== 45) return undefined
  if (v.slice(0, 2) !== '00') return undefined
  const traceId = v.slice(3, 35)
  const parentId = v.slice(36, 52)
  const flags = v.slice(53, 55)
  if (!HEX.test(traceId) || !HEX.test(parentId) || !HEX.test(flags)) return undefined
  if (traceId === ZERO_TRACE || parentId === ZERO_SPAN) return undefined
  return { traceId, parentId, sampled: (parseInt(flags, 16) & 1) === 1 }
}

/** The `traceparent` naming span `spanId` of trace `traceId`, for the calls made on its behalf. */
export function formatTraceparent (traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`
}

/**
 * Random ids drawn from one buffer filled a few hundred at a time: one
 * crypto call per 4 KiB instead of one per id. (Random, not counters: ids
 * from every worker and every replica must not collide.)
 */
const POOL = Buffer.alloc(4096)
let used = POOL.length

function randomHex (bytes: number): string {
  if (used + bytes > POOL.length) {
    randomFillSync(POOL)
    used = 0
  }
  const hex = POOL.toString('hex', used, used + bytes)
  used += bytes
  // All zero is invalid (W3C): vanishingly rare, but then draw again.
  return hex === '0'.repeat(bytes * 2) ? randomHex(bytes) : hex
}

/** A new trace id: 32 hex digits. */
export function newTraceId (): string {
  return randomHex(16)
}

/** A new span id: 16 hex digits. */
export function newSpanId (): string {
  return randomHex(8)
}
