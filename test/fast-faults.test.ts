// The fast engine under faults and abuse: answers broken after their head,
// upstreams sending bytes nobody asked for, heads in tiny pieces, 1xx floods,
// heads too big for the upstream, slow uploads, the per-target connection
// cap and client deadlines. Raw sockets where the exact bytes matter.

import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import * as io from '../src/proxy/h1/io.js'
import { MAX_HEAD, MAX_INFORMATIONAL } from '../src/proxy/limits.js'
import { admin, eventually, http1, startBackend, startGateway, type TestGateway } from './helpers/index.js'
import { count, exchange, rawUpstream } from './helpers/raw.js'
import type { LocalListener } from '../src/listen/local.js'

/** A one-service gateway config on the fast engine (whatever SWITCHYARD_TEST_ENGINE says): blue `targets`, green another backend. */
function oneService (blue: string[], green: string, extra = '', top = '', engine = 'fast'): string {
  return `engine: ${engine}\n${top}services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${blue.join(', ')}] }
    green: { targets: [${green}] }
${extra}`
}

/** The blue targets of the one service, by URL. */
function blueTarget (gw: TestGateway, url: string): any {
  return gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.targets.endpoints.find((e: any) => e.target.url === url)?.target
}

/** A backend that answers 200 with content-length 1000, sends 10 bytes and drops the connection (its /healthz is fine). */
async function truncating (t: Tap.Test): Promise<{ url: string, seen: () => number }> {
  let seen = 0
  const srv = http.createServer((req, res) => {
    if (req.url === '/healthz') return void res.end('ok')
    seen++
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1000' })
    res.write('0123456789', () => res.socket?.destroy())
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    srv.closeAllConnections()
    srv.close()
  })
  return { url: `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`, seen: () => seen }
}

/** The value of one sample of the Prometheus text. */
function sample (text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(name + ' '))
  return line === undefined ? undefined : Number(line.slice(name.length + 1))
}

t.test('an answer cut after its head is an upstream error for the guard, the metrics and passive health', async (t) => {
  const bad = await truncating(t)
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, oneService([bad.url], g.url, '    passive: false\n'))
  const port = gw.gateway.address.port
  const N = 6
  for (let i = 0; i < N; i++) {
    const got = await exchange(port, `GET /cut${i} HTTP/1.1\r\nhost: x\r\n\r\n`)
    t.match(got, /^HTTP\/1\.1 200 [^]*\r\n\r\n0123456789$/, `request ${i}: the head and 10 bytes went out, then the cut`)
  }
  const stats = gw.gateway.registry.colorStats('svc', 'blue')
  await eventually(() => stats.inflight === 0)
  t.equal(stats.requests, N, 'each exchange counted once')
  t.equal(stats.errors, N, 'every truncated answer is an error for the guard')
  t.equal(stats.upstreamErrors.reset, N)
  const metrics = (await admin(gw.adminUrl, 'GET', '/metrics')).text
  t.equal(sample(metrics, 'switchyard_upstream_errors_total{service="svc",color="blue",kind="reset"}'), N)

  // Two targets, one truncating: passive health ejects it, and only it.
  const good = await startBackend(t, 'good')
  const two = await startGateway(t, oneService([bad.url, good.url], g.url, '    passive: { consecutiveFailures: 3 }\n'))
  for (let i = 0; i < 12; i++) await exchange(two.gateway.address.port, `GET /two${i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)
  t.equal(blueTarget(two, bad.url).ejected, true, 'the truncating target is ejected')
  t.equal(blueTarget(two, good.url).ejected, false, 'the good one is not')
  t.equal((await http1(`${two.url}/after`)).json.backend, 'good', 'traffic goes to the good one')
})

t.test('a flip into a color whose target truncates bodies is reverted by the guard', async (t) => {
  const b = await startBackend(t, 'blue')
  const bad = await truncating(t)
  const gw = await startGateway(t, `engine: fast
defaults:
  health: { interval: 100ms, timeout: 100ms, healthyThreshold: 1, unhealthyThreshold: 2 }
services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${b.url}] }
    green: { targets: [${bad.url}] }
    guard: { window: 30s, maxErrorRate: 0.2, minRequests: 5 }
    passive: false
