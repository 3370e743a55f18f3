// Shadow comparison counts: per service, one bounded tally per comparison
// (live color, idle color, idle targets), judged against learnt noise on read.
//
// Pairs are kept grouped by their endpoint and set of places, not judged once
// and for all: a place learnt as noise after a pair was counted stops counting
// in the view (and the gate) retroactively. Only the metric, a counter, keeps
// the judgement made when the pair completed.
//
// Noise is learnt per endpoint (the request's method and path shape, see
// endpointOf in mirror.ts), as Diffy does: `$.value` random on GET /random says
// nothing about `$.value` on GET /users/{id}, where a change is a regression.

import type { DropReason, Difference, ShadowBook, ShadowResult, ShadowTally, ShadowView, TallyData } from './types.js'

/** Distinct difference sets kept over all endpoints (each endpoint's matched set `[]` always has room besides); more are counted as `overflow`. */
export const MAX_PAIR_SETS = 256
/** Places with a kept example, over all endpoints (an endpoint and a place: one). */
export const MAX_EXAMPLES = 256
/** Places learnt as noise, over all endpoints (an endpoint and a place: one). */
export const MAX_NOISE = 256
/**
 * Endpoints told apart in one comparison. Past them, new endpoints share one
 * bucket, OTHER_ENDPOINT, whose noise is learnt and judged as one endpoint's:
 * a service with endless path shapes stays bounded, and its rare endpoints
 * are still compared.
 */
export const MAX_ENDPOINTS = 64
/** The bucket of the endpoints past MAX_ENDPOINTS (never a real endpoint: a method cannot hold `(`). */
export const OTHER_ENDPOINT = '(other endpoints)'
/** The endpoint of pairs and probes fed without one (a tally fed by hand): all of them are one endpoint. */
const NO_ENDPOINT = ''
/** Places listed in a view's `top`. */
const TOP = 10
/** Endpoints listed with each place of `top`. */
const TOP_ENDPOINTS = 3

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

function byName (x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0
}

/**
 * A place is noise only while the idle color differs there little more often
 * than two answers of the live color do: at most NOISE_RATIO times the share
 * of probes that saw it differ, or NOISE_SLACK above it. Without the share, one
 * probe that caught the live color's rare flake (a 500 between two 200s) made
 * `status` noise for good, and an idle color that failed every request passed
 * the gate; so did any place a client can make two live answers differ in.
 * Both shares are the endpoint's own: its pairs, its probes.
 */
const NOISE_RATIO = 2
/** The place compare.ts ends a cut list of differences with. */
const CUT = '...'

const NOISE_SLACK = 0.02

/** One endpoint's counts: the shares its noise is judged by, its kept sets and its noise places. */
class EndpointCounts {
  /** Pairs compared here: the kept sets' and the overflowed ones. */
  pairs = 0
  /** Noise probes made here, whatever they saw. */
  probes = 0
  readonly sets = new Map<string, { wheres: string[], count: number }>()
  readonly noise = new Map<string, number>()
  /** One example per place, the first seen here (a place's example on another endpoint may be noise). */
  readonly examples = new Map<string, { live: string, idle: string }>()
  /** Pairs per noise place, counted on first use since the last change (a match or an unknown place never needs them). */
  private perPlace: Map<string, number> | undefined = undefined

  /** Counts changed: the shares are counted again when next needed. */
  changed (): void {
    this.perPlace = undefined
  }

  /** Whether `where` is noise here now. */
  isNoise (where: string): boolean {
    // `...` stands for places past a pair's 50 that nobody saw: never noise, or a change
    // behind 50 noisy places (an answer full of live counters) hid behind the probes' own cut.
    if (where === CUT) return false
    const seen = this.noise.get(where)
    if (seen === undefined) return false
    if (this.perPlace === undefined) {
      this.perPlace = new Map()
      for (const p of this.sets.values()) {
        for (const w of p.wheres) if (this.noise.has(w)) this.perPlace.set(w, (this.perPlace.get(w) ?? 0) + p.count)
      }
    }
    const inPairs = (this.perPlace.get(where) ?? 0) / Math.max(this.pairs, 1)
    const inProbes = seen / Math.max(this.probes, seen)
    return inPairs <= inProbes * NOISE_RATIO || inPairs <= inProbes + NOISE_SLACK
  }

