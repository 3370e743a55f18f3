// Edge trust for forwarding headers (SPEC "Edge trust", issue 10 item 4): the
// matcher and the one builder, then both engines, the fast engine's hand-over
// to node:http and WebSocket upgrades.

import t from 'tap'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { Forwarding, forwardedNode } from '../src/proxy/trust.js'
import { parseRequestHead } from '../src/proxy/h1/parse.js'
import { stripRequestHeaders } from '../src/proxy/headers.js'
import { serviceYaml, startBackend, startGateway } from './helpers/index.js'
import { rawRequest, wsHandshake } from './helpers/raw.js'

t.test('Forwarding.trusts: IPv4 and IPv6 blocks, IPv4-mapped peers, nothing by default', async (t) => {
  const f = new Forwarding('http', ['10.0.0.0/8', '192.168.1.7/32', 'fd00::/8', '2001:db8::1/128'])
  t.equal(f.trustsNone, false)
  for (const peer of ['10.1.2.3', '192.168.1.7', '::ffff:10.1.2.3', '::FFFF:192.168.1.7', 'fd12::1', '2001:db8::1']) t.ok(f.trusts(peer), peer)
  for (const peer of ['11.0.0.1', '192.168.1.8', '::ffff:11.0.0.1', 'fe80::1', '2001:db8::2', '127.0.0.1', '::1', '']) t.notOk(f.trusts(peer), peer || 'no address')
  t.ok(f.trusts('10.9.9.9'), 'again after a miss (the one-entry cache follows the peer)')
  const none = new Forwarding('http', [])
  t.equal(none.trustsNone, true)
  t.notOk(none.trusts('127.0.0.1'))
  t.ok(new Forwarding('http', ['::/0']).trusts('::ffff:127.0.0.1'), 'an IPv6 block sees a mapped peer too')
})

t.test('Forwarding.values: replaced from a client, kept and extended from a trusted proxy', async (t) => {
  const f = new Forwarding('http', ['10.0.0.0/8', 'fd00::/8'])
  const sent = { xff: '203.0.113.9', xfProto: 'https', xfHost: 'shop.example', forwarded: 'for=203.0.113.9;proto=https' }
  t.same(f.values('198.51.100.1', 'gw.test', sent), { xff: '198.51.100.1', proto: 'http', host: 'gw.test', forwarded: undefined }, 'untrusted: what the gateway saw')
  t.same(f.values('10.0.0.2', 'gw.test', sent), { xff: '203.0.113.9, 10.0.0.2', proto: 'https', host: 'shop.example', forwarded: 'for=203.0.113.9;proto=https, for=10.0.0.2' }, 'trusted: kept and extended')
  t.same(f.values('fd00::2', 'gw.test', sent).forwarded, 'for=203.0.113.9;proto=https, for="[fd00::2]"', 'IPv6 quoted (RFC 7239)')
  t.same(f.values('10.0.0.2', 'gw.test', { xff: '', xfProto: undefined, xfHost: undefined, forwarded: undefined }), { xff: '10.0.0.2', proto: 'http', host: 'gw.test', forwarded: undefined }, 'trusted, nothing sent: set')
  t.equal(forwardedNode(''), 'unknown')
  t.equal(forwardedNode('::ffff:10.0.0.2'), '"[::ffff:10.0.0.2]"')
})

t.test('Forwarding.headerLines spells out Forwarding.values, for clients and trusted proxies alike', async (t) => {
  const f = new Forwarding('https', ['10.0.0.0/8'])
  const sent = { xff: '1.2.3.4, , 5.6.7.8', xfProto: 'http', xfHost: 'shop.example', forwarded: 'for=1.2.3.4' }
  const spelled = (v: ReturnType<Forwarding['values']>): string =>
    `x-forwarded-for: ${v.xff}\r\nx-forwarded-proto: ${v.proto}\r\nx-forwarded-host: ${v.host as string}\r\n${v.forwarded === undefined ? '' : `forwarded: ${v.forwarded}\r\n`}`
  for (const peer of ['10.1.2.3', '11.1.2.3', '']) {
    t.equal(f.headerLines(peer, 'gw.example', sent), spelled(f.values(peer, 'gw.example', sent)), peer || 'no address')
  }
  t.equal(new Forwarding('http', []).headerLines('127.0.0.1', 'gw', sent), 'x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: gw\r\n', 'nothing trusted: what the gateway saw')
})

