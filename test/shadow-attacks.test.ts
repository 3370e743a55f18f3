// Attacks on shadow traffic: a hostile client, a broken or hostile idle
// color, an unlucky operator, and a gate asked to pass a bad version. Each
// test asserts the promise under attack (the copy never changes the client's
// answer, counts stay honest, the gate cannot be fooled). Each defect found
// this way failed here before its fix.

import t from 'tap'
import net from 'node:net'
import { writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { createShadowBook } from '../src/shadow/tally.js'
import type { Difference } from '../src/shadow/types.js'
import { shadowView, type ShadowApiView } from './helpers/shadow-view.js'
import { admin, eventually, serviceYaml, startBackend, startGateway, type Backend } from './helpers/index.js'
import { answer, rawUpstream, type SeenRequest } from './helpers/shadow-upstream.js'



/** Every copy sent has been compared or dropped, and at least `atLeast` went out. */
async function settled (adminUrl: string, atLeast: number, timeout = 10_000): Promise<ShadowApiView> {
  return await eventually(async () => {
    const v = await shadowView(adminUrl)
    if (v.sent < atLeast || v.compared + v.drops.failed < v.sent) throw new Error(`not settled: ${JSON.stringify(v)}`)
    return v
  }, { timeout })
}

/** `n` GETs, `concurrency` at a time; the bodies the client got, with status. */
async function load (url: string, n: number, concurrency: number, headers: Record<string, string> = {}): Promise<Array<{ status: number, body: string }>> {
  const out: Array<{ status: number, body: string }> = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++
      const res = await request(url, { headers })
      out.push({ status: res.statusCode, body: await res.body.text() })
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return out
}

const OK_BODY = JSON.stringify({ id: 7, name: 'Ada' })
const ERROR_BODY = JSON.stringify({ error: 'internal' })

/** A seeded random in [0, 1) (mulberry32): the same flakes on every run. */
function seeded (seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** A backend answering OK_BODY, or (when `fails(n)` for its n-th request, from 0) a 500 with ERROR_BODY. */
function answers (b: Backend, fails: (n: number) => boolean): void {
  let n = 0
  b.handler = (_req: IncomingMessage, res: ServerResponse): void => {
    const bad = fails(n++)
    res.writeHead(bad ? 500 : 200, { 'content-type': 'application/json' })
    res.end(bad ? ERROR_BODY : OK_BODY)
  }
}

// ---------------------------------------------------------------- the gate

t.test('gate: one flaky live answer seen by a noise probe does not make every status difference noise (tally)', async (t) => {
  const book = createShadowBook(() => {})
  const tally = book.tallyFor('users', 'k')
  const status: Difference = { where: 'status', live: '200', other: '500' }
  const body: Difference = { where: '$.error', live: '(absent)', other: '"internal"' }
  // 20 probes while learning: the live color flaked once (a 500 between two 200s).
  tally.noise([status, body])
  for (let i = 0; i < 19; i++) tally.noise([])
  // The idle color answers 500 to every request.
  for (let i = 0; i < 200; i++) tally.pair([status, body], true)
  const v = tally.view()
  t.equal(v.compared, 200)
  t.equal(v.differed, 200, `every pair differs: the idle color always fails where the live one flaked 1 probe in 20 (${JSON.stringify({ differed: v.differed, noise: v.noise })})`)
  t.ok(v.top.some((x) => x.where === 'status' && x.count === 200), 'and the status is named, with its count')
})

t.test('gate: a place that differs as often between two live answers as in the pairs stays noise (tally)', async (t) => {
  const book = createShadowBook(() => {})
  const tally = book.tallyFor('users', 'k')
  const ts: Difference = { where: '$.servedAt', live: '1', other: '2' }
  for (let i = 0; i < 20; i++) tally.noise([ts])
  for (let i = 0; i < 200; i++) tally.pair([ts], true)
  const v = tally.view()
  t.equal(v.differed, 0, 'a timestamp is noise')
  t.equal(v.noise, 200)
  // A field that differs now and then on both colors alike (a flaky dependency): noise, not a difference.
  const tally2 = book.tallyFor('users', 'k2')
  const flaky: Difference = { where: 'status', live: '200', other: '503' }
  for (let i = 0; i < 40; i++) tally2.noise(i % 5 === 0 ? [flaky] : [])
  for (let i = 0; i < 200; i++) tally2.pair(i % 5 === 0 ? [flaky] : [], true)
  const v2 = tally2.view()
  t.equal(v2.differed, 0, `a share that two live answers show as well is noise (${JSON.stringify({ differed: v2.differed, noise: v2.noise })})`)
  t.equal(v2.noise, 40)
})

t.test('gate: an idle color that always answers 500 is refused though the live color flakes the same 500 now and then', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  // One answer in ten of the live color is the very 500 the idle color gives every time.
  const flake = seeded(1)
  answers(blue, () => flake() < 0.1)
  answers(green, () => true)
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1 }\n    gate: { maxShadowDiff: 0.05, minShadowCompared: 50 }\n')}`)
  const got = await load(`${gw.url}/api/users/7`, 100, 1)
  t.ok(got.every((r) => r.body === (r.status === 200 ? OK_BODY : ERROR_BODY)), 'clients got the live color\'s answers')
  const v = await settled(gw.adminUrl, 90)
  t.comment(`compared ${v.compared}, differed ${v.differed}, noise ${v.noise}, probes ${v.probes}, noise places ${JSON.stringify(v.noiseWhere)}`)
  t.ok(v.differed / v.compared > 0.5, `most pairs count as differing (${v.differed} of ${v.compared})`)
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(flip.status, 409, `the flip into a color that fails every request is refused: ${flip.text}`)
})

