// Shadow traffic's mirror: taps driven directly as an engine would, copies sent
// over real keep-alive sockets to raw upstreams, and exactly what was compared and counted.

import t from 'tap'
import { randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { ShadowConfig } from '../src/config/schema.js'
import type { AnswerTap } from '../src/proxy/resolve.js'
import { endpointOf, ShadowRoute } from '../src/shadow/mirror.js'
import type { Comparer, ShadowPlan } from '../src/shadow/types.js'
import type { Endpoint } from '../src/upstream/target-set.js'
import {
  answer, chunkFramed, dribble, drive, endpointFor, rawUpstream, RecordingComparer, RecordingTally, sha256, targets,
  type RawUpstream, type SeenRequest,
} from './helpers/shadow-upstream.js'

function settings (over: Partial<ShadowConfig> = {}): ShadowConfig {
  return {
    sample: 1,
    methods: ['GET', 'HEAD'],
    unsafe: false,
    ignore: { headers: [], json: [] },
    redact: [],
    maxBody: 64 * 1024,
    maxConcurrent: 32,
    timeout: 5000,
    noise: 0,
    learn: 0,
    ...over,
  }
}

interface Teardown { teardown: (fn: () => unknown) => void }

interface Setup {
  route: ShadowRoute
  tally: RecordingTally
  comparer: RecordingComparer
  idle: RawUpstream
  live: RawUpstream
  idleEndpoint: Endpoint
  liveEndpoint: Endpoint
}

async function setup (t: Teardown, over: Partial<ShadowConfig> = {}, plan: Partial<ShadowPlan> = {}): Promise<Setup> {
  const idle = await rawUpstream(t)
  const live = await rawUpstream(t, (req) => req.socket.write(answer(200, ['x-backend', 'live'], Buffer.from('live'))))
  const idleEndpoint = endpointFor(t, idle.url)
  const liveEndpoint = endpointFor(t, live.url)
  const tally = new RecordingTally()
  const comparer = new RecordingComparer()
  const route = new ShadowRoute({
    service: 'users',
    settings: settings(over),
    live: targets(liveEndpoint),
    idle: targets(idleEndpoint),
    tally,
    comparer,
    until: undefined,
    ...plan,
  })
  return { route, tally, comparer, idle, live, idleEndpoint, liveEndpoint }
}

/** Lets a released connection settle back into its pool's idle list (two of the pool's turns). */
async function turns (n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve))
}

function tapOf (route: ShadowRoute, method = 'GET'): AnswerTap {
  const tap = route.sample(method)
  if (tap === undefined) throw new Error('not sampled')
  return tap
}

t.test('a content-length answer: the copy is the live head plus x-switchyard-shadow, and both answers are compared whole', async (t) => {
  const s = await setup(t)
  const idleBody = randomBytes(3000)
  s.idle.handler = (req) => req.socket.write(answer(200, ['content-type', 'application/json', 'x-v', '2'], idleBody))
  const tap = tapOf(s.route)
  drive(tap, {
    target: '/items?id=1',
    fields: 'host: users.test\r\nx-request-id: abc\r\naccept: */*\r\nx-forwarded-for: 10.0.0.1\r\n',
    answerFields: 'content-type: application/json\r\nx-v: 1\r\ncontent-length: 10\r\n',
    body: [Buffer.from('hello'), Buffer.from('world')],
  })
  t.equal(s.idle.seen.length, 0, 'nothing is sent in the exchange\'s own turn')
  await s.tally.settled(1)
  const seen = s.idle.seen[0]
  t.equal(seen.head.split('\r\n')[0], 'GET /items?id=1 HTTP/1.1')
  t.same(seen.lines, ['host: users.test', 'x-request-id: abc', 'accept: */*', 'x-forwarded-for: 10.0.0.1', 'x-switchyard-shadow: 1'])
  t.equal(s.comparer.calls.length, 1)
  const { live, other } = s.comparer.calls[0]
  t.equal(live.status, 200)
  t.same([...live.headers], [['content-type', 'application/json'], ['x-v', '1'], ['content-length', '10']])
  t.equal(sha256(live.body), sha256(Buffer.from('helloworld')))
  t.equal(other.status, 200)
  t.equal(other.headers.get('x-v'), '2')
  t.equal(other.headers.get('content-length'), '3000')
  t.equal(sha256(other.body), sha256(idleBody))
  t.same(s.tally.events, ['sent', 'pair'])
  t.same(s.tally.pairs[0], { diffs: [], bodyCompared: true, endpoint: 'GET /items' }, 'counted under its endpoint: the path without the query')
  t.equal(s.tally.inflight, 0)
  t.equal(s.live.seen.length, 0, 'no noise probe with learn 0 and noise 0')
})

