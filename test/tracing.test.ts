// Trace context and span export (`tracing`): a client's traceparent and
// tracestate pass untouched on every engine, tracing on or off; with tracing
// on, each request's span reaches a real (stand-in) OTLP collector, joined to
// the client's trace or to one the gateway starts and names upstream.

import t, { type Test } from 'tap'
import http from 'node:http'
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { LocalListener } from '../src/listen/local.js'
import { OtlpExporter, unixNano } from '../src/tracing/exporter.js'
import { parseTraceparent } from '../src/tracing/context.js'
import { Span, Tracer } from '../src/tracing/tracer.js'
import type { RequestFacts } from '../src/proxy/resolve.js'
import type { ExportCounts } from '../src/tracing/exporter.js'
import { h2Request, h2Session } from './helpers/h2.js'
import { admin, configFile, eventually, http1, listening, openWs, serve, serviceYaml, startBackend, startGateway, type Backend, type TestGateway } from './helpers/index.js'
import { startCollector, type Collector, type SeenSpan } from './helpers/otlp-collector.js'

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const PARENT = '00f067aa0ba902b7'
const SAMPLED = `00-${TRACE}-${PARENT}-01`
const STATE = 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7'
const GENERATED = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/

/** An h2c server (HTTP/2 with prior knowledge) that records each request's headers and answers 200. */
async function startH2cUpstream (t: Test): Promise<{ url: string, seen: IncomingHttpHeaders[] }> {
  const seen: IncomingHttpHeaders[] = []
  const server = http2.createServer()
  server.on('stream', (stream, headers) => {
    seen.push(headers)
    stream.respond({ ':status': 200, 'content-type': 'text/plain' })
    stream.end('h2c')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => await new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

/** What the gateway's listener exports: undefined when tracing is off. */
function exporterOf (gw: TestGateway): OtlpExporter | undefined {
  return (gw.gateway.listener as LocalListener).tracing?.exporter
}

/** The headers of the last request to `b` whose path starts with `prefix` (health probes left out). */
function lastTo (b: Backend, prefix: string): IncomingHttpHeaders {
  const r = b.seen.filter((s) => s.url.startsWith(prefix)).at(-1)
  if (r === undefined) throw new Error(`no request to ${prefix} reached ${b.name}`)
  return r.headers
}

/** The span with this span id, once the collector has it. */
async function spanWithId (c: Collector, spanId: string): Promise<SeenSpan> {
  return await eventually(() => {
    const s = c.spans().find((x) => x.spanId === spanId)
    if (s === undefined) throw new Error(`no span ${spanId} exported`)
    return s
  })
}

/** The spans of trace `traceId`, once at least one has come. */
async function spansOf (c: Collector, traceId: string): Promise<SeenSpan[]> {
  return await eventually(() => {
    const s = c.spans().filter((x) => x.traceId === traceId)
    if (s.length === 0) throw new Error(`no span of ${traceId} exported`)
    return s
  })
}

/** A fresh sampled traceparent (its own trace): a marker whose span proves every earlier request's span had its chance. */
function marker (n: number): { traceparent: string, traceId: string } {
  const traceId = n.toString(16).padStart(32, 'a')
  return { traceparent: `00-${traceId}-${PARENT}-01`, traceId }
}

async function twoServices (t: Test, engine: string, tracing: string): Promise<{ gw: TestGateway, b: Backend, h2: { url: string, seen: IncomingHttpHeaders[] } }> {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const h2 = await startH2cUpstream(t)
  const gw = await startGateway(t, `engine: ${engine}
${tracing}services:
  web:
    match: { pathPrefix: /h1 }
    blue: { targets: [${b.url}] }
    green: { targets: [${g.url}] }
  grpcish:
    match: { pathPrefix: /h2 }
    protocol: h2c
    blue: { targets: [${h2.url}] }
    green: { targets: [${h2.url}] }
  dead:
    match: { pathPrefix: /dead }
    blue: { targets: ['http://127.0.0.1:1'] }
`)
  return { gw, b, h2 }
}

// Every engine and route a request can take: HTTP/1.1 and h2c clients, HTTP/1.1 and h2c upstreams, WebSocket upgrades.
for (const engine of ['fast', 'node']) {
  for (const on of [false, true]) {
    t.test(`${engine}, tracing ${on ? 'on' : 'off'}: traceparent and tracestate pass untouched on every route, and one is added only when tracing starts the trace`, async (t) => {
      const collector = await startCollector(t)
      const { gw, b, h2 } = await twoServices(t, engine, on ? `tracing: { otlp: ${collector.url} }\n` : '')
      t.equal(exporterOf(gw) !== undefined, on, `an exporter exactly when tracing is on (${String(on)})`)
      const session = h2Session(t, gw.url)
      const given = { traceparent: SAMPLED, tracestate: STATE }
      /** Each route: sends with `headers`, returns what the upstream received. */
      const routes: Array<[string, (headers: Record<string, string>) => Promise<IncomingHttpHeaders>]> = [
        ['h1 -> h1', async (headers) => {
          t.equal((await http1(`${gw.url}/h1/a?x=1`, { headers })).status, 200)
          return lastTo(b, '/h1/a')
        }],
        ['h2c -> h1', async (headers) => {
          t.equal((await h2Request(session, '/h1/b', headers as OutgoingHttpHeaders)).status, 200)
          return lastTo(b, '/h1/b')
        }],
        ['h1 -> h2c', async (headers) => {
          t.equal((await http1(`${gw.url}/h2/c`, { headers })).status, 200)
          return h2.seen.filter((s) => s[':path'] === '/h2/c').at(-1) as IncomingHttpHeaders
        }],
        ['h2c -> h2c', async (headers) => {
          t.equal((await h2Request(session, '/h2/d', headers as OutgoingHttpHeaders)).status, 200)
          return h2.seen.filter((s) => s[':path'] === '/h2/d').at(-1) as IncomingHttpHeaders
        }],
      ]
      for (const [name, send] of routes) {
        const passed = await send(given)
        t.equal(passed.traceparent, SAMPLED, `${name}: the client's traceparent, as sent and once`)
        t.equal(passed.tracestate, STATE, `${name}: tracestate as sent`)
        const bare = await send({})
        if (!on) {
          t.equal(bare.traceparent, undefined, `${name}: tracing off adds no traceparent`)
          continue
        }
        const m = GENERATED.exec(bare.traceparent as string)
        t.ok(m, `${name}: the gateway started a trace and named it upstream (${String(bare.traceparent)})`)
        if (m === null) continue
        t.equal(m[3], '01', `${name}: sampled (sample 1)`)
        t.equal(bare.tracestate, undefined, `${name}: no tracestate of the gateway's`)
        const span = await spanWithId(collector, m[2])
        t.equal(span.traceId, m[1], `${name}: the upstream's parent is the exported span, in its trace`)
        t.equal(span.parentSpanId, undefined, `${name}: a root span`)
      }
      if (on) {
        // The passthrough requests' spans joined the client's trace, on every route.
        const joined = await eventually(() => {
          const s = collector.spans().filter((x) => x.traceId === TRACE)
          if (s.length < 4) throw new Error(`${s.length} spans of the client's trace`)
          return s
        })
        t.equal(joined.length, 4, 'one span per request')
        t.ok(joined.every((s) => s.parentSpanId === PARENT), 'each under the client\'s span')
      }
      // WebSocket upgrades: the client's values pass; the gateway adds none (a WebSocket has no span).
      const wsUrl = gw.url.replace('http', 'ws')
      const upgrades: IncomingHttpHeaders[] = []
      b.server.on('upgrade', (req) => { upgrades.push(req.headers) })
      const ws = await openWs(`${wsUrl}/h1/ws`, given)
      ws.ws.send('hi')
      t.equal(await ws.next(), 'blue: hi')
      ws.ws.close()
      const bareWs = await openWs(`${wsUrl}/h1/ws`)
      bareWs.ws.close()
      t.equal(upgrades.length, 2)
      t.equal(upgrades[0].traceparent, SAMPLED, 'ws: traceparent as sent')
      t.equal(upgrades[0].tracestate, STATE, 'ws: tracestate as sent')
      t.equal(upgrades[1].traceparent, undefined, 'ws: none added')
      await gw.stop()
      if (!on) t.equal(collector.posts.length, 0, 'tracing off: nothing reached the collector, even after the stop\'s flush')
    })
  }

  t.test(`${engine}: the exported span carries the request's context, attributes and status`, async (t) => {
    const collector = await startCollector(t)
    const { gw, b } = await twoServices(t, engine, `tracing: { otlp: ${collector.url}, serviceName: edge-gw }\n`)
    b.handler = (req, res) => {
      req.resume()
      res.writeHead(req.url === '/h1/fail' ? 503 : 200)
      res.end('answer')
    }
    const before = Date.now()
    t.equal((await http1(`${gw.url}/h1/items/7?secret=1&q=2`, { method: 'POST', headers: { traceparent: SAMPLED }, body: 'x' })).status, 200)
    t.equal((await http1(`${gw.url}/h1/fail`, { headers: { traceparent: `00-${TRACE}-${'1'.repeat(16)}-03` } })).status, 503)
    const spans = await eventually(() => {
      const s = collector.spans()
      if (s.length < 2) throw new Error('waiting for two spans')
      return s
    })
    const [ok, failed] = spans
    t.equal(collector.posts[0].path, '/v1/traces')
    t.equal(collector.posts[0].contentType, 'application/json')
    t.match(ok, {
      service: 'edge-gw',
      scope: 'switchyard',
      traceId: TRACE,
      parentSpanId: PARENT,
      kind: 2,
      name: 'POST web',
      attributes: {
        'http.request.method': 'POST',
        'url.path': '/h1/items/7',
        'http.response.status_code': 200,
        'switchyard.service': 'web',
        'switchyard.color': 'blue',
        'switchyard.pinned': false,
      },
      status: {},
    })
    t.equal(typeof ok.attributes['switchyard.generation'], 'number')
    t.notOk(JSON.stringify(collector.posts[0].body).includes('secret'), 'the query string is never exported')
    t.match(ok.spanId, /^[0-9a-f]{16}$/)
    t.not(ok.spanId, PARENT, 'a span of its own')
    const start = BigInt(ok.startTimeUnixNano)
    const end = BigInt(ok.endTimeUnixNano)
    t.ok(start >= BigInt(before) * 1_000_000n && end >= start && end < BigInt(Date.now() + 1) * 1_000_000n, 'times in nanoseconds, in order, now')
    t.match(failed, { parentSpanId: '1'.repeat(16), attributes: { 'http.response.status_code': 503 }, status: { code: 2 } }, 'a 5xx is an error span (and flags 03 still means sampled)')
    // Refused for its color (no healthy target, once the probes said so): a span of that color all the same.
    const dead = `00-${'d'.repeat(32)}-${PARENT}-01`
    await eventually(async () => (await http1(`${gw.url}/dead/x`, { headers: { traceparent: dead } })).status === 503)
    const refused = await eventually(() => {
      const s = collector.spans().find((x) => x.traceId === 'd'.repeat(32) && x.attributes['http.response.status_code'] === 503)
      if (s === undefined) throw new Error('no span of the refusal yet')
      return s
    })
    t.match(refused, { parentSpanId: PARENT, attributes: { 'switchyard.service': 'dead', 'switchyard.color': 'blue', 'url.path': '/dead/x' }, status: { code: 2 } })
  })

  t.test(`${engine}: an unsampled traceparent exports nothing; sample 0 exports none of the traces the gateway starts`, async (t) => {
    const collector = await startCollector(t)
    const { gw, b } = await twoServices(t, engine, `tracing: { otlp: ${collector.url}, sample: 0 }\n`)
    const unsampled = `00-${'c'.repeat(32)}-${PARENT}-00`
    await http1(`${gw.url}/h1/one`, { headers: { traceparent: unsampled } })
    t.equal(lastTo(b, '/h1/one').traceparent, unsampled, 'passed untouched')
    await http1(`${gw.url}/h1/two`)
    const started = GENERATED.exec(lastTo(b, '/h1/two').traceparent as string)
    t.ok(started, 'a trace started anyway, for the services below to agree')
    t.equal(started?.[3], '00', 'named upstream as not sampled')
    // An invalid traceparent: the gateway's trace would be unsampled, and the client's value goes as sent, alone.
    await http1(`${gw.url}/h1/three`, { headers: { traceparent: `00-${'0'.repeat(32)}-${PARENT}-01` } })
    t.equal(lastTo(b, '/h1/three').traceparent, `00-${'0'.repeat(32)}-${PARENT}-01`, 'an invalid one passes as sent, nothing added')
    // The marker's span is exported after the others ended: had they been recorded, they would have come first.
    const m = marker(1)
    await http1(`${gw.url}/h1/four`, { headers: { traceparent: m.traceparent } })
    await spansOf(collector, m.traceId)
    t.same(collector.spans().map((s) => s.traceId), [m.traceId], 'only the sampled request was exported')
  })

  t.test(`${engine}: a collector that fails, hangs or is down never touches the clients' answers`, async (t) => {
    const collector = await startCollector(t)
    collector.answer = 500
    const { gw } = await twoServices(t, engine, `tracing: { otlp: ${collector.url} }\n`)
    const exporter = exporterOf(gw) as OtlpExporter
    for (let i = 0; i < 5; i++) t.equal((await http1(`${gw.url}/h1/x${i}`)).status, 200)
    await eventually(() => exporter.counts.failed === 5, { timeout: 4000 })
    t.equal(exporter.counts.exported, 0)
    await collector.close()
    for (let i = 0; i < 3; i++) t.equal((await http1(`${gw.url}/h1/y${i}`)).status, 200, 'answered with the collector down')
    await eventually(() => exporter.counts.failed === 8, { timeout: 4000 })
    t.equal(exporter.counts.dropped, 0)
    t.same(await spanMetric(gw.adminUrl), { exported: 0, dropped: 0, failed: 8 }, 'switchyard_spans_total says so')
  })

  t.test(`${engine}: the gateway's stop sends what is queued before it returns`, async (t) => {
    const collector = await startCollector(t)
    const { gw } = await twoServices(t, engine, `tracing: { otlp: ${collector.url} }\n`)
    await http1(`${gw.url}/h1/last`, { headers: { traceparent: SAMPLED } })
    // Most likely still queued (the interval is a second); either way, it is out once the stop is over.
    await gw.stop()
    t.equal(collector.spans().length, 1, 'sent by the time the stop is over')
    t.equal(collector.spans()[0].traceId, TRACE)
  })
}

t.test('a span names the generation that routed it, and whether a kept one did (pinning)', async (t) => {
  const collector = await startCollector(t)
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `pinning: { trust: [127.0.0.0/8] }
tracing: { otlp: ${collector.url} }
services:
${serviceYaml('web', '/', [b], [g])}`)
  const spanOf = async (path: string, headers: Record<string, string> = {}): Promise<SeenSpan> => {
    t.equal((await http1(`${gw.url}${path}`, { headers })).status, 200)
    const sent = GENERATED.exec((b.seen.concat(g.seen).find((r) => r.url === path)?.headers.traceparent ?? '') as string)
    if (sent === null) throw new Error(`no traceparent reached ${path}`)
    return await spanWithId(collector, sent[2])
  }
  const first = await spanOf('/one')
  const generation = first.attributes['switchyard.generation'] as number
  t.match(first.attributes, { 'switchyard.color': 'blue', 'switchyard.pinned': false })
  t.equal(b.seen.find((r) => r.url === '/one')?.headers.baggage, `switchyard-gen=${generation}`, 'the span\'s generation is the one the baggage names')
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const pinned = await spanOf('/two', { baggage: `switchyard-gen=${generation}` })
  t.match(pinned.attributes, { 'switchyard.color': 'blue', 'switchyard.generation': generation, 'switchyard.pinned': true }, 'routed by the kept generation')
  const fresh = await spanOf('/three')
  t.match(fresh.attributes, { 'switchyard.color': 'green', 'switchyard.pinned': false })
  t.ok((fresh.attributes['switchyard.generation'] as number) > generation, 'the flip\'s generation')
})

/** A finished span as the tracer would queue it. */
function finished (exporter: OtlpExporter, n: number): Span {
  const s = new Span(exporter, TRACE, PARENT, false, 'GET', `/q/${n}`, 3, false)
  s.service = 'web'
  s.color = 'green'
  s.status = 200
  s.endMs = s.startMs + 1
  return s
}

t.test('the exporter: a bounded queue drops and counts; a hung collector loses its batch after the timeout', async (t) => {
  const collector = await startCollector(t)
  collector.answer = 'hang'
  const exporter = new OtlpExporter(collector.url, 'switchyard', { queue: 4, batch: 2, intervalMs: 60_000, timeoutMs: 200 })
  t.teardown(async () => await exporter.stop())
  for (let i = 0; i < 10; i++) exporter.add(finished(exporter, i))
  t.equal(exporter.queued, 4, 'the queue stops at its bound')
  t.same(exporter.counts, { exported: 0, dropped: 6, failed: 0 } satisfies ExportCounts)
  // Full batches go at once; one POST at a time, each cut by the timeout.
  await eventually(() => exporter.counts.failed === 4, { timeout: 3000 })
  t.equal(collector.posts.length, 2, 'two batches of two')
  t.equal(exporter.queued, 0)
  collector.answer = 200
  exporter.add(finished(exporter, 11))
  await exporter.stop()
  t.equal(exporter.counts.exported, 1, 'the stop sent the last one')
  exporter.add(finished(exporter, 12))
  t.equal(exporter.counts.dropped, 7, 'after the stop, a span is dropped, counted')
})

t.test('the exporter: a stop waits for a hung collector no longer than one timeout, whatever is queued', async (t) => {
  const collector = await startCollector(t)
  collector.answer = 'hang'
  const exporter = new OtlpExporter(collector.url, 'switchyard', { queue: 100, batch: 10, intervalMs: 60_000, timeoutMs: 300 })
  for (let i = 0; i < 50; i++) exporter.add(finished(exporter, i))
  const started = performance.now()
  await exporter.stop()
  const took = performance.now() - started
  t.ok(took < 1000, `stopped in ${Math.round(took)} ms (five batches of 300 ms each would be 1500)`)
  t.equal(exporter.counts.failed, 50, 'every span not sent is counted lost')
  t.equal(exporter.queued, 0)
})

t.test('the tracer: whose trace, and when the gateway names its own upstream', async (t) => {
  const queued: Span[] = []
  const facts = (lines: string[]): RequestFacts => ({
    method: 'GET',
    header: (name: string) => name === 'traceparent' && lines.length === 1 ? lines[0] : undefined,
    headerLines: (name: string) => name === 'traceparent' ? lines.length : 0,
  }) as unknown as RequestFacts
  const tracer = new Tracer({ sample: 1 }, { add: (s) => queued.push(s) })
  const joined = tracer.start(facts([SAMPLED]), '/a', 4, false) as Span
  t.match(joined, { traceId: TRACE, parentSpanId: PARENT, traceparent: undefined, generation: 4, pinned: false })
  const started = tracer.start(facts([]), '/b', 4, true) as Span
  t.equal(started.parentSpanId, undefined)
  t.equal(started.traceparent, `00-${started.traceId}-${started.spanId}-01`, 'named upstream under its own span')
  const twoLines = tracer.start(facts([SAMPLED, SAMPLED]), '/c', 4, false) as Span
  t.equal(twoLines.traceparent, undefined, 'two traceparent lines: a trace of its own, nothing added (the client\'s lines go as sent)')
  t.not(twoLines.traceId, TRACE)
  t.equal(tracer.start(facts([`00-${TRACE}-${PARENT}-00`]), '/d', 4, false), undefined, 'unsampled: no span at all')
  const never = new Tracer({ sample: 0 }, { add: (s) => queued.push(s) })
  t.equal(never.start(facts(['garbage']), '/e', 4, false), undefined, 'sample 0 and a client value to keep: nothing to do')
  const unsampled = never.start(facts([]), '/f', 4, false)
  t.match(unsampled?.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/)
  unsampled?.end({ service: 'web', color: 'blue' } as never, { status: 200 } as never)
  started.end({ service: 'web', color: 'green' } as never, { status: 204 } as never)
  t.equal(queued.length, 1, 'only the sampled span was queued')
  t.match(queued[0], { service: 'web', color: 'green', status: 204, target: '/b', pinned: true })
  t.ok(queued[0].endMs >= queued[0].startMs)
})

t.test('traceparent parsing follows W3C Trace Context, version 00', async (t) => {
  t.same(parseTraceparent(SAMPLED), { traceId: TRACE, parentId: PARENT, sampled: true })
  t.same(parseTraceparent(` 00-${TRACE}-${PARENT}-00 `), { traceId: TRACE, parentId: PARENT, sampled: false })
  for (const bad of [
    `01-${TRACE}-${PARENT}-01`, `ff-${TRACE}-${PARENT}-01`, `00-${TRACE.toUpperCase()}-${PARENT}-01`,
    `00-${'0'.repeat(32)}-${PARENT}-01`, `00-${TRACE}-${'0'.repeat(16)}-01`, `00-${TRACE}-${PARENT}-1`,
    `00-${TRACE}-${PARENT}-01-extra`, `00_${TRACE}_${PARENT}_01`, `00-${TRACE}-${PARENT}-zz`, '',
  ]) t.equal(parseTraceparent(bad), undefined, `refused: ${JSON.stringify(bad)}`)
  t.equal(unixNano(1700000000123 + 0.457), '1700000000123457000', 'microseconds: what a double holds of a time this large')
  t.equal(unixNano(1700000000123 + 0.9999), '1700000000124000000', 'rounding carries into the millisecond')
})

/** A request on a fresh connection, so the cluster may hand it to any worker; the traceparent its upstream got. */
/** switchyard_spans_total by result, off GET /metrics; undefined when the metric is not there. */
async function spanMetric (adminUrl: string): Promise<ExportCounts | undefined> {
  const text = (await http1(`${adminUrl}/metrics`)).text
  const counts: ExportCounts = { exported: 0, dropped: 0, failed: 0 }
  let seen = 0
  for (const m of text.matchAll(/^switchyard_spans_total\{result="(exported|dropped|failed)"\} (\d+)$/gm)) {
    counts[m[1] as keyof ExportCounts] = Number(m[2])
    seen++
  }
  return seen === 0 ? undefined : counts
}

/** A collector, blue and green backends, and `serve --workers 2` sending its spans to the collector. */
async function tracedWorkers (t: Test): Promise<{ collector: Collector, b: Backend, g: Backend, p: ReturnType<typeof serve>, port: number, adminPort: number }> {
  const collector = await startCollector(t)
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `tracing: { otlp: ${collector.url} }\nservices:\n${serviceYaml('svc', '/', [b], [g])}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  const { port, admin: adminPort } = await listening(p)
  return { collector, b, g, p, port, adminPort }
}

t.test('switchyard_spans_total: the workers\' exports summed; absent with tracing off', async (t) => {
  const { collector, b, g, p, port, adminPort } = await tracedWorkers(t)
  for (let i = 0; i < 12; i++) t.equal(await fresh(`http://127.0.0.1:${port}/m${i}`, { traceparent: marker(200 + i).traceparent }), 200)
  await eventually(() => collector.spans().length === 12, { timeout: 5000 })
  const counts = await eventually(async () => {
    const c = await spanMetric(`http://127.0.0.1:${adminPort}`)
    return c?.exported === 12 ? c : false
  }, { timeout: 3000 })
  t.same(counts, { exported: 12, dropped: 0, failed: 0 }, 'every span the collector took, counted once across the workers')
  t.ok(new Set(collector.posts.map((x) => x.remotePort)).size >= 2, 'from both workers')
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)

  const off = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  t.equal(await spanMetric(off.adminUrl), undefined, 'no tracing, no metric')
})

