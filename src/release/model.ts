// The release object: what a release is asked to do, the durable record of where
// it stands (kept with the routing state), and the strict checks on both.

import { isColor, otherColor, type Color, type Config, type VerifyConfig } from '../config/schema.js'
import { parseDuration, parseOrigin, protocolMismatch } from '../config/values.js'
import { SwitchyardError } from '../errors.js'
import type { ServiceVerdict } from './verdict.js'

export type ReleasePhase = 'deploying' | 'warming' | 'testing' | 'shifting' | 'verifying' | 'draining' | 'done' | 'reverted' | 'aborted' | 'failed'

/** Phases in the order a release goes through them. */
export const RUNNING_PHASES: readonly ReleasePhase[] = ['deploying', 'warming', 'testing', 'shifting', 'verifying', 'draining']
/** How a release ends; `switchyard_releases_total{outcome}` counts these. */
export const FINAL_PHASES = ['done', 'reverted', 'aborted', 'failed'] as const
export type ReleaseOutcome = typeof FINAL_PHASES[number]

export function isRunning (phase: ReleasePhase): boolean {
  return RUNNING_PHASES.includes(phase)
}

export interface ReleaseService {
  targets: string[]
  version: string | null
  /** The live color when the release began, and the one it deploys to. */
  from: Color
  to: Color
}

export interface ReleaseStep {
  /** Percent of ordinary traffic on the new color, 1..99. */
  weight: number
  /** How long the step holds before its verdict, ms. */
  hold: number
}

/** One verdict: every service of the release judged at the same moment. */
export interface ReleaseVerdict {
  at: string
  phase: ReleasePhase
  step: number
  weight: number
  /** The end of a hold or window (false: an early look that found the new color worse). */
  final: boolean
  pass: boolean
  services: Record<string, ServiceVerdict>
}

/** A color's counts over a window, as stored (the old color's baseline for `verifying`). */
export interface StoredSample {
  requests: number
  errors: number
  /** Sparse latency histogram: [bucket, count, bucket, count, ...]. */
  latency: number[]
}

export interface Release {
  id: string
  phase: ReleasePhase
  services: Record<string, ReleaseService>
  steps: ReleaseStep[]
  /** Index into `steps` while shifting; -1 before. */
  step: number
  /** Percent of ordinary traffic on the new color now: 0, a step's weight, or 100 once it is live. */
  weight: number
  verify: VerifyConfig
  /** How long `warming` waits for the gate's health part, ms. */
  timeout: number
  reason: string | null
  actor: string
  /** Chooses which keys go first: the same in every service of the release, another in the next release. */
  seed: number
  startedAt: string
  updatedAt: string
  /** When the phase (or the step, while shifting) began; moved on by the time a pause took. Timers run from it. */
  phaseStartedAt: string
  pausedAt: string | null
  /** Why it reverted, was aborted or failed. */
  outcome: string | null
  verdicts: ReleaseVerdict[]
  /** The old color's last window before the new one took all traffic, per service: what `verifying` compares against. */
  baseline?: Record<string, StoredSample>
  history: Array<{ phase: ReleasePhase, at: string, step?: number, weight?: number }>
}

/** A release as asked for, checked against the config (not yet against the state). */
export interface ReleaseRequest {
  services: Record<string, { targets: string[], version: string | null }>
  steps: ReleaseStep[]
  verify: Partial<VerifyConfig>
  timeout: number
  reason: string | null
  ifGeneration: number | undefined
}

/** Finished releases kept in the state, besides the running ones. */
export const KEEP_FINISHED = 20
/** Verdicts kept on one release (the newest). */
export const KEEP_VERDICTS = 50
export const MAX_STEPS = 20
export const DEFAULT_TIMEOUT = 5 * 60_000
const MAX_DURATION = 7 * 24 * 3600_000

const REQUEST_FIELDS = ['services', 'steps', 'verify', 'timeout', 'reason', 'ifGeneration']
const VERIFY_FIELDS = ['window', 'maxErrorRateIncrease', 'maxLatencyIncrease', 'latencyFloor', 'minRequests']

function refuse (field: string, message: string): never {
  throw new SwitchyardError('bad_request', `${field}: ${message}`, { field })
}

function isObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function durationOf (v: unknown, field: string): number {
  const ms = typeof v === 'string' ? parseDuration(v) : typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined
  if (ms === undefined) refuse(field, `must be a duration such as "30s" (or a number of milliseconds), not ${JSON.stringify(v)}`)
  // A timer cannot wait longer than about 24.8 days, and a release step held for weeks is a typo.
  if (ms > MAX_DURATION) refuse(field, 'must be at most 7 days')
  return ms
}

