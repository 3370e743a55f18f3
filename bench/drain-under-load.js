// Drain under load: Switchyard in front of a blue and a green backend (each
// answers HTTP 200 with its color and echoes WebSocket messages as
// "COLOR:message"). 200 WebSockets are opened through the gateway while blue is
// live and keep chatting (a message every 500 ms each, echo checked), and
// autocannon runs 50 connections of GET for 10 s. After 2 s the service is
// flipped to green. With `drain: { timeout: 5s }` the WebSockets stay on blue
// (and keep working) while it drains, then the gateway closes them with 1001,
// spread over a short jittered interval, and records a `drained` event.
//
//   node bench/drain-under-load.js [--duration 10] [--connections 50] [--websockets 200]
//       [--ws-interval 500] [--ws-size 32] [--flip-at 2] [--drain-timeout 5s] [--access-log] [--out FILE]
//
// Exits non-zero on any HTTP error or non-2xx, any WebSocket closed with a code
// other than 1001 (or not closed at all), and on the other checks listed at
// the end of main(). Clients never reconnect: closes are counted, not undone.
//
// Process layout: this process runs autocannon, the flip and the admin
// polling; the WebSocket clients run in their own child (ws-clients.js), so
// their timestamps do not wait for autocannon's event loop; both backends
// share one child (backend.js --ws-echo); Switchyard runs in another.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, removeTempDir, startChild } from './lib/children.js'
import { machineBusySeconds, treeCpuSeconds } from './lib/cpu.js'
import { load } from './lib/load.js'

const here = dirname(fileURLToPath(import.meta.url))
const lib = (f) => join(here, 'lib', f)
const args = parseArgs()
const duration = Number(args.duration ?? 10)
const connections = Number(args.connections ?? 50)
const websockets = Number(args.websockets ?? 200)
const wsInterval = Number(args['ws-interval'] ?? 500)
const wsSize = Number(args['ws-size'] ?? 32)
const flipAt = Number(args['flip-at'] ?? 2)
const drainText = String(args['drain-timeout'] ?? '5s')
const drainMs = parseDuration(drainText)
const out = typeof args.out === 'string' ? args.out : join(here, 'results', 'drain-under-load.json')

if (!(duration > 0) || !(connections > 0) || !(websockets > 0) || !(wsInterval > 0) || !(wsSize > 0) || !(flipAt >= 0) || !(drainMs > 0)) {
  console.error('usage: node bench/drain-under-load.js [--duration SEC] [--connections N] [--websockets N] [--ws-interval MS] [--ws-size BYTES] [--flip-at SEC] [--drain-timeout 5s] [--out FILE]')
  process.exit(2)
}
if (!existsSync(join(here, '..', 'dist', 'gateway.js'))) {
  console.error('dist/ is missing: run `npm run build` first')
  process.exit(2)
}

/** "5s", "500ms", "1m", or a bare number of seconds. */
function parseDuration (text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim())
  if (m === null) return NaN
  const n = Number(m[1])
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => performance.timeOrigin + performance.now()
const getJson = async (url) => await (await fetch(url)).json()

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}
const round = (x, d = 1) => x === null || x === undefined ? null : Math.round(x * 10 ** d) / 10 ** d
const fmt = (x, d = 1) => x === null || x === undefined ? '-' : x.toFixed(d)

/** GET /v1/state every `everyMs` until stopped: blue/green state, inflight and websockets. */
function startStatePoller (adminUrl, everyMs) {
  const samples = []
  let running = true
  const done = (async () => {
    while (running) {
      const t = now()
      try {
        const env = (await getJson(`${adminUrl}/v1/state`)).services.svc.environments
        const pick = (e) => ({ state: e.state, inflight: e.inflight, websockets: e.websockets })
        samples.push({ t, blue: pick(env.blue), green: pick(env.green) })
      } catch (err) {
        samples.push({ t, error: err.message })
      }
      const wait = t + everyMs - now()
      if (wait > 0 && running) await sleep(wait)
    }
  })()
  return { samples, stop: async () => { running = false; await done } }
}

