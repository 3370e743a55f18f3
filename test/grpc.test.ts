// Services with protocol h2c through the whole gateway, for HTTP/1.1 clients
// (on both engines), gRPC health probes, and the config and reload rules of
// `protocol` and `health.grpc`. (gRPC clients over HTTP/2: grpc-e2e.test.ts.)

import t from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import net, { type AddressInfo } from 'node:net'
import { writeFileSync } from 'node:fs'
import { parseConfig } from '../src/config/load.js'
import { diffConfigs } from '../src/control/reload-diff.js'
import { decodeHealthCheckResponse, encodeHealthCheckRequest, GrpcProbeSessions, ServingStatus } from '../src/health/grpc-health.js'
import { startEchoServer } from './helpers/grpc.js'
import { admin, eventually, http1, refusedUrl, startGateway } from './helpers/index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/** A plain REST server over h2c (prior knowledge): echoes what it got, with a trailer. */
async function startH2Rest (t: Teardown, name: string): Promise<{ url: string, seen: http2.IncomingHttpHeaders[], resets: string[], readonly ended: number }> {
  const seen: http2.IncomingHttpHeaders[] = []
  /** Streams that ended in an error on the server's side. */
  const resets: string[] = []
  /** Request bodies that ended (END_STREAM). */
  const ended = { count: 0 }
  const server = http2.createServer()
  server.on('stream', (stream, headers) => {
    seen.push(headers)
    stream.on('error', (err: Error & { code?: string }) => { resets.push(err.message) })
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      ended.count++
      stream.respond({ ':status': 200, 'content-type': 'application/json', 'x-backend': name }, { waitForTrailers: true })
      stream.once('wantTrailers', () => stream.sendTrailers({ 'x-checksum': String(Buffer.concat(chunks).length) }))
      stream.end(JSON.stringify({ backend: name, method: headers[':method'], path: headers[':path'], body: Buffer.concat(chunks).toString() }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, resets, get ended () { return ended.count } }
}

function h2Yaml (engine: string, blue: string, green: string, extra = '', prefix = '/api'): string {
  return `engine: ${engine}
services:
  api:
    protocol: h2c
    match: { pathPrefix: ${prefix} }
    blue: { targets: [${blue}] }
    green: { targets: [${green}] }
${extra}`
}

/** An HTTP/1.1 request with a raw node client: status, headers, body and trailers. */
async function h1 (url: string, opts: { method?: string, headers?: Record<string, string>, body?: Buffer | string } = {}): Promise<{ status: number, headers: http.IncomingHttpHeaders, body: Buffer, trailers: NodeJS.Dict<string> }> {
  return await new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers }))
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

for (const engine of ['fast', 'node']) {
  t.test(`${engine} engine: an HTTP/1.1 client reaches an h2c REST service, body and trailers both ways, and a flip moves it`, async (t) => {
    const blue = await startH2Rest(t, 'blue')
    const green = await startH2Rest(t, 'green')
    const gw = await startGateway(t, h2Yaml(engine, blue.url, green.url))
    // HTTP2-Settings (h2c's upgrade header) is connection-specific: HTTP/2 refuses to carry it, so it is dropped.
    const get = await h1(`${gw.url}/api/items?x=1`, { headers: { 'x-request-id': 'rid-1', te: 'trailers', 'http2-settings': 'AAMAAABkAARAAAAAAAIAAAAA' } })
    t.equal(get.status, 200)
    t.same(JSON.parse(get.body.toString()), { backend: 'blue', method: 'GET', path: '/api/items?x=1', body: '' })
    t.equal(get.headers['x-backend'], 'blue')
    t.equal(get.trailers['x-checksum'], '0', 'the upstream\'s trailer reaches a chunked HTTP/1.1 answer')
    const h = blue.seen[0]
    t.equal(h[':authority'], new URL(gw.url).host, 'the client\'s Host goes as :authority')
    t.equal(h['x-request-id'], 'rid-1')
    t.equal(h['x-forwarded-for'], '127.0.0.1')
    t.equal(h['x-forwarded-proto'], 'http')
    t.equal(h.te, 'trailers', 'te: trailers goes on (HTTP/2 allows no other)')
    t.equal(h.connection, undefined, 'no connection-specific header on HTTP/2')
    t.equal(h['http2-settings'], undefined)

    // Several requests on one keep-alive connection, the second with a body: each is handed to node:http from its first byte.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    t.teardown(() => agent.destroy())
    for (const body of ['', 'hello body', 'x'.repeat(100_000)]) {
      const r = await new Promise<{ status: number, text: string }>((resolve, reject) => {
        const req = http.request(`${gw.url}/api/post`, { method: 'POST', agent, headers: { 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => { text += c })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
        })
        req.on('error', reject)
        req.end(body)
      })
      t.equal(r.status, 200)
      t.equal(JSON.parse(r.text).body, body, `a ${body.length}-byte body arrives whole`)
    }

    t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['api'], guard: false })).status, 200)
    const after = await h1(`${gw.url}/api/items`)
    t.equal(JSON.parse(after.body.toString()).backend, 'green', 'after the flip, green answers')
  })
}

