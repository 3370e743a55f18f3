// The CLI's client commands run in-process against a real gateway: output,
// exit codes (0 ok, 1 refusal or unreachable, 2 usage), token and URL from the environment.

import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { run } from '../src/commands.js'
import { admin, eventually, http1, serviceYaml, startBackend, startGateway, type TestGateway } from './helpers/index.js'

interface Ran { code: number, out: string, err: string }

async function cli (argv: string[], env: NodeJS.ProcessEnv): Promise<Ran> {
  const out: string[] = []
  const err: string[] = []
  const code = await run(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env })
  return { code, out: out.join('\n'), err: err.join('\n') }
}

async function servedBy (gw: TestGateway, path: string): Promise<string> {
  const res = await http1(gw.url + path)
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${res.text}`)
  return res.json.backend
}

async function fleet (t: Test, head = ''): Promise<{ gw: TestGateway, env: NodeJS.ProcessEnv }> {
  const [ub, ug, ob, og] = await Promise.all(['users-blue', 'users-green', 'orders-blue', 'orders-green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `${head}services:
${serviceYaml('users', '/api/users', [ub], [ug])}
${serviceYaml('orders', '/api/orders', [ob], [og])}`)
  return { gw, env: { SWITCHYARD_ADMIN_URL: gw.adminUrl, USER: 'tester' } }
}

t.test('status prints a table, and the server\'s JSON with --json', async (t) => {
  const { gw, env } = await fleet(t)
  await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['orders'] })

  const table = await cli(['status'], env)
  t.equal(table.code, 0)
  t.equal(table.err, '')
  const lines = table.out.split('\n')
  t.equal(lines[0], 'generation 1')
  t.match(lines[1], /^SERVICE\s+ROUTE\s+LIVE\s+PREVIOUS\s+BLUE\s+GREEN\s+GUARD$/)
  const row = (name: string): string[] => (lines.find((l) => l.startsWith(name + ' ')) ?? '').split(/\s{2,}/)
  t.same(row('users'), ['users', '*/api/users', 'blue', '-', 'live 1/1 healthy', 'idle 1/1 healthy', '-'])
  const orders = row('orders')
  t.same(orders.slice(0, 6), ['orders', '*/api/orders', 'green', 'blue', 'idle 1/1 healthy', 'live 1/1 healthy'])
  t.match(orders[6], /^\d+s left, 0\.0% of 0 \(max 5\.0%\)$/, 'the guard window of the flip')

  const json = await cli(['status', '--json'], env)
  t.equal(json.code, 0)
  const parsed = JSON.parse(json.out)
  t.same(parsed, (await admin(gw.adminUrl, 'GET', '/v1/state')).json)
  t.equal(parsed.services.orders.live, 'green')

  // A trailing slash on the admin URL is fine.
  t.equal((await cli(['status'], { ...env, SWITCHYARD_ADMIN_URL: gw.adminUrl + '/' })).code, 0)
})

t.test('status --watch refreshes until stopped; colors only on a terminal', async (t) => {
  const { gw, env } = await fleet(t)
  for (let i = 0; i < 3; i++) await admin(gw.adminUrl, 'GET', '/v1/state')
  const out: string[] = []
  const raw: string[] = []
  let stop: (s: string) => void = () => {}
  const stopSignal = new Promise<string>((resolve) => { stop = resolve })
  const done = run(['status', '--watch', '--interval', '50'], { out: (s) => out.push(s), err: (s) => out.push(s), env, stopSignal, tty: true, write: (s) => raw.push(s) })
  await eventually(() => out.length >= 3)
  stop('SIGINT')
  t.equal(await done, 0)
  t.ok(raw.every((r) => r === '\u001b[2J\u001b[H'), 'clears the screen between refreshes')
  // eslint-disable-next-line no-control-regex -- the ANSI escape is what is checked
  t.match(out[0], /\u001b\[34;1mblue\u001b\[0m/, 'the live color in color')
  const plain = await cli(['status'], env)
  // eslint-disable-next-line no-control-regex -- the ANSI escape is what is checked
  t.notMatch(plain.out, /\u001b/, 'no escapes when not a terminal')
})

t.test('flip SERVICE --to green --reason x prints the change and records who and why', async (t) => {
  const { gw, env } = await fleet(t)
  const res = await cli(['flip', 'users', '--to', 'green', '--reason', 'release 7'], env)
  t.equal(res.code, 0)
  t.equal(res.err, '')
  const lines = res.out.split('\n')
  t.match(lines[0], /^SERVICE\s+FROM\s+TO$/)
  t.same(lines[1].split(/\s+/), ['users', 'blue', 'green'])
  t.equal(lines.at(-1), 'generation 1')
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')
  const ev = (await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.filter((e: any) => e.type !== 'drained').at(-1)
  t.match(ev, { type: 'flip', reason: 'release 7', actor: 'cli:tester', changes: [{ service: 'users', from: 'blue', to: 'green' }] })

  const again = await cli(['flip', 'users', '--to', 'green'], env)
  t.equal(again.code, 0)
  t.equal(again.out, 'no change (generation 1)')

  const all = await cli(['flip', '--json'], env)
  t.equal(all.code, 0)
  const body = JSON.parse(all.out)
  t.equal(body.generation, 2)
  t.same(body.changes.map((c: any) => `${c.service}:${c.to as string}`).sort(), ['orders:green', 'users:blue'])
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
  t.equal(await servedBy(gw, '/api/orders'), 'orders-green')
})

t.test('flip --if-generation: current goes through, stale exits 1 with the server\'s message', async (t) => {
  const { gw, env } = await fleet(t)
  const ok = await cli(['flip', 'users', '--if-generation', '0'], env)
  t.equal(ok.code, 0)
  const stale = await cli(['flip', 'orders', '--if-generation', '0'], env)
  t.equal(stale.code, 1)
  t.equal(stale.out, '')
  t.match(stale.err, /^switchyard: stale_generation: ifGeneration 0 is stale: the current generation is 1/)
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation, 1)
})

t.test('rollback reverts the last change, or the named services', async (t) => {
  const { gw, env } = await fleet(t)
  const nothing = await cli(['rollback'], env)
  t.equal(nothing.code, 1)
  t.match(nothing.err, /nothing_to_roll_back/)

  t.equal((await cli(['flip', 'users', 'orders'], env)).code, 0)
  const back = await cli(['rollback', '--reason', 'errors up'], env)
  t.equal(back.code, 0)
  t.match(back.out, /users\s+green\s+blue/)
  t.match(back.out, /orders\s+green\s+blue/)
  t.match(back.out, /generation 2$/)
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
  t.equal(await servedBy(gw, '/api/orders'), 'orders-blue')
  t.match((await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.filter((e: any) => e.type !== 'drained').at(-1), { type: 'rollback', reason: 'errors up' })

  const stale = await cli(['rollback', 'orders', '--if-generation', '1'], env)
  t.equal(stale.code, 1)
  t.match(stale.err, /stale_generation/)
  const named = await cli(['rollback', 'orders', '--json', '--if-generation', '2'], env)
  t.equal(named.code, 0)
  t.strictSame(JSON.parse(named.out), { generation: 3, changes: [{ service: 'orders', from: 'blue', to: 'green' }] })
  t.equal(await servedBy(gw, '/api/orders'), 'orders-green')
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
})

t.test('targets SERVICE COLOR URL... sets the idle color; the live color needs --force', async (t) => {
  const { gw, env } = await fleet(t)
  const [a, b] = await Promise.all([startBackend(t, 'users-green-a'), startBackend(t, 'users-green-b')])
  const res = await cli(['targets', 'users', 'green', a.url, b.url, '--reason', 'v2'], env)
  t.equal(res.code, 0)
  t.equal(res.out, `users green: ${a.url}, ${b.url}\ngeneration 1`)
  const st = (await admin(gw.adminUrl, 'GET', '/v1/state')).json
  t.same(st.services.users.environments.green.targets.map((x: any) => x.url), [a.url, b.url])
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
  await cli(['flip', 'users'], env)
  const seen = new Set([await servedBy(gw, '/api/users'), await servedBy(gw, '/api/users')])
  t.same([...seen].sort(), ['users-green-a', 'users-green-b'], 'round-robin over the new targets')

  const live = await cli(['targets', 'users', 'green', a.url], env)
  t.equal(live.code, 1)
  t.match(live.err, /^switchyard: live_color: green is the live color of users/)
  const forced = await cli(['targets', 'users', 'green', a.url, '--force', '--json'], env)
  t.equal(forced.code, 0)
  t.match(JSON.parse(forced.out), { generation: 3, service: 'users', color: 'green', targets: [a.url] })
  t.equal(await servedBy(gw, '/api/users'), 'users-green-a')
  t.equal(await servedBy(gw, '/api/users'), 'users-green-a')

  const cleared = await cli(['targets', 'users', 'blue'], env)
  t.equal(cleared.code, 0)
  t.equal(cleared.out, 'users blue: (none)\ngeneration 4')

  const badUrl = await cli(['targets', 'users', 'blue', a.url, 'not-a-url'], env)
  t.equal(badUrl.code, 1)
  t.match(badUrl.err, /bad_request: targets\[1\]/)
})

t.test('a refusal exits 1 with the server\'s message', async (t) => {
  const { gw, env } = await fleet(t)
  const unknown = await cli(['flip', 'nope'], env)
  t.equal(unknown.code, 1)
  t.equal(unknown.out, '')
  t.equal(unknown.err, 'switchyard: unknown_service: unknown service: nope')
  const targets = await cli(['targets', 'nope', 'green', 'http://127.0.0.1:1'], env)
  t.equal(targets.code, 1)
  t.match(targets.err, /unknown_service: unknown service: nope/)
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation, 0)
})

t.test('a gate refusal lists the failures', async (t) => {
  const ub = await startBackend(t, 'users-blue')
  const ug = await startBackend(t, 'users-green')
  const gw = await startGateway(t, `services:
${serviceYaml('users', '/api/users', [ub], [ug], '    gate: { minHealthy: 2 }\n')}`)
  const env = { SWITCHYARD_ADMIN_URL: gw.adminUrl }
  const refused = await cli(['flip', 'users'], env)
  t.equal(refused.code, 1)
  t.match(refused.err, /gate_failed: flip refused/)
  t.match(refused.err, /\n {2}- \{"service":"users","color":"green"/)
  const forced = await cli(['flip', 'users', '--force'], env)
  t.equal(forced.code, 0)
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
})

t.test('an unreachable admin API exits 1 with a clear message', async (t) => {
  // A port that was just free: nothing listens there.
  const probe = http.createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const port = (probe.address() as AddressInfo).port
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  const url = `http://127.0.0.1:${port}`
  for (const argv of [['status'], ['flip', 'users'], ['rollback'], ['targets', 'users', 'green', 'http://127.0.0.1:1']]) {
    const res = await cli(argv, { SWITCHYARD_ADMIN_URL: url })
    t.equal(res.code, 1, `${argv[0]}: exit 1`)
    t.match(res.err, `switchyard: cannot reach the admin API at ${url}`, `${argv[0]}: says where`)
    t.match(res.err, /ECONNREFUSED/, `${argv[0]}: says why`)
  }
})

