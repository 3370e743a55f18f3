// Integration tests of the admin API against a real gateway and real backends:
// state view, flip, rollback, targets, optimistic concurrency, auth, strict input, events.

import t, { type Test } from 'tap'
import http from 'node:http'
import { readFileSync, writeFileSync } from 'node:fs'
import { isAllowedHost } from '../src/admin/server.js'
import { SwitchyardError, toSwitchyardError } from '../src/errors.js'
import { rawRequest } from './helpers/raw.js'
import { admin, eventually, http1, serviceYaml, startBackend, startGateway, type Backend, type TestGateway } from './helpers/index.js'

interface Fleet {
  gw: TestGateway
  ub: Backend
  ug: Backend
  ob: Backend
  og: Backend
}

/** Two services, users and orders, each with one blue and one green backend. */
async function fleet (t: Test, opts: { head?: string, usersExtra?: string, ordersGreen?: 'none' } = {}): Promise<Fleet> {
  const [ub, ug, ob, og] = await Promise.all(['users-blue', 'users-green', 'orders-blue', 'orders-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `${opts.head ?? ''}services:
${serviceYaml('users', '/api/users', [ub], [ug], opts.usersExtra)}
${serviceYaml('orders', '/api/orders', [ob], opts.ordersGreen === 'none' ? [] : [og])}`)
  return { gw, ub, ug, ob, og }
}

/** Which backend answers a request for this path right now. */
async function servedBy (gw: TestGateway, path: string): Promise<string> {
  const res = await http1(gw.url + path)
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${res.text}`)
  return res.json.backend
}

async function state (gw: TestGateway, token?: string): Promise<any> {
  const res = await admin(gw.adminUrl, 'GET', '/v1/state', undefined, token)
  if (res.status !== 200) throw new Error(`GET /v1/state: ${res.status} ${res.text}`)
  return res.json
}

/** Change events: `drained` ones (which follow every flip here, nothing being in flight) are left out. */
async function events (gw: TestGateway, query = ''): Promise<any[]> {
  const res = await admin(gw.adminUrl, 'GET', `/v1/events${query}`)
  if (res.status !== 200) throw new Error(`GET /v1/events: ${res.status} ${res.text}`)
  return res.json.events.filter((e: any) => e.type !== 'drained')
}

function lives (st: any): Record<string, string> {
  return Object.fromEntries(Object.entries(st.services).map(([name, s]: [string, any]) => [name, s.live]))
}

t.test('GET /v1/state describes every service and both colors', async (t) => {
  const { gw, ub, ug, ob, og } = await fleet(t)
  const st = await state(gw)
  t.equal(st.generation, 0)
  t.same(Object.keys(st.services).sort(), ['orders', 'users'])
  const users = st.services.users
  t.equal(users.live, 'blue')
  t.equal(users.previous, null)
  t.ok('guard' in users, 'guard is present')
  t.same(users.route, { pathPrefix: '/api/users' })
  t.strictSame(users.environments.blue, { state: 'live', inflight: 0, websockets: 0, targets: [{ url: ub.url, healthy: true, inflight: 0, probe: 'unchecked' }], healthy: 1, recent: { requests: Array(60).fill(0), errors: Array(60).fill(0) } })
  t.strictSame(users.environments.green, { state: 'idle', inflight: 0, websockets: 0, targets: [{ url: ug.url, healthy: true, inflight: 0, probe: 'unchecked' }], healthy: 1, recent: { requests: Array(60).fill(0), errors: Array(60).fill(0) } })
  t.same(st.services.orders.environments.blue.targets.map((x: any) => x.url), [ob.url])
  t.same(st.services.orders.environments.green.targets.map((x: any) => x.url), [og.url])
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state/')).status, 200, 'a trailing slash is the same endpoint')
})

t.test('GET /v1/state counts in-flight requests on their color', async (t) => {
  const { gw, ub } = await fleet(t)
  let release: (() => void) | undefined
  ub.handler = (_req, res) => { release = () => res.end('{}') }
  const pending = http1(`${gw.url}/api/users/slow`)
  await eventually(() => release !== undefined)
  const busy = await eventually(async () => {
    const st = await state(gw)
    return st.services.users.environments.blue.inflight === 1 ? st : false
  })
  t.equal(busy.services.users.environments.blue.targets[0].inflight, 1)
  release?.()
  t.equal((await pending).status, 200)
  await eventually(async () => (await state(gw)).services.users.environments.blue.inflight === 0)
})

t.test('POST /v1/flip of one service moves its traffic and nothing else', async (t) => {
  const { gw } = await fleet(t)
  t.equal(await servedBy(gw, '/api/users/1'), 'users-blue')
  const res = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'], reason: 'release 2' })
  t.equal(res.status, 200)
  t.strictSame(res.json, { generation: 1, changes: [{ service: 'users', from: 'blue', to: 'green' }] })
  t.equal(await servedBy(gw, '/api/users/1'), 'users-green')
  t.equal(await servedBy(gw, '/api/orders/1'), 'orders-blue')
  const st = await state(gw)
  t.equal(st.generation, 1)
  t.same(lives(st), { users: 'green', orders: 'blue' })
  t.equal(st.services.users.previous, 'blue')
  t.equal(st.services.users.environments.green.state, 'live')
  t.equal(st.services.users.environments.blue.state, 'idle')
  t.equal(st.services.orders.previous, null)
})

t.test('POST /v1/flip of several services changes them in one generation', async (t) => {
  const { gw } = await fleet(t)
  const res = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users', 'orders'] })
  t.equal(res.status, 200)
  t.equal(res.json.generation, 1, 'generation grows by one for the whole flip')
  t.same(res.json.changes.sort((a: any, b: any) => a.service.localeCompare(b.service)), [
    { service: 'orders', from: 'blue', to: 'green' },
    { service: 'users', from: 'blue', to: 'green' },
  ])
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
  t.equal(await servedBy(gw, '/api/orders'), 'orders-green')
  t.equal((await state(gw)).generation, 1)
  const evs = await events(gw)
  t.equal(evs.length, 1, 'one event for the whole flip')
  t.equal(evs[0].changes.length, 2)
})

t.test('a service named twice changes once', async (t) => {
  const { gw } = await fleet(t)
  const res = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users', 'users'] })
  t.equal(res.status, 200)
  t.strictSame(res.json.changes, [{ service: 'users', from: 'blue', to: 'green' }])
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
})

t.test('flip with `to`, flip of all, and a flip to the live color', async (t) => {
  const { gw } = await fleet(t)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'] })).status, 200)

  // `to: green` sends both to green: users already is, so only orders changes.
  const toGreen = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green', services: ['users', 'orders'] })
  t.equal(toGreen.status, 200)
  t.strictSame(toGreen.json, { generation: 2, changes: [{ service: 'orders', from: 'blue', to: 'green' }] })
  t.same(lives(await state(gw)), { users: 'green', orders: 'green' })

  // Already live: 200, no change, no new generation, no event.
  const before = await events(gw)
  const noop = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(noop.status, 200)
  t.strictSame(noop.json, { generation: 2, changes: [] })
  t.equal((await state(gw)).generation, 2)
  t.same(await events(gw), before, 'a no-op flip records nothing')

  // Send users back to blue, then a bare flip toggles every service to its other color.
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'], to: 'blue' })).json.generation, 3)
  const all = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(all.status, 200)
  t.equal(all.json.generation, 4)
  t.same(lives(await state(gw)), { users: 'green', orders: 'blue' })
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')

  // An empty body is the same as {}, but it still needs the JSON content type.
  const bare = await http1(`${gw.adminUrl}/v1/flip`, { method: 'POST', headers: { 'content-type': 'application/json' } })
  t.equal(bare.status, 200)
  t.equal(bare.json.generation, 5)
  t.same(lives(await state(gw)), { users: 'blue', orders: 'green' })
})

t.test('cross-site requests cannot drive the API (CSRF, DNS rebinding)', async (t) => {
  const { gw } = await fleet(t)
  // What a page elsewhere can send without a CORS preflight: no JSON content type.
  const simple = await http1(`${gw.adminUrl}/v1/flip`, { method: 'POST' })
  t.equal(simple.status, 415)
  const form = await http1(`${gw.adminUrl}/v1/rollback`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' })
  t.equal(form.status, 415)
  const foreign = await http1(`${gw.adminUrl}/v1/state`, { headers: { origin: 'http://evil.example' } })
  t.equal(foreign.status, 403)
  t.equal(foreign.json.error, 'forbidden_origin')
  const port = new URL(gw.adminUrl).port
  const same = await http1(`${gw.adminUrl}/v1/state`, { headers: { origin: `http://127.0.0.1:${port}` } })
  t.equal(same.status, 200, 'the dashboard, served from the admin listener itself, is fine')

  // DNS rebinding: the page's own name now resolves to this machine, so Host
  // and Origin agree and the Origin check alone passes.
  const rebound = `attacker.example:${port}`
  const flip = await http1(`${gw.adminUrl}/v1/flip`, { method: 'POST', headers: { host: rebound, origin: `http://${rebound}`, 'content-type': 'application/json' }, body: '{}' })
  t.equal(flip.status, 403)
  t.equal(flip.json.error, 'forbidden_host')
  t.equal((await state(gw)).generation, 0, 'nothing changed')
  t.equal(await servedBy(gw, '/api/users'), 'users-blue', 'nothing flipped')
  for (const path of ['/healthz', '/readyz', '/metrics', '/ui', '/v1/state', '/v1/events', '/nope']) {
    const r = await http1(`${gw.adminUrl}${path}`, { headers: { host: rebound } })
    t.equal(r.status, 403, `${path}: refused before any other processing`)
    t.equal(r.json?.error, 'forbidden_host', `${path}: forbidden_host`)
  }
})

t.test('the admin API answers only its own Host names and admin.allowedHosts', async (t) => {
  const { gw } = await fleet(t, { head: 'admin: { allowedHosts: [switchyard-admin.internal, ops.example:1] }\n' })
  const port = Number(new URL(gw.adminUrl).port)
  const status = async (host: string): Promise<number> => (await http1(`${gw.adminUrl}/v1/state`, { headers: { host } })).status
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LocalHost:${port}`, `[::1]:${port}`, `switchyard-admin.internal:${port}`, 'switchyard-admin.internal:7', 'switchyard-admin.internal', 'ops.example:1']) {
    t.equal(await status(host), 200, `${host}: allowed`)
  }
  for (const host of [`attacker.example:${port}`, 'attacker.example', '127.0.0.1', `127.0.0.1:${port + 1}`, `localhost:${port + 1}`, `ops.example:${port}`, `localhost.:${port}`, `127.0.0.1.attacker.example:${port}`, `[::2]:${port}`, '', `localhost:${port}:${port}`]) {
    t.equal(await status(host), 403, `${JSON.stringify(host)}: refused`)
  }

  // The list is read from the running config: a reload changes it, like the token.
  const yaml = readFileSync(gw.configFile, 'utf8').replace('ops.example:1', `late.example:${port}`)
  writeFileSync(gw.configFile, yaml)
  t.equal(await status(`late.example:${port}`), 403, 'not before the reload')
  const reload = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
  t.equal(reload.status, 200)
  t.equal(reload.json.changed, true, 'a change of allowedHosts is a change')
  t.equal(await status(`late.example:${port}`), 200, 'after the reload')
  t.equal(await status('ops.example:1'), 403, 'the removed entry is refused')
})

t.test('the Host check cannot be sidestepped with a second Host line or an absolute-form target', async (t) => {
  const { gw } = await fleet(t)
  const port = Number(new URL(gw.adminUrl).port)
  const ask = async (target: string, hosts: string[]): Promise<number> => {
    const head = `GET ${target} HTTP/1.1\r\n${hosts.map((h) => `Host: ${h}\r\n`).join('')}Connection: close\r\n\r\n`
    return (await rawRequest(port, head)).status
  }
  const own = `127.0.0.1:${port}`
  const evil = `attacker.example:${port}`
  t.equal(await ask('/v1/state', [own]), 200, 'one Host line of its own: answered')
  // RFC 9112 section 3.2: more than one Host line is a 400; node:http keeps only the first, so the check saw one.
  t.equal(await ask('/v1/state', [own, evil]), 400, 'its own Host, then another: refused')
  t.equal(await ask('/v1/state', [own, own]), 400, 'the same Host twice: refused')
  t.equal(await ask('/v1/state', [evil, own]), 400)
  // RFC 9112 section 3.2.2: with an absolute-form target, its authority is the host the request is for.
  t.equal(await ask(`http://${own}/v1/state`, [own]), 200, 'absolute form naming its own address: answered')
  t.equal(await ask(`http://${evil}/v1/state`, [own]), 403, 'absolute form naming another host: refused, whatever the Host line says')
  t.equal(await ask(`http://${own}/v1/state`, [evil]), 403)
  t.equal(await ask(`http://evil@${own}/v1/state`, [own]), 403, 'userinfo in the target: refused')
})

t.test('POST /v1/services/NAME/flip flips that one service', async (t) => {
  const { gw } = await fleet(t)
  const res = await admin(gw.adminUrl, 'POST', '/v1/services/orders/flip', { to: 'green', reason: 'hotfix' })
  t.equal(res.status, 200)
  t.strictSame(res.json, { generation: 1, changes: [{ service: 'orders', from: 'blue', to: 'green' }] })
  t.equal(await servedBy(gw, '/api/orders'), 'orders-green')
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
  const again = await admin(gw.adminUrl, 'POST', '/v1/services/orders/flip', {})
  t.strictSame(again.json, { generation: 2, changes: [{ service: 'orders', from: 'green', to: 'blue' }] })
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')
})

t.test('POST /v1/rollback reverts the last change, or the named services', async (t) => {
  const { gw } = await fleet(t)
  const none = await admin(gw.adminUrl, 'POST', '/v1/rollback', {})
  t.equal(none.status, 409)
  t.equal(none.json.error, 'nothing_to_roll_back')
  t.equal((await state(gw)).generation, 0)

  const neverFlipped = await admin(gw.adminUrl, 'POST', '/v1/rollback', { services: ['orders'] })
  t.equal(neverFlipped.status, 409)
  t.equal(neverFlipped.json.error, 'nothing_to_roll_back')
  t.match(neverFlipped.json.message, /orders/)

  await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users', 'orders'] })
  t.same(lives(await state(gw)), { users: 'green', orders: 'green' })

  // Bare rollback: both services of the last change, in one generation.
  const back = await admin(gw.adminUrl, 'POST', '/v1/rollback', { reason: 'errors' })
  t.equal(back.status, 200)
  t.equal(back.json.generation, 2)
  t.same(back.json.changes.sort((a: any, b: any) => a.service.localeCompare(b.service)), [
    { service: 'orders', from: 'green', to: 'blue' },
    { service: 'users', from: 'green', to: 'blue' },
  ])
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')
  const st = await state(gw)
  t.equal(st.services.users.previous, 'green')

  // Named: only users goes back to its previous color.
  const named = await admin(gw.adminUrl, 'POST', '/v1/rollback', { services: ['users'] })
  t.equal(named.status, 200)
  t.strictSame(named.json, { generation: 3, changes: [{ service: 'users', from: 'blue', to: 'green' }] })
  t.same(lives(await state(gw)), { users: 'green', orders: 'blue' })
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')
})

t.test('rollback skips the gate: it returns to the known-good color', async (t) => {
  const { gw } = await fleet(t, { usersExtra: '    gate: { minHealthy: 2 }\n' })
  const forced = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'], force: true })
  t.equal(forced.status, 200)
  const back = await admin(gw.adminUrl, 'POST', '/v1/rollback', {})
  t.equal(back.status, 200, 'blue has only one target, below minHealthy, yet rollback goes')
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
})

t.test('ifGeneration: a stale one is refused with 412 and changes nothing', async (t) => {
  const { gw, ug } = await fleet(t)
  await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'] })
  const before = await state(gw)
  t.equal(before.generation, 1)

  const stale = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['orders'], ifGeneration: 0 })
  t.equal(stale.status, 412)
  t.equal(stale.json.error, 'stale_generation')
  t.equal(stale.json.generation, 1, 'the answer carries the current generation')
  t.match(stale.json.message, /ifGeneration 0 .*generation is 1/)
  const staleOne = await admin(gw.adminUrl, 'POST', '/v1/services/orders/flip', { ifGeneration: 7 })
  t.equal(staleOne.status, 412)
  const staleRollback = await admin(gw.adminUrl, 'POST', '/v1/rollback', { ifGeneration: 0 })
  t.equal(staleRollback.status, 412)
  const staleTargets = await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/blue/targets', { targets: [ug.url], ifGeneration: 0 })
  t.equal(staleTargets.status, 412)
  t.same(await state(gw), before)
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
  t.equal((await events(gw)).length, 1)

  const current = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['orders'], ifGeneration: 1 })
  t.equal(current.status, 200)
  t.equal(current.json.generation, 2)
  t.equal(await servedBy(gw, '/api/orders'), 'orders-green')
})

