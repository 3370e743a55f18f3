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
import { chooseFor, type StickyChoice } from './routing/choose.js'
import type { ServiceRoute, Switcher } from './routing/snapshot.js'

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

  /** Smoke checks of the gate pin a color with a header only this process can forge. */
  const choose = (route: ServiceRoute, headers: IncomingMessage['headers']): StickyChoice =>
    chooseFor(route, headers[SMOKE_HEADER] === undefined ? undefined : smoke.colorOf(headers[SMOKE_HEADER]), headers)

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    // Origin-form only (`/path?query`): absolute-form, `*` and friends are not for a reverse proxy.
    if ((req.url as string).charCodeAt(0) !== 47) {
      sendError(res, 'bad_request', ERRORS.bad_request.status, 'the request target must be a path starting with /')
      return
    }
    const route = switcher.current.match(req.headers.host, req.url as string)
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
    new Exchange(req, res, endpoint, color.targets, color.stats, PROTO, cookie).start()
  }

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy())
    upgraded.add(socket)
    socket.once('close', () => upgraded.delete(socket))
    if ((req.url as string).charCodeAt(0) !== 47) return rejectUpgrade(socket, 'bad_request', ERRORS.bad_request.status)
    const route = switcher.current.match(req.headers.host, req.url as string)
    if (route === undefined) return rejectUpgrade(socket, 'no_route', ERRORS.no_route.status)
    const { color } = choose(route, req.headers)
    const endpoint = color.targets.pick()
    if (endpoint === undefined) return rejectUpgrade(socket, 'no_healthy_upstream', ERRORS.no_healthy_upstream.status)
    proxyUpgrade(req, socket, head, endpoint, color.stats, PROTO, color.timeouts)
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
  const fast = new FastEdge(switcher, smoke, server, PROTO, opts)
  return { server: fast.server, closeIdle: () => fast.closeIdle(), closeAll: () => fast.closeAll(), upgraded }
}
