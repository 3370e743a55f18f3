// Throughput/latency comparison, all with the same load in one run: direct to
// the upstream, a Node server answering by itself (node-hello: not a proxy,
// the ceiling for one Node process), through Switchyard (three variants),
// through the naive Node baselines (http-proxy-3, an undici Pool forwarder),
// and through nginx, HAProxy and Caddy (each when installed), for each request
// scenario (small GET, 1 KiB POST, 64 KiB GET).
//
//   node bench/run.js [--duration 10] [--warmup 2] [--connections 50] [--repeat 1]
//                     [--only direct,switchyard,...] [--scenario small|post1k|get64k|all]
//                     [--upstream nginx|node] [--wrk] [--out FILE]
//   bench/run          (builds dist/ when needed, then this with the defaults)
//
// Process layout: this process runs only the load generator (autocannon
// in-process, or wrk as its own process with --wrk). The upstream, node-hello,
// Switchyard, http-proxy-3, undici-naive, nginx, HAProxy and Caddy each run in
// their own child process; each is started just before its case and stopped right
// after it.
// Results: one table per scenario on stdout and bench/results/latest.json.

import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from './lib/children.js'
import { machineBusySeconds, reapedChildrenCpuSeconds, treeCpuSeconds } from './lib/cpu.js'
import { mib, treeRssKiB } from './lib/memory.js'
import { SCENARIOS, allCases, bins, codeInfo, parseScenarios, requireDist, runScenario, startUpstream, versions } from './lib/setup.js'

const here = dirname(fileURLToPath(import.meta.url))
const args = parseArgs()
const duration = Number(args.duration ?? 10)
const warmup = Number(args.warmup ?? 2)
const connections = Number(args.connections ?? 50)
const repeat = Number(args.repeat ?? 1)
const only = typeof args.only === 'string' ? new Set(args.only.split(',')) : undefined
const outFile = typeof args.out === 'string' ? args.out : join(here, 'results', 'latest.json')
const useWrk = args.wrk === true
const upstreamKind = typeof args.upstream === 'string' ? args.upstream : undefined
const loadgenName = useWrk ? 'wrk' : 'autocannon'
const usage = 'usage: node bench/run.js [--duration SEC] [--warmup SEC] [--connections N] [--repeat N] [--only a,b] [--scenario small|post1k|get64k|all] [--upstream nginx|node] [--wrk] [--out FILE]'

let scenarios
try {
  scenarios = parseScenarios(args.scenario)
} catch (err) {
  console.error(`${err.message}\n${usage}`)
  process.exit(2)
}
if (!(duration > 0) || !(warmup >= 0) || !(connections > 0) || !(Number.isInteger(repeat) && repeat >= 1) || (upstreamKind !== undefined && !['nginx', 'node'].includes(upstreamKind))) {
  console.error(usage)
  process.exit(2)
}
if (useWrk && bins.wrk === undefined) {
  console.error('--wrk: wrk is not installed (apt-get install -y wrk)')
  process.exit(2)
}
requireDist()
const known = allCases().map((c) => c.name)
for (const n of only ?? []) {
  if (!known.includes(n)) {
    console.error(`--only: unknown or unavailable case ${n} (available here: ${known.join(', ')})`)
    process.exit(2)
  }
}

