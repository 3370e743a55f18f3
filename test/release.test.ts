// Releases end to end on a real gateway: every phase, stepped weights measured on
// keyed traffic, a worse new color reverted with the verdict's figures, operator actions and refusals.

import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { admin, eventually, http1, keyedLoad, startBackend, startGateway, type Backend, type TestGateway } from './helpers/index.js'

const TOP = `defaults:
  health: { interval: 500ms, timeout: 500ms, healthyThreshold: 1, unhealthyThreshold: 3 }
  drain: { timeout: 1s }
`

function svc (name: string, prefix: string, blue: Backend, green: Backend, extra = ''): string {
  return `  ${name}:
    match: { pathPrefix: ${prefix} }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
${extra}`
}

interface Fixture { gw: TestGateway, old: Record<string, Backend>, next: Record<string, Backend>, idle: Record<string, Backend> }

/** users and orders live on blue (v1); v2 backends ready to be released to green. */
async function fixture (t: Tap.Test, usersExtra = ''): Promise<Fixture> {
  const names = ['users-v1', 'users-idle', 'users-v2', 'orders-v1', 'orders-idle', 'orders-v2']
  const b = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await startBackend(t, n)] as const)))
  const gw = await startGateway(t, `${TOP}services:
${svc('users', '/users', b['users-v1'], b['users-idle'], usersExtra)}
${svc('orders', '/orders', b['orders-v1'], b['orders-idle'])}`)
  // Until the first probes, the live colors have no healthy target: traffic then would get 503s that no release made.
  await eventually(async () => (await http1(`${gw.adminUrl}/readyz`)).status === 200)
  return { gw, old: { users: b['users-v1'], orders: b['orders-v1'] }, next: { users: b['users-v2'], orders: b['orders-v2'] }, idle: { users: b['users-idle'], orders: b['orders-idle'] } }
}

async function release (gw: TestGateway, id: string): Promise<any> {
  return (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json
}

async function phaseOf (gw: TestGateway, id: string, phase: string, timeout = 10_000): Promise<any> {
  return await eventually(async () => {
    const r = await release(gw, id)
    if (r.phase !== phase) throw new Error(`phase ${String(r.phase)}, waiting for ${phase} (${String(r.outcome)})`)
    return r
  }, { timeout, interval: 50 })
}

/** Sends one request per key to `service`, `concurrency` at a time; the backend that answered each key. */
async function byKey (gw: TestGateway, service: string, keys: string[], concurrency = 16): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < keys.length) {
      const key = keys[next++]
      const r = await http1(`${gw.url}/${service}/x`, { headers: { 'x-switchyard-key': key } })
      out.set(key, r.status === 200 ? String(r.json.backend) : `status ${r.status}`)
    }
  }))
  return out
}

/** Keyed traffic to both services until `stop()`; counts answers per backend. */
function traffic (t: Test, gw: TestGateway, concurrency = 8): { stop: () => Promise<number>, seen: Map<string, number> } {
  const seen = new Map<string, number>()
  const { stop } = keyedLoad(t, (loop) => `${gw.url}/${loop % 2 === 0 ? 'users' : 'orders'}/x`, concurrency, (r) => {
    const who = r === undefined ? 'failed' : r.status === 200 ? String(r.json.backend) : `${String(r.json?.backend ?? 'gateway')} ${r.status} ${String(r.json?.error ?? '')} ${String(r.json?.message ?? '')}`
    seen.set(who, (seen.get(who) ?? 0) + 1)
  })
  return { seen, stop }
}

