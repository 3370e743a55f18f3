// Generation-pinned call chains (issue 16): what `pinning` costs the fast path.
//
// Cases (each its own gateway child, all started once and kept up; only one is
// loaded at a time): `off` (no pinning section), `on` (pinning: {keep: 5m,
// trust: [127.0.0.0/8]}, requests carry no baggage: every forwarded request
// still gets `baggage: switchyard-gen=N`), and `on+baggage` (the same gateway
// config, requests carry `baggage: userid=42,switchyard-gen=G` naming the
// current generation from a trusted peer: parsed, counted `pinned`, rebuilt).
// Upstream: one nginx child (one worker, plain HTTP/1.1); fast engine, metrics
// on, access log off. Load: wrk -t1 -c --connections GET --path.
//
// Processes: two gateway processes with the same config differ by up to 6%
// in req/s and CPU per request (measured here: `off` against a second `off`),
// as much as the effect measured. So each case runs in --processes (3)
// gateways of its own, and the ratios are taken pairwise: `on` of process
// pair k against `off` of pair k in the same round.
// Rounds: --repeat rounds, each measures every case of every pair once, in
// reverse order on odd rounds, each run after --warmup s of the same load;
// medians per case, and the median of the pairwise ratios to `off`. Per run:
// req/s, p50/p99 and the gateway's CPU µs per request (lib/cpu.js, its
// process tree).
//
//   node bench/pinning.js [--duration 10] [--warmup 2] [--repeat 3] [--processes 3] [--connections 50] [--path /] [--out bench/results/pinning.json]
//   bench/run pinning [flags]
// Exit 1 when a run saw errors or non-2xx answers, when `on+baggage` counted
// no pinned request, or when the target (pinning on, no baggage:
// within 3% of off's req/s) is missed; exit 2 when nginx or wrk is missing or
// the build has no pinning.

import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, removeTempDir, requireTools, startChild } from './lib/children.js'
import { treeCpuSeconds } from './lib/cpu.js'
import { fmt, median, ratio, ratiosToOff, round } from './lib/rounds.js'
import { loadWrk } from './lib/wrk.js'

const here = dirname(fileURLToPath(import.meta.url))
const lib = (f) => join(here, 'lib', f)
const args = parseArgs()
const duration = Number(args.duration ?? 10)
const warmup = Number(args.warmup ?? 2)
const repeat = Number(args.repeat ?? 3)
const processes = Number(args.processes ?? 3)
const connections = Number(args.connections ?? 50)
const path = String(args.path ?? '/')
const out = typeof args.out === 'string' ? args.out : join(here, 'results', 'pinning.json')

/** The target: with pinning on and no baggage sent, at least 97% of the req/s with it off. */
const TARGET_RATIO = 0.97

if (!(duration >= 1) || !(warmup >= 0) || !(repeat >= 1) || !(Number.isInteger(processes) && processes >= 1) || !(connections > 0) || !path.startsWith('/')) {
  console.error('usage: node bench/pinning.js [--duration SEC>=1] [--warmup SEC] [--repeat N] [--processes N] [--connections N] [--path /] [--out FILE]')
  process.exit(2)
}
requireTools(['nginx', 'wrk'])
const log = (line) => process.stderr.write(`[pinning] ${line}\n`)

const dir = makeTempDir('switchyard-bench-nginx-')
const nginx = await startChild(lib('nginx.js'), ['--dir', dir, '--role', 'upstream'], { name: 'nginx' })

async function startGateway (pinning) {
  const gwDir = makeTempDir('switchyard-bench-sy-')
  const svc = { bench: { pathPrefix: '/', live: 'blue', blue: [nginx.info.url], green: [nginx.info.url], health: false } }
  const top = pinning ? { pinning: { keep: '5m', trust: ['127.0.0.0/8'] } } : {}
  let c
  try {
    c = await startChild(lib('switchyard.js'), ['--dir', gwDir, '--config-json', JSON.stringify(svc), '--top-json', JSON.stringify(top)], { name: `switchyard pinning ${pinning ? 'on' : 'off'}` })
  } catch (err) {
    if (pinning && /pinning/.test(String(err.message))) {
      console.error(`this build has no pinning (the pinning section was refused); build a tree with issue 16 merged\n${err.message.split('\n').slice(0, 3).join('\n')}`)
      process.exit(2)
    }
    throw err
  }
  return { url: c.info.url, adminUrl: c.info.adminUrl, pid: c.child.pid, stop: async () => { await c.stop(); removeTempDir(gwDir) } }
}

/** `switchyard_pinned_requests_total{result="pinned"}` of a gateway; null when it has no such metric. */
async function pinnedCount (gw) {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text()
  const m = /^switchyard_pinned_requests_total\{result="pinned"\} (\d+)/m.exec(text)
  return m === null ? null : Number(m[1])
}

async function measure (c) {
  const opts = { connections, headers: c.headers }
  if (warmup > 0) await loadWrk(`${c.gw.url}${path}`, { ...opts, duration: warmup })
  const pinned0 = c.headers === undefined ? null : await pinnedCount(c.gw)
  const cpu0 = treeCpuSeconds(c.gw.pid)
  const r = await loadWrk(`${c.gw.url}${path}`, { ...opts, duration })
  const cpu1 = treeCpuSeconds(c.gw.pid)
  const pinned1 = c.headers === undefined ? null : await pinnedCount(c.gw)
  return {
    case: c.name,
    pair: c.pair,
    requests: r.requestsTotal,
    reqPerSec: round(r.reqPerSec, 0),
    p50Ms: round(r.latencyMs.p50, 3),
    p99Ms: round(r.latencyMs.p99, 3),
    errors: r.errors,
    non2xx: r.non2xx,
    gatewayCpuUsPerReq: cpu0 === null || cpu1 === null ? null : round((cpu1 - cpu0) * 1e6 / r.requestsTotal, 1),
    pinned: pinned0 === null || pinned1 === null ? null : pinned1 - pinned0,
  }
}

