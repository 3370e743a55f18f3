// The numbers a release's verdict stands on: a log-bucket latency histogram cheap enough for
// the request path, and the two one-sided tests (error rates, latency ranks) with their margins.

/** Each bucket is 5% wider than the one below, so a quantile read off a bucket is within 2.5% of the truth. */
export const LATENCY_RATIO = 1.05
/** Values below this count in the first bucket: sub-0.1 ms differences say nothing about a backend. */
export const LATENCY_MIN_MS = 0.1
/** Values above this count in the last bucket (a backend this slow has timed out somewhere anyway). */
export const LATENCY_MAX_MS = 120_000
const LOG_RATIO = Math.log(LATENCY_RATIO)
const INV_LOG_RATIO = 1 / LOG_RATIO
/** 287: the last bucket's upper edge is the first at or above LATENCY_MAX_MS. */
export const LATENCY_BUCKETS = Math.ceil(Math.log(LATENCY_MAX_MS / LATENCY_MIN_MS) * INV_LOG_RATIO)

/** The bucket a latency falls in, clamped to the ends (NaN and negatives count as the smallest). */
export function bucketOf (ms: number): number {
  const i = Math.floor(Math.log(ms / LATENCY_MIN_MS) * INV_LOG_RATIO)
  // `!(i > 0)` also catches NaN and -Infinity (ms <= 0).
  return !(i > 0) ? 0 : i >= LATENCY_BUCKETS ? LATENCY_BUCKETS - 1 : i
}

/** A bucket's geometric middle: every value in it is within 2.5% of this. */
export function bucketMidMs (i: number): number {
  return LATENCY_MIN_MS * Math.pow(LATENCY_RATIO, i + 0.5)
}

/** How many buckets up multiplying by (1 + ratio) moves a value: the latency margin as the rank test applies it. */
export function shiftFor (ratio: number): number {
  return ratio > -1 ? Math.round(Math.log(1 + ratio) * INV_LOG_RATIO) : 0
}

/**
 * Counts of latencies per log bucket. `add` is a log, a floor and one array
 * increment: no allocation, so it can sit on the request path while a
 * release runs. The counts only grow; a window is the `diff` of two copies.
 */
export class LatencyHistogram {
  readonly counts: number[]
  total = 0

  constructor (counts?: readonly number[]) {
    this.counts = new Array<number>(LATENCY_BUCKETS).fill(0)
    if (counts !== undefined) this.set(counts)
  }

  add (ms: number): void {
    this.counts[bucketOf(ms)]++
    this.total++
  }

  /** Replaces the counts (a worker's report summed by the primary); missing entries are 0. */
  set (counts: readonly number[]): void {
    let total = 0
    for (let i = 0; i < LATENCY_BUCKETS; i++) total += this.counts[i] = counts[i] ?? 0
    this.total = total
  }

  copy (): LatencyHistogram {
    return new LatencyHistogram(this.counts)
  }

  /** Adds another histogram's counts to these. */
  merge (other: LatencyHistogram): this {
    for (let i = 0; i < LATENCY_BUCKETS; i++) this.counts[i] += other.counts[i]
    this.total += other.total
    return this
  }

  /**
   * What was counted between `before` and `now`. A bucket that shrank means
   * the counts started again (sampling was switched off and on): it gives 0,
   * not a negative count.
   */
  static diff (now: LatencyHistogram, before: LatencyHistogram | undefined): LatencyHistogram {
    const out = new LatencyHistogram()
    let total = 0
    for (let i = 0; i < LATENCY_BUCKETS; i++) total += out.counts[i] = Math.max(0, now.counts[i] - (before?.counts[i] ?? 0))
    out.total = total
    return out
  }

  /** The `q` quantile (0..1) as its bucket's middle; NaN when empty. */
  quantile (q: number): number {
    if (this.total === 0) return NaN
    const rank = Math.max(1, Math.ceil(Math.min(1, Math.max(0, q)) * this.total))
    let seen = 0
    for (let i = 0; i < LATENCY_BUCKETS; i++) {
      seen += this.counts[i]
      if (seen >= rank) return bucketMidMs(i)
    }
    return bucketMidMs(LATENCY_BUCKETS - 1)
  }

  /** The non-empty buckets as [index, count, index, count, ...]: most are empty, and this travels in replica records. */
  toSparse (): number[] {
    const out: number[] = []
    for (let i = 0; i < LATENCY_BUCKETS; i++) if (this.counts[i] !== 0) out.push(i, this.counts[i])
    return out
  }

  /** Adds sparse counts ([index, count, ...]); entries that are not whole in-range numbers are ignored (they came from another process). */
  addSparse (sparse: readonly number[]): void {
    for (let k = 0; k + 1 < sparse.length; k += 2) {
      const i = sparse[k]
      const n = sparse[k + 1]
      if (!Number.isInteger(i) || i < 0 || i >= LATENCY_BUCKETS || !Number.isFinite(n) || n <= 0) continue
      this.counts[i] += n
      this.total += n
    }
  }
}

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
