// The `shadow` command against a fake admin API answering DESIGN-15 step 5's shapes:
// the printed table, the request bodies it sends, and its exit codes (in process and as `node dist/cli.js`).

import t, { type Test } from 'tap'
import http from 'node:http'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { run } from '../src/commands.js'

process.env.TZ = 'UTC'
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))

interface Seen { method: string, path: string, body: any, headers: http.IncomingHttpHeaders }
interface Reply { status: number, body: unknown }

/** Answers `${method} ${path}` from `replies`; anything else is the admin API's 404. */
async function fakeAdmin (t: Test, replies: Record<string, Reply>): Promise<{ url: string, seen: Seen[] }> {
  const seen: Seen[] = []
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString()
      const key = `${req.method ?? ''} ${req.url ?? ''}`
      seen.push({ method: req.method ?? '', path: req.url ?? '', body: raw === '' ? undefined : JSON.parse(raw), headers: req.headers })
      const a = replies[key] ?? { status: 404, body: { error: 'not_found', message: `no admin endpoint ${key}` } }
      res.writeHead(a.status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(a.body))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

interface Ran { code: number, out: string, err: string }

async function cli (url: string, argv: string[]): Promise<Ran> {
  let out = ''
  let err = ''
  const code = await run(argv, {
    out: (x) => { out += x + '\n' },
    err: (x) => { err += x + '\n' },
    env: { SWITCHYARD_ADMIN_URL: url, SWITCHYARD_ADMIN_TOKEN: 's3cret', USER: 'tester' },
  })
  return { code, out, err }
}

const PATH = '/v1/services/users/shadow'

/** A comparison in progress: one real difference, two places learnt as noise. */
const VIEW = {
  active: true,
  sample: 0.2,
  until: Date.parse('2026-11-29T12:30:00Z'),
  source: 'api',
  gate: { maxShadowDiff: 0.01, minShadowCompared: 200 },
  sent: 1200,
  compared: 1150,
  matched: 1100,
  differed: 14,
  dropped: 50,
  noise: 36,
  top: [
    { where: '$.plan', count: 14, example: { live: '"pro"', idle: '"team"' } },
    { where: 'header:x-version', count: 3, example: { live: '1.0.0', idle: '1.1.0\u001b[31m' } },
  ],
  drops: { busy: 40, no_target: 10, failed: 0, body_too_large: 0 },
  bodyNotCompared: 2,
  noiseWhere: [{ where: '$.requestId', count: 120 }, { where: '$.timestamp', count: 118 }],
  probes: 120,
}

t.test('shadow SERVICE prints the control, the counts with the differing share, the top places with examples, and the noise', async (t) => {
  const fake = await fakeAdmin(t, { [`GET ${PATH}`]: { status: 200, body: VIEW } })
  const res = await cli(fake.url, ['shadow', 'users'])
  t.equal(res.code, 0)
  t.equal(res.err, '')
  t.same(fake.seen.map((s) => `${s.method} ${s.path}`), [`GET ${PATH}`])
  t.equal(fake.seen[0].headers.authorization, 'Bearer s3cret', 'the token from SWITCHYARD_ADMIN_TOKEN')
  const lines = res.out.trimEnd().split('\n')
  t.equal(lines[0], 'users: shadow on, sample 20% until 12:30:00 (started by the admin API)')
  t.match(lines[1], /^SENT\s+COMPARED\s+MATCHED\s+DIFFERED\s+NOISE\s+DROPPED$/)
  t.match(lines[2], /^1200\s+1150\s+1100\s+14 \(1\.2%\)\s+36\s+50 \(40 busy, 10 no_target\)$/)
  t.equal(lines[3], '2 pairs compared by status and headers only (body above maxBody); 120 noise probes')
  t.equal(lines[4], 'gate: at most 1.0% differing (gate.maxShadowDiff): a flip into the idle color is refused')
  t.match(lines[6], /^WHERE\s+PAIRS\s+LIVE\s+IDLE$/)
  t.match(lines[7], /^\$\.plan\s+14\s+"pro"\s+"team"$/)
  t.match(lines[8], /^header:x-version\s+3\s+1\.0\.0\s+1\.1\.0\\x1b\[31m$/, 'a control character in an example is shown escaped')
  t.notOk(res.out.includes('\u001b'), 'no raw escape reaches the terminal')
  t.match(lines[10], /^NOISE \(NOT COUNTED\)\s+PROBES$/)
  t.match(lines[11], /^\$\.requestId\s+120$/)
  t.match(lines[12], /^\$\.timestamp\s+118$/)
})

t.test('shadow SERVICE names the endpoints where each place differed, and the endpoint each noise place was learnt on', async (t) => {
  const view = {
    ...VIEW,
    top: [
      { where: '$.plan', count: 14, example: { live: '"pro"', idle: '"team"' }, endpoints: [{ endpoint: 'GET /api/users/{id}', count: 10 }, { endpoint: 'GET /api/teams/{id}', count: 4 }] },
      { where: 'status', count: 3, example: { live: '200', idle: '500' }, endpoints: [{ endpoint: 'POST /api/users', count: 3 }] },
    ],
    noiseWhere: [{ where: '$.value', endpoint: 'GET /api/random', count: 40 }, { where: '$.ts', endpoint: 'GET /api/users/{id}', count: 12 }],
  }
  const fake = await fakeAdmin(t, { [`GET ${PATH}`]: { status: 200, body: view } })
  const lines = (await cli(fake.url, ['shadow', 'users'])).out.trimEnd().split('\n')
  t.match(lines[6], /^WHERE\s+PAIRS\s+ENDPOINTS\s+LIVE\s+IDLE$/)
  t.match(lines[7], /^\$\.plan\s+14\s+GET \/api\/users\/\{id\} 10, GET \/api\/teams\/\{id\} 4\s+"pro"\s+"team"$/)
  t.match(lines[8], /^status\s+3\s+POST \/api\/users\s+200\s+500$/, 'one endpoint: no count repeated')
  t.match(lines[10], /^NOISE \(NOT COUNTED\)\s+ENDPOINT\s+PROBES$/)
  t.match(lines[11], /^\$\.value\s+GET \/api\/random\s+40$/)
  t.match(lines[12], /^\$\.ts\s+GET \/api\/users\/\{id\}\s+12$/)
})

t.test('shadow SERVICE: off, nothing compared; config-on without differences; --json is the server answer', async (t) => {
  const off = { active: false, sample: null, until: null, source: null, sent: 0, compared: 0, matched: 0, differed: 0, dropped: 0, noise: 0, top: [], drops: { busy: 0, no_target: 0, failed: 0, body_too_large: 0 }, bodyNotCompared: 0, noiseWhere: [], probes: 0 }
  const clean = { ...off, active: true, sample: 0.1, source: 'config', live: 'green', idle: 'blue', gate: { maxShadowDiff: 0.05 }, sent: 300, compared: 300, matched: 290, noise: 10, probes: 40, noiseWhere: [{ where: '$.timestamp', count: 40 }] }
  const fake = await fakeAdmin(t, {
    'GET /v1/services/orders/shadow': { status: 200, body: off },
    [`GET ${PATH}`]: { status: 200, body: clean },
  })
  const o = await cli(fake.url, ['shadow', 'orders'])
  t.equal(o.code, 0)
  const ol = o.out.trimEnd().split('\n')
  t.equal(ol[0], 'orders: shadow off')
  t.match(ol[2], /^0\s+0\s+0\s+0 \(-\)\s+0\s+0$/, 'no share of zero pairs')
  t.equal(ol.at(-1), 'nothing compared yet')
  t.notOk(o.out.includes('noise probes'), 'no probes: no line')
  const c = await cli(fake.url, ['shadow', 'users'])
  const cl = c.out.trimEnd().split('\n')
  t.equal(cl[0], 'users: shadow on, sample 10% of green copied to blue (from the config)')
  t.match(cl[2], /^300\s+300\s+290\s+0 \(0\.0%\)\s+10\s+0$/)
  t.ok(cl.includes('gate: at most 5.0% differing (gate.maxShadowDiff): within it'))
  t.ok(cl.includes('no differences counted'))
  t.match(cl.at(-1), /^\$\.timestamp\s+40$/)
  const j = await cli(fake.url, ['shadow', 'users', '--json'])
  t.equal(j.code, 0)
  t.same(JSON.parse(j.out), clean)
})

t.test('--sample/--duration/--reason POST the start; --start alone sends no sample; --stop DELETEs', async (t) => {
  const started = { ...VIEW, sent: 0, generation: 8 }
  const fake = await fakeAdmin(t, {
    [`POST ${PATH}`]: { status: 200, body: started },
    [`DELETE ${PATH}`]: { status: 200, body: { active: false, generation: 9 } },
  })
  const s = await cli(fake.url, ['shadow', 'users', '--sample', '0.2', '--duration', '10m', '--reason', 'check 1.1.0'])
  t.equal(s.code, 0)
  t.equal(s.out, 'users: shadow traffic on, sample 20% until 12:30:00 (started by the admin API) (generation 8)\n')
  t.same(fake.seen[0].body, { sample: 0.2, duration: '10m', reason: 'check 1.1.0' })
  t.equal(fake.seen[0].headers['content-type'], 'application/json')
  t.equal(fake.seen[0].headers['x-switchyard-actor'], 'cli:tester')
  const d = await cli(fake.url, ['shadow', 'users', '--start'])
  t.equal(d.code, 0)
  t.same(fake.seen[1].body, {}, 'the server picks the config\'s sample, else 0.1')
  const stop = await cli(fake.url, ['shadow', 'users', '--stop', '--reason', 'seen enough'])
  t.equal(stop.code, 0)
  t.equal(stop.out, 'users: shadow traffic stopped (generation 9)\n')
  t.equal(fake.seen[2].method, 'DELETE')
  t.same(fake.seen[2].body, { reason: 'seen enough' })
  const plain = await cli(fake.url, ['shadow', 'users', '--stop', '--json'])
  t.same(fake.seen[3].body, {}, 'a JSON body even without a reason')
  t.same(JSON.parse(plain.out), { active: false, generation: 9 })
})

t.test('usage mistakes exit 2 before anything is sent', async (t) => {
  const fake = await fakeAdmin(t, {})
  const cases: Array<[string[], RegExp]> = [
    [['shadow'], /usage: switchyard shadow SERVICE/],
    [['shadow', 'users', 'orders'], /usage: switchyard shadow SERVICE/],
    [['shadow', 'users', '--sample', '20%'], /--sample must be a share above 0 and at most 1, such as 0\.1 for 10% of requests, got "20%"/],
    [['shadow', 'users', '--sample', '0'], /--sample must be a share above 0/],
    [['shadow', 'users', '--sample', '1.5'], /got "1\.5"/],
    [['shadow', 'users', '--sample', ''], /got ""/],
    [['shadow', 'users', '--duration', 'soon'], /--duration must be a duration such as 30s, 5m or 500ms, got "soon"/],
    [['shadow', 'users', '--stop', '--sample', '0.1'], /--stop cannot go with --start, --sample or --duration/],
    [['shadow', 'users', '--reason', 'why'], /--reason goes with --sample, --start or --stop/],
    [['shadow', 'users', '--smaple', '0.1'], /Unknown option '--smaple'/],
  ]
  for (const [argv, message] of cases) {
    const r = await cli(fake.url, argv)
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, message, argv.join(' '))
  }
  t.equal(fake.seen.length, 0)
})

t.test('a refusal exits 1 with the server\'s message, as a process', async (t) => {
  const fake = await fakeAdmin(t, {
    [`POST ${PATH}`]: { status: 400, body: { error: 'bad_request', message: 'shadow traffic is for HTTP/1.1 services: "users" is h2c' } },
  })
  const env = { PATH: process.env.PATH, SWITCHYARD_ADMIN_URL: fake.url, SWITCHYARD_ADMIN_TOKEN: 's3cret', USER: 'tester' }
  const exit = async (argv: string[]): Promise<{ code: number | null, out: string, err: string }> => {
    const child = spawn(process.execPath, [CLI, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (c) => { out += String(c) })
    child.stderr.on('data', (c) => { err += String(c) })
    t.teardown(() => { child.kill('SIGKILL') })
    return await new Promise((resolve) => child.once('close', (code) => resolve({ code, out, err })))
  }
  const refused = await exit(['shadow', 'users', '--sample', '0.5'])
  t.equal(refused.code, 1)
  t.equal(refused.out, '')
  t.equal(refused.err, 'switchyard: bad_request: shadow traffic is for HTTP/1.1 services: "users" is h2c\n')
  const unknown = await exit(['shadow', 'nosuch'])
  t.equal(unknown.code, 1)
  t.match(unknown.err, /^switchyard: not_found: no admin endpoint GET \/v1\/services\/nosuch\/shadow\n$/)
  const bad = await exit(['shadow', 'users', '--sample', 'lots'])
  t.equal(bad.code, 2)
  t.equal(fake.seen.length, 2, 'the usage error sent nothing')
})
