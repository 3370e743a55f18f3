// Throughput/latency comparison: direct to the backend, through Switchyard,
// through plain http-proxy-3, and through nginx (when `nginx` is on PATH),
// all with the same autocannon load in one run.
//
//   node bench/run.js [--duration 10] [--warmup 2] [--connections 50] [--repeat 1] [--only direct,switchyard,...]
//
// Process layout: this process runs only autocannon (the load generator).
// The backend, Switchyard, http-proxy-3 and nginx each run in their own
// child process, started just before their case and stopped right after it.
// Results: a table on stdout and bench/results/latest.json.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, removeTempDir, startChild } from './lib/children.js'
import { machineBusySeconds, treeCpuSeconds } from './lib/cpu.js'
import { load } from './lib/load.js'

const here = dirname(fileURLToPath(import.meta.url))
const lib = (f) => join(here, 'lib', f)
const args = parseArgs()
const duration = Number(args.duration ?? 10)
const warmup = Number(args.warmup ?? 2)
const connections = Number(args.connections ?? 50)
const repeat = Number(args.repeat ?? 1)
const only = typeof args.only === 'string' ? new Set(args.only.split(',')) : undefined
const outFile = typeof args.out === 'string' ? args.out : join(here, 'results', 'latest.json')

if (!(duration > 0) || !(warmup >= 0) || !(connections > 0) || !(Number.isInteger(repeat) && repeat >= 1)) {
  console.error('usage: node bench/run.js [--duration SEC] [--warmup SEC] [--connections N] [--repeat N] [--only a,b]')
  process.exit(2)
}
if (!existsSync(join(here, '..', 'dist', 'gateway.js'))) {
  console.error('dist/ is missing: run `npm run build` first (or `npm run bench`)')
  process.exit(2)
}

function which (cmd) {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(d, cmd)
    if (d !== '' && existsSync(p)) return p
  }
  return undefined
}

const nginxBin = which('nginx')

