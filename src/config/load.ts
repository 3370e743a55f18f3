// Loads a config file: YAML, ${VAR} substitution in string values, strict
// validation that reports every problem with its path, defaults filled from DEFAULTS.

import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { dirname, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import {
  type PinningConfig, type TracingConfig, COLORS, DEFAULTS, SAFE_METHODS, TLS_VERSIONS, isColor, type Engine, type CertFiles, type TlsConfig, type TlsVersion,
  type Config, type DrainConfig, type GateConfig, type GuardConfig, type HealthConfig, type VerifyConfig, type PassiveConfig,
  type EtcdConfig, type FleetConfig, type HostPort, type LimitsConfig, type ServiceConfig, type ShadowConfig, type SmokeCheck, type Timeouts, type UpstreamProtocol,
} from './schema.js'
import { isLoopback, isSample, parseCidr, parseDuration, parseHostPort, parseOrigin, protocolMismatch, substituteEnv } from './values.js'
import { CertError, readCert } from './certs.js'
import { CERT_KEYS, CONFIG_KEYS, ENVIRONMENT_KEYS, SECTION_KEYS, SERVICE_KEYS, SMOKE_KEYS, listKeys } from './keys.js'
import { parseJsonPath } from './json-path.js'

export interface ConfigProblem {
  path: string
  message: string
}

export class ConfigError extends Error {
  readonly problems: ConfigProblem[]
  constructor (problems: ConfigProblem[], source?: string) {
    const lines = problems.map((p) => p.path === '' ? p.message : `${p.path}: ${p.message}`)
    super(`invalid config${source === undefined ? '' : ` ${source}`}:\n  ${lines.join('\n  ')}`)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

type Obj = Record<string, unknown>

/**
 * Checks one JSON path of `shadow.ignore.json`; throws an Error whose message
 * says what is wrong. The comparison's own parser (shadow/jsonpath.ts
 * `parseJsonPath`) is the one to pass, so the config accepts exactly the
 * paths the comparison can follow.
 */
/** Collects problems while walking the document; every check names its path. */
class Checker {
  readonly problems: ConfigProblem[] = []

  fail (path: string, message: string): undefined {
    this.problems.push({ path, message })
    return undefined
  }

  /** A mapping whose keys must be among `keys` (null: any key, as for service names). */
  object (value: unknown, path: string, keys: readonly string[] | null): Obj | undefined {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return this.fail(path, 'must be a mapping')
    if (keys === null) return value as Obj
    for (const key of Object.keys(value)) {
      if (!keys.includes(key)) this.fail(join(path, key), `unknown key (expected one of: ${keys.join(', ')})`)
    }
    return value as Obj
  }

  string (value: unknown, path: string): string | undefined {
    if (typeof value !== 'string') return this.fail(path, 'must be a string')
    return value
  }

  /** A duration in ms; `min` 0 lets `0ms` through (a floor that can be off), else it must be greater than zero. */
  duration (value: unknown, path: string, fallback: number, min = 1): number {
    if (value === undefined) return fallback
    const ms = typeof value === 'string' ? parseDuration(value) : undefined
    if (ms === undefined) return this.fail(path, `not a duration (use 500ms, 2s, 1m): ${JSON.stringify(value)}`) ?? fallback
    if (ms < min) return this.fail(path, min <= 0 ? 'must not be negative' : 'must be greater than zero') ?? fallback
    return ms
  }

  integer (value: unknown, path: string, fallback: number, min: number): number {
    if (value === undefined) return fallback
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value
    if (typeof n !== 'number' || !Number.isInteger(n)) return this.fail(path, 'must be an integer') ?? fallback
    if (n < min) return this.fail(path, `must be at least ${min}`) ?? fallback
    return n
  }

  ratio (value: unknown, path: string, fallback: number): number {
    if (value === undefined) return fallback
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || n > 1) return this.fail(path, 'must be a number from 0 to 1') ?? fallback
    return n
  }

  number (value: unknown, path: string, fallback: number, min: number, max: number): number {
    if (value === undefined) return fallback
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value
    if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max) return this.fail(path, `must be a number from ${min} to ${max}`) ?? fallback
    return n
  }

  /** An http(s) URL (a path is fine here, unlike a target). */
  url (value: unknown, path: string): string | undefined {
    if (typeof value !== 'string') return this.fail(path, 'must be a URL string')
    let u: URL
    try {
      u = new URL(value)
    } catch {
      return this.fail(path, `not a URL: ${JSON.stringify(value)}`)
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return this.fail(path, `must be http:// or https://, got ${u.protocol}//`)
    return u.href
  }

  bool (value: unknown, path: string): boolean | undefined {
    if (typeof value !== 'boolean') return this.fail(path, 'must be true or false')
    return value
  }

  /** A list of HTTP statuses (100-599). */
  statusList (value: unknown, path: string): number[] | undefined {
    if (!Array.isArray(value)) return this.fail(path, 'must be a list of HTTP statuses')
    const out: number[] = []
    value.forEach((v: unknown, i: number) => {
      const n = this.integer(v, join(path, i), 0, 100)
      if (n > 599) this.fail(join(path, i), 'must be an HTTP status (100-599)')
      else if (n >= 100) out.push(n)
    })
    return out
  }

  /** A list of IP addresses or CIDR blocks (`10.0.0.0/8`, `::1`), normalized to `address/prefix`. */
  cidrList (value: unknown, path: string): string[] {
    if (!Array.isArray(value)) return this.fail(path, 'must be a list of IP addresses or CIDR blocks') ?? []
    const out: string[] = []
    value.forEach((v: unknown, i: number) => {
      const r = typeof v === 'string' ? parseCidr(v) : undefined
      if (r === undefined) this.fail(join(path, i), `not an IP address or CIDR block (10.0.0.0/8, 192.168.1.7, fd00::/8): ${JSON.stringify(v)}`)
      else out.push(`${r.address}/${r.prefix}`)
    })
    return out
  }

  /** A list of host names, each optionally with a port (`admin.example:9901`). */
  hostList (value: unknown, path: string): string[] {
    if (!Array.isArray(value)) return this.fail(path, 'must be a list of host names') ?? []
    const out: string[] = []
    value.forEach((v: unknown, i: number) => {
      if (typeof v !== 'string' || !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?$/.test(v)) this.fail(join(path, i), `not a host name (with an optional :port): ${JSON.stringify(v)}`)
      else out.push(v.toLowerCase())
    })
    return out
  }

  hostPort (value: unknown, path: string, fallback: string): HostPort {
    const text = value ?? fallback
    const hp = typeof text === 'string' ? parseHostPort(text) : undefined
    return hp ?? this.fail(path, `not a host:port address: ${JSON.stringify(text)}`) ?? { host: '127.0.0.1', port: 0 }
  }
}

function join (path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`
  return path === '' ? key : `${path}.${key}`
}

const SERVICE_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const COOKIE_NAME = HEADER_NAME

/** Reads, substitutes, validates. Throws ConfigError listing every problem. */
export function loadConfigFile (file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const abs = resolve(file)
  let text: string
  try {
    text = readFileSync(abs, 'utf8')
  } catch (err) {
    throw new ConfigError([{ path: '', message: `cannot read ${abs}: ${(err as Error).message}` }])
  }
  return parseConfig(text, { file: abs, env })
}

/** Parses YAML text into a Config; `file` anchors relative paths. */
export function parseConfig (text: string, opts: { file?: string, env?: NodeJS.ProcessEnv } = {}): Config {
  const doc = parseDocument(text, { uniqueKeys: true })
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message.split('\n')[0]}` })), opts.file)
  }
  const raw: unknown = doc.toJS() ?? {}
  const c = new Checker()
  const substituted = substituteTree(raw, '', opts.env ?? process.env, c)
  const config = validate(substituted, c, opts.file)
  if (c.problems.length > 0) throw new ConfigError(c.problems, opts.file)
  return config
}

