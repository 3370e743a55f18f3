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
