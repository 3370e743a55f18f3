// The admin HTTP API: auth, strict body parsing, routes to the controller,
// and the one place that renders errors. It never touches a snapshot.

import { timingSafeEqual, createHash } from 'node:crypto'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { Registry } from 'prom-client'
import { isColor, type Color } from '../config/schema.js'
import { isSample, parseDuration, parseOrigin } from '../config/values.js'
import { ConfigError } from '../config/load.js'
import type { Config } from '../config/schema.js'
import type { Controller } from '../control/controller.js'
import { findDuplicateKey } from './json-keys.js'
import { SwitchyardError, toSwitchyardError } from '../errors.js'
import { UI_HEADERS, UI_HTML } from './ui.js'

const MAX_BODY = 1024 * 1024

type Body = Record<string, unknown>

export interface AdminOptions {
  /** Re-reads the config file for POST /v1/reload; throws ConfigError when it is invalid. */
  loadConfig: () => Config
  /** Prometheus registry for GET /metrics; undefined when metrics are off. */
  metrics?: Registry
}

/** Compares in constant time (hashing first makes the lengths equal too). */
function tokenMatches (header: string | undefined, token: string): boolean {
  // The auth scheme is case-insensitive (RFC 9110 section 11.1): "bearer x" is the same as "Bearer x".
  if (header === undefined || !/^Bearer /i.test(header)) return false
  const a = createHash('sha256').update(header.slice(7)).digest()
  const b = createHash('sha256').update(token).digest()
  return timingSafeEqual(a, b)
}

/**
 * The body of a POST or PUT. `content-type: application/json` is required
 * even for an empty body: a browser cannot send that cross-site without a
 * CORS preflight, which this API never grants.
 */
async function readJson (req: IncomingMessage): Promise<Body> {
  const type = req.headers['content-type'] ?? ''
  if (!type.startsWith('application/json')) throw new SwitchyardError('unsupported_media_type', `content-type must be application/json${type === '' ? '' : `, got ${type}`}`)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY) throw new SwitchyardError('payload_too_large', `request body over ${MAX_BODY} bytes`)
    chunks.push(chunk as Buffer)
  }
  if (size === 0) return {}
  let value: unknown
  const text = Buffer.concat(chunks).toString('utf8')
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new SwitchyardError('bad_request', `body is not valid JSON: ${(err as Error).message}`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new SwitchyardError('bad_request', 'body must be a JSON object')
  // JSON.parse would keep the last of two equal keys: a service named twice must not silently become one.
  const twice = findDuplicateKey(text)
  if (twice !== undefined) throw new SwitchyardError('bad_request', `${twice}: named twice in the body`, { field: twice })
  return value as Body
}

/** Whether a request carries a body at all (a length above zero, or chunks). */
function hasBody (req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/** Field checks: each names the field and what it should be. */
const field = {
  only (body: Body, allowed: readonly string[]): void {
    for (const key of Object.keys(body)) {
      if (!allowed.includes(key)) throw new SwitchyardError('bad_request', `unknown field "${key}" (allowed: ${allowed.join(', ')})`, { field: key })
    }
  },
  bool (body: Body, key: string): boolean | undefined {
    const v = body[key]
    if (v === undefined) return undefined
    if (typeof v !== 'boolean') throw new SwitchyardError('bad_request', `"${key}" must be true or false`, { field: key })
    return v
  },
  text (body: Body, key: string, max = 1000): string | undefined {
    const v = body[key]
    if (v === undefined) return undefined
    if (typeof v !== 'string' || v.length > max) throw new SwitchyardError('bad_request', `"${key}" must be a string of at most ${max} characters`, { field: key })
    return v
  },
  color (body: Body, key: string): Color | undefined {
    const v = body[key]
    if (v === undefined) return undefined
    if (!isColor(v)) throw new SwitchyardError('bad_request', `"${key}" must be "blue" or "green"`, { field: key })
    return v
  },
  /** A duration as the config writes it ("30s") or a number of milliseconds. */
  duration (body: Body, key: string): number | undefined {
    const v = body[key]
    if (v === undefined) return undefined
    const ms = typeof v === 'number' ? v : typeof v === 'string' ? parseDuration(v) : undefined
    if (ms === undefined || !Number.isFinite(ms) || ms < 0) throw new SwitchyardError('bad_request', `"${key}" must be a duration such as "30s" or a number of milliseconds`, { field: key })
    return ms
  },
  generation (body: Body): number | undefined {
    const v = body.ifGeneration
    if (v === undefined) return undefined
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new SwitchyardError('bad_request', '"ifGeneration" must be a non-negative integer', { field: 'ifGeneration' })
    return v
  },
  services (body: Body): string[] | undefined {
    const v = body.services
    if (v === undefined) return undefined
    if (!Array.isArray(v) || v.length === 0 || v.some((s) => typeof s !== 'string' || s === '')) {
      throw new SwitchyardError('bad_request', '"services" must be a non-empty list of service names', { field: 'services' })
    }
    return v as string[]
  },
  targets (body: Body): string[] {
    const v = body.targets
    if (!Array.isArray(v)) throw new SwitchyardError('bad_request', '"targets" must be a list of URLs', { field: 'targets' })
    const out: string[] = []
    v.forEach((t: unknown, i: number) => {
      const r = parseOrigin(t)
      if ('error' in r) throw new SwitchyardError('bad_request', `targets[${i}]: ${r.error}`, { field: `targets[${i}]` })
      if (out.includes(r.origin)) throw new SwitchyardError('bad_request', `targets[${i}]: duplicate target ${r.origin}`, { field: `targets[${i}]` })
      out.push(r.origin)
    })
    return out
  },
}

/** A path segment; bad percent-encoding is the client's error, not a 500. */
function segment (text: string, what: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    throw new SwitchyardError('bad_request', `${what} in the path is not valid percent-encoding: ${text}`, { field: what })
  }
}