t.test('two writers with the same ifGeneration: exactly one wins', async (t) => {
  const { gw } = await fleet(t)
  const [a, b] = await Promise.all([
    admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'], ifGeneration: 0 }),
    admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['orders'], ifGeneration: 0 }),
  ])
  t.same([a.status, b.status].sort(), [200, 412])
  const st = await state(gw)
  t.equal(st.generation, 1)
  const moved = Object.values(lives(st)).filter((c) => c === 'green')
  t.equal(moved.length, 1, 'only the winner changed')
})

t.test('PUT targets on the idle color, then a flip routes to them', async (t) => {
  const { gw, ug } = await fleet(t)
  const next = await startBackend(t, 'users-green-v2')
  const res = await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/green/targets', { targets: [next.url + '/'], reason: 'deploy v2' })
  t.equal(res.status, 200)
  t.strictSame(res.json, { generation: 1, service: 'users', color: 'green', targets: [next.url] }, 'the URL is normalized to its origin')
  t.equal(await servedBy(gw, '/api/users'), 'users-blue', 'setting idle targets moves no traffic')
  const st = await state(gw)
  t.equal(st.generation, 1)
  t.same(st.services.users.environments.green.targets.map((x: any) => x.url), [next.url])
  t.equal(st.services.users.environments.green.targetsFrom, 'api')
  t.equal(st.services.users.live, 'blue')

  const same = await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/green/targets', { targets: [next.url] })
  t.equal(same.status, 200)
  t.equal(same.json.generation, 1, 'the same targets again are a no-op')

  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'] })).status, 200)
  t.equal(await servedBy(gw, '/api/users'), 'users-green-v2')
  t.equal(await servedBy(gw, '/api/users'), 'users-green-v2')
  // Counted without health probes, which reach every configured target whatever it serves.
  const traffic = (b: Backend): number => b.seen.length
  t.equal(traffic(ug), 0, 'the replaced green target gets nothing')
  t.equal(traffic(next), 2, 'the new one gets both requests')
})

