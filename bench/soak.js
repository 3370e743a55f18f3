// Memory soak: Switchyard's resident memory at idle, under a long steady
// load, and after it, to see whether it grows.
//
//   node bench/soak.js [--duration 60] [--every 10] [--warmup 5] [--connections 50]
//                      [--scenario small|post1k|get64k] [--upstream nginx|node] [--wrk]
//                      [--variant switchyard|switchyard-bare|switchyard+accesslog] [--out FILE]
//
// Switchyard runs in its own child (started with --expose-gc, so the bench can
// ask for a full GC at the idle points; the flag changes nothing else). RSS is
// VmRSS from /proc/PID/status, sampled every second; heap numbers come from
// the child's process.memoryUsage() over IPC. Steps:
//   1. idle, fresh: RSS and heap right after start (then once more after a full GC);
//   2. warmup load (--warmup s), 1 s pause, idle again after a full GC
//      ("idle, warm": the baseline, with JIT code, pools and buffers in place);
//   3. the soak: --duration s of load, RSS printed at the start (1 s in), every
//      --every s, and at the end;
//   4. 2 s after the load stops: RSS, then heap and RSS after a full GC.
// Growth = RSS at the end of the soak minus RSS at its start, the slope of a
// least-squares line through the per-second samples (MiB per minute, first
// 10 s left out), and heap used after a full GC, after the soak minus before it.
// Exit code 1 on request errors or non-2xx.

import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from './lib/children.js'
import { machineBusySeconds, treeCpuSeconds } from './lib/cpu.js'
import { mib, rssKiB } from './lib/memory.js'
import { SCENARIOS, bins, codeInfo, requireDist, runScenario, startSwitchyard, startUpstream, versions } from './lib/setup.js'

const here = dirname(fileURLToPath(import.meta.url))
const args = parseArgs()
const duration = Number(args.duration ?? 60)
const every = Number(args.every ?? 10)
const warmup = Number(args.warmup ?? 5)
const connections = Number(args.connections ?? 50)
const scenario = typeof args.scenario === 'string' ? args.scenario : 'small'
const upstreamKind = typeof args.upstream === 'string' ? args.upstream : undefined
const useWrk = args.wrk === true
const variant = typeof args.variant === 'string' ? args.variant : 'switchyard'
const outFile = typeof args.out === 'string' ? args.out : join(here, 'results', 'soak.json')
const TOPS = {
  switchyard: () => ({ log: { access: false } }),
  'switchyard-bare': () => ({ log: { access: false }, metrics: { enabled: false } }),
  'switchyard+accesslog': (dir) => ({ log: { access: join(dir, 'access.log') } }),
}
if (!(duration > 0) || !(every > 0) || !(warmup >= 0) || !(connections > 0) || SCENARIOS[scenario] === undefined || TOPS[variant] === undefined) {
  console.error('usage: node bench/soak.js [--duration SEC] [--every SEC] [--warmup SEC] [--connections N] [--scenario small|post1k|get64k] [--upstream nginx|node] [--wrk] [--variant switchyard|switchyard-bare|switchyard+accesslog] [--out FILE]')
  process.exit(2)
}
if (useWrk && bins.wrk === undefined) {
  console.error('--wrk: wrk is not installed')
  process.exit(2)
}
requireDist()

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const f1 = (x) => (x === null || x === undefined ? '-' : x.toFixed(1))
const heapOf = (m) => ({ rssMiB: mib(m.rss / 1024), heapUsedMiB: mib(m.heapUsed / 1024), heapTotalMiB: mib(m.heapTotal / 1024), externalMiB: mib(m.external / 1024), arrayBuffersMiB: mib(m.arrayBuffers / 1024) })

/** Least-squares slope of y over x. */
function slope (points) {
  const n = points.length
  if (n < 2) return null
  const mx = points.reduce((a, p) => a + p[0], 0) / n
  const my = points.reduce((a, p) => a + p[1], 0) / n
  let num = 0
  let den = 0
  for (const [x, y] of points) { num += (x - mx) * (y - my); den += (x - mx) ** 2 }
  return den === 0 ? null : num / den
}

