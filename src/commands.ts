// The CLI's commands: `serve` runs the gateway; `state export|import` work on
// the configured store directly; the others are thin clients of the admin API
// that print a table (or --json) and exit non-zero on refusal.

import cluster from 'node:cluster'
import { readFile, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { ConfigError, loadConfigFile } from './config/load.js'
import { isColor, type Config } from './config/schema.js'
import { startDemoBackends, stopDemoBackends, type DemoBackend } from './demo.js'
import { Gateway } from './gateway.js'
import { runWorker, WorkerPool } from './listen/worker-pool.js'
import { log } from './log.js'
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
  reload                              re-read the config file (as SIGHUP does)
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
  constructor (message: string, exitCode = 1) {
    super(message)
    this.exitCode = exitCode
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
      case 'reload': return await reload(rest, io)
      case 'state': return await state(rest, io)
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
    throw new CliError(`cannot reach the admin API at ${base}: ${cause?.message ?? (err as Error).message}`)
  }
  const text = await res.text()
  let json: Record<string, unknown>
  try {
    json = JSON.parse(text) as Record<string, unknown>
  } catch {
    throw new CliError(`${res.status} from ${base}${path}: ${text.slice(0, 200)}`)
  }
  if (!res.ok) {
    let message = `${String(json.error)}: ${String(json.message)}`
    if (Array.isArray(json.failures)) message += '\n' + json.failures.map((f) => `  - ${JSON.stringify(f)}`).join('\n')
    throw new CliError(message)
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