t.test('PUT targets on the live color: 409 unless force', async (t) => {
  const { gw } = await fleet(t)
  const hot = await startBackend(t, 'users-blue-hotfix')
  const before = await state(gw)
  const refused = await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/blue/targets', { targets: [hot.url] })
  t.equal(refused.status, 409)
  t.equal(refused.json.error, 'live_color')
  t.match(refused.json.message, /blue is the live color of users/)
  t.same(await state(gw), before)
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')

  const empty = await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/blue/targets', { targets: [], force: true })
  t.equal(empty.status, 409, 'the live color cannot be emptied, even with force')
  t.equal(empty.json.error, 'no_targets')
  t.same(await state(gw), before)

  const forced = await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/blue/targets', { targets: [hot.url], force: true })
  t.equal(forced.status, 200)
  t.equal(forced.json.generation, 1)
  t.equal(await servedBy(gw, '/api/users'), 'users-blue-hotfix')
  const ev = (await events(gw)).at(-1)
  t.equal(ev.type, 'targets')
  t.equal(ev.forced, true)
})

t.test('flip into a color with no targets is refused, and a multi-service flip is all or nothing', async (t) => {
  const { gw } = await fleet(t, { ordersGreen: 'none' })
  const before = await state(gw)
  t.same(before.services.orders.environments.green.targets, [])

  const one = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['orders'] })
  t.equal(one.status, 409)
  t.equal(one.json.error, 'no_targets')
  t.match(one.json.message, /orders: green has no targets/)

  const both = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users', 'orders'] })
  t.equal(both.status, 409)
  t.same(await state(gw), before, 'users did not move either')
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')

  const all = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(all.status, 409)
  t.same(await state(gw), before)

  // Emptying an idle color through the API has the same effect.
  t.equal((await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/green/targets', { targets: [] })).status, 200)
  const emptied = await admin(gw.adminUrl, 'POST', '/v1/services/users/flip', {})
  t.equal(emptied.status, 409)
  t.equal(emptied.json.error, 'no_targets')
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
})

