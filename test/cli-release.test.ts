// The `release` and `releases` commands, run as `node dist/cli.js` (build first) against a fake
// admin API that answers the shapes of DESIGN-13 section 4 and plays a release's phases over successive GETs.

import t, { type Test } from 'tap'
import http from 'node:http'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { run } from '../src/commands.js'
import { eventually } from './helpers/index.js'

// The in-process run prints clock times in this process's zone.
process.env.TZ = 'UTC'
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))

// --- a fake admin API: the one thing to swap for a real gateway -------------------------

interface Seen { method: string, path: string, body: any, headers: http.IncomingHttpHeaders }
interface Answer { status: number, body: unknown }

interface FakeAdmin {
  url: string
  seen: Seen[]
  /** What POST /v1/releases answers (a release view, or an error). */
  created: Answer
  /** The views GET /v1/releases/ID answers, one per GET, the last one repeated. */
  frames: Map<string, unknown[]>
  /** What POST /v1/releases/ID/ACTION answers, by "ID/ACTION". */
  actions: Map<string, Answer>
  /** GET /v1/releases. */
  list: unknown[]
  /** Which GETs of a release (1 for the first) answer 502 instead of a frame, as a gateway restarting behind a proxy. */
  hiccups: Set<number>
}

async function fakeAdmin (t: Test): Promise<FakeAdmin> {
  const fake: FakeAdmin = { url: '', seen: [], created: { status: 500, body: { error: 'internal', message: 'unset' } }, frames: new Map(), actions: new Map(), list: [], hiccups: new Set() }
  let gets = 0
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString()
      const path = req.url ?? ''
      const method = req.method ?? ''
      fake.seen.push({ method, path, body: raw === '' ? undefined : JSON.parse(raw), headers: req.headers })
      const reply = (a: Answer): void => {
        res.writeHead(a.status, { 'content-type': 'application/json' })
        res.end(JSON.stringify(a.body))
      }
      const one = /^\/v1\/releases\/([^/]+)$/.exec(path)
      const action = /^\/v1\/releases\/([^/]+)\/(pause|resume|promote|abort)$/.exec(path)
      if (method === 'POST' && path === '/v1/releases') return reply(fake.created)
      if (method === 'GET' && path === '/v1/releases') return reply({ status: 200, body: { releases: fake.list } })
      if (method === 'GET' && one !== null) {
        if (fake.hiccups.has(++gets)) {
          res.writeHead(502, { 'content-type': 'text/html' })
          return res.end('<html>bad gateway</html>')
        }
        const frames = fake.frames.get(decodeURIComponent(one[1]))
        if (frames === undefined) return reply({ status: 404, body: { error: 'not_found', message: `no release ${one[1]}` } })
        return reply({ status: 200, body: frames.length > 1 ? frames.shift() : frames[0] })
      }
      if (method === 'POST' && action !== null) return reply(fake.actions.get(`${action[1]}/${action[2]}`) ?? { status: 404, body: { error: 'not_found', message: 'no such release' } })
      reply({ status: 404, body: { error: 'not_found', message: `no admin endpoint ${method} ${path}` } })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return fake
}

// --- release views in the DESIGN shape --------------------------------------------------

const T0 = Date.parse('2026-11-29T12:00:00Z')
const at = (s: number): string => new Date(T0 + s * 1000).toISOString()

