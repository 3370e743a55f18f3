// Post-flip guard under load: Switchyard in front of a healthy blue and green
// backend, 50 connections of GET load; ~2 s in, the service is flipped to
// green and green starts failing at that moment. The guard must flip back to
// blue by itself (an `auto_revert` event) within 2 probe intervals of green's
// first failure, and fewer than 1 % of the client's requests may fail.
//
// Two failure modes (both by default, each with fresh processes):
//   5xx   green answers 500 to traffic, its /healthz stays 200: only the
//         error-rate side of the guard (or passive ejection) can see it
//   down  green's /healthz answers 503 and its traffic answers 503
//
//   node bench/guard-revert.js [--mode 5xx|down|both] [--duration 10] [--connections 50]
//       [--flip-at 2] [--interval 500] [--arm after|before] [--no-passive]
//       [--poll 10] [--no-trace] [--out bench/results/guard-revert.json]
//
// --arm after (default): green is switched to failing over IPC the moment the
// flip is acknowledged (green may serve a few good answers in between).
// --arm before: switched (and confirmed by the backend) right before the flip
// request is sent, so every request green serves as the live color fails, but
// a health probe may then see the failure before the flip is done.
// --no-passive: `passive: false`, so only the guard's own checks act.
// --no-trace: without the gateway-side diagnostics (lib/trace-gateway.js:
// fsync and commit durations, routing swaps, target picks, event-loop lag),
// which are on by default. With them, "all traffic on blue after the revert"
// is checked in the gateway (no pick of green after the revert's swap);
// without them, by arrivals at green's server (none after the event + 50 ms).
// "First failure" is the first failing answer green wrote, timestamped in the
// backend child. All times are performance.timeOrigin + performance.now()
// (ms since the epoch) in each process; the gateway's event times are Date-based
// (ms resolution).
//
// Process layout as in flip-under-load.js: this process runs autocannon, the
// flip and the /v1/state poller; both backends share one child; Switchyard
// runs in another.

import { execFileSync } from 'node:child_process'
import { writeFileSync, mkdirSync, existsSync, statSync } from 'node:fs'
import os from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, removeTempDir, startChild } from './lib/children.js'
import { machineBusySeconds, treeCpuSeconds } from './lib/cpu.js'
import { load } from './lib/load.js'

const here = dirname(fileURLToPath(import.meta.url))
const lib = (f) => join(here, 'lib', f)
const args = parseArgs()
const duration = Number(args.duration ?? 10)
const connections = Number(args.connections ?? 50)
const flipAtSec = Number(args['flip-at'] ?? 2)
const intervalMs = Number(args.interval ?? 500)
const pollMs = Number(args.poll ?? 10)
const arm = String(args.arm ?? 'after')
const traceOn = args['no-trace'] !== true
const passiveOn = args['no-passive'] !== true
const modeArg = String(args.mode ?? 'both')
const modes = modeArg === 'both' ? ['5xx', 'down'] : [modeArg]
const out = typeof args.out === 'string' ? args.out : join(here, 'results', 'guard-revert.json')

const MAX_FAILED_SHARE = 0.01
const REVERT_PROBE_INTERVALS = 2
/** Requests already sent to green when the revert swapped the snapshot may still land there. */
const AFTER_REVERT_GRACE_MS = 50

if (!(duration > 0) || !(connections > 0) || !(flipAtSec > 0) || flipAtSec >= duration || !(intervalMs > 0) || !(pollMs > 0) ||
    !['before', 'after'].includes(arm) || !modes.every((m) => m === '5xx' || m === 'down')) {
  console.error('usage: node bench/guard-revert.js [--mode 5xx|down|both] [--duration SEC] [--connections N] [--flip-at SEC < duration] [--interval MS] [--arm after|before] [--no-passive] [--no-trace] [--poll MS] [--out FILE]')
  process.exit(2)
}
if (!existsSync(join(here, '..', 'dist', 'gateway.js'))) {
  console.error('dist/ is missing: run `npm run build` first')
  process.exit(2)
}

const now = () => performance.timeOrigin + performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const round = (x, d = 1) => x === null || x === undefined ? null : Math.round(x * 10 ** d) / 10 ** d
const fmt = (x, d = 1) => x === null || x === undefined ? '-' : x.toFixed(d)

