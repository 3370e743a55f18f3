// Parsers for the scalar value types of the config file: durations,
// host:port listen addresses, upstream origins, ${VAR} substitution.

import { BlockList, isIP } from 'node:net'
import type { HostPort, UpstreamProtocol } from './schema.js'

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }

/** `500ms`, `2s`, `1.5m`, `1h` to milliseconds; undefined when malformed. */
/** A shadow sample: the share of requests copied, above 0 and at most 1 (config, admin API and the state file all hold it to this). */
export function isSample (x: unknown): x is number {
  return typeof x === 'number' && x > 0 && x <= 1
}

export function parseDuration (text: string): number | undefined {
  const m = DURATION.exec(text.trim())
  if (m === null) return undefined
  return Math.round(Number(m[1]) * UNIT_MS[m[2]])
}

/** `host:port`, `:port` or `[::1]:port`; undefined when malformed. */
export function parseHostPort (text: string): HostPort | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim())
  if (m === null) return undefined
  const port = Number(m[3])
  if (port > 65535) return undefined
  const host = m[1] ?? m[2]
  return { host: host === '' ? '0.0.0.0' : host, port }
}

export function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

/** Validates an upstream origin; returns its normalized form or an error text. */
export function parseOrigin (text: unknown): { origin: string } | { error: string } {
  if (typeof text !== 'string') return { error: 'must be a URL string' }
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return { error: `not a URL: ${JSON.stringify(text)}` }
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { error: `must be http:// or https://, got ${url.protocol}//` }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') return { error: 'must be an origin without a path, query or fragment' }
  if (url.username !== '' || url.password !== '') return { error: 'must not contain credentials' }
  return { origin: url.origin }
}

/**
 * Why `origin` (normalized) cannot be a target of a service speaking
 * `protocol`, or undefined when it can: h2c is HTTP/2 in clear text (http://
 * targets), h2 is HTTP/2 over TLS (https://).
 */
export function protocolMismatch (protocol: UpstreamProtocol, origin: string): string | undefined {
  if (protocol === 'h2c' && !origin.startsWith('http://')) return `protocol h2c (HTTP/2 in clear text) needs http:// targets, got ${origin} (use protocol h2 for TLS)`
  if (protocol === 'h2' && !origin.startsWith('https://')) return `protocol h2 (HTTP/2 over TLS) needs https:// targets, got ${origin} (use protocol h2c for clear text)`
  return undefined
}

/**
 * Replaces `${VAR}` and `${VAR:-default}` from env. An unset variable with no
 * default is reported by name (all of them, not just the first).
 */
export function substituteEnv (text: string, env: NodeJS.ProcessEnv): { text: string, missing: string[] } {
  const missing: string[] = []
  const out = text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_all, name: string, fallback: string | undefined) => {
    const value = env[name]
    if (value !== undefined && value !== '') return value
    if (fallback !== undefined) return fallback
    if (value === '') return ''
    missing.push(name)
    return ''
  })
  return { text: out, missing }
}

/** `10.0.0.0/8`, `fd00::/8` or a bare address (a /32 or /128); undefined when malformed. */
export function parseCidr (text: string): { address: string, prefix: number, family: 'ipv4' | 'ipv6' } | undefined {
  const slash = text.indexOf('/')
  const address = (slash === -1 ? text : text.slice(0, slash)).trim()
  const version = isIP(address)
  if (version === 0) return undefined
  const max = version === 4 ? 32 : 128
  let prefix = max
  if (slash !== -1) {
    const p = text.slice(slash + 1).trim()
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return undefined
    prefix = Number(p)
  }
  return { address: address.toLowerCase(), prefix, family: version === 4 ? 'ipv4' : 'ipv6' }
}

/**
 * A list of addresses and CIDR blocks, asked whether a socket's remote
 * address is on it. A dual-stack listener reports IPv4 peers as
 * `::ffff:a.b.c.d`: an IPv4 block still matches them. Connections send many
 * requests, so the last answer is kept.
 */
export class PeerList {
  /** Nothing on the list: every answer is no, without a lookup. */
  readonly empty: boolean
  private readonly list = new BlockList()
  private lastPeer = ''
  private lastAnswer = false

  /** `cidrs`: normalized `address/prefix` strings (the config's cidrList). */
  constructor (cidrs: readonly string[]) {
    this.empty = cidrs.length === 0
    for (const text of cidrs) {
      const cidr = parseCidr(text)
      if (cidr !== undefined) this.list.addSubnet(cidr.address, cidr.prefix, cidr.family)
    }
  }

  has (peer: string): boolean {
    if (this.empty || peer === '') return false
    if (peer === this.lastPeer) return this.lastAnswer
    let found: boolean
    if (peer.includes(':')) {
      const mapped = peer.length > 7 && peer.slice(0, 7).toLowerCase() === '::ffff:' && peer.includes('.')
      found = (mapped && this.list.check(peer.slice(7), 'ipv4')) || this.list.check(peer, 'ipv6')
    } else {
      found = this.list.check(peer, 'ipv4')
    }
    this.lastPeer = peer
    this.lastAnswer = found
    return found
  }
}
