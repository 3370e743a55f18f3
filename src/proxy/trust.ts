// Edge trust for forwarding headers (SECURITY.md; README, "Forwarding"): which peers may
// speak for the client, and the one rule every engine uses to build X-Forwarded-*.

import { PeerList } from '../config/values.js'

/** The forwarding headers a client sent, each joined over its lines (', '); '' or undefined when absent. */
export interface SentForwarding {
  xff: string
  xfProto: string | undefined
  xfHost: string | undefined
  forwarded: string | undefined
}

/**
 * One more line of a forwarding header a client sent, joined to the lines
 * before it (list syntax); `lowerName` is one of the four the set holds.
 * Empty elements are dropped later, when the values are decided.
 */
export function addSent (sent: SentForwarding, lowerName: string, value: string): void {
  switch (lowerName) {
    case 'x-forwarded-for': sent.xff = joinLine(sent.xff, value); break
    case 'x-forwarded-proto': sent.xfProto = joinLine(sent.xfProto, value); break
    case 'x-forwarded-host': sent.xfHost = joinLine(sent.xfHost, value); break
    case 'forwarded': sent.forwarded = joinLine(sent.forwarded, value); break
  }
}

function joinLine (prev: string | undefined, value: string): string {
  return prev === undefined || prev === '' ? value : `${prev}, ${value}`
}

/** What goes upstream. `host` and `forwarded` are left out when undefined. */
export interface ForwardedValues {
  xff: string
  proto: string
  host: string | undefined
  forwarded: string | undefined
}

/**
 * How one listener forwards: the scheme it serves and the peers whose
 * forwarding headers are believed. Built once per listener.
 */
export class Forwarding {
  /** The scheme clients reached this listener with. */
  readonly proto: string
  /** No trusted proxies (the default): every peer is a client, decided without a lookup. */
  readonly trustsNone: boolean
  private readonly proxies: PeerList

  /** `trustedProxies`: normalized `address/prefix` strings (config). */
  constructor (proto: string, trustedProxies: readonly string[]) {
    this.proto = proto
    this.proxies = new PeerList(trustedProxies)
    this.trustsNone = this.proxies.empty
  }

  /** Whether `peer` (a socket's remote address) is a trusted proxy. */
  trusts (peer: string): boolean {
    return this.proxies.has(peer)
  }

  /**
   * The forwarding headers for the upstream, on every engine. From a peer
   * that is not trusted, what the client sent is dropped and replaced by what
   * the gateway saw; from a trusted proxy it is kept and extended.
   */
  values (peer: string, host: string | undefined, sent: SentForwarding): ForwardedValues {
    if (!this.trusts(peer)) return { xff: peer, proto: this.proto, host, forwarded: undefined }
    const xff = listOf(sent.xff)
    const proto = listOf(sent.xfProto)
    const xfHost = listOf(sent.xfHost)
    const forwarded = listOf(sent.forwarded)
    return {
      xff: xff === undefined ? peer : `${xff}, ${peer}`,
      proto: proto ?? this.proto,
      host: xfHost ?? host,
      forwarded: forwarded === undefined ? undefined : `${forwarded}, for=${forwardedNode(peer)}`,
    }
  }

  /** `values` appended to a flat header array [name, value, ...] (the node engine, WebSocket upgrades). */
  appendHeaders (out: string[], peer: string, host: string | undefined, sent: SentForwarding): string[] {
    const f = this.values(peer, host, sent)
    out.push('x-forwarded-for', f.xff, 'x-forwarded-proto', f.proto)
    if (f.host !== undefined) out.push('x-forwarded-host', f.host)
    if (f.forwarded !== undefined) out.push('forwarded', f.forwarded)
    return out
  }

  /**
   * `values` as raw header lines (each ending in CRLF), for the fast path.
   * From a peer that is not trusted (every peer, by default) the text is
   * built directly, with no object in between: this runs on every request.
   */
  headerLines (peer: string, host: string | undefined, sent: SentForwarding): string {
    if (!this.trusts(peer)) return `x-forwarded-for: ${peer}\r\nx-forwarded-proto: ${this.proto}\r\nx-forwarded-host: ${host as string}\r\n`
    const f = this.values(peer, host, sent)
    const lines = `x-forwarded-for: ${f.xff}\r\nx-forwarded-proto: ${f.proto}\r\nx-forwarded-host: ${f.host as string}\r\n`
    return f.forwarded === undefined ? lines : `${lines}forwarded: ${f.forwarded}\r\n`
  }
}

/** A list with an empty element: a leading, doubled or trailing comma. */
const EMPTY_ELEMENT = /^\s*,|,\s*,|,\s*$/

/**
 * A forwarding header's lines as one list without empty elements, or
 * undefined when nothing is left. The engines join lines differently (an
 * empty first line gave ', https' on one and 'https' on the other), so the
 * list is cleaned here, once, for all of them.
 */
function listOf (joined: string | undefined): string | undefined {
  if (joined === undefined || joined === '') return undefined
  // Lists without an empty element pass as sent (a quoted Forwarded value may hold a comma).
  if (!EMPTY_ELEMENT.test(joined)) return joined
  const items = joined.split(',').map((v) => v.trim()).filter((v) => v !== '')
  return items.length === 0 ? undefined : items.join(', ')
}

/** A node for `Forwarded: for=` (RFC 7239 6): IPv6 bracketed and quoted. */
export function forwardedNode (address: string): string {
  if (address === '') return 'unknown'
  return address.includes(':') ? `"[${address}]"` : address
}

/**
 * A forwarding header spelled with underscores (`x_forwarded_for`,
 * `X-Forwarded_Proto`): CGI, WSGI and Rack upstreams read it as the dashed
 * header, so it could speak for the client past this gateway. Never
 * forwarded, from anyone (a proxy sends the dashed spelling). `lower`: the
 * lowercased name.
 */
export function isForwardingAlias (lower: string): boolean {
  if (lower.length < 15 || lower.length > 17 || !lower.includes('_')) return false
  const dashed = lower.replaceAll('_', '-')
  return dashed === 'x-forwarded-for' || dashed === 'x-forwarded-proto' || dashed === 'x-forwarded-host'
}
