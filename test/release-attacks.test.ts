// Attacks on releases: inputs and races that the release code must survive,
// each a test that failed on the code it was written against.

import t, { type Test } from 'tap'
import { parseConfig } from '../src/config/load.js'
import { KEEP_FINISHED, newRelease, parseReleaseRequest, pruneReleases, type Release } from '../src/release/model.js'
import { judge } from '../src/release/verdict.js'
import { LatencyHistogram } from '../src/upstream/latency.js'
import { endOverridden, planCreate, planDeploy, planForward, planPause, planResume, planStep } from '../src/control/release-moves.js'
import { parseStateDocument, type PersistedState } from '../src/state/file-store.js'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { admin, configFile, eventually, http1, keyedLoad, listening, openWs, serve, startBackend, startGateway, tempDir, type Backend, usersYaml } from './helpers/index.js'
import { startEtcd } from './helpers/etcd.js'
import { eventsOf, fleetFormed, freshPrefix, runFor, startChildReplica, startReplica, stateOf, type Replica } from './helpers/fleet.js'

const config = parseConfig(JSON.stringify({
  services: {
    users: { match: { pathPrefix: '/users' }, blue: { targets: ['http://127.0.0.1:1001'] }, green: { targets: ['http://127.0.0.1:1002'] } },
    orders: { match: { pathPrefix: '/orders' }, live: 'green', blue: { targets: ['http://127.0.0.1:1003'] }, green: { targets: ['http://127.0.0.1:1004'] } },
  },
}), { file: '/tmp/x.yaml', env: {} })

function baseState (): PersistedState {
  return { generation: 7, services: { users: { live: 'blue', previous: null, targets: {} }, orders: { live: 'green', previous: null, targets: {} } }, lastChange: [] }
}

/** r8 over users (blue -> green) and orders (green -> blue), in its first step at 10%. */
function shifting (hold = '10s'): PersistedState {
  const state = baseState()
  const req = parseReleaseRequest({ services: { users: { targets: ['http://10.0.0.1'] }, orders: { targets: ['http://10.0.0.2'] } }, steps: [{ weight: 10, hold }] }, config)
  const rel = newRelease('r8', req, (n) => state.services[n].live, config, 'test', 5, new Date(1000).toISOString())
  return planStep(planDeploy(planCreate(state, rel), 'r8', 2000).next, 'r8', 0, 3000).next
}

t.test('a service named like an Object.prototype member is an unknown service, not a crash or an empty release', async (t) => {
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    const body = JSON.parse(`{"services": {"${name}": {"targets": ["http://10.0.0.1"]}}}`) as Record<string, unknown>
    t.throws(() => parseReleaseRequest(body, config), { code: 'bad_request', message: /unknown service/ }, name)
  }
})

t.test('POST /v1/releases naming __proto__ is a 400, and the gateway still restarts on its state', async (t) => {
  const [blue, green] = await Promise.all([startBackend(t, 'blue'), startBackend(t, 'green')])
  const yaml = `services:
  users:
    match: { pathPrefix: / }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
`
  const gw = await startGateway(t, yaml)
  const res = await admin(gw.adminUrl, 'POST', '/v1/releases', '{"services": {"__proto__": {"targets": ["http://127.0.0.1:9"]}}}')
  t.equal(res.status, 400, JSON.stringify(res.json))
  const ctor = await admin(gw.adminUrl, 'POST', '/v1/releases', '{"services": {"constructor": {"targets": ["http://127.0.0.1:9"]}}}')
  t.equal(ctor.status, 400, JSON.stringify(ctor.json))
  // The same check guards flips, whose refusal of a running release's service reads the release list by name.
  const flip = await admin(gw.adminUrl, 'POST', '/v1/services/constructor/flip', { force: true })
  t.equal(flip.status, 404, JSON.stringify(flip.json))
  await gw.stop()
  // Whatever was stored must be readable by the next start.
  const again = await startGateway(t, yaml, { dir: gw.dir })
  t.equal((await admin(again.adminUrl, 'GET', '/v1/releases')).status, 200)
})

