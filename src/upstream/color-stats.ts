// Per service color runtime numbers that outlive snapshots: exact in-flight
// and WebSocket counts, request outcomes for the guard, metric counters and a
// one-minute history (and, while a release runs, a latency histogram). Only
// integer arithmetic happens here on the request path, plus one log when sampling.

import type { Color } from '../config/schema.js'
import { LatencyHistogram } from '../upstream/latency.js'

/** Something watching a color's outcomes (the post-flip guard). */
export interface OutcomeWatcher {
  onOutcome (): void
}

/** A drain in progress: told when the color's last request or WebSocket ends. */
export interface EmptyWatcher {
  onEmpty (): void
}

/** An open HTTP exchange or WebSocket that a drain deadline or shutdown can end. */
export interface Closable {
  close (): void
}

/**
 * Closes each of `open` at a random moment within `spreadMs`, so clients do
 * not all reconnect at once; returns the (unref'd) timers, to cancel them.
 */
export function closeSpread (open: Iterable<Closable>, spreadMs: number): NodeJS.Timeout[] {
  const timers: NodeJS.Timeout[] = []
  for (const x of open) {
    const t = setTimeout(() => x.close(), Math.random() * spreadMs)
    t.unref()
    timers.push(t)
  }
  return timers
}

/** An HTTP exchange, linked into its color's list of open ones while it runs. */
export interface OpenExchange extends Closable {
  prevOpen: OpenExchange | undefined
  nextOpen: OpenExchange | undefined
}

/**
 * The open exchanges of a color, as an intrusive doubly-linked list: O(1)
 * add and delete with no allocation. (A Set did the same job at 14k adds and
 * deletes a second and made every young-generation GC copy ~2.5 MB of
 * request objects: pauses of 8–15 ms instead of 0.5.)
 */
export class OpenList implements Iterable<OpenExchange> {
  private head: OpenExchange | undefined
  size = 0

  add (x: OpenExchange): void {
    x.prevOpen = undefined
    x.nextOpen = this.head
    if (this.head !== undefined) this.head.prevOpen = x
    this.head = x
    this.size++
  }

  delete (x: OpenExchange): void {
    if (x.prevOpen !== undefined) x.prevOpen.nextOpen = x.nextOpen
    else if (this.head === x) this.head = x.nextOpen
    else return
    if (x.nextOpen !== undefined) x.nextOpen.prevOpen = x.prevOpen
    x.prevOpen = x.nextOpen = undefined
    this.size--
  }

  * [Symbol.iterator] (): Iterator<OpenExchange> {
    // Collected first: closing one may unlink it.
    const all: OpenExchange[] = []
    for (let x = this.head; x !== undefined; x = x.nextOpen) all.push(x)
    yield * all
  }
}

/**
 * A request's span while tracing is on (tracing/tracer.ts); the resolve
 * step makes one per request it routes, and none at all with tracing off.
 */
export interface RequestTrace {
  /**
   * The `traceparent` the forwarded request gets, naming this span: set only
   * when the gateway started the trace (the client sent none); else
   * undefined, and the client's goes upstream as sent.
   */
  readonly traceparent: string | undefined
  /** The request ended (`stats`: the color that served it): the span is recorded, when sampled. */
  end: (stats: ColorStats, done: Finished) => void
}

/** What the access log and metrics read off a finished request. */
export interface Finished {
  readonly method: string
  readonly path: string
  /** 0 when the client went away before any answer. */
  readonly status: number
  readonly bytes: number
  readonly durationMs: number
  /** Time to the upstream's response headers; -1 when there were none. */
  readonly upstreamMs: number
  readonly requestId: string
  readonly target: string
  /** The request's span (tracing on); undefined with tracing off, or when its trace is not recorded. */
  readonly trace: RequestTrace | undefined
}

/** Worker processes, seen from the primary. */
export interface RemoteColors {
  /** Ends every request and WebSocket of a color in every worker, spread over `spreadMs`. */
  closeAll: (service: string, color: Color, spreadMs: number) => void
}

export interface Observers {
  accessLog: ((stats: ColorStats, x: Finished) => void) | undefined
  remote?: RemoteColors
  /** Keep the per-request metric counters (metrics.enabled). */
  metrics: boolean
}

/** Upper bounds (seconds) of switchyard_request_duration_seconds. */
export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export type UpstreamErrorKind = 'connect_failed' | 'timeout' | 'reset' | 'no_healthy_upstream'

/** A color's counts, as workers report them and the primary sums them. */
export interface Totals {
  inflight: number
  websockets: number
  requests: number
  errors: number
  codes: number[]
  durationBuckets: number[]
  durationSum: number
  durationCount: number
  upstreamErrors: Record<UpstreamErrorKind, number>
  /** Latency histogram counts (LatencyHistogram.counts), present while the color is sampled. */
  latency?: number[]
}

const HISTORY = 60