t.test('gRPC over HTTP/1.1 to a grpc-js server: the status comes in the chunked answer\'s trailers; gateway errors are gRPC statuses', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const gw = await startGateway(t, h2Yaml('fast', blue.url, blue.url, '', '/test.Echo'))
  const msg = Buffer.from(JSON.stringify({ text: 'over h1' }))
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg])
  const r = await h1(`${gw.url}/test.Echo/Unary`, { method: 'POST', headers: { 'content-type': 'application/grpc', te: 'trailers' }, body: frame })
  t.equal(r.status, 200)
  t.equal(r.trailers['grpc-status'], '0', 'grpc-status in the trailers')
  t.same(JSON.parse(r.body.subarray(5).toString()), { text: 'over h1', color: 'blue' })
  t.equal(r.body.readUInt32BE(1), r.body.length - 5, 'one whole gRPC message')

  // The gateway's own errors for a gRPC request are gRPC statuses in a trailers-only head.
  const deadUrl = await refusedUrl()
  const gw2 = await startGateway(t, h2Yaml('node', deadUrl, deadUrl, '', '/test.Echo'))
  const failed = await h1(`${gw2.url}/test.Echo/Unary`, { method: 'POST', headers: { 'content-type': 'application/grpc', te: 'trailers' }, body: frame })
  t.equal(failed.status, 200)
  t.equal(failed.headers['grpc-status'], '14', 'connect failure: UNAVAILABLE')
  t.equal(failed.headers['grpc-message'], 'could not connect to the upstream')
  // ...and a REST request to the same service gets the JSON error.
  const rest = await http1(`${gw2.url}/test.Echo/x`)
  t.equal(rest.status, 502)
  t.equal(rest.json.error, 'upstream_connect_failed')
})

t.test('a gRPC answer whose grpc-status is a server fault counts as an error for the color; a client mistake does not', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const gw = await startGateway(t, h2Yaml('node', blue.url, blue.url, '', '/test.Echo'))
  const stats = gw.gateway.registry.colorStats('api', 'blue')
  const call = async (m: object): Promise<string | undefined> => {
    const msg = Buffer.from(JSON.stringify(m))
    const r = await h1(`${gw.url}/test.Echo/Unary`, { method: 'POST', headers: { 'content-type': 'application/grpc', te: 'trailers' }, body: Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]) })
    return (r.trailers['grpc-status'] ?? r.headers['grpc-status']) as string | undefined
  }
  t.equal(await call({ fail: 3 }), '3')
  t.equal(stats.errors, 0, 'INVALID_ARGUMENT: not an error')
  t.equal(await call({ fail: 13 }), '13')
  t.equal(stats.errors, 1, 'INTERNAL: an error')
  t.equal(stats.requests, 2)
})

t.test('gRPC health probes: NOT_SERVING makes a target unhealthy, SERVING brings it back', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const green = await startEchoServer(t, 'green')
  // Its own target: the probe config of a URL is the one service's that uses it.
  const named = await startEchoServer(t, 'named')
  named.health.set('test.Echo', 1)
  const gw = await startGateway(t, h2Yaml('fast', blue.url, green.url, `    health: { grpc: true, interval: 100ms, timeout: 80ms, healthyThreshold: 1, unhealthyThreshold: 1 }
  other:
    protocol: h2c
    match: { pathPrefix: /other }
    blue: { targets: [${named.url}] }
    health: { grpc: test.Echo, interval: 100ms, timeout: 80ms, healthyThreshold: 1, unhealthyThreshold: 1 }
`))
  const probe = async (svc: string, color: string): Promise<string> => (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services[svc].environments[color].targets[0].probe
  await eventually(async () => await probe('api', 'blue') === 'healthy')
  await eventually(async () => await probe('other', 'blue') === 'healthy')
  t.ok((blue.calls.health ?? 0) > 0, 'the probe is grpc.health.v1.Health/Check')
  blue.health.set('', ServingStatus.NOT_SERVING)
  await eventually(async () => await probe('api', 'blue') === 'unhealthy')
  t.pass('NOT_SERVING: unhealthy')
  blue.health.set('', ServingStatus.SERVING)
  await eventually(async () => await probe('api', 'blue') === 'healthy')
  t.pass('SERVING again: healthy')
  named.health.delete('test.Echo')
  await eventually(async () => await probe('other', 'blue') === 'unhealthy')
  t.pass('a named service the server does not know (NOT_FOUND): unhealthy')
})