t.test('a pause before a promote does not stretch the verify window after the resume', async (t) => {
  const paused = planPause(shifting(), 'r8', 4_000).next
  // Paused for ten minutes, then promoted (still paused), then resumed a second later.
  const promoted = planForward(paused, 'r8', 604_000, {})
  const resumed = planResume(promoted.next, 'r8', 605_000)
  const windowStart = Date.parse(resumed.release.phaseStartedAt)
  // The verify phase began at 604 s and was paused for 1 s of it: its window starts at 605 s, not ten minutes later.
  t.equal(windowStart, 605_000, `verifying starts at ${resumed.release.phaseStartedAt}`)
})

t.test('a forced flip of one service ends the release as aborted with every service back on its old color', async (t) => {
  // Verifying: both new colors are live.
  const verifying = planForward(shifting(), 'r8', 5_000, {}).next
  const flipped = structuredClone(verifying)
  flipped.services.users = { ...flipped.services.users, live: 'blue', previous: 'green' }
  const next = endOverridden(flipped, ['users'], 6_000, 'overridden by a forced flip', [])
  const r = next.releases?.find((x) => x.id === 'r8')
  t.equal(r?.phase, 'aborted')
  t.equal(next.services.orders.live, 'green', 'orders is back on its old color, as every aborted release leaves it')
  t.equal(r?.weight, 0, 'an aborted release shows no weight on its new colors')
})

t.test('a stored running release whose step is not one of its steps is refused at load, naming the field', async (t) => {
  const text = JSON.stringify({ version: 1, ...shifting() })
  const edits: Array<[string, (d: any) => void]> = [
    ['step past the last', (d) => { d.releases[0].step = 4 }],
    ['step -1 while shifting', (d) => { d.releases[0].step = -1 }],
    ['shifting with no steps', (d) => { d.releases[0].steps = [] }],
  ]
  for (const [what, edit] of edits) {
    const d = JSON.parse(text)
    edit(d)
    // Loaded as is, the run reads steps[step].hold on every tick and throws forever: the release is stuck, holding its services.
    t.throws(() => parseStateDocument(JSON.stringify(d), 'test'), /releases\[0\]\.step/, what)
  }
})

t.test('two stored running releases holding the same service are refused at load', async (t) => {
  const d = JSON.parse(JSON.stringify({ version: 1, ...shifting() }))
  d.releases.push({ ...structuredClone(d.releases[0]), id: 'r9' })
  // Both would be run, each committing its own split over the same services.
  t.throws(() => parseStateDocument(JSON.stringify(d), 'test'), /releases\[1\]/)
})

/** A backend that answers 500 to every 20th request (5%), as a service with a steady error rate does. */
async function flaky (t: Tap.Test, name: string): Promise<Backend> {
  const b = await startBackend(t, name)
  let n = 0
  b.handler = (_req, res) => {
    res.writeHead(++n % 20 === 0 ? 500 : 200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ backend: name }))
  }
  return b
}

/** Keyed requests through `r` until stopped. */
function load (t: Test, r: Replica, loops = 6): () => Promise<number> {
  return keyedLoad(t, () => `${r.url}/x`, loops).stop
}

