// Faults and abuse on the node:http side of the public listener: `engine: node`,
// and what the fast engine hands over (HTTP/1.0, chunked uploads). Outcomes
// after the head, pipelining, header counts and sizes, client deadlines, and
// the upstream body timeout. Raw sockets where the bytes matter.

import t from 'tap'
import net from 'node:net'
import { DEFAULTS } from '../src/config/schema.js'
import { Target } from '../src/upstream/registry.js'
import { eventually, startBackend, startGateway, type Backend } from './helpers/index.js'
import { exchange, rawUpstream } from './helpers/raw.js'
import type { LocalListener } from '../src/listen/local.js'

const ENGINES = ['node', 'fast'] as const

/** Answers JSON with a Content-Length, so an HTTP/1.0 client can keep its connection. */
function lengthDelimited (backend: Backend): void {
  backend.handler = (req, res) => {
    req.resume()
    req.on('end', () => {
      const body = JSON.stringify({ path: req.url })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  }
}

const statuses = (text: string): string[] => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1])

function oneService (engine: string, blue: string, green: string, extra = '', top = ''): string {
  return `engine: ${engine}
${top}services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${blue}] }
    green: { targets: [${green}] }
${extra}`
}

/** A request the fast engine hands to node:http (HTTP/1.0) or a plain HTTP/1.1 one for the node engine. */
function get (engine: string, path: string, extra = ''): string {
  return engine === 'fast'
    ? `GET ${path} HTTP/1.0\r\nhost: x\r\n${extra}\r\n`
    : `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n${extra}\r\n`
}