  /** How a set of places is judged against the noise known here now. */
  judge (wheres: readonly string[]): 'matched' | 'noise' | 'differed' {
    if (wheres.length === 0) return 'matched'
    for (const w of wheres) if (!this.isNoise(w)) return 'differed'
    return 'noise'
  }
}

/** The bounded maps a tally and a merge both fill. */
class Counts {
  sent = 0
  readonly drops = noDrops()
  bodyNotCompared = 0
  probes = 0
  overflow = 0
  /** At most MAX_ENDPOINTS named, plus OTHER_ENDPOINT. */
  readonly endpoints = new Map<string, EndpointCounts>()
  /** Kept sets that are not a match, over all endpoints. */
  private sets = 0
  /** Kept examples, over all endpoints. */
  private exampleCount = 0
  /** Noise places, over all endpoints. */
  private noisePlaces = 0

  /** The counts of `name`, or of OTHER_ENDPOINT when MAX_ENDPOINTS others came first. */
  endpoint (name: string): EndpointCounts {
    let e = this.endpoints.get(name)
    if (e !== undefined) return e
    if (name !== OTHER_ENDPOINT && this.endpoints.size - (this.endpoints.has(OTHER_ENDPOINT) ? 1 : 0) >= MAX_ENDPOINTS) return this.endpoint(OTHER_ENDPOINT)
    this.endpoints.set(name, e = new EndpointCounts())
    return e
  }

  /** `count` pairs of one set, already counted in `e.pairs`: kept, or overflow when the sets are at their bound. */
  addSet (e: EndpointCounts, wheres: string[], count: number): void {
    const key = keyOf(wheres)
    const kept = e.sets.get(key)
    if (kept !== undefined) kept.count += count
    else if (wheres.length === 0) e.sets.set(key, { wheres, count })
    else if (this.sets < MAX_PAIR_SETS) {
      e.sets.set(key, { wheres, count })
      this.sets++
    } else this.overflow += count
    e.changed()
  }

  addExample (e: EndpointCounts, where: string, live: string, idle: string): void {
    if (!e.examples.has(where) && this.exampleCount < MAX_EXAMPLES) {
      e.examples.set(where, { live, idle })
      this.exampleCount++
    }
  }

  addNoise (e: EndpointCounts, where: string, count: number): void {
    const prior = e.noise.get(where)
    if (prior !== undefined) e.noise.set(where, prior + count)
    else if (this.noisePlaces < MAX_NOISE) {
      e.noise.set(where, count)
      this.noisePlaces++
    }
    e.changed()
  }

  data (): TallyData {
    const endpoints: TallyData['endpoints'] = []
    const pairs: TallyData['pairs'] = []
    const noise: TallyData['noise'] = []
    const examples: TallyData['examples'] = []
    for (const [endpoint, e] of this.endpoints) {
      endpoints.push({ endpoint, pairs: e.pairs, probes: e.probes })
      for (const p of e.sets.values()) pairs.push({ endpoint, wheres: [...p.wheres], count: p.count })
      for (const [where, count] of e.noise) noise.push({ endpoint, where, count })
      for (const [where, x] of e.examples) examples.push({ endpoint, where, live: x.live, idle: x.idle })
    }
    return {
      sent: this.sent,
      drops: { ...this.drops },
      bodyNotCompared: this.bodyNotCompared,
      probes: this.probes,
      endpoints,
      pairs,
      overflow: this.overflow,
      examples,
      noise,
    }
  }

  /** Adds a tally's data (a worker's): the sum is the data of one tally fed what each was fed, within the bounds. */
  add (d: TallyData): void {
    this.sent += d.sent
    for (const r of DROP_REASONS) this.drops[r] += d.drops[r] ?? 0
    this.bodyNotCompared += d.bodyNotCompared
    this.probes += d.probes
    this.overflow += d.overflow
    for (const x of d.endpoints) {
      const e = this.endpoint(x.endpoint)
      e.pairs += x.pairs
      e.probes += x.probes
    }
    // Keys are rebuilt from sorted places, so two processes' sets meet whatever order each sent them in.
    for (const p of d.pairs) this.addSet(this.endpoint(p.endpoint), [...p.wheres].sort(), p.count)
    for (const x of d.examples) this.addExample(this.endpoint(x.endpoint), x.where, x.live, x.idle)
    for (const n of d.noise) this.addNoise(this.endpoint(n.endpoint), n.where, n.count)
  }

