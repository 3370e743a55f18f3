// A release's split through a real gateway, on both engines and for WebSocket
// upgrades: shares by key, one key alike in every service, the sticky cookie's key, the address as key.

import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { bucketOf, fnv1a32, pointHex, thresholdOf } from '../src/routing/split.js'
import { http1, openWs, serviceYaml, startBackend, startGateway, tempDir, type Backend } from './helpers/index.js'

const SEED = 0x0badcafe
const KEYS = 3000

/** The color a key's point falls on at `weight`, computed apart from the gateway. */
const expected = (point: number, weight: number): string => bucketOf(point, SEED) < thresholdOf(weight) ? 'green' : 'blue'

/** Runs `fn` over 0..n-1, `width` at a time. */
async function inParallel (n: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await fn(next++)
  }))
}

async function startSplitGateway (t: Parameters<Parameters<typeof t.test>[1]>[0], engine: string, blue: Backend, green: Backend): Promise<{ url: string, adminUrl: string }> {
  const dir = tempDir(t)
  const split = (weight: number): unknown => ({ live: 'blue', previous: null, targets: {}, split: { color: 'green', weight, seed: SEED }, release: 'r7' })
  writeFileSync(join(dir, 'state.json'), JSON.stringify({
    version: 1,
    generation: 7,
    services: { users: split(50), orders: split(50), ten: split(10), web: split(50), plain: { live: 'blue', previous: null, targets: {} } },
  }))
  const gw = await startGateway(t, `engine: ${engine}
state: { file: ./state.json }
services:
${serviceYaml('users', '/users', [blue], [green])}${serviceYaml('orders', '/orders', [blue], [green])}${serviceYaml('ten', '/ten', [blue], [green])}${serviceYaml('web', '/web', [blue], [green], '    sticky: { cookie: sy }\n')}${serviceYaml('plain', '/plain', [blue], [green])}`, { dir })
  return gw
}

