// The forwarding suite: one table of cases, each run on both engines (fast
// and node), so any difference between them shows up as a failing case.

import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { request } from 'undici'
import { admin, eventually, http1, serviceYaml, startBackend, startGateway, type Reply, type TestGateway } from './helpers/index.js'
import { exchange, rawUpstream, type RawUpstream } from './helpers/raw.js'

type Engine = 'fast' | 'node'
const ENGINES: Engine[] = ['fast', 'node']

interface Case {
  name: string
  run: (t: Test, engine: Engine) => Promise<void>
}

/** A gateway from `yaml` on `engine`, named in the config (whatever SWITCHYARD_TEST_ENGINE says). */
async function gateway (t: Test, engine: Engine, yaml: string): Promise<TestGateway> {
  return await startGateway(t, `engine: ${engine}\n${yaml}`)
}

/** A port with nothing listening on it. */
async function deadPort (): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex')

/** The value of one sample of the Prometheus text (0 when absent: a counter not yet incremented). */
function sample (text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(name + ' '))
  return line === undefined ? 0 : Number(line.slice(name.length + 1))
}

/** The upstream errors of service `svc`, color blue, of one kind, as /metrics counts them. */
async function upstreamErrors (gw: TestGateway, kind: string): Promise<number> {
  const text = (await admin(gw.adminUrl, 'GET', '/metrics')).text
  return sample(text, `switchyard_upstream_errors_total{service="svc",color="blue",kind="${kind}"}`)
}

