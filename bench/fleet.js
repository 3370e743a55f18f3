// A fleet on one etcd (loopback), every replica its own process:
// (a) converge: how long from sending a flip to replica A until every replica
//     has applied it? 100 flips to A with `wait: "fleet"`, and 100 without,
//     each timed by the answer and by polling every replica's /v1/state at once;
//     p50/p99/max (target: polled p99 < 100 ms).
// (b) load: does a flip every second, made on alternating replicas, cost any
//     request? Two replicas, one wrk process (or autocannon) per replica,
//     20 s; requests, non-2xx and socket errors (target 0).
//
//   node bench/fleet.js [--part converge|load|both] [--flips 100] [--replicas 3] [--poll 1]
//       [--duration 20] [--connections 20] [--flip-every 1000] [--loader wrk|autocannon]
//       [--out bench/results/fleet.json]
//
// Process layout: etcd (Debian's etcd 3.4, own temp data dir and free ports)
// is spawned by this process; the blue and green backends share one child
// (lib/backend.js); each replica is a lib/switchyard.js child (a Gateway from
// dist/, as `switchyard serve` builds it) with `state.etcd` and `fleet` in
// its config, on a fresh prefix per part. This process sends the flips and
// polls; in (b) the load comes from one wrk process per replica.

import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, startChild, stopProcess, trackProcess } from './lib/children.js'
import { load } from './lib/load.js'
import { loadWrk } from './lib/wrk.js'

const here = dirname(fileURLToPath(import.meta.url))
const lib = (f) => join(here, 'lib', f)
const args = parseArgs()
const part = String(args.part ?? 'both')
const flips = Number(args.flips ?? 100)
const replicaCount = Number(args.replicas ?? 3)
const pollMs = Number(args.poll ?? 1)
const duration = Number(args.duration ?? 20)
const connections = Number(args.connections ?? 20)
const flipEvery = Number(args['flip-every'] ?? 1000)
const hasWrk = spawnSync('wrk', ['--version'], { stdio: 'ignore' }).error === undefined
const loader = String(args.loader ?? (hasWrk ? 'wrk' : 'autocannon'))
/** (b) with `--front nginx`: one load generator on an nginx that balances both replicas, as a fleet is deployed. */
const front = String(args.front ?? 'none')
const out = typeof args.out === 'string' ? args.out : join(here, 'results', 'fleet.json')

/** Target of (a): every replica has applied a flip within this many ms of it being sent, at p99. */
const CONVERGE_P99_TARGET_MS = 100

if (!['converge', 'load', 'both'].includes(part) || !(flips > 0) || !(replicaCount >= 2) || !(pollMs >= 0) ||
    !(duration > 0) || !(connections > 0) || !(flipEvery > 0) || !['wrk', 'autocannon'].includes(loader) || !['none', 'nginx'].includes(front)) {
  console.error('usage: node bench/fleet.js [--part converge|load|both] [--flips N] [--replicas N>=2] [--poll MS] [--duration SEC] [--connections N] [--flip-every MS] [--loader wrk|autocannon] [--front none|nginx] [--out FILE]')
  process.exit(2)
}
if (!existsSync(join(here, '..', 'dist', 'gateway.js'))) {
  console.error('dist/ is missing: run `npm run build` first')
  process.exit(2)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const fmt = (x, d = 1) => x === null || x === undefined ? '-' : x.toFixed(d)

function percentiles (values) {
  const s = [...values].sort((a, b) => a - b)
  const p = (q) => s.length === 0 ? null : s[Math.min(s.length - 1, Math.ceil((q / 100) * s.length) - 1)]
  return { n: s.length, p50: p(50), p90: p(90), p99: p(99), max: s.at(-1) ?? null }
}

async function freePort () {
  return await new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

/** etcd on free loopback ports with a temp data dir; resolves once /health answers. */
async function startEtcd () {
  const dir = makeTempDir('switchyard-bench-etcd-')
  const [client, peer] = [await freePort(), await freePort()]
  const endpoint = `http://127.0.0.1:${client}`
  const peerUrl = `http://127.0.0.1:${peer}`
  let log = ''
  const child = trackProcess(spawn('etcd', [
    '--name', 'bench', '--data-dir', join(dir, 'data'),
    '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl, '--initial-cluster', `bench=${peerUrl}`,
    '--log-level', 'warn', '--logger', 'zap',
  ], { stdio: ['ignore', 'pipe', 'pipe'] }))
  const keep = (b) => { log = (log + b.toString()).slice(-4000) }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const deadline = Date.now() + 15_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`etcd exited: ${log}`)
    try {
      if ((await fetch(`${endpoint}/health`)).ok) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`etcd did not answer /health within 15 s: ${log}`)
    await sleep(50)
  }
  return { endpoint, child, stop: async () => await stopProcess(child) }
}

