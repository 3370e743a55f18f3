// The CLI's commands: `serve` runs the gateway; `state export|import` work on
// the configured store directly; the others are thin clients of the admin API
// that print a table (or --json) and exit non-zero on refusal.

import cluster from 'node:cluster'
import { readFile, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { ConfigError, loadConfigFile } from './config/load.js'
import { isColor, type Config } from './config/schema.js'
import { parseDuration, parseOrigin } from './config/values.js'
import { startDemoBackends, stopDemoBackends, type DemoBackend } from './demo.js'
import { Gateway } from './gateway.js'
import { runWorker, WorkerPool } from './listen/worker-pool.js'
import { log } from './log.js'
import type { ReleaseOutcome, ReleasePhase } from './release/model.js'
import { openState } from './state/open.js'
import type { StateStore } from './state/store.js'
import { exportState, importState, parseDocument } from './state/transfer.js'

export interface Io {
  out: (text: string) => void
  err: (text: string) => void
  env: NodeJS.ProcessEnv
  /** Resolves when the process is asked to stop (SIGTERM/SIGINT); only `serve` waits on it. */
  stopSignal?: Promise<string>
  /** Registers what SIGHUP does (`serve` reloads its config). */
  onReload?: (fn: () => void) => void
  /** Raw output without a newline, and whether it is a terminal (live progress lines). */
  write?: (text: string) => void
  tty?: boolean
}

const USAGE = `usage: switchyard <command> [options]

  serve --config FILE [--demo] [--workers N]
                                      run the gateway (--demo: demo backends on loopback targets;
                                      --workers: N processes share the listener)
  validate FILE                       check a config file; prints OK or every error
  status [--watch] [--interval MS]    services, live colors, targets, guard; the store and the fleet
  flip [SERVICE...] [--to COLOR] [--force] [--reason TEXT] [--if-generation N] [--wait-fleet [--wait-timeout D]]
  rollback [SERVICE...] [--reason TEXT] [--if-generation N] [--wait-fleet [--wait-timeout D]]
  targets SERVICE COLOR URL... [--force] [--reason TEXT]
  drain SERVICE [--color COLOR] [--wait] [--timeout DURATION]
  shadow SERVICE                      the shadow comparison: copies sent to the idle color, pairs that differ, where
  shadow SERVICE --sample X [--duration D] [--reason TEXT]
                                      start shadow traffic (X a share such as 0.1; --start: the config's or 0.1)
  shadow SERVICE --stop [--reason TEXT]
  reload                              re-read the config file (as SIGHUP does)
  release NAME=URL[,URL]... [--version V|NAME=V,...] [--steps W:D,...] [--verify D] [--timeout D]
          [--reason TEXT] [--if-generation N] [--wait]
                                      deploy, test, shift and verify new targets as one release
                                      (--wait: follow it; exit 0 done, 3 reverted, 4 aborted or failed)
  release show|pause|resume|promote|abort ID [--wait]
  releases                            the releases, newest first
  state export [--config FILE] [--out FILE]
                                      print the routing state of the store the config names
  state import FILE --config FILE [--reason TEXT] [--force]
                                      write an exported state into that store, one generation on
                                      (--force: also services the config does not define)

client commands read SWITCHYARD_ADMIN_URL (default http://127.0.0.1:9901) and
SWITCHYARD_ADMIN_TOKEN, and take --json for the server's JSON answer.
state export and import open the store (state file or etcd) themselves: no gateway needed.`

/** Thrown for a refusal or usage error: message to stderr, exit code 1 or 2. */
class CliError extends Error {
  readonly exitCode: number
  /** The API could not be reached or answered 5xx: a follower may try again, a one-shot command does not. */
  readonly transient: boolean
  constructor (message: string, exitCode = 1, transient = false) {
    super(message)
    this.exitCode = exitCode
    this.transient = transient
  }
}

export async function run (argv: string[], io: Io): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'serve': return await serve(rest, io)
      case 'validate': return validate(rest, io)
      case 'status': return await status(rest, io)
      case 'flip': return await flip(rest, io)
      case 'rollback': return await rollback(rest, io)
      case 'targets': return await targets(rest, io)
      case 'drain': return await drain(rest, io)
      case 'shadow': return await shadow(rest, io)
      case 'reload': return await reload(rest, io)
      case 'state': return await state(rest, io)
      case 'release': return await release(rest, io)
      case 'releases': return await releases(rest, io)
      case undefined: case 'help': case '--help': case '-h':
        io.out(USAGE)
        return command === undefined ? 2 : 0
      default:
        throw new CliError(`unknown command "${command}"\n${USAGE}`, 2)
    }
  } catch (err) {
    if (err instanceof CliError) {
      io.err(`switchyard: ${err.message}`)
      return err.exitCode
    }
    if (err instanceof ConfigError) {
      io.err(err.message)
      return 1
    }
    io.err(`switchyard: ${(err as Error).message}`)
    return 1
  }
}

function args (argv: string[], options: Record<string, { type: 'string' | 'boolean', short?: string }>): { values: Record<string, string | boolean | undefined>, positionals: string[] } {
  try {
    return parseArgs({ args: argv, options: { json: { type: 'boolean' }, ...options }, allowPositionals: true, strict: true })
  } catch (err) {
    throw new CliError((err as Error).message, 2)
  }
}

async function serve (argv: string[], io: Io): Promise<number> {
  const { values } = args(argv, { config: { type: 'string', short: 'c' }, demo: { type: 'boolean' }, workers: { type: 'string' } })
  if (cluster.isWorker) {
    // A forked worker: it serves until the primary tells it to stop, then exits by itself.
    runWorker()
    return await new Promise<number>(() => {})
  }
  const count = integer(values.workers ?? '1', 'workers') as number
  if (count < 1) throw new CliError('--workers must be at least 1', 2)
  const file = (values.config as string | undefined) ?? 'config/switchyard.yaml'
  const config = loadConfigFile(file, io.env)
  let demo: DemoBackend[] = []
  if (values.demo === true) {
    demo = await startDemoBackends(config)
    log('info', 'demo backends started', { backends: demo.map((d) => `${d.service}/${d.color} ${d.url}`) })
  }
  const gateway = new Gateway(config, count > 1 ? { listener: new WorkerPool(count) } : {})
  try {
    await gateway.start()
  } catch (err) {
    await stopDemoBackends(demo)
    throw err
  }
  log('info', 'switchyard listening', {
    listen: `${config.listen.host}:${gateway.address.port}`,
    admin: `${config.admin.listen.host}:${gateway.adminAddress.port}`,
    workers: count,
    config: config.file,
    generation: gateway.controller.generation,
    services: Object.fromEntries([...gateway.controller.snapshots.current.services.values()].map((s) => [s.name, s.live])),
  })
  io.onReload?.(() => { void gateway.reload() })
  const signal = await (io.stopSignal ?? new Promise<string>(() => {}))
  const grace = Math.max(...Object.values(config.services).map((s) => s.drain.timeout))
  log('info', 'stopping: finishing in-flight requests', { signal, graceMs: grace })
  await gateway.stop(grace)
  await stopDemoBackends(demo)
  log('info', 'stopped')
  return 0
}

