import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import WebSocket from 'ws'
import { admin, eventually, http1, serviceYaml, startBackend, startGateway } from './helpers/index.js'

/** Sample lines of one metric family, as `name{labels} value`. */
function samples (text: string, name: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const i = line.lastIndexOf(' ')
    out.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return out
}

t.test('/metrics after traffic and a flip: counters, live gauge, flips, histogram, errors', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}\n  dead:\n    match: { pathPrefix: /dead }\n    blue: { targets: ['http://127.0.0.1:1'] }\n    passive: false\n`)
  for (let i = 0; i < 5; i++) t.equal((await http1(`${gw.url}/users/${i}?secret=${i}`)).status, 200)
  t.equal((await http1(`${gw.url}/status/404`)).status, 404)
  t.equal((await http1(`${gw.url}/status/503`)).status, 503)
  t.equal((await http1(`${gw.url}/dead`)).status, 502)
  const ws = new WebSocket(gw.url.replace('http', 'ws') + '/ws')
  await new Promise((resolve) => ws.once('open', resolve))
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['svc'] })).status, 200)
  t.equal((await http1(`${gw.url}/after`)).status, 200)

  const res = await http1(`${gw.adminUrl}/metrics`)
  t.equal(res.status, 200)
  t.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8')
  const text = res.text
  const req = samples(text, 'switchyard_requests_total')
  t.equal(req.get('switchyard_requests_total{service="svc",color="blue",code="2xx"}'), 5)
  t.equal(req.get('switchyard_requests_total{service="svc",color="blue",code="4xx"}'), 1)
  t.equal(req.get('switchyard_requests_total{service="svc",color="blue",code="5xx"}'), 1)
  t.equal(req.get('switchyard_requests_total{service="svc",color="green",code="2xx"}'), 1)
  t.equal(req.get('switchyard_requests_total{service="dead",color="blue",code="5xx"}'), 1)
  const live = samples(text, 'switchyard_live')
  t.equal(live.get('switchyard_live{service="svc",color="green"}'), 1)
  t.equal(live.get('switchyard_live{service="svc",color="blue"}'), 0)
  t.equal(samples(text, 'switchyard_flips_total').get('switchyard_flips_total{service="svc",trigger="manual"}'), 1)
  t.equal(samples(text, 'switchyard_generation').get('switchyard_generation'), 1)
  const hist = samples(text, 'switchyard_request_duration_seconds')
  t.equal(hist.get('switchyard_request_duration_seconds_count{service="svc",color="blue"}'), 7)
  t.equal(hist.get('switchyard_request_duration_seconds_bucket{service="svc",color="blue",le="+Inf"}'), 7)
  t.ok((hist.get('switchyard_request_duration_seconds_sum{service="svc",color="blue"}') ?? 0) > 0)
  const b1 = hist.get('switchyard_request_duration_seconds_bucket{service="svc",color="blue",le="0.001"}') ?? -1
  const b10 = hist.get('switchyard_request_duration_seconds_bucket{service="svc",color="blue",le="10"}') ?? -1
  t.ok(b1 >= 0 && b1 <= b10 && b10 === 7, 'buckets are cumulative')
  t.equal(samples(text, 'switchyard_upstream_errors_total').get('switchyard_upstream_errors_total{service="dead",color="blue",kind="connect_failed"}'), 1)
  t.equal(samples(text, 'switchyard_websockets_open').get('switchyard_websockets_open{service="svc",color="blue"}'), 1)
  t.equal(samples(text, 'switchyard_inflight_requests').get('switchyard_inflight_requests{service="svc",color="blue"}'), 0)
  t.equal(samples(text, 'switchyard_target_healthy').get(`switchyard_target_healthy{service="svc",color="green",target="${g.url}"}`), 1)
  t.match(text, /^process_cpu_user_seconds_total /m, 'default process metrics')
  t.notMatch(text, /secret|\/users\/|127\.0\.0\.1",/, 'no raw path or client address in a label')
  ws.close()
})

t.test('access log lines are JSON with every field; X-Request-Id is passed through or made', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `log: { access: logs/access.log }\nservices:\n${serviceYaml('svc', '/', [b], [g])}`)
  t.equal((await http1(`${gw.url}/given?q=1`, { headers: { 'x-request-id': 'req-123' } })).status, 200)
  t.equal((await http1(`${gw.url}/made`, { method: 'POST', body: 'hello' })).status, 200)
  t.equal(b.seen[0].headers['x-request-id'], 'req-123', 'passed through upstream')
  const made = b.seen[1].headers['x-request-id'] as string
  t.match(made, /^[0-9a-f-]{36}$/, 'generated and forwarded upstream')
  await gw.stop()
  const lines = readFileSync(join(gw.dir, 'logs', 'access.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.equal(lines.length, 2)
  t.match(lines[0], { type: 'access', service: 'svc', color: 'blue', target: b.url, method: 'GET', path: '/given?q=1', status: 200, requestId: 'req-123' })
  t.match(lines[1], { method: 'POST', path: '/made', status: 200, requestId: made })
  for (const l of lines) {
    t.ok(Date.parse(l.time) > 0, 'time')
    t.ok(l.bytes > 0, 'bytes')
    t.ok(l.duration > 0 && l.upstream > 0 && l.upstream <= l.duration, 'duration and upstream time in ms')
  }
})

t.test('metrics.enabled: false turns /metrics off; the one-minute history fills', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `metrics: { enabled: false }\nservices:\n${serviceYaml('svc', '/', [b], [g])}`)
  t.equal((await http1(`${gw.adminUrl}/metrics`)).status, 404)
  for (let i = 0; i < 3; i++) await http1(`${gw.url}/x`)
  await eventually(async () => {
    const recent = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.svc.environments.blue.recent
    return recent.requests.reduce((a: number, n: number) => a + n, 0) === 3 && recent.requests.length === 60
  }, { timeout: 3000 })
})