t.test('the gate refuses a color below minHealthy unless force', async (t) => {
  const { gw } = await fleet(t, { usersExtra: '    gate: { minHealthy: 2 }\n' })
  const before = await state(gw)
  const refused = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users', 'orders'] })
  t.equal(refused.status, 409)
  t.equal(refused.json.error, 'gate_failed')
  t.same(refused.json.failures, [{ service: 'users', color: 'green', reason: '1 healthy target(s), gate.minHealthy is 2', healthy: 1, minHealthy: 2, targets: [] }])
  t.same(await state(gw), before, 'orders passed its gate but did not move alone')

  const forced = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'], force: true })
  t.equal(forced.status, 200)
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
  const ev = (await events(gw)).at(-1)
  t.equal(ev.forced, true, 'force skips the gate and is recorded')
})

t.test('bearer token auth on /v1', async (t) => {
  const { gw } = await fleet(t, { head: 'admin: { token: s3cret }\n' })
  const none = await admin(gw.adminUrl, 'GET', '/v1/state')
  t.equal(none.status, 401)
  t.equal(none.json.error, 'unauthorized')
  t.match(none.headers['www-authenticate'], /^Bearer/)
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state', undefined, 'wrong')).status, 401)
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state', undefined, 's3cret-and-more')).status, 401)
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state', undefined, '')).status, 401)
  t.equal((await http1(`${gw.adminUrl}/v1/state`, { headers: { authorization: 'Basic czNjcmV0' } })).status, 401)
  t.equal((await http1(`${gw.adminUrl}/v1/state`, { headers: { authorization: 's3cret' } })).status, 401)

  // A refused write changes nothing.
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'] }, 'wrong')
  t.equal(flip.status, 401)
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/events')).status, 401)
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/nope')).status, 401, 'unknown /v1 paths do not leak past auth')
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')

  const ok = await admin(gw.adminUrl, 'GET', '/v1/state', undefined, 's3cret')
  t.equal(ok.status, 200)
  t.equal(ok.json.generation, 0)
  t.equal((await http1(`${gw.adminUrl}/v1/state`, { headers: { authorization: 'bearer s3cret' } })).status, 200, 'the scheme is case-insensitive')
  t.equal((await http1(`${gw.adminUrl}/v1/state`, { headers: { authorization: 'Bearer  s3cret' } })).status, 401, 'the token is compared exactly')
  const flipped = await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'] }, 's3cret')
  t.equal(flipped.status, 200)
  t.equal(await servedBy(gw, '/api/users'), 'users-green')

  const health = await http1(`${gw.adminUrl}/healthz`)
  t.equal(health.status, 200)
  t.same(health.json, { status: 'ok' })
  t.equal((await http1(`${gw.adminUrl}/readyz`)).status, 200)
})

