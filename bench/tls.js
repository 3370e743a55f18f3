// HTTPS throughput and latency (issue 14): Switchyard's TLS listener over
// HTTP/1.1 (wrk) and HTTP/2 (h2load) against nginx as a TLS reverse proxy with
// the same certificate, TLS version, cipher suite and group, one process or
// worker each, in one run; and how much of the cost is TLS itself.
//
// Cases (each its own child process, all started once and kept up; only one
// is loaded at a time):
//   switchyard-tls    Switchyard, `tls:` config (fast engine, metrics on, access log off)
//   nginx-tls         nginx, one worker, ssl + http2 on one listener, proxy to the upstream (keep-alive)
//   node-tls          NOT a proxy: Node answering by itself (https.createServer for h1,
//                     http2.createSecureServer 'stream' API for h2): TLS and h2 in Node, no proxy work
//   switchyard-plain  Switchyard without TLS (h1): the gateway's TLS delta
//   nginx-plain       nginx without TLS (h1): nginx's TLS delta
//   node-plain        NOT a proxy: http.createServer (h1): TLS's own cost in a Node hello
// Loads: h1 = wrk -t1 -c50 --latency https://...; h2 = h2load -t1 -c50 -m10 -D SEC.
// The upstream of every proxy: nginx (one worker, plain HTTP/1.1) answering
// 200 with a 100-byte body; the Node hellos answer the same.
//
// TLS: an ECDSA P-256 certificate (SAN localhost, 127.0.0.1) made at run time
// with openssl in a temp dir, TLS 1.3 only, --cipher (TLS_AES_256_GCM_SHA384)
// and X25519. Switchyard's config sets only the certificate and minVersion
// (its cipher list is Node's default); Node servers follow the client's
// order, and wrk (OpenSSL's default order) offers TLS_AES_256_GCM_SHA384
// first, so that is what Switchyard negotiates with wrk; nginx and the Node
// hello are pinned to it and h2load is told to offer only it. Every TLS case
// is checked with `openssl s_client` (what wrk gets) and every h2 run by
// h2load's "Cipher:"/"Server Temp Key:" lines; any difference fails the run.
//
// Rounds: --repeat rounds, each measures every (case, load) once, in reverse
// order on odd rounds, each run after --warmup s of the same load; the runs
// that are compared stand next to each other. On a shared machine a run
// during which everything else (machine busy time less the server, the
// upstream and the loader) took more than --max-other cores is measured
// again, at most --retries times, and the least disturbed attempt counts
// (all are in the JSON). Per run:
// req/s, p50/p99, server CPU µs per request (lib/cpu.js, the server's process
// tree), cores used by the server, the upstream and the loader. Medians per
// (case, load); ratios switchyard-tls / nginx-tls for h1 and h2 (medians, and
// the median of each round's own ratio); the TLS share of the gateway's cost.
// Then, for each --profile-load (h2,h1), one more switchyard-tls child under
// `node --cpu-prof` and that load for --profile-duration s (10; 0 = off):
// top self-time functions, the raw profile in bench/results/tls-LOAD.cpuprofile.
//
//   node bench/tls.js [--duration 10] [--warmup 2] [--repeat 3] [--connections 50]
//       [--streams 10] [--only switchyard-tls,nginx-tls,...] [--loads h1,h2]
//       [--cipher TLS_AES_256_GCM_SHA384] [--max-other 0.3] [--retries 1]
//       [--profile-duration 10] [--profile-load h2,h1]
//       [--out bench/results/tls.json]
//   bench/run tls [flags]
// Exit 1 when a run saw errors or non-2xx answers, a TLS parameter differed
// between servers, a case could not be measured, or a target (>= 0.5x nginx
// on h1 and h2) was missed.

import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import os from 'node:os'
import tls from 'node:tls'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, parseArgs, removeTempDir, startChild } from './lib/children.js'
import { machineBusySeconds, reapedChildrenCpuSeconds, treeCpuSeconds } from './lib/cpu.js'
import { printSummary, summarize } from './lib/cpuprofile.js'
import { loadH2load } from './lib/h2load.js'
import { bins, codeInfo, requireDist, versions, which } from './lib/setup.js'
import { loadWrk } from './lib/wrk.js'

const here = dirname(fileURLToPath(import.meta.url))
const lib = (f) => join(here, 'lib', f)
const args = parseArgs()
const duration = Number(args.duration ?? 10)
const warmup = Number(args.warmup ?? 2)
const repeat = Number(args.repeat ?? 3)
const connections = Number(args.connections ?? 50)
const streams = Number(args.streams ?? 10)
const ALL_CASES = ['switchyard-tls', 'nginx-tls', 'node-tls', 'switchyard-plain', 'nginx-plain', 'node-plain']
/** Every (case, load) a round measures, in order (reversed on odd rounds). */
const RUN_ORDER = [
  ['switchyard-tls', 'h1'], ['nginx-tls', 'h1'],
  ['switchyard-tls', 'h2'], ['nginx-tls', 'h2'],
  ['switchyard-plain', 'h1'], ['nginx-plain', 'h1'],
  ['node-tls', 'h1'], ['node-plain', 'h1'], ['node-tls', 'h2'],
]
const only = typeof args.only === 'string' ? args.only.split(',').filter(Boolean) : ALL_CASES
const loads = typeof args.loads === 'string' ? args.loads.split(',').filter(Boolean) : ['h1', 'h2']
const cipher = String(args.cipher ?? 'TLS_AES_256_GCM_SHA384')
const CURVE = 'X25519'
const BODY_BYTES = 100
const maxOther = Number(args['max-other'] ?? 0.3)
const retries = Number(args.retries ?? 1)
const profileDuration = Number(args['profile-duration'] ?? 10)
const profileLoads = String(args['profile-load'] ?? 'h2,h1').split(',').filter(Boolean)
const out = typeof args.out === 'string' ? args.out : join(here, 'results', 'tls.json')
const h2loadBin = which('h2load')
/** The issue's target: Switchyard at least half of nginx's req/s, on h1 and on h2. */
const TARGET = 0.5