function validate (argv: string[], io: Io): number {
  const { positionals } = args(argv, {})
  if (positionals.length !== 1) throw new CliError('usage: switchyard validate FILE', 2)
  const config = loadConfigFile(positionals[0], io.env)
  const names = Object.keys(config.services)
  io.out(`OK: ${config.file} (${names.length} service${names.length === 1 ? '' : 's'}: ${names.join(', ')})`)
  return 0
}

/** Calls the admin API; a refusal becomes a CliError carrying the server's message. */
async function call (io: Io, method: string, path: string, body?: unknown, timeoutMs: number | null = 120_000): Promise<Record<string, unknown>> {
  const base = (io.env.SWITCHYARD_ADMIN_URL ?? 'http://127.0.0.1:9901').replace(/\/+$/, '')
  const headers: Record<string, string> = { 'x-switchyard-actor': `cli:${io.env.USER ?? 'unknown'}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const token = io.env.SWITCHYARD_ADMIN_TOKEN
  if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`
  let res: Response
  try {
    res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: timeoutMs === null ? undefined : AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    const cause = (err as { cause?: Error }).cause
    throw new CliError(`cannot reach the admin API at ${base}: ${cause?.message ?? (err as Error).message}`, 1, true)
  }
  const text = await res.text()
  let json: Record<string, unknown>
  try {
    json = JSON.parse(text) as Record<string, unknown>
  } catch {
    throw new CliError(`${res.status} from ${base}${path}: ${text.slice(0, 200)}`, 1, res.status >= 500)
  }
  if (!res.ok) {
    let message = `${String(json.error)}: ${String(json.message)}`
    if (Array.isArray(json.failures)) message += '\n' + json.failures.map((f) => `  - ${JSON.stringify(f)}`).join('\n')
    // Where to look next: the release that holds the services.
    if (json.error === 'release_in_progress' && typeof json.release === 'string') message += `\n  see: switchyard release show ${json.release}`
    throw new CliError(message, 1, res.status >= 500)
  }
  return json
}

/** ANSI color, only when writing to a terminal. */
type Paint = (text: string, code: string) => string
const PLAIN: Paint = (text) => text
const ANSI: Paint = (text, code) => `\u001b[${code}m${text}\u001b[0m`
const COLOR_CODE: Record<string, string> = { blue: '34;1', green: '32;1', draining: '33', unhealthy: '31', idle: '2' }

/** Pads on visible width, so colored cells line up. */
function table (rows: string[][]): string {
  // eslint-disable-next-line no-control-regex
  const width = (cell: string): number => cell.replace(/\u001b\[[0-9;]*m/g, '').length
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => width(r[i]))))
  return rows.map((r) => r.map((cell, i) => i === r.length - 1 ? cell : cell + ' '.repeat(widths[i] - width(cell))).join('  ')).join('\n')
}

interface EnvView { state: string, inflight: number, websockets: number, targets: Array<{ url: string, healthy: boolean }>, recent?: { requests: number[], errors: number[] } }
interface GuardView { color: string, endsAt: string, requests: number, errorRate: number, maxErrorRate: number }
interface ServiceView { live: string, previous: string | null, route: { host?: string, pathPrefix: string }, guard: GuardView | null, environments: Record<string, EnvView> }

function describeEnv (e: EnvView, paint: Paint): string {
  const healthy = e.targets.filter((t) => t.healthy).length
  const busy = e.inflight + e.websockets > 0 ? `, ${e.inflight} in-flight, ${e.websockets} ws` : ''
  // Requests per second over the last 10 s.
  const last = e.recent?.requests.slice(-10) ?? []
  const rate = last.length === 0 ? 0 : last.reduce((a, n) => a + n, 0) / last.length
  const health = `${healthy}/${e.targets.length} healthy`
  const state = e.state === 'live' ? e.state : paint(e.state, COLOR_CODE[e.state] ?? '0')
  return `${state} ${healthy < e.targets.length || e.targets.length === 0 ? paint(health, COLOR_CODE.unhealthy) : health}${busy}${rate > 0 ? `, ${rate.toFixed(1)} req/s` : ''}`
}

function describeGuard (g: GuardView | null): string {
  if (g === null) return '-'
  const left = Math.max(0, Math.ceil((Date.parse(g.endsAt) - Date.now()) / 1000))
  return `${left}s left, ${(g.errorRate * 100).toFixed(1)}% of ${g.requests} (max ${(g.maxErrorRate * 100).toFixed(1)}%)`
}

function statusText (state: Record<string, unknown>, paint: Paint): string {
  const rows = [['SERVICE', 'ROUTE', 'LIVE', 'PREVIOUS', 'BLUE', 'GREEN', 'GUARD']]
  for (const [name, s] of Object.entries(state.services as Record<string, ServiceView>)) {
    rows.push([
      name, `${s.route.host ?? '*'}${s.route.pathPrefix}`, paint(s.live, COLOR_CODE[s.live]), s.previous ?? '-',
      describeEnv(s.environments.blue, paint), describeEnv(s.environments.green, paint), describeGuard(s.guard),
    ])
  }
  const text = `generation ${String(state.generation)}\n${table(rows)}`
  // After the services, so the lines above stay where scripts and older readers expect them.
  const store = state.store as StoreView | undefined
  if (store === undefined) return text
  const fleet = state.fleet as FleetView | undefined
  return `${text}\n\n${storeText(store, paint)}${store.kind === 'etcd' && fleet !== undefined ? `\n${fleetText(fleet, paint)}` : ''}`
}

interface StoreView { kind: string, connected: boolean, revision: number, where: string }
interface ReplicaView { id: string, admin: string | null, generation: number, ageMs: number, leader: boolean }
interface FleetView { id: string, leader: string | null, replicas: ReplicaView[], converged: boolean }

/** One line: where the state lives and, for etcd, whether this replica reaches it. */
function storeText (store: StoreView, paint: Paint): string {
  if (store.kind === 'file') return `store ${store.where}`
  if (store.connected) return `store ${store.where}  connected  revision ${store.revision}`
  return `store ${store.where}  ${paint('UNREACHABLE', COLOR_CODE.unhealthy)} (serving on the last state, revision ${store.revision}; changes are refused)`
}