function view (phase: string, history: Array<[string, number, number?, number?]>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const last = history.at(-1) ?? ['deploying', 0]
  return {
    id: 'r42',
    phase,
    services: {
      users: { targets: ['http://127.0.0.1:7001', 'http://127.0.0.1:7002'], version: '1.1.0', from: 'blue', to: 'green' },
      orders: { targets: ['http://127.0.0.1:7003'], version: '1.1.0', from: 'blue', to: 'green' },
    },
    steps: [{ weight: 10, hold: 30_000 }, { weight: 50, hold: 30_000 }],
    step: -1,
    weight: 0,
    verify: { window: 60_000, maxErrorRateIncrease: 0.01, maxLatencyIncrease: 0.2, minRequests: 100 },
    timeout: 300_000,
    reason: 'release 2026.11',
    actor: 'cli:tester',
    seed: 12345,
    startedAt: at(0),
    updatedAt: at(last[1]),
    phaseStartedAt: at(last[1]),
    pausedAt: null,
    outcome: null,
    verdicts: [],
    history: history.map(([p, s, step, weight]) => ({ phase: p, at: at(s), ...(step === undefined ? {} : { step }), ...(weight === undefined ? {} : { weight }) })),
    ...extra,
  }
}

function serviceVerdict (outcome: string, errNew: number, errOld: number, p50New: number | null, p50Old: number | null, reasons: string[] = []): Record<string, unknown> {
  return {
    outcome,
    reasons,
    errors: { new: { requests: 1000, errors: Math.round(errNew * 1000), rate: errNew }, old: { requests: 9000, errors: Math.round(errOld * 9000), rate: errOld }, margin: 0.01, z: 0, p: 0.5, outcome },
    latency: { new: { samples: 1000, p50Ms: p50New, p99Ms: p50New === null ? null : p50New * 4 }, old: { samples: 9000, p50Ms: p50Old, p99Ms: p50Old === null ? null : p50Old * 4 }, margin: 0.2, u: 0, z: 0, p: 0.5, outcome },
  }
}

function verdict (s: number, step: number, weight: number, final: boolean, users: Record<string, unknown>, orders: Record<string, unknown>): Record<string, unknown> {
  return { at: at(s), phase: 'shifting', step, weight, final, pass: users.outcome !== 'fail' && orders.outcome !== 'fail', services: { users, orders } }
}

const PASS_USERS = serviceVerdict('pass', 0.001, 0.002, 21, 20)
const PASS_ORDERS = serviceVerdict('pass', 0, 0.0005, 8.5, 8.25)

/** A release that goes the whole way: deploying ... done, with a verdict per step (and an interim look in between). */
function doneScript (): unknown[] {
  const h1: Array<[string, number, number?, number?]> = [['deploying', 0]]
  const h2 = [...h1, ['warming', 1], ['testing', 2]] as typeof h1
  const h3 = [...h2, ['shifting', 3, 0, 10]] as typeof h1
  const h4 = [...h3, ['shifting', 33, 1, 50]] as typeof h1
  const h5 = [...h4, ['verifying', 63, undefined, 100], ['draining', 124], ['done', 125]] as typeof h1
  const v1 = verdict(10, 0, 10, false, PASS_USERS, PASS_ORDERS)
  const v2 = verdict(32.9, 0, 10, true, PASS_USERS, PASS_ORDERS)
  const v3 = verdict(62.9, 1, 50, true, PASS_USERS, PASS_ORDERS)
  const v4 = { ...verdict(123.9, -1, 100, true, PASS_USERS, PASS_ORDERS), phase: 'verifying' }
  return [
    view('deploying', h1),
    view('testing', h2),
    view('shifting', h3, { step: 0, weight: 10, verdicts: [v1] }),
    view('shifting', h4, { step: 1, weight: 50, verdicts: [v1, v2] }),
    view('done', h5, { step: 1, weight: 100, verdicts: [v1, v2, v3, v4], outcome: null }),
  ]
}

