// Generation-pinned call chains: the W3C baggage entry naming the generation
// that routed a chain's first hop, and the snapshots kept so its later hops
// route the same way after a flip.

/** What a kept snapshot is to this file (routing/snapshot.ts Snapshot). */
export interface Retirable {
  readonly generation: number
  /** Pinning's settings in force with it; undefined: pinning off. */
  readonly pinning: { readonly keepMs: number } | undefined
  /** Generations below it pin nothing. */
  readonly pinFloor: number
}

/** The baggage key the gateway reads and writes. */
export const BAGGAGE_KEY = 'switchyard-gen'

/**
 * W3C Baggage's limits (8192 bytes, 64 list-members): a header past them is
 * not one every hop of a chain propagates, so an entry in it pins nothing.
 */
export const MAX_BAGGAGE_BYTES = 8192
export const MAX_BAGGAGE_MEMBERS = 64

/** At most this many retired snapshots are kept, however short their `keep` (a flip storm keeps the newest). */
export const MAX_KEPT = 64

/**
 * What became of a request carrying `switchyard-gen` (the counter's
 * `result`): routed by the generation it named (`pinned`); that generation
 * unknown here or no longer kept (`expired`); the entry from a peer outside
 * `trust` (`untrusted`); an entry from a trusted peer that is not exactly
 * one `switchyard-gen=DIGITS` in a baggage within the limits (`invalid`); or
 * a kept generation that could not serve it (`unavailable`: no healthy target
 * on the color it chose, or no such service then). Every one but `pinned` is
 * routed by the current snapshot.
 */
export type PinResult = 'pinned' | 'expired' | 'untrusted' | 'invalid' | 'unavailable'
export const PIN_RESULTS: readonly PinResult[] = ['pinned', 'expired', 'untrusted', 'invalid', 'unavailable']

/** Every result at 0 (a process's counts, and the workers' sums, start here). */
export function noPinCounts (): Record<PinResult, number> {
  return { pinned: 0, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }
}

/** What baggageGeneration returns for an entry of ours that is not valid (a generation is never negative). */
export const INVALID = -1

/**
 * The generation a request's baggage (its lines joined with `,`) names: a
 * safe integer, INVALID, or undefined when it has no `switchyard-gen` entry.
 * Tolerant of every other member, well-formed or not; strict about ours:
 * exactly one, the value all digits (at most 15), no properties. One scan
 * by index, nothing split: hops inside a chain all carry it.
 */
export function baggageGeneration (baggage: string): number | undefined {
  let at = nextOurs(baggage, 0)
  if (at === -1) return undefined
  if (baggage.length > MAX_BAGGAGE_BYTES || countMembers(baggage) > MAX_BAGGAGE_MEMBERS) return INVALID
  let found: number | undefined
  while (at !== -1) {
    const comma = baggage.indexOf(',', at)
    const end = comma === -1 ? baggage.length : comma
    let v = skipOws(baggage, at + BAGGAGE_KEY.length, end)
    // Ours with no value (`switchyard-gen`, `switchyard-gen;p=1`) is ours, and not valid; so is a second one.
    if (found !== undefined || baggage.charCodeAt(v) !== 61 /* = */) return INVALID
    v = skipOws(baggage, v + 1, end)
    let last = end
    while (last > v && isOws(baggage.charCodeAt(last - 1))) last--
    if (last === v || last - v > 15) return INVALID
    let n = 0
    for (let i = v; i < last; i++) {
      const c = baggage.charCodeAt(i) - 48
      // Digits only: a property (`;`), a sign, a point or anything else makes it invalid.
      if (c < 0 || c > 9) return INVALID
      n = n * 10 + c
    }
    found = n
    at = comma === -1 ? -1 : nextOurs(baggage, comma + 1)
  }
  return found
}

/**
 * The baggage a forwarded request carries: the client's members in their
 * order, less any `switchyard-gen` (a client's own never goes on), then
 * `member` (`switchyard-gen=N` of the generation that routed it).
 */
