import t from 'tap'
import http from 'node:http'
import { admin, configFile, eventually, isAlive, listening, serve, serviceYaml, startBackend } from './helpers/index.js'

/** A request on a fresh connection, so the cluster may hand it to any worker. */
async function fresh (url: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number, json: any, body: string, headers: http.IncomingHttpHeaders }> {
  return await new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers }, (res) => {
      let body = ''
      res.on('error', reject)
      res.on('aborted', () => reject(new Error('response cut short')))
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => {
        let json
        try { json = JSON.parse(body) } catch { json = undefined }
        resolve({ status: res.statusCode ?? 0, json, body, headers: res.headers })
      })
    }).on('error', reject)
  })
}


t.test('serve --workers 2: flips reach every worker before they are answered; counts are summed', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [b], [g], '    guard: { window: 30s, maxErrorRate: 0.2, minRequests: 10 }\n    passive: false\n')}`)
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

t.test('serve --workers 2: sticky sessions stay on the draining color in every worker until drain.timeout', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [b], [g], '    sticky: { cookie: sy }\n    drain: { timeout: 3s }\n    passive: false\n')}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  await listening(p)
  const up = p.lines.find((l) => l.msg === 'switchyard listening')
  const url = `http://${up.listen as string}`
  const adminUrl = `http://${up.admin as string}`
  const pinnedBlue = { cookie: 'sy=blue' }

  t.equal((await fresh(`${url}/a`, pinnedBlue)).json.backend, 'blue')
  t.equal((await admin(adminUrl, 'POST', '/v1/flip', {})).status, 200)
  // Fresh connections: the primary deals them out over both workers.
  const during = await Promise.all(Array.from({ length: 12 }, async () => await fresh(`${url}/b`, pinnedBlue)))
  t.same(during.map((r) => r.json.backend), Array(12).fill('blue'), 'every worker keeps the pinned session on the draining color')
  t.same(during.map((r) => r.headers['set-cookie']), Array(12).fill(undefined), 'and leaves its cookie alone')
  const unpinned = await fresh(`${url}/b`)
  t.equal(unpinned.json.backend, 'green', 'a new session goes live')
  t.same(unpinned.headers['set-cookie'], ['sy=green; Path=/; HttpOnly; SameSite=Lax'])

  await eventually(async () => (await admin(adminUrl, 'GET', '/v1/state')).json.services.svc.environments.blue.state === 'idle', { timeout: 8000 })
  const after = await Promise.all(Array.from({ length: 12 }, async () => await fresh(`${url}/c`, pinnedBlue)))
  t.same(after.map((r) => r.json.backend), Array(12).fill('green'), 'after drain.timeout the session moves to live in every worker')
  t.same(after.map((r) => r.headers['set-cookie']), Array(12).fill(['sy=green; Path=/; HttpOnly; SameSite=Lax']), 'with the cookie rewritten')
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)
})

t.test('serve --workers 2: when the primary is SIGKILLed, workers finish in-flight requests and exit 0', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [b], [g], '    drain: { timeout: 5s }\n')}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  await listening(p)
  const up = p.lines.find((l) => l.msg === 'switchyard listening')
  const url = `http://${up.listen as string}`
  // Workers log on their own stdout: their lines may come in after the primary's.
  await eventually(() => p.lines.filter((l) => l.msg === 'worker listening').length >= 2, { timeout: 10_000 })
  const pids = p.lines.filter((l) => l.msg === 'worker listening').map((l) => l.pid as number)
  t.equal(pids.length, 2, 'each worker logs its pid')
  t.teardown(() => { for (const pid of pids) if (isAlive(pid)) process.kill(pid, 'SIGKILL') })
  // A worker that crashes says why on stderr (it once did when the primary died mid-send).
  t.teardown(() => { if (!t.passing()) t.comment(`gateway stderr:\n${p.stderr()}`) })

  // The upstream answers after ~1 s, so the primary dies in the middle of it.
  const inflight = fresh(`${url}/slow?ms=1000`)
  await eventually(() => b.seen.some((s) => s.url === '/slow?ms=1000'))
  const killedAt = Date.now()
  p.kill('SIGKILL')
  t.equal(await p.exit, null, 'the primary is gone')
  const r = await inflight
  t.equal(r.status, 200, 'the in-flight request completes')
  t.equal(r.body, JSON.stringify({ backend: 'blue', method: 'GET', path: '/slow?ms=1000', body: '' }), 'with its full body')
  await eventually(() => pids.every((pid) => !isAlive(pid)), { timeout: 5000 })
  const took = Date.now() - killedAt
  t.ok(took < 5000, `workers exited ${took} ms after the primary died, within the drain grace`)
  await eventually(() => p.lines.filter((l) => l.msg === 'worker stopped' && l.code === 0).length === 2)
  t.same(p.lines.filter((l) => l.msg === 'worker stopped').map((l) => l.pid).sort(), [...pids].sort(), 'both workers say they exit with code 0')
})

