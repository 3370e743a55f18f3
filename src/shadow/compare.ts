// Compares a live answer with the idle color's answer to the same request:
// status, headers (less the ones that always differ), body (JSON structurally,
// anything else by bytes), as a short list of places with redacted examples
// (credential headers, and JSON members named like secrets).

import zlib from 'node:zlib'
import { HOP_BY_HOP } from '../proxy/headers.js'
import { compileJsonPaths, formatPath, type MatchState, type PathKey, type PathMatcher } from '../config/json-path.js'
import type { Answer, Comparer, Difference } from './types.js'

/** Fields that differ between any two answers (or describe framing, compared through the body): never compared. */
export const ALWAYS_LEFT_OUT: ReadonlySet<string> = new Set([
  'date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding', ...HOP_BY_HOP,
])

/** At most this many differences per pair; past it the list ends with a `...` entry. */
export const MAX_DIFFERENCES = 50
/** A JSON example is cut here. */
const MAX_EXAMPLE = 120
/** A `where` is cut here (a long member name could make one huge). */
const MAX_WHERE = 200
/** Bytes shown around a byte body's first difference. */
const BYTE_WINDOW = 60

const ABSENT = '(absent)'
const REDACTED = '[redacted]'

/**
 * JSON member names and header field names whose values an example never
 * shows, compared lower case with `-` and `_` left out: credentials
 * (`Authorization`, `Proxy-Authenticate`), session state (`Set-Cookie`), card
 * data. A name containing password, secret, token or apikey is one too
 * (`db_password`, `csrfToken`, `x-api-key`). The place and the count still
 * say that the value differed.
 */
export const SECRET_MEMBERS: ReadonlySet<string> = new Set([
  'pwd', 'passwd', 'auth', 'authorization', 'proxyauthorization', 'wwwauthenticate', 'proxyauthenticate', 'cookie',
  'setcookie', 'session', 'sessionid', 'apikey', 'credential', 'credentials', 'privatekey', 'ssn', 'cardnumber',
  'creditcard', 'cvv', 'cvc', 'otp',
])
const SECRET_PARTS = ['password', 'secret', 'token', 'apikey']
/** Longer names are judged each time, never kept: the cache is bounded in bytes, not only in names. */
const MAX_CACHED_NAME = 64

/** Which member names are secret: SECRET_MEMBERS and SECRET_PARTS, plus a service's `redact` names. */
class SecretNames {
  private readonly extra: ReadonlySet<string>
  /** Names already judged (a body's names repeat from answer to answer); bounded. */
  private readonly seen = new Map<string, boolean>()

  constructor (redact: readonly string[]) {
    this.extra = new Set(redact.map(normalName))
  }

  has (name: string): boolean {
    let secret = this.seen.get(name)
    if (secret !== undefined) return secret
    const n = normalName(name)
    secret = SECRET_MEMBERS.has(n) || this.extra.has(n) || SECRET_PARTS.some((part) => n.includes(part))
    if (this.seen.size < 1024 && name.length <= MAX_CACHED_NAME) this.seen.set(name, secret)
    return secret
  }
}

function normalName (name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '')
}

/**
 * Builds comparers per service `ignore` settings and `redact` names; throws
 * (parseJsonPath's message) on a bad JSON path.
 */
export function createComparer (ignore: { headers: readonly string[], json: readonly string[] }, redact: readonly string[] = []): Comparer {
  const leftOut = new Set(ALWAYS_LEFT_OUT)
  for (const h of ignore.headers) leftOut.add(h.toLowerCase())
  const matcher = compileJsonPaths(ignore.json)
  const secret = new SecretNames(redact)
  const examples = new Examples(secret)
  return { compare: (live, other) => compareAnswers(live, other, leftOut, matcher, examples) }
}

/** Gathers differences: one per place (the first seen), stopping once more than MAX_DIFFERENCES are known. */
class Collector {
  readonly list: Difference[] = []
  private readonly seen = new Set<string>()
  full = false

  add (where: string, live: string, other: string): void {
    if (this.full) return
    if (where.length > MAX_WHERE) where = where.slice(0, MAX_WHERE - 3) + '...'
    if (this.seen.has(where)) return
    this.seen.add(where)
    this.list.push({ where, live, other })
    // One past the cap is how we know the list was cut (exactly 50 stay whole).
    if (this.list.length > MAX_DIFFERENCES) this.full = true
  }

