// The public listener over TLS: requests route and flip as on plain HTTP (both
// engines), SNI, certificates reloaded from disk, by SIGHUP and the admin API and
// in worker processes without dropping connections, bad ones refused, and the redirect listener.

import t from 'tap'
import https from 'node:https'
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import tls, { type TLSSocket } from 'node:tls'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import WebSocket from 'ws'
import type { CertFiles } from '../src/config/schema.js'
import type { LocalListener } from '../src/listen/local.js'
import { redirectTarget } from '../src/listen/redirect.js'
import { CLI_TOP, admin, eventually, listening, serve, serviceYaml, startBackend, startGateway, tempDir, type Backend } from './helpers/index.js'
import { fingerprintOf, makeCert, replaceFile, servedFingerprint } from './helpers/certs.js'

/** `fingerprint`: the certificate the connection was served, taken while it was open. */
interface Answer { status: number, headers: http.IncomingHttpHeaders, body: Buffer, fingerprint: string }

/** One HTTPS request on a new connection that checks the certificate against `ca` for `servername`. */
async function httpsRequest (port: number, path: string, opts: { ca: Buffer, servername?: string, method?: string, headers?: http.OutgoingHttpHeaders, body?: Buffer | Buffer[] }): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: { host: opts.servername ?? 'site.test', ...opts.headers }, ca: opts.ca, servername: opts.servername ?? 'site.test', agent: false }, (res) => {
      const chunks: Buffer[] = []
      const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), fingerprint }))
    })
    req.on('error', reject)
    // Several writes without a content-length: a chunked upload, which the fast engine hands to node:http.
    if (Array.isArray(opts.body)) for (const part of opts.body) req.write(part)
    req.end(Array.isArray(opts.body) ? undefined : opts.body)
  })
}