t.test('chunked answers are decoded on both sides, the live one split at every byte boundary', async (t) => {
  const s = await setup(t)
  const body = randomBytes(40)
  const framed = chunkFramed(body, 7)
  s.idle.handler = (req) => req.socket.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n'), framed]))
  const splits: Buffer[][] = []
  for (let i = 1; i < framed.length; i++) splits.push([framed.subarray(0, i), framed.subarray(i)])
  splits.push([...framed].map((b) => Buffer.from([b])))
  for (const [n, parts] of splits.entries()) {
    drive(tapOf(s.route), { answerFields: ['Transfer-Encoding', 'chunked', 'X-A', Buffer.from('1')], chunked: true, body: parts })
    await s.tally.settled(n + 1)
    await turns()
  }
  t.equal(s.tally.pairs.length, splits.length, 'every copy compared')
  const liveDigests = new Set(s.comparer.calls.map((c) => sha256(c.live.body)))
  const idleDigests = new Set(s.comparer.calls.map((c) => sha256(c.other.body)))
  t.same([...liveDigests], [sha256(body)], 'the live body decodes the same at every split')
  t.same([...idleDigests], [sha256(body)])
  t.same([...s.comparer.calls[0].live.headers], [['x-a', '1']], 'transfer-encoding is hop-by-hop: left out')
  t.equal(s.comparer.calls[0].other.headers.has('transfer-encoding'), false)
  t.equal(s.comparer.calls[0].other.headers.has('x-trailer'), false, 'trailers are not header fields')
  t.equal(s.idle.connections, 1, 'one kept connection served every copy')

  // The idle answer a byte per read.
  s.idle.handler = (req) => dribble(req.socket, Buffer.concat([Buffer.from('HTTP/1.1 201 OK\r\ntransfer-encoding: chunked\r\n\r\n'), framed]))
  drive(tapOf(s.route), { status: 201, body: [body] })
  await s.tally.settled(splits.length + 1)
  const last = s.comparer.calls[splits.length]
  t.equal(last.other.status, 201)
  t.equal(sha256(last.other.body), sha256(body))
  t.equal(sha256(last.live.body), sha256(body))
})

t.test('a close-delimited answer ends at EOF and its connection is not kept', async (t) => {
  const s = await setup(t)
  const body = randomBytes(5000)
  s.idle.handler = (req) => {
    req.socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n')
    dribble(req.socket, body.subarray(0, 20), () => req.socket.end(body.subarray(20)))
  }
  drive(tapOf(s.route), { answerFields: ['content-type', 'application/octet-stream', 'Set-Cookie', 'a=1', 'set-cookie', Buffer.from('b=2')], body: [body] })
  await s.tally.settled(1)
  const { live, other } = s.comparer.calls[0]
  t.same([...live.headers], [['content-type', 'application/octet-stream'], ['set-cookie', 'a=1, b=2']], 'repeated fields joined, names lower case')
  t.equal(sha256(other.body), sha256(body))
  t.equal(sha256(live.body), sha256(body))
  t.same(s.tally.pairs[0], { diffs: [], bodyCompared: true, endpoint: 'GET /' })
  await s.idle.closes(1)
  s.idle.handler = (req) => req.socket.write(answer(200, [], Buffer.from('ok')))
  drive(tapOf(s.route))
  await s.tally.settled(2)
  t.equal(s.idle.seen[1].connection, 1, 'the next copy went on a new connection')
})