  result (): Difference[] {
    if (!this.full) return this.list
    const kept = this.list.slice(0, MAX_DIFFERENCES - 1)
    kept.push({ where: '...', live: `more than ${MAX_DIFFERENCES - 1} differences; the rest are not listed`, other: '' })
    return kept
  }
}

function compareAnswers (live: Answer, other: Answer, leftOut: ReadonlySet<string>, matcher: PathMatcher, ex: Examples): Difference[] {
  const out = new Collector()
  if (live.status !== other.status) out.add('status', String(live.status), String(other.status))
  compareHeaders(live.headers, other.headers, leftOut, ex.secret, out)
  if (live.body !== undefined && other.body !== undefined) compareBodies(live, other, live.body, other.body, matcher, ex, out)
  else if (live.body !== other.body && live.headers.get('content-encoding') === other.headers.get('content-encoding')) {
    // One body was kept and the other outgrew maxBody: the same coding, different lengths, never the same body.
    // (Uncounted, an idle color whose answers grew past the cap, a lost page size say, matched every pair.)
    out.add('body', sizeExample(live.body), sizeExample(other.body))
  }
  return out.result()
}

function sizeExample (body: Buffer | undefined): string {
  return body === undefined ? 'larger than maxBody (not kept)' : `${body.length} bytes`
}

function compareHeaders (live: ReadonlyMap<string, string>, other: ReadonlyMap<string, string>, leftOut: ReadonlySet<string>, secret: SecretNames, out: Collector): void {
  let differ: string[] | undefined
  for (const [name, value] of live) {
    if (!leftOut.has(name) && other.get(name) !== value) (differ ??= []).push(name)
  }
  for (const name of other.keys()) {
    if (!leftOut.has(name) && !live.has(name)) (differ ??= []).push(name)
  }
  if (differ === undefined) return
  // Field order differs between servers; a sorted list reads the same for the same answers.
  differ.sort()
  for (const name of differ) {
    const hidden = secret.has(name)
    out.add(`header:${name}`, headerExample(live.get(name), hidden), headerExample(other.get(name), hidden))
  }
}

function headerExample (value: string | undefined, hidden: boolean): string {
  if (value === undefined) return ABSENT
  return hidden ? REDACTED : cut(value, MAX_EXAMPLE)
}

/** `application/json` or any `type/subtype+json`, parameters aside. */
export function isJsonType (contentType: string | undefined): boolean {
  if (contentType === undefined) return false
  const semi = contentType.indexOf(';')
  const media = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase()
  if (media === 'application/json') return true
  const slash = media.indexOf('/')
  return slash > 0 && media.endsWith('+json') && media.length > slash + 6
}

/** A compressed body is compared decoded, up to this size (beyond it, as the bytes sent). */
const MAX_DECODED = 1024 * 1024

const DECODERS: Record<string, (b: Buffer, o: zlib.ZlibOptions) => Buffer> = {
  gzip: zlib.gunzipSync,
  'x-gzip': zlib.gunzipSync,
  deflate: zlib.inflateSync,
  br: zlib.brotliDecompressSync,
}

/**
 * The body as the service meant it: a gzip, deflate or br body decoded (one
 * coding; anything else, or a body that does not decode within
 * MAX_DECODED, stays as sent). Without this, two compressions of answers
 * that differ only in a timestamp differ everywhere, and `body` is learnt as
 * noise: every later difference would hide behind it.
 */
function decoded (answer: Answer, body: Buffer): Buffer {
  const coding = answer.headers.get('content-encoding')
  if (coding === undefined) return body
  const decode = DECODERS[coding.trim().toLowerCase()]
  if (decode === undefined) return body
  try {
    return decode(body, { maxOutputLength: MAX_DECODED })
  } catch {
    return body
  }
}

