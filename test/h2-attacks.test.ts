// Attacks on the issue 14 code: a hostile HTTP/2 client, a broken upstream and
// an unlucky operator. Each test names the property it holds; after each, the
// gateway must still serve and its colors must have nothing left open.

import t from 'tap'
import net from 'node:net'
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import { eventually, serviceYaml, startBackend, startGateway, type Backend, type TestGateway } from './helpers/index.js'

interface H2Reply { status: number, headers: IncomingHttpHeaders, body: Buffer, trailers: IncomingHttpHeaders | undefined }

function connect (t: Tap.Test, url: string): ClientHttp2Session {
  const session = http2.connect(url)
  session.on('error', () => {})
  t.teardown(() => { session.destroy() })
  return session
}

async function h2 (session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}, body?: Buffer | string): Promise<H2Reply> {
  return await new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, ':method': body === undefined ? 'GET' : 'POST', ...headers }, { endStream: body === undefined })
    let head: IncomingHttpHeaders | undefined
    let trailers: IncomingHttpHeaders | undefined
    const chunks: Buffer[] = []
    req.on('response', (h) => { head = h })
    req.on('trailers', (h) => { trailers = h })
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('error', reject)
    req.on('close', () => {
      if (head === undefined || req.rstCode !== http2.constants.NGHTTP2_NO_ERROR) return reject(new Error(`stream closed with code ${req.rstCode}`))
      resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks), trailers })
    })
    if (body !== undefined) req.end(body)
  })
}

/** One HTTP/2 frame, bytes as on the wire (RFC 9113 4.1). */
function frame (type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream, 5)
  return Buffer.concat([head, payload])
}

/** An HPACK literal without indexing, its name from the static table (`index`), for short values. */
function literal (index: number, value: string): Buffer {
  return Buffer.concat([Buffer.from([index, value.length]), Buffer.from(value, 'latin1')])
}

/** A GET's header block: :method GET, :scheme http, :path, :authority. */
function getBlock (path: string, authority: string): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x86]), literal(4, path), literal(1, authority)])
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
const HEADERS = 0x1
const RST_STREAM = 0x3
const SETTINGS = 0x4
const END_STREAM = 0x1
const END_HEADERS = 0x4

function forwarded (b: Backend, prefix: string): number {
  return b.seen.filter((r) => r.url.startsWith(prefix)).length
}

function blueStats (gw: TestGateway, service = 'svc'): { inflight: number, errors: number } {
  return gw.gateway.registry.colorStats(service, 'blue')
}

async function pair (t: Tap.Test, engine: string, head = ''): Promise<{ b: Backend, g: Backend, gw: TestGateway }> {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `engine: ${engine}\n${head}services:\n${serviceYaml('svc', '/', [b], [g])}`)
  return { b, g, gw }
}

for (const engine of ['fast', 'node']) {
  t.test(`${engine}: rapid reset (CVE-2023-44487): streams reset in the packet that opened them never reach the upstream`, async (t) => {
    const { b, gw } = await pair(t, engine)
    const port = Number(new URL(gw.url).port)
    const authority = new URL(gw.url).host
    const n = 200
    const parts = [PREFACE, frame(SETTINGS, 0, 0)]
    for (let i = 0; i < n; i++) {
      const id = 1 + 2 * i
      parts.push(frame(HEADERS, END_STREAM | END_HEADERS, id, getBlock('/rapid/slow?ms=2000', authority)))
      parts.push(frame(RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])))
    }
    const socket = net.connect(port, '127.0.0.1')
    socket.on('error', () => {})
    t.teardown(() => { socket.destroy() })
    socket.write(Buffer.concat(parts))
    // The same gateway serves a normal request afterwards; by then every reset stream is settled.
    const s = connect(t, gw.url)
    t.equal((await h2(s, '/after')).status, 200, 'still serving')
    await eventually(() => blueStats(gw).inflight === 0)
    const reached = forwarded(b, '/rapid')
    t.equal(reached, 0, `upstream requests for ${n} streams reset at once: ${reached}`)
  })
}
