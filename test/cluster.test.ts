import t from 'tap'
import http from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { admin, eventually, listening, serve, serviceYaml, startBackend, tempDir } from './helpers/index.js'

/** A request on a fresh connection, so the cluster may hand it to any worker. */
async function fresh (url: string): Promise<{ status: number, json: any }> {
  return await new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (res) => {
      let body = ''
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => {
        let json
        try { json = JSON.parse(body) } catch { json = undefined }
        resolve({ status: res.statusCode ?? 0, json })
      })
    }).on('error', reject)
  })
}

t.test('serve --workers 2: flips reach every worker before they are answered; counts are summed', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const dir = tempDir(t)
  const file = join(dir, 'sy.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nlog: { access: false }\nservices:\n${serviceYaml('svc', '/', [b], [g], '    guard: { window: 30s, maxErrorRate: 0.2, minRequests: 10 }\n    passive: false\n')}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  await listening(p)
  const up = p.lines.find((l) => l.msg === 'switchyard listening')
  t.equal(up.workers, 2)
  const url = `http://${up.listen as string}`
  const adminUrl = `http://${up.admin as string}`

  for (let i = 0; i < 10; i++) t.equal((await fresh(`${url}/a`)).json.backend, 'blue')
  const flip = await admin(adminUrl, 'POST', '/v1/flip', {})
  t.equal(flip.status, 200)
  const after = await Promise.all(Array.from({ length: 20 }, async () => (await fresh(`${url}/b`)).json.backend))
  t.same(new Set(after), new Set(['green']), 'every worker routes to green as soon as the flip is answered')

  // In-flight counts from the workers show in /v1/state and /metrics.
  const slow = fresh(`${url}/slow?ms=1500`)
  await eventually(async () => (await admin(adminUrl, 'GET', '/v1/state')).json.services.svc.environments.green.inflight === 1)
  t.equal((await slow).status, 200)
  await eventually(async () => {
    const m = (await admin(adminUrl, 'GET', '/metrics')).text
    return m.includes('switchyard_requests_total{service="svc",color="blue",code="2xx"} 10') &&
      m.includes('switchyard_requests_total{service="svc",color="green",code="2xx"} 21')
  })

  // The guard in the primary sees the workers' errors and reverts.
  g.handler = (_req, res) => { res.writeHead(500).end('broken') }
  for (let i = 0; i < 15; i++) await fresh(`${url}/c`)
  await eventually(async () => (await admin(adminUrl, 'GET', '/v1/state')).json.services.svc.live === 'blue', { timeout: 5000 })
  const ev = (await admin(adminUrl, 'GET', '/v1/events?type=auto_revert')).json.events[0]
  t.match(ev, { type: 'auto_revert', trip: { reason: 'error_rate' } })
  for (let i = 0; i < 6; i++) t.equal((await fresh(`${url}/d`)).json.backend, 'blue')

  const inflight = fresh(`${url}/slow?ms=600`)
  await eventually(() => b.seen.some((s) => s.url === '/slow?ms=600'))
  p.kill('SIGTERM')
  t.equal((await inflight).status, 200, 'SIGTERM lets in-flight requests finish in the workers')
  t.equal(await p.exit, 0)
})
