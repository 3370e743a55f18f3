// Upgrades at the public listener, on both engines (the fast engine hands
// every Upgrade to node:http): only a complete WebSocket handshake becomes a
// tunnel, and only when the upstream's 101 proves it took that handshake.

import t from 'tap'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { openWs, startBackend, startGateway } from './helpers/index.js'

const ENGINES = ['node', 'fast'] as const
const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='

async function exchange (port: number, text: string, limitMs = 3000): Promise<string> {
  return await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text))
    let got = ''
    const timer = setTimeout(() => s.destroy(), limitMs)
    s.on('data', (c) => {
      got += c.toString('latin1')
      if (got.includes('TUNNEL')) s.destroy()
      // Past a 101, probe the tunnel: anything written now would reach the upstream raw.
      if (got.startsWith('HTTP/1.1 101') && got.includes('\r\n\r\n') && !got.includes('TUNNEL')) s.write('GET /admin-only HTTP/1.1\r\nhost: internal\r\n\r\n')
    })
    s.on('error', () => {})
    s.on('close', () => {
      clearTimeout(timer)
      resolve(got)
    })
  })
}

/**
 * An upstream that answers 101 to anything, then echoes what it reads as
 * "TUNNEL ..." (a raw tunnel to whatever the client sends). `accept` is the
 * Sec-WebSocket-Accept it claims (none when undefined), `upgrade` its Upgrade.
 */
async function yesUpstream (t: Tap.Test, upgrade: string, accept: (key: string) => string | undefined): Promise<{ url: string, connections: () => number }> {
  let connections = 0
  const server = net.createServer((socket) => {
    connections++
    socket.on('error', () => {})
    let upgraded = false
    socket.on('data', (d) => {
      const text = d.toString('latin1')
      if (upgraded) {
        socket.write(`TUNNEL ${text.split('\r\n')[0]}`)
        return
      }
      upgraded = true
      const key = /sec-websocket-key: *([^\r]*)/i.exec(text)?.[1] ?? ''
      const a = accept(key)
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: ${upgrade}\r\nconnection: Upgrade\r\n${a === undefined ? '' : `sec-websocket-accept: ${a}\r\n`}\r\n`)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, connections: () => connections }
}

function config (engine: string, url: string): string {
  return `engine: ${engine}
services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${url}] }
    green: { targets: [${url}] }
    passive: false
`
}

const handshake = (extra: string, method = 'GET', version = 'HTTP/1.1'): string =>
  `${method} /ws ${version}\r\nhost: x\r\n${extra}\r\n`

const ACCEPT = (key: string): string => createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')

for (const engine of ENGINES) {
  t.test(`engine ${engine}: an Upgrade that is not a complete WebSocket handshake is refused, never tunnelled`, async (t) => {
    const up = await yesUpstream(t, 'h2c', () => undefined)
    const gw = await startGateway(t, config(engine, up.url))
    const port = gw.gateway.address.port
    const cases: Record<string, string> = {
      h2c: handshake('connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n'),
      'made-up protocol': handshake('connection: upgrade\r\nupgrade: tunnel/1\r\n'),
      'websocket without a key': handshake('connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n'),
      'websocket with a short key': handshake('connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: c2hvcnQ=\r\n'),
      'websocket, wrong version': handshake(`connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 8\r\nsec-websocket-key: ${KEY}\r\n`),
      'websocket plus another protocol': handshake(`connection: upgrade\r\nupgrade: websocket, h2c\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${KEY}\r\n`),
      'websocket on POST': handshake(`connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${KEY}\r\ncontent-length: 0\r\n`, 'POST'),
    }
    for (const [name, text] of Object.entries(cases)) {
      const got = await exchange(port, text)
      t.match(got, /^HTTP\/1\.1 400 /, name)
      t.match(got, /"error":"upgrade_refused"/, name)
      t.notMatch(got, /TUNNEL/, `${name}: no tunnel`)
    }
    t.equal(up.connections(), 0, 'the upstream never saw any of them')
  })

  t.test(`engine ${engine}: a 101 without the right Sec-WebSocket-Accept is no tunnel`, async (t) => {
    for (const [name, upgrade, accept] of [
      ['no accept', 'websocket', () => undefined],
      ['a wrong accept', 'websocket', () => ACCEPT('somebody else')],
      ['the right accept but Upgrade: h2c', 'h2c', ACCEPT],
    ] as Array<[string, string, (key: string) => string | undefined]>) {
      const up = await yesUpstream(t, upgrade, accept)
      const gw = await startGateway(t, config(engine, up.url))
      const got = await exchange(gw.gateway.address.port, handshake(`connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${KEY}\r\n`))
      t.match(got, /^HTTP\/1\.1 502 /, name)
      t.match(got, /"error":"upstream_error"/, name)
      t.notMatch(got, /TUNNEL/, `${name}: no tunnel`)
      await gw.stop()
    }
  })

  t.test(`engine ${engine}: a real WebSocket still goes through`, async (t) => {
    const b = await startBackend(t, 'b')
    const gw = await startGateway(t, config(engine, b.url))
    const { ws, next } = await openWs(gw.url.replace('http', 'ws') + '/ws')
    ws.send('hi')
    t.equal(await next(), 'b: hi')
    ws.close()
    // The right accept from a raw upstream is enough, whatever it does next.
    const up = await yesUpstream(t, 'websocket', ACCEPT)
    const gw2 = await startGateway(t, config(engine, up.url))
    const got = await exchange(gw2.gateway.address.port, handshake(`connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${KEY}\r\n`), 500)
    t.match(got, /^HTTP\/1\.1 101 /)
    t.match(got, new RegExp(`sec-websocket-accept: ${ACCEPT(KEY).replace(/[+/]/g, '\\$&')}`, 'i'))
  })
}