t.test('an all-at-once release of two services goes through every phase to done, and the old color drains', async (t) => {
  const f = await fixture(t, '    smoke: [{ path: /users/ping }]\n')
  const created = await admin(f.gw.adminUrl, 'POST', '/v1/releases', {
    services: { users: { targets: [f.next.users.url], version: '2.0.0' }, orders: { targets: [f.next.orders.url] } },
    verify: { window: '1s', minRequests: 20 },
    reason: 'release 2026.11',
  })
  t.equal(created.status, 201, JSON.stringify(created.json))
  const id = created.json.id as string
  t.match(id, /^r\d+$/)
  const load = traffic(t, f.gw)
  const done = await phaseOf(f.gw, id, 'done', 15_000)
  await load.stop()
  t.same(done.history.map((h: any) => h.phase), ['deploying', 'warming', 'testing', 'verifying', 'draining', 'done'])
  t.equal(done.weight, 100)
  t.equal(done.outcome, null)
  const verdict = done.verdicts.at(-1)
  t.equal(verdict.phase, 'verifying')
  t.equal(verdict.final, true)
  t.equal(verdict.pass, true)
  t.ok(verdict.services.users.errors.new.requests > 0, 'the verdict counted the new color')
  t.ok(f.next.users.seen.some((s) => s.url === '/users/ping'), 'the smoke check reached the new users target')
  t.equal((await http1(`${f.gw.url}/users/x`)).json.backend, 'users-v2')
  t.equal((await http1(`${f.gw.url}/orders/x`)).json.backend, 'orders-v2')
  const state = (await admin(f.gw.adminUrl, 'GET', '/v1/state')).json
  t.equal(state.services.users.live, 'green')
  t.equal(state.services.users.environments.blue.state, 'idle', 'the old color has drained')
  t.equal(state.services.users.release, undefined, 'the service is free again')
  // The old colors stay whole while the new ones are verified: their drain (and its onDrained hook) starts with `draining`.
  const drainingAt = Date.parse(done.history.find((h: any) => h.phase === 'draining').at)
  const drained = (await admin(f.gw.adminUrl, 'GET', '/v1/events?type=drained')).json.events.filter((e: any) => e.service === 'users' && e.color === 'blue')
  t.equal(drained.length, 1, 'the old color drained once')
  t.ok(Date.parse(drained[0].startedAt) >= drainingAt, `its drain began with draining (${String(drained[0].startedAt)} vs ${String(done.history.find((h: any) => h.phase === 'draining').at)}), not at the switch`)
  const events = (await admin(f.gw.adminUrl, 'GET', '/v1/events?type=release')).json.events
  t.same(events.map((e: any) => e.phase), ['deploying', 'warming', 'testing', 'verifying', 'draining', 'done'], 'every phase change is an event')
  const metrics = (await http1(`${f.gw.adminUrl}/metrics`)).text
  t.match(metrics, /switchyard_releases_total\{outcome="done"\} 1/)
  t.match(metrics, /switchyard_traffic_weight\{service="users",color="green"\} 100/)
})