/** `n` replicas r1..rn on `prefix`, started one after the other, once each sees all of them. */
async function startReplicas (n, etcd, prefix, urls) {
  const services = { svc: { pathPrefix: '/', live: 'blue', blue: [urls.blue], green: [urls.green] } }
  const replicas = []
  for (let i = 1; i <= n; i++) {
    const id = `r${i}`
    const top = { state: { etcd: { endpoints: [etcd.endpoint], prefix, startTimeout: '10s' } }, fleet: { id, leaseTtl: '2s' } }
    const gw = await startChild(lib('switchyard.js'), ['--dir', makeTempDir('switchyard-bench-fleet-'), '--config-json', JSON.stringify(services), '--top-json', JSON.stringify(top)], { name: `replica ${id}` })
    replicas.push({ id, url: gw.info.url, adminUrl: gw.info.adminUrl, stop: gw.stop })
  }
  const deadline = Date.now() + 15_000
  for (;;) {
    const states = await Promise.all(replicas.map(async (r) => await getState(r)))
    if (states.every((s) => s.fleet?.replicas?.length === n && s.fleet.leader !== null)) return replicas
    if (Date.now() > deadline) throw new Error(`the fleet did not form in 15 s: ${JSON.stringify(states.map((s) => s.fleet))}`)
    await sleep(50)
  }
}

async function getState (r) {
  return await (await fetch(`${r.adminUrl}/v1/state`)).json()
}

async function postFlip (r, body) {
  const res = await fetch(`${r.adminUrl}/v1/flip`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, body: await res.json() }
}

/** Polls `r`'s /v1/state until it shows `generation` (or later); ms since `sentAt`. */
async function appliedAfter (r, generation, sentAt, deadline) {
  for (;;) {
    const s = await getState(r)
    if (s.generation >= generation) return performance.now() - sentAt
    if (performance.now() > deadline) return null
    if (pollMs > 0) await sleep(pollMs)
  }
}

/** (a): flips to the first replica, one at a time, with or without `wait: "fleet"`. */
async function converge (replicas, wait) {
  const [a] = replicas
  const rows = []
  let generation = (await getState(a)).generation
  for (let i = 0; i < flips; i++) {
    const target = generation + 1
    const sentAt = performance.now()
    const polled = Promise.all(replicas.map(async (r) => await appliedAfter(r, target, sentAt, sentAt + 10_000)))
    const res = await postFlip(a, { reason: 'fleet bench', ...(wait ? { wait: 'fleet' } : {}) })
    const answerMs = performance.now() - sentAt
    const each = await polled
    const ok = res.status === 200 && res.body.generation === target && (!wait || res.body.fleet?.converged === true)
    rows.push({ answerMs, each, allMs: each.includes(null) ? null : Math.max(...each), ok, ...(ok ? {} : { status: res.status, body: res.body }) })
    generation = res.status === 200 ? res.body.generation : (await getState(a)).generation
    await sleep(20)
  }
  const all = rows.map((r) => r.allMs).filter((x) => x !== null)
  return {
    wait: wait ? 'fleet' : 'none',
    flips: rows.length,
    failed: rows.filter((r) => !r.ok).length,
    notConverged: rows.filter((r) => r.allMs === null).length,
    answerMs: percentiles(rows.map((r) => r.answerMs)),
    allAppliedMs: percentiles(all),
    perReplicaMs: Object.fromEntries(replicas.map((r, i) => [r.id, percentiles(rows.map((x) => x.each[i]).filter((x) => x !== null))])),
    // wait: "fleet" promises every replica has applied the flip when it answers: polls that saw it only after the answer came within one poll round trip.
    answeredBeforeAllPolledMs: percentiles(rows.map((r) => r.allMs === null ? null : r.allMs - r.answerMs).filter((x) => x !== null && x > 0)),
    failures: rows.filter((r) => !r.ok).slice(0, 5).map(({ status, body }) => ({ status, body })),
  }
}