/** Substitutes every string value; an unset variable is reported at the path that uses it. */
function substituteTree (value: unknown, path: string, env: NodeJS.ProcessEnv, c: Checker): unknown {
  if (typeof value === 'string') {
    const r = substituteEnv(value, env)
    for (const name of r.missing) c.fail(path, `environment variable ${name} is not set and has no default (use \${${name}:-default})`)
    return r.text
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteTree(v, join(path, i), env, c))
  if (value !== null && typeof value === 'object') {
    const out: Obj = {}
    // defineProperty, not assignment: a `__proto__` key must stay an own key so it is reported as unknown
    for (const [k, v] of Object.entries(value)) {
      Object.defineProperty(out, k, { value: substituteTree(v, join(path, k), env, c), enumerable: true, writable: true, configurable: true })
    }
    return out
  }
  return value
}

function validate (raw: unknown, c: Checker, file: string | undefined): Config {
  const top = c.object(raw, '', listKeys(CONFIG_KEYS)) ?? {}
  const baseDir = file === undefined ? process.cwd() : dirname(file)

  const listen = c.hostPort(top.listen, 'listen', DEFAULTS.listen)
  const tls = top.tls === undefined ? undefined : tlsConfig(top.tls, c, baseDir)
  let engine: Engine = DEFAULTS.engine
  if (top.engine === 'fast' || top.engine === 'node') engine = top.engine
  else if (top.engine !== undefined) c.fail('engine', `must be fast or node, got ${JSON.stringify(top.engine)}`)
  const trustedProxies = top.trustedProxies === undefined ? [...DEFAULTS.trustedProxies] : c.cidrList(top.trustedProxies, 'trustedProxies')
  const clientRaw = top.client === undefined ? {} : c.object(top.client, 'client', listKeys(CONFIG_KEYS.client)) ?? {}
  const client = {
    header: c.duration(clientRaw.headerTimeout, 'client.headerTimeout', DEFAULTS.client.header),
    idle: c.duration(clientRaw.idleTimeout, 'client.idleTimeout', DEFAULTS.client.idle),
    body: c.duration(clientRaw.bodyTimeout, 'client.bodyTimeout', DEFAULTS.client.body),
  }
  const adminRaw = top.admin === undefined ? {} : c.object(top.admin, 'admin', listKeys(CONFIG_KEYS.admin)) ?? {}
  const allowedHosts = adminRaw.allowedHosts === undefined ? [...DEFAULTS.admin.allowedHosts] : c.hostList(adminRaw.allowedHosts, 'admin.allowedHosts')
  const adminListen = c.hostPort(adminRaw.listen, 'admin.listen', DEFAULTS.admin.listen)
  const redirect = top.redirect === undefined ? undefined : redirectConfig(top.redirect, top.tls !== undefined, [['listen', listen], ['admin.listen', adminListen]], c)
  const token = adminRaw.token === undefined ? DEFAULTS.admin.token : c.string(adminRaw.token, 'admin.token') ?? ''
  if (token === '' && !isLoopback(adminListen.host)) {
    c.fail('admin.token', `required when admin.listen (${adminListen.host}) is not loopback`)
  }
  const stateRaw = top.state === undefined ? {} : c.object(top.state, 'state', listKeys(CONFIG_KEYS.state)) ?? {}
  const stateFile = stateRaw.file === undefined ? DEFAULTS.state.file : c.string(stateRaw.file, 'state.file') ?? DEFAULTS.state.file
  const etcd = stateRaw.etcd === undefined ? undefined : etcdConfig(stateRaw.etcd, c, baseDir)
  const fleet = fleetConfig(top.fleet, c)

  const logRaw = top.log === undefined ? {} : c.object(top.log, 'log', listKeys(CONFIG_KEYS.log)) ?? {}
  let access: boolean | string = DEFAULTS.log.access
  if (typeof logRaw.access === 'boolean') access = logRaw.access
  else if (typeof logRaw.access === 'string' && logRaw.access !== '') access = resolve(baseDir, logRaw.access)
  else if (logRaw.access !== undefined) c.fail('log.access', 'must be true (stdout), false (off) or a file path')
  const metricsRaw = top.metrics === undefined ? {} : c.object(top.metrics, 'metrics', listKeys(CONFIG_KEYS.metrics)) ?? {}
  const metricsEnabled = metricsRaw.enabled === undefined ? DEFAULTS.metrics.enabled : c.bool(metricsRaw.enabled, 'metrics.enabled') ?? true
  const pinning = top.pinning === undefined ? undefined : pinningConfig(top.pinning, c)
  const tracing = top.tracing === undefined ? undefined : tracingConfig(top.tracing, c)

  const defaultsRaw = top.defaults === undefined ? {} : c.object(top.defaults, 'defaults', listKeys(CONFIG_KEYS.defaults)) ?? {}
  const base = sections(defaultsRaw, 'defaults', c, undefined)

  const services: Record<string, ServiceConfig> = {}
  const servicesRaw = top.services === undefined ? c.fail('services', 'required: at least one service') : c.object(top.services, 'services', null)
  if (servicesRaw !== undefined) {
    if (Object.keys(servicesRaw).length === 0) c.fail('services', 'required: at least one service')
    for (const [name, value] of Object.entries(servicesRaw)) {
      const path = join('services', name)
      if (!SERVICE_NAME.test(name)) c.fail(path, 'service name must be lowercase letters, digits, - or _ (at most 63)')
      const svc = service(name, value, path, c, base)
      if (svc !== undefined) services[name] = svc
    }
    checkRoutes(services, c)
  }

  return {
    ...(file === undefined ? {} : { file }),
    listen,
    ...(tls === undefined ? {} : { tls }),
    ...(redirect === undefined ? {} : { redirect }),
    engine,
    trustedProxies,
    client,
    admin: { listen: adminListen, token, allowedHosts },
    state: { file: resolve(baseDir, stateFile), ...(etcd === undefined ? {} : { etcd }) },
    fleet,
    log: { access },
    metrics: { enabled: metricsEnabled },
    ...(pinning === undefined ? {} : { pinning }),
    ...(tracing === undefined ? {} : { tracing }),
    services,
  }
}

