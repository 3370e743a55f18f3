// Seeded generators of HTTP/1.1 request and response bytes for the differential
// tests against llhttp: well-formed messages, the classic smuggling families, and random byte mutations.

/** A small seeded PRNG (mulberry32): the same seed gives the same cases. */
export class Rng {
  private s: number
  constructor (seed: number) { this.s = seed >>> 0 }
  next (): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0
    let z = this.s
    z = Math.imul(z ^ (z >>> 15), z | 1)
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296
  }

  int (n: number): number { return Math.floor(this.next() * n) }
  chance (p: number): boolean { return this.next() < p }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)] }
}

/** The seed of a run: SEED from the environment, or a fresh one (printed by the test). */
export function runSeed (): number {
  const env = process.env.SEED
  return env !== undefined && env !== '' ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0
}

/** Bytes that break parsers, for mutations. */
const NASTY = ['\xa0', '\r', '\n', '\r\n', ' ', '\t', '\0', ':', '\x7f', '\x80', '\xff', ',', ';', '\x0b', '\x0c', '"', '\\', '\r\n ', '\r\n\r\n']

/** One or two random edits (insert, replace, delete) at random places. */
export function mutate (rng: Rng, text: string): string {
  let s = text
  for (let n = 1 + rng.int(2); n > 0; n--) {
    const at = rng.int(s.length + 1)
    const op = rng.int(3)
    if (op === 0) s = s.slice(0, at) + rng.pick(NASTY) + s.slice(at)
    else if (op === 1) s = s.slice(0, at) + rng.pick(NASTY) + s.slice(at + 1)
    else s = s.slice(0, at) + s.slice(at + 1)
  }
  return s
}

const LENGTH_VALUES = ['5', '05', '0005', '+5', '-5', ' 5', '5 ', '\t5', '5,5', '5, 5', '0x5', '5.0', '1e1', '', '5 5', '99999999999999999999', '٥']
const TE_VALUES = ['chunked', 'Chunked', 'CHUNKED', ' chunked', 'chunked ', '\tchunked', 'xchunked', 'chunkedx', 'chunked, identity', 'identity',
  'identity, chunked', 'gzip, chunked', 'chunked, gzip', 'gzip', 'chunked\x0b', 'chunked;q=1', '"chunked"', 'chunk', ', chunked', 'chunked,']

/** Header lines that bend framing or routing (no CRLF at the end; may hold CRLFs for obs-fold). */
function framingLines (rng: Rng, kind: 'request' | 'response'): string[] {
  const lines: string[] = []
  const cl = (): string => `${rng.pick(['Content-Length', 'content-length', 'CONTENT-LENGTH', 'Content-Length ', 'Content-Length\t', ' Content-Length', 'Content_Length', 'Content-Length\x00'])}:${rng.pick(['', ' ', '  ', '\t'])}${rng.pick(LENGTH_VALUES)}`
  const te = (): string => `${rng.pick(['Transfer-Encoding', 'transfer-encoding', 'Transfer-Encoding ', 'Transfer_Encoding', 'Transfer-Encoding\t', 'TE'])}:${rng.pick([' ', '', '\t', '\r\n '])}${rng.pick(TE_VALUES)}`
  switch (rng.int(8)) {
    case 0: lines.push(cl()); break
    case 1: lines.push(te()); break
    case 2: lines.push(cl(), te()); break
    case 3: lines.push(te(), cl()); break
    case 4: lines.push(cl(), cl()); break
    case 5: lines.push(te(), te()); break
    case 6: lines.push(`Content-Length: ${rng.pick(['3', '5', '7'])}`, `Content-Length: ${rng.pick(['3', '5', '7'])}`); break
    default: break
  }
  if (kind === 'request' && rng.chance(0.1)) lines.push(rng.pick(['Expect: 100-continue', 'Upgrade: h2c', 'Connection: upgrade', 'Connection: close', 'Connection: content-length']))
  return lines
}

/** `n` random bytes (latin1), CR and LF rarer than the rest. */
function randomBytes (rng: Rng, n: number): string {
  let s = ''
  for (let i = 0; i < n; i++) {
    let c = rng.int(256)
    if ((c === 13 || c === 10) && rng.chance(0.8)) c = 0x61
    s += String.fromCharCode(c)
  }
  return s
}

/** A header line of random bytes around a colon: every byte class against both parsers. */
function randomLine (rng: Rng): string {
  const name = rng.chance(0.7) ? rng.pick(['X-R', 'x-r', 'Accept', 'X-Rand']) : randomBytes(rng, 1 + rng.int(6))
  return `${name}:${randomBytes(rng, rng.int(8))}`
}

