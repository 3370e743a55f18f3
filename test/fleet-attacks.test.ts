// Attacks on the fleet (etcd store): concurrent writers on several replicas, a
// slow watch, etcd down or partitioned, wait: "fleet", a bad state in etcd, state
// import into a running fleet, split brain of the guard, and handles left open.

import t, { type Test } from 'tap'
import net, { type AddressInfo } from 'node:net'
import { writeFileSync } from 'node:fs'
import { Etcd3 } from 'etcd3'
import { EtcdStore } from '../src/state/etcd-store.js'
import { importState } from '../src/state/transfer.js'
import { parseConfig } from '../src/config/load.js'
import type { PersistedState } from '../src/state/file-store.js'
import { admin, configFile, eventually, http1, listening, serve, serviceYaml, startBackend, startGateway, type Backend, type TestGateway } from './helpers/index.js'
import { startEtcd, type EtcdServer } from './helpers/etcd.js'

t.setTimeout(Number(process.env.FLEET_TIMEOUT ?? 240_000))

let prefixes = 0
const freshPrefix = (): string => `/sy-attack/${process.pid}-${++prefixes}`

const FAST = 'defaults:\n  health: { interval: 200ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1 }\n'

/** The top of a replica's config: etcd at `endpoint` under `prefix`, replica `id`. */
function top (endpoint: string, prefix: string, id: string, extra = FAST): string {
  return `state: { etcd: { endpoints: [${endpoint}], prefix: ${prefix}, startTimeout: 3s } }\nfleet: { id: ${id}, leaseTtl: 2s }\n${extra}services:\n`
}

async function state (gw: TestGateway): Promise<any> {
  return (await admin(gw.adminUrl, 'GET', '/v1/state')).json
}

/** Ready, and every color of every service has a healthy target (so a flip's gate passes: /readyz covers live colors only). */
async function ready (gw: TestGateway): Promise<void> {
  await eventually(async () => (await admin(gw.adminUrl, 'GET', '/readyz')).status === 200, { timeout: 5000 })
  await eventually(async () => Object.values((await state(gw)).services as Record<string, { environments: Record<string, { healthy: number }> }>)
    .every((svc) => Object.values(svc.environments).every((env) => env.healthy > 0)), { timeout: 5000 })
}

/** An etcd3 client of the test's own, closed at teardown. */
function client (t: Test, endpoint: string): Etcd3 {
  const c = new Etcd3({ hosts: endpoint })
  t.teardown(() => c.close())
  return c
}

async function readState (c: Etcd3, prefix: string): Promise<PersistedState> {
  return JSON.parse((await c.get(`${prefix}/state`).string()) as string) as PersistedState
}

/**
 * A TCP proxy in front of etcd, to partition one replica: `blackhole` drops
 * everything both ways (a silent network), `dropReplies` lets requests reach
 * etcd but drops its answers (a call that lands but times out). heal() cuts
 * every connection (their HTTP/2 framing is broken) and passes again.
 */
class Partition {
  mode: 'pass' | 'blackhole' | 'dropReplies' = 'pass'
  readonly sockets = new Set<net.Socket>()
  server!: net.Server
  endpoint = ''

  static async start (t: Test, target: string): Promise<Partition> {
    const p = new Partition()
    const port = Number(new URL(target).port)
    p.server = net.createServer((c) => {
      const u = net.connect(port, '127.0.0.1')
      p.sockets.add(c)
      p.sockets.add(u)
      c.on('data', (d) => { if (p.mode !== 'blackhole') u.write(d) })
      u.on('data', (d) => { if (p.mode === 'pass') c.write(d) })
      const end = (): void => { c.destroy(); u.destroy(); p.sockets.delete(c); p.sockets.delete(u) }
      c.on('error', end).on('close', end)
      u.on('error', end).on('close', end)
    })
    await new Promise<void>((resolve) => p.server.listen(0, '127.0.0.1', resolve))
    p.endpoint = `http://127.0.0.1:${(p.server.address() as AddressInfo).port}`
    t.teardown(() => {
      p.server.close()
      p.heal()
    })
    return p
  }

