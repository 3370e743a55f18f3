// Where Switchyard's CPU time goes: runs the gateway child under
// `node --cpu-prof` with the same load as run.js, then summarizes self time
// by area (Switchyard, undici, node core http, streams, GC, ...), by file and
// by function, over the measured seconds only (startup and warmup left out).
//
//   node bench/profile.js [--duration 10] [--warmup 2] [--connections 50]
//                         [--scenario small|post1k|get64k] [--upstream nginx|node] [--wrk]
//                         [--variant switchyard|switchyard-bare|switchyard+accesslog]
//                         [--interval US] [--top 15] [--out FILE] [--keep FILE]
//
// --interval: the profiler's sampling interval in µs (--cpu-prof-interval,
// Node's default 1000). The profile is written by the child when it exits;
// it is kept as bench/results/switchyard.cpuprofile (open it in Chrome
// DevTools or speedscope), or --keep FILE; the summary goes to stdout and
// bench/results/profile.json.

import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, removeTempDir } from './lib/children.js'
import { cpuSplit, machineBusySeconds, treeCpuSeconds } from './lib/cpu.js'
import { printSummary, summarize } from './lib/cpuprofile.js'
import { SCENARIOS, bins, codeInfo, requireDist, runScenario, startSwitchyard, startUpstream, versions } from './lib/setup.js'

const here = dirname(fileURLToPath(import.meta.url))
const args = parseArgs()
const duration = Number(args.duration ?? 10)
const warmup = Number(args.warmup ?? 2)
const connections = Number(args.connections ?? 50)
const scenario = typeof args.scenario === 'string' ? args.scenario : 'small'
const upstreamKind = typeof args.upstream === 'string' ? args.upstream : undefined
const useWrk = args.wrk === true
const variant = typeof args.variant === 'string' ? args.variant : 'switchyard'
const interval = args.interval === undefined ? undefined : Number(args.interval)
const top = Number(args.top ?? 15)
const outFile = typeof args.out === 'string' ? args.out : join(here, 'results', 'profile.json')
const keepFile = typeof args.keep === 'string' ? args.keep : join(here, 'results', 'switchyard.cpuprofile')
const TOPS = {
  switchyard: () => ({ log: { access: false } }),
  'switchyard-bare': () => ({ log: { access: false }, metrics: { enabled: false } }),
  'switchyard+accesslog': (dir) => ({ log: { access: join(dir, 'access.log') } }),
}
if (!(duration > 0) || !(warmup >= 0) || !(connections > 0) || SCENARIOS[scenario] === undefined || TOPS[variant] === undefined || (interval !== undefined && !(interval > 0))) {
  console.error('usage: node bench/profile.js [--duration SEC] [--warmup SEC] [--connections N] [--scenario small|post1k|get64k] [--upstream nginx|node] [--wrk] [--variant ...] [--interval US] [--top N] [--out FILE] [--keep FILE]')
  process.exit(2)
}
if (useWrk && bins.wrk === undefined) {
  console.error('--wrk: wrk is not installed')
  process.exit(2)
}
requireDist()

const nowUs = () => Number(process.hrtime.bigint() / 1000n) // CLOCK_MONOTONIC, as V8's profile timestamps