function send (res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value) + '\n'
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' })
  res.end(body)
}

function actorOf (req: IncomingMessage): string {
  const h = req.headers['x-switchyard-actor']
  return typeof h === 'string' && h !== '' ? h.slice(0, 100) : 'api'
}

/** Host and port of a Host header or an allowedHosts entry, lower-cased; port undefined when absent. */
function splitHost (text: string): { host: string, port: number | undefined } | undefined {
  const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(text.toLowerCase())
  if (m === null) return undefined
  return { host: m[1], port: m[2] === undefined ? undefined : Number(m[2]) }
}

/** An address as it appears in a Host header: IPv6 in brackets, IPv4-mapped IPv6 as IPv4. */
function hostForm (address: string): string {
  const a = address.toLowerCase().replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '')
  return a.includes(':') ? `[${a}]` : a
}

/**
 * DNS rebinding defence (Caddy's admin `checkHost`): a browser page on a name
 * its owner points at this machine sends that name as Host. The API answers
 * only its own addresses with the port the request arrived on (127.0.0.1,
 * localhost, [::1], the configured listen host, and the address the connection
 * was accepted on, which covers a wildcard listener reached by IP), or an
 * `admin.allowedHosts` entry (one without a port matches any port). A Host
 * without a port means port 80, as in a URL.
 */
export function isAllowedHost (header: string | undefined, socket: { localAddress?: string, localPort?: number }, config: Config): boolean {
  if (header === undefined) return false
  const h = splitHost(header)
  if (h === undefined) return false
  const port = h.port ?? 80
  for (const entry of config.admin.allowedHosts) {
    const e = splitHost(entry)
    if (e !== undefined && e.host === h.host && (e.port === undefined || e.port === port)) return true
  }
  if (port !== socket.localPort) return false
  if (h.host === '127.0.0.1' || h.host === 'localhost' || h.host === '[::1]') return true
  if (h.host === hostForm(config.admin.listen.host)) return true
  return socket.localAddress !== undefined && h.host === hostForm(socket.localAddress)
}

/**
 * Refuses a request not addressed to this API. node:http keeps only the
 * first of several Host lines, so more than one is refused here (RFC 9112
 * section 3.2), and an absolute-form target names the host the request is
 * for (section 3.2.2): its authority must pass the check as well.
 */
function checkHost (req: IncomingMessage, config: Config): void {
  let lines = 0
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === 'host') lines++
  if (lines > 1) throw new SwitchyardError('bad_request', `${lines} Host lines; a request carries exactly one`)
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(req.url ?? '')?.[1]
  for (const host of authority === undefined ? [req.headers.host] : [req.headers.host, authority]) {
    if (!isAllowedHost(host, req.socket, config)) {
      throw new SwitchyardError('forbidden_host', `Host ${JSON.stringify(host ?? '')} is not one this admin API answers to; add it to admin.allowedHosts`)
    }
  }
}

/** A flip or rollback may wait for the fleet to apply it. */
const WAIT_FIELDS = ['wait', 'waitTimeout'] as const
const FLIP_FIELDS = ['to', 'services', 'force', 'reason', 'ifGeneration', 'guard', ...WAIT_FIELDS] as const
/** The longest shadow session the admin API starts with an end. */
const MAX_SHADOW_DURATION = 365 * 86_400_000
/** How long `wait: "fleet"` waits by default. */
const DEFAULT_WAIT_TIMEOUT = 5_000
const MAX_WAIT_TIMEOUT = 60_000

