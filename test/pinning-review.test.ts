// Review of generation pinning (issue 16): each DEFECT subtest failed on the
// code as reviewed (be2840b) and names what it caught. The resolve step is
// driven as each engine drives it, over real snapshots and a Switcher.

import t from 'tap'
import { parseConfig } from '../src/config/load.js'
import type { Refusal, RequestFacts, Resolution } from '../src/proxy/resolve.js'
import { createResolver } from '../src/routing/resolve.js'
import { buildSnapshot, Switcher, type RoutingState } from '../src/routing/snapshot.js'
import { TargetRegistry } from '../src/upstream/registry.js'
import { pinFacts } from './helpers/chain.js'

const PINNING = 'pinning: { keep: 1m, trust: [127.0.0.0/8] }\n'
const service = (protocol: string): string => `services:
  users:
    match: { pathPrefix: /users }
    protocol: ${protocol}
    blue: { targets: [http://127.0.0.1:1] }
    green: { targets: [http://127.0.0.1:2] }
    health: false
`

/** A request's facts as the fast engine (`http1Only`) or node:http gives them. */
const facts = (baggage: string, http1Only: boolean): RequestFacts => pinFacts(baggage, { http1Only })

const state = (generation: number): RoutingState => ({ generation, services: { users: { live: 'blue', previous: null, targets: {} } } })

/**
 * One request as the edge serves it: the fast engine resolves it, and hands a
 * request whose answer speaks HTTP/2 upstream to node:http, which resolves it
 * again (proxy/h1/client.ts route, proxy/edge.ts onRequest).
 */
function serveOnEdge (resolve: (f: RequestFacts) => Resolution | Refusal, baggage: string): Resolution | Refusal {
  const fast = resolve(facts(baggage, true))
  if (fast.endpoint === undefined || fast.group.protocol === 'http1') return fast
  return resolve(facts(baggage, false))
}

/** Generation 4 had the service speak `from`, and is kept; a reload made generation 5, where it speaks `to`. */
function protocolChanged (t: Tap.Test, from: string, to: string): { switcher: Switcher, resolve: (f: RequestFacts) => Resolution | Refusal } {
  const registry = new TargetRegistry()
  const switcher = new Switcher(buildSnapshot(parseConfig(PINNING + service(from), { env: {} }), state(4), registry))
  t.teardown(async () => { switcher.stop(); await registry.destroy() })
  const resolve = createResolver(switcher.view, { colorOf: () => undefined })
  switcher.swap(buildSnapshot(parseConfig(PINNING + service(to), { env: {} }), state(5), registry))
  return { switcher, resolve }
}

t.test('DEFECT: a pinned request the fast engine hands to node:http is counted twice when the kept generation\'s service spoke HTTP/2 and the current one speaks HTTP/1.1', async (t) => {
  // A reload changed the service's protocol: generation 4 (h2c) is kept for the chains that began on it.
  const { switcher, resolve } = protocolChanged(t, 'h2c', 'http1')

  const to = serveOnEdge(resolve, 'switchyard-gen=4') as Resolution
  t.equal(to.group.protocol, 'h2c', 'routed by generation 4, over HTTP/2')
  t.same(switcher.kept.counts, { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }, 'one request, counted once')
  t.same(switcher.kept.pinnedByGeneration(), { 4: 1 }, 'and once on generation 4')
})

t.test('a pinned request the fast engine can serve itself is counted once, whatever the current generation speaks', async (t) => {
  const { switcher, resolve } = protocolChanged(t, 'http1', 'h2c')

  const to = serveOnEdge(resolve, 'switchyard-gen=4') as Resolution
  t.equal(to.group.protocol, 'http1', 'routed by generation 4, over HTTP/1.1')
  t.equal(to.baggage, 'switchyard-gen=4')
  t.same(switcher.kept.counts, { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 })
  // And a request the current h2c generation serves: handed over, counted by node:http's resolve alone.
  serveOnEdge(resolve, 'switchyard-gen=9')
  t.same(switcher.kept.counts, { pinned: 1, expired: 1, untrusted: 0, invalid: 0, unavailable: 0 })
})

t.test('DEFECT: pinning.trust: [] is accepted, and turns pinning on with nobody believed (every entry untrusted)', async (t) => {
  t.throws(() => parseConfig('pinning: { trust: [] }\n' + service('http1'), { env: {} }), /pinning\.trust: must list at least one address/, 'refused, naming the key and what it needs')
  t.equal(parseConfig('pinning: { trust: [10.0.0.0/8] }\n' + service('http1'), { env: {} }).pinning?.trust.length, 1, 'one address is enough')
})