async function main () {
  const code = codeInfo()
  const upstream = await startUpstream(upstreamKind)
  process.stderr.write(`[bench] upstream: ${upstream.kind} at ${upstream.url}; load: ${loadgenName}; scenarios: ${scenarios.join(', ')}\n`)

  const selected = allCases().filter((c) => only === undefined || only.has(c.name))
  /** scenario -> case name -> runs */
  const runs = new Map(scenarios.map((s) => [s, new Map(selected.map((c) => [c.name, []]))]))
  // With --repeat N the cases are interleaved (round 1: all cases, round 2: ...)
  // so a burst of outside load hits one round, not all runs of one case.
  // Scenario-major, so the cases compared with each other run minutes apart
  // at most (this VM's speed drifts); each proxy is started fresh for each
  // scenario and stopped right after it.
  for (let round = 1; round <= repeat; round++) {
    for (const scenario of scenarios) {
      for (const c of selected) {
        const started = await c.start(upstream.url)
        try {
          // Resident memory of the proxy process(es), before any request and during the measured run.
          const rssIdleKiB = treeRssKiB(started.rssPid)
          process.stderr.write(`[bench] ${repeat > 1 ? `round ${round}/${repeat} ` : ''}${scenario} ${c.name}: warmup ${warmup}s, then ${duration}s x ${connections} connections ... `)
          const runOpts = { wrk: useWrk, connections }
          if (warmup > 0) await runScenario(started.url, scenario, { ...runOpts, duration: warmup, title: `${c.name} warmup` })
          let cpu0
          let loadgenPid
          const rssSamples = []
          const sampler = setInterval(() => { const r = treeRssKiB(started.rssPid); if (r !== null) rssSamples.push(r) }, 1000)
          let r
          try {
            r = await runScenario(started.url, scenario, {
              ...runOpts,
              duration,
              title: c.name,
              onStart: (pid) => {
                loadgenPid = pid
                cpu0 = { proxy: treeCpuSeconds(started.pid), backend: treeCpuSeconds(upstream.pid), loadgen: pid === undefined ? process.cpuUsage() : reapedChildrenCpuSeconds(), machine: machineBusySeconds() }
              },
            })
          } finally {
            clearInterval(sampler)
          }
          // wrk has exited by now and been reaped: its CPU time is in this
          // process's cutime/cstime (no other child exits meanwhile).
          const reaped = loadgenPid === undefined || cpu0.loadgen === null ? null : reapedChildrenCpuSeconds()
          const cpu1 = { proxy: treeCpuSeconds(started.pid), backend: treeCpuSeconds(upstream.pid), loadgen: loadgenPid === undefined ? process.cpuUsage(cpu0.loadgen) : reaped === null ? null : { user: (reaped - cpu0.loadgen) * 1e6, system: 0 }, machine: machineBusySeconds() }
          const secs = r.durationSec
          const cpu = {
            proxyCores: cpu0.proxy === null ? null : (cpu1.proxy - cpu0.proxy) / secs,
            backendCores: cpu0.backend === null ? null : (cpu1.backend - cpu0.backend) / secs,
            loadgenCores: cpu1.loadgen === null ? null : (cpu1.loadgen.user + cpu1.loadgen.system) / 1e6 / secs,
            machineCores: cpu0.machine === null ? null : (cpu1.machine - cpu0.machine) / secs,
          }
          // What the rest of the machine (other agents' test runs, kernel threads)
          // used meanwhile: the noise this case ran under.
          cpu.otherCores = cpu.machineCores === null ? null : Math.max(0, cpu.machineCores - (cpu.proxyCores ?? 0) - (cpu.backendCores ?? 0) - (cpu.loadgenCores ?? 0))
          // CPU the proxy spent per request: steadier than req/s on a shared box.
          cpu.proxyMicrosPerRequest = cpu.proxyCores === null || r.requestsTotal === 0 ? null : cpu.proxyCores * secs * 1e6 / r.requestsTotal
          cpu.backendMicrosPerRequest = cpu.backendCores === null || r.requestsTotal === 0 ? null : cpu.backendCores * secs * 1e6 / r.requestsTotal
          const memory = c.name === 'direct' ? null : { rssIdleKiB, rssLoadMaxKiB: rssSamples.length === 0 ? null : Math.max(...rssSamples), rssLoadLastKiB: rssSamples.at(-1) ?? null }
          let proxyLog
          if (started.request !== undefined && ['nginx', 'haproxy', 'caddy'].includes(c.name)) {
            try { proxyLog = (await started.request({ type: 'log' })).log } catch {}
          }
          runs.get(scenario).get(c.name).push({ name: c.name, ...(c.label ? { label: c.label } : {}), ...(c.notProxy ? { notProxy: true } : {}), scenario, round, loadgen: loadgenName, ...(started.version ? { version: started.version } : {}), ...r, cpu, memory, ...(proxyLog ? { proxyLog } : {}) })
          process.stderr.write(`${Math.round(r.reqPerSec)} req/s\n`)
        } finally {
          await started.stop?.()
        }
      }
    }
  }
  await upstream.stop()

  const byScenario = {}
  for (const scenario of scenarios) {
    // One row per case: its median run by req/s (the only run without --repeat).
    const results = selected.map((c) => {
      const list = runs.get(scenario).get(c.name)
      const sorted = [...list].sort((a, b) => a.reqPerSec - b.reqPerSec)
      const median = sorted[(sorted.length - 1) >> 1]
      return { ...median, ...(list.length > 1 ? { allReqPerSec: list.map((x) => Math.round(x.reqPerSec)), runs: list } : {}) }
    })
    const direct = results.find((r) => r.name === 'direct')
    const nginx = results.find((r) => r.name === 'nginx')
    const undiciNaive = results.find((r) => r.name === 'undici-naive')
    const nodeHello = results.find((r) => r.name === 'node-hello')
    const caddy = results.find((r) => r.name === 'caddy')
    // With --repeat: ratios within each round (cases of one round ran minutes
    // apart, rounds further), and their medians. Steadier than ratios of medians.
    const median = (xs) => { const v = xs.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b); return v.length === 0 ? null : v.length % 2 === 1 ? v[v.length >> 1] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2 }
    const roundsOf = (name) => runs.get(scenario).get(name) ?? []
    const perRound = (name, ref, f) => roundsOf(name).map((x) => { const y = roundsOf(ref).find((z) => z.round === x.round); return y === undefined ? null : f(x, y) })
    for (const r of results) {
      if (repeat > 1) {
        const rps = (x, y) => x.reqPerSec / y.reqPerSec
        const p99 = (x, y) => x.latencyFineMs.p99 / y.latencyFineMs.p99
        r.perRound = {
          ratioToNginx: nginx ? perRound(r.name, 'nginx', rps) : null,
          ratioToDirect: direct ? perRound(r.name, 'direct', rps) : null,
          ratioToHttpProxy3: perRound(r.name, 'http-proxy-3', rps),
          ratioToUndiciNaive: perRound(r.name, 'undici-naive', rps),
          ratioToNodeHello: perRound(r.name, 'node-hello', rps),
          ratioToCaddy: perRound(r.name, 'caddy', rps),
          p99RatioToNginx: nginx ? perRound(r.name, 'nginx', p99) : null,
          proxyMicrosPerRequest: roundsOf(r.name).map((x) => x.cpu.proxyMicrosPerRequest),
        }
        r.medians = Object.fromEntries(Object.entries(r.perRound).map(([k, v]) => [k, v === null ? null : median(v)]))
      }
      r.ratioToDirect = direct ? r.reqPerSec / direct.reqPerSec : null
      r.ratioToNginx = nginx ? r.reqPerSec / nginx.reqPerSec : null
      r.ratioToUndiciNaive = undiciNaive ? r.reqPerSec / undiciNaive.reqPerSec : null
      r.ratioToNodeHello = nodeHello ? r.reqPerSec / nodeHello.reqPerSec : null
      r.ratioToCaddy = caddy ? r.reqPerSec / caddy.reqPerSec : null
      r.p99RatioToNginx = nginx && nginx.latencyFineMs.p99 > 0 ? r.latencyFineMs.p99 / nginx.latencyFineMs.p99 : null
      r.p99RatioToDirect = direct && direct.latencyFineMs.p99 > 0 ? r.latencyFineMs.p99 / direct.latencyFineMs.p99 : null
    }
    byScenario[scenario] = results
    printTable(scenario, results, { nginx: nginx !== undefined, undiciNaive: undiciNaive !== undefined, nodeHello: nodeHello !== undefined })
  }
  const targets = checkTargets(byScenario.small)
  if (targets !== null) {
    console.log('\nIssue targets, small case (reported, not enforced):')
    for (const t of targets) console.log(`  ${t.info ? 'info' : t.ok === null ? '?' : t.ok ? 'met ' : 'MISS'}  ${t.what}: ${t.value}`)
  }

  const doc = {
    date: new Date().toISOString(),
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memTotalMiB: Math.round(os.totalmem() / 2 ** 20),
    loadavgAtStart,
    loadavgAtEnd: os.loadavg(),
    code,
    versions: versions(),
    upstream: { kind: upstream.kind, version: upstream.version },
    layout: `${loadgenName} ${useWrk ? 'as its own process' : 'in the bench process'}; upstream, node-hello, switchyard, http-proxy-3, undici-naive, nginx, haproxy and caddy each in their own child process (one case running at a time)`,
    settings: { loadgen: loadgenName, connections, pipelining: 1, threads: 1, durationSec: duration, warmupSec: warmup, repeat, keepAlive: true, scenarios: Object.fromEntries(scenarios.map((s) => [s, SCENARIOS[s].describe])) },
    latencyNote: 'latencyFineMs: every response, 10 µs buckets (autocannon) or wrk\'s own µs histogram; latencyMs: autocannon\'s histogram (2xx only, 1 ms resolution)',
    targets,
    scenarios: byScenario,
  }
  mkdirSync(dirname(outFile), { recursive: true })
  writeFileSync(outFile, JSON.stringify(doc, null, 2) + '\n')
  console.log(`\nwritten: ${outFile}`)

  const bad = Object.values(byScenario).flat().flatMap((r) => r.runs ?? [r]).filter((r) => r.errors > 0 || r.non2xx > 0)
  if (bad.length > 0) {
    console.error(`errors or non-2xx in: ${bad.map((r) => `${r.scenario} ${r.name} round ${r.round} (${r.errors} errors ${JSON.stringify(r.errorKinds)}, non-2xx ${r.non2xx} ${JSON.stringify(r.statusCodes)})`).join('; ')}`)
    process.exitCode = 1
  }
}