/** `pinning`: `trust` is required, since nothing else tells the services' calls from a client's. */
function pinningConfig (value: unknown, c: Checker): PinningConfig | undefined {
  const raw = c.object(value, 'pinning', listKeys(CONFIG_KEYS.pinning))
  if (raw === undefined) return undefined
  const keep = c.duration(raw.keep, 'pinning.keep', DEFAULTS.pinning.keep)
  if (raw.trust === undefined) {
    c.fail('pinning.trust', 'required: the addresses your services call the gateway from (127.0.0.0/8, 10.0.0.0/8); a switchyard-gen entry from anyone else pins nothing')
    return undefined
  }
  const trust = c.cidrList(raw.trust, 'pinning.trust')
  // An empty list would stamp every request and pin none: a mistake, not a setting.
  if (Array.isArray(raw.trust) && raw.trust.length === 0) c.fail('pinning.trust', 'must list at least one address: the ones your services call the gateway from (127.0.0.0/8, 10.0.0.0/8)')
  return { keep, trust }
}

/** `tracing`: the OTLP/HTTP URL, with `/v1/traces` added to one that names no path. */
function tracingConfig (value: unknown, c: Checker): TracingConfig | undefined {
  const raw = c.object(value, 'tracing', listKeys(CONFIG_KEYS.tracing))
  if (raw === undefined) return undefined
  const url = raw.otlp === undefined ? c.fail('tracing.otlp', 'required: the OTLP/HTTP collector URL (http://collector.example:4318)') : c.url(raw.otlp, 'tracing.otlp')
  const serviceName = raw.serviceName === undefined ? DEFAULTS.tracing.serviceName : c.string(raw.serviceName, 'tracing.serviceName') ?? DEFAULTS.tracing.serviceName
  if (serviceName === '') c.fail('tracing.serviceName', 'must not be empty')
  const sample = c.ratio(raw.sample, 'tracing.sample', DEFAULTS.tracing.sample)
  if (url === undefined) return undefined
  const u = new URL(url)
  if (u.pathname === '/' && u.search === '') u.pathname = '/v1/traces'
  return { otlp: u.href, serviceName, sample }
}

/**
 * `tls`: the public listener's certificates. Each file is read and checked
 * here, as a start or a reload would, so `switchyard validate` and a
 * refused reload name the entry at fault.
 */