/**
 * The body of POST /v1/releases, checked field by field: every refusal names
 * its field (`services.users.targets[0]`, `steps[1].weight`), and nothing is
 * changed by a refused body.
 */
export function parseReleaseRequest (body: Record<string, unknown>, config: Config): ReleaseRequest {
  for (const key of Object.keys(body)) if (!REQUEST_FIELDS.includes(key)) refuse(key, `unknown field (allowed: ${REQUEST_FIELDS.join(', ')})`)
  if (!isObject(body.services) || Object.keys(body.services).length === 0) refuse('services', 'must be an object naming at least one service')
  const services: ReleaseRequest['services'] = {}
  for (const [name, raw] of Object.entries(body.services)) {
    const at = `services.${name}`
    // Own names only: `constructor` or `__proto__` would otherwise find Object.prototype's members.
    if (!Object.hasOwn(config.services, name)) refuse(at, `unknown service ${JSON.stringify(name)} (the config has ${Object.keys(config.services).join(', ')})`)
    if (!isObject(raw)) refuse(at, 'must be an object with "targets"')
    for (const key of Object.keys(raw)) if (key !== 'targets' && key !== 'version') refuse(`${at}.${key}`, 'unknown field (allowed: targets, version)')
    if (!Array.isArray(raw.targets) || raw.targets.length === 0) refuse(`${at}.targets`, 'must be a non-empty list of URLs')
    const targets: string[] = []
    raw.targets.forEach((t, i) => {
      const r = parseOrigin(t)
      if ('error' in r) refuse(`${at}.targets[${i}]`, r.error)
      if (targets.includes(r.origin)) refuse(`${at}.targets[${i}]`, `duplicate target ${r.origin}`)
      const wrong = protocolMismatch(config.services[name].protocol, r.origin)
      if (wrong !== undefined) refuse(`${at}.targets[${i}]`, wrong)
      targets.push(r.origin)
    })
    const version = raw.version
    if (version !== undefined && (typeof version !== 'string' || version.length === 0 || version.length > 128)) refuse(`${at}.version`, 'must be a non-empty string of at most 128 characters')
    services[name] = { targets, version: version ?? null }
  }
  const steps: ReleaseStep[] = []
  if (body.steps !== undefined) {
    if (!Array.isArray(body.steps)) refuse('steps', 'must be a list of {weight, hold}')
    if (body.steps.length > MAX_STEPS) refuse('steps', `at most ${MAX_STEPS} steps`)
    body.steps.forEach((raw, i) => {
      const at = `steps[${i}]`
      if (!isObject(raw)) refuse(at, 'must be an object {weight, hold}')
      for (const key of Object.keys(raw)) if (key !== 'weight' && key !== 'hold') refuse(`${at}.${key}`, 'unknown field (allowed: weight, hold)')
      const weight = raw.weight
      if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 1 || weight > 99) refuse(`${at}.weight`, `must be a whole percent from 1 to 99, not ${JSON.stringify(weight)}`)
      if (i > 0 && weight <= steps[i - 1].weight) refuse(`${at}.weight`, `weights must increase: ${weight} follows ${steps[i - 1].weight}`)
      if (raw.hold === undefined) refuse(`${at}.hold`, 'is required (how long the step holds before its verdict, e.g. "30s")')
      const hold = durationOf(raw.hold, `${at}.hold`)
      if (hold < 1_000) refuse(`${at}.hold`, 'must be at least 1s: a step needs time to be judged')
      steps.push({ weight, hold })
    })
  }
  const verify: Partial<VerifyConfig> = {}
  if (body.verify !== undefined) {
    if (!isObject(body.verify)) refuse('verify', `must be an object (${VERIFY_FIELDS.join(', ')})`)
    const v = body.verify
    for (const key of Object.keys(v)) if (!VERIFY_FIELDS.includes(key)) refuse(`verify.${key}`, `unknown field (allowed: ${VERIFY_FIELDS.join(', ')})`)
    if (v.window !== undefined) {
      verify.window = durationOf(v.window, 'verify.window')
      if (verify.window < 1_000) refuse('verify.window', 'must be at least 1s: the new color needs time to be judged')
    }
    if (v.maxErrorRateIncrease !== undefined) verify.maxErrorRateIncrease = fraction(v.maxErrorRateIncrease, 'verify.maxErrorRateIncrease', 1)
    if (v.maxLatencyIncrease !== undefined) verify.maxLatencyIncrease = fraction(v.maxLatencyIncrease, 'verify.maxLatencyIncrease', 10)
    if (v.latencyFloor !== undefined) verify.latencyFloor = durationOf(v.latencyFloor, 'verify.latencyFloor')
    if (v.minRequests !== undefined) {
      if (typeof v.minRequests !== 'number' || !Number.isInteger(v.minRequests) || v.minRequests < 1) refuse('verify.minRequests', 'must be a whole number of at least 1')
      verify.minRequests = v.minRequests
    }
  }
  const timeout = body.timeout === undefined ? DEFAULT_TIMEOUT : durationOf(body.timeout, 'timeout')
  if (timeout < 1_000) refuse('timeout', 'must be at least 1s')
  const reason = body.reason
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > 500)) refuse('reason', 'must be a string of at most 500 characters')
  const ifGeneration = body.ifGeneration
  if (ifGeneration !== undefined && (typeof ifGeneration !== 'number' || !Number.isInteger(ifGeneration) || ifGeneration < 0)) refuse('ifGeneration', 'must be a non-negative integer')
  return { services, steps, verify, timeout, reason: reason ?? null, ifGeneration }
}

