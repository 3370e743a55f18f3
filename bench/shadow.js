// Shadow traffic under load (issue 15): what copying a sample of the live
// color's requests to the idle color, and comparing the answers, costs the
// client's requests.
//
// Cases (each its own gateway child, all started once and kept up; only one is
// loaded at a time): `off` (no shadow section), `s0.1` (services.bench.shadow:
// {sample: 0.1}) and `s1` ({sample: 1}); --samples changes the list (`off` is
// always measured: the ratios are against it). The rest of the shadow settings
// are the defaults (maxConcurrent 32, noise 0.1, learn 20, maxBody 64 KiB),
// unless --max-concurrent is given. Upstreams: two nginx children (one worker
// each, plain HTTP/1.1), blue and green, answering the same --path (/json: a
// 100-byte JSON object, compared structurally; `/`: "ok" as text, compared by
// bytes). Every gateway has blue live and green idle, the fast engine, metrics
// on and the access log off.
// Load: wrk -t1 -c --connections --latency GET --path through the gateway.
//
// Rounds: --repeat rounds, each measures every case once, in reverse order on
// odd rounds, each run after --warmup s of the same load; medians per case.
// Per run: req/s, p50/p99, the gateway's CPU µs per request (lib/cpu.js, its
// process tree), the cores blue's and green's nginx used, and what the
// shadow endpoint counted over the run (sent, compared, matched, differed,
// dropped by reason, noise probes: GET /v1/services/bench/shadow before and
// after). Ratios against `off`: medians, and the median of each round's own
// ratio (the runs compared stand next to each other).
//
//   node bench/shadow.js [--duration 10] [--warmup 2] [--repeat 3] [--connections 50]
//       [--samples 0.1,1] [--path /json] [--max-concurrent N] [--out bench/results/shadow.json]
//   bench/run shadow [flags]
// Exit 1 when a run saw errors or non-2xx answers, when a shadow case sent no
// copies or counted a difference (both colors answer the same), or when the
// issue's target (at sample 0.1, under 10% throughput cost) is missed; exit 2
// when nginx or wrk is missing or the build has no shadow traffic.

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
const connections = Number(args.connections ?? 50)
const samples = String(args.samples ?? '0.1,1').split(',').map(Number)
const path = String(args.path ?? '/json')
const maxConcurrent = args['max-concurrent'] === undefined ? undefined : Number(args['max-concurrent'])
const out = typeof args.out === 'string' ? args.out : join(here, 'results', 'shadow.json')

/** The target: at sample 0.1, at least 90% of the req/s with shadow off. */
const TARGET_SAMPLE = 0.1
const TARGET_RATIO = 0.9

if (!(duration >= 1) || !(warmup >= 0) || !(repeat >= 1) || !(connections > 0) || samples.length === 0 ||
    !samples.every((s) => s > 0 && s <= 1) || new Set(samples).size !== samples.length || !path.startsWith('/') ||
    (maxConcurrent !== undefined && !(Number.isInteger(maxConcurrent) && maxConcurrent >= 1))) {
  console.error('usage: node bench/shadow.js [--duration SEC>=1] [--warmup SEC] [--repeat N] [--connections N] [--samples 0.1,1 (each above 0, at most 1)] [--path /json] [--max-concurrent N] [--out FILE]')
  process.exit(2)
}
requireTools(['nginx', 'wrk'])

const log = (line) => process.stderr.write(`[shadow] ${line}\n`)
const caseName = (sample) => sample === null ? 'off' : `s${sample}`

// ---------------------------------------------------------------- servers

async function startNginx (color) {
  const dir = makeTempDir(`switchyard-bench-nginx-${color}-`)
  const c = await startChild(lib('nginx.js'), ['--dir', dir, '--role', 'upstream'], { name: `nginx ${color}` })
  return { url: c.info.url, pid: c.child.pid, version: c.info.version, stop: async () => { await c.stop(); removeTempDir(dir) } }
}

async function startGateway (sample, blue, green) {
  const dir = makeTempDir('switchyard-bench-sy-')
  const shadow = sample === null ? undefined : { sample, ...(maxConcurrent === undefined ? {} : { maxConcurrent }) }
  const svc = { bench: { pathPrefix: '/', live: 'blue', blue: [blue], green: [green], health: false, ...(shadow === undefined ? {} : { shadow }) } }
  let c
  try {
    c = await startChild(lib('switchyard.js'), ['--dir', dir, '--config-json', JSON.stringify(svc)], { name: `switchyard ${caseName(sample)}` })
  } catch (err) {
    // A build from before shadow traffic refuses the key: say so rather than measure nothing.
    if (shadow !== undefined && /shadow/.test(String(err.message))) {
      console.error(`this build has no shadow traffic (services.bench.shadow was refused); build a tree with issue 15 merged\n${err.message.split('\n').slice(0, 3).join('\n')}`)
      process.exit(2)
    }
    throw err
  }
  return { sample, url: c.info.url, adminUrl: c.info.adminUrl, pid: c.child.pid, stop: async () => { await c.stop(); removeTempDir(dir) } }
}