export function outgoingBaggage (incoming: string | undefined, member: string): string {
  if (incoming === undefined) return member
  let at = nextOurs(incoming, 0)
  let kept = incoming
  if (at !== -1) {
    kept = ''
    let from = 0
    while (at !== -1) {
      // Ours runs from just after the comma before it to the comma after it, which goes too.
      kept += incoming.slice(from, memberStart(incoming, at))
      const comma = incoming.indexOf(',', at)
      from = comma === -1 ? incoming.length : comma + 1
      at = comma === -1 ? -1 : nextOurs(incoming, from)
    }
    kept += incoming.slice(from)
  }
  // Empty members (a trailing comma, an empty line) carry nothing.
  let end = kept.length
  while (end > 0 && (kept.charCodeAt(end - 1) === 44 /* , */ || isOws(kept.charCodeAt(end - 1)))) end--
  let begin = 0
  while (begin < end && isOws(kept.charCodeAt(begin))) begin++
  return begin === end ? member : `${kept.slice(begin, end)},${member}`
}

function isOws (c: number): boolean {
  return c === 32 || c === 9
}

function skipOws (s: string, i: number, end: number): number {
  while (i < end && isOws(s.charCodeAt(i))) i++
  return i
}

/**
 * Where the next list-member keyed `switchyard-gen` at or after `from`
 * starts (its key's first character), or -1. A key is one when only OWS
 * stands between it and the start or a comma before, and between it and
 * `=`, `;`, a comma or the end after: inside another member's value or
 * properties, or as part of a longer key, it is not ours.
 */
function nextOurs (s: string, from: number): number {
  let at = s.indexOf(BAGGAGE_KEY, from)
  while (at !== -1) {
    let before = at - 1
    while (before >= 0 && isOws(s.charCodeAt(before))) before--
    const after = skipOws(s, at + BAGGAGE_KEY.length, s.length)
    const next = after === s.length ? 44 : s.charCodeAt(after)
    if ((before < 0 || s.charCodeAt(before) === 44) && (next === 61 || next === 59 || next === 44)) return at
    at = s.indexOf(BAGGAGE_KEY, at + 1)
  }
  return -1
}

/** The start of the member whose key starts at `at`: just after the comma before it, or 0. */
function memberStart (s: string, at: number): number {
  let i = at - 1
  while (i >= 0 && isOws(s.charCodeAt(i))) i--
  return i + 1
}

function countMembers (s: string): number {
  let n = 1
  for (let i = s.indexOf(','); i !== -1; i = s.indexOf(',', i + 1)) n++
  return n
}

/** A retired snapshot, kept for the chains pinned to its generation. */
interface Kept<S> {
  readonly snapshot: S
  /** Epoch ms it stopped being current. */
  readonly retiredAt: number
  /** Requests it routed since. */
  pinned: number
}

/** A kept generation as /v1/state and the dashboard show it. */
export interface KeptGeneration {
  generation: number
  /** ISO times: when it stopped being current, and when it stops being kept (under the `keep` in force now). */
  retiredAt: string
  expiresAt: string
  /** Requests routed by it since it stopped being current. */
  pinned: number
}

/** What the resolve step asks of the kept snapshots (the routing view hands it this, never the ways to change them). */
export interface PinLookup<S> {
  /** The snapshot of `generation` if it is kept (retired less than `keepMs` ago) and at or above the floor. */
  find: (generation: number, keepMs: number, now: number) => S | undefined
  /** Counts one request carrying our entry by what became of it; `generation`: the kept one that routed it (`pinned`). */
  count: (result: PinResult, generation?: number) => void
}

/**
 * The snapshots that stopped being current, by generation, while `keep`
 * lasts, and the counts of requests that asked for one. Owned by the
 * Switcher, which retires each snapshot it replaces.
 */
export class KeptSnapshots<S extends Retirable> implements PinLookup<S> {
  readonly counts: Record<PinResult, number> = noPinCounts()
  private readonly byGeneration = new Map<number, Kept<S>>()
  private timer: NodeJS.Timeout | undefined
  /** Told when kept snapshots were dropped, so the targets only they used can go. */
  private readonly dropped: () => void

  constructor (dropped: () => void = () => {}) {
    this.dropped = dropped
  }

