import t from 'tap'
import { admin, http1, serviceYaml, startBackend, startGateway } from './helpers/index.js'
import { rawRequest, wsHandshake } from './helpers/raw.js'

t.test('routes by longest path prefix on whole segments, 404 without a route', async (t) => {
  const [ub, ug, ob, og] = await Promise.all(['users-blue', 'users-green', 'api-blue', 'api-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:
${serviceYaml('users', '/api/users', [ub], [ug])}
${serviceYaml('api', '/api', [ob], [og])}`)
  t.equal((await http1(`${gw.url}/api/users`)).json.backend, 'users-blue')
  t.equal((await http1(`${gw.url}/api/users/7`)).json.backend, 'users-blue')
  t.equal((await http1(`${gw.url}/api/users?q=1`)).json.backend, 'users-blue')
  t.equal((await http1(`${gw.url}/api/usersx`)).json.backend, 'api-blue')
  t.equal((await http1(`${gw.url}/api`)).json.backend, 'api-blue')
  t.equal((await http1(`${gw.url}/api/users/7`)).json.path, '/api/users/7', 'the path is forwarded unchanged')
  const miss = await http1(`${gw.url}/other`)
  t.equal(miss.status, 404)
  t.same(miss.json, { error: 'no_route', message: 'no route matches this request' })
  t.equal(miss.headers['content-type'], 'application/json')
})

t.test('routes by host (port and case ignored) before host-less routes', async (t) => {
  const [hb, hg, cb, cg] = await Promise.all(['host-blue', 'host-green', 'catch-blue', 'catch-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:
  shop:
    match: { host: shop.example.com }
    blue: { targets: [${hb.url}] }
    green: { targets: [${hg.url}] }
  shopapi:
    match: { host: shop.example.com, pathPrefix: /api }
    blue: { targets: [${cb.url}] }
    green: { targets: [${cg.url}] }
  rest:
    match: { pathPrefix: /api/long/prefix }
    blue: { targets: [${cb.url}] }
    green: { targets: [${cg.url}] }
`)
  const get = async (host: string, path: string): Promise<{ status: number, backend?: string, path?: string }> => {
    const r = await http1(gw.url + path, { headers: { host } })
    return { status: r.status, backend: r.json?.backend, path: r.json?.path }
  }
  t.same(await get('shop.example.com', '/'), { status: 200, backend: 'host-blue', path: '/' })
  t.same(await get('SHOP.example.com:8080', '/x'), { status: 200, backend: 'host-blue', path: '/x' })
  t.same(await get('shop.example.com.', '/y'), { status: 200, backend: 'host-blue', path: '/y' }, 'a trailing dot names the same host')
  t.same(await get('shop.example.com.:8080', '/z'), { status: 200, backend: 'host-blue', path: '/z' }, 'and with a port')
  t.equal((await get('shop.example.com', '/api/1')).backend, 'catch-blue', 'longest prefix within the host')
  t.equal((await get('shop.example.com', '/api/long/prefix')).backend, 'catch-blue', 'a host route wins over a longer host-less one')
  t.equal((await get('other.example.com', '/api/long/prefix/1')).backend, 'catch-blue', 'host-less routes serve any host')
  t.equal((await get('other.example.com', '/')).status, 404)
})

t.test('round-robin over the targets of the live color', async (t) => {
  const [b1, b2, b3, g1] = await Promise.all(['b1', 'b2', 'b3', 'g1'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:
${serviceYaml('svc', '/', [b1, b2, b3], [g1])}`)
  const seen: string[] = []
  for (let i = 0; i < 9; i++) seen.push((await http1(`${gw.url}/x`)).json.backend)
  t.same(seen.filter((b) => b === 'b1').length, 3)
  t.same(seen.filter((b) => b === 'b2').length, 3)
  t.same(seen.filter((b) => b === 'b3').length, 3)
  t.notOk(seen.includes('g1'), 'never the idle color')
})

t.test('preview header and cookie pick a color strictly', async (t) => {
  const [b, g, ob] = await Promise.all(['blue', 'green', 'only-blue'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:
${serviceYaml('svc', '/svc', [b], [g], '    preview: { header: x-switchyard-color, cookie: switchyard-preview }\n')}
  solo:
    match: { pathPrefix: /solo }
    blue: { targets: [${ob.url}] }
    preview: { header: x-switchyard-color }
`)
  t.equal((await http1(`${gw.url}/svc`)).json.backend, 'blue')
  t.equal((await http1(`${gw.url}/svc`, { headers: { 'x-switchyard-color': 'green' } })).json.backend, 'green')
  t.equal((await http1(`${gw.url}/svc`, { headers: { 'x-switchyard-color': 'blue' } })).json.backend, 'blue')
  t.equal((await http1(`${gw.url}/svc`, { headers: { 'x-switchyard-color': 'purple' } })).json.backend, 'blue', 'an invalid value is ignored')
  t.equal((await http1(`${gw.url}/svc`, { headers: { cookie: 'a=1; switchyard-preview=green; b=2' } })).json.backend, 'green')
  t.equal((await http1(`${gw.url}/svc`, { headers: { cookie: 'switchyard-preview=nope' } })).json.backend, 'blue')
  // After a flip, preview still addresses a color, not "the other one".
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['svc'] })).status, 200)
  t.equal((await http1(`${gw.url}/svc`)).json.backend, 'green')
  t.equal((await http1(`${gw.url}/svc`, { headers: { 'x-switchyard-color': 'blue' } })).json.backend, 'blue')
  // A preview of a color that cannot serve is a 503, never a fall-back to live.
  const r = await http1(`${gw.url}/solo`, { headers: { 'x-switchyard-color': 'green' } })
  t.equal(r.status, 503)
  t.equal(r.json.error, 'no_healthy_upstream')
  t.match(r.json.message, /solo \(green\)/)
})