t.test('every bad admin input is refused with a message naming the field, and changes nothing', async (t) => {
  const { gw, ug } = await fleet(t)
  // Start from generation 1 with a previous color, so a lax check would have something to change.
  await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['users'] })
  const before = await state(gw)
  const beforeEvents = await events(gw)
  t.equal(before.generation, 1)
  const other = 'http://127.0.0.1:1'

  interface Case { name: string, method: string, path: string, body?: unknown, type?: string, status: number, error: string, message: RegExp }
  const T = (color: string, service = 'users'): string => `/v1/services/${service}/environments/${color}/targets`
  const cases: Case[] = [
    { name: 'unknown field', method: 'POST', path: '/v1/flip', body: { services: ['orders'], colour: 'green' }, status: 400, error: 'bad_request', message: /unknown field "colour"/ },
    { name: 'to: red', method: 'POST', path: '/v1/flip', body: { services: ['orders'], to: 'red' }, status: 400, error: 'bad_request', message: /"to" must be "blue" or "green"/ },
    { name: 'to: not a string', method: 'POST', path: '/v1/flip', body: { services: ['orders'], to: 1 }, status: 400, error: 'bad_request', message: /"to"/ },
    { name: 'services not a list', method: 'POST', path: '/v1/flip', body: { services: 'orders' }, status: 400, error: 'bad_request', message: /"services" must be a non-empty list/ },
    { name: 'services empty', method: 'POST', path: '/v1/flip', body: { services: [] }, status: 400, error: 'bad_request', message: /"services"/ },
    { name: 'services with a non-string', method: 'POST', path: '/v1/flip', body: { services: ['orders', 3] }, status: 400, error: 'bad_request', message: /"services"/ },
    { name: 'services with an empty name', method: 'POST', path: '/v1/flip', body: { services: [''] }, status: 400, error: 'bad_request', message: /"services"/ },
    { name: 'unknown service', method: 'POST', path: '/v1/flip', body: { services: ['nope'] }, status: 404, error: 'unknown_service', message: /unknown service: nope/ },
    { name: 'unknown service beside a known one', method: 'POST', path: '/v1/flip', body: { services: ['orders', 'nope'] }, status: 404, error: 'unknown_service', message: /nope/ },
    { name: 'force: "yes"', method: 'POST', path: '/v1/flip', body: { services: ['orders'], force: 'yes' }, status: 400, error: 'bad_request', message: /"force" must be true or false/ },
    { name: 'guard: "off"', method: 'POST', path: '/v1/flip', body: { services: ['orders'], guard: 'off' }, status: 400, error: 'bad_request', message: /"guard"/ },
    { name: 'ifGeneration -1', method: 'POST', path: '/v1/flip', body: { services: ['orders'], ifGeneration: -1 }, status: 400, error: 'bad_request', message: /"ifGeneration" must be a non-negative integer/ },
    { name: 'ifGeneration 1.5', method: 'POST', path: '/v1/flip', body: { services: ['orders'], ifGeneration: 1.5 }, status: 400, error: 'bad_request', message: /"ifGeneration"/ },
    { name: 'ifGeneration as a string of the current one', method: 'POST', path: '/v1/flip', body: { services: ['orders'], ifGeneration: '1' }, status: 400, error: 'bad_request', message: /"ifGeneration"/ },
    { name: 'ifGeneration "3"', method: 'POST', path: '/v1/flip', body: { services: ['orders'], ifGeneration: '3' }, status: 400, error: 'bad_request', message: /"ifGeneration"/ },
    { name: 'ifGeneration null', method: 'POST', path: '/v1/flip', body: { services: ['orders'], ifGeneration: null }, status: 400, error: 'bad_request', message: /"ifGeneration"/ },
    { name: 'reason as a number', method: 'POST', path: '/v1/flip', body: { services: ['orders'], reason: 42 }, status: 400, error: 'bad_request', message: /"reason" must be a string/ },
    { name: 'reason too long', method: 'POST', path: '/v1/flip', body: { services: ['orders'], reason: 'x'.repeat(1001) }, status: 400, error: 'bad_request', message: /"reason"/ },
    { name: 'invalid JSON', method: 'POST', path: '/v1/flip', body: '{"services": ["orders"]', status: 400, error: 'bad_request', message: /body is not valid JSON/ },
    { name: 'JSON array body', method: 'POST', path: '/v1/flip', body: '["orders"]', status: 400, error: 'bad_request', message: /body must be a JSON object/ },
    { name: 'JSON null body', method: 'POST', path: '/v1/flip', body: 'null', status: 400, error: 'bad_request', message: /body must be a JSON object/ },
    { name: 'JSON string body', method: 'POST', path: '/v1/flip', body: '"orders"', status: 400, error: 'bad_request', message: /body must be a JSON object/ },
    { name: 'non-JSON content type', method: 'POST', path: '/v1/flip', body: 'services=orders', type: 'application/x-www-form-urlencoded', status: 415, error: 'unsupported_media_type', message: /application\/json/ },
    { name: 'text/plain JSON', method: 'POST', path: '/v1/flip', body: '{"services":["orders"]}', type: 'text/plain', status: 415, error: 'unsupported_media_type', message: /text\/plain/ },
    { name: 'services on the one-service flip', method: 'POST', path: '/v1/services/users/flip', body: { services: ['orders'] }, status: 400, error: 'bad_request', message: /unknown field "services"/ },
    { name: 'one-service flip, to: red', method: 'POST', path: '/v1/services/orders/flip', body: { to: 'red' }, status: 400, error: 'bad_request', message: /"to"/ },
    { name: 'one-service flip of an unknown service', method: 'POST', path: '/v1/services/nope/flip', body: {}, status: 404, error: 'unknown_service', message: /nope/ },
    { name: 'rollback: unknown field', method: 'POST', path: '/v1/rollback', body: { to: 'blue' }, status: 400, error: 'bad_request', message: /unknown field "to"/ },
    { name: 'rollback: services not a list', method: 'POST', path: '/v1/rollback', body: { services: 'users' }, status: 400, error: 'bad_request', message: /"services"/ },
    { name: 'rollback: unknown service', method: 'POST', path: '/v1/rollback', body: { services: ['users', 'nope'] }, status: 404, error: 'unknown_service', message: /nope/ },
    { name: 'rollback: reason as a number', method: 'POST', path: '/v1/rollback', body: { reason: 1 }, status: 400, error: 'bad_request', message: /"reason"/ },
    { name: 'rollback: ifGeneration "1"', method: 'POST', path: '/v1/rollback', body: { ifGeneration: '1' }, status: 400, error: 'bad_request', message: /"ifGeneration"/ },
    { name: 'rollback: invalid JSON', method: 'POST', path: '/v1/rollback', body: '{', status: 400, error: 'bad_request', message: /not valid JSON/ },
    { name: 'targets missing', method: 'PUT', path: T('blue'), body: {}, status: 400, error: 'bad_request', message: /"targets" must be a list/ },
    { name: 'targets not a list', method: 'PUT', path: T('blue'), body: { targets: other }, status: 400, error: 'bad_request', message: /"targets" must be a list/ },
    { name: 'targets with a bad URL', method: 'PUT', path: T('blue'), body: { targets: [other, 'not a url'] }, status: 400, error: 'bad_request', message: /^targets\[1\]: / },
    { name: 'targets with a non-http URL', method: 'PUT', path: T('blue'), body: { targets: ['ftp://127.0.0.1:21'] }, status: 400, error: 'bad_request', message: /^targets\[0\]: / },
    { name: 'targets with a number', method: 'PUT', path: T('blue'), body: { targets: [other, 8080] }, status: 400, error: 'bad_request', message: /^targets\[1\]: / },
    { name: 'duplicate targets', method: 'PUT', path: T('blue'), body: { targets: [other, ug.url, other + '/'] }, status: 400, error: 'bad_request', message: /^targets\[2\]: duplicate target/ },
    { name: 'targets: unknown field', method: 'PUT', path: T('blue'), body: { targets: [other], colour: 'blue' }, status: 400, error: 'bad_request', message: /unknown field "colour"/ },
    { name: 'targets: force "yes" on the live color', method: 'PUT', path: T('green'), body: { targets: [other], force: 'yes' }, status: 400, error: 'bad_request', message: /"force"/ },
    { name: 'targets: ifGeneration 1.5', method: 'PUT', path: T('blue'), body: { targets: [other], ifGeneration: 1.5 }, status: 400, error: 'bad_request', message: /"ifGeneration"/ },
    { name: 'targets: JSON array body', method: 'PUT', path: T('blue'), body: `[${JSON.stringify(other)}]`, status: 400, error: 'bad_request', message: /JSON object/ },
    { name: 'unknown color in the path', method: 'PUT', path: T('red'), body: { targets: [other] }, status: 404, error: 'not_found', message: /unknown color "red"/ },
    { name: 'targets of an unknown service', method: 'PUT', path: T('blue', 'nope'), body: { targets: [other] }, status: 404, error: 'unknown_service', message: /nope/ },
    { name: 'GET on /v1/flip', method: 'GET', path: '/v1/flip', status: 405, error: 'method_not_allowed', message: /use POST/ },
    { name: 'POST on /v1/state', method: 'POST', path: '/v1/state', body: {}, status: 405, error: 'method_not_allowed', message: /use GET/ },
    { name: 'POST on targets', method: 'POST', path: T('blue'), body: { targets: [other] }, status: 405, error: 'method_not_allowed', message: /use PUT/ },
    { name: 'GET on the one-service flip', method: 'GET', path: '/v1/services/users/flip', status: 405, error: 'method_not_allowed', message: /use POST/ },
    { name: 'DELETE on rollback', method: 'DELETE', path: '/v1/rollback', status: 405, error: 'method_not_allowed', message: /use POST/ },
    { name: 'unknown endpoint', method: 'GET', path: '/v1/nope', status: 404, error: 'not_found', message: /no admin endpoint GET \/v1\/nope/ },
    { name: 'unknown service sub-path', method: 'POST', path: '/v1/services/users/explode', body: {}, status: 404, error: 'not_found', message: /no admin endpoint/ },
    { name: 'since not a number', method: 'GET', path: '/v1/events?since=abc', status: 400, error: 'bad_request', message: /"since"/ },
    { name: 'since negative', method: 'GET', path: '/v1/events?since=-1', status: 400, error: 'bad_request', message: /"since"/ },
    { name: 'since fractional', method: 'GET', path: '/v1/events?since=1.5', status: 400, error: 'bad_request', message: /"since"/ },
    { name: 'since empty', method: 'GET', path: '/v1/events?since=', status: 400, error: 'bad_request', message: /"since"/ },
    { name: 'since in hex', method: 'GET', path: '/v1/events?since=0x1', status: 400, error: 'bad_request', message: /"since"/ },
    { name: 'bad percent-encoding in the service', method: 'POST', path: '/v1/services/%E0%A4%A/flip', body: {}, status: 400, error: 'bad_request', message: /service in the path/ },
    { name: 'bad percent-encoding in the color', method: 'PUT', path: '/v1/services/users/environments/%E0%A4%A/targets', body: { targets: [other] }, status: 400, error: 'bad_request', message: /color in the path/ },
    { name: 'percent-encoded unknown color', method: 'PUT', path: '/v1/services/users/environments/%72ed/targets', body: { targets: [other] }, status: 404, error: 'not_found', message: /unknown color "red"/ },
  ]
  for (const c of cases) {
    const headers: Record<string, string> = {}
    let body: string | undefined
    if (c.body !== undefined) {
      body = typeof c.body === 'string' ? c.body : JSON.stringify(c.body)
      headers['content-type'] = c.type ?? 'application/json'
    }
    const res = await http1(gw.adminUrl + c.path, { method: c.method, headers, body })
    t.equal(res.status, c.status, `${c.name}: status`)
    t.equal(res.json?.error, c.error, `${c.name}: error code`)
    t.match(res.json?.message, c.message, `${c.name}: message`)
    if (c.status === 405) t.ok(res.headers.allow, `${c.name}: Allow header`)
    const after = await state(gw)
    t.equal(after.generation, before.generation, `${c.name}: same generation`)
    t.same(lives(after), lives(before), `${c.name}: same live colors`)
    t.same(after, before, `${c.name}: state unchanged`)
  }
  t.same(await events(gw), beforeEvents, 'no event was recorded')
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')

  // The field that failed is in the body too, for scripts.
  const named = await admin(gw.adminUrl, 'PUT', T('blue'), { targets: [other, 'nope'] })
  t.equal(named.json.field, 'targets[1]')
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { ifGeneration: 'x' })).json.field, 'ifGeneration')
})