const usage = 'usage: node bench/tls.js [--duration SEC] [--warmup SEC] [--repeat N] [--connections N] [--streams N] [--only ' + ALL_CASES.join(',') + '] [--loads h1,h2] [--cipher TLS13_SUITE] [--max-other CORES] [--retries N] [--profile-duration SEC (0: off)] [--profile-load h2,h1] [--out FILE]'
const isLoad = (l) => l === 'h1' || l === 'h2'
const bad = [
  [!(duration >= 1), `--duration ${args.duration}: seconds, at least 1`],
  [!(warmup >= 0), `--warmup ${args.warmup}: seconds, 0 or more`],
  [!(Number.isInteger(repeat) && repeat >= 1), `--repeat ${args.repeat}: a whole number, at least 1`],
  [!(Number.isInteger(connections) && connections > 0), `--connections ${args.connections}: a whole number, at least 1`],
  [!(Number.isInteger(streams) && streams >= 1), `--streams ${args.streams}: a whole number, at least 1`],
  [only.length === 0 || !only.every((c) => ALL_CASES.includes(c)), `--only ${args.only}: a comma list of ${ALL_CASES.join(', ')}`],
  [loads.length === 0 || !loads.every(isLoad), `--loads ${args.loads}: h1, h2 or h1,h2`],
  [!/^TLS_[A-Z0-9_]+$/.test(cipher), `--cipher ${args.cipher}: a TLS 1.3 suite name such as TLS_AES_256_GCM_SHA384`],
  [!(maxOther >= 0), `--max-other ${args['max-other']}: cores, 0 or more`],
  [!(Number.isInteger(retries) && retries >= 0), `--retries ${args.retries}: a whole number, 0 or more`],
  [!(profileDuration >= 0), `--profile-duration ${args['profile-duration']}: seconds, 0 (off) or more`],
  [!profileLoads.every(isLoad), `--profile-load ${args['profile-load']}: h2, h1 or h2,h1`],
].filter(([wrong]) => wrong).map(([, message]) => message)
if (bad.length > 0) {
  console.error(`${bad.join('\n')}\n${usage}`)
  process.exit(2)
}
const missing = []
if (bins.nginx === undefined) missing.push('nginx (the upstream and the nginx cases; Debian: apt-get install -y nginx)')
if (which('openssl') === undefined) missing.push('openssl (the certificate; Debian: apt-get install -y openssl)')
if (loads.includes('h1') && bins.wrk === undefined) missing.push('wrk (the h1 load; Debian: apt-get install -y wrk), or --loads h2')
if (loads.includes('h2') && h2loadBin === undefined) missing.push('h2load (the h2 load; Debian: apt-get install -y nghttp2-client), or --loads h1')
if (missing.length > 0) {
  console.error(`missing: ${missing.join('; ')}`)
  process.exit(2)
}
requireDist()

const round = (x, d = 1) => x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d
const fmt = (x, d = 1) => x === null || x === undefined ? '-' : x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d })
const median = (xs) => {
  const s = xs.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b)
  if (s.length === 0) return null
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const ratio = (a, b) => a === null || b === null || b === 0 ? null : a / b
const loadavg = () => os.loadavg().map((x) => round(x, 2))
const log = (line) => process.stderr.write(`[tls] ${line}\n`)
const portOf = (url) => new URL(url).port

// ---------------------------------------------------------------- certificate

/** A self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, valid 2 days, made now. */
function makeCert (dir) {
  const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') }
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', files.key, '-out', files.cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`openssl req: ${r.error?.message ?? r.stderr}`)
  return files
}

// ---------------------------------------------------------------- probes

/**
 * A TLS handshake offering h2 and http/1.1, trusting only our certificate:
 * { ok, alpn, protocol, cipher, group } or { ok: false, error } (a plain
 * HTTP listener fails here).
 */
function probeTls (url, ca) {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: Number(portOf(url)), ca, servername: 'localhost', ALPNProtocols: ['h2', 'http/1.1'] })
    const timer = setTimeout(() => { s.destroy(); resolve({ ok: false, error: 'no TLS handshake within 3 s' }) }, 3000)
    s.once('secureConnect', () => {
      clearTimeout(timer)
      const k = s.getEphemeralKeyInfo()
      resolve({ ok: true, alpn: s.alpnProtocol || null, protocol: s.getProtocol(), cipher: s.getCipher()?.standardName ?? null, group: k?.name ?? null })
      s.destroy()
    })
    s.once('error', (err) => { clearTimeout(timer); resolve({ ok: false, error: err.message }) })
  })
}