t.test('gate: the same version on both colors, both flaking alike, is not blocked by that noise', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const flakeBlue = seeded(2)
  const flakeGreen = seeded(3)
  answers(blue, () => flakeBlue() < 0.1)
  answers(green, () => flakeGreen() < 0.1)
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, noise: 0.5 }\n    gate: { maxShadowDiff: 0.05, minShadowCompared: 50 }\n')}`)
  await load(`${gw.url}/api/users/7`, 100, 1)
  const v = await settled(gw.adminUrl, 90)
  t.comment(`compared ${v.compared}, differed ${v.differed}, noise ${v.noise}, probes ${v.probes}`)
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(flip.status, 200, `the flip passes: ${flip.text}`)
})

// ------------------------------------------------- a hostile idle color

/** What a broken or hostile idle color does to a copy, one behaviour per request in turn. */
const HOSTILE: Array<[string, (req: SeenRequest) => void]> = [
  ['answers garbage', (req) => { req.socket.write('HELLO THERE\r\n\r\n') }],
  ['declares 100 MB and stalls', (req) => { req.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 104857600\r\n\r\n' + 'x'.repeat(70_000)) }],
  ['never ends its chunked body', (req) => {
    req.socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n')
    const timer = setInterval(() => { if (req.socket.destroyed) clearInterval(timer); else req.socket.write('400\r\n' + 'y'.repeat(0x400) + '\r\n') }, 2)
    req.socket.on('close', () => clearInterval(timer))
  }],
  ['floods 1xx', (req) => { req.socket.write('HTTP/1.1 100 Continue\r\n\r\n'.repeat(500)) }],
  ['resets mid-body', (req) => {
    req.socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"id":', () => req.socket.resetAndDestroy())
  }],
  ['closes before answering', (req) => { req.socket.destroy() }],
  ['answers twice', (req) => {
    const a = answer(200, ['content-type', 'application/json'], Buffer.from(OK_BODY))
    req.socket.write(Buffer.concat([a, a]))
  }],
  ['sends bytes after its answer', (req) => {
    req.socket.write(answer(200, ['content-type', 'application/json'], Buffer.from(OK_BODY)))
    setTimeout(() => { if (!req.socket.destroyed) req.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\npoisoned!') }, 5)
  }],
  ['answers a 101 to a GET', (req) => { req.socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n') }],
  ['answers whole and well', (req) => { req.socket.write(answer(200, ['content-type', 'application/json'], Buffer.from(OK_BODY))) }],
]

for (const engine of ['fast', 'node'] as const) {
  t.test(`${engine}: an idle color that misbehaves every way never touches the client's answers, the counts stay honest, the pool is not poisoned`, async (t) => {
    const blue = await startBackend(t, 'blue')
    answers(blue, () => false)
    let turn = 0
    const green = await rawUpstream(t, (req) => {
      if (req.headers.get('x-switchyard-shadow') === undefined) {
        // A preview request (a tester's, not a copy): a clean answer, so a poisoned pool would show.
        req.socket.write(answer(200, ['content-type', 'application/json'], Buffer.from(JSON.stringify({ preview: req.target }))))
        return
      }
      HOSTILE[turn++ % HOSTILE.length][1](req)
    })
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n${serviceYaml('users', '/api/users', [blue], [], '    preview: { header: x-color }\n    shadow: { sample: 1, timeout: 400ms, maxConcurrent: 4, learn: 0, noise: 0, maxBody: 65536 }\n').replace('green: { targets: [] }', `green: { targets: [${green.url}] }`)}`)
    const got = await load(`${gw.url}/api/users/7`, HOSTILE.length * 4, 2)
    t.ok(got.every((r) => r.status === 200 && r.body === OK_BODY), 'every client got the live answer, whole')
    // Preview traffic shares the idle target's pool with the copies: it gets its own answers, never a copy's leftovers.
    for (let i = 0; i < 20; i++) {
      const r = await request(`${gw.url}/api/users/p${i}`, { headers: { 'x-color': 'green' } })
      const body = await r.body.text()
      t.equal(body, JSON.stringify({ preview: `/api/users/p${i}` }), `preview request ${i} gets its own answer`)
      if (body !== JSON.stringify({ preview: `/api/users/p${i}` })) break
    }
    const v = await settled(gw.adminUrl, HOSTILE.length * 2)
    t.comment(JSON.stringify({ sent: v.sent, compared: v.compared, drops: v.drops, bodyNotCompared: v.bodyNotCompared, differed: v.differed, top: v.top.map((x) => x.where) }))
    t.equal(v.sent, v.compared + v.drops.failed, 'every copy sent was compared or failed: none lost, none counted twice')
    t.ok(v.drops.failed >= 3, 'the broken answers count as failed copies')
    const metrics = (await admin(gw.adminUrl, 'GET', '/metrics')).text
    t.match(metrics, /switchyard_shadow_inflight\{service="users"\} 0\b/, 'no copy is left in flight')
    const health = await request(`${gw.url}/api/users/7`)
    t.equal(await health.body.text(), OK_BODY, 'the gateway still serves')
  })
}

t.test('gate: an idle color whose answers outgrow maxBody (a small live answer, a huge idle one) is not counted as matching', async (t) => {
  const blue = await startBackend(t, 'blue')
  answers(blue, () => false)
  const green = await startBackend(t, 'green')
  // The regression: pagination lost, the whole table in every answer; the same status and headers.
  green.handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ id: 7, name: 'Ada', rows: 'r'.repeat(100_000) }))
  }
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1 }\n    gate: { maxShadowDiff: 0.05, minShadowCompared: 20 }\n')}`)
  await load(`${gw.url}/api/users/7`, 30, 1)
  const v = await settled(gw.adminUrl, 30)
  t.comment(JSON.stringify({ compared: v.compared, matched: v.matched, differed: v.differed, bodyNotCompared: v.bodyNotCompared, top: v.top }))
  t.equal(v.differed, v.compared, 'a body that fits maxBody and one that does not cannot be the same body: every pair differs')
  t.ok(v.top.some((x) => x.where === 'body'), 'at the body')
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(flip.status, 409, `the flip is refused: ${flip.text.slice(0, 300)}`)
})

// ------------------------------------------------- the live color's connections

for (const engine of ['fast', 'node'] as const) {
  t.test(`${engine}: a noise probe never makes a live request wait for one of the live target's few connections`, async (t) => {
    const blue = await startBackend(t, 'blue')
    // A fragile live service the operator allows only 2 connections: 60 ms an answer, and a probe held 3 s.
    blue.handler = (req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(OK_BODY)
      }, req.headers['x-switchyard-shadow'] === undefined ? 60 : 3000)
    }
    const green = await startBackend(t, 'green')
    answers(green, () => false)
    // Every copy learns: each live answer is followed by a probe to the live target.
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n${serviceYaml('users', '/api/users', [blue], [green], '    limits: { maxConnections: 2 }\n    shadow: { sample: 1, learn: 100000 }\n')}`)
    const timed = async (): Promise<number> => {
      const start = performance.now()
      const r = await request(`${gw.url}/api/users/7`)
      await r.body.text()
      return performance.now() - start
    }
    await timed()
    // The first answer's probe is out now (or was dropped); then two clients at once: the 2 connections they are allowed.
    await eventually(() => blue.seen.length >= 2 || green.seen.length >= 1)
    await new Promise((resolve) => setTimeout(resolve, 20))
    const both = await Promise.all([timed(), timed()])
    const v = await shadowView(gw.adminUrl)
    t.comment(`two concurrent clients: ${both.map((x) => x.toFixed(0)).join(' and ')} ms; probes so far ${blue.seen.filter((s) => s.headers['x-switchyard-shadow'] !== undefined).length}, drops ${JSON.stringify(v.drops)}`)
    // One queued behind the probe would wait for its 3 s answer: the bound sits far from both that and the 60 ms answer (a loaded CI machine under coverage adds hundreds of ms).
    t.ok(Math.max(...both) < 2000, `neither waited behind a probe holding a live connection (${Math.max(...both).toFixed(0)} ms; the live color takes 60, a probe 3000)`)
  })
}

// ------------------------------------------------- a hostile client

for (const engine of ['fast', 'node'] as const) {
  // The mark tells an upstream "this is a copy, its answer goes nowhere": a service may skip side effects
  // for it (the README's unsafe methods). Only the gateway may set it; a client's must not reach the live color.
  t.test(`${engine}: a client cannot pass its own x-switchyard-shadow to the live color`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    answers(blue, () => false)
    answers(green, () => false)
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, learn: 0, noise: 0 }\n')}`)
    const r = await request(`${gw.url}/api/users/7`, { headers: { 'x-switchyard-shadow': '0' } })
    t.equal(await r.body.text(), OK_BODY)
    await settled(gw.adminUrl, 1)
    const copy = green.seen.find((s) => s.url === '/api/users/7')
    t.equal(copy?.headers['x-switchyard-shadow'], '1', 'the copy carries the gateway\'s mark once, not the client\'s')
    t.equal(blue.seen[0].headers['x-switchyard-shadow'], undefined, `the live request does not carry the client's mark (got ${String(blue.seen[0].headers['x-switchyard-shadow'])})`)
  })
}

t.test('credentials in requests and answers never show in the comparison, the gate refusal or the events', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const secretAnswer = (who: string) => (req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, {
      'content-type': 'application/json',
      'set-cookie': `session=SECRET-${who}-${Math.random()}`,
      'www-authenticate': `Bearer realm="SECRET-${who}"`,
      authorization: `Bearer SECRET-${who}`,
    })
    res.end(JSON.stringify({ id: 7, plan: who }))
  }
  blue.handler = secretAnswer('blue')
  green.handler = secretAnswer('green')
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, learn: 0, noise: 0 }\n    gate: { maxShadowDiff: 0, minShadowCompared: 5 }\n')}`)
  await load(`${gw.url}/api/users/7`, 10, 1, { authorization: 'Bearer SECRET-client', cookie: 'sid=SECRET-client' })
  const v = await settled(gw.adminUrl, 10)
  t.ok(v.top.some((x) => x.where === 'header:set-cookie'), 'the differing cookie is named')
  const refused = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(refused.status, 409)
  const shown = [
    (await admin(gw.adminUrl, 'GET', '/v1/services/users/shadow')).text,
    refused.text,
    (await admin(gw.adminUrl, 'GET', '/v1/events')).text,
    (await admin(gw.adminUrl, 'GET', '/metrics')).text,
  ].join('\n')
  t.notMatch(shown, /SECRET/, 'no cookie, credential or challenge value anywhere')
  t.match(shown, /\[redacted\]/, 'examples say they were redacted')
})

