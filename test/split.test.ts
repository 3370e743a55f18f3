// A release's traffic split, unit by unit: the hash and bucket arithmetic, the
// share of keys each weight moves, the order of the choice, and the sticky cookie that keeps a key.

import t from 'tap'
import type { IncomingMessage } from 'node:http'
import { parseConfig } from '../src/config/load.js'
import { chooseFor, keyPoint, type ChoiceHeaders } from '../src/routing/choose.js'
import { buildSnapshot, configureTargets, type RoutingState, type ServiceRoute, type ServiceState, type Snapshot } from '../src/routing/snapshot.js'
import { bucketOf, fnv1a32, mix32, parseSticky, pointHex, stickyValue, thresholdOf } from '../src/routing/split.js'
import { NodeRequestFacts } from '../src/proxy/forward.js'
import { parseRequestHead } from '../src/proxy/h1/parse.js'
import { clientAddress } from '../src/proxy/resolve.js'
import { Forwarding } from '../src/proxy/trust.js'
import { TargetRegistry } from '../src/upstream/registry.js'

const CONFIG = parseConfig(`services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: ['http://127.0.0.1:1'] }
    green: { targets: ['http://127.0.0.1:2'] }
  orders:
    match: { pathPrefix: /orders }
    blue: { targets: ['http://127.0.0.1:3'] }
    green: { targets: ['http://127.0.0.1:4'] }
  web:
    match: { pathPrefix: /web }
    blue: { targets: ['http://127.0.0.1:5'] }
    green: { targets: ['http://127.0.0.1:6'] }
    sticky: { cookie: sy }
    health: { path: /healthz }
  shop:
    match: { pathPrefix: /shop }
    blue: { targets: ['http://127.0.0.1:7'] }
    green: { targets: ['http://127.0.0.1:8'] }
    preview: { header: x-preview }
`)

const KEYS = 10_000
const SEED = 0x5eed1234

type Teardown = { teardown: (fn: () => unknown) => void }

function snapshotOf (t: Teardown, services: Record<string, ServiceState>, sticky?: RoutingState['sticky']): Snapshot {
  const registry = new TargetRegistry()
  t.teardown(async () => await registry.destroy())
  const snapshot = buildSnapshot(CONFIG, { generation: 1, services, sticky }, registry)
  for (const target of configureTargets(snapshot)) target.setProbe('healthy')
  return snapshot
}

/** Every named service blue-live with the same split towards green. */
function splitState (names: string[], weight: number, seed = SEED): Record<string, ServiceState> {
  const out: Record<string, ServiceState> = {}
  for (const n of names) out[n] = { live: 'blue', previous: null, targets: {}, split: { color: 'green', weight, seed } }
  return out
}

function route (s: Snapshot, name: string): ServiceRoute {
  return s.services.get(name) as ServiceRoute
}

/** A request's choice headers: the split key header (when given), a cookie, a preview header, an address. */
function req (opts: { key?: string, cookie?: string, preview?: string, address?: string } = {}): ChoiceHeaders {
  return {
    cookie: opts.cookie,
    header: (name) => name === 'x-switchyard-key' ? opts.key : name === 'x-preview' ? opts.preview : undefined,
    clientAddress: () => opts.address ?? '192.0.2.1',
  }
}

const colorOf = (r: ServiceRoute, h: ChoiceHeaders, pinned?: 'blue' | 'green'): string => chooseFor(r, pinned, h).color.color

t.test('FNV-1a and fmix32 match their published values', async (t) => {
  t.equal(fnv1a32(''), 0x811c9dc5)
  t.equal(fnv1a32('a'), 0xe40c292c)
  t.equal(fnv1a32('foobar'), 0xbf9cf968)
  t.equal(mix32(0), 0, 'fmix32 keeps 0')
  t.equal(mix32(1), 0x514e28b7, 'murmur3 fmix32(1)')
  t.equal(thresholdOf(50), 2 ** 31)
  t.equal(thresholdOf(10), 429496729)
  t.equal(pointHex(0xab), '000000ab')
  t.equal(stickyValue('green', 0xdeadbeef), 'green.deadbeef')
})