function tlsConfig (value: unknown, c: Checker, baseDir: string): TlsConfig | undefined {
  const raw = c.object(value, 'tls', listKeys(CONFIG_KEYS.tls))
  if (raw === undefined) return undefined
  let minVersion: TlsVersion = DEFAULTS.tls.minVersion
  if (raw.minVersion !== undefined) {
    if (TLS_VERSIONS.includes(raw.minVersion as TlsVersion)) minVersion = raw.minVersion as TlsVersion
    else c.fail('tls.minVersion', `must be ${TLS_VERSIONS.join(' or ')}, got ${JSON.stringify(raw.minVersion)}`)
  }
  const certs: CertFiles[] = []
  if (raw.certs === undefined) {
    c.fail('tls.certs', 'required: at least one { cert, key } of PEM files')
  } else if (!Array.isArray(raw.certs)) {
    c.fail('tls.certs', 'must be a list of { cert, key } of PEM files')
  } else if (raw.certs.length === 0) {
    c.fail('tls.certs', 'required: at least one { cert, key } of PEM files')
  } else {
    raw.certs.forEach((v: unknown, i: number) => {
      const path = join('tls.certs', i)
      const r = c.object(v, path, listKeys(CERT_KEYS))
      if (r === undefined) return
      const files: Partial<CertFiles> = {}
      for (const k of ['cert', 'key'] as const) {
        const f = r[k] === undefined ? c.fail(join(path, k), `required: a PEM ${k === 'cert' ? 'certificate' : 'private key'} file`) : c.string(r[k], join(path, k))
        if (f !== undefined) files[k] = resolve(baseDir, f)
      }
      if (files.cert === undefined || files.key === undefined) return
      const pair = { cert: files.cert, key: files.key }
      try {
        readCert(pair, path, minVersion)
      } catch (err) {
        if (!(err instanceof CertError)) throw err
        c.fail(err.path, err.reason)
      }
      certs.push(pair)
    })
  }
  return { certs, minVersion }
}

/** `redirect`: a plain HTTP listener that sends clients to https; it only makes sense beside `tls`. */
function redirectConfig (value: unknown, hasTls: boolean, others: Array<[string, HostPort]>, c: Checker): { listen: HostPort } | undefined {
  const raw = c.object(value, 'redirect', listKeys(CONFIG_KEYS.redirect))
  if (raw === undefined) return undefined
  if (!hasTls) c.fail('redirect', 'needs tls: it answers plain HTTP with a redirect to https on the public listener')
  if (raw.listen === undefined) return c.fail('redirect.listen', 'required: the host:port of the plain HTTP listener, e.g. 0.0.0.0:8080')
  const listen = c.hostPort(raw.listen, 'redirect.listen', '')
  const anyHost = (h: string): boolean => h === '0.0.0.0' || h === '::'
  for (const [name, other] of others) {
    // Port 0 asks the kernel for a free port, so two of them never collide.
    if (listen.port !== 0 && listen.port === other.port && (listen.host === other.host || anyHost(listen.host) || anyHost(other.host))) {
      c.fail('redirect.listen', `same port as ${name} (${other.host}:${other.port})`)
    }
  }
  return { listen }
}

/** `state.etcd`: where a fleet keeps its state. */
function etcdConfig (value: unknown, c: Checker, baseDir: string): EtcdConfig | undefined {
  const raw = c.object(value, 'state.etcd', listKeys(CONFIG_KEYS.state.etcd))
  if (raw === undefined) return undefined
  const endpoints: string[] = []
  if (!Array.isArray(raw.endpoints) || raw.endpoints.length === 0) {
    c.fail('state.etcd.endpoints', 'required: a list of etcd client URLs such as http://127.0.0.1:2379')
  } else {
    raw.endpoints.forEach((v: unknown, i: number) => {
      const r = parseOrigin(v)
      if ('error' in r) c.fail(`state.etcd.endpoints[${i}]`, r.error)
      else endpoints.push(r.origin)
    })
  }
  let prefix: string = DEFAULTS.etcd.prefix
  if (raw.prefix !== undefined) {
    const p = c.string(raw.prefix, 'state.etcd.prefix')
    if (p !== undefined && !/^\/[\x21-\x7e]*[^/\s]$/.test(p)) c.fail('state.etcd.prefix', `must start with / and not end with one, printable ASCII without spaces: ${JSON.stringify(p)}`)
    else if (p !== undefined) prefix = p
  }
  const username = raw.username === undefined ? '' : c.string(raw.username, 'state.etcd.username') ?? ''
  const password = raw.password === undefined ? '' : c.string(raw.password, 'state.etcd.password') ?? ''
  if (username === '' && password !== '') c.fail('state.etcd.password', 'set without state.etcd.username')
  let tls: EtcdConfig['tls']
  if (raw.tls !== undefined) {
    const t = c.object(raw.tls, 'state.etcd.tls', listKeys(CONFIG_KEYS.state.etcd.tls)) ?? {}
    tls = {}
    for (const k of ['ca', 'cert', 'key'] as const) {
      if (t[k] === undefined) continue
      const f = c.string(t[k], `state.etcd.tls.${k}`)
      if (f !== undefined) tls[k] = resolve(baseDir, f)
    }
    if ((tls.cert === undefined) !== (tls.key === undefined)) c.fail('state.etcd.tls', 'cert and key go together')
  }
  const startTimeout = c.duration(raw.startTimeout, 'state.etcd.startTimeout', DEFAULTS.etcd.startTimeout)
  return { endpoints, prefix, username, password, ...(tls === undefined ? {} : { tls }), startTimeout }
}

/** `fleet`: who this replica is to the others. */
function fleetConfig (value: unknown, c: Checker): FleetConfig {
  const raw = value === undefined ? {} : c.object(value, 'fleet', listKeys(CONFIG_KEYS.fleet)) ?? {}
  let id = raw.id === undefined ? '' : c.string(raw.id, 'fleet.id') ?? ''
  if (id !== '' && !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(id)) c.fail('fleet.id', `letters, digits, . _ : - (at most 128), starting with a letter or digit: ${JSON.stringify(id)}`)
  if (id === '') id = `${hostname()}:${process.pid}`
  let advertise: string | null = null
  if (raw.advertise !== undefined && raw.advertise !== '') {
    const r = parseOrigin(raw.advertise)
    if ('error' in r) c.fail('fleet.advertise', r.error)
    else advertise = r.origin
  }
  const leaseTtl = c.duration(raw.leaseTtl, 'fleet.leaseTtl', DEFAULTS.fleet.leaseTtl)
  if (leaseTtl < 2_000 || leaseTtl % 1000 !== 0) c.fail('fleet.leaseTtl', 'must be whole seconds, at least 2s (an etcd lease counts in seconds)')
  return { id, advertise, leaseTtl }
}