t.test('maxConcurrent 1 at 200 concurrent clients: never more than one copy at the idle color at once, every client answered', async (t) => {
  const blue = await startBackend(t, 'blue')
  answers(blue, () => false)
  const green = await startBackend(t, 'green')
  let now = 0
  let most = 0
  green.handler = (_req, res) => {
    now++
    most = Math.max(most, now)
    setTimeout(() => {
      now--
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(OK_BODY)
    }, 20)
  }
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, maxConcurrent: 1, learn: 0, noise: 0 }\n')}`)
  const got = await load(`${gw.url}/api/users/7`, 400, 200)
  t.ok(got.every((r) => r.status === 200 && r.body === OK_BODY), 'every client answered by the live color')
  const v = await settled(gw.adminUrl, 1)
  t.equal(most, 1, 'one copy at a time reached the idle color')
  t.ok(v.drops.busy > 0, `the rest were dropped as busy (${v.drops.busy})`)
  t.equal(v.sent + v.drops.busy + v.drops.no_target, 400, 'each sampled request is either sent or counted as dropped')
})

// ------------------------------------------------- an unlucky operator

t.test('flips while copies are out: copies in flight stay within maxConcurrent, and late answers never land in the new comparison', async (t) => {
  let out = 0
  let most = 0
  const slowCopies = (b: Backend): void => {
    b.handler = (req, res) => {
      const copy = req.headers['x-switchyard-shadow'] !== undefined
      if (copy) most = Math.max(most, ++out)
      setTimeout(() => {
        if (copy) out--
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(OK_BODY)
      }, copy ? 600 : 0)
    }
  }
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  slowCopies(blue)
  slowCopies(green)
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, maxConcurrent: 1, learn: 0, noise: 0, timeout: 2s }\n')}`)
  const copies = (): number => blue.seen.concat(green.seen).filter((s) => s.headers['x-switchyard-shadow'] !== undefined).length
  const send = async (): Promise<void> => {
    await (await request(`${gw.url}/api/users/7`)).body.text()
    // The copy leaves on the next turn; wait until it was sent or dropped.
    await eventually(async () => { const v = await shadowView(gw.adminUrl); return v.sent + v.dropped > 0 })
  }
  await send()
  t.equal(copies(), 1, 'one copy out, to green')
  for (const to of ['green', 'blue']) {
    const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { to, force: true })
    t.equal(flip.status, 200, flip.text)
    await send()
  }
  t.equal(most, 1, `at most maxConcurrent (1) copies were out at once, flips or not (${most})`)
  // Every copy answered; the comparison now (blue>green again, a fresh one) holds none of the older ones' answers.
  await eventually(() => out === 0, { timeout: 3000 })
  await new Promise((resolve) => setTimeout(resolve, 50))
  const v = await shadowView(gw.adminUrl)
  t.ok(v.compared + v.drops.failed <= v.sent, `the comparison started by the last flip holds no answer to a copy sent before it (${JSON.stringify({ sent: v.sent, compared: v.compared, drops: v.drops })})`)
  const metrics = (await admin(gw.adminUrl, 'GET', '/metrics')).text
  t.match(metrics, /switchyard_shadow_inflight\{service="users"\} 0\b/, 'nothing left in flight')
})