t.test('a body over the size limit is refused with 413', async (t) => {
  const { gw } = await fleet(t)
  // A valid JSON flip, just too big: streamed, and the answer taken as soon as it
  // comes (the server may stop reading and close once it has refused).
  const big = Buffer.from(JSON.stringify({ reason: 'x'.repeat(1024 * 1024 + 10) }))
  const res = await new Promise<{ status: number, json: any }>((resolve, reject) => {
    const req = http.request(`${gw.adminUrl}/v1/flip`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': big.length } }, (r) => {
      let text = ''
      r.on('data', (c) => { text += String(c) })
      r.on('end', () => resolve({ status: r.statusCode ?? 0, json: JSON.parse(text) }))
      r.on('error', reject)
    })
    req.on('error', () => {}) // EPIPE/ECONNRESET writing the rest after the answer: expected
    let at = 0
    const write = (): void => {
      while (at < big.length) {
        const chunk = big.subarray(at, at + 64 * 1024)
        at += chunk.length
        if (!req.write(chunk)) return void req.once('drain', write)
      }
      req.end()
    }
    write()
  })
  t.equal(res.status, 413)
  t.equal(res.json.error, 'payload_too_large')
  const st = await state(gw)
  t.equal(st.generation, 0)
  t.same(lives(st), { users: 'blue', orders: 'blue' })
})