interface Sections {
  timeouts: Timeouts
  health: HealthConfig | undefined
  passive: PassiveConfig | undefined
  gate: GateConfig
  guard: GuardConfig
  verify: VerifyConfig
  drain: DrainConfig
  limits: LimitsConfig
}

/** The per-service sections; `inherit` is what `defaults` resolved to. */
function sections (raw: Obj, path: string, c: Checker, inherit: Sections | undefined): Sections {
  const d = DEFAULTS.defaults
  const t = inherit?.timeouts ?? d.timeouts
  const tr = raw.timeouts === undefined ? {} : c.object(raw.timeouts, join(path, 'timeouts'), listKeys(SECTION_KEYS.timeouts)) ?? {}
  const timeouts: Timeouts = {
    connect: c.duration(tr.connect, join(path, 'timeouts.connect'), t.connect),
    response: c.duration(tr.response, join(path, 'timeouts.response'), t.response),
    idleUpstream: c.duration(tr.idleUpstream, join(path, 'timeouts.idleUpstream'), t.idleUpstream),
  }
  // Unset means no limit, and stays absent (inherited when `defaults` set it).
  const body = tr.body === undefined ? (t as Timeouts).body : c.duration(tr.body, join(path, 'timeouts.body'), 0)
  if (body !== undefined) timeouts.body = body

  let health: HealthConfig | undefined = inherit?.health
  if (raw.health === false) {
    health = undefined
  } else if (raw.health !== undefined) {
    const hp = join(path, 'health')
    const h = health ?? d.health
    const hr = c.object(raw.health, hp, listKeys(SECTION_KEYS.health)) ?? {}
    const probePath = hr.path === undefined ? h.path : c.string(hr.path, join(hp, 'path')) ?? h.path
    if (!probePath.startsWith('/')) c.fail(join(hp, 'path'), 'must start with /')
    health = {
      path: probePath,
      ...grpcProbe(hr.grpc, join(hp, 'grpc'), c, health?.grpc),
      interval: c.duration(hr.interval, join(hp, 'interval'), h.interval),
      timeout: c.duration(hr.timeout, join(hp, 'timeout'), h.timeout),
      healthyThreshold: c.integer(hr.healthyThreshold, join(hp, 'healthyThreshold'), h.healthyThreshold, 1),
      unhealthyThreshold: c.integer(hr.unhealthyThreshold, join(hp, 'unhealthyThreshold'), h.unhealthyThreshold, 1),
      expectStatus: hr.expectStatus === undefined ? h.expectStatus : c.statusList(hr.expectStatus, join(hp, 'expectStatus')) ?? h.expectStatus,
      assumeHealthy: hr.assumeHealthy === undefined ? h.assumeHealthy : c.bool(hr.assumeHealthy, join(hp, 'assumeHealthy')) ?? h.assumeHealthy,
      panicThreshold: c.integer(hr.panicThreshold, join(hp, 'panicThreshold'), h.panicThreshold, 0),
    }
    if (health.panicThreshold > 100) c.fail(join(hp, 'panicThreshold'), 'must be a percentage from 0 to 100')
    if (health.timeout > health.interval) c.fail(join(hp, 'timeout'), `must not be longer than health.interval (${health.interval}ms)`)
  }

  let passive: PassiveConfig | undefined = inherit === undefined ? d.passive : inherit.passive
  if (raw.passive === false) {
    passive = undefined
  } else if (raw.passive !== undefined) {
    const pp = join(path, 'passive')
    const p = passive ?? d.passive
    const pr = c.object(raw.passive, pp, listKeys(SECTION_KEYS.passive)) ?? {}
    passive = {
      consecutiveFailures: c.integer(pr.consecutiveFailures, join(pp, 'consecutiveFailures'), p.consecutiveFailures, 1),
      baseEjectionTime: c.duration(pr.baseEjectionTime, join(pp, 'baseEjectionTime'), p.baseEjectionTime),
      maxEjectionTime: c.duration(pr.maxEjectionTime, join(pp, 'maxEjectionTime'), p.maxEjectionTime),
    }
    if (passive.maxEjectionTime < passive.baseEjectionTime) c.fail(join(pp, 'maxEjectionTime'), 'must not be shorter than baseEjectionTime')
  }

  const g = inherit?.gate ?? d.gate
  const gr = raw.gate === undefined ? {} : c.object(raw.gate, join(path, 'gate'), listKeys(SECTION_KEYS.gate)) ?? {}
  const gate: GateConfig = {
    minHealthy: c.integer(gr.minHealthy, join(path, 'gate.minHealthy'), g.minHealthy, 0),
    minShadowCompared: c.integer(gr.minShadowCompared, join(path, 'gate.minShadowCompared'), g.minShadowCompared, 1),
  }
  // Unset means the shadow comparison never refuses a flip, and stays absent (inherited when `defaults` set it).
  const maxShadowDiff = gr.maxShadowDiff === undefined ? (g as GateConfig).maxShadowDiff : c.ratio(gr.maxShadowDiff, join(path, 'gate.maxShadowDiff'), 0)
  if (maxShadowDiff !== undefined) gate.maxShadowDiff = maxShadowDiff

  const gu = inherit?.guard ?? d.guard
  const gur = raw.guard === undefined ? {} : c.object(raw.guard, join(path, 'guard'), listKeys(SECTION_KEYS.guard)) ?? {}
  const guard: GuardConfig = {
    window: c.duration(gur.window, join(path, 'guard.window'), gu.window),
    maxErrorRate: c.ratio(gur.maxErrorRate, join(path, 'guard.maxErrorRate'), gu.maxErrorRate),
    minRequests: c.integer(gur.minRequests, join(path, 'guard.minRequests'), gu.minRequests, 1),
  }

  const ve = inherit?.verify ?? d.verify
  const ver = raw.verify === undefined ? {} : c.object(raw.verify, join(path, 'verify'), listKeys(SECTION_KEYS.verify)) ?? {}
  const verify: VerifyConfig = {
    window: c.duration(ver.window, join(path, 'verify.window'), ve.window),
    maxErrorRateIncrease: c.ratio(ver.maxErrorRateIncrease, join(path, 'verify.maxErrorRateIncrease'), ve.maxErrorRateIncrease),
    maxLatencyIncrease: c.number(ver.maxLatencyIncrease, join(path, 'verify.maxLatencyIncrease'), ve.maxLatencyIncrease, 0, 10),
    latencyFloor: c.duration(ver.latencyFloor, join(path, 'verify.latencyFloor'), ve.latencyFloor, 0),
    minRequests: c.integer(ver.minRequests, join(path, 'verify.minRequests'), ve.minRequests, 1),
  }

  const dr = inherit?.drain ?? d.drain
  const drr = raw.drain === undefined ? {} : c.object(raw.drain, join(path, 'drain'), listKeys(SECTION_KEYS.drain)) ?? {}
  const drain: DrainConfig = { timeout: c.duration(drr.timeout, join(path, 'drain.timeout'), dr.timeout) }
  const hook = drr.onDrained === undefined ? (dr as DrainConfig).onDrained : c.url(drr.onDrained, join(path, 'drain.onDrained'))
  if (hook !== undefined) drain.onDrained = hook

  const li = inherit?.limits ?? d.limits
  const lr = raw.limits === undefined ? {} : c.object(raw.limits, join(path, 'limits'), listKeys(SECTION_KEYS.limits)) ?? {}
  const limits: LimitsConfig = { maxConnections: c.integer(lr.maxConnections, join(path, 'limits.maxConnections'), li.maxConnections, 1) }

  return { timeouts, health, passive, gate, guard, verify, drain, limits }
}

