// A fleet: three gateways on one real etcd flip as one. Changes reach every
// replica, writes race safely, the guard reverts once per fleet, and etcd going away costs no request.

import t from 'tap'
import { admin, type Backend, closedPort, configFile, eventually, http1, serve, serviceYaml, startBackend } from './helpers/index.js'
import { startEtcd, type EtcdServer } from './helpers/etcd.js'
import {
  eventsOf, fleetFormed, freshPrefix, metricOf, runFor, servedBy, startChildReplica, startReplica, startTraffic, stateOf,
  type InProcessReplica, type Replica,
} from './helpers/fleet.js'

/** Each scenario is bounded well below this. */
const SCENARIO_MS = 30_000
/** The guard of the bad-flip scenarios: a 10 s window, judged on 20 requests. */
const GUARD = '    guard: { window: 10s, minRequests: 20, maxErrorRate: 0.05 }\n    passive: false\n'

interface Teardown { teardown: (fn: () => unknown) => void }

interface Fleet {
  etcd: EtcdServer
  prefix: string
  blue: Backend
  green: Backend
  services: string
  replicas: InProcessReplica[]
}

/** etcd, a blue and a green demo backend, and `ids.length` gateways in this process on one prefix, registered with each other. */
async function startFleet (t: Teardown, ids = ['a', 'b', 'c'], extra = ''): Promise<Fleet> {
  const etcd = await startEtcd(t)
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const prefix = freshPrefix()
  const services = serviceYaml('svc', '/', [blue], [green], extra)
  const replicas: InProcessReplica[] = []
  for (const id of ids) replicas.push(await startReplica(t, etcd.endpoint, prefix, id, services))
  await eventually(async () => await fleetFormed(replicas), { timeout: 8000 })
  return { etcd, prefix, blue, green, services, replicas }
}

/** Resolves with the ms from `since` until `r` serves from `color`'s backend. */
async function whenServes (r: Replica, color: string, since: number, timeout = 5000): Promise<number> {
  await eventually(async () => await servedBy(r, '/probe') === color, { timeout, interval: 1 })
  return performance.now() - since
}

/**
 * Waits until every replica has the same generation, on `color` (and with
 * `guardEnded`, no guard shown anywhere: a reverted flip's guard is over); the states.
 */
async function settled (replicas: Replica[], color: string, { timeout = 8000, guardEnded = false } = {}): Promise<any[]> {
  return await eventually(async () => {
    const states = await Promise.all(replicas.map(stateOf))
    const same = states.every((s) => s.generation === states[0].generation && s.services.svc.live === color && (!guardEnded || s.services.svc.guard === null))
    if (same) return states
    throw new Error(`not settled on ${color}: ${JSON.stringify(states.map((s, i) => ({ id: replicas[i].id, generation: s.generation, live: s.services.svc.live, guard: s.services.svc.guard })))}`)
  }, { timeout })
}

/** The id of the last flip event a replica has seen. */
async function lastFlipId (r: Replica): Promise<number> {
  const flips = await eventsOf(r, 'flip')
  if (flips.length === 0) throw new Error(`${r.id} has no flip event`)
  return flips.at(-1).id
}

/** The new color fails every request; its health checks still pass, so only the guard's error rate can see it. */
function breakTraffic (b: Backend): void {
  b.handler = (req, res) => {
    if (req.url === '/healthz') res.writeHead(200).end('ok')
    else res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ backend: b.name, broken: true }))
  }
}