t.test('the health protocol by hand: requests and answers as protobuf in gRPC frames', async (t) => {
  t.same([...encodeHealthCheckRequest('')], [0, 0, 0, 0, 0], 'the empty service is an empty message')
  t.same([...encodeHealthCheckRequest('a.B')], [0, 0, 0, 0, 5, 0x0a, 3, 0x61, 0x2e, 0x42])
  const long = 'x'.repeat(200)
  const enc = encodeHealthCheckRequest(long)
  t.same([...enc.subarray(5, 8)], [0x0a, 0xc8, 0x01], 'a length past 127 is a two-byte varint')
  t.equal(enc.readUInt32BE(1), 203)
  t.equal(decodeHealthCheckResponse(Buffer.from([0, 0, 0, 0, 2, 0x08, 1])), ServingStatus.SERVING)
  t.equal(decodeHealthCheckResponse(Buffer.from([0, 0, 0, 0, 2, 0x08, 2])), ServingStatus.NOT_SERVING)
  t.equal(decodeHealthCheckResponse(Buffer.from([0, 0, 0, 0, 0])), ServingStatus.UNKNOWN, 'no field: proto3 default UNKNOWN')
  // Unknown fields of every wire type are skipped: 2:string "hi", 3:fixed64, 4:fixed32, then status.
  const msg = [0x12, 2, 0x68, 0x69, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3, 4, 0x08, 1]
  t.equal(decodeHealthCheckResponse(Buffer.from([0, 0, 0, 0, msg.length, ...msg])), ServingStatus.SERVING)
  t.throws(() => decodeHealthCheckResponse(Buffer.from([1, 0, 0, 0, 2, 0x08, 1])), /compressed/)
  t.throws(() => decodeHealthCheckResponse(Buffer.from([0, 0, 0, 0, 9, 0x08, 1])), /cut off/)
  t.throws(() => decodeHealthCheckResponse(Buffer.from([0, 0, 0])), /5-byte/)
  t.throws(() => decodeHealthCheckResponse(Buffer.from([0, 0, 0, 0, 1, 0x08])), /truncated varint/)
})