export class ColorStats {
  readonly service: string
  readonly color: Color
  inflight = 0
  websockets = 0
  requests = 0
  /** 5xx from upstream plus errors the gateway answered itself. */
  errors = 0
  watcher: OutcomeWatcher | undefined
  drain: EmptyWatcher | undefined
  /** Set when worker processes hold this color's connections (the counts here are their sums). */
  get remote (): RemoteColors | undefined {
    return this.observers.remote
  }
  /** What is open on this color right now, so a deadline or shutdown can end it. */
  readonly openHttp = new OpenList()
  readonly openWs = new Set<Closable>()
  /** Answered requests by status class 1xx..5xx (index 0..4). */
  readonly codes = [0, 0, 0, 0, 0]
  /** Durations: a count per bucket (not cumulative; the last is +Inf), their sum and count. */
  readonly durationBuckets = new Array<number>(DURATION_BUCKETS.length + 1).fill(0)
  durationSum = 0
  durationCount = 0
  readonly upstreamErrors: Record<UpstreamErrorKind, number> = { connect_failed: 0, timeout: 0, reset: 0, no_healthy_upstream: 0 }
  /** Requests and errors per second over the last minute, oldest first. */
  readonly history = { requests: new Array<number>(HISTORY).fill(0), errors: new Array<number>(HISTORY).fill(0) }
  /**
   * Upstream latencies of answered requests while a release samples this
   * color; undefined otherwise, so the request path pays one property check.
   */
  latency: LatencyHistogram | undefined
  private sampled = { requests: 0, errors: 0 }
  private readonly observers: Observers

  constructor (service: string, color: Color, observers: Observers) {
    this.service = service
    this.color = color
    this.observers = observers
  }

  begin (x: OpenExchange): void {
    this.inflight++
    this.openHttp.add(x)
  }

  /** A request is over: it leaves the counts, and its numbers go to metrics and the access log. */
  end (x: OpenExchange, done: Finished): void {
    this.inflight--
    this.openHttp.delete(x)
    this.finish(done)
    if (this.drain !== undefined && this.inflight === 0 && this.websockets === 0) this.drain.onEmpty()
  }

  private finish (done: Finished): void {
    if (this.observers.metrics && done.status !== 0) {
      this.codes[Math.min(4, Math.max(0, ((done.status / 100) | 0) - 1))]++
      const seconds = done.durationMs / 1000
      let i = 0
      while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]) i++
      this.durationBuckets[i]++
      this.durationSum += seconds
      this.durationCount++
    }
    // Not behind metrics.enabled: a release's verdict needs it either way. Time to the response head is the backend's latency, not the client's reading speed.
    if (this.latency !== undefined && done.status !== 0 && done.upstreamMs >= 0) this.latency.add(done.upstreamMs)
    if (this.observers.accessLog !== undefined) this.observers.accessLog(this, done)
    if (done.trace !== undefined) done.trace.end(this, done)
  }

  /** Latency sampling on (an existing histogram keeps counting: windows are differences) or off (dropped). */
  setSampling (on: boolean): void {
    if (!on) this.latency = undefined
    else if (this.latency === undefined) this.latency = new LatencyHistogram()
  }

  wsOpen (x: Closable): void {
    this.websockets++
    this.openWs.add(x)
  }

  wsClose (x: Closable): void {
    this.websockets--
    this.openWs.delete(x)
    if (this.drain !== undefined && this.inflight === 0 && this.websockets === 0) this.drain.onEmpty()
  }

  get isEmpty (): boolean {
    return this.inflight === 0 && this.websockets === 0
  }

  /** Counts one answered request for the guard (by its status, or a gateway error). */
  record (isError: boolean): void {
    this.requests++
    if (isError) this.errors++
    if (this.watcher !== undefined) this.watcher.onOutcome()
  }

  /** The gateway answered 503 itself: no healthy target in this color (`trace`: the request's span, tracing on). */
  rejected (method: string, path: string, requestId: string, bytes: number, durationMs: number, trace?: RequestTrace): void {
    this.record(true)
    this.upstreamError('no_healthy_upstream')
    this.finish({ method, path, status: 503, bytes, durationMs, upstreamMs: -1, requestId, target: '', trace })
  }

  upstreamError (kind: UpstreamErrorKind): void {
    this.upstreamErrors[kind]++
  }

  /**
   * Primary process: the sums of every worker's latest report replace the
   * counts, then the guard and a drain hear of it as if requests had ended here.
   */
  setTotals (t: Totals): void {
    this.inflight = t.inflight
    this.websockets = t.websockets
    this.requests = t.requests
    this.errors = t.errors
    for (let i = 0; i < 5; i++) this.codes[i] = t.codes[i]
    for (let i = 0; i < this.durationBuckets.length; i++) this.durationBuckets[i] = t.durationBuckets[i]
    this.durationSum = t.durationSum
    this.durationCount = t.durationCount
    Object.assign(this.upstreamErrors, t.upstreamErrors)
    // Mirrored like the rest: the primary serves nothing itself, so its histogram is the workers' sum, and goes when none samples.
    if (t.latency === undefined) this.latency = undefined
    else (this.latency ??= new LatencyHistogram()).set(t.latency)
    if (this.watcher !== undefined) this.watcher.onOutcome()
    if (this.drain !== undefined && this.isEmpty) this.drain.onEmpty()
  }

  /** What a worker reports of this color. */
  totals (): Totals {
    const t: Totals = {
      inflight: this.inflight,
      websockets: this.websockets,
      requests: this.requests,
      errors: this.errors,
      codes: [...this.codes],
      durationBuckets: [...this.durationBuckets],
      durationSum: this.durationSum,
      durationCount: this.durationCount,
      upstreamErrors: { ...this.upstreamErrors },
    }
    if (this.latency !== undefined) t.latency = [...this.latency.counts]
    return t
  }

  sample (): void {
    this.history.requests.shift()
    this.history.requests.push(this.requests - this.sampled.requests)
    this.history.errors.shift()
    this.history.errors.push(this.errors - this.sampled.errors)
    this.sampled = { requests: this.requests, errors: this.errors }
  }
}
