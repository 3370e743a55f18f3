// Shadow traffic under review: each test here is a defect a reviewer found in
// the merged code, kept as a test that failed before its fix.

import t from 'tap'
import { parseConfig } from '../src/config/load.js'
import type { ShadowConfig } from '../src/config/schema.js'
import { createComparer } from '../src/shadow/compare.js'
import { createShadowBook } from '../src/shadow/tally.js'
import type { Answer } from '../src/shadow/types.js'
import { describeShadow, emptyView, LocalShadow, SHADOW_PARTS } from '../src/control/shadow.js'
import { parseStateDocument, StateFileError } from '../src/state/file-store.js'
import { buildSnapshot, type RoutingState } from '../src/routing/snapshot.js'
import { ShadowRoute } from '../src/shadow/mirror.js'
import { TargetRegistry } from '../src/upstream/registry.js'
import type { UpstreamUser } from '../src/upstream/h1-pool.js'
import { admin, http1, startBackend, tempDir } from './helpers/index.js'
import { answer, drive, endpointFor, rawUpstream, RecordingComparer, RecordingTally, targets } from './helpers/shadow-upstream.js'
import { Gateway } from '../src/gateway.js'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

const TWO = `services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [http://127.0.0.1:1] }
    green: { targets: [http://127.0.0.1:2] }
    shadow: { sample: 1 }
  orders:
    match: { pathPrefix: /orders }
    blue: { targets: [http://127.0.0.1:3] }
    green: { targets: [http://127.0.0.1:4] }
`

t.test('a snapshot built for a change that is then refused leaves the comparison in force, and its counts, alone', async (t) => {
  const config = parseConfig(TWO, { env: {} })
  const registry = new TargetRegistry()
  t.teardown(async () => { await registry.destroy() })
  const local = new LocalShadow(SHADOW_PARTS)
  const state: RoutingState = { generation: 1, services: { users: { live: 'blue', previous: null, targets: {} }, orders: { live: 'blue', previous: null, targets: {} } } }
  const inForce = buildSnapshot(config, state, registry, local)
  local.installed(inForce)
  const key = inForce.services.get('users')?.shadowKey as string
  const tally = (inForce.services.get('users')?.shadow as ShadowRoute).plan.tally
  for (let i = 0; i < 5; i++) {
    tally.sent()
    tally.pair([{ where: '$.plan', live: '1', other: '2' }], true)
  }
  t.match(local.comparison('users', key), { sent: 5 })

  // One change: new idle targets for users, and orders onto a color with none (the build throws, nothing is swapped).
  const refused: RoutingState = { generation: 2, services: { users: { live: 'blue', previous: null, targets: { green: ['http://127.0.0.1:5'] } }, orders: { live: 'green', previous: 'blue', targets: { green: [] } } } }
  t.throws(() => buildSnapshot(config, refused, registry, local), /orders: live color green has no targets/)
  t.match(local.comparison('users', key), { sent: 5 }, 'the comparison in force is still read (GET .../shadow, the gate)')

  // The next change that does go in (say, a sticky hold) keeps the same comparison and its counts.
  const next = buildSnapshot(config, { ...state, generation: 3 }, registry, local)
  local.installed(next)
  t.equal((next.services.get('users')?.shadow as ShadowRoute).plan.tally, tally, 'the same comparison goes on')
  t.match(local.comparison('users', key), { sent: 5 })

  // A flip that goes in starts a fresh one, and a flip back another.
  const flipped = buildSnapshot(config, { generation: 4, services: { users: { live: 'green', previous: 'blue', targets: {} }, orders: state.services.orders } }, registry, local)
  local.installed(flipped)
  const flippedTally = (flipped.services.get('users')?.shadow as ShadowRoute).plan.tally
  t.not(flippedTally, tally)
  const back = buildSnapshot(config, { ...state, generation: 5 }, registry, local)
  local.installed(back)
  const backTally = (back.services.get('users')?.shadow as ShadowRoute).plan.tally
  t.not(backTally, tally, 'a flip back is another comparison: fresh')
  t.equal(local.comparison('users', key)?.sent, 0)

  // A snapshot swapped in while a change is being written (a sticky hold) does not lose that change's comparison.
  const flip = buildSnapshot(config, { generation: 6, services: { users: { live: 'green', previous: 'blue', targets: {} }, orders: state.services.orders } }, registry, local)
  local.installed(buildSnapshot(config, { ...state, generation: 5 }, registry, local))
  local.installed(flip)
  const flipKey = flip.services.get('users')?.shadowKey as string
  ;(flip.services.get('users')?.shadow as ShadowRoute).plan.tally.sent()
  t.match(local.comparison('users', flipKey), { sent: 1 }, 'the flip\'s comparison is the one read once it is in')
})