function service (name: string, value: unknown, path: string, c: Checker, base: Sections): ServiceConfig | undefined {
  const raw = c.object(value, path, listKeys(SERVICE_KEYS))
  if (raw === undefined) return undefined

  const mr = raw.match === undefined ? c.fail(join(path, 'match'), 'required: host and/or pathPrefix') : c.object(raw.match, join(path, 'match'), listKeys(SERVICE_KEYS.match))
  let host: string | undefined
  let pathPrefix: string = DEFAULTS.service.pathPrefix
  if (mr !== undefined) {
    if (mr.host === undefined && mr.pathPrefix === undefined) c.fail(join(path, 'match'), 'needs host and/or pathPrefix')
    if (mr.host !== undefined) {
      host = c.string(mr.host, join(path, 'match.host'))?.toLowerCase()
      if (host !== undefined && !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(host)) c.fail(join(path, 'match.host'), `not a host name: ${JSON.stringify(host)}`)
    }
    if (mr.pathPrefix !== undefined) {
      const p = c.string(mr.pathPrefix, join(path, 'match.pathPrefix'))
      if (p !== undefined) {
        if (!p.startsWith('/') || /[?#\s]/.test(p)) c.fail(join(path, 'match.pathPrefix'), 'must start with / and hold no ?, # or spaces')
        pathPrefix = p.length > 1 && p.endsWith('/') ? p.replace(/\/+$/, '') || '/' : p
      }
    }
  }

  let live: ServiceConfig['live'] = DEFAULTS.service.live
  if (raw.live !== undefined) {
    if (isColor(raw.live)) live = raw.live
    else c.fail(join(path, 'live'), `must be blue or green, got ${JSON.stringify(raw.live)}`)
  }

  const envs = { blue: { targets: [] as string[] }, green: { targets: [] as string[] } }
  // a problem in the live color's own section (or in `live`) already explains missing
  // targets; problems elsewhere in the service must not hide this one
  let liveSectionFailed = raw.live !== undefined && !isColor(raw.live)
  for (const color of COLORS) {
    const before = c.problems.length
    envs[color].targets = targetList(raw[color], join(path, color), c)
    if (color === live && c.problems.length > before) liveSectionFailed = true
  }
  if (envs[live].targets.length === 0 && !liveSectionFailed) {
    c.fail(join(join(path, live), 'targets'), `the live color (${live}) needs at least one target`)
  }

  let preview: ServiceConfig['preview']
  if (raw.preview !== undefined) {
    const pr = c.object(raw.preview, join(path, 'preview'), listKeys(SERVICE_KEYS.preview))
    if (pr !== undefined) {
      preview = {}
      if (pr.header === undefined && pr.cookie === undefined) c.fail(join(path, 'preview'), 'needs header and/or cookie')
      if (pr.header !== undefined) {
        const h = c.string(pr.header, join(path, 'preview.header'))
        if (h !== undefined && !HEADER_NAME.test(h)) c.fail(join(path, 'preview.header'), 'not a header name')
        if (h !== undefined) preview.header = h.toLowerCase()
      }
      if (pr.cookie !== undefined) {
        const k = c.string(pr.cookie, join(path, 'preview.cookie'))
        if (k !== undefined && !COOKIE_NAME.test(k)) c.fail(join(path, 'preview.cookie'), 'not a cookie name')
        if (k !== undefined) preview.cookie = k
      }
    }
  }

  let sticky: ServiceConfig['sticky']
  if (raw.sticky !== undefined) {
    const sr = c.object(raw.sticky, join(path, 'sticky'), listKeys(SERVICE_KEYS.sticky))
    const k = sr === undefined ? undefined : c.string(sr.cookie, join(path, 'sticky.cookie'))
    if (k !== undefined && !COOKIE_NAME.test(k)) c.fail(join(path, 'sticky.cookie'), 'not a cookie name')
    if (k !== undefined) sticky = { cookie: k }
  }

  const smoke: SmokeCheck[] = []
  if (raw.smoke !== undefined) {
    if (!Array.isArray(raw.smoke)) {
      c.fail(join(path, 'smoke'), 'must be a list of checks')
    } else {
      raw.smoke.forEach((s: unknown, i: number) => {
        const sp = join(join(path, 'smoke'), i)
        const check = smokeCheck(s, sp, c)
        if (check === undefined) return
        // A check that this service's route would not match would test some other service.
        const q = check.path.search(/[?#]/)
        const p = q === -1 ? check.path : check.path.slice(0, q)
        if (pathPrefix !== '/' && p !== pathPrefix && !p.startsWith(pathPrefix + '/')) {
          c.fail(join(sp, 'path'), `must be under the service's pathPrefix ${pathPrefix}`)
        }
        smoke.push(check)
      })
    }
  }

  const own = sections(raw, path, c, base)
  const protocol = upstreamProtocol(raw.protocol, join(path, 'protocol'), c)
  if (protocol !== undefined) {
    for (const color of COLORS) {
      envs[color].targets.forEach((t, i) => {
        const wrong = protocolMismatch(protocol, t)
        if (wrong !== undefined) c.fail(join(path, 'protocol'), `${wrong} in ${color}.targets[${i}]`)
      })
    }
    if (own.health?.grpc !== undefined && protocol === 'http1') {
      c.fail(join(path, 'health.grpc'), 'gRPC health probes need HTTP/2 to the targets: set protocol to h2c (http:// targets) or h2 (https://)')
    }
  }
  const shadow = raw.shadow === undefined ? undefined : shadowConfig(raw.shadow, join(path, 'shadow'), c, protocol)
  return { name, protocol: protocol ?? 'http1', match: host === undefined ? { pathPrefix } : { host, pathPrefix }, live, ...envs, ...(preview && { preview }), ...(sticky && { sticky }), smoke, ...(shadow && { shadow }), ...own }
}

/**
 * `shadow`: copies of a sample of the live color's requests go to the idle
 * color and the answers are compared. Only for HTTP/1.1 services (the copies
 * go over the targets' HTTP/1.1 pools), and a method that changes state only
 * with `unsafe: true`: its copy would do it a second time.
 */
function shadowConfig (value: unknown, path: string, c: Checker, protocol: UpstreamProtocol | undefined): ShadowConfig | undefined {
  const raw = c.object(value, path, listKeys(SERVICE_KEYS.shadow))
  if (raw === undefined) return undefined
  if (protocol !== undefined && protocol !== 'http1') c.fail(path, `shadow traffic is for HTTP/1.1 services; this one's protocol is ${protocol}`)
  const d = DEFAULTS.shadow
  let sample = 0
  if (raw.sample === undefined) {
    c.fail(join(path, 'sample'), 'required: the share of the live color\'s requests copied, above 0 and at most 1 (0.1 copies one in ten)')
  } else {
    const n = typeof raw.sample === 'string' && raw.sample.trim() !== '' ? Number(raw.sample) : raw.sample
    if (!isSample(n)) c.fail(join(path, 'sample'), `must be a number above 0 and at most 1 (0.1 copies one in ten), got ${JSON.stringify(raw.sample)}`)
    else sample = n
  }
  const unsafe = raw.unsafe === undefined ? d.unsafe : c.bool(raw.unsafe, join(path, 'unsafe')) ?? false
  let methods: string[] = [...d.methods]
  if (raw.methods !== undefined) {
    const mp = join(path, 'methods')
    if (!Array.isArray(raw.methods) || raw.methods.length === 0) {
      c.fail(mp, 'must be a non-empty list of HTTP methods, such as [GET, HEAD]')
    } else {
      methods = []
      raw.methods.forEach((v: unknown, i: number) => {
        const m = typeof v === 'string' ? v.toUpperCase() : undefined
        if (m === undefined || !/^[!#$%&'*+.^_`|~0-9A-Z-]+$/.test(m)) return c.fail(join(mp, i), `not an HTTP method: ${JSON.stringify(v)}`)
        if (methods.includes(m)) return c.fail(join(mp, i), `${m} is listed twice`)
        if (!unsafe && !SAFE_METHODS.includes(m)) {
          return c.fail(join(mp, i), `${m} may change state: its copy would repeat the side effect on the idle color, and on any store both colors share (a database, a queue, a payment provider); set ${join(path, 'unsafe')}: true to copy it anyway`)
        }
        methods.push(m)
      })
    }
  }
  const ignore = { headers: [] as string[], json: [] as string[] }
  if (raw.ignore !== undefined) {
    const ip = join(path, 'ignore')
    const ir = c.object(raw.ignore, ip, listKeys(SERVICE_KEYS.shadow.ignore)) ?? {}
    if (ir.headers !== undefined) {
      const hp = join(ip, 'headers')
      if (!Array.isArray(ir.headers)) c.fail(hp, 'must be a list of header names')
      else {
        ir.headers.forEach((v: unknown, i: number) => {
          if (typeof v !== 'string' || !HEADER_NAME.test(v)) return c.fail(join(hp, i), `not a header name: ${JSON.stringify(v)}`)
          if (!ignore.headers.includes(v.toLowerCase())) ignore.headers.push(v.toLowerCase())
        })
      }
    }
    if (ir.json !== undefined) {
      const jp = join(ip, 'json')
      if (!Array.isArray(ir.json)) c.fail(jp, 'must be a list of JSON paths, such as ["$.timestamp", "$..requestId"]')
      else {
        ir.json.forEach((v: unknown, i: number) => {
          if (typeof v !== 'string') return c.fail(join(jp, i), `must be a JSON path string, got ${JSON.stringify(v)}`)
          try {
            parseJsonPath(v)
          } catch (err) {
            return c.fail(join(jp, i), (err as Error).message)
          }
          ignore.json.push(v)
        })
      }
    }
  }
  const redact: string[] = []
  if (raw.redact !== undefined) {
    const rp = join(path, 'redact')
    if (!Array.isArray(raw.redact)) c.fail(rp, 'must be a list of JSON member names, such as [email, phone]')
    else {
      raw.redact.forEach((v: unknown, i: number) => {
        if (typeof v !== 'string' || v.length === 0) return c.fail(join(rp, i), `must be a member name, got ${JSON.stringify(v)}`)
        redact.push(v)
      })
    }
  }
  return {
    sample,
    methods,
    unsafe,
    ignore,
    redact,
    maxBody: c.integer(raw.maxBody, join(path, 'maxBody'), d.maxBody, 0),
    maxConcurrent: c.integer(raw.maxConcurrent, join(path, 'maxConcurrent'), d.maxConcurrent, 1),
    timeout: c.duration(raw.timeout, join(path, 'timeout'), d.timeout),
    noise: c.ratio(raw.noise, join(path, 'noise'), d.noise),
    learn: c.integer(raw.learn, join(path, 'learn'), d.learn, 0),
  }
}

const PROTOCOLS: readonly UpstreamProtocol[] = ['http1', 'h2c', 'h2']

/** `protocol`: http1 (default), h2c or h2; undefined when it is wrong (reported). */
function upstreamProtocol (value: unknown, path: string, c: Checker): UpstreamProtocol | undefined {
  if (value === undefined) return 'http1'
  if (typeof value === 'string' && (PROTOCOLS as readonly string[]).includes(value)) return value as UpstreamProtocol
  return c.fail(path, `must be http1, h2c or h2, got ${JSON.stringify(value)}`)
}

/** `health.grpc`: true (the server as a whole), a gRPC service name, or false (HTTP probes); `inherited` from defaults when unset. */
function grpcProbe (value: unknown, path: string, c: Checker, inherited: HealthConfig['grpc']): Pick<HealthConfig, 'grpc'> {
  if (value === undefined) return inherited === undefined ? {} : { grpc: inherited }
  if (value === false) return {}
  if (value === true) return { grpc: { service: '' } }
  if (typeof value === 'string' && /^[A-Za-z0-9_.-]+$/.test(value)) return { grpc: { service: value } }
  c.fail(path, `must be true, false or a gRPC service name (package.Service), got ${JSON.stringify(value)}`)
  return {}
}

/** One color's `{ targets: [...] }`: normalized origins, each bad or repeated one reported. */
function targetList (value: unknown, path: string, c: Checker): string[] {
  const targets: string[] = []
  if (value === undefined) return targets
  const er = c.object(value, path, listKeys(ENVIRONMENT_KEYS))
  if (er === undefined || er.targets === undefined) return targets
  const tp = join(path, 'targets')
  if (!Array.isArray(er.targets)) return c.fail(tp, 'must be a list of URLs') ?? targets
  er.targets.forEach((t: unknown, i: number) => {
    const r = parseOrigin(t)
    if ('error' in r) return c.fail(join(tp, i), r.error)
    if (targets.includes(r.origin)) return c.fail(join(tp, i), `duplicate target ${r.origin}`)
    targets.push(r.origin)
  })
  return targets
}

function smokeCheck (value: unknown, path: string, c: Checker): SmokeCheck | undefined {
  const sr = c.object(value, path, listKeys(SMOKE_KEYS))
  if (sr === undefined) return undefined
  const p = sr.path === undefined ? c.fail(join(path, 'path'), 'required') : c.string(sr.path, join(path, 'path'))
  if (p !== undefined && !p.startsWith('/')) c.fail(join(path, 'path'), 'must start with /')
  const method = sr.method === undefined ? DEFAULTS.service.smokeMethod : c.string(sr.method, join(path, 'method'))?.toUpperCase()
  if (method !== undefined && !/^[A-Z]+$/.test(method)) c.fail(join(path, 'method'), 'not an HTTP method')
  const headers: Record<string, string> = {}
  if (sr.headers !== undefined) {
    const hr = c.object(sr.headers, join(path, 'headers'), null)
    if (hr !== undefined) {
      for (const [k, v] of Object.entries(hr)) {
        if (!HEADER_NAME.test(k)) c.fail(join(join(path, 'headers'), k), 'not a header name')
        const s = c.string(v, join(join(path, 'headers'), k))
        if (s !== undefined) headers[k.toLowerCase()] = s
      }
    }
  }
  const expectStatus = c.integer(sr.expectStatus, join(path, 'expectStatus'), DEFAULTS.service.smokeExpectStatus, 100)
  if (expectStatus > 599) c.fail(join(path, 'expectStatus'), 'must be an HTTP status (100-599)')
  const bodyContains = sr.bodyContains === undefined ? undefined : c.string(sr.bodyContains, join(path, 'bodyContains'))
  if (p === undefined || method === undefined) return undefined
  return { method, path: p, headers, expectStatus, ...(bodyContains === undefined ? {} : { bodyContains }) }
}

/** Two services may not claim the same host + prefix: the winner would be arbitrary. */
function checkRoutes (services: Record<string, ServiceConfig>, c: Checker): void {
  const owners = new Map<string, string>()
  for (const svc of Object.values(services)) {
    const key = `${svc.match.host ?? '*'} ${svc.match.pathPrefix}`
    const other = owners.get(key)
    if (other !== undefined) {
      c.fail(join(join('services', svc.name), 'match'), `same route as service ${other} (host ${svc.match.host ?? 'any'}, pathPrefix ${svc.match.pathPrefix})`)
    } else {
      owners.set(key, svc.name)
    }
  }
}
