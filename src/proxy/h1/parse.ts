// HTTP/1.1 message heads for the fast path, parsed from a latin1 string in
// one pass that also writes the head to forward. Strict by design: whatever
// is unusual (a request the fast path does not take, or anything it is not
// sure about) comes back as `undefined`, and the connection goes to node:http,
// whose llhttp parser decides. The upstream's answers get no such fallback:
// anything not plainly valid is an upstream error. "Valid" is held to what
// llhttp (Node's strict parser) accepts and how it frames it: the differential
// tests (test/differential-*.test.ts) check that on generated messages.

import { clientAddress, type RequestFacts } from '../resolve.js'
import { FORBIDDEN_TRAILERS, HOP_BY_HOP, PIN_HEADER, SHADOW_HEADER } from '../headers.js'
import { MAX_HEAD } from '../limits.js'
import { addSent, isForwardingAlias, type Forwarding } from '../trust.js'

/**
 * The Content-Length value in `s` from `a` to `b`: optional whitespace, digits
 * only (at most 15: safe integers), then optional spaces; -1 otherwise. Not a
 * tab after the digits: llhttp refuses that, so a strict peer would read no
 * length where we read one.
 */
function contentLength (s: string, a: number, b: number): number {
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++
  while (b > a && s.charCodeAt(b - 1) === 32) b--
  if (a === b || b - a > 15) return -1
  let n = 0
  for (let i = a; i < b; i++) {
    const c = s.charCodeAt(i)
    if (c < 48 || c > 57) return -1
    n = n * 10 + c - 48
  }
  return n
}

/** The comma-separated tokens of a Connection header, lowercased. */
function tokens (v: string): string[] {
  // Nearly always one of these two, alone.
  if (v.length === 10 || v.length === 5) {
    const lower = v.toLowerCase()
    if (lower === 'keep-alive' || lower === 'close') return [lower]
  }
  const out: string[] = []
  for (const t of v.split(',')) {
    const name = t.trim().toLowerCase()
    if (name !== '') out.push(name)
  }
  return out
}

