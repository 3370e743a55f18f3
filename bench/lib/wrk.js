// The alternative load generator: wrk (`--wrk` in run.js), one thread.
// Runs `wrk -t1 -cN -dD --timeout 10s --latency -s SCRIPT URL` as a child
// process and returns the same shape as load.js's summary. The Lua script sets
// the method and body, and its done() hook prints wrk's exact latency
// percentiles (in µs, including p99.9, which --latency does not print) as
// JSON; the --latency table and "Requests/sec" are parsed as well and kept.
// wrk reports no per-status counts: "non2xx" is its status error count
// (responses with status >= 400).

import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeTempDir, removeTempDir, trackProcess } from './children.js'

const lua = (s) => `"${String(s).replace(/[\\"]/g, (c) => '\\' + c).replace(/\n/g, '\\n')}"`

/**
 * The Lua script: method, body and headers, then `extra` (more Lua, such as
 * a request() hook), then the done() hook whose WRKJSON line parseWrkOutput reads.
 */
export function script ({ method = 'GET', body, headers, extra }) {
  const lines = [`wrk.method = ${lua(method)}`]
  if (body !== undefined) lines.push(`wrk.body = ${lua(body)}`)
  for (const [k, v] of Object.entries(headers ?? {})) lines.push(`wrk.headers[${lua(k)}] = ${lua(v)}`)
  if (extra !== undefined) lines.push(extra)
  lines.push(`
done = function(summary, latency, requests)
  local e = summary.errors
  local p = function(x) return latency:percentile(x) end
  io.write(string.format('WRKJSON {"durationUs":%.0f,"requests":%.0f,"bytes":%.0f,"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},"latencyUs":{"min":%.0f,"max":%.0f,"mean":%.3f,"stdev":%.3f,"p50":%.0f,"p90":%.0f,"p99":%.0f,"p99_9":%.0f,"p99_99":%.0f}}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, p(50), p(90), p(99), p(99.9), p(99.99)))
end
`)
  return lines.join('\n')
}

const UNIT_MS = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Parses wrk's stdout: "Requests/sec", the --latency distribution, socket errors. */
export function parseWrkOutput (text) {
  const out = { reqPerSec: null, latencyDistributionMs: {}, socketErrors: null, non2xx3xx: 0, json: null }
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text)
  if (rps) out.reqPerSec = Number(rps[1])
  const dist = /Latency Distribution\s*\n([\s\S]*?)\n\s*\d+ requests in/.exec(text)
  if (dist) {
    for (const m of dist[1].matchAll(/(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)/g)) out.latencyDistributionMs[`p${m[1].replace('.', '_')}`] = Number(m[2]) * UNIT_MS[m[3]]
  }
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  if (se) out.socketErrors = { connect: Number(se[1]), read: Number(se[2]), write: Number(se[3]), timeout: Number(se[4]) }
  const n = /Non-2xx or 3xx responses: (\d+)/.exec(text)
  if (n) out.non2xx3xx = Number(n[1])
  const j = /^WRKJSON (.*)$/m.exec(text)
  if (j) out.json = JSON.parse(j[1])
  return out
}

/**
 * Runs wrk and resolves with { ...summary like load.js, pid }. `onStart(pid)`
 * is called once wrk is running (run.js reads its CPU time from /proc).
 */
export async function loadWrk (url, { connections = 50, duration = 10, title = url, method = 'GET', body, headers, bin = 'wrk', onStart } = {}) {
  const dir = makeTempDir('switchyard-bench-wrk-')
  try {
    const file = join(dir, 'script.lua')
    writeFileSync(file, script({ method, body, headers }))
    const seconds = Math.max(1, Math.round(duration))
    const child = trackProcess(spawn(bin, ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '--latency', '-s', file, url], { stdio: ['ignore', 'pipe', 'pipe'] }))
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d })
    const exited = new Promise((resolve, reject) => {
      child.once('error', reject)
      child.once('exit', (code, signal) => resolve({ code, signal }))
    })
    onStart?.(child.pid)
    const { code, signal } = await exited
    if (code !== 0) throw new Error(`wrk exited with ${code ?? signal}: ${stderr}${stdout}`)
    const parsed = parseWrkOutput(stdout)
    if (parsed.json === null) throw new Error(`wrk printed no WRKJSON line: ${stdout}`)
    const j = parsed.json
    const ms = (us) => us / 1000
    const durationSec = j.durationUs / 1e6
    const errors = j.errors.connect + j.errors.read + j.errors.write + j.errors.timeout
    const errorKinds = Object.fromEntries(Object.entries(j.errors).filter(([k, v]) => k !== 'status' && v > 0))
    return {
      title,
      url,
      connections,
      pipelining: 1,
      durationSec,
      requestsTotal: j.requests,
      reqPerSec: j.requests / durationSec,
      reqPerSecStddev: null,
      latencyMs: { p50: ms(j.latencyUs.p50), p90: ms(j.latencyUs.p90), p99: ms(j.latencyUs.p99), p99_9: ms(j.latencyUs.p99_9), p99_99: ms(j.latencyUs.p99_99), max: ms(j.latencyUs.max), mean: ms(j.latencyUs.mean) },
      // wrk's histogram is already µs-exact: the same numbers serve as the fine ones.
      latencyFineMs: { count: j.requests, p50: ms(j.latencyUs.p50), p90: ms(j.latencyUs.p90), p99: ms(j.latencyUs.p99), p99_9: ms(j.latencyUs.p99_9), max: ms(j.latencyUs.max), mean: ms(j.latencyUs.mean) },
      ok2xx: null,
      non2xx: j.errors.status,
      errors,
      timeouts: j.errors.timeout,
      resets: null,
      statusCodes: null,
      errorKinds,
      bytesRead: j.bytes,
      wrk: { reqPerSecPrinted: parsed.reqPerSec, latencyDistributionMs: parsed.latencyDistributionMs, socketErrors: parsed.socketErrors, non2xx3xx: parsed.non2xx3xx },
    }
  } finally {
    removeTempDir(dir)
  }
}