  heal (): void {
    for (const s of this.sockets) s.destroy()
    this.sockets.clear()
    this.mode = 'pass'
  }
}

/** Backends for one service: blue and green, each answering its name. */
async function colors (t: Test, name = 'x'): Promise<{ b: Backend, g: Backend }> {
  return { b: await startBackend(t, `${name}-blue`), g: await startBackend(t, `${name}-green`) }
}

/** A real etcd, a fresh prefix, and the YAML of one service `api` on a blue and a green backend: where most attacks start. */
async function apiFleet (t: Test): Promise<{ etcd: EtcdServer, prefix: string, svc: string, b: Backend, g: Backend }> {
  const etcd = await startEtcd(t)
  const { b, g } = await colors(t)
  return { etcd, prefix: freshPrefix(), svc: serviceYaml('api', '/api', [b], [g]), b, g }
}

t.test('lost updates: concurrent flips, rollbacks and targets on 3 replicas converge on etcd, one event per generation, every 200 a real commit', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = freshPrefix()
  const { b, g } = await colors(t)
  const g2 = await startBackend(t, 'x-green2')
  const svc = serviceYaml('api', '/api', [b], [g]) + serviceYaml('web', '/web', [b], [g])
  // Probes that forgive a slow answer or four: with FAST's (one 200 ms timeout marks a target down) a loaded
  // machine had the guard auto-revert flips in the middle of the storm, commits this test does not make.
  const steady = 'defaults:\n  health: { interval: 250ms, timeout: 250ms, healthyThreshold: 1, unhealthyThreshold: 5 }\n'
  const gws = [
    await startGateway(t, top(etcd.endpoint, prefix, 'a', steady) + svc),
    await startGateway(t, top(etcd.endpoint, prefix, 'b', steady) + svc),
    await startGateway(t, top(etcd.endpoint, prefix, 'c', steady) + svc),
  ]
  for (const gw of gws) await ready(gw)
  const answers: Array<{ kind: string, status: number, json: any }> = []
  const ops: Array<Promise<void>> = []
  for (let i = 0; i < 36; i++) {
    const gw = gws[i % 3]
    const kind = ['flip', 'flipTo', 'rollback', 'targets', 'flipIf', 'flipWeb'][i % 6]
    const op = async (): Promise<void> => {
      let r
      if (kind === 'flip') r = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['api'], force: true })
      else if (kind === 'flipTo') r = await admin(gw.adminUrl, 'POST', '/v1/services/api/flip', { to: i % 4 === 0 ? 'green' : 'blue', force: true })
      else if (kind === 'rollback') r = await admin(gw.adminUrl, 'POST', '/v1/rollback', { services: ['api'] })
      else if (kind === 'targets') r = await admin(gw.adminUrl, 'PUT', '/v1/services/web/environments/green/targets', { targets: i % 4 === 0 ? [g.url] : [g.url, g2.url], force: true })
      else if (kind === 'flipIf') {
        const gen = (await state(gw)).generation
        r = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['api'], force: true, ifGeneration: gen })
      } else r = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['web'], force: true })
      answers.push({ kind, status: r.status, json: r.json })
    }
    ops.push(op())
  }
  await Promise.all(ops)
  const c = client(t, etcd.endpoint)
  // Read again on each try: a commit after the storm (an auto-revert, say) moves what the replicas converge on.
  let stored = await readState(c, prefix)
  await eventually(async () => {
    stored = await readState(c, prefix)
    for (const gw of gws) if ((await state(gw)).generation !== stored.generation) throw new Error(`etcd has generation ${stored.generation}; ${gw.gateway.config.fleet.id} has ${(await state(gw)).generation as number}`)
    return true
  }, { timeout: 10_000 })
  for (const gw of gws) {
    const s = await state(gw)
    t.equal(s.services.api.live, stored.services.api.live, `api on ${gw.gateway.config.fleet.id} as in etcd`)
    t.equal(s.services.web.live, stored.services.web.live, `web on ${gw.gateway.config.fleet.id} as in etcd`)
    t.equal(s.fleet.converged, true)
  }
  for (const a of answers) t.ok([200, 409, 412].includes(a.status), `${a.kind}: ${a.status} ${a.status === 200 ? '' : JSON.stringify(a.json)}`)
  // Every replica's event log: one change event per generation 1..N, in id order.
  for (const gw of gws) {
    const events = (await admin(gw.adminUrl, 'GET', '/v1/events?type=flip,rollback,targets,auto_revert,reload,import')).json.events as any[]
    t.same(events.map((e) => e.generation), Array.from({ length: stored.generation }, (_, i) => i + 1), `${gw.gateway.config.fleet.id}: one change event per generation, none reused`)
  }
  const events = (await admin(gws[0].adminUrl, 'GET', '/v1/events?type=flip,rollback,targets')).json.events as any[]
  const changing = answers.filter((a) => a.status === 200 && Array.isArray(a.json.changes) && a.json.changes.length > 0)
  t.ok(changing.length >= 3, `${changing.length} answers changed colors`)
  const gens = changing.map((a) => a.json.generation)
  t.equal(new Set(gens).size, gens.length, 'no two changing answers share a generation')
  for (const a of changing) {
    const ev = events.find((e) => e.generation === a.json.generation)
    t.ok(ev !== undefined, `answer generation ${a.json.generation as number} was committed`)
    t.same(ev?.changes, a.json.changes, 'with the changes the answer reports')
  }
})