/** What an OpenSSL client with its default lists (wrk's) negotiates: `openssl s_client -brief`. */
function probeOpenssl (url) {
  const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${portOf(url)}`, '-alpn', 'http/1.1', '-brief'], { input: '', encoding: 'utf8', timeout: 5000 })
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`
  const get = (re) => re.exec(text)?.[1]?.trim() ?? null
  return { protocol: get(/Protocol version: (.*)/), cipher: get(/Ciphersuite: (.*)/), group: get(/(?:Peer|Server) Temp Key: ([^,\n]*)/) }
}

/** One GET / over HTTP/1.1 (http or https): { status, bytes, upstream (its x-bench-upstream header) }. */
function getH1 (url, ca) {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http
    const req = mod.get(url, { ca, agent: false, servername: 'localhost', timeout: 5000 }, (res) => {
      let bytes = 0
      res.on('data', (d) => { bytes += d.length })
      res.on('end', () => resolve({ status: res.statusCode, bytes, upstream: res.headers['x-bench-upstream'] ?? null }))
    })
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')))
    req.on('error', reject)
  })
}

/** One GET / over HTTP/2 with TLS: { status, bytes, upstream }. */
function getH2 (url, ca) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { ca, servername: 'localhost' })
    session.on('error', reject)
    session.setTimeout(5000, () => session.destroy(new Error('no answer within 5 s')))
    const req = session.request({ ':path': '/' })
    let status = null
    let upstream = null
    let bytes = 0
    req.on('response', (h) => { status = h[':status']; upstream = h['x-bench-upstream'] ?? null })
    req.on('data', (d) => { bytes += d.length })
    req.on('end', () => { session.close(); resolve({ status, bytes, upstream }) })
    req.on('error', (err) => { session.destroy(); reject(err) })
    req.end()
  })
}

// ---------------------------------------------------------------- servers

async function startNginx (role, extra) {
  const dir = makeTempDir('switchyard-bench-nginx-tls-')
  const c = await startChild(lib('nginx-tls.js'), ['--dir', dir, '--role', role, '--nginx', bins.nginx, ...extra], { name: `nginx ${role}` })
  return { url: c.info.url, pid: c.child.pid, version: c.info.version, stop: async () => { await c.stop(); removeTempDir(dir) } }
}

async function startSwitchyard (upstreamUrl, tlsConfig, { name, execArgv } = {}) {
  const dir = makeTempDir('switchyard-bench-sy-')
  const svc = { svc: { pathPrefix: '/', blue: [upstreamUrl], green: [upstreamUrl] } }
  const top = { log: { access: false }, ...(tlsConfig === undefined ? {} : { tls: tlsConfig }) }
  const c = await startChild(lib('switchyard.js'), ['--dir', dir, '--config-json', JSON.stringify(svc), '--top-json', JSON.stringify(top)], { name, execArgv })
  return { port: portOf(c.info.url), adminUrl: c.info.adminUrl, pid: c.child.pid, stop: async () => { await c.stop(); removeTempDir(dir) } }
}

/**
 * Starts every selected case. Returns { cases: { name: { urls: {h1?, h2?}, pid, tls, unavailable: {load: why} } }, stop }.
 * A case that cannot serve a load (Switchyard built without the TLS listener
 * or without HTTP/2) is kept with the reason, and that load is not measured.
 */
