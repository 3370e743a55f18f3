// Attacks on generation-pinned call chains (issue 16): spoofing the entry
// from outside `trust`, leaking a client's entry to an upstream on any path,
// routing by kept snapshots across reloads and flip storms, exact counts,
// and the bounds on what is kept.

import t from 'tap'
import http, { type IncomingMessage } from 'node:http'
import http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { writeFileSync } from 'node:fs'
import { h2Request, h2Session } from './helpers/h2.js'
import { admin, eventually, http1, startGateway, type TestGateway } from './helpers/index.js'
import { exchange, rawRequest } from './helpers/raw.js'
import { pinCounts } from './helpers/chain.js'
import { MAX_KEPT } from '../src/routing/pinning.js'

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
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(record(req.url ?? '', req.rawHeaders))
      })
    })
  }
  server.on('connection', (s) => { open++; s.on('close', () => { open-- }) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(async () => {
    if (server instanceof http.Server) server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { url, name, got, at: (path) => got.filter((g) => g.path === path), open: () => open }
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
