// The HTTP/2 load generator: h2load (Debian: apt-get install -y nghttp2-client), one thread.
// Runs `h2load -t1 -cN -mM -D SEC --npn-list=h2 --log-file=FILE URL` as a child process
// and returns the same shape as wrk.js's loadWrk (req/s, latency percentiles,
// errors), plus what TLS it negotiated.
//
// Pitfalls (notes/issue-14-probe.md): --log-file appends, so every run writes
// a fresh file in its own temp dir; -D (a duration) and not -n (a count), which
// a fast server finishes in a second or two. h2load prints no percentiles: they
// come from the log (one line per request: start µs, status, µs to the end of
// the answer). --npn-list=h2 only: a server without HTTP/2 fails the run instead
// of being measured over HTTP/1.1.

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeTempDir, removeTempDir, trackProcess } from './children.js'

/** Parses h2load's stdout. Numbers are null when a line is missing. */
export function parseH2loadOutput (text) {
  const num = (re) => { const m = re.exec(text); return m === null ? null : Number(m[1]) }
  const str = (re) => { const m = re.exec(text); return m === null ? null : m[1].trim() }
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(text)
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(text)
  return {
    finishedSec: num(/finished in ([\d.]+)s/),
    reqPerSec: num(/finished in [\d.]+s, ([\d.]+) req\/s/),
    requests: req === null ? null : { total: Number(req[1]), started: Number(req[2]), done: Number(req[3]), succeeded: Number(req[4]), failed: Number(req[5]), errored: Number(req[6]), timeout: Number(req[7]) },
    statusCodes: codes === null ? null : { '2xx': Number(codes[1]), '3xx': Number(codes[2]), '4xx': Number(codes[3]), '5xx': Number(codes[4]) },
    tls: { protocol: str(/TLS Protocol: (.*)/), cipher: str(/Cipher: (.*)/), tempKey: str(/Server Temp Key: (.*)/) },
    alpn: str(/Application protocol: (.*)/),
  }
}

/** Latency percentiles (ms) of the successful requests in an h2load --log-file. */
export function logPercentiles (file) {
  const lines = readFileSync(file, 'latin1').split('\n')
  const us = new Float64Array(lines.length)
  let n = 0
  for (const line of lines) {
    if (line === '') continue
    const cols = line.split('\t')
    if (Number(cols[1]) < 0) continue // -1: a failed stream
    us[n++] = Number(cols[2])
  }
  const s = us.subarray(0, n).sort()
  const at = (q) => n === 0 ? null : s[Math.min(n - 1, Math.ceil(q * n) - 1)] / 1000
  let sum = 0
  for (let i = 0; i < n; i++) sum += s[i]
  return { count: n, p50: at(0.5), p90: at(0.9), p99: at(0.99), p99_9: at(0.999), max: n === 0 ? null : s[n - 1] / 1000, mean: n === 0 ? null : sum / n / 1000 }
}

/**
 * Runs h2load and resolves with { ...summary like loadWrk, tls, alpn, h2load }.
 * `tls13Ciphers` goes to --tls13-ciphers (h2load's own default list starts
 * with TLS_AES_128_GCM_SHA256, wrk's (OpenSSL's) with TLS_AES_256_GCM_SHA384:
 * without it a server that follows the client's order would negotiate a
 * different suite for each loader). `onStart(pid)` is called once it runs.
 * h2load is stopped, and this throws, when it runs `stuckAfterSec` past its duration.
 */
export async function loadH2load (url, { connections = 50, streams = 10, duration = 10, title = url, tls13Ciphers, bin = 'h2load', onStart, stuckAfterSec = 30 } = {}) {
  const dir = makeTempDir('switchyard-bench-h2load-')
  try {
    const log = join(dir, 'h2load.log')
    const seconds = Math.max(1, Math.round(duration))
    const argv = ['-t1', `-c${connections}`, `-m${streams}`, '-D', String(seconds), '--npn-list=h2', `--log-file=${log}`, ...(tls13Ciphers === undefined ? [] : [`--tls13-ciphers=${tls13Ciphers}`]), url]
    const child = trackProcess(spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'] }))
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d })
    const exited = new Promise((resolve, reject) => {
      child.once('error', reject)
      child.once('exit', (code, signal) => resolve({ code, signal }))
    })
    onStart?.(child.pid)
    // After -D, h2load still waits for every stream it started: a server that
    // never finishes one would hold it (and the bench) forever.
    let stuck = false
    const watchdog = setTimeout(() => {
      stuck = true
      try { child.kill('SIGINT') } catch {}
      setTimeout(() => { try { child.kill('SIGKILL') } catch {} }, 2000).unref()
    }, (seconds + stuckAfterSec) * 1000)
    const { code, signal } = await exited.finally(() => clearTimeout(watchdog))
    if (stuck) throw new Error(`h2load was still running ${stuckAfterSec} s after its ${seconds} s (streams the server never finished?); stopped it. Its output: ${stderr}${stdout}`)
    const p = parseH2loadOutput(stdout)
    if (code !== 0 || p.requests === null || p.reqPerSec === null) throw new Error(`h2load exited with ${code ?? signal}: ${stderr}${stdout}`)
    if (p.alpn !== 'h2') throw new Error(`h2load: the server did not negotiate h2 (application protocol ${p.alpn ?? 'none'}): ${stdout}`)
    const lat = logPercentiles(log)
    const r = p.requests
    const non2xx = p.statusCodes === null ? null : p.statusCodes['3xx'] + p.statusCodes['4xx'] + p.statusCodes['5xx']
    return {
      title,
      url,
      connections,
      streams,
      durationSec: p.finishedSec,
      requestsTotal: r.succeeded,
      reqPerSec: p.reqPerSec,
      latencyMs: { p50: lat.p50, p90: lat.p90, p99: lat.p99, p99_9: lat.p99_9, max: lat.max, mean: lat.mean },
      non2xx,
      // h2load counts a network error or timeout in `failed` as well as in `errored`/`timeout`.
      errors: r.failed,
      tls: p.tls,
      alpn: p.alpn,
      h2load: { requests: r, statusCodes: p.statusCodes, loggedRequests: lat.count },
    }
  } finally {
    removeTempDir(dir)
  }
}
