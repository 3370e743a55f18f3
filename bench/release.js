// Releases under load (issue 13): what a stepped release costs the fast path,
// how fast a bad new color is reverted, and how often a good one is.
//
// (a) throughput: one gateway, one blue and one green backend. wrk for
//     --duration s with no release, then with a release shifting 50% to green
//     (steps [{weight: 50, hold: '10m'}], so it sits in `shifting`), then the
//     release is aborted; --repeat times, then a last run with none, so drift
//     shows. Both kinds of run send a distinct `x-switchyard-key` per request,
//     so the only difference is the release (the split that reads the header,
//     latency sampling, the verdict's looks). req/s, p99, gateway CPU µs per
//     request; medians and release/none (target: within 5%).
// (b) revert: a release at 10% (hold 10m) under load; --fault-after s later
//     (T0) green starts (5xx) failing --share of its requests with 500, or
//     (slow) answering --extra-ms later; once per mode and --fault-after value
//     (default 2 and 10 s: the step's window runs from its start, so the good
//     answers green gave before T0 dilute the bad ones after it, and a fault
//     late in a hold takes longer to show). From the first bad answer green wrote
//     (timestamped in the backend child) to the release's `reverted`: seen by
//     polling GET /v1/releases/ID every --poll ms, and the `at` of the
//     reverted history entry. Also: requests green served between T0 and the
//     revert, and the verdict that reverted (its reasons lines).
// (c) false reverts: --releases K healthy stepped releases in a row (the new
//     color's targets are the idle color's own backend, the same code as
//     live), steps [{10, 3s}, {50, 3s}], verify.window 3s, one load running
//     throughout: how many were reverted (expected 0), and the largest z any
//     look showed (polled from the release's `current`). With --paced-rate R
//     the K releases run again under a load of R req/s in all (autocannon's
//     overallRate): at full speed every window holds tens of thousands of
//     requests and the margins decide; at a few hundred req/s the windows are
//     near verify.minRequests, where chance has its say.
//
//   node bench/release.js [--part throughput|revert|false-revert|all]
//       [--duration 10] [--repeat 3] [--connections 50]
//       [--modes 5xx,slow] [--share 0.05] [--extra-ms 50] [--fault-after 2,10]
//       [--revert-duration 30] [--poll 10] [--releases 10] [--paced-rate 0]
//       [--loader wrk|autocannon] [--out bench/results/release.json]
//
// Process layout: this process runs the load (wrk, one thread, a Lua script
// keying every request; autocannon with a per-request header when wrk is
// missing), the admin calls and the polls; blue and green share one
// lib/backend.js child; the gateway is a lib/switchyard.js child (health
// probes off: targets count as healthy, so `warming` passes at once). Fresh
// processes for each part and each revert mode. Times are
// performance.timeOrigin + performance.now() in each process (ms since the
// epoch); the gateway's history times are Date-based (ms resolution).

import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, removeTempDir, startChild, trackProcess } from './lib/children.js'
import { treeCpuSeconds } from './lib/cpu.js'
import { FineHistogram } from './lib/load.js'
import { parseWrkOutput, script } from './lib/wrk.js'

const here = dirname(fileURLToPath(import.meta.url))
const lib = (f) => join(here, 'lib', f)
const args = parseArgs()
const partArg = String(args.part ?? 'all')
const parts = partArg === 'all' ? ['throughput', 'revert', 'false-revert'] : partArg.split(',')
const duration = Number(args.duration ?? 10)
const repeat = Number(args.repeat ?? 3)
const connections = Number(args.connections ?? 50)
const modes = String(args.modes ?? '5xx,slow').split(',')
const share = Number(args.share ?? 0.05)
const extraMs = Number(args['extra-ms'] ?? 50)
const faultAfters = String(args['fault-after'] ?? '2,10').split(',').map(Number)
const revertDuration = Number(args['revert-duration'] ?? 30)
const pollMs = Number(args.poll ?? 10)
const releaseCount = Number(args.releases ?? 10)
const pacedRate = Number(args['paced-rate'] ?? 0)
const hasWrk = spawnSync('wrk', ['--version'], { stdio: 'ignore' }).error === undefined
const loader = String(args.loader ?? (hasWrk ? 'wrk' : 'autocannon'))
const out = typeof args.out === 'string' ? args.out : join(here, 'results', 'release.json')

/** (a)'s target: the fast path with a release shifting serves within 5% of its req/s with none. */
const THROUGHPUT_TARGET = 0.95
/** The release's verify.minRequests when neither the config nor the request sets it (SPEC). */
const DEFAULT_MIN_REQUESTS = 100
const END_PHASES = ['done', 'reverted', 'aborted', 'failed']

