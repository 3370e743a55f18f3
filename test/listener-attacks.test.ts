// Attacks on the public listener found in review, on both engines and on
// what the fast engine hands to node:http: each test fails on the code before
// its fix. Raw sockets where the bytes matter; loopback only, bounded.

import t from 'tap'
import net from 'node:net'
import { eventually, refusedUrl, startBackend, startGateway, type TestGateway } from './helpers/index.js'
import { exchange } from './helpers/raw.js'
import type { LocalListener } from '../src/listen/local.js'

const ENGINES = ['fast', 'node'] as const

/** The server side of every connection the public listener accepts, in order. */
function serverSockets (gw: TestGateway): net.Socket[] {
  const sockets: net.Socket[] = []
  ;((gw.gateway.listener as LocalListener).server as net.Server).on('connection', (s: net.Socket) => sockets.push(s))
  return sockets
}

for (const engine of ENGINES) {
  t.test(`${engine}: a client that pipelines requests and never reads cannot make the gateway buffer their answers`, async (t) => {
    const b = await startBackend(t, 'b')
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n  svc:\n    match: { pathPrefix: /api }\n    blue: { targets: [${b.url}] }\n    green: { targets: [${b.url}] }\n`)
    const accepted = serverSockets(gw)
    const N = 40000
    // Each is answered by the gateway itself (404 no_route), about five times the bytes of the request.
    const one = 'GET /nope HTTP/1.1\r\nhost: x\r\n\r\n'
    const s = net.connect(gw.gateway.address.port, '127.0.0.1')
    s.on('error', () => {})
    t.teardown(() => { s.destroy() })
    s.pause()
    await new Promise((resolve) => s.once('connect', resolve))
    for (let i = 0; i < N / 1000; i++) s.write(one.repeat(1000))
    await eventually(() => accepted.length === 1 && accepted[0].writableLength > 0)
    const server = accepted[0]
    // A second of the gateway reading what it can: what it holds for the client must stay small.
    let most = 0
    const until = Date.now() + 1000
    while (Date.now() < until) {
      most = Math.max(most, server.writableLength)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    t.ok(most < 256 * 1024, `answers buffered for a client that does not read stay under 256 KiB (most: ${most} bytes)`)
    // Once the client reads, every request is answered, in order.
    let got = ''
    s.on('data', (c: Buffer) => { got += c.toString('latin1') })
    s.resume()
    await eventually(() => got.split('HTTP/1.1 404 ').length - 1 === N, { timeout: 15000 })
    t.pass(`all ${N} answered once the client read`)
  })
}

/** The blue target of the one service, by URL. */
function blueTarget (gw: TestGateway, url: string): any {
  return gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.targets.endpoints.find((e: any) => e.target.url === url)?.target
}

/** One raw request on its own connection; resolves with what came back once the connection closes (or after 5 s). */
async function oneShot (port: number, text: string): Promise<string> {
  return await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text))
    let got = ''
    const timer = setTimeout(() => s.destroy(), 5000)
    s.on('data', (c: Buffer) => { got += c.toString('latin1') })
    s.on('error', () => {})
    s.on('close', () => { clearTimeout(timer); resolve(got) })
  })
}

// README: a request that finds maxConnections busy waits up to timeouts.connect, then 503 upstream_overloaded.
// undici's pool queued it without a deadline on the node:http side.
for (const [engine, version] of [['node', '1.1'], ['fast', '1.0']] as const) {
  t.test(`${engine} engine, HTTP/${version}: at maxConnections a request waits timeouts.connect, then gets 503 upstream_overloaded`, async (t) => {
    const b = await startBackend(t, 'b')
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${b.url}] }\n    green: { targets: [${b.url}] }\n    limits: { maxConnections: 1 }\n    timeouts: { connect: 300ms }\n    passive: { consecutiveFailures: 1 }\n`)
    const port = gw.gateway.address.port
    const ask = async (path: string): Promise<{ text: string, ms: number }> => {
      const began = Date.now()
      const text = await oneShot(port, `GET ${path} HTTP/${version}\r\nhost: x\r\nconnection: close\r\n\r\n`)
      return { text, ms: Date.now() - began }
    }
    const busy = ask('/slow?ms=2000')
    await eventually(() => b.seen.length === 1)
    const waiting = await ask('/slow?ms=10')
    t.match(waiting.text, /^HTTP\/1\.1 503 [^]*"error":"upstream_overloaded"/, 'the second request gets 503 upstream_overloaded')
    t.ok(waiting.ms >= 250 && waiting.ms < 1500, `after about timeouts.connect (${waiting.ms} ms), not after the busy request`)
    t.match((await busy).text, /^HTTP\/1\.1 200 /, 'the busy request is answered')
    t.match((await ask('/after')).text, /^HTTP\/1\.1 200 /, 'the connection serves the next request')
    t.same(b.seen.map((r) => r.url), ['/slow?ms=2000', '/after'], 'the refused request never reached the upstream, even once a connection was free')
    t.equal(blueTarget(gw, b.url).ejected, false, 'the busy target is not blamed')
    t.equal(gw.gateway.registry.colorStats('svc', 'blue').errors, 1, 'the 503 counts for the guard')
    await eventually(() => blueTarget(gw, b.url).inflight === 0)
  })
}