for (const engine of ['fast', 'node']) {
  t.test(`${engine} engine: a split by key`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    const gw = await startSplitGateway(t, engine, blue, green)
    const colorOf = async (path: string, headers: Record<string, string> = {}): Promise<{ color: string, setCookie: string | undefined }> => {
      const r = await http1(gw.url + path, { headers })
      // Thousands of requests: one assertion each would drown the report; the first bad answer fails the test.
      if (r.status !== 200) throw new Error(`${path}: ${r.status} ${r.text}`)
      return { color: r.headers['x-backend'] as string, setCookie: r.headers['set-cookie'] as string | undefined }
    }

    t.test('shares by key, the same key alike in every service, and only old -> new between weights', async (t) => {
      const green50 = { users: 0, orders: 0 }
      let green10 = 0
      let disagree = 0
      let wrong = 0
      let backwards = 0
      await inParallel(KEYS, 16, async (i) => {
        const key = `${engine}-user-${i}`
        const headers = { 'x-switchyard-key': key }
        const u = (await colorOf('/users/a', headers)).color
        const o = (await colorOf('/orders/b', headers)).color
        const ten = (await colorOf('/ten', headers)).color
        if (u === 'green') green50.users++
        if (o === 'green') green50.orders++
        if (ten === 'green') green10++
        if (u !== o) disagree++
        if (u !== expected(fnv1a32(key), 50)) wrong++
        if (ten === 'green' && u !== 'green') backwards++
      })
      // 3000 keys: a binomial standard deviation of 0.9% at 50 and 0.55% at 10; about 4.5 of them either way.
      for (const [name, n] of Object.entries(green50)) t.ok(Math.abs(100 * n / KEYS - 50) <= 4, `${name}: ${(100 * n / KEYS).toFixed(1)}% on green at weight 50 (50 +- 4)`)
      t.ok(Math.abs(100 * green10 / KEYS - 10) <= 2.5, `ten: ${(100 * green10 / KEYS).toFixed(1)}% on green at weight 10 (10 +- 2.5)`)
      t.equal(disagree, 0, 'users and orders put every key on the same color')
      t.equal(wrong, 0, 'the color is the one the hash says')
      t.equal(backwards, 0, 'a key on green at 10 is on green at 50')
    })

    t.test('a sticky service: the cookie carries the key, and keeps the color whatever the request says next', async (t) => {
      const seen = new Set<string>()
      await inParallel(200, 8, async (i) => {
        const key = `${engine}-visitor-${i}`
        const first = await colorOf('/web', { 'x-switchyard-key': key })
        const value = `${first.color}.${pointHex(fnv1a32(key))}`
        t.equal(first.setCookie, `sy=${value}; Path=/; HttpOnly; SameSite=Lax`)
        t.equal(first.color, expected(fnv1a32(key), 50))
        seen.add(first.color)
        // Another key header (and, with none, the one address every test request has): the cookie still decides.
        const again = await colorOf('/web', { cookie: `sy=${value}`, 'x-switchyard-key': `other-${i}` })
        const bare = await colorOf('/web', { cookie: `sy=${value}` })
        if (again.color !== first.color || bare.color !== first.color || again.setCookie !== undefined || bare.setCookie !== undefined) {
          t.fail(`${key}: ${first.color} then ${again.color} / ${bare.color}, set-cookie ${String(again.setCookie)} / ${String(bare.setCookie)}`)
        }
      })
      t.same([...seen].sort(), ['blue', 'green'], 'visitors landed on both colors')
    })

    t.test('no key header: the client address is the key, the same every time', async (t) => {
      const want = expected(fnv1a32('127.0.0.1'), 50)
      const colors = new Set<string>()
      for (let i = 0; i < 30; i++) colors.add((await colorOf('/users')).color)
      t.same([...colors], [want], `every request from 127.0.0.1 on ${want}`)
      // X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
      t.equal((await colorOf('/users', { 'x-forwarded-for': '198.51.100.7' })).color, want)
      // Two key lines are no key: the address decides. The lines are picked so that either, or both joined, would say otherwise.
      const other = (k: string): boolean => expected(fnv1a32(k), 50) !== want
      let pair: [string, string] | undefined
      for (let i = 0; pair === undefined; i++) {
        if (other(`a${i}`) && other(`b${i}`) && other(`a${i}, b${i}`) && other(`a${i},b${i}`)) pair = [`a${i}`, `b${i}`]
      }
      const r = await http1(`${gw.url}/orders`, { headers: { 'x-switchyard-key': pair as unknown as string } })
      t.equal(r.headers['x-backend'], want, `x-switchyard-key: ${pair[0]} and ${pair[1]} on two lines`)
      t.not((await colorOf('/orders', { 'x-switchyard-key': pair[0] })).color, want, 'either line alone would have moved it')
    })

    t.test('a WebSocket upgrade goes by the same key', async (t) => {
      for (const want of ['blue', 'green']) {
        let key = ''
        for (let i = 0; key === ''; i++) if (expected(fnv1a32(`ws-${i}`), 50) === want) key = `ws-${i}`
        const { ws, next } = await openWs(`${gw.url.replace('http', 'ws')}/users/ws`, { 'x-switchyard-key': key })
        ws.send('hi')
        t.equal(await next(), `${want}: hi`, `${key} upgrades to ${want}`)
        ws.close()
      }
    })

    t.test('switchyard_traffic_weight says the split', async (t) => {
      const text = (await http1(`${gw.adminUrl}/metrics`)).text
      t.match(text, /switchyard_traffic_weight\{service="ten",color="green"\} 10\n/)
      t.match(text, /switchyard_traffic_weight\{service="ten",color="blue"\} 90\n/)
      t.match(text, /switchyard_traffic_weight\{service="users",color="green"\} 50\n/)
      t.match(text, /switchyard_traffic_weight\{service="plain",color="blue"\} 100\n/)
      t.match(text, /switchyard_traffic_weight\{service="plain",color="green"\} 0\n/)
    })
  })
}
