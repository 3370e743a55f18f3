// Shadow tallies: counts per comparison, noise learnt late re-judging pairs
// already counted, workers' data merged as if one process had seen it all,
// bounds under many distinct places, and the per-result callback the metric uses.

import t from 'tap'
import { createShadowBook, MAX_ENDPOINTS, MAX_EXAMPLES, MAX_NOISE, MAX_PAIR_SETS, mergeTallyData, OTHER_ENDPOINT, viewOf } from '../src/shadow/tally.js'
import type { Difference, DropReason, ShadowResult, ShadowTally, TallyData } from '../src/shadow/types.js'

function diff (where: string, live = `live ${where}`, other = `idle ${where}`): Difference {
  return { where, live, other }
}

function newTally (key = 'blue>green|http://g'): { tally: ShadowTally, results: Array<[string, ShadowResult]> } {
  const results: Array<[string, ShadowResult]> = []
  const book = createShadowBook((service, result) => results.push([service, result]))
  return { tally: book.tallyFor('users', key), results }
}

t.test('noise learnt after a pair was counted re-judges it in the view', async (t) => {
  const { tally, results } = newTally()
  tally.pair([diff('header:x-request-id')], true)
  tally.pair([diff('header:x-request-id'), diff('$.price', '1', '2')], true)
  tally.pair([], true)
  let v = tally.view()
  t.match(v, { compared: 3, matched: 1, differed: 2, noise: 0 })
  t.same(v.top.map((x) => [x.where, x.count]), [['header:x-request-id', 2], ['$.price', 1]])

  tally.noise([diff('header:x-request-id'), diff('header:x-request-id')])
  v = tally.view()
  t.match(v, { compared: 3, matched: 1, differed: 1, noise: 1, probes: 1 }, 'the pair whose only place is noise now counts as noise')
  t.same(v.top, [{ where: '$.price', count: 1, example: { live: '1', idle: '2' }, endpoints: [{ endpoint: '', count: 1 }] }], 'a noise place leaves top; the pair with another place stays differed')
  t.same(v.noiseWhere, [{ where: 'header:x-request-id', endpoint: '', count: 1 }], 'a place counts once per probe')
  t.same(results.map((r) => r[1]), ['differed', 'differed', 'matched'], 'the metric keeps the judgement made when each pair completed')

  tally.pair([diff('header:x-request-id')], true)
  t.same(results.at(-1), ['users', 'noise'], 'a pair completed after the noise is learnt is counted as noise at once')
  t.match(tally.view(), { compared: 4, noise: 2, differed: 1 })
})

t.test('view: counts, drops, top ranking and examples', async (t) => {
  const { tally } = newTally()
  tally.sent()
  tally.sent()
  tally.sent()
  t.equal(tally.copies, 3, 'copies counts what was sent')
  tally.dropped('busy')
  tally.dropped('busy')
  tally.dropped('failed')
  tally.dropped('body_too_large')
  tally.pair([], false)
  for (let i = 0; i < 12; i++) {
    for (let n = 0; n <= i; n++) tally.pair([diff(`$.f${String(i).padStart(2, '0')}`, `first ${i}`, `idle ${i}`)], true)
  }
  tally.pair([diff('$.f11', 'later', 'later')], false)
  const v = tally.view()
  t.match(v, { sent: 3, dropped: 4, drops: { busy: 2, no_target: 0, failed: 1, body_too_large: 1 }, bodyNotCompared: 2, matched: 1, differed: 79, compared: 80 })
  t.equal(v.top.length, 10, 'top holds at most 10 places')
  t.same(v.top.map((x) => x.count), [13, 11, 10, 9, 8, 7, 6, 5, 4, 3], 'most frequent first')
  t.same(v.top[0], { where: '$.f11', count: 13, example: { live: 'first 11', idle: 'idle 11' }, endpoints: [{ endpoint: '', count: 13 }] }, 'the first example seen is kept')
  t.equal(v.compared, v.matched + v.differed + v.noise)

  const tie = newTally().tally
  tie.pair([diff('$.b')], true)
  tie.pair([diff('$.a')], true)
  t.same(tie.view().top.map((x) => x.where), ['$.a', '$.b'], 'ties by place, so the order is stable')
})