t.test('the share of keys on the new color follows the weight', async (t) => {
  // Binomial standard deviation over 10,000 keys: 0.3% at 10, 0.5% at 50; the tolerances are about 4-5 of them.
  for (const [weight, tolerance] of [[10, 1.5], [50, 2]]) {
    const r = route(snapshotOf(t, splitState(['users'], weight)), 'users')
    let green = 0
    for (let i = 0; i < KEYS; i++) if (colorOf(r, req({ key: `user-${i}` })) === 'green') green++
    const share = 100 * green / KEYS
    t.ok(Math.abs(share - weight) <= tolerance, `weight ${weight}: ${share.toFixed(2)}% on green (within ${tolerance})`)
  }
})

t.test('raising the weight only moves keys from old to new', async (t) => {
  const weights = [10, 50, 90]
  const routes = weights.map((w) => route(snapshotOf(t, splitState(['users'], w)), 'users'))
  let backwards = 0
  const shares = weights.map(() => 0)
  for (let i = 0; i < KEYS; i++) {
    const h = req({ key: `user-${i}` })
    let wasNew = false
    routes.forEach((r, step) => {
      const isNew = colorOf(r, h) === 'green'
      if (wasNew && !isNew) backwards++
      if (isNew) shares[step]++
      wasNew = isNew
    })
  }
  t.equal(backwards, 0, 'no key went new -> old')
  t.ok(shares[0] < shares[1] && shares[1] < shares[2], `keys on green grow: ${shares.join(' < ')}`)
})

t.test('services of one release (one seed) put every key on the same color; another seed cuts another slice', async (t) => {
  const same = snapshotOf(t, splitState(['users', 'orders'], 50))
  const other = route(snapshotOf(t, splitState(['users'], 50, SEED ^ 0x9e3779b9)), 'users')
  let disagree = 0
  let otherGreen = 0
  let differ = 0
  for (let i = 0; i < KEYS; i++) {
    const h = req({ key: `session-${i}` })
    const u = colorOf(route(same, 'users'), h)
    if (u !== colorOf(route(same, 'orders'), h)) disagree++
    const o = colorOf(other, h)
    if (o === 'green') otherGreen++
    if (o !== u) differ++
  }
  t.equal(disagree, 0, 'users and orders agree on every key')
  t.ok(Math.abs(100 * otherGreen / KEYS - 50) <= 2, `the other seed's slice is as large: ${otherGreen}`)
  // Independent slices of half the keys each disagree on about half of them.
  t.ok(differ > KEYS * 0.4 && differ < KEYS * 0.6, `the other seed's slice is another one: ${differ} keys differ`)
})

t.test('the same key gets the same bucket by any path: header value, address, or the point a cookie carries', async (t) => {
  const point = fnv1a32('k-42')
  t.equal(keyPoint(req({ key: 'k-42' })), point)
  t.equal(keyPoint(req({ address: 'k-42' })), point, 'no key header: the address')
  t.equal(keyPoint(req({ key: '', address: '10.1.2.3' })), fnv1a32('10.1.2.3'), 'an empty key header is no key')
  t.equal(bucketOf(point, SEED), mix32((point ^ SEED) >>> 0))
})

t.test('a smoke pin and a preview pick their color whatever the weight', async (t) => {
  const s = snapshotOf(t, { ...splitState(['users'], 99), ...splitState(['shop'], 99) })
  let live = 0
  let previewBlue = 0
  let previewGreen = 0
  let unpinned = 0
  for (let i = 0; i < 500; i++) {
    const key = `user-${i}`
    if (colorOf(route(s, 'users'), req({ key }), 'blue') === 'blue') live++
    if (colorOf(route(s, 'shop'), req({ key, preview: 'blue' })) === 'blue') previewBlue++
    if (colorOf(route(s, 'shop'), req({ key: `x${i}`, preview: 'green' })) === 'green') previewGreen++
    if (colorOf(route(s, 'shop'), req({ key })) === 'green') unpinned++
  }
  t.equal(live, 500, 'pinned to blue: blue every time, at weight 99')
  t.equal(previewBlue, 500, 'preview blue: blue every time')
  t.equal(previewGreen, 500, 'preview green: green every time')
  t.ok(unpinned > 450, `without them the weight applies (${unpinned}/500 on green)`)
})

