// Differential test of the fast path's request parsing against llhttp, the
// strict parser node:http uses: for the same bytes, the fast path either hands
// the connection over (and node:http decides) or sees exactly the requests
// (method, target, Host, body) that a default node:http server sees.

import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { createRequire } from 'node:module'
import { parseRequestHead, type RequestHead } from '../src/proxy/h1/parse.js'
import { MAX_HEAD } from '../src/proxy/limits.js'
import { normalizeTarget } from '../src/routing/path.js'
import { goodRequest, request, requestCase, Rng, runSeed } from './helpers/http-fuzz.js'
import { startGateway } from './helpers/index.js'

interface Seen { method: string, url: string, host: string | undefined, body: string, complete: boolean }
interface Outcome { requests: Seen[], error: string | undefined }

// llhttp as node:http's server runs it (strict: no lenient flags), in process, for the heads the fast path writes upstream.
const { HTTPParser, methods } = createRequire(import.meta.url)('_http_common')

/** The requests llhttp finds in `bytes`, and its error if it stops at one. */
function llhttpRequests (bytes: Buffer): { requests: Seen[], error: string | undefined } {
  const parser = new HTTPParser()
  parser.initialize(HTTPParser.REQUEST, {}, 0, 0)
  const requests: Seen[] = []
  let fields: string[] = []
  let url = ''
  let current: Seen | undefined
  parser[HTTPParser.kOnHeaders] = (h: string[], u: string) => { fields.push(...h); url += u }
  parser[HTTPParser.kOnHeadersComplete] = (_maj: number, _min: number, h: string[] | undefined, method: number, u: string | undefined) => {
    if (h !== undefined) fields.push(...h)
    if (u !== undefined) url += u
    let host: string | undefined
    for (let i = 0; i < fields.length; i += 2) if (fields[i].toLowerCase() === 'host' && host === undefined) host = fields[i + 1]
    current = { method: methods[method], url, host, body: '', complete: false }
    requests.push(current)
    fields = []
    url = ''
    return 0
  }
  parser[HTTPParser.kOnBody] = (b: Buffer) => { if (current !== undefined) current.body += b.toString('latin1') }
  parser[HTTPParser.kOnMessageComplete] = () => { if (current !== undefined) current.complete = true }
  parser[HTTPParser.kOnExecute] = () => {}
  const r = parser.execute(bytes)
  parser.close?.()
  return { requests, error: r instanceof Error ? (r as Error & { code: string }).code : undefined }
}

/** The head the fast path writes upstream for `head` (FastExchange), as llhttp there would read it. */
function forwarded (head: RequestHead, body: string): Buffer {
  const extra = `x-forwarded-for: ${head.xff === '' ? '192.0.2.1' : `${head.xff}, 192.0.2.1`}\r\nx-forwarded-proto: http\r\nx-forwarded-host: ${head.host as string}\r\n` +
    (head.requestId === undefined ? 'x-request-id: r\r\n' : '')
  return Buffer.from(`${head.method} ${head.target} HTTP/1.1\r\n${head.lines}${extra}\r\n${body}`, 'latin1')
}

/** What the fast path does with `bytes` (ClientConn.next, request by request): requests taken, then where it hands over. */
function fastPath (bytes: string): { requests: Seen[], handedAt: number | undefined, closed: boolean, upstream: string[] } {
  const requests: Seen[] = []
  /** What an upstream's llhttp makes of each request the fast path forwards, when that is not the same request. */
  const upstream: string[] = []
  let pos = 0
  for (;;) {
    let start = pos
    while (start + 1 < bytes.length && bytes.charCodeAt(start) === 13 && bytes.charCodeAt(start + 1) === 10) start += 2
    if (start >= bytes.length) return { requests, handedAt: undefined, closed: false, upstream }
    const end = bytes.indexOf('\r\n\r\n', start)
    // No whole head: it waits (or hands over); either way node:http would judge what follows.
    if (end === -1 || end - start > MAX_HEAD) return { requests, handedAt: pos, closed: false, upstream }
    const head = parseRequestHead(bytes.slice(start, end))
    if (head === undefined) return { requests, handedAt: pos, closed: false, upstream }
    const body = bytes.slice(end + 4, end + 4 + head.contentLength)
    const seen = { method: head.method, url: head.target, host: head.host, body, complete: body.length === head.contentLength }
    requests.push(seen)
    if (seen.complete) {
      const there = llhttpRequests(forwarded(head, body))
      if (there.error !== undefined || show(there.requests) !== show([seen])) upstream.push(`${show([seen])} reaches the upstream as ${show(there.requests)} (${there.error ?? 'no error'})`)
    }
    pos = end + 4 + body.length
    if (head.close || body.length < head.contentLength) return { requests, handedAt: undefined, closed: true, upstream }
  }
}