/**
 * The issue's targets for the small case; null when a needed case was not run.
 * Only proxies count: node-hello (no proxy) is never compared here. Entries
 * with `info: true` are context, not targets (ok is null).
 */
function checkTargets (results) {
  if (results === undefined) return null
  const sy = results.find((r) => r.name === 'switchyard')
  if (sy === undefined) return null
  const nginx = results.find((r) => r.name === 'nginx')
  const hp = results.find((r) => r.name === 'http-proxy-3')
  const un = results.find((r) => r.name === 'undici-naive')
  const caddy = results.find((r) => r.name === 'caddy')
  const f = (x) => (x === null || x === undefined ? '-' : x.toFixed(2))
  // With --repeat, also the median of the per-round ratios (in brackets).
  const pr = (k) => (sy.medians?.[k] === undefined ? '' : ` [per-round median ${f(sy.medians[k])}x, rounds ${sy.perRound[k].map(f).join(' ')}]`)
  const out = []
  if (nginx) out.push({ what: 'switchyard req/s >= 0.5x nginx', value: `${f(sy.reqPerSec / nginx.reqPerSec)}x${pr('ratioToNginx')}`, ok: sy.reqPerSec >= 0.5 * nginx.reqPerSec })
  if (hp) out.push({ what: 'switchyard req/s >= 1.6x http-proxy-3', value: `${f(sy.reqPerSec / hp.reqPerSec)}x${pr('ratioToHttpProxy3')}`, ok: sy.reqPerSec >= 1.6 * hp.reqPerSec })
  if (un) out.push({ what: 'switchyard req/s vs undici-naive (information, not a target)', value: `${f(sy.reqPerSec / un.reqPerSec)}x (${Math.round(sy.reqPerSec)} vs ${Math.round(un.reqPerSec)} req/s)${pr('ratioToUndiciNaive')}`, ok: null, info: true })
  if (caddy) out.push({ what: 'switchyard req/s vs caddy (ahead of Caddy)', value: `${f(sy.reqPerSec / caddy.reqPerSec)}x (${Math.round(sy.reqPerSec)} vs ${Math.round(caddy.reqPerSec)} req/s)${pr('ratioToCaddy')}`, ok: sy.reqPerSec > caddy.reqPerSec })
  if (nginx) out.push({ what: 'switchyard p99 <= 2.5x nginx p99', value: `${sy.latencyFineMs.p99} ms vs ${nginx.latencyFineMs.p99} ms = ${f(sy.latencyFineMs.p99 / nginx.latencyFineMs.p99)}x${pr('p99RatioToNginx')}`, ok: sy.latencyFineMs.p99 <= 2.5 * nginx.latencyFineMs.p99 })
  out.push({ what: 'switchyard: zero errors and zero non-2xx', value: `${sy.errors} errors, ${sy.non2xx} non-2xx`, ok: sy.errors === 0 && sy.non2xx === 0 })
  return out
}