/** (b): one load generator per replica, a flip every `flipEvery` ms on alternating replicas. */
async function underLoad (replicas, backends) {
  await backends.request({ type: 'reset' })
  const flipsDone = []
  let running = true
  const flipper = (async () => {
    const t0 = performance.now()
    for (let k = 1; running; k++) {
      await sleep(Math.max(0, t0 + k * flipEvery - performance.now()))
      if (!running) break
      const r = replicas[k % replicas.length]
      const sent = performance.now()
      try {
        const res = await postFlip(r, { reason: 'fleet bench under load' })
        flipsDone.push({ on: r.id, status: res.status, generation: res.body.generation, ms: performance.now() - sent, ...(res.status === 200 ? {} : { body: res.body }) })
      } catch (err) {
        flipsDone.push({ on: r.id, status: null, error: err.message, ms: performance.now() - sent })
      }
    }
  })()
  const lb = front === 'nginx' ? await startFront(replicas) : undefined
  // Behind the balancer: one load generator with the connections of both.
  const targets = lb === undefined ? replicas.map((r) => ({ id: r.id, url: r.url, connections })) : [{ id: 'nginx', url: lb.url, connections: connections * replicas.length }]
  const runs = await Promise.all(targets.map(async (x) => loader === 'wrk'
    ? await loadWrk(x.url, { connections: x.connections, duration, title: x.id })
    : await load(x.url, { connections: x.connections, duration, title: x.id })))
  running = false
  await flipper
  await lb?.stop()
  const { counts } = await backends.request({ type: 'stats' })
  const states = await Promise.all(replicas.map(async (r) => await getState(r)))
  return {
    loader,
    front,
    connectionsPerReplica: connections,
    durationSec: duration,
    perReplica: Object.fromEntries(targets.map((r, i) => [r.id, {
      requests: runs[i].requestsTotal, reqPerSec: runs[i].reqPerSec, non2xx: runs[i].non2xx, errors: runs[i].errors,
      errorKinds: runs[i].errorKinds, latencyMs: runs[i].latencyMs,
    }])),
    requests: runs.reduce((n, r) => n + r.requestsTotal, 0),
    non2xx: runs.reduce((n, r) => n + r.non2xx, 0),
    errors: runs.reduce((n, r) => n + r.errors, 0),
    flips: { done: flipsDone.filter((f) => f.status === 200).length, failed: flipsDone.filter((f) => f.status !== 200).length, ms: percentiles(flipsDone.map((f) => f.ms)), failures: flipsDone.filter((f) => f.status !== 200).slice(0, 5) },
    servedPerColor: counts,
    after: states.map((s, i) => ({ id: replicas[i].id, generation: s.generation, live: s.services.svc.live })),
  }
}

/** nginx (one worker, keep-alive upstreams) balancing the replicas round robin. */
async function startFront (replicas) {
  const dir = makeTempDir('switchyard-bench-front-')
  const upstream = replicas.map((r) => new URL(r.url).host).join(',')
  const c = await startChild(lib('nginx.js'), ['--dir', dir, '--upstream', upstream], { name: 'front nginx' })
  return { url: c.info.url, stop: async () => await c.stop() }
}

function printConverge (c) {
  const p = (x) => `p50 ${fmt(x.p50)} / p99 ${fmt(x.p99)} / max ${fmt(x.max)} ms`
  console.log(`  wait: ${c.wait}: ${c.flips} flips (${c.failed} failed, ${c.notConverged} never seen everywhere)`)
  console.log(`    answer from A:                ${p(c.answerMs)}`)
  console.log(`    all replicas applied (polled): ${p(c.allAppliedMs)}`)
  for (const [id, x] of Object.entries(c.perReplicaMs)) console.log(`      ${id}: ${p(x)}`)
  if (c.wait === 'fleet') console.log(`    polls that saw the last replica after the answer: ${c.answeredBeforeAllPolledMs.n} of ${c.flips} (by ${p(c.answeredBeforeAllPolledMs)})`)
  if (c.failures.length > 0) console.log(`    failures: ${JSON.stringify(c.failures)}`)
}