t.test('fleet: a promote asked of a follower keeps the old color\'s window as the verify baseline', async (t) => {
  const etcd = await startEtcd(t)
  const [v1, idle, v2] = await Promise.all([flaky(t, 'v1'), startBackend(t, 'idle'), flaky(t, 'v2')])
  const services = `  users:
    match: { pathPrefix: / }
    blue: { targets: [${v1.url}] }
    green: { targets: [${idle.url}] }
`
  const prefix = freshPrefix()
  const a = await startReplica(t, etcd.endpoint, prefix, 'a', services)
  const b = await startReplica(t, etcd.endpoint, prefix, 'b', services)
  await eventually(async () => await fleetFormed([a, b]), { timeout: 10_000, interval: 100 })
  const leaderId = (await stateOf(a)).fleet.leader as string
  const [leader, follower] = leaderId === 'a' ? [a, b] : [b, a]
  const created = await admin(follower.adminUrl, 'POST', '/v1/releases', {
    services: { users: { targets: [v2.url] } },
    steps: [{ weight: 50, hold: '60s' }],
    verify: { window: '3s', minRequests: 100 },
  })
  t.equal(created.status, 201, JSON.stringify(created.json))
  const id = created.json.id as string
  await eventually(async () => {
    const r = (await admin(leader.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.phase !== 'shifting') throw new Error(String(r.phase))
  }, { timeout: 10_000, interval: 50 })
  const stop = load(t, leader)
  // Both colors fail 5% alike during the step: nothing to revert for.
  await eventually(async () => {
    const r = (await admin(leader.adminUrl, 'GET', `/v1/releases/${id}`)).json
    const u = r.current?.users?.errors
    if (u === undefined || u.old.requests < 400 || u.new.requests < 400) throw new Error(JSON.stringify(u))
  }, { timeout: 15_000, interval: 100 })
  t.equal((await admin(follower.adminUrl, 'POST', `/v1/releases/${id}/promote`, {})).status, 200)
  const end = await eventually(async () => {
    const r = (await admin(leader.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.phase !== 'done' && r.phase !== 'reverted') throw new Error(String(r.phase))
    return r
  }, { timeout: 15_000, interval: 100 })
  await stop()
  // The new color fails 5% as the old one did: compared with an empty baseline (0% errors) it looks worse and is reverted.
  t.equal(end.phase, 'done', String(end.outcome))
  t.ok(end.verdicts.at(-1)?.services.users.errors.old.requests > 0, 'the verify verdict had an old side to compare with')
})

t.test('workers: the split routes in every worker and the verdict reads the workers\' counts (a failing new color is reverted)', async (t) => {
  const [v1, idle, v2] = await Promise.all(['v1', 'idle', 'v2'].map(async (n) => await startBackend(t, n)))
  const file = configFile(t, `defaults:
  health: { interval: 100ms, timeout: 80ms, healthyThreshold: 1, path: /health }
  drain: { timeout: 1s }
services:
  users:
    match: { pathPrefix: / }
    blue: { targets: [${v1.url}] }
    green: { targets: [${idle.url}] }
`)
  // The new target answers its health probe, then fails every request.
  v2.handler = (req, res) => { res.writeHead(req.url === '/health' ? 200 : 500, { 'content-type': 'application/json' }); res.end('{"backend":"v2"}') }
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  const ports = await listening(p)
  const gw: Replica = { id: 'w', url: `http://127.0.0.1:${ports.port}`, adminUrl: `http://127.0.0.1:${ports.admin}` }
  const created = await admin(gw.adminUrl, 'POST', '/v1/releases', {
    services: { users: { targets: [v2.url] } }, steps: [{ weight: 50, hold: '20s' }], verify: { window: '1s', minRequests: 50 },
  })
  t.equal(created.status, 201, JSON.stringify(created.json))
  const id = created.json.id as string
  await eventually(async () => {
    const r = (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.phase !== 'shifting') throw new Error(String(r.phase))
  }, { timeout: 10_000, interval: 50 })
  const stop = load(t, gw, 8)
  const end = await eventually(async () => {
    const r = (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.phase === 'shifting') throw new Error(`shifting: ${JSON.stringify(r.current?.users?.errors ?? null)}`)
    return r
  }, { timeout: 12_000, interval: 100 }).finally(stop)
  t.equal(end.phase, 'reverted', String(end.outcome))
  t.match(String(end.outcome), /error rate/)
  t.ok(end.verdicts.at(-1)?.services.users.errors.new.requests >= 50, 'the verdict counted the workers\' requests to the new color')
})

t.test('a forced flip that ends a release says so in a release event, and takes the release\'s other services back', async (t) => {
  const [v1, idle, v2, o1, oIdle, o2] = await Promise.all(['v1', 'idle', 'v2', 'o1', 'o-idle', 'o2'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `defaults:
  health: { interval: 100ms, timeout: 80ms, healthyThreshold: 1 }
services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [${v1.url}] }
    green: { targets: [${idle.url}] }
  orders:
    match: { pathPrefix: /orders }
    blue: { targets: [${o1.url}] }
    green: { targets: [${oIdle.url}] }
`)
  const created = await admin(gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [v2.url] }, orders: { targets: [o2.url] } }, verify: { window: '60s' } })
  const id = created.json.id as string
  await eventually(async () => {
    const r = (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.phase !== 'verifying') throw new Error(String(r.phase))
  }, { timeout: 10_000, interval: 50 })
  // Both new colors (green) are live; the operator forces users back to blue.
  const flip = await admin(gw.adminUrl, 'POST', '/v1/services/users/flip', { force: true, to: 'blue' })
  t.equal(flip.status, 200, JSON.stringify(flip.json))
  const r = (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json
  t.equal(r.phase, 'aborted')
  t.same(r.services.orders.weights, { blue: 100, green: 0 }, 'the aborted release shows its old colors')
  t.equal((await http1(`${gw.url}/orders/x`)).json.backend, 'o1', 'orders is back on its old color with users, as every aborted release leaves it')
  t.match((await http1(`${gw.adminUrl}/metrics`)).text, /switchyard_releases_total\{outcome="aborted"\} 1/)
  const flips = (await admin(gw.adminUrl, 'GET', '/v1/events?type=flip')).json.events as any[]
  t.same(flips.at(-1).changes.map((c: any) => `${String(c.service)}:${String(c.to)}`).sort(), ['orders:blue', 'users:blue'], 'the flip event lists every color it changed')
  // README: "each phase change ... is a release event"; a follower of the events (or the dashboard's table) never learned the release ended.
  const events = (await admin(gw.adminUrl, 'GET', '/v1/events?type=release')).json.events as any[]
  t.ok(events.some((e) => e.release === id && e.phase === 'aborted'), `release events: ${events.map((e) => String(e.phase)).join(', ')}`)
})

t.test('a restart with a config that lost a running release\'s service ends the release instead of retrying it forever', async (t) => {
  const [blue, green] = await Promise.all([startBackend(t, 'blue'), startBackend(t, 'green')])
  const svc = (name: string, prefix: string): string => `  ${name}:
    match: { pathPrefix: ${prefix} }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
`
  const top = 'defaults:\n  health: { interval: 100ms, timeout: 80ms, healthyThreshold: 1 }\nservices:\n'
  const first = await startGateway(t, top + svc('users', '/u') + svc('legacy', '/l'))
  // The new target never gets healthy: the release waits in warming (up to its timeout).
  const created = await admin(first.adminUrl, 'POST', '/v1/releases', { services: { legacy: { targets: ['http://127.0.0.1:9'] } }, timeout: '10m' })
  t.equal(created.status, 201)
  const id = created.json.id as string
  await eventually(async () => (await admin(first.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase === 'warming', { timeout: 5_000 })
  await first.stop()
  // A reload removing legacy would get a 409; a restart with the edited config cannot be refused that way.
  const second = await startGateway(t, top + svc('users', '/u'), { dir: first.dir })
  // Before: "Cannot read properties of undefined (reading 'gate')" logged every 250 ms, the release in warming until someone aborts it.
  const r = await eventually(async () => {
    const r = (await admin(second.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (!['done', 'reverted', 'aborted', 'failed'].includes(r.phase)) throw new Error(String(r.phase))
    return r
  }, { timeout: 3_000, interval: 50 })
  t.match(String(r.outcome), /legacy/, 'the outcome names the service the config lost')
})

t.test('two promotes sent at once (a double click, a retried request) do not skip the verify window', async (t) => {
  const [v1, idle, v2] = await Promise.all(['v1', 'idle', 'v2'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `defaults:
  health: { interval: 100ms, timeout: 80ms, healthyThreshold: 1 }
services:
  users:
    match: { pathPrefix: / }
    blue: { targets: [${v1.url}] }
    green: { targets: [${idle.url}] }
`)
  const id = (await admin(gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [v2.url] } }, steps: [{ weight: 10, hold: '60s' }], verify: { window: '60s' } })).json.id as string
  await eventually(async () => (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase === 'shifting', { timeout: 10_000 })
  const [a, b] = await Promise.all([admin(gw.adminUrl, 'POST', `/v1/releases/${id}/promote`, {}), admin(gw.adminUrl, 'POST', `/v1/releases/${id}/promote`, {})])
  t.same([a.status, b.status].sort(), [200, 409], 'one promotes, the other finds the release at 100% already')
  t.equal((a.status === 409 ? a : b).json.error, 'release_state')
  const r = (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json
  t.equal(r.phase, 'verifying', `history: ${(r.history as any[]).map((h) => String(h.phase)).join(', ')}`)
})

t.test('the releases a state keeps fit in one etcd request (1.5 MiB by default) for ten services released in ten steps', async (t) => {
  const hist = (base: number): LatencyHistogram => {
    const h = new LatencyHistogram()
    for (let i = 0; i < 500; i++) h.add(base + (i % 50))
    return h
  }
  const verdict = judge({ requests: 5000, errors: 30, latency: hist(10) }, { requests: 45000, errors: 200, latency: hist(10) }, { maxErrorRateIncrease: 0.01, maxLatencyIncrease: 0.2, latencyFloor: 5, minRequests: 100 }, true)
  const names = Array.from({ length: 10 }, (_, i) => `service-${i}`)
  const steps = Array.from({ length: 10 }, (_, i) => ({ weight: (i + 1) * 9, hold: 60_000 }))
  const at = new Date(0).toISOString()
  const list: Release[] = []
  for (let k = 0; k < KEEP_FINISHED + 5; k++) {
    list.push({
      id: `r${k}`, phase: 'done', services: Object.fromEntries(names.map((n) => [n, { targets: ['http://10.0.0.1:8080'], version: '1.0.0', from: 'blue', to: 'green' }])),
      steps, step: 9, weight: 100, verify: { window: 60_000, maxErrorRateIncrease: 0.01, maxLatencyIncrease: 0.2, latencyFloor: 5, minRequests: 100 }, timeout: 300_000, reason: 'release', actor: 'ci', seed: 1,
      startedAt: at, updatedAt: at, phaseStartedAt: at, pausedAt: null, outcome: null,
      // A verdict at the end of every step and of the verify window, each judging every service.
      verdicts: Array.from({ length: steps.length + 1 }, (_, i) => ({ at, phase: i < steps.length ? 'shifting' : 'verifying', step: Math.min(i, 9), weight: i < steps.length ? steps[i].weight : 100, final: true, pass: true, services: Object.fromEntries(names.map((n) => [n, verdict])) })),
      history: [],
    })
  }
  const kept = pruneReleases(list)
  const bytes = Buffer.byteLength(JSON.stringify({ version: 1, generation: 1, services: {}, lastChange: [], releases: kept }))
  t.ok(bytes < 1.5 * 1024 * 1024, `the kept releases take ${(bytes / 1024 / 1024).toFixed(2)} MiB of the state`)
})

t.test('fleet: the leader SIGKILLed mid-step, the next leader goes on at the same step with the stored step start', async (t) => {
  const etcd = await startEtcd(t)
  const [v1, idle, v2] = await Promise.all(['v1', 'idle', 'v2'].map(async (n) => await startBackend(t, n)))
  const services = `  users:
    match: { pathPrefix: / }
    blue: { targets: [${v1.url}] }
    green: { targets: [${idle.url}] }
`
  const prefix = freshPrefix()
  const a = await startChildReplica(t, etcd.endpoint, prefix, 'a', services)
  await eventually(async () => (await stateOf(a)).fleet.leader === 'a', { timeout: 10_000, interval: 100 })
  const b = await startChildReplica(t, etcd.endpoint, prefix, 'b', services)
  await eventually(async () => await fleetFormed([a, b]), { timeout: 10_000, interval: 100 })
  const HOLD = 6_000
  const created = await admin(b.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [v2.url] } }, steps: [{ weight: 10, hold: `${HOLD}ms` }, { weight: 30, hold: '1s' }], verify: { window: '1s' } })
  t.equal(created.status, 201, JSON.stringify(created.json))
  const id = created.json.id as string
  const step0 = await eventually(async () => {
    const r = (await admin(b.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.phase !== 'shifting') throw new Error(String(r.phase))
    return r
  }, { timeout: 10_000, interval: 25 })
  a.proc.kill('SIGKILL')
  await a.proc.exit
  const next = await eventually(async () => {
    const r = (await admin(b.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.step < 1 && r.phase === 'shifting') throw new Error(`step ${String(r.step)}`)
    return r
  }, { timeout: 15_000, interval: 50 })
  t.equal(next.phase, 'shifting', String(next.outcome))
  t.equal(next.step, 1)
  const took = Date.parse(next.phaseStartedAt) - Date.parse(step0.phaseStartedAt)
  t.ok(took >= HOLD && took < HOLD + 2_000, `step 0 ended ${took} ms after it began on the killed leader (hold ${HOLD} ms)`)
  t.equal((await stateOf(b)).fleet.leader, 'b')
  await eventually(async () => (await admin(b.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase === 'done', { timeout: 10_000, interval: 100 })
})

t.test('actions racing each other and the run leave a consistent end: the live color matches the outcome, no weights, no mark', async (t) => {
  const [v1, idle, v2] = await Promise.all(['v1', 'idle', 'v2'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, usersYaml(v1, idle, '200ms'))
  const actions = ['pause', 'promote', 'resume', 'abort', 'promote', 'pause', 'resume']
  for (let round = 0; round < 4; round++) {
    const created = await admin(gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [round % 2 === 0 ? v2.url : v1.url] } }, steps: [{ weight: 20, hold: '1s' }], verify: { window: '1s' } })
    t.equal(created.status, 201, JSON.stringify(created.json))
    const id = created.json.id as string
    const from = created.json.services.users.from as string
    const to = created.json.services.users.to as string
    await eventually(async () => ['shifting', 'verifying'].includes((await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase), { timeout: 10_000, interval: 10 })
    // Every action at once, each round in another order, while the run moves the release on.
    const order = actions.map((a, i) => actions[(i + round) % actions.length])
    const answers = await Promise.all(order.map(async (a) => (await admin(gw.adminUrl, 'POST', `/v1/releases/${id}/${a}`, {})).status))
    t.ok(answers.every((s) => s === 200 || s === 409), `answers ${answers.join(' ')}`)
    const end = await eventually(async () => {
      const r = (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json
      if (!['done', 'aborted', 'reverted', 'failed'].includes(r.phase)) {
        // A pause may have won the last word: resume so it ends.
        if (r.paused === true) await admin(gw.adminUrl, 'POST', `/v1/releases/${id}/resume`, {})
        throw new Error(String(r.phase))
      }
      return r
    }, { timeout: 10_000, interval: 50 })
    const state = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.users
    t.equal(state.live, end.phase === 'done' ? to : from, `round ${round}: ${String(end.phase)} leaves ${String(state.live)} live`)
    t.equal(state.release, undefined, 'the service is free')
    t.equal(state.weights[state.live], 100, 'no weights left')
    t.equal(end.paused, false, 'an ended release is not paused')
  }
})

t.test('a flip to the color of a split no release holds (a hand-made state) stores no split toward the live color, so the next start can read it', async (t) => {
  const [blue, green] = await Promise.all([startBackend(t, 'blue'), startBackend(t, 'green')])
  const dir = tempDir(t)
  writeFileSync(join(dir, 'state.json'), JSON.stringify({
    version: 1, generation: 3, lastChange: [],
    services: { users: { live: 'blue', previous: null, targets: {}, split: { color: 'green', weight: 10, seed: 5 } } },
  }))
  const yaml = `state: { file: ./state.json }
services:
  users:
    match: { pathPrefix: / }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
`
  const gw = await startGateway(t, yaml, { dir })
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/services/users/flip', { to: 'green', force: true })).status, 200)
  await gw.stop()
  // Before: the file kept the split toward green, now live, and the start refused it ("split must be {color (not the live one)...").
  const again = await startGateway(t, yaml, { dir })
  t.equal((await admin(again.adminUrl, 'GET', '/v1/state')).json.services.users.live, 'green')
})

t.test('a release reverted or aborted while shifting drains the WebSockets its split sent to the new color', async (t) => {
  const [v1, idle, v2] = await Promise.all(['v1', 'idle', 'v2'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, usersYaml(v1, idle, '500ms'))
  const id = (await admin(gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [v2.url] } }, steps: [{ weight: 50, hold: '60s' }] })).json.id as string
  await eventually(async () => (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase === 'shifting', { timeout: 10_000 })
  // A key the split sends to the new color.
  let key = ''
  for (let i = 0; key === ''; i++) if ((await http1(`${gw.url}/x`, { headers: { 'x-switchyard-key': `ws-${i}` } })).json.backend === 'v2') key = `ws-${i}`
  const { ws, next, closed } = await openWs(`${gw.url.replace('http', 'ws')}/ws`, { 'x-switchyard-key': key })
  ws.send('hi')
  t.equal(await next(), 'v2: hi', 'the session runs on the new color')
  t.equal((await admin(gw.adminUrl, 'POST', `/v1/releases/${id}/abort`, {})).status, 200)
  // A flip drains the color it leaves (drain.timeout 500ms); the abort leaves the new color, which must not keep its sessions for good.
  const code = await Promise.race([closed, new Promise<string>((resolve) => setTimeout(() => resolve('still open'), 3_000))])
  t.not(code, 'still open', 'the WebSocket on the abandoned new color was closed by its drain')
  ws.terminate()
})

t.test('a gateway restarted while its release is testing runs the smoke checks once it listens, not before (the release does not fail for it)', async (t) => {
  const [v1, idle, v2] = await Promise.all(['v1', 'idle', 'v2'].map(async (n) => await startBackend(t, n)))
  // The smoke check takes a while: the release is still testing when the gateway stops.
  v2.handler = (req, res) => {
    const answer = (): void => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"backend":"v2"}') }
    if (req.url === '/smoke') setTimeout(answer, 1_500)
    else answer()
  }
  const yaml = `defaults:
  health: { interval: 100ms, timeout: 80ms, healthyThreshold: 1 }
services:
  users:
    match: { pathPrefix: / }
    blue: { targets: [${v1.url}] }
    green: { targets: [${idle.url}] }
    smoke: [{ path: /smoke }]
`
  const first = await startGateway(t, yaml)
  const id = (await admin(first.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [v2.url] } }, steps: [{ weight: 10, hold: '60s' }] })).json.id as string
  await eventually(async () => (await admin(first.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase === 'testing', { timeout: 10_000 })
  await first.stop()
  const second = await startGateway(t, yaml, { dir: first.dir })
  const r = await eventually(async () => {
    const r = (await admin(second.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.phase === 'testing') throw new Error('testing')
    return r
  }, { timeout: 8_000, interval: 50 })
  // Before: the run took up testing at once after the restart, before the new color's first probe (and possibly before the listener listened): the smoke check got 503 no_healthy_upstream and the release failed.
  t.equal(r.phase, 'shifting', String(r.outcome))
})

t.test('a release right after a flip, over the color still draining: the drain and the flip\'s guard let go, and the split reaches the new targets', async (t) => {
  const [v1, v0, v2] = await Promise.all(['v1', 'v0', 'v2'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `defaults:
  health: { interval: 100ms, timeout: 80ms, healthyThreshold: 1 }
  drain: { timeout: 30s }
services:
  users:
    match: { pathPrefix: / }
    sticky: { cookie: sy }
    blue: { targets: [${v0.url}] }
    green: { targets: [${v1.url}] }
`)
  await eventually(async () => (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.users.environments.green.healthy === 1, { timeout: 5_000 })
  // A session on blue, then the flip to green: blue drains for 30s and holds sessions whose cookie says blue.
  const { ws } = await openWs(`${gw.url.replace('http', 'ws')}/ws`, { cookie: 'sy=blue' })
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/services/users/flip', { to: 'green' })).status, 200)
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.users.environments.blue.state, 'draining')
  const created = await admin(gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [v2.url] } }, steps: [{ weight: 50, hold: '60s' }] })
  t.equal(created.status, 201, JSON.stringify(created.json))
  t.equal(created.json.services.users.to, 'blue')
  const id = created.json.id as string
  await eventually(async () => (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase === 'shifting', { timeout: 10_000 })
  const state = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.users
  t.equal(state.guard, null, 'the flip\'s guard no longer watches the service')
  t.not(state.environments.blue.state, 'draining', 'the drain of the idle color was cancelled')
  // A blue session cookie is no hold any more: the split decides, and blue now means the new targets.
  const seen = new Set<string>()
  for (let i = 0; i < 40; i++) seen.add(String((await http1(`${gw.url}/x`, { headers: { cookie: 'sy=blue', 'x-switchyard-key': `k${i}` } })).json.backend))
  t.same([...seen].sort(), ['v1', 'v2'], 'keys split between the live color and the new targets, none on the old blue targets')
  ws.terminate()
})

t.test('fleet: a release created on a follower takes its services from the leader\'s guard, which does not revert under it', async (t) => {
  const etcd = await startEtcd(t)
  const [v1, green, v2] = await Promise.all(['v1', 'green', 'v2'].map(async (n) => await startBackend(t, n)))
  const services = `  users:
    match: { pathPrefix: / }
    blue: { targets: [${v1.url}] }
    green: { targets: [${green.url}] }
    guard: { window: 60s, maxErrorRate: 0.05, minRequests: 10 }
`
  const prefix = freshPrefix()
  const a = await startReplica(t, etcd.endpoint, prefix, 'a', services)
  const b = await startReplica(t, etcd.endpoint, prefix, 'b', services)
  await eventually(async () => await fleetFormed([a, b]), { timeout: 10_000, interval: 100 })
  const leaderId = (await stateOf(a)).fleet.leader as string
  const [leader, follower] = leaderId === 'a' ? [a, b] : [b, a]
  t.equal((await admin(leader.adminUrl, 'POST', '/v1/flip', { wait: 'fleet' })).status, 200)
  t.equal((await stateOf(leader)).services.users.guard?.active, true, 'the leader guards users/green')
  const created = await admin(follower.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [v2.url] } }, steps: [{ weight: 10, hold: '60s' }] })
  t.equal(created.status, 201, JSON.stringify(created.json))
  const id = created.json.id as string
  await eventually(async () => (await admin(leader.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase === 'shifting', { timeout: 10_000, interval: 50 })
  // Green, still live, fails now: a guard left running on the leader would revert users to blue, the release's new color, unjudged.
  green.handler = (req, res) => { res.writeHead(req.url === '/healthz' ? 200 : 500); res.end() }
  let failed = 0
  for (let i = 0; i < 60; i++) if ((await http1(`${leader.url}/x`, { headers: { 'x-switchyard-key': `k${i}` } })).status >= 500) failed++
  t.ok(failed > 30, `green failed ${failed} of 60`)
  await runFor(1_500)
  t.same((await eventsOf(leader, 'auto_revert')).map((e: any) => e.reason), [], 'no auto-revert')
  t.equal((await admin(leader.adminUrl, 'GET', `/v1/releases/${id}`)).json.phase, 'shifting', 'the release goes on')
  t.equal((await stateOf(leader)).services.users.live, 'green')
})