t.test('a follower\'s flip that the leader learns from a lost race (not the watch) is still guarded by the leader', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = freshPrefix()
  const { b, g } = await colors(t)
  const other = await colors(t, 'o')
  const svc = serviceYaml('api', '/api', [b], [g], '    guard: { window: 30s, maxErrorRate: 0.5, minRequests: 1000 }\n') + serviceYaml('web', '/web', [other.b], [other.g])
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + svc)
  await eventually(() => a.gateway.controller.fleet.isLeader)
  const bgw = await startGateway(t, top(etcd.endpoint, prefix, 'b') + svc)
  await ready(a)
  await ready(bgw)
  t.equal(bgw.gateway.controller.fleet.isLeader, false)
  // The leader's watch lags 500 ms (a slow network): its next write races the follower's flip.
  const store = (a.gateway as any).store
  const take = store.takeWatch.bind(store)
  store.takeWatch = (res: unknown) => { setTimeout(() => take(res), 500) }
  t.equal((await admin(bgw.adminUrl, 'POST', '/v1/flip', { services: ['api'] })).status, 200)
  const put = await admin(a.adminUrl, 'PUT', '/v1/services/web/environments/green/targets', { targets: [other.b.url] })
  t.equal(put.status, 200, 'the leader\'s own write succeeds after the lost race')
  await eventually(async () => (await state(a)).services.api.live === 'green')
  t.not((await state(a)).services.api.guard, null, 'the leader guards the follower\'s flip')
})

t.test('etcd stopped: traffic flows, /readyz 200, /v1/state says so, three concurrent writes each get 503 within 3 s; after restart they work and replicas catch up', async (t) => {
  const { etcd, prefix, svc } = await apiFleet(t)
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + svc)
  const bgw = await startGateway(t, top(etcd.endpoint, prefix, 'b') + svc)
  await ready(a)
  await ready(bgw)
  await etcd.stop()
  await eventually(async () => (await state(a)).store.connected === false, { timeout: 4000 })
  t.equal((await http1(`${a.url}/api/x`)).json.backend, 'x-blue', 'traffic flows')
  t.equal((await admin(a.adminUrl, 'GET', '/readyz')).status, 200)
  const started = Date.now()
  const writes = await Promise.all([0, 1, 2].map(async () => {
    const r = await admin(a.adminUrl, 'POST', '/v1/flip', { services: ['api'] })
    return { status: r.status, error: r.json?.error, ms: Date.now() - started }
  }))
  for (const w of writes) {
    t.equal(w.status, 503)
    t.equal(w.error, 'store_unavailable')
    t.ok(w.ms < 3000, `answered in ${w.ms} ms`)
  }
  t.equal((await state(a)).generation, 0, 'nothing changed')
  await etcd.start()
  await eventually(async () => (await state(a)).store.connected === true, { timeout: 5000 })
  await eventually(async () => (await admin(a.adminUrl, 'POST', '/v1/flip', { services: ['api'] })).status === 200, { timeout: 5000 })
  await eventually(async () => (await state(bgw)).generation === 1, { timeout: 5000 })
  t.equal((await state(bgw)).services.api.live, 'green')
})

