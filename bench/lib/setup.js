// Shared set-up for run.js, soak.js and profile.js: the upstream (nginx
// `return 200` or the Node backend), the proxies under test, the request
// scenarios, the load generator choice, and what code is being measured.

import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, removeTempDir, startChild } from './children.js'
import { load } from './load.js'
import { loadWrk } from './wrk.js'

const here = dirname(fileURLToPath(import.meta.url))
export const lib = (f) => join(here, f)
export const root = join(here, '..', '..')

export function which (cmd) {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(d, cmd)
    if (d !== '' && existsSync(p)) return p
  }
  return undefined
}

export const bins = { nginx: which('nginx'), haproxy: which('haproxy'), caddy: which('caddy'), wrk: which('wrk') }

export const LARGE_PATH = '/64k'
export const LARGE_BYTES = 65536

/** The request mixes: every case is measured with each selected one. */
export const SCENARIOS = {
  small: { method: 'GET', path: '/', describe: 'GET /, 2-byte response' },
  post1k: { method: 'POST', path: '/', body: 'x'.repeat(1024), headers: { 'content-type': 'application/octet-stream' }, describe: 'POST / with a 1 KiB body, 2-byte response' },
  get64k: { method: 'GET', path: LARGE_PATH, describe: `GET ${LARGE_PATH}, ${LARGE_BYTES}-byte response` },
}

/** --scenario small|post1k|get64k|all (or a comma list). */
export function parseScenarios (arg) {
  if (arg === undefined || arg === true || arg === 'all') return Object.keys(SCENARIOS)
  const list = String(arg).split(',').filter(Boolean)
  for (const s of list) if (SCENARIOS[s] === undefined) throw new Error(`unknown scenario ${s} (small, post1k, get64k, all)`)
  return list
}

/**
 * The upstream every case talks to: nginx `return 200` (one worker) when
 * nginx is installed and `kind` is not 'node', else the Node backend child.
 * Returns { kind, url, pid (tree root, for CPU), version?, stop }.
 */
export async function startUpstream (kind) {
  const useNginx = kind === 'nginx' || (kind === undefined && bins.nginx !== undefined)
  if (useNginx) {
    if (bins.nginx === undefined) throw new Error('--upstream nginx: nginx is not installed')
    const dir = makeTempDir('switchyard-bench-upstream-')
    const c = await startChild(lib('nginx.js'), ['--dir', dir, '--role', 'upstream', '--large-path', LARGE_PATH, '--large-bytes', String(LARGE_BYTES), '--nginx', bins.nginx], { name: 'upstream nginx' })
    return { kind: 'nginx', url: c.info.url, pid: c.child.pid, version: c.info.version, request: c.request, stop: async () => { await c.stop(); removeTempDir(dir) } }
  }
  if (kind !== undefined && kind !== 'node') throw new Error(`--upstream ${kind}: node or nginx`)
  const c = await startChild(lib('backend.js'), ['--names', 'ok', '--large-path', LARGE_PATH, '--large-bytes', String(LARGE_BYTES)], { name: 'backend' })
  return { kind: 'node', url: `http://127.0.0.1:${c.info.servers.ok}`, pid: c.child.pid, version: process.version, request: c.request, stop: c.stop }
}

/** A Switchyard child with one service on `/`, both colors on the upstream. */
export async function startSwitchyard (upstreamUrl, { name = 'switchyard', top = {}, execArgv } = {}) {
  const dir = makeTempDir('switchyard-bench-sy-')
  const svc = { svc: { pathPrefix: '/', blue: [upstreamUrl], green: [upstreamUrl] } }
  const topJson = typeof top === 'function' ? top(dir) : top
  const c = await startChild(lib('switchyard.js'), ['--dir', dir, '--config-json', JSON.stringify(svc), '--top-json', JSON.stringify(topJson)], { name, execArgv })
  return { url: c.info.url, pid: c.child.pid, rssPid: c.child.pid, request: c.request, stop: async () => { await c.stop(); removeTempDir(dir) } }
}

/**
 * Every case run.js knows, by name, in table order. start(upstreamUrl) resolves
 * with { url, pid (CPU: whole tree), rssPid (the proxy proper), version?, request?, stop? }.
 * `label`: the table's name when it differs; `notProxy`: serves the answers
 * itself (no upstream), so it is a reference, not a proxy.
 */