if (!parts.every((p) => ['throughput', 'revert', 'false-revert'].includes(p)) || !(duration >= 1) || !(repeat >= 1) || !(connections > 0) ||
    !modes.every((m) => m === '5xx' || m === 'slow') || !(share > 0 && share <= 1) || !(extraMs > 0) || !faultAfters.every((x) => x >= 0) ||
    !(revertDuration > Math.max(...faultAfters) + 1) || !(pollMs > 0) || !(releaseCount >= 1) || !(pacedRate >= 0) || !['wrk', 'autocannon'].includes(loader)) {
  console.error('usage: node bench/release.js [--part throughput|revert|false-revert|all] [--duration SEC>=1] [--repeat N] [--connections N] [--modes 5xx,slow] [--share 0..1] [--extra-ms MS] [--fault-after SEC[,SEC]] [--revert-duration SEC] [--poll MS] [--releases K] [--paced-rate REQ/S] [--loader wrk|autocannon] [--out FILE]')
  process.exit(2)
}
if (loader === 'wrk' && !hasWrk) {
  console.error('wrk is not installed (Debian: apt-get install -y wrk); use --loader autocannon')
  process.exit(2)
}
if (!existsSync(join(here, '..', 'dist', 'gateway.js'))) {
  console.error('dist/ is missing: run `npm run build` first')
  process.exit(2)
}

const now = () => performance.timeOrigin + performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const round = (x, d = 1) => x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d
const fmt = (x, d = 1) => x === null || x === undefined ? '-' : x.toFixed(d)
const median = (xs) => {
  const s = xs.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b)
  if (s.length === 0) return null
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const loadavg = () => os.loadavg().map((x) => round(x, 2))
const log = (line) => process.stderr.write(`[release] ${line}\n`)

// ---------------------------------------------------------------- the load

// Every request its own key ("k1", "k2", ...): the split hashes it, so about
// `weight` percent of requests go to the new color. lib/wrk.js adds the done()
// hook whose WRKJSON line parseWrkOutput reads.
const WRK_LUA = script({
  extra: `
local n = 0
local h = {}
request = function()
  n = n + 1
  h["x-switchyard-key"] = "k" .. n
  return wrk.format(nil, nil, h)
end`,
})

/**
 * Starts the load; returns { stop(), done } where `done` resolves with
 * { requests, durationSec, reqPerSec, latencyMs: {p50, p99, max}, non2xx, errors }.
 * `stop()` ends it early (wrk: SIGINT, after which it still prints its summary).
 */
function startLoad (url, { seconds, rate = 0 }) {
  return loader === 'wrk' && rate === 0 ? startWrk(url, seconds) : startAutocannon(url, seconds, rate)
}

function startWrk (url, seconds) {
  const dir = makeTempDir('switchyard-bench-wrk-')
  const file = join(dir, 'keys.lua')
  writeFileSync(file, WRK_LUA)
  const child = trackProcess(spawn('wrk', ['-t1', `-c${connections}`, `-d${Math.max(1, Math.round(seconds))}s`, '--timeout', '10s', '--latency', '-s', file, url], { stdio: ['ignore', 'pipe', 'pipe'] }))
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d })
  const done = new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code, signal) => resolve({ code, signal }))
  }).then(({ code, signal }) => {
    const parsed = parseWrkOutput(stdout)
    if (parsed.json === null) throw new Error(`wrk exited with ${code ?? signal} and printed no WRKJSON line: ${stderr}${stdout}`)
    const j = parsed.json
    const durationSec = j.durationUs / 1e6
    return {
      requests: j.requests,
      durationSec,
      reqPerSec: j.requests / durationSec,
      latencyMs: { p50: j.latencyUs.p50 / 1000, p90: j.latencyUs.p90 / 1000, p99: j.latencyUs.p99 / 1000, max: j.latencyUs.max / 1000 },
      non2xx: j.errors.status,
      errors: j.errors.connect + j.errors.read + j.errors.write + j.errors.timeout,
    }
  }).finally(() => removeTempDir(dir))
  return { stop: () => { try { child.kill('SIGINT') } catch {} }, done }
}