async function main () {
  const backends = await startChild(lib('backend.js'), ['--names', 'blue,green', '--color-body', '--ws-echo'], { name: 'backends' })
  const urls = { blue: `http://127.0.0.1:${backends.info.servers.blue}`, green: `http://127.0.0.1:${backends.info.servers.green}` }
  const dir = makeTempDir('switchyard-drain-')
  let gw, clients
  /** CPU seconds so far: gateway, backends, WebSocket clients, this process, whole machine. */
  const cpuNow = () => ({ gw: treeCpuSeconds(gw?.child.pid), backends: treeCpuSeconds(backends.child.pid), clients: treeCpuSeconds(clients?.child.pid), self: process.cpuUsage(), machine: machineBusySeconds() })
  /** Average cores used by each since `c0`, and by everything else on the machine ("other"). */
  const cpuSince = (c0, sec) => {
    const c1 = cpuNow()
    const d = (k) => c0[k] === null || c1[k] === null ? null : round((c1[k] - c0[k]) / sec, 2)
    const self = round((c1.self.user + c1.self.system - c0.self.user - c0.self.system) / 1e6 / sec, 2)
    const out = { gateway: d('gw'), backends: d('backends'), wsClients: d('clients'), benchAndAutocannon: self, machine: d('machine') }
    out.other = out.machine === null ? null : round(Math.max(0, out.machine - (out.gateway ?? 0) - (out.backends ?? 0) - (out.wsClients ?? 0) - self), 2)
    return out
  }
  try {
    // The access log (on by default, to stdout, in builds that have one) would flood this output: off unless --access-log.
    const { DEFAULTS } = await import('../dist/config/schema.js')
    const top = DEFAULTS.log !== undefined && args['access-log'] !== true ? ['--top-json', JSON.stringify({ log: { access: false } })] : []
    gw = await startChild(lib('switchyard.js'), ['--dir', dir, ...top, '--config-json', JSON.stringify({
      svc: { pathPrefix: '/', live: 'blue', blue: [urls.blue], green: [urls.green], drain: { timeout: drainText } },
    })], { name: 'switchyard' })
    const { url, adminUrl } = gw.info
    const wsUrl = `${url.replace(/^http/, 'ws')}/ws`

    process.stderr.write(`[drain] opening ${websockets} WebSockets to ${wsUrl}\n`)
    clients = await startChild(lib('ws-clients.js'), ['--url', wsUrl, '--count', String(websockets), '--interval', String(wsInterval), '--size', String(wsSize)], { name: 'ws-clients', timeoutMs: 60_000 })
    const opened = clients.info
    const stateBefore = (await getJson(`${adminUrl}/v1/state`)).services.svc.environments
    process.stderr.write(`[drain] ${opened.opened} open in ${Math.round(opened.openMs)} ms (${JSON.stringify(opened.colors)}); gateway counts blue ${stateBefore.blue.websockets}, green ${stateBefore.green.websockets}\n`)

    const poller = startStatePoller(adminUrl, 100)
    const chatStart = (await clients.request({ type: 'start' })).at
    process.stderr.write(`[drain] ${connections} HTTP connections for ${duration}s against ${url}; flip to green at ${flipAt}s, drain.timeout ${drainText}\n`)
    const cpu0 = cpuNow()
    const loadStart = now()
    const loading = load(url, { connections, duration, title: 'drain-under-load' })

    // The flip, once, at flipAt.
    await sleep(Math.max(0, loadStart + flipAt * 1000 - now()))
    const flip = { sentAt: now() }
    try {
      const res = await fetch(`${adminUrl}/v1/flip`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ services: ['svc'], reason: 'drain-under-load bench' }),
      })
      flip.status = res.status
      flip.body = await res.json()
    } catch (err) {
      flip.error = err.message
    }
    flip.ackAt = now()
    const countsAtFlip = (await backends.request({ type: 'stats' })).counts
    process.stderr.write(`[drain] flip: ${flip.status ?? flip.error} in ${Math.round(flip.ackAt - flip.sentAt)} ms ${JSON.stringify(flip.body?.changes ?? '')}\n`)

    const r = await loading
    const loadEnd = now()
    const cpu = cpuSince(cpu0, (loadEnd - loadStart) / 1000)

    // The drained event (the load may end before the drain does).
    const waitUntil = flip.ackAt + drainMs + 10_000
    let drained
    while (drained === undefined && now() < waitUntil) {
      drained = (await getJson(`${adminUrl}/v1/events?type=drained`)).events.find((e) => e.service === 'svc' && e.color === 'blue')
      if (drained === undefined) await sleep(100)
    }
    await sleep(300) // let the last closes and in-flight answers settle
    await poller.stop()
    const stateAfter = (await getJson(`${adminUrl}/v1/state`)).services.svc.environments
    const flipEvents = (await getJson(`${adminUrl}/v1/events?type=flip`)).events
    const countsEnd = (await backends.request({ type: 'stats' })).counts
    const upstreamWs = (await backends.request({ type: 'ws-stats' })).servers
    const { sockets } = await clients.request({ type: 'report' })

    // --- WebSocket numbers. The drain's start (gateway clock) is the flip's swap.
    const drainStart = drained !== undefined ? Date.parse(drained.startedAt) : (flipEvents.at(-1) !== undefined ? Date.parse(flipEvents.at(-1).time) : flip.ackAt)
    const deadline = drainStart + drainMs
    const expectedSpreadMs = Math.min(1000, drainMs / 10)
    const codes = {}
    let echoedAfterFlip = 0; let echoedLastSecond = 0; let socketsNoEchoAfterFlip = 0; let pendingAtClose = 0; let mismatched = 0; let sent = 0; let echoed = 0
    const closeOffsets = []
    const rttBefore = []; const rttAfter = []
    /** Echo round trips per second of the run, second 0 starting at the flip. */
    const rttBySecond = new Map()
    let notClosed = 0
    for (const s of sockets) {
      sent += s.sent
      echoed += s.echoed
      mismatched += s.mismatched
      if (s.closeAt === null) { notClosed++; continue }
      codes[s.code] = (codes[s.code] ?? 0) + 1
      closeOffsets.push(s.closeAt - deadline)
      pendingAtClose += s.pending
      let after = 0
      s.echoTimes.forEach((t, k) => {
        if (t > drainStart) { after++; rttAfter.push(s.rtts[k]) } else rttBefore.push(s.rtts[k])
        const sec = Math.floor((t - drainStart) / 1000)
        if (!rttBySecond.has(sec)) rttBySecond.set(sec, [])
        rttBySecond.get(sec).push(s.rtts[k])
        if (t > deadline - 1000 && t <= deadline) echoedLastSecond++
      })
      echoedAfterFlip += after
      if (s.openAt !== null && after === 0) socketsNoEchoAfterFlip++
    }
    closeOffsets.sort((a, b) => a - b)
    rttBefore.sort((a, b) => a - b)
    rttAfter.sort((a, b) => a - b)
    const closedEarly = closeOffsets.filter((x) => x < 0).length
    const blueAfterFlip = countsEnd.blue - countsAtFlip.blue

    // When the gateway showed blue as idle, and its websockets count over time.
    const firstIdle = poller.samples.find((x) => x.t > flip.ackAt && x.blue?.state === 'idle')
    const wsTimeline = poller.samples.filter((x) => x.t > deadline - 300 && x.t < deadline + expectedSpreadMs + 2000).map((x) => [Math.round(x.t - deadline), x.blue?.websockets, x.blue?.state])

    const result = {
      date: new Date().toISOString(),
      machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, platform: `${os.type()} ${os.release()}`, memGB: Math.round(os.totalmem() / 2 ** 30), loadavg: os.loadavg() },
      node: process.version,
      params: { duration, connections, websockets, wsIntervalMs: wsInterval, wsMessageBytes: wsSize, flipAtSec: flipAt, drainTimeout: drainText, drainMs },
      http: {
        requests: r.ok2xx + r.non2xx, requestsTotal: r.requestsTotal, reqPerSec: r.reqPerSec, latencyMs: r.latencyMs,
        ok2xx: r.ok2xx, non2xx: r.non2xx, errors: r.errors, timeouts: r.timeouts, statusCodes: r.statusCodes, errorKinds: r.errorKinds,
        servedByBackend: countsEnd, servedByBlueAfterFlipAck: blueAfterFlip,
      },
      cpuCoresDuringLoad: cpu,
      flip: { status: flip.status, error: flip.error, changes: flip.body?.changes, generation: flip.body?.generation, latencyMs: round(flip.ackAt - flip.sentAt), atSecAfterLoadStart: round((flip.sentAt - loadStart) / 1000, 3) },
      websockets: {
        opened: opened.opened, failedToOpen: opened.failed, openFailures: opened.failures, openColors: opened.colors, gatewayCountBefore: { blue: stateBefore.blue.websockets, green: stateBefore.green.websockets },
        messagesSent: sent, echoed, mismatched, echoedAfterFlip, echoedInLastSecondBeforeDeadline: echoedLastSecond, socketsWithoutEchoAfterFlip: socketsNoEchoAfterFlip,
        sentButNotEchoedAtClose: pendingAtClose,
        // Of those: the backend echoed some (the echo was dropped on its way back), never got the others.
        droppedOnTheWayBack: upstreamWs.blue.echoed + upstreamWs.green.echoed - echoed,
        neverReachedTheBackend: sent - upstreamWs.blue.echoed - upstreamWs.green.echoed,
        rttMsBySecondFromFlip: [...rttBySecond].sort((a, b) => a[0] - b[0]).map(([sec, l]) => { l.sort((a, b) => a - b); return { sec, n: l.length, p50: round(percentile(l, 50)), p99: round(percentile(l, 99)), max: round(l.at(-1)) } }),
        rttMs: { beforeFlip: { p50: round(percentile(rttBefore, 50)), p99: round(percentile(rttBefore, 99)), n: rttBefore.length }, afterFlip: { p50: round(percentile(rttAfter, 50)), p99: round(percentile(rttAfter, 99)), n: rttAfter.length } },
        closeCodes: codes, notClosed, closedBeforeDeadline: closedEarly,
        closeMsAfterDeadline: { first: round(closeOffsets[0]), p50: round(percentile(closeOffsets, 50)), last: round(closeOffsets.at(-1)), spread: closeOffsets.length > 0 ? round(closeOffsets.at(-1) - closeOffsets[0]) : null, expectedSpreadAtMost: expectedSpreadMs },
        closeReasons: [...new Set(sockets.map((s) => s.reason).filter((x) => x !== null))],
        clientErrors: sockets.flatMap((s) => s.errors).slice(0, 10),
        upstream: upstreamWs,
      },
      drain: drained === undefined
        ? null
        : { how: drained.how, durationMs: drained.durationMs, closedWebsockets: drained.closedWebsockets, closedRequests: drained.closedRequests, startedAt: drained.startedAt, eventTime: drained.time, msAfterDeadline: round(drainStart + drained.durationMs - deadline) },
      blueFirstSeenIdleMsAfterDeadline: firstIdle === undefined ? null : round(firstIdle.t - deadline),
      stateAfter: { blue: { state: stateAfter.blue.state, inflight: stateAfter.blue.inflight, websockets: stateAfter.blue.websockets }, green: { state: stateAfter.green.state, inflight: stateAfter.green.inflight, websockets: stateAfter.green.websockets } },
      blueWebsocketsAroundDeadline: wsTimeline,
      timing: { chatStart, loadStart, loadEnd, flipSentAt: flip.sentAt, flipAckAt: flip.ackAt, drainStart, deadline },
    }

    const w = result.websockets
    console.log('')
    console.log(`drain under load: ${websockets} WebSockets (a ${wsSize}-byte message every ${wsInterval} ms each) + ${connections} HTTP connections for ${r.durationSec}s, flip at ${flipAt}s, drain.timeout ${drainText} (Node ${process.version})`)
    console.log(`  HTTP: ${result.http.requests} requests (${Math.round(r.reqPerSec)} req/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, max ${r.latencyMs.max} ms); non-2xx ${r.non2xx} ${r.non2xx > 0 ? JSON.stringify(r.statusCodes) : ''}; errors ${r.errors} ${r.errors > 0 ? JSON.stringify(r.errorKinds) : ''}`)
    console.log(`        backends served blue ${countsEnd.blue}, green ${countsEnd.green}; blue after the flip was acknowledged: ${blueAfterFlip}`)
    console.log(`  CPU (cores, during the load): gateway ${fmt(cpu.gateway, 2)}, backends ${fmt(cpu.backends, 2)}, ws clients ${fmt(cpu.wsClients, 2)}, autocannon ${fmt(cpu.benchAndAutocannon, 2)}, other ${fmt(cpu.other, 2)}`)
    console.log(`  flip: ${flip.status ?? flip.error} in ${fmt(result.flip.latencyMs)} ms, ${JSON.stringify(flip.body?.changes ?? null)}`)
    console.log(`  WebSockets: ${w.opened} opened (${JSON.stringify(w.openColors)}), ${w.messagesSent} messages sent, ${w.echoed} echoed, ${w.mismatched} mismatched`)
    console.log(`    echoed after the flip, before the close: ${w.echoedAfterFlip} (${w.echoedInLastSecondBeforeDeadline} in the last second before the deadline); sockets with none: ${w.socketsWithoutEchoAfterFlip}; sent but not echoed when closed: ${w.sentButNotEchoedAtClose} (${w.droppedOnTheWayBack} echoed by blue, ${w.neverReachedTheBackend} never reached it)`)
    console.log(`    echo RTT p50/p99 ms: before the flip ${fmt(w.rttMs.beforeFlip.p50)} / ${fmt(w.rttMs.beforeFlip.p99)}, while draining ${fmt(w.rttMs.afterFlip.p50)} / ${fmt(w.rttMs.afterFlip.p99)}`)
    console.log(`    close codes at the clients: ${JSON.stringify(codes)}${notClosed > 0 ? `, NOT closed: ${notClosed}` : ''}; reasons ${JSON.stringify(w.closeReasons)}; at the blue backend: ${JSON.stringify(upstreamWs.blue.closeCodes)} (open there now: ${upstreamWs.blue.open})`)
    console.log(`    closes after the deadline (flip + ${drainText}): first ${fmt(w.closeMsAfterDeadline.first)} ms, p50 ${fmt(w.closeMsAfterDeadline.p50)} ms, last ${fmt(w.closeMsAfterDeadline.last)} ms (spread ${fmt(w.closeMsAfterDeadline.spread)} ms, gateway jitter at most ${expectedSpreadMs} ms); before the deadline: ${closedEarly}`)
    if (result.drain !== null) {
      console.log(`  drained event: how ${result.drain.how}, durationMs ${result.drain.durationMs} (${fmt(result.drain.msAfterDeadline)} ms after the deadline), closedWebsockets ${result.drain.closedWebsockets}, closedRequests ${result.drain.closedRequests}`)
    } else {
      console.log(`  drained event: NONE within ${drainMs + 10_000} ms of the flip`)
    }
    console.log(`  /v1/state afterwards: blue ${JSON.stringify(result.stateAfter.blue)}, green ${JSON.stringify(result.stateAfter.green)}; blue first polled idle ${fmt(result.blueFirstSeenIdleMsAfterDeadline)} ms after the deadline`)

    const problems = []
    if (r.errors > 0) problems.push(`${r.errors} HTTP request errors`)
    if (r.non2xx > 0) problems.push(`${r.non2xx} HTTP non-2xx responses`)
    const badCodes = Object.entries(codes).filter(([c]) => c !== '1001')
    if (badCodes.length > 0) problems.push(`WebSockets closed with codes other than 1001: ${JSON.stringify(Object.fromEntries(badCodes))}`)
    if (notClosed > 0) problems.push(`${notClosed} WebSockets were never closed`)
    if (w.opened !== websockets || (w.openColors.blue ?? 0) !== websockets) problems.push(`not all ${websockets} WebSockets opened on blue: ${JSON.stringify(w.openColors)}, ${w.failedToOpen} failed`)
    if (flip.status !== 200 || flip.body?.changes?.length !== 1) problems.push(`flip failed: ${flip.status ?? flip.error}`)
    if (w.socketsWithoutEchoAfterFlip > 0) problems.push(`${w.socketsWithoutEchoAfterFlip} WebSockets had no echo while draining`)
    if (w.mismatched > 0) problems.push(`${w.mismatched} echoes that did not match (wrong color or unknown message)`)
    if (closedEarly > 0) problems.push(`${closedEarly} WebSockets closed before the drain deadline`)
    const upBad = Object.entries(upstreamWs.blue.closeCodes).filter(([c]) => c !== '1001')
    if (upBad.length > 0 || upstreamWs.blue.open !== 0) problems.push(`blue backend saw closes ${JSON.stringify(upstreamWs.blue.closeCodes)} with ${upstreamWs.blue.open} still open`)
    if (upstreamWs.green.opened !== 0) problems.push(`${upstreamWs.green.opened} WebSockets reached green`)
    if (result.drain === null) problems.push('no drained event')
    else {
      if (result.drain.how !== 'timeout') problems.push(`drained how=${result.drain.how}, expected timeout`)
      if (result.drain.closedWebsockets !== websockets) problems.push(`drained closedWebsockets=${result.drain.closedWebsockets}, expected ${websockets}`)
    }
    const sa = result.stateAfter
    if (sa.blue.state !== 'idle' || sa.blue.inflight !== 0 || sa.blue.websockets !== 0) problems.push(`blue afterwards: ${JSON.stringify(sa.blue)}`)
    if (sa.green.state !== 'live' || sa.green.inflight !== 0 || sa.green.websockets !== 0) problems.push(`green afterwards: ${JSON.stringify(sa.green)}`)
    result.problems = problems
    result.pass = problems.length === 0

    mkdirSync(dirname(out), { recursive: true })
    writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
    console.log(`  written to ${out}`)
    if (problems.length > 0) {
      console.log(`FAIL: ${problems.join('; ')}`)
      process.exitCode = 1
    } else {
      console.log('PASS: no HTTP failure, every WebSocket kept working while draining and was closed with 1001 after the deadline, blue drained to 0')
    }
  } finally {
    if (clients !== undefined) await clients.stop()
    if (gw !== undefined) await gw.stop()
    removeTempDir(dir)
    await backends.stop()
  }
}

await main()
