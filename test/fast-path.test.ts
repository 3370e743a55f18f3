// The fast engine on the wire: pipelining, hand-over to node:http, upstream
// keep-alive, chunked and close-delimited answers, failures before and after
// the head. Raw sockets on both sides where the exact bytes matter.

import t from 'tap'
import net from 'node:net'
import { http1, serviceYaml, startBackend, startGateway, eventually } from './helpers/index.js'
import { count, exchange, rawUpstream } from './helpers/raw.js'


function oneService (url: string, green: string, extra = ''): string {
  return `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
    green: { targets: [${green}] }
    passive: false
${extra}`
}

t.test('pipelined requests are answered in order, bodies and all', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const port = gw.gateway.address.port
  const got = await exchange(port, [
    'GET /one HTTP/1.1\r\nhost: x\r\n\r\nPOST /two HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhel',
    'lo\r\nGET /three HTTP/1.1\r\nhost: x\r\n\r\nGET /four HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n',
  ])
  const paths = [...got.matchAll(/"path":"([^"]+)"/g)].map((m) => m[1])
  t.same(paths, ['/one', '/two', '/three', '/four'])
  t.match(got, /"body":"hello"/)
  t.equal(count(got, 'HTTP/1.1 200'), 4)
  t.match(got, /connection: close\r\n/, 'the last answer says the connection closes')
  // Empty lines before a request are ignored (RFC 9112 2.2), and a request may arrive a byte at a time.
  const slow = await exchange(port, ['\r\n\r\nGET /s', 'low-start HTTP/1.1\r\nho', 'st: x\r\n', '\r\n'], (s) => s.includes('}'))
  t.match(slow, /^HTTP\/1\.1 200[^]*"path":"\/slow-start"/)
})

t.test('what the fast path does not take, node:http serves on the same connection', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const port = gw.gateway.address.port
  const old = await exchange(port, 'GET /old HTTP/1.0\r\nhost: x\r\n\r\n')
  t.match(old, /^HTTP\/1\.1 200[^]*"path":"\/old"/, 'HTTP/1.0')
  const cont = await exchange(port, ['PUT /expect HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n', 'ok'], (s) => s.includes('}'))
  t.match(cont, /"body":"ok"/, 'Expect: 100-continue')
  // A fast request first, then one only node:http takes, on one connection.
  const mixed = await exchange(port, 'GET /fast HTTP/1.1\r\nhost: x\r\n\r\nPOST /chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n', (s) => count(s, '}') === 2)
  t.same([...mixed.matchAll(/"path":"([^"]+)","body":"([^"]*)"/g)].map((m) => [m[1], m[2]]), [['/fast', ''], ['/chunked', 'abc']])
  const huge = await exchange(port, `GET / HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(17 * 1024)}\r\n\r\n`)
  t.match(huge, /^HTTP\/1\.1 431/, 'a head over 16 KiB gets node:http\'s 431')
  const bad = await exchange(port, 'GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n')
  t.match(bad, /^HTTP\/1\.1 400/)
  const started = Date.now()
  const lf = await exchange(port, 'GET / HTTP/1.1\nhost: x\n\n', (s) => s.includes('\r\n\r\n'))
  t.match(lf, /^HTTP\/1\.1 400/, 'bare LF line ends: node:http answers at once')
  t.ok(Date.now() - started < 5000)
  const lower = await exchange(port, 'get /lower HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.includes('\r\n\r\n'))
  t.match(lower, /^HTTP\/1\.1 400/, 'a lowercase method is not forwarded')
  t.equal(b.seen.filter((r) => r.url === '/' || r.url === '/lower').length, 0, 'nothing odd reached the upstream')
})

t.test('gateway answers keep the connection unless a body is still coming', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/api', [b], [g])}`)
  const port = gw.gateway.address.port
  const two = await exchange(port, 'GET /nope HTTP/1.1\r\nhost: x\r\n\r\nPOST /nope HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nokGET /api/x HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.includes('"path"'))
  t.equal(count(two, 'HTTP/1.1 404'), 2)
  t.match(two, /"error":"no_route"/)
  t.match(two, /"path":"\/api\/x"/)
  const cut = await exchange(port, 'POST /nope HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc')
  t.match(cut, /^HTTP\/1\.1 404[^]*connection: close\r\n/, 'the unread rest of a body: the connection closes')
})