t.test('serve --workers 2: a worker started in place of a crashed one gets the changes made while it starts', async (t) => {
  // The live color's target moves round three backends, so a worker that missed a change answers from the wrong one.
  const backends = await Promise.all(Array.from({ length: 3 }, async (_, i) => await startBackend(t, `b${i}`)))
  const g = await startBackend(t, 'green')
  // Many services: a worker takes a moment to build its first routing state.
  const more = Array.from({ length: 1000 }, (_, i) => serviceYaml(`s${i}`, `/s${i}`, [g], [g], '    passive: false\n')).join('')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [backends[0]], [g], '    passive: false\n')}${more}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  await listening(p)
  const up = p.lines.find((l) => l.msg === 'switchyard listening')
  const url = `http://${up.listen as string}`
  const adminUrl = `http://${up.admin as string}`
  const lines = (msg: string): any[] => p.lines.filter((l) => l.msg === msg)
  t.teardown(() => { for (const l of lines('worker started; routing sent')) if (isAlive(l.pid)) process.kill(l.pid, 'SIGKILL') })
  // Workers log on their own stdout: their lines may come in after the primary's.
  await eventually(() => lines('worker listening').length >= 2, { timeout: 10_000 })

  for (let round = 1; round <= 2; round++) {
    const started = lines('worker started; routing sent').length
    const listeningNow = lines('worker listening').length
    process.kill(lines('worker listening').map((l) => l.pid as number).filter(isAlive)[0], 'SIGKILL')
    // The replacement has been sent its first routing state: hold it there,
    // before its listener is up, and change the routing meanwhile.
    await eventually(() => lines('worker started; routing sent').length > started, { timeout: 10_000, interval: 1 })
    const replacement = lines('worker started; routing sent')[started].pid as number
    process.kill(replacement, 'SIGSTOP')
    const next = backends[round % backends.length]
    const change = admin(adminUrl, 'PUT', '/v1/services/svc/environments/blue/targets', { targets: [next.url], force: true })
    await eventually(async () => JSON.stringify((await admin(adminUrl, 'GET', '/v1/state')).json).includes(next.url))
    process.kill(replacement, 'SIGCONT')
    t.equal((await change).status, 200)
    await eventually(() => lines('worker listening').length > listeningNow, { timeout: 10_000 })
    const seen = await Promise.all(Array.from({ length: 12 }, async () => (await fresh(`${url}/r${round}`)).json.backend))
    t.same(seen, Array(12).fill(next.name), `round ${round}: both workers answer from ${next.name}, the target set while one started`)
  }
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)
})

t.test('serve --workers 2: a worker that dies while a change is handed out does not hold the answer (or the queue) for the ack timeout', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const p = serve(t, ['serve', '--config', file, '--workers', '2'])
  await listening(p)
  const adminUrl = `http://${p.lines.find((l) => l.msg === 'switchyard listening').admin as string}`
  // Workers log on their own stdout: their lines may come in after the primary's.
  await eventually(() => p.lines.filter((l) => l.msg === 'worker listening').length >= 2, { timeout: 10_000 })
  const pids = p.lines.filter((l) => l.msg === 'worker listening').map((l) => l.pid as number)
  t.teardown(() => { for (const pid of pids) if (isAlive(pid)) process.kill(pid, 'SIGKILL') })

  // A stopped worker takes no change: the flip waits for its ack.
  process.kill(pids[0], 'SIGSTOP')
  let answeredAt = 0
  const flip = admin(adminUrl, 'POST', '/v1/flip', {}).finally(() => { answeredAt = Date.now() })
  // The primary has swapped (so the change is being handed out) and not answered yet.
  await eventually(async () => (await admin(adminUrl, 'GET', '/v1/state')).json.generation === 1)
  t.equal(answeredAt, 0, 'the flip waits for the stopped worker')
  const killedAt = Date.now()
  process.kill(pids[0], 'SIGKILL')
  t.equal((await flip).status, 200)
  t.ok(answeredAt - killedAt < 2500, `answered ${answeredAt - killedAt} ms after the worker died (the ack timeout is 5 s)`)
  await eventually(() => p.lines.filter((l) => l.msg === 'worker listening').length === 3, { timeout: 8000 })
  p.kill('SIGTERM')
  t.equal(await p.exit, 0)
})
