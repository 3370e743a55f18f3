// The release object without a gateway: request checks naming their field,
// duplicate JSON keys, each planned move on a copy of the state, and stored releases read back.

import t from 'tap'
import { findDuplicateKey } from '../src/admin/json-keys.js'
import { parseConfig } from '../src/config/load.js'
import { SwitchyardError } from '../src/errors.js'
import { newRelease, parseReleaseRequest, pruneReleases, type Release } from '../src/release/model.js'
import { endOverridden, planCreate, planDeploy, planEnd, planForward, planPause, planResume, planStep } from '../src/control/release-moves.js'
import { parseStateDocument, type PersistedState } from '../src/state/file-store.js'

const config = parseConfig(JSON.stringify({
  services: {
    users: { match: { pathPrefix: '/users' }, blue: { targets: ['http://127.0.0.1:1001'] }, green: { targets: ['http://127.0.0.1:1002'] } },
    orders: { match: { pathPrefix: '/orders' }, live: 'green', blue: { targets: ['http://127.0.0.1:1003'] }, green: { targets: ['http://127.0.0.1:1004'] }, verify: { minRequests: 300 } },
  },
}), { file: '/tmp/x.yaml', env: {} })

function refusal (fn: () => unknown): { field: unknown, message: string } {
  try {
    fn()
  } catch (err) {
    if (err instanceof SwitchyardError) return { field: err.toJSON().field, message: err.message }
    throw err
  }
  throw new Error('expected a refusal')
}

t.test('a request is refused with the field named', async (t) => {
  const ok = { services: { users: { targets: ['http://10.0.0.1:80'] } } }
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['unknown service', { services: { nope: { targets: ['http://a:1'] } } }, 'services.nope'],
    ['no services', { services: {} }, 'services'],
    ['targets not URLs', { services: { users: { targets: ['ftp://x'] } } }, 'services.users.targets[0]'],
    ['targets empty', { services: { users: { targets: [] } } }, 'services.users.targets'],
    ['duplicate target', { services: { users: { targets: ['http://a:1', 'http://a:1/'] } } }, 'services.users.targets[1]'],
    ['unknown service field', { services: { users: { targets: ['http://a:1'], colour: 'x' } } }, 'services.users.colour'],
    ['weight 0', { ...ok, steps: [{ weight: 0, hold: '1s' }] }, 'steps[0].weight'],
    ['weight 100', { ...ok, steps: [{ weight: 100, hold: '1s' }] }, 'steps[0].weight'],
    ['weight 12.5', { ...ok, steps: [{ weight: 12.5, hold: '1s' }] }, 'steps[0].weight'],
    ['weights not increasing', { ...ok, steps: [{ weight: 50, hold: '1s' }, { weight: 50, hold: '1s' }] }, 'steps[1].weight'],
    ['hold not a duration', { ...ok, steps: [{ weight: 10, hold: 'soon' }] }, 'steps[0].hold'],
    ['hold of 1e300 ms', { ...ok, steps: [{ weight: 10, hold: 1e300 }] }, 'steps[0].hold'],
    ['hold of 8 days', { ...ok, steps: [{ weight: 10, hold: '192h' }] }, 'steps[0].hold'],
    ['hold missing', { ...ok, steps: [{ weight: 10 }] }, 'steps[0].hold'],
    ['steps not a list', { ...ok, steps: { weight: 10 } }, 'steps'],
    ['verify window', { ...ok, verify: { window: 'long' } }, 'verify.window'],
    ['verify unknown', { ...ok, verify: { windw: '1s' } }, 'verify.windw'],
    ['verify margin', { ...ok, verify: { maxErrorRateIncrease: 2 } }, 'verify.maxErrorRateIncrease'],
    ['timeout', { ...ok, timeout: '-1s' }, 'timeout'],
    ['unknown field', { ...ok, force: true }, 'force'],
    ['ifGeneration', { ...ok, ifGeneration: -1 }, 'ifGeneration'],
  ]
  for (const [name, body, field] of cases) {
    const r = refusal(() => parseReleaseRequest(body, config))
    t.equal(r.field, field, `${name}: field ${field} (${r.message})`)
    t.ok(r.message.startsWith(`${field}: `), `${name}: the message names the field`)
  }
  const req = parseReleaseRequest({ ...ok, steps: [{ weight: 10, hold: '30s' }, { weight: 50, hold: 2000 }], verify: { window: '1m' }, timeout: '2m', reason: 'r' }, config)
  t.same(req.steps, [{ weight: 10, hold: 30_000 }, { weight: 50, hold: 2000 }])
  t.equal(req.verify.window, 60_000)
  t.equal(req.timeout, 120_000)
})

