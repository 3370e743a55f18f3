import t from 'tap'
import net from 'node:net'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { DEFAULTS, type HealthConfig } from '../src/config/schema.js'
import { Target, type HealthChange } from '../src/upstream/registry.js'
import { TargetSet } from '../src/upstream/target-set.js'
import { admin, eventually, http1, startBackend, startGateway, type Backend } from './helpers/index.js'

const HEALTH: HealthConfig = { ...DEFAULTS.defaults.health, healthyThreshold: 2, unhealthyThreshold: 3 }

function target (health: HealthConfig | undefined = HEALTH): { t: Target, changes: HealthChange[] } {
  const changes: HealthChange[] = []
  const tg = new Target('http://127.0.0.1:1', (c) => changes.push(c))
  tg.configure(health, undefined)
  return { t: tg, changes }
}

t.test('probe hysteresis: the first probe decides, then thresholds in a row', async (t) => {
  const { t: tg, changes } = target()
  t.equal(tg.probe, 'unknown')
  t.equal(tg.healthy, false, 'unknown targets get no traffic')
  t.equal(changes.length, 0, 'a new target starts silently')
  tg.recordProbe(true, 'ok')
  t.equal(tg.probe, 'healthy', 'the first probe decides')
  t.equal(tg.healthy, true)
  // Interleaved failures never reach 3 in a row: no flapping.
  for (let i = 0; i < 10; i++) {
    tg.recordProbe(false, 'fail')
    tg.recordProbe(false, 'fail')
    tg.recordProbe(true, 'ok')
  }
  t.equal(tg.healthy, true, 'two failures and a pass, ten times over, stay healthy')
  tg.recordProbe(false, 'fail')
  tg.recordProbe(false, 'fail')
  t.equal(tg.healthy, true)
  tg.recordProbe(false, 'fail')
  t.equal(tg.healthy, false, 'three failures in a row: unhealthy')
  tg.recordProbe(true, 'ok')
  tg.recordProbe(false, 'fail')
  tg.recordProbe(true, 'ok')
  t.equal(tg.healthy, false, 'interleaved passes do not bring it back')
  tg.recordProbe(true, 'ok')
  t.equal(tg.healthy, true, 'two passes in a row: healthy')
  t.same(changes.map((c) => [c.from, c.to, c.healthy]), [['unknown', 'healthy', true], ['healthy', 'unhealthy', false], ['unhealthy', 'healthy', true]])
  t.match(changes[1].cause, /probe: fail/)
})

t.test('assumeHealthy serves a new target until a probe says otherwise', async (t) => {
  const { t: tg } = target({ ...HEALTH, assumeHealthy: true })
  t.equal(tg.healthy, true)
  tg.recordProbe(false, 'down')
  t.equal(tg.healthy, false, 'the first probe decides')
})

t.test('without probes a target counts as healthy; passive ejection grows and ends', async (t) => {
  const changes: HealthChange[] = []
  const tg = new Target('http://127.0.0.1:1', (c) => changes.push(c))
  tg.configure(undefined, { consecutiveFailures: 3, baseEjectionTime: 40, maxEjectionTime: 100 })
  t.equal(tg.probe, 'unchecked')
  t.equal(tg.healthy, true)
  tg.recordResult(false)
  tg.recordResult(false)
  tg.recordResult(true)
  tg.recordResult(false)
  tg.recordResult(false)
  t.equal(tg.healthy, true, 'a success resets the streak')
  tg.recordResult(false)
  t.equal(tg.healthy, false, 'three failures in a row eject')
  t.ok(tg.ejected)
  const first = tg.ejectedUntil - Date.now()
  t.ok(first > 0 && first <= 40)
  await eventually(() => tg.healthy, { timeout: 1000, interval: 5 })
  for (let i = 0; i < 3; i++) tg.recordResult(false)
  const second = tg.ejectedUntil - Date.now()
  t.ok(second > 40 && second <= 80, `a second ejection in a row lasts longer (${second} ms)`)
  await eventually(() => tg.healthy, { timeout: 1000, interval: 5 })
  for (let i = 0; i < 3; i++) tg.recordResult(false)
  t.ok(tg.ejectedUntil - Date.now() <= 100, 'capped at maxEjectionTime')
  t.match(changes.find((c) => c.to === 'ejected')?.cause, /ejected for 40ms after 3 failures/)
  await tg.destroy()
})

