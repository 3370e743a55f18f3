// Wiring: builds the registry, controller, edge and admin servers from a
// config, and starts and stops them. No logic of its own beyond lifecycle.

import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type net from 'node:net'
import type { Duplex } from 'node:stream'
import type http from 'node:http'
import { dirname, join } from 'node:path'
import { createAdminServer } from './admin/server.js'
import { ConfigError, loadConfigFile } from './config/load.js'
import type { Config, HostPort } from './config/schema.js'
import { createAccessLog, log, type AccessLog } from './log.js'
import { createMetrics } from './metrics.js'
import { Controller } from './control/controller.js'
import { EventLog } from './control/events.js'
import { createEdgeServer, httpCloser, type Closer, type EdgeServer } from './edge.js'
import { Prober } from './health/prober.js'
import { SmokeRunner } from './health/smoke.js'
import { FileStateStore } from './state/file-store.js'
import { TargetRegistry } from './upstream/registry.js'
import type { WorkerPool } from './cluster.js'

export interface GatewayOptions {
  /** Environment for ${VAR} substitution on reload. Default process.env. */
  env?: NodeJS.ProcessEnv
  /** Override the config's listen addresses (tests use port 0). */
  listen?: HostPort
  adminListen?: HostPort
  /** Primary of worker processes: they hold the public listener; this process keeps the admin API and the state. */
  workers?: WorkerPool
}

export class Gateway {
  readonly config: Config
  readonly registry = new TargetRegistry()
  readonly prober = new Prober()
  readonly smoke = new SmokeRunner(() => this.opts.workers?.url ?? this.url)
  controller!: Controller
  private accessLog: AccessLog | undefined
  private sampler: NodeJS.Timeout | undefined
  private edge: net.Server | undefined
  private edgeParts: EdgeServer | undefined
  private admin: http.Server | undefined
  private readonly opts: GatewayOptions
  private get env (): NodeJS.ProcessEnv {
    return this.opts.env ?? process.env
  }

  constructor (config: Config, opts: GatewayOptions = {}) {
    this.config = config
    this.opts = opts
  }

  async start (): Promise<void> {
    const store = new FileStateStore(this.config.state.file)
    const events = new EventLog(join(dirname(this.config.state.file), 'events.jsonl'))
    const workers = this.opts.workers
    if (workers !== undefined) this.registry.observers.remote = workers
    this.controller = await Controller.create(this.config, this.registry, store, events, {
      prober: this.prober,
      smoke: this.smoke,
      ...(workers === undefined ? {} : { publish: async (config, state) => await workers.publish(config, state) }),
    })
    if (workers === undefined) {
      this.edgeParts = createEdgeServer(this.controller.snapshots, this.smoke, this.config)
      this.edge = this.edgeParts.server
    }
    this.registry.observers.metrics = this.config.metrics.enabled
    if (this.config.log.access !== false) {
      this.accessLog = createAccessLog(this.config.log.access)
      this.registry.observers.accessLog = this.accessLog.write
    }
    this.sampler = setInterval(() => this.registry.sample(), 1000)
    this.sampler.unref()
    const metrics = this.config.metrics.enabled ? createMetrics({ registry: this.registry, controller: () => this.controller }) : undefined
    this.admin = createAdminServer(this.controller, { loadConfig: () => this.loadConfig(), metrics })
    try {
      if (this.edge !== undefined) await listen(this.edge, this.opts.listen ?? this.config.listen)
      if (workers !== undefined) await workers.start(this.controller, this.registry, this.smoke.secret)
      await listen(this.admin, this.opts.adminListen ?? this.config.admin.listen)
    } catch (err) {
      await this.stop(0)
      throw err
    }
  }

  /** The config file again, for a reload; the running config when there is no file. */
  loadConfig (): Config {
    return this.config.file === undefined ? this.controller.currentConfig : loadConfigFile(this.config.file, this.env)
  }

  /** SIGHUP: re-read the config file; an invalid one is logged and the running config stays. */
  async reload (): Promise<void> {
    try {
      const result = await this.controller.reload(this.loadConfig(), 'sighup')
      log('info', result.changed ? 'config reloaded' : 'config unchanged', { ...result })
    } catch (err) {
      log('error', 'reload refused, the running config stays', { error: (err as Error).message, ...(err instanceof ConfigError ? { problems: err.problems } : {}) })
    }
  }

  get address (): AddressInfo {
    return this.edge?.address() as AddressInfo ?? this.opts.workers?.address
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
    // WebSockets would hold the listener open forever: tell them to go away (1001), spread out.
    this.controller?.closeWebSockets(Math.min(1000, graceMs / 10))
    await this.opts.workers?.stop(graceMs)
    await closeGracefully([this.edgeParts, this.admin === undefined ? undefined : httpCloser(this.admin)], this.edgeParts?.upgraded ?? new Set(), graceMs)
    clearInterval(this.sampler)
    this.accessLog?.flush()
    await this.controller?.stop()
    await this.prober.stop()
    await this.registry.destroy()
  }
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

export async function listen (server: net.Server, at: HostPort): Promise<void> {
  server.listen(at.port, at.host)
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw new Error(`cannot listen on ${at.host}:${at.port}: ${(err as Error).message}`) })])
}