function serviceConfig (urls) {
  return {
    pathPrefix: '/',
    live: 'blue',
    blue: [urls.blue],
    green: [urls.green],
    health: { path: '/healthz', interval: `${intervalMs}ms`, timeout: `${Math.floor(intervalMs / 2)}ms`, healthyThreshold: 2, unhealthyThreshold: 2 },
    guard: { window: '30s', maxErrorRate: 0.05, minRequests: 20 },
    passive: passiveOn ? { consecutiveFailures: 5, baseEjectionTime: '30s', maxEjectionTime: '300s' } : false,
  }
}

async function getJson (url, init) {
  const res = await fetch(url, init)
  return { status: res.status, body: await res.json() }
}

/** Until both colors are healthy (probed) and /readyz says ready. */
async function waitHealthy (adminUrl, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    const ready = await getJson(`${adminUrl}/readyz`)
    last = (await getJson(`${adminUrl}/v1/state`)).body
    const env = last.services.svc.environments
    if (ready.status === 200 && env.blue.healthy === 1 && env.green.healthy === 1) return last
    await sleep(50)
  }
  throw new Error(`blue and green not both healthy after ${timeoutMs} ms: ${JSON.stringify(last?.services?.svc?.environments)}`)
}

/** Polls /v1/state every `pollMs` until live is back on blue or `until` passes. */
async function pollUntilBlue (adminUrl, until) {
  const polls = []
  while (now() < until) {
    const sent = now()
    let live = null
    let guard = null
    try {
      const { body } = await getJson(`${adminUrl}/v1/state`)
      live = body.services.svc.live
      guard = body.services.svc.guard
    } catch (err) {
      live = `error: ${err.message}`
    }
    const received = now()
    polls.push({ sent, received, live, guardActive: guard?.active === true })
    if (live === 'blue') return { polls, blueAt: received, blueSentAt: sent, lastGreen: polls.at(-2) ?? null }
    await sleep(pollMs)
  }
  return { polls, blueAt: null, blueSentAt: null, lastGreen: polls.at(-1) ?? null }
}

