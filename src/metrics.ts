// Every Prometheus metric Switchyard exposes is defined here and nowhere else.
// The request path only bumps plain counters (upstream/color-stats.ts); these
// collectors read them when /metrics is scraped, so metrics cost the hot path nothing more.

import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import { COLORS } from './config/schema.js'
import type { Controller } from './control/controller.js'
import type { PinningReader } from './control/pinning.js'
import type { ShadowReader } from './control/shadow.js'
import { PIN_RESULTS } from './routing/pinning.js'
import { SPAN_RESULTS, type ExportCounts } from './tracing/exporter.js'
import { weightOf } from './routing/snapshot.js'
import { DURATION_BUCKETS, type ColorStats, type UpstreamErrorKind } from './upstream/color-stats.js'
import type { TargetRegistry } from './upstream/registry.js'

const CODE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const
const ERROR_KINDS: readonly UpstreamErrorKind[] = ['connect_failed', 'timeout', 'reset', 'no_healthy_upstream']

interface Deps {
  registry: TargetRegistry
  controller: () => Controller
  /** Shadow traffic's counts (this process's, or its workers' summed); absent when this build copies nothing. */
  shadow?: ShadowReader
  /** Generation pinning's counts (this process's, or its workers' summed); absent when `pinning` is off. */
  pinning?: PinningReader
  /** Span export's counts (this process's exporter, or its workers' summed); absent when `tracing` is off. */
  spans?: () => ExportCounts | undefined
}

/** A counter with one `result` label per name in `results`, read off `counts` at each scrape (absent counts read 0). */
function resultCounter<R extends string> (reg: Registry, name: string, help: string, results: readonly R[], counts: () => Readonly<Record<R, number>> | undefined): void {
  // eslint-disable-next-line no-new -- registered in `reg`, which is what is read
  new Counter({
    name,
    help,
    labelNames: ['result'],
    registers: [reg],
    collect () {
      this.reset()
      const now = counts()
      for (const result of results) this.inc({ result }, now?.[result] ?? 0)
    },
  })
}

/** A histogram whose buckets live in ColorStats; prom-client only formats them. */
function durationHistogram (deps: Deps): { name: string, help: string, type: string, aggregator: string, get: () => Promise<unknown> } {
  const name = 'switchyard_request_duration_seconds'
  const help = 'Time from request headers to the end of the response, per service and color'
  return {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    get: () => {
      const values: Array<{ metricName: string, labels: Record<string, string | number>, value: number }> = []
      for (const s of deps.registry.allColorStats()) {
        const labels = { service: s.service, color: s.color }
        let cumulative = 0
        DURATION_BUCKETS.forEach((le, i) => {
          cumulative += s.durationBuckets[i]
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative })
        })
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: s.durationCount })
        values.push({ metricName: `${name}_sum`, labels, value: s.durationSum })
        values.push({ metricName: `${name}_count`, labels, value: s.durationCount })
      }
      return Promise.resolve({ name, help, type: 'histogram', values, aggregator: 'sum' })
    },
  }
}

/** A gauge with one value per service and color, read off ColorStats at scrape time. */
function colorGauge (reg: Registry, deps: Deps, name: string, help: string, read: (s: ColorStats) => number): void {
  /* eslint-disable-next-line no-new */
  new Gauge({
    name,
    help,
    labelNames: ['service', 'color'],
    registers: [reg],
    collect () {
      this.reset()
      for (const s of deps.registry.allColorStats()) this.set({ service: s.service, color: s.color }, read(s))
    },
  })
}