function fraction (v: unknown, field: string, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > max) refuse(field, `must be a number from 0 to ${max} (a fraction: 0.2 is 20%)`)
  return v
}

/**
 * The new release's record; `live` gives each service's live color now.
 * Per-service `verify` settings come from the config, the request's override them.
 */
export function newRelease (id: string, req: ReleaseRequest, live: (service: string) => Color, config: Config, actor: string, seed: number, now: string): Release {
  const services: Record<string, ReleaseService> = {}
  for (const [name, s] of Object.entries(req.services)) {
    const from = live(name)
    services[name] = { targets: s.targets, version: s.version, from, to: otherColor(from) }
  }
  // One verify setting for the release: the strictest of its services' configs, unless the request sets it.
  const configs = Object.keys(services).map((n) => config.services[n].verify)
  const verify: VerifyConfig = {
    window: req.verify.window ?? Math.max(...configs.map((v) => v.window)),
    maxErrorRateIncrease: req.verify.maxErrorRateIncrease ?? Math.min(...configs.map((v) => v.maxErrorRateIncrease)),
    maxLatencyIncrease: req.verify.maxLatencyIncrease ?? Math.min(...configs.map((v) => v.maxLatencyIncrease)),
    latencyFloor: req.verify.latencyFloor ?? Math.min(...configs.map((v) => v.latencyFloor)),
    minRequests: req.verify.minRequests ?? Math.max(...configs.map((v) => v.minRequests)),
  }
  return {
    id,
    phase: 'deploying',
    services,
    steps: req.steps,
    step: -1,
    weight: 0,
    verify,
    timeout: req.timeout,
    reason: req.reason,
    actor,
    seed,
    startedAt: now,
    updatedAt: now,
    phaseStartedAt: now,
    pausedAt: null,
    outcome: null,
    verdicts: [],
    history: [{ phase: 'deploying', at: now }],
  }
}

/**
 * The releases to keep: every running one, and the newest finished ones,
 * each with only the verdict that ended it (the others are in its `release`
 * events). The whole state is one etcd value, and etcd refuses a request
 * over 1.5 MiB: twenty finished releases of ten services in ten steps with
 * every verdict came to 1.6 MiB.
 */
export function pruneReleases (list: readonly Release[]): Release[] {
  let finished = 0
  const keep: Release[] = []
  for (let i = list.length - 1; i >= 0; i--) {
    const r = list[i]
    if (isRunning(r.phase)) keep.unshift(r)
    else if (finished++ < KEEP_FINISHED) keep.unshift(slim(r))
  }
  return keep
}

function slim (r: Release): Release {
  if (r.verdicts.length <= 1 && r.baseline === undefined) return r
  const { baseline: _baseline, ...rest } = r
  return { ...rest, verdicts: r.verdicts.slice(-1) }
}

/**
 * Releases read back from a stored state (a file, etcd, an import), checked
 * for what the gateway relies on; `bad` throws naming the field.
 */
