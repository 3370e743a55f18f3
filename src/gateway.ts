// Wiring: builds the registry, controller, public listener and admin server
// from a config, and starts and stops them. No logic of its own beyond lifecycle.

import type { AddressInfo } from 'node:net'
import type http from 'node:http'
import { Agent } from 'undici'
import { createAdminServer } from './admin/server.js'
import { ConfigError, loadConfigFile } from './config/load.js'
import type { Config, HostPort } from './config/schema.js'
import { SwitchyardError } from './errors.js'
import { createAccessLog, log, type AccessLog } from './log.js'
import { createMetrics } from './metrics.js'
import { Controller } from './control/controller.js'
import { httpCloser } from './proxy/edge.js'
import { Prober } from './health/prober.js'
import { SmokeRunner } from './health/smoke.js'
import { CertError } from './listen/certs.js'
import { LocalListener } from './listen/local.js'
import { WorkerPool } from './listen/worker-pool.js'
import { LocalShadow, SHADOW_PARTS, type ShadowParts, type ShadowReader } from './control/shadow.js'
import { createRedirectServer } from './listen/redirect.js'
import { closeGracefully, listen, originOf, type PublicListener } from './listen/public-listener.js'
import { openState } from './state/open.js'
import type { StateStore } from './state/store.js'
import { TargetRegistry } from './upstream/registry.js'

export interface GatewayOptions {
  /** Environment for ${VAR} substitution on reload. Default process.env. */
  env?: NodeJS.ProcessEnv
  /** Override the config's listen addresses (tests use port 0). */
  listen?: HostPort
  adminListen?: HostPort
  /**
   * Where requests are served. Default: a listener in this process. A worker
   * pool serves them in worker processes; this one keeps the admin API and the state.
   */
  listener?: PublicListener
  /** The shadow parts requests are copied and compared with. Default SHADOW_PARTS (control/shadow.ts); tests pass their own. */
  shadow?: ShadowParts
}

export class Gateway {
  readonly config: Config
  readonly registry = new TargetRegistry()
  readonly prober = new Prober()
  readonly smoke: SmokeRunner
  readonly listener: PublicListener
  controller!: Controller
  /** This process's shadow comparisons, when it serves the requests itself and the build has the shadow parts. */
  readonly shadow: LocalShadow | undefined
  /** What the admin API, the gate and the metrics read of shadow traffic: this process's comparisons, or the workers' summed. */
  readonly shadowReader: ShadowReader | undefined
  private accessLog: AccessLog | undefined
  private store: StateStore | undefined
  private sampler: NodeJS.Timeout | undefined
  private admin: http.Server | undefined
  private readonly smokeAgent: Agent | undefined
  /** The plain-HTTP listener that sends clients to https (`redirect`). */
  private redirect: http.Server | undefined
  private readonly opts: GatewayOptions
  private get env (): NodeJS.ProcessEnv {
    return this.opts.env ?? process.env
  }

  constructor (config: Config, opts: GatewayOptions = {}) {
    this.config = config
    this.opts = opts
    this.listener = opts.listener ?? new LocalListener()
    // Smoke checks go to the listener's loopback address, which its certificates do not name: they verify no certificate.
    this.smokeAgent = config.tls === undefined ? undefined : new Agent({ connect: { rejectUnauthorized: false } })
    this.smoke = new SmokeRunner(() => this.url, undefined, this.smokeAgent)
    // With workers, each of them copies what it serves; this process only reads their sums.
    const parts = opts.shadow ?? SHADOW_PARTS
    const pool = this.listener instanceof WorkerPool ? this.listener : undefined
    this.shadow = pool === undefined ? new LocalShadow(parts) : undefined
    this.shadowReader = pool === undefined ? this.shadow : pool.shadow
  }