/** One transfer coding in a list: a token between optional spaces and tabs (no parameters). */
const CODING = /^[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+[ \t]*$/

/**
 * Whether a Transfer-Encoding list ends in chunked; undefined when an element
 * is empty or not a plain token ("chunked," or "chunked\xa0"): parsers differ on
 * those (llhttp reads "chunked," as not chunked), so they are not relayed.
 */
function endsInChunked (v: string): boolean | undefined {
  let last = ''
  for (const element of v.split(',')) {
    if (!CODING.test(element)) return undefined
    last = element
  }
  return last.trim().toLowerCase() === 'chunked'
}

const BAGGAGE = ['baggage']

/** Drops header lines with these (lower-case) names, in a second pass: ones a Connection header listed (rare), or the baggage pinning replaces (every request that carries baggage, with pinning on). */
function dropNamed (lines: string, named: string[]): string {
  let out = ''
  for (const line of lines.split('\r\n')) {
    if (line === '') continue
    const name = line.slice(0, line.indexOf(':')).toLowerCase()
    if (!named.includes(name)) out += line + '\r\n'
  }
  return out
}

/** Methods the fast path forwards; any other (CONNECT, WebDAV, lowercase) is node:http's to judge. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE'])

/**
 * A parsed request head. It is also the request's facts for the resolve step
 * (RequestFacts): the header lookups scan the forwarded lines, and only run
 * for services whose preview header routes them.
 */
export class RequestHead implements RequestFacts {
  method: string
  /** Origin-form: starts with `/`. */
  target: string
  host: string | undefined = undefined
  /** Body size; 0 when there is none (chunked bodies take the node:http path). */
  contentLength = 0
  /** The client asked to close after this exchange. */
  close = false
  requestId: string | undefined = undefined
  /** The X-Forwarded-For values the client sent, joined; '' when none. */
  xff = ''
  /** X-Forwarded-Proto, X-Forwarded-Host and Forwarded as sent, joined; undefined when absent. */
  xfProto: string | undefined = undefined
  xfHost: string | undefined = undefined
  forwarded: string | undefined = undefined
  /** Header names the Connection header lists (besides close and keep-alive); undefined when none. */
  connectionNames: string[] | undefined = undefined
  cookie: string | undefined = undefined
  /** Baggage lines joined with `,`; they stay in `lines` (the exchange replaces them only with pinning on). */
  baggage: string | undefined = undefined
  /** Where the one baggage line sits in `lines` ([from, to), CRLF included); -1: none, or not one line at a known place. */
  baggageFrom = -1
  baggageTo = -1
  smoke: string | undefined = undefined
  /** The header lines to forward, each ending in CRLF, hop-by-hop and gateway-owned ones removed. */
  lines = ''
  /** The socket's remote address, and the listener's trust in it: set by the connection, read only when a split keys by address. */
  peer = ''
  forwarding: Forwarding | undefined = undefined

  /**
   * The head as received, for the rare lookups below: they see every line the
   * client sent (as node:http's headers do), not only the ones forwarded, so a
   * preview header routes the same on every engine whatever its name.
   */
  private readonly received: string

  constructor (method: string, target: string, received: string) {
    this.method = method
    this.target = target
    this.received = received
  }

  /** This engine forwards over HTTP/1.1 only (see RequestFacts); on the prototype, so no request pays a field for it. */
  get http1Only (): true {
    return true
  }

  /** `lines` without the baggage lines (pinning on: the resolve step's baggage replaces them). */
  linesWithoutBaggage (): string {
    if (this.baggageFrom < 0) return dropNamed(this.lines, BAGGAGE)
    return this.lines.slice(0, this.baggageFrom) + this.lines.slice(this.baggageTo)
  }

  /** The value of header `lowerName` as received, when it has exactly one line. */
  header (lowerName: string): string | undefined {
    let found: string | undefined
    let lines = 0
    // A second line makes it ambiguous: no need to read further.
    this.eachLine(lowerName, (value) => { found = value; return ++lines < 2 })
    return lines === 1 ? found : undefined
  }

  /** The client's address: the peer, or what a trusted proxy says it saw. */
  clientAddress (): string {
    return clientAddress(this.peer, this.forwarding?.trusts(this.peer) === true, this.xff)
  }

  /** How many lines of header `lowerName` the request carries. */
  headerLines (lowerName: string): number {
    let n = 0
    this.eachLine(lowerName, () => { n++; return true })
    return n
  }

  /** Calls `fn` with the trimmed value of each received line of header `lowerName`, while it returns true. */
  private eachLine (lowerName: string, fn: (value: string) => boolean): void {
    const head = this.received
    // Header fields start after the request line.
    let at = head.indexOf('\r\n')
    while (at !== -1) {
      at += 2
      const colon = head.indexOf(':', at)
      if (colon === -1) return
      const eol = head.indexOf('\r\n', colon)
      if (colon - at === lowerName.length && head.slice(at, colon).toLowerCase() === lowerName) {
        if (!fn(head.slice(colon + 1, eol === -1 ? head.length : eol).trim())) return
      }
      at = eol
    }
  }
}

/**
 * Parses a request head (request line and header lines, without the final
 * empty line). Returns undefined for anything the fast path leaves to node:http:
 * other versions, non-origin-form targets, bodies with Transfer-Encoding,
 * Upgrade, Expect, malformed or doubtful lines.
 */
export function parseRequestHead (head: string): RequestHead | undefined {
  let eol = head.indexOf('\r\n')
  if (eol === -1) eol = head.length
  const sp1 = head.indexOf(' ')
  const sp2 = sp1 === -1 ? -1 : head.indexOf(' ', sp1 + 1)
  if (sp2 === -1 || sp2 > eol || head.slice(sp2 + 1, eol) !== 'HTTP/1.1') return undefined
  const method = head.slice(0, sp1)
  const target = head.slice(sp1 + 1, sp2)
  if (!METHODS.has(method) || !TARGET.test(target)) return undefined
  const r = new RequestHead(method, target, head)
  let named: string[] | undefined
  let sawLength = false
  const fields = eol + 2
  if (!validFields(head, fields)) return undefined
  // Kept lines are sliced from `head` in runs; only dropped lines break a run.
  let runStart = fields
  let pos = fields
  while (pos < head.length) {
    let end = head.indexOf('\r\n', pos)
    if (end === -1) end = head.length
    const colon = head.indexOf(':', pos)
    const nameLength = colon - pos
    const lineStart = pos
    pos = end + 2
    // Only names of these lengths mean anything here: the rest need no lowercasing.
    if (nameLength >= 32 || REQUEST_NAME_LENGTHS[nameLength] === 0) continue
    let keep = true
    const name = head.slice(lineStart, colon).toLowerCase()
    switch (name) {
      case 'host':
        if (r.host !== undefined) return undefined
        r.host = trimmed(head, colon + 1, end)
        break
      case 'content-length':
        if (sawLength) return undefined
        sawLength = true
        r.contentLength = contentLength(head, colon + 1, end)
        if (r.contentLength === -1) return undefined
        break
      case 'connection':
        keep = false
        for (const t of tokens(trimmed(head, colon + 1, end))) {
          if (t === 'close') r.close = true
          else if (t !== 'keep-alive') (named ??= []).push(t)
        }
        r.connectionNames = named
        break
      case 'transfer-encoding': case 'upgrade': case 'expect':
        return undefined
      // The forwarding set is rebuilt for the upstream (proxy/trust.ts), from these values when the peer is trusted.
      case 'x-forwarded-for': case 'x-forwarded-proto': case 'x-forwarded-host': case 'forwarded':
        keep = false
        addSent(r, name, trimmed(head, colon + 1, end))
        break
      case PIN_HEADER:
        keep = false
        r.smoke = trimmed(head, colon + 1, end)
        break
      case SHADOW_HEADER:
        keep = false
        break
      default:
        // The rest of the hop-by-hop table; only names of the forwarding headers' lengths get here with an underscore (rare).
        if (HOP_BY_HOP.has(name) || isForwardingAlias(name)) keep = false
        break
      case 'x-request-id': {
        const value = trimmed(head, colon + 1, end)
        if (r.requestId === undefined && value !== '') r.requestId = value
        break
      }
      case 'cookie': {
        const value = trimmed(head, colon + 1, end)
        r.cookie = r.cookie === undefined ? value : `${r.cookie}; ${value}`
        break
      }
      case 'baggage': {
        const value = trimmed(head, colon + 1, end)
        if (r.baggage === undefined) {
          // Its place in `lines` once its run is flushed: after what is flushed now and the run before it.
          r.baggageFrom = r.lines.length + lineStart - runStart
          r.baggageTo = r.baggageFrom + pos - lineStart
          r.baggage = value
        } else {
          r.baggageFrom = r.baggageTo = -1
          r.baggage = `${r.baggage},${value}`
        }
        break
      }
    }
    if (!keep) {
      r.lines += head.slice(runStart, lineStart)
      runStart = pos
    }
  }
  if (runStart < head.length) r.lines += head.slice(runStart) + '\r\n'
  if (r.host === undefined) return undefined
  if (named !== undefined) {
    if (named.includes('host') || named.includes('content-length')) return undefined
    r.lines = dropNamed(r.lines, named)
    r.baggageFrom = r.baggageTo = -1
  }
  return r
}

/** How the end of a response body is found. */
export const enum Framing { None, Length, Chunked, Close }

/**
 * Header lines from `from` to the end of `head` (which has no final CRLF):
 * each an RFC 9110 field-name, a colon, then VCHAR, obs-text, SP or HTAB
 * only. Checked natively in one pass, in place (sticky: no copy of the head).
 */
const HEADER_LINES = /(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*$/y

function validFields (head: string, from: number): boolean {
  if (from >= head.length) return true
  HEADER_LINES.lastIndex = from
  return HEADER_LINES.test(head)
}

/** `s` from `a` to `b` without optional whitespace at either end. */
function trimmed (s: string, a: number, b: number): string {
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--
  return s.slice(a, b)
}

/** A reason phrase: visible characters, obs-text, spaces and tabs. */
const REASON = /^[\t\x20-\x7e\x80-\xff]*$/

/** An origin-form request target: `/`, then visible ASCII only. */
const TARGET = /^\/[\x21-\x7e]*$/

/** Lengths of the request header names parseRequestHead acts on. */
const REQUEST_NAME_LENGTHS = new Uint8Array(32)
for (const name of [...HOP_BY_HOP, 'host', 'content-length', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-for',
  'forwarded', PIN_HEADER, SHADOW_HEADER, 'x-request-id', 'cookie', 'baggage']) REQUEST_NAME_LENGTHS[name.length] = 1

/** Lengths of the response header names parseResponseHead acts on. */
const RESPONSE_NAME_LENGTHS = new Uint8Array(32)
for (const name of [...HOP_BY_HOP, 'content-length']) RESPONSE_NAME_LENGTHS[name.length] = 1

export interface ResponseHead {
  status: number
  /** `HTTP/1.1 NNN reason` as the client gets it. */
  statusLine: string
  framing: Framing
  contentLength: number
  /** The upstream will close (or is HTTP/1.0 without keep-alive): do not reuse the connection. */
  close: boolean
  /** Seconds from a `Keep-Alive: timeout=N` header; 0 when not announced. */
  keepAliveSeconds: number
  /** Header lines for the client, each ending in CRLF, without hop-by-hop ones. */
  lines: string
}

/**
 * Parses a response head. `noBody`: the request was HEAD (the body framing
 * headers still go to the client). Returns a string naming the problem for a
 * response that cannot be relayed.
 */
export function parseResponseHead (head: string, noBody: boolean): ResponseHead | string {
  let eol = head.indexOf('\r\n')
  if (eol === -1) eol = head.length
  const version = head.slice(0, 9)
  if ((version !== 'HTTP/1.1 ' && version !== 'HTTP/1.0 ') || eol < 12 || (eol > 12 && head.charCodeAt(12) !== 32)) return 'malformed status line'
  let status = 0
  for (let i = 9; i < 12; i++) {
    const c = head.charCodeAt(i)
    if (c < 48 || c > 57) return 'malformed status line'
    status = status * 10 + c - 48
  }
  if (status < 100 || status > 599) return `invalid status ${status}`
  if (eol > 13 && !REASON.test(head.slice(13, eol))) return 'malformed status line'
  const http10 = version === 'HTTP/1.0 '
  const r: ResponseHead = {
    status,
    statusLine: http10 ? `HTTP/1.1 ${head.slice(9, eol)}` : head.slice(0, eol),
    framing: Framing.Close,
    contentLength: -1,
    close: http10,
    keepAliveSeconds: 0,
    lines: '',
  }
  /** Transfer-Encoding values, and those lines with any Trailer lines: kept or dropped together below. */
  let codings: string | undefined
  let teLines = ''
  let named: string[] | undefined
  /** 1xx and 204 have no body: their framing headers (RFC 9110 8.6, 9112 6.1 forbid them) are dropped. */
  const bodiless = status < 200 || status === 204
  /** The Content-Length line is relayed rewritten (leading zeros), not as sent. */
  let rewriteLength = false
  const fields = eol + 2
  // Every header line at once, natively: a token, a colon, then visible characters, spaces and tabs.
  if (!validFields(head, fields)) return 'malformed header line'
  // Kept lines are sliced from `head` in runs; only dropped lines break a run.
  let runStart = fields
  let pos = fields
  while (pos < head.length) {
    let end = head.indexOf('\r\n', pos)
    if (end === -1) end = head.length
    const colon = head.indexOf(':', pos)
    const nameLength = colon - pos
    const lineStart = pos
    pos = end + 2
    // Only names of these lengths mean anything here: the rest need no lowercasing.
    if (nameLength >= 32 || RESPONSE_NAME_LENGTHS[nameLength] === 0) continue
    const name = head.slice(lineStart, colon).toLowerCase()
    let drop = true
    switch (name) {
      case 'content-length': {
        const n = contentLength(head, colon + 1, end)
        // A repeated one, even equal, is refused: Node's strict client (and nginx) would refuse it too.
        if (n === -1 || r.contentLength !== -1) return 'invalid content-length'
        r.contentLength = n
        // Leading zeros ("007", "00"): the first digit is 0 and another digit follows it.
        let first = colon + 1
        while (head.charCodeAt(first) === 32 || head.charCodeAt(first) === 9) first++
        const next = head.charCodeAt(first + 1)
        if (head.charCodeAt(first) === 48 && next >= 48 && next <= 57) rewriteLength = true
        drop = bodiless || rewriteLength
        break
      }
      case 'transfer-encoding': {
        // A tab at the end: llhttp then reads "chunked\t" as another coding, we would read chunked.
        let last = end
        while (last > colon + 1 && head.charCodeAt(last - 1) === 32) last--
        if (head.charCodeAt(last - 1) === 9) return 'invalid transfer-encoding'
        const value = trimmed(head, colon + 1, end)
        codings = codings === undefined ? value : `${codings}, ${value}`
        teLines += head.slice(lineStart, end) + '\r\n'
        break
      }
      case 'trailer':
        teLines += head.slice(lineStart, end) + '\r\n'
        break
      case 'connection':
        for (const t of tokens(trimmed(head, colon + 1, end))) {
          if (t === 'close') r.close = true
          else if (t === 'keep-alive') { if (http10) r.close = false }
          // Framing headers stay whatever Connection says: the client needs them to find the end.
          else if (t !== 'content-length' && t !== 'transfer-encoding') (named ??= []).push(t)
        }
        break
      case 'keep-alive': {
        const m = /timeout\s*=\s*(\d+)/i.exec(head.slice(colon + 1, end))
        if (m !== null) r.keepAliveSeconds = Number(m[1])
        break
      }
      default:
        // The rest of the hop-by-hop table goes; everything else stays.
        drop = HOP_BY_HOP.has(name)
    }
    if (drop) {
      r.lines += head.slice(runStart, lineStart)
      runStart = pos
    }
  }
  if (runStart < head.length) r.lines += head.slice(runStart) + '\r\n'
  // Only chunked as the final coding is passed through as it is (the gateway decodes nothing);
  // any other body with a Transfer-Encoding runs until the upstream closes, sent without it.
  const te = codings !== undefined
  // Both at once is the classic smuggling pair. RFC 9112 6.3 lets Transfer-Encoding win; llhttp and nginx refuse it, and so do we.
  if (te && r.contentLength !== -1) return 'both transfer-encoding and content-length'
  const chunked = te && endsInChunked(codings as string)
  if (chunked === undefined) return 'invalid transfer-encoding'
  if (bodiless) {
    // Neither is relayed on an answer without a body.
  } else if (chunked) {
    r.lines += teLines
  } else if (rewriteLength) {
    r.lines += `content-length: ${r.contentLength}\r\n`
  }
  if (named !== undefined) r.lines = dropNamed(r.lines, named)
  if (noBody || status < 200 || status === 204 || status === 304) {
    r.framing = Framing.None
  } else if (te) {
    r.framing = chunked ? Framing.Chunked : Framing.Close
  } else if (r.contentLength !== -1) {
    r.framing = Framing.Length
  }
  if (r.framing === Framing.Close) r.close = true
  return r
}

const enum Chunk {
  Size, SizeLf, ExtName, ExtNameMore, ExtValue, ExtToken, ExtQuoted, ExtEscape, ExtQuotedEnd,
  Data, DataCr, DataLf, LineStart, TrailerName, TrailerValue, TrailerLf, EndLf,
}

/** RFC 9110 tchar: 1 for the bytes a token (header name, chunk extension name) is made of. */
const TCHAR = new Uint8Array(256)
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1

/** Bytes a field value may hold: HTAB, SP, VCHAR, obs-text (the same set HEADER_LINES allows). */
const FIELD_CHAR = new Uint8Array(256)
FIELD_CHAR[9] = 1
for (let c = 0x20; c <= 0xff; c++) if (c !== 0x7f) FIELD_CHAR[c] = 1

/**
 * Finds where a chunked body ends, without decoding it (the bytes are passed
 * on as they are, so whatever is relayed must be plainly valid). Chunk
 * extensions must follow RFC 9112 7.1.1 without whitespace (`;name`,
 * `;name=token`, `;name="quoted"`), as Node's own strict parser wants; trailer
 * lines must be header fields and none of FORBIDDEN_TRAILERS. Anything else is
 * invalid framing. Feed it every body byte in order.
 *
 * Made with `decode`, it also takes the body apart for a client that is not
 * sent the chunk framing (HTTP/2: DATA frames carry the payload): each scan
 * leaves views of the data bytes it crossed in `parts` (the caller empties
 * it), and the trailer fields in `trailers`. The framing is judged the same,
 * except that a trailer field a client must not be handed (FORBIDDEN_TRAILERS)
 * is left out rather than failing the body, as the node engine does, and the
 * trailer section is held to MAX_HEAD bytes (it is kept, not passed on).
 */
export class ChunkedScanner {
  private state = Chunk.Size
  private size = 0
  private digits = 0
  /** The trailer field name read so far, lowercased (trailers are rare: built byte by byte). */
  private name = ''
  /** Decoding: the data bytes of the last scans, as views of the buffers scanned; undefined when only scanning. */
  readonly parts: Buffer[] | undefined
  /** Decoding: the trailer fields, flat [name, value, ...] with lower-case names; undefined when none came. */
  trailers: string[] | undefined = undefined
  /** Decoding: the value of the trailer field being read, and whether that field is left out. */
  private value = ''
  private skipField = false
  private trailerBytes = 0

  constructor (decode = false) {
    this.parts = decode ? [] : undefined
  }

  /**
   * Scans `buf` from `from`: the index just past the body's last byte, -1 when
   * the body goes on, or -2 when the framing is invalid.
   */
  scan (buf: Buffer, from: number): number {
    let i = from
    const n = buf.length
    while (i < n) {
      const c = buf[i++]
      switch (this.state) {
        case Chunk.Size: {
          const l = c | 32
          const d = c >= 48 && c <= 57 ? c - 48 : l >= 97 && l <= 102 ? l - 87 : -1
          if (d !== -1) {
            if (++this.digits > 12) return -2
            this.size = this.size * 16 + d
          } else if (this.digits === 0) {
            return -2
          } else if (c === 13) {
            this.state = Chunk.SizeLf
          } else if (c === 59) {
            this.state = Chunk.ExtName
          } else {
            // Whitespace or text after the size: llhttp refuses it, so a client would.
            return -2
          }
          break
        }
        case Chunk.ExtName:
          if (TCHAR[c] === 0) return -2
          this.state = Chunk.ExtNameMore
          break
        case Chunk.ExtNameMore:
          if (c === 13) this.state = Chunk.SizeLf
          else if (c === 59) this.state = Chunk.ExtName
          else if (c === 61) this.state = Chunk.ExtValue
          else if (TCHAR[c] === 0) return -2
          break
        case Chunk.ExtValue:
          if (c === 34) this.state = Chunk.ExtQuoted
          else if (TCHAR[c] === 1) this.state = Chunk.ExtToken
          else return -2
          break
        case Chunk.ExtToken:
          if (c === 13) this.state = Chunk.SizeLf
          else if (c === 59) this.state = Chunk.ExtName
          else if (TCHAR[c] === 0) return -2
          break
        case Chunk.ExtQuoted:
          if (c === 34) this.state = Chunk.ExtQuotedEnd
          else if (c === 92) this.state = Chunk.ExtEscape
          else if (FIELD_CHAR[c] === 0) return -2
          break
        case Chunk.ExtEscape:
          if (FIELD_CHAR[c] === 0) return -2
          this.state = Chunk.ExtQuoted
          break
        case Chunk.ExtQuotedEnd:
          if (c === 13) this.state = Chunk.SizeLf
          else if (c === 59) this.state = Chunk.ExtName
          else return -2
          break
        case Chunk.SizeLf:
          if (c !== 10) return -2
          this.state = this.size === 0 ? Chunk.LineStart : Chunk.Data
          break
        case Chunk.Data: {
          // c was the first byte of the run: skip the rest of it at once.
          const take = Math.min(this.size - 1, n - i)
          if (this.parts !== undefined) this.parts.push(buf.subarray(i - 1, i + take))
          this.size -= take + 1
          i += take
          if (this.size === 0) this.state = Chunk.DataCr
          break
        }
        case Chunk.DataCr:
          if (c !== 13) return -2
          this.state = Chunk.DataLf
          break
        case Chunk.DataLf:
          if (c !== 10) return -2
          this.state = Chunk.Size
          this.digits = 0
          break
        case Chunk.LineStart:
          // After the last chunk: trailer lines (header fields), then an empty line.
          if (c === 13) {
            this.state = Chunk.EndLf
          } else if (TCHAR[c] === 1) {
            this.name = String.fromCharCode(c >= 65 && c <= 90 ? c | 32 : c)
            this.state = Chunk.TrailerName
          } else {
            return -2
          }
          break
        case Chunk.TrailerName:
          if (this.parts !== undefined && ++this.trailerBytes > MAX_HEAD) return -2
          if (c === 58) {
            if (FORBIDDEN_TRAILERS.has(this.name)) {
              if (this.parts === undefined) return -2
              this.skipField = true
            }
            this.state = Chunk.TrailerValue
          } else if (TCHAR[c] === 1) {
            // Scanning needs only enough of the name to tell a forbidden one; decoding keeps all of it.
            if (this.name.length < 32 || this.parts !== undefined) this.name += String.fromCharCode(c >= 65 && c <= 90 ? c | 32 : c)
          } else {
            return -2
          }
          break
        case Chunk.TrailerValue:
          if (c === 13) this.state = Chunk.TrailerLf
          else if (FIELD_CHAR[c] === 0) return -2
          else if (this.parts !== undefined) {
            if (++this.trailerBytes > MAX_HEAD) return -2
            this.value += String.fromCharCode(c)
          }
          break
        case Chunk.TrailerLf:
          if (c !== 10) return -2
          this.state = Chunk.LineStart
          if (this.parts !== undefined) this.endField()
          break
        case Chunk.EndLf:
          if (c !== 10) return -2
          return i
      }
    }
    return -1
  }

  /** Decoding: the trailer field just read is kept (without its optional whitespace), unless it is left out. */
  private endField (): void {
    if (!this.skipField) (this.trailers ??= []).push(this.name, trimmed(this.value, 0, this.value.length))
    this.value = ''
    this.skipField = false
  }
}