async function startCases (upstreamUrl, certs) {
  const ca = readFileSync(certs.cert)
  const stops = []
  const cases = {}
  const want = (n) => only.includes(n)
  const tlsArgs = ['--cert', certs.cert, '--key', certs.key, '--cipher', cipher, '--curve', CURVE]
  try {
    // A Switchyard case can be started afresh (restart()) after a run that
    // failed, so a gateway left busy by it does not disturb the runs after.
    const switchyardCase = async (name, tlsConfig, extra) => {
      let sy = await startSwitchyard(upstreamUrl, tlsConfig, { name })
      stops.push(async () => await sy.stop())
      const scheme = tlsConfig === undefined ? 'http' : 'https'
      const c = {
        ...extra(`${scheme}://127.0.0.1:${sy.port}`),
        pid: sy.pid,
        /** What the gateway has in flight now, per color (after a failed run: what it was left holding). */
        state: async () => {
          const st = await (await fetch(`${sy.adminUrl}/v1/state`, { signal: AbortSignal.timeout(3000) })).json()
          return Object.fromEntries(Object.entries(st.services.svc.environments).map(([color, e]) => [color, { inflight: e.inflight, lastSecondsRequests: e.recent?.requests?.slice(-5) }]))
        },
        restart: async () => {
          await sy.stop()
          sy = await startSwitchyard(upstreamUrl, tlsConfig, { name })
          const url = `${scheme}://127.0.0.1:${sy.port}`
          for (const load of Object.keys(c.urls)) c.urls[load] = url
          c.pid = sy.pid
        },
      }
      cases[name] = c
      return c
    }
    if (want('switchyard-tls')) {
      const tlsConfig = { certs: [{ cert: certs.cert, key: certs.key }], minVersion: 'TLSv1.3' }
      const c = await switchyardCase('switchyard-tls', tlsConfig, (url) => ({ urls: { h1: url, h2: url }, tls: true, proxy: true, unavailable: {} }))
      const url = c.urls.h1
      const probe = await probeTls(url, ca)
      if (!probe.ok) {
        c.unavailable.h1 = c.unavailable.h2 = `no TLS on Switchyard's listener with a tls: config (${probe.error}): this build has no TLS listener`
      } else if (probe.alpn !== 'h2') {
        c.unavailable.h2 = `Switchyard's TLS listener does not offer h2 by ALPN (got ${probe.alpn ?? 'none'}): this build has no HTTP/2 front end`
      }
    }
    if (want('switchyard-plain')) {
      await switchyardCase('switchyard-plain', undefined, (url) => ({ urls: { h1: url }, tls: false, proxy: true, unavailable: {} }))
    }
    const up = upstreamUrl.slice('http://'.length)
    if (want('nginx-tls')) {
      const n = await startNginx('proxy', ['--upstream', up, ...tlsArgs])
      stops.push(n.stop)
      const url = `https://127.0.0.1:${portOf(n.url)}`
      cases['nginx-tls'] = { urls: { h1: url, h2: url }, pid: n.pid, tls: true, proxy: true, version: n.version, unavailable: {} }
    }
    if (want('nginx-plain')) {
      const n = await startNginx('proxy', ['--upstream', up])
      stops.push(n.stop)
      cases['nginx-plain'] = { urls: { h1: `http://127.0.0.1:${portOf(n.url)}` }, pid: n.pid, tls: false, proxy: true, version: n.version, unavailable: {} }
    }
    if (want('node-tls') || want('node-plain')) {
      const c = await startChild(lib('node-tls-hello.js'), [...tlsArgs, '--body-bytes', String(BODY_BYTES)], { name: 'node-tls-hello' })
      stops.push(c.stop)
      if (want('node-tls')) cases['node-tls'] = { urls: { h1: c.info.urls.h1, h2: c.info.urls.h2 }, pid: c.child.pid, tls: true, proxy: false, unavailable: {} }
      if (want('node-plain')) cases['node-plain'] = { urls: { h1: c.info.urls.plain }, pid: c.child.pid, tls: false, proxy: false, unavailable: {} }
    }
  } catch (err) {
    for (const stop of stops.reverse()) await stop().catch(() => {})
    throw err
  }
  return { cases, stop: async () => { for (const stop of stops.reverse()) await stop().catch(() => {}) } }
}

/**
 * Checks each case answers 200 with the 100-byte body on each of its loads,
 * and records the TLS an OpenSSL client (wrk) negotiates with it. Returns problems.
 */
async function checkCases (cases, ca) {
  const problems = []
  for (const [name, c] of Object.entries(cases)) {
    for (const load of loads) {
      const url = c.urls[load]
      if (url === undefined || c.unavailable[load] !== undefined) continue
      try {
        const r = load === 'h1' ? await getH1(url, ca) : await getH2(url, ca)
        if (r.status !== 200 || r.bytes !== BODY_BYTES) problems.push(`${name} ${load}: GET / answered ${r.status} with ${r.bytes} bytes, expected 200 with ${BODY_BYTES}`)
        // A proxy's answer must come from the upstream (its header), not from something answering by itself.
        if (c.proxy && r.upstream !== 'nginx') problems.push(`${name} ${load}: the answer did not come through the upstream (no x-bench-upstream header)`)
      } catch (err) {
        problems.push(`${name} ${load}: GET / failed: ${err.message}`)
      }
    }
    if (c.tls && c.unavailable.h1 === undefined) {
      c.negotiated = probeOpenssl(c.urls.h1)
      const want = { protocol: 'TLSv1.3', cipher, group: CURVE }
      for (const k of Object.keys(want)) {
        if (c.negotiated[k] !== want[k]) problems.push(`${name}: an OpenSSL client (as wrk) negotiated ${k} ${c.negotiated[k] ?? 'none'}, not ${want[k]}`)
      }
    }
  }
  return problems
}

// ---------------------------------------------------------------- one run

async function runLoad (load, url, seconds, onStart) {
  if (load === 'h1') return await loadWrk(url, { connections, duration: seconds, bin: bins.wrk, onStart })
  return await loadH2load(url, { connections, streams, duration: seconds, tls13Ciphers: cipher, bin: h2loadBin, onStart })
}