/** Other header lines, some of them bent. */
function otherLines (rng: Rng): string[] {
  const lines: string[] = []
  if (rng.chance(0.2)) lines.push(randomLine(rng))
  for (let n = rng.int(3); n > 0; n--) {
    lines.push(rng.pick(['Accept: */*', 'X-A: 1', 'x-b:2', 'X-C: \x80\xff', 'X-D: a\tb', 'X-E:', 'X-F: 1\r\n folded', 'X G: 1', 'X-H : 1', 'X-I: a\rb',
      'X-J: a\nb', 'X-K: \x00', ': empty-name', 'no-colon', 'X-L: "quoted"', 'X-M: \x7f', 'Cookie: a=1', 'X-Request-Id: r1', 'Keep-Alive: timeout=5']))
  }
  return lines
}

/** A chunked body: sizes, extensions, trailers, some of them bent. */
export function chunkedBody (rng: Rng): string {
  let body = ''
  for (let n = rng.int(3); n > 0; n--) {
    const data = 'abcdefghijklmnopqrstuvwxyz'.slice(0, 1 + rng.int(12))
    let size = data.length.toString(16)
    if (rng.chance(0.3)) {
      size = rng.pick([size.toUpperCase(), `0${size}`, `000000000000${size}`, `0x${size}`, `-${size}`, `+${size}`, ` ${size}`, `${size} `, `${size}\t`, 'ffffffffffffffffff',
        '1000000000000000', `${size}z`, ''])
    }
    let ext = ''
    if (rng.chance(0.3)) {
      ext = rng.pick([';a', ';a=b', ';a="b c"', ';a="\\"x"', '; a=b', ';a =b', ';a= b', ' ;a', ';', ';a=', ';=b', ';a\x01', ';a="\x01"', ';a=b\x00', ';a=\x80', ';a="\x80"',
        ' junk', 'junk', ';a;b;c=d', ';a="unterminated'])
    }
    const eol = rng.chance(0.1) ? rng.pick(['\n', '\r', '\r\r\n', '']) : '\r\n'
    const tail = rng.chance(0.1) ? rng.pick(['\n', '', 'x\r\n', '\r']) : '\r\n'
    body += `${size}${ext}${eol}${data}${tail}`
  }
  body += rng.chance(0.1) ? rng.pick(['00', '0;a=b', '0 ', '00000000000000000', '0x0', '']) : '0'
  body += '\r\n'
  for (let n = rng.chance(0.3) ? 1 + rng.int(2) : 0; n > 0; n--) {
    body += rng.pick(['X-Sum: 1', 'x-trailer:2', 'Content-Length: 5', 'Transfer-Encoding: chunked', 'Host: evil', 'Trailer: x', 'x y: 1', ' folded', 'x: \x01',
      'no-colon', 'Set-Cookie: a=1', 'grpc-status: 0']) + '\r\n'
  }
  body += rng.chance(0.05) ? rng.pick(['\n', '', '\r']) : '\r\n'
  return body
}

/** The body a head's own framing asks for (or something near it). */
function bodyFor (rng: Rng, lines: string[]): string {
  const joined = lines.join('\n').toLowerCase()
  if (joined.includes('chunked') && rng.chance(0.8)) return chunkedBody(rng)
  const m = /content-length:[ \t]*(\d+)/.exec(joined)
  if (m !== null && Number(m[1]) < 100) {
    const n = Number(m[1]) + (rng.chance(0.2) ? rng.int(5) - 2 : 0)
    return 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'.repeat(3).slice(0, Math.max(0, n))
  }
  return rng.chance(0.1) ? chunkedBody(rng) : ''
}

/** One request: request line, header lines, the body its framing suggests. */
export function request (rng: Rng): string {
  const method = rng.chance(0.85) ? rng.pick(['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH']) : rng.pick(['get', 'G ET', 'PROPFIND', 'CONNECT', 'TRACE', 'GET\t', 'QUERY', ''])
  let target = rng.pick(['/', '/a', '/a/b?c=d', '/x?y=%20', '/a/../b', '/%2e%2e/x'])
  if (rng.chance(0.1)) target = '/' + randomBytes(rng, 1 + rng.int(4))
  if (rng.chance(0.2)) {
    target = rng.pick(['/a b', '/a"b', '/a<b>', '/a{b}', '/a|b', '/a\\b', '/a^b', '/a`b', '/a#frag', '*', 'http://h/x', '', '/a\x7f', '/a\x80', '/a\tb', '//x', '/?'])
  }
  const version = rng.chance(0.9) ? 'HTTP/1.1' : rng.pick(['HTTP/1.0', 'HTTP/1.2', 'http/1.1', 'HTTP/2.0', 'HTTP/1.1 ', 'HTTP/11', 'HTTP/1.1\t'])
  const lines: string[] = []
  if (rng.chance(0.93)) lines.push(rng.pick(['Host: h', 'host: h', 'Host:h', 'Host:  h  ', 'HOST: h']))
  if (rng.chance(0.07)) lines.push(rng.pick(['Host: h\t', 'Host:\th', 'Host: h\xa0', 'Host: other', 'Host : h', 'Host: h, other', 'Host:', 'Host: h\x00', 'Host: h h', '\tHost: h']))
  lines.push(...otherLines(rng), ...framingLines(rng, 'request'))
  // Header order matters to some parsers: shuffle a little.
  if (lines.length > 1 && rng.chance(0.5)) {
    const i = rng.int(lines.length)
    lines.push(...lines.splice(i, 1))
  }
  const sep = rng.chance(0.95) ? '\r\n' : rng.pick(['\n', '\r', '\r\r\n'])
  const headEnd = rng.chance(0.97) ? '\r\n\r\n' : rng.pick(['\n\n', '\r\n\n', '\n\r\n'])
  const head = `${method} ${target} ${version}${lines.length === 0 ? '' : '\r\n' + lines.join(sep)}${headEnd}`
  return head + bodyFor(rng, lines)
}