/** A default (strict) node:http server that records what llhttp makes of each connection's bytes. */
async function oracle (t: Tap.Test): Promise<(bytes: string) => Promise<Outcome>> {
  const outcomes = new Map<number, Outcome>()
  const server = http.createServer((req, res) => {
    const seen: Seen = { method: req.method ?? '', url: req.url ?? '', host: req.headers.host, body: '', complete: false }
    outcomes.get(req.socket.remotePort as number)?.requests.push(seen)
    req.setEncoding('latin1')
    req.on('data', (c: string) => { seen.body += c })
    req.on('end', () => {
      seen.complete = true
      res.end()
    })
  })
  // Node reads the client's half-close as the end of input: bodies already parsed still arrive, cut ones are errors.
  ;(server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true
  server.on('connection', (socket: net.Socket) => outcomes.set(socket.remotePort as number, { requests: [], error: undefined }))
  server.on('clientError', (err: Error & { code?: string }, socket: net.Socket) => {
    const o = outcomes.get(socket.remotePort as number)
    if (o !== undefined) o.error = err.code ?? err.message
    // Let the requests parsed before the error finish reading their bodies.
    setImmediate(() => socket.destroy())
  })
  server.on('connect', (req: http.IncomingMessage, socket: net.Socket) => {
    outcomes.get(socket.remotePort as number)?.requests.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host, body: '', complete: true })
    socket.destroy()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const port = (server.address() as net.AddressInfo).port
  return async (bytes) => await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(bytes, 'latin1'))
    let local = 0
    s.on('connect', () => { local = s.localPort as number })
    s.on('data', () => {})
    s.on('error', () => {})
    const timer = setTimeout(() => s.destroy(), 3000)
    s.on('close', () => {
      clearTimeout(timer)
      const o = outcomes.get(local) ?? { requests: [], error: 'no connection' }
      outcomes.delete(local)
      resolve(o)
    })
  })
}

const show = (xs: Seen[]): string => JSON.stringify(xs.map((r) => [r.method, r.url, r.host, r.body, r.complete]))

/** Runs `each` over `items` with `width` at a time, starting none after `deadline` (ms since the epoch); how many ran. */
async function pool<T> (items: T[], width: number, deadline: number, each: (item: T) => Promise<void>): Promise<number> {
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length && Date.now() < deadline) await each(items[next++])
  }))
  return next
}

t.test('request heads and bodies: the fast path hands over or agrees with llhttp', async (t) => {
  const seed = runSeed()
  const cases = Number(process.env.DIFF_CASES ?? 10000)
  const rng = new Rng(seed)
  const texts = Array.from({ length: cases }, () => requestCase(rng))
  const ask = await oracle(t)
  const started = Date.now()
  const disagreements: string[] = []
  let taken = 0
  let handedOver = 0
  // Bounded in time as well as in count: a loaded machine runs fewer cases (the count is printed).
  const ran = await pool(texts.map((text, i) => ({ text, i })), 16, started + Number(process.env.DIFF_MS ?? 12000), async ({ text, i }) => {
    const fast = fastPath(text)
    if (fast.upstream.length > 0) disagreements.push(`case ${i} ${JSON.stringify(text)}: ${fast.upstream.join('; ')}`)
    if (fast.requests.length === 0) {
      handedOver++
      return
    }
    taken += fast.requests.length
    if (fast.handedAt !== undefined) handedOver++
    const whole = await ask(text)
    const k = fast.requests.length
    const problems: string[] = []
    if (show(whole.requests.slice(0, k)) !== show(fast.requests)) problems.push(`fast path took ${show(fast.requests)}, llhttp saw ${show(whole.requests.slice(0, k))} (${whole.error ?? 'no error'})`)
    if (fast.handedAt !== undefined) {
      const rest = await ask(text.slice(fast.handedAt))
      if (show(whole.requests.slice(k)) !== show(rest.requests)) problems.push(`after the hand-over at ${fast.handedAt} node:http sees ${show(rest.requests)}, llhttp on the whole saw ${show(whole.requests.slice(k))}`)
    } else if (!fast.closed && whole.requests.length !== k) {
      problems.push(`fast path took all ${k}, llhttp saw ${show(whole.requests)}`)
    }
    if (problems.length > 0) disagreements.push(`case ${i} ${JSON.stringify(text)}: ${problems.join('; ')}`)
  })
  for (const d of disagreements.slice(0, 20)) t.comment(d)
  t.equal(disagreements.length, 0, 'no request the fast path takes is framed differently by llhttp')
  t.ok(taken > ran / 4, `the fast path took a fair share of the cases (${taken} requests)`)
  t.comment(`differential: ${ran} request cases (${taken} requests taken by the fast path, ${handedOver} hand-overs), ${disagreements.length} disagreements, seed ${seed}, ${Date.now() - started} ms`)
})

