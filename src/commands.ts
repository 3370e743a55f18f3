// The CLI's commands: `serve` runs the gateway; the others are thin clients
// of the admin API that print a table (or --json) and exit non-zero on refusal.

import { parseArgs } from 'node:util'
import { ConfigError, loadConfigFile } from './config/load.js'
import { isColor } from './config/schema.js'
import { startDemoBackends, stopDemoBackends, type DemoBackend } from './demo.js'
import { Gateway } from './gateway.js'
import { log } from './log.js'

export interface Io {
  out: (text: string) => void
  err: (text: string) => void
  env: NodeJS.ProcessEnv
  /** Resolves when the process is asked to stop (SIGTERM/SIGINT); only `serve` waits on it. */
  stopSignal?: Promise<string>
}

const USAGE = `usage: switchyard <command> [options]

  serve --config FILE [--demo]        run the gateway (--demo: start demo backends on loopback targets)
  validate FILE                       check a config file; prints OK or every error
  status                              services, live colors, targets
  flip [SERVICE...] [--to COLOR] [--force] [--reason TEXT] [--if-generation N]
  rollback [SERVICE...] [--reason TEXT] [--if-generation N]
  targets SERVICE COLOR URL... [--force] [--reason TEXT]

client commands read SWITCHYARD_ADMIN_URL (default http://127.0.0.1:9901) and
SWITCHYARD_ADMIN_TOKEN, and take --json for the server's JSON answer.`

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
  const { values } = args(argv, { config: { type: 'string', short: 'c' }, demo: { type: 'boolean' } })
  const file = (values.config as string | undefined) ?? 'config/switchyard.yaml'
  const config = loadConfigFile(file, io.env)
  let demo: DemoBackend[] = []
  if (values.demo === true) {
    demo = await startDemoBackends(config)
    log('info', 'demo backends started', { backends: demo.map((d) => `${d.service}/${d.color} ${d.url}`) })
  }
  const gateway = new Gateway(config)
  try {
    await gateway.start()
  } catch (err) {
    await stopDemoBackends(demo)
    throw err
  }
  log('info', 'switchyard listening', {
    listen: `${config.listen.host}:${gateway.address.port}`,
    admin: `${config.admin.listen.host}:${gateway.adminAddress.port}`,
    config: config.file,
    generation: gateway.controller.generation,
    services: Object.fromEntries([...gateway.controller.switcher.current.services.values()].map((s) => [s.name, s.live])),
  })
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
async function call (io: Io, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const base = (io.env.SWITCHYARD_ADMIN_URL ?? 'http://127.0.0.1:9901').replace(/\/+$/, '')
  const headers: Record<string, string> = { 'x-switchyard-actor': `cli:${io.env.USER ?? 'unknown'}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const token = io.env.SWITCHYARD_ADMIN_TOKEN
  if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`
  let res: Response
  try {
    res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(120_000) })
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

function table (rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  return rows.map((r) => r.map((cell, i) => i === r.length - 1 ? cell : cell.padEnd(widths[i])).join('  ')).join('\n')
}

interface EnvView { state: string, inflight: number, websockets: number, targets: Array<{ url: string, healthy: boolean }> }
interface ServiceView { live: string, previous: string | null, route: { host?: string, pathPrefix: string }, environments: Record<string, EnvView> }

function describeEnv (e: EnvView): string {
  const healthy = e.targets.filter((t) => t.healthy).length
  const busy = e.inflight + e.websockets > 0 ? `, ${e.inflight} in-flight, ${e.websockets} ws` : ''
  return `${e.state} ${healthy}/${e.targets.length} healthy${busy}`
}

async function status (argv: string[], io: Io): Promise<number> {
  const { values } = args(argv, {})
  const state = await call(io, 'GET', '/v1/state')
  if (values.json === true) {
    io.out(JSON.stringify(state, null, 2))
    return 0
  }
  const rows = [['SERVICE', 'ROUTE', 'LIVE', 'PREVIOUS', 'BLUE', 'GREEN']]
  for (const [name, s] of Object.entries(state.services as Record<string, ServiceView>)) {
    rows.push([name, `${s.route.host ?? '*'}${s.route.pathPrefix}`, s.live, s.previous ?? '-', describeEnv(s.environments.blue), describeEnv(s.environments.green)])
  }
  io.out(`generation ${String(state.generation)}\n${table(rows)}`)
  return 0
}

function printChanges (io: Io, result: Record<string, unknown>, json: boolean): number {
  if (json) {
    io.out(JSON.stringify(result, null, 2))
    return 0
  }
  const changes = result.changes as Array<{ service: string, from: string, to: string }>
  if (changes.length === 0) {
    io.out(`no change (generation ${String(result.generation)})`)
    return 0
  }
  io.out(table([['SERVICE', 'FROM', 'TO'], ...changes.map((c) => [c.service, c.from, c.to])]) + `\ngeneration ${String(result.generation)}`)
  return 0
}

function integer (value: string | boolean | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  // Digits only: Number('') is 0, so an empty "$GEN" in a script would pass as generation 0.
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN
  if (!Number.isSafeInteger(n)) throw new CliError(`--${flag} must be a non-negative integer`, 2)
  return n
}

async function flip (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { to: { type: 'string' }, force: { type: 'boolean' }, reason: { type: 'string' }, 'if-generation': { type: 'string' } })
  if (values.to !== undefined && !isColor(values.to)) throw new CliError('--to must be blue or green', 2)
  const body = {
    ...(positionals.length > 0 ? { services: positionals } : {}),
    ...(values.to === undefined ? {} : { to: values.to }),
    ...(values.force === true ? { force: true } : {}),
    ...(values.reason === undefined ? {} : { reason: values.reason }),
    ...(values['if-generation'] === undefined ? {} : { ifGeneration: integer(values['if-generation'], 'if-generation') }),
  }
  return printChanges(io, await call(io, 'POST', '/v1/flip', body), values.json === true)
}

async function rollback (argv: string[], io: Io): Promise<number> {
  const { values, positionals } = args(argv, { reason: { type: 'string' }, 'if-generation': { type: 'string' } })
  const body = {
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