for (const engine of ENGINES) {
  const via = engine === 'node' ? 'engine node' : 'a fast-engine hand-over'

  t.test(`${via}: answers broken after their 200 are upstream errors and eject the target`, async (t) => {
    let n = 0
    // 200 with a 100-byte body, then five bytes and a reset (or, every other time, a plain FIN).
    const bad = await rawUpstream(t, (s) => {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort')
      if (n++ % 2 === 0) s.resetAndDestroy()
      else s.end()
    })
    const green = await startBackend(t, 'green')
    const gw = await startGateway(t, oneService(engine, bad.url, green.url, '    passive: { consecutiveFailures: 3, baseEjectionTime: 30s }\n'))
    const port = gw.gateway.address.port
    const stats = gw.gateway.registry.colorStats('svc', 'blue')
    for (let i = 0; i < 3; i++) {
      const got = await exchange(port, get(engine, `/r${i}`))
      t.match(got, /^HTTP\/1\.1 200 /, 'the head went out')
      t.notOk(got.endsWith('short' + 'x'.repeat(95)), 'the client did not get a whole body')
    }
    await eventually(() => stats.requests === 3)
    t.equal(stats.errors, 3, 'every broken answer is an error for the guard')
    t.equal(stats.upstreamErrors.reset, 3, 'and an upstream reset in the metrics')
    t.equal(gw.gateway.registry.find(bad.url)?.status, 'ejected', 'three in a row eject the target')
  })

  t.test(`${via}: a complete answer counts once, as a success`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    const gw = await startGateway(t, oneService(engine, blue.url, green.url))
    const stats = gw.gateway.registry.colorStats('svc', 'blue')
    const got = await exchange(gw.gateway.address.port, get(engine, '/ok'))
    t.match(got, /^HTTP\/1\.1 200 /)
    await eventually(() => stats.inflight === 0 && stats.requests === 1)
    t.equal(stats.errors, 0)
    t.same(stats.upstreamErrors, { connect_failed: 0, timeout: 0, reset: 0, no_healthy_upstream: 0 })
  })

  t.test(`${via}: a client that leaves mid-answer is not the upstream's fault`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    // A 200 whose body never ends.
    blue.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first part')
    }
    const gw = await startGateway(t, oneService(engine, blue.url, green.url))
    const stats = gw.gateway.registry.colorStats('svc', 'blue')
    const got = await exchange(gw.gateway.address.port, get(engine, '/stream'), (text) => text.includes('first part'))
    t.match(got, /^HTTP\/1\.1 200 /)
    await eventually(() => stats.inflight === 0)
    t.equal(stats.requests, 1, 'counted once')
    t.equal(stats.errors, 0, 'by its status')
    t.equal(stats.upstreamErrors.reset, 0)
  })

  t.test(`${via}: pipelined requests then a malformed one get their answers, in order, then the 400`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    const gw = await startGateway(t, oneService(engine, blue.url, green.url))
    const post = (path: string, body: string): string =>
      `POST ${path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`
    const got = await exchange(gw.gateway.address.port, post('/a', 'hello') + post('/b', 'world') + 'BAD\x01 / HTTP/1.1\r\nhost: x\r\n\r\n')
    t.same(statuses(got), ['200', '200', '400'], 'two answers, then the refusal')
    t.same([...got.matchAll(/"path":"([^"]+)"/g)].map((m) => m[1]), ['/a', '/b'], 'in order')
    t.match(got, /"error":"bad_request"/)
    t.same(blue.seen.map((s) => `${s.method} ${s.url}`), ['POST /a', 'POST /b'], 'the upstream ran both')
    t.match(got, /"body":"hello"/)
    t.match(got, /"body":"world"/)
  })

  t.test(`${via}: 500 pipelined requests go upstream one at a time`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    lengthDelimited(blue)
    let connections = 0
    blue.server.on('connection', () => connections++)
    const gw = await startGateway(t, oneService(engine, blue.url, green.url))
    const N = 500
    let text = ''
    for (let i = 0; i < N; i++) {
      const last = i === N - 1
      // HTTP/1.0 keep-alive: the fast engine hands the whole connection over.
      text += `GET /p${i} HTTP/1.0\r\nhost: x\r\n${last ? '' : 'connection: keep-alive\r\n'}\r\n`
    }
    const started = Date.now()
    const got = await exchange(gw.gateway.address.port, text, undefined, 20_000)
    const ms = Date.now() - started
    const paths = [...got.matchAll(/"path":"([^"]+)"/g)].map((m) => m[1])
    t.equal(paths.length, N, 'every request answered')
    t.same(paths, Array.from({ length: N }, (_, i) => `/p${i}`), 'in order')
    t.ok(connections <= 2, `upstream connections: ${connections}`)
    t.ok(ms < 10_000, `took ${ms} ms`)
  })

  t.test(`${via}: more than 256 header lines are refused with 431, never forwarded without their body`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    const gw = await startGateway(t, oneService(engine, blue.url, green.url))
    const port = gw.gateway.address.port
    const version = engine === 'fast' ? 'HTTP/1.0' : 'HTTP/1.1'
    const lines = (n: number): string => 'x: 1\r\n'.repeat(n)
    // 2,100 lines (node:http's req.headers stops at 2,000), Content-Length last.
    const many = await exchange(port, `POST /many ${version}\r\nhost: x\r\n${lines(2100)}content-length: 5\r\n\r\nhello`)
    t.match(many, /^HTTP\/1\.1 431 /)
    t.match(many, /"error":"header_too_large"/)
    const over = await exchange(port, `POST /over ${version}\r\nhost: x\r\n${lines(255)}content-length: 5\r\n\r\nhello`)
    t.match(over, /^HTTP\/1\.1 431 /, '257 lines')
    t.equal(blue.seen.length, 0, 'nothing reached the upstream')
    const ok = await exchange(port, `POST /ok ${version}\r\nhost: x\r\nconnection: close\r\n${lines(253)}content-length: 5\r\n\r\nhello`)
    t.match(ok, /^HTTP\/1\.1 200 /, '256 lines pass')
    t.match(ok, /"body":"hello"/, 'with their body')
  })

  t.test(`${via}: a head that would pass 16 KiB once forwarding headers are added is refused at the edge`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    let connections = 0
    blue.server.on('connection', () => connections++)
    const gw = await startGateway(t, oneService(engine, blue.url, green.url))
    const line = engine === 'fast' ? 'GET /big HTTP/1.0\r\n' : 'GET /big HTTP/1.1\r\n'
    // 16,300 bytes: under node:http's 16 KiB at the edge, over it upstream with X-Forwarded-* and the request id.
    const head = `${line}host: x\r\nx-pad: ${'a'.repeat(16_300 - line.length - 9 - 9 - 2)}\r\n\r\n`
    t.equal(head.length, 16_300)
    const got = await exchange(gw.gateway.address.port, head)
    t.match(got, /^HTTP\/1\.1 431 /)
    t.match(got, /"error":"header_too_large"/, 'the gateway\'s own answer, not the upstream\'s')
    t.equal(connections, 0, 'the upstream never saw it')
  })

  t.test(`${via}: uploads that go quiet get 408 and hold no upstream connection`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    const gw = await startGateway(t, oneService(engine, blue.url, green.url, '', 'client: { bodyTimeout: 300ms }\n'))
    const port = gw.gateway.address.port
    // Chunked uploads are handed over by the fast engine; the node engine takes either.
    const start = (i: number): string => i % 2 === 0 || engine === 'fast'
      ? `POST /u${i} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n`
      : `POST /u${i} HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab`
    // The upstream reads bodies and never answers before their end.
    let unfinished = 0
    blue.handler = (req) => {
      unfinished++
      req.resume()
      req.once('close', () => unfinished--)
    }
    const clients = Array.from({ length: 6 }, async (_, i) => await exchange(port, start(i), undefined, 5000))
    await eventually(() => blue.seen.length === 6, { timeout: 3000 })
    const started = Date.now()
    const answers = await Promise.all(clients)
    for (const got of answers) {
      t.match(got, /^HTTP\/1\.1 408 /)
      t.match(got, /"error":"request_timeout"/)
    }
    t.ok(Date.now() - started < 3000, 'answered at the deadline, not at the test limit')
    await eventually(() => unfinished === 0, { timeout: 2000 })
    t.pass('every upstream request was ended: no upstream connection is held by a quiet client')
    t.equal(gw.gateway.registry.find(blue.url)?.inflight, 0)
  })

  t.test(`${via}: an upstream flooding 103 answers gets a few relayed, then a 502`, async (t) => {
    const flood = await rawUpstream(t, (s, data) => {
      // Answer once the request's body is in.
      if (!data.endsWith('ab') && !data.endsWith('0\r\n\r\n')) return
      s.write('HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n'.repeat(5000))
      s.end('HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone')
    })
    const green = await startBackend(t, 'green')
    const gw = await startGateway(t, oneService(engine, flood.url, green.url))
    // A chunked upload: the fast engine hands it over.
    const got = await exchange(gw.gateway.address.port, 'POST /h HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n')
    const codes = statuses(got)
    const hints = codes.filter((s) => s === '103').length
    t.ok(hints >= 1 && hints <= 16, `${hints} of 5000 103s relayed`)
    t.equal(codes.at(-1), '502', 'then an upstream error')
    t.match(got, /"error":"upstream_error"/)
    const stats = gw.gateway.registry.colorStats('svc', 'blue')
    await eventually(() => stats.requests === 1)
    t.equal(stats.errors, 1, 'counted as an error')
  })

  t.test(`${via}: an idle keep-alive client is closed after client.idleTimeout`, async (t) => {
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    lengthDelimited(blue)
    const gw = await startGateway(t, oneService(engine, blue.url, green.url, '', 'client: { idleTimeout: 300ms }\n'))
    const req = engine === 'fast' ? 'GET /i HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\n' : 'GET /i HTTP/1.1\r\nhost: x\r\n\r\n'
    let answeredAt = 0
    const got = await exchange(gw.gateway.address.port, req, (text) => {
      if (answeredAt === 0 && text.includes('"path"')) answeredAt = Date.now()
      return false
    }, 5000)
    const idle = Date.now() - answeredAt
    t.match(got, /^HTTP\/1\.1 200 /)
    t.ok(idle >= 250 && idle < 2500, `closed ${idle} ms after the answer`)
  })
}