t.test('DELETE twice, a 1 ms session, and bad starts: each answered plainly, nothing left running', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  answers(blue, () => false)
  answers(green, () => false)
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green])}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/services/users/shadow', { sample: 1 })).status, 200)
  const first = await admin(gw.adminUrl, 'DELETE', '/v1/services/users/shadow')
  t.equal(first.status, 200, first.text)
  const second = await admin(gw.adminUrl, 'DELETE', '/v1/services/users/shadow')
  t.ok(second.status === 200 || second.status === 409, `a second stop is answered plainly (${second.status} ${second.text.slice(0, 200)})`)
  t.equal((await shadowView(gw.adminUrl)).active, false)
  const gen = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation as number
  const short = await admin(gw.adminUrl, 'POST', '/v1/services/users/shadow', { sample: 1, duration: '1ms' })
  t.equal(short.status, 200, short.text)
  await eventually(async () => { if ((await shadowView(gw.adminUrl)).active) throw new Error('still active') }, { timeout: 3000 })
  const n = green.seen.length
  await load(`${gw.url}/api/users/7`, 5, 1)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(green.seen.length, n, 'an ended session copies nothing')
  const after = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation as number
  t.ok(after - gen <= 3, `the ended session cost a bounded number of generations (${after - gen})`)
  for (const bad of [{ sample: 0 }, { sample: -1 }, { sample: 'all' }, { duration: 'soon' }, { duration: '-1s' }, { duration: 0 }, { duration: '1000d' }]) {
    const r = await admin(gw.adminUrl, 'POST', '/v1/services/users/shadow', bad)
    t.equal(r.status, 400, `${JSON.stringify(bad)} refused: ${r.text.slice(0, 160)}`)
  }
})

