// Sends finished spans to an OpenTelemetry collector over OTLP/HTTP, JSON
// encoded, in batches. Nothing here is on a request's way: a span is queued
// (or dropped when the queue is full) and the request goes on.

import http from 'node:http'
import https from 'node:https'
import { log } from '../log.js'
import type { Span, SpanSink } from './tracer.js'

/** What the exporter tunes; DEFAULTS below are the OpenTelemetry SDK's batch processor's, with a smaller queue. */
export interface ExporterOptions {
  /** Spans per POST; a full batch is sent at once, without waiting for the interval. */
  batch: number
  /** Spans waiting at most; beyond, new ones are dropped (and counted). */
  queue: number
  /** How often what is queued is sent, ms. */
  intervalMs: number
  /** Longest wait for the collector's answer, ms; past it the batch is lost. */
  timeoutMs: number
}

export const EXPORTER_DEFAULTS: ExporterOptions = { batch: 512, queue: 2048, intervalMs: 1000, timeoutMs: 5000 }

/** Spans as counted since start (switchyard_spans_total). */
export interface ExportCounts {
  /** Accepted by the collector (a 2xx answer). */
  exported: number
  /** Not queued: the queue was full (a collector slower than the traffic). */
  dropped: number
  /** Sent and lost: the collector failed, answered other than 2xx, or took longer than the timeout. */
  failed: number
}

/** How often at most a loss is logged: a collector that is down is one line a minute, not one a batch. */
const LOSS_LOG_MS = 60_000

/** The results of switchyard_spans_total, as ExportCounts names them. */
export const SPAN_RESULTS = ['exported', 'dropped', 'failed'] as const

/** `a` plus `b`, result by result (a worker pool's sums). */
export function addExportCounts (a: ExportCounts, b: ExportCounts): ExportCounts {
  return { exported: a.exported + b.exported, dropped: a.dropped + b.dropped, failed: a.failed + b.failed }
}

/** OTLP's SPAN_KIND_SERVER and STATUS_CODE_ERROR (opentelemetry-proto trace.proto). */
const SPAN_KIND_SERVER = 2
const STATUS_CODE_ERROR = 2

/** Nanoseconds since the epoch, as OTLP/JSON wants them (a decimal string: beyond what a double holds exactly). */
export function unixNano (ms: number): string {
  let whole = Math.floor(ms)
  let micro = Math.round((ms - whole) * 1000)
  if (micro === 1000) {
    whole++
    micro = 0
  }
  return `${whole}${String(micro).padStart(3, '0')}000`
}

type Attribute = { key: string, value: { stringValue: string } | { intValue: string } | { boolValue: boolean } }

/** The span as OTLP/JSON encodes it (opentelemetry-proto, JSON mapping: ids hex, 64-bit integers as strings). */
export function encodeSpan (s: Span): Record<string, unknown> {
  const query = s.target.indexOf('?')
  const attributes: Attribute[] = [
    { key: 'http.request.method', value: { stringValue: s.method } },
    { key: 'url.path', value: { stringValue: query === -1 ? s.target : s.target.slice(0, query) } },
    { key: 'switchyard.service', value: { stringValue: s.service } },
    { key: 'switchyard.color', value: { stringValue: s.color } },
    { key: 'switchyard.generation', value: { intValue: String(s.generation) } },
    { key: 'switchyard.pinned', value: { boolValue: s.pinned } },
  ]
  if (s.status !== 0) attributes.push({ key: 'http.response.status_code', value: { intValue: String(s.status) } })
  // OpenTelemetry's HTTP server convention: a 5xx is the server's error, a 4xx the client's (status left unset).
  const status = s.status === 0
    ? { code: STATUS_CODE_ERROR, message: 'the client went away before an answer' }
    : s.status >= 500 ? { code: STATUS_CODE_ERROR } : {}
  const span: Record<string, unknown> = {
    traceId: s.traceId,
    spanId: s.spanId,
    name: `${s.method} ${s.service}`,
    kind: SPAN_KIND_SERVER,
    startTimeUnixNano: unixNano(s.startMs),
    endTimeUnixNano: unixNano(s.endMs),
    attributes,
    status,
  }
  if (s.parentSpanId !== undefined) span.parentSpanId = s.parentSpanId
  return span
}