// SPEC Routing: a preview header on two lines, or a routing header named in
// Connection, is refused the same way on every engine (before: the fast
// engine took the first line or ignored the hop-by-hop one, node:http joined
// the lines or used it, so one request reached different colors).
for (const engine of ['fast', 'node'] as const) {
  t.test(`${engine} engine: ambiguous routing headers are refused with 400`, async (t) => {
    const [b, g, sb, sg] = await Promise.all(['blue', 'green', 'sticky-blue', 'sticky-green'].map(async (n) => await startBackend(t, n)))
    const gw = await startGateway(t, `engine: ${engine}
services:
${serviceYaml('svc', '/svc', [b], [g], '    preview: { header: x-switchyard-color, cookie: switchyard-preview }\n')}
${serviceYaml('pinned', '/pinned', [sb], [sg], '    sticky: { cookie: switchyard-color }\n')}`)
    const port = gw.gateway.address.port
    const ask = async (path: string, lines: string[], version = '1.1'): Promise<{ status: number, backend?: string, error?: string, message?: string }> => {
      const r = await rawRequest(port, [`GET ${path} HTTP/${version}`, 'host: gw.test', ...lines, '', ''].join('\r\n'))
      return { status: r.status, backend: r.json?.backend, error: r.json?.error, message: r.json?.message }
    }
    const refused = (message: string): object => ({ status: 400, backend: undefined, error: 'bad_request', message })
    const twice = 'the x-switchyard-color header appears more than once'
    // HTTP/1.0 is what the fast engine hands to node:http: the same answers there.
    for (const version of ['1.1', '1.0']) {
      t.same(await ask('/svc', ['x-switchyard-color: green', 'x-switchyard-color: blue'], version), refused(twice), `two colors, HTTP/${version}`)
      t.same(await ask('/svc', ['x-switchyard-color: green', 'X-Switchyard-Color: green'], version), refused(twice), `the same color twice, HTTP/${version}`)
      t.same(await ask('/svc', ['connection: x-switchyard-color', 'x-switchyard-color: green'], version), refused('Connection names x-switchyard-color, which routes this request'), `preview header named in Connection, HTTP/${version}`)
      t.same(await ask('/svc', ['connection: keep-alive, Cookie', 'cookie: switchyard-preview=green'], version), refused('Connection names cookie, which routes this request'), `preview cookie named in Connection, HTTP/${version}`)
      t.same(await ask('/pinned', ['connection: cookie', 'cookie: switchyard-color=green'], version), refused('Connection names cookie, which routes this request'), `sticky cookie named in Connection, HTTP/${version}`)
      // Clear requests still route as before.
      t.same(await ask('/svc', ['x-switchyard-color: green'], version), { status: 200, backend: 'green', error: undefined, message: undefined }, `one preview header, HTTP/${version}`)
      t.same(await ask('/svc', ['cookie: switchyard-preview=green', 'cookie: a=1'], version), { status: 200, backend: 'green', error: undefined, message: undefined }, `cookies on two lines, HTTP/${version}`)
      t.same(await ask('/svc', ['connection: x-other', 'x-switchyard-color: green'], version), { status: 200, backend: 'green', error: undefined, message: undefined }, `another header named in Connection, HTTP/${version}`)
    }
    const ws = await rawRequest(port, wsHandshake('/svc/ws', ['x-switchyard-color: green', 'x-switchyard-color: blue']))
    t.same([ws.status, ws.json?.error], [400, 'bad_request'], 'a WebSocket upgrade with two preview headers')
    t.same([b.seen.length, g.seen.length, sb.seen.length, sg.seen.length], [0, 6, 0, 0], 'only the clear requests reached an upstream')
  })
}