async function main () {
  const code = codeInfo()
  const profDir = makeTempDir('switchyard-bench-prof-')
  const upstream = await startUpstream(upstreamKind)
  let sy
  let r
  let window
  let cpu
  try {
    const execArgv = [...process.execArgv, '--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', 'switchyard.cpuprofile', ...(interval !== undefined ? ['--cpu-prof-interval', String(interval)] : [])]
    sy = await startSwitchyard(upstream.url, { name: variant, top: TOPS[variant], execArgv })
    process.stderr.write(`[profile] ${variant} under --cpu-prof, ${SCENARIOS[scenario].describe}: warmup ${warmup}s, then ${duration}s x ${connections} connections ... `)
    if (warmup > 0) await runScenario(sy.url, scenario, { wrk: useWrk, connections, duration: warmup, title: 'profile warmup' })
    let fromUs
    let cpu0
    r = await runScenario(sy.url, scenario, {
      wrk: useWrk,
      connections,
      duration,
      title: 'profile',
      onStart: () => { fromUs = nowUs(); cpu0 = { proxy: treeCpuSeconds(sy.pid), machine: machineBusySeconds(), split: cpuSplit(sy.pid) } },
    })
    window = { fromUs, toUs: nowUs() }
    const split1 = cpuSplit(sy.pid)
    const secs = r.durationSec
    // User vs system (kernel: syscalls, TCP) CPU, whole process and main thread, in cores.
    const split = cpu0.split === null || split1 === null
      ? null
      : Object.fromEntries(['all', 'main'].map((k) => [k, { user: (split1[k].user - cpu0.split[k].user) / secs, system: (split1[k].system - cpu0.split[k].system) / secs }]))
    cpu = { proxyCores: (treeCpuSeconds(sy.pid) - cpu0.proxy) / secs, machineCores: (machineBusySeconds() - cpu0.machine) / secs, split }
    process.stderr.write(`${Math.round(r.reqPerSec)} req/s (profiler on)\n`)
  } finally {
    await sy?.stop() // the child writes the profile as it exits
    await upstream.stop()
  }
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'))
  if (file === undefined) throw new Error(`no .cpuprofile written in ${profDir}`)
  const profile = JSON.parse(readFileSync(join(profDir, file), 'utf8'))
  mkdirSync(dirname(keepFile), { recursive: true })
  copyFileSync(join(profDir, file), keepFile)
  removeTempDir(profDir)

  const s = summarize(profile, { ...window, top })
  console.log(`\n${variant}, ${SCENARIOS[scenario].describe}, ${connections} connections, ${duration}s (${useWrk ? 'wrk' : 'autocannon'}; upstream ${upstream.kind}); Node ${process.version}`)
  console.log(`load with the profiler on: ${Math.round(r.reqPerSec)} req/s, ${r.requestsTotal} requests, ${r.errors} errors, ${r.non2xx} non-2xx; gateway process CPU ${Math.round(cpu.proxyCores * 100)}% of a core (all threads), machine ${Math.round(cpu.machineCores * 100)}%`)
  if (cpu.split !== null) {
    const c = (x) => `${Math.round(x * 100)}%`
    const { all, main } = cpu.split
    console.log(`CPU from /proc (share of one core): main thread ${c(main.user + main.system)} = ${c(main.user)} user + ${c(main.system)} system (kernel); other threads (GC, libuv pool, ...) ${c(all.user + all.system - main.user - main.system)}`)
  }
  printSummary(s, { top })
  const perReq = r.requestsTotal > 0 ? s.busyMs * 1000 / r.requestsTotal : null
  if (perReq !== null) console.log(`\nmain thread: ${perReq.toFixed(0)} µs busy per request (all threads, from /proc: ${(cpu.proxyCores * r.durationSec * 1e6 / r.requestsTotal).toFixed(0)} µs)`)
  const doc = { date: new Date().toISOString(), variant, scenario, connections, durationSec: duration, loadgen: useWrk ? 'wrk' : 'autocannon', upstream: upstream.kind, code, versions: versions(), cpus: os.cpus().length, load: { reqPerSec: r.reqPerSec, requestsTotal: r.requestsTotal, errors: r.errors, non2xx: r.non2xx, latencyFineMs: r.latencyFineMs }, cpu, mainThreadMicrosPerRequest: perReq, profileFile: keepFile, summary: s }
  mkdirSync(dirname(outFile), { recursive: true })
  writeFileSync(outFile, JSON.stringify(doc, null, 2) + '\n')
  console.log(`written: ${outFile} and ${keepFile}`)
  if (r.errors > 0 || r.non2xx > 0) process.exitCode = 1
}

await main()