function printTable (scenario, results, withRef) {
  const pct = (x) => (x === null || x === undefined ? '-' : `${Math.round(x * 100)}%`)
  const fmt = (n, d = 0) => (n === null || n === undefined ? '-' : n.toFixed(d))
  const rss = (m) => (m === null ? '-' : `${fmt(mib(m.rssIdleKiB))} → ${fmt(mib(m.rssLoadMaxKiB))}`)
  const head = ['name', 'req/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'errors', 'non-2xx', 'vs direct', ...(withRef.nginx ? ['vs nginx', 'p99 vs nginx'] : []), ...(withRef.undiciNaive ? ['vs undici-naive'] : []), ...(withRef.nodeHello ? ['vs node-hello'] : []), 'proxy CPU', 'proxy µs/req', 'RSS MiB idle → load', 'upstream CPU', `${loadgenName} CPU`, 'other CPU']
  const rows = results.map((r) => [
    r.label ?? r.name,
    fmt(r.reqPerSec),
    fmt(r.latencyFineMs.p50, 2),
    fmt(r.latencyFineMs.p99, 2),
    fmt(r.latencyFineMs.p99_9, 2),
    String(r.errors),
    String(r.non2xx),
    fmt(r.ratioToDirect, 2),
    ...(withRef.nginx ? [fmt(r.ratioToNginx, 2), fmt(r.p99RatioToNginx, 2)] : []),
    ...(withRef.undiciNaive ? [fmt(r.ratioToUndiciNaive, 2)] : []),
    ...(withRef.nodeHello ? [fmt(r.ratioToNodeHello, 2)] : []),
    r.name === 'direct' ? '-' : pct(r.cpu.proxyCores),
    r.name === 'direct' || r.cpu.proxyMicrosPerRequest === null ? '-' : fmt(r.cpu.proxyMicrosPerRequest),
    rss(r.memory),
    pct(r.cpu.backendCores),
    pct(r.cpu.loadgenCores),
    pct(r.cpu.otherCores),
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  const line = (cells) => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ') + ' |'
  console.log(`\n### ${scenario}: ${SCENARIOS[scenario].describe}`)
  console.log(`${loadgenName}, 1 thread, ${connections} connections, pipelining 1, keep-alive, ${duration}s per case (after ${warmup}s warmup${repeat > 1 ? `; median of ${repeat} interleaved runs` : ''}); Node ${process.version}; ${os.cpus().length} CPUs; load avg at start ${loadavgAtStart.map((x) => x.toFixed(2)).join(' ')}`)
  console.log(`CPU columns: average share of one core during the measured run; "other" = everything else on the machine (noise).`)
  if (withRef.nodeHello) console.log('node-hello is not a proxy: a Node server answering by itself, the ceiling for one Node process (its "proxy" columns are that server\'s).')
  console.log(line(head))
  console.log('|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|')
  for (const row of rows) console.log(line(row))
}

const loadavgAtStart = os.loadavg()
await main()