t.test('a pair with a place seen twice is one set', async (t) => {
  const { tally } = newTally()
  tally.pair([diff('$.b'), diff('$.a'), diff('$.b')], true)
  tally.pair([diff('$.a'), diff('$.b')], true)
  t.same(tally.data().pairs, [{ endpoint: '', wheres: ['$.a', '$.b'], count: 2 }])
})

/** A deterministic stream of tally events over a small set of places, so it stays inside every bound. */
type Event = { kind: 'sent' } | { kind: 'dropped', reason: DropReason } | { kind: 'pair', diffs: Difference[], body: boolean, endpoint: string } | { kind: 'noise', diffs: Difference[], endpoint: string }

function stream (seed: number, n: number, tag: string): Event[] {
  let s = seed
  const rnd = (m: number): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    return (s >>> 8) % m
  }
  const places = ['status', 'header:etag', '$.a', '$.items[*].price', '$.ts', 'body']
  const reasons: DropReason[] = ['busy', 'no_target', 'failed', 'body_too_large']
  const endpoints = ['GET /a', 'GET /b/{id}', 'POST /c']
  const pick = (): Difference[] => {
    const out: Difference[] = []
    for (const p of places) if (rnd(4) === 0) out.push(diff(p, `${tag} live ${p}`, `${tag} idle ${p}`))
    return out
  }
  const events: Event[] = []
  for (let i = 0; i < n; i++) {
    const r = rnd(10)
    if (r < 3) events.push({ kind: 'sent' })
    else if (r < 4) events.push({ kind: 'dropped', reason: reasons[rnd(4)] })
    else if (r < 9) events.push({ kind: 'pair', diffs: pick(), body: rnd(5) !== 0, endpoint: endpoints[rnd(3)] })
    else events.push({ kind: 'noise', diffs: rnd(3) === 0 ? [diff('$.ts'), diff('header:etag')] : rnd(2) === 0 ? [diff('$.ts')] : [], endpoint: endpoints[rnd(3)] })
  }
  return events
}

function feed (tally: ShadowTally, events: Event[]): void {
  for (const e of events) {
    if (e.kind === 'sent') tally.sent()
    else if (e.kind === 'dropped') tally.dropped(e.reason)
    else if (e.kind === 'pair') tally.pair(e.diffs, e.body, e.endpoint)
    else tally.noise(e.diffs, e.endpoint)
  }
}

/** Data compared as sets: the pair and noise lists' order is each process's own. */
function normalised (d: TallyData): unknown {
  return {
    ...d,
    endpoints: [...d.endpoints].map((e) => `${e.endpoint}=${e.pairs}/${e.probes}`).sort(),
    pairs: [...d.pairs].map((p) => `${p.endpoint} ${p.wheres.join(',')}=${p.count}`).sort(),
    noise: [...d.noise].map((n) => `${n.endpoint} ${n.where}=${n.count}`).sort(),
    examples: [...d.examples].sort((x, y) => x.where < y.where ? -1 : 1),
  }
}

