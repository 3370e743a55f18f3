// Attacks on generation-pinned call chains (issue 16): spoofing the entry
// from outside `trust`, leaking a client's entry to an upstream on any path,
// routing by kept snapshots across reloads and flip storms, exact counts,
// and the bounds on what is kept.

import t from 'tap'
import http, { type IncomingMessage } from 'node:http'
import http2 from 'node:http2'
import net, { type AddressInfo } from 'node:net'
import { writeFileSync } from 'node:fs'
import { h2Request, h2Session } from './helpers/h2.js'
import { admin, configFile, eventually, http1, isAlive, listening, serve, startGateway, type TestGateway } from './helpers/index.js'
import { exchange, rawRequest, wsHandshake } from './helpers/raw.js'
import { gate, pinCounts, seenAt, startColor } from './helpers/chain.js'
import { MAX_KEPT } from '../src/routing/pinning.js'
import { MAX_HEAD } from '../src/proxy/limits.js'

const ENGINES = ['fast', 'node'] as const

interface Teardown { teardown: (fn: () => unknown) => void }

/** One request as an upstream got it: its path and every baggage line, exactly as sent (name case kept). */
interface Got { path: string, baggage: Array<[string, string]> }

interface Recorder {
  url: string
  name: string
  got: Got[]
  /** What reached `path` (health probes left out). */
  at: (path: string) => Got[]
  /** Connections open on it now. */
  open: () => number
  /** Set: GET /healthz answers 503 (the target goes bad for the probes, and serves the rest). */
  failHealth: boolean
}

function baggageLines (raw: readonly string[]): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === 'baggage') out.push([raw[i], raw[i + 1]])
  return out
}

/**
 * An upstream of one color that records every baggage line of each request
 * (node:http's rawHeaders: duplicates and case kept), HTTP/1.1 or h2c, and
 * answers `{backend, baggage}` (the lines' values).
 */
