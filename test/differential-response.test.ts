// Differential test of the fast path's response framing against llhttp, the
// strict parser Node's HTTP client uses: an upstream answer the fast path
// relays must end where llhttp says it ends, and what the client gets must
// parse cleanly with the same status and body. Otherwise the fast path must refuse it.

import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { createRequire } from 'node:module'
import { ChunkedScanner, Framing, parseResponseHead } from '../src/proxy/h1/parse.js'
import { MAX_HEAD } from '../src/proxy/limits.js'
import { responseCase, Rng, runSeed, type ResponseCase } from './helpers/http-fuzz.js'
import { startGateway } from './helpers/index.js'

// llhttp as node:http's client runs it (strict: no lenient flags), in process.
const { HTTPParser } = createRequire(import.meta.url)('_http_common')

interface Framed { status: number, body: string, end: number }

/**
 * What llhttp makes of `bytes` as the answer to a GET (or HEAD): the first
 * final (non-1xx) message, its body and the offset just past its end; or the
 * error it stops at. Fed a byte at a time, so the end is exact; `eof` tells
 * it the connection closed after the bytes.
 */
function llhttp (bytes: Buffer, head: boolean): Framed | string {
  const parser = new HTTPParser()
  parser.initialize(HTTPParser.RESPONSE, {}, 0, 0)
  let status = 0
  let body: Buffer[] = []
  let done: Framed | undefined
  let at = 0
  parser[HTTPParser.kOnHeadersComplete] = (_maj: number, _min: number, _h: string[], _m: number, _u: string, code: number) => {
    status = code
    body = []
    // As node:http's client: no body on a HEAD answer or an informational one.
    return head || (code >= 100 && code < 200) ? 1 : 0
  }
  parser[HTTPParser.kOnBody] = (b: Buffer) => { body.push(Buffer.from(b)) }
  parser[HTTPParser.kOnMessageComplete] = () => {
    if (done === undefined && status >= 200) done = { status, body: Buffer.concat(body).toString('latin1'), end: at }
  }
  parser[HTTPParser.kOnHeaders] = () => {}
  parser[HTTPParser.kOnExecute] = () => {}
  for (; at < bytes.length && done === undefined;) {
    at++
    const r = parser.execute(bytes.subarray(at - 1, at))
    if (r instanceof Error) return `${(r as Error & { code: string }).code} at ${at - 1}`
  }
  if (done === undefined) {
    const r = parser.finish()
    if (r instanceof Error) return `${(r as Error & { code: string }).code} at the end`
  }
  parser.close?.()
  return done ?? 'incomplete'
}

/** What the fast path does with an upstream answer (FastExchange.onHeadBytes/respond/take): the bytes it relays, or why it refuses. */
function fastPath (raw: Buffer, head: boolean): { relayed: Buffer, status: number, end: number } | string {
  const text = raw.toString('latin1')
  let pos = 0
  let interim = ''
  for (;;) {
    const end = text.indexOf('\r\n\r\n', pos)
    if (end === -1 || end - pos > MAX_HEAD) return 'no whole head'
    const r = parseResponseHead(text.slice(pos, end), head)
    if (typeof r === 'string') return r
    pos = end + 4
    if (r.status === 101) return '101'
    if (r.status < 200) {
      if (r.status === 103) interim += `${r.statusLine}\r\n${r.lines}\r\n`
      continue
    }
    let bodyEnd: number
    if (r.framing === Framing.None) {
      bodyEnd = pos
    } else if (r.framing === Framing.Length) {
      if (raw.length - pos < r.contentLength) return 'short body'
      bodyEnd = pos + r.contentLength
    } else if (r.framing === Framing.Chunked) {
      const n = new ChunkedScanner().scan(raw, pos)
      if (n === -2) return 'invalid chunked framing'
      if (n === -1) return 'short body'
      bodyEnd = n
    } else {
      bodyEnd = raw.length
    }
    const out = `${interim}${r.statusLine}\r\n${r.lines}${r.framing === Framing.Close ? 'connection: close\r\n' : ''}\r\n`
    return { relayed: Buffer.concat([Buffer.from(out, 'latin1'), raw.subarray(pos, bodyEnd)]), status: r.status, end: bodyEnd }
  }
}

