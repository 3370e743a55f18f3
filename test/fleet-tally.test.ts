// The fleet's summed counts the leader's guard judges: only growth counts, so a
// replica that restarts, or leaves and comes back, is never counted twice.

import t from 'tap'
import { FleetTally } from '../src/control/fleet-tally.js'
import { TargetRegistry } from '../src/upstream/registry.js'
import type { ReplicaRecord } from '../src/state/store.js'

const record = (id: string, requests: number, errors: number): ReplicaRecord =>
  ({ id, admin: null, generation: 1, revision: 1, heartbeat: new Date().toISOString(), counts: { api: { green: { requests, errors } } } })

t.test('sums this process and the others; a restart, a record that goes and comes back, are counted by their growth only', async (t) => {
  const local = new TargetRegistry().colorStats('api', 'green')
  const tally = new FleetTally('me')
  const stats = tally.stats('api', 'green', local)
  local.requests = 5
  local.errors = 1
  tally.update([record('me', 999, 999), record('b', 10, 2)])
  t.match(stats, { requests: 15, errors: 3 }, 'its own record is not counted twice')
  tally.update([record('b', 14, 2)])
  t.match(stats, { requests: 19, errors: 3 })
  tally.update([])
  t.match(stats, { requests: 19, errors: 3 }, 'a record that goes takes nothing away')
  tally.update([record('b', 16, 3)])
  t.match(stats, { requests: 21, errors: 4 }, 'back again (a lapsed lease): only what it grew by since')
  tally.update([record('b', 4, 0)])
  t.match(stats, { requests: 25, errors: 4 }, 'restarted (counts from zero): all of it is new')
  let heard = 0
  stats.watcher = { onOutcome: () => { heard++ } }
  t.equal(local.watcher, stats.watcher, 'a guard watching the sum hears this process at once')
  tally.update([record('b', 6, 0)])
  t.equal(heard, 1, 'and the others at each record')
})