t.test('etcd partitioned (silent): writes queued behind one that times out each answer 503 within 3 s', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = freshPrefix()
  const part = await Partition.start(t, etcd.endpoint)
  const { b, g } = await colors(t)
  const a = await startGateway(t, top(part.endpoint, prefix, 'a') + serviceYaml('api', '/api', [b], [g]))
  await ready(a)
  part.mode = 'blackhole'
  const started = Date.now()
  const writes = await Promise.all([0, 1, 2].map(async () => {
    const r = await admin(a.adminUrl, 'POST', '/v1/flip', { services: ['api'] })
    return { status: r.status, ms: Date.now() - started }
  }))
  t.equal((await http1(`${a.url}/api/x`)).json.backend, 'x-blue', 'traffic flows during the partition')
  t.equal((await admin(a.adminUrl, 'GET', '/readyz')).status, 200)
  for (const w of writes) {
    t.equal(w.status, 503)
    t.ok(w.ms < 3000, `answered in ${w.ms} ms`)
  }
})

t.test('a flip whose etcd answer was lost (it landed) is applied by its replica and the others once etcd is reachable again', async (t) => {
  const { etcd, prefix, svc } = await apiFleet(t)
  const part = await Partition.start(t, etcd.endpoint)
  const a = await startGateway(t, top(part.endpoint, prefix, 'a') + svc)
  const bgw = await startGateway(t, top(etcd.endpoint, prefix, 'b') + svc)
  await ready(a)
  await ready(bgw)
  part.mode = 'dropReplies'
  const started = Date.now()
  const r = await admin(a.adminUrl, 'POST', '/v1/flip', { services: ['api'] })
  t.equal(r.status, 503)
  t.ok(Date.now() - started < 3500, 'within the call deadline')
  t.match(r.json.message, /if it was applied after all/)
  const c = client(t, etcd.endpoint)
  t.equal((await readState(c, prefix)).generation, 1, 'it did land in etcd')
  await eventually(async () => (await state(bgw)).services.api.live === 'green', { timeout: 3000 })
  part.heal()
  await eventually(async () => (await state(a)).generation === 1, { timeout: 8000 })
  t.equal((await state(a)).services.api.live, 'green')
  t.equal((await http1(`${a.url}/api/x`)).json.backend, 'x-green')
  const events = (await admin(a.adminUrl, 'GET', '/v1/events?type=flip')).json.events
  t.equal(events.length, 1, 'its event once')
})

t.test('wait: "fleet" with a replica that stopped applying (record alive): times out naming it; bad wait fields are 400 naming the field and change nothing', async (t) => {
  const { etcd, prefix, svc } = await apiFleet(t)
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + svc)
  await ready(a)
  const c = client(t, etcd.endpoint)
  const lease = c.lease(5)
  t.teardown(async () => await lease.revoke().catch(() => {}))
  await lease.put(`${prefix}/replicas/ghost`).value(JSON.stringify({ id: 'ghost', admin: null, generation: 0, revision: 0, heartbeat: new Date().toISOString(), counts: {} }))
  await eventually(async () => (await state(a)).fleet.replicas.length === 2)
  const bad: Array<[Record<string, unknown>, string]> = [
    [{ wait: 'all' }, 'wait'], [{ wait: 5 }, 'wait'], [{ wait: null }, 'wait'],
    [{ wait: 'fleet', waitTimeout: '99h' }, 'waitTimeout'], [{ waitTimeout: '1s' }, 'waitTimeout'],
    [{ wait: 'fleet', waitTimeout: 'soon' }, 'waitTimeout'], [{ wait: 'fleet', waitTimeout: -1 }, 'waitTimeout'],
  ]
  for (const [body, name] of bad) {
    for (const path of ['/v1/flip', '/v1/rollback', '/v1/services/api/flip']) {
      const r = await admin(a.adminUrl, 'POST', path, body)
      t.equal(r.status, 400, `${path} ${JSON.stringify(body)}`)
      t.equal(r.json.field, name)
    }
  }
  t.equal((await state(a)).generation, 0, 'nothing changed')
  const started = Date.now()
  const r = await admin(a.adminUrl, 'POST', '/v1/flip', { wait: 'fleet', waitTimeout: '1s' })
  const ms = Date.now() - started
  t.equal(r.status, 200)
  t.same(r.json.fleet, { converged: false, lagging: ['ghost'] })
  t.ok(ms >= 950 && ms < 2500, `waited the timeout (${ms} ms)`)
  t.equal(r.json.generation, 1)
})