// A client listing X-Forwarded-For in Connection made the upstream drop the gateway's own
// X-Forwarded-For as hop-by-hop (its Connection was forwarded as sent on WebSocket handshakes):
// the upstream then saw the gateway as the client.
for (const engine of ENGINES) {
  t.test(`${engine}: a WebSocket handshake reaches the upstream with Connection: Upgrade only, never the client's list`, async (t) => {
    let seen = ''
    const server = net.createServer((socket) => {
      socket.on('error', () => {})
      socket.once('data', (d) => {
        seen = d.toString('latin1')
        socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n')
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => { server.close() })
    const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${url}] }\n    green: { targets: [${url}] }\n    passive: false\n`)
    const got = await oneShot(gw.gateway.address.port, 'GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade, X-Forwarded-For, X-Request-Id, Authorization\r\n' +
      'authorization: Bearer x\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
    t.match(got, /^HTTP\/1\.1 403 /, 'the upstream answer is relayed')
    const lines = seen.split('\r\n').map((l) => l.toLowerCase())
    t.same(lines.filter((l) => l.startsWith('connection:')), ['connection: upgrade'], 'one Connection line, naming only upgrade')
    t.equal(lines.filter((l) => l.startsWith('x-forwarded-for: 127.0.0.1')).length, 1, "the gateway's X-Forwarded-For is there")
    t.equal(lines.filter((l) => l.startsWith('authorization:')).length, 0, 'a header the client named in Connection is hop-by-hop: dropped here')
  })
}

// The fast engine retried such a request without blaming the target; the node:http side
// counted it toward ejection, so one keep-alive race ejected a healthy target there.
for (const [engine, version] of [['fast', '1.1'], ['node', '1.1'], ['fast', '1.0']] as const) {
  t.test(`${engine} engine, HTTP/${version}: a kept-alive connection the upstream closes as it is reused does not count against the target`, async (t) => {
    const server = net.createServer((socket) => {
      let n = 0
      socket.on('error', () => {})
      socket.on('data', (d) => {
        if (d.toString('latin1').includes('/healthz')) return void socket.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n')
        // Each connection answers once, then closes when asked again (the keep-alive race, every time).
        if (++n === 1) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
        else socket.destroy()
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => { server.close() })
    const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${url}] }\n    green: { targets: [${url}] }\n    passive: { consecutiveFailures: 1 }\n`)
    const s = net.connect(gw.gateway.address.port, '127.0.0.1')
    s.on('error', () => {})
    t.teardown(() => { s.destroy() })
    let got = ''
    s.on('data', (c: Buffer) => { got += c.toString('latin1') })
    // One client connection, requests one after another: the gateway reuses its upstream connection each time.
    for (let i = 1; i <= 4; i++) {
      s.write(`GET /r${i} HTTP/${version}\r\nhost: x\r\n${version === '1.0' ? 'connection: keep-alive\r\n' : ''}\r\n`)
      await eventually(() => got.split('HTTP/1.1 ').length - 1 === i)
    }
    const statuses = [...got.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1])
    t.equal(blueTarget(gw, url).ejected, false, 'the target is not ejected (one failure counted would eject it)')
    t.equal(blueTarget(gw, url).healthy, true, 'and still takes requests')
    if (engine === 'fast' && version === '1.1') {
      t.same(statuses, ['200', '200', '200', '200'], 'every request is answered (retried on a new connection)')
    } else {
      // undici retries on whichever pooled connection is free, which here may be another closing one: a 502 then.
      t.ok(statuses.every((s) => s === '200' || s === '502'), `answered 200, or 502 when the retry met another closing connection (${statuses.join(', ')})`)
    }
  })
}

