// Built-in demo backends for `npm start`: one tiny server per loopback target
// in the config, answering with its service, color and version, so a flip shows at once.

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import { COLORS, type Config } from './config/schema.js'
import { isLoopback } from './config/values.js'

const VERSION = { blue: '1.0.0', green: '1.1.0' } as const

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
