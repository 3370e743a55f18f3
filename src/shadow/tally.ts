// Shadow comparison counts: per service, one bounded tally per comparison
// (live color, idle color, idle targets), judged against learnt noise on read.
//
// Pairs are kept grouped by their set of places, not judged once and for all:
// a place learnt as noise after a pair was counted stops counting in the view
// (and the gate) retroactively. Only the metric, a counter, keeps the
// judgement made when the pair completed.

import type { DropReason, Difference, ShadowBook, ShadowResult, ShadowTally, ShadowView, TallyData } from './types.js'

/** Distinct difference sets kept (the matched set `[]` always has room besides); more are counted as `overflow`. */
export const MAX_PAIR_SETS = 256
/** Places with a kept example. */
export const MAX_EXAMPLES = 256
/** Places learnt as noise. */
export const MAX_NOISE = 256
/** Places listed in a view's `top`. */
const TOP = 10

const DROP_REASONS: readonly DropReason[] = ['busy', 'no_target', 'failed', 'body_too_large']

function noDrops (): Record<DropReason, number> {
  return { busy: 0, no_target: 0, failed: 0, body_too_large: 0 }
}

/** A set's key: its sorted places, one per line (a place never holds a newline: JSON paths escape it). */
function keyOf (wheres: readonly string[]): string {
  return wheres.join('\n')
}

/** Sorted distinct places of a pair's differences. */
function placesOf (diffs: readonly Difference[]): string[] {
  if (diffs.length === 0) return []
  const set = new Set<string>()
  for (const d of diffs) set.add(d.where)
  return [...set].sort()
}

/** The bounded maps a tally and a merge both fill. */
class Counts {
  sent = 0
  readonly drops = noDrops()
  bodyNotCompared = 0
  probes = 0
  overflow = 0
  readonly pairs = new Map<string, { wheres: string[], count: number }>()
  readonly examples = new Map<string, { live: string, idle: string }>()
  readonly noise = new Map<string, number>()

  addPairs (wheres: string[], count: number): void {
    const key = keyOf(wheres)
    const kept = this.pairs.get(key)
    if (kept !== undefined) kept.count += count
    else if (wheres.length === 0 || this.pairs.size - (this.pairs.has('') ? 1 : 0) < MAX_PAIR_SETS) this.pairs.set(key, { wheres, count })
    else this.overflow += count
  }

  addExample (where: string, live: string, idle: string): void {
    if (!this.examples.has(where) && this.examples.size < MAX_EXAMPLES) this.examples.set(where, { live, idle })
  }

  addNoise (where: string, count: number): void {
    const prior = this.noise.get(where)
    if (prior !== undefined) this.noise.set(where, prior + count)
    else if (this.noise.size < MAX_NOISE) this.noise.set(where, count)
  }

  data (): TallyData {
    return {
      sent: this.sent,
      drops: { ...this.drops },
      bodyNotCompared: this.bodyNotCompared,
      probes: this.probes,
      pairs: [...this.pairs.values()].map((p) => ({ wheres: [...p.wheres], count: p.count })),
      overflow: this.overflow,
      examples: [...this.examples].map(([where, e]) => ({ where, live: e.live, idle: e.idle })),
      noise: [...this.noise].map(([where, count]) => ({ where, count })),
    }
  }
}

/**
 * A place is noise only while the idle color differs there little more often
 * than two answers of the live color do: at most NOISE_RATIO times the share
 * of probes that saw it differ, or NOISE_SLACK above it. Without the share, one
 * probe that caught the live color's rare flake (a 500 between two 200s) made
 * `status` noise for good, and an idle color that failed every request passed
 * the gate; so did any place a client can make two live answers differ in.
 */
const NOISE_RATIO = 2
/** The place compare.ts ends a cut list of differences with. */
const CUT = '...'

const NOISE_SLACK = 0.02

/** The noise known now, with the shares it is judged by. */
class Noise {
  private readonly learnt: ReadonlyMap<string, number>
  private readonly probes: number
  private readonly pairs: Iterable<{ wheres: readonly string[], count: number }>
  /** Pairs compared: the kept sets' and the overflow. */
  private total: number
  /** Pairs per noise place, counted on first use (a match or an unknown place never needs them). */
  private perPlace: Map<string, number> | undefined = undefined

  constructor (learnt: ReadonlyMap<string, number>, probes: number, pairs: Iterable<{ wheres: readonly string[], count: number }>, overflow: number) {
    this.learnt = learnt
    this.probes = probes
    this.pairs = pairs
    this.total = overflow
  }

  has (where: string): boolean {
    // `...` stands for places past a pair's 50 that nobody saw: never noise, or a change
    // behind 50 noisy places (an answer full of live counters) hid behind the probes' own cut.
    if (where === CUT) return false
    const seen = this.learnt.get(where)
    if (seen === undefined) return false
    if (this.perPlace === undefined) {
      this.perPlace = new Map()
      for (const p of this.pairs) {
        this.total += p.count
        for (const w of p.wheres) if (this.learnt.has(w)) this.perPlace.set(w, (this.perPlace.get(w) ?? 0) + p.count)
      }
    }
    const inPairs = (this.perPlace.get(where) ?? 0) / Math.max(this.total, 1)
    const inProbes = seen / Math.max(this.probes, seen)
    return inPairs <= inProbes * NOISE_RATIO || inPairs <= inProbes + NOISE_SLACK
  }
}

