// Edge cases of the one request path found in review: the upstream body deadline
// while the gateway itself holds the upstream back, and the retry after the keep-alive
// race (a fresh connection inside the pool and its cap, closed if the client leaves).

import t, { type Test } from 'tap'
import net from 'node:net'
import { eventually, http1, startBackend, startGateway, type TestGateway } from './helpers/index.js'
import { rawUpstream, type RawUpstream } from './helpers/raw.js'

type Engine = 'fast' | 'node'
const ENGINES: Engine[] = ['fast', 'node']

async function oneService (t: Test, engine: Engine, blue: string, extra = ''): Promise<TestGateway> {
  const g = await startBackend(t, 'g')
  return await startGateway(t, `engine: ${engine}
services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${blue}] }
    green: { targets: [${g.url}] }
${extra}`)
}

const BIG = 8 * 1024 * 1024

for (const engine of ENGINES) {
  t.test(`${engine}: timeouts.body never cuts a body the gateway held back for a slow client`, async (t) => {
    const body = Buffer.alloc(BIG, 'x')
    const up = await rawUpstream(t, (socket) => {
      socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${BIG}\r\n\r\n`)
      socket.write(body)
    })
    const gw = await oneService(t, engine, up.url, '    timeouts: { body: 300ms }\n')
    const got = await new Promise<number>((resolve) => {
      let n = 0
      const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write('GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'))
      s.on('error', () => {})
      // The client reads nothing for three body deadlines: the gateway must hold the upstream back, not blame it.
      s.pause()
      setTimeout(() => s.resume(), 1000)
      s.on('data', (c: Buffer) => { n += c.length })
      s.on('close', () => resolve(n))
    })
    t.ok(got > BIG, `the whole body arrived (${got} bytes with the head, of ${BIG} in the body)`)
  })
}

/**
 * An upstream that answers the first request on a connection with a keep-alive
 * 200 and closes a connection, unanswered, when a second request arrives on
 * it (the keep-alive race); with `hangFresh`, a fresh connection's request after
 * the first one is never answered.
 */
async function racing (t: Test, hangFresh: boolean): Promise<RawUpstream & { requestSockets: net.Socket[] }> {
  const served = new WeakSet<net.Socket>()
  /** The socket each request arrived on, in order. */
  const requestSockets: net.Socket[] = []
  let fresh = 0
  const up = await rawUpstream(t, (socket) => {
    requestSockets.push(socket)
    if (served.has(socket)) return void socket.destroy()
    served.add(socket)
    if (hangFresh && fresh++ > 0) return
    socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
  })
  return { ...up, requestSockets }
}

for (const engine of ENGINES) {
  t.test(`${engine}: the retry after the keep-alive race goes on a fresh connection, which stays in the pool`, async (t) => {
    const up = await racing(t, false)
    // No active probes: their connections would be counted here too.
    const gw = await oneService(t, engine, up.url, '    health: false\n')
    t.equal((await http1(`${gw.url}/prime`)).status, 200)
    t.equal(up.open(), 1, 'one pooled connection')
    const r = await http1(`${gw.url}/again`)
    t.equal(r.status, 200, 'the retry answered')
    t.equal(up.connections(), 2, 'on a new connection')
    await eventually(() => up.open() === 1, { timeout: 3000 })
    t.pass('the stale connection is closed; the retry connection is kept alive, not leaked and not dropped')
  })

  t.test(`${engine}: a client gone while its retry waits closes the retry connection`, async (t) => {
    const up = await racing(t, true)
    const gw = await oneService(t, engine, up.url, '    health: false\n')
    t.equal((await http1(`${gw.url}/prime`)).status, 200)
    const ac = new AbortController()
    const pending = http1(`${gw.url}/again`, { signal: ac.signal }).catch((err: Error) => err)
    await eventually(() => up.connections() === 2, { timeout: 3000 })
    ac.abort()
    t.type(await pending, Error, 'the client gave up')
    // Requests: the prime, the stale try, the retry (on a connection of its own, which then hangs).
    t.equal(up.requestSockets.length, 3)
    const retry = up.requestSockets[2]
    t.not(retry, up.requestSockets[1], 'the retry went on a new connection')
    await eventually(() => retry.destroyed, { timeout: 3000 })
    t.pass('the retry connection is closed with the exchange (it had a request in flight: never reused)')
  })
}

for (const engine of ENGINES) {
  t.test(`${engine}: limits.maxConnections holds while a request is retried after the keep-alive race`, async (t) => {
    const served = new WeakSet<net.Socket>()
    // Every answer takes 300 ms (so connections overlap); /race on a connection that served before is closed unanswered.
    const up = await rawUpstream(t, (socket, data) => {
      if (data.startsWith('GET /race') && served.has(socket)) return void socket.destroy()
      served.add(socket)
      setTimeout(() => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'), 300)
    })
    const gw = await oneService(t, engine, up.url, '    limits: { maxConnections: 1 }\n')
    t.equal((await http1(`${gw.url}/prime`)).status, 200)
    const race = http1(`${gw.url}/race`)
    // The retry's connection is open and waiting for its answer: now another request comes.
    await eventually(() => up.connections() === 2, { timeout: 3000 })
    const other = http1(`${gw.url}/other`)
    t.same([(await race).status, (await other).status], [200, 200], 'both answered')
    t.equal(up.maxOpen(), 1, `never more than limits.maxConnections open to the target (most at once: ${up.maxOpen()})`)
  })
}