function compareBodies (live: Answer, other: Answer, a: Buffer, b: Buffer, matcher: PathMatcher, ex: Examples, out: Collector): void {
  // The common case (the same bytes) costs one memcmp, whatever the type.
  if (a.equals(b)) return
  a = decoded(live, a)
  b = decoded(other, b)
  if (a.equals(b)) return
  const liveJson = isJsonType(live.headers.get('content-type'))
  const otherJson = isJsonType(other.headers.get('content-type'))
  if (liveJson !== otherJson) {
    out.add('body:type', typeExample(live), typeExample(other))
    return
  }
  if (liveJson) {
    const x = parseJson(a)
    const y = parseJson(b)
    if (x !== NOT_JSON && y !== NOT_JSON) {
      const state = matcher.start()
      if (state === undefined) return
      try {
        compareValues(x, y, [], state, matcher, ex, out, 0)
        return
      } catch (err) {
        // Nesting deeper than a walk (or JSON.stringify) takes: compared as bytes instead, never thrown at the mirror.
        if (err !== TOO_DEEP && !(err instanceof RangeError)) throw err
      }
    }
  }
  // A body that says it is JSON (both do, here) may hold secrets anywhere: its bytes are never
  // shown (one that did not parse, or nests too deep to walk), only where the first difference is.
  compareBytes(a, b, liveJson, out)
}

function typeExample (answer: Answer): string {
  return cut(answer.headers.get('content-type') ?? '(no content-type)', MAX_EXAMPLE)
}

const NOT_JSON = Symbol('not json')
/** JSON nested deeper than this is compared as bytes: the walk recurses, and a 64 KiB body can nest 30 000 deep. */
const MAX_DEPTH = 256
const TOO_DEEP = new Error('JSON nested too deep to compare structurally')

function parseJson (body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'))
  } catch {
    return NOT_JSON
  }
}

type Kind = 'null' | 'array' | 'object' | 'string' | 'number' | 'boolean'

function kindOf (v: unknown): Kind {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  return typeof v as Kind
}

/**
 * Places and examples of JSON differences. A difference at or under a secret
 * member is one place, the member's, with `[redacted]` examples: its value
 * never shows, nor the names inside it (a map keyed by session ids is part of
 * the secret). A value shown whole shows its secret members as `[redacted]`.
 */
class Examples {
  private readonly replacer: (key: string, value: unknown) => unknown

  constructor (readonly secret: SecretNames) {
    // The root's key is '', an array element's its index: neither is ever secret.
    this.replacer = (key, value) => key !== '' && secret.has(key) ? REDACTED : value
  }

  /** Adds the difference at `path` (values `a`, `b`; `length` for an array's length difference). */
  add (out: Collector, path: PathKey[], a: unknown, b: unknown, length = false): void {
    // Judged here, only for a difference: an equal member costs no name check.
    for (let i = 0; i < path.length; i++) {
      const key = path[i]
      if (typeof key !== 'string' || !this.secret.has(key)) continue
      // At the secret member itself a side may lack it; under it, both sides have it.
      const atMember = i === path.length - 1 && !length
      out.add(formatPath(path.slice(0, i + 1)), atMember && a === undefined ? ABSENT : REDACTED, atMember && b === undefined ? ABSENT : REDACTED)
      return
    }
    if (length) {
      const x = a as unknown[]
      const y = b as unknown[]
      out.add(formatPath(path), `length ${x.length}: ${this.of(x)}`, `length ${y.length}: ${this.of(y)}`)
    } else out.add(formatPath(path), a === undefined ? ABSENT : this.of(a), b === undefined ? ABSENT : this.of(b))
  }

  /** A JSON value written compactly, secret members redacted, cut at MAX_EXAMPLE characters (JSON.stringify's RangeError, past its depth, is the caller's). */
  private of (v: unknown): string {
    return cut(JSON.stringify(v, this.replacer), MAX_EXAMPLE)
  }
}

/**
 * Walks both values together. `path` is the concrete path (indices as they
 * are, so `[0]` ignores match); the place is written with `[*]` only when a
 * difference is found, so an equal node costs no string work.
 */