t.test('three gateways on one etcd: a flip on A reaches B and C', { timeout: SCENARIO_MS }, async (t) => {
  const { replicas } = await startFleet(t)
  const [a] = replicas
  for (const r of replicas) t.equal(await servedBy(r), 'blue', `${r.id} serves blue before the flip`)

  const flip = await admin(a.adminUrl, 'POST', '/v1/flip', {})
  const answered = performance.now()
  t.equal(flip.status, 200, flip.text)
  const times = await Promise.all(replicas.map(async (r) => await whenServes(r, 'green', answered)))
  t.comment(`from A's 200 until each serves green: ${replicas.map((r, i) => `${r.id} ${times[i].toFixed(1)} ms`).join(', ')}; all three ${Math.max(...times).toFixed(1)} ms`)
  for (const r of replicas) t.equal(await servedBy(r), 'green', `${r.id} serves green`)

  const states = await eventually(async () => {
    const s = await Promise.all(replicas.map(stateOf))
    return s.every((x) => x.fleet.converged === true) ? s : false
  })
  for (const [i, s] of states.entries()) {
    const id = replicas[i].id
    t.equal(s.generation, flip.json.generation, `${id}: the flip's generation`)
    t.equal(s.services.svc.live, 'green', `${id}: green is live`)
    t.equal(s.store.kind, 'etcd', `${id}: store.kind etcd`)
    t.equal(s.store.connected, true, `${id}: connected`)
    t.equal(s.fleet.id, id, `${id}: fleet.id is its own`)
    t.equal(s.fleet.replicas.length, 3, `${id}: three replicas registered`)
    t.same(s.fleet.replicas.map((x: any) => x.id).sort(), ['a', 'b', 'c'])
    t.ok(s.fleet.replicas.every((x: any) => x.generation === flip.json.generation), `${id}: every replica record is at the new generation`)
    t.equal(s.fleet.converged, true, `${id}: converged`)
  }
  t.equal(new Set(states.map((s) => s.fleet.leader)).size, 1, 'every replica names the same leader')
})

t.test('wait: "fleet": the flip is answered once every replica has applied it', { timeout: SCENARIO_MS }, async (t) => {
  const { replicas } = await startFleet(t)
  const [a, b, c] = replicas
  const sent = performance.now()
  const flip = await admin(b.adminUrl, 'POST', '/v1/flip', { wait: 'fleet' })
  const took = performance.now() - sent
  // Read at once, all three together: nothing else may be waited for here.
  const states = await Promise.all([a, b, c].map(stateOf))
  t.equal(flip.status, 200, flip.text)
  t.comment(`flip with wait: "fleet" answered in ${took.toFixed(1)} ms`)
  t.same(flip.json.fleet, { converged: true, lagging: [] }, 'the answer says the fleet converged')
  for (const [i, s] of states.entries()) t.equal(s.generation, flip.json.generation, `${replicas[i].id} shows the new generation at the moment of the answer`)
})

t.test('concurrent flips on A and B: one wins, never a lost update', { timeout: SCENARIO_MS }, async (t) => {
  const { replicas } = await startFleet(t)
  const [a, b] = replicas
  const flipBoth = async (body: Record<string, unknown>): Promise<Array<{ status: number, json: any, text: string }>> =>
    await Promise.all([a, b].map(async (r) => await admin(r.adminUrl, 'POST', '/v1/flip', body)))

  // With ifGeneration: the premise of one of them is gone once the other commits.
  const g0 = (await stateOf(a)).generation
  const conditional = await flipBoth({ ifGeneration: g0 })
  t.same(conditional.map((r) => r.status).sort(), [200, 412], `one 200 and one 412: ${conditional.map((r) => r.text).join(' | ')}`)
  t.equal(conditional.find((r) => r.status === 412)?.json.error, 'stale_generation')
  let states = await settled(replicas, 'green')
  t.ok(states.every((s) => s.generation === g0 + 1), 'one generation on, everywhere')

  // Both toward blue, without ifGeneration: the loser retries on the new state, where blue is already live.
  const g1 = states[0].generation
  const toBlue = await flipBoth({ to: 'blue' })
  t.same(toBlue.map((r) => r.status), [200, 200], toBlue.map((r) => r.text).join(' | '))
  t.same(toBlue.map((r) => r.json.changes.length).sort(), [0, 1], 'one flip changed blue in, the other found it done (a no-op)')
  states = await settled(replicas, 'blue')
  t.ok(states.every((s) => s.generation === g1 + 1), 'exactly one generation on, everywhere')

  // Without `to`: each is planned toward the color other than the one its replica had live. If both
  // were planned on the same state, the loser keeps that color and finds it live (a no-op); if the
  // second was planned after the first arrived, it flips back. Either way no answer's change is lost:
  // the generation moves by the number of changing answers, each has its own generation, and the
  // state ends on the color of the last.
  let overlapped = 0
  for (let round = 0; round < 5; round++) {
    const before = (await stateOf(a)).generation
    const answers = await flipBoth({})
    t.same(answers.map((r) => r.status), [200, 200], answers.map((r) => r.text).join(' | '))
    const changing = answers.filter((r) => r.json.changes.length > 0).sort((x, y) => x.json.generation - y.json.generation)
    t.ok(changing.length >= 1, 'at least one flip changed something')
    if (changing.length === 1) overlapped++
    t.same(changing.map((r) => r.json.generation), changing.map((_, i) => before + 1 + i), 'each changing answer has its own next generation')
    const color = changing.at(-1)?.json.changes[0].to
    states = await settled(replicas, color)
    t.ok(states.every((s) => s.generation === before + changing.length), `round ${round}: every replica at generation ${before} + ${changing.length}, on ${color as string}`)
    const flips = (await eventsOf(replicas[2], 'flip')).filter((e) => e.generation > before)
    t.same(flips.map((e) => e.generation), changing.map((r) => r.json.generation), 'C has one flip event per changing answer')
  }
  t.comment(`without ifGeneration: ${overlapped} of 5 rounds overlapped (one answer a no-op), the rest ran one after the other`)
})

