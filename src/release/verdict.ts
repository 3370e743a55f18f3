// Whether a release's new color is significantly worse than its old one over a window:
// the error-rate and latency tests with their margins, as figures and lines a person can read.

import { LATENCY_RATIO, LatencyHistogram, shiftFor } from '../upstream/latency.js'
import { mannWhitney, twoProportion } from './stats.js'

/**
 * Significance for a look taken while a step or window runs: looks are taken
 * every second, and z > 3.29 (p < 0.0005 each) keeps a whole window's chance
 * of a false revert small despite the repeated peeking.
 */
export const Z_INTERIM = 3.29
/** Significance for the one look at the end of a hold or window: p < 0.01. */
export const Z_FINAL = 2.33

/** The verify settings the verdict uses (`window` is the release's business, not the verdict's). */
export interface VerifySettings {
  /** How much higher the new color's error rate may be, as a difference of ratios (0.01 = 1 percentage point). */
  maxErrorRateIncrease: number
  /** How much slower the new color may be, as a ratio (0.2: old latencies times 1.2). */
  maxLatencyIncrease: number
  /** The least latency increase, ms, that may count as slower, whatever the ratio: below it a difference is noise (a busy host, a GC). */
  latencyFloor: number
  /** Requests (or latency samples) a side needs before a test runs on it. */
  minRequests: number
  /**
   * With an old side short of `minRequests` there is no rate to compare
   * with: the new color may then fail up to this share (the guard's
   * maxErrorRate) before it counts as worse. Unset: 0, any error beyond the margin.
   */
  absoluteErrorRate?: number
}

/** A color's counts over a window: the differences between two moments. */
export interface ColorSample {
  requests: number
  errors: number
  latency: LatencyHistogram
}

/** What a sample is read from: a ColorStats, or the fleet's sum of one. */
export interface SampleSource {
  readonly requests: number
  readonly errors: number
  readonly latency: LatencyHistogram | undefined
}

export type TestOutcome = 'pass' | 'fail' | 'inconclusive'

export interface ServiceVerdict {
  /** fail: some test is significant; pass: a test ran and none is; inconclusive: no test could run. */
  outcome: TestOutcome
  reasons: string[]
  errors: {
    new: { requests: number, errors: number, rate: number | null }
    old: { requests: number, errors: number, rate: number | null }
    margin: number
    z: number | null
    p: number | null
    outcome: TestOutcome
  }
  latency: {
    new: { samples: number, p50Ms: number | null, p99Ms: number | null }
    old: { samples: number, p50Ms: number | null, p99Ms: number | null }
    margin: number
    u: number | null
    z: number | null
    p: number | null
    outcome: TestOutcome
  }
}

/** The counts now, to subtract later (`sampleSince`). */
export function sampleOf (stats: SampleSource): ColorSample {
  return { requests: stats.requests, errors: stats.errors, latency: stats.latency?.copy() ?? new LatencyHistogram() }
}

/** What happened since `start` (a counter that went down started again: counted as 0, never negative). */
export function sampleSince (stats: SampleSource, start: ColorSample): ColorSample {
  const requests = Math.max(0, stats.requests - start.requests)
  const errors = Math.min(requests, Math.max(0, stats.errors - start.errors))
  const latency = stats.latency === undefined ? new LatencyHistogram() : LatencyHistogram.diff(stats.latency, start.latency)
  return { requests, errors, latency }
}

/**
 * Judges the new color's window against the old color's. `final` is the look
 * at the end of a hold or of the verify window (Z_FINAL); every other look is
 * interim (Z_INTERIM). The error test needs `minRequests` on the new side; an
 * old side short of it is taken as a 0% error rate known exactly. The latency
 * test needs `minRequests` samples on both sides.
 */
export function judge (newS: ColorSample, oldS: ColorSample, verify: VerifySettings, final: boolean): ServiceVerdict {
  const zLimit = final ? Z_FINAL : Z_INTERIM
  const reasons: string[] = []
  const errors = judgeErrors(newS, oldS, verify, zLimit, reasons)
  const latency = judgeLatency(newS.latency, oldS.latency, verify, zLimit, reasons)
  const outcomes = [errors.outcome, latency.outcome]
  const outcome: TestOutcome = outcomes.includes('fail') ? 'fail' : outcomes.includes('pass') ? 'pass' : 'inconclusive'
  return { outcome, reasons, errors, latency }
}