async function runMode (mode) {
  const backends = await startChild(lib('backend.js'), ['--names', 'blue,green', '--color-body', '--timeline', '--health-path', '/healthz'], { name: 'backends' })
  const dir = makeTempDir('switchyard-guard-')
  let gw
  try {
    const urls = { blue: `http://127.0.0.1:${backends.info.servers.blue}`, green: `http://127.0.0.1:${backends.info.servers.green}` }
    const svcConfig = serviceConfig(urls)
    gw = await startChild(lib('switchyard.js'), ['--dir', dir, '--config-json', JSON.stringify({ svc: svcConfig }), ...(traceOn ? ['--trace'] : [])], { name: 'switchyard' })
    const { url, adminUrl } = gw.info
    await waitHealthy(adminUrl)

    process.stderr.write(`[guard ${mode}] ${connections} connections for ${duration}s against ${url}; flip to green at ${flipAtSec}s, green fails (${mode}) ${arm} the flip\n`)

    // Client-side record: every non-2xx and error with its time, and answers per 10 ms.
    const clientFailures = [] // [time, status or 'error']
    const answered = new Map() // floor(t / 10) -> answers
    const onResponse = (status) => {
      const t = now()
      const k = Math.floor(t / 10)
      answered.set(k, (answered.get(k) ?? 0) + 1)
      if (status < 200 || status >= 300) clientFailures.push([t, status])
    }
    const onError = (err) => { clientFailures.push([now(), `error:${err?.code ?? err?.message ?? err}`]) }

    const cpu0 = { gw: treeCpuSeconds(gw.child.pid), backends: treeCpuSeconds(backends.child.pid), self: process.cpuUsage(), machine: machineBusySeconds(), wall: now() }
    const loadStarted = now()
    const loadDone = load(url, { connections, duration, title: `guard-revert ${mode}`, onResponse, onError })

    await sleep(flipAtSec * 1000)
    const t = { loadStarted }
    const fault = async () => {
      const reply = await backends.request({ type: 'fault', name: 'green', mode })
      if (reply.error !== undefined) throw new Error(reply.error)
      return reply.at
    }
    if (arm === 'before') t.armedAt = await fault()
    t.flipSentAt = now()
    const flip = await getJson(`${adminUrl}/v1/flip`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ services: ['svc'], reason: `guard-revert bench (${mode})` }),
    })
    t.flipAckAt = now()
    if (arm === 'after') t.armedAt = await fault()
    const flipOk = flip.status === 200 && flip.body.changes?.length === 1 && flip.body.changes[0].to === 'green'

    const loadEndsAt = loadStarted + duration * 1000
    const poll = flipOk ? await pollUntilBlue(adminUrl, loadEndsAt) : { polls: [], blueAt: null, blueSentAt: null, lastGreen: null }

    const r = await loadDone
    const loadEnded = now()
    const cpu1 = { gw: treeCpuSeconds(gw.child.pid), backends: treeCpuSeconds(backends.child.pid), self: process.cpuUsage(cpu0.self), machine: machineBusySeconds(), wall: now() }
    await sleep(300) // let the last in-flight answers settle
    const events = (await getJson(`${adminUrl}/v1/events`)).body.events
    const state = (await getJson(`${adminUrl}/v1/state`)).body

    const flipEvent = events.find((e) => e.type === 'flip' && e.generation === flip.body.generation) ?? null
    const afterFlip = flipEvent === null ? [] : events.filter((e) => e.id > flipEvent.id)
    const reverts = afterFlip.filter((e) => e.type === 'auto_revert')
    const revert = reverts[0] ?? null
    const revertAt = revert === null ? null : Date.parse(revert.time)
    const healthEvents = afterFlip.filter((e) => e.type === 'health').map((e) => ({ time: e.time, at: Date.parse(e.time), target: e.target === urls.green ? 'green' : e.target === urls.blue ? 'blue' : e.target, from: e.from, to: e.to, healthy: e.healthy ?? (e.to === 'healthy'), reason: e.reason }))

    // The backend's view: when green first failed, and who got traffic after the revert.
    const g0 = (await backends.request({ type: 'timeline' })).servers.green
    const firstFailureAt = [g0.firstTrafficFailureAt, g0.firstProbeFailureAt].filter((x) => x !== null).reduce((a, b) => Math.min(a, b), Infinity)
    const first = Number.isFinite(firstFailureAt) ? firstFailureAt : null
    const from = (first ?? t.flipAckAt) - 50
    const to = Math.max(revertAt ?? 0, poll.blueAt ?? 0, first ?? 0) + 200
    const tl = await backends.request({ type: 'timeline', after: revertAt ?? loadEnded, from, to, bucketMs: 5 })
    const tlGrace = await backends.request({ type: 'timeline', after: (revertAt ?? loadEnded) + AFTER_REVERT_GRACE_MS })
    const green = tl.servers.green
    let gwTrace = traceOn ? (await gw.request({ type: 'trace' })).trace : null
    // The routing swap of the auto-revert (the first swap after the flip's), then
    // the gateway's own count of requests it sent to green after it.
    const flipSwapAt = gwTrace?.swaps.find((x) => x >= t.flipSentAt) ?? null
    const revertSwapAt = flipSwapAt === null ? null : gwTrace.swaps.find((x) => x > flipSwapAt) ?? null
    if (revertSwapAt !== null) gwTrace = (await gw.request({ type: 'trace', after: revertSwapAt })).trace
    const greenPicks = gwTrace?.picks?.[urls.green] ?? null
    const bluePicks = gwTrace?.picks?.[urls.blue] ?? null
    const greenPicksAfterRevert = revertSwapAt === null || gwTrace === null ? null : (greenPicks?.after ?? 0)
    const backendStalls = tl.stalls ?? []
    const blue = tl.servers.blue

    // Client failures: where (status) and when, relative to green's first failure.
    const rel = (x) => x === null || x === undefined || first === null ? null : round(x - first)
    const byStatus = {}
    for (const [, s] of clientFailures) byStatus[s] = (byStatus[s] ?? 0) + 1
    const failTimes = clientFailures.map(([x]) => x)
    const clientFailed = r.non2xx + r.errors
    const total = r.ok2xx + r.non2xx + r.errors
    const share = total === 0 ? null : clientFailed / total
    const clientFailuresAfterRevert = revertAt === null ? null : failTimes.filter((x) => x > revertAt + AFTER_REVERT_GRACE_MS).length
    // Answers the gateway wrote itself (no_healthy_upstream 503, 502s): client failures
    // that green did not write. Exact when nothing failed before the flip.
    const fromGreen = green.trafficFailures
    const fromGateway = clientFailed - fromGreen

    const answersAround = []
    if (first !== null) {
      for (let k = Math.floor((first - 50) / 10); k <= Math.floor(((revertAt ?? first) + 100) / 10); k++) answersAround.push(answered.get(k) ?? 0)
    }

    const revertMs = revertAt === null || first === null ? null : revertAt - first
    const stateMs = poll.blueAt === null || first === null ? null : poll.blueAt - first
    const budgetMs = REVERT_PROBE_INTERVALS * intervalMs
    const ejection = healthEvents.find((e) => e.target === 'green' && e.healthy === false) ?? null

    const wall = (cpu1.wall - cpu0.wall) / 1000
    const cores = (s) => s === null ? null : s / wall
    const cpu = {
      gatewayCores: round(cores(cpu1.gw === null ? null : cpu1.gw - cpu0.gw), 2),
      backendsCores: round(cores(cpu1.backends === null ? null : cpu1.backends - cpu0.backends), 2),
      autocannonCores: round((cpu1.self.user + cpu1.self.system) / 1e6 / wall, 2),
      machineCores: round(cores(cpu1.machine === null ? null : cpu1.machine - cpu0.machine), 2),
    }
    cpu.otherCores = cpu.machineCores === null ? null : round(Math.max(0, cpu.machineCores - (cpu.gatewayCores ?? 0) - (cpu.backendsCores ?? 0) - cpu.autocannonCores), 2)

    const problems = []
    if (!flipOk) problems.push(`flip to green failed: ${flip.status} ${JSON.stringify(flip.body)}`)
    if (first === null) problems.push('green never failed')
    if (revert === null) problems.push('no auto_revert event')
    if (reverts.length > 1) problems.push(`${reverts.length} auto_revert events`)
    if (revertMs !== null && revertMs > budgetMs) problems.push(`auto_revert ${fmt(revertMs)} ms after green's first failure (budget ${budgetMs} ms)`)
    if (poll.blueAt === null) problems.push('/v1/state never showed blue live again during the load')
    if (stateMs !== null && stateMs > budgetMs) problems.push(`/v1/state showed blue ${fmt(stateMs)} ms after green's first failure (budget ${budgetMs} ms)`)
    if (share !== null && share >= MAX_FAILED_SHARE) problems.push(`${clientFailed} failed requests = ${fmt(share * 100, 2)} % of ${total} (limit ${MAX_FAILED_SHARE * 100} %)`)
    if (state.services.svc.live !== 'blue') problems.push(`live is ${state.services.svc.live} at the end`)
    // "All traffic on blue after the revert": with the trace, the gateway's own
    // picks (exact); without it, arrivals at the backend, 50 ms of grace for requests
    // sent before the swap. (Arrival times also carry the backend process's stalls.)
    if (greenPicksAfterRevert !== null) {
      if (greenPicksAfterRevert > 0) problems.push(`the gateway sent ${greenPicksAfterRevert} requests to green after the revert's routing swap`)
      if ((bluePicks?.after ?? 0) === 0) problems.push('the gateway sent no request to blue after the revert')
    } else if (revertAt !== null) {
      if (tlGrace.servers.green.trafficAfter > 0) problems.push(`green still got ${tlGrace.servers.green.trafficAfter} requests more than ${AFTER_REVERT_GRACE_MS} ms after the revert`)
      if (tlGrace.servers.blue.trafficAfter === 0) problems.push('blue got no traffic after the revert')
    }
    const inflight = { blue: state.services.svc.environments.blue.inflight, green: state.services.svc.environments.green.inflight }
    if (inflight.blue !== 0 || inflight.green !== 0) problems.push(`in-flight counters not back to 0: ${JSON.stringify(inflight)}`)

    return {
      mode,
      arm,
      passive: passiveOn,
      probeIntervalMs: intervalMs,
      budgetMs,
      config: svcConfig,
      load: { connections, durationSec: r.durationSec, reqPerSec: Math.round(r.reqPerSec), latencyMs: r.latencyMs, statusCodes: r.statusCodes, errorKinds: r.errorKinds },
      requests: { total, ok2xx: r.ok2xx, non2xx: r.non2xx, errors: r.errors, failed: clientFailed, failedShare: share, failedByStatus: byStatus, fromGreen, fromGateway },
      times: {
        // absolute (ms since the epoch)
        loadStarted: t.loadStarted, armedAt: t.armedAt, flipSentAt: t.flipSentAt, flipAckAt: t.flipAckAt,
        firstFailureAt: first, firstTrafficFailureAt: g0.firstTrafficFailureAt, firstProbeFailureAt: g0.firstProbeFailureAt,
        autoRevertEventAt: revertAt, stateBlueAt: poll.blueAt,
      },
      relativeToFirstFailureMs: {
        armed: rel(t.armedAt),
        flipSent: rel(t.flipSentAt),
        flipAck: rel(t.flipAckAt),
        firstProbeFailure: rel(g0.firstProbeFailureAt),
        greenFirstRequest: rel(g0.firstTrafficAt),
        greenEjectedOrUnhealthy: rel(ejection?.at),
        autoRevertEvent: rel(revertAt),
        stateLastShowedGreen: rel(poll.lastGreen?.received),
        stateShowedBlue: rel(poll.blueAt),
        stateShowedBlueRequestSent: rel(poll.blueSentAt),
        lastGreenFailure: rel(green.lastTrafficFailureAt),
        lastGreenTraffic: rel(green.lastTrafficAt),
        firstClientFailure: rel(failTimes[0]),
        lastClientFailure: rel(failTimes.at(-1)),
      },
      revertMs: round(revertMs),
      stateBlueMs: round(stateMs),
      flipLatencyMs: round(t.flipAckAt - t.flipSentAt),
      flipSwapToGreenFirstRequestMs: flipSwapAt === null || g0.firstTrafficAt === null ? null : round(g0.firstTrafficAt - flipSwapAt),
      greenOkBeforeFirstFailure: g0.traffic - g0.trafficFailures,
      statePolls: poll.polls.length,
      trip: revert?.trip ?? null,
      autoRevert: revert,
      autoReverts: reverts.length,
      healthEvents,
      afterRevert: {
        graceMs: AFTER_REVERT_GRACE_MS,
        greenTrafficAfterEvent: green.trafficAfter,
        greenTrafficAfterGrace: tlGrace.servers.green.trafficAfter,
        blueTrafficAfterGrace: tlGrace.servers.blue.trafficAfter,
        gatewayGreenPicksAfterSwap: greenPicksAfterRevert,
        gatewayBluePicksAfterSwap: bluePicks?.after ?? null,
        gatewayLastGreenPickRel: rel(greenPicks?.last),
        revertSwapRel: rel(revertSwapAt),
        backendStallsRel: backendStalls.map(([x, late]) => [rel(x), round(late)]),
        clientFailuresAfterGrace: clientFailuresAfterRevert,
        liveAtEnd: state.services.svc.live,
        guardAtEnd: state.services.svc.guard,
        greenAtEnd: state.services.svc.environments.green,
        inflightAtEnd: inflight,
      },
      backend: {
        green: { traffic: g0.traffic, trafficFailures: g0.trafficFailures, probes: g0.probes, probeFailures: g0.probeFailures, probeFailureTimesRel: green.probeFailureTimes.map(rel) },
        blue: { traffic: blue.traffic },
      },
      timeline: {
        note: 'buckets start 50 ms before green\'s first failure (backend: 5 ms buckets; client answers: 10 ms buckets)',
        greenTraffic5ms: green.trafficBuckets,
        greenFailures5ms: green.failureBuckets,
        blueTraffic5ms: blue.trafficBuckets,
        clientAnswers10ms: answersAround,
      },
      gateway: gwTrace === null ? null : summarizeTrace(gwTrace, { first, flipSentAt: t.flipSentAt, revertAt, rel }),
      cpu,
      loadavg: os.loadavg().map((x) => round(x, 2)),
      problems,
      pass: problems.length === 0,
    }
  } finally {
    if (gw !== undefined) await gw.stop()
    removeTempDir(dir)
    await backends.stop()
  }
}

