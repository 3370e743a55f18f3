// The load generator: autocannon, run in the bench script's own process
// (the servers under test are child processes, so they never share its
// event loop).

import autocannon from 'autocannon'

/**
 * Runs autocannon against `url` and resolves with a compact summary.
 * Errors are tallied by code/message (autocannon only counts them).
 * Optional hooks, called in this process as each answer arrives (keep them
 * cheap): `onResponse(statusCode, latencyMs)` and `onError(err)`.
 * `fine: true` also records every response's latency (any status) in 10 µs
 * buckets: autocannon's own histogram has 1 ms resolution, too coarse for
 * p50s of 1-3 ms. Those percentiles come back as `latencyFineMs`.
 * `onTick(counts)` is autocannon's per-second tick.
 */
export async function load (url, { connections = 50, duration = 10, pipelining = 1, title = url, timeout = 10, method = 'GET', body, headers, onResponse, onError, onTick, fine = false } = {}) {
  const errorKinds = Object.create(null)
  const instance = autocannon({ url, connections, duration, pipelining, timeout, title, method, ...(body !== undefined ? { body } : {}), ...(headers !== undefined ? { headers } : {}) })
  instance.on('reqError', (err) => {
    const k = err?.code ?? err?.message ?? String(err)
    errorKinds[k] = (errorKinds[k] ?? 0) + 1
    if (onError !== undefined) onError(err)
  })
  const hist = fine ? new FineHistogram() : undefined
  if (onResponse !== undefined || hist !== undefined) {
    instance.on('response', (_client, statusCode, _resBytes, responseTime) => {
      if (hist !== undefined) hist.record(responseTime)
      if (onResponse !== undefined) onResponse(statusCode, responseTime)
    })
  }
  if (onTick !== undefined) instance.on('tick', onTick)
  const result = await new Promise((resolve, reject) => {
    instance.once('done', resolve)
    instance.once('error', reject)
  })
  return { ...summarize(result, errorKinds), ...(hist !== undefined ? { latencyFineMs: hist.summary() } : {}) }
}

/** Latencies in 10 µs buckets up to 10 s (one overflow bucket above). */
export class FineHistogram {
  constructor (bucketUs = 10, maxMs = 10_000) {
    this.bucketUs = bucketUs
    this.counts = new Uint32Array(Math.ceil(maxMs * 1000 / bucketUs) + 1)
    this.n = 0
    this.sum = 0
    this.max = 0
  }

  record (ms) {
    const i = Math.min(this.counts.length - 1, Math.floor(ms * 1000 / this.bucketUs))
    this.counts[i]++
    this.n++
    this.sum += ms
    if (ms > this.max) this.max = ms
  }

  /** The upper edge of the bucket holding the p-th percentile, in ms. */
  percentile (p) {
    if (this.n === 0) return null
    const rank = Math.ceil(this.n * p / 100)
    let seen = 0
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]
      if (seen >= rank) return Math.min(this.max, (i + 1) * this.bucketUs / 1000)
    }
    return this.max
  }

  summary () {
    const r = (x) => (x === null ? null : Math.round(x * 1000) / 1000)
    return {
      count: this.n,
      p50: r(this.percentile(50)),
      p90: r(this.percentile(90)),
      p99: r(this.percentile(99)),
      p99_9: r(this.percentile(99.9)),
      max: r(this.max),
      mean: this.n === 0 ? null : r(this.sum / this.n),
    }
  }
}

function summarize (r, errorKinds) {
  const statusCodes = Object.fromEntries(Object.entries(r.statusCodeStats ?? {}).map(([code, s]) => [code, s.count]))
  return {
    title: r.title,
    url: r.url,
    connections: r.connections,
    pipelining: r.pipelining,
    durationSec: r.duration,
    requestsTotal: r.requests.total,
    reqPerSec: r.requests.average,
    reqPerSecStddev: r.requests.stddev,
    // autocannon's own histogram (2xx only, 1 ms resolution).
    latencyMs: {
      p50: r.latency.p50,
      p90: r.latency.p90,
      p97_5: r.latency.p97_5,
      p99: r.latency.p99,
      p99_9: r.latency.p99_9,
      p99_99: r.latency.p99_99,
      max: r.latency.max,
      mean: r.latency.mean,
    },
    ok2xx: r['2xx'],
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    resets: r.resets,
    statusCodes,
    errorKinds,
    bytesRead: r.throughput?.total,
  }
}
