// The load generator: autocannon, run in the bench script's own process
// (the servers under test are child processes, so they never share its
// event loop).

import autocannon from 'autocannon'

/**
 * Runs autocannon against `url` and resolves with a compact summary.
 * Errors are tallied by code/message (autocannon only counts them).
 * Optional hooks, called in this process as each answer arrives (keep them
 * cheap): `onResponse(statusCode, latencyMs)` and `onError(err)`.
 */
export async function load (url, { connections = 50, duration = 10, pipelining = 1, title = url, timeout = 10, method = 'GET', body, headers, onResponse, onError } = {}) {
  const errorKinds = Object.create(null)
  const instance = autocannon({ url, connections, duration, pipelining, timeout, title, method, ...(body !== undefined ? { body } : {}), ...(headers !== undefined ? { headers } : {}) })
  instance.on('reqError', (err) => {
    const k = err?.code ?? err?.message ?? String(err)
    errorKinds[k] = (errorKinds[k] ?? 0) + 1
    if (onError !== undefined) onError(err)
  })
  if (onResponse !== undefined) {
    instance.on('response', (_client, statusCode, _resBytes, responseTime) => onResponse(statusCode, responseTime))
  }
  const result = await new Promise((resolve, reject) => {
    instance.once('done', resolve)
    instance.once('error', reject)
  })
  return summarize(result, errorKinds)
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
    latencyMs: {
      p50: r.latency.p50,
      p90: r.latency.p90,
      p99: r.latency.p99,
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
  }
}