t.test('HEAD, 204 and 304 answers have no body, whatever their framing fields say, and keep the connection', async (t) => {
  const s = await setup(t)
  s.idle.handler = (req) => {
    if (req.method === 'HEAD') req.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1234\r\ncontent-type: text/html\r\n\r\n')
    else if (req.target === '/204') req.socket.write('HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n')
    else req.socket.write('HTTP/1.1 304 Not Modified\r\netag: "x"\r\ncontent-length: 99\r\n\r\n')
  }
  drive(tapOf(s.route, 'HEAD'), { method: 'HEAD', answerFields: 'content-length: 1234\r\ncontent-type: text/html\r\n' })
  await s.tally.settled(1)
  await turns()
  drive(tapOf(s.route), { target: '/204', status: 204, answerFields: 'x-a: 1\r\n' })
  await s.tally.settled(2)
  await turns()
  drive(tapOf(s.route), { target: '/304', status: 304, answerFields: 'etag: "x"\r\n' })
  await s.tally.settled(3)
  t.same(s.idle.seen.map((r) => r.method), ['HEAD', 'GET', 'GET'])
  t.same(s.comparer.calls.map((c) => [c.other.status, c.other.body?.length, c.live.body?.length]), [[200, 0, 0], [204, 0, 0], [304, 0, 0]])
  t.equal(s.comparer.calls[0].other.headers.get('content-length'), '1234')
  t.equal(s.comparer.calls[1].other.headers.get('x-a'), '1')
  t.same(s.idle.seen.map((r) => r.connection), [0, 0, 0], 'one kept connection')
  t.same(s.tally.pairs.map((p) => p.bodyCompared), [true, true, true])
})

t.test('bodies above maxBody on either side are compared by status and headers only; the connection is still kept', async (t) => {
  const s = await setup(t, { maxBody: 1000 })
  const big = randomBytes(2000)
  s.idle.handler = (req) => req.socket.write(answer(200, ['x-v', '1'], req.target === '/big' ? big : Buffer.from('small')))
  drive(tapOf(s.route), { target: '/big', body: [big.subarray(0, 600), big.subarray(600, 1200), big.subarray(1200)] })
  await s.tally.settled(1)
  await turns()
  drive(tapOf(s.route), { target: '/small', body: [big.subarray(0, 1000)] })
  await s.tally.settled(2)
  await turns()
  drive(tapOf(s.route), { target: '/big', body: [Buffer.from('small')] })
  await s.tally.settled(3)
  const calls = s.comparer.calls
  t.same(calls.map((c) => [c.live.body === undefined, c.other.body === undefined]), [[true, true], [false, false], [false, true]])
  t.equal(calls[1].live.body?.length, 1000, 'exactly maxBody is kept')
  t.same(s.tally.pairs.map((p) => p.bodyCompared), [false, true, false])
  t.equal(calls[0].other.headers.get('x-v'), '1')
  t.same(s.idle.seen.map((r) => r.connection), [0, 0, 0], 'a body read past the cap leaves the connection reusable')
})

t.test('maxConcurrent copies in flight: the next is dropped busy, and a probe counts too', async (t) => {
  const s = await setup(t, { maxConcurrent: 1 })
  const held: SeenRequest[] = []
  s.idle.handler = (req) => held.push(req)
  drive(tapOf(s.route))
  await s.idle.requests(1)
  t.equal(s.tally.inflight, 1)
  drive(tapOf(s.route))
  await s.tally.settled(1)
  t.same(s.tally.drops, ['busy'])
  okReply(held[0])
  await s.tally.settled(2)
  t.same(s.tally.events, ['sent', 'dropped:busy', 'pair'])
  t.equal(s.tally.inflight, 0)

  // While learning, the probe would be a second copy in flight.
  const p = await setup(t, { maxConcurrent: 1, learn: 5 })
  drive(tapOf(p.route))
  await p.tally.settled(2)
  t.same(p.tally.events, ['sent', 'dropped:busy', 'pair'])
  t.equal(p.live.seen.length, 0)
})

function okReply (req: SeenRequest): void {
  req.socket.write(answer(200, [], Buffer.from('ok')))
}