t.test('an answer that is not JSON exits 1 and shows it', async (t) => {
  const server = http.createServer((_req, res) => {
    res.writeHead(502, { 'content-type': 'text/html' })
    res.end('<html>bad gateway</html>')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => await new Promise<void>((resolve) => server.close(() => resolve())))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const res = await cli(['status'], { SWITCHYARD_ADMIN_URL: url })
  t.equal(res.code, 1)
  t.match(res.err, `502 from ${url}/v1/state: <html>bad gateway</html>`)
})

t.test('the token comes from SWITCHYARD_ADMIN_TOKEN', async (t) => {
  const { gw, env } = await fleet(t, 'admin: { token: s3cret }\n')
  const none = await cli(['status'], env)
  t.equal(none.code, 1)
  t.match(none.err, /unauthorized/)
  const wrong = await cli(['flip', 'users'], { ...env, SWITCHYARD_ADMIN_TOKEN: 'nope' })
  t.equal(wrong.code, 1)
  t.match(wrong.err, /unauthorized/)
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')

  const ok = await cli(['status', '--json'], { ...env, SWITCHYARD_ADMIN_TOKEN: 's3cret' })
  t.equal(ok.code, 0)
  t.equal(JSON.parse(ok.out).generation, 0)
  const flip = await cli(['flip', 'users'], { ...env, SWITCHYARD_ADMIN_TOKEN: 's3cret' })
  t.equal(flip.code, 0)
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
})

t.test('bad usage exits 2 and sends nothing', async (t) => {
  const { gw, env } = await fleet(t)
  const cases: Array<{ argv: string[], err: RegExp }> = [
    { argv: ['flip', 'users', '--to', 'red'], err: /--to must be blue or green/ },
    { argv: ['explode'], err: /unknown command "explode"/ },
    { argv: ['flip', '--colour', 'green'], err: /--colour/ },
    { argv: ['status', '--verbose'], err: /--verbose/ },
    { argv: ['flip', '--to'], err: /--to/ },
    { argv: ['flip', '--if-generation', 'two'], err: /--if-generation must be a non-negative integer/ },
    { argv: ['flip', '--if-generation', '-1'], err: /if-generation/ },
    { argv: ['flip', '--if-generation', '1.5'], err: /--if-generation must be a non-negative integer/ },
    { argv: ['flip', '--if-generation', ''], err: /--if-generation must be a non-negative integer/ },
    { argv: ['rollback', '--to', 'blue'], err: /--to/ },
    { argv: ['targets', 'users'], err: /usage: switchyard targets SERVICE COLOR URL/ },
    { argv: ['targets', 'users', 'red', 'http://127.0.0.1:1'], err: /COLOR must be blue or green, got "red"/ },
    { argv: ['validate'], err: /usage: switchyard validate FILE/ },
  ]
  for (const c of cases) {
    const res = await cli(c.argv, env)
    t.equal(res.code, 2, `${c.argv.join(' ')}: exit 2`)
    t.match(res.err, c.err, `${c.argv.join(' ')}: says what is wrong`)
  }
  const st = (await admin(gw.adminUrl, 'GET', '/v1/state')).json
  t.equal(st.generation, 0, 'nothing reached the server')
  t.same((await admin(gw.adminUrl, 'GET', '/v1/events')).json.events, [])

  const bare = await cli([], env)
  t.equal(bare.code, 2)
  t.match(bare.out, /^usage: switchyard/)
  const help = await cli(['--help'], env)
  t.equal(help.code, 0)
  t.match(help.out, /flip \[SERVICE\.\.\.\]/)
})