async function measure (name, c, load, upstreamPid, roundIndex) {
  const url = c.urls[load]
  if (warmup > 0) await runLoad(load, url, warmup)
  const la = loadavg()
  let before
  const r = await runLoad(load, url, duration, () => {
    before = { server: treeCpuSeconds(c.pid), upstream: c.proxy ? treeCpuSeconds(upstreamPid) : null, loader: reapedChildrenCpuSeconds(), machine: machineBusySeconds(), t: performance.now() }
  })
  const wall = (performance.now() - before.t) / 1000
  const after = { server: treeCpuSeconds(c.pid), upstream: c.proxy ? treeCpuSeconds(upstreamPid) : null, loader: reapedChildrenCpuSeconds(), machine: machineBusySeconds() }
  const d = (k) => before[k] === null || after[k] === null ? null : after[k] - before[k]
  const serverCpu = d('server')
  const row = {
    round: roundIndex,
    case: name,
    load,
    url,
    requests: r.requestsTotal,
    durationSec: round(r.durationSec, 2),
    reqPerSec: round(r.reqPerSec, 0),
    p50Ms: round(r.latencyMs.p50, 3),
    p99Ms: round(r.latencyMs.p99, 3),
    maxMs: round(r.latencyMs.max, 2),
    non2xx: r.non2xx,
    errors: r.errors,
    serverCpuUsPerReq: serverCpu === null || r.requestsTotal === 0 ? null : round(serverCpu * 1e6 / r.requestsTotal, 2),
    serverCores: serverCpu === null ? null : round(serverCpu / wall, 2),
    upstreamCores: d('upstream') === null ? null : round(d('upstream') / wall, 2),
    loaderCores: d('loader') === null ? null : round(d('loader') / wall, 2),
    machineCores: d('machine') === null ? null : round(d('machine') / wall, 2),
    // Everything else on the machine (other work on a shared host): the noise of this run.
    otherCores: d('machine') === null || serverCpu === null || d('loader') === null ? null : round(Math.max(0, (d('machine') - serverCpu - (d('upstream') ?? 0) - d('loader')) / wall), 2),
    negotiated: load === 'h2' ? { ...r.tls, alpn: r.alpn } : (c.negotiated ?? null),
    loadavgBefore: la,
  }
  log(`  round ${roundIndex} ${name.padEnd(16)} ${load}: ${fmt(row.reqPerSec, 0)} req/s, p50 ${fmt(row.p50Ms, 2)} ms, p99 ${fmt(row.p99Ms, 2)} ms, ${fmt(row.serverCpuUsPerReq)} µs CPU/req (cores: server ${fmt(row.serverCores, 2)}, loader ${fmt(row.loaderCores, 2)}, other ${fmt(row.otherCores, 2)})${row.errors + (row.non2xx ?? 0) > 0 ? `, ${row.errors} errors, ${row.non2xx} non-2xx` : ''}`)
  return row
}

// ---------------------------------------------------------------- profile

/** One switchyard-tls child under --cpu-prof, loaded by `profileLoad` for --profile-duration s: the top self time. */
async function profileGateway (upstreamUrl, certs, profileLoad) {
  const profDir = makeTempDir('switchyard-bench-prof-')
  const execArgv = [...process.execArgv, '--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', 'switchyard.cpuprofile']
  const sy = await startSwitchyard(upstreamUrl, { certs: [{ cert: certs.cert, key: certs.key }], minVersion: 'TLSv1.3' }, { name: 'switchyard-tls (profiled)', execArgv })
  const url = `https://127.0.0.1:${sy.port}`
  const nowUs = () => Number(process.hrtime.bigint() / 1000n) // CLOCK_MONOTONIC, as V8's profile timestamps
  let r
  let window
  try {
    log(`profile: switchyard-tls under --cpu-prof, ${profileLoad}, warmup ${warmup}s, then ${profileDuration}s`)
    if (warmup > 0) await runLoad(profileLoad, url, warmup)
    let fromUs
    r = await runLoad(profileLoad, url, profileDuration, () => { fromUs = nowUs() })
    window = { fromUs, toUs: nowUs() }
  } finally {
    await sy.stop() // the child writes the profile as it exits
  }
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'))
  if (file === undefined) throw new Error(`no .cpuprofile written in ${profDir}`)
  const profile = JSON.parse(readFileSync(join(profDir, file), 'utf8'))
  const keep = join(here, 'results', `tls-${profileLoad}.cpuprofile`)
  mkdirSync(dirname(keep), { recursive: true })
  copyFileSync(join(profDir, file), keep)
  removeTempDir(profDir)
  const s = summarize(profile, { ...window, top: 10 })
  return {
    load: profileLoad,
    durationSec: profileDuration,
    reqPerSec: round(r.reqPerSec, 0),
    requests: r.requestsTotal,
    errors: r.errors,
    non2xx: r.non2xx,
    mainThreadUsPerReq: r.requestsTotal > 0 ? round(s.busyMs * 1000 / r.requestsTotal, 1) : null,
    profileFile: keep,
    summary: s,
  }
}

// ---------------------------------------------------------------- summary and report

