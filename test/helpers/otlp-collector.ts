// A stand-in OpenTelemetry collector on 127.0.0.1 port 0: it records what is
// POSTed to it as OTLP/HTTP JSON and answers as a test tells it to.

import http from 'node:http'
import type { AddressInfo } from 'node:net'

interface Teardown { teardown: (fn: () => unknown) => void }

/** One exported span, flattened: its resource's service.name and scope name beside it, attributes as a plain object. */
export interface SeenSpan {
  service: string
  scope: string
  traceId: string
  spanId: string
  parentSpanId: string | undefined
  name: string
  kind: number
  startTimeUnixNano: string
  endTimeUnixNano: string
  attributes: Record<string, string | number | boolean>
  status: { code?: number, message?: string }
}

export interface Collector {
  /** Where to point `tracing.otlp` (`/v1/traces` included). */
  url: string
  /** Every POST as received: path, content type, parsed body, and the sender's port (one per exporter connection). */
  posts: Array<{ path: string, contentType: string | undefined, body: any, remotePort: number }>
  /** The spans of every POST, in order. */
  spans: () => SeenSpan[]
  /** How the next POSTs are answered: a status, or 'hang' (never answered). Default 200. */
  answer: number | 'hang'
  close: () => Promise<void>
}

function attributeValue (v: any): string | number | boolean {
  if ('stringValue' in v) return v.stringValue
  if ('intValue' in v) return Number(v.intValue)
  if ('boolValue' in v) return v.boolValue
  return JSON.stringify(v)
}

export async function startCollector (t: Teardown): Promise<Collector> {
  const collector = { posts: [], answer: 200 } as unknown as Collector
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      collector.posts.push({ path: req.url ?? '', contentType: req.headers['content-type'], body: JSON.parse(Buffer.concat(chunks).toString()), remotePort: req.socket.remotePort ?? 0 })
      if (collector.answer === 'hang') return
      res.writeHead(collector.answer, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  collector.url = `http://127.0.0.1:${port}/v1/traces`
  collector.spans = () => collector.posts.flatMap((p) => (p.body.resourceSpans as any[]).flatMap((rs) => {
    const service = attributeValue(rs.resource.attributes.find((a: any) => a.key === 'service.name').value) as string
    return (rs.scopeSpans as any[]).flatMap((ss) => (ss.spans as any[]).map((s): SeenSpan => ({
      service,
      scope: ss.scope.name,
      traceId: s.traceId,
      spanId: s.spanId,
      parentSpanId: s.parentSpanId,
      name: s.name,
      kind: s.kind,
      startTimeUnixNano: s.startTimeUnixNano,
      endTimeUnixNano: s.endTimeUnixNano,
      attributes: Object.fromEntries((s.attributes as any[]).map((a) => [a.key, attributeValue(a.value)])),
      status: s.status,
    })))
  }))
  collector.close = async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  t.teardown(async () => await collector.close().catch(() => {}))
  return collector
}