t.test('engine node: a connection is parsed only so far ahead of the answer it waits for', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  lengthDelimited(blue)
  const answer = blue.handler as NonNullable<Backend['handler']>
  // The first request waits until released; the rest are answered at once.
  let release: (() => void) | undefined
  blue.handler = (req, res) => {
    if (release === undefined) release = () => answer(req, res)
    else answer(req, res)
  }
  const gw = await startGateway(t, oneService('node', blue.url, green.url))
  let parsed = 0
  ;((gw.gateway.listener as LocalListener).server as net.Server).on('request', () => parsed++)
  const N = 5000
  let text = ''
  for (let i = 0; i < N; i++) text += `GET /p${i} HTTP/1.1\r\nhost: x\r\n${i === N - 1 ? 'connection: close\r\n' : ''}\r\n`
  const done = exchange(gw.gateway.address.port, text, undefined, 30_000)
  await eventually(() => release !== undefined)
  // Settled: two looks 100 ms apart see the same count.
  let last = -1
  await eventually(() => {
    const same = parsed === last
    last = parsed
    return same
  }, { interval: 100 })
  t.ok(parsed < N / 2, `${parsed} of ${N} requests parsed while the first one waits`)
  ;(release as () => void)()
  const got = await done
  t.equal([...got.matchAll(/"path":"([^"]+)"/g)].length, N, 'then every one is answered')
})

t.test('engine node: a head that stops coming gets 408 after client.headerTimeout', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const gw = await startGateway(t, oneService('node', blue.url, green.url, '', 'client: { headerTimeout: 300ms }\n'))
  const started = Date.now()
  const got = await exchange(gw.gateway.address.port, 'GET / HTTP/1.1\r\nhost: x\r\n', undefined, 5000)
  const ms = Date.now() - started
  t.match(got, /^HTTP\/1\.1 408 /)
  t.match(got, /"error":"request_timeout"/)
  t.ok(ms < 2500, `after ${ms} ms`)
})

t.test('upstream response bodies have no silence deadline (undici would cut them at 300 s)', async (t) => {
  const blue = await startBackend(t, 'blue')
  const target = new Target(blue.url, () => {})
  t.teardown(async () => await target.destroy())
  const pool = target.dispatcher(DEFAULTS.defaults.timeouts, DEFAULTS.defaults.limits)
  const res = await pool.request({ path: '/', method: 'GET' })
  await res.body.text()
  // The value in force on the pool's connections (undici's Client keeps it under its `body timeout` symbol).
  const clients = Object.getOwnPropertySymbols(pool).map((s) => (pool as any)[s]).find((v) => Array.isArray(v) && v.length > 0) as object[]
  t.ok(clients !== undefined, 'the pool made a connection')
  const key = Object.getOwnPropertySymbols(clients[0]).find((s) => s.description === 'body timeout') as symbol
  t.ok(key !== undefined, 'undici keeps a body timeout per connection')
  t.equal((clients[0] as any)[key], 0, 'none: a quiet stream is never cut')
})
