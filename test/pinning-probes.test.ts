// A target that only a kept snapshot still routes to is probed like any
// other: when it dies, chains pinned to it are served by the current
// snapshot (counted unavailable) instead of failing at it.

import t from 'tap'
import { admin, eventually, http1, startBackend, startGateway } from './helpers/index.js'
import { pinCounts } from './helpers/chain.js'

t.test('a kept generation\'s old target keeps being probed: once it dies, its pinned chains go to the current snapshot', async (t) => {
  const old = await startBackend(t, 'blue-old')
  const blue = await startBackend(t, 'blue-new')
  const green = await startBackend(t, 'green')
  const gw = await startGateway(t, `pinning: { keep: 1m, trust: [127.0.0.0/8] }
services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [${old.url}] }
    green: { targets: [${green.url}] }
    health: { path: /healthz, interval: 100ms, timeout: 100ms, healthyThreshold: 1, unhealthyThreshold: 1 }
`)
  const before = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation as number
  // The old environment is replaced: blue's target moves; generation `before` is kept, still routing to the old one.
  const moved = await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/blue/targets', { targets: [blue.url], force: true })
  t.equal(moved.status, 200, moved.text)
  const pinned = await http1(`${gw.url}/users/1`, { headers: { baggage: `switchyard-gen=${before}` } })
  t.equal(pinned.json.backend, 'blue-old', 'a chain pinned to the kept generation goes to its target')
  const probesBefore = old.probes.length
  await eventually(() => old.probes.length > probesBefore, { timeout: 3000 })
  t.pass('the target only the kept snapshot uses is still probed')

  await old.close()
  // Down is seen by its probe: pinned requests stop going there rather than fail on it.
  const answer = await eventually(async () => {
    const r = await http1(`${gw.url}/users/1`, { headers: { baggage: `switchyard-gen=${before}` } })
    return r.status === 200 && r.json.backend === 'blue-new' ? r : false
  }, { timeout: 3000 })
  t.equal(answer.json.backend, 'blue-new', 'the current snapshot serves the chain')
  const counts = await pinCounts(gw.adminUrl)
  t.ok(counts.unavailable >= 1, `counted unavailable (${JSON.stringify(counts)})`)
})
