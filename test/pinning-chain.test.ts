// Generation-pinned call chains end to end, as issue 16 asks them shown: a
// two-hop chain with a flip of both services between its hops, on both
// engines, HTTP/2 from the client and to the upstream; expiry, untrusted and
// forged entries, malformed baggage, draining, rollback, WebSocket, and the
// head an upstream gets with pinning on and no baggage sent.

import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { h2Request, h2Session } from './helpers/h2.js'
import { admin, eventually, http1, openWs, startGateway, type TestGateway } from './helpers/index.js'
import { rawRequest, rawUpstream, wsHandshake } from './helpers/raw.js'
import { gate, pinCounts, seenAt, startColor, startWeb, type ColorService, type WebService } from './helpers/chain.js'

const ENGINES = ['fast', 'node'] as const

async function generation (gw: TestGateway): Promise<number> {
  return (await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation as number
}

/** Flips the named services to green in one request, as a user would; returns the new generation. */
async function flipToGreen (gw: TestGateway, services: string[]): Promise<number> {
  const r = await admin(gw.adminUrl, 'POST', '/v1/flip', { services, to: 'green', guard: false })
  if (r.status !== 200) throw new Error(`flip: ${r.status} ${r.text}`)
  return r.json.generation as number
}

interface Chain {
  gw: TestGateway
  web: Record<'blue' | 'green', WebService>
  users: Record<'blue' | 'green', ColorService>
}

/** `web` on /web and `users` on /users, each blue and green, behind one gateway; `pinning` is the config line (or ''). */
async function chain (t: Tap.Test, engine: string, pinning: string, usersProtocol: 'http1' | 'h2c' = 'http1'): Promise<Chain> {
  const web = { blue: await startWeb(t, 'blue'), green: await startWeb(t, 'green') }
  const users = { blue: await startColor(t, 'blue', usersProtocol), green: await startColor(t, 'green', usersProtocol) }
  const gw = await startGateway(t, `engine: ${engine}
${pinning}
services:
  web:
    match: { pathPrefix: /web }
    blue: { targets: [${web.blue.url}] }
    green: { targets: [${web.green.url}] }
  users:
    match: { pathPrefix: /users }
${usersProtocol === 'h2c' ? '    protocol: h2c\n' : ''}    blue: { targets: [${users.blue.url}] }
    green: { targets: [${users.green.url}] }
`)
  web.blue.gateway = gw.url
  web.green.gateway = gw.url
  return { gw, web, users }
}

type Client = 'h1' | 'h2c'

/** GET /web/chain from the client: its JSON answer. */
async function startChain (t: Tap.Test, gw: TestGateway, client: Client): Promise<{ web: string, users: string, usersBaggage: string, status: number }> {
  if (client === 'h1') {
    const r = await http1(`${gw.url}/web/chain`)
    if (r.status !== 200) throw new Error(`chain: ${r.status} ${r.text}`)
    return r.json
  }
  const r = await h2Request(h2Session(t, gw.url), '/web/chain')
  return JSON.parse(r.body.toString())
}

/** The sequence: hop 1 lands on blue web, both services flip to green, then web makes hop 2. */
async function flipMidChain (t: Tap.Test, c: Chain, client: Client): Promise<{ before: number, after: number, answer: Awaited<ReturnType<typeof startChain>> }> {
  const before = await generation(c.gw)
  const answer = startChain(t, c.gw, client)
  await c.web.blue.arrived
  const after = await flipToGreen(c.gw, ['web', 'users'])
  c.web.blue.release()
  return { before, after, answer: await answer }
}

const TRUSTED = 'pinning: { keep: 5m, trust: [127.0.0.0/8] }'

/** A baggage value's members, trimmed: engines join several lines with `,` or `, ` (W3C allows spaces around the comma). */
const members = (baggage: string): string[] => baggage.split(',').map((m) => m.trim())

const VARIANTS: Array<{ client: Client, users: 'http1' | 'h2c' }> = [
  { client: 'h1', users: 'http1' },
  { client: 'h2c', users: 'http1' },
  { client: 'h1', users: 'h2c' },
]

for (const engine of ENGINES) {
  for (const v of VARIANTS) {
    t.test(`${engine}, ${v.client} client, users over ${v.users}: a flip of both services between the hops leaves hop 2 on the color of hop 1's generation`, async (t) => {
      const c = await chain(t, engine, TRUSTED, v.users)
      const { before, after, answer } = await flipMidChain(t, c, v.client)
      t.equal(after, before + 1, 'one flip, one generation')
      t.equal(answer.web, 'blue', 'hop 1 ran on blue web')
      t.equal(answer.users, 'blue', 'hop 2 went to blue users: the color of the generation that routed hop 1')
      t.equal(c.web.blue.baggage[0], `switchyard-gen=${before}`, 'web-blue received the generation before the flip as its only baggage')
      t.equal(answer.usersBaggage, `switchyard-gen=${before}`, 'users-blue received the generation that routed it (the kept one)')
      t.equal(seenAt(c.users.green, '/users/me').length, 0, 'green users saw nothing of the chain')
      t.match(await pinCounts(c.gw.adminUrl), { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 })

      // A chain that begins after the flip stays on green at every hop.
      const fresh = startChain(t, c.gw, v.client)
      await c.web.green.arrived
      c.web.green.release()
      t.match(await fresh, { web: 'green', users: 'green', usersBaggage: `switchyard-gen=${after}` }, 'a chain begun after the flip is green throughout')
    })
  }

  t.test(`${engine}: with pinning off the same sequence sends hop 2 to green (the feature matters)`, async (t) => {
    const c = await chain(t, engine, '')
    const { answer } = await flipMidChain(t, c, 'h1')
    t.equal(answer.web, 'blue')
    t.equal(answer.users, 'green', 'hop 2 went to the new live color: the chain mixed colors')
    t.equal(c.web.blue.baggage[0], undefined, 'no baggage is added with pinning off')
    t.equal(answer.usersBaggage, undefined)
  })

  t.test(`${engine}: an expired generation falls back to the current color and is counted expired`, async (t) => {
    const c = await chain(t, engine, 'pinning: { keep: 300ms, trust: [127.0.0.0/8] }')
    const before = await generation(c.gw)
    const answer = startChain(t, c.gw, 'h1')
    await c.web.blue.arrived
    await flipToGreen(c.gw, ['web', 'users'])
    // The old snapshot was retired before the flip's answer left: `keep` after that answer it is gone.
    const flipped = Date.now()
    await sleep(flipped + 300 + 25 - Date.now())
    c.web.blue.release()
    const a = await answer
    t.equal(a.web, 'blue')
    t.equal(c.web.blue.baggage[0], `switchyard-gen=${before}`)
    t.equal(a.users, 'green', 'hop 2 after keep ran out goes to the current color')
    t.match(await pinCounts(c.gw.adminUrl), { pinned: 0, expired: 1, untrusted: 0, invalid: 0, unavailable: 0 })
  })

  t.test(`${engine}: from a source outside trust, hop 2 goes to the current color (untrusted); a forged entry pins nothing and is replaced`, async (t) => {
    const c = await chain(t, engine, 'pinning: { keep: 5m, trust: [10.0.0.0/8] }')
    const { before, after, answer } = await flipMidChain(t, c, 'h1')
    t.equal(c.web.blue.baggage[0], `switchyard-gen=${before}`)
    t.equal(answer.users, 'green', 'hop 2 from 127.0.0.1 (not in trust) is routed by the current snapshot')
    t.equal(answer.usersBaggage, `switchyard-gen=${after}`, 'and carries the current generation')
    t.match(await pinCounts(c.gw.adminUrl), { pinned: 0, expired: 0, untrusted: 1, invalid: 0, unavailable: 0 })

    // A client forging the kept generation, with baggage of its own around it.
    const forged = await http1(`${c.gw.url}/users/me`, { headers: { baggage: `userId=alice, switchyard-gen=${before};p=1,k2=v2;prop=x , tail=%20z` } })
    t.equal(forged.json.backend, 'green', 'the forged entry pinned nothing')
    t.equal(forged.json.baggage, `userId=alice,k2=v2;prop=x , tail=%20z,switchyard-gen=${after}`, 'the client\'s members arrive in order, the forged entry replaced by the gateway\'s own')
    t.match(await pinCounts(c.gw.adminUrl), { pinned: 0, untrusted: 2 })
  })

  t.test(`${engine}: strict about switchyard-gen, tolerant of other members; baggage lines are combined`, async (t) => {
    const c = await chain(t, engine, TRUSTED)
    const before = await generation(c.gw)
    const after = await flipToGreen(c.gw, ['users'])
    const port = Number(new URL(c.gw.url).port)
    const get = async (lines: string[]): Promise<{ backend: string, baggage: string }> => {
      const r = await rawRequest(port, ['GET /users/me HTTP/1.1', 'host: gw.test', 'connection: close', ...lines, '', ''].join('\r\n'))
      if (r.status !== 200) throw new Error(`${r.status} ${r.body}`)
      return r.json
    }

    // Malformed members of others' go through untouched, and ours still pins.
    const odd = `;;, =nokey, k=v;p;q=1, k3 = v3 , %zz=%zz, switchyard-gen=${before}`
    const a = await get([`baggage: ${odd}`])
    t.equal(a.backend, 'blue', 'a well-formed entry among malformed others pins')
    t.equal(a.baggage, `;;, =nokey, k=v;p;q=1, k3 = v3 , %zz=%zz,switchyard-gen=${before}`, 'the others pass as they were')
    const lines = await get(['baggage: a=1', `baggage: switchyard-gen=${before}`, 'baggage: b=2'])
    t.equal(lines.backend, 'blue', 'an entry on the second of several baggage lines pins')
    t.same(members(lines.baggage), ['a=1', 'b=2', `switchyard-gen=${before}`], 'the lines arrive combined into one, in order')
    t.match(await pinCounts(c.gw.adminUrl), { pinned: 2, invalid: 0, unavailable: 0 })

    const invalid: Array<[string, string[]]> = [
      ['with a property', [`baggage: switchyard-gen=${before};prop=1`]],
      ['not digits', ['baggage: switchyard-gen=abc']],
      ['twice', [`baggage: switchyard-gen=${before},switchyard-gen=${before}`]],
      ['twice, over two lines', [`baggage: switchyard-gen=${before}`, `baggage: switchyard-gen=${before}`]],
      ['more than 64 members', [`baggage: ${Array.from({ length: 64 }, (_, i) => `m${i}=1`).join(',')},switchyard-gen=${before}`]],
      ['more than 8192 bytes', [`baggage: big=${'x'.repeat(8192)},switchyard-gen=${before}`]],
    ]
    let n = 0
    for (const [what, ls] of invalid) {
      const r = await get(ls)
      n++
      t.equal(r.backend, 'green', `${what}: routed by the current snapshot`)
      t.ok(r.baggage.endsWith(`switchyard-gen=${after}`) && r.baggage.split('switchyard-gen').length === 2, `${what}: the upstream gets the gateway's entry alone`)
      t.match(await pinCounts(c.gw.adminUrl), { invalid: n }, `${what}: counted invalid`)
    }
    t.match(await pinCounts(c.gw.adminUrl), { pinned: 2, expired: 0, untrusted: 0, invalid: invalid.length })
  })

  for (const users of ['http1', 'h2c'] as const) {
    t.test(`${engine}: an h2c client's baggage fields (users over ${users}) pin and go on combined, once counted`, async (t) => {
      const c = await chain(t, engine, TRUSTED, users)
      const before = await generation(c.gw)
      const after = await flipToGreen(c.gw, ['users'])
      const session = h2Session(t, c.gw.url)
      const pinned = JSON.parse((await h2Request(session, '/users/me', { baggage: ['a=1', `switchyard-gen=${before}`, 'b=2'] })).body.toString())
      t.equal(pinned.backend, 'blue', 'pinned to the generation before the flip')
      t.same(members(pinned.baggage), ['a=1', 'b=2', `switchyard-gen=${before}`])
      const fresh = JSON.parse((await h2Request(session, '/users/me', { baggage: 'a=1' })).body.toString())
      t.equal(fresh.backend, 'green')
      t.equal(fresh.baggage, `a=1,switchyard-gen=${after}`)
      const none = JSON.parse((await h2Request(session, '/users/me')).body.toString())
      t.equal(none.baggage, `switchyard-gen=${after}`)
      t.match(await pinCounts(c.gw.adminUrl), { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 })
    })
  }

  t.test(`${engine}: a pinned request on the old color keeps its drain open until it ends`, async (t) => {
    const c = await chain(t, engine, TRUSTED)
    const before = await generation(c.gw)
    const firstIn = gate()
    const first = gate()
    c.users.blue.hold = { path: '/users/first', until: first.wait, arrived: firstIn }
    const firstReq = http1(`${c.gw.url}/users/first`)
    await firstIn.wait
    await flipToGreen(c.gw, ['users'])
    const blue = async (): Promise<any> => (await admin(c.gw.adminUrl, 'GET', '/v1/state')).json.services.users.environments.blue
    t.match(await blue(), { state: 'draining', inflight: 1 }, 'blue drains its one unpinned request')

    const pinnedIn = gate()
    const pinned = gate()
    c.users.blue.hold = { path: '/users/pinned', until: pinned.wait, arrived: pinnedIn }
    const pinnedReq = http1(`${c.gw.url}/users/pinned`, { headers: { baggage: `switchyard-gen=${before}` } })
    await pinnedIn.wait
    t.match(await blue(), { state: 'draining', inflight: 2 }, 'the pinned request counts on blue, where it went')
    first.open()
    t.equal((await firstReq).json.backend, 'blue')
    // The client may have its answer a moment before the gateway ends the exchange's count.
    const held = await eventually(async () => {
      const b = await blue()
      if (b.inflight !== 1) throw new Error(`inflight ${b.inflight as number}`)
      return b
    })
    t.match(held, { state: 'draining', inflight: 1 }, 'the unpinned one ended: the pinned one holds the drain open')
    pinned.open()
    t.equal((await pinnedReq).json.backend, 'blue', 'the pinned request was served by blue')
    const done = await eventually(async () => {
      const b = await blue()
      if (b.state === 'draining') throw new Error('still draining')
      return b
    })
    t.match(done, { state: 'idle', inflight: 0 }, 'the drain ends when the pinned request does')
  })

  t.test(`${engine}: a rollback ends the pins of the generations before it (counted expired)`, async (t) => {
    const c = await chain(t, engine, TRUSTED)
    const flipped = await flipToGreen(c.gw, ['users'])
    t.equal((await http1(`${c.gw.url}/users/me`, { headers: { baggage: `switchyard-gen=${flipped - 1}` } })).json.backend, 'blue', 'before the rollback, the old generation pins blue')
    const back = await admin(c.gw.adminUrl, 'POST', '/v1/rollback', {})
    t.equal(back.status, 200, back.text)
    const rolled = back.json.generation as number
    const r = await http1(`${c.gw.url}/users/me`, { headers: { baggage: `switchyard-gen=${flipped}` } })
    t.equal(r.json.backend, 'blue', 'a chain pinned to the generation before the rollback (green) goes by the current snapshot')
    t.equal(r.json.baggage, `switchyard-gen=${rolled}`, 'and carries the current generation on')
    t.match(await pinCounts(c.gw.adminUrl), { pinned: 1, expired: 1, untrusted: 0, invalid: 0, unavailable: 0 })
  })

  t.test(`${engine}: a WebSocket upgrade carries the baggage and is pinned like any request`, async (t) => {
    const c = await chain(t, engine, TRUSTED)
    const before = await generation(c.gw)
    const ws = await openWs(`${c.gw.url.replace('http', 'ws')}/users/ws`, { baggage: 'session=7' })
    ws.ws.send('hi')
    t.equal(await ws.next(), 'blue: hi')
    t.equal(seenAt(c.users.blue, '/users/ws')[0].headers.baggage, `session=7,switchyard-gen=${before}`, 'the upgrade request carried the client\'s baggage and the gateway\'s entry')
    ws.ws.close()
    const after = await flipToGreen(c.gw, ['users'])
    const pinned = await openWs(`${c.gw.url.replace('http', 'ws')}/users/ws2`, { baggage: `switchyard-gen=${before}` })
    pinned.ws.send('hi')
    t.equal(await pinned.next(), 'blue: hi', 'a WebSocket pinned to the old generation opens on blue')
    t.match(await pinCounts(c.gw.adminUrl), { pinned: 1, expired: 0, untrusted: 0, invalid: 0 }, 'counted once')
    pinned.ws.close()
    const fresh = await openWs(`${c.gw.url.replace('http', 'ws')}/users/ws3`)
    fresh.ws.send('hi')
    t.equal(await fresh.next(), 'green: hi')
    t.equal(seenAt(c.users.green, '/users/ws3')[0].headers.baggage, `switchyard-gen=${after}`)
    fresh.ws.close()
    // A raw handshake with two baggage lines: combined, as for any request.
    const raw = await rawRequest(Number(new URL(c.gw.url).port), wsHandshake('/users/ws4', ['baggage: a=1', 'baggage: b=2']))
    t.equal(raw.status, 101)
    t.same(members(seenAt(c.users.green, '/users/ws4')[0].headers.baggage as string), ['a=1', 'b=2', `switchyard-gen=${after}`])
  })
}

t.test('DEFECT: fast engine, h2c service: a request carrying switchyard-gen is counted once, not once by the fast engine and again by node:http after the hand-off', async (t) => {
  const c = await chain(t, 'fast', TRUSTED, 'h2c')
  const before = await generation(c.gw)
  await flipToGreen(c.gw, ['users'])
  const pinned = await http1(`${c.gw.url}/users/me`, { headers: { baggage: `switchyard-gen=${before}` } })
  t.equal(pinned.json.backend, 'blue', 'pinned to the old generation')
  t.match(await pinCounts(c.gw.adminUrl), { pinned: 1 }, 'counted pinned once')
  const invalid = await http1(`${c.gw.url}/users/me`, { headers: { baggage: 'switchyard-gen=abc' } })
  t.equal(invalid.json.backend, 'green')
  t.match(await pinCounts(c.gw.adminUrl), { pinned: 1, invalid: 1 }, 'counted invalid once')
})

t.test('fast: with pinning on and no baggage sent, the upstream gets one baggage line more and nothing else changes', async (t) => {
  const heads: string[] = []
  const up = await rawUpstream(t, (socket, data) => {
    heads.push(data.slice(0, data.indexOf('\r\n\r\n')))
    socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
  })
  const head = async (pinning: string): Promise<{ lines: string[], generation: number }> => {
    const gw = await startGateway(t, `engine: fast\n${pinning}\nservices:\n  s:\n    match: { pathPrefix: / }\n    blue: { targets: [${up.url}] }\n    green: { targets: [${up.url}] }\n`)
    const n = heads.length
    const r = await rawRequest(Number(new URL(gw.url).port), 'GET /api/x?q=1 HTTP/1.1\r\nhost: gw.test\r\nx-request-id: rid-1\r\naccept: */*\r\nuser-agent: pin-test\r\n\r\n')
    t.equal(r.status, 200)
    const got = heads.slice(n).filter((h) => h.startsWith('GET /api/x'))
    t.equal(got.length, 1)
    const g = await generation(gw)
    await gw.stop()
    return { lines: got[0].split('\r\n'), generation: g }
  }
  const { lines: off } = await head('')
  const { lines: on, generation: g } = await head('pinning: { trust: [127.0.0.0/8] }')
  const baggage = on.filter((l) => /^baggage:/i.test(l))
  t.same(baggage, [`baggage: switchyard-gen=${g}`], 'exactly one baggage line, naming the generation')
  t.notOk(off.some((l) => /^baggage:/i.test(l)), 'none with pinning off')
  t.same(on.filter((l) => !/^baggage:/i.test(l)), off, 'every other line as before, in the same order')
})

for (const engine of ENGINES) {
  t.test(`${engine}: the client's baggage lines, in any letter case, reach the upstream as one line ending in the gateway's entry`, async (t) => {
    const heads: string[] = []
    const up = await rawUpstream(t, (socket, data) => {
      heads.push(data.slice(0, data.indexOf('\r\n\r\n')))
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    })
    const gw = await startGateway(t, `engine: ${engine}\npinning: { trust: [10.0.0.0/8] }\nservices:\n  s:\n    match: { pathPrefix: / }\n    blue: { targets: [${up.url}] }\n    green: { targets: [${up.url}] }\n`)
    const g = await generation(gw)
    const r = await rawRequest(Number(new URL(gw.url).port), 'GET /api/y HTTP/1.1\r\nhost: gw.test\r\nBaGGage: a=1\r\nBAGGAGE: switchyard-gen=99\r\nbaggage: b=2\r\n\r\n')
    t.equal(r.status, 200)
    const head = heads.find((h) => h.startsWith('GET /api/y'))?.split('\r\n') ?? []
    const lines = head.filter((l) => /^baggage:/i.test(l))
    t.equal(lines.length, 1, `one baggage line: ${JSON.stringify(lines)}`)
    t.same(members(lines[0]?.slice(lines[0].indexOf(':') + 1) ?? ''), ['a=1', 'b=2', `switchyard-gen=${g}`])
  })
}