t.test('a replica restarted after a flip it missed comes up on the flipped color', { timeout: SCENARIO_MS }, async (t) => {
  const { etcd, prefix, services, replicas } = await startFleet(t)
  const [a, b, c] = replicas
  await a.gw.stop()
  const flip = await admin(b.adminUrl, 'POST', '/v1/flip', {})
  t.equal(flip.status, 200, flip.text)
  const again = await startReplica(t, etcd.endpoint, prefix, 'a', services, { dir: a.gw.dir })
  t.equal(await servedBy(again), 'green', 'A serves green from its first request')
  const s = await stateOf(again)
  t.equal(s.generation, flip.json.generation)
  t.equal(s.services.svc.live, 'green')
  const flipOnB = (await eventsOf(b, 'flip')).find((e) => e.generation === flip.json.generation)
  t.same((await eventsOf(again, 'flip')).find((e) => e.generation === flip.json.generation), flipOnB, 'A lists the flip it missed, id and all')
  await eventually(async () => await fleetFormed([again, b, c]), { timeout: 8000 })
})

t.test('etcd stopped under load: no request fails, writes get 503, and the fleet catches up when it returns', { timeout: SCENARIO_MS }, async (t) => {
  const { etcd, replicas } = await startFleet(t)
  const [a, b, c] = replicas
  const traffic = startTraffic([a, b], 2)
  const loadStarted = performance.now()
  await eventually(() => traffic.counts().ok > 20)
  await etcd.stop()

  for (const r of replicas) {
    const sent = performance.now()
    const flip = await admin(r.adminUrl, 'POST', '/v1/flip', {})
    t.equal(flip.status, 503, `${r.id}: a flip is refused: ${flip.text}`)
    t.equal(flip.json?.error, 'store_unavailable')
    t.comment(`${r.id}: the refusal took ${(performance.now() - sent).toFixed(0)} ms`)
  }
  for (const r of replicas) {
    t.equal((await admin(r.adminUrl, 'GET', '/readyz')).status, 200, `${r.id}: /readyz stays ready`)
    await eventually(async () => (await stateOf(r)).store.connected === false, { timeout: 5000 })
    t.pass(`${r.id}: /v1/state says store.connected false`)
    t.equal(await metricOf(r, 'switchyard_store_up'), 0, `${r.id}: switchyard_store_up 0`)
    t.equal(await servedBy(r), 'blue', `${r.id} serves on the last state`)
  }
  // The load runs its full length with etcd gone.
  await runFor(3000 - (performance.now() - loadStarted))
  const load = await traffic.stop()
  t.comment(`${load.ok} requests through A and B in ${((performance.now() - loadStarted) / 1000).toFixed(1)} s, etcd stopped for most of it`)
  t.equal(load.failed, 0, `no request failed: ${load.failures.join('; ')}`)
  t.ok(load.ok > 100, 'the load did run')

  await etcd.start()
  const back = performance.now()
  await eventually(async () => (await Promise.all(replicas.map(stateOf))).every((s) => s.store.connected === true), { timeout: 10_000 })
  t.comment(`all three connected again ${(performance.now() - back).toFixed(0)} ms after etcd listened`)
  for (const r of replicas) t.equal(await metricOf(r, 'switchyard_store_up'), 1, `${r.id}: switchyard_store_up 1`)
  await eventually(async () => await fleetFormed(replicas), { timeout: 8000 })
  t.pass('the three are registered again, with a leader')
  const flip = await admin(c.adminUrl, 'POST', '/v1/flip', {})
  t.equal(flip.status, 200, `the next flip works: ${flip.text}`)
  const states = await settled(replicas, 'green')
  t.ok(states.every((s) => s.generation === flip.json.generation), 'and reaches every replica')
  for (const r of replicas) t.equal(await servedBy(r), 'green', `${r.id} serves green`)
})

