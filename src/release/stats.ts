// The two one-sided tests a release's verdict stands on (error rates, latency ranks),
// with their margins, over the latency histograms the request path keeps.

import { LATENCY_BUCKETS, type LatencyHistogram } from '../upstream/latency.js'

/**
 * The standard normal CDF, Phi(z), as 0.5 * erfc(-z / sqrt 2) with the
 * Chebyshev fit of erfc from Numerical Recipes (2nd ed., 6.2, `erfcc`):
 * relative error under 1.2e-7 everywhere, tails included, so a p-value of
 * 1e-20 is still right to 7 digits (Abramowitz-Stegun 7.1.26 has an absolute
 * error of 1.5e-7, which swamps p below 1e-6). Phi(-inf) = 0, Phi(inf) = 1.
 */
export function normalCdf (z: number): number {
  return 0.5 * erfc(-z / Math.SQRT2)
}

function erfc (x: number): number {
  const a = Math.abs(x)
  const t = 1 / (1 + 0.5 * a)
  const r = t * Math.exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
  return x >= 0 ? r : 2 - r
}

export interface TestResult {
  /** Large and positive: the new color is worse. */
  z: number
  /** One-sided: 1 - Phi(z). */
  p: number
}

/**
 * One-sided test of H0: pNew - pOld <= margin (Wald, unpooled):
 * z = (pNew - pOld - margin) / sqrt(pNew(1-pNew)/nNew + pOld(1-pOld)/nOld).
 * `nNew` must be positive; `nOld` too, or Infinity (compare with a fixed pOld = 0).
 *
 * When that standard error is 0 (every rate 0 or 1), each rate is taken as
 * (errors + 0.5) / (n + 1) for the error only (Anscombe's half-count): z stays
 * finite and keeps its sign and weight. 0/500 vs 0/500 with margin 0.01 gives
 * z = -5 (pass); 500/500 vs 0/500 gives z near 500 (fail) -- rather than a
 * 0/0 or an infinite z that no JSON can carry.
 */
export function twoProportion (errNew: number, nNew: number, errOld: number, nOld: number, margin: number): TestResult {
  const pNew = errNew / nNew
  const pOld = nOld === Infinity ? 0 : errOld / nOld
  let variance = pNew * (1 - pNew) / nNew + pOld * (1 - pOld) / nOld
  if (!(variance > 0)) {
    const aNew = (errNew + 0.5) / (nNew + 1)
    const aOld = nOld === Infinity ? 0 : (errOld + 0.5) / (nOld + 1)
    variance = aNew * (1 - aNew) / nNew + (nOld === Infinity ? 0 : aOld * (1 - aOld) / nOld)
  }
  const z = (pNew - pOld - margin) / Math.sqrt(variance)
  return { z, p: normalCdf(-z) }
}

export interface RankTestResult extends TestResult {
  /** Mann-Whitney U of the new sample: pairs (new, old shifted) where new is slower, ties counting half. */
  u: number
  nNew: number
  nOld: number
}

/**
 * Mann-Whitney U on binned latencies, one-sided: is the new color slower than
 * the old one's latencies shifted up `shiftBuckets` buckets (each old value
 * times 1.05^shift: the latency margin, see `shiftFor`)? Values in one bucket
 * are ties and get their midrank; the variance has the tie correction:
 * nNew nOld / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))). No continuity
 * correction: with binned data and hundreds of samples it only makes the test
 * timid. O(buckets) whatever the sample sizes. With no variance (both empty,
 * or everything in one bucket) z = 0, p = 0.5.
 */
export function mannWhitney (newHist: LatencyHistogram, oldHist: LatencyHistogram, shiftBuckets: number): RankTestResult {
  const nNew = newHist.total
  const nOld = oldHist.total
  const n = nNew + nOld
  const shift = Math.round(shiftBuckets)
  // Pooled positions k: new bucket k meets old bucket k - shift.
  const from = Math.min(0, shift)
  const to = Math.max(LATENCY_BUCKETS, LATENCY_BUCKETS + shift)
  let below = 0
  let rankSum = 0
  let ties = 0
  for (let k = from; k < to; k++) {
    const a = k >= 0 && k < LATENCY_BUCKETS ? newHist.counts[k] : 0
    const j = k - shift
    const b = j >= 0 && j < LATENCY_BUCKETS ? oldHist.counts[j] : 0
    const t = a + b
    if (t === 0) continue
    rankSum += a * (below + (t + 1) / 2)
    // (t^3 - t) / (n (n - 1)) one factor at a time, so it stays exact far past 2^53 / t^3.
    if (t > 1) ties += (t / n) * ((t - 1) / (n - 1)) * (t + 1)
    below += t
  }
  const u = rankSum - nNew * (nNew + 1) / 2
  const variance = n > 1 ? nNew * nOld / 12 * ((n + 1) - ties) : 0
  const z = variance > 0 ? (u - nNew * nOld / 2) / Math.sqrt(variance) : 0
  return { u, z, p: normalCdf(-z), nNew, nOld }
}