t.test('a state in etcd that is not JSON, or of a bad shape: running replicas keep serving on the last state and log it; a starting replica exits naming the key', async (t) => {
  const { etcd, prefix, svc } = await apiFleet(t)
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + svc)
  await ready(a)
  const child = serve(t, ['serve', '--config', configFile(t, top(etcd.endpoint, prefix, 'kid') + svc)])
  const kid = await listening(child)
  t.equal((await admin(a.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  await eventually(async () => (await http1(`http://127.0.0.1:${kid.port}/api/x`)).json.backend === 'x-green', { timeout: 4000 })
  const c = client(t, etcd.endpoint)
  await c.put(`${prefix}/state`).value('{not json')
  await eventually(() => child.lines.some((l) => l.level === 'error' && /cannot read/.test(l.msg as string)), { timeout: 3000 })
  await c.put(`${prefix}/state`).value(JSON.stringify({ version: 1, generation: 'x', services: {} }))
  await eventually(() => child.lines.filter((l) => l.level === 'error' && /cannot read/.test(l.msg as string)).length >= 2, { timeout: 3000 })
  t.equal((await http1(`${a.url}/api/x`)).json.backend, 'x-green', 'a serves on the last state')
  t.equal((await http1(`http://127.0.0.1:${kid.port}/api/x`)).json.backend, 'x-green', 'the child too')
  t.equal((await state(a)).generation, 1)
  // A starting replica refuses, naming the key.
  await t.rejects(startGateway(t, top(etcd.endpoint, prefix, 'late') + svc), /etcd key \/sy-attack\/.*\/state/)
  t.equal(child.lines.some((l) => l.level === 'fatal'), false)
})

t.test('state import repairs an unreadable state in etcd: every running replica applies it', async (t) => {
  const { etcd, prefix, svc } = await apiFleet(t)
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + svc)
  await ready(a)
  t.equal((await admin(a.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const c = client(t, etcd.endpoint)
  await c.put(`${prefix}/state`).value('{not json')
  const config = parseConfig(top(etcd.endpoint, prefix, 'cli') + svc, { env: {} })
  const store = new EtcdStore(config.state.etcd!, { replicaId: 'cli' })
  t.teardown(async () => await store.close())
  const res = await importState(store, config, { generation: 5, services: { api: { live: 'blue', previous: 'green', targets: {} } }, lastChange: ['api'] }, { force: false, reason: 'repair', actor: 'test' })
  t.equal(res.generation, 5)
  await eventually(async () => (await http1(`${a.url}/api/x`)).json.backend === 'x-blue', { timeout: 3000 })
  t.equal((await state(a)).generation, 5)
})

t.test('a write on a replica while etcd holds an unreadable state answers a coded error naming the key, not an internal one', async (t) => {
  const { etcd, prefix, svc } = await apiFleet(t)
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + svc)
  await ready(a)
  const c = client(t, etcd.endpoint)
  await c.put(`${prefix}/state`).value('{not json')
  const r = await admin(a.adminUrl, 'POST', '/v1/flip', { force: true })
  t.equal(r.json.error, 'state_write_failed', `a coded error, not an internal one: ${JSON.stringify(r.json)}`)
  t.match(r.json.message, /^etcd key \S+\/state at \S+: not valid JSON .*state import/)
})

t.test('state import into a running fleet: a lower generation lands one above the current, every replica applies it', async (t) => {
  const { etcd, prefix, svc } = await apiFleet(t)
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + svc)
  const bgw = await startGateway(t, top(etcd.endpoint, prefix, 'b') + svc)
  await ready(a)
  for (let i = 0; i < 3; i++) {
    const gw = i % 2 === 0 ? a : bgw
    await eventually(async () => (await state(gw)).generation === i)
    const r = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: i % 2 === 0 ? 'green' : 'blue', force: true })
    t.equal(r.status, 200, JSON.stringify(r.json))
  }
  await eventually(async () => (await state(bgw)).generation === 3)
  t.equal((await state(a)).services.api.live, 'green')
  const config = parseConfig(top(etcd.endpoint, prefix, 'cli') + svc, { env: {} })
  const store = new EtcdStore(config.state.etcd!, { replicaId: 'cli' })
  t.teardown(async () => await store.close())
  const res = await importState(store, config, { generation: 1, services: { api: { live: 'blue', previous: 'green', targets: {} } }, lastChange: ['api'] }, { force: false, reason: 'move', actor: 'test' })
  t.same(res, { before: 3, generation: 4 })
  for (const gw of [a, bgw]) {
    await eventually(async () => (await state(gw)).generation === 4, { timeout: 3000 })
    t.equal((await state(gw)).services.api.live, 'blue')
    t.equal((await http1(`${gw.url}/api/x`)).json.backend, 'x-blue')
    const ev = (await admin(gw.adminUrl, 'GET', '/v1/events?type=import')).json.events
    t.match(ev, [{ type: 'import', generation: 4, reason: 'move' }])
  }
  t.equal((await admin(a.adminUrl, 'POST', '/v1/flip', { ifGeneration: 4 })).status, 200, 'writes go on from the imported generation')
})