  /**
   * Every kept set re-judged against the noise learnt so far on its own
   * endpoint (all places noise there, each differing in its pairs not much
   * more often than between two live answers of it: `noise`; any other place:
   * `differed`; none: `matched`), sets past the bound counted as differed, and
   * `top` ranking the places that are not noise by the pairs counted as
   * differing that contain them, over all endpoints.
   */
  view (): ShadowView {
    let matched = 0
    let differed = this.overflow
    let noisy = 0
    const counts = new Map<string, { count: number, by: Map<string, number> }>()
    for (const [endpoint, e] of this.endpoints) {
      for (const p of e.sets.values()) {
        const j = e.judge(p.wheres)
        if (j === 'matched') matched += p.count
        else if (j === 'noise') noisy += p.count
        else {
          differed += p.count
          for (const w of p.wheres) {
            if (e.isNoise(w)) continue
            let c = counts.get(w)
            if (c === undefined) counts.set(w, c = { count: 0, by: new Map() })
            c.count += p.count
            c.by.set(endpoint, (c.by.get(endpoint) ?? 0) + p.count)
          }
        }
      }
    }
    const top = [...counts]
      .sort((x, y) => y[1].count - x[1].count || byName(x[0], y[0]))
      .slice(0, TOP)
      .map(([where, { count, by }]) => {
        const ranked = [...by].sort((x, y) => y[1] - x[1] || byName(x[0], y[0]))
        // The example of the endpoint where the place counts most that kept one (never one where it is noise).
        let e: { live: string, idle: string } | undefined
        for (const [endpoint] of ranked) if ((e = this.endpoints.get(endpoint)?.examples.get(where)) !== undefined) break
        return {
          where,
          count,
          // An example is missing only when more than MAX_EXAMPLES places were seen before this one.
          example: e === undefined ? { live: '(not kept)', idle: '(not kept)' } : { live: e.live, idle: e.idle },
          endpoints: ranked.slice(0, TOP_ENDPOINTS).map(([endpoint, n]) => ({ endpoint, count: n })),
        }
      })
    const drops = noDrops()
    let dropped = 0
    for (const r of DROP_REASONS) {
      drops[r] = this.drops[r]
      dropped += drops[r]
    }
    const noiseWhere: ShadowView['noiseWhere'] = []
    for (const [endpoint, e] of this.endpoints) for (const [where, count] of e.noise) noiseWhere.push({ where, endpoint, count })
    noiseWhere.sort((x, y) => y.count - x.count || byName(x.where, y.where) || byName(x.endpoint, y.endpoint))
    return {
      sent: this.sent,
      compared: matched + differed + noisy,
      matched,
      differed,
      dropped,
      noise: noisy,
      top,
      drops,
      bodyNotCompared: this.bodyNotCompared,
      noiseWhere,
      probes: this.probes,
    }
  }
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

  pair (diffs: readonly Difference[], bodyCompared: boolean, endpoint = NO_ENDPOINT): void {
    const c = this.counts
    const wheres = placesOf(diffs)
    const e = c.endpoint(endpoint)
    e.pairs++
    c.addSet(e, wheres, 1)
    for (const d of diffs) c.addExample(e, d.where, d.live, d.other)
    if (!bodyCompared) c.bodyNotCompared++
    this.onResult(e.judge(wheres))
  }

  noise (diffs: readonly Difference[], endpoint = NO_ENDPOINT): void {
    const c = this.counts
    const e = c.endpoint(endpoint)
    c.probes++
    e.probes++
    for (const where of placesOf(diffs)) c.addNoise(e, where, 1)
  }

  view (): ShadowView {
    return this.counts.view()
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
  }
}

/** Sums several processes' tallies (workers of one gateway), bounded like one tally. */
export function mergeTallyData (list: readonly TallyData[]): TallyData {
  const c = new Counts()
  for (const d of list) c.add(d)
  return c.data()
}

/** The view of a tally's data (see Counts.view): what the primary reads of its workers' merged data. */
export function viewOf (data: TallyData): ShadowView {
  const c = new Counts()
  c.add(data)
  return c.view()
}
