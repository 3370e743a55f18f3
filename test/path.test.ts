// Path normalization before routing (issue 10, "Routing on the raw path"):
// the normalizer alone, then both engines, the fast engine's hand-over to
// node:http and WebSocket upgrades.

import t from 'tap'
import type { IncomingMessage } from 'node:http'
import { normalizeTarget } from '../src/routing/path.js'
import { serviceYaml, startBackend, startGateway, type Backend } from './helpers/index.js'
import { rawRequest, wsHandshake } from './helpers/raw.js'

t.test('normalizeTarget: dot-segments, %2e, repeated slashes; the query as sent', async (t) => {
  const cases: Array<[string, string | undefined]> = [
    ['/api/users/7', '/api/users/7'],
    ['/', '/'],
    ['/api/users/../orders/7', '/api/orders/7'],
    ['/api/users/%2e%2e/orders/7', '/api/orders/7'],
    ['/api/users/%2E%2e/orders/7', '/api/orders/7'],
    ['/api/users/.%2E/orders/7', '/api/orders/7'],
    ['/api/users/%2e./orders/7', '/api/orders/7'],
    ['/api/./users/%2e/7', '/api/users/7'],
    ['/api//users///7', '/api/users/7'],
    ['//api/users', '/api/users'],
    ['//', '/'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/a/b/', '/a/b/'],
    ['/a/..', '/'],
    ['/a/b/../../c', '/c'],
    ['/a/b/..?x=/../y', '/a/?x=/../y'],
    ['/api/users/./7?next=/../a//b', '/api/users/7?next=/../a//b'],
    ['/api/users?next=/../orders', '/api/users?next=/../orders'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/...', '/a/...'],
    ['/a/..b/c', '/a/..b/c'],
    ['/a/%2e%2e%2e/c', '/a/.../c'],
    ['/a/%2ex', '/a/.x'],
    // RFC 3986 6.2.2.2: percent-encoded unreserved characters are decoded (Go, servlets and WSGI decode them all).
    ['/api/%75sers/7', '/api/users/7'],
    ['/api/U%53ERS/%37', '/api/USERS/7'],
    ['/api/users/%7E%41%2d%5F', '/api/users/~A-_'],
    ['/api/users/%2F%3f%25%20%C3%A9', '/api/users/%2F%3f%25%20%C3%A9'],
    ['/api/users?x=%41', '/api/users?x=%41'],
    ['/a%2fb?x=%41', '/a%2fb?x=%41'],
    ['/a/%2E%2e%2f', '/a/..%2f'],
    ['/api/users/..%2Forders/7', '/api/users/..%2Forders/7'],
    // WHATWG URL (Node's `new URL`, so many upstreams) and Envoy read `\` as `/` in a path.
    ['/api/users/..\\orders/7', '/api/orders/7'],
    ['/a\\..\\b', '/b'],
    ['/api\\users', '/api/users'],
    ['/api/users?next=a\\..\\b', '/api/users?next=a\\..\\b'],
    ['/api/users\\', '/api/users/'],
    // Tomcat and Spring drop `;params` from a segment before resolving dot-segments.
    ['/api/users/..;/orders/7', '/api/orders/7'],
    ['/api/users/..;jsessionid=1/orders', '/api/orders'],
    ['/api/users/%2e%2e;x/orders', '/api/orders'],
    ['/a/.;x/b', '/a/b'],
    ['/a/;/b', '/a/;/b'],
    ['/a/b;x/../c', '/a/c'],
    ['/..;/x', undefined],
    ['/api/users/%252e%252e/orders', '/api/users/%252e%252e/orders'],
    ['/..', undefined],
    ['/../api/users', undefined],
    ['/api/../..', undefined],
    ['/api/%2e%2e/%2e%2e/x', undefined],
  ]
  for (const [input, want] of cases) t.equal(normalizeTarget(input), want, input)
  const plain = '/api/users/7?q=1'
  t.equal(normalizeTarget(plain), plain, 'nothing to do: the same string back')
})

/** Backends for users and orders, each recording the upgrades it gets. */
async function services (t: Parameters<typeof startBackend>[0]): Promise<{ users: Backend, orders: Backend, upgrades: Array<{ backend: string, url: string }> }> {
  const [users, orders] = await Promise.all(['users-blue', 'orders-blue'].map(async (n) => await startBackend(t, n)))
  const upgrades: Array<{ backend: string, url: string }> = []
  for (const b of [users, orders]) b.server.on('upgrade', (req: IncomingMessage) => upgrades.push({ backend: b.name, url: req.url ?? '' }))
  return { users, orders, upgrades }
}

for (const engine of ['fast', 'node'] as const) {
  t.test(`${engine} engine: the normalized path is routed and forwarded`, async (t) => {
    const { users, orders, upgrades } = await services(t)
    const idle = await startBackend(t, 'idle')
    const gw = await startGateway(t, `engine: ${engine}
services:
${serviceYaml('users', '/api/users', [users], [idle])}
${serviceYaml('orders', '/api/orders', [orders], [idle])}`)
    const port = gw.gateway.address.port
    const get = async (target: string, version = '1.1'): Promise<{ status: number, backend?: string, path?: string, error?: string }> => {
      const r = await rawRequest(port, `GET ${target} HTTP/${version}\r\nhost: gw.test\r\nconnection: close\r\n\r\n`)
      return { status: r.status, backend: r.json?.backend, path: r.json?.path, error: r.json?.error }
    }
    // HTTP/1.0 is handed over to node:http by the fast engine: the same rule there.
    for (const version of ['1.1', '1.0']) {
      t.same(await get('/api/users/../orders/7', version), { status: 200, backend: 'orders-blue', path: '/api/orders/7' }, `dot-dot, HTTP/${version}`)
      t.same(await get('/api/users/%2e%2e/orders/7', version), { status: 200, backend: 'orders-blue', path: '/api/orders/7' }, `%2e%2e, HTTP/${version}`)
      t.same(await get('/api/users/..\\orders/7', version), { status: 200, backend: 'orders-blue', path: '/api/orders/7' }, `backslash as a slash, HTTP/${version}`)
      t.same(await get('/api/users/..;/orders/7', version), { status: 200, backend: 'orders-blue', path: '/api/orders/7' }, `..; (Tomcat), HTTP/${version}`)
      t.same(await get('/api/%6frders/%37', version), { status: 200, backend: 'orders-blue', path: '/api/orders/7' }, `encoded unreserved characters, HTTP/${version}`)
      t.same(await get('/api//users/./7?next=/../orders', version), { status: 200, backend: 'users-blue', path: '/api/users/7?next=/../orders' }, `slashes and dot, the query untouched, HTTP/${version}`)
      t.same(await get('/api/users/7', version), { status: 200, backend: 'users-blue', path: '/api/users/7' }, `a plain path as sent, HTTP/${version}`)
      t.same(await get('/..', version), { status: 400, backend: undefined, path: undefined, error: 'bad_request' }, `above the root, HTTP/${version}`)
      t.same(await get('/api/%2e%2e/../orders', version), { status: 400, backend: undefined, path: undefined, error: 'bad_request' }, `above the root, encoded, HTTP/${version}`)
    }
    const r = await rawRequest(port, 'POST /api/orders/../users/1 HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n')
    t.same([r.status, r.json?.backend, r.json?.path, r.json?.body], [200, 'users-blue', '/api/users/1', 'abc'], 'a chunked upload (handed over by the fast engine)')
    const paths = [...users.seen, ...orders.seen].map((s) => s.url.split('?')[0])
    t.equal(paths.length, 15, 'every routed request reached an upstream')
    t.same(paths.filter((p) => /\/(\.|%2e)|\/\/|\\|%6f/i.test(p)), [], 'none with a dot-segment, a double slash, a backslash or an encoded letter in its path')

    const ws = await rawRequest(port, wsHandshake('/api/users/%2e%2e/orders/socket'))
    t.equal(ws.status, 101, 'the upgrade went through')
    t.same(upgrades, [{ backend: 'orders-blue', url: '/api/orders/socket' }], 'to orders, with the normalized target')
    t.equal((await rawRequest(port, wsHandshake('/api/users/..\\orders/socket2'))).status, 101, 'an upgrade with a backslash went through')
    t.same(upgrades[1], { backend: 'orders-blue', url: '/api/orders/socket2' }, 'to orders, the backslash read as a slash')
    const refused = await rawRequest(port, wsHandshake('/api/../../socket'))
    t.equal(refused.status, 400, 'an upgrade above the root is refused')
    t.equal(upgrades.length, 2)
  })
}
