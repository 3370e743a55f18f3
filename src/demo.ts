// Built-in demo backends for `npm start`: one tiny server per loopback target
// in the config, answering with its service, color and version, so a flip shows at once;
// and .../profile, the same on both colors, for shadow traffic to compare.

import { randomUUID } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import { COLORS, type Config } from './config/schema.js'
import { isLoopback } from './config/values.js'

const VERSION = { blue: '1.0.0', green: '1.1.0' } as const

/**
 * GET .../profile: a JSON record both colors answer alike, but for what two
 * answers of any one version never share: the moment (`timestamp`, to the
 * microsecond) and an id of the answer (`requestId`, and the `x-request-id`
 * header). Shadow traffic learns those as noise and counts 0 differences.
 * With `?green-differs=1` green answers another `plan`, as a new version that
 * changed one field would: the comparison names `$.plan`.
 */
function profile (service: string, color: 'blue' | 'green', url: URL): { body: string, headers: Record<string, string> } {
  const plan = color === 'green' && url.searchParams.get('green-differs') === '1' ? 'team' : 'pro'
  const now = performance.timeOrigin + performance.now()
  const micros = String(Math.floor((now % 1) * 1000)).padStart(3, '0')
  const requestId = randomUUID()
  const record = {
    service,
    id: 42,
    name: 'Ada Lovelace',
    email: 'ada@example.com',
    plan,
    roles: ['admin', 'billing'],
    limits: { projects: 10, seats: 5 },
    timestamp: new Date(now).toISOString().replace('Z', `${micros}Z`),
    requestId,
  }
  return { body: JSON.stringify(record) + '\n', headers: { 'content-type': 'application/json', 'cache-control': 'no-store', 'x-request-id': requestId } }
}

export interface DemoBackend {
  service: string
  color: string
  url: string
  server: http.Server
}

/** Starts a backend on every loopback http:// target of the config; fails if a port is taken. */
export async function startDemoBackends (config: Config): Promise<DemoBackend[]> {
  const started: DemoBackend[] = []
  const seen = new Set<string>()
  try {
    for (const svc of Object.values(config.services)) {
      for (const color of COLORS) {
        for (const target of svc[color].targets) {
          const u = new URL(target)
          if (u.protocol !== 'http:' || !isLoopback(u.hostname) || seen.has(target)) continue
          seen.add(target)
          started.push(await startOne(svc.name, color, u))
        }
      }
    }
  } catch (err) {
    await stopDemoBackends(started)
    throw err
  }
  return started
}

async function startOne (service: string, color: 'blue' | 'green', u: URL): Promise<DemoBackend> {
  const version = VERSION[color]
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://demo')
    if (url.pathname.endsWith('/profile')) {
      const p = profile(service, color, url)
      res.writeHead(200, { ...p.headers, 'content-length': Buffer.byteLength(p.body) })
      res.end(req.method === 'HEAD' ? undefined : p.body)
      return
    }
    const body = JSON.stringify({ service, color, version, method: req.method, path: req.url, host: req.headers.host }) + '\n'
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-demo-color': color })
    res.end(body)
  })
  const wss = new WebSocketServer({ server })
  wss.on('error', () => {}) // it re-emits the server's errors, which the listen below reports
  wss.on('connection', (ws) => {
    ws.send(JSON.stringify({ service, color, version, hello: true }))
    // ws's default binaryType hands every message over as one Buffer.
    ws.on('message', (data) => ws.send(`${color}: ${(data as Buffer).toString()}`))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`demo backend ${service}/${color} cannot listen on ${u.host}: ${err.message}`)))
    server.listen(Number(u.port), u.hostname, () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  return { service, color, url: `http://${u.hostname}:${port}`, server }
}

export async function stopDemoBackends (backends: DemoBackend[]): Promise<void> {
  await Promise.all(backends.map(async (b) => {
    b.server.closeAllConnections()
    await new Promise<void>((resolve) => b.server.close(() => resolve()))
  }))
}