/** The fallback, and the paced load: autocannon in this process, a fresh key set on each request; `rate` > 0 caps req/s in all. */
function startAutocannon (url, seconds, rate) {
  let instance
  const done = (async () => {
    const { default: autocannon } = await import('autocannon')
    let n = 0
    const hist = new FineHistogram()
    let non2xx = 0
    instance = autocannon({
      url, connections, duration: seconds, timeout: 10, ...(rate > 0 ? { overallRate: rate } : {}),
      requests: [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, 'x-switchyard-key': `k${++n}` } }) }],
    })
    instance.on('response', (_c, status, _b, ms) => { hist.record(ms); if (status >= 400) non2xx++ })
    const t0 = now()
    const r = await new Promise((resolve, reject) => { instance.once('done', resolve); instance.once('error', reject) })
    const durationSec = (now() - t0) / 1000
    const s = hist.summary()
    return { requests: r.requests.total, durationSec, reqPerSec: r.requests.total / durationSec, latencyMs: { p50: s.p50, p90: s.p90, p99: s.p99, max: s.max }, non2xx, errors: r.errors }
  })()
  return { stop: () => instance?.stop(), done }
}

// ---------------------------------------------------------------- gateway and API

async function api (adminUrl, method, path, body) {
  const res = await fetch(`${adminUrl}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  })
  return { status: res.status, body: await res.json() }
}

async function startRelease (adminUrl, body) {
  const r = await api(adminUrl, 'POST', '/v1/releases', body)
  if (r.status !== 201) throw new Error(`POST /v1/releases: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

/** Polls the release every `every` ms until its phase is one of `phases`; resolves with the release and when it was seen. */
async function waitPhase (adminUrl, id, phases, { every = 20, timeoutMs = 30_000 } = {}) {
  const deadline = now() + timeoutMs
  let last
  while (now() < deadline) {
    last = (await api(adminUrl, 'GET', `/v1/releases/${id}`)).body
    if (phases.includes(last.phase)) return { release: last, seenAt: now() }
    await sleep(every)
  }
  throw new Error(`release ${id} not ${phases.join('|')} after ${timeoutMs} ms: phase ${last?.phase}, outcome ${last?.outcome}`)
}

async function startPair ({ timeline = false } = {}) {
  const backends = await startChild(lib('backend.js'), ['--names', 'blue,green', '--color-body', ...(timeline ? ['--timeline'] : [])], { name: 'backends' })
  const urls = { blue: `http://127.0.0.1:${backends.info.servers.blue}`, green: `http://127.0.0.1:${backends.info.servers.green}` }
  const dir = makeTempDir('switchyard-release-')
  let gw
  try {
    gw = await startChild(lib('switchyard.js'), ['--dir', dir, '--config-json', JSON.stringify({ svc: { pathPrefix: '/', live: 'blue', blue: [urls.blue], green: [urls.green] } })], { name: 'switchyard' })
  } catch (err) {
    await backends.stop()
    throw err
  }
  return {
    backends, gw, urls, url: gw.info.url, adminUrl: gw.info.adminUrl, pid: gw.child.pid,
    stop: async () => { await gw.stop(); removeTempDir(dir); await backends.stop() },
  }
}

// ---------------------------------------------------------------- (a) throughput

async function partThroughput () {
  const env = await startPair()
  try {
    log(`(a) throughput: ${connections} connections, ${duration}s per run, ${repeat} repeats, loader ${loader}, against ${env.url}`)
    // JIT and connection pools warm before anything counts.
    await startLoad(env.url, { seconds: 2 }).done
    const runs = []
    const measure = async (kind, releaseId) => {
      await env.backends.request({ type: 'reset' })
      const la = loadavg()
      const cpu0 = treeCpuSeconds(env.pid)
      const t0 = now()
      const r = await startLoad(env.url, { seconds: duration }).done
      const wall = (now() - t0) / 1000
      const cpu1 = treeCpuSeconds(env.pid)
      const counts = (await env.backends.request({ type: 'stats' })).counts
      const served = counts.blue + counts.green
      const phaseAfter = releaseId === undefined ? null : (await api(env.adminUrl, 'GET', `/v1/releases/${releaseId}`)).body.phase
      const cpuS = cpu0 === null || cpu1 === null ? null : cpu1 - cpu0
      const run = {
        kind, index: runs.length, release: releaseId ?? null, phaseAfter,
        requests: r.requests, reqPerSec: round(r.reqPerSec, 0), p50Ms: round(r.latencyMs.p50, 3), p99Ms: round(r.latencyMs.p99, 3), maxMs: round(r.latencyMs.max, 2),
        non2xx: r.non2xx, errors: r.errors,
        gatewayCpuUsPerReq: cpuS === null || r.requests === 0 ? null : round(cpuS * 1e6 / r.requests, 1),
        gatewayCores: cpuS === null ? null : round(cpuS / wall, 2),
        greenShare: served === 0 ? null : round(counts.green / served, 4),
        loadavgBefore: la,
      }
      runs.push(run)
      log(`  ${kind.padEnd(7)} ${fmt(run.reqPerSec, 0)} req/s, p99 ${fmt(run.p99Ms, 2)} ms, ${fmt(run.gatewayCpuUsPerReq)} µs CPU/req, green ${fmt(run.greenShare * 100)}%${phaseAfter === null ? '' : `, phase after: ${phaseAfter}`}`)
      return run
    }
    const releases = []
    await measure('none')
    for (let i = 0; i < repeat; i++) {
      const created = await startRelease(env.adminUrl, {
        services: { svc: { targets: [env.urls.green], version: `bench-a-${i}` } },
        steps: [{ weight: 50, hold: '10m' }],
        reason: 'bench/release.js (a): throughput with a release shifting',
      })
      const { release } = await waitPhase(env.adminUrl, created.id, ['shifting', ...END_PHASES])
      if (release.phase !== 'shifting') throw new Error(`release ${created.id} ended ${release.phase} before shifting: ${release.outcome}`)
      await measure('release', created.id)
      const aborted = await api(env.adminUrl, 'POST', `/v1/releases/${created.id}/abort`, {})
      const end = await waitPhase(env.adminUrl, created.id, END_PHASES)
      releases.push({ id: created.id, verifyAtCreate: created.verify, weight: release.weight, abort: aborted.status, endPhase: end.release.phase, outcome: end.release.outcome, verdicts: end.release.verdicts.length })
      await measure('none')
    }
    const none = runs.filter((r) => r.kind === 'none')
    const rel = runs.filter((r) => r.kind === 'release')
    // Each release run against the mean of the two none runs around it: drift cancels.
    const paired = rel.map((r) => {
      const around = [runs[r.index - 1], runs[r.index + 1]]
      const base = (around[0].reqPerSec + around[1].reqPerSec) / 2
      const baseCpu = (around[0].gatewayCpuUsPerReq + around[1].gatewayCpuUsPerReq) / 2
      return { reqPerSecRatio: round(r.reqPerSec / base, 4), cpuPerReqRatio: round(r.gatewayCpuUsPerReq / baseCpu, 4) }
    })
    const med = (xs, k) => median(xs.map((x) => x[k]))
    const summary = {
      none: { runs: none.length, reqPerSec: med(none, 'reqPerSec'), p99Ms: med(none, 'p99Ms'), gatewayCpuUsPerReq: med(none, 'gatewayCpuUsPerReq') },
      release: { runs: rel.length, reqPerSec: med(rel, 'reqPerSec'), p99Ms: med(rel, 'p99Ms'), gatewayCpuUsPerReq: med(rel, 'gatewayCpuUsPerReq'), greenShare: med(rel, 'greenShare') },
    }
    summary.ratio = {
      reqPerSec: round(summary.release.reqPerSec / summary.none.reqPerSec, 4),
      p99: round(summary.release.p99Ms / summary.none.p99Ms, 4),
      gatewayCpuUsPerReq: round(summary.release.gatewayCpuUsPerReq / summary.none.gatewayCpuUsPerReq, 4),
      pairedReqPerSecMedian: med(paired, 'reqPerSecRatio'),
      pairedCpuPerReqMedian: med(paired, 'cpuPerReqRatio'),
    }
    const problems = []
    for (const r of releases) {
      if (r.verifyAtCreate?.minRequests !== DEFAULT_MIN_REQUESTS) problems.push(`${r.id}: verify.minRequests ${r.verifyAtCreate?.minRequests}, not the default ${DEFAULT_MIN_REQUESTS}`)
      if (r.endPhase !== 'aborted') problems.push(`${r.id} ended ${r.endPhase}, not aborted: ${r.outcome}`)
    }
    for (const r of rel) {
      if (r.phaseAfter !== 'shifting') problems.push(`run ${r.index}: release ${r.release} was ${r.phaseAfter} after the run, not shifting`)
      if (r.greenShare === null || Math.abs(r.greenShare - 0.5) > 0.05) problems.push(`run ${r.index}: green served ${fmt(r.greenShare * 100)}% with a 50% split`)
    }
    for (const r of none) if (r.greenShare !== 0) problems.push(`run ${r.index} (none): green served ${fmt(r.greenShare * 100)}%`)
    for (const r of runs) if (r.non2xx + r.errors > 0) problems.push(`run ${r.index} (${r.kind}): ${r.non2xx} non-2xx, ${r.errors} socket errors`)
    const withinTarget = summary.ratio.reqPerSec !== null && summary.ratio.reqPerSec >= THROUGHPUT_TARGET
    return { connections, durationSec: duration, repeat, loader, runs, releases, paired, summary, target: THROUGHPUT_TARGET, withinTarget, problems, loadavgEnd: loadavg() }
  } finally {
    await env.stop()
  }
}

// ---------------------------------------------------------------- (b) revert

async function revertMode (mode, faultAfter) {
  const env = await startPair({ timeline: true })
  let load
  try {
    const created = await startRelease(env.adminUrl, {
      services: { svc: { targets: [env.urls.green], version: `bench-b-${mode}` } },
      steps: [{ weight: 10, hold: '10m' }],
      reason: `bench/release.js (b): green goes bad (${mode})`,
    })
    const id = created.id
    const { release: shifting } = await waitPhase(env.adminUrl, id, ['shifting', ...END_PHASES])
    if (shifting.phase !== 'shifting') throw new Error(`release ${id} ended ${shifting.phase} before shifting: ${shifting.outcome}`)
    const stepAt = Date.parse(shifting.history.find((h) => h.phase === 'shifting').at)
    const laBefore = loadavg()
    log(`(b) ${mode}: release ${id} shifting 10% to green; load for up to ${revertDuration}s, green goes bad ${faultAfter}s in`)
    const loadStarted = now()
    load = startLoad(env.url, { seconds: revertDuration })
    await sleep(faultAfter * 1000)
    const before = (await api(env.adminUrl, 'GET', `/v1/releases/${id}`)).body
    const fault = await env.backends.request(mode === '5xx' ? { type: 'fault', name: 'green', mode: '5xx', share } : { type: 'fault', name: 'green', mode: 'slow', extraMs })
    if (fault.error !== undefined) throw new Error(fault.error)
    const T0 = fault.at

    // Poll every pollMs until reverted (or ended otherwise), or the load's end.
    let seen = null
    let polls = 0
    let last
    const until = loadStarted + revertDuration * 1000
    while (now() < until) {
      const sent = now()
      last = (await api(env.adminUrl, 'GET', `/v1/releases/${id}`)).body
      polls++
      if (END_PHASES.includes(last.phase)) { seen = { sent, received: now() }; break }
      await sleep(pollMs)
    }
    // One more second of load: traffic after the revert shows it held.
    if (seen !== null) await sleep(1000)
    load.stop()
    const r = await load.done
    load = undefined
    const final = (await api(env.adminUrl, 'GET', `/v1/releases/${id}`)).body
    const revertedEntry = final.history.find((h) => h.phase === 'reverted') ?? null
    const revertAt = revertedEntry === null ? null : Date.parse(revertedEntry.at)
    const g = (await env.backends.request({ type: 'timeline', after: T0 })).servers.green
    const gAfterRevert = revertAt === null ? null : (await env.backends.request({ type: 'timeline', after: revertAt })).servers.green
    const gAfterGrace = revertAt === null ? null : (await env.backends.request({ type: 'timeline', after: revertAt + 50 })).servers.green
    const firstBad = mode === '5xx' ? g.firstTrafficFailureAt : g.firstSlowAt
    const verdict = final.verdicts.at(-1) ?? null
    const sv = verdict?.services?.svc ?? null
    const rel = (x) => x === null || firstBad === null ? null : round(x - firstBad)
    const servedT0ToRevert = gAfterRevert === null ? null : g.trafficAfter - gAfterRevert.trafficAfter
    const problems = []
    if (final.phase !== 'reverted') problems.push(`release ended ${final.phase} (outcome ${final.outcome}), not reverted`)
    if (firstBad === null) problems.push('green never wrote a bad answer')
    if (gAfterGrace !== null && gAfterGrace.trafficAfter > 0) problems.push(`green still got ${gAfterGrace.trafficAfter} requests more than 50 ms after the revert`)
    return {
      mode,
      faultAfterSec: faultAfter,
      fault: mode === '5xx' ? { status: 500, share } : { extraMs },
      release: id,
      stepStartedAt: stepAt,
      faultIntoStepMs: round(T0 - stepAt),
      beforeFault: { greenRequests: g.traffic - g.trafficAfter, current: before.current?.svc ?? null },
      times: { loadStarted, T0, firstBadAt: firstBad, revertedAt: revertAt, pollSawRevertedAt: seen?.received ?? null },
      firstBadAfterT0Ms: firstBad === null ? null : round(firstBad - T0, 2),
      revertHistoryMs: rel(revertAt),
      revertPolledMs: rel(seen?.received ?? null),
      polls,
      greenServedT0ToRevert: servedT0ToRevert,
      greenBadT0ToRevert: gAfterRevert === null ? null : mode === '5xx' ? g.failuresAfter - gAfterRevert.failuresAfter : servedT0ToRevert,
      greenAfterRevert: gAfterRevert?.trafficAfter ?? null,
      greenAfterRevertGrace50ms: gAfterGrace?.trafficAfter ?? null,
      outcome: final.outcome,
      verdict: verdict === null ? null : { at: verdict.at, final: verdict.final, weight: verdict.weight, pass: verdict.pass, outcome: sv?.outcome, reasons: sv?.reasons, errors: sv?.errors, latency: sv?.latency },
      load: { requests: r.requests, durationSec: round(r.durationSec, 2), reqPerSec: round(r.reqPerSec, 0), p99Ms: round(r.latencyMs.p99, 2), non2xx: r.non2xx, errors: r.errors },
      loadavgBefore: laBefore,
      loadavgAfter: loadavg(),
      problems,
      pass: problems.length === 0,
    }
  } finally {
    if (load !== undefined) { load.stop(); await load.done.catch(() => {}) }
    await env.stop()
  }
}

async function partRevert () {
  const out = {}
  for (const faultAfter of faultAfters) for (const mode of modes) {
    const m = await revertMode(mode, faultAfter)
    out[`${mode}@${faultAfter}s`] = m
    log(`  ${mode} at ${faultAfter}s: first bad -> reverted ${fmt(m.revertHistoryMs)} ms (history), ${fmt(m.revertPolledMs)} ms (poll); green served ${m.greenServedT0ToRevert} after T0; ${m.outcome}`)
  }
  return { connections, faultAfterSec: faultAfters, pollMs, loader, modes: out }
}

// ---------------------------------------------------------------- (c) false reverts

async function partFalseRevert (rate) {
  const env = await startPair()
  let load
  try {
    log(`(c) false reverts: ${releaseCount} healthy releases, steps 10%:3s, 50%:3s, verify 3s, ${connections} connections${rate > 0 ? `, ${rate} req/s` : ''}`)
    const laBefore = loadavg()
    load = startLoad(env.url, { seconds: releaseCount * 40 + 10, rate })
    await sleep(1000)
    const releases = []
    for (let k = 0; k < releaseCount; k++) {
      const live = (await api(env.adminUrl, 'GET', '/v1/state')).body.services.svc.live
      const idle = live === 'blue' ? 'green' : 'blue'
      const t0 = now()
      const created = await startRelease(env.adminUrl, {
        services: { svc: { targets: [env.urls[idle]], version: `same-${k}` } },
        steps: [{ weight: 10, hold: '3s' }, { weight: 50, hold: '3s' }],
        verify: { window: '3s' },
        reason: `bench/release.js (c): healthy release ${k + 1}/${releaseCount}`,
      })
      // Poll the latest look: the largest z any interim look showed is the closest call.
      const maxZ = { errors: null, latency: null }
      let last
      const deadline = now() + 60_000
      while (now() < deadline) {
        last = (await api(env.adminUrl, 'GET', `/v1/releases/${created.id}`)).body
        const cur = last.current?.svc
        if (cur !== undefined) {
          for (const k2 of ['errors', 'latency']) if (cur[k2].z !== null) maxZ[k2] = Math.max(maxZ[k2] ?? -Infinity, cur[k2].z)
        }
        if (END_PHASES.includes(last.phase)) break
        await sleep(200)
      }
      for (const v of last.verdicts) {
        const s = v.services.svc
        if (s === undefined) continue
        for (const k2 of ['errors', 'latency']) if (s[k2].z !== null) maxZ[k2] = Math.max(maxZ[k2] ?? -Infinity, s[k2].z)
      }
      const entry = {
        id: created.id, from: live, to: idle, phase: last.phase, outcome: last.outcome, seconds: round((now() - t0) / 1000, 2),
        maxZ: { errors: round(maxZ.errors, 2), latency: round(maxZ.latency, 2) },
        verdicts: last.verdicts.map((v) => {
          const s = v.services.svc
          return {
            phase: v.phase, step: v.step, weight: v.weight, final: v.final, pass: v.pass, outcome: s?.outcome,
            errors: s === undefined ? null : { new: s.errors.new, old: s.errors.old, z: round(s.errors.z, 2) },
            latency: s === undefined ? null : { newP50: s.latency.new.p50Ms, oldP50: s.latency.old.p50Ms, newP99: s.latency.new.p99Ms, oldP99: s.latency.old.p99Ms, newN: s.latency.new.samples, oldN: s.latency.old.samples, z: round(s.latency.z, 2) },
            reasons: s?.reasons,
          }
        }),
      }
      releases.push(entry)
      log(`  ${k + 1}/${releaseCount} ${entry.id} ${live}->${idle}: ${entry.phase} in ${fmt(entry.seconds)} s; max z errors ${fmt(entry.maxZ.errors, 2)}, latency ${fmt(entry.maxZ.latency, 2)}${entry.outcome === null ? '' : `; ${entry.outcome}`}`)
      if (!END_PHASES.includes(entry.phase)) throw new Error(`release ${entry.id} still ${entry.phase} after 60 s`)
    }
    load.stop()
    const r = await load.done
    load = undefined
    const reverted = releases.filter((x) => x.phase === 'reverted').length
    const problems = []
    if (reverted > 0) problems.push(`${reverted} of ${releaseCount} healthy releases were reverted`)
    const other = releases.filter((x) => x.phase !== 'done' && x.phase !== 'reverted')
    if (other.length > 0) problems.push(`${other.length} ended otherwise: ${other.map((x) => `${x.id} ${x.phase}`).join(', ')}`)
    if (r.non2xx + r.errors > 0) problems.push(`load: ${r.non2xx} non-2xx, ${r.errors} socket errors`)
    return {
      k: releaseCount, rate: rate > 0 ? rate : null, loader: rate > 0 ? 'autocannon' : loader, reverted, done: releases.filter((x) => x.phase === 'done').length,
      maxZ: { errors: round(Math.max(...releases.map((x) => x.maxZ.errors ?? -Infinity)), 2), latency: round(Math.max(...releases.map((x) => x.maxZ.latency ?? -Infinity)), 2) },
      releases,
      load: { requests: r.requests, durationSec: round(r.durationSec, 2), reqPerSec: round(r.reqPerSec, 0), p99Ms: round(r.latencyMs.p99, 2), non2xx: r.non2xx, errors: r.errors },
      loadavgBefore: laBefore, loadavgAfter: loadavg(), problems, pass: problems.length === 0,
    }
  } finally {
    if (load !== undefined) { load.stop(); await load.done.catch(() => {}) }
    await env.stop()
  }
}

// ---------------------------------------------------------------- report

function reportThroughput (a) {
  console.log('')
  console.log(`(a) fast path with a release shifting 50% vs none (${a.connections} connections, ${a.durationSec} s per run, loader ${a.loader}, distinct x-switchyard-key per request in every run)`)
  console.log('  run  kind      req/s    p50 ms   p99 ms  µs CPU/req  gw cores  green %  loadavg(1m)')
  for (const r of a.runs) {
    console.log(`  ${String(r.index).padStart(3)}  ${r.kind.padEnd(8)} ${fmt(r.reqPerSec, 0).padStart(6)}  ${fmt(r.p50Ms, 3).padStart(7)}  ${fmt(r.p99Ms, 3).padStart(7)}  ${fmt(r.gatewayCpuUsPerReq).padStart(10)}  ${fmt(r.gatewayCores, 2).padStart(8)}  ${fmt(r.greenShare * 100).padStart(7)}  ${r.loadavgBefore[0]}`)
  }
  const s = a.summary
  console.log(`  median none:    ${fmt(s.none.reqPerSec, 0)} req/s, p99 ${fmt(s.none.p99Ms, 3)} ms, ${fmt(s.none.gatewayCpuUsPerReq)} µs CPU/req (${s.none.runs} runs)`)
  console.log(`  median release: ${fmt(s.release.reqPerSec, 0)} req/s, p99 ${fmt(s.release.p99Ms, 3)} ms, ${fmt(s.release.gatewayCpuUsPerReq)} µs CPU/req (${s.release.runs} runs)`)
  console.log(`  release/none: req/s ${fmt(s.ratio.reqPerSec, 3)} (paired with the runs around it: ${fmt(s.ratio.pairedReqPerSecMedian, 3)}), p99 ${fmt(s.ratio.p99, 3)}, CPU/req ${fmt(s.ratio.gatewayCpuUsPerReq, 3)} (paired ${fmt(s.ratio.pairedCpuPerReqMedian, 3)}); target req/s >= ${a.target}: ${a.withinTarget ? 'met' : 'MISSED'}`)
  console.log(`  releases: ${a.releases.map((r) => `${r.id} verify.minRequests ${r.verifyAtCreate.minRequests} -> ${r.endPhase}`).join('; ')}`)
  if (a.problems.length > 0) console.log(`  problems: ${a.problems.join('; ')}`)
}

function reportRevert (b) {
  console.log('')
  console.log(`(b) revert of a bad new color at 10% (${b.connections} connections, green goes bad ${b.faultAfterSec.join(' or ')} s into the load, polls every ${b.pollMs} ms)`)
  console.log('  mode  fault         T0 into step  first bad -> reverted: history  / poll   green reqs T0..revert (bad)  green after revert / +50ms  load req/s')
  for (const m of Object.values(b.modes)) {
    const f = m.mode === '5xx' ? `500 on ${fmt(m.fault.share * 100, 0)}%` : `+${m.fault.extraMs} ms`
    const reqs = `${m.greenServedT0ToRevert ?? '-'} (${m.greenBadT0ToRevert ?? '-'})`
    const after = `${m.greenAfterRevert ?? '-'} / ${m.greenAfterRevertGrace50ms ?? '-'}`
    console.log(`  ${m.mode.padEnd(5)} ${f.padEnd(12)} ${fmt(m.faultIntoStepMs / 1000, 2).padStart(8)} s  ${fmt(m.revertHistoryMs).padStart(19)} ms / ${fmt(m.revertPolledMs).padStart(7)} ms  ${reqs.padStart(27)}  ${after.padStart(26)}  ${fmt(m.load.reqPerSec, 0).padStart(10)}`)
  }
  for (const m of Object.values(b.modes)) {
    console.log(`  ${m.mode}, fault ${fmt(m.faultIntoStepMs / 1000, 2)} s into the step: verdict (${m.verdict?.final === true ? 'final' : 'early'} look at ${m.verdict?.weight}%): ${m.verdict?.outcome}`)
    for (const line of m.verdict?.reasons ?? []) console.log(`      ${line}`)
    if (m.problems.length > 0) console.log(`    problems: ${m.problems.join('; ')}`)
  }
}

function reportFalse (c) {
  console.log('')
  console.log(`(c) false reverts: ${c.k} healthy releases (steps 10%:3s, 50%:3s, verify 3s) under one load (${c.rate === null ? 'as fast as it goes' : `paced at ${c.rate} req/s`}, ${c.loader}: ${fmt(c.load.reqPerSec, 0)} req/s)`)
  console.log(`  reverted: ${c.reverted} of ${c.k} (done ${c.done}); largest z seen: errors ${fmt(c.maxZ.errors, 2)}, latency ${fmt(c.maxZ.latency, 2)} (early looks revert above 3.29, final above 2.33)`)
  for (const x of c.releases) console.log(`    ${x.id.padEnd(5)} ${x.from}->${x.to.padEnd(5)} ${x.phase.padEnd(8)} ${fmt(x.seconds).padStart(5)} s  max z err ${fmt(x.maxZ.errors, 2).padStart(6)} lat ${fmt(x.maxZ.latency, 2).padStart(6)}${x.outcome === null ? '' : `  ${x.outcome}`}`)
  if (c.problems.length > 0) console.log(`  problems: ${c.problems.join('; ')}`)
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
const cpus = os.cpus()
const doc = {
  script: 'bench/release.js',
  date: new Date().toISOString(),
  node: process.version,
  machine: { cpus: cpus.length, model: cpus[0]?.model ?? null, memGB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), platform: process.platform },
  code: codeBefore,
  args: { parts, duration, repeat, connections, modes, share, extraMs, faultAfter: faultAfters, revertDuration, pollMs, releases: releaseCount, pacedRate, loader },
  loadavgStart: loadavg(),
}
if (parts.includes('throughput')) { doc.throughput = await partThroughput(); reportThroughput(doc.throughput) }
if (parts.includes('revert')) { doc.revert = await partRevert(); reportRevert(doc.revert) }
if (parts.includes('false-revert')) {
  doc.falseRevert = await partFalseRevert(0)
  reportFalse(doc.falseRevert)
  if (pacedRate > 0) { doc.falseRevertPaced = await partFalseRevert(pacedRate); reportFalse(doc.falseRevertPaced) }
}
doc.loadavgEnd = loadavg()
const problems = [
  ...(doc.throughput?.problems ?? []),
  ...Object.entries(doc.revert?.modes ?? {}).flatMap(([k, m]) => m.problems.map((p) => `(b) ${k}: ${p}`)),
  ...(doc.falseRevert?.problems ?? []).map((p) => `(c) ${p}`),
  ...(doc.falseRevertPaced?.problems ?? []).map((p) => `(c, ${pacedRate} req/s) ${p}`),
]
if (doc.throughput !== undefined && !doc.throughput.withinTarget) problems.push(`(a) release/none req/s ${doc.throughput.summary.ratio.reqPerSec} < ${THROUGHPUT_TARGET}`)
doc.problems = problems
doc.pass = problems.length === 0
const codeAfter = provenance()
if (codeAfter.distBuilt !== codeBefore.distBuilt) {
  doc.code.distRebuiltDuringRun = codeAfter.distBuilt
  console.log(`WARNING: dist/ was rebuilt during the run (${codeBefore.distBuilt} -> ${codeAfter.distBuilt})`)
}
mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, JSON.stringify(doc, null, 2) + '\n')
console.log('')
console.log(`${doc.pass ? 'PASS' : 'FAIL'}${problems.length > 0 ? `: ${problems.join('; ')}` : ''}  (loadavg at the end ${doc.loadavgEnd.join(' ')}; wrote ${relative(process.cwd(), out) || out})`)
if (!doc.pass) process.exitCode = 1
