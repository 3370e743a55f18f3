import t from 'tap'
import { ChunkedScanner, Framing, parseRequestHead, parseResponseHead, type ResponseHead } from '../src/proxy/h1/parse.js'

const req = (lines: string[]): ReturnType<typeof parseRequestHead> => parseRequestHead(lines.join('\r\n'))

t.test('request heads the fast path takes', async (t) => {
  const r = req(['GET /a?b=1 HTTP/1.1', 'Host: example.com', 'X-Forwarded-For: 203.0.113.9', 'x-forwarded-for: 10.0.0.1', 'Cookie: a=1', 'cookie: b=2',
    'X-Request-Id: abc', 'Connection: keep-alive, x-hop', 'X-Hop: 1', 'Keep-Alive: 5', 'TE: trailers', 'Proxy-Authorization: x', 'Trailer: y',
    'X-Forwarded-Proto: https', 'X-Forwarded-Host: evil', 'Proxy-Connection: close', 'Proxy-Authenticate: z',
    'x-switchyard-smoke: secret blue', 'Content-Length: 12', 'Accept:  text/html \t'])
  if (r === undefined) throw new Error('refused')
  t.equal(r.method, 'GET')
  t.equal(r.target, '/a?b=1')
  t.equal(r.host, 'example.com')
  t.equal(r.xff, '203.0.113.9, 10.0.0.1', 'every X-Forwarded-For is kept, in order')
  t.equal(r.cookie, 'a=1; b=2')
  t.equal(r.requestId, 'abc')
  t.equal(r.smoke, 'secret blue')
  t.equal(r.contentLength, 12)
  t.equal(r.close, false)
  t.equal(r.lines, 'Host: example.com\r\nCookie: a=1\r\ncookie: b=2\r\nX-Request-Id: abc\r\nContent-Length: 12\r\nAccept:  text/html \t\r\n',
    'hop-by-hop, Connection-named and gateway-owned lines are gone; the rest is as sent')
  t.equal(r?.header('accept'), 'text/html')
  t.equal(r?.header('x-missing'), undefined)
  t.equal(req(['GET / HTTP/1.1', 'host: x', 'connection: close'])?.close, true)
  t.equal(req(['GET / HTTP/1.1', 'host: x', 'x-request-id: '])?.requestId, undefined, 'an empty id is no id')
  t.equal(req(['DELETE /x HTTP/1.1', 'host: x'])?.contentLength, 0)
})

t.test('request heads left to node:http', async (t) => {
  const cases: Record<string, string[]> = {
    'HTTP/1.0': ['GET / HTTP/1.0', 'host: x'],
    'absolute-form': ['GET http://x/ HTTP/1.1', 'host: x'],
    'asterisk-form': ['OPTIONS * HTTP/1.1', 'host: x'],
    CONNECT: ['CONNECT /x HTTP/1.1', 'host: x'],
    'no request target': ['GET HTTP/1.1'],
    'extra space': ['GET /a b HTTP/1.1', 'host: x'],
    'control char in target': ['GET /a\x01 HTTP/1.1', 'host: x'],
    'non-token method': ['G(T / HTTP/1.1', 'host: x'],
    'chunked upload': ['POST / HTTP/1.1', 'host: x', 'transfer-encoding: chunked'],
    upgrade: ['GET / HTTP/1.1', 'host: x', 'upgrade: websocket', 'connection: upgrade'],
    expect: ['PUT / HTTP/1.1', 'host: x', 'expect: 100-continue', 'content-length: 1'],
    'no host': ['GET / HTTP/1.1', 'accept: */*'],
    'two hosts': ['GET / HTTP/1.1', 'host: x', 'host: y'],
    'two lengths': ['POST / HTTP/1.1', 'host: x', 'content-length: 1', 'content-length: 1'],
    'bad length': ['POST / HTTP/1.1', 'host: x', 'content-length: 1x'],
    'huge length': ['POST / HTTP/1.1', 'host: x', 'content-length: 1234567890123456'],
    'empty length': ['POST / HTTP/1.1', 'host: x', 'content-length:'],
    'tab after the length (llhttp refuses it)': ['POST / HTTP/1.1', 'host: x', 'content-length: 1\t'],
    'space before colon': ['GET / HTTP/1.1', 'host : x'],
    'obs-fold': ['GET / HTTP/1.1', 'host: x', 'x-a: 1', ' folded'],
    'no colon': ['GET / HTTP/1.1', 'host: x', 'junk'],
    'empty name': ['GET / HTTP/1.1', 'host: x', ': v'],
    'bare LF in a value': ['GET / HTTP/1.1', 'host: x', 'x-a: 1\nx-b: 2'],
    'DEL in a value': ['GET / HTTP/1.1', 'host: x', 'x-a: \x7f'],
    'Connection names Host': ['GET / HTTP/1.1', 'host: x', 'connection: host'],
    'lowercase method': ['get / HTTP/1.1', 'host: x'],
    'WebDAV method': ['PROPFIND / HTTP/1.1', 'host: x'],
  }
  for (const [what, lines] of Object.entries(cases)) t.equal(req(lines), undefined, what)
  t.equal(parseRequestHead('GET / HTTP/1.1'), undefined, 'a request line alone has no Host')
})

