// gRPC end to end: a real grpc-js client speaks h2c (prior knowledge) to the
// gateway's public listener, which forwards to real grpc-js servers, one per
// color, each answering with its color.

import t from 'tap'
import type { AddressInfo } from 'node:net'
import http2 from 'node:http2'
import { echoClient, grpc, startEchoServer, unary, type EchoServer, type Msg } from './helpers/grpc.js'
import { admin, eventually, refusedUrl, startGateway, type TestGateway } from './helpers/index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/**
 * Services by host (grpc-js sends it as :authority): echo.test (blue and
 * green), slow.test (blue, timeouts.response 300ms), down.test (a target
 * that is not there, probed: never healthy).
 */
async function setup (t: Teardown): Promise<{ gw: TestGateway, blue: EchoServer, green: EchoServer, hostPort: string }> {
  const blue = await startEchoServer(t, 'blue')
  const green = await startEchoServer(t, 'green')
  const gw = await startGateway(t, `services:
  echo:
    protocol: h2c
    match: { host: echo.test }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
  slow:
    protocol: h2c
    match: { host: slow.test }
    blue: { targets: [${blue.url}] }
    timeouts: { response: 300ms }
  down:
    protocol: h2c
    match: { host: down.test }
    blue: { targets: [${await refusedUrl()}] }
    health: { grpc: true, interval: 100ms, timeout: 80ms }
`)
  return { gw, blue, green, hostPort: new URL(gw.url).host }
}

async function collect (call: NodeJS.ReadableStream): Promise<Msg[]> {
  const out: Msg[] = []
  for await (const m of call) out.push(m as Msg)
  return out
}

t.test('gRPC through the gateway: unary, server streaming, client streaming', async (t) => {
  const { hostPort } = await setup(t)
  const client = echoClient(t, hostPort, 'echo.test')
  t.same(await unary(client, { text: 'hello' }), { msg: { text: 'hello', color: 'blue' }, code: 0 })
  const ss = await collect(client.serverStream({ count: 4 }))
  t.same(ss.map((m) => [m.n, m.color]), [[0, 'blue'], [1, 'blue'], [2, 'blue'], [3, 'blue']])
  const cs = await new Promise<Msg>((resolve, reject) => {
    const call = client.clientStream((err: Error | null, res: Msg) => err !== null ? reject(err) : resolve(res))
    for (const text of ['1', '2', '3']) call.write({ text })
    call.end()
  })
  t.same(cs, { text: '1,2,3', color: 'blue' })
})

t.test('a flip mid-stream: the open bidirectional stream finishes on blue, a new call goes to green', async (t) => {
  const { gw, hostPort } = await setup(t)
  const client = echoClient(t, hostPort, 'echo.test')
  const call = client.bidi()
  const say = async (text: string): Promise<Msg> => {
    const next = new Promise<Msg>((resolve) => call.once('data', resolve))
    call.write({ text })
    return await next
  }
  t.equal((await say('before')).color, 'blue')
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['echo'], guard: false })).status, 200)
  t.equal((await unary(client, { text: 'new' })).msg?.color, 'green', 'a new call goes to green')
  t.equal((await say('after')).color, 'blue', 'the open stream stays on blue')
  call.end()
  const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve))
  t.equal(status.code, grpc.status.OK, 'and finishes cleanly')
})

t.test('gateway errors reach the gRPC client as statuses', async (t) => {
  const { hostPort } = await setup(t)
  const down = await unary(echoClient(t, hostPort, 'down.test'), { text: 'x' })
  t.equal(down.code, grpc.status.UNAVAILABLE, 'no healthy upstream → UNAVAILABLE')
  const slow = await unary(echoClient(t, hostPort, 'slow.test'), { text: 'x', delay: 2000 })
  t.equal(slow.code, grpc.status.DEADLINE_EXCEEDED, 'upstream timeout → DEADLINE_EXCEEDED')
  const none = await unary(echoClient(t, hostPort, 'nowhere.test'), { text: 'x' })
  t.equal(none.code, grpc.status.UNIMPLEMENTED, 'unknown route → UNIMPLEMENTED')
})

t.test('INTERNAL from an upstream counts as an error for its color, INVALID_ARGUMENT does not', async (t) => {
  const { gw, hostPort } = await setup(t)
  const client = echoClient(t, hostPort, 'echo.test')
  const stats = gw.gateway.registry.colorStats('echo', 'blue')
  t.equal((await unary(client, { fail: grpc.status.INVALID_ARGUMENT })).code, grpc.status.INVALID_ARGUMENT)
  t.equal(stats.errors, 0)
  t.equal((await unary(client, { fail: grpc.status.INTERNAL })).code, grpc.status.INTERNAL)
  t.equal(stats.errors, 1)
  t.equal(stats.requests, 2)
})

t.test('a drain deadline cuts a stream still open on the old color (RST both ways)', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const green = await startEchoServer(t, 'green')
  const gw = await startGateway(t, `services:
  echo:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
    drain: { timeout: 300ms }
`)
  const client = echoClient(t, new URL(gw.url).host)
  const call = client.bidi()
  call.on('error', () => {})
  const first = new Promise<Msg>((resolve) => call.once('data', resolve))
  call.write({ text: 'open' })
  t.equal((await first).color, 'blue')
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve))
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['echo'], guard: false })).status, 200)
  const ended = await status
  t.not(ended.code, grpc.status.OK, `the stream was cut at the deadline (${ended.code} ${ended.details})`)
  const stats = gw.gateway.registry.colorStats('echo', 'blue')
  t.equal(stats.inflight, 0, 'nothing left open on blue')
  await eventually(() => blue.calls.bidiCancelled === 1)
  t.pass('the upstream\'s stream was reset too')
})

t.test('an upstream that resets mid-answer: the client sees the reset, not a clean end, and the color counts it', async (t) => {
  const up = http2.createServer()
  up.on('stream', (stream) => {
    stream.on('error', () => {})
    stream.respond({ ':status': 200 })
    stream.write('partial')
    // An empty write in flight keeps node from ending the stream before its RST_STREAM goes out.
    setTimeout(() => { stream.write(Buffer.alloc(0)); stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR) }, 30)
  })
  await new Promise<void>((resolve) => up.listen(0, '127.0.0.1', resolve))
  t.teardown(() => up.close())
  const gw = await startGateway(t, `services:
  rest:
    protocol: h2c
    match: { pathPrefix: / }
    blue: { targets: [http://127.0.0.1:${(up.address() as AddressInfo).port}] }
`)
  const session = http2.connect(gw.url)
  t.teardown(() => session.close())
  const req = session.request({ ':path': '/cut' })
  let body = ''
  let ended = false
  req.setEncoding('utf8')
  req.on('data', (c: string) => { body += c })
  req.on('end', () => { ended = true })
  req.on('error', () => {})
  await new Promise((resolve) => req.on('close', resolve))
  t.equal(body, 'partial')
  t.equal(ended, false, 'no clean end')
  t.not(req.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the stream was reset')
  const stats = gw.gateway.registry.colorStats('rest', 'blue')
  await eventually(() => stats.requests === 1)
  t.equal(stats.errors, 1)
  t.equal(stats.upstreamErrors.reset, 1)
})