const DONE_LINES = [
  '12:00:00 deploying users 1.1.0 -> green, orders 1.1.0 -> green',
  '12:00:01 warming: waiting for green to be healthy (up to 5m)',
  '12:00:02 testing: smoke checks',
  '12:00:03 shifting step 1/2: 10% -> green',
  '12:00:32 verdict users: pass (errors 0.1% vs 0.2%, p50 21ms vs 20ms, p99 84ms vs 80ms)',
  '12:00:32 verdict orders: pass (errors 0.0% vs 0.1%, p50 8.5ms vs 8.3ms, p99 34ms vs 33ms)',
  '12:00:33 shifting step 2/2: 50% -> green',
  '12:01:02 verdict users: pass (errors 0.1% vs 0.2%, p50 21ms vs 20ms, p99 84ms vs 80ms)',
  '12:01:02 verdict orders: pass (errors 0.0% vs 0.1%, p50 8.5ms vs 8.3ms, p99 34ms vs 33ms)',
  '12:01:03 verifying: 100% on green for 1m',
  '12:02:03 verdict users: pass (errors 0.1% vs 0.2%, p50 21ms vs 20ms, p99 84ms vs 80ms)',
  '12:02:03 verdict orders: pass (errors 0.0% vs 0.1%, p50 8.5ms vs 8.3ms, p99 34ms vs 33ms)',
  '12:02:04 draining blue',
  '12:02:05 done',
  'release r42 done after 2m5s',
]

// --- the CLI as a process -----------------------------------------------------------------

interface Ran { code: number | null, out: string, err: string }

interface Running { out: () => string, err: () => string, exit: Promise<Ran>, kill: (sig: NodeJS.Signals) => void }