t.test('a passing probe ends an ejection early', async (t) => {
  const { t: tg } = target({ ...HEALTH, healthyThreshold: 1 })
  tg.configure(HEALTH, { consecutiveFailures: 1, baseEjectionTime: 60_000, maxEjectionTime: 60_000 })
  tg.recordProbe(true, 'ok')
  tg.recordResult(false)
  t.equal(tg.healthy, false)
  tg.recordProbe(true, 'ok')
  t.equal(tg.healthy, true)
  t.equal(tg.ejected, false)
})

t.test('panic mode spreads traffic over all targets when too few are healthy', async (t) => {
  const a = new Target('http://a', () => {})
  const b = new Target('http://b', () => {})
  a.configure(HEALTH, undefined)
  b.configure(HEALTH, undefined)
  const ep = (x: Target): any => ({ target: x, dispatcher: null })
  const strict = new TargetSet([ep(a), ep(b)])
  const panicky = new TargetSet([ep(a), ep(b)], 50)
  t.equal(strict.pick(), undefined, 'both unknown: nothing to pick')
  t.equal(panicky.inPanic, true)
  t.ok(panicky.pick() !== undefined, 'panic: pick from all')
  a.recordProbe(true, 'ok')
  t.equal(panicky.inPanic, false, 'half healthy is not below 50%')
  t.equal(panicky.pick()?.target, a)
  t.equal(panicky.pick()?.target, a, 'only the healthy one')
})

/** A backend whose /healthz answer is switchable at run time. */
async function switchable (t: Tap.Test, name: string): Promise<Backend & { health: { status: number, delay: number }, traffic: { status: number } }> {
  const b = await startBackend(t, name) as Backend & { health: { status: number, delay: number }, traffic: { status: number } }
  b.health = { status: 200, delay: 0 }
  b.traffic = { status: 200 }
  b.handler = (req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/healthz') {
      const timer = setTimeout(() => res.writeHead(b.health.status).end(), b.health.delay)
      res.on('close', () => clearTimeout(timer))
      return
    }
    res.writeHead(b.traffic.status, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ backend: name, path: req.url }))
  }
  return b
}

/** Requests a backend got that were not health probes (probes hit every target all the time). */
function traffic (b: Backend): number {
  return b.seen.length
}

// Fast enough for tests, loose enough that a loaded CI machine does not fail healthy probes.
const FAST = '  health: { interval: 100ms, timeout: 100ms, healthyThreshold: 2, unhealthyThreshold: 2 }\n'

async function fleet (t: Tap.Test, extra = '', defaults = FAST): Promise<{ b: Awaited<ReturnType<typeof switchable>>, g: Awaited<ReturnType<typeof switchable>>, gw: Awaited<ReturnType<typeof startGateway>> }> {
  const b = await switchable(t, 'blue')
  const g = await switchable(t, 'green')
  const gw = await startGateway(t, `defaults:
${defaults}services:
  svc:
    match: { pathPrefix: /svc }
    blue: { targets: [${b.url}] }
    green: { targets: [${g.url}] }
${extra}`)
  return { b, g, gw }
}

async function st (gw: { adminUrl: string }): Promise<any> {
  return (await admin(gw.adminUrl, 'GET', '/v1/state')).json
}

t.test('readiness waits for the first probe of every live target', async (t) => {
  const { gw } = await fleet(t)
  // The first probe may already have run; either way readiness must come, and say what it waits for until then.
  const first = await admin(gw.adminUrl, 'GET', '/readyz')
  if (first.status === 503) t.match(first.json.waiting[0], /^svc\/blue http/)
  await eventually(async () => (await admin(gw.adminUrl, 'GET', '/readyz')).status === 200)
  t.same((await admin(gw.adminUrl, 'GET', '/readyz')).json, { ready: true, waiting: [] })
  t.equal((await http1(`${gw.url}/svc`)).json.backend, 'blue')
})