/** A request on an open connection (HTTP/1.1 keep-alive), its answer read whole (content-length or chunked). */
async function onSocket (socket: TLSSocket, path: string, host = 'site.test'): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    const done = (head: string, body: string): void => {
      socket.off('data', onData)
      resolve({ status: Number(head.split(' ')[1]), body })
    }
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk])
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return
      const head = buf.subarray(0, end).toString('latin1')
      const rest = buf.subarray(end + 4)
      if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
        // Whole once the last chunk is in; the sizes are read off in order.
        if (!rest.toString('latin1').endsWith('0\r\n\r\n')) return
        let body = ''
        let at = 0
        for (;;) {
          const eol = rest.indexOf('\r\n', at)
          const size = parseInt(rest.subarray(at, eol).toString('latin1'), 16)
          if (size === 0) return done(head, body)
          body += rest.subarray(eol + 2, eol + 2 + size).toString()
          at = eol + 2 + size + 2
        }
      }
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
      if (rest.length >= length) done(head, rest.subarray(0, length).toString())
    }
    socket.on('data', onData)
    socket.once('error', reject)
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`)
  })
}

async function connectTls (t: Tap, port: number, servername: string, ca: Buffer): Promise<TLSSocket> {
  const socket = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, ca, ALPNProtocols: ['http/1.1'] }, () => resolve(s))
    s.once('error', reject)
  })
  t.teardown(() => { socket.destroy() })
  return socket
}

type Tap = typeof t

/** An HTTP/2 session over TLS (ALPN h2), checking the certificate against `ca`. */
async function h2Session (t: Tap, port: number, ca: Buffer, servername = 'site.test'): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername })
  t.teardown(() => { session.destroy() })
  await new Promise((resolve, reject) => {
    session.once('connect', resolve)
    session.once('error', reject)
  })
  return session
}

/** One stream: its status, headers and whole body. */
async function h2Request (session: http2.ClientHttp2Session, path: string, opts: { method?: string, body?: Buffer, host?: string } = {}): Promise<{ status: number, headers: http2.IncomingHttpHeaders, body: Buffer }> {
  return await new Promise((resolve, reject) => {
    const stream = session.request({ ':method': opts.method ?? 'GET', ':path': path, ':authority': opts.host ?? 'site.test' })
    const chunks: Buffer[] = []
    let headers: http2.IncomingHttpHeaders = {}
    stream.on('response', (h) => { headers = h })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('error', reject)
    stream.on('end', () => resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks) }))
    stream.end(opts.body)
  })
}

function tlsYaml (certs: CertFiles[], minVersion = 'TLSv1.2'): string {
  return `tls:\n  certs:\n${certs.map((c) => `    - { cert: ${c.cert}, key: ${c.key} }\n`).join('')}  minVersion: ${minVersion}\n`
}

/** A backend that answers `/big` with `big`, a POST with the SHA-256 of what it read, anything else JSON as usual. */
function digestingBackend (b: Backend, big: Buffer): void {
  b.handler = (req, res) => {
    const hash = createHash('sha256')
    req.on('data', (c: Buffer) => hash.update(c))
    req.on('end', () => {
      if (req.url === '/big') return res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(big)
      const body = JSON.stringify({ backend: b.name, method: req.method, path: req.url, sha256: hash.digest('hex'), proto: req.headers['x-forwarded-proto'] })
      res.writeHead(200, { 'content-type': 'application/json' }).end(body)
    })
  }
}

const sha256 = (b: Buffer | Buffer[]): string => createHash('sha256').update(Array.isArray(b) ? Buffer.concat(b) : b).digest('hex')

for (const engine of ['fast', 'node'] as const) {
  t.test(`HTTPS HTTP/1.1 routes and flips like plain HTTP (${engine} engine): GET and POST bodies intact, X-Forwarded-Proto https`, async (t) => {
    const dir = tempDir(t)
    const site = makeCert(dir, 'site', { names: ['site.test'] })
    const ca = readFileSync(site.cert)
    const blue = await startBackend(t, 'blue')
    const green = await startBackend(t, 'green')
    const big = randomBytes(1 << 20)
    digestingBackend(blue, big)
    digestingBackend(green, big)
    const gw = await startGateway(t, `engine: ${engine}\n${tlsYaml([site])}services:\n${serviceYaml('svc', '/', [blue], [green])}`)
    t.match(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the gateway says its origin is https')
    const port = gw.gateway.address.port

    const get = await httpsRequest(port, '/a', { ca })
    t.equal(get.status, 200)
    t.match(JSON.parse(get.body.toString()), { backend: 'blue', path: '/a', proto: 'https' })
    t.equal(blue.seen.at(-1)?.headers['x-forwarded-proto'], 'https', 'the upstream hears the client came over https')

    const down = await httpsRequest(port, '/big', { ca })
    t.equal(down.body.length, big.length)
    t.equal(sha256(down.body), sha256(big), 'a 1 MiB answer arrives intact')

    const upload = randomBytes(3 * 65536 + 17)
    const post = await httpsRequest(port, '/up', { ca, method: 'POST', headers: { 'content-length': upload.length }, body: upload })
    t.equal(JSON.parse(post.body.toString()).sha256, sha256(upload), 'a POST body with a content-length arrives intact')
    const parts = [randomBytes(40_000), randomBytes(5), randomBytes(70_000)]
    const chunked = await httpsRequest(port, '/up', { ca, method: 'POST', body: parts })
    t.match(JSON.parse(chunked.body.toString()), { backend: 'blue', sha256: sha256(parts), proto: 'https' }, 'a chunked upload (node:http on the fast engine) too')

    // A WebSocket over TLS (wss): node:http takes the upgrade on the TLS socket and the tunnel carries frames both ways.
    const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, { ca, servername: 'site.test', headers: { host: 'site.test' } })
    t.teardown(() => ws.terminate())
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
    const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve((d as Buffer).toString())))
    ws.send('hi')
    t.equal(await echoed, 'blue: hi', 'wss reaches the live color')
    ws.close()

    // HTTP/2 by ALPN on the same port: the same routing, bodies and forwarding headers.
    const session = await h2Session(t, port, ca)
    t.equal(session.alpnProtocol, 'h2', 'a client offering h2 gets it')
    const h2get = await h2Request(session, '/h2')
    t.equal(h2get.status, 200)
    t.match(JSON.parse(h2get.body.toString()), { backend: 'blue', path: '/h2', proto: 'https' })
    const h2big = await h2Request(session, '/big')
    t.equal(sha256(h2big.body), sha256(big), 'a 1 MiB answer arrives intact over HTTP/2')
    const h2post = await h2Request(session, '/up', { method: 'POST', body: upload })
    t.equal(JSON.parse(h2post.body.toString()).sha256, sha256(upload), 'a POST body arrives intact over HTTP/2')

    t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
    t.match(JSON.parse((await h2Request(session, '/h2-after')).body.toString()), { backend: 'green', proto: 'https' }, 'the next stream on the same session follows the flip')
    const after = await httpsRequest(port, '/b', { ca })
    t.match(JSON.parse(after.body.toString()), { backend: 'green', proto: 'https' }, 'a flip moves new requests')
    const bigGreen = await httpsRequest(port, '/big', { ca })
    t.equal(sha256(bigGreen.body), sha256(big))

    // A plain HTTP request to the TLS port is no handshake: the connection is refused, counted, never answered in clear.
    const edge = (gw.gateway.listener as LocalListener).edgeServer
    const before = edge?.tls?.failedHandshakes ?? -1
    const plain = await new Promise<string>((resolve) => {
      let got = ''
      const s = net.connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: site.test\r\n\r\n'))
      s.on('data', (c: Buffer) => { got += c.toString('latin1') })
      s.on('error', () => {})
      s.on('close', () => resolve(got))
    })
    t.notMatch(plain, /HTTP\/1\.1/, 'no HTTP answer to plain text on the TLS port')
    await eventually(() => edge?.tls?.failedHandshakes === before + 1)
  })
}

t.test('a handshake that does not finish within client.headerTimeout is closed, and counted', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const backend = await startBackend(t, 'blue')
  const gw = await startGateway(t, `client: { headerTimeout: 300ms }\n${tlsYaml([site])}services:\n${serviceYaml('svc', '/', [backend], [backend])}`)
  const edge = (gw.gateway.listener as LocalListener).edgeServer
  const started = Date.now()
  const silent = net.connect(gw.gateway.address.port, '127.0.0.1')
  silent.on('error', () => {})
  await new Promise<void>((resolve) => silent.once('close', () => resolve()))
  const took = Date.now() - started
  t.ok(took >= 250 && took < 3000, `closed after ${took} ms`)
  await eventually(() => edge?.tls?.failedHandshakes === 1)
})

t.test('ALPN: h2 for a client offering it, http/1.1 for one offering only that or nothing', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const ca = readFileSync(site.cert)
  const backend = await startBackend(t, 'blue')
  const gw = await startGateway(t, `${tlsYaml([site])}services:\n${serviceYaml('svc', '/', [backend], [backend])}`)
  const port = gw.gateway.address.port
  const negotiated = async (offer: string[] | undefined): Promise<string | false | null> => {
    const s = await new Promise<TLSSocket>((resolve, reject) => {
      const c = tls.connect({ host: '127.0.0.1', port, servername: 'site.test', ca, ...(offer === undefined ? {} : { ALPNProtocols: offer }) }, () => resolve(c))
      c.once('error', reject)
    })
    t.teardown(() => { s.destroy() })
    const protocol = s.alpnProtocol
    if (protocol !== 'h2') t.match(await onSocket(s, '/over-h1'), { status: 200, body: /"path":"\/over-h1"/ }, `HTTP/1.1 is served after ALPN ${String(protocol)}`)
    s.destroy()
    return protocol
  }
  t.equal(await negotiated(['http/1.1']), 'http/1.1')
  t.equal(await negotiated(['http/1.1', 'h2']), 'h2', 'the server prefers h2')
  t.equal(await negotiated(['h2']), 'h2')
  t.equal(await negotiated(undefined), false, 'no ALPN at all: HTTP/1.1')
})

t.test('two certificates picked by SNI; an unknown name or none gets the first', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test', 'www.site.test'] })
  const api = makeCert(dir, 'api', { names: ['api.test', '*.api.test'] })
  const backend = await startBackend(t, 'blue')
  const gw = await startGateway(t, `${tlsYaml([site, api])}services:\n${serviceYaml('svc', '/', [backend], [backend])}`)
  const port = gw.gateway.address.port
  const served = async (servername: string | undefined): Promise<{ fp: string, san: string | undefined, cn: string | undefined }> => {
    const s = await new Promise<TLSSocket>((resolve, reject) => {
      const c = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername === undefined ? {} : { servername }) }, () => resolve(c))
      c.once('error', reject)
    })
    const peer = s.getPeerCertificate()
    s.destroy()
    return { fp: peer.fingerprint256, san: peer.subjectaltname, cn: peer.subject.CN }
  }
  t.match(await served('site.test'), { fp: fingerprintOf(site), san: 'DNS:site.test, DNS:www.site.test', cn: 'site.test' })
  t.match(await served('api.test'), { fp: fingerprintOf(api), san: 'DNS:api.test, DNS:*.api.test', cn: 'api.test' })
  t.match(await served('v2.api.test'), { fp: fingerprintOf(api) }, 'the wildcard')
  t.match(await served('other.test'), { fp: fingerprintOf(site) }, 'an unknown name gets the default')
  t.match(await served(undefined), { fp: fingerprintOf(site) }, 'no SNI gets the default')
  // And each verifies for its own name, with requests served through it.
  const viaApi = await httpsRequest(port, '/x', { ca: readFileSync(api.cert), servername: 'api.test' })
  t.equal(viaApi.status, 200)
  t.equal(viaApi.fingerprint, fingerprintOf(api))
})

t.test('a certificate replaced on disk serves new connections; an open keep-alive connection goes on on the same socket', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const next = makeCert(dir, 'next', { names: ['site.test'] })
  const oldFp = fingerprintOf(site)
  const newFp = fingerprintOf(next)
  const ca = Buffer.concat([readFileSync(site.cert), readFileSync(next.cert)])
  const backend = await startBackend(t, 'blue')
  const gw = await startGateway(t, `${tlsYaml([site])}services:\n${serviceYaml('svc', '/', [backend], [backend])}`)
  const port = gw.gateway.address.port

  const open = await connectTls(t, port, 'site.test', ca)
  t.equal(open.getPeerCertificate().fingerprint256, oldFp)
  t.match(await onSocket(open, '/one'), { status: 200, body: /"path":"\/one"/ })
  let closed = false
  open.once('close', () => { closed = true })

  replaceFile(site.key, readFileSync(next.key))
  replaceFile(site.cert, readFileSync(next.cert))
  await eventually(async () => await servedFingerprint(t, port, 'site.test') === newFp, { timeout: 5000 })
  const fresh = await httpsRequest(port, '/fresh', { ca })
  t.equal(fresh.fingerprint, newFp, 'a new connection gets the new certificate')

  t.match(await onSocket(open, '/two'), { status: 200, body: /"path":"\/two"/ }, 'the open connection still answers after the swap')
  t.notOk(closed, 'on the same socket')
  t.equal(open.getPeerCertificate().fingerprint256, oldFp, 'with the certificate it began with')
})

for (const engine of ['fast', 'node'] as const) {
  t.test(`a graceful stop over TLS (${engine} engine): in-flight requests finish, idle and half-open connections close`, async (t) => {
    const dir = tempDir(t)
    const site = makeCert(dir, 'site', { names: ['site.test'] })
    const ca = readFileSync(site.cert)
    const backend = await startBackend(t, 'blue')
    const gw = await startGateway(t, `engine: ${engine}\n${tlsYaml([site])}services:\n${serviceYaml('svc', '/', [backend], [backend])}`)
    const port = gw.gateway.address.port
    const idle = await connectTls(t, port, 'site.test', ca)
    t.match(await onSocket(idle, '/idle'), { status: 200 })
    const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()))
    // Connected, never a ClientHello: only the stop's deadline ends it (the handshake timeout is a minute).
    const silent = net.connect(port, '127.0.0.1')
    silent.on('error', () => {})
    await new Promise((resolve) => silent.once('connect', resolve))
    const silentClosed = new Promise<void>((resolve) => silent.once('close', () => resolve()))
    const slow = httpsRequest(port, '/slow?ms=300', { ca })
    const session = await h2Session(t, port, ca)
    const goaway = new Promise<void>((resolve) => session.once('goaway', () => resolve()))
    const slowH2 = h2Request(session, '/slow?ms=400')
    await eventually(() => backend.seen.some((s) => s.url === '/slow?ms=300') && backend.seen.some((s) => s.url === '/slow?ms=400'))

    const started = Date.now()
    await gw.gateway.stop(1500)
    const took = Date.now() - started
    t.equal((await slow).status, 200, 'the request in flight finished')
    await goaway
    t.equal((await slowH2).status, 200, 'the HTTP/2 session got GOAWAY and its open stream finished')
    await idleClosed
    await silentClosed
    t.ok(took >= 1400 && took < 5000, `the stop waited for its deadline for the silent connection, then closed it (${took} ms)`)
  })
}

t.test('the redirect listener answers 308 to https on the TLS listener\'s port; a bad Host gets 400, never a Location', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const backend = await startBackend(t, 'blue')
  const gw = await startGateway(t, `${tlsYaml([site])}redirect: { listen: 127.0.0.1:0 }\nservices:\n${serviceYaml('svc', '/', [backend], [backend])}`)
  const httpsPort = gw.gateway.address.port
  const redirectPort = gw.gateway.redirectAddress?.port as number
  t.ok(redirectPort > 0)
  t.not(redirectPort, httpsPort)

  /** Raw bytes, so Host headers no client library would send can be tried. */
  const raw = async (text: string): Promise<{ status: number, head: string }> => await new Promise((resolve, reject) => {
    let got = ''
    const s = net.connect(redirectPort, '127.0.0.1', () => s.write(text))
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1')
      if (got.includes('\r\n\r\n')) {
        s.destroy()
        resolve({ status: Number(got.split(' ')[1]), head: got.slice(0, got.indexOf('\r\n\r\n')) })
      }
    })
    s.on('error', reject)
  })
  const location = (head: string): string | undefined => /\r\nlocation: ([^\r]*)/i.exec(head)?.[1]

  let r = await raw('GET /a/b?c=1&d=%20 HTTP/1.1\r\nHost: www.site.test:8080\r\n\r\n')
  t.equal(r.status, 308)
  t.equal(location(r.head), `https://www.site.test:${httpsPort}/a/b?c=1&d=%20`, 'same host without its port, the TLS listener\'s bound port, path and query')
  r = await raw('POST /form HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n\r\nabc')
  t.equal(r.status, 308, 'every method (308 keeps it)')
  t.equal(location(r.head), `https://site.test:${httpsPort}/form`)
  r = await raw('GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n')
  t.equal(location(r.head), `https://[::1]:${httpsPort}/`, 'an IPv6 literal keeps its brackets')
  for (const host of ['evil.test/x', 'a b', 'a@b.test', 'site.test:99999x', '"x"']) {
    r = await raw(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`)
    t.equal(r.status, 400, `Host ${JSON.stringify(host)} is refused`)
    t.equal(location(r.head), undefined)
  }
  r = await raw('GET / HTTP/1.1\r\n\r\n')
  t.equal(r.status, 400, 'no Host at all')
  t.equal(location(r.head), undefined)

  // The choice itself, where a client library cannot go: 443 is left out, odd bytes are escaped, absolute targets use their authority.
  t.equal(redirectTarget({ url: '/x', headers: { host: 'site.test' } }, 443), 'https://site.test/x')
  t.equal(redirectTarget({ url: '/\u00e9\u0001', headers: { host: 'site.test' } }, 443), 'https://site.test/%E9%01')
  t.equal(redirectTarget({ url: 'http://other.test:81/p?q', headers: { host: 'site.test' } }, 8443), 'https://other.test:8443/p?q')
  t.equal(redirectTarget({ url: '*', headers: { host: 'site.test' } }, 443), 'https://site.test/')
  // A path that looks scheme-relative stays a path on the request's own host: never a redirect to another site.
  t.equal(new URL(redirectTarget({ url: '//evil.example/x', headers: { host: 'site.test' } }, 443) as string).host, 'site.test')
  t.equal(new URL(redirectTarget({ url: '/\\evil.example', headers: { host: 'site.test' } }, 443) as string).host, 'site.test')
  t.equal(redirectTarget({ url: '/x', headers: { host: 'site.test\r\nSet-Cookie: a=b' } }, 443), undefined, 'no header injection')
})

t.test('a flip\'s smoke checks reach the TLS listener', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const gw = await startGateway(t, `${tlsYaml([site])}services:\n${serviceYaml('svc', '/', [blue], [green], '    smoke: [{ path: /check, expectStatus: 200 }]\n')}`)
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(flip.status, 200, JSON.stringify(flip.json))
  t.ok(green.seen.some((s) => s.url === '/check' && s.headers['x-forwarded-proto'] === 'https'), 'the check went to green over https')
})

/** A config file for `serve` with the TLS listener on `certs`; rewritten in place for reloads. */
function writeConfig (file: string, certs: CertFiles[], blue: Backend, green: Backend, minVersion = 'TLSv1.2'): void {
  writeFileSync(file, `${CLI_TOP}${tlsYaml(certs, minVersion)}services:\n${serviceYaml('svc', '/', [blue], [green])}`)
}

t.test('serve: a broken certificate file is refused and logged, the old certificate serves on; a good one is then taken', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const other = makeCert(dir, 'other', { names: ['site.test'] })
  const good = makeCert(dir, 'good', { names: ['site.test'] })
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const file = join(dir, 'sy.yaml')
  writeConfig(file, [site], blue, green)
  const p = serve(t, ['serve', '--config', file])
  const { port } = await listening(p)
  const oldFp = fingerprintOf(site)
  const ca = Buffer.concat([readFileSync(site.cert), readFileSync(good.cert)])
  const refusals = (): any[] => p.lines.filter((l) => l.msg === 'tls certificate refused; the previous certificates are still served')

  replaceFile(site.cert, 'not a certificate at all\n')
  const garbage = await eventually(() => refusals()[0] ?? false, { timeout: 5000 })
  t.match(garbage, { level: 'error', path: 'tls.certs[0].cert', file: site.cert, error: /is not a PEM certificate/ })
  t.equal(await servedFingerprint(t, port, 'site.test'), oldFp, 'the old certificate still serves')
  t.equal((await httpsRequest(port, '/a', { ca })).status, 200, 'and requests go on')

  // The certificate back, with another certificate's key beside it.
  replaceFile(site.cert, readFileSync(good.cert))
  replaceFile(site.key, readFileSync(other.key))
  const mismatch = await eventually(() => refusals().find((l) => /is not the key of the certificate/.test(l.error)) ?? false, { timeout: 5000 })
  t.match(mismatch, { level: 'error', path: 'tls.certs[0].key', file: site.key })
  t.equal(await servedFingerprint(t, port, 'site.test'), oldFp, 'still the old certificate')
  t.equal((await httpsRequest(port, '/b', { ca })).status, 200)

  replaceFile(site.key, readFileSync(good.key))
  await eventually(async () => await servedFingerprint(t, port, 'site.test') === fingerprintOf(good), { timeout: 5000 })
  // The log line comes through the child's stdout, which may trail the handshake that already shows the new certificate.
  t.ok(await eventually(() => p.lines.some((l) => l.msg === 'tls certificates reloaded'), { timeout: 5000 }), 'the good pair is taken and logged')
  t.equal((await httpsRequest(port, '/c', { ca })).status, 200)
})

t.test('serve: SIGHUP and POST /v1/reload apply new certificate paths and minVersion; a bad one or turning TLS off is refused', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const second = makeCert(dir, 'second', { names: ['site.test'] })
  const third = makeCert(dir, 'third', { names: ['site.test'] })
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const file = join(dir, 'sy.yaml')
  writeConfig(file, [site], blue, green)
  const p = serve(t, ['serve', '--config', file])
  const { port, admin: adminPort } = await listening(p)
  const adminUrl = `http://127.0.0.1:${adminPort}`
  const ca = Buffer.concat([site, second, third].map((c) => readFileSync(c.cert)))
  const open = await connectTls(t, port, 'site.test', ca)
  t.match(await onSocket(open, '/before'), { status: 200 })

  writeConfig(file, [second], blue, green)
  p.kill('SIGHUP')
  await eventually(() => p.lines.some((l) => l.msg === 'tls certificates reloaded'), { timeout: 5000 })
  t.equal(await servedFingerprint(t, port, 'site.test'), fingerprintOf(second), 'SIGHUP: the new path serves new connections')
  t.match(await onSocket(open, '/after-sighup'), { status: 200 }, 'an open connection goes on')

  writeConfig(file, [third], blue, green, 'TLSv1.3')
  const reload = await admin(adminUrl, 'POST', '/v1/reload', {})
  t.equal(reload.status, 200, JSON.stringify(reload.json))
  t.equal(await servedFingerprint(t, port, 'site.test'), fingerprintOf(third), 'the admin reload: the next connection has the new certificate')
  await t.rejects(new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'site.test', ca, maxVersion: 'TLSv1.2' }, () => resolve(s))
    s.once('error', reject)
  }), 'minVersion TLSv1.3 now refuses a TLS 1.2 client')

  const broken = join(dir, 'broken.pem')
  writeFileSync(broken, 'garbage')
  writeFileSync(file, `${CLI_TOP}tls:\n  certs:\n    - { cert: ${broken}, key: ${third.key} }\nservices:\n${serviceYaml('svc', '/', [blue], [green])}`)
  const bad = await admin(adminUrl, 'POST', '/v1/reload', {})
  t.equal(bad.status, 400)
  t.match(bad.json, { error: 'config_invalid', problems: [{ path: 'tls.certs[0].cert', message: new RegExp(`${broken} is not a PEM certificate`) }] })
  p.kill('SIGHUP')
  const refused = await eventually(() => p.lines.find((l) => l.msg === 'reload refused, the running config stays') ?? false, { timeout: 5000 })
  t.match(refused, { level: 'error', problems: [{ path: 'tls.certs[0].cert' }] }, 'SIGHUP logs the refusal with the file')
  t.equal(await servedFingerprint(t, port, 'site.test'), fingerprintOf(third), 'the last good certificate serves on')

  writeFileSync(file, `${CLI_TOP}services:\n${serviceYaml('svc', '/', [blue], [green])}`)
  const off = await admin(adminUrl, 'POST', '/v1/reload', {})
  t.equal(off.status, 400)
  t.match(off.json.message, /reload cannot change tls \(turning TLS off\): restart the gateway/)
  t.match(await onSocket(open, '/end'), { status: 200 }, 'the first connection lived through all of it')
})

