// Generation pinning made observable: GET /v1/state's `pinning` (the kept
// generations with their pinned counts, the five result counts) and
// switchyard_pinned_requests_total, on a real gateway after real flips, in one
// process and summed over `serve --workers 2`.

import t, { type Test } from 'tap'
import http from 'node:http'
import { PooledPinning } from '../src/control/pinning.js'
import { MAX_KEPT } from '../src/routing/pinning.js'
import { admin, configFile, eventually, http1, isAlive, listening, serve, serviceYaml, startBackend, startGateway, type Backend } from './helpers/index.js'

const RESULTS = ['pinned', 'expired', 'untrusted', 'invalid', 'unavailable'] as const
type Counts = Record<typeof RESULTS[number], number>

/** A request on a fresh connection (in a worker pool, any worker may take it), with `baggage`. */
async function fresh (url: string, baggage?: string): Promise<{ status: number, backend: string }> {
  return await new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers: baggage === undefined ? {} : { baggage } }, (res) => {
      let body = ''
      res.on('error', reject)
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, backend: (JSON.parse(body) as { backend: string }).backend }))
    }).on('error', reject)
  })
}

async function state (adminUrl: string): Promise<any> {
  const res = await admin(adminUrl, 'GET', '/v1/state')
  if (res.status !== 200) throw new Error(`GET /v1/state: ${res.status} ${res.text}`)
  return res.json
}

/** switchyard_pinned_requests_total by result, as scraped; undefined when the metric is not there. */
async function pinMetric (adminUrl: string): Promise<Counts | undefined> {
  const text = (await admin(adminUrl, 'GET', '/metrics')).text
  if (!text.includes('# TYPE switchyard_pinned_requests_total counter')) return undefined
  const out: Partial<Counts> = {}
  for (const r of RESULTS) {
    const m = new RegExp(`^switchyard_pinned_requests_total\\{result="${r}"\\} (\\d+)$`, 'm').exec(text)
    if (m === null) throw new Error(`no switchyard_pinned_requests_total{result="${r}"} line`)
    out[r] = Number(m[1])
  }
  return out as Counts
}

/** Flips svc blue -> green -> blue: three generations, the first two kept. */
async function flipTwice (t: Test, adminUrl: string): Promise<[number, number, number]> {
  const g0 = (await state(adminUrl)).generation as number
  const one = await admin(adminUrl, 'POST', '/v1/services/svc/flip', {})
  t.equal(one.status, 200, 'first flip')
  const two = await admin(adminUrl, 'POST', '/v1/services/svc/flip', {})
  t.equal(two.status, 200, 'second flip')
  return [g0, one.json.generation as number, two.json.generation as number]
}

/**
 * The whole story on one gateway (`url`, `adminUrl`): kept generations after
 * two flips, pinned requests routed by them and counted per generation,
 * every other result counted (one per `each`), then the list emptying when
 * `keep` runs out.
 */