/** The replicas, this one starred; a replica behind the highest generation any has applied is lagging. */
function fleetText (fleet: FleetView, paint: Paint): string {
  const top = Math.max(...fleet.replicas.map((r) => r.generation))
  const lagging = fleet.replicas.filter((r) => r.generation < top).map((r) => r.id)
  const count = `${fleet.replicas.length} replica${fleet.replicas.length === 1 ? '' : 's'}`
  const converged = fleet.converged ? 'converged' : paint(`not converged${lagging.length > 0 ? `: ${lagging.join(', ')} lagging` : ''}`, COLOR_CODE.draining)
  const rows = [['  REPLICA', 'ADMIN', 'GENERATION', 'HEARTBEAT', 'LEADER']]
  for (const r of fleet.replicas) {
    rows.push([
      `${r.id === fleet.id ? '*' : ' '} ${r.id}`, r.admin ?? '-',
      lagging.includes(r.id) ? paint(`${r.generation} lagging`, COLOR_CODE.draining) : String(r.generation),
      ago(r.ageMs), r.leader ? 'leader' : '-',
    ])
  }
  return `fleet ${count}, leader ${fleet.leader ?? 'none'}, ${converged} (* this replica)\n${table(rows)}`
}

function ago (ms: number): string {
  const s = Math.max(0, ms) / 1000
  return s < 60 ? `${s.toFixed(1)}s ago` : `${Math.floor(s / 60)}m ago`
}

async function status (argv: string[], io: Io): Promise<number> {
  const { values } = args(argv, { watch: { type: 'boolean', short: 'w' }, interval: { type: 'string' } })
  const paint = io.tty === true ? ANSI : PLAIN
  const show = async (): Promise<void> => {
    const state = await call(io, 'GET', '/v1/state')
    io.out(values.json === true ? JSON.stringify(state, null, 2) : statusText(state, paint))
  }
  if (values.watch !== true) {
    await show()
    return 0
  }
  const every = integer(values.interval ?? '1000', 'interval') as number
  let stopped = false
  void io.stopSignal?.then(() => { stopped = true })
  while (!stopped) {
    // On a terminal, redraw in place; otherwise print one block per refresh.
    if (io.tty === true && io.write !== undefined) io.write('\u001b[2J\u001b[H')
    await show()
    await Promise.race([new Promise((resolve) => setTimeout(resolve, every)), io.stopSignal])
  }
  return 0
}

function printChanges (io: Io, result: Record<string, unknown>, json: boolean): number {
  if (json) {
    io.out(JSON.stringify(result, null, 2))
    return 0
  }
  const changes = result.changes as Array<{ service: string, from: string, to: string }>
  if (changes.length === 0) io.out(`no change (generation ${String(result.generation)})`)
  else io.out(table([['SERVICE', 'FROM', 'TO'], ...changes.map((c) => [c.service, c.from, c.to])]) + `\ngeneration ${String(result.generation)}`)
  return printFleetWait(io, result)
}

/** After --wait-fleet: whether every replica applied the change. Exit 3: committed, but not everywhere yet. */
function printFleetWait (io: Io, result: Record<string, unknown>): number {
  const fleet = result.fleet as { converged: boolean, lagging: string[] } | undefined
  if (fleet === undefined) return 0
  if (fleet.converged) {
    io.out('every replica has applied it')
    return 0
  }
  io.err(`committed, but not yet applied by ${fleet.lagging.join(', ')} when the wait ended`)
  return 3
}

/** --wait-fleet [--wait-timeout DURATION] as body fields. */
function waitFields (values: Record<string, string | boolean | undefined>): Record<string, unknown> {
  if (values['wait-fleet'] !== true) {
    if (values['wait-timeout'] !== undefined) throw new CliError('--wait-timeout goes with --wait-fleet', 2)
    return {}
  }
  return { wait: 'fleet', ...(values['wait-timeout'] === undefined ? {} : { waitTimeout: values['wait-timeout'] }) }
}

const WAIT_OPTIONS = { 'wait-fleet': { type: 'boolean' }, 'wait-timeout': { type: 'string' } } as const

function integer (value: string | boolean | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  // Digits only: Number('') is 0, so an empty "$GEN" in a script would pass as generation 0.
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN
  if (!Number.isSafeInteger(n)) throw new CliError(`--${flag} must be a non-negative integer`, 2)
  return n
}

async function flip (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { to: { type: 'string' }, force: { type: 'boolean' }, reason: { type: 'string' }, 'if-generation': { type: 'string' }, ...WAIT_OPTIONS })
  if (values.to !== undefined && !isColor(values.to)) throw new CliError('--to must be blue or green', 2)
  const body = {
    ...waitFields(values),
    ...(positionals.length > 0 ? { services: positionals } : {}),
    ...(values.to === undefined ? {} : { to: values.to }),
    ...(values.force === true ? { force: true } : {}),
    ...(values.reason === undefined ? {} : { reason: values.reason }),
    ...(values['if-generation'] === undefined ? {} : { ifGeneration: integer(values['if-generation'], 'if-generation') }),
  }
  return printChanges(io, await call(io, 'POST', '/v1/flip', body), values.json === true)
}

async function rollback (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { reason: { type: 'string' }, 'if-generation': { type: 'string' }, ...WAIT_OPTIONS })
  const body = {
    ...waitFields(values),
    ...(positionals.length > 0 ? { services: positionals } : {}),
    ...(values.reason === undefined ? {} : { reason: values.reason }),
    ...(values['if-generation'] === undefined ? {} : { ifGeneration: integer(values['if-generation'], 'if-generation') }),
  }
  return printChanges(io, await call(io, 'POST', '/v1/rollback', body), values.json === true)
}

async function targets (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { force: { type: 'boolean' }, reason: { type: 'string' } })
  const [service, color, ...urls] = positionals
  if (service === undefined || color === undefined) throw new CliError('usage: switchyard targets SERVICE COLOR URL...', 2)
  if (!isColor(color)) throw new CliError(`COLOR must be blue or green, got "${color}"`, 2)
  const body = { targets: urls, ...(values.force === true ? { force: true } : {}), ...(values.reason === undefined ? {} : { reason: values.reason }) }
  const result = await call(io, 'PUT', `/v1/services/${encodeURIComponent(service)}/environments/${color}/targets`, body)
  if (values.json === true) {
    io.out(JSON.stringify(result, null, 2))
  } else {
    io.out(`${service} ${color}: ${(result.targets as string[]).join(', ') || '(none)'}\ngeneration ${String(result.generation)}`)
  }
  return 0
}