export function parseStoredReleases (raw: unknown, bad: (what: string) => never): Release[] {
  if (raw === undefined) return []
  if (!Array.isArray(raw)) bad('releases must be a list')
  const ids = new Set<string>()
  /** Services of the running releases so far, and which release holds each. */
  const held = new Map<string, string>()
  return (raw as unknown[]).map((r, i) => {
    const at = `releases[${i}]`
    if (!isObject(r)) return bad(`${at} must be an object`)
    if (typeof r.id !== 'string' || r.id === '' || ids.has(r.id)) bad(`${at}.id must be a unique non-empty string`)
    ids.add(r.id)
    if (typeof r.phase !== 'string' || !(RUNNING_PHASES.includes(r.phase as ReleasePhase) || (FINAL_PHASES as readonly string[]).includes(r.phase))) bad(`${at}.phase is not a release phase`)
    if (!isObject(r.services) || Object.keys(r.services).length === 0) bad(`${at}.services must be a non-empty object`)
    for (const [name, s] of Object.entries(r.services)) {
      if (!isObject(s) || !isColor(s.from) || !isColor(s.to) || s.from === s.to || !Array.isArray(s.targets) || s.targets.some((u) => 'error' in parseOrigin(u))) bad(`${at}.services.${name} must have targets (URLs) and two different colors from, to`)
    }
    if (!Array.isArray(r.steps) || r.steps.some((s) => !isObject(s) || !isWeight(s.weight) || !isMs(s.hold))) bad(`${at}.steps must be a list of {weight 1..99, hold ms}`)
    for (const key of ['step', 'weight', 'timeout', 'seed'] as const) if (typeof r[key] !== 'number' || !Number.isFinite(r[key])) bad(`${at}.${key} must be a number`)
    // A run reads steps[step] while shifting: any other index would throw on every tick and hold the services forever.
    if (r.phase === 'shifting' && !(Number.isInteger(r.step) && (r.step as number) >= 0 && (r.step as number) < r.steps.length)) bad(`${at}.step must index one of its steps while shifting`)
    if (isRunning(r.phase as ReleasePhase)) {
      for (const name of Object.keys(r.services)) {
        if (held.has(name)) bad(`${at}.services.${name} is held by another running release, ${held.get(name) as string}`)
        held.set(name, r.id)
      }
    }
    if (!isObject(r.verify) || !isMs(r.verify.window) || !isMs(r.verify.minRequests) || typeof r.verify.maxErrorRateIncrease !== 'number' || typeof r.verify.maxLatencyIncrease !== 'number' || !isMs(r.verify.latencyFloor)) bad(`${at}.verify must hold window, maxErrorRateIncrease, maxLatencyIncrease, latencyFloor, minRequests`)
    for (const key of ['startedAt', 'updatedAt', 'phaseStartedAt'] as const) if (typeof r[key] !== 'string' || Number.isNaN(Date.parse(r[key]))) bad(`${at}.${key} must be a time`)
    if (r.pausedAt !== null && (typeof r.pausedAt !== 'string' || Number.isNaN(Date.parse(r.pausedAt)))) bad(`${at}.pausedAt must be a time or null`)
    if (!Array.isArray(r.verdicts) || !Array.isArray(r.history)) bad(`${at}.verdicts and history must be lists`)
    // A run reads the baseline on every look in verifying: a bad one would throw there on every tick.
    if (r.baseline !== undefined && (!isObject(r.baseline) || Object.values(r.baseline).some((b) => !isObject(b) || typeof b.requests !== 'number' || typeof b.errors !== 'number' || !Array.isArray(b.latency) || b.latency.some((x) => typeof x !== 'number')))) bad(`${at}.baseline must map services to {requests, errors, latency: [bucket, count, ...]}`)
    return r as unknown as Release
  })
}

function isWeight (v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 99
}

function isMs (v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0
}

/** The release as the admin API shows it. `current`: the leader's latest look at the running step, when it has one. */
export function describeRelease (r: Release, current?: Record<string, ServiceVerdict>): Record<string, unknown> {
  return {
    id: r.id,
    phase: r.phase,
    services: Object.fromEntries(Object.entries(r.services).map(([name, s]) => [name, {
      ...s,
      weights: { [s.from]: 100 - r.weight, [s.to]: r.weight },
    }])),
    step: r.step,
    steps: r.steps,
    weight: r.weight,
    paused: r.pausedAt !== null,
    pausedAt: r.pausedAt,
    verify: r.verify,
    timeout: r.timeout,
    startedAt: r.startedAt,
    updatedAt: r.updatedAt,
    phaseStartedAt: r.phaseStartedAt,
    reason: r.reason,
    actor: r.actor,
    outcome: r.outcome,
    verdicts: r.verdicts,
    history: r.history,
    ...(current === undefined ? {} : { current }),
  }
}

/** The running release a service belongs to, from the list. */
export function runningReleaseOf (list: readonly Release[] | undefined, service: string): Release | undefined {
  return list?.find((r) => isRunning(r.phase) && r.services[service] !== undefined)
}

/** 409 release_in_progress: a running release holds these services. */
export function releaseInProgress (release: Release, services: readonly string[], what: string): SwitchyardError {
  return new SwitchyardError('release_in_progress', `${what} refused: release ${release.id} (${release.phase}) holds ${services.join(', ')}; pause, promote or abort it first${what.startsWith('flip') ? ', or pass force: true (which aborts it)' : ''}; nothing changed`, { release: release.id, phase: release.phase, services })
}