// README: a request head must be whole client.headerTimeout after its first byte, else 408 and the
// connection closes. The fast engine checked it only when more bytes came (a quiet client waited
// out client.idleTimeout instead) and closed without the 408.
for (const engine of ENGINES) {
  // (node:http's own trickle check is its connectionsCheckingInterval, tested in node-engine-faults.)
  for (const trickle of engine === 'fast' ? [false, true] : [false]) {
    t.test(`${engine}: a head ${trickle ? 'trickling in' : 'that stops coming'} gets 408 after client.headerTimeout`, async (t) => {
      const b = await startBackend(t, 'b')
      const gw = await startGateway(t, `engine: ${engine}\nclient: { headerTimeout: 300ms, idleTimeout: 10s }\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${b.url}] }\n    green: { targets: [${b.url}] }\n`)
      const started = Date.now()
      const got = await new Promise<string>((resolve) => {
        const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write(trickle ? 'GET / HTTP/1.1\r\nx-pad: ' : 'GET / HTTP/1.1\r\n'))
        let text = ''
        const drip = trickle ? setInterval(() => s.write('x'), 50) : undefined
        const timer = setTimeout(() => s.destroy(), 5000)
        s.on('data', (c: Buffer) => { text += c.toString('latin1') })
        s.on('error', () => {})
        s.on('close', () => { clearInterval(drip); clearTimeout(timer); resolve(text) })
      })
      const ms = Date.now() - started
      t.match(got, /^HTTP\/1\.1 408 [^]*"error":"request_timeout"/, 'a 408 request_timeout, then the close')
      t.ok(ms >= 250 && ms < 2500, `after ${ms} ms`)
      t.equal(b.seen.length, 0, 'nothing reached the upstream')
    })
  }
}

/** A masked WebSocket text frame, as a client sends it. */
function wsText (text: string): Buffer {
  const payload = Buffer.from(text)
  const mask = Buffer.from([1, 2, 3, 4])
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4])])
}

