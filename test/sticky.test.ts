// Sticky holds as routing state: built into the snapshot from RoutingState.sticky
// (what every worker process is given), ended by the clock, never persisted.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseConfig } from '../src/config/load.js'
import { chooseFor } from '../src/routing/choose.js'
import { buildSnapshot, configureTargets, type RoutingState, type ServiceRoute } from '../src/routing/snapshot.js'
import { TargetRegistry } from '../src/upstream/registry.js'
import { admin, eventually, http1, serviceYaml, startBackend, startGateway } from './helpers/index.js'

const CONFIG = parseConfig(`services:
  svc:
    match: { pathPrefix: / }
    live: green
    blue: { targets: ['http://127.0.0.1:1'] }
    green: { targets: ['http://127.0.0.1:2'] }
    sticky: { cookie: sy }
    health: { path: /healthz }
  plain:
    match: { pathPrefix: /plain }
    live: green
    blue: { targets: ['http://127.0.0.1:3'] }
    green: { targets: ['http://127.0.0.1:4'] }
`)

function routeWith (t: { teardown: (fn: () => unknown) => void }, sticky: RoutingState['sticky'], name = 'svc'): ServiceRoute {
  const registry = new TargetRegistry()
  t.teardown(async () => await registry.destroy())
  const snapshot = buildSnapshot(CONFIG, { generation: 1, services: {}, sticky }, registry)
  for (const target of configureTargets(snapshot)) target.setProbe('healthy')
  return snapshot.services.get(name) as ServiceRoute
}

const pick = (route: ServiceRoute, cookie?: string): { color: string, setCookie: string | undefined } => {
  const c = chooseFor(route, undefined, { cookie, header: () => undefined })
  return { color: c.color.color, setCookie: c.setCookie }
}

t.test('a hold in the routing state keeps pinned sessions on the draining color until its time', async (t) => {
  const held = routeWith(t, { svc: { color: 'blue', until: Date.now() + 60_000 } })
  t.same(pick(held, 'sy=blue'), { color: 'blue', setCookie: undefined }, 'a session pinned to the held color stays there')
  t.same(pick(held, 'a=1; sy=green'), { color: 'green', setCookie: undefined })
  t.same(pick(held), { color: 'green', setCookie: 'sy=green; Path=/; HttpOnly; SameSite=Lax' }, 'a new session goes live')

  const expired = routeWith(t, { svc: { color: 'blue', until: Date.now() - 1 } })
  t.same(pick(expired, 'sy=blue'), { color: 'green', setCookie: 'sy=green; Path=/; HttpOnly; SameSite=Lax' }, 'past its time the session moves live, no message needed')

  t.same(pick(routeWith(t, undefined), 'sy=blue'), { color: 'green', setCookie: 'sy=green; Path=/; HttpOnly; SameSite=Lax' }, 'no hold: live')
  t.equal(routeWith(t, { svc: { color: 'green', until: Date.now() + 60_000 } }).stickyHold, undefined, 'a hold on the live color is dropped')
  t.equal(routeWith(t, { plain: { color: 'blue', until: Date.now() + 60_000 } }, 'plain').stickyHold, undefined, 'a service without sticky sessions ignores a hold')
})

t.test('a held color with no healthy target does not keep its sessions', async (t) => {
  const route = routeWith(t, { svc: { color: 'blue', until: Date.now() + 60_000 } })
  for (const e of route.colors.blue.targets.endpoints) e.target.setProbe('unhealthy')
  t.same(pick(route, 'sy=blue'), { color: 'green', setCookie: 'sy=green; Path=/; HttpOnly; SameSite=Lax' })
})

t.test('the hold is not written to the state file, and a hurried drain ends it early', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `state: { file: ./state.json }\nservices:\n${serviceYaml('svc', '/', [b], [g], '    sticky: { cookie: sy }\n    drain: { timeout: 30s }\n')}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  t.equal((await http1(`${gw.url}/a`, { headers: { cookie: 'sy=blue' } })).json.backend, 'blue', 'held for 30 s')
  const saved = JSON.parse(readFileSync(join(gw.dir, 'state.json'), 'utf8'))
  t.equal(saved.services.svc.live, 'green')
  t.notOk('sticky' in saved, 'the state file has no hold: a drain does not outlive its process')

  const hurried = await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', { timeout: 200, wait: true })
  t.equal(hurried.status, 200)
  const moved = await http1(`${gw.url}/a`, { headers: { cookie: 'sy=blue' } })
  t.equal(moved.json.backend, 'green', 'the hold ended with the hurried drain')
  t.equal(moved.headers['set-cookie'], 'sy=green; Path=/; HttpOnly; SameSite=Lax')
  await eventually(async () => (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments.blue.state === 'idle')
})

t.test('a hold that ends while another change is being saved stays ended', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const g2 = await startBackend(t, 'green2')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g], '    sticky: { cookie: sy }\n    drain: { timeout: 30s }\n')}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  t.equal((await http1(`${gw.url}/a`, { headers: { cookie: 'sy=blue' } })).json.backend, 'blue', 'held')

  // Hold the next state write open: the change is built, not yet swapped in.
  const store = (gw.gateway.controller as unknown as { store: { file: { save: (s: unknown) => Promise<void> } } }).store.file
  const save = store.save.bind(store)
  let release = (): void => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  let saving = false
  store.save = async (s) => {
    saving = true
    await gate
    await save(s)
  }
  const change = admin(gw.adminUrl, 'PUT', '/v1/services/svc/environments/green/targets', { targets: [g.url, g2.url], force: true })
  await eventually(() => saving)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', { timeout: 100, wait: true })).status, 200, 'the drain is hurried and ends meanwhile')
  t.not((await http1(`${gw.url}/a`, { headers: { cookie: 'sy=blue' } })).json.backend, 'blue', 'the hold ended with it')
  release()
  t.equal((await change).status, 200)
  const after = await http1(`${gw.url}/a`, { headers: { cookie: 'sy=blue' } })
  t.not(after.json.backend, 'blue', 'the saved change did not bring the ended hold back')
  t.equal(after.headers['set-cookie'], 'sy=green; Path=/; HttpOnly; SameSite=Lax')
})

t.test('draining a color that was not serving anything holds no sessions on it', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g], '    sticky: { cookie: sy }\n    drain: { timeout: 30s }\n')}`)
  // green is idle (the color a new build is deployed to); a stale or forged cookie names it.
  const res = await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', { color: 'green' })
  t.equal(res.status, 200)
  const r = await http1(`${gw.url}/a`, { headers: { cookie: 'sy=green' } })
  t.equal(r.json.backend, 'blue', 'the session goes live, not to the idle color the drain was asked for')
  t.equal(r.headers['set-cookie'], 'sy=blue; Path=/; HttpOnly; SameSite=Lax')
  t.equal(g.seen.filter((s) => s.url === '/a').length, 0, 'green got no traffic')
})
