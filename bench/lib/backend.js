// Child process: tiny upstream HTTP server(s) on 127.0.0.1, port 0.
//   node backend.js --names ok            -> one server answering 200 "ok"
//   node backend.js --names blue,green --color-body
//                                          -> one server per name, each answering 200 with its name
// Options: --delay-ms N   answer after N ms (keeps requests in flight across flips)
//          --idle-close N  close a keep-alive connection after N ms idle WITHOUT
//                          announcing it (no Keep-Alive: timeout header), as many
//                          non-Node servers do; exercises stale pooled connections
//          --ws-echo       also accept WebSockets and answer each message with
//                          "NAME:message" (ws-echo.js; { type: 'ws-stats' } for counts)
//          --health-path P  the path that counts as a health probe (default /healthz);
//                          it answers 200 like any other path unless a fault says otherwise
//          --large-path P  GET P answers 200 with --large-bytes N bytes (default 65536)
//                          instead of the short body (run.js's 64 KiB case)
//          --timeline      remember the time of every request, and event-loop stalls
//                          (a 5 ms timer more than 20 ms late), for the guard bench;
//                          off by default so throughput runs pay nothing for it
// Reports { type: 'ready', servers: { name: port } }; answers { type: 'stats' }
// with the number of requests each server has answered, and { type: 'reset' }.
// Fault injection (guard and release benches), { type: 'fault', name, mode, share?, extraMs? }:
//   'ok'   everything answers 200 (the default)
//   '5xx'  traffic answers 500, the health path still answers 200; with `share`
//          (0..1, default 1) only that share of traffic fails, spread evenly
//          (every 20th request for 0.05), so a run's failure count is exact
//   'down' traffic answers 503 and the health path answers 503
//   'slow' traffic answers 200 `extraMs` (default 50) later than it would; the
//          health path is not delayed. The first and last such answer's write
//          time are kept as firstSlowAt / lastSlowAt
// replies { at } (the time the fault took effect). { type: 'timeline', after,
// bucketMs, from, to } replies per server: traffic/probe counts, failures, first
// and last failure times, traffic after `after`, and per-bucket counts; with
// from/to also this process's event-loop stalls in that span.
// Times are performance.timeOrigin + performance.now() (ms since the epoch,
// sub-ms resolution), comparable across processes on one machine.

import http from 'node:http'
import { exitWithParent, parseArgs, reportStartupError } from './children.js'

const args = parseArgs()
const names = String(args.names ?? 'ok').split(',').filter(Boolean)
const colorBody = args['color-body'] === true
const delayMs = Number(args['delay-ms'] ?? 0)
const idleClose = Number(args['idle-close'] ?? 0)
const healthPath = typeof args['health-path'] === 'string' ? args['health-path'] : '/healthz'
const timeline = args.timeline === true
const largePath = typeof args['large-path'] === 'string' ? args['large-path'] : undefined
const largeBody = largePath === undefined ? undefined : Buffer.alloc(Number(args['large-bytes'] ?? 65536), 'x')

const now = () => performance.timeOrigin + performance.now()
/** Per server: fault mode and (with --timeline) what it answered, when. */
const book = Object.create(null)
const FAULT_STATUS = { '5xx': { traffic: 500, health: 200 }, down: { traffic: 503, health: 503 } }
const failBody = Buffer.from('injected failure')
/** [time, ms late] of each stall of this process's event loop (timeline only). */
const stalls = []
if (timeline) {
  let expected = now() + 5
  setInterval(() => {
    const t = now()
    if (t - expected > 20 && stalls.length < 10_000) stalls.push([t, t - expected])
    expected = t + 5
  }, 5).unref()
}

const servers = new Map()
const counts = Object.create(null)

function makeServer (name) {
  const body = Buffer.from(colorBody ? name : 'ok')
  const headers = { 'content-type': 'text/plain', 'content-length': body.length }
  if (colorBody) headers['x-color'] = name
  counts[name] = 0
  const b = book[name] = {
    mode: 'ok', faultAt: null, share: 1, shareAcc: 0, extraMs: 0,
    slowAnswers: 0, firstSlowAt: null, lastSlowAt: null,
    traffic: 0, trafficFailures: 0, probes: 0, probeFailures: 0,
    firstTrafficFailureAt: null, lastTrafficFailureAt: null, firstProbeFailureAt: null, firstTrafficAt: null, lastTrafficAt: null,
    trafficTimes: [], failureTimes: [], probeFailureTimes: [],
  }
  const failHeaders = () => ({ 'content-type': 'text/plain', 'content-length': failBody.length, ...(colorBody ? { 'x-color': name } : {}) })
  const largeHeaders = largeBody === undefined ? undefined : { ...headers, 'content-type': 'application/octet-stream', 'content-length': largeBody.length }
  const ok = (res) => {
    if (res.large === true) { res.writeHead(200, largeHeaders); res.end(largeBody); return }
    res.writeHead(200, headers)
    res.end(body)
  }
  // The fault mode is read when the answer is written, so a change applies at once.
  const slowOk = (res) => {
    const t = now()
    b.slowAnswers++
    b.firstSlowAt ??= t
    b.lastSlowAt = t
    ok(res)
  }
  const answer = (res) => {
    if (b.mode === 'ok') return ok(res)
    const isProbe = res.isProbe === true
    if (b.mode === 'slow') {
      if (isProbe) return ok(res)
      setTimeout(slowOk, b.extraMs, res)
      return
    }
    const status = FAULT_STATUS[b.mode][isProbe ? 'health' : 'traffic']
    if (status === 200) return ok(res)
    if (!isProbe && b.share < 1) {
      // An accumulator, not a coin: exactly `share` of the traffic fails, evenly spread.
      b.shareAcc += b.share
      if (b.shareAcc + 1e-9 < 1) return ok(res)
      b.shareAcc -= 1
    }
    const t = now()
    if (isProbe) {
      b.probeFailures++
      b.firstProbeFailureAt ??= t
      if (timeline) b.probeFailureTimes.push(t)
    } else {
      b.trafficFailures++
      b.firstTrafficFailureAt ??= t
      b.lastTrafficFailureAt = t
      if (timeline) b.failureTimes.push(t)
    }
    res.writeHead(status, failHeaders())
    res.end(failBody)
  }
  const respond = delayMs > 0 ? (res) => setTimeout(answer, delayMs, res) : answer
  const server = http.createServer((req, res) => {
    counts[name]++
    if (largePath !== undefined && req.url === largePath) res.large = true
    if (req.url === healthPath) {
      res.isProbe = true
      b.probes++
    } else {
      b.traffic++
      if (timeline) {
        const t = now()
        b.firstTrafficAt ??= t
        b.lastTrafficAt = t
        b.trafficTimes.push(t)
      }
    }
    if (idleClose > 0) {
      clearTimeout(req.socket.idleTimer)
      res.once('finish', () => { req.socket.idleTimer = setTimeout(() => req.socket.destroy(), idleClose) })
    }
    // Drain any request body before answering, so keep-alive stays usable.
    if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) {
      req.resume()
      req.once('end', () => respond(res))
      return
    }
    respond(res)
  })
  if (idleClose > 0) {
    server.keepAliveTimeout = 0 // no Keep-Alive: timeout=N hint; the timer above closes idle sockets
    server.on('connection', (socket) => {
      socket.idleTimer = setTimeout(() => socket.destroy(), idleClose)
      socket.once('close', () => clearTimeout(socket.idleTimer))
    })
  }
  return server
}

