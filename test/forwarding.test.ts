import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { request } from 'undici'
import { http1, serviceYaml, startBackend, startGateway } from './helpers/index.js'

t.test('hop-by-hop headers are stripped both ways; X-Forwarded-* set', async (t) => {
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
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
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
})

t.test('request and response bodies stream through, large and chunked', async (t) => {
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
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
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
})

t.test('status codes and HEAD pass through', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  for (const code of [201, 204, 301, 404, 500, 503]) {
    const r = await http1(`${gw.url}/status/${code}`)
    t.equal(r.status, code, `status ${code}`)
  }
  const head = await http1(`${gw.url}/x`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.text, '')
})

/** A port with nothing listening on it. */
async function deadPort (): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

t.test('connect failure: 502, and idempotent requests retry once on another target', async (t) => {
  const b = await startBackend(t, 'live')
  const g = await startBackend(t, 'g')
  const dead = `http://127.0.0.1:${await deadPort()}`
  const gw = await startGateway(t, `services:
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
})

t.test('response timeout: 504 upstream_timeout', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:
${serviceYaml('svc', '/', [b], [g], '    timeouts: { response: 300ms }\n')}`)
  const started = Date.now()
  const r = await http1(`${gw.url}/slow?ms=3000`)
  t.equal(r.status, 504)
  t.same(r.json, { error: 'upstream_timeout', message: 'the upstream did not answer in time' })
  t.ok(Date.now() - started < 2500, 'answered near the deadline, not after the upstream')
  t.equal((await http1(`${gw.url}/slow?ms=10`)).status, 200, 'a fast answer is fine')
})

t.test('an upstream reset mid-body truncates the client response', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  b.handler = (_req, res) => {
    res.writeHead(200, { 'content-length': '1000' })
    res.write('partial')
    setTimeout(() => res.socket?.destroy(), 20)
  }
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const res = await request(`${gw.url}/x`)
  t.equal(res.statusCode, 200)
  await t.rejects(res.body.text(), 'the client sees the truncation as an error')
  // Counters settle back to zero.
  const route = gw.gateway.controller.snapshots.current.services.get('svc')
  t.equal(route?.colors.blue.stats.inflight, 0)
})

t.test('malformed requests get a 400 from the gateway itself', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const reply = await new Promise<string>((resolve) => {
    const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write('NOT HTTP AT ALL\r\n\r\n'))
    let text = ''
    s.on('data', (c) => { text += String(c) })
    s.on('close', () => resolve(text))
  })
  t.match(reply, /^HTTP\/1\.1 400/)
  t.equal(b.seen.length, 0)
})

t.test('a response undici cannot parse becomes 502 upstream_error', async (t) => {
  const bad = net.createServer((c) => { c.once('data', () => c.end('HTTP/1.1 099 Weird\r\ncontent-length: 2\r\n\r\nok')) })
  await new Promise<void>((resolve) => bad.listen(0, '127.0.0.1', resolve))
  t.teardown(() => bad.close())
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [http://127.0.0.1:${(bad.address() as net.AddressInfo).port}] }
    green: { targets: [${g.url}] }
`)
  const r = await http1(`${gw.url}/x`, { method: 'POST', body: 'x' })
  t.equal(r.status, 502)
  t.equal(r.json.error, 'upstream_error')
})

t.test('only origin-form request targets are forwarded; gateway headers never leave', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
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
})

t.test('103 Early Hints reach the client; the final answer follows', async (t) => {
  const b = await startBackend(t, 'b')
  const g = await startBackend(t, 'g')
  b.handler = (_req, res) => {
    res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
    setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('done'), 20)
  }
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
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
})
