// The public listener's request path: read the current snapshot once, match
// the service, choose the color, pick a target, hand off to the forwarder.

import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type net from 'node:net'
import type { Duplex } from 'node:stream'
import type { Config } from './config/schema.js'
import { FastEdge } from './proxy/h1/server.js'
import { ERRORS } from './errors.js'
import { Exchange, requestIdFor, sendError } from './proxy/forward.js'
import { proxyUpgrade, rejectUpgrade } from './proxy/websocket.js'
import { SMOKE_HEADER, type SmokeRunner } from './health/smoke.js'
import { ambiguousRouting, chooseFor, readsHeaders, type StickyChoice } from './routing/choose.js'
import { normalizeTarget, TARGET_ABOVE_ROOT } from './routing/path.js'
import type { ServiceRoute, Switcher } from './routing/snapshot.js'
import { connectionNames, countHeader } from './proxy/headers.js'
import { Forwarding } from './proxy/trust.js'

const PROTO = 'http'

/** A listener that can be stopped gracefully. */
export interface Closer {
  server: net.Server
  /** Closes keep-alive connections that have no request in flight. */
  closeIdle: () => void
  closeAll: () => void
}

export interface EdgeServer extends Closer {
  /** Upgraded client sockets: the HTTP server stops tracking them after the 101. */
  upgraded: Set<Duplex>
}

export function httpCloser (server: http.Server): Closer {
  return { server, closeIdle: () => server.closeIdleConnections(), closeAll: () => server.closeAllConnections() }
}

/** What the public listener takes from the config; fixed for the life of the listener (a change needs a restart). */
export type EdgeOptions = Pick<Config, 'engine' | 'client' | 'trustedProxies'>

export function createEdgeServer (switcher: Switcher, smoke: SmokeRunner, opts: EdgeOptions): EdgeServer {
  const upgraded = new Set<Duplex>()
  /** Which peers' X-Forwarded-* are believed: decided once for the listener, on every engine. */
  const forwarding = new Forwarding(PROTO, opts.trustedProxies)

  /** Smoke checks of the gate pin a color with a header only this process can forge. */
  const choose = (route: ServiceRoute, headers: IncomingMessage['headers']): StickyChoice =>
    chooseFor(route, headers[SMOKE_HEADER] === undefined ? undefined : smoke.colorOf(headers[SMOKE_HEADER]), headers)

  /**
   * The service for a request, after its target is normalized (and set as
   * the one to forward); a string is the reason it is refused with 400.
   */
  const routeOf = (req: IncomingMessage): ServiceRoute | string | undefined => {
    // Origin-form only (`/path?query`): absolute-form, `*` and friends are not for a reverse proxy.
    if ((req.url as string).charCodeAt(0) !== 47) return 'the request target must be a path starting with /'
    const target = normalizeTarget(req.url as string)
    if (target === undefined) return TARGET_ABOVE_ROOT
    req.url = target
    const found = switcher.current.match(req.headers.host, target)
    if (found === undefined || !readsHeaders(found)) return found
    return ambiguousRouting(found, found.previewHeader === undefined ? 0 : countHeader(req.rawHeaders, found.previewHeader), connectionNames(req.rawHeaders)) ?? found
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const route = routeOf(req)
    if (typeof route === 'string') {
      sendError(res, 'bad_request', ERRORS.bad_request.status, route)
      return
    }
    if (route === undefined) {
      sendError(res, 'no_route', ERRORS.no_route.status)
      return
    }
    const { color, setCookie: cookie } = choose(route, req.headers)
    const endpoint = color.targets.pick()
    if (endpoint === undefined) {
      const started = performance.now()
      const bytes = sendError(res, 'no_healthy_upstream', ERRORS.no_healthy_upstream.status, `no healthy upstream for ${route.name} (${color.color})`)
      color.stats.rejected(req.method as string, req.url as string, requestIdFor(req, undefined), bytes, performance.now() - started)
      return
    }
    new Exchange(req, res, endpoint, color.targets, color.stats, forwarding, cookie).start()
  }

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy())
    upgraded.add(socket)
    socket.once('close', () => upgraded.delete(socket))
    const route = routeOf(req)
    if (typeof route === 'string') return rejectUpgrade(socket, 'bad_request', ERRORS.bad_request.status)
    if (route === undefined) return rejectUpgrade(socket, 'no_route', ERRORS.no_route.status)
    const { color } = choose(route, req.headers)
    const endpoint = color.targets.pick()
    if (endpoint === undefined) return rejectUpgrade(socket, 'no_healthy_upstream', ERRORS.no_healthy_upstream.status)
    proxyUpgrade(req, socket, head, endpoint, color.stats, forwarding, color.timeouts)
  }

  const server = http.createServer({ keepAliveTimeout: opts.client.idle, headersTimeout: opts.client.header, requestTimeout: 0 }, onRequest)
  server.on('upgrade', onUpgrade)
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex & { _httpMessage?: { headersSent?: boolean } }) => {
    // A response already under way on this socket cannot be followed by a 400.
    if (err.code === 'ECONNRESET' || !socket.writable || socket._httpMessage?.headersSent === true) return socket.destroy()
    socket.end(err.code === 'HPE_HEADER_OVERFLOW'
      ? 'HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"error":"bad_request","message":"request head larger than 16 KiB"}'
      : 'HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"error":"bad_request","message":"malformed HTTP request"}')
  })
  if (opts.engine === 'node') return { ...httpCloser(server), upgraded }
  const fast = new FastEdge(switcher, smoke, server, forwarding, opts)
  return { server: fast.server, closeIdle: () => fast.closeIdle(), closeAll: () => fast.closeAll(), upgraded }
}
