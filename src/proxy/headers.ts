// Header passes for forwarding, in order: strip hop-by-hop, then add the
// X-Forwarded-* set. Each works on flat raw arrays [name, value, name, value, ...].

import type { IncomingMessage } from 'node:http'
import { addSent, isForwardingAlias, type Forwarding, type SentForwarding } from './trust.js'

/**
 * The one hop-by-hop table, both ways and on every engine: RFC 9110 7.6.1's
 * connection-specific fields, plus ones undici refuses to be handed. (The
 * fast engine's parser keeps a response's chunked framing and its Trailer
 * announcement, which it relays untouched.)
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect',
])

/** The gateway's own pin header (smoke checks carry its per-process secret): acted on here, never forwarded. */
export const PIN_HEADER = 'x-switchyard-smoke'

/**
 * Marks a shadow copy (shadow/copy.ts adds it): an upstream may skip side
 * effects for copies, so a client must never send it through.
 */
export const SHADOW_HEADER = 'x-switchyard-shadow'

/** Headers only the gateway itself may act on or set; never forwarded from a client. */
const GATEWAY_HEADERS: ReadonlySet<string> = new Set([PIN_HEADER, SHADOW_HEADER])

/**
 * Trailer fields a client must never be handed after the body: framing, routing and
 * connection control (RFC 9110 6.5.1), which a client that merges trailers into the
 * head would act on. The fast engine cuts a response carrying one (it relays bytes
 * as they are); the node engine leaves such fields out.
 */
export const FORBIDDEN_TRAILERS: ReadonlySet<string> = new Set(['content-length', 'transfer-encoding', 'trailer', 'host', 'connection', 'keep-alive',
  'proxy-connection', 'te', 'upgrade', 'content-encoding', 'content-type', 'content-range', 'set-cookie'])

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

/** The header names a request's Connection header lists (besides close and keep-alive); undefined when none. */
export function connectionNames (raw: readonly string[]): string[] | undefined {
  const tokens = connectionTokens(raw)
  return tokens === undefined ? undefined : [...tokens]
}

/** A list-valued header as node:http and node:http2 give it (lines joined, or an array), as one list; undefined when absent. */
export function listValue (v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(',') : v
}

/**
 * Flat header pairs [name, value, ...] as they go upstream with what the
 * resolve step adds: every `baggage` line replaced by one carrying
 * `baggage` (pinning on), and a `traceparent` when the gateway started the
 * request's trace (tracing on, the client sent none). Undefined: nothing of
 * that kind, `fields` as they are.
 */
export function withPropagation (fields: string[], baggage: string | undefined, traceparent: string | undefined): string[] {
  if (baggage === undefined) {
    // A copy: an engine may keep `fields` (the HTTP/2 downstream caches its lines).
    return traceparent === undefined ? fields : [...fields, 'traceparent', traceparent]
  }
  const out: string[] = []
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i].length !== 7 || fields[i].toLowerCase() !== 'baggage') out.push(fields[i], fields[i + 1])
  }
  out.push('baggage', baggage)
  if (traceparent !== undefined) out.push('traceparent', traceparent)
  return out
}

/** How many lines of header `lowerName` a request carries. */
export function countHeader (raw: readonly string[], lowerName: string): number {
  let n = 0
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === lowerName.length && raw[i].toLowerCase() === lowerName) n++
  }
  return n
}

/**
 * Pass 1: request headers without hop-by-hop ones, gateway-internal ones and
 * the forwarding set (X-Forwarded-For/-Proto/-Host, Forwarded), whose values
 * go to `sent` for pass 2. Keeps order and duplicates. `upgrade` keeps
 * `Upgrade` for a WebSocket handshake, and `Connection` as `Upgrade` alone.
 */