async function story (t: Test, url: string, adminUrl: string, blue: Backend, green: Backend, each: number): Promise<Counts> {
  const before = await state(adminUrl)
  t.strictSame(before.pinning, { keep: 2000, trust: ['127.0.0.0/8'], floor: 0, requests: { pinned: 0, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }, kept: [] }, 'pinning on, nothing kept before a flip')
  t.strictSame(await pinMetric(adminUrl), { pinned: 0, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }, 'every result is there from 0')

  const [g0, g1, g2] = await flipTwice(t, adminUrl)
  const flipped = await state(adminUrl)
  t.equal(flipped.generation, g2, 'the state is at the second flip\'s generation')
  t.strictSame(flipped.pinning.kept.map((k: any) => k.generation), [g1, g0], 'both generations the flips retired are kept, newest first')
  for (const k of flipped.pinning.kept) {
    t.equal(Date.parse(k.expiresAt) - Date.parse(k.retiredAt), 2000, `generation ${k.generation as number} expires keep after it was retired`)
    t.ok(Math.abs(Date.parse(k.retiredAt) - Date.now()) < 2000, 'retired just now')
  }

  // g0 and g2 route to blue, g1 to green: a pinned request goes where its generation went.
  const sends: Array<Promise<{ status: number, backend: string }>> = []
  for (let i = 0; i < each; i++) {
    sends.push(fresh(`${url}/a`, `user=alice,switchyard-gen=${g1}`))
    sends.push(fresh(`${url}/b`, `switchyard-gen=${g1}`))
    sends.push(fresh(`${url}/c`, `switchyard-gen=${g0}`))
    sends.push(fresh(`${url}/d`, `switchyard-gen=${g2}`))
    sends.push(fresh(`${url}/e`, 'switchyard-gen=99999'))
    sends.push(fresh(`${url}/f`, 'switchyard-gen=abc'))
    sends.push(fresh(`${url}/g`, 'other=1'))
    sends.push(fresh(`${url}/h`))
  }
  const answers = await Promise.all(sends)
  t.ok(answers.every((a) => a.status === 200), 'every request answered')
  const where = (i: number): string[] => [...new Set(answers.filter((_, j) => j % 8 === i).map((a) => a.backend))]
  t.strictSame(where(0), ['green'], `pinned to ${g1}: green, as it routed`)
  t.strictSame(where(2), ['blue'], `pinned to ${g0}: blue`)
  t.strictSame(where(4), ['blue'], 'an expired generation: the current routing')
  t.strictSame(where(5), ['blue'], 'an invalid entry: the current routing')
  t.equal(green.seen.length, 2 * each, 'green saw only the requests pinned to it')
  t.equal(blue.seen.length, 6 * each, 'blue saw every other request')

  const expected = { pinned: 4 * each, expired: each, untrusted: 0, invalid: each, unavailable: 0 }
  const shown = await eventually(async () => {
    const s = await state(adminUrl)
    return JSON.stringify(s.pinning.requests) === JSON.stringify(expected) ? s : false
  })
  t.strictSame(shown.pinning.requests, expected, 'the counts: current and kept generations pinned, one expired, one invalid; no entry counts nothing')
  t.strictSame(shown.pinning.kept.map((k: any) => [k.generation, k.pinned]), [[g1, 2 * each], [g0, each]], 'pinned requests per kept generation (the current one is not kept)')
  t.strictSame(await pinMetric(adminUrl), expected, 'the metric says the same')

  // keep (2 s) runs out: the kept list empties by itself, the counts stay.
  const emptied = await eventually(async () => {
    const s = await state(adminUrl)
    return s.pinning.kept.length === 0 ? s : false
  }, { timeout: 6000, interval: 100 })
  t.strictSame(emptied.pinning.requests, expected, 'the counts outlive the generations')
  t.ok(Date.now() - Date.parse(flipped.pinning.kept[1].retiredAt) >= 2000, 'emptied no sooner than keep')
  const late = await fresh(`${url}/late`, `switchyard-gen=${g1}`)
  t.equal(late.backend, 'blue', 'a generation past keep routes by the current one')
  t.ok(await eventually(async () => (await state(adminUrl)).pinning.requests.expired === each + 1), 'and is counted expired')
  return { ...expected, expired: each + 1 }
}

t.test('/v1/state and the metric show the kept generations and the pinned counts; keep empties the list', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const gw = await startGateway(t, `pinning: { keep: 2s, trust: [127.0.0.0/8] }\nservices:\n${serviceYaml('svc', '/', [blue], [green])}`)
  await story(t, gw.url, gw.adminUrl, blue, green, 1)
})

t.test('a peer outside trust is counted untrusted and pinned by nothing', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const gw = await startGateway(t, `pinning: { keep: 1m, trust: [10.0.0.0/8] }\nservices:\n${serviceYaml('svc', '/', [blue], [green])}`)
  const [, g1] = await flipTwice(t, gw.adminUrl)
  const res = await http1(`${gw.url}/x`, { headers: { baggage: `switchyard-gen=${g1}` } })
  t.equal(res.json.backend, 'blue', 'the forged entry routes nothing: the current color')
  const s = await state(gw.adminUrl)
  t.strictSame(s.pinning.requests, { pinned: 0, expired: 0, untrusted: 1, invalid: 0, unavailable: 0 }, 'counted untrusted')
  t.strictSame(s.pinning.kept.map((k: any) => k.pinned), [0, 0], 'no kept generation served it')
  t.strictSame(s.pinning.trust, ['10.0.0.0/8'], 'trust as configured')
  t.strictSame(await pinMetric(gw.adminUrl), { pinned: 0, expired: 0, untrusted: 1, invalid: 0, unavailable: 0 }, 'the metric says untrusted')
})