t.test('a slow idle target never holds the tap\'s caller, and a copy past its timeout is dropped failed with its connection closed', async (t) => {
  const s = await setup(t, { timeout: 300 })
  const timers: NodeJS.Timeout[] = []
  t.teardown(() => timers.forEach((x) => clearTimeout(x)))
  s.idle.handler = (req) => timers.push(setTimeout(() => okReply(req), 5000))
  const started = performance.now()
  drive(tapOf(s.route))
  // Returned before the copy ended either way: no drop is counted yet (the timeout is 300 ms, the idle target's answer 5 s).
  t.same(s.tally.drops, [], 'drive returned while the copy was still out')
  t.ok(performance.now() - started < 250, 'drive returned at once')
  await s.idle.requests(1)
  await s.tally.settled(1)
  const took = performance.now() - started
  t.same(s.tally.drops, ['failed'])
  t.ok(took >= 290 && took < 2000, `dropped after the timeout (${Math.round(took)} ms)`)
  await s.idle.closes(1)
  t.equal(s.tally.inflight, 0)
  t.equal(s.comparer.calls.length, 0)
})

t.test('no healthy idle target, or no free connection to it: dropped no_target, and no wait is left behind', async (t) => {
  const s = await setup(t)
  s.idleEndpoint.target.healthy = false
  drive(tapOf(s.route))
  await s.tally.settled(1)
  t.same(s.tally.drops, ['no_target'])
  t.equal(s.idle.seen.length, 0)

  const idle = await rawUpstream(t, () => {})
  const one = endpointFor(t, idle.url, { maxConnections: 1 })
  const tally = new RecordingTally()
  const route = new ShadowRoute({ service: 'users', settings: settings(), live: targets(), idle: targets(one), tally, comparer: new RecordingComparer(), until: undefined })
  drive(tapOf(route))
  await idle.requests(1)
  drive(tapOf(route))
  await tally.settled(1)
  t.same(tally.events, ['sent', 'dropped:no_target'])
  t.equal((Reflect.get(one.h1, 'waiters') as unknown[]).length, 0, 'the pool holds no wait for the copy')
  t.equal(tally.inflight, 1)
})

t.test('an unsafe method\'s body is copied (framing rewritten to its length); above maxBody it is dropped body_too_large', async (t) => {
  const s = await setup(t, { methods: ['POST'], unsafe: true, maxBody: 16 })
  t.equal(s.route.sample('GET'), undefined, 'a method not listed is never copied')
  const hello = Buffer.from('hello')
  drive(tapOf(s.route, 'POST'), {
    method: 'POST',
    fields: 'host: x\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n',
    requestBody: [hello, Buffer.from('world')],
  })
  // The engine may reuse its buffer once the tap has seen it.
  hello.fill(0)
  await s.tally.settled(1)
  t.equal(s.idle.seen[0].body.toString(), 'helloworld')
  t.same(s.idle.seen[0].lines, ['host: x', 'content-type: text/plain', 'content-length: 10', 'x-switchyard-shadow: 1'])

  drive(tapOf(s.route, 'POST'), {
    method: 'POST',
    fields: ['Host', 'x', 'Transfer-Encoding', 'chunked', 'Connection', 'keep-alive'],
    requestBody: [Buffer.from('abc'), Buffer.from('def')],
  })
  await s.tally.settled(2)
  t.same(s.idle.seen[1].lines, ['Host: x', 'content-length: 6', 'x-switchyard-shadow: 1'], 'a chunked body goes with its decoded length')
  t.equal(s.idle.seen[1].body.toString(), 'abcdef')

  drive(tapOf(s.route, 'POST'), { method: 'POST', fields: ['host', 'x'], requestBody: [randomBytes(10), randomBytes(10)] })
  await s.tally.settled(3)
  t.same(s.tally.drops, ['body_too_large'])
  drive(tapOf(s.route, 'POST'), { method: 'POST', target: '/after', fields: ['host', 'x'], requestBody: [] })
  await s.tally.settled(4)
  t.same(s.idle.seen.map((r) => r.target), ['/', '/', '/after'], 'the body too large was never sent')
  t.equal(s.idle.seen[2].headers.get('host'), 'x')
  drive(tapOf(s.route, 'POST'), { method: 'POST', target: '/hostless', fields: ['accept', '*/*'] })
  await s.tally.settled(5)
  t.same(s.idle.seen[3].lines, [`host: 127.0.0.1:${s.idle.port}`, 'accept: */*', 'x-switchyard-shadow: 1'], 'fields without a host: the target\'s, as undici sends')
  t.equal(s.idle.seen[2].headers.has('content-length'), false, 'no body, no framing: none added')
})