/** GET /v1/services/bench/shadow; null when the gateway has no such endpoint. */
async function shadowView (gw) {
  const res = await fetch(`${gw.adminUrl}/v1/services/bench/shadow`)
  const body = await res.json()
  if (res.status === 404) return null
  if (!res.ok) throw new Error(`GET /v1/services/bench/shadow: ${res.status} ${JSON.stringify(body)}`)
  return body
}

const COUNTS = ['sent', 'compared', 'matched', 'differed', 'noise', 'dropped', 'probes', 'bodyNotCompared']

/** What the comparison counted between two views (the tally of one comparison only grows). */
function countsBetween (before, after) {
  if (before === null || after === null) return null
  const d = Object.fromEntries(COUNTS.map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]))
  d.drops = Object.fromEntries(Object.entries(after.drops ?? {}).map(([k, v]) => [k, v - (before.drops?.[k] ?? 0)]).filter(([, v]) => v > 0))
  d.top = (after.top ?? []).map((p) => ({ where: p.where, count: p.count }))
  return d
}

/** One request through every gateway answers 200 with the upstream's body; a shadow case then shows a copy sent. */
async function check (gateways) {
  const want = await (await fetch(`${gateways[0].url}${path}`)).text()
  for (const gw of gateways) {
    const res = await fetch(`${gw.url}${path}`)
    const text = await res.text()
    if (res.status !== 200 || text !== want) throw new Error(`${caseName(gw.sample)}: GET ${path} answered ${res.status} ${text.slice(0, 80)}`)
    if (gw.sample === null) continue
    const deadline = Date.now() + 5000
    for (let i = 0; ; i++) {
      const v = await shadowView(gw)
      if (v === null) {
        console.error(`${caseName(gw.sample)}: the gateway has no GET /v1/services/NAME/shadow; build a tree with issue 15 merged`)
        process.exit(2)
      }
      if (v.sent > 0 && v.compared > 0) break
      if (Date.now() > deadline) throw new Error(`${caseName(gw.sample)}: no copy compared after ${i} requests: ${JSON.stringify(v)}`)
      await (await fetch(`${gw.url}${path}`)).text()
    }
  }
}

// ---------------------------------------------------------------- runs

async function measure (gw, blue, green) {
  if (warmup > 0) await loadWrk(`${gw.url}${path}`, { connections, duration: warmup })
  const before = gw.sample === null ? null : await shadowView(gw)
  const cpu0 = { gw: treeCpuSeconds(gw.pid), blue: treeCpuSeconds(blue.pid), green: treeCpuSeconds(green.pid) }
  const t0 = performance.now()
  const r = await loadWrk(`${gw.url}${path}`, { connections, duration })
  const wall = (performance.now() - t0) / 1000
  const cpu = (k, pid) => { const x = treeCpuSeconds(pid); return x === null || cpu0[k] === null ? null : x - cpu0[k] }
  const gwCpu = cpu('gw', gw.pid)
  // Copies still out when wrk stops finish within the copy timeout; a short wait lets the counts settle.
  await new Promise((resolve) => setTimeout(resolve, 200))
  const after = gw.sample === null ? null : await shadowView(gw)
  return {
    case: caseName(gw.sample),
    sample: gw.sample,
    requests: r.requestsTotal,
    reqPerSec: round(r.reqPerSec, 0),
    p50Ms: round(r.latencyMs.p50, 3),
    p99Ms: round(r.latencyMs.p99, 3),
    maxMs: round(r.latencyMs.max, 3),
    errors: r.errors,
    non2xx: r.non2xx,
    gatewayCpuUsPerReq: gwCpu === null ? null : round(gwCpu * 1e6 / r.requestsTotal, 1),
    gatewayCores: gwCpu === null ? null : round(gwCpu / wall, 2),
    blueCores: round(cpu('blue', blue.pid) / wall, 2),
    greenCores: round(cpu('green', green.pid) / wall, 2),
    shadow: countsBetween(before, after),
  }
}

