// routing/pinning.ts alone: reading our baggage entry (tolerant of other
// members, strict about ours), the baggage a forwarded request carries, and
// the kept snapshots (retire, rebuilds, expiry, the cap, pinning off, the floor).

import t from 'tap'
import { BAGGAGE_KEY, INVALID, KeptSnapshots, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS, MAX_KEPT, baggageGeneration, outgoingBaggage, type Retirable } from '../src/routing/pinning.js'

t.test('baggageGeneration: no entry of ours is undefined, whatever else the baggage holds', async (t) => {
  for (const b of ['', 'a=1', 'a=1,b=2;p=1', 'note=switchyard-gen', 'x-switchyard-gen=5', 'switchyard-gen-x=5', 'Switchyard-Gen=5', ';;,,']) {
    t.equal(baggageGeneration(b), undefined, JSON.stringify(b))
  }
})

t.test('baggageGeneration: tolerant of others (OWS, properties, percent-encoding, malformed members)', async (t) => {
  const cases: Array<[string, number]> = [
    ['switchyard-gen=12', 12],
    [' switchyard-gen = 12 ', 12],
    ['\tswitchyard-gen\t=\t12\t', 12],
    ['a=1 ; p=2 ; q, switchyard-gen=3', 3],
    ['k=%2C%3D%20v;p=%25, switchyard-gen=4,z=%E2%82%AC', 4],
    [';;, =x, ,noequals,=, switchyard-gen=5', 5],
    ['a=1,switchyard-gen=0', 0],
    [`switchyard-gen=${'9'.repeat(15)}`, 999_999_999_999_999],
    ['a=switchyard-gen=7,switchyard-gen=8', 8],
  ]
  for (const [b, gen] of cases) t.equal(baggageGeneration(b), gen, JSON.stringify(b))
  const members = [...Array.from({ length: MAX_BAGGAGE_MEMBERS - 1 }, (_, i) => `m${i}=1`), 'switchyard-gen=6']
  t.equal(baggageGeneration(members.join(',')), 6, 'exactly 64 members')
  const filler = `pad=${'x'.repeat(MAX_BAGGAGE_BYTES - 'pad=,switchyard-gen=6'.length)}`
  t.equal(`${filler},switchyard-gen=6`.length, MAX_BAGGAGE_BYTES)
  t.equal(baggageGeneration(`${filler},switchyard-gen=6`), 6, 'exactly 8192 bytes')
})

t.test('baggageGeneration: strict about ours', async (t) => {
  const invalid = [
    'switchyard-gen=12;prop=1',
    'switchyard-gen=12 ;prop',
    'switchyard-gen',
    'a=1, switchyard-gen ;p=1',
    'switchyard-gen=abc',
    'switchyard-gen=',
    'switchyard-gen= ',
    'switchyard-gen=-1',
    'switchyard-gen=1.5',
    'switchyard-gen=0x1f',
    'switchyard-gen=1e3',
    'switchyard-gen=%31',
    'switchyard-gen=1 2',
    `switchyard-gen=${'9'.repeat(16)}`,
    'switchyard-gen=1,switchyard-gen=1',
    'switchyard-gen=1, a=2 ,switchyard-gen=2',
    `${Array.from({ length: MAX_BAGGAGE_MEMBERS }, (_, i) => `m${i}=1`).join(',')},switchyard-gen=6`,
    `pad=${'x'.repeat(MAX_BAGGAGE_BYTES)},switchyard-gen=6`,
  ]
  for (const b of invalid) t.equal(baggageGeneration(b), INVALID, JSON.stringify(b.length > 80 ? `${b.slice(0, 40)}...(${b.length} bytes)` : b))
})