t.test('pinning off: /v1/state says null and the metric is not there', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [blue], [green])}`)
  await flipTwice(t, gw.adminUrl)
  await http1(`${gw.url}/x`, { headers: { baggage: 'switchyard-gen=1' } })
  t.equal((await state(gw.adminUrl)).pinning, null, 'pinning: null')
  t.equal(await pinMetric(gw.adminUrl), undefined, 'no switchyard_pinned_requests_total')
})

t.test('serve --workers 2: the primary sums every worker\'s counts, per result and per kept generation, exactly', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const file = configFile(t, `pinning: { keep: 2s, trust: [127.0.0.0/8] }\nservices:\n${serviceYaml('svc', '/', [blue], [green])}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  await listening(p)
  const up = p.lines.find((l) => l.msg === 'switchyard listening')
  t.equal(up.workers, 2, 'two workers serve')
  // Ten of each on fresh connections: the primary deals them out over both workers in turn.
  const url = `http://${up.listen as string}`
  const adminUrl = `http://${up.admin as string}`
  const counts = await story(t, url, adminUrl, blue, green, 10)

  // A worker dies: its part stays in the sums, and its replacement adds to them from 0.
  const started = (): any[] => p.lines.filter((l) => l.msg === 'worker started; routing sent')
  t.teardown(() => { for (const l of started()) if (isAlive(l.pid)) process.kill(l.pid, 'SIGKILL') })
  process.kill(started()[0].pid as number, 'SIGKILL')
  await eventually(() => started().length === 3 && p.lines.some((l) => l.msg === 'worker listening' && l.pid === started()[2].pid), { timeout: 10_000 })
  t.strictSame((await state(adminUrl)).pinning.requests, counts, 'the dead worker\'s counts stay in the sums')
  for (let i = 0; i < 6; i++) t.equal((await fresh(`${url}/z`, 'switchyard-gen=1,switchyard-gen=2')).status, 200)
  const after = { ...counts, invalid: counts.invalid + 6 }
  t.ok(await eventually(async () => JSON.stringify((await state(adminUrl)).pinning.requests) === JSON.stringify(after)), 'new requests add to them, over the old worker and the new')
  t.strictSame(await pinMetric(adminUrl), after, 'and the metric')
  p.kill('SIGTERM')
  t.equal(await p.exit, 0, 'stops cleanly')
})

t.test('a worker that exits keeps its part: counts and the kept generations\' pinned requests', (t) => {
  const pool = new PooledPinning()
  pool.report(1, { counts: { pinned: 3, expired: 1, untrusted: 0, invalid: 2, unavailable: 0 }, byGeneration: { 4: 2, 5: 1 } })
  pool.report(2, { counts: { pinned: 1, expired: 0, untrusted: 5, invalid: 0, unavailable: 0 }, byGeneration: { 5: 1 } })
  t.strictSame(pool.counts, { pinned: 4, expired: 1, untrusted: 5, invalid: 2, unavailable: 0 }, 'summed over the workers')
  t.strictSame(pool.pinnedByGeneration(), { 4: 2, 5: 2 })
  pool.retire(1)
  pool.report(3, { counts: { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }, byGeneration: { 5: 1 } })
  t.strictSame(pool.counts, { pinned: 5, expired: 1, untrusted: 5, invalid: 2, unavailable: 0 }, 'the exited worker\'s counts stay, its replacement adds to them')
  t.strictSame(pool.pinnedByGeneration(), { 4: 2, 5: 3 })
  // Many exits: only the newest MAX_KEPT generations' parts are kept (every generation still kept is among them).
  for (let w = 10; w < 10 + MAX_KEPT + 5; w++) {
    pool.report(w, { counts: { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }, byGeneration: { [w]: 1 } })
    pool.retire(w)
  }
  const gens = Object.keys(pool.pinnedByGeneration()).map(Number)
  t.equal(gens.filter((g) => g !== 5).length, MAX_KEPT, 'bounded: the retired parts of the newest MAX_KEPT generations')
  t.notOk(gens.includes(4), 'the oldest went first')
  t.equal(pool.counts.pinned, 5 + MAX_KEPT + 5, 'the result counts never drop')
  t.end()
})