const gateways = []
const cases = []
for (let pair = 0; pair < processes; pair++) {
  const off = await startGateway(false)
  const on = await startGateway(true)
  gateways.push(off, on)
  const generation = (await (await fetch(`${on.adminUrl}/v1/state`)).json()).generation
  cases.push(
    { name: 'off', pair, gw: off, headers: undefined },
    { name: 'on', pair, gw: on, headers: undefined },
    { name: 'on+baggage', pair, gw: on, headers: { baggage: `userid=42,switchyard-gen=${generation}` } })
}
const KINDS = ['off', 'on', 'on+baggage']
const doc = {
  bench: 'pinning',
  commit: process.env.SWITCHYARD_BENCH_COMMIT ?? null,
  node: process.version,
  cpus: os.cpus().length,
  loadavgStart: os.loadavg().map((x) => round(x, 2)),
  settings: { duration, warmup, repeat, processes, connections, path, nginx: nginx.info.version },
  runs: [],
}
const problems = []
try {
  for (const c of cases) {
    const res = await fetch(`${c.gw.url}${path}`, { headers: c.headers })
    await res.arrayBuffer()
    if (res.status !== 200) throw new Error(`${c.name}: GET ${path} answered ${res.status}`)
  }
  for (let i = 0; i < repeat; i++) {
    for (const c of i % 2 === 0 ? cases : [...cases].reverse()) {
      log(`round ${i + 1}/${repeat}: ${c.name} (pair ${c.pair + 1})`)
      const run = await measure(c)
      run.round = i
      doc.runs.push(run)
      if (run.errors > 0 || run.non2xx > 0) problems.push(`${run.case} (pair ${c.pair + 1}) round ${i + 1}: ${run.errors} errors, ${run.non2xx} non-2xx`)
      if (c.headers !== undefined && !(run.pinned > 0)) problems.push(`${run.case} (pair ${c.pair + 1}) round ${i + 1}: no request counted pinned (${run.pinned})`)
    }
  }
} finally {
  for (const gw of gateways) await gw.stop()
  await nginx.stop()
  removeTempDir(dir)
}

const runsOf = (name) => doc.runs.filter((r) => r.case === name)
const med = (name, key) => median(runsOf(name).map((r) => r[key]))
/** The median of the ratios of each run of `name` to the `off` run of the same pair and round. */
const paired = (name, key) => median(runsOf(name).map((a) => ratio(a[key] ?? null,
  doc.runs.find((b) => b.case === 'off' && b.pair === a.pair && b.round === a.round)?.[key] ?? null)))
doc.summary = Object.fromEntries(KINDS.map((name) => [name, {
  reqPerSec: med(name, 'reqPerSec'),
  p99Ms: med(name, 'p99Ms'),
  gatewayCpuUsPerReq: med(name, 'gatewayCpuUsPerReq'),
  vsOff: name === 'off'
    ? null
    : { ...ratiosToOff(med, paired, name), pairedGatewayCpuUsPerReq: round(paired(name, 'gatewayCpuUsPerReq'), 3) },
}]))
const onRatio = doc.summary.on.vsOff.pairedReqPerSec
doc.target = { minReqPerSecRatio: TARGET_RATIO, reqPerSecRatio: onRatio, met: (onRatio ?? 0) >= TARGET_RATIO }
if (!doc.target.met) problems.push(`target missed: pinning on with no baggage kept ${fmt((onRatio ?? 0) * 100)}% of the req/s with it off (at least ${TARGET_RATIO * 100}%)`)
doc.problems = problems

mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, JSON.stringify(doc, null, 2) + '\n')

console.log(`${duration}s per run after ${warmup}s warmup, ${processes} gateway pairs x ${repeat} alternating rounds, medians; wrk -t1 -c${connections} GET ${path}; upstream nginx (1 worker); Node ${process.version}; ${os.cpus().length} CPUs; load avg at start ${doc.loadavgStart.join(' ')}`)
const rows = [['case', 'req/s', 'p99 ms', 'CPU µs/req', 'req/s vs off', 'paired', 'p99 vs off', 'CPU vs off', 'paired CPU']]
for (const name of KINDS) {
  const s = doc.summary[name]
  const v = s.vsOff
  rows.push([name, fmt(s.reqPerSec, 0), fmt(s.p99Ms, 2), fmt(s.gatewayCpuUsPerReq),
    v === null ? '-' : fmt(v.reqPerSec, 3), v === null ? '-' : fmt(v.pairedReqPerSec, 3), v === null ? '-' : fmt(v.p99, 2), v === null ? '-' : fmt(v.gatewayCpuUsPerReq, 3), v === null ? '-' : fmt(v.pairedGatewayCpuUsPerReq, 3)])
}
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
for (const r of rows) console.log(r.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join('  '))
console.log(`target (pinning on, no baggage: at least ${TARGET_RATIO * 100}% of the req/s with it off): ${doc.target.met ? 'met' : 'MISSED'} (${fmt((onRatio ?? 0) * 100)}%)`)
for (const p of problems) console.log(`problem: ${p}`)
console.log(`results: ${relative(process.cwd(), out)}`)
process.exit(problems.length > 0 ? 1 : 0)
