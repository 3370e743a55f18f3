// The resolve step with pinning, over real snapshots and a Switcher: which
// snapshot a request routes by, what it is counted as, and the baggage it is
// forwarded with. End to end through a gateway: test/pinning-chain.test.ts.

import t from 'tap'
import { parseConfig } from '../src/config/load.js'
import type { RequestFacts, Resolution, Refusal } from '../src/proxy/resolve.js'
import { createResolver } from '../src/routing/resolve.js'
import { buildSnapshot, Switcher, type RoutingState } from '../src/routing/snapshot.js'
import { TargetRegistry } from '../src/upstream/registry.js'
import { pinFacts } from './helpers/chain.js'

const SERVICES = `services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [http://127.0.0.1:1] }
    green: { targets: [http://127.0.0.1:2] }
    health: false
`
const PINNING = 'pinning: { keep: 1m, trust: [127.0.0.0/8, "::1"] }\n'

/** A GET with `baggage` from `peer` (127.0.0.1 unless given), to `target` (/users/1 unless given). */
const facts = (baggage: string | undefined, peer?: string, target?: string): RequestFacts => pinFacts(baggage, { peer, target })

const state = (generation: number, live: 'blue' | 'green', pinFloor?: number): RoutingState =>
  ({ generation, services: { users: { live, previous: null, targets: {} } }, ...(pinFloor === undefined ? {} : { pinFloor }) })

async function setup (t: Tap.Test, yaml = PINNING + SERVICES) {
  const config = parseConfig(yaml, { env: {} })
  const registry = new TargetRegistry()
  let dropped = (): void => {}
  const switcher: Switcher = new Switcher(buildSnapshot(config, state(4, 'blue'), registry), () => {
    registry.prune(switcher.targets())
    dropped()
  })
  t.teardown(async () => { switcher.stop(); await registry.destroy() })
  const resolve = createResolver(switcher.view, { colorOf: () => undefined })
  const colorOf = (r: Resolution | Refusal): string => {
    if (r.endpoint === undefined) return `refused ${r.code}`
    return r.endpoint.target.url.endsWith(':1') ? 'blue' : 'green'
  }
  /** Resolves when the Switcher next drops kept snapshots (and the registry was pruned). */
  const nextDrop = async (): Promise<void> => { await new Promise<void>((resolve) => { dropped = resolve }) }
  return { config, registry, switcher, resolve, colorOf, counts: switcher.kept.counts, nextDrop }
}

t.test('a trusted chain pinned before the flip stays on the old color; everyone else goes by the current snapshot', async (t) => {
  const s = await setup(t)
  t.equal((s.resolve(facts(undefined)) as Resolution).baggage, 'switchyard-gen=4', 'every forwarded request names the generation that routed it')
  s.switcher.swap(buildSnapshot(s.config, state(5, 'green'), s.registry))

  const pinned = s.resolve(facts('switchyard-gen=4')) as Resolution
  t.equal(s.colorOf(pinned), 'blue', 'generation 4 routed to blue: so does its chain')
  t.equal(pinned.baggage, 'switchyard-gen=4', 'and the next hop is told generation 4 again')
  t.equal(s.colorOf(s.resolve(facts(undefined))), 'green', 'a request with no baggage: the current snapshot')
  t.equal(s.colorOf(s.resolve(facts('switchyard-gen=5'))), 'green', 'one pinned to the current generation')
  t.equal(s.colorOf(s.resolve(facts('switchyard-gen=4', '::ffff:127.0.0.1'))), 'blue', 'an IPv4 peer seen on a dual-stack socket is trusted by its IPv4 block')
  t.equal(s.colorOf(s.resolve(facts('switchyard-gen=4', '10.1.2.3'))), 'green', 'an untrusted peer: the current snapshot')
  const forged = s.resolve(facts('a=1,switchyard-gen=4', '10.1.2.3')) as Resolution
  t.equal(forged.baggage, 'a=1,switchyard-gen=5', 'a forged entry is replaced by the current generation; other members kept')
  t.equal(s.colorOf(s.resolve(facts('switchyard-gen=3'))), 'green', 'a generation never kept here')
  t.equal(s.colorOf(s.resolve(facts('switchyard-gen=4;x=1'))), 'green', 'our entry with a property is invalid')
  t.equal(s.colorOf(s.resolve(facts('other=1'))), 'green', 'baggage without our entry')
  t.same(s.counts, { pinned: 3, expired: 1, untrusted: 2, invalid: 1, unavailable: 0 })
  t.same(s.switcher.kept.list(60_000).map((k) => [k.generation, k.pinned]), [[4, 2]], 'the kept generation counts the two requests it routed')
})

