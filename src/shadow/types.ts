// The shapes shared by shadow traffic's parts: the answers a copy and its live
// original produced, their differences, and the per-service tally the admin
// API, the gate, the metrics and the dashboard read.

import type { ShadowConfig } from '../config/schema.js'
import type { Endpoint } from '../upstream/target-set.js'

/** One answer, as much of it as is compared. */
export interface Answer {
  status: number
  /** Header fields, names lower case, repeated lines joined with ', ' (hop-by-hop ones already left out). */
  headers: ReadonlyMap<string, string>
  /** The decoded body; undefined when it was larger than `maxBody` (then only status and headers are compared). */
  body: Buffer | undefined
}

/** Where two answers differ, with what each said there (short, redacted: never a cookie or credential). */
export interface Difference {
  /**
   * `status`, `header:NAME`, `body` (bytes or a body that is not JSON on one
   * side), `body:type` (JSON on one side only), or a JSON path with array
   * indices written `[*]`, so one field counts once whatever its position:
   * `$.user.name`, `$.items[*].price`, `$.items` (lengths differ), `$` (root).
   */
  where: string
  live: string
  other: string
}

/** Compares two answers, leaving out what the service's `ignore` lists. Built once per settings. */
export interface Comparer {
  compare: (live: Answer, other: Answer) => Difference[]
}

/** Why a copy was not compared. */
export type DropReason =
  /** maxConcurrent copies already in flight. */
  | 'busy'
  /** The idle color (or, for a noise copy, the live one) had no healthy target or no free connection. */
  | 'no_target'
  /** The copy was not answered whole within `timeout`, or its connection failed. */
  | 'failed'
  /** A request body larger than maxBody (unsafe methods only): it cannot be sent again. */
  | 'body_too_large'

/** One service's comparison, as `GET /v1/services/NAME/shadow` answers (SPEC) plus the fields after `top`. */
export interface ShadowView {
  /** Copies sent to the idle color. */
  sent: number
  /** Pairs compared (matched + differed + noise). */
  compared: number
  matched: number
  /** Pairs with at least one difference that is not noise. */
  differed: number
  dropped: number
  /** Pairs whose every difference is noise (also seen between two answers of the live color, on the pair's endpoint). */
  noise: number
  /**
   * Where the counted differences are, over all endpoints, most frequent
   * first (at most 10), with one example each (from the first endpoint
   * listed that kept one), and the endpoints where the place counted (at
   * most 3, most pairs first).
   */
  top: Array<{ where: string, count: number, example: { live: string, idle: string }, endpoints: Array<{ endpoint: string, count: number }> }>
  /** Dropped copies by reason. */
  drops: Record<DropReason, number>
  /** Pairs compared by status and headers only (a body above maxBody). */
  bodyNotCompared: number
  /**
   * Places learnt as noise, each on its endpoint (a place noise on one
   * endpoint is not on another), with how many of the endpoint's noise probes
   * saw it differ. Whether it is noise now is judged by share (tally.ts).
   */
  noiseWhere: Array<{ where: string, endpoint: string, count: number }>
  /** Noise probes made (a request sent twice to the live color). */
  probes: number
}

/**
 * The counts of one comparison (a service, its live and idle colors, the idle
 * targets): a flip or new idle targets start another. Lives outside the
 * routing snapshot (ShadowBook), so a reload or an unrelated change keeps it.
 * Bounded: at most a few hundred distinct places and difference sets are
 * kept, and 64 endpoints told apart, whatever the traffic.
 */
export interface ShadowTally {
  /** Copies in flight now (the mirror keeps it; maxConcurrent is checked against it). */
  inflight: number
  /** Copies made so far (the mirror's `learn` counts against it). */
  readonly copies: number
  sent: () => void
  dropped: (reason: DropReason) => void
  /**
   * A compared pair: its differences (empty: matched); `bodyCompared` false
   * when a body was above maxBody; `endpoint` the request's (endpointOf in
   * mirror.ts), whose noise alone it is judged by. Without one, every pair and
   * probe so fed counts as one endpoint's.
   */
  pair: (diffs: readonly Difference[], bodyCompared: boolean, endpoint?: string) => void
  /** A noise probe: the differences between two answers of the live color to a request of `endpoint`. */
  noise: (diffs: readonly Difference[], endpoint?: string) => void
  view: () => ShadowView
  data: () => TallyData
}

/** The colors a copy may go to, as the mirror sees them (it never learns which is which beyond live and idle). */
export interface CopyTargets {
  pick: () => Endpoint | undefined
}

/** What the routing snapshot hands the mirror for one service with shadow traffic on. */
export interface ShadowPlan {
  service: string
  settings: ShadowConfig
  /** The live color's targets (noise copies) and the idle color's (the copies compared). */
  live: CopyTargets
  idle: CopyTargets
  tally: ShadowTally
  comparer: Comparer
  /** Epoch ms when a session started by the admin API ends; undefined: until stopped. */
  until: number | undefined
}

/**
 * What a tally holds, as plain data: a worker process sends it to the
 * primary, which merges every worker's (mergeTallyData) and reads the view
 * of the sum (viewOf). Bounded like the tally itself.
 */
export interface TallyData {
  sent: number
  drops: Record<DropReason, number>
  bodyNotCompared: number
  probes: number
  /**
   * Per endpoint (at most 64, then `(other endpoints)`): pairs compared there
   * (kept sets and overflow) and noise probes made there, the shares its
   * noise is judged by.
   */
  endpoints: Array<{ endpoint: string, pairs: number, probes: number }>
  /** Compared pairs grouped by their endpoint and set of places (sorted; [] for a match), with a count each. */
  pairs: Array<{ endpoint: string, wheres: string[], count: number }>
  /** Pairs whose places could not be kept (too many distinct sets): counted as differed. */
  overflow: number
  /** One example per endpoint and place, the first seen. */
  examples: Array<{ endpoint: string, where: string, live: string, idle: string }>
  /** Places seen differing between two live answers, per endpoint, with how many of its probes saw each. */
  noise: Array<{ endpoint: string, where: string, count: number }>
}

/**
 * Every service's current comparison in this process. A pair is counted in
 * the metric (`onResult`) as judged when it completes; the view re-judges all
 * pairs against the noise learnt so far (a place learnt as noise later stops
 * counting as a difference), and so does the gate.
 */
export interface ShadowBook {
  /**
   * The tally for comparison `key` of `service` (the snapshot names it by the
   * live color, the idle color and the idle targets): the same object while
   * the key stays, a fresh one when it changes (the old counts are dropped).
   */
  tallyFor: (service: string, key: string) => ShadowTally
}

/** The `result` label of switchyard_shadow_total. */
export type ShadowResult = 'sent' | 'dropped' | 'matched' | 'differed' | 'noise'