t.test('a key named twice in a JSON body is found, with its path', async (t) => {
  t.equal(findDuplicateKey('{"services":{"users":{"targets":[]},"users":{"targets":[]}}}'), 'services.users')
  t.equal(findDuplicateKey('{"a":1,"b":{"a":2},"c":[{"x":1},{"x":2}]}'), undefined, 'the same key in different objects is fine')
  t.equal(findDuplicateKey('{"c":[{"x":1,"x":2}]}'), 'c[].x')
  t.equal(findDuplicateKey('{"a\\"b":1,"a\\u0022b":2}'), 'a"b', 'keys compare after unescaping')
  t.equal(findDuplicateKey('{"s":"{\\"a\\":1,\\"a\\":2}"}'), undefined, 'braces inside strings are text')
  t.equal(findDuplicateKey('{"a":1,"a":1}'), 'a')
})

function baseState (): PersistedState {
  return {
    generation: 7,
    lastChange: [],
    services: { users: { live: 'blue', previous: null, targets: {} }, orders: { live: 'green', previous: 'blue', targets: {} } },
  }
}

function created (steps = [{ weight: 10, hold: 1000 }, { weight: 50, hold: 1000 }]): { state: PersistedState, release: Release } {
  const req = parseReleaseRequest({ services: { users: { targets: ['http://10.0.0.1:80'], version: '1.1' }, orders: { targets: ['http://10.0.0.2:80'] } } }, config)
  req.steps = steps
  const live = baseState()
  const release = newRelease('r8', req, (n) => live.services[n].live, config, 'test', 12345, new Date(1000).toISOString())
  return { state: planCreate(live, release), release }
}

t.test('moves: create, deploy, steps, forward, end', async (t) => {
  const { state, release } = created()
  t.same(release.services.users, { targets: ['http://10.0.0.1'], version: '1.1', from: 'blue', to: 'green' })
  t.same(release.services.orders.to, 'blue')
  t.equal(release.verify.minRequests, 300, 'the strictest service setting wins')
  t.equal(state.generation, 8)
  t.equal(state.services.users.release, 'r8')

  const deployed = planDeploy(state, 'r8', 2000)
  t.same(deployed.next.services.users.targets, { green: ['http://10.0.0.1'] })
  t.same(deployed.next.services.orders.targets, { blue: ['http://10.0.0.2'] })
  t.equal(deployed.release.phase, 'warming')
  t.equal(deployed.changes.length, 0)

  const step0 = planStep(deployed.next, 'r8', 0, 3000)
  t.same(step0.next.services.users.split, { color: 'green', weight: 10, seed: 12345 })
  t.same(step0.next.services.orders.split, { color: 'blue', weight: 10, seed: 12345 }, 'every service moves together, with one seed')
  t.equal(step0.release.weight, 10)
  const step1 = planStep(step0.next, 'r8', 1, 4000)
  t.equal(step1.next.services.users.split?.weight, 50)
  t.equal(step1.release.phaseStartedAt, new Date(4000).toISOString(), 'a step restarts the phase clock')

  const fwd = planForward(step1.next, 'r8', 5000, { users: { requests: 10, errors: 1, latency: [3, 10] } })
  t.equal(fwd.next.services.users.live, 'green')
  t.equal(fwd.next.services.users.previous, 'blue')
  t.equal(fwd.next.services.users.split, undefined)
  t.same(fwd.changes, [{ service: 'users', from: 'blue', to: 'green' }, { service: 'orders', from: 'green', to: 'blue' }])
  t.equal(fwd.event.forward, true)
  t.equal(fwd.release.weight, 100)

  const reverted = planEnd(fwd.next, 'r8', 'reverted', 6000, 'worse')
  t.equal(reverted.next.services.users.live, 'blue', 'a revert after the flip flips back')
  t.equal(reverted.next.services.orders.live, 'green')
  t.equal(reverted.next.services.users.release, undefined, 'the services are free again')
  t.equal(reverted.release.outcome, 'worse')
  t.same(reverted.release.history.map((h) => h.phase), ['deploying', 'warming', 'shifting', 'shifting', 'verifying', 'reverted'])

  const abortedMidStep = planEnd(step1.next, 'r8', 'aborted', 6000, 'by hand')
  t.equal(abortedMidStep.next.services.users.split, undefined, 'an abort while shifting removes the weights')
  t.equal(abortedMidStep.next.services.users.live, 'blue')
  t.same(abortedMidStep.changes, [], 'and changes no live color')

  const done = planEnd(fwd.next, 'r8', 'done', 7000, null)
  t.equal(done.next.services.users.live, 'green', 'done keeps the new color')
  t.equal(done.next.generation, fwd.next.generation + 1)
})

