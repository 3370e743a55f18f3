// Call chains through a gateway for the pinning tests: a `web` service that
// calls `users` back through the gateway when the test says so, passing on
// the baggage it got (as an OpenTelemetry-instrumented service does), h2c
// and WebSocket upstreams that record what they got, and the pin counts.

import http, { type IncomingHttpHeaders } from 'node:http'
import http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import { PIN_RESULTS, type PinResult } from '../../src/routing/pinning.js'
import type { RequestFacts } from '../../src/proxy/resolve.js'
import { http1 } from './index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/** A one-shot signal a test sends and a server awaits (an event, never a sleep). */
export interface Gate {
  wait: Promise<void>
  open: () => void
}

export function gate (): Gate {
  let open!: () => void
  const wait = new Promise<void>((resolve) => { open = resolve })
  return { wait, open }
}

export interface WebService {
  url: string
  /** Where the second hop goes: the gateway's origin, set once it listens. */
  gateway: string
  /** `baggage` of each chain request received, in order. */
  baggage: Array<string | undefined>
  /** Resolves when a chain request has arrived (and is waiting on `release`). */
  arrived: Promise<void>
  /** Lets the waiting chain request make its second hop. */
  release: () => void
}

/**
 * The `web` service of one color. `GET /web/chain` waits for the test's
 * release, then calls `GET {gateway}/users/me` with the `baggage` it
 * received, and answers `{web, users, usersBaggage}`: its own color, the
 * color of `users` that served the second hop and the baggage that hop
 * reached `users` with. Anything else (health probes) answers at once.
 */
export async function startWeb (t: Teardown, color: string): Promise<WebService> {
  const arrived = gate()
  const release = gate()
  const web: WebService = { url: '', gateway: '', baggage: [], arrived: arrived.wait, release: release.open }
  const server = http.createServer((req, res) => {
    if (req.url !== '/web/chain') {
      res.end('ok')
      return
    }
    const baggage = req.headers.baggage
    web.baggage.push(baggage)
    arrived.open()
    void release.wait.then(async () => {
      const hop = await http1(`${web.gateway}/users/me`, { headers: baggage === undefined ? {} : { baggage } })
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ web: color, users: hop.json?.backend, usersBaggage: hop.json?.baggage, status: hop.status }))
    }).catch((err: Error) => {
      res.writeHead(502)
      res.end(err.message)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  web.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return web
}

export interface ColorService {
  url: string
  /** Request heads received (health probes included), in order. */
  seen: Array<{ path: string, headers: IncomingHttpHeaders | http2.IncomingHttpHeaders }>
  /** Set to hold every request to `path` until the gate opens. */
  hold: { path: string, until: Promise<void>, arrived: Gate } | undefined
}

/**
 * A service of one color answering `{backend, baggage}` (its name and the
 * baggage it received): HTTP/1.1, or HTTP/2 with prior knowledge (`h2c`).
 * The HTTP/1.1 one also accepts WebSocket connections (seen records their
 * upgrade request) and echoes `name: message`.
 */
export async function startColor (t: Teardown, name: string, protocol: 'http1' | 'h2c' = 'http1'): Promise<ColorService> {
  const svc: ColorService = { url: '', seen: [], hold: undefined }
  const answer = async (path: string, headers: IncomingHttpHeaders, respond: (body: string) => void): Promise<void> => {
    svc.seen.push({ path, headers })
    const hold = svc.hold
    if (hold !== undefined && path === hold.path) {
      hold.arrived.open()
      await hold.until
    }
    respond(JSON.stringify({ backend: name, baggage: headers.baggage }))
  }
  let close: () => Promise<void>
  let address: AddressInfo
  if (protocol === 'h2c') {
    const server = http2.createServer()
    server.on('stream', (stream, headers) => {
      stream.on('error', () => {})
      void answer(String(headers[':path']), headers, (body) => {
        if (stream.destroyed) return
        stream.respond({ ':status': 200, 'content-type': 'application/json' })
        stream.end(body)
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    address = server.address() as AddressInfo
    close = async () => await new Promise<void>((resolve) => server.close(() => resolve()))
  } else {
    const server = http.createServer((req, res) => {
      void answer(req.url ?? '', req.headers, (body) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(body)
      })
    })
    const wss = new WebSocketServer({ server })
    wss.on('connection', (ws, req) => {
      svc.seen.push({ path: req.url ?? '', headers: req.headers })
      ws.on('message', (data) => ws.send(`${name}: ${(data as Buffer).toString()}`))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    address = server.address() as AddressInfo
    close = async () => {
      for (const c of wss.clients) c.terminate()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  svc.url = `http://127.0.0.1:${address.port}`
  t.teardown(async () => { await close() })
  return svc
}

/** What a color service got at `path` (its health probes left out). */
export function seenAt (svc: ColorService, path: string): ColorService['seen'] {
  return svc.seen.filter((s) => s.path === path)
}

export type PinCounts = Record<PinResult, number>

/** Counts of switchyard_pinned_requests_total by result, read off GET /metrics (every result is there from 0 with pinning on). */
export async function pinCounts (adminUrl: string): Promise<PinCounts> {
  const text = (await http1(`${adminUrl}/metrics`)).text
  const counts: PinCounts = { pinned: 0, expired: 0, untrusted: 0, invalid: 0, unavailable: 0 }
  let seen = 0
  for (const line of text.split('\n')) {
    const m = /^switchyard_pinned_requests_total\{result="([a-z]+)"\} (\d+)$/.exec(line)
    if (m !== null && (PIN_RESULTS as string[]).includes(m[1])) {
      counts[m[1] as PinResult] = Number(m[2])
      seen++
    }
  }
  if (seen !== PIN_RESULTS.length) throw new Error(`GET /metrics has ${seen} of the ${PIN_RESULTS.length} switchyard_pinned_requests_total results`)
  return counts
}

/**
 * A request's facts as an engine hands them to the resolve step, for unit
 * tests of pinning: a GET from `peer` with `baggage`; `http1Only` as the
 * fast engine sets it (it hands requests for HTTP/2 services to node:http).
 */
export function pinFacts (baggage: string | undefined, { peer = '127.0.0.1', target = '/users/1', http1Only = false } = {}): RequestFacts {
  return {
    method: 'GET',
    target,
    host: 'gw',
    smoke: undefined,
    cookie: undefined,
    baggage,
    connectionNames: undefined,
    header: () => undefined,
    headerLines: () => 0,
    peer,
    clientAddress: () => peer,
    ...(http1Only ? { http1Only: true as const } : {}),
  }
}