async function reload (argv: string[], io: Io): Promise<number> {
  const { values } = args(argv, {})
  const result = await call(io, 'POST', '/v1/reload', {})
  if (values.json === true) {
    io.out(JSON.stringify(result, null, 2))
  } else if (result.changed !== true) {
    io.out(`config unchanged (generation ${String(result.generation)})`)
  } else {
    const list = (k: string): string => (result[k] as string[]).join(', ') || '-'
    io.out(`config reloaded: added ${list('added')}; removed ${list('removed')}; updated ${list('updated')}\ngeneration ${String(result.generation)}`)
  }
  return 0
}

async function drain (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { color: { type: 'string' }, wait: { type: 'boolean' }, timeout: { type: 'string' } })
  const [service] = positionals
  if (service === undefined || positionals.length > 1) throw new CliError('usage: switchyard drain SERVICE [--color COLOR] [--wait] [--timeout DURATION]', 2)
  if (values.color !== undefined && !isColor(values.color)) throw new CliError('--color must be blue or green', 2)
  const body = {
    ...(values.color === undefined ? {} : { color: values.color }),
    ...(values.timeout === undefined ? {} : { timeout: values.timeout }),
  }
  const path = `/v1/services/${encodeURIComponent(service)}/drain`
  if (values.wait !== true) {
    const r = await call(io, 'POST', path, body)
    io.out(values.json === true ? JSON.stringify(r, null, 2) : `${service} ${String(r.color)}: ${String(r.state)}, ${String(r.inflight)} in-flight, ${String(r.websockets)} WebSockets`)
    return 0
  }
  // The waiting call answers when the drain ends; meanwhile show what is left.
  let finished = false
  // No client deadline: the server answers by the drain's own deadline.
  const result = call(io, 'POST', path, { ...body, wait: true }, null).finally(() => { finished = true })
  result.catch(() => {})
  let last = ''
  while (!finished) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    if (finished) break
    const st = await call(io, 'GET', '/v1/state').catch(() => undefined)
    const svc = (st?.services as Record<string, ServiceView> | undefined)?.[service]
    if (svc === undefined) continue
    const color = (values.color as string | undefined) ?? (svc.live === 'blue' ? 'green' : 'blue')
    const env = svc.environments[color] as EnvView & { drain?: { deadline: string } }
    const left = env.drain === undefined ? '' : `, ${Math.max(0, Math.ceil((Date.parse(env.drain.deadline) - Date.now()) / 1000))}s left`
    const line = `${service} ${color}: ${env.state}, ${env.inflight} in-flight, ${env.websockets} WebSockets${left}`
    if (io.tty === true && io.write !== undefined) {
      io.write(`\r${line}\u001b[K`)
    } else if (line !== last) {
      io.out(line)
    }
    last = line
  }
  if (io.tty === true && io.write !== undefined && last !== '') io.write('\n')
  const r = await result
  if (values.json === true) {
    io.out(JSON.stringify(r, null, 2))
  } else {
    const closed = Number(r.closedWebsockets) + Number(r.closedRequests) > 0 ? ` (closed ${String(r.closedWebsockets)} WebSockets, ${String(r.closedRequests)} requests at the deadline)` : ''
    io.out(`${service} ${String(r.color)}: drained in ${(Number(r.durationMs) / 1000).toFixed(1)}s, ${String(r.how)}${closed}`)
  }
  return 0
}

// --- shadow traffic ---------------------------------------------------------------

const SHADOW_USAGE = `usage: switchyard shadow SERVICE                                       show the comparison
       switchyard shadow SERVICE --sample X [--duration D] [--reason TEXT]   start (or --start: the config's sample, else 0.1)
       switchyard shadow SERVICE --stop [--reason TEXT]                       stop`

/** GET /v1/services/NAME/shadow (DESIGN-15 step 5): the control fields, then the ShadowView. */
interface ShadowAnswer {
  active?: boolean
  sample?: number | null
  until?: number | string | null
  source?: 'config' | 'api' | null
  /** The colors compared: the live one answers clients, the idle one gets the copies. */
  live?: string
  idle?: string
  generation?: number
  sent?: number
  compared?: number
  matched?: number
  differed?: number
  dropped?: number
  noise?: number
  /** `endpoints`: where each place counted (method and path shape, ids as {id}), most pairs first. */
  top?: Array<{ where: string, count: number, example?: { live: string, idle: string }, endpoints?: Array<{ endpoint: string, count: number }> }>
  drops?: Record<string, number>
  bodyNotCompared?: number
  /** Noise is learnt per endpoint: the same place may be listed for several. */
  noiseWhere?: Array<{ where: string, endpoint?: string, count: number }>
  probes?: number
  /** The service's gate settings, when the API includes them. */
  gate?: { maxShadowDiff?: number | null, minShadowCompared?: number }
}

async function shadow (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { sample: { type: 'string' }, duration: { type: 'string' }, reason: { type: 'string' }, start: { type: 'boolean' }, stop: { type: 'boolean' } })
  if (positionals.length !== 1 || positionals[0] === '') throw new CliError(SHADOW_USAGE, 2)
  const [service] = positionals
  const path = `/v1/services/${encodeURIComponent(service)}/shadow`
  const starting = values.start === true || values.sample !== undefined || values.duration !== undefined
  const json = values.json === true
  if (values.stop === true) {
    if (starting) throw new CliError('--stop cannot go with --start, --sample or --duration', 2)
    // A JSON body either way: the admin API reads request bodies only as application/json.
    const r = await call(io, 'DELETE', path, values.reason === undefined ? {} : { reason: values.reason }) as ShadowAnswer
    io.out(json ? JSON.stringify(r, null, 2) : `${service}: shadow traffic stopped${generationText(r)}`)
    return 0
  }
  if (!starting) {
    if (values.reason !== undefined) throw new CliError('--reason goes with --sample, --start or --stop', 2)
    const r = await call(io, 'GET', path) as ShadowAnswer
    io.out(json ? JSON.stringify(r, null, 2) : shadowText(service, r))
    return 0
  }
  const body: Record<string, unknown> = {}
  if (values.sample !== undefined) body.sample = share(values.sample as string)
  if (values.duration !== undefined) body.duration = duration(values.duration as string, 'duration')
  if (values.reason !== undefined) body.reason = values.reason
  const r = await call(io, 'POST', path, body) as ShadowAnswer
  io.out(json ? JSON.stringify(r, null, 2) : `${service}: shadow traffic on, ${shadowState(r)}${generationText(r)}`)
  return 0
}