const res = (head: string, noBody = false): ResponseHead => {
  const r = parseResponseHead(head, noBody)
  if (typeof r === 'string') throw new Error(r)
  return r
}

t.test('response heads and how their bodies end', async (t) => {
  const a = res('HTTP/1.1 200 OK\r\ncontent-length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\nx-a: 1')
  t.same([a.status, a.statusLine, a.framing, a.contentLength, a.close, a.keepAliveSeconds, a.lines],
    [200, 'HTTP/1.1 200 OK', Framing.Length, 5, false, 5, 'content-length: 5\r\nx-a: 1\r\n'])
  const c = res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum')
  t.same([c.framing, c.contentLength, c.lines], [Framing.Chunked, -1, 'Transfer-Encoding: chunked\r\nTrailer: x-sum\r\n'], 'chunked passes through')
  const gz = res('HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntrailer: x')
  t.same([gz.framing, gz.close, gz.lines], [Framing.Close, true, ''], 'any other coding: read to the close, sent as such')
  const eof = res('HTTP/1.1 200 OK\r\nx-a: 1')
  t.same([eof.framing, eof.close], [Framing.Close, true], 'no length: the body ends with the connection')
  t.equal(res('HTTP/1.1 204 No Content').framing, Framing.None)
  t.equal(res('HTTP/1.1 304 Not Modified\r\ncontent-length: 10').framing, Framing.None)
  t.equal(res('HTTP/1.1 103 Early Hints\r\nlink: </a>').framing, Framing.None)
  const head = res('HTTP/1.1 200 OK\r\ncontent-length: 10', true)
  t.same([head.framing, head.lines], [Framing.None, 'content-length: 10\r\n'], 'a HEAD answer keeps its length header but has no body')
  const old = res('HTTP/1.0 200 OK\r\ncontent-length: 2')
  t.same([old.statusLine, old.close], ['HTTP/1.1 200 OK', true], 'HTTP/1.0 closes unless it says keep-alive')
  t.equal(res('HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive').close, false)
  t.equal(res('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close').close, true)
  t.equal(res('HTTP/1.1 200\r\ncontent-length: 2').statusLine, 'HTTP/1.1 200', 'the reason phrase is optional')
  t.equal(res('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: x-hop\r\nx-hop: 1\r\nx-keep: 2\r\nupgrade: h2c\r\nproxy-connection: x\r\nte: x\r\nproxy-authenticate: y').lines,
    'content-length: 2\r\nx-keep: 2\r\n')
  t.equal(res('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: max=5').keepAliveSeconds, 0)
  const framing = res('HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: content-length, transfer-encoding, x-a\r\nx-a: 1')
  t.same([framing.framing, framing.lines], [Framing.Length, 'content-length: 5\r\n'], 'Connection cannot take away the framing the client needs')
  const trailerFirst = res('HTTP/1.1 200 OK\r\ntrailer: x-sum\r\ntransfer-encoding: chunked')
  t.same([trailerFirst.framing, trailerFirst.lines], [Framing.Chunked, 'trailer: x-sum\r\ntransfer-encoding: chunked\r\n'], 'Trailer before Transfer-Encoding is kept')
  for (const codings of [['xchunked'], ['gzip, notchunked'], ['chunked', 'gzip'], ['chunked, gzip']]) {
    const r = res(`HTTP/1.1 200 OK\r\n${codings.map((c) => `transfer-encoding: ${c}`).join('\r\n')}\r\ntrailer: x`)
    t.same([r.framing, r.close, r.lines], [Framing.Close, true, ''], `${codings.join(' + ')}: not chunked last, so read to the close and sent without it`)
  }
  const two = res('HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: Chunked')
  t.same([two.framing, two.lines], [Framing.Chunked, 'transfer-encoding: gzip\r\ntransfer-encoding: Chunked\r\n'], 'gzip then chunked: passed through, both lines')
})