export function createAdminServer (controller: Controller, opts: AdminOptions): http.Server {
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // Before anything else, every path included: a rebound DNS name must not even learn what is here.
    checkHost(req, controller.currentConfig)
    const url = new URL(req.url ?? '/', 'http://admin')
    const path = url.pathname.replace(/\/+$/, '') || '/'
    const method = req.method ?? 'GET'

    // A browser page from elsewhere must not drive the API.
    const origin = req.headers.origin
    if (origin !== undefined && origin !== `http://${req.headers.host ?? ''}`) {
      throw new SwitchyardError('forbidden_origin', `requests from ${origin} are not accepted`)
    }
    if (path === '/healthz') return send(res, 200, { status: 'ok' })
    if (path === '/readyz') {
      const r = controller.readiness()
      return send(res, r.ready ? 200 : 503, r)
    }

    const token = controller.currentConfig.admin.token
    if (path.startsWith('/v1/') && token !== '' && !tokenMatches(req.headers.authorization, token)) {
      res.setHeader('www-authenticate', 'Bearer realm="switchyard"')
      throw new SwitchyardError('unauthorized')
    }
    const allow = (...methods: string[]): void => {
      if (!methods.includes(method)) {
        res.setHeader('allow', methods.join(', '))
        throw new SwitchyardError('method_not_allowed', `${method} is not allowed on ${path} (use ${methods.join(', ')})`)
      }
    }

    if (path === '/metrics' && opts.metrics !== undefined) {
      allow('GET')
      const text = await opts.metrics.metrics()
      res.writeHead(200, { 'content-type': opts.metrics.contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
      res.end(text)
      return
    }
    // The dashboard is static HTML: no token needed to load it; its API calls carry one.
    if (path === '/ui') {
      allow('GET', 'HEAD')
      res.writeHead(200, UI_HEADERS)
      res.end(method === 'HEAD' ? undefined : UI_HTML)
      return
    }
    if (path === '/v1/state') {
      allow('GET')
      return send(res, 200, controller.describe())
    }
    if (path === '/v1/events') {
      allow('GET')
      const sinceText = url.searchParams.get('since')
      let since: number | undefined
      if (sinceText !== null) {
        // Digits only: Number() would take '' as 0 and '0x10' as 16.
        since = /^\d+$/.test(sinceText) ? Number(sinceText) : NaN
        if (!Number.isSafeInteger(since)) throw new SwitchyardError('bad_request', '"since" must be a non-negative integer event id', { field: 'since' })
      }
      const typeText = url.searchParams.get('type')
      const types = typeText === null ? undefined : new Set(typeText.split(',').map((x) => x.trim()).filter((x) => x !== ''))
      const list = controller.events.list(since)
      return send(res, 200, { events: types === undefined ? list : list.filter((e) => types.has(e.type)) })
    }
    if (path === '/v1/flip') {
      allow('POST')
      const body = await readJson(req)
      field.only(body, FLIP_FIELDS)
      return send(res, 200, await flip(body, req, field.services(body)))
    }
    if (path === '/v1/rollback') {
      allow('POST')
      const body = await readJson(req)
      field.only(body, ['services', 'reason', 'ifGeneration', ...WAIT_FIELDS])
      const wait = fleetWait(body)
      const result = await controller.rollback({ services: field.services(body), reason: field.text(body, 'reason'), ifGeneration: field.generation(body), actor: actorOf(req) })
      return send(res, 200, { generation: result.generation, changes: result.changes, ...await wait(result.generation) })
    }
    if (path === '/v1/reload') {
      allow('POST')
      const body = await readJson(req)
      field.only(body, [])
      let config: Config
      try {
        config = opts.loadConfig()
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err
        throw new SwitchyardError('config_invalid', `config file refused, the running config stays: ${err.problems.length} problem(s)`, { problems: err.problems })
      }
      return send(res, 200, await controller.reload(config, actorOf(req)))
    }
    if (path === '/v1/releases') {
      allow('GET', 'POST')
      if (method === 'GET') return send(res, 200, { releases: controller.listReleases() })
      const body = await readJson(req)
      return send(res, 201, await controller.startRelease(body, actorOf(req)))
    }
    const relMatch = /^\/v1\/releases\/([^/]+)(?:\/(pause|resume|promote|abort))?$/.exec(path)
    if (relMatch !== null) {
      const id = segment(relMatch[1], 'release')
      const action = relMatch[2] as 'pause' | 'resume' | 'promote' | 'abort' | undefined
      if (action === undefined) {
        allow('GET')
        return send(res, 200, controller.getRelease(id))
      }
      allow('POST')
      field.only(await readJson(req), [])
      return send(res, 200, await controller.releaseAction(id, action, actorOf(req)))
    }
    const svcMatch = /^\/v1\/services\/([^/]+)(\/.*)?$/.exec(path)
    if (svcMatch !== null) {
      const name = segment(svcMatch[1], 'service')
      const rest = svcMatch[2] ?? ''
      if (rest === '/flip') {
        allow('POST')
        const body = await readJson(req)
        field.only(body, FLIP_FIELDS.filter((f) => f !== 'services'))
        return send(res, 200, await flip(body, req, [name]))
      }
      if (rest === '/drain') {
        allow('POST')
        const body = await readJson(req)
        field.only(body, ['color', 'wait', 'timeout'])
        return send(res, 200, await controller.drain({ service: name, color: field.color(body, 'color'), wait: field.bool(body, 'wait'), timeout: field.duration(body, 'timeout') }))
      }
      if (rest === '/shadow') {
        allow('GET', 'POST', 'DELETE')
        if (method === 'GET') return send(res, 200, controller.shadowView(name))
        if (method === 'DELETE') {
          // DELETE cannot be sent cross-site without a preflight (never granted): a bodiless one needs no content-type.
          const body = hasBody(req) ? await readJson(req) : {}
          field.only(body, ['reason'])
          return send(res, 200, await controller.stopShadow({ service: name, reason: field.text(body, 'reason'), actor: actorOf(req) }))
        }
        const body = await readJson(req)
        field.only(body, ['sample', 'duration', 'reason'])
        const sample = body.sample
        if (sample !== undefined && !isSample(sample)) {
          throw new SwitchyardError('bad_request', '"sample" must be a number above 0 and at most 1 (the share of live requests copied)', { field: 'sample' })
        }
        const duration = field.duration(body, 'duration')
        if (duration === 0) throw new SwitchyardError('bad_request', '"duration" must be longer than zero (leave it out to run until stopped)', { field: 'duration' })
        if (duration !== undefined && duration > MAX_SHADOW_DURATION) throw new SwitchyardError('bad_request', `"duration" must be at most ${MAX_SHADOW_DURATION / 86_400_000} days (leave it out to run until stopped)`, { field: 'duration' })
        return send(res, 200, await controller.startShadow({ service: name, sample, duration, reason: field.text(body, 'reason'), actor: actorOf(req) }))
      }
      const tm = /^\/environments\/([^/]+)\/targets$/.exec(rest)
      if (tm !== null) {
        allow('PUT')
        const color = segment(tm[1], 'color')
        if (!isColor(color)) throw new SwitchyardError('not_found', `unknown color "${color}" (use blue or green)`, { field: 'color' })
        const body = await readJson(req)
        field.only(body, ['targets', 'force', 'reason', 'ifGeneration'])
        const result = await controller.setTargets({
          service: name, color, targets: field.targets(body), force: field.bool(body, 'force'),
          reason: field.text(body, 'reason'), ifGeneration: field.generation(body), actor: actorOf(req),
        })
        return send(res, 200, { generation: result.generation, service: result.service, color: result.color, targets: result.targets })
      }
    }
    throw new SwitchyardError('not_found', `no admin endpoint ${method} ${path}`)
  }

  async function flip (body: Body, req: IncomingMessage, services: string[] | undefined): Promise<unknown> {
    const wait = fleetWait(body)
    const result = await controller.flip({
      services,
      to: field.color(body, 'to'),
      force: field.bool(body, 'force'),
      reason: field.text(body, 'reason'),
      ifGeneration: field.generation(body),
      guard: field.bool(body, 'guard'),
      actor: actorOf(req),
    })
    return { generation: result.generation, changes: result.changes, ...await wait(result.generation) }
  }

  /**
   * `wait: "fleet"` (with `waitTimeout`, default 5s): the answer waits until
   * every replica has applied the change, and says whether they all did.
   * Read before the change, so a bad field refuses it.
   */
  function fleetWait (body: Body): (generation: number) => Promise<{ fleet?: { converged: boolean, lagging: string[] } }> {
    const wait = body.wait
    if (wait !== undefined && wait !== 'fleet') throw new SwitchyardError('bad_request', '"wait" must be "fleet"', { field: 'wait' })
    const timeout = field.duration(body, 'waitTimeout') ?? DEFAULT_WAIT_TIMEOUT
    if (timeout > MAX_WAIT_TIMEOUT) throw new SwitchyardError('bad_request', `"waitTimeout" must be at most ${MAX_WAIT_TIMEOUT / 1000}s`, { field: 'waitTimeout' })
    if (wait === undefined) {
      if (body.waitTimeout !== undefined) throw new SwitchyardError('bad_request', '"waitTimeout" goes with "wait": "fleet"', { field: 'waitTimeout' })
      return async () => await Promise.resolve({})
    }
    return async (generation) => ({ fleet: await controller.waitForFleet(generation, timeout) })
  }

  return http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const e = toSwitchyardError(err)
      if (res.headersSent) {
        res.destroy()
        return
      }
      send(res, e.status, e.toJSON())
    })
  })
}
