// WebSocket (HTTP Upgrade) proxying to one endpoint: the handshake goes
// upstream with its upgrade headers, then the two sockets are piped.

import http, { type IncomingMessage } from 'node:http'
import https from 'node:https'
import type { Duplex } from 'node:stream'
import { errorBody, type ErrorCode } from '../errors.js'
import type { Endpoint } from '../upstream/target-set.js'
import { classifyUpstreamError } from './forward.js'
import { addForwardedHeaders } from './headers.js'
import { WsRelay } from './ws-relay.js'

export interface WebSocketStats {
  wsOpen: (relay: WsRelay) => void
  wsClose: (relay: WsRelay) => void
}

/** Raw HTTP/1.1 error on a socket that never became a WebSocket. */
export function rejectUpgrade (socket: Duplex, code: ErrorCode, status: number): void {
  const body = errorBody(code)
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
}

function headBlock (statusLine: string, raw: readonly string[]): string {
  let out = statusLine + '\r\n'
  for (let i = 0; i < raw.length; i += 2) out += `${raw[i]}: ${raw[i + 1]}\r\n`
  return out + '\r\n'
}

/** Request headers for the upstream handshake: all of the client's, minus X-Forwarded-* which are re-set. */
function handshakeHeaders (req: IncomingMessage, proto: string): string[] {
  const out: string[] = []
  const raw = req.rawHeaders
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase()
    if (name === 'x-forwarded-proto' || name === 'x-forwarded-host') continue
    out.push(raw[i], raw[i + 1])
  }
  return addForwardedHeaders(out, req, proto)
}

/**
 * Proxies an upgrade request. `stats` hears of the relay from the 101 until
 * either side closes, exactly once each way.
 */
export function proxyUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer, endpoint: Endpoint, stats: WebSocketStats, proto: string, connectTimeout: number): void {
  const url = new URL(req.url ?? '/', endpoint.target.url)
  const request = (url.protocol === 'https:' ? https : http).request({
    host: url.hostname,
    port: url.port,
    path: url.pathname + url.search,
    method: req.method,
    headers: handshakeHeaders(req, proto),
    agent: false,
    timeout: connectTimeout,
  })
  socket.on('error', () => request.destroy())

  request.once('timeout', () => request.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })))
  request.once('error', (err) => {
    if (!socket.destroyed) rejectUpgrade(socket, classifyUpstreamError(err), classifyUpstreamError(err) === 'upstream_timeout' ? 504 : 502)
  })

  // The upstream refused the upgrade: relay its answer as it is.
  request.once('response', (res) => {
    socket.write(headBlock(`HTTP/1.1 ${res.statusCode ?? 502} ${res.statusMessage ?? ''}`, res.rawHeaders))
    res.pipe(socket)
  })

  request.once('upgrade', (res, upstream, upstreamHead) => {
    request.setTimeout(0)
    upstream.setTimeout(0)
    upstream.setNoDelay(true)
    socket.write(headBlock(`HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}`, res.rawHeaders))
    const relay = new WsRelay(socket, upstream, (r) => stats.wsClose(r))
    // Frames that arrived with either handshake go through the relay, so its frame cursors stay in step.
    relay.prime(head, upstreamHead)
    stats.wsOpen(relay)
  })
  request.end()
}