/** Batches spans and POSTs them to `url` (an OTLP/HTTP traces endpoint, `/v1/traces` included). */
export class OtlpExporter implements SpanSink {
  readonly counts: ExportCounts = { exported: 0, dropped: 0, failed: 0 }
  private readonly url: URL
  private readonly resource: Record<string, unknown>
  private readonly opts: ExporterOptions
  private readonly agent: http.Agent
  private queue: Span[] = []
  /** The POST under way (one at a time: a slow collector fills the queue, it is not sent more). */
  private sending: Promise<void> | undefined
  /** A full batch asked to be sent on the next turn of the loop. */
  private soon = false
  private readonly timer: NodeJS.Timeout
  private lastLossLog = -Infinity
  private stopped = false

  constructor (url: string, serviceName: string, opts: Partial<ExporterOptions> = {}) {
    this.url = new URL(url)
    this.opts = { ...EXPORTER_DEFAULTS, ...opts }
    this.resource = { attributes: [{ key: 'service.name', value: { stringValue: serviceName } }] }
    this.agent = this.url.protocol === 'https:' ? new https.Agent({ keepAlive: true, maxSockets: 1 }) : new http.Agent({ keepAlive: true, maxSockets: 1 })
    this.timer = setInterval(() => { this.send() }, this.opts.intervalMs)
    this.timer.unref()
  }

  /** Spans waiting to be sent. */
  get queued (): number {
    return this.queue.length
  }

  /** Queues a finished span; on a request's way, so it only counts and pushes. */
  add (span: Span): void {
    if (this.queue.length >= this.opts.queue || this.stopped) {
      this.counts.dropped++
      this.lost(this.stopped ? 'a span ended after the exporter stopped' : 'the span queue is full (the collector is slower than the traffic)')
      return
    }
    this.queue.push(span)
    if (this.queue.length >= this.opts.batch && !this.soon) {
      this.soon = true
      setImmediate(() => {
        this.soon = false
        this.send()
      })
    }
  }

  /** Sends the next batch, unless one is under way (its end sends the next when a full batch waits). */
  private send (): void {
    if (this.sending !== undefined || this.queue.length === 0) return
    const batch = this.queue.length <= this.opts.batch ? this.queue : this.queue.slice(0, this.opts.batch)
    this.queue = batch === this.queue ? [] : this.queue.slice(this.opts.batch)
    this.sending = this.post(batch).then(() => {
      this.sending = undefined
      if (this.queue.length >= this.opts.batch || (this.stopped && this.queue.length > 0)) this.send()
    })
  }

  /** One POST of `batch`; it never rejects: a failure is counted and (at most once a minute) logged. */
  private async post (batch: Span[]): Promise<void> {
    const body = JSON.stringify({ resourceSpans: [{ resource: this.resource, scopeSpans: [{ scope: { name: 'switchyard' }, spans: batch.map(encodeSpan) }] }] })
    const outcome = await new Promise<string | undefined>((resolve) => {
      const lib = this.url.protocol === 'https:' ? https : http
      const req = lib.request(this.url, {
        method: 'POST',
        agent: this.agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      }, (res) => {
        res.resume()
        res.once('end', () => {
          const status = res.statusCode ?? 0
          resolve(status >= 200 && status < 300 ? undefined : `the collector answered ${status}`)
        })
        res.once('error', (err) => { resolve(err.message) })
      })
      const timer = setTimeout(() => {
        req.destroy(new Error(`no answer from the collector within ${this.opts.timeoutMs} ms`))
      }, this.opts.timeoutMs)
      timer.unref()
      req.once('close', () => { clearTimeout(timer) })
      req.once('error', (err) => { resolve(err.message) })
      req.end(body)
    })
    if (outcome === undefined) {
      this.counts.exported += batch.length
    } else {
      this.counts.failed += batch.length
      this.lost(outcome)
    }
  }

  private lost (reason: string): void {
    const now = Date.now()
    if (now - this.lastLossLog < LOSS_LOG_MS) return
    this.lastLossLog = now
    log('warn', 'tracing: spans lost', { collector: this.url.href, reason, ...this.counts })
  }

  /**
   * Sends what is queued, then lets go of the connection. The whole of it
   * is bounded by one timeout (a stop must not wait on a collector batch
   * after batch): what is not sent by then is lost, counted. Spans that end
   * later are dropped.
   */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.timer)
    this.send()
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), this.opts.timeoutMs) })
    while (this.sending !== undefined) {
      if (await Promise.race([this.sending, deadline]) !== 'late') continue
      this.counts.failed += this.queue.length
      this.queue = []
      // Cuts the POST under way: it fails, counted, and sends nothing after it.
      this.agent.destroy()
      await this.sending
    }
    clearTimeout(timer)
    this.agent.destroy()
  }
}