t.test('split brain: while etcd restarts and while the leader is partitioned past its lease, never two leaders at once; one leads after', async (t) => {
  const { etcd, prefix, svc } = await apiFleet(t)
  const part = await Partition.start(t, etcd.endpoint)
  const a = await startGateway(t, top(part.endpoint, prefix, 'a') + svc)
  await eventually(() => a.gateway.controller.fleet.isLeader)
  const bgw = await startGateway(t, top(etcd.endpoint, prefix, 'b') + svc)
  const cgw = await startGateway(t, top(etcd.endpoint, prefix, 'c') + svc)
  const gws = [a, bgw, cgw]
  let worst = 0
  const sampler = setInterval(() => {
    worst = Math.max(worst, gws.filter((gw) => gw.gateway.controller.fleet.isLeader).length)
  }, 10)
  t.teardown(() => clearInterval(sampler))
  part.mode = 'blackhole'
  await eventually(() => bgw.gateway.controller.fleet.isLeader || cgw.gateway.controller.fleet.isLeader, { timeout: 6000 })
  t.equal(a.gateway.controller.fleet.isLeader, false, 'the partitioned leader stepped down')
  part.heal()
  await etcd.stop()
  await new Promise((resolve) => setTimeout(resolve, 2500))
  await etcd.start()
  await eventually(() => gws.filter((gw) => gw.gateway.controller.fleet.isLeader).length === 1, { timeout: 8000 })
  clearInterval(sampler)
  t.equal(worst, 1, 'at most one leader at any sample')
})