t.test('gRPC probe failures say why: no server, an HTTP server that is not gRPC, a timeout', async (t) => {
  const sessions = new GrpcProbeSessions()
  t.teardown(() => sessions.close())
  const gone = http2.createServer()
  await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve))
  const goneUrl = `http://127.0.0.1:${(gone.address() as AddressInfo).port}`
  await new Promise((resolve) => gone.close(resolve))
  const refused = await sessions.check(goneUrl, '', 500)
  t.equal(refused.ok, false)
  t.match(refused.detail, /ECONNREFUSED/)

  const rest = await startH2Rest(t, 'rest')
  const notGrpc = await sessions.check(rest.url, '', 500)
  t.equal(notGrpc.ok, false)
  t.match(notGrpc.detail, /grpc-status none/)

  const silent = http2.createServer()
  silent.on('stream', () => {})
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => silent.close())
  const slow = await sessions.check(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`, '', 100)
  t.same(slow, { ok: false, detail: 'gRPC health timed out after 100ms' })
})

t.test('config: protocol values, target schemes and grpc probes are checked, naming the key', async (t) => {
  const svc = (extra: string, targets = 'http://127.0.0.1:1'): string => `services:\n  s:\n    match: { pathPrefix: / }\n    blue: { targets: [${targets}] }\n${extra}`
  t.equal(parseConfig(svc('')).services.s.protocol, 'http1', 'http1 by default')
  t.equal(parseConfig(svc('    protocol: h2c\n')).services.s.protocol, 'h2c')
  t.equal(parseConfig(svc('    protocol: h2\n', 'https://127.0.0.1:1')).services.s.protocol, 'h2')
  t.throws(() => parseConfig(svc('    protocol: h3\n')), /services\.s\.protocol: must be http1, h2c or h2, got "h3"/)
  t.throws(() => parseConfig(svc('    protocol: h2c\n', 'https://10.0.0.5')), /services\.s\.protocol: protocol h2c \(HTTP\/2 in clear text\) needs http:\/\/ targets, got https:\/\/10\.0\.0\.5 .* in blue\.targets\[0\]/)
  t.throws(() => parseConfig(svc('    protocol: h2\n')), /services\.s\.protocol: protocol h2 \(HTTP\/2 over TLS\) needs https:\/\/ targets/)
  t.throws(() => parseConfig(svc('    health: { grpc: true }\n')), /services\.s\.health\.grpc: gRPC health probes need HTTP\/2/)
  t.throws(() => parseConfig(svc('    protocol: h2c\n    health: { grpc: 7 }\n')), /services\.s\.health\.grpc: must be true, false or a gRPC service name/)
  const c = parseConfig(svc('    protocol: h2c\n    health: { grpc: shop.Cart }\n'))
  t.same(c.services.s.health?.grpc, { service: 'shop.Cart' })
  t.same(parseConfig(svc('    protocol: h2c\n    health: { grpc: true }\n')).services.s.health?.grpc, { service: '' })
  // Under defaults, inherited; a service may turn it off again.
  const d = parseConfig(`defaults:\n  health: { grpc: true }\n${svc('    protocol: h2c\n    health: { grpc: false }\n')}`)
  t.equal(d.services.s.health?.grpc, undefined)
  t.throws(() => parseConfig(`defaults:\n  health: { grpc: true }\n${svc('')}`), /services\.s\.health\.grpc: gRPC health probes need HTTP\/2/, 'an http1 service inheriting grpc probes is named')
})

t.test('targets of the wrong scheme are refused by the targets API and in a release request', async (t) => {
  const blue = await startEchoServer(t, 'blue')
  const gw = await startGateway(t, h2Yaml('fast', blue.url, blue.url))
  const r = await admin(gw.adminUrl, 'PUT', '/v1/services/api/environments/green/targets', { targets: ['https://127.0.0.1:9'] })
  t.equal(r.status, 400)
  t.match(r.json.message, /protocol h2c .* needs http:\/\/ targets, got https:\/\/127\.0\.0\.1:9/)
  const rel = await admin(gw.adminUrl, 'POST', '/v1/releases', { services: { api: { targets: ['https://127.0.0.1:9'] } } })
  t.equal(rel.status, 400)
  t.match(rel.json.message, /services\.api\.targets\[0\]: protocol h2c/)
})

t.test('a reload may change protocol: requests after it speak the new one', async (t) => {
  const rest = await startH2Rest(t, 'blue')
  const http1Yaml = h2Yaml('fast', rest.url, rest.url).replace('    protocol: h2c\n', '')
  const gw = await startGateway(t, http1Yaml)
  const before = await h1(`${gw.url}/api/x`)
  t.equal(before.status, 502, 'HTTP/1.1 to an h2c-only server fails')
  const h2 = h2Yaml('fast', rest.url, rest.url)
  t.same(diffConfigs(parseConfig(http1Yaml), parseConfig(h2)), { restart: [], added: [], removed: [], updated: ['api'], tokenChanged: false, hostsChanged: false }, 'a protocol change is a service update, not restart-only')
  // As startGateway wrote it (log is restart-only).
  writeFileSync(gw.configFile, `log: { access: false }\n${h2}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/reload', {})).status, 200)
  const after = await h1(`${gw.url}/api/x`)
  t.equal(after.status, 200, 'after the reload the same target is spoken to over h2c')
  t.equal(JSON.parse(after.body.toString()).backend, 'blue')
})

t.test('client deadlines hold for h2c services: a request body gone quiet gets 408, the upstream stream is reset', async (t) => {
  const rest = await startH2Rest(t, 'blue')
  const gw = await startGateway(t, `client: { bodyTimeout: 200ms }\n${h2Yaml('fast', rest.url, rest.url)}`)
  const socket = net.connect(Number(new URL(gw.url).port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  let answer = ''
  socket.setEncoding('latin1')
  socket.on('data', (c: string) => { answer += c })
  socket.write('POST /api/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab')
  await new Promise((resolve) => socket.once('close', resolve))
  t.match(answer, /^HTTP\/1\.1 408 /, '408 once the body stops coming')
  t.match(answer, /request_timeout/)
  t.equal(rest.seen.length, 1, 'the request had gone upstream (its body streaming)')
  await eventually(() => rest.resets.length === 1)
  t.match(rest.resets[0], /NGHTTP2_INTERNAL_ERROR/, 'and its stream was reset, not ended as if the body were whole')
  t.equal(rest.ended, 0, 'the upstream never saw the body end')
})
