// Test helpers: real backends and a real gateway on 127.0.0.1 port 0,
// an admin client, and eventually() for polling instead of sleeping.

import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import WebSocket, { WebSocketServer } from 'ws'
import { request } from 'undici'
import { parseConfig } from '../../src/config/load.js'
import { Gateway } from '../../src/gateway.js'
import { PROBE_USER_AGENT } from '../../src/health/grpc-health.js'

interface Teardown { teardown: (fn: () => unknown) => void }

export interface Backend {
  name: string
  url: string
  port: number
  server: http.Server
  /** Requests seen, in order: everything but the gateway's health probes. */
  seen: Array<{ method: string, url: string, headers: http.IncomingHttpHeaders }>
  /**
   * The gateway's health probes (user-agent `switchyard-health`), kept apart: they arrive every
   * `health.interval` whatever a test does, so counting them with `seen` makes a test depend on
   * how long the machine took.
   */
  probes: Array<{ method: string, url: string }>
  /** Replace the request handler at run time. */
  handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  close: () => Promise<void>
}

/**
 * A backend answering JSON `{backend, method, path}`. Special paths:
 * `/slow?ms=N` answers after N ms; `/status/N` answers with status N.
 * WebSocket connections get `name: message` echoes.
 */
export async function startBackend (t: Teardown, name: string): Promise<Backend> {
  const seen: Backend['seen'] = []
  const probes: Backend['probes'] = []
  const backend = { name, seen, probes, handler: undefined } as unknown as Backend
  const server = http.createServer((req, res) => {
    if (req.headers['user-agent'] === PROBE_USER_AGENT) probes.push({ method: req.method ?? '', url: req.url ?? '' })
    else seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers })
    if (backend.handler !== undefined) return backend.handler(req, res)
    const url = new URL(req.url ?? '/', 'http://x')
    const reply = (status: number): void => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = JSON.stringify({ backend: name, method: req.method, path: req.url, body: Buffer.concat(chunks).toString() })
        res.writeHead(status, { 'content-type': 'application/json', 'x-backend': name })
        res.end(body)
      })
    }
    const status = /^\/status\/(\d{3})$/.exec(url.pathname)
    if (status !== null) return reply(Number(status[1]))
    if (url.pathname.endsWith('/slow')) {
      const timer = setTimeout(() => reply(200), Number(url.searchParams.get('ms') ?? 1000))
      res.on('close', () => clearTimeout(timer))
      return
    }
    reply(200)
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => {
    // ws's default binaryType hands every message over as one Buffer.
    ws.on('message', (data) => ws.send(`${name}: ${(data as Buffer).toString()}`))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  Object.assign(backend, {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    close: async () => {
      for (const c of wss.clients) c.terminate()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  })
  t.teardown(async () => await backend.close().catch(() => {}))
  return backend
}

export function tempDir (t: Teardown): string {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The top of a config for a gateway a test runs as its own process: ports from the kernel, no access log. */
export const CLI_TOP = 'listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nlog: { access: false }\n'

/** Writes CLI_TOP + `yaml` to a fresh temp folder and returns the file's path, for `serve(t, ['serve', '--config', file])`. */
export function configFile (t: Teardown, yaml: string): string {
  const file = join(tempDir(t), 'sy.yaml')
  writeFileSync(file, CLI_TOP + yaml)
  return file
}

export interface TestGateway {
  gateway: Gateway
  url: string
  adminUrl: string
  dir: string
  configFile: string
  stop: () => Promise<void>
}

/** Starts a gateway from YAML (written to a temp folder so state.file lands there). */
export async function startGateway (t: Teardown, yaml: string, opts: { dir?: string, env?: NodeJS.ProcessEnv } = {}): Promise<TestGateway> {
  const dir = opts.dir ?? tempDir(t)
  const configFile = join(dir, 'switchyard.yaml')
  // Access logs would flood the test output: off unless a test asks for them.
  if (!/^log:/m.test(yaml)) yaml = `log: { access: false }\n${yaml}`
  // Any suite can be run on the node engine by hand (SWITCHYARD_TEST_ENGINE=node); a config naming its engine keeps it.
  if (process.env.SWITCHYARD_TEST_ENGINE !== undefined && !/^engine:/m.test(yaml)) yaml = `engine: ${process.env.SWITCHYARD_TEST_ENGINE}\n${yaml}`
  writeFileSync(configFile, yaml)
  const config = parseConfig(yaml, { file: configFile, env: opts.env ?? {} })
  const gateway = new Gateway(config, { env: opts.env ?? {}, listen: { host: '127.0.0.1', port: 0 }, adminListen: { host: '127.0.0.1', port: 0 } })
  await gateway.start()
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    await gateway.stop(1000)
  }
  t.teardown(stop)
  return { gateway, url: gateway.url, adminUrl: gateway.adminUrl, dir, configFile, stop }
}

/** A two-color service block for YAML configs. */
export function serviceYaml (name: string, prefix: string, blue: Backend[], green: Backend[], extra = ''): string {
  return `  ${name}:
    match: { pathPrefix: ${prefix} }
    blue: { targets: [${blue.map((b) => b.url).join(', ')}] }
    green: { targets: [${green.map((b) => b.url).join(', ')}] }
${extra}`
}

/** One service, `users` on `/`, live on blue, probed every 100 ms: where the release tests start from. */
export function usersYaml (blue: Backend, green: Backend, drainTimeout: string, health = '{ interval: 100ms, timeout: 80ms, healthyThreshold: 1 }'): string {
  return `defaults:
  health: ${health}
  drain: { timeout: ${drainTimeout} }
services:
  users:
    match: { pathPrefix: / }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
`
}

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  json: any
}