t.test('noise probes: the first `learn` copies, then the `noise` share, also go to the live color and are compared with the live answer', async (t) => {
  const s = await setup(t, { learn: 3 })
  for (let i = 0; i < 5; i++) {
    drive(tapOf(s.route), { target: `/${i}` })
    await s.tally.settled(s.tally.results + (i < 3 ? 2 : 1))
  }
  t.same(s.idle.seen.map((r) => r.target), ['/0', '/1', '/2', '/3', '/4'])
  t.same(s.live.seen.map((r) => r.target), ['/0', '/1', '/2'], 'probes while learning only')
  t.ok(s.live.seen.every((r) => r.headers.get('x-switchyard-shadow') === '1'))
  t.equal(s.tally.noises.length, 3)
  t.equal(s.tally.pairs.length, 5)
  t.same([...new Set([...s.tally.pairs.map((p) => p.endpoint), ...s.tally.noiseEndpoints])], ['GET /{id}'], 'pairs and probes are counted under their request\'s endpoint, ids folded')
  const probed = s.comparer.calls.filter((c) => c.other.headers.get('x-backend') === 'live')
  t.equal(probed.length, 3)
  t.ok(probed.every((c) => c.other.body?.toString() === 'live' && c.live.status === 200))

  const all = await setup(t, { learn: 0, noise: 1 })
  for (let i = 0; i < 3; i++) {
    drive(tapOf(all.route))
    await all.tally.settled(2 * (i + 1))
  }
  t.equal(all.live.seen.length, 3, 'noise 1: every copy is probed')
  t.equal(all.tally.noises.length, 3)

  const down = await setup(t, { learn: 1 })
  down.liveEndpoint.target.healthy = false
  drive(tapOf(down.route))
  await down.tally.settled(2)
  t.same(down.tally.events, ['sent', 'dropped:no_target', 'pair'], 'a probe with nowhere to go is dropped; the pair is still judged')
})

t.test('abort leaves no copy, and a tap shown things out of order neither throws nor copies', async (t) => {
  const s = await setup(t)
  const tap = tapOf(s.route)
  tap.request('GET', '/aborted', 'host: x\r\n')
  tap.head(200, '', false)
  tap.body(Buffer.from('part'))
  tap.abort()
  tap.end()
  const odd = tapOf(s.route)
  t.doesNotThrow(() => {
    odd.body(Buffer.from('x'))
    odd.end()
    odd.head(200, '', true)
    odd.body(Buffer.from('not chunk framing'))
    odd.abort()
  })
  const bad = tapOf(s.route)
  bad.request('GET', '/bad-framing', 'host: x\r\n')
  bad.head(200, '', true)
  bad.body(Buffer.from('zz\r\n'))
  bad.end()
  drive(tapOf(s.route), { target: '/sentinel' })
  await s.tally.settled(1)
  t.same(s.idle.seen.map((r) => r.target), ['/sentinel'])
  t.same(s.tally.events, ['sent', 'pair'])
})

t.test('a comparer that throws costs that pair only: dropped failed', async (t) => {
  const s = await setup(t)
  const throwing: Comparer = { compare: () => { throw new Error('bug') } }
  const route = new ShadowRoute({ service: 'users', settings: settings(), live: targets(), idle: targets(s.idleEndpoint), tally: s.tally, comparer: throwing, until: undefined })
  drive(tapOf(route))
  await s.tally.settled(1)
  t.same(s.tally.events, ['sent', 'dropped:failed'])
  t.equal(s.tally.inflight, 0)
})

