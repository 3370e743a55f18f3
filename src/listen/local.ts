// The public listener in this process: the edge server reads the controller's
// switcher directly, so a routing change needs no hand-over.

import type net from 'node:net'
import type { AddressInfo } from 'node:net'
import type { TlsConfig } from '../config/schema.js'
import { createEdgeServer, type EdgeServer } from '../proxy/edge.js'
import { createResolver } from '../routing/resolve.js'
import type { ExportCounts } from '../tracing/exporter.js'
import { startTracing, type Tracing } from '../tracing/tracing.js'
import { CertStore } from './certs.js'
import { closeGracefully, listen, type ListenerDeps, type PublicListener } from './public-listener.js'

/** Longest spread of the WebSockets' 1001 at shutdown, so clients do not all reconnect at once. */
const MAX_WS_SPREAD_MS = 1000

export class LocalListener implements PublicListener {
  private edge: EdgeServer | undefined
  private deps: ListenerDeps | undefined
  /** The TLS listener's certificates; undefined on a plain one. */
  private certs: CertStore | undefined
  /** Span export (`tracing`); undefined when off. */
  private tracingParts: Tracing | undefined

  async start (deps: ListenerDeps): Promise<void> {
    this.deps = deps
    // Read again (the config's load checked them): a file that changed since is refused here, by name.
    if (deps.config.tls !== undefined) this.certs = new CertStore(deps.config.tls)
    this.tracingParts = startTracing(deps.config.tracing)
    this.edge = createEdgeServer(createResolver(deps.controller.snapshots, deps.smoke, this.tracingParts?.tracer), deps.config, this.certs)
    await listen(this.edge.server, deps.listen)
    this.certs?.watch()
  }

  readonly reloadCerts = async (tls: TlsConfig): Promise<boolean> => await Promise.resolve(this.certs?.reloadLogged(tls) ?? false)

  /** The edge server, once started (tests read its TLS counts). */
  get edgeServer (): EdgeServer | undefined {
    return this.edge
  }

  /** The listening server, once started (tests watch its connections). */
  get server (): net.Server | undefined {
    return this.edge?.server
  }

  /** Span export, when `tracing` is on (tests read its counts). */
  get tracing (): Tracing | undefined {
    return this.tracingParts
  }

  readonly spans = (): ExportCounts | undefined => this.tracingParts?.exporter.counts

  get address (): AddressInfo | undefined {
    return (this.edge?.server.address() ?? undefined) as AddressInfo | undefined
  }

  async stop (graceMs: number): Promise<void> {
    // WebSockets would hold the listener open forever: tell them to go away (1001), spread out.
    this.deps?.registry.closeWebSockets(Math.min(MAX_WS_SPREAD_MS, graceMs / 10))
    this.certs?.close()
    await closeGracefully([this.edge], this.edge?.upgraded ?? new Set(), graceMs)
    // Every request has ended: its span is queued; send them.
    await this.tracingParts?.stop()
  }
}