export async function http1 (url: string, opts: { method?: string, headers?: Record<string, string>, body?: string, signal?: AbortSignal } = {}): Promise<Reply> {
  const res = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers, body: opts.body, signal: opts.signal })
  const text = await res.body.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.statusCode, headers: res.headers, text, json }
}

/** Admin call with an optional token; returns status and JSON. */
export async function admin (base: string, method: string, path: string, body?: unknown, token?: string): Promise<Reply> {
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  return await http1(base + path, { method, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) })
}

/**
 * A loopback port nothing listens on, and nothing will unless the caller does: it is taken below
 * the kernel's ephemeral range, where no `listen(0)` and no outgoing connection ever lands. A
 * port taken on 0 and given back is free only for a moment: under a parallel test run another
 * file's server or connection can be given it. A "dead" target then answers (seen in CI: a dead
 * target's answer was not the 502 due), and an etcd restarting on its ports cannot bind them.
 */
export async function closedPort (): Promise<number> {
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').trim().split(/\s+/).map(Number)
  const floor = Math.max(1025, low - 16_000)
  if (!(low - floor >= 1000)) throw new Error(`closedPort: the ephemeral range starts at ${low}: no room below it`)
  for (let i = 0; i < 50; i++) {
    const port = floor + Math.floor(Math.random() * (low - floor))
    if (await refuses(port)) return port
  }
  throw new Error(`closedPort: 50 ports in ${floor}-${low - 1} all accepted a connection`)
}

/** `http://127.0.0.1:<closedPort>`: a target whose every connection is refused. */
export async function refusedUrl (): Promise<string> {
  return `http://127.0.0.1:${await closedPort()}`
}

/** Whether a connection to 127.0.0.1:port is refused. */
export async function refuses (port: number): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', () => resolve(true))
  })
}

/**
 * `loops` sequential GET loops, each request with its own `x-switchyard-key` (so a weighted split
 * spreads them), until `stop()`; `url(loop)` picks where each loop sends. `answer` sees each reply
 * (undefined: the request failed). A teardown stops them too: a test that fails while they run
 * must not leave them spinning against a stopped gateway until tap's file timeout.
 */
export function keyedLoad (t: Teardown, url: (loop: number) => string, loops: number, answer?: (r: Reply | undefined) => void): { stop: () => Promise<number> } {
  let running = true
  let n = 0
  const all = Array.from({ length: loops }, async (_, loop) => {
    while (running) {
      const r = await http1(url(loop), { headers: { 'x-switchyard-key': `k${n++}` } }).catch(() => undefined)
      answer?.(r)
    }
  })
  const stop = async (): Promise<number> => {
    running = false
    await Promise.all(all)
    return n
  }
  t.teardown(stop)
  return { stop }
}

/** Polls until `fn` stops throwing (or returns truthy), or fails after `timeout` ms. */
export async function eventually<T> (fn: () => T | Promise<T>, { timeout = 5000, interval = 20 } = {}): Promise<T> {
  const end = Date.now() + timeout
  for (;;) {
    try {
      const v = await fn()
      if (v !== false) return v
      if (Date.now() > end) throw new Error('eventually: condition stayed false')
    } catch (err) {
      if (Date.now() > end) throw err
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

/** A WebSocket client whose messages can be awaited one by one; `closed` resolves with the close code. */
export async function openWs (url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket, next: () => Promise<string>, closed: Promise<number> }> {
  const ws = new WebSocket(url, { headers })
  const queue: string[] = []
  const waiters: Array<(m: string) => void> = []
  ws.on('message', (d) => {
    const w = waiters.shift()
    // ws's default binaryType hands every message over as one Buffer.
    if (w !== undefined) w((d as Buffer).toString())
    else queue.push((d as Buffer).toString())
  })
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  const next = async (): Promise<string> => queue.length > 0 ? queue.shift() as string : await new Promise((resolve) => waiters.push(resolve))
  return { ws, next, closed }
}

/** The built CLI: these helpers run it as a real process. */
const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))

export interface Proc { lines: any[], exit: Promise<number | null>, kill: (sig: NodeJS.Signals) => void, stderr: () => string }

/** Runs `node dist/cli.js ARGS`, collecting its JSON log lines; killed at teardown. */
export function serve (t: Teardown, args: string[]): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: any[] = []
  let buf = ''
  let err = ''
  child.stdout.on('data', (c) => {
    buf += String(c)
    let i
    while ((i = buf.indexOf('\n')) !== -1) {
      lines.push(JSON.parse(buf.slice(0, i)))
      buf = buf.slice(i + 1)
    }
  })
  child.stderr.on('data', (c) => { err += String(c) })
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(() => { child.kill('SIGKILL') })
  return { lines, exit, kill: (sig) => child.kill(sig), stderr: () => err }
}

/** Waits for the "switchyard listening" line; its ports. */
export async function listening (p: Proc): Promise<{ port: number, admin: number }> {
  for (let i = 0; i < 400; i++) {
    const l = p.lines.find((x) => x.msg === 'switchyard listening')
    if (l !== undefined) return { port: Number(l.listen.split(':').pop()), admin: Number(l.admin.split(':').pop()) }
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error('gateway did not start: ' + p.stderr())
}

/** Whether a process runs (an exited one not yet reaped by its new parent counts as gone). */
export function isAlive (pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}