function start (t: Test, fake: FakeAdmin, argv: string[]): Running {
  // TZ fixes the clock the phase lines print; the token shows it is sent.
  const env = { PATH: process.env.PATH, SWITCHYARD_ADMIN_URL: fake.url, SWITCHYARD_ADMIN_TOKEN: 's3cret', USER: 'tester', TZ: 'UTC' }
  const child = spawn(process.execPath, [CLI, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (c) => { out += String(c) })
  child.stderr.on('data', (c) => { err += String(c) })
  const exit = new Promise<Ran>((resolve) => child.once('close', (code) => resolve({ code, out, err })))
  t.teardown(() => { child.kill('SIGKILL') })
  return { out: () => out, err: () => err, exit, kill: (sig) => child.kill(sig) }
}

async function cli (t: Test, fake: FakeAdmin, argv: string[]): Promise<Ran> {
  return await start(t, fake, argv).exit
}

const CREATE = ['release', 'users=http://127.0.0.1:7001,http://127.0.0.1:7002', 'orders=http://127.0.0.1:7003', '--version', '1.1.0',
  '--steps', '10:30s,50:30s', '--verify', '60s', '--timeout', '5m', '--reason', 'release 2026.11', '--if-generation', '41']

t.test('release sends the SPEC body; without --wait it prints the id and phase and exits 0', async (t) => {
  const fake = await fakeAdmin(t)
  fake.created = { status: 201, body: doneScript()[0] }
  const res = await cli(t, fake, CREATE)
  t.equal(res.code, 0)
  t.equal(res.err, '')
  const lines = res.out.trimEnd().split('\n')
  t.equal(lines[0], 'release r42: deploying')
  t.match(lines[1], /^ {2}users\s+blue -> green\s+1\.1\.0\s+http:\/\/127\.0\.0\.1:7001, http:\/\/127\.0\.0\.1:7002$/)
  t.equal(lines.at(-1), 'follow it: switchyard release show r42 --wait')
  t.equal(fake.seen.length, 1, 'one call, no following')
  const [post] = fake.seen
  t.equal(post.method, 'POST')
  t.equal(post.path, '/v1/releases')
  t.equal(post.headers['content-type'], 'application/json')
  t.equal(post.headers.authorization, 'Bearer s3cret')
  t.equal(post.headers['x-switchyard-actor'], 'cli:tester')
  t.strictSame(post.body, {
    services: {
      users: { targets: ['http://127.0.0.1:7001', 'http://127.0.0.1:7002'], version: '1.1.0' },
      orders: { targets: ['http://127.0.0.1:7003'], version: '1.1.0' },
    },
    steps: [{ weight: 10, hold: '30s' }, { weight: 50, hold: '30s' }],
    verify: { window: '60s' },
    timeout: '5m',
    reason: 'release 2026.11',
    ifGeneration: 41,
  })
})

t.test('release sends only what the command line gives; --version NAME=V per service', async (t) => {
  const fake = await fakeAdmin(t)
  fake.created = { status: 201, body: doneScript()[0] }
  t.equal((await cli(t, fake, ['release', 'users=https://users.internal:8443'])).code, 0)
  t.strictSame(fake.seen[0].body, { services: { users: { targets: ['https://users.internal:8443'] } } }, 'all at once: no steps, the server\'s defaults')
  t.equal((await cli(t, fake, ['release', 'users=http://a:1', 'orders=http://b:2', '--version', 'users=1.1.0,orders=2.4.0'])).code, 0)
  t.strictSame(fake.seen[1].body, { services: { users: { targets: ['http://a:1'], version: '1.1.0' }, orders: { targets: ['http://b:2'], version: '2.4.0' } } })
  const json = await cli(t, fake, ['release', 'users=http://a:1', '--json'])
  t.equal(json.code, 0)
  t.strictSame(JSON.parse(json.out), doneScript()[0], '--json prints the server\'s answer')
})

t.test('release --wait prints each phase and final verdict as it happens and exits 0 on done', async (t) => {
  const fake = await fakeAdmin(t)
  const script = doneScript()
  fake.created = { status: 201, body: script.shift() }
  fake.frames.set('r42', script)
  const res = await cli(t, fake, [...CREATE, '--wait'])
  t.equal(res.code, 0, 'done: exit 0')
  t.equal(res.err, '')
  t.strictSame(res.out.trimEnd().split('\n'), DONE_LINES)
  t.notMatch(res.out, /12:00:10/, 'an interim look that passed is not a line of its own')
  // eslint-disable-next-line no-control-regex -- the ANSI escape is what is checked
  t.notMatch(res.out, /\u001b/, 'no live lines or escapes when stdout is not a terminal')
  const gets = fake.seen.filter((s) => s.method === 'GET')
  t.equal(gets.length, 4, 'one GET per view until the release ended')
  t.ok(gets.every((g) => g.path === '/v1/releases/r42' && g.headers.authorization === 'Bearer s3cret'))
})

t.test('release --wait exits 3 on reverted, with the failing verdict and the reason', async (t) => {
  const fake = await fakeAdmin(t)
  const failing = serviceVerdict('fail', 0.052, 0.001, 25, 20, ['error rate 5.2% vs 0.1% (+5.1 pp > 1.0 pp, p=0.00002)'])
  const h: Array<[string, number, number?, number?]> = [['deploying', 0], ['warming', 1], ['testing', 2], ['shifting', 3, 0, 10]]
  const outcome = 'users: error rate 5.2% vs 0.1% (+5.1 pp > 1.0 pp, p=0.00002)'
  fake.created = { status: 201, body: view('deploying', [['deploying', 0]]) }
  fake.frames.set('r42', [
    view('shifting', h, { step: 0, weight: 10 }),
    view('reverted', [...h, ['reverted', 8]], { step: 0, weight: 0, outcome, verdicts: [verdict(7.5, 0, 10, false, failing, PASS_ORDERS)] }),
  ])
  const res = await cli(t, fake, [...CREATE, '--wait'])
  t.equal(res.code, 3, 'reverted: exit 3')
  const lines = res.out.trimEnd().split('\n')
  t.strictSame(lines.slice(-4), [
    '12:00:07 verdict users: fail (errors 5.2% vs 0.1%, p50 25ms vs 20ms, p99 100ms vs 80ms): error rate 5.2% vs 0.1% (+5.1 pp > 1.0 pp, p=0.00002)',
    '12:00:07 verdict orders: pass (errors 0.0% vs 0.1%, p50 8.5ms vs 8.3ms, p99 34ms vs 33ms)',
    '12:00:08 reverted',
    `release r42 reverted after 8s: ${outcome}`,
  ], 'an interim look that failed is printed')
})

t.test('release --wait exits 4 on aborted and on failed', async (t) => {
  for (const [phase, outcome] of [['aborted', 'aborted by cli:alice'], ['failed', 'green of users was not healthy within 5m']]) {
    const fake = await fakeAdmin(t)
    fake.created = { status: 201, body: view('deploying', [['deploying', 0]]) }
    fake.frames.set('r42', [view('warming', [['deploying', 0], ['warming', 1]]), view(phase, [['deploying', 0], ['warming', 1], [phase, 301]], { outcome })])
    const res = await cli(t, fake, ['release', 'users=http://a:1', 'orders=http://b:2', '--wait'])
    t.equal(res.code, 4, `${phase}: exit 4`)
    t.strictSame(res.out.trimEnd().split('\n').slice(-3), [
      '12:00:01 warming: waiting for green to be healthy (up to 5m)',
      `12:05:01 ${phase}`,
      `release r42 ${phase} after 5m1s: ${outcome}`,
    ])
  }
})

t.test('--wait keeps following through a gateway that answers 502 for a moment; pauses and resumes are lines', async (t) => {
  const fake = await fakeAdmin(t)
  const h: Array<[string, number, number?, number?]> = [['deploying', 0], ['warming', 1], ['testing', 2], ['shifting', 3, 0, 10]]
  fake.frames.set('r42', [
    view('shifting', h, { step: 0, weight: 10, pausedAt: at(20) }),
    view('shifting', h, { step: 0, weight: 10, pausedAt: null, updatedAt: at(50) }),
    view('aborted', [...h, ['aborted', 60]], { outcome: 'aborted by cli:alice' }),
  ])
  fake.actions.set('r42/pause', { status: 200, body: view('shifting', h, { step: 0, weight: 10, pausedAt: at(20) }) })
  const paused = await cli(t, fake, ['release', 'pause', 'r42'])
  t.equal(paused.code, 0)
  t.equal(paused.out, 'release r42: shifting, step 1/2 at 10% (paused)\n')
  t.strictSame(fake.seen.map((s) => `${s.method} ${s.path}`), ['POST /v1/releases/r42/pause'])

  fake.hiccups = new Set([2, 3])
  const res = await cli(t, fake, ['release', 'show', 'r42', '--wait'])
  t.equal(res.code, 4)
  t.strictSame(res.out.trimEnd().split('\n').slice(-5), [
    '12:00:03 shifting step 1/2: 10% -> green',
    '12:00:20 paused (shifting, step 1/2 at 10%)',
    '12:00:50 resumed',
    '12:01:00 aborted',
    'release r42 aborted after 1m: aborted by cli:alice',
  ])
  t.equal(fake.seen.filter((s) => s.method === 'GET').length, 5, 'the first view, two 502s, then the other two')
})

t.test('Ctrl-C while waiting stops following, not the release: exit 130', async (t) => {
  const fake = await fakeAdmin(t)
  const h: Array<[string, number, number?, number?]> = [['deploying', 0], ['warming', 1]]
  fake.frames.set('r42', [view('warming', h)])
  const p = start(t, fake, ['release', 'show', 'r42', '--wait'])
  await eventually(() => p.out().includes('warming'))
  await eventually(() => fake.seen.length >= 2, { timeout: 3000 })
  p.kill('SIGINT')
  const res = await p.exit
  t.equal(res.code, 130)
  t.match(res.err, 'stopped following r42; the release goes on (switchyard release show r42, or abort it: switchyard release abort r42)')
  t.notOk(fake.seen.some((s) => s.method === 'POST'), 'nothing was aborted')
})

t.test('on a terminal, a live line per service under the phase lines, redrawn in place', async (t) => {
  const fake = await fakeAdmin(t)
  const h: Array<[string, number, number?, number?]> = [['deploying', 0], ['warming', 1], ['testing', 2], ['shifting', 3, 0, 10]]
  const interim = verdict(10, 0, 10, false, PASS_USERS, PASS_ORDERS)
  fake.frames.set('r42', [
    view('shifting', h, { step: 0, weight: 10 }),
    view('shifting', h, { step: 0, weight: 10, verdicts: [interim] }),
    view('done', [...h, ['done', 40]], { weight: 100 }),
  ])
  // In process: a pipe is never a TTY, so the terminal is the Io the CLI is handed.
  const screen: string[] = []
  const code = await run(['release', 'show', 'r42', '--wait'], {
    out: (s) => screen.push(s + '\n'), err: (s) => screen.push(`ERR ${s}\n`), write: (s) => screen.push(s), tty: true, env: { SWITCHYARD_ADMIN_URL: fake.url, TZ: 'UTC' },
  })
  t.equal(code, 0)
  const text = screen.join('')
  t.match(text, /users\s+10% -> green\s+no verdict yet/, 'before any verdict')
  t.match(text, /users\s+10% -> green\s+new 1000 req, 1 err\s+old 9000 req, 18 err\s+pass\n/, 'the counts of the last look, interim or not')
  t.match(text, /orders\s+10% -> green\s+new 1000 req, 0 err\s+old 9000 req, 5 err\s+pass\n/)
  t.ok(screen.includes('\u001b[2F\u001b[J'), 'the two live lines are taken back before anything else is written')
  t.notMatch(text, /verdict users/, 'an interim pass only changes the live line')
  t.match(screen.at(-1), /^release r42 done after 40s\n$/, 'the live lines are gone at the end')
  t.equal(screen.at(-2), '12:00:40 done\n')
})

t.test('releases: a table, newest first; show prints the release', async (t) => {
  const fake = await fakeAdmin(t)
  const running = view('shifting', [['deploying', 0], ['shifting', 3, 0, 10]], { step: 0, weight: 10, pausedAt: at(5), verdicts: [verdict(10, 0, 10, true, PASS_USERS, PASS_ORDERS)] })
  const old = { ...view('reverted', [['deploying', -3600], ['reverted', -3500]], { outcome: 'orders: p99 latency up 40%' }), id: 'r40', startedAt: at(-3600), services: { orders: { targets: ['http://x:1'], version: null, from: 'green', to: 'blue' } }, weight: 0 }
  fake.list = [running, old]
  const res = await cli(t, fake, ['releases'])
  t.equal(res.code, 0)
  const rows = res.out.trimEnd().split('\n').map((l) => l.split(/\s{2,}/))
  t.strictSame(rows, [
    ['ID', 'PHASE', 'SERVICES', 'WEIGHT', 'STARTED', 'OUTCOME'],
    ['r42', 'shifting (paused)', 'users,orders', '10%', '2026-11-29 12:00:00', '-'],
    ['r40', 'reverted', 'orders', '0%', '2026-11-29 11:00:00', 'orders: p99 latency up 40%'],
  ])
  const json = await cli(t, fake, ['releases', '--json'])
  t.strictSame(JSON.parse(json.out), { releases: [running, old] })
  fake.list = []
  t.equal((await cli(t, fake, ['releases'])).out, 'no releases\n')

  fake.frames.set('r42', [running])
  const show = await cli(t, fake, ['release', 'show', 'r42'])
  t.equal(show.code, 0)
  const lines = show.out.trimEnd().split('\n')
  t.equal(lines[0], 'release r42: shifting, step 1/2 at 10% (paused)')
  t.equal(lines[1], 'started 2026-11-29 12:00:00 by cli:tester: release 2026.11')
  t.equal(lines[2], 'steps 10% for 30s, 50% for 30s; weight now 10%; verify 1m; timeout 5m')
  t.match(lines[4], /^ {2}users\s+blue -> green\s+1\.1\.0\s+http:\/\/127\.0\.0\.1:7001, http:\/\/127\.0\.0\.1:7002\s+pass \(errors 0\.1% vs 0\.2%/)
  t.strictSame(lines.slice(-3), ['history', '  12:00:00 deploying users 1.1.0 -> green, orders 1.1.0 -> green', '  12:00:03 shifting step 1/2: 10% -> green'])
  const missing = await cli(t, fake, ['release', 'show', 'r9'])
  t.equal(missing.code, 1)
  t.equal(missing.err, 'switchyard: not_found: no release r9\n')
})

t.test('actions POST to /v1/releases/ID/ACTION; promote --wait follows to the end', async (t) => {
  const fake = await fakeAdmin(t)
  const h: Array<[string, number, number?, number?]> = [['deploying', 0], ['shifting', 3, 0, 10]]
  fake.actions.set('r42/resume', { status: 200, body: view('shifting', h, { step: 0, weight: 10 }) })
  fake.actions.set('r42/abort', { status: 200, body: view('aborted', [...h, ['aborted', 9]], { outcome: 'aborted by cli:tester' }) })
  fake.actions.set('r42/promote', { status: 200, body: view('verifying', [...h, ['verifying', 9, undefined, 100]], { weight: 100 }) })
  fake.frames.set('r42', [view('done', [...h, ['verifying', 9, undefined, 100], ['draining', 69], ['done', 70]], { weight: 100 })])
  t.equal((await cli(t, fake, ['release', 'resume', 'r42'])).out, 'release r42: shifting, step 1/2 at 10%\n')
  t.equal((await cli(t, fake, ['release', 'abort', 'r42'])).out, 'release r42: aborted: aborted by cli:tester\n')
  const promoted = await cli(t, fake, ['release', 'promote', 'r42', '--wait'])
  t.equal(promoted.code, 0)
  t.strictSame(promoted.out.trimEnd().split('\n').slice(-4), ['12:00:09 verifying: 100% on green for 1m', '12:01:09 draining blue', '12:01:10 done', 'release r42 done after 1m10s'])
  t.strictSame(fake.seen.map((s) => `${s.method} ${s.path}`), ['POST /v1/releases/r42/resume', 'POST /v1/releases/r42/abort', 'POST /v1/releases/r42/promote', 'GET /v1/releases/r42'])

  fake.actions.set('r42/promote', { status: 409, body: { error: 'release_state', message: 'r42 is warming: promote needs shifting or verifying' } })
  const refused = await cli(t, fake, ['release', 'promote', 'r42'])
  t.equal(refused.code, 1)
  t.equal(refused.out, '')
  t.equal(refused.err, 'switchyard: release_state: r42 is warming: promote needs shifting or verifying\n')
})

t.test('server refusals of a new release exit 1 with the server\'s message', async (t) => {
  const fake = await fakeAdmin(t)
  fake.created = { status: 409, body: { error: 'release_in_progress', message: 'release r41 is running for users', release: 'r41', services: ['users'] } }
  const busy = await cli(t, fake, ['release', 'users=http://a:1', '--wait'])
  t.equal(busy.code, 1)
  t.equal(busy.err, 'switchyard: release_in_progress: release r41 is running for users\n  see: switchyard release show r41\n')
  t.equal(fake.seen.length, 1, '--wait follows nothing after a refusal')
  fake.created = { status: 400, body: { error: 'bad_request', message: 'steps[1].weight must be above steps[0].weight', field: 'steps[1].weight' } }
  const bad = await cli(t, fake, ['release', 'users=http://a:1', '--steps', '50:1s,10:1s'])
  t.equal(bad.code, 1)
  t.equal(bad.err, 'switchyard: bad_request: steps[1].weight must be above steps[0].weight\n')
})

t.test('bad arguments exit 2, say what is wrong, and send nothing', async (t) => {
  const fake = await fakeAdmin(t)
  const cases: Array<{ argv: string[], err: string | RegExp }> = [
    { argv: ['release'], err: 'a release names at least one service as NAME=URL[,URL]' },
    { argv: ['release', 'users=http://a:1', 'users=http://b:1'], err: 'service "users" is named twice' },
    { argv: ['release', 'users='], err: 'users= has no URLs' },
    { argv: ['release', 'users=http://a:1,'], err: 'users: an empty URL in "http://a:1," (a stray comma?)' },
    { argv: ['release', 'users'], err: '"users" is not NAME=URL[,URL]' },
    { argv: ['release', '=http://a:1'], err: '"=http://a:1" is not NAME=URL[,URL]' },
    { argv: ['release', 'users=ftp://a:1'], err: 'users: target "ftp://a:1" must be http:// or https://' },
    { argv: ['release', 'users=http://a:1/v2'], err: 'users: target "http://a:1/v2" must be an origin without a path' },
    { argv: ['release', 'users=http://a:1', '--steps', '10'], err: '--steps: "10" is not WEIGHT:DURATION (such as 10:30s)' },
    { argv: ['release', 'users=http://a:1', '--steps', '10:30s,50'], err: '--steps: "50" is not WEIGHT:DURATION' },
    { argv: ['release', 'users=http://a:1', '--steps', '10:30x'], err: '--steps: "10:30x" is not WEIGHT:DURATION' },
    { argv: ['release', 'users=http://a:1', '--steps', 'ten:30s'], err: '--steps: "ten:30s" is not WEIGHT:DURATION' },
    { argv: ['release', 'users=http://a:1', '--steps', '100:30s'], err: '--steps: the weight in "100:30s" must be a percent from 1 to 99' },
    { argv: ['release', 'users=http://a:1', '--steps', '0:30s'], err: '--steps: the weight in "0:30s" must be a percent from 1 to 99' },
    { argv: ['release', 'users=http://a:1', '--steps', ''], err: '--steps: "" is not WEIGHT:DURATION' },
    { argv: ['release', 'users=http://a:1', '--verify', 'soon'], err: '--verify must be a duration such as 30s, 5m or 500ms, got "soon"' },
    { argv: ['release', 'users=http://a:1', '--timeout', '5'], err: '--timeout must be a duration' },
    { argv: ['release', 'users=http://a:1', '--if-generation', 'x'], err: '--if-generation must be a non-negative integer' },
    { argv: ['release', 'users=http://a:1', '--version', 'orders=1'], err: '--version names "orders", which is not in this release' },
    { argv: ['release', 'users=http://a:1', '--version', 'users=1,users=2'], err: '--version names "users" twice' },
    { argv: ['release', 'users=http://a:1', '--version', 'users='], err: '--version: "users=" is not NAME=VERSION' },
    { argv: ['release', 'users=http://a:1', '--version', ''], err: '--version must not be empty' },
    { argv: ['release', 'users=http://a:1', '--color', 'green'], err: /Unknown option '--color'/ },
    { argv: ['release', 'show'], err: 'usage: switchyard release show ID [--wait]' },
    { argv: ['release', 'abort', 'r1', 'r2'], err: 'usage: switchyard release abort ID [--wait]' },
    { argv: ['release', 'pause', 'r1', '--steps', '10:1s'], err: /Unknown option '--steps'/ },
    { argv: ['releases', 'r42'], err: 'usage: switchyard releases [--json]' },
  ]
  // Six processes at a time: each is a cold node start.
  const results: Ran[] = []
  for (let i = 0; i < cases.length; i += 6) results.push(...await Promise.all(cases.slice(i, i + 6).map(async (c) => await cli(t, fake, c.argv))))
  for (const [i, c] of cases.entries()) {
    const res = results[i]
    const name = c.argv.join(' ')
    t.equal(res.code, 2, `${name}: exit 2`)
    t.match(res.err, typeof c.err === 'string' ? `switchyard: ${c.err}` : c.err, `${name}: says what is wrong`)
    t.equal(res.out, '', `${name}: prints nothing else`)
  }
  t.strictSame(fake.seen, [], 'nothing reached the server')
  const help = await cli(t, fake, ['--help'])
  t.match(help.out, /release NAME=URL\[,URL\]\.\.\./)
  t.match(help.out, /release show\|pause\|resume\|promote\|abort ID \[--wait\]/)
})