t.test('socket errors and broken answers are dropped failed; a kept connection closed under a GET is tried once on a new one', async (t) => {
  const s = await setup(t)
  s.idle.handler = (req) => {
    if (req.target === '/reset') req.socket.destroy()
    else if (req.target === '/garbage') req.socket.write('HTTP/1.1 2x0 nope\r\n\r\n')
    else if (req.target === '/stale' && req.onConnection > 0) req.socket.destroy()
    else okReply(req)
  }
  drive(tapOf(s.route), { target: '/reset' })
  await s.tally.settled(1)
  drive(tapOf(s.route), { target: '/garbage' })
  await s.tally.settled(2)
  t.same(s.tally.drops, ['failed', 'failed'], 'a reset on a new connection and an invalid status line')

  drive(tapOf(s.route), { target: '/first' })
  await s.tally.settled(3)
  await turns()
  const kept = s.idle.seen[s.idle.seen.length - 1].connection
  drive(tapOf(s.route), { target: '/stale' })
  await s.tally.settled(4)
  const stale = s.idle.seen.filter((r) => r.target === '/stale')
  t.equal(stale.length, 2, 'sent twice')
  t.equal(stale[0].connection, kept)
  t.not(stale[1].connection, kept, 'the second time on a new connection')
  t.same(s.tally.events.slice(-2), ['sent', 'pair'])
})

t.test('sample: 0 never, 1 always, an unlisted method never, a past `until` never', async (t) => {
  const s = await setup(t)
  const never = new ShadowRoute({ ...s.route.plan, settings: settings({ sample: 0 }) })
  const always = s.route
  let picked = 0
  for (let i = 0; i < 2000; i++) {
    if (never.sample('GET') !== undefined) picked++
    const tap = always.sample('GET')
    if (tap === undefined) picked += 1000
    else tap.abort()
  }
  t.equal(picked, 0)
  t.equal(always.sample('POST'), undefined)
  t.equal(always.sample('get'), undefined, 'methods are matched as listed (upper case)')
  const past = new ShadowRoute({ ...s.route.plan, until: Date.now() - 1 })
  t.equal(past.sample('GET'), undefined)
  const future = new ShadowRoute({ ...s.route.plan, until: Date.now() + 60_000 })
  const tap = future.sample('GET')
  t.ok(tap !== undefined)
  tap?.abort()
  const half = new ShadowRoute({ ...s.route.plan, settings: settings({ sample: 0.5 }) })
  let n = 0
  for (let i = 0; i < 4000; i++) {
    const x = half.sample('HEAD')
    if (x !== undefined) {
      n++
      x.abort()
    }
  }
  t.ok(n > 1700 && n < 2300, `about half sampled (${n} of 4000)`)
  t.equal(s.tally.events.length, 0, 'aborted taps count nothing')
})

t.test('a fast answer on a kept connection is not taken for stale bytes (upstream in another process, copy sent from setImmediate)', async (t) => {
  const child = spawn(process.execPath, ['-e', `
    const net = require('node:net')
    let n = 0
    net.createServer((s) => {
      const id = String(n++)
      s.on('data', () => s.write('HTTP/1.1 200 OK\\r\\ncontent-length: ' + id.length + '\\r\\n\\r\\n' + id))
    })
      .listen(0, '127.0.0.1', function () { console.log(this.address().port) })
  `], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.kill())
  const [line] = await once(child.stdout, 'data') as [Buffer]
  const idle = endpointFor(t, `http://127.0.0.1:${line.toString().trim()}`)
  const tally = new RecordingTally()
  const comparer = new RecordingComparer()
  const route = new ShadowRoute({ service: 'users', settings: settings(), live: targets(), idle: targets(idle), tally, comparer, until: undefined })
  for (let i = 0; i < 5; i++) {
    drive(tapOf(route))
    // Holds the loop in the copy's own turn until the answer is surely in the kernel: the next poll reads it.
    setImmediate(() => { const until = performance.now() + 20; while (performance.now() < until); })
    await tally.settled(i + 1)
    await turns()
  }
  t.same(tally.events, Array(5).fill(['sent', 'pair']).flat())
  t.same(comparer.calls.map((c) => c.other.body?.toString()), ['0', '0', '0', '0', '0'], 'every answer came on the first connection')
})