t.test('a probe timeout counts as a failure; the gate refuses an unhealthy color and changes nothing', async (t) => {
  const { g, gw } = await fleet(t)
  await eventually(async () => (await st(gw)).services.svc.environments.green.healthy === 1)
  g.health.delay = 1000 // > timeout 100ms
  await eventually(async () => (await st(gw)).services.svc.environments.green.targets[0].probe === 'unhealthy')
  const before = await st(gw)
  const refused = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['svc'] })
  t.equal(refused.status, 409)
  t.equal(refused.json.error, 'gate_failed')
  t.match(refused.json.failures, [{ service: 'svc', color: 'green', healthy: 0, minHealthy: 1, targets: [{ url: g.url, healthy: false, probe: 'unhealthy' }] }])
  t.equal((await st(gw)).generation, before.generation, 'nothing changed')
  t.equal((await http1(`${gw.url}/svc`)).json.backend, 'blue')
  const healthEvents = (await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.filter((e: any) => e.type === 'health')
  t.match(healthEvents.find((e: any) => e.target === g.url), { from: 'unknown', to: 'healthy', healthy: true }, 'the first probe is an event too')
  const ev = healthEvents.find((e: any) => e.to === 'unhealthy')
  t.match(ev, { type: 'health', target: g.url, from: 'healthy', to: 'unhealthy', healthy: false, services: [{ service: 'svc', color: 'green' }] })
  t.match(ev.reason, /timed out after 100ms/)

  const forced = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['svc'], force: true, guard: false, reason: 'hotfix' })
  t.equal(forced.status, 200, 'force skips the gate')
  const flipEvent = (await admin(gw.adminUrl, 'GET', '/v1/events?type=flip')).json.events.at(-1)
  t.match(flipEvent, { type: 'flip', forced: true, guard: false, reason: 'hotfix' })
  const r = await http1(`${gw.url}/svc`)
  t.equal(r.status, 503, 'the forced color has no healthy target')
  t.equal(r.json.error, 'no_healthy_upstream')
  g.health.delay = 0
  await eventually(async () => (await http1(`${gw.url}/svc`)).status === 200)
})

t.test('probe state survives a flip and a target update that keeps the URL; new targets start unknown', async (t) => {
  const { b, gw } = await fleet(t)
  await eventually(async () => (await st(gw)).services.svc.environments.green.healthy === 1)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['svc'], guard: false })).status, 200)
  b.health.status = 500
  await eventually(async () => (await st(gw)).services.svc.environments.blue.targets[0].probe === 'unhealthy')
  // Keep the blue URL, add a new one that is slow to answer its probes.
  const extra = await switchable(t, 'blue-2')
  extra.health.delay = 1000
  const put = await admin(gw.adminUrl, 'PUT', '/v1/services/svc/environments/blue/targets', { targets: [b.url, extra.url] })
  t.equal(put.status, 200)
  const blue = (await st(gw)).services.svc.environments.blue
  t.equal(blue.targets[0].probe, 'unhealthy', 'the kept URL keeps its probe state')
  t.equal(blue.targets[1].probe, 'unknown', 'a new target starts unknown')
  t.equal(blue.targets[1].healthy, false, 'and gets no traffic until probed healthy')
  t.equal(blue.healthy, 0)
  // Flipping back is refused: blue has no healthy target.
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['svc'] })).status, 409)
  extra.health.delay = 0
  await eventually(async () => (await st(gw)).services.svc.environments.blue.targets[1].probe === 'healthy')
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['svc'], guard: false })).status, 200)
  const kept = traffic(b)
  for (let i = 0; i < 4; i++) t.equal((await http1(`${gw.url}/svc`)).json.backend, 'blue-2', 'only the healthy blue target serves')
  t.equal(traffic(b), kept, 'the unhealthy blue target got none of them')
  t.equal(traffic(extra), 4, 'the healthy one got all four')
})

