// The CLI and the fleet: `status` shows the store and the replicas a server
// reports (a fake admin API answers fleet-shaped JSON), and `state export` /
// `state import` move a store's routing state without a running gateway.

import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { run } from '../src/commands.js'
import { FileStateStore, type PersistedState } from '../src/state/file-store.js'
import { configFile, tempDir } from './helpers/index.js'
import { startEtcd } from './helpers/etcd.js'

interface Ran { code: number, out: string, err: string }

async function cli (argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  const out: string[] = []
  const err: string[] = []
  const code = await run(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env })
  return { code, out: out.join('\n'), err: err.join('\n') }
}

// --- status --------------------------------------------------------------------

const env = (state: string): unknown => ({ state, inflight: 0, websockets: 0, targets: [{ url: 'http://127.0.0.1:1', healthy: true }] })
const SERVICES = { users: { live: 'blue', previous: null, route: { pathPrefix: '/api/users' }, guard: null, environments: { blue: env('live'), green: env('idle') } } }
const ETCD_STORE = { kind: 'etcd', connected: true, revision: 42, where: 'etcd http://127.0.0.1:2379 prefix /switchyard/prod' }
const FLEET = {
  id: 'gw-b',
  leader: 'gw-a',
  converged: false,
  replicas: [
    { id: 'gw-a', admin: 'http://10.0.0.5:9901', generation: 7, revision: 42, ageMs: 400, leader: true },
    { id: 'gw-b', admin: null, generation: 7, revision: 42, ageMs: 1200, leader: false },
    { id: 'gw-c', admin: 'http://10.0.0.7:9901', generation: 6, revision: 40, ageMs: 3100, leader: false },
  ],
}