async function fresh (url: string, headers: http.OutgoingHttpHeaders = {}): Promise<number> {
  return await new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    }).on('error', reject)
  })
}

t.test('serve --workers 2: each worker exports the spans of what it serves, and sends them when it stops', async (t) => {
  const { collector, b, p, port } = await tracedWorkers(t)
  const sent: string[] = []
  for (let i = 0; i < 20; i++) {
    const m = marker(100 + i)
    sent.push(m.traceId)
    t.equal(await fresh(`http://127.0.0.1:${port}/w${i}`, { traceparent: m.traceparent }), 200)
  }
  const generated = await fresh(`http://127.0.0.1:${port}/bare`)
  t.equal(generated, 200)
  const bare = GENERATED.exec(b.seen.filter((s) => s.url === '/bare')[0].headers.traceparent as string)
  t.ok(bare, 'a worker names the trace it started upstream')
  // SIGTERM at once: the spans are still queued (the interval is a second); the workers' stop sends them.
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)
  const spans = collector.spans()
  t.same(spans.filter((s) => s.parentSpanId === PARENT).map((s) => s.traceId).sort(), sent.sort(), 'every request\'s span, once')
  t.ok(spans.some((s) => s.spanId === bare?.[2] && s.traceId === bare?.[1]), 'the started trace\'s span')
  t.ok(new Set(collector.posts.map((x) => x.remotePort)).size >= 2, 'from more than one exporter (each worker its own)')
})