t.test('merging two processes\' data equals one tally fed both streams', async (t) => {
  const a = stream(1, 3000, 'A')
  const b = stream(2, 2000, 'B')
  const one = newTally().tally
  const two = newTally().tally
  const both = newTally().tally
  feed(one, a)
  feed(two, b)
  feed(both, a)
  feed(both, b)
  const merged = mergeTallyData([one.data(), two.data()])
  t.same(normalised(merged), normalised(both.data()), 'the same data')
  t.same(viewOf(merged), both.view(), 'the same view')
  const v = both.view()
  t.ok(v.noise > 0 && v.differed > 0 && v.matched > 0, `the streams exercise every judgement (${v.matched}/${v.differed}/${v.noise})`)
  t.not(viewOf(one.data()).compared, v.compared, 'one process alone sees less')
  t.same(mergeTallyData([]), newTally().tally.data(), 'nothing merged is an empty tally')
  t.same(viewOf(mergeTallyData([both.data()])), v, 'a single process merges to itself')
  t.equal(new Set(both.data().pairs.map((p) => p.endpoint)).size, 3, 'the streams span three endpoints')

  // Many endpoints, some on both processes, within the bound: still exact.
  const x = newTally().tally
  const y = newTally().tally
  const xy = newTally().tally
  const on = (tally: ShadowTally, i: number): void => {
    const endpoint = `GET /e${i}`
    tally.noise(i % 3 === 0 ? [diff('$.ts')] : [], endpoint)
    tally.pair(i % 2 === 0 ? [diff('$.ts')] : [diff('$.ts'), diff(`$.f${i % 5}`)], true, endpoint)
    tally.pair([], true, endpoint)
  }
  for (let i = 0; i < 40; i++) on(x, i)
  for (let i = 20; i < 60; i++) on(y, i)
  for (let i = 0; i < 40; i++) on(xy, i)
  for (let i = 20; i < 60; i++) on(xy, i)
  const merged2 = mergeTallyData([x.data(), y.data()])
  t.equal(merged2.endpoints.length, 60)
  t.same(normalised(merged2), normalised(xy.data()), '60 endpoints from two processes: the same data as one tally')
  t.same(viewOf(merged2), xy.view(), 'and the same view')
})

t.test('noise is learnt per endpoint: a place noisy on one endpoint still counts as a difference on another', async (t) => {
  const { tally, results } = newTally()
  for (let i = 0; i < 10; i++) tally.noise([diff('$.value')], 'GET /random')
  for (let i = 0; i < 10; i++) tally.noise([], 'GET /users/{id}')
  for (let i = 0; i < 20; i++) tally.pair([diff('$.value', `${i}`, `${-i}`)], true, 'GET /random')
  for (let i = 0; i < 20; i++) tally.pair([diff('$.value', '"basic"', '"premium"')], true, 'GET /users/{id}')
  const v = tally.view()
  t.match(v, { compared: 40, noise: 20, differed: 20, matched: 0, probes: 20 })
  t.same(v.noiseWhere, [{ where: '$.value', endpoint: 'GET /random', count: 10 }], 'noise is named with its endpoint')
  t.same(v.top, [{ where: '$.value', count: 20, example: { live: '"basic"', idle: '"premium"' }, endpoints: [{ endpoint: 'GET /users/{id}', count: 20 }] }], 'the change counts where it is one, with its example there (not the noisy endpoint\'s, seen first)')
  t.same(results.filter((r) => r[1] !== 'sent').map((r) => r[1]), [...Array(20).fill('noise'), ...Array(20).fill('differed')], 'the metric judges each pair by its own endpoint')

  // The share a place is judged by is its endpoint's: probes elsewhere do not dilute it.
  const shares = newTally().tally
  for (let i = 0; i < 100; i++) shares.noise([], 'GET /quiet')
  for (let i = 0; i < 5; i++) shares.noise([diff('$.ts')], 'GET /clock')
  for (let i = 0; i < 50; i++) shares.pair([diff('$.ts')], true, 'GET /clock')
  t.match(shares.view(), { compared: 50, noise: 50, differed: 0 }, 'every probe of /clock saw $.ts differ: noise there, whatever /quiet saw')

  // top lists at most 3 endpoints per place, most pairs first.
  const many = newTally().tally
  for (let e = 0; e < 5; e++) for (let i = 0; i <= e; i++) many.pair([diff('$.plan')], true, `GET /p${e}`)
  t.same(many.view().top[0].endpoints, [{ endpoint: 'GET /p4', count: 5 }, { endpoint: 'GET /p3', count: 4 }, { endpoint: 'GET /p2', count: 3 }])
  t.equal(many.view().top[0].count, 15, 'the place counts over every endpoint')
})