`)
  await eventually(async () => (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments.green.healthy === 1)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { reason: 'v2' })).status, 200)
  const port = gw.gateway.address.port
  let truncated = 0
  for (let i = 0; i < 30; i++) {
    const got = await exchange(port, `GET /r${i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)
    if (got.endsWith('0123456789')) truncated++
    else if (got.includes('"backend":"blue"')) break
  }
  t.ok(truncated >= 5 && truncated <= 10, `reverted once minRequests truncated answers were seen (${truncated})`)
  const state = (await admin(gw.adminUrl, 'GET', '/v1/state')).json
  t.equal(state.services.svc.live, 'blue')
  const ev = (await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.find((e: any) => e.type === 'auto_revert')
  t.match(ev, { type: 'auto_revert', changes: [{ service: 'svc', from: 'green', to: 'blue' }], trip: { service: 'svc', color: 'green', reason: 'error_rate' } })
})

const JUNK = 'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nJUNK'

// node:http's side (undici) is held to the same rule: it is what the fast engine hands over.
for (const engine of ['fast', 'node']) {
  t.test(`${engine} engine: bytes an upstream sends past a complete answer never reach a client`, async (t) => {
    const g = await startBackend(t, 'g')
    // Each request gets its answer; after the misbehaving ones, junk follows in a separate write
    // when the test says so, and that connection answers nothing more (only the junk is sent).
    const junkFor: Array<() => void> = []
    const poisoned = new WeakSet<net.Socket>()
    const up = await rawUpstream(t, (s, data) => {
      const [method, path] = data.split(' ')
      if (poisoned.has(s)) return
      const own = `HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`
      if (path.startsWith('/204')) s.write('HTTP/1.1 204 No Content\r\n\r\n')
      else if (path.startsWith('/304')) s.write('HTTP/1.1 304 Not Modified\r\netag: "x"\r\n\r\n')
      else if (method === 'HEAD') s.write(`HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n`)
      else if (path.startsWith('/more')) s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
      else return void s.write(own)
      poisoned.add(s)
      junkFor.push(() => s.write(JUNK))
    })
    const gw = await startGateway(t, oneService([up.url], g.url, '    passive: false\n', '', engine))
    const port = gw.gateway.address.port
    const flushJunk = (): void => { for (const f of junkFor.splice(0)) f() }

    // Pipelined: the second request is ready the moment the first answer ends.
    for (const [method, first] of [['GET', '/204'], ['GET', '/304'], ['HEAD', '/head'], ['GET', '/more']]) {
      const got = await exchange(port, `${method} ${first} HTTP/1.1\r\nhost: x\r\n\r\nGET /second HTTP/1.1\r\nhost: x\r\n\r\n`, (s) => {
        // The first answer is out: now the junk leaves the upstream, in its own write.
        if (count(s, 'HTTP/1.1') === 1) flushJunk()
        return s.endsWith('/second') || s.includes('JUNK')
      })
      t.notMatch(got, /JUNK/, `${method} ${first}: the junk reached no client`)
      t.match(got, /\r\n\r\n\/second$/, `${method} ${first}: the second request got its own answer`)
    }

    // Sequential, and the junk arrives together with the next request on the kept-alive connection.
    for (const [method, first] of [['GET', '/204'], ['HEAD', '/head'], ['GET', '/more']]) {
      const got = await new Promise<string>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => s.write(`${method} ${first}-seq HTTP/1.1\r\nhost: x\r\n\r\n`))
        let text = ''
        let sent = false
        s.on('data', (c) => {
          text += c.toString('latin1')
          if (!sent && (text.endsWith('\r\n\r\n') || text.endsWith('ok'))) {
            sent = true
            s.write('GET /next HTTP/1.1\r\nhost: x\r\n\r\n')
            flushJunk()
          }
          if (text.endsWith('/next') || text.includes('JUNK')) s.destroy()
        })
        const timer = setTimeout(() => s.destroy(), 5000)
        s.on('error', () => {})
        s.on('close', () => {
          clearTimeout(timer)
          resolve(text)
        })
      })
      t.notMatch(got, /JUNK/, `${method} ${first}, then another request: the junk reached no client`)
      t.match(got, /\r\n\r\n\/next$/, `${method} ${first}, then another request: it got its own answer`)
    }
  })
}