t.test('smoke checks run through the gateway against the new color; a failure refuses the flip', async (t) => {
  const { g, gw } = await fleet(t, `    smoke:
      - { path: /svc/ping, expectStatus: 200, bodyContains: green }
      - { method: POST, path: /svc/orders, headers: { x-dry-run: '1' }, expectStatus: 200 }
`)
  await eventually(async () => (await st(gw)).services.svc.environments.green.healthy === 1)
  g.traffic.status = 500
  const refused = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(refused.status, 409)
  t.equal(refused.json.error, 'gate_failed')
  t.equal(refused.json.failures.length, 1)
  t.match(refused.json.failures[0], {
    service: 'svc',
    color: 'green',
    smoke: [
      { check: 'GET /svc/ping', expectStatus: 200, status: 500, reason: 'status 500, expected 200' },
      { check: 'POST /svc/orders', status: 500 },
    ],
  })
  t.equal((await st(gw)).generation, 0)
  const smokeSeen = g.seen.filter((s) => s.url === '/svc/ping')
  t.ok(smokeSeen.length > 0, 'the green backend saw the smoke check')
  t.equal(smokeSeen[0].headers['x-forwarded-for'], '127.0.0.1', 'it came through the gateway')
  t.equal(g.seen.find((s) => s.url === '/svc/orders')?.headers['x-dry-run'], '1', 'check headers are sent')

  g.traffic.status = 200
  const ok = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(ok.status, 200, 'body contains "green": passes')
  t.equal((await http1(`${gw.url}/svc/x`)).json.backend, 'green')
})

t.test('guard: the new color answering 5xx after the flip is reverted in one swap', async (t) => {
  // Passive ejection off, so the error-rate rule (not "no healthy target") is what trips.
  const { b, g, gw } = await fleet(t, '    guard: { window: 30s, maxErrorRate: 0.2, minRequests: 10 }\n    passive: false\n')
  await eventually(async () => (await st(gw)).services.svc.environments.green.healthy === 1)
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { reason: 'v2' })
  t.equal(flip.status, 200)
  const guard = (await st(gw)).services.svc.guard
  t.match(guard, { active: true, color: 'green', revertsTo: 'blue', requests: 0, errors: 0, maxErrorRate: 0.2, minRequests: 10, services: ['svc'] })
  g.traffic.status = 500
  let failed = 0
  for (let i = 0; i < 30; i++) {
    const r = await http1(`${gw.url}/svc/${i}`)
    if (r.status !== 200) failed++
    if (r.json?.backend === 'blue' && r.status === 200) break
  }
  t.ok(failed >= 10 && failed <= 12, `reverted as the error rate crossed the line (${failed} failed requests)`)
  const after = await st(gw)
  t.equal(after.services.svc.live, 'blue')
  t.equal(after.services.svc.guard, null, 'the guard ended')
  t.equal(after.generation, 2)
  const ev = (await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.find((e: any) => e.type === 'auto_revert')
  t.match(ev, { type: 'auto_revert', actor: 'guard', generation: 2, changes: [{ service: 'svc', from: 'green', to: 'blue' }], trip: { service: 'svc', color: 'green', reason: 'error_rate', requests: 10 } })
  t.match(ev.reason, /error rate \d+\.\d% over 10 requests exceeds 20\.0%/)
  t.equal((await http1(`${gw.url}/svc`)).json.backend, 'blue')
  t.equal(traffic(b), 2, 'blue served the request after the revert and this one, nothing before')
  t.same(gw.gateway.controller.flipCounts.get('svc'), { manual: 1, rollback: 0, auto_revert: 1, release: 0 })
})