t.test(`at most ${MAX_ENDPOINTS} endpoints are told apart; later ones share ${OTHER_ENDPOINT}`, async (t) => {
  const { tally } = newTally()
  for (let i = 0; i < 200; i++) {
    tally.noise(i >= 100 ? [diff('$.ts')] : [], `GET /e${i}`)
    tally.pair([diff('$.ts')], true, `GET /e${i}`)
    tally.pair([], true, `GET /e${i}`)
  }
  const d = tally.data()
  t.equal(d.endpoints.length, MAX_ENDPOINTS + 1, `${MAX_ENDPOINTS} endpoints and the shared bucket`)
  t.same(d.endpoints.at(-1), { endpoint: OTHER_ENDPOINT, pairs: 2 * (200 - MAX_ENDPOINTS), probes: 200 - MAX_ENDPOINTS }, 'the rest is counted in the shared bucket')
  t.ok(d.pairs.every((p) => p.endpoint === OTHER_ENDPOINT || Number(p.endpoint.slice(7)) < MAX_ENDPOINTS), 'the first ones are named')
  t.same(d.noise, [{ endpoint: OTHER_ENDPOINT, where: '$.ts', count: 100 }], 'noise past the bound is learnt on the shared bucket')
  const v = tally.view()
  t.match(v, { compared: 400, matched: 200, differed: MAX_ENDPOINTS, noise: 200 - MAX_ENDPOINTS, probes: 200 }, 'no count is lost: the named endpoints saw no noise, the bucket did')
  t.same(v.top[0].endpoints.map((e) => e.count), [1, 1, 1])

  // Kept sets and noise places are bounded over all endpoints, not per endpoint.
  const wide = newTally().tally
  for (let i = 0; i < 1000; i++) {
    wide.noise([diff(`$.n${i}`)], `GET /w${i % 100}`)
    wide.pair([diff(`$.k${i}`)], true, `GET /w${i % 100}`)
    wide.pair([], true, `GET /w${i % 100}`)
  }
  const w = wide.data()
  t.equal(w.pairs.filter((p) => p.wheres.length > 0).length, MAX_PAIR_SETS, 'difference sets over all endpoints')
  t.equal(w.pairs.filter((p) => p.wheres.length === 0).length, MAX_ENDPOINTS + 1, 'one match set per endpoint')
  t.equal(w.noise.length, MAX_NOISE)
  t.equal(w.overflow, 1000 - MAX_PAIR_SETS)
  t.match(wide.view(), { compared: 2000, matched: 1000, differed: 1000 })
  const merged = mergeTallyData([w, w])
  t.equal(merged.endpoints.length, MAX_ENDPOINTS + 1, 'a merge is bounded too')
  t.equal(merged.noise.length, MAX_NOISE)
  t.match(viewOf(merged), { compared: 4000, matched: 2000, differed: 2000 })
})