t.test('outgoingBaggage: the client\'s members in order, ours replaced, trailing commas dropped', async (t) => {
  const ours = `${BAGGAGE_KEY}=7`
  const cases: Array<[string | undefined, string]> = [
    [undefined, ours],
    ['', ours],
    [',', ours],
    [' , ,', ours],
    ['a=1', `a=1,${ours}`],
    ['a=1,b=2;p=1', `a=1,b=2;p=1,${ours}`],
    ['b=2,a=1', `b=2,a=1,${ours}`],
    ['a=1,', `a=1,${ours}`],
    ['a=1, , ', `a=1,${ours}`],
    ['a=1,switchyard-gen=3,b=2', `a=1,b=2,${ours}`],
    ['switchyard-gen=3', ours],
    ['switchyard-gen=3,switchyard-gen=4', ours],
    [' switchyard-gen = 3 ;p=1, a=1', ` a=1,${ours}`.trim()],
    ['switchyard-gen=abc,a=1', `a=1,${ours}`],
    ['a=1,switchyard-gen', `a=1,${ours}`],
    ['note=switchyard-gen,k=%2C', `note=switchyard-gen,k=%2C,${ours}`],
    ['x-switchyard-gen=1', `x-switchyard-gen=1,${ours}`],
    ['a=1, b=2', `a=1, b=2,${ours}`],
  ]
  for (const [incoming, out] of cases) t.equal(outgoingBaggage(incoming, ours), out, JSON.stringify(incoming))
  // What goes out always reads back as the one generation it names.
  for (const [incoming] of cases) t.equal(baggageGeneration(outgoingBaggage(incoming, ours)), 7)
})

/** A snapshot as KeptSnapshots sees one. */
function snap (generation: number, keepMs = 60_000, pinFloor = 0): Retirable {
  return { generation, pinning: { keepMs }, pinFloor }
}

/** A snapshot with pinning off. */
function off (generation: number): Retirable {
  return { generation, pinning: undefined, pinFloor: 0 }
}

/** A KeptSnapshots stopped at teardown, with a count of `dropped` calls. */
function kept (t: Tap.Test): { k: KeptSnapshots<Retirable>, dropped: () => number, next: () => Promise<void> } {
  let n = 0
  const waiters: Array<() => void> = []
  const k = new KeptSnapshots<Retirable>(() => {
    n++
    for (const w of waiters.splice(0)) w()
  })
  t.teardown(() => k.stop())
  return { k, dropped: () => n, next: async () => await new Promise<void>((resolve) => waiters.push(resolve)) }
}

const generations = (k: KeptSnapshots<Retirable>): number[] => k.snapshots().map((s) => s.generation)

t.test('KeptSnapshots: a retired snapshot is kept by generation and counts what it routes', async (t) => {
  const { k, dropped } = kept(t)
  const now = Date.now()
  const g1 = snap(1)
  k.retire(g1, snap(2), now)
  t.same(generations(k), [1])
  t.equal(k.find(1, 60_000, now + 10), g1)
  t.equal(k.find(1, 60_000, now + 20), g1)
  t.same(k.pinnedByGeneration(), { 1: 0 }, 'finding it counts nothing')
  k.count('pinned', 1)
  k.count('pinned', 1)
  t.equal(k.find(2, 60_000, now), undefined, 'the current generation is never looked up here')
  t.equal(k.find(9, 60_000, now), undefined, 'an unknown generation')
  t.same(k.pinnedByGeneration(), { 1: 2 }, 'a pinned count names the kept generation it routed by')
  k.retire(snap(2), snap(3), now + 100)
  t.same(k.list(60_000), [
    { generation: 2, retiredAt: new Date(now + 100).toISOString(), expiresAt: new Date(now + 60_100).toISOString(), pinned: 0 },
    { generation: 1, retiredAt: new Date(now).toISOString(), expiresAt: new Date(now + 60_000).toISOString(), pinned: 2 },
  ], 'newest first, with expiry under the keep in force')
  k.count('expired')
  k.count('expired')
  k.count('untrusted')
  t.same(k.counts, { pinned: 2, expired: 2, untrusted: 1, invalid: 0, unavailable: 0 }, 'count() tallies results')
  t.equal(dropped(), 0)
})

