// Flip under full load: Switchyard in front of a blue and a green backend
// (each answers 200 with its color), autocannon at 100 connections, while the
// service is flipped every 200 ms through the admin API. A flip must lose no
// request: the script exits non-zero on any error, non-2xx or failed flip.
//
//   node bench/flip-under-load.js [--duration 10] [--connections 100] [--interval 200]
//       [--method POST --body TEXT] [--backend-delay MS] [--backend-idle-close MS]
//
// Process layout: this process runs autocannon and the flipper; the two
// backends share one child process; Switchyard runs in another.

import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, removeTempDir, startChild } from './lib/children.js'
import { load } from './lib/load.js'

const here = dirname(fileURLToPath(import.meta.url))
const lib = (f) => join(here, 'lib', f)
const args = parseArgs()
const duration = Number(args.duration ?? 10)
const connections = Number(args.connections ?? 100)
const interval = Number(args.interval ?? 200)
const method = typeof args.method === 'string' ? args.method.toUpperCase() : 'GET'
const body = typeof args.body === 'string' ? args.body : undefined
const backendArgs = []
if (args['backend-delay'] !== undefined) backendArgs.push('--delay-ms', String(args['backend-delay']))
if (args['backend-idle-close'] !== undefined) backendArgs.push('--idle-close', String(args['backend-idle-close']))

if (!(duration > 0) || !(connections > 0) || !(interval > 0)) {
  console.error('usage: node bench/flip-under-load.js [--duration SEC] [--connections N] [--interval MS]')
  process.exit(2)
}
if (!existsSync(join(here, '..', 'dist', 'gateway.js'))) {
  console.error('dist/ is missing: run `npm run build` first')
  process.exit(2)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

/** Flips `svc` every `interval` ms (never two at once) until stopped. */
function startFlipper (adminUrl, svc) {
  const flips = { ok: 0, failed: 0, failures: [], latenciesMs: [], generations: [] }
  let running = true
  let wake = () => {}
  const nap = (ms) => new Promise((resolve) => { const t = setTimeout(resolve, ms); wake = () => { clearTimeout(t); resolve() } })
  const done = (async () => {
    const t0 = performance.now()
    for (let k = 1; running; k++) {
      const started = performance.now()
      try {
        const res = await fetch(`${adminUrl}/v1/flip`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ services: [svc], reason: 'flip-under-load bench' }),
        })
        const body = await res.json()
        if (res.status === 200 && body.changes?.length === 1) {
          flips.ok++
          flips.generations.push(body.generation)
        } else {
          flips.failed++
          if (flips.failures.length < 10) flips.failures.push({ status: res.status, body })
        }
      } catch (err) {
        flips.failed++
        if (flips.failures.length < 10) flips.failures.push({ error: err.message })
      }
      flips.latenciesMs.push(performance.now() - started)
      const wait = t0 + k * interval - performance.now()
      if (wait > 0 && running) await nap(wait)
    }
  })()
  return { flips, stop: async () => { running = false; wake(); await done } }
}

async function main () {
  const backends = await startChild(lib('backend.js'), ['--names', 'blue,green', '--color-body', ...backendArgs], { name: 'backends' })
  const urls = { blue: `http://127.0.0.1:${backends.info.servers.blue}`, green: `http://127.0.0.1:${backends.info.servers.green}` }
  const dir = makeTempDir('switchyard-flip-')
  const gw = await startChild(lib('switchyard.js'), ['--dir', dir, '--config-json', JSON.stringify({
    svc: { pathPrefix: '/', live: 'blue', blue: [urls.blue], green: [urls.green] },
  })], { name: 'switchyard' })
  const { url, adminUrl } = gw.info

  try {
    process.stderr.write(`[flip] ${connections} connections for ${duration}s against ${url}, flipping every ${interval} ms via ${adminUrl}\n`)
    const flipper = startFlipper(adminUrl, 'svc')
    let r
    try {
      r = await load(url, {
        connections, duration, title: 'flip-under-load', method,
        ...(body !== undefined ? { body, headers: { 'content-type': 'text/plain' } } : {}),
      })
    } finally {
      await flipper.stop()
    }
    const { flips } = flipper

    // After the load stops, nothing may stay counted as in flight.
    await sleep(300)
    const state = await (await fetch(`${adminUrl}/v1/state`)).json()
    const env = state.services.svc.environments
    const inflightAfter = { blue: env.blue.inflight, green: env.green.inflight }
    const { counts } = await backends.request({ type: 'stats' })

    const lat = [...flips.latenciesMs].sort((a, b) => a - b)
    const gens = flips.generations
    const monotonic = gens.every((g, i) => i === 0 || g === gens[i - 1] + 1)
    const served = counts.blue + counts.green
    const responses = r.ok2xx + r.non2xx

    console.log('')
    console.log(`flip under load: ${method}${body !== undefined ? ` with a ${Buffer.byteLength(body)}-byte body` : ''}, ${connections} connections, ${r.durationSec}s, a flip every ${interval} ms${backendArgs.length > 0 ? ` (backends: ${backendArgs.join(' ')})` : ''} (Node ${process.version})`)
    console.log(`  requests (responses seen by autocannon): ${responses}  (${Math.round(r.reqPerSec)} req/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, max ${r.latencyMs.max} ms)`)
    console.log(`  2xx: ${r.ok2xx}   non-2xx: ${r.non2xx} ${r.non2xx > 0 ? JSON.stringify(r.statusCodes) : ''}`)
    console.log(`  errors: ${r.errors} (timeouts ${r.timeouts}) ${r.errors > 0 ? JSON.stringify(r.errorKinds) : ''}`)
    console.log(`  flips done: ${flips.ok}, failed: ${flips.failed}; flip latency p50 ${fmt(percentile(lat, 50))} ms, p99 ${fmt(percentile(lat, 99))} ms, max ${fmt(lat.at(-1))} ms; generations ${gens[0] ?? '-'}..${gens.at(-1) ?? '-'} ${monotonic ? '(+1 each)' : '(NOT consecutive)'}`)
    const extra = served - r.ok2xx
    console.log(`  served per color (backend counts): blue ${counts.blue}, green ${counts.green}; total ${served} (${extra >= 0 ? '+' : ''}${extra} vs 2xx seen: requests in flight when autocannon stopped)`)
    console.log(`  in flight after the run (admin /v1/state): blue ${inflightAfter.blue}, green ${inflightAfter.green}`)
    if (flips.failures.length > 0) console.log(`  flip failures: ${JSON.stringify(flips.failures)}`)

    const problems = []
    if (r.errors > 0) problems.push(`${r.errors} request errors`)
    if (r.non2xx > 0) problems.push(`${r.non2xx} non-2xx responses`)
    if (flips.failed > 0) problems.push(`${flips.failed} failed flips`)
    if (flips.ok === 0) problems.push('no flip was done')
    if (counts.blue === 0 || counts.green === 0) problems.push('one color served nothing')
    if (inflightAfter.blue !== 0 || inflightAfter.green !== 0) problems.push('in-flight counters did not return to 0')
    if (!monotonic) problems.push('flip generations were not consecutive')
    if (problems.length > 0) {
      console.log(`FAIL: ${problems.join('; ')}`)
      process.exitCode = 1
    } else {
      console.log('PASS: no errors, no non-2xx, every flip applied')
    }
  } finally {
    await gw.stop()
    removeTempDir(dir)
    await backends.stop()
  }
}

function fmt (x) {
  return x === null || x === undefined ? '-' : x.toFixed(1)
}

await main()