export function allCases () {
  const cases = [
    { name: 'direct', start: async (up) => ({ url: up }) },
    // Not a proxy: a Node server answering like the upstream itself, the
    // ceiling for anything one Node process serves. Never a target-check case.
    {
      name: 'node-hello',
      label: 'node-hello (no proxy)',
      notProxy: true,
      start: async () => {
        const c = await startChild(lib('node-hello.js'), ['--large-path', LARGE_PATH, '--large-bytes', String(LARGE_BYTES)], { name: 'node-hello' })
        return { url: c.info.url, pid: c.child.pid, rssPid: c.child.pid, stop: c.stop }
      },
    },
    // Three Switchyard cases measure what observability costs: `switchyard` is
    // the default set-up with metrics on and the access log off; `-bare` turns
    // metrics off too; `+accesslog` writes the access log to a file.
    { name: 'switchyard', start: async (up) => await startSwitchyard(up, { name: 'switchyard', top: { log: { access: false } } }) },
    { name: 'switchyard-bare', start: async (up) => await startSwitchyard(up, { name: 'switchyard-bare', top: { log: { access: false }, metrics: { enabled: false } } }) },
    { name: 'switchyard+accesslog', start: async (up) => await startSwitchyard(up, { name: 'switchyard+accesslog', top: (dir) => ({ log: { access: join(dir, 'access.log') } }) }) },
    // The reference engine (node:http and undici), slower by design: what a change to its path costs.
    { name: 'switchyard-node', start: async (up) => await startSwitchyard(up, { name: 'switchyard-node', top: { log: { access: false }, engine: 'node' } }) },
    {
      name: 'http-proxy-3',
      start: async (up) => {
        const c = await startChild(lib('http-proxy.js'), ['--target', up], { name: 'http-proxy-3' })
        return { url: c.info.url, pid: c.child.pid, rssPid: c.child.pid, stop: c.stop }
      },
    },
    // The other naive baseline: one undici Pool, one pool.request() per request.
    {
      name: 'undici-naive',
      start: async (up) => {
        const c = await startChild(lib('undici-naive.js'), ['--target', up], { name: 'undici-naive' })
        return { url: c.info.url, pid: c.child.pid, rssPid: c.child.pid, stop: c.stop }
      },
    },
  ]
  if (bins.nginx !== undefined) {
    cases.push({
      name: 'nginx',
      start: async (up) => {
        const dir = makeTempDir('switchyard-bench-nginx-')
        const c = await startChild(lib('nginx.js'), ['--dir', dir, '--upstream', up.slice('http://'.length), '--nginx', bins.nginx], { name: 'nginx' })
        return { url: c.info.url, pid: c.child.pid, rssPid: c.info.pid, version: c.info.version, request: c.request, stop: async () => { await c.stop(); removeTempDir(dir) } }
      },
    })
  }
  if (bins.haproxy !== undefined) {
    cases.push({
      name: 'haproxy',
      start: async (up) => {
        const dir = makeTempDir('switchyard-bench-haproxy-')
        const c = await startChild(lib('haproxy.js'), ['--dir', dir, '--upstream', up.slice('http://'.length), '--haproxy', bins.haproxy], { name: 'haproxy' })
        return { url: c.info.url, pid: c.child.pid, rssPid: c.info.pid, version: c.info.version, request: c.request, stop: async () => { await c.stop(); removeTempDir(dir) } }
      },
    })
  }
  // Caddy has no one-worker mode: it runs with GOMAXPROCS=1 (see caddy.js).
  if (bins.caddy !== undefined) {
    cases.push({
      name: 'caddy',
      start: async (up) => {
        const dir = makeTempDir('switchyard-bench-caddy-')
        const c = await startChild(lib('caddy.js'), ['--dir', dir, '--upstream', up.slice('http://'.length), '--caddy', bins.caddy], { name: 'caddy' })
        return { url: c.info.url, pid: c.child.pid, rssPid: c.info.pid, version: c.info.version, request: c.request, stop: async () => { await c.stop(); removeTempDir(dir) } }
      },
    })
  }
  return cases
}

/** One load run of `scenario` against `baseUrl` with autocannon (default) or wrk. */
export async function runScenario (baseUrl, scenario, { wrk = false, connections, duration, title, onStart, onTick }) {
  const s = SCENARIOS[scenario]
  const url = baseUrl + s.path
  const opts = { connections, duration, title, method: s.method, body: s.body, headers: s.headers }
  if (wrk) return await loadWrk(url, { ...opts, bin: bins.wrk, onStart })
  onStart?.(undefined)
  return await load(url, { ...opts, fine: true, onTick })
}

/** Versions of what is measured, for the JSON. */
export function versions () {
  const require = createRequire(join(root, 'package.json'))
  const pkg = (name) => { try { return JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')).version } catch { return null } }
  const out = (bin, a) => {
    if (bin === undefined) return null
    const r = spawnSync(bin, a, { encoding: 'utf8' })
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0]
  }
  return {
    node: process.version,
    autocannon: pkg('autocannon'),
    'http-proxy-3': pkg('http-proxy-3'),
    undici: pkg('undici'),
    nginx: out(bins.nginx, ['-v'])?.replace(/^nginx version: /, '') ?? null,
    haproxy: out(bins.haproxy, ['-v']) ?? null,
    caddy: out(bins.caddy, ['version']) ?? null,
    wrk: out(bins.wrk, ['--version']) ?? null,
  }
}

/**
 * Which code is measured: commit, whether src/ differs from it, dist/'s build
 * time. bench/run --commit REV runs from an exported tree without .git and
 * passes the commit in SWITCHYARD_BENCH_COMMIT.
 */
export function codeInfo () {
  const git = (...a) => { try { return execFileSync('git', ['-C', root, ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() } catch { return null } }
  const dirty = process.env.SWITCHYARD_BENCH_COMMIT !== undefined ? '' : git('status', '--porcelain', '--', 'src')
  let distBuilt = null
  try { distBuilt = statSync(join(root, 'dist', 'gateway.js')).mtime.toISOString() } catch {}
  return { commit: process.env.SWITCHYARD_BENCH_COMMIT ?? git('rev-parse', '--short', 'HEAD'), srcChanged: dirty === null ? null : dirty !== '', distBuilt }
}

export function requireDist () {
  if (!existsSync(join(root, 'dist', 'gateway.js'))) {
    console.error('dist/ is missing: run `npm run build` first (or use bench/run, which builds when needed)')
    process.exit(2)
  }
}