// ------------------------------------------------- clients that stop, pipeline, or ask for less

for (const engine of ['fast', 'node'] as const) {
  t.test(`${engine}: a client that leaves mid-answer leaves no half answer to compare`, async (t) => {
    const big = JSON.stringify({ rows: 'z'.repeat(3 * 1024 * 1024) })
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    for (const b of [blue, green]) {
      b.handler = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(big)
      }
    }
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, learn: 0, noise: 0, maxBody: 8388608 }\n')}`)
    const port = Number(new URL(gw.url).port)
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => s.write('GET /api/users/7 HTTP/1.1\r\nhost: x\r\n\r\n'))
        let got = 0
        s.on('data', (c: Buffer) => {
          got += c.length
          if (got > 100_000) s.destroy()
        })
        s.on('close', () => resolve())
        s.on('error', () => {})
      })
    }
    // A whole exchange afterwards: its copy settles, and any copy of a cut one would have settled before it.
    const whole = await request(`${gw.url}/api/users/7`)
    t.equal((await whole.body.text()).length, big.length)
    const v = await settled(gw.adminUrl, 1)
    await new Promise((resolve) => setTimeout(resolve, 100))
    const after = await shadowView(gw.adminUrl)
    t.equal(after.differed, 0, `no pair compares a cut answer with a whole one (${JSON.stringify({ sent: after.sent, compared: after.compared, top: after.top.map((x) => x.where) })})`)
    t.ok(v.compared >= 1, 'the whole exchange was compared')
  })

  t.test(`${engine}: pipelined requests, HEAD and Range: each client answer is its own, each copy matches`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    const text = 'abcdefghijklmnopqrstuvwxyz'.repeat(40)
    for (const b of [blue, green]) {
      b.handler = (req, res) => {
        const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
        if (range !== null) {
          const [from, to] = [Number(range[1]), Number(range[2])]
          res.writeHead(206, { 'content-type': 'text/plain', 'content-range': `bytes ${from}-${to}/${text.length}` })
          res.end(text.slice(from, to + 1))
          return
        }
        res.writeHead(200, { 'content-type': 'text/plain', 'x-path': req.url ?? '' })
        res.end(req.method === 'HEAD' ? undefined : `${req.url ?? ''}:${text}`)
      }
    }
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, learn: 0, noise: 0 }\n')}`)
    const port = Number(new URL(gw.url).port)
    const raw = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.write('GET /api/users/1 HTTP/1.1\r\nhost: x\r\n\r\nHEAD /api/users/2 HTTP/1.1\r\nhost: x\r\n\r\nGET /api/users/3 HTTP/1.1\r\nhost: x\r\nrange: bytes=5-9\r\n\r\nGET /api/users/4 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
      })
      let buf = ''
      s.on('data', (c: Buffer) => { buf += c.toString('latin1') })
      s.on('close', () => resolve(buf))
      s.on('error', () => {})
    })
    const heads = raw.split('HTTP/1.1 ').slice(1).map((x) => x.slice(0, 3))
    t.same(heads, ['200', '200', '206', '200'], 'four answers, in order')
    t.ok(raw.includes(`/api/users/1:${text}`) && raw.includes(`/api/users/4:${text}`), 'each GET got its own body')
    t.ok(raw.includes('fghij'), 'the range got its bytes')
    t.notOk(raw.includes('/api/users/2:'), 'the HEAD answer has no body')
    const v = await settled(gw.adminUrl, 4)
    t.same({ sent: v.sent, compared: v.compared, matched: v.matched }, { sent: 4, compared: 4, matched: 4 }, `every copy matched (${JSON.stringify(v.top)})`)
    const copies = green.seen.map((s) => `${s.method} ${s.url} ${s.headers.range ?? ''}`).sort()
    t.same(copies, ['GET /api/users/1 ', 'GET /api/users/3 bytes=5-9', 'GET /api/users/4 ', 'HEAD /api/users/2 '], 'each copy is its request')
  })
}