async function main () {
  const code = codeInfo()
  const upstream = await startUpstream(upstreamKind)
  const sy = await startSwitchyard(upstream.url, { name: variant, top: TOPS[variant], execArgv: [...process.execArgv, '--expose-gc'] })
  const pid = sy.rssPid
  const rss = () => mib(rssKiB(pid))
  const memory = async (gc) => (await sy.request({ type: 'memory', gc }, 30_000)).memory
  const log = (line) => console.log(line)
  const row = (label, text) => log(`${(label + ':').padEnd(24)}${text}`)
  const doc = { date: new Date().toISOString(), variant, scenario, describe: SCENARIOS[scenario].describe, loadgen: useWrk ? 'wrk' : 'autocannon', connections, durationSec: duration, warmupSec: warmup, upstream: upstream.kind, code, versions: versions(), cpus: os.cpus().length, platform: `${os.type()} ${os.release()} ${os.arch()}` }
  try {
    log(`${variant}, ${SCENARIOS[scenario].describe}, ${connections} connections, ${useWrk ? 'wrk' : 'autocannon'}; upstream ${upstream.kind}; Node ${process.version}`)
    await sleep(1000)
    const fresh = { rssMiB: rss(), heap: heapOf(await memory(false)) }
    const freshGc = heapOf(await memory(true))
    doc.idleFresh = { ...fresh, afterGc: freshGc }
    row('idle, fresh', `RSS ${f1(fresh.rssMiB)} MiB (heap used ${f1(fresh.heap.heapUsedMiB)} MiB; after a full GC ${f1(freshGc.heapUsedMiB)} MiB, RSS ${f1(freshGc.rssMiB)} MiB)`)

    if (warmup > 0) await runScenario(sy.url, scenario, { wrk: useWrk, connections, duration: warmup, title: 'soak warmup' })
    await sleep(1000)
    const warm = { rssMiB: rss(), afterGc: heapOf(await memory(true)) }
    doc.idleWarm = warm
    row(`idle, after ${warmup} s warmup`, `RSS ${f1(warm.rssMiB)} MiB (after a full GC: heap used ${f1(warm.afterGc.heapUsedMiB)} MiB, RSS ${f1(warm.afterGc.rssMiB)} MiB)`)

    // The soak. Samples: [seconds since the load started, RSS MiB] every second.
    const samples = []
    const heapSamples = []
    const t0 = performance.now()
    const cpu0 = { proxy: treeCpuSeconds(pid), machine: machineBusySeconds() }
    let nextPrint = 1
    const sampler = setInterval(() => {
      const t = (performance.now() - t0) / 1000
      const r = rss()
      if (r === null) return
      samples.push([Math.round(t * 10) / 10, r])
      if (t >= nextPrint - 0.05 && t < duration - 0.5) {
        row(nextPrint === 1 ? 'soak start (1 s in)' : `soak ${nextPrint} s`, `RSS ${f1(r)} MiB`)
        nextPrint = nextPrint === 1 ? every : nextPrint + every
        memory(false).then((m) => heapSamples.push([Math.round(t), heapOf(m)]), () => {})
      }
    }, 1000)
    let r
    try {
      r = await runScenario(sy.url, scenario, { wrk: useWrk, connections, duration, title: 'soak' })
    } finally {
      clearInterval(sampler)
    }
    const cpu1 = { proxy: treeCpuSeconds(pid), machine: machineBusySeconds() }
    const end = samples.at(-1)
    const start = samples[0]
    row(`soak end (${end[0]} s)`, `RSS ${f1(end[1])} MiB`)
    await sleep(2000)
    const after = { rssMiB: rss() }
    const afterGc = heapOf(await memory(true))
    after.afterGc = afterGc
    row('idle, 2 s after', `RSS ${f1(after.rssMiB)} MiB (after a full GC: heap used ${f1(afterGc.heapUsedMiB)} MiB, RSS ${f1(afterGc.rssMiB)} MiB)`)
    const s = slope(samples.filter(([t]) => t >= 10))
    const growth = {
      rssStartMiB: start[1],
      rssEndMiB: end[1],
      rssMaxMiB: Math.max(...samples.map((x) => x[1])),
      rssDeltaMiB: Math.round((end[1] - start[1]) * 10) / 10,
      rssSlopeMiBPerMin: s === null ? null : Math.round(s * 60 * 100) / 100,
      heapAfterGcDeltaMiB: Math.round((afterGc.heapUsedMiB - warm.afterGc.heapUsedMiB) * 10) / 10,
      rssIdleDeltaMiB: Math.round((after.rssMiB - warm.rssMiB) * 10) / 10,
    }
    const secs = r.durationSec
    Object.assign(doc, {
      idleAfter: after,
      soak: { samples, heapSamples, requestsTotal: r.requestsTotal, reqPerSec: r.reqPerSec, latencyFineMs: r.latencyFineMs, errors: r.errors, non2xx: r.non2xx, statusCodes: r.statusCodes, errorKinds: r.errorKinds, proxyCores: cpu0.proxy === null ? null : (cpu1.proxy - cpu0.proxy) / secs, machineCores: cpu0.machine === null ? null : (cpu1.machine - cpu0.machine) / secs },
      growth,
    })
    log(`load: ${r.requestsTotal} requests, ${Math.round(r.reqPerSec)} req/s, p99 ${r.latencyFineMs.p99} ms, ${r.errors} errors, ${r.non2xx} non-2xx; gateway CPU ${Math.round(doc.soak.proxyCores * 100)}%, whole machine ${Math.round(doc.soak.machineCores * 100)}% of a core`)
    log(`growth: RSS ${f1(start[1])} -> ${f1(end[1])} MiB over the soak (${growth.rssDeltaMiB >= 0 ? '+' : ''}${growth.rssDeltaMiB} MiB, max ${f1(growth.rssMaxMiB)}; trend from 10 s on ${growth.rssSlopeMiBPerMin} MiB/min); heap used after a full GC ${f1(warm.afterGc.heapUsedMiB)} -> ${f1(afterGc.heapUsedMiB)} MiB (${growth.heapAfterGcDeltaMiB >= 0 ? '+' : ''}${growth.heapAfterGcDeltaMiB}); idle RSS warm -> after ${f1(warm.rssMiB)} -> ${f1(after.rssMiB)} MiB`)
    if (r.errors > 0 || r.non2xx > 0) process.exitCode = 1
  } finally {
    await sy.stop()
    await upstream.stop()
  }
  mkdirSync(dirname(outFile), { recursive: true })
  writeFileSync(outFile, JSON.stringify(doc, null, 2) + '\n')
  log(`written: ${outFile}`)
}

await main()