/** `--sample 0.2`: a share of requests, above 0 and at most 1 (a percent sign would be a different number: refused). */
function share (text: string): number {
  const n = /^(0|1)?(\.\d+)?$/.test(text) && text !== '' && text !== '.' ? Number(text) : NaN
  if (!(n > 0 && n <= 1)) throw new CliError(`--sample must be a share above 0 and at most 1, such as 0.1 for 10% of requests, got "${text}"`, 2)
  return n
}

/** Examples come from upstream answers: a control character must not reach the terminal as one. */
function visible (text: string): string {
  // eslint-disable-next-line no-control-regex
  return String(text).replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

function generationText (r: ShadowAnswer): string {
  return typeof r.generation === 'number' ? ` (generation ${r.generation})` : ''
}

/** `sample 20% until 12:30:00 (started by the admin API)`: where the control stands, in one phrase. */
function shadowState (r: ShadowAnswer): string {
  if (r.active !== true) return 'off'
  const parts = [`sample ${typeof r.sample === 'number' ? `${+(r.sample * 100).toFixed(2)}%` : '-'}`]
  if (typeof r.live === 'string' && typeof r.idle === 'string') parts.push(`of ${r.live} copied to ${r.idle}`)
  const until = typeof r.until === 'number' ? new Date(r.until).toISOString() : r.until
  if (until != null) parts.push(`until ${clock(until)}`)
  if (r.source === 'api') parts.push('(started by the admin API)')
  else if (r.source === 'config') parts.push('(from the config)')
  return parts.join(' ')
}

/** `switchyard shadow SERVICE`: the control, the counts, where answers differ (with an example) and what is noise. */
function shadowText (service: string, r: ShadowAnswer): string {
  const n = (x: number | undefined): number => typeof x === 'number' && Number.isFinite(x) ? x : 0
  const compared = n(r.compared)
  const lines = [`${service}: shadow ${r.active === true ? `on, ${shadowState(r)}` : 'off'}`]
  const drops = Object.entries(r.drops ?? {}).filter(([, count]) => n(count) > 0).map(([why, count]) => `${n(count)} ${why}`)
  lines.push(table([
    ['SENT', 'COMPARED', 'MATCHED', 'DIFFERED', 'NOISE', 'DROPPED'],
    [String(n(r.sent)), String(compared), String(n(r.matched)), `${n(r.differed)} (${compared === 0 ? '-' : percent(n(r.differed) / compared)})`,
      String(n(r.noise)), `${n(r.dropped)}${drops.length === 0 ? '' : ` (${drops.join(', ')})`}`],
  ]))
  const notes: string[] = []
  if (n(r.bodyNotCompared) > 0) notes.push(`${n(r.bodyNotCompared)} pairs compared by status and headers only (body above maxBody)`)
  if (n(r.probes) > 0) notes.push(`${n(r.probes)} noise probes`)
  if (notes.length > 0) lines.push(notes.join('; '))
  const max = r.gate?.maxShadowDiff
  if (typeof max === 'number') {
    const min = r.gate?.minShadowCompared ?? 200
    const verdict = compared < min ? `not judged before ${min} pairs` : n(r.differed) / compared > max ? 'a flip into the idle color is refused' : 'within it'
    lines.push(`gate: at most ${percent(max)} differing (gate.maxShadowDiff): ${verdict}`)
  }
  const top = r.top ?? []
  if (compared === 0 && n(r.sent) === 0) {
    lines.push('', 'nothing compared yet')
  } else if (top.length === 0) {
    lines.push('', 'no differences counted')
  } else {
    // Endpoints only from a server that names them (one place may differ on several: `GET /a 10, GET /b 4`).
    const named = top.some((p) => Array.isArray(p.endpoints) && p.endpoints.length > 0)
    const where = (p: typeof top[number]): string => (p.endpoints ?? []).map((e) => p.endpoints?.length === 1 ? visible(e.endpoint) : `${visible(e.endpoint)} ${n(e.count)}`).join(', ')
    lines.push('', table([['WHERE', 'PAIRS', ...named ? ['ENDPOINTS'] : [], 'LIVE', 'IDLE'],
      ...top.map((p) => [visible(p.where), String(n(p.count)), ...named ? [where(p)] : [], visible(p.example?.live ?? '-'), visible(p.example?.idle ?? '-')])]))
  }
  const noise = r.noiseWhere ?? []
  const noiseEndpoints = noise.some((p) => typeof p.endpoint === 'string' && p.endpoint !== '')
  if (noise.length > 0) {
    lines.push('', table([['NOISE (NOT COUNTED)', ...noiseEndpoints ? ['ENDPOINT'] : [], 'PROBES'],
      ...noise.map((p) => [visible(p.where), ...noiseEndpoints ? [visible(p.endpoint ?? '-')] : [], String(n(p.count))])]))
  }
  return lines.join('\n')
}

const STATE_USAGE = 'usage: switchyard state export [--config FILE] [--out FILE]\n       switchyard state import FILE --config FILE [--reason TEXT] [--force]'

async function state (argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv
  if (sub === 'export') return await stateExport(rest, io)
  if (sub === 'import') return await stateImport(rest, io)
  throw new CliError(STATE_USAGE, 2)
}

/** Runs `fn` on the store the config names and closes it whatever happens: an open etcd client keeps the process alive. */
async function withStore<T> (config: Config, fn: (store: StateStore) => Promise<T>): Promise<T> {
  const { store } = await openState(config)
  try {
    return await fn(store)
  } finally {
    await store.close()
  }
}

async function stateExport (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { config: { type: 'string', short: 'c' }, out: { type: 'string', short: 'o' } })
  if (positionals.length > 0) throw new CliError(STATE_USAGE, 2)
  const config = loadConfigFile((values.config as string | undefined) ?? 'config/switchyard.yaml', io.env)
  const { document, where } = await withStore(config, async (store) => ({ document: await exportState(store), where: store.where }))
  const text = JSON.stringify(document, null, 2)
  const out = values.out as string | undefined
  if (out === undefined) {
    io.out(text)
    return 0
  }
  await writeFile(out, text + '\n')
  io.out(`exported generation ${document.generation} from ${where} to ${out}`)
  return 0
}

