// The public listener in this process: the edge server reads the controller's
// switcher directly, so a routing change needs no hand-over.

import type net from 'node:net'
import type { AddressInfo } from 'node:net'
import { createEdgeServer, type EdgeServer } from '../proxy/edge.js'
import { createResolver } from '../routing/resolve.js'
import { closeGracefully, listen, type ListenerDeps, type PublicListener } from './public-listener.js'

/** Longest spread of the WebSockets' 1001 at shutdown, so clients do not all reconnect at once. */
const MAX_WS_SPREAD_MS = 1000

export class LocalListener implements PublicListener {
  private edge: EdgeServer | undefined
  private deps: ListenerDeps | undefined

  async start (deps: ListenerDeps): Promise<void> {
    this.deps = deps
    this.edge = createEdgeServer(createResolver(deps.controller.snapshots, deps.smoke), deps.config)
    await listen(this.edge.server, deps.listen)
  }

  /** The listening server, once started (tests watch its connections). */
  get server (): net.Server | undefined {
    return this.edge?.server
  }

  get address (): AddressInfo | undefined {
    return (this.edge?.server.address() ?? undefined) as AddressInfo | undefined
  }

  async stop (graceMs: number): Promise<void> {
    // WebSockets would hold the listener open forever: tell them to go away (1001), spread out.
    this.deps?.registry.closeWebSockets(Math.min(MAX_WS_SPREAD_MS, graceMs / 10))
    await closeGracefully([this.edge], this.edge?.upgraded ?? new Set(), graceMs)
  }
}