/** The first blue target of service `svc` as GET /v1/state shows it. */
async function blueTarget (gw: TestGateway): Promise<{ healthy: boolean, ejectedUntil?: string }> {
  return (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments.blue.targets[0]
}

const KEEP_ALIVE_OK = 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok'

interface RacingUpstream extends RawUpstream {
  /** Requests that reached it, answered or not. */
  requests: () => number
  /** Requests that arrived on a connection that had served one before. */
  reusedHits: () => number
  /**
   * Holds the next `answers` first answers until that many wait (to fill the
   * gateway's pool), and the next `closes` closes until that many reused
   * connections wait (so no connection dies before every request has taken one).
   */
  holdUntil: (answers: number, closes: number) => void
}

/**
 * An upstream that answers the first request on a connection with a
 * keep-alive 200 and closes the connection, unanswered, when the next request
 * arrives on it: the keep-alive race, every time. With `resetFresh`, it closes
 * fresh connections unanswered too: a target really failing.
 */
async function racingUpstream (t: Test, resetFresh = false): Promise<RacingUpstream> {
  const served = new WeakSet<net.Socket>()
  let requests = 0
  let reusedHits = 0
  // A batch acted on at once when `n` sockets wait (or after 2 s, so a wrong guess fails a check instead of hanging).
  const batch = (act: (s: net.Socket) => void): { add: (s: net.Socket) => void, hold: (n: number) => void } => {
    const waiting: net.Socket[] = []
    let n = 0
    let timer: NodeJS.Timeout | undefined
    const release = (): void => {
      clearTimeout(timer)
      n = 0
      for (const s of waiting.splice(0)) act(s)
    }
    return {
      add: (s) => { waiting.push(s); if (waiting.length >= n) release() },
      hold: (count) => { n = count; timer = setTimeout(release, 2000).unref() },
    }
  }
  const answers = batch((s) => s.write(KEEP_ALIVE_OK))
  const closes = batch((s) => s.destroy())
  const up = await rawUpstream(t, (socket) => {
    requests++
    if (served.has(socket)) reusedHits++
    if (resetFresh || served.has(socket)) return closes.add(socket)
    served.add(socket)
    answers.add(socket)
  })
  return {
    ...up,
    requests: () => requests,
    reusedHits: () => reusedHits,
    holdUntil: (a, c) => { answers.hold(a); closes.hold(c) },
  }
}

/** A gateway whose only blue target is `up`; three failures in a row eject a target. */
async function racingGateway (t: Test, engine: Engine, up: RawUpstream): Promise<TestGateway> {
  return await upstreamGateway(t, engine, up, '    passive: { consecutiveFailures: 3, baseEjectionTime: 30s }\n')
}

/** A gateway with one service whose blue target is `up` (green a plain backend); `extra`: more service lines. */
async function upstreamGateway (t: Test, engine: Engine, up: { url: string }, extra = ''): Promise<TestGateway> {
  const g = await startBackend(t, 'g')
  return await gateway(t, engine, `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${up.url}] }
    green: { targets: [${g.url}] }
${extra}`)
}

/** The requests that would eject the target if each counted as its failure (one more than the threshold). */
const OVER_THRESHOLD = 4

/** OVER_THRESHOLD POSTs with a body, all at once (so no answer between them resets the target's failure count). */
async function postAtOnce (gw: TestGateway): Promise<Reply[]> {
  return await Promise.all(Array.from({ length: OVER_THRESHOLD }, async (_, i) => await http1(`${gw.url}/post/${i}`, { method: 'POST', body: 'x' })))
}

/** Opens OVER_THRESHOLD upstream connections at once (each answered 200), left idle in the gateway's pool. */
async function fillPool (t: Test, gw: TestGateway, up: RacingUpstream): Promise<void> {
  up.holdUntil(OVER_THRESHOLD, 0)
  const primes = await Promise.all(Array.from({ length: OVER_THRESHOLD }, async (_, i) => await http1(`${gw.url}/prime/${i}`)))
  t.same(primes.map((p) => p.status), Array(OVER_THRESHOLD).fill(200), 'the pool is primed')
  t.equal(up.connections(), OVER_THRESHOLD, `with ${OVER_THRESHOLD} connections`)
}

/** A response read on a raw socket: what came so far, and whether (and when) the connection closed. */
function openStream (port: number, head: string): { got: () => string, closedAfter: () => number | undefined, destroy: () => void } {
  const started = Date.now()
  let got = ''
  let closedAfter: number | undefined
  const s = net.connect(port, '127.0.0.1', () => s.write(head))
  s.on('data', (c: Buffer) => { got += c.toString('latin1') })
  s.on('error', () => {})
  s.on('close', () => { closedAfter = Date.now() - started })
  return { got: () => got, closedAfter: () => closedAfter, destroy: () => s.destroy() }
}

/** A 200 head and one chunk of an event stream, then silence: the connection stays open. */
async function quietUpstream (t: Test): Promise<RawUpstream> {
  return await rawUpstream(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello\n\r\n')
  })
}

/** The chunked terminator: its absence marks a response cut short. */
const LAST_CHUNK = '\r\n0\r\n\r\n'

