// Fleet test helpers: gateways sharing one etcd prefix (in this process, or as
// `node dist/cli.js serve` children a test can SIGKILL), and the reads a fleet test makes of each.

import { randomBytes } from 'node:crypto'
import { admin, configFile, http1, listening, serve, startGateway, type Proc, type TestGateway } from './index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/** A fresh etcd prefix, so tests on one etcd never see each other's keys. */
export function freshPrefix (): string {
  return `/t/${randomBytes(6).toString('hex')}`
}

export interface ReplicaOptions {
  /** The lease of registration and leadership (default 2s, the least the config takes). */
  leaseTtl?: string
  /** How long a starting replica tries to reach etcd (default 3s). */
  startTimeout?: string
}

/** The `state` and `fleet` sections of one replica of the fleet at `endpoint` + `prefix`, then `services`. */
export function fleetYaml (endpoint: string, prefix: string, id: string, services: string, opts: ReplicaOptions = {}): string {
  return `state:
  etcd: { endpoints: [${endpoint}], prefix: ${prefix}, startTimeout: ${opts.startTimeout ?? '3s'} }
fleet: { id: ${id}, leaseTtl: ${opts.leaseTtl ?? '2s'} }
services:
${services}`
}

/** What every replica offers a test, wherever it runs. */
export interface Replica {
  id: string
  url: string
  adminUrl: string
}

export interface InProcessReplica extends Replica {
  gw: TestGateway
  yaml: string
}

/** Starts a replica in this process; `dir` reuses a stopped replica's folder (a restart). */
export async function startReplica (t: Teardown, endpoint: string, prefix: string, id: string, services: string, opts: ReplicaOptions & { dir?: string } = {}): Promise<InProcessReplica> {
  const yaml = fleetYaml(endpoint, prefix, id, services, opts)
  const gw = await startGateway(t, yaml, { dir: opts.dir })
  return { id, url: gw.url, adminUrl: gw.adminUrl, gw, yaml }
}

export interface ChildReplica extends Replica {
  proc: Proc
}

/** Starts a replica as `node dist/cli.js serve` (build first); killed at teardown. */
export async function startChildReplica (t: Teardown, endpoint: string, prefix: string, id: string, services: string, opts: ReplicaOptions = {}): Promise<ChildReplica> {
  const proc = serve(t, ['serve', '--config', configFile(t, fleetYaml(endpoint, prefix, id, services, opts))])
  const { port, admin: adminPort } = await listening(proc)
  return { id, url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}`, proc }
}

/** GET /v1/state of a replica (its JSON). */
export async function stateOf (r: Replica): Promise<any> {
  const res = await admin(r.adminUrl, 'GET', '/v1/state')
  if (res.status !== 200) throw new Error(`${r.id}: GET /v1/state answered ${res.status}: ${res.text}`)
  return res.json
}

/** GET /v1/events of a replica, optionally of some types only. */
export async function eventsOf (r: Replica, type?: string): Promise<any[]> {
  const res = await admin(r.adminUrl, 'GET', `/v1/events${type === undefined ? '' : `?type=${type}`}`)
  if (res.status !== 200) throw new Error(`${r.id}: GET /v1/events answered ${res.status}: ${res.text}`)
  return res.json.events
}

/** The backend that answered a GET through a replica's public listener (the demo backends name themselves). */
export async function servedBy (r: Replica, path = '/'): Promise<string | undefined> {
  const res = await http1(r.url + path)
  return res.json?.backend
}

/** A sample of a metric without labels from a replica's /metrics; undefined when it is not there. */
export async function metricOf (r: Replica, name: string): Promise<number | undefined> {
  const text = (await admin(r.adminUrl, 'GET', '/metrics')).text
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
  return m === null ? undefined : Number(m[1])
}

/**
 * True when every replica's /v1/state shows `n` registered replicas, a
 * leader, convergence and the same generation; else throws what they show
 * (for `eventually`, whose last error is the failure message).
 */
export async function fleetFormed (replicas: Replica[], n = replicas.length): Promise<true> {
  const states = await Promise.all(replicas.map(stateOf))
  if (states.every((s) => s.fleet?.replicas?.length === n && s.fleet.leader !== null && s.fleet.converged === true && s.generation === states[0].generation)) return true
  throw new Error(`the fleet has not formed: ${JSON.stringify(states.map((s, i) => ({ id: replicas[i].id, generation: s.generation, store: s.store, fleet: s.fleet })))}`)
}

export interface TrafficResult {
  ok: number
  failed: number
  /** The first few failures, for the message of a failing assertion. */
  failures: string[]
}

/**
 * Keeps `loops` sequential keep-alive GET loops running against each replica
 * until stopped; `ok` counts answers with status `expect` (default: any
 * status below 500 from a backend), everything else fails.
 */
export function startTraffic (replicas: Replica[], loops: number, expect: (status: number, json: any) => boolean = (s, j) => s === 200 && typeof j?.backend === 'string'): { stop: () => Promise<TrafficResult>, counts: () => TrafficResult } {
  const result: TrafficResult = { ok: 0, failed: 0, failures: [] }
  let running = true
  const loop = async (r: Replica): Promise<void> => {
    for (let i = 0; running; i++) {
      try {
        const res = await http1(`${r.url}/traffic/${i}`)
        if (expect(res.status, res.json)) result.ok++
        else {
          result.failed++
          if (result.failures.length < 5) result.failures.push(`${r.id}: ${res.status} ${res.text.slice(0, 200)}`)
        }
      } catch (err) {
        result.failed++
        if (result.failures.length < 5) result.failures.push(`${r.id}: ${(err as Error).message}`)
      }
    }
  }
  const all = replicas.flatMap((r) => Array.from({ length: loops }, async () => await loop(r)))
  return {
    counts: () => result,
    stop: async () => {
      running = false
      await Promise.all(all)
      return result
    },
  }
}

/** Resolves after `ms`: only to let a bounded load run for its length, never to wait for a condition. */
export async function runFor (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}