async function stateImport (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { config: { type: 'string', short: 'c' }, reason: { type: 'string' }, force: { type: 'boolean' } })
  if (positionals.length !== 1) throw new CliError(STATE_USAGE, 2)
  // No default config here: the config decides which store is overwritten.
  if (values.config === undefined) throw new CliError('state import needs --config FILE: it names the store to write', 2)
  const [file] = positionals
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`)
  }
  const config = loadConfigFile(values.config as string, io.env)
  const imported = parseDocument(text, file)
  const opts = { force: values.force === true, reason: (values.reason as string | undefined) ?? null, actor: `cli:${io.env.USER ?? 'unknown'}` }
  const { where, result } = await withStore(config, async (store) => ({ where: store.where, result: await importState(store, config, imported, opts) }))
  const was = result.before === undefined ? 'it held no readable state' : `it was at generation ${result.before}`
  io.out(`imported generation ${result.generation} into ${where} (${was})`)
  return 0
}

// --- releases ---------------------------------------------------------------------


interface SideErrors { requests: number, errors: number, rate: number | null }
interface SideLatency { samples: number, p50Ms: number | null, p99Ms: number | null }
interface ServiceVerdictView {
  outcome: 'pass' | 'fail' | 'inconclusive'
  reasons?: string[]
  errors?: { new: SideErrors, old: SideErrors }
  latency?: { new: SideLatency, old: SideLatency }
}
interface VerdictView { at: string, phase: ReleasePhase, step: number, weight: number, final?: boolean, pass: boolean, services: Record<string, ServiceVerdictView> }
interface HistoryEntry { phase: ReleasePhase, at: string, step?: number, weight?: number }
interface ReleaseView {
  id: string
  phase: ReleasePhase
  services: Record<string, { targets: string[], version: string | null, from: string, to: string }>
  steps?: Array<{ weight: number, hold: number }>
  step?: number
  weight?: number
  verify?: { window: number }
  timeout?: number
  reason?: string | null
  actor?: string
  startedAt: string
  updatedAt?: string
  pausedAt?: string | null
  outcome?: string | null
  verdicts?: VerdictView[]
  history?: HistoryEntry[]
}

/** What `--wait` exits with once the release has ended; a phase not listed has not ended. */
const RELEASE_EXIT: Partial<Record<ReleasePhase, number>> & Record<ReleaseOutcome, number> = { done: 0, reverted: 3, aborted: 4, failed: 4 }
const RELEASE_ACTIONS = ['pause', 'resume', 'promote', 'abort']
const RELEASE_USAGE = `usage: switchyard release NAME=URL[,URL]... [--version V|NAME=V,...] [--steps WEIGHT:DURATION,...] [--verify DURATION]
                         [--timeout DURATION] [--reason TEXT] [--if-generation N] [--wait]
       switchyard release show|pause|resume|promote|abort ID [--wait]`
/** How often `--wait` asks, and how long it keeps trying while the API cannot be reached (a gateway restarting resumes the release). */
const FOLLOW_EVERY_MS = 500
const FOLLOW_PATIENCE_MS = 30_000

async function release (argv: string[], io: Io): Promise<number> {
  const [sub] = argv
  if (sub === 'show' || RELEASE_ACTIONS.includes(sub)) return await releaseAction(sub, argv.slice(1), io)
  const { values, positionals } = args(argv, {
    version: { type: 'string' }, steps: { type: 'string' }, verify: { type: 'string' }, timeout: { type: 'string' },
    reason: { type: 'string' }, 'if-generation': { type: 'string' }, wait: { type: 'boolean' },
  })
  const body = releaseBody(positionals, values)
  const created = await call(io, 'POST', '/v1/releases', body) as unknown as ReleaseView
  if (values.wait === true) return await follow(io, created, values.json === true)
  if (values.json === true) {
    io.out(JSON.stringify(created, null, 2))
    return 0
  }
  io.out(`release ${created.id}: ${created.phase}`)
  io.out(table(Object.entries(created.services).map(([name, s]) => [`  ${name}`, `${s.from} -> ${s.to}`, s.version ?? '-', s.targets.join(', ')])))
  io.out(`follow it: switchyard release show ${created.id} --wait`)
  return 0
}

/** The POST /v1/releases body for a command line; every mistake is a usage error (exit 2) before anything is sent. */
function releaseBody (positionals: string[], values: Record<string, string | boolean | undefined>): Record<string, unknown> {
  if (positionals.length === 0) throw new CliError(`a release names at least one service as NAME=URL[,URL]\n${RELEASE_USAGE}`, 2)
  const services = new Map<string, { targets: string[], version?: string }>()
  for (const p of positionals) {
    const eq = p.indexOf('=')
    if (eq <= 0) throw new CliError(`"${p}" is not NAME=URL[,URL] (or show|pause|resume|promote|abort ID)\n${RELEASE_USAGE}`, 2)
    const name = p.slice(0, eq)
    const list = p.slice(eq + 1)
    if (services.has(name)) throw new CliError(`service "${name}" is named twice: list all its targets in one NAME=URL,URL`, 2)
    if (list === '') throw new CliError(`${name}= has no URLs: give its new targets as ${name}=URL[,URL]`, 2)
    const targets = list.split(',')
    for (const url of targets) {
      if (url === '') throw new CliError(`${name}: an empty URL in "${list}" (a stray comma?)`, 2)
      const origin = parseOrigin(url)
      if ('error' in origin) throw new CliError(`${name}: target "${url}" ${origin.error}`, 2)
    }
    services.set(name, { targets })
  }
  applyVersions(services, values.version as string | undefined)
  const body: Record<string, unknown> = { services: Object.fromEntries(services) }
  if (values.steps !== undefined) body.steps = parseSteps(values.steps as string)
  if (values.verify !== undefined) body.verify = { window: duration(values.verify as string, 'verify') }
  if (values.timeout !== undefined) body.timeout = duration(values.timeout as string, 'timeout')
  if (values.reason !== undefined) body.reason = values.reason
  if (values['if-generation'] !== undefined) body.ifGeneration = integer(values['if-generation'], 'if-generation')
  return body
}

/** `--version 1.1.0` for every service, or `--version users=1.1.0,orders=2.4.0` one by one. */
function applyVersions (services: Map<string, { version?: string }>, text: string | undefined): void {
  if (text === undefined) return
  if (text === '') throw new CliError('--version must not be empty', 2)
  if (!text.includes('=')) {
    for (const s of services.values()) s.version = text
    return
  }
  for (const part of text.split(',')) {
    const eq = part.indexOf('=')
    const name = part.slice(0, eq)
    const service = services.get(name)
    if (eq <= 0 || part.length === eq + 1) throw new CliError(`--version: "${part}" is not NAME=VERSION`, 2)
    if (service === undefined) throw new CliError(`--version names "${name}", which is not in this release`, 2)
    if (service.version !== undefined) throw new CliError(`--version names "${name}" twice`, 2)
    service.version = part.slice(eq + 1)
  }
}

/** `10:30s,50:30s` -> [{weight: 10, hold: "30s"}, ...]; the server judges the order of the weights. */
function parseSteps (text: string): Array<{ weight: number, hold: string }> {
  return text.split(',').map((step) => {
    const m = /^(\d+):(.+)$/.exec(step)
    if (m === null || parseDuration(m[2]) === undefined) throw new CliError(`--steps: "${step}" is not WEIGHT:DURATION (such as 10:30s)`, 2)
    const weight = Number(m[1])
    if (weight < 1 || weight > 99) throw new CliError(`--steps: the weight in "${step}" must be a percent from 1 to 99 (100 comes after the last step)`, 2)
    return { weight, hold: m[2] }
  })
}

function duration (text: string, flag: string): string {
  if (parseDuration(text) === undefined) throw new CliError(`--${flag} must be a duration such as 30s, 5m or 500ms, got "${text}"`, 2)
  return text
}

async function releaseAction (sub: string, argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { wait: { type: 'boolean' } })
  if (positionals.length !== 1 || positionals[0] === '') throw new CliError(`usage: switchyard release ${sub} ID [--wait]`, 2)
  const path = `/v1/releases/${encodeURIComponent(positionals[0])}`
  const r = (sub === 'show' ? await call(io, 'GET', path) : await call(io, 'POST', `${path}/${sub}`, {})) as unknown as ReleaseView
  if (values.wait === true) return await follow(io, r, values.json === true)
  io.out(values.json === true ? JSON.stringify(r, null, 2) : sub === 'show' ? releaseText(r) : `release ${r.id}: ${phaseState(r)}`)
  return 0
}

async function releases (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, {})
  if (positionals.length > 0) throw new CliError('usage: switchyard releases [--json]', 2)
  const result = await call(io, 'GET', '/v1/releases')
  if (values.json === true) {
    io.out(JSON.stringify(result, null, 2))
    return 0
  }
  const list = (result.releases ?? []) as ReleaseView[]
  if (list.length === 0) {
    io.out('no releases')
    return 0
  }
  // The server's order: newest first.
  io.out(table([['ID', 'PHASE', 'SERVICES', 'WEIGHT', 'STARTED', 'OUTCOME'], ...list.map((r) => [
    r.id, r.pausedAt == null ? r.phase : `${r.phase} (paused)`, Object.keys(r.services).join(','),
    `${r.weight ?? 0}%`, stamp(r.startedAt), r.outcome ?? '-',
  ])]))
  return 0
}

/** `shifting, step 1/2 at 10%` and `(paused)`: where a release stands, in one phrase. */
function phaseState (r: ReleaseView): string {
  const steps = r.steps ?? []
  const at = r.phase === 'shifting' && steps.length > 0 && (r.step ?? -1) >= 0 ? `, step ${(r.step ?? 0) + 1}/${steps.length} at ${r.weight ?? 0}%` : ''
  const outcome = r.outcome == null || RELEASE_EXIT[r.phase] === undefined ? '' : `: ${r.outcome}`
  return `${r.phase}${at}${r.pausedAt == null ? '' : ' (paused)'}${outcome}`
}

/** `release show`: the release, its services and the last verdict. */
function releaseText (r: ReleaseView): string {
  const lines = [`release ${r.id}: ${phaseState(r)}`]
  lines.push(`started ${stamp(r.startedAt)}${r.actor === undefined ? '' : ` by ${r.actor}`}${r.reason == null ? '' : `: ${r.reason}`}`)
  const steps = r.steps ?? []
  lines.push(`steps ${steps.length === 0 ? 'all at once' : steps.map((s) => `${s.weight}% for ${human(s.hold)}`).join(', ')}; weight now ${r.weight ?? 0}%` +
    `${r.verify === undefined ? '' : `; verify ${human(r.verify.window)}`}${r.timeout === undefined ? '' : `; timeout ${human(r.timeout)}`}`)
  const last = (r.verdicts ?? []).at(-1)
  const rows = [['  SERVICE', 'COLORS', 'VERSION', 'TARGETS', 'LAST VERDICT']]
  for (const [name, s] of Object.entries(r.services)) {
    const v = last?.services[name]
    rows.push([`  ${name}`, `${s.from} -> ${s.to}`, s.version ?? '-', s.targets.join(', '), v === undefined ? '-' : verdictText(v)])
  }
  lines.push(table(rows))
  lines.push('history')
  for (const h of r.history ?? []) lines.push(`  ${clock(h.at)} ${phaseLine(r, h)}`)
  return lines.join('\n')
}

/** What a phase change means for this release, as the line `--wait` prints. */
function phaseLine (r: ReleaseView, h: HistoryEntry): string {
  const services = Object.entries(r.services)
  const colors = (pick: (s: { from: string, to: string }) => string): string => {
    const set = new Set(services.map(([, s]) => pick(s)))
    return set.size === 1 ? [...set][0] : 'the new colors'
  }
  switch (h.phase) {
    case 'deploying': return `deploying ${services.map(([name, s]) => `${name}${s.version == null ? '' : ` ${s.version}`} -> ${s.to}`).join(', ')}`
    case 'warming': return `warming: waiting for ${colors((s) => s.to)} to be healthy${r.timeout === undefined ? '' : ` (up to ${human(r.timeout)})`}`
    case 'testing': return 'testing: smoke checks'
    case 'shifting': {
      const n = (r.steps ?? []).length
      const weight = h.weight ?? r.weight ?? 100
      const step = h.step !== undefined && h.step >= 0 && h.step < n ? ` step ${h.step + 1}/${n}` : ''
      return `shifting${step}: ${weight}% -> ${colors((s) => s.to)}`
    }
    case 'verifying': return `verifying: 100% on ${colors((s) => s.to)}${r.verify === undefined ? '' : ` for ${human(r.verify.window)}`}`
    case 'draining': return `draining ${colors((s) => s.from)}`
    default: return h.phase
  }
}

function verdictText (v: ServiceVerdictView): string {
  const e = v.errors
  const l = v.latency
  const figures = [
    e === undefined ? null : `errors ${percent(e.new.rate)} vs ${percent(e.old.rate)}`,
    l === undefined ? null : `p50 ${millis(l.new.p50Ms)} vs ${millis(l.old.p50Ms)}, p99 ${millis(l.new.p99Ms)} vs ${millis(l.old.p99Ms)}`,
  ].filter((x) => x !== null)
  const why = v.outcome === 'fail' && (v.reasons ?? []).length > 0 ? `: ${(v.reasons ?? []).join('; ')}` : ''
  return `${v.outcome}${figures.length === 0 ? '' : ` (${figures.join(', ')})`}${why}`
}

function percent (rate: number | null | undefined): string {
  return typeof rate === 'number' && Number.isFinite(rate) ? `${(rate * 100).toFixed(1)}%` : '-'
}

function millis (ms: number | null | undefined): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '-'
  return ms < 10 ? `${ms.toFixed(1)}ms` : `${Math.round(ms)}ms`
}

/** Milliseconds as people write durations: 500ms, 30s, 5m, 2m13s, 1h30m. */
function human (ms: number): string {
  if (ms < 1000) return `${ms}ms`
  const s = Math.round(ms / 1000)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 === 0 ? '' : `${s % 60}s`}`
  return `${Math.floor(s / 3600)}h${Math.floor(s / 60) % 60 === 0 ? '' : `${Math.floor(s / 60) % 60}m`}`
}