t.test('GET /v1/events: flip, targets and rollback events, newest last, ?since', async (t) => {
  const { gw, ub } = await fleet(t)
  t.same(await events(gw), [])
  const t0 = Date.now()
  const flip = await http1(`${gw.adminUrl}/v1/flip`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-switchyard-actor': 'alice' },
    body: JSON.stringify({ services: ['users'], reason: 'release 42' }),
  })
  t.equal(flip.status, 200)
  const next = await startBackend(t, 'users-blue-v2')
  t.equal((await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/blue/targets', { targets: [next.url], reason: 'stage v2' })).status, 200)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/rollback', {})).status, 200)
  t.equal(await servedBy(gw, '/api/users'), 'users-blue-v2', 'rollback goes to the blue targets set through the API')

  const evs = await events(gw)
  t.equal(evs.length, 3)
  t.same(evs.map((e) => e.type), ['flip', 'targets', 'rollback'])
  t.same(evs.map((e) => e.generation), [1, 2, 3])
  const ids = evs.map((e) => e.id)
  t.ok(ids[0] < ids[1] && ids[1] < ids[2], 'ids grow')
  for (const e of evs) {
    t.type(e.id, 'number')
    t.type(e.time, 'string')
    t.ok(Date.parse(e.time) >= t0 - 1000 && Date.parse(e.time) <= Date.now() + 1000, 'time is now-ish ISO')
    t.match(e.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/)
  }
  t.match(evs[0], { type: 'flip', reason: 'release 42', actor: 'alice', changes: [{ service: 'users', from: 'blue', to: 'green' }] })
  t.match(evs[1], { type: 'targets', reason: 'stage v2', actor: 'api', service: 'users', color: 'blue', from: [ub.url], to: [next.url] })
  t.match(evs[2], { type: 'rollback', reason: null, actor: 'api', changes: [{ service: 'users', from: 'green', to: 'blue' }] })

  t.same((await events(gw, `?since=${ids[0]}`)).map((e) => e.id), [ids[1], ids[2]])
  t.same(await events(gw, `?since=${ids[2]}`), [])
  t.same((await events(gw, '?since=0')).length, 3)

  const bad = await admin(gw.adminUrl, 'GET', '/v1/events?since=two')
  t.equal(bad.status, 400)
  t.equal(bad.json.field, 'since')
})