/** A plainly valid request the fast path takes (for pipelines). */
export function goodRequest (rng: Rng): string {
  if (rng.chance(0.5)) return `GET /g${rng.int(100)} HTTP/1.1\r\nHost: h\r\n\r\n`
  const body = 'xyz'.slice(0, 1 + rng.int(3))
  return `POST /p${rng.int(100)} HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n${body}`
}

/** A case: 1 to 3 requests, often a good one first (the hand-over boundary), sometimes mutated. */
export function requestCase (rng: Rng): string {
  // Near misses: good requests with a byte or two changed, where a lenient fast path would go wrong.
  if (rng.chance(0.3)) return mutate(rng, goodRequest(rng) + (rng.chance(0.5) ? goodRequest(rng) : ''))
  const parts: string[] = []
  if (rng.chance(0.1)) parts.push('\r\n')
  const n = 1 + rng.int(3)
  for (let i = 0; i < n; i++) parts.push(i < n - 1 && rng.chance(0.6) ? goodRequest(rng) : request(rng))
  let text = parts.join('')
  if (rng.chance(0.35)) text = mutate(rng, text)
  return text
}

/** A response case: the upstream's bytes, and whether the request was HEAD. */
export interface ResponseCase { text: string, head: boolean }

/** A plainly valid answer: a length, chunks (maybe with extensions and trailers), or none. */
function goodResponse (rng: Rng): string {
  switch (rng.int(4)) {
    case 0: return 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello'
    case 1: return `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${rng.pick(['5', '5;a=b', '5;a="x y"', '05'])}\r\nhello\r\n0\r\n${rng.pick(['', 'X-Sum: 1\r\n'])}\r\n`
    case 2: return `HTTP/1.1 ${rng.pick(['204 No Content', '304 Not Modified'])}\r\nX-A: 1\r\n\r\n`
    default: return 'HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end'
  }
}

export function responseCase (rng: Rng): ResponseCase {
  const head = rng.chance(0.1)
  // Near misses: a valid answer with a byte or two changed.
  if (rng.chance(0.3)) return { text: mutate(rng, goodResponse(rng)), head }
  let text = ''
  if (rng.chance(0.1)) {
    // Informational answers first, some with framing headers.
    text += rng.pick(['HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n', 'HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n',
      'HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n', 'HTTP/1.1 102 Processing\r\n\r\n'])
  }
  let status = rng.chance(0.8) ? rng.pick(['200 OK', '201 Created', '404 Not Found', '500 Oops', '200']) : rng.pick(['204 No Content', '304 Not Modified', '205 Reset', '200OK', '2000 OK', '099 x', '200 O\x01K', '200 \x80'])
  if (rng.chance(0.05)) status = `200 ${randomBytes(rng, 1 + rng.int(4))}`
  const version = rng.chance(0.9) ? 'HTTP/1.1' : rng.pick(['HTTP/1.0', 'HTTP/1.2', 'http/1.1', 'HTTP/2'])
  const lines = [...otherLines(rng), ...framingLines(rng, 'response')]
  if (rng.chance(0.2)) lines.push(rng.pick(['Connection: close', 'Connection: keep-alive', 'Trailer: x-sum', 'Connection: x-a']))
  const sep = rng.chance(0.95) ? '\r\n' : rng.pick(['\n', '\r'])
  text += `${version} ${status}${lines.length === 0 ? '' : '\r\n' + lines.join(sep)}\r\n\r\n`
  text += bodyFor(rng, lines)
  if (rng.chance(0.15)) text += rng.pick(['HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', 'junk', '\r\n', 'X'])
  if (rng.chance(0.3)) text = mutate(rng, text)
  return { text, head }
}