t.test('both engines read the same forwarding set from a request and forward none of it as sent', async (t) => {
  const lines = ['Host: gw.test', 'X-Forwarded-For: 203.0.113.9', 'x-forwarded-for: 10.0.0.1', 'X-Forwarded-Proto: https', 'X-Forwarded-Host: shop.example',
    'Forwarded: for=203.0.113.9', 'forwarded: for=10.0.0.1', 'Connection: keep-alive, X-Hop', 'X-Hop: 1', 'Accept: */*']
  const want = { xff: '203.0.113.9, 10.0.0.1', xfProto: 'https', xfHost: 'shop.example', forwarded: 'for=203.0.113.9, for=10.0.0.1' }
  const head = parseRequestHead(['GET / HTTP/1.1', ...lines].join('\r\n'))
  if (head === undefined) throw new Error('refused')
  t.same({ xff: head.xff, xfProto: head.xfProto, xfHost: head.xfHost, forwarded: head.forwarded }, want, 'fast engine')
  t.same(head.connectionNames, ['x-hop'])
  t.equal(head.lines, 'Host: gw.test\r\nAccept: */*\r\n')
  const sent = { xff: '', xfProto: undefined, xfHost: undefined, forwarded: undefined }
  const raw = lines.flatMap((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()])
  t.same(stripRequestHeaders(raw, false, sent), ['Host', 'gw.test', 'Accept', '*/*'])
  t.same(sent, want, 'node engine')
})

const SPOOF = ['x-forwarded-for: 203.0.113.9', 'X-Forwarded-For: 198.51.100.7', 'x-forwarded-proto: https', 'x-forwarded-host: shop.example', 'forwarded: for=203.0.113.9;proto=https',
  // Underscore spellings: CGI, WSGI and Rack read them as the dashed header (HTTP_X_FORWARDED_FOR).
  'x_forwarded_for: 6.6.6.6', 'X-Forwarded_Proto: gopher', 'x_forwarded-host: evil.example']

/** Forwarding header names the upstream got in a spelling other than the gateway's own. */
function aliasesSeen (h: IncomingHttpHeaders): string[] {
  return Object.keys(h).filter((k) => /^x[-_]forwarded[-_](for|proto|host)$/.test(k) && k.includes('_'))
}

/** What the upstream got of the forwarding set. */
function forwardingSeen (h: IncomingHttpHeaders): Record<string, string | undefined> {
  return { xff: h['x-forwarded-for'], proto: h['x-forwarded-proto'], host: h['x-forwarded-host'], forwarded: h.forwarded }
}

const REPLACED = { xff: '127.0.0.1', proto: 'http', host: 'gw.test', forwarded: undefined }
const EXTENDED = { xff: '203.0.113.9, 198.51.100.7, 127.0.0.1', proto: 'https', host: 'shop.example', forwarded: 'for=203.0.113.9;proto=https, for=127.0.0.1' }