export function createMetrics (deps: Deps): Registry {
  const reg = new Registry()
  collectDefaultMetrics({ register: reg })

  /* eslint-disable no-new */
  new Counter({
    name: 'switchyard_requests_total',
    help: 'Requests answered, per service, color and status class',
    labelNames: ['service', 'color', 'code'],
    registers: [reg],
    collect () {
      this.reset()
      for (const s of deps.registry.allColorStats()) {
        CODE_CLASSES.forEach((code, i) => { if (s.codes[i] > 0) this.inc({ service: s.service, color: s.color, code }, s.codes[i]) })
      }
    },
  })
  reg.registerMetric(durationHistogram(deps) as never)
  new Counter({
    name: 'switchyard_upstream_errors_total',
    help: 'Failed upstream attempts (retried ones too) and requests with no healthy upstream',
    labelNames: ['service', 'color', 'kind'],
    registers: [reg],
    collect () {
      this.reset()
      for (const s of deps.registry.allColorStats()) {
        for (const kind of ERROR_KINDS) if (s.upstreamErrors[kind] > 0) this.inc({ service: s.service, color: s.color, kind }, s.upstreamErrors[kind])
      }
    },
  })
  colorGauge(reg, deps, 'switchyard_inflight_requests', 'HTTP requests in flight, per service and color', (s) => s.inflight)
  colorGauge(reg, deps, 'switchyard_websockets_open', 'Open WebSockets, per service and color', (s) => s.websockets)
  new Gauge({
    name: 'switchyard_live',
    help: '1 for the live color of a service, else 0',
    labelNames: ['service', 'color'],
    registers: [reg],
    collect () {
      this.reset()
      for (const route of deps.controller().snapshots.current.services.values()) {
        for (const color of COLORS) this.set({ service: route.name, color }, route.live === color ? 1 : 0)
      }
    },
  })
  new Gauge({
    name: 'switchyard_traffic_weight',
    help: 'Percent of a service\'s ordinary traffic (not preview, not smoke) each color gets: a release\'s split, else 100 on live',
    labelNames: ['service', 'color'],
    registers: [reg],
    collect () {
      this.reset()
      for (const route of deps.controller().snapshots.current.services.values()) {
        for (const color of COLORS) this.set({ service: route.name, color }, weightOf(route, color))
      }
    },
  })
  new Counter({
    name: 'switchyard_flips_total',
    help: 'Color changes, per service and trigger (manual, rollback, auto_revert, release)',
    labelNames: ['service', 'trigger'],
    registers: [reg],
    collect () {
      this.reset()
      for (const [service, counts] of deps.controller().flipCounts) {
        for (const [trigger, n] of Object.entries(counts)) this.inc({ service, trigger }, n)
      }
    },
  })
  new Counter({
    name: 'switchyard_releases_total',
    help: 'Releases ended on this gateway, per outcome (done, reverted, aborted, failed)',
    labelNames: ['outcome'],
    registers: [reg],
    collect () {
      this.reset()
      for (const [outcome, n] of Object.entries(deps.controller().releaseOutcomes)) this.inc({ outcome }, n)
    },
  })
  new Gauge({
    name: 'switchyard_target_healthy',
    help: '1 when a target gets traffic (probes pass, not ejected), else 0',
    labelNames: ['service', 'color', 'target'],
    registers: [reg],
    collect () {
      this.reset()
      for (const route of deps.controller().snapshots.current.services.values()) {
        for (const color of COLORS) {
          for (const e of route.colors[color].targets.endpoints) this.set({ service: route.name, color, target: e.target.url }, e.target.healthy ? 1 : 0)
        }
      }
    },
  })
  const shadow = deps.shadow
  if (shadow !== undefined) {
    new Counter({
      name: 'switchyard_shadow_total',
      help: 'Shadow copies and pairs, per service and result: sent (to the idle color), dropped, and each compared pair as judged when it completed (matched, differed, noise); GET /v1/services/NAME/shadow re-judges them against the noise learnt since',
      labelNames: ['service', 'result'],
      registers: [reg],
      collect () {
        this.reset()
        for (const [service, counts] of shadow.results()) {
          for (const [result, n] of Object.entries(counts)) if (n > 0) this.inc({ service, result }, n)
        }
      },
    })
    new Gauge({
      name: 'switchyard_shadow_inflight',
      help: 'Shadow copies in flight, per service (each process holds at most shadow.maxConcurrent)',
      labelNames: ['service'],
      registers: [reg],
      collect () {
        this.reset()
        for (const [service, n] of shadow.inflight()) this.set({ service }, n)
      },
    })
  }
  // Only a restart turns pinning or tracing on or off, so each of these is there exactly when it can count;
  // then every result from 0 (fixed labels): a rate of `expired` or `dropped` reads from the first scrape.
  const pinning = deps.pinning
  if (pinning !== undefined) {
    resultCounter(reg, 'switchyard_pinned_requests_total',
      'Requests carrying baggage switchyard-gen, by result: pinned (routed by the generation it named), expired (not kept, or unknown here), untrusted (from a peer outside pinning.trust), invalid (a malformed entry), unavailable (the kept generation could not serve it); all but pinned go by the current routing',
      PIN_RESULTS, () => pinning.counts)
  }
  const spans = deps.spans
  if (spans !== undefined) {
    resultCounter(reg, 'switchyard_spans_total',
      'OpenTelemetry spans (tracing), by result: exported (the collector accepted them), dropped (not queued: the queue was full, the collector slower than the traffic), failed (sent and lost: an error, a non-2xx answer or the timeout)',
      SPAN_RESULTS, spans)
  }
  new Gauge({
    name: 'switchyard_generation',
    help: 'Routing state generation: grows with every flip, rollback, auto-revert, target change and reload',
    registers: [reg],
    collect () {
      this.set(deps.controller().generation)
    },
  })
  new Gauge({
    name: 'switchyard_store_up',
    help: 'Whether the state store answers: 1, or 0 while etcd is unreachable (traffic is served on the last state; changes are refused)',
    registers: [reg],
    collect () {
      this.set(deps.controller().storeStatus().connected ? 1 : 0)
    },
  })
  new Gauge({
    name: 'switchyard_store_revision',
    help: 'The store revision of the routing state this replica has applied (the file store: its generation)',
    registers: [reg],
    collect () {
      this.set(deps.controller().storeStatus().revision)
    },
  })
  new Gauge({
    name: 'switchyard_fleet_replicas',
    help: 'Replicas registered in the fleet, this one included (1 for a lone gateway)',
    registers: [reg],
    collect () {
      this.set(deps.controller().fleet.replicas().length)
    },
  })
  return reg
}