t.test('a split that cannot be one builds no split', async (t) => {
  const bad: Array<ServiceState['split']> = [
    { color: 'blue', weight: 50, seed: 1 }, // the live color
    { color: 'green', weight: 0, seed: 1 },
    { color: 'green', weight: 100, seed: 1 },
    { color: 'green', weight: Number.NaN, seed: 1 },
  ]
  for (const split of bad) {
    const r = route(snapshotOf(t, { users: { live: 'blue', previous: null, targets: {}, split } }), 'users')
    t.equal(r.split, undefined, JSON.stringify(split))
  }
  const none = route(snapshotOf(t, { users: { live: 'blue', previous: null, targets: { green: [] }, split: { color: 'green', weight: 50, seed: 1 } } }), 'users')
  t.equal(none.split, undefined, 'a split towards a color with no targets routes all to live')
  const r = route(snapshotOf(t, { users: { live: 'blue', previous: null, targets: {}, split: { color: 'green', weight: 10, seed: 7 }, release: 'r3' } }), 'users')
  t.equal(r.split?.to.color, 'green')
  t.equal(r.split?.threshold, thresholdOf(10))
  t.equal(r.split?.seed, 7)
  t.equal(r.split?.weight, 10)
  t.equal(r.sampled, true, 'a release runs: latency sampled')
  t.equal(route(snapshotOf(t, {}), 'users').sampled, false)
})

t.test('sticky: the cookie carries the key while a split is in force', async (t) => {
  const r = route(snapshotOf(t, splitState(['web'], 50)), 'web')
  const point = fnv1a32('visitor-1')
  const first = chooseFor(r, undefined, req({ key: 'visitor-1' }))
  const value = `${first.color.color}.${pointHex(point)}`
  t.equal(first.setCookie, `sy=${value}; Path=/; HttpOnly; SameSite=Lax`, 'the first answer sets <color>.<point>')
  const again = chooseFor(r, undefined, req({ cookie: `sy=${value}`, key: 'someone-else', address: '203.0.113.9' }))
  t.equal(again.color.color, first.color.color, 'the cookie\'s point wins over the header and the address')
  t.equal(again.setCookie, undefined, 'a cookie that already says it is left alone')

  // Find keys on each side, then hand their points over in a cookie that names the wrong color.
  let onGreen: number | undefined
  let onBlue: number | undefined
  for (let i = 0; onGreen === undefined || onBlue === undefined; i++) {
    const p = fnv1a32(`v${i}`)
    if (colorOf(r, req({ key: `v${i}` })) === 'green') onGreen ??= p
    else onBlue ??= p
  }
  const moved = chooseFor(r, undefined, req({ cookie: `sy=blue.${pointHex(onGreen)}` }))
  t.equal(moved.color.color, 'green', 'the point decides, not the color part')
  t.equal(moved.setCookie, `sy=green.${pointHex(onGreen)}; Path=/; HttpOnly; SameSite=Lax`, 'and the cookie is corrected')
  t.equal(colorOf(r, req({ cookie: `sy=green.${pointHex(onBlue)}` })), 'blue')

  const plain = chooseFor(r, undefined, req({ cookie: 'sy=blue', key: 'visitor-1' }))
  t.equal(plain.color.color, first.color.color, 'a cookie without a point: the key header decides')
  t.equal(plain.setCookie, `sy=${value}; Path=/; HttpOnly; SameSite=Lax`, 'and the point is added')
  t.equal(parseSticky('green.0000zz00').point, undefined, 'a point that is not 8 hex digits is none')
  t.same(parseSticky('green'), { color: 'green', point: undefined })
  t.same(parseSticky('green.00000a0b'), { color: 'green', point: 0xa0b })
})

t.test('sticky without a split: the plain cookie, as before, and a cookie with a point still counts as its color', async (t) => {
  const r = route(snapshotOf(t, {}), 'web')
  t.same(chooseFor(r, undefined, req({ key: 'visitor-1' })).setCookie, 'sy=blue; Path=/; HttpOnly; SameSite=Lax')
  t.equal(chooseFor(r, undefined, req({ cookie: 'sy=blue' })).setCookie, undefined)
  t.equal(chooseFor(r, undefined, req({ cookie: 'sy=blue.00000001' })).setCookie, undefined, 'the color part already names live')
  t.equal(chooseFor(r, undefined, req({ cookie: 'sy=green.00000001' })).setCookie, 'sy=blue.00000001; Path=/; HttpOnly; SameSite=Lax', 'the key outlives the split (a revert): the browser keeps its place for the next one')
  t.equal(chooseFor(r, undefined, req({ cookie: 'sy=green.zz' })).setCookie, 'sy=blue; Path=/; HttpOnly; SameSite=Lax', 'a part after the dot that is no key is dropped')
})

