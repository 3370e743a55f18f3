// The flip gate runs outside the controller's queue: a guard's auto-revert on
// one service never waits for another service's smoke checks.

import t from 'tap'
import { admin, eventually, http1, serviceYaml, startBackend, startGateway } from './helpers/index.js'

t.test('an auto-revert lands while another flip\'s smoke check is still running', async (t) => {
  const [ab, ag, bb, bg] = await Promise.all(['a-blue', 'a-green', 'b-blue', 'b-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:
${serviceYaml('a', '/a', [ab], [ag], '    smoke: [{ path: /a/smoke, expectStatus: 200 }]\n')}
${serviceYaml('b', '/b', [bb], [bg], '    guard: { window: 30s, maxErrorRate: 0.2, minRequests: 5 }\n    passive: false\n')}`)

  // a's green holds its smoke check until told (or 8 s, so a broken build cannot hang the test).
  let smokeArrived: () => void = () => {}
  const arrived = new Promise<void>((resolve) => { smokeArrived = resolve })
  let release: () => void = () => {}
  let held = false
  ag.handler = (req, res) => {
    if (req.url?.startsWith('/a/smoke') !== true) return res.end('{}')
    held = true
    const done = (): void => { held = false; clearTimeout(cap); res.end('{"ok":true}') }
    const cap = setTimeout(done, 8000)
    release = done
    smokeArrived()
  }
  t.teardown(() => release())

  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['b'] })).status, 200, 'b goes to green, guarded')
  bg.handler = (_req, res) => { res.writeHead(500); res.end('{}') }

  let aAnswered = false
  const aFlip = admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['a'], reason: 'a v2' }).finally(() => { aAnswered = true })
  await arrived
  t.ok(held, 'a\'s smoke check is running')

  // b's new color fails: its guard trips and reverts it.
  for (let i = 0; i < 5; i++) t.equal((await http1(`${gw.url}/b/${i}`)).status, 500)
  const revertSeen = await eventually(async () => {
    const evs = (await admin(gw.adminUrl, 'GET', '/v1/events?type=auto_revert')).json.events
    return evs.length === 1 ? { held, aAnswered } : false
  }, { timeout: 4000 }).catch(() => undefined)
  t.same(revertSeen, { held: true, aAnswered: false }, 'b\'s auto_revert is recorded while a\'s smoke check is held and a\'s flip has not answered')
  t.equal((await http1(`${gw.url}/b/after`)).json.backend, 'b-blue', 'b serves from blue again')
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.a.live, 'blue', 'a has not moved yet')

  release()
  const a = await aFlip
  t.equal(a.status, 200, 'a\'s flip goes through after the revert changed the generation under it')
  t.strictSame(a.json, { generation: 3, changes: [{ service: 'a', from: 'blue', to: 'green' }] })
  t.equal(ag.seen.filter((s) => s.url.startsWith('/a/smoke')).length, 1, 'the gate ran once: the revert of b changed nothing a\'s verdict rests on')
  const evs = (await admin(gw.adminUrl, 'GET', '/v1/events?type=flip,auto_revert')).json.events
  t.same(evs.map((e: any) => [e.type, e.generation]), [['flip', 1], ['auto_revert', 2], ['flip', 3]], 'the revert is ordered before a\'s flip')
  t.equal((await http1(`${gw.url}/a/x`)).status, 200)
})

t.test('a flip whose services changed while its gate ran is planned and gated again; with ifGeneration it is refused', async (t) => {
  const [ab, ag] = await Promise.all(['a-blue', 'a-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:
${serviceYaml('a', '/a', [ab], [ag], '    smoke: [{ path: /a/smoke, expectStatus: 200 }]\n')}`)
  const next = await startBackend(t, 'a-green-v2')
  let smokes = 0
  let release: () => void = () => {}
  let arrived: () => void = () => {}
  const handler = (req: any, res: any): void => {
    if (req.url?.startsWith('/a/smoke') !== true) return res.end('{}')
    smokes++
    const cap = setTimeout(() => res.end('{}'), 8000)
    release = () => { clearTimeout(cap); res.end('{}') }
    arrived()
  }
  ab.handler = handler
  ag.handler = handler
  next.handler = handler
  t.teardown(() => release())

  // The green targets change under a running gate: the verdict was about the old ones.
  let seen = new Promise<void>((resolve) => { arrived = resolve })
  const flip = admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['a'] })
  await seen
  seen = new Promise<void>((resolve) => { arrived = resolve })
  t.equal((await admin(gw.adminUrl, 'PUT', '/v1/services/a/environments/green/targets', { targets: [next.url] })).status, 200)
  release()
  await seen
  t.equal(smokes, 2, 'gated again, against the new targets')
  t.equal(next.seen.filter((s) => s.url === '/a/smoke').length, 1)
  release()
  const res = await flip
  t.equal(res.status, 200)
  t.equal(res.json.generation, 2)

  // With ifGeneration, a change under the gate is a stale premise: 412, nothing changes.
  seen = new Promise<void>((resolve) => { arrived = resolve })
  const pinned = admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['a'], ifGeneration: 2 })
  await seen
  t.equal((await admin(gw.adminUrl, 'PUT', '/v1/services/a/environments/blue/targets', { targets: [ab.url, next.url] })).status, 200)
  release()
  const stale = await pinned
  t.equal(stale.status, 412)
  t.equal(stale.json.error, 'stale_generation')
  t.match(stale.json.message, /while the smoke checks ran/)
  const st = (await admin(gw.adminUrl, 'GET', '/v1/state')).json
  t.equal(st.generation, 3)
  t.equal(st.services.a.live, 'green')
})