/** The gateway's side: how long the flip and the revert took to commit, their fsyncs, event-loop lag. */
function summarizeTrace (tr, { first, flipSentAt, revertAt, rel }) {
  const inside = (c) => tr.fsyncs.filter((f) => f.start >= c.start && f.start <= c.start + c.ms).map((f) => round(f.ms))
  const commits = tr.commits.filter((c) => c.start >= flipSentAt - 1).map((c) => {
    const save = tr.saves.find((x) => x.generation === c.generation && x.start >= c.start)
    const swap = tr.swaps.find((x) => x >= c.start && x <= c.start + c.ms)
    return { type: c.type, generation: c.generation, startRel: rel(c.start), ms: round(c.ms), saveMs: round(save?.ms), fsyncsMs: inside(c), swapRel: rel(swap) }
  })
  const autoReverts = tr.autoReverts.map((a) => ({ startRel: rel(a.start), ms: round(a.ms), reason: a.reason, requests: a.requests, errors: a.errors }))
  const lagStats = (from, to) => {
    const xs = tr.lag.filter(([x]) => x >= from && x <= to).map(([, l]) => l).sort((a, b) => a - b)
    if (xs.length === 0) return null
    return { samples: xs.length, p50: round(xs[Math.floor(xs.length / 2)]), p99: round(xs[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]), max: round(xs.at(-1)) }
  }
  const end = Math.max(revertAt ?? 0, first ?? 0)
  return {
    commits,
    autoReverts,
    eventLoopLagMs: {
      note: 'lateness of a 5 ms timer in the gateway process',
      beforeFlip: lagStats(flipSentAt - 1000, flipSentAt),
      flipToRevert: end > flipSentAt ? lagStats(flipSentAt, end) : null,
    },
  }
}