async function recorder (t: Teardown, name: string, protocol: 'http1' | 'h2c' = 'http1'): Promise<Recorder> {
  const got: Got[] = []
  let open = 0
  const record = (path: string, raw: readonly string[]): string => {
    const lines = baggageLines(raw)
    got.push({ path, baggage: lines })
    return JSON.stringify({ backend: name, baggage: lines.map(([, v]) => v) })
  }
  let server: http.Server | http2.Http2Server
  const rec: Recorder = { url: '', name, got, at: (path) => got.filter((g) => g.path === path), open: () => open, failHealth: false }
  if (protocol === 'h2c') {
    const h2 = http2.createServer()
    h2.on('stream', (stream, headers, _flags, rawHeaders) => {
      stream.on('error', () => {})
      const body = record(String(headers[':path']), rawHeaders)
      stream.respond({ ':status': 200, 'content-type': 'application/json' })
      stream.end(body)
    })
    server = h2
  } else {
    server = http.createServer((req: IncomingMessage, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(req.url === '/healthz' && rec.failHealth ? 503 : 200, { 'content-type': 'application/json' })
        res.end(record(req.url ?? '', req.rawHeaders))
      })
    })
  }
  server.on('connection', (s) => { open++; s.on('close', () => { open-- }) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  rec.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(async () => {
    if (server instanceof http.Server) server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return rec
}

async function generation (gw: TestGateway): Promise<number> {
  return (await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation as number
}

async function flip (gw: TestGateway, services: string[], to: 'blue' | 'green'): Promise<number> {
  const r = await admin(gw.adminUrl, 'POST', '/v1/flip', { services, to, guard: false })
  if (r.status !== 200) throw new Error(`flip: ${r.status} ${r.text}`)
  return r.json.generation as number
}

/** Writes a new config for the gateway and reloads it; returns the new generation. */
async function reload (gw: TestGateway, yaml: string): Promise<number> {
  writeFileSync(gw.configFile, `log: { access: false }\n${yaml}`)
  const r = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
  if (r.status !== 200) throw new Error(`reload: ${r.status} ${r.text}`)
  return r.json.generation as number
}

/** The kept generations /v1/state shows, [generation, pinned]. */
async function kept (gw: TestGateway): Promise<Array<[number, number]>> {
  const s = (await admin(gw.adminUrl, 'GET', '/v1/state')).json
  return s.pinning.kept.map((k: any) => [k.generation, k.pinned])
}

const usersYaml = (engine: string, pinning: string, blue: Recorder, green: Recorder, protocol = 'http1', extra = ''): string => `engine: ${engine}
${pinning}
${extra}services:
  users:
    match: { pathPrefix: /users }
    protocol: ${protocol}
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
`

t.test('DEFECT: fast engine: a request pinned to a generation whose service spoke h2c (HTTP/1.1 since a reload) is counted once', async (t) => {
  const h2blue = await recorder(t, 'h2-blue', 'h2c')
  const h2green = await recorder(t, 'h2-green', 'h2c')
  const h1blue = await recorder(t, 'h1-blue')
  const h1green = await recorder(t, 'h1-green')
  const pinning = 'pinning: { keep: 5m, trust: [127.0.0.0/8] }'
  const gw = await startGateway(t, usersYaml('fast', pinning, h2blue, h2green, 'h2c'))
  const before = await generation(gw)
  // The team moves users to HTTP/1.1 targets: a reload, one generation on.
  const after = await reload(gw, usersYaml('fast', pinning, h1blue, h1green))
  t.equal(after, before + 1)
  const pinned = await http1(`${gw.url}/users/me`, { headers: { baggage: `switchyard-gen=${before}` } })
  t.equal(pinned.json.backend, 'h2-blue', 'routed by the kept generation, over h2c')
  t.strictSame(pinned.json.baggage, [`switchyard-gen=${before}`])
  t.strictSame(await pinCounts(gw.adminUrl), { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }, 'one request, counted once')
  t.strictSame(await kept(gw), [[before, 1]], 'the kept generation served one pinned request')
})

/** The members of a baggage value whose key (trimmed) is ours. */
const ours = (value: string): string[] => value.split(',').filter((m) => {
  const eq = m.indexOf('=')
  return (eq === -1 ? m : m.slice(0, eq)).trim() === 'switchyard-gen'
})

const FORMS = [
  { trusted: false, name: 'an entry from outside trust pins nothing and never reaches the upstream, whatever form the request takes' },
  // The control: the same requests from a trusted peer do pin (so the one above is not passing on requests never read).
  { trusted: true, name: 'the same requests from a trusted peer pin, each counted once, and go on with the kept generation\'s entry alone' },
]

for (const engine of ENGINES) for (const { trusted, name } of FORMS) {
  t.test(`${engine}: ${name}`, async (t) => {
    const blue = await recorder(t, 'blue')
    const green = await recorder(t, 'green')
    // The client's proxy is trusted for X-Forwarded-For; pinning trusts only 10.0.0.0/8 and ::1, which the X-Forwarded-For names.
    const trust = trusted ? '127.0.0.0/8' : '10.0.0.0/8, "::1/128"'
    const gw = await startGateway(t, usersYaml(engine, `pinning: { keep: 5m, trust: [${trust}] }`, blue, green, 'http1', 'trustedProxies: [127.0.0.0/8]\n'))
    const before = await generation(gw)
    const after = await flip(gw, ['users'], 'green')
    const port = Number(new URL(gw.url).port)
    const forged = `switchyard-gen=${before}`
    const raw = async (what: string, text: string): Promise<void> => {
      const got = await exchange(port, text, (s) => s.includes('"backend"') && s.endsWith('}'))
      t.match(got, /^HTTP\/1\.[01] (100 Continue\r\n\r\nHTTP\/1\.[01] )?200 /, `${what}: answered`)
    }
    await raw('X-Forwarded-For naming a trusted address', `GET /users/xff HTTP/1.1\r\nhost: gw\r\nx-forwarded-for: 10.1.2.3\r\nbaggage: ${forged}\r\nconnection: close\r\n\r\n`)
    await raw('Forwarded naming a trusted address', `GET /users/fwd HTTP/1.1\r\nhost: gw\r\nforwarded: for=10.1.2.3\r\nx-real-ip: 10.1.2.3\r\nbaggage: ${forged}\r\nconnection: close\r\n\r\n`)
    await raw('X-Forwarded-For naming ::1', `GET /users/xff6 HTTP/1.1\r\nhost: gw\r\nx-forwarded-for: ::1\r\nbaggage: ${forged}\r\nconnection: close\r\n\r\n`)
    await raw('a chunked body', `POST /users/chunked HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\nBaggage: a=1\r\nbaggage: ${forged}\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`)
    await raw('Expect: 100-continue', `POST /users/expect HTTP/1.1\r\nhost: gw\r\nexpect: 100-continue\r\ncontent-length: 3\r\nBAGGAGE: ${forged}\r\nconnection: close\r\n\r\nabc`)
    await raw('HTTP/1.0', `GET /users/http10 HTTP/1.0\r\nhost: gw\r\nbaggage: k=v, ${forged}\r\n\r\n`)
    await raw('OWS and tabs around the key', `GET /users/ows HTTP/1.1\r\nhost: gw\r\nbaggage: \t switchyard-gen \t=\t${before}\t, x=1\r\nconnection: close\r\n\r\n`)
    await raw('leading zeros', `GET /users/zeros HTTP/1.1\r\nhost: gw\r\nbaggage: switchyard-gen=000${before}\r\nconnection: close\r\n\r\n`)
    // Pipelined on one connection: the middle one alone forges.
    const pipelined = await exchange(port, [
      'GET /users/p1 HTTP/1.1\r\nhost: gw\r\n\r\n',
      `GET /users/p2 HTTP/1.1\r\nhost: gw\r\nbaggage: ${forged}\r\n\r\n`,
      'GET /users/p3 HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n',
    ].join(''))
    t.equal(pipelined.split('HTTP/1.1 200 ').length - 1, 3, 'three pipelined answers')
    // An h2c client.
    const h2 = await h2Request(h2Session(t, gw.url), '/users/h2', { baggage: ['a=1', forged] })
    t.equal(h2.status, 200)

    const paths = ['/users/xff', '/users/fwd', '/users/xff6', '/users/chunked', '/users/expect', '/users/http10', '/users/ows', '/users/zeros', '/users/p1', '/users/p2', '/users/p3', '/users/h2']
    const none = ['/users/p1', '/users/p3']
    for (const path of paths) {
      const pins = trusted && !none.includes(path)
      const got = (pins ? blue : green).at(path)
      t.equal(got.length, 1, `${path}: reached ${pins ? 'blue (pinned)' : 'green'} once`)
      t.equal((pins ? green : blue).at(path).length, 0, `${path}: and nothing reached the other color`)
      t.equal(got[0]?.baggage.length, 1, `${path}: one baggage line upstream: ${JSON.stringify(got[0]?.baggage)}`)
      t.strictSame(ours(got[0]?.baggage[0]?.[1] ?? ''), [`switchyard-gen=${pins ? before : after}`], `${path}: the gateway's entry alone`)
    }
    const n = paths.length - none.length
    t.strictSame(await pinCounts(gw.adminUrl), { pinned: trusted ? n : 0, expired: 0, untrusted: trusted ? 0 : n, invalid: 0, unavailable: 0 }, 'every request with an entry counted, once')
    if (trusted) t.strictSame(await kept(gw), [[before, n]], 'each pinned request counted on the kept generation')
  })
}

for (const engine of ENGINES) {
  t.test(`${engine}: a reload that replaces a color's target keeps the old one open while a generation routing to it is kept, and closes it after`, async (t) => {
    const a = await recorder(t, 'A')
    const b = await recorder(t, 'B')
    const c = await recorder(t, 'C')
    const pinning = 'pinning: { keep: 1500ms, trust: [127.0.0.0/8] }'
    const gw = await startGateway(t, usersYaml(engine, pinning, a, b))
    const g0 = await generation(gw)
    await flip(gw, ['users'], 'green')
    t.equal((await http1(`${gw.url}/users/one`, { headers: { baggage: `switchyard-gen=${g0}` } })).json.backend, 'A', 'pinned to the generation before the flip: blue, target A')
    t.equal(a.open(), 1, 'the gateway holds a connection to A')
    // Blue's target A is replaced by C: no current snapshot routes to A any more.
    const g2 = await reload(gw, usersYaml(engine, pinning, c, b))
    t.equal(a.open(), 1, 'A\'s connection stays open: kept generations route to it')
    const two = await http1(`${gw.url}/users/two`, { headers: { baggage: `switchyard-gen=${g0}` } })
    t.equal(two.json.backend, 'A', 'a chain pinned to the first generation still reaches A after the reload')
    t.strictSame(two.json.baggage, [`switchyard-gen=${g0}`])
    t.equal(c.at('/users/two').length, 0)
    // Once keep has passed for every generation that routed to A, its connection goes, with no request to make it.
    await eventually(() => a.open() === 0, { timeout: 5000, interval: 25 })
    t.equal(a.open(), 0, 'closed after keep')
    const late = await http1(`${gw.url}/users/three`, { headers: { baggage: `switchyard-gen=${g0}` } })
    t.equal(late.json.backend, 'B', 'past keep the current snapshot routes it (green)')
    t.strictSame(late.json.baggage, [`switchyard-gen=${g2}`])
    t.strictSame(await pinCounts(gw.adminUrl), { pinned: 2, expired: 1, untrusted: 0, invalid: 0, unavailable: 0 })
    t.strictSame(await kept(gw), [], 'nothing kept')
  })
}

t.test(`a flip storm keeps the newest ${MAX_KEPT} generations, each routing by its own colors; older ones fall back and are counted expired`, async (t) => {
  const blue = await recorder(t, 'blue')
  const green = await recorder(t, 'green')
  const gw = await startGateway(t, usersYaml('fast', 'pinning: { keep: 5m, trust: [127.0.0.0/8] }', blue, green))
  const g0 = await generation(gw)
  const flips = MAX_KEPT + 6
  let last = g0
  for (let i = 1; i <= flips; i++) last = await flip(gw, ['users'], i % 2 === 1 ? 'green' : 'blue')
  t.equal(last, g0 + flips, 'one generation per flip')
  const colorAt = (g: number): string => (g - g0) % 2 === 1 ? 'green' : 'blue'
  const list = await kept(gw)
  t.equal(list.length, MAX_KEPT, `${MAX_KEPT} kept`)
  t.strictSame(list.map(([g]) => g), Array.from({ length: MAX_KEPT }, (_, i) => last - 1 - i), 'the newest, newest first')
  const current = colorAt(last)
  let pinned = 0
  let expired = 0
  for (let g = g0; g <= last; g++) {
    const r = await http1(`${gw.url}/users/g${g}`, { headers: { baggage: `switchyard-gen=${g}` } })
    const isKept = g === last || g >= last - MAX_KEPT
    if (isKept) pinned++
    else expired++
    t.equal(r.json.backend, isKept ? colorAt(g) : current, `generation ${g}: ${isKept ? 'its own color' : 'not kept: the current color'}`)
    t.strictSame(r.json.baggage, [`switchyard-gen=${isKept ? g : last}`])
  }
  t.strictSame(await pinCounts(gw.adminUrl), { pinned, expired, untrusted: 0, invalid: 0, unavailable: 0 })
  t.ok((await kept(gw)).every(([, n]) => n === 1), 'each kept generation served its one request')
})

for (const engine of ENGINES) {
  t.test(`${engine}: counts are exact under concurrency (HTTP/1.1 and HTTP/2 at once)`, async (t) => {
    const blue = await recorder(t, 'blue')
    const green = await recorder(t, 'green')
    const gw = await startGateway(t, usersYaml(engine, 'pinning: { keep: 5m, trust: [127.0.0.0/8] }', blue, green))
    const g0 = await generation(gw)
    const g1 = await flip(gw, ['users'], 'green')
    const kinds = [
      { baggage: `a=1,switchyard-gen=${g0}`, backend: 'blue' },
      { baggage: `switchyard-gen=${g1}`, backend: 'green' },
      { baggage: 'switchyard-gen=424242', backend: 'green' },
      { baggage: 'switchyard-gen=-1', backend: 'green' },
      { baggage: 'x=1', backend: 'green' },
    ]
    const session = h2Session(t, gw.url)
    const each = 40
    const all: Array<Promise<void>> = []
    for (let i = 0; i < each; i++) {
      kinds.forEach((k, j) => {
        const path = `/users/c${i}-${j}`
        all.push((async () => {
          const backend = i % 2 === 0
            ? (await http1(`${gw.url}${path}`, { headers: { baggage: k.baggage } })).json.backend
            : JSON.parse((await h2Request(session, path, { baggage: k.baggage })).body.toString()).backend
          if (backend !== k.backend) throw new Error(`${path}: ${String(backend)}, not ${k.backend}`)
        })())
      })
    }
    await Promise.all(all)
    t.pass(`${all.length} requests, each on its color`)
    t.strictSame(await pinCounts(gw.adminUrl), { pinned: 2 * each, expired: each, untrusted: 0, invalid: each, unavailable: 0 })
    t.strictSame(await kept(gw), [[g0, each]], 'the kept generation counts its own')
  })
}

for (const engine of ENGINES) {
  t.test(`${engine}: with shadow traffic on, a copy carries the gateway's entry alone, and a request pinned to a kept generation is not copied`, async (t) => {
    const blue = await recorder(t, 'blue')
    const green = await recorder(t, 'green')
    const gw = await startGateway(t, usersYaml(engine, 'pinning: { keep: 5m, trust: [127.0.0.0/8] }', blue, green).replace('    protocol: http1\n', '    protocol: http1\n    shadow: { sample: 1 }\n'))
    const g0 = await generation(gw)
    const g1 = await flip(gw, ['users'], 'green')
    // Live green, idle blue: a copy of what green serves goes to blue.
    const unknown = await http1(`${gw.url}/users/copied`, { headers: { baggage: 'a=1, switchyard-gen=777' } })
    t.equal(unknown.json.backend, 'green')
    await eventually(() => blue.at('/users/copied').length === 1)
    const copy = blue.at('/users/copied')[0]
    t.equal(copy.baggage.length, 1, `the copy has one baggage line: ${JSON.stringify(copy.baggage)}`)
    t.strictSame(ours(copy.baggage[0][1]), [`switchyard-gen=${g1}`], 'the copy carries the gateway\'s entry, never the client\'s')
    t.strictSame(green.at('/users/copied')[0].baggage, copy.baggage, 'the same baggage as the live request')

    const pinned = await http1(`${gw.url}/users/pinned`, { headers: { baggage: `switchyard-gen=${g0}` } })
    t.equal(pinned.json.backend, 'blue', 'pinned to blue by the kept generation')
    // A copy made by the current snapshot's route would also reach blue: a marker request after it shows the copies are through.
    await http1(`${gw.url}/users/marker`)
    await eventually(() => blue.at('/users/marker').length === 1)
    t.equal(blue.at('/users/pinned').length, 1, 'blue got the pinned request once: no copy')
    t.equal(green.at('/users/pinned').length, 0, 'and green nothing')
    t.strictSame(await pinCounts(gw.adminUrl), { pinned: 1, expired: 1, untrusted: 0, invalid: 0, unavailable: 0 })
  })
}

/** An HTTP/1.1 upstream on raw sockets that records the size of each request head it gets (whatever its size) and answers 200, or 400 to an upgrade. */
async function headSizes (t: Teardown): Promise<{ url: string, heads: Array<{ path: string, bytes: number }> }> {
  const heads: Array<{ path: string, bytes: number }> = []
  const server = net.createServer((socket) => {
    let buf = ''
    socket.on('error', () => {})
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return
      const head = buf.slice(0, end + 4)
      buf = buf.slice(end + 4)
      heads.push({ path: head.split(' ')[1], bytes: head.length })
      socket.write(/\r\nupgrade:/i.test(head) ? 'HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n' : 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, heads }
}

for (const engine of ENGINES) {
  t.test(`DEFECT: ${engine}: a baggage near the head limit never makes the gateway send an upstream a head over ${MAX_HEAD} bytes (ordinary, WebSocket, h2c client): it answers 431 itself`, async (t) => {
    const up = await headSizes(t)
    const gw = await startGateway(t, `engine: ${engine}\npinning: { keep: 5m, trust: [127.0.0.0/8] }\nservices:\n  s:\n    match: { pathPrefix: / }\n    blue: { targets: [${up.url}] }\n    green: { targets: [${up.url}] }\n`)
    const port = Number(new URL(gw.url).port)
    const session = h2Session(t, gw.url)
    let refused = 0
    for (let room = 40; room <= 400; room += 40) {
      // A head of MAX_HEAD - room bytes as the client sends it, most of it baggage.
      const forms: Array<[string, (path: string, baggage: string) => Promise<number>]> = [
        ['ordinary', async (path, baggage) => (await rawRequest(port, `GET ${path} HTTP/1.1\r\nhost: gw\r\nbaggage: ${baggage}\r\nconnection: close\r\n\r\n`)).status],
        ['WebSocket', async (path, baggage) => (await rawRequest(port, wsHandshake(path, [`baggage: ${baggage}`]))).status],
        ['h2c client', async (path, baggage) => (await h2Request(session, path, { baggage })).status],
      ]
      for (const [what, send] of forms) {
        const path = `/${what.replace(/\W/g, '')}/${room}`
        const base = what === 'WebSocket' ? wsHandshake(path, ['baggage: ']).length : `GET ${path} HTTP/1.1\r\nhost: gw\r\nbaggage: \r\nconnection: close\r\n\r\n`.length
        const status = await send(path, `big=${'x'.repeat(MAX_HEAD - room - base - 4)}`)
        const sent = up.heads.filter((h) => h.path === path)
        if (status === 431) refused++
        else t.ok(sent.length === 1, `${what}, ${room} bytes short: forwarded (${status})`)
        for (const h of sent) t.ok(h.bytes <= MAX_HEAD, `${what}, ${room} bytes short of the limit: the upstream got ${h.bytes} bytes, within ${MAX_HEAD}`)
        if (status === 431) t.equal(sent.length, 0, `${what}, ${room} bytes short: refused with 431, nothing sent upstream`)
      }
    }
    t.ok(refused > 0, 'some were refused (the sweep reaches the limit)')
  })
}

for (const engine of ENGINES) {
  t.test(`${engine}: a pinned request on the old color is closed by its drain's deadline, and the drain ends; later pinned requests still reach it until keep`, async (t) => {
    const blue = await startColor(t, 'blue')
    const green = await startColor(t, 'green')
    const gw = await startGateway(t, `engine: ${engine}
pinning: { keep: 5m, trust: [127.0.0.0/8] }
services:
  users:
    match: { pathPrefix: /users }
    drain: { timeout: 400ms }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
`)
    const g0 = await generation(gw)
    const arrived = gate()
    const never = gate()
    blue.hold = { path: '/users/held', until: never.wait, arrived }
    // An ordinary request in flight on blue, so the flip's drain of blue does not end at once.
    const first = http1(`${gw.url}/users/held`).then((r) => r.status, (err: Error) => err.message)
    await arrived.wait
    await flip(gw, ['users'], 'green')
    const held = http1(`${gw.url}/users/held`, { headers: { baggage: `switchyard-gen=${g0}` } }).then((r) => r.status, (err: Error) => err.message)
    await eventually(() => seenAt(blue, '/users/held').length === 2)
    const env = async (): Promise<any> => (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.users.environments.blue
    t.match(await env(), { state: 'draining', inflight: 2 }, 'the pinned request counts in blue\'s drain')
    t.not(await first, 200, 'the deadline closed the ordinary request')
    const ended = await held
    t.not(ended, 200, `the drain deadline closed the pinned request (${String(ended)})`)
    const done = await eventually(async () => {
      const b = await env()
      if (b.state === 'draining') throw new Error('still draining')
      return b
    })
    t.match(done, { inflight: 0 }, 'the drain ended, nothing in flight')
    blue.hold = undefined
    const late = await http1(`${gw.url}/users/late`, { headers: { baggage: `switchyard-gen=${g0}` } })
    t.equal(late.json.backend, 'blue', 'a chain pinned before the flip still reaches the drained color until keep (as the README says)')
    t.strictSame(await pinCounts(gw.adminUrl), { pinned: 2, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 })
  })
}

t.test('serve: a kept generation\'s expiry timer (keep 1h) does not hold the process up at SIGTERM', async (t) => {
  const blue = await recorder(t, 'blue')
  const green = await recorder(t, 'green')
  const file = configFile(t, `pinning: { keep: 1h, trust: [127.0.0.0/8] }\nservices:\n  users:\n    match: { pathPrefix: /users }\n    blue: { targets: [${blue.url}] }\n    green: { targets: [${green.url}] }\n`)
  const p = serve(t, ['serve', '--config', file])
  const { port, admin: adminPort } = await listening(p)
  const adminUrl = `http://127.0.0.1:${adminPort}`
  const r = await admin(adminUrl, 'POST', '/v1/flip', { services: ['users'], to: 'green', guard: false })
  t.equal(r.status, 200, r.text)
  const pinned = await http1(`http://127.0.0.1:${port}/users/x`, { headers: { baggage: `switchyard-gen=${(r.json.generation as number) - 1}` } })
  t.equal(pinned.json.backend, 'blue', 'a generation is kept (its timer set for an hour)')
  const started = Date.now()
  p.kill('SIGTERM')
  t.equal(await p.exit, 0, 'exits 0')
  t.ok(Date.now() - started < 10_000, `and promptly (${Date.now() - started} ms)`)
})

t.test('DEFECT: a target only a kept generation routes to (a reload replaced it) is still probed: gone bad, a chain pinned to it falls back (unavailable) instead of reaching it', async (t) => {
  const a = await recorder(t, 'A')
  const b = await recorder(t, 'B')
  const c = await recorder(t, 'C')
  const pinning = 'pinning: { keep: 1500ms, trust: [127.0.0.0/8] }\ndefaults:\n  health: { interval: 100ms, timeout: 50ms, unhealthyThreshold: 1, healthyThreshold: 1 }'
  const gw = await startGateway(t, usersYaml('fast', pinning, a, b))
  const g0 = await generation(gw)
  // The flip's gate waits for green's first probes.
  await eventually(async () => await flip(gw, ['users'], 'green'))
  const g2 = await reload(gw, usersYaml('fast', pinning, c, b))
  t.equal((await http1(`${gw.url}/users/one`, { headers: { baggage: `switchyard-gen=${g0}` } })).json.backend, 'A', 'pinned to A while it is healthy')
  // A goes bad (its environment scaled down, say): the probes must still see it while a kept generation routes to it.
  a.failHealth = true
  const probes = a.at('/healthz').length
  const seen = await eventually(() => a.at('/healthz').length >= probes + 2, { timeout: 1000, interval: 20 }).then(() => true, () => false)
  t.ok(seen, 'A is still probed after the reload')
  const r = await http1(`${gw.url}/users/two`, { headers: { baggage: `switchyard-gen=${g0}` } })
  t.equal(r.json.backend, 'B', 'the pinned request falls back to the current color')
  t.strictSame(r.json.baggage, [`switchyard-gen=${g2}`])
  t.strictSame(await pinCounts(gw.adminUrl), { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 1 })
  // Once no kept generation routes to A, its probes stop with its connections.
  await eventually(() => a.open() === 0, { timeout: 5000, interval: 25 })
  const stopped = a.at('/healthz').length
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.ok(a.at('/healthz').length <= stopped + 1, `no probes of A after keep (${a.at('/healthz').length - stopped} in 500 ms)`)
})

for (const engine of ENGINES) {
  t.test(`${engine}: an h2c upstream gets a baggage near the head limit with the gateway's entry, or the client gets 431: never an upstream error`, async (t) => {
    const up = await recorder(t, 'h2', 'h2c')
    const gw = await startGateway(t, `engine: ${engine}\npinning: { keep: 5m, trust: [127.0.0.0/8] }\nservices:\n  s:\n    match: { pathPrefix: / }\n    protocol: h2c\n    blue: { targets: [${up.url}] }\n    green: { targets: [${up.url}] }\n`)
    const g = await generation(gw)
    const port = Number(new URL(gw.url).port)
    const session = h2Session(t, gw.url)
    for (let room = 40; room <= 400; room += 40) {
      const path = `/h1/${room}`
      const base = `GET ${path} HTTP/1.1\r\nhost: gw\r\nbaggage: \r\nconnection: close\r\n\r\n`.length
      const baggage = `big=${'x'.repeat(MAX_HEAD - room - base - 4)}`
      const h1 = await rawRequest(port, `GET ${path} HTTP/1.1\r\nhost: gw\r\nbaggage: ${baggage}\r\nconnection: close\r\n\r\n`)
      t.ok(h1.status === 200 || h1.status === 431, `HTTP/1.1 client, ${room} bytes short: ${h1.status}`)
      if (h1.status === 200) t.strictSame(h1.json.baggage, [`${baggage},switchyard-gen=${g}`])
      const h2 = await h2Request(session, `/h2/${room}`, { baggage })
      t.ok(h2.status === 200 || h2.status === 431, `h2c client, ${room} bytes short: ${h2.status}`)
    }
  })
}

for (const engine of ENGINES) {
  t.test(`DEFECT: ${engine}: baggage the client names in Connection (hop-by-hop) is the gateway's to read, never forwarded: the upstream gets the gateway's entry alone, as it gets nothing of it with pinning off`, async (t) => {
    const blue = await recorder(t, 'blue')
    const green = await recorder(t, 'green')
    const off = await startGateway(t, usersYaml(engine, '', blue, green))
    const port = (gw: TestGateway): number => Number(new URL(gw.url).port)
    const send = async (gw: TestGateway, path: string, baggage: string): Promise<void> => {
      const r = await rawRequest(port(gw), `GET ${path} HTTP/1.1\r\nhost: gw\r\nconnection: close, baggage\r\nbaggage: ${baggage}\r\n\r\n`)
      t.equal(r.status, 200, `${path}: answered`)
    }
    await send(off, '/users/off', 'secret=1')
    t.strictSame(blue.at('/users/off')[0]?.baggage, [], 'pinning off: the hop-by-hop baggage is not forwarded')

    const on = await startGateway(t, usersYaml(engine, 'pinning: { keep: 5m, trust: [127.0.0.0/8] }', blue, green))
    const g0 = await generation(on)
    await send(on, '/users/on', 'secret=1')
    t.strictSame(blue.at('/users/on')[0]?.baggage, [['baggage', `switchyard-gen=${g0}`]], 'pinning on: the gateway\'s entry alone, none of the client\'s hop-by-hop members')
    const g1 = await flip(on, ['users'], 'green')
    await send(on, '/users/pinned', `secret=1, switchyard-gen=${g0}`)
    t.equal(blue.at('/users/pinned').length, 1, 'the entry is the gateway\'s to act on (it is this hop\'s recipient): pinned to blue')
    t.strictSame(blue.at('/users/pinned')[0]?.baggage, [['baggage', `switchyard-gen=${g0}`]], 'and goes on as the gateway\'s entry alone')
    t.ok(g1 > g0)
  })
}

for (const engine of ENGINES) {
  t.test(`${engine}: a pinned request retried after a refused connection stays on the kept generation's color, with one baggage line, counted once`, async (t) => {
    const a = await recorder(t, 'A')
    const green = await recorder(t, 'green')
    // A port nothing listens on: connections to it are refused.
    const closed = net.createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const dead = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const gw = await startGateway(t, `engine: ${engine}
pinning: { keep: 5m, trust: [127.0.0.0/8] }
services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [${dead}, ${a.url}] }
    green: { targets: [${green.url}] }
`)
    const g0 = await generation(gw)
    await flip(gw, ['users'], 'green')
    const n = 6
    for (let i = 0; i < n; i++) {
      const r = await http1(`${gw.url}/users/r${i}`, { headers: { baggage: `k=${i},switchyard-gen=${g0}` } })
      t.equal(r.json?.backend, 'A', `request ${i}: served by blue's live target (a retry when the dead one was picked)`)
      t.strictSame(r.json?.baggage, [`k=${i},switchyard-gen=${g0}`], `request ${i}: one baggage line`)
    }
    t.equal(green.got.filter((g) => g.path.startsWith('/users/r')).length, 0, 'green got none')
    t.strictSame(await pinCounts(gw.adminUrl), { pinned: n, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }, 'each counted once, retries or not')
  })
}

for (const engine of ENGINES) {
  t.test(`${engine}: a pinned request in flight on a target a flip storm stops keeping finishes there: its target closes after it, not under it`, async (t) => {
    const a = await startColor(t, 'A')
    const b = await recorder(t, 'B')
    const c = await recorder(t, 'C')
    const yaml = (blue: string): string => `engine: ${engine}
pinning: { keep: 5m, trust: [127.0.0.0/8] }
services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [${blue}] }
    green: { targets: [${b.url}] }
`
    const gw = await startGateway(t, yaml(a.url))
    const g0 = await generation(gw)
    await flip(gw, ['users'], 'green')
    await reload(gw, yaml(c.url))
    const arrived = gate()
    const release = gate()
    a.hold = { path: '/users/held', until: release.wait, arrived }
    const held = http1(`${gw.url}/users/held`, { headers: { baggage: `switchyard-gen=${g0}` } })
    await arrived.wait
    // Enough flips that no kept generation routes to A any more: the registry lets A go while the request is on it.
    for (let i = 0; i <= MAX_KEPT; i++) await flip(gw, ['users'], i % 2 === 0 ? 'blue' : 'green')
    t.notOk((await kept(gw)).some(([g]) => g <= g0 + 2), 'the generations that routed to A are no longer kept')
    release.open()
    const r = await held
    t.equal(r.status, 200, 'the request in flight was answered')
    t.equal(r.json?.backend, 'A', 'by A, where it was pinned')
    t.strictSame(await pinCounts(gw.adminUrl), { pinned: 1, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 })
    const late = await http1(`${gw.url}/users/late`, { headers: { baggage: `switchyard-gen=${g0}` } })
    t.not(late.json?.backend, 'A', 'a later request for that generation goes by the current snapshot')
  })
}

t.test('a release in progress: a chain pinned before it stays on the old color whatever its split key; an abort ends the pins of the release\'s generations (counted expired)', async (t) => {
  const v1 = await recorder(t, 'v1')
  const idle = await recorder(t, 'idle')
  const v2 = await recorder(t, 'v2')
  const gw = await startGateway(t, `defaults:
  health: { interval: 200ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 3 }
  drain: { timeout: 1s }
pinning: { keep: 5m, trust: [127.0.0.0/8] }
services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [${v1.url}] }
    green: { targets: [${idle.url}] }
`)
  await eventually(async () => (await http1(`${gw.adminUrl}/readyz`)).status === 200)
  const before = await generation(gw)
  const created = await admin(gw.adminUrl, 'POST', '/v1/releases', {
    services: { users: { targets: [v2.url] } },
    steps: [{ weight: 50, hold: '1m' }],
    verify: { window: '1s', minRequests: 50 },
  })
  t.equal(created.status, 201, 'the release starts')
  const id = created.json.id as string
  await eventually(async () => {
    const r = (await admin(gw.adminUrl, 'GET', `/v1/releases/${id}`)).json
    if (r.phase !== 'shifting') throw new Error(String(r.phase))
  }, { timeout: 15_000, interval: 50 })
  const during = await generation(gw)
  t.ok(during > before, 'the release made generations of its own')
  const keys = Array.from({ length: 40 }, (_, i) => `user-${i}`)
  const get = async (key: string, baggage?: string): Promise<string> => (await http1(`${gw.url}/users/x`, { headers: { 'x-switchyard-key': key, ...(baggage === undefined ? {} : { baggage }) } })).json.backend
  const unpinned = new Set(await Promise.all(keys.map(async (k) => await get(k))))
  t.strictSame([...unpinned].sort(), ['v1', 'v2'], 'unpinned keyed traffic is split between the colors')
  const old = new Set(await Promise.all(keys.map(async (k) => await get(k, `switchyard-gen=${before}`))))
  t.strictSame([...old], ['v1'], 'a chain pinned before the release stays on v1 whatever its key')
  const mid = new Map(await Promise.all(keys.map(async (k) => [k, await get(k, `switchyard-gen=${during}`)] as const)))
  t.ok([...mid.values()].includes('v2'), 'a chain pinned during the step is split like it')
  const counts = await pinCounts(gw.adminUrl)
  t.strictSame(counts, { pinned: 2 * keys.length, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 })

  const aborted = await admin(gw.adminUrl, 'POST', `/v1/releases/${id}/abort`, {})
  t.equal(aborted.status, 200, 'aborted')
  const after = await generation(gw)
  const back = new Set(await Promise.all(keys.map(async (k) => await get(k, `switchyard-gen=${during}`))))
  t.strictSame([...back], ['v1'], 'after the abort, chains pinned to the release\'s step go by the current snapshot: v1')
  t.strictSame(await pinCounts(gw.adminUrl), { ...counts, expired: keys.length }, 'counted expired')
  const state = (await admin(gw.adminUrl, 'GET', '/v1/state')).json
  t.equal(state.pinning.floor, after, 'the floor is the abort\'s generation')
})

for (const engine of ENGINES) {
  t.test(`${engine}: a WebSocket upgrade forging the entry from outside trust opens on the current color and carries the gateway's entry alone`, async (t) => {
    const blue = await startColor(t, 'blue')
    const green = await startColor(t, 'green')
    const gw = await startGateway(t, `engine: ${engine}
pinning: { keep: 5m, trust: [10.0.0.0/8] }
trustedProxies: [127.0.0.0/8]
services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
`)
    const g0 = await generation(gw)
    const g1 = await flip(gw, ['users'], 'green')
    const r = await rawRequest(Number(new URL(gw.url).port), wsHandshake('/users/ws', ['x-forwarded-for: 10.9.9.9', 'baggage: a=1', `BAGGAGE: switchyard-gen=${g0}`]))
    t.equal(r.status, 101, 'the tunnel opens')
    const seen = seenAt(green, '/users/ws')
    t.equal(seen.length, 1, 'on green, the current color')
    t.equal(seenAt(blue, '/users/ws').length, 0, 'not on blue, the forged generation\'s')
    t.strictSame(ours(String(seen[0]?.headers.baggage)), [`switchyard-gen=${g1}`], 'the upgrade request carried the gateway\'s entry alone')
    t.strictSame(await pinCounts(gw.adminUrl), { pinned: 0, expired: 0, untrusted: 1, invalid: 0, unavailable: 0 })
  })
}

/** `serve --workers 2` with pinning on, what a chain pinned to its first generation reaches, and that generation. */
interface KeptOnly {
  a: Recorder
  p: ReturnType<typeof serve>
  adminUrl: string
  g0: number
  /** A request on a fresh connection (the primary deals them out over both workers) pinned to g0; the backend that answered. */
  fresh: (path: string) => Promise<string>
}

/**
 * users flipped from A (blue) to B (green), then a reload moves blue to C:
 * g0's blue target A is one only a kept generation routes to.
 */
async function keptOnlyTarget (t: Teardown, health: string): Promise<KeptOnly> {
  const a = await recorder(t, 'A')
  const b = await recorder(t, 'B')
  const c = await recorder(t, 'C')
  const yaml = (blue: Recorder): string => `pinning: { keep: 5m, trust: [127.0.0.0/8] }
defaults:
  health: ${health}
services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [${blue.url}] }
    green: { targets: [${b.url}] }
`
  const file = configFile(t, yaml(a))
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  const { port, admin: adminPort } = await listening(p)
  const url = `http://127.0.0.1:${port}`
  const adminUrl = `http://127.0.0.1:${adminPort}`
  const g0 = (await admin(adminUrl, 'GET', '/v1/state')).json.generation as number
  await eventually(async () => {
    const r = await admin(adminUrl, 'POST', '/v1/flip', { services: ['users'], to: 'green', guard: false })
    if (r.status !== 200) throw new Error(r.text)
  })
  writeFileSync(file, `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nlog: { access: false }\n${yaml(c)}`)
  const reloaded = await admin(adminUrl, 'POST', '/v1/reload', {})
  if (reloaded.status !== 200) throw new Error(`reload: ${reloaded.text}`)
  const fresh = async (path: string): Promise<string> => (await http1(`${url}${path}`, { headers: { baggage: `switchyard-gen=${g0}`, connection: 'close' } })).json.backend
  return { a, p, adminUrl, g0, fresh }
}

t.test('serve --workers 2: a target only a kept generation routes to goes bad; pinned requests on every worker fall back (unavailable)', async (t) => {
  const { a, p, adminUrl, fresh } = await keptOnlyTarget(t, '{ interval: 100ms, timeout: 50ms, unhealthyThreshold: 1, healthyThreshold: 1 }')
  // One probe timing out (50 ms, one miss makes A bad) on a loaded machine sends a pinned request to B for a moment
  // (seen once at 6 jobs on 2 cores): wait until every worker sends it to A.
  await eventually(async () => {
    for (let i = 0; i < 4; i++) if (await fresh('/users/settle') !== 'A') throw new Error('a worker does not send it to A yet')
  }, { timeout: 3000 })
  for (let i = 0; i < 6; i++) t.equal(await fresh(`/users/ok${i}`), 'A', `pinned request ${i} reaches A`)
  a.failHealth = true
  const probes = a.at('/healthz').length
  await eventually(() => a.at('/healthz').length >= probes + 2, { timeout: 3000 })
  // The probe's verdict reaches every worker: each pinned request now falls back to green.
  await eventually(async () => {
    for (let i = 0; i < 4; i++) if (await fresh('/users/probe') !== 'B') throw new Error('a worker still sends it to A')
  }, { timeout: 3000 })
  for (let i = 0; i < 6; i++) t.equal(await fresh(`/users/bad${i}`), 'B', `pinned request ${i}: A is bad, the current color serves it`)
  const counts = await eventually(async () => {
    const n = await pinCounts(adminUrl)
    if (n.pinned + n.unavailable < 16) throw new Error(JSON.stringify(n))
    return n
  }, { timeout: 5000, interval: 100 })
  t.ok(counts.unavailable >= 6, `counted unavailable (${JSON.stringify(counts)})`)
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)
})

t.test('serve --workers 2: a worker started in place of a dead one keeps the kept generations: a chain pinned before it started reaches the same color on every worker', async (t) => {
  const { a, p, adminUrl, g0, fresh } = await keptOnlyTarget(t, '{ interval: 200ms, timeout: 200ms, unhealthyThreshold: 3, healthyThreshold: 1 }')
  const lines = (msg: string): any[] => p.lines.filter((l) => l.msg === msg)
  t.teardown(() => { for (const l of lines('worker started; routing sent')) if (isAlive(l.pid)) process.kill(l.pid, 'SIGKILL') })
  await eventually(() => lines('worker listening').length >= 2, { timeout: 10_000 })

  const started = lines('worker started; routing sent').length
  const listeningNow = lines('worker listening').length
  const dead = lines('worker listening').map((l) => l.pid as number).filter(isAlive)[0]
  process.kill(dead, 'SIGKILL')
  await eventually(() => lines('worker listening').length > listeningNow && lines('worker started; routing sent').length > started, { timeout: 10_000 })
    .catch((err: Error) => { throw new Error(`no replacement worker listens (${err.message}); the gateway logged: ${p.lines.map((l) => String(l.msg)).join(' | ')}; stderr: ${p.stderr().slice(-2000)}`) })
  t.notOk(isAlive(dead), 'the killed worker is gone')
  const before = await pinCounts(adminUrl)
  // Fresh connections: the primary deals them out over both workers, the new one too.
  const seen: string[] = []
  for (let i = 0; i < 8; i++) seen.push(await fresh(`/users/g0-${i}`))
  t.same(seen, Array(8).fill('A'), `every pinned request of generation ${g0} reaches A, its blue, on both workers`)
  t.same(a.at('/users/g0-0').length, 1, 'A got them')
  const counts = await eventually(async () => {
    const n = await pinCounts(adminUrl)
    if (n.pinned - before.pinned < 8) throw new Error(JSON.stringify(n))
    return n
  }, { timeout: 5000, interval: 100 })
  t.equal(counts.expired - before.expired, 0, 'none counted expired')
  t.equal(counts.unavailable - before.unavailable, 0, 'none counted unavailable: the new worker has A probed')
  const state = (await admin(adminUrl, 'GET', '/v1/state')).json
  t.ok(state.pinning.kept.some((k: any) => k.generation === g0), `the primary still keeps ${g0}`)
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)
})
