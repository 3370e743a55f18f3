// The public side of the gateway as one boundary: where requests are served
// (this process, or worker processes), so the wiring treats both the same.

import type net from 'node:net'
import type { Duplex } from 'node:stream'
import type { Config, HostPort, TlsConfig } from '../config/schema.js'
import type { Controller } from '../control/controller.js'
import type { Closer } from '../proxy/edge.js'
import type { SmokeRunner } from '../health/smoke.js'
import type { ExportCounts } from '../tracing/exporter.js'
import type { RemoteColors } from '../upstream/color-stats.js'
import type { TargetRegistry } from '../upstream/registry.js'

/** What a listener serves from: built by the gateway before the listener starts. */
export interface ListenerDeps {
  /** Its routing (the switcher, the routing state) and the WebSockets to close at shutdown. */
  controller: Controller
  /** Where the request counts end up, and the probe results that flow to the request path. */
  registry: TargetRegistry
  /** Recognizes the gate's smoke requests (its secret pins a color). */
  smoke: SmokeRunner
  /** The listener options (engine, client limits, trusted proxies) fixed for its life. */
  config: Config
  /** Where to accept connections. */
  listen: HostPort
}

export interface PublicListener {
  /**
   * Hands every routing change to where requests are served; a change is
   * answered only once it resolves. Absent when they read the controller's
   * switcher in this process, where a swap is already seen by the next request.
   */
  readonly publish?: () => Promise<void>
  /** Connections held in other processes, for the registry to end a color's (drain deadline); absent when held here. */
  readonly remote?: RemoteColors
  /**
   * A reload was accepted: the TLS listener reads its certificates again
   * (`tls`'s files: new paths, or new contents at the old ones), all or
   * nothing: it throws the CertError naming the file that cannot be served,
   * the old certificates still served. Whether anything changed. Absent or
   * false on a plain listener.
   */
  readonly reloadCerts?: (tls: TlsConfig) => Promise<boolean>
  /** What span export counted (`tracing` on): this process's exporter, or the workers' summed; undefined when off. */
  readonly spans?: () => ExportCounts | undefined
  /** Accepts connections; resolves once requests are served with the controller's current routing. */
  start: (deps: ListenerDeps) => Promise<void>
  /** Where it accepts; undefined before start. */
  readonly address: net.AddressInfo | undefined
  /**
   * Shutdown: stops accepting, tells open WebSockets 1001, lets in-flight
   * requests finish for up to `graceMs`, then closes the rest. Safe before start.
   */
  stop: (graceMs: number) => Promise<void>
}

/** A listener's origin, reachable from this host (a wildcard bind becomes loopback). */
export function originOf ({ address, family, port }: net.AddressInfo, scheme: 'http' | 'https' = 'http'): string {
  if (address === '0.0.0.0' || address === '::') return `${scheme}://${family === 'IPv6' ? '[::1]' : '127.0.0.1'}:${port}`
  return family === 'IPv6' ? `${scheme}://[${address}]:${port}` : `${scheme}://${address}:${port}`
}

/**
 * Listens, or fails naming the address. (Not events.once: its 'listening'
 * wait rejects on 'error' with the bare error, first, and the name was lost.)
 */
export async function listen (server: net.Server, at: HostPort): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening)
      reject(new Error(`cannot listen on ${at.host}:${at.port}: ${err.message}`))
    }
    const onListening = (): void => {
      server.off('error', onError)
      resolve()
    }
    server.once('error', onError)
    server.once('listening', onListening)
    server.listen(at.port, at.host)
  })
}

/**
 * Stops accepting, lets in-flight requests finish for up to `graceMs`
 * (closing keep-alive connections as they go idle), then closes the rest.
 */
export async function closeGracefully (list: Array<Closer | undefined>, upgraded: Set<Duplex>, graceMs: number): Promise<void> {
  const servers = list.filter((s): s is Closer => s?.server.listening === true)
  const closed = servers.map(async (s) => await new Promise<void>((resolve) => s.server.close(() => resolve())))
  const sweep = setInterval(() => { for (const s of servers) s.closeIdle() }, 50)
  for (const s of servers) s.closeIdle()
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs) })
  await Promise.race([Promise.all(closed), deadline])
  clearTimeout(timer)
  clearInterval(sweep)
  for (const s of servers) s.closeAll()
  for (const socket of upgraded) socket.destroy()
  await Promise.all(closed)
}
