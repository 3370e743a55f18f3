// The fast engine's upstream pool: a connection reused from the idle list is
// marked `early` (bytes now were sent before the request could arrive) only
// while the fast engine holds too few sockets for an epoll batch to fill.

import t from 'tap'
import net from 'node:net'
import { EARLY_MARK_LIMIT, H1Pool, heldSockets, setEarlyMarkLimit, type UpstreamConn, type UpstreamUser } from '../src/upstream/h1-pool.js'

const ANSWER = 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'

/** A user that collects what its connection hears. */
function collector (): UpstreamUser & { got: string, closed: boolean } {
  return {
    got: '',
    closed: false,
    onUpstreamData (chunk: Buffer) { this.got += chunk.toString('latin1') },
    onUpstreamEnd () {},
    onUpstreamClose () { this.closed = true },
    onUpstreamTimeout () {},
    onUpstreamReady () {},
    onUpstreamOverloaded () {},
  }
}

async function turns (n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve))
}

t.test('a reused connection is marked early only below the held-socket limit', async (t) => {
  const upstream = net.createServer((s) => {
    s.on('data', () => s.write(ANSWER))
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const port = (upstream.address() as net.AddressInfo).port
  const pool = new H1Pool({ tls: false, host: '127.0.0.1', port }, { connect: 2000, response: 5000, idleUpstream: 60_000 }, { maxConnections: 4 })
  const limit = EARLY_MARK_LIMIT
  t.teardown(() => {
    setEarlyMarkLimit(limit)
    pool.destroy()
    upstream.close()
  })

  /** One exchange on a connection from the pool; it goes back idle and settles. */
  async function roundTrip (): Promise<UpstreamConn> {
    const user = collector()
    const conn = pool.acquire(user) as UpstreamConn
    conn.socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n')
    while (!user.got.endsWith('ok')) await turns(1)
    conn.release(0)
    await turns(3)
    return conn
  }

  const first = await roundTrip()
  t.ok(heldSockets.count >= 1, 'the upstream connection is counted')

  // Below the limit: the reused connection is marked, and bytes in this turn close it.
  setEarlyMarkLimit(heldSockets.count + 1)
  const below = collector()
  const again = pool.acquire(below) as UpstreamConn
  t.equal(again, first, 'the idle connection is reused')
  t.equal(again.early, true, 'marked early below the limit')
  again.socket.emit('data', Buffer.from(ANSWER))
  t.equal(below.got, '', 'bytes in the same turn are not taken as the answer')
  t.equal(again.socket.destroyed, true, 'and close the connection')

  // At the limit: a full epoll batch is possible, so the mark would misjudge a fast answer.
  const second = await roundTrip()
  setEarlyMarkLimit(heldSockets.count)
  const above = collector()
  const reused = pool.acquire(above) as UpstreamConn
  t.equal(reused, second, 'the idle connection is reused')
  t.equal(reused.early, false, 'not marked early at the limit')
  reused.socket.emit('data', Buffer.from(ANSWER))
  t.equal(above.got, ANSWER, 'an answer in the same turn is taken as the answer')
  t.equal(reused.socket.destroyed, false, 'and the connection stays')
})

t.test('held sockets are counted while open and uncounted when closed', async (t) => {
  const upstream = net.createServer((s) => s.on('data', () => s.write(ANSWER)))
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const port = (upstream.address() as net.AddressInfo).port
  const pool = new H1Pool({ tls: false, host: '127.0.0.1', port }, { connect: 2000, response: 5000, idleUpstream: 60_000 }, { maxConnections: 4 })
  t.teardown(() => upstream.close())
  // The test before closed its connections: wait until they are gone.
  while (heldSockets.count !== 0) await turns(1)
  const before = heldSockets.count
  const user = collector()
  const conn = pool.acquire(user) as UpstreamConn
  t.equal(heldSockets.count, before + 1, 'an opened connection counts')
  pool.destroy()
  while (!user.closed) await turns(1)
  t.equal(heldSockets.count, before, 'a closed one no longer does')
  t.equal(conn.socket.destroyed, true)
})
