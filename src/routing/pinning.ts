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
 * exactly one, the value all digits (at most 15), no properties.
 */
export function baggageGeneration (baggage: string): number | undefined {
  // Most baggage carries no entry of ours: one search, nothing split.
  if (!baggage.includes(BAGGAGE_KEY)) return undefined
  if (baggage.length > MAX_BAGGAGE_BYTES) return INVALID
  const members = baggage.split(',')
  if (members.length > MAX_BAGGAGE_MEMBERS) return INVALID
  let found: number | undefined
  for (const m of members) {
    if (memberKey(m) !== BAGGAGE_KEY) continue
    const eq = m.indexOf('=')
    // Ours with no value (`switchyard-gen`, `switchyard-gen;p=1`) is ours, and not valid.
    if (found !== undefined || eq === -1 || m.lastIndexOf(';', eq) !== -1) return INVALID
    const value = m.slice(eq + 1).trim()
    if (!/^[0-9]{1,15}$/.test(value)) return INVALID
    found = Number(value)
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
  let kept = incoming
  if (incoming.includes(BAGGAGE_KEY)) {
    kept = incoming.split(',').filter((m) => memberKey(m) !== BAGGAGE_KEY).join(',')
  }
  // Empty members (a trailing comma, an empty line) carry nothing.
  kept = kept.trim()
  while (kept.endsWith(',')) kept = kept.slice(0, -1).trimEnd()
  return kept === '' ? member : `${kept},${member}`
}

/** A list-member's key: what comes before its first `=` or `;` (a member with no value has properties only), without OWS. */
function memberKey (member: string): string {
  let end = member.length
  for (let i = 0; i < end; i++) {
    const c = member.charCodeAt(i)
    if (c === 61 /* = */ || c === 59 /* ; */) end = i
  }
  return member.slice(0, end).trim()
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