  /**
   * `next` replaces `prev` as current at `now`. With pinning on, `prev` is
   * kept under its generation (a snapshot rebuilt at the same generation
   * replaces nothing); with it off, nothing is.
   */
  retire (prev: S, next: S, now: number): void {
    const settings = next.pinning
    // Generations below it pin nothing (a rollback or revert went back from the colors they routed to): they go here, so find() need not ask.
    const floor = next.pinFloor
    // Counted, not compared by size: one kept snapshot can go as another comes.
    let gone = 0
    if (settings === undefined) {
      gone = this.byGeneration.size
      this.byGeneration.clear()
    } else {
      // The current generation is never looked up here (the current snapshot answers it), nor one below the floor.
      for (const g of this.byGeneration.keys()) if ((g === next.generation || g < floor) && this.byGeneration.delete(g)) gone++
      if (prev.generation !== next.generation && prev.generation >= floor) this.byGeneration.set(prev.generation, { snapshot: prev, retiredAt: now, pinned: 0 })
      gone += this.expire(settings.keepMs, now)
      // Map order is insertion order: the first are the oldest retired.
      for (const g of this.byGeneration.keys()) {
        if (this.byGeneration.size <= MAX_KEPT) break
        this.byGeneration.delete(g)
        gone++
      }
      this.schedule(settings.keepMs)
    }
    if (gone > 0) this.dropped()
  }

  find (generation: number, keepMs: number, now: number): S | undefined {
    const kept = this.byGeneration.get(generation)
    if (kept === undefined || now - kept.retiredAt >= keepMs) return undefined
    return kept.snapshot
  }

  count (result: PinResult, generation?: number): void {
    this.counts[result]++
    if (generation !== undefined) {
      const kept = this.byGeneration.get(generation)
      if (kept !== undefined) kept.pinned++
    }
  }

  /** The kept snapshots, newest first (the registry keeps their targets open, and probes them, while they are). */
  snapshots (): S[] {
    return [...this.byGeneration.values()].reverse().map((k) => k.snapshot)
  }

  /** Kept generations, oldest first, with the epoch ms each stopped being current: what a process started later rebuilds the same set from. */
  retired (): Array<{ generation: number, retiredAt: number }> {
    return [...this.byGeneration.values()].map((k) => ({ generation: k.snapshot.generation, retiredAt: k.retiredAt }))
  }

  /** Kept generations, newest first, with this process's pinned counts; `keepMs`: the `keep` in force. */
  list (keepMs: number): KeptGeneration[] {
    return [...this.byGeneration.values()].reverse().map((k) => ({
      generation: k.snapshot.generation,
      retiredAt: new Date(k.retiredAt).toISOString(),
      expiresAt: new Date(k.retiredAt + keepMs).toISOString(),
      pinned: k.pinned,
    }))
  }

  /** Pinned counts by kept generation (what a worker reports). */
  pinnedByGeneration (): Record<number, number> {
    const out: Record<number, number> = {}
    for (const [g, k] of this.byGeneration) out[g] = k.pinned
    return out
  }

  /** Stops the expiry timer (shutdown). */
  stop (): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }

  /** Drops what `keepMs` no longer covers at `now`; returns how many went. */
  private expire (keepMs: number, now: number): number {
    let gone = 0
    for (const [g, k] of this.byGeneration) {
      if (now - k.retiredAt >= keepMs) {
        this.byGeneration.delete(g)
        gone++
      }
    }
    return gone
  }

  /** One timer, for the oldest kept snapshot's end: expired ones free their targets without waiting for the next change. */
  private schedule (keepMs: number): void {
    clearTimeout(this.timer)
    this.timer = undefined
    const oldest = this.byGeneration.values().next()
    if (oldest.done === true) return
    const wait = Math.max(0, oldest.value.retiredAt + keepMs - Date.now())
    this.timer = setTimeout(() => {
      const gone = this.expire(keepMs, Date.now())
      this.schedule(keepMs)
      if (gone > 0) this.dropped()
    }, Math.min(wait + 1, 2 ** 31 - 1))
    this.timer.unref()
  }
}