t.test('an answer out of nowhere on an idle connection closes it', async (t) => {
  const g = await startBackend(t, 'g')
  const sockets: net.Socket[] = []
  const up = await rawUpstream(t, (s, data, n) => {
    sockets.push(s)
    const path = data.split(' ')[1]
    if (n === 1) s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`)
  })
  const gw = await startGateway(t, oneService([up.url], g.url, '    passive: false\n'))
  t.equal((await http1(`${gw.url}/one`)).text, '/one')
  const first = sockets[0]
  const closed = new Promise<void>((resolve) => first.once('close', () => resolve()))
  first.write(JUNK)
  await closed
  t.pass('the gateway closed the connection that sent an unasked answer')
  t.equal((await http1(`${gw.url}/two`)).text, '/two', 'the next request gets its own answer, on a new connection')
  t.equal(up.connections(), 2)
})

t.test('a head arriving a byte at a time costs linear work, on both sides', async (t) => {
  const size = 15 * 1024
  const big = 'a'.repeat(size)
  const up = await rawUpstream(t, (s, data) => {
    if (!data.startsWith('GET /trickle-up')) {
      const path = data.split(' ')[1]
      return void s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`)
    }
    // The answer's head, one byte per turn of the event loop.
    const head = Buffer.from(`HTTP/1.1 200 OK\r\nx-big: ${big}\r\ncontent-length: 2\r\n\r\nok`)
    let i = 0
    const next = (): void => {
      if (i >= head.length || s.destroyed) return
      s.write(head.subarray(i, ++i))
      setImmediate(next)
    }
    next()
  })
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, oneService([up.url], g.url, '    passive: false\n'))
  const port = gw.gateway.address.port
  // Every Buffer.concat the gateway makes, in bytes.
  let concatenated = 0
  // eslint-disable-next-line @typescript-eslint/unbound-method -- kept to put back, and called with .call
  const concat = Buffer.concat
  Buffer.concat = function (list: readonly Uint8Array[], total?: number): Buffer {
    const out = concat.call(Buffer, list, total)
    concatenated += out.length
    return out
  } as typeof Buffer.concat
  t.teardown(() => { Buffer.concat = concat })
  const work = (): number => concatenated + (io.headWork?.copied ?? 0)

  // The request head, fed to the gateway's socket one byte per read (15 KiB: 15,000 reads).
  const edge = (gw.gateway.listener as LocalListener).server as net.Server
  const gatewaySide = new Promise<net.Socket>((resolve) => edge.once('connection', resolve))
  const client = net.connect(port, '127.0.0.1')
  client.on('error', () => {})
  let answer = ''
  client.on('data', (c) => { answer += c.toString('latin1') })
  const socket = await gatewaySide
  const head = Buffer.from(`GET /trickle-down HTTP/1.1\r\nhost: x\r\nx-big: ${big}\r\n\r\n`)
  const before = work()
  const scannedBefore = io.headWork?.scanned ?? 0
  for (let i = 0; i < head.length; i++) socket.emit('data', head.subarray(i, i + 1))
  await eventually(() => answer.endsWith('/trickle-down'))
  t.ok(work() - before < 4 * head.length, `bytes copied for a ${head.length}-byte request head: ${work() - before}`)
  // Each one-byte read searches its byte and the 3 before it (a terminator may straddle reads).
  const scanned = (io.headWork?.scanned ?? Infinity) - scannedBefore
  t.ok(scanned <= 4 * head.length, `bytes searched for the end of that head: ${scanned}`)
  client.destroy()

  const upBefore = work()
  const got = await exchange(port, 'GET /trickle-up HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.endsWith('ok'))
  t.match(got, /^HTTP\/1\.1 200 OK\r\nx-big: a+\r\ncontent-length: 2\r\n\r\nok$/, 'the trickled answer arrives whole')
  t.ok(work() - upBefore < 4 * (size + 64), `bytes copied for a ${size}-byte response head: ${work() - upBefore}`)
})