// node:http emits 'upgrade' as soon as it parses the handshake, even behind a request still being
// answered: the 101 went out first and that answer was written into the tunnel after it.
const WS_HANDSHAKE = 'GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n'
for (const [engine, first] of [
  ['node', 'GET /slow?ms=300 HTTP/1.1\r\nhost: x\r\n\r\n'],
  ['fast', 'POST /slow?ms=300 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n'],
] as const) {
  t.test(`${engine}: a WebSocket handshake pipelined behind a request is answered after it, never inside its answer`, async (t) => {
    const b = await startBackend(t, 'b')
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${b.url}] }\n    green: { targets: [${b.url}] }\n`)
    const got = await new Promise<string>((resolve) => {
      const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write(first + WS_HANDSHAKE))
      let text = ''
      let sent = false
      const timer = setTimeout(() => s.destroy(), 4000)
      s.on('data', (c: Buffer) => {
        text += c.toString('latin1')
        if (!sent && /HTTP\/1\.1 101 [^]*\r\n\r\n/.test(text)) {
          sent = true
          s.write(wsText('hi'))
        }
        if (text.includes('b: hi')) s.destroy()
      })
      s.on('error', () => {})
      s.on('close', () => { clearTimeout(timer); resolve(text) })
    })
    const answer = got.indexOf('HTTP/1.1 200 ')
    const upgrade = got.indexOf('HTTP/1.1 101 ')
    t.ok(answer === 0, 'the first answer comes first')
    t.ok(answer === 0 && upgrade > answer && got.lastIndexOf('"path":"/slow?ms=300"') < upgrade, 'the 101 follows the whole first answer')
    // eslint-disable-next-line no-control-regex -- \x81\x05 is the head of the WebSocket frame expected
    t.match(got.slice(upgrade), /^HTTP\/1\.1 101 [^]*\r\n\r\n\x81\x05b: hi$/, 'then the tunnel carries only WebSocket frames')
  })
}

// A 103 is advisory. node:http refuses to write some Link values (writeEarlyHints throws), and the
// node:http side then failed the whole exchange with 502, against the target; the fast engine relays it.
for (const engine of ENGINES) {
  t.test(`${engine}: a 103 the gateway cannot pass on never costs the final answer`, async (t) => {
    const hints = ['link: nonsense', 'link: ', 'x-hint: 1']
    let n = 0
    const server = net.createServer((socket) => {
      socket.on('error', () => {})
      socket.on('data', (d) => {
        if (d.toString('latin1').includes('/healthz')) return void socket.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n')
        socket.write(`HTTP/1.1 103 Early Hints\r\n${hints[n++ % hints.length]}\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok`)
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => { server.close() })
    const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${url}] }\n    green: { targets: [${url}] }\n    passive: { consecutiveFailures: 1 }\n`)
    for (const hint of hints) {
      const got = await oneShot(gw.gateway.address.port, 'GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
      t.match(got, /HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/, `${hint}: the final answer arrives whole`)
    }
    t.equal(blueTarget(gw, url).ejected, false, 'the target is not blamed')
    t.equal(gw.gateway.registry.colorStats('svc', 'blue').errors, 0, 'no request failed')
  })
}