function summarizeRuns (runs, cases) {
  const cells = {}
  for (const name of Object.keys(cases)) {
    for (const load of loads) {
      const rs = runs.filter((r) => r.case === name && r.load === load)
      if (rs.length === 0) continue
      cells[`${name} ${load}`] = {
        case: name,
        load,
        runs: rs.length,
        reqPerSec: round(median(rs.map((r) => r.reqPerSec)), 0),
        p50Ms: round(median(rs.map((r) => r.p50Ms)), 3),
        p99Ms: round(median(rs.map((r) => r.p99Ms)), 3),
        serverCpuUsPerReq: round(median(rs.map((r) => r.serverCpuUsPerReq)), 2),
        serverCores: round(median(rs.map((r) => r.serverCores)), 2),
        upstreamCores: round(median(rs.map((r) => r.upstreamCores)), 2),
        loaderCores: round(median(rs.map((r) => r.loaderCores)), 2),
        otherCores: round(median(rs.map((r) => r.otherCores)), 2),
        reqPerSecRange: [Math.min(...rs.map((r) => r.reqPerSec)), Math.max(...rs.map((r) => r.reqPerSec))],
      }
    }
  }
  const cell = (name, load) => cells[`${name} ${load}`] ?? null
  const v = (name, load, k) => cell(name, load)?.[k] ?? null
  // Each round's own ratio: both cases ran minutes apart at most, so drift of the machine cancels more.
  const paired = (a, b, load) => {
    const xs = []
    for (let i = 0; i < repeat; i++) {
      const ra = runs.find((r) => r.round === i && r.case === a && r.load === load)
      const rb = runs.find((r) => r.round === i && r.case === b && r.load === load)
      if (ra !== undefined && rb !== undefined) xs.push(ratio(ra.reqPerSec, rb.reqPerSec))
    }
    return xs.length === 0 ? null : round(median(xs), 3)
  }
  const vsNginx = {}
  for (const load of loads) {
    const q = ratio(v('switchyard-tls', load, 'reqPerSec'), v('nginx-tls', load, 'reqPerSec'))
    vsNginx[load] = {
      reqPerSec: round(q, 3),
      pairedReqPerSec: paired('switchyard-tls', 'nginx-tls', load),
      p99: round(ratio(v('switchyard-tls', load, 'p99Ms'), v('nginx-tls', load, 'p99Ms')), 2),
      cpuUsPerReq: round(ratio(v('switchyard-tls', load, 'serverCpuUsPerReq'), v('nginx-tls', load, 'serverCpuUsPerReq')), 2),
      target: TARGET,
      met: q === null ? null : q >= TARGET,
    }
  }
  /** µs per request TLS adds (tls − plain, h1) and its share of the TLS case's µs. */
  const tlsDelta = (tlsCase, plainCase) => {
    const t = v(tlsCase, 'h1', 'serverCpuUsPerReq')
    const p = v(plainCase, 'h1', 'serverCpuUsPerReq')
    return t === null || p === null ? null : { tlsUs: t, plainUs: p, addedUs: round(t - p, 2), share: round((t - p) / t, 3) }
  }
  const nodeTls = {
    h1Us: v('node-tls', 'h1', 'serverCpuUsPerReq'),
    h2Us: v('node-tls', 'h2', 'serverCpuUsPerReq'),
    plainH1Us: v('node-plain', 'h1', 'serverCpuUsPerReq'),
  }
  return {
    cells,
    vsNginx,
    tlsShare: { switchyard: tlsDelta('switchyard-tls', 'switchyard-plain'), nginx: tlsDelta('nginx-tls', 'nginx-plain'), nodeHello: tlsDelta('node-tls', 'node-plain') },
    nodeTls,
    // The gateway's h1 µs with the Node TLS hello's taken out: the proxy work on top of "Node speaking TLS".
    switchyardOverNodeTlsUs: { h1: round(v('switchyard-tls', 'h1', 'serverCpuUsPerReq') === null || nodeTls.h1Us === null ? null : v('switchyard-tls', 'h1', 'serverCpuUsPerReq') - nodeTls.h1Us, 2), h2: round(v('switchyard-tls', 'h2', 'serverCpuUsPerReq') === null || nodeTls.h2Us === null ? null : v('switchyard-tls', 'h2', 'serverCpuUsPerReq') - nodeTls.h2Us, 2) },
  }
}