t.test('a replica that cannot apply a change (its config lacks the color\'s targets) stays on its generation, shows lagging, and a reload with the fixed config heals it', async (t) => {
  const { etcd, prefix, svc, b, g } = await apiFleet(t)
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + svc)
  const blueOnly = `  api:\n    match: { pathPrefix: /api }\n    blue: { targets: [${b.url}] }\n`
  const bgw = await startGateway(t, top(etcd.endpoint, prefix, 'b') + blueOnly)
  await ready(a)
  await eventually(async () => (await state(a)).fleet.replicas.length === 2)
  const waited = await admin(a.adminUrl, 'POST', '/v1/flip', { force: true, wait: 'fleet', waitTimeout: '500ms' })
  t.equal(waited.status, 200)
  t.same(waited.json.fleet, { converged: false, lagging: ['b'] }, 'b shows lagging')
  t.equal((await http1(`${bgw.url}/api/x`)).json.backend, 'x-blue', 'b keeps serving')
  t.equal((await state(bgw)).generation, 0, 'b stays on its generation')
  const refused = await admin(bgw.adminUrl, 'PUT', '/v1/services/api/environments/green/targets', { targets: [g.url] })
  t.equal(refused.status, 412, 'b refuses changes at once')
  t.match(refused.json.message, /could not apply generation 1 .* reload a config it fits/)
  writeFileSync(bgw.configFile, 'log: { access: false }\n' + top(etcd.endpoint, prefix, 'b') + serviceYaml('api', '/api', [b], [g]))
  const reload = await admin(bgw.adminUrl, 'POST', '/v1/reload', {})
  t.equal(reload.status, 200, JSON.stringify(reload.json))
  await eventually(async () => (await state(bgw)).services.api.live === 'green', { timeout: 3000 })
  t.match(reload.json, { changed: true, generation: 2 }, 'one commit: the reload on top of the change b took in')
  t.equal((await state(a)).generation, 2, 'and the fleet has it')
})

t.test('serve on etcd exits promptly on SIGTERM: no watcher, lease or timer keeps it alive', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = freshPrefix()
  const { b, g } = await colors(t)
  const child = serve(t, ['serve', '--config', configFile(t, top(etcd.endpoint, prefix, 'kid') + serviceYaml('api', '/api', [b], [g]))])
  await listening(child)
  const c = client(t, etcd.endpoint)
  await eventually(async () => (await c.get(`${prefix}/replicas/kid`).string()) !== null, { timeout: 3000 })
  const started = Date.now()
  child.kill('SIGTERM')
  const code = await Promise.race([child.exit, new Promise((resolve) => setTimeout(() => resolve('still running'), 6000))])
  t.equal(code, 0, `exited in ${Date.now() - started} ms`)
  t.equal(await c.get(`${prefix}/replicas/kid`).string(), null, 'its record left with it')
})

t.test('gateway.stop() on etcd leaves no etcd handles open in this process', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = freshPrefix()
  const { b, g } = await colors(t)
  const count = (): number => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'Timeout').length
  const before = count()
  const a = await startGateway(t, top(etcd.endpoint, prefix, 'a') + serviceYaml('api', '/api', [b], [g]))
  await ready(a)
  await admin(a.adminUrl, 'POST', '/v1/flip', {})
  await a.stop()
  await eventually(() => count() <= before, { timeout: 3000 }).catch(() => {})
  t.ok(count() <= before, `handles before ${before}, after ${count()}: ${JSON.stringify(process.getActiveResourcesInfo())}`)
})

t.test('serve on etcd still exits on SIGTERM after a partition healed', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = freshPrefix()
  const part = await Partition.start(t, etcd.endpoint)
  const { b, g } = await colors(t)
  const child = serve(t, ['serve', '--config', configFile(t, top(part.endpoint, prefix, 'kid') + serviceYaml('api', '/api', [b], [g]))])
  await listening(child)
  const c = client(t, etcd.endpoint)
  await eventually(async () => (await c.get(`${prefix}/replicas/kid`).string()) !== null, { timeout: 3000 })
  part.mode = 'dropReplies'
  await new Promise((resolve) => setTimeout(resolve, 3500))
  part.heal()
  await eventually(async () => (await c.get(`${prefix}/replicas/kid`).string()) !== null, { timeout: 6000 })
  child.kill('SIGTERM')
  const code = await Promise.race([child.exit, new Promise((resolve) => setTimeout(() => resolve('still running'), 8000))])
  t.equal(code, 0, 'it exited')
})