function compareValues (a: unknown, b: unknown, path: PathKey[], state: MatchState, matcher: PathMatcher, ex: Examples, out: Collector, depth: number): void {
  if (a === b) return
  if (depth > MAX_DEPTH) throw TOO_DEEP
  const ka = kindOf(a)
  const kb = kindOf(b)
  if (ka !== kb || (ka !== 'array' && ka !== 'object')) {
    // Different kinds, or two scalars that differ (numbers compare by value: 1 and 1.0 parse alike).
    ex.add(out, path, a, b)
    return
  }
  if (ka === 'array') {
    const x = a as unknown[]
    const y = b as unknown[]
    // A length difference is one place (the array's), then the common prefix compared index by index.
    if (x.length !== y.length) ex.add(out, path, x, y, true)
    const n = Math.min(x.length, y.length)
    for (let i = 0; i < n && !out.full; i++) {
      // Equal scalars (most nodes) cost one comparison: no matcher step, no path work.
      if (x[i] === y[i]) continue
      const s = matcher.step(state, i)
      if (s === undefined) continue
      path.push(i)
      compareValues(x[i], y[i], path, s, matcher, ex, out, depth + 1)
      path.pop()
    }
    return
  }
  const x = a as Record<string, unknown>
  const y = b as Record<string, unknown>
  for (const key of Object.keys(x)) {
    if (out.full) return
    // JSON values are never functions, so equal values here are both own members (never Object.prototype's).
    if (x[key] === y[key]) continue
    const s = matcher.step(state, key)
    if (s === undefined) continue
    path.push(key)
    if (Object.hasOwn(y, key)) compareValues(x[key], y[key], path, s, matcher, ex, out, depth + 1)
    else ex.add(out, path, x[key], undefined)
    path.pop()
  }
  for (const key of Object.keys(y)) {
    if (out.full) return
    if (Object.hasOwn(x, key)) continue
    if (matcher.step(state, key) === undefined) continue
    path.push(key)
    ex.add(out, path, undefined, y[key])
    path.pop()
  }
}

function cut (s: string, max: number): string {
  return s.length <= max ? s : s.slice(0, max - 3) + '...'
}

/**
 * Bodies not compared as JSON: the first differing byte, with up to 60 bytes
 * around it from each side, or (`blind`: a side says it is JSON) only where.
 */
function compareBytes (a: Buffer, b: Buffer, blind: boolean, out: Collector): void {
  const n = Math.min(a.length, b.length)
  let at = 0
  while (at < n && a[at] === b[at]) at++
  if (blind) out.add('body', `at byte ${at} of ${a.length} (a JSON body: not shown)`, `at byte ${at} of ${b.length} (a JSON body: not shown)`)
  else out.add('body', byteExample(a, at), byteExample(b, at))
}

function byteExample (body: Buffer, at: number): string {
  // A third of the window before the difference (what led to it), the rest after.
  const start = Math.max(0, Math.min(at - BYTE_WINDOW / 3, body.length - BYTE_WINDOW))
  const end = Math.min(body.length, start + BYTE_WINDOW)
  const text = (start > 0 ? '...' : '') + escapeBytes(body, start, end) + (end < body.length ? '...' : '')
  return `at byte ${at} of ${body.length}: ${text}`
}

/** Printable ASCII as it is, everything else escaped (`\n`, `\xNN`), so an example is one safe line. */
export function escapeBytes (body: Buffer, start: number, end: number): string {
  let out = ''
  for (let i = start; i < end; i++) {
    const c = body[i]
    if (c === 0x5c) out += '\\\\'
    else if (c >= 0x20 && c < 0x7f) out += String.fromCharCode(c)
    else if (c === 0x0a) out += '\\n'
    else if (c === 0x0d) out += '\\r'
    else if (c === 0x09) out += '\\t'
    else out += '\\x' + c.toString(16).padStart(2, '0')
  }
  return out
}

/**
 * An Answer's header map from a head as a tap is shown it: the fast engine's
 * `name: value\r\n` lines, or a flat [name, value, ...] list (strings or
 * Buffers). Names lower case, repeated fields joined with ', ' in order,
 * hop-by-hop fields left out.
 */
export function answerHeaders (fields: string | ReadonlyArray<string | Buffer>): Map<string, string> {
  const map = new Map<string, string>()
  if (typeof fields === 'string') {
    let i = 0
    while (i < fields.length) {
      let eol = fields.indexOf('\n', i)
      if (eol === -1) eol = fields.length
      const lineEnd = eol > i && fields.charCodeAt(eol - 1) === 0x0d ? eol - 1 : eol
      const colon = fields.indexOf(':', i)
      if (colon !== -1 && colon < lineEnd) {
        put(map, fields.slice(i, colon), fields.slice(colon + 1, lineEnd))
      }
      i = eol + 1
    }
  } else {
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i]
      const value = fields[i + 1]
      put(map, typeof name === 'string' ? name : name.toString('latin1'), typeof value === 'string' ? value : value.toString('latin1'))
    }
  }
  return map
}

function put (map: Map<string, string>, rawName: string, rawValue: string): void {
  const name = rawName.trim().toLowerCase()
  if (name === '' || HOP_BY_HOP.has(name)) return
  const value = rawValue.trim()
  const prior = map.get(name)
  map.set(name, prior === undefined ? value : `${prior}, ${value}`)
}