t.test('a stepped release sends about 10% then 50% of keyed traffic to the new color, one color per key in every service', async (t) => {
  const f = await fixture(t)
  const created = await admin(f.gw.adminUrl, 'POST', '/v1/releases', {
    services: { users: { targets: [f.next.users.url] }, orders: { targets: [f.next.orders.url] } },
    steps: [{ weight: 10, hold: '2s' }, { weight: 50, hold: '2s' }],
    verify: { window: '1s', minRequests: 50 },
  })
  t.equal(created.status, 201)
  const id = created.json.id as string
  const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`)
  const onNew = new Map<number, Set<string>>()
  for (const [step, weight] of [[0, 10], [1, 50]]) {
    await eventually(async () => {
      const r = await release(f.gw, id)
      if (r.phase !== 'shifting' || r.step !== step) throw new Error(`${String(r.phase)} step ${String(r.step)}`)
    }, { timeout: 15_000, interval: 20 })
    // Paused, the step holds while it is measured.
    t.equal((await admin(f.gw.adminUrl, 'POST', `/v1/releases/${id}/pause`, {})).json.paused, true)
    const users = await byKey(f.gw, 'users', keys)
    const orders = await byKey(f.gw, 'orders', keys)
    const r = await release(f.gw, id)
    t.equal(r.step, step, `still step ${step} after measuring`)
    const newKeys = new Set(keys.filter((k) => users.get(k) === 'users-v2'))
    const share = newKeys.size / keys.length
    // The split is a hash of the key with a random seed: over 2000 keys the share is within 4 points of the weight (binomial sd is 0.7 points at 10%, 1.1 at 50%: 3.6 sd, a false failure in about 3,000 runs).
    t.ok(Math.abs(share - weight / 100) <= 0.04, `step ${step}: ${(share * 100).toFixed(1)}% of keys on the new color, weight ${weight}%`)
    const mixed = keys.filter((k) => (users.get(k) === 'users-v2') !== (orders.get(k) === 'orders-v2'))
    t.same(mixed, [], `step ${step}: every key has the same color in users and orders`)
    t.same(keys.filter((k) => !['users-v1', 'users-v2'].includes(users.get(k) ?? '')), [], 'every request answered by v1 or v2')
    onNew.set(step, newKeys)
    t.same(r.services.users.weights, { blue: 100 - weight, green: weight })
    t.equal((await admin(f.gw.adminUrl, 'POST', `/v1/releases/${id}/resume`, {})).json.paused, false)
  }
  const moved = [...(onNew.get(0) ?? [])].filter((k) => !(onNew.get(1)?.has(k) ?? false))
  t.same(moved, [], 'a key on the new color at 10% is still there at 50%')
  const load = traffic(t, f.gw)
  const done = await phaseOf(f.gw, id, 'done', 20_000)
  await load.stop()
  t.same(done.history.map((h: any) => `${String(h.phase)}${h.weight === undefined ? '' : `:${String(h.weight)}`}`), ['deploying', 'warming', 'testing', 'shifting:10', 'shifting:50', 'verifying', 'draining', 'done'])
})

t.test('a new color 50 ms slower is reverted at the first step, with the verdict figures', async (t) => {
  const f = await fixture(t)
  for (const b of Object.values(f.next)) {
    b.handler = (req, res) => { setTimeout(() => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify({ backend: 'v2-slow' })) }, 50) }
  }
  const created = await admin(f.gw.adminUrl, 'POST', '/v1/releases', {
    services: { users: { targets: [f.next.users.url] }, orders: { targets: [f.next.orders.url] } },
    steps: [{ weight: 20, hold: '30s' }, { weight: 50, hold: '30s' }],
    verify: { minRequests: 30 },
  })
  const id = created.json.id as string
  const load = traffic(t, f.gw, 16)
  const reverted = await phaseOf(f.gw, id, 'reverted', 30_000)
  await load.stop()
  t.equal(reverted.step, 0, 'reverted at the first step')
  t.match(reverted.outcome, /latency/)
  const v = reverted.verdicts.at(-1)
  t.equal(v.pass, false)
  const bad = Object.values(v.services).find((s: any) => s.outcome === 'fail') as any
  t.ok(bad.latency.new.p50Ms >= 45, `the new color's median is about 50 ms (${String(bad.latency.new.p50Ms)})`)
  t.ok(bad.latency.old.p50Ms < 20, `the old color's median is small (${String(bad.latency.old.p50Ms)})`)
  t.ok(bad.latency.p < 0.001, `p = ${String(bad.latency.p)}`)
  const after = await byKey(f.gw, 'users', Array.from({ length: 200 }, (_, i) => `after-${i}`))
  t.same([...new Set(after.values())], ['users-v1'], 'all traffic back on the old color')
})

t.test('a new color failing 5% of requests is reverted with the error figures', async (t) => {
  const f = await fixture(t)
  let n = 0
  for (const b of Object.values(f.next)) {
    b.handler = (req, res) => {
      const fail = req.url !== '/healthz' && n++ % 20 === 0
      res.writeHead(fail ? 500 : 200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ backend: 'v2' }))
    }
  }
  const created = await admin(f.gw.adminUrl, 'POST', '/v1/releases', {
    services: { users: { targets: [f.next.users.url] }, orders: { targets: [f.next.orders.url] } },
    steps: [{ weight: 50, hold: '30s' }],
    verify: { minRequests: 100 },
  })
  const id = created.json.id as string
  const load = traffic(t, f.gw, 16)
  const reverted = await phaseOf(f.gw, id, 'reverted', 40_000)
  await load.stop()
  t.equal(reverted.step, 0)
  t.match(reverted.outcome, /error rate/)
  const v = reverted.verdicts.at(-1)
  const bad = Object.values(v.services).find((s: any) => s.outcome === 'fail') as any
  t.ok(bad.errors.new.rate > 0.03 && bad.errors.new.rate < 0.08, `new error rate ${String(bad.errors.new.rate)}`)
  t.equal(bad.errors.old.errors, 0)
  t.equal(bad.errors.outcome, 'fail')
})