function two (n: number): string { return String(n).padStart(2, '0') }

/** Local wall-clock time of an ISO instant (the operator's zone, as `date` prints it). */
function clock (iso: string | undefined): string {
  const d = new Date(iso ?? NaN)
  return Number.isNaN(d.getTime()) ? '--:--:--' : `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`
}

function stamp (iso: string | undefined): string {
  const d = new Date(iso ?? NaN)
  return Number.isNaN(d.getTime()) ? '-' : `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${clock(iso)}`
}

/**
 * Prints what is new in each view of a release: phase changes (from `history`),
 * pauses, and verdicts, in the order they happened; on a terminal, a live line per
 * service under them, redrawn in place.
 */
class ReleaseProgress {
  private seenHistory = 0
  private seenVerdicts = 0
  private paused: string | null = null
  private liveLines = 0

  constructor (private readonly io: Io, private readonly live: boolean) {}

  show (r: ReleaseView): void {
    const fresh: Array<{ at: number, text: string }> = []
    const note = (at: string | undefined, text: string): void => { fresh.push({ at: Date.parse(at ?? '') || Date.now(), text: `${clock(at)} ${text}` }) }
    const history = r.history ?? []
    for (const h of history.slice(this.seenHistory)) note(h.at, phaseLine(r, h))
    this.seenHistory = Math.max(this.seenHistory, history.length)
    const pausedAt = r.pausedAt ?? null
    if (pausedAt !== this.paused) {
      if (pausedAt !== null) note(pausedAt, `paused (${phaseState({ ...r, pausedAt: null })})`)
      else if (RELEASE_EXIT[r.phase] === undefined) note(r.updatedAt, 'resumed')
      this.paused = pausedAt
    }
    const verdicts = r.verdicts ?? []
    for (const v of verdicts.slice(this.seenVerdicts)) {
      // Interim looks that pass only feed the live line: a server that records one a second would flood a CI log.
      if (v.final === false && v.pass) continue
      for (const [name, sv] of Object.entries(v.services)) note(v.at, `verdict ${name}: ${verdictText(sv)}`)
    }
    this.seenVerdicts = Math.max(this.seenVerdicts, verdicts.length)
    // Stable: lines of one moment keep their order (history before verdicts).
    fresh.sort((a, b) => a.at - b.at)
    if (this.live) this.erase()
    for (const f of fresh) this.io.out(f.text)
    if (this.live && RELEASE_EXIT[r.phase] === undefined) this.draw(r)
  }