async function main () {
  const backend = await startChild(lib('backend.js'), ['--names', 'ok'], { name: 'backend' })
  const backendUrl = `http://127.0.0.1:${backend.info.servers.ok}`
  const backendPid = backend.child.pid

  function switchyardCase (name, top) {
    return {
      name,
      start: async () => {
        const dir = makeTempDir('switchyard-bench-sy-')
        const svc = { svc: { pathPrefix: '/', blue: [backendUrl], green: [backendUrl] } }
        const c = await startChild(lib('switchyard.js'), ['--dir', dir, '--config-json', JSON.stringify(svc), '--top-json', JSON.stringify(top(dir))], { name })
        return { url: c.info.url, pid: c.child.pid, stop: async () => { await c.stop(); removeTempDir(dir) } }
      },
    }
  }

  const cases = [
    { name: 'direct', start: async () => ({ url: backendUrl }) },
    // Three Switchyard cases measure what observability costs: `switchyard` is
    // the default set-up with metrics on and the access log off; `-bare` turns
    // metrics off too; `+accesslog` writes the access log to a file.
    switchyardCase('switchyard', (dir) => ({ log: { access: false } })),
    switchyardCase('switchyard-bare', (dir) => ({ log: { access: false }, metrics: { enabled: false } })),
    switchyardCase('switchyard+accesslog', (dir) => ({ log: { access: join(dir, 'access.log') } })),
    {
      name: 'http-proxy-3',
      start: async () => {
        const c = await startChild(lib('http-proxy.js'), ['--target', backendUrl], { name: 'http-proxy-3' })
        return { url: c.info.url, pid: c.child.pid, stop: c.stop }
      },
    },
  ]
  if (nginxBin !== undefined) {
    cases.push({
      name: 'nginx',
      start: async () => {
        const dir = makeTempDir('switchyard-bench-nginx-')
        const c = await startChild(lib('nginx.js'), ['--dir', dir, '--upstream', backendUrl.slice('http://'.length), '--nginx', nginxBin], { name: 'nginx' })
        return { url: c.info.url, pid: c.child.pid, version: c.info.version, stop: async () => { await c.stop(); removeTempDir(dir) } }
      },
    })
  }

  const selected = cases.filter((c) => only === undefined || only.has(c.name))
  const runs = new Map(selected.map((c) => [c.name, []]))
  // With --repeat N the cases are interleaved (round 1: all cases, round 2: ...)
  // so a burst of outside load hits one round, not all runs of one case.
  for (let round = 1; round <= repeat; round++) {
    for (const c of selected) {
      process.stderr.write(`[bench] ${repeat > 1 ? `round ${round}/${repeat} ` : ''}${c.name}: warmup ${warmup}s, then ${duration}s x ${connections} connections ... `)
      const started = await c.start()
      try {
        if (warmup > 0) await load(started.url, { connections, duration: warmup, title: `${c.name} warmup` })
        const cpu0 = { proxy: treeCpuSeconds(started.pid), backend: treeCpuSeconds(backendPid), loadgen: process.cpuUsage(), machine: machineBusySeconds() }
        const r = await load(started.url, { connections, duration, title: c.name })
        const cpu1 = { proxy: treeCpuSeconds(started.pid), backend: treeCpuSeconds(backendPid), loadgen: process.cpuUsage(cpu0.loadgen), machine: machineBusySeconds() }
        // Cores busy on average during the measured run (1.0 = one core flat out).
        const cpu = {
          proxyCores: cpu0.proxy === null ? null : (cpu1.proxy - cpu0.proxy) / r.durationSec,
          backendCores: cpu0.backend === null ? null : (cpu1.backend - cpu0.backend) / r.durationSec,
          loadgenCores: (cpu1.loadgen.user + cpu1.loadgen.system) / 1e6 / r.durationSec,
          machineCores: cpu0.machine === null ? null : (cpu1.machine - cpu0.machine) / r.durationSec,
        }
        // What the rest of the machine (other agents' test runs, kernel threads)
        // used meanwhile: the noise this case ran under.
        cpu.otherCores = cpu.machineCores === null ? null : Math.max(0, cpu.machineCores - (cpu.proxyCores ?? 0) - (cpu.backendCores ?? 0) - cpu.loadgenCores)
        // CPU the proxy spent per request: steadier than req/s on a shared box.
        cpu.proxyMicrosPerRequest = cpu.proxyCores === null || r.requestsTotal === 0 ? null : cpu.proxyCores * r.durationSec * 1e6 / r.requestsTotal
        cpu.backendMicrosPerRequest = cpu.backendCores === null || r.requestsTotal === 0 ? null : cpu.backendCores * r.durationSec * 1e6 / r.requestsTotal
        runs.get(c.name).push({ name: c.name, round, ...(started.version ? { version: started.version } : {}), ...r, cpu })
        process.stderr.write(`${Math.round(r.reqPerSec)} req/s\n`)
      } finally {
        await started.stop?.()
      }
    }
  }
  // One row per case: its median run by req/s (the only run without --repeat).
  const results = selected.map((c) => {
    const list = runs.get(c.name)
    const sorted = [...list].sort((a, b) => a.reqPerSec - b.reqPerSec)
    const median = sorted[(sorted.length - 1) >> 1]
    return { ...median, ...(list.length > 1 ? { allReqPerSec: list.map((x) => Math.round(x.reqPerSec)), runs: list } : {}) }
  })
  await backend.stop()

  const direct = results.find((r) => r.name === 'direct')
  const nginx = results.find((r) => r.name === 'nginx')
  for (const r of results) {
    r.ratioToDirect = direct ? r.reqPerSec / direct.reqPerSec : null
    r.ratioToNginx = nginx ? r.reqPerSec / nginx.reqPerSec : null
  }

  printTable(results, nginx !== undefined)

  const doc = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    loadavgAtStart,
    loadavgAtEnd: os.loadavg(),
    nginx: nginxBin === undefined ? null : { path: nginxBin, version: nginx?.version ?? null },
    layout: 'autocannon in the bench process; backend, switchyard, http-proxy-3 and nginx each in their own child process (one proxy running at a time)',
    settings: { connections, pipelining: 1, durationSec: duration, warmupSec: warmup, repeat, keepAlive: true },
    results,
  }
  mkdirSync(dirname(outFile), { recursive: true })
  writeFileSync(outFile, JSON.stringify(doc, null, 2) + '\n')
  console.log(`\nwritten: ${outFile}`)

  const bad = results.filter((r) => r.errors > 0 || r.non2xx > 0)
  if (bad.length > 0) {
    console.error(`errors or non-2xx in: ${bad.map((r) => `${r.name} (${r.errors} errors ${JSON.stringify(r.errorKinds)}, non-2xx ${r.non2xx} ${JSON.stringify(r.statusCodes)})`).join('; ')}`)
    process.exitCode = 1
  }
}

function printTable (results, withNginx) {
  const pct = (x) => (x === null || x === undefined ? '-' : `${Math.round(x * 100)}%`)
  const fmt = (n, d = 0) => (n === null || n === undefined ? '-' : n.toFixed(d))
  const head = ['name', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx', 'vs direct', ...(withNginx ? ['vs nginx'] : []), 'proxy CPU', 'proxy µs/req', 'backend CPU', 'autocannon CPU', 'other CPU']
  const rows = results.map((r) => [
    r.name,
    fmt(r.reqPerSec),
    fmt(r.latencyMs.p50),
    fmt(r.latencyMs.p99),
    String(r.errors),
    String(r.non2xx),
    fmt(r.ratioToDirect, 2),
    ...(withNginx ? [fmt(r.ratioToNginx, 2)] : []),
    r.name === 'direct' ? '-' : pct(r.cpu.proxyCores),
    r.name === 'direct' || r.cpu.proxyMicrosPerRequest === null ? '-' : fmt(r.cpu.proxyMicrosPerRequest),
    pct(r.cpu.backendCores),
    pct(r.cpu.loadgenCores),
    pct(r.cpu.otherCores),
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  const line = (cells) => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ') + ' |'
  console.log(`\n${connections} connections, pipelining 1, keep-alive, ${duration}s per case (after ${warmup}s warmup${repeat > 1 ? `; median of ${repeat} interleaved runs` : ''}); Node ${process.version}; ${os.cpus().length} CPUs; load avg at start ${loadavgAtStart.map((x) => x.toFixed(2)).join(' ')}`)
  console.log('CPU columns: average share of one core during the measured run; "other" = everything else on the machine (noise).')
  console.log(line(head))
  console.log('|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|')
  for (const row of rows) console.log(line(row))
}

const loadavgAtStart = os.loadavg()
await main()