t.test('upstream connections are kept alive and reused, within what the upstream announces', async (t) => {
  const g = await startBackend(t, 'g')
  let announce = ''
  const up = await rawUpstream(t, (s, data) => {
    if (data.startsWith('GET')) s.write(`HTTP/1.1 200 OK\r\ncontent-length: 2\r\n${announce}\r\nok`)
  })
  const gw = await startGateway(t, oneService(up.url, g.url))
  for (let i = 0; i < 5; i++) t.equal((await http1(`${gw.url}/k${i}`)).text, 'ok')
  t.equal(up.connections(), 1, 'five requests, one upstream connection')
  announce = 'keep-alive: timeout=1\r\n'
  await http1(`${gw.url}/short`)
  await http1(`${gw.url}/short`)
  t.equal(up.connections(), 2, 'keep-alive timeout=1 leaves no time to reuse: the next request connects anew')
})

t.test('a kept-alive connection the upstream dropped is retried for safe requests', async (t) => {
  const g = await startBackend(t, 'g')
  // Answers without saying it will close, then closes: the next request on it finds it gone.
  const up = await rawUpstream(t, (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'))
  const gw = await startGateway(t, oneService(up.url, g.url))
  const port = gw.gateway.address.port
  const got = await exchange(port, 'GET /a HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.endsWith('ok'))
  t.match(got, /^HTTP\/1\.1 200/)
  for (let i = 0; i < 3; i++) t.equal((await http1(`${gw.url}/again`)).status, 200, `GET ${i} after the close`)
  // The race itself: an upstream that answers the first request on a connection and drops the
  // connection when a second one arrives. Not the target failing: with consecutiveFailures 1 a
  // single counted failure would eject it.
  const seen = new WeakMap<net.Socket, number>()
  const racy = await rawUpstream(t, (s) => {
    const n = (seen.get(s) ?? 0) + 1
    seen.set(s, n)
    if (n === 1) s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    else s.destroy()
  })
  const strict = await startGateway(t, `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${racy.url}] }
    green: { targets: [${g.url}] }
    passive: { consecutiveFailures: 1 }
`)
  for (let i = 0; i < 4; i++) t.equal((await http1(`${strict.url}/s${i}`)).status, 200, `GET ${i}: retried on a new connection`)
  t.ok(racy.connections() >= 4, 'each retry opened a new connection')
  const target = strict.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.targets.endpoints[0].target
  t.equal(target?.healthy, true, 'the target was not ejected')
  const post = await http1(`${strict.url}/post`, { method: 'POST', body: 'x' })
  t.equal(post.status, 502, 'a POST on a dropped kept-alive connection is not retried')
  t.equal(target?.healthy, true, 'and does not eject the target either')
})

t.test('chunked, close-delimited and HTTP/1.0 answers reach the client whole', async (t) => {
  const g = await startBackend(t, 'g')
  const up = await rawUpstream(t, (s, data) => {
    const path = data.split(' ')[1]
    if (path === '/chunked') {
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5\r\nhello\r\n')
      setTimeout(() => s.write('6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n'), 20)
    } else if (path === '/eof') {
      s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ')
      setTimeout(() => s.end('the end'), 20)
    } else if (path === '/http10') {
      s.end('HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold')
    } else if (path === '/extra') {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA')
    } else if (path === '/early') {
      s.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n')
      setTimeout(() => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'), 10)
    }
  })
  const gw = await startGateway(t, oneService(up.url, g.url))
  const port = gw.gateway.address.port
  const chunked = await exchange(port, 'GET /chunked HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.endsWith('\r\n\r\n') && s.includes('x-sum'))
  t.match(chunked, /transfer-encoding: chunked\r\ntrailer: x-sum\r\n/i)
  t.ok(chunked.endsWith('\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n'), 'the chunks and the trailer pass as they are')
  const eof = await exchange(port, 'GET /eof HTTP/1.1\r\nhost: x\r\n\r\n')
  t.match(eof, /connection: close\r\n\r\nuntil the end$/, 'a body that ends with the upstream\'s close: the client connection closes after it')
  const old = await exchange(port, 'GET /http10 HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.endsWith('old'))
  t.match(old, /^HTTP\/1\.1 200 OK\r\ncontent-length: 3\r\n\r\nold$/)
  const extra = await exchange(port, 'GET /extra HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.endsWith('ok'))
  t.notMatch(extra, /EXTRA/, 'bytes past the end of the answer are not relayed')
  const early = await exchange(port, 'GET /early HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.endsWith('ok'))
  t.match(early, /^HTTP\/1\.1 103 Early Hints\r\nlink: <\/a\.css>\r\n\r\nHTTP\/1\.1 200 OK/, '103 is relayed, an unasked-for 100 is not')
  // And through an HTTP client, which must see each as a valid message.
  t.equal((await http1(`${gw.url}/chunked`)).text, 'hello world')
  t.equal((await http1(`${gw.url}/eof`)).text, 'until the end')
})

t.test('broken answers: 502 before the head, a cut connection after it', async (t) => {
  const g = await startBackend(t, 'g')
  const up = await rawUpstream(t, (s, data) => {
    const path = data.split(' ')[1]
    if (path === '/101') s.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n')
    else if (path === '/bad-chunk') {
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n')
      setTimeout(() => s.write('zz\r\n'), 20)
    }
    else if (path === '/bad-first-chunk') s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n')
    else if (path === '/huge-head') s.write(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(17 * 1024)}`)
    else if (path === '/huge-whole-head') s.write(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(17 * 1024)}\r\ncontent-length: 2\r\n\r\nok`)
    else if (path === '/junk') s.write('SSH-2.0-OpenSSH\r\n\r\n')
    else if (path === '/close-early') s.end('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc')
    else if (path === '/silent') s.end()
  })
  const gw = await startGateway(t, oneService(up.url, g.url))
  for (const path of ['/101', '/huge-head', '/huge-whole-head', '/junk', '/bad-first-chunk']) {
    const r = await http1(`${gw.url}${path}`)
    t.equal(r.status, 502, path)
    t.equal(r.json.error, 'upstream_error', path)
  }
  const port = gw.gateway.address.port
  for (const path of ['/bad-chunk', '/close-early']) {
    const got = await exchange(port, `GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`)
    t.match(got, /^HTTP\/1\.1 200/, `${path}: the head went out`)
    t.notMatch(got, /502/, `${path}: then the connection was cut`)
  }
  const before = up.connections()
  const huge = await exchange(port, `GET /huge HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(17 * 1024)}\r\n\r\n`)
  t.match(huge, /^HTTP\/1\.1 431/, 'a request head over 16 KiB, even in one read, is refused by the gateway itself')
  t.equal(up.connections(), before)
  const silent = await http1(`${gw.url}/silent`, { method: 'POST', body: 'x' })
  t.equal(silent.status, 502, 'closed without an answer')
  const route = gw.gateway.controller.snapshots.current.services.get('svc')
  await eventually(() => { if (route?.colors.blue.stats.inflight !== 0) throw new Error('in flight') })
  t.equal(route?.colors.blue.targets.endpoints[0].target.inflight, 0)
})

t.test('a client that leaves mid-answer frees the upstream connection and the counts', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  let upstreamClosed = false
  b.handler = (_req, res) => {
    res.on('close', () => { upstreamClosed = true })
    res.writeHead(200, { 'content-length': '100' })
    res.write('partial')
  }
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const port = gw.gateway.address.port
  await exchange(port, 'GET /leave HTTP/1.1\r\nhost: x\r\n\r\n', (s) => s.includes('partial'))
  const route = gw.gateway.controller.snapshots.current.services.get('svc')
  await eventually(() => { if (!upstreamClosed || route?.colors.blue.stats.inflight !== 0) throw new Error('still open') })
  t.pass('upstream closed, nothing in flight')
  // And one that leaves before the answer.
  b.handler = undefined
  const early = net.connect(port, '127.0.0.1', () => early.write('GET /slow?ms=200 HTTP/1.1\r\nhost: x\r\n\r\n'))
  early.on('error', () => {})
  await eventually(() => { if (route?.colors.blue.stats.inflight !== 1) throw new Error('not yet in flight') })
  early.destroy()
  await eventually(() => { if (route?.colors.blue.stats.inflight !== 0) throw new Error('in flight') })
  t.pass('settled')
})

t.test('a slow reader holds the upstream back instead of the gateway buffering', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  // Far more than the socket buffers between the upstream and the client can hold
  // (see the bound below), so a gateway that read ahead would show it.
  const size = 128 * 1024 * 1024
  const chunk = Buffer.alloc(64 * 1024, 1)
  let written = 0
  b.handler = (_req, res) => {
    res.writeHead(200, { 'content-length': String(size) })
    const write = (): void => {
      while (written < size) {
        written += chunk.length
        if (!res.write(chunk)) return void res.once('drain', write)
      }
      res.end()
    }
    write()
  }
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write('GET /big HTTP/1.1\r\nhost: x\r\n\r\n'))
  t.teardown(() => s.destroy())
  let got = 0
  const headSeen = new Promise<void>((resolve) => s.once('data', (c: Buffer) => {
    got += c.length
    s.pause() // the client stops reading: nothing more is taken off its socket
    resolve()
  }))
  await headSeen
  const memBefore = process.memoryUsage().arrayBuffers
  // Wait until the upstream's writes stall (no progress for 300 ms), bounded.
  let last = -1
  let still = 0
  for (let i = 0; i < 200 && still < 6; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    still = written === last ? still + 1 : 0
    last = written
  }
  const stalledAt = written
  const memGrowth = process.memoryUsage().arrayBuffers - memBefore
  t.comment(`upstream stalled after ${(stalledAt / 1048576).toFixed(1)} MiB; gateway process buffers grew ${(memGrowth / 1048576).toFixed(1)} MiB`)
  t.equal(still, 6, 'the upstream\'s writes stalled while the client did not read')
  // What may sit in between: kernel socket buffers on both legs (loopback autotuning
  // stays far below tcp_rmem's max for a reader that does not read) and a few chunks in
  // the gateway. A gateway reading ahead would take all of it.
  t.ok(stalledAt < size / 4, `the upstream got only ${(stalledAt / 1048576).toFixed(1)} MiB of ${size / 1048576} MiB out`)
  t.ok(memGrowth < 8 * 1024 * 1024, `the gateway holds no more than a few chunks (${(memGrowth / 1048576).toFixed(1)} MiB)`)
  // Reading again, every byte arrives.
  const done = new Promise<void>((resolve) => {
    s.on('data', (c: Buffer) => {
      got += c.length
      if (got >= size) resolve()
    })
    s.on('close', () => resolve())
  })
  s.resume()
  await done
  t.ok(got > size, `all ${size / 1048576} MiB (and the head) arrived once the client read again`)
})

t.test('a graceful stop closes idle connections now and busy ones after their answer', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const port = gw.gateway.address.port
  const idle = net.connect(port, '127.0.0.1')
  const idleClosed = new Promise<void>((resolve) => idle.on('close', () => resolve()))
  idle.on('error', () => {})
  await new Promise((resolve) => idle.once('connect', resolve))
  const busy = exchange(port, 'GET /slow?ms=300 HTTP/1.1\r\nhost: x\r\n\r\n')
  await eventually(() => { if (b.seen.length === 0) throw new Error('not yet') })
  const stopped = gw.stop()
  await idleClosed
  t.pass('the idle connection closed')
  const answer = await busy
  t.match(answer, /^HTTP\/1\.1 200[^]*connection: close\r\n/, 'the busy one got its answer, marked as the last')
  await stopped
})