t.test('a shadow session\'s expiry timer that fires before any session ended is set again (a timer cannot wait past 24.8 days)', async (t) => {
  const dir = tempDir(t)
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const file = join(dir, 'switchyard.yaml')
  const text = `log: { access: false }\nservices:\n  users:\n    match: { pathPrefix: /users }\n    blue: { targets: [${blue.url}] }\n    green: { targets: [${green.url}] }\n`
  writeFileSync(file, text)
  const gateway = new Gateway(parseConfig(text, { file, env: {} }), { env: {}, listen: { host: '127.0.0.1', port: 0 }, adminListen: { host: '127.0.0.1', port: 0 } })
  await gateway.start()
  t.teardown(async () => { await gateway.stop(500) })
  const started = await admin(gateway.adminUrl, 'POST', '/v1/services/users/shadow', { sample: 0.5, duration: 30 * 86_400_000 })
  t.equal(started.status, 200, started.text)
  const c = gateway.controller as unknown as { shadowTimer: NodeJS.Timeout | undefined, expireShadow: () => Promise<void> }
  t.ok(c.shadowTimer !== undefined, 'a timer for the session\'s end')
  // What setTimeout does with the clamped delay: it fires at 2^31-1 ms, 5 days before the end.
  clearTimeout(c.shadowTimer)
  c.shadowTimer = undefined
  await c.expireShadow()
  t.ok(c.shadowTimer !== undefined, 'nothing ended yet: the timer is set again for the end')
  t.match((await admin(gateway.adminUrl, 'GET', '/v1/services/users/shadow')).json, { active: true, source: 'api' })
})

function settings (over: Partial<ShadowConfig> = {}): ShadowConfig {
  return { sample: 1, methods: ['GET', 'HEAD', 'POST'], unsafe: true, ignore: { headers: [], json: [] }, redact: [], maxBody: 65536, maxConcurrent: 32, timeout: 5000, noise: 0, learn: 0, ...over }
}

t.test('a request whose body the exchange never read whole (the upstream answered early) is not copied', async (t) => {
  const idle = await rawUpstream(t)
  const tally = new RecordingTally()
  const route = new ShadowRoute({ service: 'users', settings: settings(), live: targets(), idle: targets(endpointFor(t, idle.url)), tally, comparer: new RecordingComparer(), until: undefined })
  const tap = route.sample('POST')
  if (tap === undefined) throw new Error('not sampled')
  // The engines end a tap whole when the answer went out whole, even when the upstream answered
  // (a 413, a redirect) before the client's body was all sent: `requestBody(_, last)` never said last.
  tap.request('POST', '/orders', 'host: gw\r\ncontent-length: 10\r\n')
  tap.requestBody(Buffer.from('{"n":'), false)
  tap.head(413, 'content-length: 0\r\n', false)
  tap.end()
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(idle.seen.map((r) => `${r.method} ${r.body.toString()}`), [], 'a cut request is not sent again (its copy would be another request: 5 of 10 bytes, content-length 5)')
})