  /** Takes the live lines off the screen, so the next output starts where they were. */
  erase (): void {
    if (this.liveLines > 0) this.io.write?.(`\u001b[${this.liveLines}F\u001b[J`)
    this.liveLines = 0
  }

  private draw (r: ReleaseView): void {
    const verdicts = r.verdicts ?? []
    const rows = Object.entries(r.services).map(([name, s]) => {
      const v = [...verdicts].reverse().find((x) => x.services[name] !== undefined)?.services[name]
      const e = v?.errors
      const side = (x: SideErrors | undefined): string => x === undefined ? '-' : `${x.requests} req, ${x.errors} err`
      return [`  ${name}`, `${r.weight ?? 0}% -> ${s.to}`, e === undefined ? 'no verdict yet' : `new ${side(e.new)}`, e === undefined ? '' : `old ${side(e.old)}`, v?.outcome ?? '']
    })
    // A line the terminal wraps would take two rows, and erase() would leave half of it behind.
    const width = (process.stdout.columns ?? 0) > 1 ? process.stdout.columns - 1 : Infinity
    const text = table(rows).split('\n').map((line) => line.slice(0, width)).join('\n')
    this.io.write?.(text + '\n')
    this.liveLines = rows.length
  }
}

/** `--wait`: polls the release until it ends; the exit code says how. Ctrl-C stops following, not the release. */
async function follow (io: Io, first: ReleaseView, json: boolean): Promise<number> {
  const progress = new ReleaseProgress(io, !json && io.tty === true && io.write !== undefined)
  const path = `/v1/releases/${encodeURIComponent(first.id)}`
  let stopped = false
  const stop = (io.stopSignal ?? new Promise<string>(() => {})).then(() => { stopped = true })
  let r = first
  let reached = Date.now()
  for (;;) {
    if (!json) progress.show(r)
    const code = RELEASE_EXIT[r.phase]
    if (code !== undefined) {
      if (json) io.out(JSON.stringify(r, null, 2))
      else io.out(`release ${r.id} ${r.phase} after ${human(Math.max(0, Date.parse(r.updatedAt ?? '') - Date.parse(r.startedAt)) || 0)}${r.outcome == null ? '' : `: ${r.outcome}`}`)
      return code
    }
    let timer: NodeJS.Timeout | undefined
    await Promise.race([new Promise((resolve) => { timer = setTimeout(resolve, FOLLOW_EVERY_MS) }), stop])
    clearTimeout(timer)
    const next = stopped ? undefined : await Promise.race([call(io, 'GET', path, undefined, 10_000).then((x) => x as unknown as ReleaseView, (err: unknown) => err as Error), stop])
    if (stopped) {
      progress.erase()
      io.err(`switchyard: stopped following ${r.id}; the release goes on (switchyard release show ${r.id}, or abort it: switchyard release abort ${r.id})`)
      return 130
    }
    if (next instanceof Error) {
      // A gateway restarting resumes the release: keep asking for a while.
      if (!(next instanceof CliError) || !next.transient || Date.now() - reached > FOLLOW_PATIENCE_MS) throw next
      continue
    }
    r = next as ReleaseView
    reached = Date.now()
  }
}
