// WebSocket (HTTP Upgrade) proxying to one endpoint: the handshake goes
// upstream with its upgrade headers, then a frame-aware relay joins the sockets.

import { createHash } from 'node:crypto'
import http, { type IncomingMessage } from 'node:http'
import https from 'node:https'
import type { Duplex } from 'node:stream'
import { rawError, type ErrorCode } from '../errors.js'
import { errorCodeOf, failureKindOf } from './attempt.js'
import { upstreamHeadSize } from './forward.js'
import { downstreamResponseHeaders, upstreamRequestHeaders, withPropagation } from './headers.js'
import { MAX_HEAD } from './limits.js'
import type { Resolution } from './resolve.js'
import type { Forwarding } from './trust.js'
import { WsRelay } from './ws-relay.js'

export interface WebSocketStats {
  wsOpen: (relay: WsRelay) => void
  wsClose: (relay: WsRelay) => void
}

/** How much of a refused upgrade's answer is relayed. */
const MAX_REFUSAL_BODY = 64 * 1024

/** RFC 6455 1.3: the GUID a server appends to the key to prove it speaks WebSocket. */
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const KEY = /^[A-Za-z0-9+/]{22}==$/

/** The Sec-WebSocket-Accept a server must answer to this key. */
function acceptFor (key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64')
}

/** A header's only value, or undefined when it is absent or repeated. */
function single (v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined
}

/**
 * A complete WebSocket opening handshake (RFC 6455 4.1): GET on HTTP/1.1,
 * `Upgrade: websocket` alone, `Connection` naming upgrade, version 13 and a
 * key of 16 base64 bytes. Nothing else is tunnelled (trust is
 * configured, never assumed; h2c and made-up protocols never get through).
 */
export function isWebSocketHandshake (req: IncomingMessage): boolean {
  if (req.method !== 'GET' || req.httpVersion !== '1.1') return false
  const upgrade = single(req.headers.upgrade)
  if (upgrade === undefined || upgrade.trim().toLowerCase() !== 'websocket') return false
  const connection = single(req.headers.connection)
  if (connection === undefined || !connection.split(',').some((t) => t.trim().toLowerCase() === 'upgrade')) return false
  if (single(req.headers['sec-websocket-version'])?.trim() !== '13') return false
  const key = single(req.headers['sec-websocket-key'])?.trim()
  return key !== undefined && KEY.test(key) && Buffer.from(key, 'base64').length === 16
}

/** Raw HTTP/1.1 error on a socket that never became a WebSocket. */
export function rejectUpgrade (socket: Duplex, code: ErrorCode, message?: string): void {
  socket.end(rawError(code, true, message).text)
}

function headBlock (statusLine: string, raw: readonly string[], skip?: ReadonlySet<string>): string {
  let out = statusLine + '\r\n'
  for (let i = 0; i < raw.length; i += 2) {
    if (skip !== undefined && skip.has(raw[i].toLowerCase())) continue
    out += `${raw[i]}: ${raw[i + 1]}\r\n`
  }
  return out
}

/** A refused upgrade's answer is relayed with its own length: the upstream's framing goes, with the hop-by-hop fields. */
const REFUSAL_SKIP: ReadonlySet<string> = new Set(['content-length'])

/**
 * Proxies an upgrade request whose target the edge has checked starts with
 * `/`. The connection goes to the endpoint's own host and port; the request
 * target is sent as it is. `stats` hears of the relay from the 101 until
 * either side closes, exactly once each way.
 */
export function proxyUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer, to: Resolution, forwarding: Forwarding): void {
  const stats: WebSocketStats = to.group.stats
  const timeouts = to.group.timeouts
  const origin = to.endpoint.target.origin
  // No span for a WebSocket (it is no request that ends with a status): the client's traceparent goes as sent, none is added.
  const headers = withPropagation(upstreamRequestHeaders(req, forwarding, true), to.baggage, undefined)
  // What the upstream would refuse for its size (X-Forwarded-* and the baggage added) is refused here, as for any request.
  if (upstreamHeadSize(req.method as string, req.url as string, headers) > MAX_HEAD) return rejectUpgrade(socket, 'header_too_large')
  const request = (origin.tls ? https : http).request({
    host: origin.host,
    port: origin.port,
    path: req.url,
    method: req.method,
    headers,
    agent: false,
  })
  const fail = (err: Error & { code?: string }): void => {
    const code = errorCodeOf(failureKindOf(err))
    if (!socket.destroyed) rejectUpgrade(socket, code)
  }
  // Connect deadline first; once connected, the response deadline for the 101.
  let timer = setTimeout(() => request.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })), timeouts.connect)
  request.once('socket', (s) => s.once('connect', () => {
    clearTimeout(timer)
    timer = setTimeout(() => request.destroy(Object.assign(new Error('handshake timeout'), { code: 'UND_ERR_HEADERS_TIMEOUT' })), timeouts.response)
  }))
  // The client giving up during the handshake (FIN or close; the server keeps sockets half-open) ends it upstream too.
  const clientGone = (): void => {
    request.destroy()
    socket.destroy()
  }
  socket.once('close', clientGone)
  socket.once('end', clientGone)
  request.once('error', (err) => {
    clearTimeout(timer)
    fail(err)
  })

  // The upstream refused the upgrade: relay its answer, length-delimited, then close.
  request.once('response', (res) => {
    clearTimeout(timer)
    if ((res.statusCode ?? 0) < 200) {
      // A 101 without the upgrade it announces: nothing sensible to relay.
      res.destroy()
      rejectUpgrade(socket, 'upstream_error')
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    res.on('data', (c: Buffer) => {
      if (size < MAX_REFUSAL_BODY) chunks.push(c)
      size += c.length
    })
    res.once('end', () => {
      const body = Buffer.concat(chunks).subarray(0, MAX_REFUSAL_BODY)
      socket.end(Buffer.concat([
        Buffer.from(headBlock(`HTTP/1.1 ${res.statusCode ?? 502} ${res.statusMessage ?? ''}`, downstreamResponseHeaders(res.rawHeaders), REFUSAL_SKIP) + `content-length: ${body.length}\r\nconnection: close\r\n\r\n`, 'latin1'),
        body,
      ]))
    })
    res.once('error', () => socket.destroy())
  })

  request.once('upgrade', (res, upstream, upstreamHead) => {
    clearTimeout(timer)
    socket.off('close', clientGone)
    socket.off('end', clientGone)
    if (socket.destroyed || !socket.writable) {
      upstream.destroy()
      return
    }
    // A 101 that does not prove the upstream took this WebSocket handshake is no tunnel.
    if (single(res.headers.upgrade)?.trim().toLowerCase() !== 'websocket' ||
      single(res.headers['sec-websocket-accept'])?.trim() !== acceptFor((req.headers['sec-websocket-key'] as string).trim())) {
      upstream.destroy()
      rejectUpgrade(socket, 'upstream_error')
      return
    }
    upstream.setTimeout(0)
    upstream.setNoDelay(true)
    socket.write(headBlock(`HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}`, res.rawHeaders) + '\r\n')
    const relay = new WsRelay(socket, upstream, (r) => stats.wsClose(r))
    stats.wsOpen(relay)
    // Frames that arrived with either handshake go through the relay, so its frame cursors stay in step.
    relay.prime(head, upstreamHead)
  })
  request.end()
}
