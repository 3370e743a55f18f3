// HTTP/2 from clients (h2c with prior knowledge on the plain listener), on
// both engines: routing, headers, errors, gRPC refusals, counts, drains and stop.

import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import http2, { type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { h2Request, h2Session, type H2Reply } from './helpers/h2.js'
import { admin, eventually, serviceYaml, startBackend, startGateway, type Backend, type TestGateway } from './helpers/index.js'

/** One request that must end cleanly (see h2Request), its body also parsed when it is JSON. */
async function h2Json (session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}, body?: Buffer | string): Promise<H2Reply & { json: any }> {
  const r = await h2Request(session, path, headers, body)
  let json: unknown
  try {
    json = JSON.parse(r.body.toString())
  } catch {}
  return { ...r, json }
}

/** What a backend got from clients through the gateway (its health probes left out). */
function forwarded (b: Backend): Backend['seen'] {
  return b.seen
}

async function pair (t: Tap.Test, engine: string, extra = '', head = ''): Promise<{ b: Backend, g: Backend, gw: TestGateway }> {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `engine: ${engine}\n${head}services:\n${serviceYaml('svc', '/', [b], [g], extra)}`)
  return { b, g, gw }
}

for (const engine of ['fast', 'node']) {
  t.test(`${engine}: GET and POST over h2c go to the live color with the forwarding headers`, async (t) => {
    const { b, gw } = await pair(t, engine)
    const s = h2Session(t, gw.url)
    const get = await h2Json(s, '/hello?x=1', { 'x-request-id': 'req-h2', 'x-forwarded-for': '6.6.6.6' })
    t.equal(get.status, 200)
    t.match(get.json, { backend: 'blue', method: 'GET', path: '/hello?x=1' })
    t.equal(get.headers['x-backend'], 'blue')
    const seen = forwarded(b)[0].headers
    t.equal(seen['x-request-id'], 'req-h2', 'the client id passes')
    t.equal(seen['x-forwarded-for'], '127.0.0.1', 'an untrusted peer\'s X-Forwarded-For is replaced')
    t.equal(seen['x-forwarded-proto'], 'http')
    t.equal(seen.host, new URL(gw.url).host, 'Host from :authority')
    const payload = randomBytes(150 * 1024).toString('base64')
    const post = await h2Json(s, '/echo', { 'content-type': 'text/plain', cookie: 'a=1', 'Cookie': 'b=2' }, payload)
    t.equal(post.status, 200)
    t.equal(createHash('sha256').update(post.json.body as string).digest('hex'), createHash('sha256').update(payload).digest('hex'), 'the body arrived whole')
    const posted = forwarded(b)[1].headers
    t.match(posted['x-request-id'], /^[0-9a-f-]{36}$/, 'an id is made when the client sent none')
    t.equal(posted.cookie, 'a=1; b=2', 'cookie lines joined for HTTP/1.1')
    t.equal(posted.connection, 'keep-alive', 'nothing connection-specific of the client\'s (undici\'s own)')
  })

  t.test(`${engine}: X-Forwarded-* from a trusted peer are extended`, async (t) => {
    const { b, gw } = await pair(t, engine, '', 'trustedProxies: [127.0.0.1/32]\n')
    const s = h2Session(t, gw.url)
    t.equal((await h2Json(s, '/', { 'x-forwarded-for': '10.0.0.1', 'x-forwarded-proto': 'https' })).status, 200)
    t.equal(forwarded(b)[0].headers['x-forwarded-for'], '10.0.0.1, 127.0.0.1')
    t.equal(forwarded(b)[0].headers['x-forwarded-proto'], 'https')
  })

  t.test(`${engine}: a flip moves new streams; one opened before it finishes on the old color`, async (t) => {
    const { b, gw } = await pair(t, engine)
    const s = h2Session(t, gw.url)
    const slow = h2Json(s, '/slow?ms=800')
    await eventually(() => forwarded(b).length === 1)
    t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
    t.equal((await h2Json(s, '/fresh')).json.backend, 'green', 'same session, new stream: the new color')
    const r = await slow
    t.equal(r.status, 200)
    t.equal(r.json.backend, 'blue')
  })

  t.test(`${engine}: preview header and cookie, sticky Set-Cookie, the smoke pin`, async (t) => {
    const { gw } = await pair(t, engine, '    sticky: { cookie: sy }\n    preview: { header: x-color, cookie: preview }\n')
    const s = h2Session(t, gw.url)
    t.equal((await h2Json(s, '/p', { 'x-color': 'green' })).json.backend, 'green', 'preview header')
    t.equal((await h2Json(s, '/p', { cookie: 'preview=green' })).json.backend, 'green', 'preview cookie')
    t.equal((await h2Json(s, '/p', { cookie: ['a=1', 'preview=green'] })).json.backend, 'green', 'preview cookie on a second cookie line')
    const first = await h2Json(s, '/p')
    t.equal(first.json.backend, 'blue')
    t.same(first.headers['set-cookie'], ['sy=blue; Path=/; HttpOnly; SameSite=Lax'], 'the sticky cookie is set')
    t.equal((await h2Json(s, '/p', { cookie: 'sy=blue' })).headers['set-cookie'], undefined, 'not set again')
    const pin = `${gw.gateway.smoke.secret} green`
    t.equal((await h2Json(s, '/p', { 'x-switchyard-smoke': pin })).json.backend, 'green', 'the smoke pin picks its color')
  })

  t.test(`${engine}: refusals are JSON errors; a gRPC one is a trailers-only gRPC status`, async (t) => {
    const b = await startBackend(t, 'blue')
    const gw = await startGateway(t, `engine: ${engine}\ndefaults:\n  health: { interval: 100ms, timeout: 80ms, unhealthyThreshold: 1, healthyThreshold: 1 }\nservices:
  svc:
    match: { pathPrefix: /svc }
    blue: { targets: [${b.url}] }
  dead:
    match: { pathPrefix: /dead }
    blue: { targets: ['http://127.0.0.1:1'] }
`)
    const s = h2Session(t, gw.url)
    const none = await h2Json(s, '/nowhere')
    t.equal(none.status, 404)
    t.equal(none.headers['content-type'], 'application/json')
    t.match(none.json, { error: 'no_route' })
    await eventually(async () => (await h2Json(s, '/dead')).status === 503)
    const dead = await h2Json(s, '/dead')
    t.match(dead.json, { error: 'no_healthy_upstream' })
    const grpc = await h2Json(s, '/pkg.Service/Method', { 'content-type': 'application/grpc', te: 'trailers' }, Buffer.alloc(5))
    t.equal(grpc.status, 200)
    t.equal(grpc.headers['content-type'], 'application/grpc')
    t.equal(grpc.headers['grpc-status'], '12', 'no_route is UNIMPLEMENTED')
    t.match(grpc.headers['grpc-message'], /no route/)
    t.equal(grpc.body.length, 0)
    t.equal(grpc.trailers, undefined, 'trailers-only: one HEADERS frame')
    const connect2 = await new Promise<number>((resolve) => {
      const req = s.request({ ':method': 'CONNECT', ':authority': 'example.com:443' })
      req.on('response', (h) => resolve(Number(h[':status'])))
      req.on('error', () => resolve(-1))
    })
    t.equal(connect2, 400, 'CONNECT is refused')
  })

  t.test(`${engine}: counted in metrics and the access log`, async (t) => {
    const b = await startBackend(t, 'blue')
    const g = await startBackend(t, 'green')
    const gw = await startGateway(t, `engine: ${engine}\nlog: { access: logs/access.log }\nservices:\n${serviceYaml('svc', '/', [b], [g])}`)
    const s = h2Session(t, gw.url)
    for (let i = 0; i < 3; i++) t.equal((await h2Json(s, `/m${i}`, { 'x-request-id': `id-${i}` })).status, 200)
    t.equal((await h2Json(s, '/status/503')).status, 503)
    const metrics = (await admin(gw.adminUrl, 'GET', '/metrics')).text
    t.match(metrics, /switchyard_requests_total\{service="svc",color="blue",code="2xx"\} 3/)
    t.match(metrics, /switchyard_requests_total\{service="svc",color="blue",code="5xx"\} 1/)
    s.close()
    await gw.stop()
    const lines = readFileSync(join(gw.dir, 'logs', 'access.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
    t.equal(lines.length, 4)
    t.match(lines[0], { type: 'access', service: 'svc', color: 'blue', target: b.url, method: 'GET', path: '/m0', status: 200, requestId: 'id-0' })
    t.ok(lines[0].bytes > 0 && lines[0].upstream > 0, 'bytes and upstream time')
    t.match(lines[3], { path: '/status/503', status: 503 })
  })

  t.test(`${engine}: graceful stop sends GOAWAY and lets an open stream finish`, async (t) => {
    const { b, gw } = await pair(t, engine)
    const s = h2Session(t, gw.url)
    const goaway = new Promise<number>((resolve) => s.once('goaway', (code: number) => resolve(code)))
    const slow = h2Json(s, '/slow?ms=600')
    await eventually(() => forwarded(b).length === 1)
    const stopped = gw.stop()
    t.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR, 'GOAWAY, no error')
    const r = await slow
    t.equal(r.status, 200, 'the open stream finished')
    t.equal(r.json.backend, 'blue')
    await stopped
  })

  t.test(`${engine}: a stream still open at the drain deadline is reset`, async (t) => {
    const { b, gw } = await pair(t, engine, '    drain: { timeout: 1m }\n')
    const s = h2Session(t, gw.url)
    const slow = h2Json(s, '/slow?ms=10000').catch((e: Error) => e)
    await eventually(() => forwarded(b).length === 1)
    t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
    const r = await admin(gw.adminUrl, 'POST', '/v1/services/svc/drain', { color: 'blue', wait: true, timeout: '200ms' })
    t.match(r.json, { state: 'idle', how: 'timeout', closedRequests: 1 })
    const cut = await slow
    t.type(cut, Error)
    t.match((cut as Error).message, `code ${http2.constants.NGHTTP2_CANCEL}`, 'RST_STREAM CANCEL')
    t.equal((await h2Json(s, '/after')).json.backend, 'green', 'the session itself lives on')
  })

  t.test(`${engine}: response fields filtered for HTTP/2, trailers relayed, HEAD and 204 end cleanly`, async (t) => {
    const { b, gw } = await pair(t, engine)
    b.handler = (req, res) => {
      if (req.url === '/trailers') {
        res.writeHead(200, { 'content-type': 'text/plain', connection: 'x-hop', 'x-hop': 'drop me', 'keep-alive': 'timeout=5', trailer: 'x-checksum', 'x-kept': 'yes' })
        res.write('part one, ')
        res.addTrailers({ 'x-checksum': 'abc123' })
        res.end('part two')
        return
      }
      if (req.url === '/empty') return void res.writeHead(204, { 'x-kept': 'yes' }).end()
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' })
      res.end(req.method === 'HEAD' ? undefined : 'hello')
    }
    const s = h2Session(t, gw.url)
    const r = await h2Json(s, '/trailers')
    t.equal(r.status, 200)
    t.equal(r.body.toString(), 'part one, part two')
    t.equal(r.headers['x-kept'], 'yes')
    for (const name of ['connection', 'x-hop', 'keep-alive', 'transfer-encoding']) t.equal(r.headers[name], undefined, `no ${name}`)
    t.equal(r.trailers?.['x-checksum'], 'abc123', 'the trailer arrives as HTTP/2 trailers')
    const head = await h2Json(s, '/h', { ':method': 'HEAD' })
    t.equal(head.status, 200)
    t.equal(head.headers['content-length'], '5')
    t.equal(head.body.length, 0)
    const empty = await h2Json(s, '/empty')
    t.equal(empty.status, 204)
    t.equal(empty.headers['x-kept'], 'yes')
    const big = await h2Json(s, '/big')
    t.equal(big.body.toString(), 'hello', 'the session still serves')
  })

  t.test(`${engine}: an upstream that breaks its answer resets the stream and counts as an error`, async (t) => {
    const { b, gw } = await pair(t, engine)
    b.handler = (req, res) => {
      res.writeHead(200, { 'content-length': '1000' })
      res.write('only part')
      setTimeout(() => res.socket?.destroy(), 20)
    }
    const s = h2Session(t, gw.url)
    const cut = await h2Json(s, '/x').catch((e: Error) => e)
    t.type(cut, Error)
    t.match((cut as Error).message, /NGHTTP2_INTERNAL_ERROR/, 'RST_STREAM INTERNAL_ERROR, not a clean end')
    const blue = gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.stats
    await eventually(() => blue?.inflight === 0)
    t.equal(blue?.errors, 1, 'an error for the guard')
    t.equal(blue?.upstreamErrors.reset, 1)
  })

  t.test(`${engine}: a request body that stops coming gets 408 after client.bodyTimeout`, async (t) => {
    const { b, gw } = await pair(t, engine, '', 'client: { bodyTimeout: 300ms }\n')
    const s = h2Session(t, gw.url)
    const started = Date.now()
    const r = await new Promise<{ status: number, json: any }>((resolve, reject) => {
      const req = s.request({ ':path': '/upload', ':method': 'POST', 'content-type': 'text/plain' }, { endStream: false })
      req.write('a first part')
      let status = 0
      let text = ''
      req.on('response', (h) => { status = Number(h[':status']) })
      req.on('data', (c: Buffer) => { text += c.toString() })
      req.on('close', () => { try { resolve({ status, json: JSON.parse(text) }) } catch (err) { reject(err instanceof Error ? err : new Error(String(err))) } })
      req.on('error', () => {})
    })
    t.equal(r.status, 408)
    t.match(r.json, { error: 'request_timeout' })
    t.ok(Date.now() - started >= 250, 'after the deadline')
    await eventually(() => forwarded(b).length === 1)
  })

  t.test(`${engine}: an idle session is closed after client.idleTimeout; a head too big for the upstream is 431; Expect gets its 100`, async (t) => {
    const { b, gw } = await pair(t, engine, '', 'client: { idleTimeout: 400ms }\n')
    const s = h2Session(t, gw.url)
    const big = await h2Json(s, '/big', { 'x-big': 'v'.repeat(16 * 1024) })
    t.equal(big.status, 431)
    t.match(big.json, { error: 'header_too_large' })
    t.equal(forwarded(b).length, 0, 'nothing went upstream')
    const continued = await new Promise<{ saw100: boolean, reply: string }>((resolve, reject) => {
      const req = s.request({ ':path': '/expect', ':method': 'POST', expect: '100-continue' }, { endStream: false })
      let saw100 = false
      let reply = ''
      req.on('continue', () => {
        saw100 = true
        req.end('after the 100')
      })
      req.on('data', (c: Buffer) => { reply += c.toString() })
      req.on('end', () => resolve({ saw100, reply }))
      req.on('error', reject)
    })
    t.ok(continued.saw100, 'the gateway sent 100 Continue')
    t.equal(JSON.parse(continued.reply).body, 'after the 100')
    t.equal(forwarded(b)[0].headers.expect, undefined, 'Expect is not forwarded')
    const closed = new Promise<void>((resolve) => s.once('close', resolve))
    const started = Date.now()
    await closed
    t.ok(Date.now() - started >= 300, 'closed once idle for client.idleTimeout')
  })

  t.test(`${engine}: a GET whose target refuses the connection is retried on another target`, async (t) => {
    const b = await startBackend(t, 'blue')
    // No probes: one would find port 1 down first (under load, before the requests) and leave nothing to retry.
    const gw = await startGateway(t, `engine: ${engine}\nservices:
  svc:
    match: { pathPrefix: / }
    blue: { targets: ['http://127.0.0.1:1', ${b.url}] }
`)
    const s = h2Session(t, gw.url)
    for (let i = 0; i < 4; i++) t.equal((await h2Json(s, `/r${i}`)).status, 200, `request ${i} answered`)
    t.equal(forwarded(b).length, 4, 'every one by the live target')
    const blue = gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.stats
    const targets = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments.blue.targets
    t.ok((blue?.upstreamErrors.connect_failed ?? 0) >= 1, `the refused connections were counted (${JSON.stringify(blue?.upstreamErrors)} ${JSON.stringify(targets)})`)
  })

  t.test(`${engine}: a client that takes none of its answer is reset after client.idleTimeout, not blamed on the upstream`, async (t) => {
    const { b, gw } = await pair(t, engine, '', 'client: { idleTimeout: 300ms }\n')
    b.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const chunk = Buffer.alloc(64 * 1024)
      const more = (): void => { while (res.write(chunk)); }
      res.on('drain', more)
      more()
    }
    const s = h2Session(t, gw.url)
    const closed = await new Promise<number>((resolve) => {
      const req = s.request({ ':path': '/huge' })
      req.on('response', () => req.pause())
      req.on('error', () => {})
      req.on('close', () => resolve(req.rstCode))
    })
    t.equal(closed, http2.constants.NGHTTP2_CANCEL, 'RST_STREAM CANCEL')
    const blue = gw.gateway.controller.snapshots.current.services.get('svc')?.colors.blue.stats
    await eventually(() => blue?.inflight === 0)
    t.equal(blue?.errors, 0, 'not an error for the guard')
  })

  t.test(`${engine}: 200 concurrent streams on one session`, async (t) => {
    const { b, gw } = await pair(t, engine)
    const s = h2Session(t, gw.url)
    const replies = await Promise.all(Array.from({ length: 200 }, async (_, i) => await h2Json(s, `/c/${i}`, {}, i % 2 === 0 ? undefined : `body-${i}`)))
    replies.forEach((r, i) => {
      if (r.status !== 200 || r.json.path !== `/c/${i}` || r.json.body !== (i % 2 === 0 ? '' : `body-${i}`)) t.fail(`stream ${i}: ${r.status} ${r.body.toString()}`)
    })
    t.equal(replies.filter((r) => r.status === 200).length, 200)
    t.equal(forwarded(b).length, 200)
  })
}