t.test('concurrent flips without smoke checks each commit in one turn of the queue: none is refused', async (t) => {
  const [ab, ag] = await Promise.all(['a-blue', 'a-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:\n${serviceYaml('a', '/a', [ab], [ag])}`)
  const results = await Promise.all(Array.from({ length: 30 }, async () => await admin(gw.adminUrl, 'POST', '/v1/flip', {})))
  t.same(results.map((r) => r.status), Array(30).fill(200))
  t.same(results.map((r) => r.json.generation).sort((x: number, y: number) => x - y), Array.from({ length: 30 }, (_, i) => i + 1), 'thirty generations, one each')
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.a.live, 'blue', 'an even number of toggles')
})

t.test('a flip without "to" keeps the direction it was gated for: a revert or rollback under its gate is not undone', async (t) => {
  const [ab, ag] = await Promise.all(['a-blue', 'a-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:
${serviceYaml('a', '/a', [ab], [ag], '    smoke: [{ path: /a/smoke, expectStatus: 200 }]\n    guard: { window: 30s, maxErrorRate: 0.2, minRequests: 5 }\n    passive: false\n')}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['a'], reason: 'to green' })).status, 200, 'a goes to green, guarded')

  // blue holds its smoke check until told (or 8 s, so a broken build cannot hang the test).
  let release: () => void = () => {}
  let arrived: () => void = () => {}
  const seen = new Promise<void>((resolve) => { arrived = resolve })
  ab.handler = (req, res) => {
    if (req.url?.startsWith('/a/smoke') !== true) return res.end('{"backend":"a-blue"}')
    const cap = setTimeout(() => res.end('{}'), 8000)
    release = () => { clearTimeout(cap); res.end('{}') }
    arrived()
  }
  t.teardown(() => release())

  // The operator toggles a back to blue; while blue's smoke check runs, green fails and the guard gets there first.
  const back = admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['a'], reason: 'back to blue' })
  await seen
  // Its own smoke check still passes: only real traffic fails, as when a build breaks one feature.
  ag.handler = (req, res) => { res.writeHead(req.url?.startsWith('/a/smoke') === true ? 200 : 500); res.end('{}') }
  for (let i = 0; i < 5; i++) t.equal((await http1(`${gw.url}/a/${i}`)).status, 500)
  await eventually(async () => (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.a.live === 'blue')
  release()
  const res = await back
  t.equal(res.status, 200)
  t.strictSame(res.json, { generation: 2, changes: [] }, 'a is already on blue, where the flip was going: nothing to change')
  const st = (await admin(gw.adminUrl, 'GET', '/v1/state')).json
  t.equal(st.services.a.live, 'blue', 'the flip did not take a back to the green the guard just left')
  t.equal((await http1(`${gw.url}/a/after`)).json.backend, 'a-blue')
  t.same((await admin(gw.adminUrl, 'GET', '/v1/events?type=flip,auto_revert,rollback')).json.events.map((e: any) => e.type), ['flip', 'auto_revert'])
})