t.test('a 1xx flood is capped, and 1xx the client cannot take yet pause the upstream', async (t) => {
  const g = await startBackend(t, 'g')
  let release: (() => void) | undefined
  const up = await rawUpstream(t, (s, data) => {
    const path = data.split(' ')[1]
    if (path === '/flood') {
      for (let i = 0; i < 20; i++) s.write(`HTTP/1.1 103 Early Hints\r\nlink: </${i}.css>\r\n\r\n`)
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    } else if (path === '/sixteen') {
      for (let i = 0; i < 16; i++) s.write(`HTTP/1.1 103 Early Hints\r\nlink: </${i}.css>\r\n\r\n`)
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    } else if (path === '/hint') {
      s.write('HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n')
      release = () => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    }
  })
  const gw = await startGateway(t, oneService([up.url], g.url, '    passive: false\n'))
  const port = gw.gateway.address.port
  const flood = await exchange(port, 'GET /flood HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.includes('}'))
  t.equal(count(flood, 'HTTP/1.1 103'), MAX_INFORMATIONAL, 'at most 16 informational answers are relayed')
  t.match(flood, /HTTP\/1\.1 502 [^]*"error":"upstream_error"/, 'then the flood is an upstream error')
  t.notMatch(flood, /\r\n\r\nok/)
  const sixteen = await exchange(port, 'GET /sixteen HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.endsWith('ok'))
  t.equal(count(sixteen, 'HTTP/1.1 103'), 16, '16 are fine')
  t.match(sixteen, /HTTP\/1\.1 200 OK[^]*ok$/)

  // A client whose socket is full: the gateway stops reading the upstream until it drains.
  const edge = (gw.gateway.listener as LocalListener).server as net.Server
  const gatewaySide = new Promise<net.Socket>((resolve) => edge.once('connection', resolve))
  const client = net.connect(port, '127.0.0.1', () => client.write('GET /hint HTTP/1.1\r\nhost: x\r\n\r\n'))
  client.on('error', () => {})
  let text = ''
  client.on('data', (c) => { text += c.toString('latin1') })
  const socket = await gatewaySide
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called with .apply(socket)
  const write = socket.write
  socket.write = function (...args: any[]): boolean {
    (write as any).apply(socket, args)
    return false
  } as typeof socket.write
  await eventually(() => text.includes('103 Early Hints'))
  const pool = gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.targets.endpoints[0].h1 as any
  const upstreamSocket = [...pool.all].find((c: any) => c.user !== undefined).socket as net.Socket
  t.equal(upstreamSocket.isPaused(), true, 'the upstream is not read while the client cannot take the 103')
  socket.write = write
  socket.emit('drain')
  t.equal(upstreamSocket.isPaused(), false, 'and is read again once the client drains')
  release?.()
  await eventually(() => text.endsWith('ok'))
  client.destroy()
})

t.test('heads that would be too big upstream, or have too many lines, get 431 at the edge', async (t) => {
  const g = await startBackend(t, 'g')
  const up = await rawUpstream(t, (s, data) => {
    const path = data.split(' ')[1]
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`)
  })
  const gw = await startGateway(t, oneService([up.url], g.url, '    passive: false\n'))
  const port = gw.gateway.address.port
  // Just under 16 KiB as sent; the X-Forwarded-* and X-Request-Id lines the gateway adds push it over.
  const start = 'GET /big HTTP/1.1\r\nhost: x\r\nx-pad: '
  const head = start + 'p'.repeat(MAX_HEAD - start.length - 10)
  const big = await exchange(port, `${head}\r\n\r\n`, (s) => s.includes('}'))
  t.match(big, /^HTTP\/1\.1 431 [^]*"error":"header_too_large"/)
  t.equal(up.connections(), 0, 'nothing reached the upstream')
  // A head that fits still goes through.
  const fits = await exchange(port, `${start}${'p'.repeat(MAX_HEAD - start.length - 400)}\r\n\r\n`, (s) => s.endsWith('/big'))
  t.match(fits, /^HTTP\/1\.1 200/)

  const lines = (n: number): string => Array.from({ length: n }, (_, i) => `x-h${i}: 1\r\n`).join('')
  const many = await exchange(port, `POST /many HTTP/1.1\r\nhost: x\r\n${lines(300)}content-length: 4\r\n\r\nbody`)
  t.match(many, /^HTTP\/1\.1 431 [^]*connection: close\r\n[^]*"error":"header_too_large"/, 'more than 256 header lines: refused, connection closed')
  const limit = await exchange(port, `GET /limit HTTP/1.1\r\nhost: x\r\n${lines(255)}\r\n`, (s) => s.endsWith('/limit'))
  t.match(limit, /^HTTP\/1\.1 200/, '256 header lines are fine')
})

t.test('a client that goes quiet mid-body gets 408 and holds no upstream connection', async (t) => {
  const g = await startBackend(t, 'g')
  const up = await rawUpstream(t, () => {})
  const gw = await startGateway(t, oneService([up.url], g.url, '    passive: { consecutiveFailures: 1 }\n', 'client: { bodyTimeout: 300ms }\n'))
  const port = gw.gateway.address.port
  const started = Date.now()
  const answers = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const got = await Promise.race([
      exchange(port, `POST /slow${i} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nx`),
      new Promise<string>((resolve) => setTimeout(() => resolve('no answer'), 4000)),
    ])
    return { got, ms: Date.now() - started }
  }))
  for (const { got, ms } of answers) {
    t.match(got, /^HTTP\/1\.1 408 [^]*connection: close\r\n[^]*"error":"request_timeout"/)
    t.ok(ms >= 250 && ms < 3000, `answered after ${ms} ms`)
  }
  t.equal(up.connections(), 20, 'each request had reached the upstream')
  await eventually(() => up.open() === 0)
  t.pass('and every upstream connection was closed')
  t.equal(blueTarget(gw, up.url).ejected, false, 'the target is not blamed')

  // The upstream answers before the body is in: the quiet client then cuts both sides.
  const eager = await rawUpstream(t, (s, data, n) => {
    if (n === 1) s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n')
  })
  const gw2 = await startGateway(t, oneService([eager.url], g.url, '    passive: false\n', 'client: { bodyTimeout: 300ms }\n'))
  const began = Date.now()
  const cut = await exchange(gw2.gateway.address.port, 'POST /eager HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nx')
  const ms = Date.now() - began
  t.match(cut, /^HTTP\/1\.1 200 OK[^]*\r\n\r\n5\r\nhello\r\n$/, 'the answer began, then the client connection was cut')
  t.ok(ms >= 250 && ms < 3000, `cut after ${ms} ms`)
  await eventually(() => eager.open() === 0)
  t.pass('and so was the upstream connection')
})

t.test('the per-target connection cap: requests wait in turn, or get 503 after timeouts.connect', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  let open = 0
  let maxOpen = 0
  b.server.on('connection', (s) => {
    maxOpen = Math.max(maxOpen, ++open)
    s.on('close', () => open--)
  })
  const gw = await startGateway(t, oneService([b.url], g.url, '    limits: { maxConnections: 2 }\n    passive: { consecutiveFailures: 1 }\n'))
  const all = await Promise.all(Array.from({ length: 6 }, async (_, i) => await http1(`${gw.url}/slow?ms=100&i=${i}`)))
  t.same(all.map((r) => r.status), [200, 200, 200, 200, 200, 200], 'all six succeed')
  t.equal(maxOpen, 2, 'the upstream never saw more than 2 connections')

  const short = await startGateway(t, oneService([b.url], g.url, '    limits: { maxConnections: 2 }\n    timeouts: { connect: 200ms }\n    passive: { consecutiveFailures: 1 }\n'))
  const results = await Promise.all(Array.from({ length: 6 }, async (_, i) => await http1(`${short.url}/slow?ms=1000&i=${i}`)))
  const statuses = results.map((r) => r.status).sort()
  t.same(statuses, [200, 200, 503, 503, 503, 503], 'the overflow gets 503')
  t.same(results.filter((r) => r.status === 503).map((r) => r.json.error), Array(4).fill('upstream_overloaded'))
  t.equal(short.gateway.registry.colorStats('svc', 'blue').errors, 4, 'counted for the guard')
  t.equal(blueTarget(short, b.url).ejected, false, 'but not against the target')
})

t.test('client.idleTimeout closes an idle keep-alive connection on the fast engine', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, oneService([b.url], g.url, '', 'client: { idleTimeout: 300ms }\n'))
  const port = gw.gateway.address.port
  let answeredAt = 0
  const closedAt = await new Promise<number>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write('GET /x HTTP/1.1\r\nhost: x\r\n\r\n'))
    s.on('data', (c) => { if (c.toString().includes('}')) answeredAt = Date.now() })
    s.on('error', () => {})
    s.on('close', () => resolve(Date.now()))
  })
  t.ok(answeredAt > 0, 'answered first')
  const idle = closedAt - answeredAt
  t.ok(idle >= 250 && idle < 2000, `closed after ${idle} ms idle`)
})