t.test('response heads that cannot be relayed', async (t) => {
  const bad: Record<string, string> = {
    'HTTP/2': 'HTTP/2 200 OK',
    'short status': 'HTTP/1.1 20 OK',
    'letters in status': 'HTTP/1.1 2x0 OK',
    'status 099': 'HTTP/1.1 099 Weird',
    'status 600': 'HTTP/1.1 600 Weird',
    'no space after status': 'HTTP/1.1 200OK',
    'control char in reason': 'HTTP/1.1 200 O\x01K',
    'no colon': 'HTTP/1.1 200 OK\r\njunk',
    'bad name': 'HTTP/1.1 200 OK\r\nx y: 1',
    'control char': 'HTTP/1.1 200 OK\r\nx-a: 1\x00',
    'bad length': 'HTTP/1.1 200 OK\r\ncontent-length: -1',
    'conflicting lengths': 'HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2',
    'tab after the length': 'HTTP/1.1 200 OK\r\ncontent-length: 1 \t',
  }
  for (const [what, head] of Object.entries(bad)) t.type(parseResponseHead(head, false), 'string', what)
})

/** Scans `body` fed in pieces of `step` bytes; the end index in the whole, or the first negative answer. */
function scanInSteps (body: Buffer, step: number): number {
  const s = new ChunkedScanner()
  for (let at = 0; at < body.length; at += step) {
    const piece = body.subarray(at, at + step)
    const r = s.scan(piece, 0)
    if (r === -2) return -2
    if (r >= 0) return at + r
  }
  return -1
}

t.test('chunked bodies: the end is found however the bytes arrive', async (t) => {
  const bodies = [
    '5\r\nhello\r\n0\r\n\r\n',
    'A;ext=1\r\n0123456789\r\n1;a;b="c \\"d\\"\té";e=f\r\n!\r\n0\r\nx-sum: 1\r\nx-more:2\té\r\n\r\n',
    'ff\r\n' + 'x'.repeat(255) + '\r\n0\r\n\r\n',
  ]
  for (const text of bodies) {
    const body = Buffer.from(text + 'NEXT', 'latin1')
    for (const step of [1, 2, 3, 7, body.length]) t.equal(scanInSteps(body, step), text.length, `${JSON.stringify(text.slice(0, 12))} in steps of ${step}`)
    t.equal(scanInSteps(Buffer.from(text.slice(0, -1), 'latin1'), 1), -1, 'one byte short: not over yet')
  }
  const s = new ChunkedScanner()
  t.equal(s.scan(Buffer.from('xx3\r\nabc\r\n0\r\n\r\n'), 2), 15, 'starts where it is told')
  const invalid = ['\r\n', 'g\r\n', '1\n', '5\r\nhello0\r\n', '5\r\nhello\rx', '1;a\nb', '1x\r\n', '0\r\nx\ny', '0\r\n\rx', '0\r\nx: 1\rx', '0\r\n\n', '1234567890123\r\n']
  for (const text of invalid) t.equal(scanInSteps(Buffer.from(text), 1), -2, JSON.stringify(text))
})

// Upstream junk (issue 10): what the fast path relays byte for byte must be plainly valid for a strict client.

t.test('upstream junk: chunk extensions outside the RFC 9112 grammar are invalid framing', async (t) => {
  const bad = ['1;a\x01\r\n', '1;a=\x7f\r\n', '1;a="b\x00"\r\n', '1;a="b\\\x01"\r\n', '1;\r\n', '1;a=\r\n', '1; a\r\n', '1;a =b\r\n',
    '1;a="b"c\r\n', '1;a=b"c"\r\n', '1;a\rb\r\n', '1;=b\r\n']
  for (const text of bad) t.equal(scanInSteps(Buffer.from(text + 'x\r\n0\r\n\r\n', 'latin1'), 1), -2, JSON.stringify(text))
})

t.test('upstream junk: a chunk size followed by whitespace or text is invalid framing', async (t) => {
  for (const text of ['1 \r\n', '1\t\r\n', '1 ;a\r\n', '1 x\r\n', '1 garbage\r\n', '0 \r\n']) {
    t.equal(scanInSteps(Buffer.from(text + 'x\r\n0\r\n\r\n'), 1), -2, JSON.stringify(text))
  }
})

t.test('upstream junk: trailer lines that are not header fields are invalid framing', async (t) => {
  for (const line of ['x y: 1', ' x: 1', 'x-a: 1\x01', 'x-a: \x7f', ':1', 'x-a 1', 'x-a: 1\r\n folded', '\tx: 1', 'x-a: 1\rb']) {
    t.equal(scanInSteps(Buffer.from(`0\r\n${line}\r\n\r\n`, 'latin1'), 1), -2, JSON.stringify(line))
  }
})

t.test('upstream junk: framing and routing fields in trailers are refused', async (t) => {
  for (const name of ['Content-Length', 'transfer-encoding', 'HOST', 'Trailer', 'connection', 'keep-alive', 'upgrade', 'te', 'content-type', 'set-cookie']) {
    t.equal(scanInSteps(Buffer.from(`0\r\nx-ok: 1\r\n${name}: 5\r\n\r\n`), 1), -2, name)
  }
  const ok = '0\r\nx-content-length: 5\r\ngrpc-status: 0\r\n\r\n'
  t.equal(scanInSteps(Buffer.from(ok), 1), ok.length, 'other names (even ones that end like them) pass')
})