/** Why the fast path's handling of `c` disagrees with llhttp; undefined when it refuses or agrees. */
function disagreement (c: ResponseCase): string | undefined {
  const raw = Buffer.from(c.text, 'latin1')
  const fast = fastPath(raw, c.head)
  if (typeof fast === 'string') return undefined
  const strict = llhttp(raw, c.head)
  if (typeof strict === 'string') return `the fast path relays status ${fast.status} ending at ${fast.end}; llhttp: ${strict}`
  if (strict.status !== fast.status || strict.end !== fast.end) return `the fast path: status ${fast.status} ending at ${fast.end}; llhttp: status ${strict.status} ending at ${strict.end}`
  const client = llhttp(fast.relayed, c.head)
  if (typeof client === 'string') return `what the fast path relays (${JSON.stringify(fast.relayed.toString('latin1'))}) does not parse: ${client}`
  if (client.status !== strict.status || client.body !== strict.body || client.end !== fast.relayed.length) {
    return `the client reads status ${client.status}, body ${JSON.stringify(client.body)} ending at ${client.end} of ${fast.relayed.length}; the upstream sent status ${strict.status}, body ${JSON.stringify(strict.body)}`
  }
  return undefined
}

t.test('upstream answers: the fast path refuses or frames them as llhttp does', async (t) => {
  const seed = runSeed()
  const cases = Number(process.env.DIFF_CASES ?? 30000)
  const rng = new Rng(seed)
  const started = Date.now()
  const found: string[] = []
  let relayed = 0
  let i = 0
  // Bounded in time as well as in count (the count run is printed).
  for (const deadline = started + Number(process.env.DIFF_MS ?? 8000); i < cases && Date.now() < deadline; i++) {
    const c = responseCase(rng)
    if (typeof fastPath(Buffer.from(c.text, 'latin1'), c.head) !== 'string') relayed++
    const d = disagreement(c)
    if (d !== undefined) found.push(`case ${i} ${JSON.stringify(c)}: ${d}`)
  }
  for (const d of found.slice(0, 20)) t.comment(d)
  t.equal(found.length, 0, 'every answer the fast path relays ends where llhttp says, and reads the same')
  t.ok(relayed > i / 10, `a fair share relayed (${relayed})`)
  t.comment(`differential: ${i} response cases (${relayed} relayed), ${found.length} disagreements, seed ${seed}, ${Date.now() - started} ms`)
})

interface ClientView { kind: 'complete' | 'cut' | 'parse error', status: number, body: string, detail: string }

/** A strict node:http client's view of GET (or HEAD) `path` on `port`. */
async function fetchRaw (port: number, path: string, head: boolean): Promise<ClientView> {
  return await new Promise((resolve) => {
    const view: ClientView = { kind: 'cut', status: 0, body: '', detail: '' }
    let settled = false
    const settle = (kind: ClientView['kind'], detail: string): void => {
      if (settled) return
      settled = true
      view.kind = kind
      view.detail = detail
      resolve(view)
    }
    const req = http.request({ host: '127.0.0.1', port, path, method: head ? 'HEAD' : 'GET', agent: false, headers: { host: 'h' } }, (res) => {
      view.status = res.statusCode ?? 0
      res.setEncoding('latin1')
      res.on('data', (c: string) => { view.body += c })
      res.on('end', () => settle('complete', ''))
      res.on('aborted', () => settle('cut', 'aborted'))
      res.on('error', (e: Error & { code?: string }) => settle(e.code?.startsWith('HPE_') === true ? 'parse error' : 'cut', e.code ?? e.message))
    })
    req.on('error', (e: Error & { code?: string }) => settle(e.code?.startsWith('HPE_') === true ? 'parse error' : 'cut', e.code ?? e.message))
    req.setTimeout(3000, () => req.destroy())
    req.end()
  })
}

