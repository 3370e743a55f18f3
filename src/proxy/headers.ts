// Header passes for forwarding, in order: strip hop-by-hop, then add the
// X-Forwarded-* set. Each works on flat raw arrays [name, value, name, value, ...].

import type { IncomingMessage } from 'node:http'

/** RFC 9110 7.6.1 hop-by-hop headers, plus ones undici refuses to be handed. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect',
])

/** Headers only the gateway itself may act on; never forwarded (the smoke-check secret). */
const GATEWAY_HEADERS = new Set(['x-switchyard-smoke'])

/** Headers named in `Connection: a, b` are hop-by-hop for this hop only. */
function connectionTokens (raw: readonly string[]): Set<string> | undefined {
  let tokens: Set<string> | undefined
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 10 && raw[i].toLowerCase() === 'connection') {
      for (const t of raw[i + 1].split(',')) {
        const name = t.trim().toLowerCase()
        if (name !== '' && name !== 'close' && name !== 'keep-alive') (tokens ??= new Set()).add(name)
      }
    }
  }
  return tokens
}

/**
 * Pass 1: request headers without hop-by-hop ones, gateway-internal ones and
 * the X-Forwarded-* set, which pass 2 rewrites. Keeps order and duplicates.
 * `upgrade` keeps `Connection` and `Upgrade` for a WebSocket handshake.
 */
export function stripRequestHeaders (raw: readonly string[], upgrade = false): string[] {
  const extra = connectionTokens(raw)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase()
    if (upgrade && (name === 'connection' || name === 'upgrade')) {
      out.push(raw[i], raw[i + 1])
      continue
    }
    if (HOP_BY_HOP.has(name) || name === 'x-forwarded-proto' || name === 'x-forwarded-host' || GATEWAY_HEADERS.has(name)) continue
    if (extra !== undefined && extra.has(name)) continue
    out.push(raw[i], raw[i + 1])
  }
  return out
}

/**
 * Pass 2: X-Forwarded-For appends the client address to what the client
 * sent; -Proto and -Host state what this gateway saw.
 */
export function addForwardedHeaders (headers: string[], req: IncomingMessage, proto: string): string[] {
  const client = req.socket.remoteAddress ?? ''
  let xff = -1
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].length === 15 && headers[i].toLowerCase() === 'x-forwarded-for') {
      if (xff === -1) {
        xff = i
      } else {
        headers[xff + 1] += ', ' + headers[i + 1]
        headers.splice(i, 2)
        i -= 2
      }
    }
  }
  if (xff === -1) headers.push('x-forwarded-for', client)
  else headers[xff + 1] += ', ' + client
  headers.push('x-forwarded-proto', proto)
  const host = req.headers.host
  if (host !== undefined) headers.push('x-forwarded-host', host)
  return headers
}

/** Request headers for the upstream: both passes. */
export function upstreamRequestHeaders (req: IncomingMessage, proto: string): string[] {
  return addForwardedHeaders(stripRequestHeaders(req.rawHeaders), req, proto)
}

/**
 * Response headers from undici's raw Buffers to a flat string array for
 * `res.writeHead`, without hop-by-hop ones. Repeated headers (Set-Cookie) stay repeated.
 */
export function downstreamResponseHeaders (raw: readonly Buffer[]): string[] {
  const out: string[] = []
  let extra: Set<string> | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString('latin1')
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'connection') {
        for (const t of raw[i + 1].toString('latin1').split(',')) (extra ??= new Set()).add(t.trim().toLowerCase())
      }
      continue
    }
    out.push(name, raw[i + 1].toString('latin1'))
  }
  if (extra === undefined) return out
  // Rare: drop what Connection named, now that every name is known.
  const kept: string[] = []
  for (let i = 0; i < out.length; i += 2) {
    if (!extra.has(out[i].toLowerCase())) kept.push(out[i], out[i + 1])
  }
  return kept
}