export function stripRequestHeaders (raw: readonly string[], upgrade = false, sent?: SentForwarding): string[] {
  const extra = connectionTokens(raw)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase()
    if (upgrade && name === 'upgrade') {
      out.push(raw[i], raw[i + 1])
      continue
    }
    // Only `upgrade` goes on: another name the client lists would make the upstream drop that header (its X-Forwarded-For, say) as hop-by-hop.
    if (upgrade && name === 'connection') {
      out.push(raw[i], 'Upgrade')
      continue
    }
    if (HOP_BY_HOP.has(name) || GATEWAY_HEADERS.has(name)) continue
    switch (name) {
      case 'x-forwarded-for': case 'x-forwarded-proto': case 'x-forwarded-host': case 'forwarded':
        if (sent !== undefined) addSent(sent, name, raw[i + 1].trim())
        continue
    }
    if (extra !== undefined && extra.has(name)) continue
    if (isForwardingAlias(name)) continue
    out.push(raw[i], raw[i + 1])
  }
  return out
}

/** Request headers for the upstream (`upgrade`: a WebSocket handshake): both passes. */
export function upstreamRequestHeaders (req: IncomingMessage, forwarding: Forwarding, upgrade = false): string[] {
  const sent: SentForwarding = { xff: '', xfProto: undefined, xfHost: undefined, forwarded: undefined }
  const headers = stripRequestHeaders(req.rawHeaders, upgrade, sent)
  // Pass 2: the forwarding headers, decided for this peer by the listener's Forwarding.
  return forwarding.appendHeaders(headers, req.socket.remoteAddress ?? '', req.headers.host, sent)
}

/** An HTTP/2 request's fields after pass 1 (`stripH2RequestHeaders`). */
export interface H2RequestFields {
  /** Fields to forward, flat [name, value, ...], names lower-case. */
  readonly fields: string[]
  /** The Cookie lines joined with '; ' (RFC 9113 8.2.3: one line again for HTTP/1.1); undefined when none. */
  readonly cookie: string | undefined
  /** The client sent `te: trailers`, the one TE value HTTP/2 allows (gRPC needs it end to end). */
  readonly teTrailers: boolean
}

/**
 * Pass 1 for an HTTP/2 request: its raw pairs (names lower-case, as HTTP/2
 * requires) without pseudo-headers, Host (`:authority` says it), hop-by-hop
 * and gateway-internal fields and underscore aliases; the forwarding set goes
 * to `sent` for pass 2. nghttp2 has already refused requests carrying
 * Connection, Keep-Alive, Transfer-Encoding, Upgrade or a TE other than
 * trailers, so no Connection list is read here.
 */
export function stripH2RequestHeaders (raw: readonly string[], sent: SentForwarding): H2RequestFields {
  const fields: string[] = []
  let cookie: string | undefined
  let teTrailers = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    if (name.charCodeAt(0) === 58 /* : */) continue
    if (HOP_BY_HOP.has(name) || GATEWAY_HEADERS.has(name)) {
      if (name === 'te') teTrailers = true
      continue
    }
    switch (name) {
      case 'host':
        continue
      case 'cookie':
        cookie = cookie === undefined ? raw[i + 1] : `${cookie}; ${raw[i + 1]}`
        continue
      case 'x-forwarded-for': case 'x-forwarded-proto': case 'x-forwarded-host': case 'forwarded':
        addSent(sent, name, raw[i + 1].trim())
        continue
    }
    if (isForwardingAlias(name)) continue
    fields.push(name, raw[i + 1])
  }
  return { fields, cookie, teTrailers }
}

/**
 * Response headers (undici's raw pairs) to a flat string array for
 * `res.writeHead`, without hop-by-hop ones. Repeated headers (Set-Cookie) stay repeated.
 */
export function downstreamResponseHeaders (raw: ReadonlyArray<Buffer | string>): string[] {
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

/** An upstream's trailer fields for `res.addTrailers`, less the ones a client must never get after a body. */
export function responseTrailers (raw: ReadonlyArray<Buffer | string>): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString('latin1')
    if (!FORBIDDEN_TRAILERS.has(name.toLowerCase())) out.push([name, raw[i + 1].toString('latin1')])
  }
  return out
}