t.test('bytes that came before a copy\'s request was written are never taken as its answer', async (t) => {
  const idle = await rawUpstream(t, (req) => req.socket.write(answer(200, ['x-v', 'real'], Buffer.from('real'))))
  const endpoint = endpointFor(t, idle.url)
  const tally = new RecordingTally()
  const comparer = new RecordingComparer()
  const route = new ShadowRoute({ service: 'users', settings: settings(), live: targets(), idle: targets(endpoint), tally, comparer, until: undefined })
  const tapOf = (): ReturnType<ShadowRoute['sample']> & object => route.sample('GET') as ReturnType<ShadowRoute['sample']> & object
  // One copy, so the pool holds one idle keep-alive connection.
  drive(tapOf())
  await tally.settled(1)
  for (let i = 0; i < 4; i++) await new Promise((resolve) => setImmediate(resolve))
  const server = idle.seen[0].socket
  // In one turn: a tapped exchange ends (its copy leaves on the next check phase), another exchange
  // releases a connection of the same pool (its tick is queued after that), and stale bytes come on.
  drive(tapOf())
  const other: UpstreamUser = { onUpstreamData () {}, onUpstreamEnd () {}, onUpstreamClose () {}, onUpstreamTimeout () {}, onUpstreamReady () {}, onUpstreamOverloaded () {} }
  const held = endpoint.h1.acquire(other, true)
  if (held === undefined) throw new Error('no connection')
  t.teardown(() => held.socket.destroy())
  endpoint.h1.settle(held)
  setImmediate(() => server.write(answer(599, ['x-v', 'stale'], Buffer.from('stale'))))
  await tally.settled(2)
  for (let i = 0; i < 4; i++) await new Promise((resolve) => setImmediate(resolve))
  t.same(comparer.calls.map((c) => c.other.status), [200, 200], 'every answer compared is one to a copy the idle color was sent, never bytes that came before it')
})

t.test('a stored shadow `until` no Date can hold is refused with the state file, never a 500 from GET .../shadow', async (t) => {
  const config = parseConfig(TWO, { env: {} })
  // A safe integer, but past the last instant a Date holds (8.64e15 ms): an import or a hand-edited file.
  const doc = JSON.stringify({ version: 1, generation: 3, services: { users: { live: 'blue', previous: null, targets: {}, shadow: { sample: 0.5, until: 9e15 } } } })
  let state: ReturnType<typeof parseStateDocument> | undefined
  try {
    state = parseStateDocument(doc, 'state file s.json')
  } catch (err) {
    t.ok(err instanceof StateFileError, 'refused naming the field')
    return
  }
  t.doesNotThrow(() => describeShadow(config.services.users, state, emptyView()), 'GET .../shadow answers for a state the store accepted')
})

for (const engine of ['fast', 'node']) {
  t.test(`${engine} engine: a client's own x-switchyard-shadow never goes upstream (a live request would read as a copy)`, async (t) => {
    const dir = tempDir(t)
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    const file = join(dir, 'switchyard.yaml')
    const text = `log: { access: false }\nengine: ${engine}\nservices:\n  users:\n    match: { pathPrefix: /users }\n    blue: { targets: [${blue.url}] }\n    green: { targets: [${green.url}] }\n`
    writeFileSync(file, text)
    const gateway = new Gateway(parseConfig(text, { file, env: {} }), { env: {}, listen: { host: '127.0.0.1', port: 0 }, adminListen: { host: '127.0.0.1', port: 0 } })
    await gateway.start()
    t.teardown(async () => { await gateway.stop(500) })
    // The mark tells an upstream "this is a repeat, its answer goes nowhere" (one that skips its side effects for it is
    // what unsafe: true invites): only the gateway may set it, as with its smoke pin header (habit 13).
    const res = await http1(`${gateway.url}/users/1`, { headers: { 'x-switchyard-shadow': '1' } })
    t.equal(res.status, 200)
    t.equal(blue.seen.at(-1)?.headers['x-switchyard-shadow'], undefined, 'the live upstream never sees the mark on a live request')
  })
}

t.test('one live probe that saw a transient 503 does not hide a new version that fails every request', async (t) => {
  const comparer = createComparer({ headers: [], json: [] })
  const tally = createShadowBook(() => {}).tallyFor('users', 'blue>green|x')
  const ok: Answer = { status: 200, headers: new Map([['content-type', 'application/json']]), body: Buffer.from('{"id":1,"name":"a"}') }
  const failing: Answer = { status: 503, headers: new Map([['content-type', 'text/html']]), body: Buffer.from('<h1>Service Unavailable</h1>') }
  // Learning: 20 probes; one live answer was a blip.
  for (let i = 0; i < 19; i++) tally.noise(comparer.compare(ok, ok))
  tally.noise(comparer.compare(ok, failing))
  // The new version answers 503 to everything.
  for (let i = 0; i < 300; i++) tally.pair(comparer.compare(ok, failing), true)
  const view = tally.view()
  t.equal(view.compared, 300)
  t.equal(view.differed, 300, `every pair differs in status (got differed ${view.differed}, noise ${view.noise}: ${view.noiseWhere.map((n) => `${n.where} seen in ${n.count} of ${view.probes} probes`).join(', ')})`)
})