/** How a set of places is judged against the noise known now. */
function judge (wheres: readonly string[], noise: Noise): 'matched' | 'noise' | 'differed' {
  if (wheres.length === 0) return 'matched'
  for (const w of wheres) if (!noise.has(w)) return 'differed'
  return 'noise'
}

class Tally implements ShadowTally {
  private readonly counts = new Counts()

  /** `out`: the service's copies in flight, shared by its comparisons (see createShadowBook). */
  constructor (private readonly onResult: (result: ShadowResult) => void, private readonly out: { n: number }) {}

  get inflight (): number {
    return this.out.n
  }

  set inflight (n: number) {
    this.out.n = n
  }

  get copies (): number {
    return this.counts.sent
  }

  sent (): void {
    this.counts.sent++
    this.onResult('sent')
  }

  dropped (reason: DropReason): void {
    this.counts.drops[reason]++
    this.onResult('dropped')
  }

  pair (diffs: readonly Difference[], bodyCompared: boolean): void {
    const c = this.counts
    const wheres = placesOf(diffs)
    c.addPairs(wheres, 1)
    for (const d of diffs) c.addExample(d.where, d.live, d.other)
    if (!bodyCompared) c.bodyNotCompared++
    this.onResult(judge(wheres, new Noise(c.noise, c.probes, c.pairs.values(), c.overflow)))
  }

  noise (diffs: readonly Difference[]): void {
    const c = this.counts
    c.probes++
    for (const where of placesOf(diffs)) c.addNoise(where, 1)
  }

  view (): ShadowView {
    return viewOf(this.counts.data())
  }

  data (): TallyData {
    return this.counts.data()
  }
}

/**
 * This process's tallies, one current comparison per service. `onResult`
 * hears each copy sent or dropped and each pair as judged when it completed
 * (the `switchyard_shadow_total` counter).
 */
export function createShadowBook (onResult: (service: string, result: ShadowResult) => void): ShadowBook {
  const current = new Map<string, { key: string, tally: Tally }>()
  // Copies in flight per service, whichever comparison sent them: maxConcurrent bounds them all.
  // (Per comparison, each flip let another maxConcurrent go out while the last ones were still out.)
  const inflight = new Map<string, { n: number }>()
  return {
    tallyFor (service, key) {
      const kept = current.get(service)
      if (kept !== undefined && kept.key === key) return kept.tally
      // Another comparison (a flip, new idle targets): the old counts were about another version.
      let out = inflight.get(service)
      if (out === undefined) inflight.set(service, out = { n: 0 })
      const tally = new Tally((result) => onResult(service, result), out)
      current.set(service, { key, tally })
      return tally
    },
    data (service) {
      return current.get(service)?.tally.data()
    },
    services () {
      return [...current.keys()]
    },
  }
}

/** Sums several processes' tallies (workers of one gateway), bounded like one tally. */
export function mergeTallyData (list: readonly TallyData[]): TallyData {
  const c = new Counts()
  for (const d of list) {
    c.sent += d.sent
    for (const r of DROP_REASONS) c.drops[r] += d.drops[r] ?? 0
    c.bodyNotCompared += d.bodyNotCompared
    c.probes += d.probes
    c.overflow += d.overflow
    // Keys are rebuilt from sorted places, so two processes' sets meet whatever order each sent them in.
    for (const p of d.pairs) c.addPairs([...p.wheres].sort(), p.count)
    for (const e of d.examples) c.addExample(e.where, e.live, e.idle)
    for (const n of d.noise) c.addNoise(n.where, n.count)
  }
  return c.data()
}

/**
 * The view of a tally's data: every kept set re-judged against the noise
 * learnt so far (all places noise, each differing in the pairs not much more
 * often than between two live answers: `noise`; any other place: `differed`;
 * none: `matched`), sets past the bound counted as differed, and `top`
 * ranking the places that are not noise by the pairs counted as differing
 * that contain them.
 */
export function viewOf (data: TallyData): ShadowView {
  const noise = new Noise(new Map(data.noise.map((n) => [n.where, n.count])), data.probes, data.pairs, data.overflow)
  let matched = 0
  let differed = data.overflow
  let noisy = 0
  const counts = new Map<string, number>()
  for (const p of data.pairs) {
    const j = judge(p.wheres, noise)
    if (j === 'matched') matched += p.count
    else if (j === 'noise') noisy += p.count
    else {
      differed += p.count
      for (const w of p.wheres) if (!noise.has(w)) counts.set(w, (counts.get(w) ?? 0) + p.count)
    }
  }
  const examples = new Map(data.examples.map((e) => [e.where, e]))
  const top = [...counts]
    .sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
    .slice(0, TOP)
    .map(([where, count]) => {
      const e = examples.get(where)
      // An example is missing only when more than MAX_EXAMPLES places were seen before this one.
      return { where, count, example: e === undefined ? { live: '(not kept)', idle: '(not kept)' } : { live: e.live, idle: e.idle } }
    })
  const drops = noDrops()
  let dropped = 0
  for (const r of DROP_REASONS) {
    drops[r] = data.drops[r] ?? 0
    dropped += drops[r]
  }
  return {
    sent: data.sent,
    compared: matched + differed + noisy,
    matched,
    differed,
    dropped,
    noise: noisy,
    top,
    drops,
    bodyNotCompared: data.bodyNotCompared,
    noiseWhere: [...data.noise].sort((x, y) => y.count - x.count || (x.where < y.where ? -1 : x.where > y.where ? 1 : 0)).map((n) => ({ where: n.where, count: n.count })),
    probes: data.probes,
  }
}