t.test('upstream junk: 1xx and 204 answers lose Transfer-Encoding and Content-Length', async (t) => {
  const hints = res('HTTP/1.1 103 Early Hints\r\nlink: </a>\r\ntransfer-encoding: chunked\r\ntrailer: x\r\nlink: </b>')
  t.equal(hints.lines, 'link: </a>\r\nlink: </b>\r\n', 'a 103 goes on with its other fields only')
  t.equal(res('HTTP/1.1 103 Early Hints\r\ncontent-length: 5\r\nlink: </a>').lines, 'link: </a>\r\n')
  const empty = res('HTTP/1.1 204 No Content\r\ncontent-length: 7\r\nx-a: 1')
  t.same([empty.framing, empty.lines], [Framing.None, 'x-a: 1\r\n'])
  t.equal(res('HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked').lines, '')
  t.equal(res('HTTP/1.1 304 Not Modified\r\ncontent-length: 7').lines, 'content-length: 7\r\n', 'a 304 may say the length it would have had')
})

t.test('upstream junk: a Content-Length with leading zeros is relayed as the plain number', async (t) => {
  const r = res('HTTP/1.1 200 OK\r\nx-a: 1\r\nContent-Length: 0007\r\nx-b: 2')
  t.same([r.framing, r.contentLength, r.lines], [Framing.Length, 7, 'x-a: 1\r\nx-b: 2\r\ncontent-length: 7\r\n'])
  t.equal(res('HTTP/1.1 200 OK\r\ncontent-length: 000').lines, 'content-length: 0\r\n')
  t.equal(res('HTTP/1.1 200 OK\r\ncontent-length: 0').lines, 'content-length: 0\r\n', 'a plain one is left as sent')
  t.equal(res('HTTP/1.1 200 OK\r\ncontent-length: 010', true).lines, 'content-length: 10\r\n', 'on a HEAD answer too')
})

t.test('upstream junk: framing a strict client would refuse is not relayed', async (t) => {
  // Node's llhttp refuses each of these; a relayed copy would be unreadable (or read differently) downstream.
  const bad: Record<string, string> = {
    'repeated equal lengths': 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2',
    'chunked beside a length': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9',
    'another coding beside a length': 'HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: gzip',
    'both on a 204': 'HTTP/1.1 204 No Content\r\ncontent-length: 0\r\ntransfer-encoding: chunked',
    'an empty coding after chunked (llhttp: not chunked)': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,',
    'an empty coding before chunked': 'HTTP/1.1 200 OK\r\ntransfer-encoding: , chunked',
    'a tab after chunked (llhttp: not chunked)': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\t',
    'NBSP after chunked': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\xa0',
    'a coding with parameters': 'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip;q=1, chunked',
  }
  for (const [what, head] of Object.entries(bad)) t.type(parseResponseHead(head, false), 'string', what)
})

t.test('linesWithoutBaggage: the forwarded lines less every baggage line, wherever they sit and whatever was dropped around them', async (t) => {
  const reference = (lines: string): string => lines.split('\r\n').filter((l) => l !== '' && !/^baggage:/i.test(l)).map((l) => `${l}\r\n`).join('')
  const heads = [
    'GET / HTTP/1.1\r\nHost: a\r\nbaggage: k=1',
    'GET / HTTP/1.1\r\nbaggage: k=1\r\nHost: a\r\nAccept: */*',
    'GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nBaggage: k=1\r\nConnection: keep-alive\r\nHost: a',
    'GET / HTTP/1.1\r\nHost: a\r\nx-switchyard-smoke: s\r\nA: 1\r\nBAGGAGE:   k=1 , switchyard-gen=4  \r\nB: 2\r\nTE: trailers',
    'GET / HTTP/1.1\r\nHost: a\r\nbaggage: k=1\r\nA: 1\r\nbaggage: switchyard-gen=4',
    'GET / HTTP/1.1\r\nHost: a\r\nConnection: x-drop\r\nX-Drop: 1\r\nbaggage: k=1\r\nx-baggage: 2',
    'GET / HTTP/1.1\r\nHost: a\r\nx-baggage: baggage: k=1\r\nbaggage: k=2',
  ]
  for (const head of heads) {
    const r = parseRequestHead(head)
    if (r === undefined) {
      t.fail(`parsed: ${JSON.stringify(head)}`)
      continue
    }
    t.equal(r.linesWithoutBaggage(), reference(r.lines), JSON.stringify(head))
    t.notMatch(r.linesWithoutBaggage(), /^baggage:/im, 'no baggage line is left')
  }
})