function report (doc) {
  const s = doc.summary
  const line = (cells) => '| ' + cells.join(' | ') + ' |'
  console.log('')
  console.log(`### HTTPS: HTTP/1.1 (wrk -t1 -c${connections} --latency) and HTTP/2 (h2load -t1 -c${connections} -m${streams} -D ${duration}), one process/worker each`)
  console.log(`${duration}s per run after ${warmup}s warmup, median of ${repeat} alternating rounds; TLS 1.3, ${cipher}, ${CURVE}, ECDSA P-256; upstream nginx (1 worker) answering ${BODY_BYTES} bytes; Node ${process.version}; ${os.cpus().length} CPUs; load avg at start ${doc.loadavgStart.join(' ')}`)
  console.log('node-tls and node-plain are not proxies: Node answering by itself (the cost of TLS and HTTP/2 in Node with no proxy work).')
  console.log('')
  console.log(line(['case', 'load', 'req/s', 'p50 ms', 'p99 ms', 'server µs CPU/req', 'server cores', 'upstream cores', 'loader cores', 'other cores', 'req/s range']))
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
  for (const c of Object.values(s.cells)) {
    console.log(line([c.case, c.load, fmt(c.reqPerSec, 0), fmt(c.p50Ms, 2), fmt(c.p99Ms, 2), fmt(c.serverCpuUsPerReq), fmt(c.serverCores, 2), fmt(c.upstreamCores, 2), fmt(c.loaderCores, 2), fmt(c.otherCores, 2), `${fmt(c.reqPerSecRange[0], 0)}–${fmt(c.reqPerSecRange[1], 0)}`]))
  }
  for (const f of doc.failedRuns ?? []) console.log(`| ${f.case} | ${f.load} | FAILED in round ${f.round}: ${f.error.split('\n')[0]}${f.gatewayState === null ? '' : `; the gateway then: ${JSON.stringify(f.gatewayState)}`} | | | | | | | | |`)
  for (const [name, c] of Object.entries(doc.cases)) for (const load of loads) if (c.unavailable[load] !== undefined) console.log(`| ${name} | ${load} | not measured: ${c.unavailable[load]} | | | | | | | | |`)
  console.log('')
  for (const load of loads) {
    const q = s.vsNginx[load]
    console.log(`switchyard-tls / nginx-tls, ${load}: req/s ${fmt(q.reqPerSec, 3)} (each round's own ratio, median: ${fmt(q.pairedReqPerSec, 3)}), p99 ${fmt(q.p99, 2)}x, CPU/req ${fmt(q.cpuUsPerReq, 2)}x (capacity by CPU per request: ${fmt(q.cpuUsPerReq === null ? null : 1 / q.cpuUsPerReq, 2)}x); target req/s >= ${TARGET}x: ${q.met === null ? 'NOT MEASURED' : q.met ? 'met' : `MISSED by ${fmt((TARGET - q.reqPerSec) / TARGET * 100)}%`}`)
  }
  const t = s.tlsShare
  const share = (x, what) => x === null ? `${what}: not measured` : `${what}: ${fmt(x.tlsUs)} µs with TLS, ${fmt(x.plainUs)} µs without: TLS adds ${fmt(x.addedUs)} µs, ${fmt(x.share * 100)}% of the TLS case`
  console.log(`TLS share, h1, server CPU per request: ${share(t.switchyard, 'switchyard')}; ${share(t.nginx, 'nginx')}; ${share(t.nodeHello, 'Node hello')}`)
  console.log(`Node TLS hello (no proxy): ${fmt(s.nodeTls.h1Us)} µs per h1 request, ${fmt(s.nodeTls.h2Us)} µs per h2 stream; switchyard-tls on top of it: ${fmt(s.switchyardOverNodeTlsUs.h1)} µs (h1), ${fmt(s.switchyardOverNodeTlsUs.h2)} µs (h2)`)
  const neg = Object.entries(doc.cases).filter(([, c]) => c.negotiated !== undefined).map(([n, c]) => `${n} ${c.negotiated.protocol}/${c.negotiated.cipher}/${c.negotiated.group}`)
  const h2neg = [...new Set(doc.runs.filter((r) => r.load === 'h2').map((r) => `${r.negotiated.protocol}/${r.negotiated.cipher}/${r.negotiated.tempKey}`))]
  console.log(`Negotiated (openssl s_client, as wrk): ${neg.join('; ') || '-'}; h2load: ${h2neg.join('; ') || '-'}`)
  for (const p of doc.profiles ?? []) {
    console.log('')
    if (p.error !== undefined) { console.log(`Profile ${p.load}: FAILED: ${p.error.split('\n')[0]}`); continue }
    console.log(`Profile: switchyard-tls under --cpu-prof, ${p.load}, ${p.durationSec}s: ${fmt(p.reqPerSec, 0)} req/s with the profiler on, ${fmt(p.mainThreadUsPerReq)} µs of main-thread time per request`)
    printSummary(p.summary, { top: 10 })
    const fn = (f) => `${f.function} (${f.file}:${f.line}, ${fmt(f.share * 100)}%)`
    const js = p.summary.functions.filter((f) => !f.function.startsWith('('))
    console.log(`\nTop 3 self-time functions: ${p.summary.functions.slice(0, 3).map(fn).join(', ')}; without (program) and GC: ${js.slice(0, 3).map(fn).join(', ')}`)
  }
}

// ---------------------------------------------------------------- main