t.test('upstream answers through a real gateway: refused, or read as llhttp reads them', async (t) => {
  const seed = runSeed()
  const rng = new Rng(seed)
  const cases = Array.from({ length: Number(process.env.DIFF_GATEWAY_CASES ?? 1000) }, () => responseCase(rng))
  // The upstream: `/r/N` gets case N's bytes as they are, then the connection closes.
  const upstream = net.createServer((socket) => {
    let got = ''
    socket.on('error', () => {})
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      if (!got.includes('\r\n\r\n')) return
      const m = /^[A-Z]+ \/r\/(\d+) /.exec(got)
      socket.end(m === null ? 'HTTP/1.1 400 Bad\r\ncontent-length: 0\r\n\r\n' : cases[Number(m[1])].text, 'latin1')
    })
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => upstream.close())
  const upstreamPort = (upstream.address() as net.AddressInfo).port
  const url = `http://127.0.0.1:${upstreamPort}`
  const gw = await startGateway(t, `engine: fast\nservices:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${url}] }\n    green: { targets: [${url}] }\n    passive: false\n`)
  const port = gw.gateway.address.port
  const started = Date.now()
  const found: string[] = []
  let refused = 0
  let directChecked = 0
  let next = 0
  // Bounded in time as well as in count: a loaded machine runs fewer cases (the count is printed).
  const deadline = started + Number(process.env.DIFF_MS ?? 8000)
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < cases.length && Date.now() < deadline) {
      const i = next++
      const c = cases[i]
      const via = await fetchRaw(port, `/r/${i}`, c.head)
      if (via.kind === 'parse error') {
        found.push(`case ${i} ${JSON.stringify(c)}: the gateway sent what a strict client cannot parse (${via.detail})`)
        continue
      }
      // Refused: a 502 before the head, or the answer cut short.
      if (via.kind === 'cut' || (via.status === 502 && (c.head || via.body.includes('upstream_error')))) {
        refused++
        continue
      }
      const strict = llhttp(Buffer.from(c.text, 'latin1'), c.head)
      if (typeof strict === 'string' || strict.status !== via.status || strict.body !== via.body) {
        found.push(`case ${i} ${JSON.stringify(c)}: through the gateway status ${via.status} body ${JSON.stringify(via.body)}; llhttp on the upstream's bytes: ${JSON.stringify(strict)}`)
        continue
      }
      // And a strict client reading the upstream directly reads the same (the in-process llhttp is the client's).
      // It may then fail on bytes past the answer's end (which the gateway drops, closing that upstream connection).
      const direct = await fetchRaw(upstreamPort, `/r/${i}`, c.head)
      directChecked++
      const extra = strict.end < c.text.length
      if ((direct.kind !== 'complete' && !(extra && direct.kind === 'parse error')) || direct.status !== via.status || direct.body !== via.body) {
        found.push(`case ${i} ${JSON.stringify(c)}: through the gateway status ${via.status} body ${JSON.stringify(via.body)}; read directly: ${JSON.stringify(direct)}`)
      }
    }
  }))
  for (const d of found.slice(0, 20)) t.comment(d)
  t.equal(found.length, 0, 'what the gateway relays reads as the upstream meant it, or is refused')
  t.comment(`differential: ${next} response cases through the gateway (${refused} refused, ${directChecked} relayed and read directly too), ${found.length} disagreements, seed ${seed}, ${Date.now() - started} ms`)
})

t.test('gateway error answers to HEAD have no body (a client would read it as the next answer)', async (t) => {
  // Found by the pass above: a refused upstream answer to HEAD came back as a 502 head plus its JSON body.
  const upstream = net.createServer((socket) => {
    socket.on('error', () => {})
    socket.on('data', () => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx'))
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => upstream.close())
  const url = `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`
  const gw = await startGateway(t, `engine: fast\nservices:\n  svc:\n    match: { pathPrefix: /svc }\n    blue: { targets: [${url}] }\n    green: { targets: [${url}] }\n    passive: false\n`)
  for (const path of ['/svc/junk', '/no-route']) {
    // HEAD, then GET on the same connection: the client must find exactly two answers, the second with its body.
    const got = await new Promise<string>((resolve) => {
      const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write(`HEAD ${path} HTTP/1.1\r\nHost: h\r\n\r\n`))
      let text = ''
      let sentGet = false
      s.on('data', (c: Buffer) => {
        text += c.toString('latin1')
        if (!sentGet && text.includes('\r\n\r\n')) {
          sentGet = true
          s.write(`GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
        }
      })
      s.on('error', () => {})
      s.on('close', () => resolve(text))
    })
    const first = got.slice(0, got.indexOf('\r\n\r\n') + 4)
    t.match(first, /^HTTP\/1\.1 (502|404) /, `${path}: the HEAD is refused`)
    const rest = got.slice(first.length)
    if (first.includes('connection: close')) {
      t.equal(rest, '', `${path}: nothing follows the HEAD answer`)
    } else {
      t.match(rest, /^HTTP\/1\.1 (502|404) /, `${path}: the next bytes are the GET's answer, not a body`)
      const strict = llhttp(Buffer.from(rest, 'latin1'), false)
      t.type(strict, 'object', `${path}: and it parses (${JSON.stringify(strict)})`)
    }
  }
})