t.test('1xx answers are skipped; an answer too long to drain is taken by its head and its connection closed', async (t) => {
  const s = await setup(t, { maxBody: 100 })
  s.idle.handler = (req) => {
    if (req.target === '/early-hints') {
      req.socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n')
      setImmediate(() => req.socket.write(answer(200, ['x-final', '1'], Buffer.from('done'))))
    } else if (req.target === '/declared-huge') {
      // Says 100 MB and sends a little: never read to the end.
      req.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\nx-big: 1\r\n\r\nabc')
    } else {
      const piece = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000, 97), Buffer.from('\r\n')])
      req.socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n')
      // 2 MiB of chunks and no end: read past the cap until too much, then closed.
      for (let i = 0; i < 32; i++) req.socket.write(piece)
    }
  }
  drive(tapOf(s.route), { target: '/early-hints', body: [Buffer.from('done')] })
  await s.tally.settled(1)
  t.equal(s.comparer.calls[0].other.status, 200)
  t.equal(s.comparer.calls[0].other.headers.get('x-final'), '1')
  t.equal(s.comparer.calls[0].other.body?.toString(), 'done')
  drive(tapOf(s.route), { target: '/declared-huge' })
  await s.tally.settled(2)
  drive(tapOf(s.route), { target: '/endless-chunks' })
  await s.tally.settled(3)
  t.same(s.tally.events, ['sent', 'pair', 'sent', 'pair', 'sent', 'pair'])
  t.same(s.comparer.calls.slice(1).map((c) => [c.other.status, c.other.body]), [[200, undefined], [200, undefined]])
  t.equal(s.comparer.calls[1].other.headers.get('x-big'), '1')
  await s.idle.closes(2)
  t.same(s.tally.pairs.map((p) => p.bodyCompared), [true, false, false])
})

t.test('endpointOf: the method and the path without its query, id-like segments folded to {id}, at most 100 characters', async (t) => {
  const cases: Array<[string, string, string]> = [
    ['GET', '/api/users/7', 'GET /api/users/{id}'],
    ['GET', '/api/users/7?fields=name&id=8', 'GET /api/users/{id}'],
    ['HEAD', '/api/users/7/orders/12345', 'HEAD /api/users/{id}/orders/{id}'],
    ['GET', '/api/users/random', 'GET /api/users/random'],
    ['GET', '/api/users/me', 'GET /api/users/me'],
    ['GET', '/v2/items', 'GET /v2/items'],
    ['GET', '/files/550e8400-e29b-41d4-a716-446655440000', 'GET /files/{id}'],
    ['GET', '/files/ABCDEFAB-CDEF-ABCD-EFAB-CDEFABCDEFAB', 'GET /files/{id}'],
    ['GET', '/blobs/9f86d081884c7d659a2feaa0c55ad015', 'GET /blobs/{id}'],
    ['GET', '/s/dGhpcyBpcyBhIHRva2VuMQ==', 'GET /s/{id}'],
    ['GET', '/s/aB3_x-9QzLmNpRtUv', 'GET /s/{id}'],
    ['GET', '/docs/getting-started-guide', 'GET /docs/getting-started-guide'],
    ['GET', '/s/abc123', 'GET /s/abc123'],
    ['GET', '/', 'GET /'],
    ['GET', '/?q=1', 'GET /'],
    ['GET', '/a//b/', 'GET /a//b/'],
    ['GET', 'http://users.test:8080/api/users/7?x', 'GET /api/users/{id}'],
    ['GET', 'http://users.test', 'GET /'],
    ['OPTIONS', '*', 'OPTIONS *'],
  ]
  for (const [method, target, endpoint] of cases) t.equal(endpointOf(method, target), endpoint, `${method} ${target}`)
  const long = endpointOf('GET', `/${'segment/'.repeat(30)}`)
  t.equal(long.length, 100, 'a long path is cut')
  t.ok(long.startsWith('GET /segment/segment/'))
  t.equal(endpointOf('GET', `/a/${'x'.repeat(5000)}?q`).length, 100)
})