t.test('a client whose head only just fits cannot make the copy\'s mark count as a difference', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  answers(blue, () => false)
  answers(green, () => false)
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, learn: 0, noise: 0 }\n')}`)
  // Heads from just under the upstream's 16 KiB limit upward: the live request fits, its copy (24 bytes more) may not.
  let ok = 0
  for (let pad = 16_150; pad < 16_400; pad += 6) {
    const r = await request(`${gw.url}/api/users/7`, { headers: { 'x-pad': 'p'.repeat(pad) } })
    await r.body.text()
    if (r.statusCode === 200) ok++
  }
  t.ok(ok > 0, `some heads reached the live color whole (${ok})`)
  const v = await settled(gw.adminUrl, 1)
  t.comment(JSON.stringify({ sent: v.sent, compared: v.compared, differed: v.differed, drops: v.drops, top: v.top.map((x) => `${x.where} ${x.example.live}/${x.example.idle}`) }))
  t.equal(v.differed, 0, 'no pair differs: the same version answered; a 431 to the longer copy says nothing about it')
})

t.test('gate: a regression behind more than 50 noisy places (a stats answer full of live counters) is not hidden in the cut-off list', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const stats = (plan: string) => (_req: IncomingMessage, res: ServerResponse): void => {
    const body: Record<string, unknown> = {}
    for (let i = 0; i < 60; i++) body[`counter${i}`] = Math.floor(Math.random() * 1e9)
    body.plan = plan
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }
  blue.handler = stats('basic')
  green.handler = stats('premium')
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1 }\n    gate: { maxShadowDiff: 0.05, minShadowCompared: 30 }\n')}`)
  await load(`${gw.url}/api/users/stats`, 40, 1)
  const v = await settled(gw.adminUrl, 40)
  t.comment(JSON.stringify({ compared: v.compared, differed: v.differed, noise: v.noise, top: v.top.slice(0, 3).map((x) => x.where) }))
  t.ok(v.differed / v.compared > 0.5, `the changed plan is not taken for noise (${v.differed} of ${v.compared} differ)`)
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(flip.status, 409, `the flip is refused: ${flip.text.slice(0, 200)}`)
})

