// Attacks on releases: inputs and races that the release code must survive,
// each a test that failed on the code it was written against.

import t from 'tap'
import { parseConfig } from '../src/config/load.js'
import { newRelease, parseReleaseRequest } from '../src/release/model.js'
import { endOverridden, planCreate, planDeploy, planForward, planPause, planResume, planStep } from '../src/control/release-moves.js'
import { parseStateDocument, type PersistedState } from '../src/state/file-store.js'
import { admin, startBackend, startGateway } from './helpers/index.js'

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
  const next = endOverridden(flipped, ['users'], 6_000, 'overridden by a forced flip')
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