const go = exitWithParent(async () => {
  for (const s of servers.values()) s.closeAllConnections()
  await Promise.all([...servers.values()].map((s) => new Promise((resolve) => s.close(() => resolve()))))
})

process.on('message', (msg) => {
  if (msg?.type === 'stats') process.send({ type: 'reply', id: msg.id, counts: { ...counts } })
  else if (msg?.type === 'reset') {
    for (const n of names) counts[n] = 0
    process.send({ type: 'reply', id: msg.id })
  } else if (msg?.type === 'fault') {
    const b = book[msg.name]
    const share = msg.share ?? 1
    const extraMs = msg.extraMs ?? 50
    if (b === undefined || (msg.mode !== 'ok' && msg.mode !== 'slow' && FAULT_STATUS[msg.mode] === undefined) ||
        !(share > 0 && share <= 1) || !(extraMs >= 0)) {
      process.send({ type: 'reply', id: msg.id, error: `unknown server ${msg.name} or mode ${msg.mode}, or share ${share} / extraMs ${extraMs} out of range` })
      return
    }
    b.share = share
    b.shareAcc = 0
    b.extraMs = extraMs
    b.mode = msg.mode
    b.faultAt = now()
    process.send({ type: 'reply', id: msg.id, at: b.faultAt })
  } else if (msg?.type === 'timeline') {
    process.send({ type: 'reply', id: msg.id, servers: describeTimeline(msg), stalls: msg.from === undefined ? undefined : stalls.filter(([t]) => t >= msg.from && t <= msg.to), clock: { perf: now(), date: Date.now() } })
  } else if (msg?.type === 'stop') void go(0)
})

/** Counts in [from, to) per bucket of `bucketMs`, and how many fall after `after`. */
function describeTimeline ({ after, from, to, bucketMs = 10 }) {
  const out = {}
  const bucket = (times) => {
    if (from === undefined || to === undefined) return undefined
    const n = Math.max(0, Math.ceil((to - from) / bucketMs))
    const counts = new Array(n).fill(0)
    for (const t of times) if (t >= from && t < to) counts[Math.floor((t - from) / bucketMs)]++
    return counts
  }
  const countAfter = (times, t) => { let n = 0; for (const x of times) if (x > t) n++; return n }
  for (const [name, b] of Object.entries(book)) {
    out[name] = {
      mode: b.mode, faultAt: b.faultAt,
      traffic: b.traffic, trafficFailures: b.trafficFailures, probes: b.probes, probeFailures: b.probeFailures,
      firstTrafficFailureAt: b.firstTrafficFailureAt, lastTrafficFailureAt: b.lastTrafficFailureAt,
      firstProbeFailureAt: b.firstProbeFailureAt, firstTrafficAt: b.firstTrafficAt, lastTrafficAt: b.lastTrafficAt,
      slowAnswers: b.slowAnswers, firstSlowAt: b.firstSlowAt, lastSlowAt: b.lastSlowAt,
      probeFailureTimes: b.probeFailureTimes.slice(0, 100),
      ...(after === undefined ? {} : { trafficAfter: countAfter(b.trafficTimes, after), failuresAfter: countAfter(b.failureTimes, after) }),
      ...(from === undefined ? {} : { bucketMs, trafficBuckets: bucket(b.trafficTimes), failureBuckets: bucket(b.failureTimes) }),
    }
  }
  return out
}

try {
  const ports = {}
  for (const name of names) {
    const server = makeServer(name)
    servers.set(name, server)
    if (args['ws-echo'] === true) (await import('./ws-echo.js')).attachWsEcho(name, server)
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
    })
    ports[name] = server.address().port
  }
  process.send({ type: 'ready', servers: ports })
} catch (err) {
  reportStartupError(err)
}