// Noise is learnt per endpoint (method and path shape, tally.ts): `$.value` random on /random
// made `$.value` noise for the whole service, and a change of it on /users/7 passed the gate.
t.test('gate: a field that is noise on one endpoint does not hide a change of that field on another', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const version = (plan: string) => (req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'application/json' })
    // /api/users/random: `value` differs on every answer (noise); /api/users/7: `value` is the plan, stable on one version.
    res.end(JSON.stringify({ value: req.url === '/api/users/random' ? Math.random() : plan }))
  }
  blue.handler = version('basic')
  green.handler = version('premium')
  const gw = await startGateway(t, `services:\n${serviceYaml('users', '/api/users', [blue], [green], '    shadow: { sample: 1, noise: 0.5 }\n    gate: { maxShadowDiff: 0.05, minShadowCompared: 30 }\n')}`)
  for (let i = 0; i < 40; i++) {
    await (await request(`${gw.url}/api/users/${i % 2 === 0 ? 'random' : '7'}`)).body.text()
  }
  const v = await settled(gw.adminUrl, 40)
  t.comment(JSON.stringify({ compared: v.compared, differed: v.differed, noise: v.noise, top: v.top, noiseWhere: v.noiseWhere }))
  t.ok(v.differed >= v.compared / 2 - 2, `the half of the pairs where the plan changed count as differing (${v.differed} of ${v.compared})`)
  t.ok(v.noise >= v.compared / 2 - 2, `the random endpoint's pairs still count as noise (${v.noise} of ${v.compared})`)
  t.same(v.noiseWhere.map((n) => `${n.endpoint} ${n.where}`), ['GET /api/users/random $.value'], 'the place is noise on the endpoint where live answers differ, only there')
  t.same(v.top.map((x) => [x.where, x.endpoints.map((e) => e.endpoint)]), [['$.value', ['GET /api/users/{id}']]], 'the change is counted on the endpoint where it is one')
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(flip.status, 409, `the flip is refused: ${flip.text.slice(0, 200)}`)
})

