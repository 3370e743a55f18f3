// Wiring: builds the registry, controller, edge and admin servers from a
// config, and starts and stops them. No logic of its own beyond lifecycle.

import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type http from 'node:http'
import { dirname, join } from 'node:path'
import { createAdminServer } from './admin/server.js'
import type { Config, HostPort } from './config/schema.js'
import { Controller } from './control/controller.js'
import { EventLog } from './control/events.js'
import { createEdgeServer, type EdgeServer } from './edge.js'
import { Prober } from './health/prober.js'
import { SmokeRunner } from './health/smoke.js'
import { FileStateStore } from './state/file-store.js'
import { TargetRegistry } from './upstream/registry.js'

export interface GatewayOptions {
  /** Override the config's listen addresses (tests use port 0). */
  listen?: HostPort
  adminListen?: HostPort
}

export class Gateway {
  readonly config: Config
  readonly registry = new TargetRegistry()
  readonly prober = new Prober()
  readonly smoke = new SmokeRunner(() => this.url)
  controller!: Controller
  private edge: http.Server | undefined
  private edgeParts: EdgeServer | undefined
  private admin: http.Server | undefined
  private readonly opts: GatewayOptions

  constructor (config: Config, opts: GatewayOptions = {}) {
    this.config = config
    this.opts = opts
  }

  async start (): Promise<void> {
    const store = new FileStateStore(this.config.state.file)
    const events = new EventLog(join(dirname(this.config.state.file), 'events.jsonl'))
    this.controller = await Controller.create(this.config, this.registry, store, events, { prober: this.prober, smoke: this.smoke })
    this.edgeParts = createEdgeServer(this.controller.switcher, this.smoke)
    this.edge = this.edgeParts.server
    this.admin = createAdminServer(this.controller, { token: this.config.admin.token })
    try {
      await listen(this.edge, this.opts.listen ?? this.config.listen)
      await listen(this.admin, this.opts.adminListen ?? this.config.admin.listen)
    } catch (err) {
      await this.stop(0)
      throw err
    }
  }

  get address (): AddressInfo {
    return this.edge?.address() as AddressInfo
  }

  get adminAddress (): AddressInfo {
    return this.admin?.address() as AddressInfo
  }

  /** The public listener's origin, reachable from this host (a wildcard bind becomes loopback). */
  get url (): string {
    const { address, family, port } = this.address
    if (address === '0.0.0.0' || address === '::') return `http://${family === 'IPv6' ? '[::1]' : '127.0.0.1'}:${port}`
    return family === 'IPv6' ? `http://[${address}]:${port}` : `http://${address}:${port}`
  }

  get adminUrl (): string {
    return `http://127.0.0.1:${this.adminAddress.port}`
  }

  /**
   * Stops accepting, lets in-flight requests finish for up to `graceMs`,
   * then closes whatever is left and the upstream pools.
   */
  async stop (graceMs = 10_000): Promise<void> {
    const servers = [this.edge, this.admin].filter((s): s is http.Server => s?.listening === true)
    const closed = servers.map(async (s) => await new Promise<void>((resolve) => s.close(() => resolve())))
    // Keep-alive connections go idle as their last response ends: close them as they do.
    const sweep = setInterval(() => { for (const s of servers) s.closeIdleConnections() }, 50)
    for (const s of servers) s.closeIdleConnections()
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs) })
    await Promise.race([Promise.all(closed), deadline])
    clearTimeout(timer)
    clearInterval(sweep)
    for (const s of servers) s.closeAllConnections()
    for (const socket of this.edgeParts?.upgraded ?? []) socket.destroy()
    await Promise.all(closed)
    await this.controller?.stop()
    await this.prober.stop()
    await this.registry.destroy()
  }
}

async function listen (server: http.Server, at: HostPort): Promise<void> {
  server.listen(at.port, at.host)
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw new Error(`cannot listen on ${at.host}:${at.port}: ${(err as Error).message}`) })])
}