t.test('pause and resume keep what the hold had left', async (t) => {
  const { state } = created()
  const step = planStep(planDeploy(state, 'r8', 2000).next, 'r8', 0, 10_000)
  const paused = planPause(step.next, 'r8', 10_400)
  t.equal(paused.release.pausedAt, new Date(10_400).toISOString())
  const resumed = planResume(paused.next, 'r8', 15_400)
  t.equal(resumed.release.pausedAt, null)
  t.equal(resumed.release.phaseStartedAt, new Date(15_000).toISOString(), '5s paused moves the start 5s on')
  t.equal(resumed.release.phase, 'shifting')
})

t.test('a forced change over a running release ends it as aborted', async (t) => {
  const { state } = created()
  const step = planStep(planDeploy(state, 'r8', 2000).next, 'r8', 0, 3000)
  const next = endOverridden(step.next, ['users'], 4000, 'forced')
  const r = next.releases?.[0]
  t.equal(r?.phase, 'aborted')
  t.equal(next.services.orders.split, undefined, 'every service of the release lets go')
  t.equal(endOverridden(step.next, ['other'], 4000, 'x'), step.next, 'an untouched release: the same state')
})

t.test('stored releases: round trip, checks, pruning', async (t) => {
  const { state } = created()
  const step = planStep(planDeploy(state, 'r8', 2000).next, 'r8', 0, 3000)
  const text = JSON.stringify({ version: 1, ...step.next })
  const back = parseStateDocument(text, 'test')
  t.same(back.releases, step.next.releases)
  t.same(back.services.users.split, step.next.services.users.split)
  t.equal(back.services.users.release, 'r8')
  const broken = JSON.parse(text) as Record<string, any>
  broken.releases[0].phase = 'flying'
  t.throws(() => parseStateDocument(JSON.stringify(broken), 'test'), /releases\[0\]\.phase/)
  const badSplit = JSON.parse(text) as Record<string, any>
  badSplit.services.users.split.weight = 100
  t.throws(() => parseStateDocument(JSON.stringify(badSplit), 'test'), /services\.users\.split/)
  const liveSplit = JSON.parse(text) as Record<string, any>
  liveSplit.services.users.split.color = 'blue'
  t.throws(() => parseStateDocument(JSON.stringify(liveSplit), 'test'), /services\.users\.split/, 'a split toward the live color is refused')

  const many: Release[] = []
  for (let i = 0; i < 30; i++) many.push({ ...step.release, id: `r${i}`, phase: i === 3 ? 'shifting' : 'done' })
  const kept = pruneReleases(many)
  t.equal(kept.length, 21, 'twenty finished plus the running one')
  t.ok(kept.some((r) => r.id === 'r3'), 'a running release is never pruned')
  t.equal(kept[kept.length - 1].id, 'r29', 'the newest are kept')
})