t.test('KeptSnapshots: a rebuild at the same generation replaces nothing', async (t) => {
  const { k, dropped } = kept(t)
  const now = Date.now()
  const g1 = snap(1)
  k.retire(g1, snap(2), now)
  k.retire(snap(2), snap(2), now + 50)
  k.retire(snap(2), snap(2), now + 60)
  t.same(generations(k), [1], 'the rebuilt generation is not kept against itself')
  t.equal(k.list(60_000)[0].retiredAt, new Date(now).toISOString(), 'the kept one keeps its retirement time')
  t.equal(k.find(1, 60_000, now + 70), g1)
  t.equal(dropped(), 0)
})

t.test('KeptSnapshots: keep ends by time (injected now), and the next change drops what ended', async (t) => {
  const { k, dropped } = kept(t)
  const now = Date.now()
  const g1 = snap(1, 1000)
  k.retire(g1, snap(2, 1000), now)
  t.equal(k.find(1, 1000, now + 999), g1, 'kept until keep has passed')
  t.equal(k.find(1, 1000, now + 1000), undefined, 'not at keep')
  t.equal(k.find(1, 500, now + 600), undefined, 'a shorter keep in force counts from the same retirement')
  t.equal(dropped(), 0)
  k.retire(snap(2, 1000), snap(3, 1000), now + 1500)
  t.same(generations(k), [2], 'generation 1 went at the next change')
  t.equal(dropped(), 1, 'and its owner was told, though one came as one went (the targets only generation 1 used can close)')
})

t.test('KeptSnapshots: the dropped callback fires when the oldest expires, without another change', async (t) => {
  const { k, dropped, next } = kept(t)
  const went = next()
  k.retire(snap(1, 40), snap(2, 40), Date.now())
  t.same(generations(k), [1])
  // The expiry timer is unref'd (it must not hold a gateway open): this keeps the test's process up until it fires.
  const alive = setInterval(() => {}, 1000)
  await went
  clearInterval(alive)
  t.same(generations(k), [], 'expired by its timer')
  t.equal(dropped(), 1)
})

t.test(`KeptSnapshots: at most ${MAX_KEPT} are kept, the newest`, async (t) => {
  const { k } = kept(t)
  const now = Date.now()
  const n = MAX_KEPT + 6
  for (let g = 1; g <= n; g++) k.retire(snap(g), snap(g + 1), now + g)
  t.equal(k.snapshots().length, MAX_KEPT)
  t.same(generations(k), Array.from({ length: MAX_KEPT }, (_, i) => n - i), 'the oldest went (newest first)')
  t.equal(k.find(1, 60_000, now + n), undefined)
  t.ok(k.find(n, 60_000, now + n) !== undefined)
})

t.test('KeptSnapshots: pinning off clears every kept snapshot', async (t) => {
  const { k, dropped } = kept(t)
  const now = Date.now()
  k.retire(snap(1), snap(2), now)
  k.retire(snap(2), snap(3), now)
  k.retire(snap(3), off(4), now)
  t.same(generations(k), [])
  t.equal(k.find(2, 60_000, now), undefined)
  t.equal(dropped(), 1)
  k.retire(off(4), off(5), now)
  t.same(generations(k), [], 'nothing is kept while off')
  t.equal(dropped(), 1, 'nothing more to drop')
})

t.test('KeptSnapshots: the floor (a rollback or revert) ends the pins below it', async (t) => {
  const { k, dropped } = kept(t)
  const now = Date.now()
  k.retire(snap(1), snap(2), now)
  k.retire(snap(2), snap(3), now)
  // A rollback commits generation 4 with the floor at 4: generations 1-3 routed to colors it went back from.
  k.retire(snap(3), snap(4, 60_000, 4), now)
  t.same(generations(k), [])
  t.equal(k.find(3, 60_000, now), undefined)
  t.equal(dropped(), 1)
  // A flip after it keeps generation 4 (at the floor) as usual.
  k.retire(snap(4, 60_000, 4), snap(5, 60_000, 4), now)
  t.same(generations(k), [4])
  t.ok(k.find(4, 60_000, now) !== undefined)
  // A floor between kept generations drops only those below it.
  k.retire(snap(5, 60_000, 4), snap(6, 60_000, 4), now)
  k.retire(snap(6, 60_000, 4), snap(7, 60_000, 6), now)
  t.same(generations(k), [6])
})