function report (m) {
  const rt = m.relativeToFirstFailureMs
  console.log('')
  console.log(`guard-revert, mode ${m.mode} (green ${m.mode === '5xx' ? 'answers 500, /healthz 200' : 'answers 503, /healthz 503'}; armed ${m.arm} the flip; passive ${m.passive ? 'on' : 'off'})`)
  console.log(`  requests: ${m.requests.total} (${m.load.reqPerSec} req/s); failed: ${m.requests.failed} = ${fmt(m.requests.failedShare * 100, 3)} % ${JSON.stringify(m.requests.failedByStatus)} (written by green: ${m.requests.fromGreen}, by the gateway: ${m.requests.fromGateway})`)
  console.log(`  probe interval ${m.probeIntervalMs} ms, budget ${m.budgetMs} ms; flip took ${fmt(m.flipLatencyMs)} ms; green's first request ${fmt(m.flipSwapToGreenFirstRequestMs)} ms after the flip's routing swap; green answered ${m.greenOkBeforeFirstFailure} request(s) OK`)
  console.log(`  green's first failure -> auto_revert event: ${fmt(m.revertMs)} ms; -> /v1/state showed blue: ${fmt(m.stateBlueMs)} ms (${m.statePolls} polls)`)
  console.log(`  trip: ${m.trip === null ? '-' : `${m.trip.reason} (${m.trip.errors}/${m.trip.requests} errors, ${m.trip.healthyTargets} healthy)`}; reason: ${m.autoRevert?.reason ?? '-'}`)
  console.log(`  timeline (ms from green's first failure): armed ${fmt(rt.armed)}, flip sent ${fmt(rt.flipSent)}, ack ${fmt(rt.flipAck)}, green ejected/unhealthy ${fmt(rt.greenEjectedOrUnhealthy)}, auto_revert ${fmt(rt.autoRevertEvent)}, state blue ${fmt(rt.stateShowedBlue)}, last green failure ${fmt(rt.lastGreenFailure)}, last client failure ${fmt(rt.lastClientFailure)}, first probe failure ${fmt(rt.firstProbeFailure)}`)
  const ar = m.afterRevert
  const gwSide = ar.gatewayGreenPicksAfterSwap === null ? '' : `gateway sent ${ar.gatewayGreenPicksAfterSwap} to green and ${ar.gatewayBluePicksAfterSwap} to blue after the swap (last green pick at ${fmt(ar.gatewayLastGreenPickRel)} ms); `
  const stalls = ar.backendStallsRel.length === 0 ? '' : `; backend process stalls (at ms, late by ms): ${JSON.stringify(ar.backendStallsRel)}`
  console.log(`  after the revert: live ${ar.liveAtEnd}; ${gwSide}green's server saw ${ar.greenTrafficAfterEvent} requests after the event, ${ar.greenTrafficAfterGrace} after +${ar.graceMs} ms; blue's saw ${ar.blueTrafficAfterGrace}; client failures after +${ar.graceMs} ms: ${ar.clientFailuresAfterGrace}${stalls}`)
  if (m.gateway !== null) {
    const c = (type) => m.gateway.commits.find((x) => x.type === type)
    const f = c('flip')
    const a = c('auto_revert')
    const ar = m.gateway.autoReverts[0]
    const lag = m.gateway.eventLoopLagMs
    console.log(`  gateway: flip commit ${fmt(f?.ms)} ms (state file save ${fmt(f?.saveMs)} ms, of which fsyncs ${JSON.stringify(f?.fsyncsMs ?? [])} ms); trip at ${fmt(ar?.startRel)} ms, routing swapped back at ${fmt(a?.swapRel)} ms (trip -> swap ${fmt(a?.swapRel == null || ar?.startRel == null ? null : a.swapRel - ar.startRel)} ms), revert commit incl. state file ${fmt(a?.ms)} ms (save ${fmt(a?.saveMs)} ms, fsyncs ${JSON.stringify(a?.fsyncsMs ?? [])} ms); event-loop lag p50/p99/max before the flip ${fmt(lag.beforeFlip?.p50)}/${fmt(lag.beforeFlip?.p99)}/${fmt(lag.beforeFlip?.max)} ms, flip..revert ${fmt(lag.flipToRevert?.p50)}/${fmt(lag.flipToRevert?.p99)}/${fmt(lag.flipToRevert?.max)} ms`)
  }
  console.log(`  CPU (cores): gateway ${fmt(m.cpu.gatewayCores, 2)}, backends ${fmt(m.cpu.backendsCores, 2)}, autocannon ${fmt(m.cpu.autocannonCores, 2)}, other ${fmt(m.cpu.otherCores, 2)}; loadavg ${m.loadavg.join(' ')}`)
  console.log(m.pass ? '  PASS' : `  FAIL: ${m.problems.join('; ')}`)
}

