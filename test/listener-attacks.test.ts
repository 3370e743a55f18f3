// Attacks on the public listener found in review, on both engines and on
// what the fast engine hands to node:http: each test fails on the code before
// its fix. Raw sockets where the bytes matter; loopback only, bounded.

import t from 'tap'
import net from 'node:net'
import { eventually, startBackend, startGateway, type TestGateway } from './helpers/index.js'

const ENGINES = ['fast', 'node'] as const

/** The server side of every connection the public listener accepts, in order. */
function serverSockets (gw: TestGateway): net.Socket[] {
  const sockets: net.Socket[] = []
  ;(gw.gateway as unknown as { edge: net.Server }).edge.on('connection', (s: net.Socket) => sockets.push(s))
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