  async start (): Promise<void> {
    const { store, fleet } = await openState(this.config)
    this.store = store
    this.registry.observers.remote = this.listener.remote
    this.controller = await Controller.create(this.config, this.registry, store, fleet, {
      prober: this.prober,
      smoke: this.smoke,
      publish: this.listener.publish,
      reloading: async (config) => { await this.reloadCerts(config) },
      shadow: { wiring: this.shadow, reader: this.shadowReader },
      pinning: this.listener instanceof WorkerPool ? this.listener.pinning : undefined,
    }).catch(async (err: unknown) => {
      await store.close()
      throw err
    })
    this.registry.observers.metrics = this.config.metrics.enabled
    if (this.config.log.access !== false) {
      this.accessLog = createAccessLog(this.config.log.access)
      this.registry.observers.accessLog = this.accessLog.write
    }
    this.sampler = setInterval(() => this.registry.sample(), 1000)
    this.sampler.unref()
    const metrics = this.config.metrics.enabled ? createMetrics({ registry: this.registry, controller: () => this.controller, shadow: this.shadowReader, pinning: this.config.pinning === undefined ? undefined : this.controller.pinning, spans: this.config.tracing === undefined ? undefined : () => this.listener.spans?.() }) : undefined
    this.admin = createAdminServer(this.controller, { loadConfig: () => this.loadConfig(), metrics })
    try {
      await this.listener.start({
        controller: this.controller,
        registry: this.registry,
        smoke: this.smoke,
        config: this.config,
        listen: this.opts.listen ?? this.config.listen,
      })
      await listen(this.admin, this.opts.adminListen ?? this.config.admin.listen)
      if (this.config.redirect !== undefined) {
        // After the TLS listener: the Location names its port, the bound one when the config said 0.
        this.redirect = createRedirectServer(this.address.port, this.config.client)
        await listen(this.redirect, this.config.redirect.listen)
      }
      await fleet.join(this.config.fleet.advertise ?? advertisedAdmin(this.adminAddress))
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

  /**
   * A reload the controller accepted: the TLS listener reads its
   * certificates again. One that cannot be served refuses the whole reload
   * (the check at load passed, so the file changed since), naming it. This
   * comes before the routing change: should that fail to commit, the
   * certificates stay as read, which are the files on disk a watch would take.
   */
  private async reloadCerts (config: Config): Promise<void> {
    if (config.tls === undefined || this.listener.reloadCerts === undefined) return
    try {
      await this.listener.reloadCerts(config.tls)
    } catch (err) {
      if (!(err instanceof CertError)) throw err
      throw new SwitchyardError('config_invalid', `tls certificate refused, the running config and certificates stay: ${err.message}`, { problems: [{ path: err.path, message: err.reason }] })
    }
  }

  get address (): AddressInfo {
    return this.listener.address as AddressInfo
  }

  get adminAddress (): AddressInfo {
    return this.admin?.address() as AddressInfo
  }

  /** The public listener's origin, reachable from this host (a wildcard bind becomes loopback); https with `tls`. */
  get url (): string {
    return originOf(this.address, this.config.tls === undefined ? 'http' : 'https')
  }

  /** Where the redirect listener accepts; undefined without `redirect`. */
  get redirectAddress (): AddressInfo | undefined {
    return (this.redirect?.address() ?? undefined) as AddressInfo | undefined
  }

  get adminUrl (): string {
    return `http://127.0.0.1:${this.adminAddress.port}`
  }

  /**
   * Stops accepting, lets in-flight requests finish for up to `graceMs`,
   * then closes whatever is left and the upstream pools.
   */
  async stop (graceMs = 10_000): Promise<void> {
    // The admin API stops accepting with the public side; each lets its in-flight requests finish.
    await Promise.all([
      this.listener.stop(graceMs),
      closeGracefully([this.admin, this.redirect].map((s) => s === undefined ? undefined : httpCloser(s)), new Set(), graceMs),
    ])
    clearInterval(this.sampler)
    this.accessLog?.flush()
    await this.controller?.stop()
    await this.controller?.fleet.leave()
    await this.store?.close()
    await this.prober.stop()
    await this.smokeAgent?.destroy()
    await this.registry.destroy()
  }
}

/** The admin URL a replica registers when fleet.advertise is not set: its own address, unless bound to every interface (which one would others use?). */
function advertisedAdmin (address: AddressInfo): string | null {
  if (address.address === '0.0.0.0' || address.address === '::') return null
  return originOf(address)
}