/** Which code ran: the commit, whether src/ had local changes, and dist/'s build time. */
function provenance () {
  const root = join(here, '..')
  const git = (...a) => { try { return execFileSync('git', ['-C', root, ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() } catch { return null } }
  const dirty = git('status', '--porcelain', '--', 'src')
  let distBuilt = null
  try { distBuilt = statSync(join(root, 'dist', 'gateway.js')).mtime.toISOString() } catch {}
  return { commit: git('rev-parse', '--short', 'HEAD'), srcChanged: dirty === null ? null : dirty !== '', distBuilt }
}

const codeBefore = provenance()
const results = []
for (const mode of modes) {
  const m = await runMode(mode)
  results.push(m)
  report(m)
}

const cpus = os.cpus()
const doc = {
  script: 'bench/guard-revert.js',
  date: new Date().toISOString(),
  node: process.version,
  machine: { cpus: cpus.length, model: cpus[0]?.model ?? null, memGB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), platform: process.platform },
  targets: { revertWithinProbeIntervals: REVERT_PROBE_INTERVALS, maxFailedShare: MAX_FAILED_SHARE, afterRevertGraceMs: AFTER_REVERT_GRACE_MS },
  code: codeBefore,
  args: { duration, connections, flipAtSec, intervalMs, pollMs, arm, passive: passiveOn, trace: traceOn, modes },
  modes: Object.fromEntries(results.map((m) => [m.mode, m])),
  pass: results.every((m) => m.pass),
}
// dist/ is shared: a rebuild during the run means the numbers mix two builds.
const codeAfter = provenance()
if (codeAfter.distBuilt !== codeBefore.distBuilt) {
  doc.code.distRebuiltDuringRun = codeAfter.distBuilt
  console.log(`WARNING: dist/ was rebuilt during the run (${codeBefore.distBuilt} -> ${codeAfter.distBuilt}); the processes started after that ran the new build`)
}
mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, JSON.stringify(doc, null, 2) + '\n')
console.log('')
console.log(`${doc.pass ? 'PASS' : 'FAIL'}: ${results.map((m) => `${m.mode} ${m.pass ? 'ok' : 'missed'}`).join(', ')}  (wrote ${relative(process.cwd(), out) || out})`)
if (!doc.pass) process.exitCode = 1