t.test('a reload that changes only engine, client deadlines or trustedProxies says a restart is needed', async (t) => {
  const { gw } = await fleet(t)
  const original = readFileSync(gw.configFile, 'utf8')
  const engine = /^engine: node/m.test(original) ? 'fast' : 'node'
  const cases: Array<[string, string]> = [
    ['engine', `engine: ${engine}\n`],
    ['client', 'client: { headerTimeout: 5s }\n'],
    ['trustedProxies', 'trustedProxies: [10.0.0.0/8]\n'],
    ['engine, trustedProxies', `engine: ${engine}\ntrustedProxies: [10.0.0.0/8]\n`],
  ]
  for (const [fields, head] of cases) {
    writeFileSync(gw.configFile, head + original.replace(/^engine: .*\n/m, /engine/.test(head) ? '' : '$&'))
    const res = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
    t.equal(res.status, 400, `${fields}: refused, not "changed: false"`)
    t.equal(res.json.error, 'bad_request')
    t.match(res.json.message, `reload cannot change ${fields}: restart the gateway`)
    t.same(res.json.fields, fields.split(', '), `${fields}: the fields are named`)
    t.equal((await state(gw)).generation, 0, `${fields}: nothing changed`)
  }
  writeFileSync(gw.configFile, original)
  t.same((await admin(gw.adminUrl, 'POST', '/v1/reload', {})).json.changed, false, 'the original file again is no change')
})

t.test('an unexpected error answers 500 internal without its own text; the log line has the id the answer carries', async (t) => {
  const { gw } = await fleet(t)
  const secret = 'ENOENT: /srv/secret/path/token.txt'
  gw.gateway.controller.describe = () => { throw new Error(secret) }
  const res = await admin(gw.adminUrl, 'GET', '/v1/state')
  t.equal(res.status, 500)
  t.equal(res.json.error, 'internal')
  t.equal(res.json.message, 'internal error')
  t.match(res.json.id, /^[0-9a-f]{16}$/)
  t.notOk(res.text.includes('/srv/secret'), 'the raw message is not echoed')
  t.same(Object.keys(res.json).sort(), ['error', 'id', 'message'])

  const reported: Array<[string, unknown]> = []
  const e = toSwitchyardError(new Error(secret), (id, err) => reported.push([id, err]))
  t.equal(reported.length, 1)
  t.equal((reported[0][1] as Error).message, secret, 'the real message goes to the log')
  t.strictSame(e.toJSON(), { error: 'internal', message: 'internal error', id: reported[0][0] }, 'under the id the answer carries')
  const coded = new SwitchyardError('live_color', 'blue is live')
  t.equal(toSwitchyardError(coded, () => t.fail('a coded error is not reported')), coded, 'coded errors pass through')
})

t.test('isAllowedHost: a wildcard listener reached by IP, IPv6, the configured listen host', async (t) => {
  const config = (host: string, allowedHosts: string[] = []): any => ({ admin: { listen: { host, port: 9901 }, allowedHosts } })
  t.ok(isAllowedHost('10.0.0.5:9901', { localAddress: '::ffff:10.0.0.5', localPort: 9901 }, config('::')), 'dual-stack wildcard reached over IPv4')
  t.ok(isAllowedHost('10.0.0.5:9901', { localAddress: '10.0.0.5', localPort: 9901 }, config('0.0.0.0')))
  t.notOk(isAllowedHost('10.0.0.6:9901', { localAddress: '10.0.0.5', localPort: 9901 }, config('0.0.0.0')), 'another address')
  t.ok(isAllowedHost('[FD00::1]:9901', { localAddress: 'fd00::1', localPort: 9901 }, config('::')), 'IPv6, case-insensitive')
  t.ok(isAllowedHost('admin.internal:9901', { localAddress: '10.0.0.5', localPort: 9901 }, config('admin.internal')), 'the configured listen host')
  t.notOk(isAllowedHost('admin.internal:9902', { localAddress: '10.0.0.5', localPort: 9901 }, config('admin.internal')), 'with the port the request arrived on')
  t.ok(isAllowedHost('localhost', { localPort: 80 }, config('127.0.0.1')), 'no port is port 80')
  t.ok(isAllowedHost('[::1]:8443', { localPort: 1 }, config('127.0.0.1', ['[::1]:8443'])), 'an IPv6 allowedHosts entry with a port')
  t.notOk(isAllowedHost(undefined, { localPort: 9901 }, config('127.0.0.1')), 'no Host at all')
})