// A client that asks for a large answer and reads none of it held its upstream connection
// forever on both engines (nothing timed the wait for it): a few hundred such clients fill
// limits.maxConnections and every other request gets 503. client.idleTimeout now bounds it.
for (const [engine, version] of [['fast', '1.1'], ['node', '1.1'], ['fast', '1.0']] as const) {
  t.test(`${engine} engine, HTTP/${version}: a client that stops reading its answer is cut after client.idleTimeout, freeing the upstream`, async (t) => {
    // An answer far larger than every buffer between (1 GiB announced), written as fast as it is taken.
    const chunk = Buffer.alloc(64 * 1024, 'a')
    let upstreamOpen = 0
    let served = 0
    const server = net.createServer((socket) => {
      socket.on('error', () => {})
      socket.once('data', (d) => {
        if (d.toString('latin1').includes('/healthz')) return void socket.end('HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
        served++
        upstreamOpen++
        socket.on('close', () => { upstreamOpen-- })
        socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${1024 * 1024 * 1024}\r\n\r\n`)
        const pump = (): void => {
          while (!socket.destroyed && socket.write(chunk)) { /* write until the socket buffers */ }
        }
        socket.on('drain', pump)
        pump()
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => { server.close() })
    const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
    const gw = await startGateway(t, `engine: ${engine}\nclient: { idleTimeout: 400ms }\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${url}] }\n    green: { targets: [${url}] }\n    passive: { consecutiveFailures: 1 }\n`)
    const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write(`GET /big HTTP/${version}\r\nhost: x\r\n\r\n`))
    s.on('error', () => {})
    t.teardown(() => { s.destroy() })
    s.pause()
    const began = Date.now()
    const closed = new Promise<number>((resolve) => s.on('close', () => resolve(Date.now() - began)))
    await eventually(() => served === 1)
    // The client reads nothing: once the buffers between are full, nothing moves.
    await eventually(() => upstreamOpen === 0, { timeout: 6000 })
    t.pass('the upstream connection was closed')
    s.resume()
    const ms = await closed
    t.ok(ms < 6000, `and the client connection was cut (${ms} ms)`)
    t.equal(blueTarget(gw, url).ejected, false, 'the target is not blamed')
    await eventually(() => blueTarget(gw, url).inflight === 0)
  })
}

// A HEAD answer has no body (RFC 9110 9.3.2). The fast engine's own error answers to HEAD carried
// their JSON body, which a client reads as the start of the next answer: a response desync.
for (const engine of ENGINES) {
  t.test(`${engine}: the gateway's own answers to HEAD carry no body`, async (t) => {
    const deadUrl = await refusedUrl()
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n  svc:\n    match: { pathPrefix: /api }\n    blue: { targets: [${deadUrl}] }\n    green: { targets: [${deadUrl}] }\n    passive: false\n`)
    for (const path of ['/nope', '/api/x']) {
      const got = await new Promise<string>((resolve) => {
        const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write(`HEAD ${path} HTTP/1.1\r\nhost: x\r\n\r\nGET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`))
        let text = ''
        const timer = setTimeout(() => s.destroy(), 4000)
        s.on('data', (c: Buffer) => { text += c.toString('latin1') })
        s.on('error', () => {})
        s.on('close', () => { clearTimeout(timer); resolve(text) })
      })
      const end = got.indexOf('\r\n\r\n')
      t.match(got.slice(0, end), /^HTTP\/1\.1 (404|502) /, `HEAD ${path}: a coded answer`)
      t.match(got.slice(end + 4), /^HTTP\/1\.1 (404|502) [^]*\r\n\r\n\{"error"/, `HEAD ${path}: no body after its head; the next answer follows at once, with its body`)
    }
  })
}

// RFC 9112 3.2: an HTTP/1.1 request without Host gets 400. The fast engine hands such a head over to
// node:http, whose own check answered a bare 400 (no JSON, no reason) and closed the connection.
for (const engine of ENGINES) {
  t.test(`${engine}: an HTTP/1.1 request without Host is refused in JSON; the connection goes on; HTTP/1.0 needs none`, async (t) => {
    const b = await startBackend(t, 'b')
    const gw = await startGateway(t, `engine: ${engine}\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${b.url}] }\n    green: { targets: [${b.url}] }\n`)
    const port = gw.gateway.address.port
    const pipelined = 'GET /before HTTP/1.1\r\nhost: x\r\n\r\nPOST /nohost HTTP/1.1\r\ncontent-length: 5\r\n\r\nABCDEGET /after HTTP/1.1\r\nhost: x\r\n\r\n'
    // Status lines only: the refusal's message names HTTP/1.1 too.
    const statusLine = /(?=HTTP\/1\.1 \d{3} )/
    const got = await exchange(port, pipelined, (text) => text.split(statusLine).length > 3 || text.includes('"path":"/after"'))
    const answers = got.split(statusLine)
    t.equal(answers.length, 3, 'three answers, in order')
    t.match(answers[0], /^HTTP\/1\.1 200 /, 'the request before it is forwarded')
    t.match(answers[1], /^HTTP\/1\.1 400 [^]*"error":"bad_request"[^]*Host header/, 'the one without Host: 400 bad_request, naming what is missing')
    t.match(answers[2], /^HTTP\/1\.1 200 [^]*"path":"\/after"/, 'the request after it, on the same connection, is forwarded')
    t.same(b.seen.map((r) => r.url), ['/before', '/after'], 'the upstream never sees the one without Host')

    const old = await exchange(port, 'GET /old HTTP/1.0\r\n\r\n', (text) => text.includes('"path":"/old"'))
    t.match(old, /^HTTP\/1\.1 200 /, 'HTTP/1.0 without Host is forwarded')

    const ws = await exchange(port, WS_HANDSHAKE.replace('host: x\r\n', ''), (text) => text.includes('\r\n\r\n{'))
    t.match(ws, /^HTTP\/1\.1 400 [^]*"error":"bad_request"[^]*Host header/, 'a WebSocket handshake without Host: 400 bad_request')
    t.notOk(b.seen.some((r) => r.url === '/ws'), 'and no tunnel to the upstream')
  })
}