t.test('refusals: bad input, a second release, a manual flip; force ends the release', async (t) => {
  const f = await fixture(t)
  const before = (await admin(f.gw.adminUrl, 'GET', '/v1/state')).json.generation
  const dup = await admin(f.gw.adminUrl, 'POST', '/v1/releases', `{"services":{"users":{"targets":["${f.next.users.url}"]},"users":{"targets":["${f.next.users.url}"]}}}`)
  t.equal(dup.status, 400)
  t.equal(dup.json.field, 'services.users', 'a service named twice')
  const unknown = await admin(f.gw.adminUrl, 'POST', '/v1/releases', { services: { nope: { targets: [f.next.users.url] } } })
  t.equal(unknown.status, 400)
  t.equal(unknown.json.field, 'services.nope')
  const weights = await admin(f.gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [f.next.users.url] } }, steps: [{ weight: 50, hold: '1s' }, { weight: 10, hold: '1s' }] })
  t.equal(weights.json.field, 'steps[1].weight')
  t.equal((await admin(f.gw.adminUrl, 'GET', '/v1/state')).json.generation, before, 'nothing changed')

  const created = await admin(f.gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [f.next.users.url] } }, steps: [{ weight: 10, hold: '60s' }] })
  const id = created.json.id as string
  await phaseOf(f.gw, id, 'shifting')
  const second = await admin(f.gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [f.next.orders.url] }, orders: { targets: [f.next.orders.url] } } })
  t.equal(second.status, 409)
  t.equal(second.json.error, 'release_in_progress')
  t.equal(second.json.release, id)
  t.same(second.json.services, ['users'])
  const other = await admin(f.gw.adminUrl, 'POST', '/v1/releases', { services: { orders: { targets: [f.next.orders.url] } } })
  t.equal(other.status, 201, 'a release of other services may run alongside')
  const flip = await admin(f.gw.adminUrl, 'POST', '/v1/services/users/flip', {})
  t.equal(flip.status, 409)
  t.equal(flip.json.error, 'release_in_progress')
  const rollback = await admin(f.gw.adminUrl, 'POST', '/v1/rollback', { services: ['users'] })
  t.equal(rollback.status, 409)
  const promoteDone = await admin(f.gw.adminUrl, 'POST', '/v1/releases/r0/promote', {})
  t.equal(promoteDone.status, 404)
  const forced = await admin(f.gw.adminUrl, 'POST', '/v1/services/users/flip', { force: true })
  t.equal(forced.status, 200)
  const ended = await release(f.gw, id)
  t.equal(ended.phase, 'aborted')
  t.match(ended.outcome, /forced flip/)
  const again = await admin(f.gw.adminUrl, 'POST', `/v1/releases/${id}/abort`, {})
  t.equal(again.status, 409)
  t.equal(again.json.error, 'release_state')
})

t.test('abort while shifting puts every key back on the old color; promote goes to 100% and verifies', async (t) => {
  const f = await fixture(t)
  const body = { services: { users: { targets: [f.next.users.url] }, orders: { targets: [f.next.orders.url] } }, steps: [{ weight: 50, hold: '60s' }], verify: { window: '60s' } }
  const a = (await admin(f.gw.adminUrl, 'POST', '/v1/releases', body)).json.id as string
  await phaseOf(f.gw, a, 'shifting')
  const keys = Array.from({ length: 300 }, (_, i) => `a-${i}`)
  t.ok([...(await byKey(f.gw, 'users', keys)).values()].includes('users-v2'), 'some keys on the new color at 50%')
  const aborted = await admin(f.gw.adminUrl, 'POST', `/v1/releases/${a}/abort`, {})
  t.equal(aborted.status, 200)
  t.equal(aborted.json.phase, 'aborted')
  t.same([...new Set((await byKey(f.gw, 'users', keys)).values())], ['users-v1'], 'after abort every key is on the old color')

  const p = (await admin(f.gw.adminUrl, 'POST', '/v1/releases', body)).json.id as string
  await phaseOf(f.gw, p, 'shifting')
  const promoted = await admin(f.gw.adminUrl, 'POST', `/v1/releases/${p}/promote`, {})
  t.equal(promoted.json.phase, 'verifying')
  t.equal(promoted.json.weight, 100)
  t.same([...new Set((await byKey(f.gw, 'users', keys)).values())], ['users-v2'])
  const again = await admin(f.gw.adminUrl, 'POST', `/v1/releases/${p}/promote`, {})
  t.equal(again.status, 409, 'a second promote does not skip the verify window')
  t.equal(again.json.error, 'release_state')
  t.equal((await release(f.gw, p)).phase, 'verifying', 'still verifying')
  const back = await admin(f.gw.adminUrl, 'POST', `/v1/releases/${p}/abort`, {})
  t.equal(back.json.phase, 'aborted')
  t.same([...new Set((await byKey(f.gw, 'users', keys)).values())], ['users-v1'], 'an abort while verifying flips every service back')
})