function judgeErrors (newS: ColorSample, oldS: ColorSample, verify: VerifySettings, zLimit: number, reasons: string[]): ServiceVerdict['errors'] {
  const need = Math.max(1, verify.minRequests)
  const oldShort = oldS.requests < need
  // No old rate to compare with: against the absolute ceiling, when it is the larger margin.
  const margin = oldShort ? Math.max(verify.maxErrorRateIncrease, verify.absoluteErrorRate ?? 0) : verify.maxErrorRateIncrease
  const side = (s: ColorSample): ServiceVerdict['errors']['new'] =>
    ({ requests: s.requests, errors: s.errors, rate: s.requests > 0 ? s.errors / s.requests : null })
  const out: ServiceVerdict['errors'] = { new: side(newS), old: side(oldS), margin, z: null, p: null, outcome: 'inconclusive' }
  if (newS.requests < need) {
    reasons.push(`error rate: too few requests on the new color to judge (${newS.requests} < ${need})`)
    return out
  }
  const { z, p } = oldShort
    ? twoProportion(newS.errors, newS.requests, 0, Infinity, margin)
    : twoProportion(newS.errors, newS.requests, oldS.errors, oldS.requests, margin)
  out.z = finite(z)
  out.p = finite(p)
  out.outcome = z > zLimit ? 'fail' : 'pass'
  const rateNew = newS.errors / newS.requests
  const rateOld = oldShort ? 0 : oldS.errors / oldS.requests
  const against = oldShort
    ? `0% (the old color had ${oldS.requests} requests, under ${need}: compared with none failing, and ${pct(margin)} allowed)`
    : `${pct(rateOld)} (${oldS.errors}/${oldS.requests})`
  const verdict = out.outcome === 'fail'
    ? `significantly more than ${pp(margin)} allowed (z=${num(z)} > ${zLimit}, p=${pValue(p)})`
    : `not significantly more than ${pp(margin)} allowed (z=${num(z)} <= ${zLimit}, p=${pValue(p)})`
  reasons.push(`error rate ${pct(rateNew)} (${newS.errors}/${newS.requests}) vs ${against}: ${signed(rateNew - rateOld)}, ${verdict}`)
  return out
}

function judgeLatency (newH: LatencyHistogram, oldH: LatencyHistogram, verify: VerifySettings, zLimit: number, reasons: string[]): ServiceVerdict['latency'] {
  const margin = verify.maxLatencyIncrease
  const side = (h: LatencyHistogram): ServiceVerdict['latency']['new'] =>
    ({ samples: h.total, p50Ms: finite(round3(h.quantile(0.5))), p99Ms: finite(round3(h.quantile(0.99))) })
  const out: ServiceVerdict['latency'] = { new: side(newH), old: side(oldH), margin, u: null, z: null, p: null, outcome: 'inconclusive' }
  const need = Math.max(1, verify.minRequests)
  if (newH.total < need || oldH.total < need) {
    reasons.push(`latency: too few samples to judge (new ${newH.total}, old ${oldH.total}; ${need} needed on each)`)
    return out
  }
  // The margin in whole 5% buckets: the ratio's, or more where the old median is so small that the ratio is under the floor.
  const oldMedian = oldH.quantile(0.5)
  const floorShift = verify.latencyFloor > 0 && oldMedian > 0 ? Math.ceil(Math.log((oldMedian + verify.latencyFloor) / oldMedian) / Math.log(LATENCY_RATIO)) : 0
  const shift = Math.max(shiftFor(margin), floorShift)
  const { u, z, p } = mannWhitney(newH, oldH, shift)
  out.u = finite(u)
  out.z = finite(z)
  out.p = finite(p)
  out.outcome = z > zLimit ? 'fail' : 'pass'
  const figures = `latency p50 ${ms(out.new.p50Ms)} vs ${ms(out.old.p50Ms)}, p99 ${ms(out.new.p99Ms)} vs ${ms(out.old.p99Ms)} (${newH.total} vs ${oldH.total} samples)`
  // The margin as applied: a whole number of 5% buckets (20% is 4: 21.6%).
  const allowed = shift === floorShift && floorShift > shiftFor(margin) ? `old +${ms(verify.latencyFloor)} (the floor; +${Math.round(margin * 100)}% is less)` : `old +${Math.round(margin * 100)}%`
  const verdict = out.outcome === 'fail'
    ? `new significantly slower than ${allowed} (Mann-Whitney z=${num(z)} > ${zLimit}, p=${pValue(p)})`
    : `new not significantly slower than ${allowed} (Mann-Whitney z=${num(z)} <= ${zLimit}, p=${pValue(p)})`
  reasons.push(`${figures}: ${verdict}`)
  return out
}

/** JSON has no NaN or Infinity: a figure that is not a finite number is null. */
function finite (x: number): number | null {
  return Number.isFinite(x) ? x : null
}

function round3 (x: number): number {
  return Math.round(x * 1000) / 1000
}

function num (x: number): string {
  return Number.isFinite(x) ? x.toFixed(2) : String(x)
}

function pct (ratio: number): string {
  return `${(ratio * 100).toFixed(1)}%`
}

function pp (ratio: number): string {
  return `${(ratio * 100).toFixed(1)} pp`
}

function signed (ratio: number): string {
  return `${ratio >= 0 ? '+' : ''}${(ratio * 100).toFixed(1)} pp`
}

function ms (x: number | null): string {
  if (x === null) return '-'
  return x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(x < 10 ? 2 : 1)} ms`
}

/** Small p-values in exponent form: "0.00002" and "2.0e-5" say the same, the second survives p = 1e-30. */
function pValue (p: number): string {
  if (p >= 0.001) return p.toFixed(3)
  return p.toExponential(1)
}