// An operator whose gate is blocked by a field that differs by design (a build id) adds it to
// `ignore` and reloads: the pairs counted under the old rules still count, so the gate stays
// shut until thousands of new pairs dilute them, and nothing (stop, start) resets the comparison.
// The comparison key (routing/snapshot.ts comparisonKey) names the rules (`ignore`, maxBody) too.
t.test('a reload that adds an ignore rule starts a comparison judged by the new rules', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const version = (build: string) => (_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ id: 7, build }))
  }
  blue.handler = version('b-100')
  green.handler = version('b-101')
  const yaml = (extra: string): string => `services:\n${serviceYaml('users', '/api/users', [blue], [green], `    shadow: { sample: 1, learn: 0, noise: 0${extra} }\n    gate: { maxShadowDiff: 0.05, minShadowCompared: 20 }\n`)}`
  const gw = await startGateway(t, yaml(''))
  await load(`${gw.url}/api/users/7`, 30, 1)
  await settled(gw.adminUrl, 30)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })).status, 409, 'the build id blocks the flip')
  writeFileSync(gw.configFile, `log: { access: false }\n${yaml(', ignore: { json: [$.build] }')}`)
  const reloaded = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
  t.equal(reloaded.status, 200, reloaded.text)
  await load(`${gw.url}/api/users/7`, 30, 1)
  const v = await eventually(async () => {
    const x = await shadowView(gw.adminUrl)
    if (x.compared < 30) throw new Error(JSON.stringify(x))
    return x
  })
  t.comment(JSON.stringify({ compared: v.compared, differed: v.differed, top: v.top.map((x) => x.where) }))
  t.equal(v.differed, 0, 'no pair differs at a place the rules in force ignore')
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(flip.status, 200, `the flip passes once the build id is ignored: ${flip.text.slice(0, 160)}`)
})