t.test('a kept generation that cannot serve the request falls back to the current one, counted unavailable', async (t) => {
  const s = await setup(t)
  s.switcher.swap(buildSnapshot(s.config, state(5, 'green'), s.registry))
  // As an ejection or a failing probe leaves it.
  s.registry.target('http://127.0.0.1:1').healthy = false
  const r = s.resolve(facts('switchyard-gen=4'))
  t.equal(s.colorOf(r), 'green', 'blue has no healthy target: green serves the chain')
  t.equal((r as Resolution).baggage, 'switchyard-gen=5', 'and the chain goes on as generation 5')
  t.equal(s.colorOf(s.resolve(facts('switchyard-gen=4', '127.0.0.1', '/orders/1'))), 'refused no_route', 'no service matches in either: the current snapshot\'s answer')
  t.same(s.counts, { pinned: 0, expired: 0, untrusted: 0, invalid: 0, unavailable: 2 })
})

t.test('a rollback\'s floor unpins every generation before it; pinning off keeps nothing', async (t) => {
  const s = await setup(t)
  s.switcher.swap(buildSnapshot(s.config, state(5, 'green'), s.registry))
  s.switcher.swap(buildSnapshot(s.config, state(6, 'blue', 6), s.registry))
  t.equal(s.colorOf(s.resolve(facts('switchyard-gen=5'))), 'blue', 'generation 5 (green, rolled back from) pins nothing')
  t.equal(s.counts.expired, 1)
  t.same(s.switcher.kept.list(60_000), [], 'nothing below the floor is kept')

  const off = await setup(t, SERVICES)
  t.equal((off.resolve(facts('a=1')) as Resolution).baggage, undefined, 'pinning off: the client\'s baggage goes as sent')
  off.switcher.swap(buildSnapshot(off.config, state(5, 'green'), off.registry))
  t.same(off.switcher.kept.list(60_000), [], 'pinning off keeps no snapshot')
  t.equal(off.colorOf(off.resolve(facts('switchyard-gen=4'))), 'green', 'and a pinned request goes by the current one')
  t.same(off.counts, { pinned: 0, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }, 'uncounted')
})

t.test('a kept snapshot keeps its targets in the registry until it expires, then they go', async (t) => {
  const s = await setup(t, PINNING.replace('1m', '300ms') + SERVICES)
  const moved = parseConfig(PINNING.replace('1m', '300ms') + SERVICES.replace('http://127.0.0.1:1', 'http://127.0.0.1:3'), { env: {} })
  s.switcher.swap(buildSnapshot(moved, state(5, 'blue'), s.registry))
  s.registry.prune(s.switcher.targets())
  t.ok(s.registry.find('http://127.0.0.1:1') !== undefined, 'the old blue target stays for the chains pinned to generation 4')
  const r = s.resolve(facts('switchyard-gen=4')) as Resolution
  t.equal(r.endpoint.target.url, 'http://127.0.0.1:1', 'and a chain pinned to generation 4 goes to it')
  const started = Date.now()
  // The expiry timer is unref'd (it must not keep a gateway from exiting): this one keeps the test's process up meanwhile.
  const hold = setTimeout(() => {}, 5000)
  await s.nextDrop()
  clearTimeout(hold)
  t.ok(Date.now() - started >= 250, 'kept for its keep')
  t.equal(s.registry.find('http://127.0.0.1:1'), undefined, 'then the target only the kept snapshot used is gone')
  t.equal((s.resolve(facts('switchyard-gen=4')) as Resolution).endpoint.target.url, 'http://127.0.0.1:3', 'and the chain goes by the current snapshot')
  t.equal(s.counts.expired, 1)
})