t.test('a bad flip on three replicas is reverted exactly once, on the fleet\'s summed counts', { timeout: SCENARIO_MS }, async (t) => {
  const { green, replicas } = await startFleet(t, ['a', 'b', 'c'], GUARD)
  breakTraffic(green)
  const flip = await admin(replicas[0].adminUrl, 'POST', '/v1/flip', {})
  t.equal(flip.status, 200, flip.text)
  await eventually(async () => (await Promise.all(replicas.map(stateOf))).every((s) => s.generation === flip.json.generation))
  const flipId = await lastFlipId(replicas[0])

  // 8 failing requests through each: 24 for the fleet, but fewer than minRequests (20) on any one replica.
  const started = performance.now()
  for (let i = 0; i < 8; i++) {
    for (const r of replicas) t.equal((await http1(`${r.url}/bad/${i}`)).status, 500, `${r.id}: green fails request ${i}`)
  }
  const states = await settled(replicas, 'blue', { guardEnded: true })
  t.comment(`reverted everywhere ${(performance.now() - started).toFixed(0)} ms after the failing requests began`)
  t.ok(states.every((s) => s.generation === flip.json.generation + 1), 'one generation on: a single revert')
  for (const r of replicas) {
    const reverts = (await eventsOf(r, 'auto_revert')).filter((e) => e.flipEvent === flipId)
    t.equal(reverts.length, 1, `${r.id}: exactly one auto_revert for the flip`)
    t.equal(await servedBy(r), 'blue', `${r.id} serves blue again`)
  }
})

t.test('the guard leader killed mid-window: another replica takes over and reverts once', { timeout: SCENARIO_MS }, async (t) => {
  const etcd = await startEtcd(t)
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const prefix = freshPrefix()
  const services = serviceYaml('svc', '/', [blue], [green], GUARD)
  // Started first, alone: it takes the lead.
  const k = await startChildReplica(t, etcd.endpoint, prefix, 'k', services)
  await eventually(async () => (await stateOf(k)).fleet.leader === 'k', { timeout: 8000 })
  const b = await startReplica(t, etcd.endpoint, prefix, 'b', services)
  const c = await startReplica(t, etcd.endpoint, prefix, 'c', services)
  await eventually(async () => await fleetFormed([k, b, c]), { timeout: 8000 })
  t.equal((await stateOf(b)).fleet.leader, 'k', 'the child process leads')

  breakTraffic(green)
  const flip = await admin(b.adminUrl, 'POST', '/v1/flip', {})
  t.equal(flip.status, 200, flip.text)
  // The leader has the flip (so its window has begun) when it dies.
  await eventually(async () => (await stateOf(k)).generation === flip.json.generation)
  const flipId = await lastFlipId(b)
  k.proc.kill('SIGKILL')
  const killed = performance.now()
  await k.proc.exit

  const traffic = startTraffic([b, c], 2, () => true)
  const leader = await eventually(async () => {
    const s = await stateOf(b)
    return s.fleet.leader !== null && s.fleet.leader !== 'k' ? s.fleet.leader : false
  }, { timeout: 8000 })
  const tookOver = performance.now() - killed
  const states = await settled([b, c], 'blue', { guardEnded: true })
  const reverted = performance.now() - killed
  const load = await traffic.stop()
  t.comment(`leader ${leader as string} took over ${tookOver.toFixed(0)} ms after the SIGKILL; reverted ${reverted.toFixed(0)} ms after it (lease 2000 ms); ${load.ok} requests meanwhile`)
  t.ok(reverted < 2000 + 3000, 'reverted within the lease TTL + 3 s')
  t.ok(states.every((s) => s.generation === flip.json.generation + 1), 'a single revert')
  for (const r of [b, c]) {
    const reverts = (await eventsOf(r, 'auto_revert')).filter((e) => e.flipEvent === flipId)
    t.equal(reverts.length, 1, `${r.id}: exactly one auto_revert for the flip`)
    t.equal(await servedBy(r), 'blue', `${r.id} serves blue again`)
  }
  await eventually(async () => (await stateOf(c)).fleet.replicas.length === 2, { timeout: 5000 })
})