async function main () {
  const cpus = os.cpus()
  const doc = {
    script: 'bench/tls.js',
    date: new Date().toISOString(),
    node: process.version,
    machine: { cpus: cpus.length, model: cpus[0]?.model ?? null, memGB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), platform: process.platform },
    code: codeInfo(),
    versions: { ...versions(), h2load: spawnSync(h2loadBin ?? 'h2load', ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? null, openssl: spawnSync('openssl', ['version'], { encoding: 'utf8' }).stdout?.trim() ?? null },
    args: { duration, warmup, repeat, connections, streams, only, loads, cipher, curve: CURVE, bodyBytes: BODY_BYTES, maxOther, retries, profileDuration, profileLoads },
    loadavgStart: loadavg(),
  }
  const certDir = makeTempDir('switchyard-bench-tls-certs-')
  const certs = makeCert(certDir)
  const ca = readFileSync(certs.cert)
  const upstream = await startNginx('upstream', ['--body-bytes', String(BODY_BYTES)])
  let started
  const problems = []
  try {
    started = await startCases(upstream.url, certs)
    const { cases } = started
    problems.push(...await checkCases(cases, ca))
    doc.cases = Object.fromEntries(Object.entries(cases).map(([n, c]) => [n, { urls: c.urls, tls: c.tls, proxy: c.proxy, version: c.version ?? null, negotiated: c.negotiated, unavailable: c.unavailable }]))
    for (const [n, c] of Object.entries(cases)) {
      for (const load of loads) {
        const why = c.unavailable[load]
        if (why !== undefined) { log(`${n} ${load}: not measured: ${why}`); problems.push(`${n} ${load} not measured: ${why}`) }
      }
    }
    if (problems.some((p) => !p.includes('not measured'))) throw new Error(`the cases are not set up alike: ${problems.join('; ')}`)
    // Compared runs stand next to each other (switchyard-tls then nginx-tls on
    // one load, then the other load, ...), so both see about the same machine.
    const pairs = RUN_ORDER.filter(([name, load]) => loads.includes(load) && cases[name]?.urls[load] !== undefined && cases[name].unavailable[load] === undefined)
    log(`${pairs.length} runs per round (${pairs.map((p) => p.join(' ')).join(', ')}), ${repeat} rounds, ${duration}s each after ${warmup}s warmup`)
    doc.runs = []
    doc.failedRuns = []
    const broken = new Set()
    for (let i = 0; i < repeat; i++) {
      const order = i % 2 === 0 ? pairs : [...pairs].reverse()
      for (const [name, load] of order) {
        // A run during which other processes took more than --max-other cores
        // is measured again (at most --retries times); the least disturbed
        // attempt counts, every attempt is kept in the JSON.
        if (broken.has(`${name} ${load}`)) continue
        const attempts = []
        try {
          for (let a = 0; a <= retries; a++) {
            const row = await measure(name, cases[name], load, upstream.pid, i)
            attempts.push(row)
            if (row.otherCores === null || row.otherCores <= maxOther) break
            if (a < retries) log(`    other processes took ${fmt(row.otherCores, 2)} cores (> ${maxOther}): measuring again`)
          }
        } catch (err) {
          // A run that cannot finish (h2load stopped by its watchdog, a loader
          // error) is a finding, not the end of the bench: it is reported, that
          // case and load are not measured again, and a Switchyard case is
          // started afresh so whatever state it was left in costs the other runs nothing.
          const message = String(err?.message ?? err).split('\n')[0]
          log(`  round ${i} ${name} ${load}: FAILED: ${message}`)
          problems.push(`round ${i} ${name} ${load} failed: ${message}`)
          doc.failedRuns.push({ round: i, case: name, load, error: String(err?.message ?? err), gatewayState: await cases[name].state?.().catch(() => null) ?? null })
          broken.add(`${name} ${load}`)
          if (cases[name].restart !== undefined) await cases[name].restart()
          continue
        }
        const best = attempts.reduce((a, b) => ((b.otherCores ?? 0) < (a.otherCores ?? 0) ? b : a))
        doc.runs.push({ ...best, attempts: attempts.length, disturbedAttempts: attempts.filter((x) => x !== best) })
      }
    }
    for (const r of doc.runs) {
      if (r.errors > 0 || (r.non2xx ?? 0) > 0) problems.push(`round ${r.round} ${r.case} ${r.load}: ${r.errors} errors, ${r.non2xx} non-2xx`)
      if (r.load === 'h2' && (r.negotiated.protocol !== 'TLSv1.3' || r.negotiated.cipher !== cipher || !String(r.negotiated.tempKey).startsWith(CURVE))) {
        problems.push(`round ${r.round} ${r.case} h2: h2load negotiated ${r.negotiated.protocol}/${r.negotiated.cipher}/${r.negotiated.tempKey}, not TLSv1.3/${cipher}/${CURVE}`)
      }
    }
    doc.summary = summarizeRuns(doc.runs, cases)
    for (const load of loads) if (doc.summary.vsNginx[load].met === false) problems.push(`switchyard-tls / nginx-tls ${load} req/s ${doc.summary.vsNginx[load].reqPerSec} < ${TARGET}`)
  } finally {
    await started?.stop()
  }
  try {
    const sy = doc.cases['switchyard-tls']
    doc.profiles = []
    for (const load of profileLoads.filter((l) => loads.includes(l))) {
      if (!(profileDuration > 0) || sy === undefined || sy.unavailable[load] !== undefined) continue
      try {
        doc.profiles.push(await profileGateway(upstream.url, certs, load))
      } catch (err) {
        problems.push(`profile ${load}: ${String(err?.message ?? err).split('\n')[0]}`)
        doc.profiles.push({ load, error: String(err?.message ?? err) })
      }
    }
  } finally {
    await upstream.stop()
    removeTempDir(certDir)
  }
  doc.loadavgEnd = loadavg()
  doc.problems = problems
  doc.pass = problems.length === 0
  report(doc)
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, JSON.stringify(doc, null, 2) + '\n')
  console.log('')
  console.log(`${doc.pass ? 'PASS' : 'FAIL'}${problems.length > 0 ? `: ${problems.join('; ')}` : ''}  (loadavg at the end ${doc.loadavgEnd.join(' ')}; wrote ${relative(process.cwd(), out) || out})`)
  if (!doc.pass) process.exitCode = 1
}

await main()