const cases: Case[] = [
  {
    name: 'hop-by-hop headers are stripped both ways; X-Forwarded-* set',
    run: async (t, engine) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      b.handler = (req, res) => {
        res.writeHead(200, [
          'content-type', 'application/json',
          'connection', 'x-upstream-hop',
          'x-upstream-hop', 'secret',
          'keep-alive', 'timeout=5',
          'set-cookie', 'a=1; Path=/',
          'set-cookie', 'b=2; Path=/',
          'x-kept', 'yes',
        ])
        res.end(JSON.stringify(req.headers))
      }
      const gw = await gateway(t, engine, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
      // node:http, not undici: undici will not send a custom Connection header.
      const res = await new Promise<{ headers: http.IncomingHttpHeaders, body: string }>((resolve, reject) => {
        const req = http.request(`${gw.url}/h`, {
          agent: false,
          headers: {
            connection: 'x-client-hop',
            'x-client-hop': 'drop me',
            te: 'trailers',
            'proxy-authorization': 'Basic abc',
            'x-forwarded-for': '203.0.113.9',
            'x-forwarded-proto': 'https',
            'x-end-to-end': 'keep me',
            host: 'public.example.com',
          },
        }, (r) => {
          let body = ''
          r.on('data', (c) => { body += String(c) })
          r.on('end', () => resolve({ headers: r.headers, body }))
        })
        req.on('error', reject)
        req.end()
      })
      const seen = JSON.parse(res.body) as Record<string, string>
      t.equal(seen['x-client-hop'], undefined, 'a header named in Connection is dropped')
      t.equal(seen.te, undefined)
      t.equal(seen['proxy-authorization'], undefined)
      t.equal(seen['x-end-to-end'], 'keep me')
      t.equal(seen['x-forwarded-for'], '127.0.0.1', 'a client X-Forwarded-For (no trusted proxies) is replaced by its address')
      t.equal(seen['x-forwarded-proto'], 'http', 'proto is what the gateway saw, not what the client claimed')
      t.equal(seen['x-forwarded-host'], 'public.example.com')
      t.equal(seen.host, 'public.example.com', 'Host is passed through')
      t.same(res.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/'], 'every Set-Cookie is kept')
      t.equal(res.headers['x-kept'], 'yes')
      t.equal(res.headers['x-upstream-hop'], undefined)
      t.not(res.headers['keep-alive'], 'timeout=5')
    },
  },
  {
    name: 'request and response bodies stream through, large and chunked',
    run: async (t, engine) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      b.handler = (req, res) => {
        // Echo a digest so a 4 MiB body need not be compared in memory twice.
        let size = 0
        const hash = createHash('sha256')
        req.on('data', (c: Buffer) => { size += c.length; hash.update(c) })
        req.on('end', () => {
          if (req.url === '/big') {
            res.writeHead(200, { 'content-type': 'application/octet-stream' })
            const chunk = Buffer.alloc(64 * 1024, 7)
            let n = 0
            const write = (): void => {
              while (n < 64) {
                n++
                if (!res.write(chunk)) return void res.once('drain', write)
              }
              res.end()
            }
            return write()
          }
          res.writeHead(201, { 'content-type': 'application/json' })
          res.end(JSON.stringify({ size, sha256: hash.digest('hex'), te: req.headers['transfer-encoding'] ?? null, cl: req.headers['content-length'] ?? null }))
        })
      }
      const gw = await gateway(t, engine, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
      const body = Buffer.alloc(4 * 1024 * 1024)
      for (let i = 0; i < body.length; i++) body[i] = i % 251
      const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
      // The bytes themselves (a string body would go out UTF-8 encoded).
      const res = await request(`${gw.url}/upload`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
      const posted = await res.body.json() as { size: number, sha256: string, cl: string | null }
      t.equal(res.statusCode, 201)
      t.equal(posted.cl, String(body.length))
      t.equal(posted.size, body.length, 'every byte of the 4 MiB upload arrived')
      t.equal(posted.sha256, sha256(body), 'byte for byte')

      // A chunked upload (no content-length) arrives whole.
      const chunked = await new Promise<any>((resolve, reject) => {
        const req = http.request(`${gw.url}/upload`, { method: 'PUT' }, (res) => {
          let text = ''
          res.on('data', (c) => { text += String(c) })
          res.on('end', () => resolve(JSON.parse(text)))
        })
        req.on('error', reject)
        for (let i = 0; i < 16; i++) req.write(body.subarray(i * 65536, (i + 1) * 65536))
        req.end()
      })
      t.equal(chunked.size, 16 * 65536)
      t.equal(chunked.sha256, sha256(body.subarray(0, 16 * 65536)), 'the chunked upload arrived byte for byte')
      t.equal(chunked.te, 'chunked')

      const big = await request(`${gw.url}/big`)
      const down = createHash('sha256')
      let got = 0
      for await (const c of big.body) {
        got += (c as Buffer).length
        down.update(c as Buffer)
      }
      t.equal(got, 64 * 64 * 1024, '4 MiB streamed back')
      t.equal(down.digest('hex'), sha256(Buffer.alloc(64 * 64 * 1024, 7)), 'byte for byte')
    },
  },
  {
    name: 'a preview header routes the same whatever its name, even one the gateway does not forward',
    run: async (t, engine) => {
      const b = await startBackend(t, 'blue')
      const g = await startBackend(t, 'green')
      const gw = await gateway(t, engine, `services:\n${serviceYaml('svc', '/', [b], [g], '    preview: { header: x-forwarded-host }\n')}`)
      const previewed = await http1(`${gw.url}/p`, { headers: { 'x-forwarded-host': 'green' } })
      t.equal(previewed.json.backend, 'green', 'the preview header picked green')
      t.not(g.seen.at(-1)?.headers['x-forwarded-host'], 'green', 'and, from a peer not trusted, did not go upstream as sent')
      t.equal((await http1(`${gw.url}/p`)).json.backend, 'blue', 'without it: live')
    },
  },
  {
    name: 'status codes and HEAD pass through',
    run: async (t, engine) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      const gw = await gateway(t, engine, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
      for (const code of [201, 204, 301, 404, 500, 503]) {
        const r = await http1(`${gw.url}/status/${code}`)
        t.equal(r.status, code, `status ${code}`)
      }
      const head = await http1(`${gw.url}/x`, { method: 'HEAD' })
      t.equal(head.status, 200)
      t.equal(head.text, '')
    },
  },
  {
    name: 'connect failure: 502, and idempotent requests retry once on another target',
    run: async (t, engine) => {
      const b = await startBackend(t, 'live')
      const g = await startBackend(t, 'g')
      const dead = `http://127.0.0.1:${await deadPort()}`
      const gw = await gateway(t, engine, `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${dead}, ${b.url}] }
    green: { targets: [${g.url}] }
    passive: false
  down:
    match: { pathPrefix: /down }
    blue: { targets: [${dead}] }
    green: { targets: [${g.url}] }
`)
      for (let i = 0; i < 6; i++) {
        const r = await http1(`${gw.url}/get/${i}`)
        t.equal(r.status, 200, `GET ${i} retried onto the live target`)
        t.equal(r.json.backend, 'live')
      }
      const before = b.seen.length
      const posts = await Promise.all([0, 1, 2, 3].map(async () => await http1(`${gw.url}/post`, { method: 'POST', body: 'x' })))
      const codes = posts.map((p) => p.status).sort()
      t.same(codes, [200, 200, 502, 502], 'a POST with a body is not retried')
      t.equal(b.seen.length - before, 2)
      t.equal(posts.find((p) => p.status === 502)?.json.error, 'upstream_connect_failed')

      const only = await http1(`${gw.url}/down`)
      t.equal(only.status, 502)
      t.same(only.json, { error: 'upstream_connect_failed', message: 'could not connect to the upstream' })
    },
  },
  {
    name: 'response timeout: 504 upstream_timeout',
    run: async (t, engine) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      const gw = await gateway(t, engine, `services:
${serviceYaml('svc', '/', [b], [g], '    timeouts: { response: 300ms }\n')}`)
      const started = Date.now()
      const r = await http1(`${gw.url}/slow?ms=3000`)
      t.equal(r.status, 504)
      t.same(r.json, { error: 'upstream_timeout', message: 'the upstream did not answer in time' })
      t.ok(Date.now() - started < 2500, 'answered near the deadline, not after the upstream')
      t.equal((await http1(`${gw.url}/slow?ms=10`)).status, 200, 'a fast answer is fine')
    },
  },
  {
    name: 'an upstream reset mid-body truncates the client response',
    run: async (t, engine) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      b.handler = (_req, res) => {
        res.writeHead(200, { 'content-length': '1000' })
        res.write('partial')
        setTimeout(() => res.socket?.destroy(), 20)
      }
      const gw = await gateway(t, engine, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
      const res = await request(`${gw.url}/x`)
      t.equal(res.statusCode, 200)
      await t.rejects(res.body.text(), 'the client sees the truncation as an error')
      // Counters settle back to zero.
      const route = gw.gateway.controller.snapshots.current.services.get('svc')
      t.equal(route?.colors.blue.stats.inflight, 0)
    },
  },
  {
    name: 'malformed requests get a 400 from the gateway itself',
    run: async (t, engine) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      const gw = await gateway(t, engine, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
      const reply = await new Promise<string>((resolve) => {
        const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write('NOT HTTP AT ALL\r\n\r\n'))
        let text = ''
        s.on('data', (c) => { text += String(c) })
        s.on('close', () => resolve(text))
      })
      t.match(reply, /^HTTP\/1\.1 400/)
      t.equal(b.seen.length, 0)
    },
  },
  {
    name: 'a response undici cannot parse becomes 502 upstream_error',
    run: async (t, engine) => {
      const bad = net.createServer((c) => { c.once('data', () => c.end('HTTP/1.1 099 Weird\r\ncontent-length: 2\r\n\r\nok')) })
      await new Promise<void>((resolve) => bad.listen(0, '127.0.0.1', resolve))
      t.teardown(() => bad.close())
      const g = await startBackend(t, 'g')
      const gw = await gateway(t, engine, `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [http://127.0.0.1:${(bad.address() as net.AddressInfo).port}] }
    green: { targets: [${g.url}] }
`)
      const r = await http1(`${gw.url}/x`, { method: 'POST', body: 'x' })
      t.equal(r.status, 502)
      t.equal(r.json.error, 'upstream_error')
    },
  },
  {
    name: 'only origin-form request targets are forwarded; gateway headers never leave',
    run: async (t, engine) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      const gw = await gateway(t, engine, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
      const raw = async (head: string): Promise<string> => await new Promise((resolve) => {
        const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write(head))
        let text = ''
        s.on('data', (c) => { text += String(c); if (text.includes('\r\n\r\n')) s.end() })
        s.on('close', () => resolve(text))
      })
      t.match(await raw('OPTIONS * HTTP/1.1\r\nhost: x\r\n\r\n'), /^HTTP\/1\.1 400/)
      t.match(await raw('GET http://10.0.0.5:6379/x HTTP/1.1\r\nhost: x\r\n\r\n'), /^HTTP\/1\.1 400/)
      t.match(await raw('GET http://10.0.0.5:6379/x HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n'), /^HTTP\/1\.1 400/)
      t.equal(b.seen.length, 0, 'nothing reached the upstream')
      const route = gw.gateway.controller.snapshots.current.services.get('svc')
      t.equal(route?.colors.blue.targets.endpoints[0].target.healthy, true, 'and nothing counted against it')
      await http1(`${gw.url}/x`, { headers: { 'x-switchyard-smoke': 'guess blue' } })
      t.equal(b.seen[0].headers['x-switchyard-smoke'], undefined, 'the smoke header is stripped')
    },
  },
  {
    name: '103 Early Hints reach the client; the final answer follows',
    run: async (t, engine) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      b.handler = (_req, res) => {
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
        setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('done'), 20)
      }
      const gw = await gateway(t, engine, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
      const hints: string[] = []
      const body = await new Promise<string>((resolve, reject) => {
        const req = http.request(`${gw.url}/page`, (res) => {
          let text = ''
          res.on('data', (c) => { text += String(c) })
          res.on('end', () => resolve(`${res.statusCode ?? 0} ${text}`))
        })
        req.on('information', (info) => hints.push(`${info.statusCode} ${String(info.headers.link)}`))
        req.on('error', reject)
        req.end()
      })
      t.equal(body, '200 done')
      t.same(hints, ['103 </style.css>; rel=preload; as=style'])
      const route = gw.gateway.controller.snapshots.current.services.get('svc')
      t.equal(route?.colors.blue.stats.requests, 1, 'counted once')
    },
  },
  {
    name: "a 103's other header fields go to the client with its Link",
    run: async (t, engine) => {
      const up = await rawUpstream(t, (socket) => {
        socket.write('HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\nx-hint: one\r\nconnection: keep-alive\r\n\r\n')
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
      })
      const gw = await upstreamGateway(t, engine, up)
      const hints: Array<Record<string, unknown>> = []
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(`${gw.url}/page`, (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
        })
        req.on('information', (info) => hints.push(info.headers))
        req.on('error', reject)
        req.end()
      })
      t.equal(status, 200)
      t.equal(hints.length, 1, 'one 103')
      t.equal(hints[0]?.link, '</a.css>; rel=preload')
      t.equal(hints[0]?.['x-hint'], 'one', 'its other field came with it')
      t.equal(hints[0]?.connection, undefined, 'but not a hop-by-hop one')
    },
  },
  {
    name: 'a stale keep-alive connection: a GET is retried on a fresh one, and the target is not blamed',
    run: async (t, engine) => {
      const up = await racingUpstream(t)
      const gw = await racingGateway(t, engine, up)
      t.equal((await http1(`${gw.url}/prime`)).status, 200)
      for (let i = 0; i < OVER_THRESHOLD; i++) {
        const before = up.connections()
        const r = await http1(`${gw.url}/get/${i}`)
        t.equal(r.status, 200, `GET ${i}: the upstream closed the reused connection; the retry answered`)
        t.equal(r.text, 'ok')
        t.equal(up.connections() - before, 1, `GET ${i}: retried on a fresh connection`)
      }
      t.equal(up.requests(), 1 + 2 * OVER_THRESHOLD, 'each GET reached the upstream twice: the stale try and the retry')
      t.equal((await blueTarget(gw)).healthy, true, 'the target is not ejected')

      // All at once on stale connections: every stale try fails before any retry answers, so counting them would eject.
      const up2 = await racingUpstream(t)
      const gw2 = await racingGateway(t, engine, up2)
      await fillPool(t, gw2, up2)
      up2.holdUntil(0, OVER_THRESHOLD)
      const gets = await Promise.all(Array.from({ length: OVER_THRESHOLD }, async (_, i) => await http1(`${gw2.url}/get/${i}`)))
      t.equal(up2.reusedHits(), OVER_THRESHOLD, 'each GET took an idle connection, which the upstream closed unanswered')
      t.same(gets.map((r) => `${r.status} ${r.text}`), Array(OVER_THRESHOLD).fill('200 ok'), 'each was retried and answered')
      t.equal(up2.connections(), 2 * OVER_THRESHOLD, 'each retry on a fresh connection')
      const target = await blueTarget(gw2)
      t.equal(target.healthy, true, `${OVER_THRESHOLD} stale connections in a row do not eject the target`)
      t.equal(target.ejectedUntil, undefined)
    },
  },
  {
    name: 'a stale keep-alive connection: a POST is not retried (502), and the target is not blamed',
    run: async (t, engine) => {
      const up = await racingUpstream(t)
      const gw = await racingGateway(t, engine, up)
      await fillPool(t, gw, up)
      up.holdUntil(0, OVER_THRESHOLD)
      const posts = await postAtOnce(gw)
      t.equal(up.reusedHits(), OVER_THRESHOLD, 'each POST took an idle connection, which the upstream closed unanswered')
      for (const [i, r] of posts.entries()) {
        t.equal(r.status, 502, `POST ${i}: 502`)
        t.equal(r.json?.error, 'upstream_error')
      }
      t.equal(up.requests(), 2 * OVER_THRESHOLD, 'each POST reached the upstream once: not retried')
      t.equal(up.connections(), OVER_THRESHOLD, 'and no new connection was opened for it')
      const target = await blueTarget(gw)
      t.equal(target.healthy, true, `${OVER_THRESHOLD} stale connections in a row do not eject the target`)
      t.equal(target.ejectedUntil, undefined)
      t.equal((await http1(`${gw.url}/after`)).status, 200, 'which still takes traffic')
    },
  },
  {
    name: 'the contrast: the same count of failures on fresh connections ejects the target',
    run: async (t, engine) => {
      const up = await racingUpstream(t, true)
      const gw = await racingGateway(t, engine, up)
      up.holdUntil(0, OVER_THRESHOLD)
      const posts = await postAtOnce(gw)
      t.same(posts.map((p) => p.status), Array(OVER_THRESHOLD).fill(502), 'a fresh connection closed unanswered: 502')
      t.equal(up.connections(), OVER_THRESHOLD, 'each POST on a fresh connection')
      const target = await blueTarget(gw)
      t.equal(target.healthy, false, 'real failures in a row eject the target')
      t.ok(target.ejectedUntil, 'with the time its ejection ends')
    },
  },
  {
    name: 'trailers after a chunked body reach the client',
    run: async (t, engine) => {
      const body = 'a body with a checksum after it\n'.repeat(512)
      const sum = sha256(body)
      const half = body.length / 2
      const up = await rawUpstream(t, (socket) => {
        socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n')
        for (const part of [body.slice(0, half), body.slice(half)]) socket.write(`${part.length.toString(16)}\r\n${part}\r\n`)
        socket.write(`0\r\nx-checksum: ${sum}\r\n\r\n`)
      })
      const gw = await upstreamGateway(t, engine, up)
      const res = await new Promise<{ status: number, body: string, trailers: NodeJS.Dict<string> }>((resolve, reject) => {
        const req = http.request(`${gw.url}/file`, { agent: false, headers: { te: 'trailers' } }, (r) => {
          let text = ''
          r.on('data', (c) => { text += String(c) })
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body: text, trailers: r.trailers }))
          r.on('error', reject)
        })
        req.on('error', reject)
        req.end()
      })
      t.equal(res.status, 200)
      t.equal(sha256(res.body), sum, 'the body arrived byte for byte')
      t.equal(res.trailers['x-checksum'], sum, 'the trailer arrived, with its value')
    },
  },
  {
    name: 'timeouts.body: a quiet upstream body is cut, and counts as an upstream timeout',
    run: async (t, engine) => {
      const gw = await quietGateway(t, engine, '    timeouts: { body: 300ms }\n')
      t.equal(await upstreamErrors(gw, 'timeout'), 0)
      const started = Date.now()
      const got = await exchange(gw.gateway.address.port, 'GET /events HTTP/1.1\r\nhost: x\r\n\r\n', () => false, 6000)
      const took = Date.now() - started
      t.match(got, /^HTTP\/1\.1 200 [^]*\r\n\r\n6\r\nhello\n\r\n/, 'the head and the first chunk went out')
      t.notOk(got.includes(LAST_CHUNK), 'then the response was cut: no last chunk')
      t.ok(took >= 250, `not before the body timeout (${took} ms)`)
      t.ok(took < 5000, `near the body timeout, not at the client's patience (${took} ms)`)
      await eventually(async () => (await upstreamErrors(gw, 'timeout')) === 1, { timeout: 2000 })
      t.pass('counted once as an upstream timeout')
    },
  },
  {
    name: 'without timeouts.body a quiet upstream body is left alone',
    run: async (t, engine) => {
      const gw = await quietGateway(t, engine, '')
      const stream = openStream(gw.gateway.address.port, 'GET /events HTTP/1.1\r\nhost: x\r\n\r\n')
      t.teardown(stream.destroy)
      await eventually(() => stream.got().includes('hello\n'))
      await new Promise((resolve) => setTimeout(resolve, 1000))
      t.equal(stream.closedAfter(), undefined, 'still open after 1 s of silence')
      t.notOk(stream.got().includes(LAST_CHUNK), 'and not ended')
      t.equal(await upstreamErrors(gw, 'timeout'), 0, 'no timeout counted')
    },
  },
]

/** A gateway whose blue target sends one chunk of its body and then goes quiet; `extra`: more service lines. */
async function quietGateway (t: Test, engine: Engine, extra: string): Promise<TestGateway> {
  return await upstreamGateway(t, engine, await quietUpstream(t), extra)
}

for (const engine of ENGINES) {
  for (const c of cases) t.test(`${engine}: ${c.name}`, async (t) => await c.run(t, engine))
}