/** An admin API that answers GET /v1/state with `body`; returns the env pointing the CLI at it. */
async function fakeAdmin (t: Test, body: Record<string, unknown>): Promise<NodeJS.ProcessEnv> {
  const server = http.createServer((req, res) => {
    const found = req.method === 'GET' && req.url === '/v1/state'
    res.writeHead(found ? 200 : 404, { 'content-type': 'application/json' })
    res.end(JSON.stringify(found ? body : { error: 'not_found', message: 'not found' }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => await new Promise<void>((resolve) => server.close(() => resolve())))
  return { SWITCHYARD_ADMIN_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

/** What status printed after the services table (and its blank line). */
function afterServices (t: Test, out: string): string[] {
  const lines = out.split('\n')
  t.match(lines[0], /^generation \d+$/)
  t.match(lines[1], /^SERVICE\s+ROUTE/)
  t.match(lines[2], /^users\s/)
  return lines.slice(3)
}

t.test('status of an etcd fleet: the store line, then each replica with this one starred, the lagging one marked, the leader', async (t) => {
  const res = await cli(['status'], await fakeAdmin(t, { generation: 7, services: SERVICES, store: ETCD_STORE, fleet: FLEET }))
  t.equal(res.code, 0)
  t.equal(res.err, '')
  t.strictSame(afterServices(t, res.out), [
    '',
    'store etcd http://127.0.0.1:2379 prefix /switchyard/prod  connected  revision 42',
    'fleet 3 replicas, leader gw-a, not converged: gw-c lagging (* this replica)',
    '  REPLICA  ADMIN                 GENERATION  HEARTBEAT  LEADER',
    '  gw-a     http://10.0.0.5:9901  7           0.4s ago   leader',
    '* gw-b     -                     7           1.2s ago   -',
    '  gw-c     http://10.0.0.7:9901  6 lagging   3.1s ago   -',
  ])
})

t.test('status with etcd unreachable says the gateway serves on the last state and refuses changes', async (t) => {
  const replicas = FLEET.replicas.map((r) => ({ ...r, generation: 7, leader: false, ageMs: 95_000 }))
  const body = { generation: 7, services: SERVICES, store: { ...ETCD_STORE, connected: false }, fleet: { ...FLEET, leader: null, converged: true, replicas } }
  const res = await cli(['status'], await fakeAdmin(t, body))
  t.equal(res.code, 0)
  const lines = afterServices(t, res.out)
  t.equal(lines[1], 'store etcd http://127.0.0.1:2379 prefix /switchyard/prod  UNREACHABLE (serving on the last state, revision 42; changes are refused)')
  t.equal(lines[2], 'fleet 3 replicas, leader none, converged (* this replica)')
  t.notMatch(res.out, /lagging/, 'no replica is behind')
  t.match(lines[4], /^ {2}gw-a\s+http:\/\/10\.0\.0\.5:9901\s+7\s+1m ago\s+-$/)

  // eslint-disable-next-line no-control-regex -- the ANSI escape is what is checked
  const painted = /\u001b\[31mUNREACHABLE\u001b\[0m/
  const out: string[] = []
  t.equal(await run(['status'], { out: (s) => out.push(s), err: (s) => out.push(s), env: await fakeAdmin(t, body), tty: true }), 0)
  t.match(out.join('\n'), painted, 'in red on a terminal')
})

t.test('status of a file store prints one short store line; --json and an older server are as before', async (t) => {
  const fileStore = { kind: 'file', connected: true, revision: 7, where: 'state file /var/lib/switchyard/state.json' }
  const lone = { id: 'host:1', leader: 'host:1', converged: true, replicas: [{ id: 'host:1', admin: null, generation: 7, revision: 7, ageMs: 0, leader: true }] }
  const body = { generation: 7, services: SERVICES, store: fileStore, fleet: lone }
  const res = await cli(['status'], await fakeAdmin(t, body))
  t.equal(res.code, 0)
  t.strictSame(afterServices(t, res.out), ['', 'store state file /var/lib/switchyard/state.json'])

  const json = await cli(['status', '--json'], await fakeAdmin(t, body))
  t.strictSame(JSON.parse(json.out), body, '--json passes the server\'s answer through')

  const old = await cli(['status'], await fakeAdmin(t, { generation: 7, services: SERVICES }))
  t.equal(old.code, 0)
  t.strictSame(afterServices(t, old.out), [], 'nothing after the services without a store field')
})

// --- state export / import -------------------------------------------------------

const SERVICES_YAML = `services:
  users:
    match: { pathPrefix: /api/users }
    blue: { targets: [http://127.0.0.1:1] }
    green: { targets: [http://127.0.0.1:2] }
  orders:
    match: { pathPrefix: /api/orders }
    blue: { targets: [http://127.0.0.1:3] }
    green: { targets: [http://127.0.0.1:4] }
`

/** A config with a file store in a temp folder of its own. */
function fileStoreConfig (t: Test): { config: string, stateFile: string } {
  const config = configFile(t, `state: { file: state.json }\n${SERVICES_YAML}`)
  return { config, stateFile: join(config, '..', 'state.json') }
}

const SAVED: PersistedState = {
  generation: 5,
  services: {
    users: { live: 'green', previous: 'blue', targets: { green: ['http://127.0.0.1:9'] } },
    orders: { live: 'blue', previous: null, targets: {} },
  },
  lastChange: ['users'],
  // A rollback at generation 3 ended the pins of the generations before it.
  pinFloor: 3,
}

t.test('state export, change, import into another file store: it lands whole, one generation above the target\'s', async (t) => {
  const source = fileStoreConfig(t)
  await new FileStateStore(source.stateFile).save(SAVED)

  const exported = await cli(['state', 'export', '--config', source.config])
  t.equal(exported.code, 0)
  t.equal(exported.err, '')
  const doc = JSON.parse(exported.out)
  t.strictSame(doc, { version: 1, ...SAVED })
  t.equal(exported.out, JSON.stringify(doc, null, 2), 'pretty JSON')

  const outFile = join(tempDir(t), 'exported.json')
  const toFile = await cli(['state', 'export', '--config', source.config, '--out', outFile])
  t.equal(toFile.code, 0)
  t.equal(toFile.out, `exported generation 5 from state file ${source.stateFile} to ${outFile}`)
  t.equal(readFileSync(outFile, 'utf8'), exported.out + '\n', '--out writes the same document, with a newline')

  // Changed on the way: orders goes green too.
  doc.services.orders = { live: 'green', previous: 'blue', targets: {} }
  writeFileSync(outFile, JSON.stringify(doc))
  const target = fileStoreConfig(t)
  const targetStore = new FileStateStore(target.stateFile)
  await targetStore.save({ ...SAVED, generation: 9 })

  const imported = await cli(['state', 'import', outFile, '--config', target.config, '--reason', 'move to the new host'])
  t.equal(imported.code, 0, imported.err)
  const landed = await targetStore.load()
  t.ok(landed !== undefined && landed.generation > 9, `lands above the target's generation 9 (at ${String(landed?.generation)})`)
  t.strictSame(landed?.services, doc.services, 'the services as imported')
  t.strictSame(landed?.lastChange, ['users'])
  t.equal(imported.out, `imported generation ${String(landed?.generation)} into state file ${target.stateFile} (it was at generation 9)`)

  // And back out again: the same document, at its new generation.
  const again = await cli(['state', 'export', '--config', target.config])
  t.strictSame(JSON.parse(again.out), { ...doc, generation: landed?.generation })
  t.strictSame(await new FileStateStore(source.stateFile).load(), SAVED, 'the source is untouched')
})

t.test('state import into an empty file store; state export of an empty one exits 1', async (t) => {
  const empty = fileStoreConfig(t)
  const none = await cli(['state', 'export', '--config', empty.config])
  t.equal(none.code, 1)
  t.equal(none.out, '')
  t.equal(none.err, `switchyard: state file ${empty.stateFile} holds no state yet: nothing to export`)

  const file = join(tempDir(t), 'in.json')
  writeFileSync(file, JSON.stringify({ version: 1, ...SAVED }))
  const res = await cli(['state', 'import', file, '--config', empty.config])
  t.equal(res.code, 0, res.err)
  t.match(res.out, /^imported generation \d+ into state file .* \(it held no readable state\)$/)
  t.strictSame((await new FileStateStore(empty.stateFile).load())?.services, SAVED.services)
})

t.test('state import refuses an invalid file and services the config does not know, naming them; --force takes them', async (t) => {
  const target = fileStoreConfig(t)
  const dir = tempDir(t)
  const write = (name: string, body: unknown): string => {
    const file = join(dir, name)
    writeFileSync(file, typeof body === 'string' ? body : JSON.stringify(body))
    return file
  }
  const cases: Array<{ file: string, err: RegExp }> = [
    { file: write('torn.json', '{"version": 1, "gener'), err: /torn\.json: not valid JSON/ },
    { file: write('v2.json', { ...SAVED, version: 2 }), err: /v2\.json: unsupported version 2/ },
    { file: write('red.json', { version: 1, ...SAVED, services: { users: { live: 'red' } } }), err: /red\.json: services\.users\.live must be blue or green/ },
    { file: write('url.json', { version: 1, ...SAVED, services: { users: { live: 'blue', targets: { blue: ['nope'] } } } }), err: /services\.users\.targets\.blue must be a list of URLs/ },
    { file: join(dir, 'missing.json'), err: /cannot read .*missing\.json/ },
  ]
  for (const c of cases) {
    const res = await cli(['state', 'import', c.file, '--config', target.config])
    t.equal(res.code, 1, `${c.file}: exit 1`)
    t.match(res.err, c.err, `${c.file}: names the problem`)
  }

  const ghosts = write('ghosts.json', { version: 1, ...SAVED, services: { ...SAVED.services, billing: { live: 'blue', previous: null }, search: { live: 'green', previous: null } } })
  const refused = await cli(['state', 'import', ghosts, '--config', target.config])
  t.equal(refused.code, 1)
  t.equal(refused.err, `switchyard: the config ${target.config} does not define services billing, search; nothing imported (--force imports them anyway)`)
  t.equal(await new FileStateStore(target.stateFile).load(), undefined, 'nothing was written')

  const forced = await cli(['state', 'import', ghosts, '--config', target.config, '--force'])
  t.equal(forced.code, 0, forced.err)
  t.strictSame(Object.keys((await new FileStateStore(target.stateFile).load())?.services ?? {}).sort(), ['billing', 'orders', 'search', 'users'])
})

t.test('state: usage errors exit 2', async (t) => {
  const { config } = fileStoreConfig(t)
  const cases: Array<{ argv: string[], err: RegExp }> = [
    { argv: ['state'], err: /usage: switchyard state export/ },
    { argv: ['state', 'dump'], err: /usage: switchyard state export/ },
    { argv: ['state', 'export', 'extra', '--config', config], err: /usage: switchyard state export/ },
    { argv: ['state', 'export', '--config'], err: /--config/ },
    { argv: ['state', 'import', '--config', config], err: /state import FILE --config FILE/ },
    { argv: ['state', 'import', 'a.json', 'b.json', '--config', config], err: /state import FILE --config FILE/ },
    { argv: ['state', 'import', 'a.json'], err: /state import needs --config FILE/ },
    { argv: ['state', 'import', 'a.json', '--config', config, '--colour', 'x'], err: /--colour/ },
  ]
  for (const c of cases) {
    const res = await cli(c.argv)
    t.equal(res.code, 2, `${c.argv.join(' ')}: exit 2`)
    t.match(res.err, c.err, `${c.argv.join(' ')}: says what is wrong`)
  }
  t.match((await cli(['--help'])).out, /state export \[--config FILE\] \[--out FILE\][\s\S]*state import FILE --config FILE/)
})

t.test('a file store moves into etcd and back', async (t) => {
  const etcd = await startEtcd(t)
  const source = fileStoreConfig(t)
  await new FileStateStore(source.stateFile).save(SAVED)
  const fleet = configFile(t, `state: { etcd: { endpoints: [${etcd.endpoint}], prefix: /cli-test } }\n${SERVICES_YAML}`)
  const back = fileStoreConfig(t)
  const dir = tempDir(t)

  t.equal((await cli(['state', 'export', '--config', source.config, '--out', join(dir, 'a.json')])).code, 0)
  const into = await cli(['state', 'import', join(dir, 'a.json'), '--config', fleet])
  t.equal(into.code, 0, into.err)
  t.match(into.out, `into etcd ${etcd.endpoint} prefix /cli-test`)
  const out = await cli(['state', 'export', '--config', fleet, '--out', join(dir, 'b.json')])
  t.equal(out.code, 0, out.err)
  t.equal((await cli(['state', 'import', join(dir, 'b.json'), '--config', back.config])).code, 0)
  t.strictSame((await new FileStateStore(back.stateFile).load())?.services, SAVED.services)
})

t.test('flip --wait-fleet asks the server to wait for the fleet: exit 0 when every replica applied it, 3 naming the laggards when not', async (t) => {
  const bodies: unknown[] = []
  let fleet = { converged: true, lagging: [] as string[] }
  const server = http.createServer((req, res) => {
    let text = ''
    req.on('data', (c: Buffer) => { text += c.toString() })
    req.on('end', () => {
      bodies.push(JSON.parse(text))
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ generation: 8, changes: [{ service: 'users', from: 'blue', to: 'green' }], fleet }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => await new Promise<void>((resolve) => server.close(() => resolve())))
  const env = { SWITCHYARD_ADMIN_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }

  const ok = await cli(['flip', '--wait-fleet'], env)
  t.equal(ok.code, 0, ok.err)
  t.match(ok.out, /every replica has applied it/)
  fleet = { converged: false, lagging: ['gw-c'] }
  const late = await cli(['rollback', 'users', '--wait-fleet', '--wait-timeout', '2s'], env)
  t.equal(late.code, 3)
  t.match(late.err, /committed, but not yet applied by gw-c/)
  t.strictSame(bodies, [{ wait: 'fleet' }, { wait: 'fleet', waitTimeout: '2s', services: ['users'] }])
  t.equal((await cli(['flip', '--wait-timeout', '2s'], env)).code, 2, '--wait-timeout alone is a usage error')
})