t.test('a sticky hold keeps `blue` and `blue.<point>` sessions on the draining color, split or not', async (t) => {
  const hold = { web: { color: 'blue' as const, until: Date.now() + 60_000 } }
  const greenLive: ServiceState = { live: 'green', previous: 'blue', targets: {} }
  for (const split of [undefined, { color: 'blue' as const, weight: 10, seed: SEED }]) {
    const r = route(snapshotOf(t, { web: { ...greenLive, split } }, hold), 'web')
    t.equal(r.split?.weight, split?.weight)
    for (const cookie of ['sy=blue', 'sy=blue.0000abcd']) {
      const c = chooseFor(r, undefined, req({ cookie }))
      t.same({ color: c.color.color, setCookie: c.setCookie }, { color: 'blue', setCookie: undefined }, `${cookie}, split ${split === undefined ? 'off' : 'on'}`)
    }
  }
})

t.test('a split key header on two lines is no key, on both engines: the address decides', async (t) => {
  const head = parseRequestHead('GET / HTTP/1.1\r\nHost: x\r\nX-Switchyard-Key: a\r\nx-switchyard-key: b\r\nX-Forwarded-For: 198.51.100.7')
  if (head === undefined) throw new Error('the head should parse')
  head.peer = '127.0.0.1'
  head.forwarding = new Forwarding('http', [])
  t.equal(head.header('x-switchyard-key'), undefined)
  t.equal(keyPoint(head), fnv1a32('127.0.0.1'), 'fast engine: the peer (not trusted: its X-Forwarded-For is not believed)')
  head.forwarding = new Forwarding('http', ['127.0.0.0/8'])
  t.equal(keyPoint(head), fnv1a32('198.51.100.7'), 'fast engine, trusted peer: the address it forwarded')

  const one = parseRequestHead('GET / HTTP/1.1\r\nHost: x\r\nX-Switchyard-Key:  a ')
  t.equal(one?.header('x-switchyard-key'), 'a', 'one line: its trimmed value')

  const nodeReq = (raw: string[]): IncomingMessage => {
    const headers: Record<string, string> = {}
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i].toLowerCase()
      headers[n] = headers[n] === undefined ? raw[i + 1] : `${headers[n]}, ${raw[i + 1]}`
    }
    return { url: '/', headers, rawHeaders: raw, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage
  }
  const untrusted = new Forwarding('http', [])
  const two = new NodeRequestFacts(nodeReq(['Host', 'x', 'X-Switchyard-Key', 'a', 'x-switchyard-key', 'b']), untrusted)
  t.equal(two.header('x-switchyard-key'), undefined, 'node engine: node:http joined the lines, still no key')
  t.equal(keyPoint(two), fnv1a32('127.0.0.1'))
  t.equal(two.peer, '127.0.0.1')
  const single = new NodeRequestFacts(nodeReq(['Host', 'x', 'X-Switchyard-Key', 'a']), untrusted)
  t.equal(keyPoint(single), fnv1a32('a'))
  const proxied = new NodeRequestFacts(nodeReq(['Host', 'x', 'X-Forwarded-For', '10.9.9.9', 'X-Forwarded-For', '198.51.100.7']), new Forwarding('http', ['127.0.0.1/32']))
  t.equal(proxied.clientAddress(), '198.51.100.7', 'node engine, trusted peer: the last element')
})

t.test('the client address from a trusted proxy is the last X-Forwarded-For element', async (t) => {
  t.equal(clientAddress('10.0.0.1', false, '198.51.100.7'), '10.0.0.1', 'an untrusted peer speaks for itself')
  t.equal(clientAddress('10.0.0.1', true, '203.0.113.1, 198.51.100.7'), '198.51.100.7')
  t.equal(clientAddress('10.0.0.1', true, '198.51.100.7, ,'), '198.51.100.7', 'empty trailing elements are skipped')
  t.equal(clientAddress('10.0.0.1', true, ' , '), '10.0.0.1', 'nothing but empty elements: the peer')
  t.equal(clientAddress('10.0.0.1', true, ','), '10.0.0.1')
  t.equal(clientAddress('10.0.0.1', true, ''), '10.0.0.1')
  t.equal(clientAddress('10.0.0.1', true, undefined), '10.0.0.1')
})