t.test('bounds hold under 10k distinct places', async (t) => {
  const { tally } = newTally()
  for (let i = 0; i < 10_000; i++) tally.noise([diff(`$.noise${i}`)])
  for (let i = 0; i < 10_000; i++) tally.pair([diff(`$.k${i}`, 'x'.repeat(100), 'y'), diff(`$.j${i % 300}`)], true)
  tally.pair([], true)
  tally.pair([diff('$.k0'), diff('$.j0')], true)
  const d = tally.data()
  t.equal(d.pairs.length, MAX_PAIR_SETS + 1, `${MAX_PAIR_SETS} difference sets and the match`)
  t.ok(d.examples.length <= MAX_EXAMPLES, `examples: ${d.examples.length}`)
  t.equal(d.noise.length, MAX_NOISE)
  t.equal(d.overflow, 10_000 - MAX_PAIR_SETS)
  t.equal(d.probes, 10_000)
  const v = tally.view()
  t.match(v, { compared: 10_002, matched: 1, differed: 10_001, noise: 0 }, 'overflow counts as differed; a match after it is still a match')
  t.equal(v.top.length, 10)
  t.equal(v.top[0].where, '$.j0', 'the kept set repeated ranks first')
  t.equal(v.top[0].count, 2)
  t.ok(JSON.stringify(d).length < 100_000, `the data stays small (${JSON.stringify(d).length} bytes)`)

  const merged = mergeTallyData([d, d, d])
  t.equal(merged.pairs.length, MAX_PAIR_SETS + 1, 'a merge is bounded too')
  t.equal(merged.noise.length, MAX_NOISE)
  t.ok(merged.examples.length <= MAX_EXAMPLES)
  t.equal(viewOf(merged).compared, 3 * 10_002, 'and loses no count')
  t.equal(viewOf(merged).differed, 3 * 10_001)

  // Two workers each at the bound with different sets: the merge keeps 256 and counts the rest as overflow.
  const x = newTally().tally
  const y = newTally().tally
  for (let i = 0; i < MAX_PAIR_SETS; i++) {
    x.pair([diff(`$.x${i}`)], true)
    y.pair([diff(`$.y${i}`)], true)
  }
  const xy = mergeTallyData([x.data(), y.data()])
  t.equal(xy.pairs.length, MAX_PAIR_SETS)
  t.equal(xy.overflow, MAX_PAIR_SETS)
  t.equal(viewOf(xy).differed, 2 * MAX_PAIR_SETS)
})

t.test('onResult counts each copy and pair once, per service', async (t) => {
  const results: Array<[string, ShadowResult]> = []
  const book = createShadowBook((service, result) => results.push([service, result]))
  t.same(results, [], 'no comparison yet')
  const users = book.tallyFor('users', 'blue>green|http://g1')
  const orders = book.tallyFor('orders', 'green>blue|http://b1')
  t.equal(book.tallyFor('users', 'blue>green|http://g1'), users, 'the same key keeps the tally')
  users.sent()
  users.sent()
  users.dropped('no_target')
  users.pair([], true)
  users.pair([diff('$.a')], true)
  users.noise([diff('$.a')])
  users.pair([diff('$.a')], true)
  orders.sent()
  orders.pair([], false)
  const count = (service: string, result: ShadowResult): number => results.filter((r) => r[0] === service && r[1] === result).length
  t.same([count('users', 'sent'), count('users', 'dropped'), count('users', 'matched'), count('users', 'differed'), count('users', 'noise')], [2, 1, 1, 1, 1])
  t.same([count('orders', 'sent'), count('orders', 'matched'), results.length], [1, 1, 8], 'a noise probe is not a result')
  t.equal(book.tallyFor('orders', 'green>blue|http://b1'), orders, 'each service keeps its own comparison')
  t.equal(users.data().sent, 2)

  users.inflight = 3
  const fresh = book.tallyFor('users', 'blue>green|http://g1,http://g2')
  t.not(fresh, users, 'new idle targets start a fresh tally')
  t.match(fresh.view(), { sent: 0, compared: 0 })
  t.equal(fresh.inflight, 3, 'copies still out count against maxConcurrent in the new comparison too (see shadow-attacks)')
  t.equal(fresh.copies, 0, 'learn starts over')
  t.equal(book.tallyFor('users', 'blue>green|http://g1,http://g2').data().sent, 0, 'the book hands out the current comparison')
  users.pair([diff('$.late')], true)
  t.same(results.at(-1), ['users', 'differed'], 'a copy finishing against the old tally still counts in the metric')
  t.equal(fresh.view().compared, 0, 'but not in the new comparison')
  t.not(book.tallyFor('users', 'green>blue|http://g1,http://g2'), fresh, 'a flip starts a fresh tally')
})
