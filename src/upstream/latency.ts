// A log-bucket latency histogram cheap enough for the request path: what a release's
// verdict ranks, kept per service color while a release runs, summed across workers and replicas.

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