for (const engine of ['fast', 'node'] as const) {
  for (const [label, trusted, want] of [['a client', '[10.0.0.0/8, "fd00::/8"]', REPLACED], ['a trusted proxy', '[127.0.0.1]', EXTENDED]] as const) {
    t.test(`${engine} engine: forwarding headers from ${label}`, async (t) => {
      const b = await startBackend(t, 'b')
      const g = await startBackend(t, 'g')
      const upgrades: IncomingHttpHeaders[] = []
      b.server.on('upgrade', (req: IncomingMessage) => upgrades.push(req.headers))
      const gw = await startGateway(t, `engine: ${engine}\ntrustedProxies: ${trusted}\nservices:\n${serviceYaml('svc', '/', [b], [g])}`)
      const port = gw.gateway.address.port
      const send = async (head: string): Promise<number> => (await rawRequest(port, head)).status
      const lines = ['host: gw.test', ...SPOOF].join('\r\n')
      t.equal(await send(`GET /a HTTP/1.1\r\n${lines}\r\n\r\n`), 200)
      // The fast engine hands chunked uploads and HTTP/1.0 to node:http.
      t.equal(await send(`POST /b HTTP/1.1\r\n${lines}\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`), 200)
      t.equal(await send(`GET /c HTTP/1.0\r\n${lines}\r\n\r\n`), 200)
      t.equal(b.seen.length, 3)
      for (const s of b.seen) {
        t.same(forwardingSeen(s.headers), want, `${s.method} ${s.url}`)
        t.same(aliasesSeen(s.headers), [], `${s.method} ${s.url}: no underscore spelling reaches the upstream`)
      }
      t.equal((await send(wsHandshake('/ws', SPOOF))), 101, 'the upgrade went through')
      t.equal(upgrades.length, 1)
      t.same(forwardingSeen(upgrades[0]), want, 'WebSocket upgrade')
      t.same(aliasesSeen(upgrades[0]), [], 'WebSocket upgrade: no underscore spelling')
      // Without any forwarding header, the gateway states what it saw, trusted or not.
      t.equal(await send('GET /d HTTP/1.1\r\nhost: gw.test\r\n\r\n'), 200)
      t.same(forwardingSeen(b.seen[3].headers), REPLACED, 'nothing sent: set')
    })
  }
}

// Empty forwarding lines from a trusted proxy: the fast engine joined
// `x-forwarded-proto:` + `x-forwarded-proto: https` into ', https' while
// node:http made it 'https'. One rule (proxy/trust.ts) drops empty list
// elements, the same on every engine.
const EMPTY_LINES = ['x-forwarded-proto:', 'x-forwarded-proto: https', 'x-forwarded-for:', 'x-forwarded-for: 203.0.113.9', 'x-forwarded-for: ',
  'x-forwarded-host: ', 'x-forwarded-host: shop.example', 'forwarded:', 'forwarded: for=203.0.113.9']
const CLEANED = { xff: '203.0.113.9, 127.0.0.1', proto: 'https', host: 'shop.example', forwarded: 'for=203.0.113.9, for=127.0.0.1' }

for (const engine of ['fast', 'node'] as const) {
  t.test(`${engine} engine: empty forwarding lines from a trusted proxy are left out`, async (t) => {
    const b = await startBackend(t, 'b')
    const upgrades: IncomingHttpHeaders[] = []
    b.server.on('upgrade', (req: IncomingMessage) => upgrades.push(req.headers))
    const gw = await startGateway(t, `engine: ${engine}\ntrustedProxies: [127.0.0.1]\nservices:\n${serviceYaml('svc', '/', [b], [b])}`)
    const port = gw.gateway.address.port
    const lines = ['host: gw.test', ...EMPTY_LINES].join('\r\n')
    t.equal((await rawRequest(port, `GET /a HTTP/1.1\r\n${lines}\r\n\r\n`)).status, 200)
    t.equal((await rawRequest(port, `GET /b HTTP/1.0\r\n${lines}\r\n\r\n`)).status, 200, 'HTTP/1.0 (handed over by the fast engine)')
    t.equal((await rawRequest(port, wsHandshake('/ws', EMPTY_LINES))).status, 101)
    t.equal(b.seen.length, 2)
    for (const s of b.seen) t.same(forwardingSeen(s.headers), CLEANED, `${s.method} ${s.url}`)
    t.same(forwardingSeen(upgrades[0]), CLEANED, 'WebSocket upgrade')
  })
}