t.test('paused, a step does not end when its hold does', async (t) => {
  const f = await fixture(t)
  const id = (await admin(f.gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [f.next.users.url] } }, steps: [{ weight: 10, hold: '1s' }, { weight: 20, hold: '1s' }], verify: { window: '1s' } })).json.id as string
  await phaseOf(f.gw, id, 'shifting')
  await admin(f.gw.adminUrl, 'POST', `/v1/releases/${id}/pause`, {})
  await sleep(2_000)
  const held = await release(f.gw, id)
  t.equal(held.step, 0, 'still the first step a second past its hold')
  t.equal(held.paused, true)
  await admin(f.gw.adminUrl, 'POST', `/v1/releases/${id}/resume`, {})
  await phaseOf(f.gw, id, 'done', 10_000)
})

t.test('healthy releases under load pass every verdict: no false revert over repeated runs', async (t) => {
  const f = await fixture(t)
  const load = traffic(t, f.gw, 8)
  const RUNS = 3
  const outcomes: string[] = []
  let looks = 0
  for (let i = 0; i < RUNS; i++) {
    // Back and forth between the two versions: each release deploys to the color that is idle then.
    const to = i % 2 === 0 ? f.next : f.old
    const id = (await admin(f.gw.adminUrl, 'POST', '/v1/releases', {
      services: { users: { targets: [to.users.url] }, orders: { targets: [to.orders.url] } },
      steps: [{ weight: 10, hold: '1500ms' }, { weight: 50, hold: '1500ms' }],
      verify: { window: '1500ms', minRequests: 30 },
    })).json.id as string
    const r = await eventually(async () => {
      const x = await release(f.gw, id)
      if (!['done', 'reverted', 'aborted', 'failed'].includes(x.phase)) throw new Error(String(x.phase))
      return x
    }, { timeout: 20_000, interval: 50 })
    outcomes.push(r.phase)
    looks += r.verdicts.length
    if (r.phase !== 'done') t.comment(`run ${i}: ${String(r.outcome)}`)
  }
  await load.stop()
  const health = (await admin(f.gw.adminUrl, 'GET', '/v1/events?type=health')).json.events.filter((e: any) => e.healthy === false)
  t.same(health.map((e: any) => `${String(e.target)}: ${String(e.reason)}`), [], 'no target went unhealthy (a probe timing out under load would make its color answer 503)')
  t.same(outcomes, Array(RUNS).fill('done'), `${RUNS} healthy releases, ${looks} final verdicts, no revert`)
  t.same([...load.seen.keys()].filter((k) => k === 'failed' || k.includes(' ')), [], `no request failed across the releases (${[...load.seen.values()].reduce((a, b) => a + b, 0)} sent)`)
})

t.test('a release takes its services from a guard still watching an earlier flip: the guard does not revert under it', async (t) => {
  const f = await fixture(t)
  // The flip's gate needs green probed healthy (readiness waits only for the live colors).
  await eventually(async () => (await admin(f.gw.adminUrl, 'GET', '/v1/state')).json.services.users.environments.green.healthy === 1)
  t.equal((await admin(f.gw.adminUrl, 'POST', '/v1/flip', { services: ['users'] })).status, 200)
  t.equal((await admin(f.gw.adminUrl, 'GET', '/v1/state')).json.services.users.guard?.active, true, 'the guard watches users/green')
  // users is live on green (users-idle) now; the release deploys v2 to blue.
  const id = (await admin(f.gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [f.next.users.url] } }, steps: [{ weight: 10, hold: '60s' }] })).json.id as string
  await phaseOf(f.gw, id, 'shifting')
  t.equal((await admin(f.gw.adminUrl, 'GET', '/v1/state')).json.services.users.guard, null, 'the release ended the guard')
  // Green fails now: the guard, had it stayed, would revert users to blue, the release's new color, before any verdict.
  f.idle.users.handler = (req, res) => { res.writeHead(req.url === '/healthz' ? 200 : 500); res.end() }
  const answers = await byKey(f.gw, 'users', Array.from({ length: 100 }, (_, i) => `g-${i}`))
  t.ok([...answers.values()].filter((v) => v.startsWith('status 5')).length > 50, 'green failed most of them (500s, then 503s once passive health ejects its target)')
  const reverts = (await admin(f.gw.adminUrl, 'GET', '/v1/events?type=auto_revert')).json.events
  t.same(reverts, [], 'no auto-revert')
  const r = await release(f.gw, id)
  t.equal(r.phase, 'shifting', 'the release goes on')
  t.equal((await admin(f.gw.adminUrl, 'GET', '/v1/state')).json.services.users.live, 'green')
})