t.test('pipelines across the hand-over: the upstream gets exactly what llhttp parses', async (t) => {
  const seed = runSeed()
  const rng = new Rng(seed)
  const seen: string[] = []
  const upstream = http.createServer((req, res) => {
    let body = ''
    req.setEncoding('latin1')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      seen.push(JSON.stringify([req.method, req.url, body]))
      res.end('ok')
    })
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { upstream.closeAllConnections(); upstream.close() })
  const url = `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`
  const gw = await startGateway(t, `services:\n  svc:\n    match: { pathPrefix: / }\n    blue: { targets: [${url}] }\n    green: { targets: [${url}] }\n    passive: false\n`)
  const ask = await oracle(t)
  const fixed = [
    'GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n',
    'POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyzGET /b HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n1\r\nZ\r\n',
    'GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcdGET /c HTTP/1.1\r\nHost: h\r\n\r\n',
  ]
  const generated = Array.from({ length: 100 }, () => {
    // Good ones the fast path takes, then one it may hand over, then good ones again (executed by node:http after the hand-over).
    let text = goodRequest(rng) + goodRequest(rng)
    let odd = request(rng)
    while (!odd.startsWith('GET /') && !odd.startsWith('POST /') && !odd.startsWith('PUT /')) odd = request(rng)
    text += odd + goodRequest(rng)
    return text
  })
  let mismatches = 0
  const started = Date.now()
  for (const text of [...fixed, ...generated]) {
    // The gateway routes and forwards the normalized target (dot-segments, repeated slashes): that is what the upstream must see.
    const expected = (await ask(text)).requests.filter((r) => r.complete).map((r) => JSON.stringify([r.method, normalizeTarget(r.url) ?? r.url, r.body]))
    seen.length = 0
    const got = await new Promise<string>((resolve) => {
      const s = net.connect(gw.gateway.address.port, '127.0.0.1', () => s.write(text, 'latin1'))
      let got = ''
      const timer = setTimeout(() => s.destroy(), 3000)
      s.on('data', (c: Buffer) => {
        got += c.toString('latin1')
        // Every request answered (by our upstream or by the gateway), or the gateway ends the connection.
        // Final answers only: a 100 Continue (to a request with Expect) is not the answer to anything.
        if ((got.match(/HTTP\/1\.1 [2-5]\d\d /g) ?? []).length >= expected.length) s.destroy()
      })
      s.on('error', () => {})
      s.on('close', () => { clearTimeout(timer); resolve(got) })
    })
    // A request the gateway refuses by its own rules (two Hosts, say) is answered by it and never reaches the upstream
    // (the gateway also answers the bytes llhttp cannot parse: refusals may outnumber the requests missing upstream).
    const refused = got.split('{"error":').length - 1
    const left = [...expected]
    const unexpected = seen.filter((r) => {
      const i = left.indexOf(r)
      if (i === -1) return true
      left.splice(i, 1)
      return false
    })
    if (unexpected.length > 0 || left.length > refused) {
      mismatches++
      t.comment(`${JSON.stringify(text)}: upstream saw ${JSON.stringify(seen)}, llhttp parsed ${JSON.stringify(expected)}, gateway refused ${refused}`)
    }
  }
  t.equal(mismatches, 0, 'the upstream saw the requests llhttp parses, no more, no fewer')
  t.comment(`differential: ${fixed.length + generated.length} pipelined cases through the gateway, ${mismatches} disagreements, seed ${seed}, ${Date.now() - started} ms`)
})