t.test('wait: "fleet" names a replica that died without leaving, until its lease is gone', { timeout: SCENARIO_MS }, async (t) => {
  const etcd = await startEtcd(t)
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const prefix = freshPrefix()
  const services = serviceYaml('svc', '/', [blue], [green])
  const k = await startChildReplica(t, etcd.endpoint, prefix, 'k', services)
  const b = await startReplica(t, etcd.endpoint, prefix, 'b', services)
  await eventually(async () => await fleetFormed([k, b]), { timeout: 8000 })
  k.proc.kill('SIGKILL')
  await k.proc.exit
  const killed = performance.now()

  const sent = performance.now()
  const lagging = await admin(b.adminUrl, 'POST', '/v1/flip', { wait: 'fleet', waitTimeout: '1s' })
  const took = performance.now() - sent
  t.equal(lagging.status, 200, lagging.text)
  t.equal(lagging.json.changes.length, 1, 'the flip is made: the dead replica only cannot confirm it')
  t.same(lagging.json.fleet, { converged: false, lagging: ['k'] }, 'the answer names the dead replica')
  t.ok(took >= 900 && took < 3000, `answered at the waitTimeout (${took.toFixed(0)} ms)`)

  await eventually(async () => (await stateOf(b)).fleet.replicas.length === 1, { timeout: 5000 })
  t.comment(`k left the fleet ${(performance.now() - killed).toFixed(0)} ms after its SIGKILL (lease 2000 ms)`)
  const converged = await admin(b.adminUrl, 'POST', '/v1/flip', { wait: 'fleet', waitTimeout: '1s' })
  t.same(converged.json.fleet, { converged: true, lagging: [] }, 'with its lease gone, the fleet is b alone and converged')
})

t.test('a gateway that cannot reach etcd exits non-zero, naming the endpoint', { timeout: SCENARIO_MS }, async (t) => {
  const port = await closedPort()
  const b = await startBackend(t, 'blue')
  const file = configFile(t, `state:
  etcd: { endpoints: [http://127.0.0.1:${port}], prefix: /t/none, startTimeout: 1s }
fleet: { id: lonely, leaseTtl: 2s }
services:
${serviceYaml('svc', '/', [b], [b])}`)
  const started = performance.now()
  const p = serve(t, ['serve', '--config', file])
  const code = await p.exit
  const took = performance.now() - started
  t.comment(`exited with ${String(code)} after ${took.toFixed(0)} ms; stderr: ${p.stderr().trim()}`)
  t.not(code, 0, 'exit code is not 0')
  t.not(code, null, 'it exited on its own (not by a signal)')
  // startTimeout is 1 s; the rest is the process starting, which a loaded machine stretches (5.2 s seen at 6 jobs on 2 cores).
  t.ok(took < 15_000, `within seconds of its 1 s startTimeout, not hanging (${took.toFixed(0)} ms)`)
  t.match(p.stderr(), `127.0.0.1:${port}`, 'stderr names the endpoint')
})

t.test('GET /v1/events on any replica shows the fleet\'s changes, with the same ids', { timeout: SCENARIO_MS }, async (t) => {
  const { replicas } = await startFleet(t)
  const [a, , c] = replicas
  const flip = await admin(a.adminUrl, 'POST', '/v1/flip', { reason: 'fleet events test' })
  t.equal(flip.status, 200, flip.text)
  const onA = (await eventsOf(a, 'flip')).find((e) => e.generation === flip.json.generation)
  t.ok(onA, 'A lists its flip')
  const onC = await eventually(async () => (await eventsOf(c, 'flip')).find((e) => e.generation === flip.json.generation) ?? false)
  t.same(onC, onA, 'C lists the same event, id and all')
  t.equal(onC.reason, 'fleet events test')
  const after = await admin(c.adminUrl, 'GET', `/v1/events?since=${onA.id as number}`)
  t.notOk(after.json.events.some((e: any) => e.id <= onA.id), '?since=ID on C lists only later events')
})