const blue = await startNginx('blue')
const green = await startNginx('green')
const gateways = []
for (const s of [null, ...samples]) gateways.push(await startGateway(s, blue.url, green.url))
const doc = {
  bench: 'shadow',
  commit: process.env.SWITCHYARD_BENCH_COMMIT ?? null,
  node: process.version,
  cpus: os.cpus().length,
  loadavgStart: os.loadavg().map((x) => round(x, 2)),
  settings: { duration, warmup, repeat, connections, samples, path, maxConcurrent: maxConcurrent ?? null, nginx: blue.version },
  runs: [],
}
const problems = []
try {
  await check(gateways)
  for (let round_ = 0; round_ < repeat; round_++) {
    const order = round_ % 2 === 0 ? gateways : [...gateways].reverse()
    for (const gw of order) {
      log(`round ${round_ + 1}/${repeat}: ${caseName(gw.sample)}`)
      const run = await measure(gw, blue, green)
      run.round = round_
      doc.runs.push(run)
      if (run.errors > 0 || run.non2xx > 0) problems.push(`${run.case} round ${round_ + 1}: ${run.errors} errors, ${run.non2xx} non-2xx`)
      if (run.shadow !== null && run.shadow.sent === 0) problems.push(`${run.case} round ${round_ + 1}: no copy sent`)
      if (run.shadow !== null && run.shadow.differed > 0) problems.push(`${run.case} round ${round_ + 1}: ${run.shadow.differed} pairs differ though both colors answer the same (${JSON.stringify(run.shadow.top)})`)
    }
  }
} finally {
  for (const gw of gateways) await gw.stop()
  await blue.stop()
  await green.stop()
}

// ---------------------------------------------------------------- summary

const cases = gateways.map((gw) => caseName(gw.sample))
const runsOf = (name) => doc.runs.filter((r) => r.case === name)
const med = (name, key) => median(runsOf(name).map((r) => r[key]))
/** Each round's own ratio to `off` in that round, then the median of those. */
const paired = (name, key) => median([...Array(repeat).keys()].map((i) => {
  const a = doc.runs.find((r) => r.case === name && r.round === i)
  const b = doc.runs.find((r) => r.case === 'off' && r.round === i)
  return ratio(a?.[key] ?? null, b?.[key] ?? null)
}))
doc.summary = Object.fromEntries(cases.map((name) => {
  const runs = runsOf(name)
  const sum = (k) => runs.reduce((t, r) => t + (r.shadow?.[k] ?? 0), 0)
  return [name, {
    reqPerSec: med(name, 'reqPerSec'),
    p99Ms: med(name, 'p99Ms'),
    gatewayCpuUsPerReq: med(name, 'gatewayCpuUsPerReq'),
    greenCores: med(name, 'greenCores'),
    vsOff: name === 'off'
      ? null
      : ratiosToOff(med, paired, name),
    shadow: name === 'off' ? null : { sent: sum('sent'), compared: sum('compared'), matched: sum('matched'), differed: sum('differed'), noise: sum('noise'), dropped: sum('dropped'), probes: sum('probes') },
  }]
}))
const target = doc.summary[caseName(TARGET_SAMPLE)]
doc.target = target === undefined
  ? null
  : { sample: TARGET_SAMPLE, minReqPerSecRatio: TARGET_RATIO, reqPerSecRatio: target.vsOff.pairedReqPerSec, met: (target.vsOff.pairedReqPerSec ?? 0) >= TARGET_RATIO }
if (doc.target !== null && !doc.target.met) problems.push(`target missed: at sample ${TARGET_SAMPLE}, ${fmt((doc.target.reqPerSecRatio ?? 0) * 100)}% of the req/s with shadow off (at least ${TARGET_RATIO * 100}%)`)
doc.problems = problems

mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, JSON.stringify(doc, null, 2) + '\n')

console.log(`${duration}s per run after ${warmup}s warmup, median of ${repeat} alternating rounds; wrk -t1 -c${connections} GET ${path}; blue and green: nginx (1 worker each), the same answer; Node ${process.version}; ${os.cpus().length} CPUs; load avg at start ${doc.loadavgStart.join(' ')}`)
const rows = [['case', 'req/s', 'p99 ms', 'CPU µs/req', 'green cores', 'req/s vs off', 'paired', 'p99 vs off', 'CPU vs off', 'sent', 'compared', 'differed', 'dropped', 'probes']]
for (const name of cases) {
  const s = doc.summary[name]
  const v = s.vsOff
  const sh = s.shadow
  rows.push([name, fmt(s.reqPerSec, 0), fmt(s.p99Ms, 2), fmt(s.gatewayCpuUsPerReq), fmt(s.greenCores, 2),
    v === null ? '-' : fmt(v.reqPerSec, 3), v === null ? '-' : fmt(v.pairedReqPerSec, 3), v === null ? '-' : fmt(v.p99, 2), v === null ? '-' : fmt(v.gatewayCpuUsPerReq, 2),
    sh === null ? '-' : String(sh.sent), sh === null ? '-' : String(sh.compared), sh === null ? '-' : String(sh.differed), sh === null ? '-' : String(sh.dropped), sh === null ? '-' : String(sh.probes)])
}
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
for (const r of rows) console.log(r.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join('  '))
if (doc.target !== null) console.log(`target (sample ${TARGET_SAMPLE}: at least ${TARGET_RATIO * 100}% of the req/s with shadow off): ${doc.target.met ? 'met' : 'MISSED'} (${fmt((doc.target.reqPerSecRatio ?? 0) * 100)}%)`)
for (const p of problems) console.log(`problem: ${p}`)
console.log(`results: ${relative(process.cwd(), out)}`)
process.exit(problems.length > 0 ? 1 : 0)
