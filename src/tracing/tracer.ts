// A span per request the gateway routes, with tracing on: its trace context
// (the client's `traceparent`, or a trace the gateway starts) and, when the
// request ends, what became of it, handed to the exporter.

import type { TracingConfig } from '../config/schema.js'
import type { RequestFacts, RequestTracer } from '../proxy/resolve.js'
import type { ColorStats, Finished, RequestTrace } from '../upstream/color-stats.js'
import { formatTraceparent, newSpanId, newTraceId, parseTraceparent, type ParentContext } from './context.js'

/** Where finished spans go (the OTLP exporter; tests may collect them). */
export interface SpanSink {
  add: (span: Span) => void
}

/** Wall-clock milliseconds with sub-millisecond precision (spans of a few microseconds still have a length). */
export function nowMs (): number {
  return performance.timeOrigin + performance.now()
}

/** One request's span: filled in at the start and the end, then queued as it is (no copy). */
export class Span implements RequestTrace {
  readonly traceId: string
  readonly spanId: string
  /** The caller's span; undefined for a trace the gateway started. */
  readonly parentSpanId: string | undefined
  readonly traceparent: string | undefined
  readonly startMs = nowMs()
  endMs = 0
  readonly method: string
  /** The normalized target, query included (the exporter leaves the query out). */
  readonly target: string
  readonly generation: number
  readonly pinned: boolean
  service = ''
  color = ''
  /** The status the client got; 0 when it went away before any answer. */
  status = 0
  private readonly sink: SpanSink

  constructor (sink: SpanSink, traceId: string, parentSpanId: string | undefined, announce: boolean, method: string, target: string, generation: number, pinned: boolean) {
    this.sink = sink
    this.traceId = traceId
    this.spanId = newSpanId()
    this.parentSpanId = parentSpanId
    // Only for a trace the gateway started: the services below join it under this span.
    this.traceparent = announce ? formatTraceparent(traceId, this.spanId, true) : undefined
    this.method = method
    this.target = target
    this.generation = generation
    this.pinned = pinned
  }

  end (stats: ColorStats, done: Finished): void {
    this.endMs = nowMs()
    this.service = stats.service
    this.color = stats.color
    this.status = done.status
    this.sink.add(this)
  }
}

/** A trace the gateway started and did not sample: its `traceparent` (flags 00) still goes upstream, so the services below agree; nothing is recorded. */
class UnsampledTrace implements RequestTrace {
  readonly traceparent: string

  constructor (traceparent: string) {
    this.traceparent = traceparent
  }

  end (): void {}
}

/** The resolve step's tracer (`tracing` on): decides each request's trace context and makes its span. */
export class Tracer implements RequestTracer {
  private readonly sample: number
  private readonly sink: SpanSink

  constructor (settings: Pick<TracingConfig, 'sample'>, sink: SpanSink) {
    this.sample = settings.sample
    this.sink = sink
  }

  /**
   * A valid `traceparent` gives the trace and the parent, and its sampled
   * flag decides (unsampled: no span at all). Without one the gateway starts
   * a trace, sampled by `tracing.sample`, and names it upstream in a
   * `traceparent` of its own; with an invalid one (or several lines) it
   * starts one too, but adds nothing: the client's value goes as sent.
   */
  start (facts: RequestFacts, target: string, generation: number, pinned: boolean): RequestTrace | undefined {
    const value = facts.header('traceparent')
    let parent: ParentContext | undefined
    let carried = true
    if (value !== undefined) parent = parseTraceparent(value)
    else carried = facts.headerLines('traceparent') !== 0
    if (parent !== undefined) {
      return parent.sampled ? new Span(this.sink, parent.traceId, parent.parentId, false, facts.method, target, generation, pinned) : undefined
    }
    const sampled = this.sample >= 1 || Math.random() < this.sample
    if (!sampled) return carried ? undefined : new UnsampledTrace(formatTraceparent(newTraceId(), newSpanId(), false))
    return new Span(this.sink, newTraceId(), undefined, !carried, facts.method, target, generation, pinned)
  }
}