t.test('serve --workers 2 over TLS: serves, flips, and every worker takes a reload and a file change; tickets resume on any worker', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const second = makeCert(dir, 'second', { names: ['site.test'] })
  const third = makeCert(dir, 'third', { names: ['site.test'] })
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const file = join(dir, 'sy.yaml')
  writeConfig(file, [site], blue, green)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  const { port, admin: adminPort } = await listening(p)
  const adminUrl = `http://127.0.0.1:${adminPort}`
  const ca = Buffer.concat([site, second, third].map((c) => readFileSync(c.cert)))
  /** Fresh connections, so the cluster spreads them over both workers. */
  const many = async (n: number): Promise<Answer[]> => await Promise.all(Array.from({ length: n }, async (_, i) => await httpsRequest(port, `/${i}`, { ca })))
  const fingerprints = (answers: Answer[]): Set<string> => new Set(answers.map((a) => a.fingerprint))

  const first = await many(10)
  t.same(new Set(first.map((a) => JSON.parse(a.body.toString()).backend)), new Set(['blue']))
  t.equal((await admin(adminUrl, 'POST', '/v1/flip', {})).status, 200)
  t.same(new Set((await many(10)).map((a) => JSON.parse(a.body.toString()).backend)), new Set(['green']), 'every worker flipped')
  const sessions = await Promise.all([1, 2, 3, 4].map(async () => await h2Session(t, port, ca)))
  for (const session of sessions) {
    t.match(JSON.parse((await h2Request(session, '/h2')).body.toString()), { backend: 'green', path: '/h2' }, 'HTTP/2 over TLS on a worker')
    t.equal(green.seen.at(-1)?.headers['x-forwarded-proto'], 'https')
  }
  for (const session of sessions) session.close()

  writeConfig(file, [second], blue, green)
  const reload = await admin(adminUrl, 'POST', '/v1/reload', {})
  t.equal(reload.status, 200, JSON.stringify(reload.json))
  t.same(fingerprints(await many(10)), new Set([fingerprintOf(second)]), 'once the reload is answered, every worker serves the new path')
  await eventually(() => new Set(p.lines.filter((l) => l.msg === 'tls certificates reloaded').map((l) => l.pid)).size === 2)

  replaceFile(second.key, readFileSync(third.key))
  replaceFile(second.cert, readFileSync(third.cert))
  await eventually(async () => {
    const fps = fingerprints(await many(6))
    return fps.size === 1 && fps.has(fingerprintOf(third))
  }, { timeout: 5000 })
  t.pass('every worker saw the file change')

  // A session ticket from one worker resumes on the other: they share the primary's ticket keys.
  const session = await new Promise<Buffer>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'site.test', ca }, () => {
      s.write('GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n')
    })
    s.on('data', () => {})
    s.on('error', reject)
    s.on('end', () => resolve(s.getSession() as Buffer))
  })
  const resumed = await Promise.all(Array.from({ length: 6 }, async () => await new Promise<boolean>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'site.test', ca, session }, () => {
      resolve(s.isSessionReused())
      s.destroy()
    })
    s.on('error', reject)
  })))
  t.same(resumed, [true, true, true, true, true, true], 'every new connection resumed, whichever worker took it')
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)
})