t.test('guard: the new color losing all its targets is reverted', async (t) => {
  const { g, gw } = await fleet(t)
  await eventually(async () => (await st(gw)).services.svc.environments.green.healthy === 1)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  g.health.status = 503
  await eventually(async () => (await st(gw)).services.svc.live === 'blue')
  const ev = (await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.find((e: any) => e.type === 'auto_revert')
  t.match(ev, { trip: { reason: 'no_healthy_target', healthyTargets: 0 } })
  t.match(ev.reason, /svc\/green: no healthy target/)
})

t.test('guard: a healthy flip is left alone and the window ends; guard: false and manual changes end it', async (t) => {
  const { gw } = await fleet(t, '    guard: { window: 1500ms, maxErrorRate: 0.05, minRequests: 5 }\n')
  await eventually(async () => (await st(gw)).services.svc.environments.green.healthy === 1)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  for (let i = 0; i < 20; i++) t.equal((await http1(`${gw.url}/svc/${i}`)).status, 200)
  const during = (await st(gw)).services.svc.guard
  t.match(during, { active: true, requests: 20, errors: 0, errorRate: 0 })
  await eventually(async () => (await st(gw)).services.svc.guard === null)
  t.equal((await st(gw)).services.svc.live, 'green', 'no revert')
  t.notOk((await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.some((e: any) => e.type === 'auto_revert'))

  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { guard: false })).status, 200)
  t.equal((await st(gw)).services.svc.guard, null, 'guard: false')
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  t.not((await st(gw)).services.svc.guard, null)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/rollback', {})).status, 200)
  t.equal((await st(gw)).services.svc.guard, null, 'a rollback ends the window')
})

t.test('passive: a target refusing connections is ejected while its sibling serves, no client-visible errors', async (t) => {
  const live = await startBackend(t, 'live')
  const g = await startBackend(t, 'green')
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const deadPort = (s.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  const dead = `http://127.0.0.1:${deadPort}`
  const gw = await startGateway(t, `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${dead}, ${live.url}] }
    green: { targets: [${g.url}] }
    passive: { consecutiveFailures: 2, baseEjectionTime: 30s }
`)
  for (let i = 0; i < 20; i++) {
    const r = await http1(`${gw.url}/x/${i}`)
    t.equal(r.status, 200, `GET ${i}`)
  }
  const blue = (await st(gw)).services.svc.environments.blue
  t.equal(blue.targets[0].healthy, false, 'the dead target is ejected')
  t.ok(blue.targets[0].ejectedUntil, 'with the time its ejection ends')
  t.equal(blue.targets[1].healthy, true)
  const ev = (await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.find((e: any) => e.type === 'health')
  t.match(ev, { target: dead, from: 'healthy', to: 'ejected', healthy: false })
  t.match(ev.reason, /ejected for 30000ms after 2 failures in a row/)
  const before = live.seen.length
  const posts = await Promise.all([0, 1, 2, 3].map(async () => await http1(`${gw.url}/p`, { method: 'POST', body: 'x' })))
  t.same(posts.map((p) => p.status), [200, 200, 200, 200], 'once ejected, even POSTs never meet it')
  t.equal(live.seen.length - before, 4)
})

t.test('a reload that turns probes on keeps serving targets until their first probe decides', async (t) => {
  const b = await switchable(t, 'blue')
  const g = await switchable(t, 'green')
  const svc = `services:\n  svc:\n    match: { pathPrefix: /svc }\n    blue: { targets: [${b.url}] }\n    green: { targets: [${g.url}] }\n`
  const gw = await startGateway(t, svc)
  t.equal((await http1(`${gw.url}/svc`)).status, 200)
  const { writeFileSync } = await import('node:fs')
  writeFileSync(gw.configFile, `log: { access: false }\ndefaults:\n  health: { interval: 5s, timeout: 1s }\n${svc}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/reload', {})).json.changed, true)
  t.equal((await http1(`${gw.url}/svc`)).status, 200, 'no 503 while the first probe is pending')
  await eventually(async () => (await st(gw)).services.svc.environments.blue.targets[0].probe === 'healthy')
})