function printLoad (l) {
  const how = l.front === 'nginx' ? `one ${l.loader} on nginx balancing both replicas, ${l.connectionsPerReplica * 2} connections` : `one ${l.loader} per replica, ${l.connectionsPerReplica} connections each`
  console.log(`  ${how}, ${l.durationSec} s, a flip every ${flipEvery} ms on alternating replicas`)
  for (const [id, r] of Object.entries(l.perReplica)) {
    console.log(`    ${id}: ${r.requests} requests (${Math.round(r.reqPerSec)} req/s, p50 ${fmt(r.latencyMs.p50)} ms, p99 ${fmt(r.latencyMs.p99)} ms), non-2xx ${r.non2xx}, socket errors ${r.errors} ${r.errors > 0 ? JSON.stringify(r.errorKinds) : ''}`)
  }
  console.log(`    total: ${l.requests} requests, non-2xx ${l.non2xx}, socket errors ${l.errors}; served blue ${l.servedPerColor.blue}, green ${l.servedPerColor.green}`)
  console.log(`    flips: ${l.flips.done} done, ${l.flips.failed} failed; flip answer p50 ${fmt(l.flips.ms.p50)} / p99 ${fmt(l.flips.ms.p99)} / max ${fmt(l.flips.ms.max)} ms`)
  console.log(`    after: ${l.after.map((a) => `${a.id} generation ${a.generation} ${a.live}`).join(', ')}`)
  if (l.flips.failures.length > 0) console.log(`    flip failures: ${JSON.stringify(l.flips.failures)}`)
}

async function main () {
  const etcd = await startEtcd()
  const backends = await startChild(lib('backend.js'), ['--names', 'blue,green', '--color-body'], { name: 'backends' })
  const urls = { blue: `http://127.0.0.1:${backends.info.servers.blue}`, green: `http://127.0.0.1:${backends.info.servers.green}` }
  const doc = { script: 'bench/fleet.js', date: new Date().toISOString(), node: process.version, machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? null, kernel: os.release() }, code: provenance(), args: { part, flips, replicas: replicaCount, pollMs, duration, connections, flipEvery, loader, front } }
  const problems = []
  try {
    if (part !== 'load') {
      const replicas = await startReplicas(replicaCount, etcd, '/bench/converge', urls)
      process.stderr.write(`[fleet] converge: ${replicaCount} replicas on ${etcd.endpoint}, ${flips} flips to ${replicas[0].id} each way\n`)
      doc.converge = [await converge(replicas, true), await converge(replicas, false)]
      for (const r of replicas) await r.stop()
      console.log('')
      console.log(`(a) flip to converged, ${replicaCount} replicas on one etcd (Node ${process.version}, poll every ${pollMs} ms)`)
      for (const c of doc.converge) {
        printConverge(c)
        if (c.failed > 0 || c.notConverged > 0) problems.push(`converge (wait ${c.wait}): ${c.failed} failed, ${c.notConverged} not converged`)
        if (!(c.allAppliedMs.p99 < CONVERGE_P99_TARGET_MS)) problems.push(`converge (wait ${c.wait}): polled p99 ${fmt(c.allAppliedMs.p99)} ms >= ${CONVERGE_P99_TARGET_MS} ms`)
      }
    }
    if (part !== 'converge') {
      const replicas = await startReplicas(2, etcd, '/bench/load', urls)
      process.stderr.write(`[fleet] load: ${loader} on ${replicas.map((r) => r.url).join(' and ')} for ${duration} s\n`)
      doc.load = await underLoad(replicas, backends)
      for (const r of replicas) await r.stop()
      console.log('')
      console.log('(b) flips under load, two replicas')
      printLoad(doc.load)
      const l = doc.load
      if (l.non2xx > 0 || l.errors > 0) problems.push(`load: ${l.non2xx} non-2xx, ${l.errors} socket errors`)
      if (l.flips.failed > 0 || l.flips.done === 0) problems.push(`load: ${l.flips.failed} failed flips of ${l.flips.done + l.flips.failed}`)
      if (new Set(l.after.map((a) => `${a.generation} ${a.live}`)).size !== 1) problems.push('load: the replicas ended on different states')
      if (!(l.servedPerColor.blue > 0 && l.servedPerColor.green > 0)) problems.push('load: one color served nothing')
    }
  } finally {
    await backends.stop()
    await etcd.stop()
  }
  doc.problems = problems
  doc.pass = problems.length === 0
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, JSON.stringify(doc, null, 2) + '\n')
  console.log('')
  console.log(`${doc.pass ? 'PASS' : `FAIL: ${problems.join('; ')}`}  (wrote ${relative(process.cwd(), out) || out})`)
  if (!doc.pass) process.exitCode = 1
}

/** Which code ran: the commit and whether src/ had local changes. */
function provenance () {
  const git = (...a) => { try { return execFileSync('git', ['-C', join(here, '..'), ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() } catch { return null } }
  const dirty = git('status', '--porcelain', '--', 'src')
  return { commit: process.env.SWITCHYARD_BENCH_COMMIT ?? git('rev-parse', '--short', 'HEAD'), srcChanged: dirty === null ? null : dirty !== '' }
}

await main()
