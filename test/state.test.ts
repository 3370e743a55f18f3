// State persistence: flips and admin-set targets survive a restart, the file is
// written atomically, a bad file stops the start untouched, a failed write changes nothing.

import t, { type Test } from 'tap'
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { admin, http1, serviceYaml, startBackend, startGateway, tempDir, type Backend, type TestGateway } from './helpers/index.js'
import { RESTART_ID_GAP } from '../src/state/events.js'

async function servedBy (gw: TestGateway, path: string): Promise<string> {
  const res = await http1(gw.url + path)
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${res.text}`)
  return res.json.backend
}

/** Routing state without the live guard counters, which move with every request. */
async function state (gw: TestGateway): Promise<any> {
  const res = await admin(gw.adminUrl, 'GET', '/v1/state')
  if (res.status !== 200) throw new Error(`GET /v1/state: ${res.status} ${res.text}`)
  for (const s of Object.values<any>(res.json.services)) {
    if (s.guard !== null) s.guard = { active: s.guard.active, color: s.guard.color }
  }
  return res.json
}

interface Pair { ub: Backend, ug: Backend, yaml: string }

async function pair (t: Test, stateFile = './data/state.json'): Promise<Pair> {
  const ub = await startBackend(t, 'users-blue')
  const ug = await startBackend(t, 'users-green')
  const yaml = `state: { file: ${stateFile} }
services:
${serviceYaml('users', '/api/users', [ub], [ug])}`
  return { ub, ug, yaml }
}

t.test('a restart keeps the flipped color, the generation and API-set targets', async (t) => {
  const { yaml } = await pair(t)
  const dir = tempDir(t)
  const next = await startBackend(t, 'users-blue-v2')

  const first = await startGateway(t, yaml, { dir })
  t.equal(await servedBy(first, '/api/users'), 'users-blue')
  t.equal((await admin(first.adminUrl, 'POST', '/v1/flip', { services: ['users'] })).status, 200)
  t.equal((await admin(first.adminUrl, 'PUT', '/v1/services/users/environments/blue/targets', { targets: [next.url] })).status, 200)
  t.equal(await servedBy(first, '/api/users'), 'users-green')
  await first.stop()

  const second = await startGateway(t, yaml, { dir })
  const st = await state(second)
  t.equal(st.generation, 2)
  t.equal(st.services.users.live, 'green', 'the state file wins over the config\'s live: blue')
  t.equal(st.services.users.previous, 'blue')
  t.same(st.services.users.environments.blue.targets.map((x: any) => x.url), [next.url])
  t.equal(await servedBy(second, '/api/users'), 'users-green')

  // The restored previous color is what a rollback goes to.
  const back = await admin(second.adminUrl, 'POST', '/v1/rollback', { services: ['users'] })
  t.equal(back.status, 200)
  t.equal(back.json.generation, 3)
  t.equal(await servedBy(second, '/api/users'), 'users-blue-v2')
})

t.test('a bare rollback after a restart reverts the change made before it', async (t) => {
  const { yaml } = await pair(t)
  const dir = tempDir(t)
  const first = await startGateway(t, yaml, { dir })
  await admin(first.adminUrl, 'POST', '/v1/flip', {})
  await first.stop()
  const second = await startGateway(t, yaml, { dir })
  const back = await admin(second.adminUrl, 'POST', '/v1/rollback', {})
  t.equal(back.status, 200)
  t.strictSame(back.json.changes, [{ service: 'users', from: 'green', to: 'blue' }])
  t.equal(await servedBy(second, '/api/users'), 'users-blue')
})

t.test('the state file is JSON, written by rename with no temp files left', async (t) => {
  const { yaml } = await pair(t)
  const gw = await startGateway(t, yaml)
  const file = join(gw.dir, 'data', 'state.json')
  t.notOk(existsSync(file), 'nothing is written before the first change')
  for (let i = 0; i < 5; i++) {
    t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  }
  const saved = JSON.parse(readFileSync(file, 'utf8'))
  t.match(saved, { version: 1, generation: 5, services: { users: { live: 'green', previous: 'blue' } }, lastChange: ['users'] })
  const leftovers = readdirSync(join(gw.dir, 'data')).filter((f) => f.endsWith('.tmp'))
  t.same(leftovers, [], 'no temp files are left behind')
  t.same(readdirSync(join(gw.dir, 'data')).sort(), ['events.health.jsonl', 'events.jsonl', 'state.json'], 'changes, drain and health events, state')
})

t.test('a relative state.file resolves against the config file\'s folder', async (t) => {
  const { yaml } = await pair(t, './nested/deeper/state.json')
  const gw = await startGateway(t, yaml)
  await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.ok(existsSync(join(gw.dir, 'nested', 'deeper', 'state.json')), 'the missing folders are created')
})

t.test('a bad state file stops the start, names the file, and is left untouched', async (t) => {
  const { yaml, ug } = await pair(t, './state.json')
  const cases: Array<{ name: string, text: string, problem: RegExp }> = [
    { name: 'garbage', text: 'this is not json {', problem: /not valid JSON/ },
    { name: 'empty file', text: '', problem: /not valid JSON/ },
    { name: 'a JSON list', text: '[]', problem: /not a JSON object/ },
    { name: 'wrong version', text: JSON.stringify({ version: 2, generation: 3, services: {} }), problem: /unsupported version 2/ },
    { name: 'no version', text: JSON.stringify({ generation: 3, services: {} }), problem: /unsupported version/ },
    { name: 'live: red', text: JSON.stringify({ version: 1, generation: 3, services: { users: { live: 'red', previous: null } } }), problem: /services\.users\.live must be blue or green/ },
    { name: 'previous: red', text: JSON.stringify({ version: 1, generation: 3, services: { users: { live: 'blue', previous: 'red' } } }), problem: /services\.users\.previous/ },
    { name: 'negative generation', text: JSON.stringify({ version: 1, generation: -1, services: {} }), problem: /generation must be a non-negative integer/ },
    { name: 'services not an object', text: JSON.stringify({ version: 1, generation: 0, services: [] }), problem: /services must be an object/ },
    { name: 'bad target URL', text: JSON.stringify({ version: 1, generation: 1, services: { users: { live: 'blue', previous: null, targets: { green: ['nope'] } } } }), problem: /services\.users\.targets\.green must be a list of URLs/ },
    { name: 'target color red', text: JSON.stringify({ version: 1, generation: 1, services: { users: { live: 'blue', previous: null, targets: { red: [ug.url] } } } }), problem: /services\.users\.targets\.red: not a color/ },
    { name: 'live color left without targets', text: JSON.stringify({ version: 1, generation: 1, services: { users: { live: 'green', previous: 'blue', targets: { green: [] } } } }), problem: /does not fit the config/ },
  ]
  for (const c of cases) {
    const dir = tempDir(t)
    const file = join(dir, 'state.json')
    writeFileSync(file, c.text)
    const err = await startGateway(t, yaml, { dir }).then(() => undefined, (e: Error) => e)
    t.ok(err, `${c.name}: the start fails`)
    t.match(err?.message, file, `${c.name}: the error names the file`)
    t.match(err?.message, c.problem, `${c.name}: the error says what is wrong`)
    t.equal(readFileSync(file, 'utf8'), c.text, `${c.name}: the file is untouched`)
    t.same(readdirSync(dir).sort(), ['state.json', 'switchyard.yaml'], `${c.name}: nothing else was written`)
  }
})

t.test('a state file path that cannot be read stops the start', async (t) => {
  const { yaml } = await pair(t, './blocker/state.json')
  const dir = tempDir(t)
  writeFileSync(join(dir, 'blocker'), 'a regular file where a folder should be')
  const err = await startGateway(t, yaml, { dir }).then(() => undefined, (e: Error) => e)
  t.match(err?.message, join(dir, 'blocker', 'state.json'))
  t.match(err?.message, /cannot read/)
  t.equal(readFileSync(join(dir, 'blocker'), 'utf8'), 'a regular file where a folder should be')
})

t.test('events.jsonl keeps events across a restart and ids keep growing', async (t) => {
  const { yaml } = await pair(t)
  const dir = tempDir(t)
  const first = await startGateway(t, yaml, { dir })
  await admin(first.adminUrl, 'POST', '/v1/flip', { reason: 'one' })
  await admin(first.adminUrl, 'POST', '/v1/rollback', { reason: 'two' })
  const all = (await admin(first.adminUrl, 'GET', '/v1/events')).json.events
  const before = (await admin(first.adminUrl, 'GET', '/v1/events?type=flip,rollback')).json.events
  t.equal(before.length, 2)
  t.same(all.filter((e: any) => e.type === 'flip' || e.type === 'rollback'), before, '?type filters')
  await first.stop()

  const read = (name: string): any[] => readFileSync(join(dir, 'data', name), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.same(read('events.jsonl'), before, 'events.jsonl holds the changes, one JSON object a line')
  t.same([...before, ...read('events.health.jsonl')].sort((a, b) => a.id - b.id), all, 'events.health.jsonl the rest')

  const second = await startGateway(t, yaml, { dir })
  t.same((await admin(second.adminUrl, 'GET', '/v1/events')).json.events, all, 'served again after the restart')
  await admin(second.adminUrl, 'POST', '/v1/flip', { reason: 'three' })
  const after = (await admin(second.adminUrl, 'GET', '/v1/events?type=flip,rollback')).json.events
  t.equal(after.length, 3)
  t.ok(after[2].id > all.at(-1).id, 'the new id is above every old one')
  t.match(after[2], { type: 'flip', reason: 'three', generation: 3 })
  const since = (await admin(second.adminUrl, 'GET', `/v1/events?type=flip&since=${before[1].id as number}`)).json.events
  t.same(since.map((e: any) => e.reason), ['three'])
})

t.test('a torn last line in events.jsonl is skipped, not fatal', async (t) => {
  const { yaml } = await pair(t)
  const dir = tempDir(t)
  mkdirSync(join(dir, 'data'))
  const good = { id: 7, time: new Date().toISOString(), type: 'flip', generation: 1, reason: null, actor: 'api', changes: [] }
  writeFileSync(join(dir, 'data', 'state.json'), JSON.stringify({ version: 1, generation: 1, services: {} }))
  writeFileSync(join(dir, 'data', 'events.jsonl'), JSON.stringify(good) + '\n{"id": 8, "ty')
  const gw = await startGateway(t, yaml, { dir })
  t.same((await admin(gw.adminUrl, 'GET', '/v1/events')).json.events.map((e: any) => e.id), [7])
  await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  const evs = (await admin(gw.adminUrl, 'GET', '/v1/events?type=flip')).json.events
  t.equal(evs.at(-1).id, 8 + RESTART_ID_GAP, 'ids go on past the restart gap')
  await gw.stop()

  // The event appended after the torn line must not be glued onto it.
  const again = await startGateway(t, yaml, { dir })
  t.same((await admin(again.adminUrl, 'GET', '/v1/events?type=flip')).json.events.map((e: any) => e.id), [7, 8 + RESTART_ID_GAP])
})

t.test('a data folder that cannot be written answers 500 and changes nothing', async (t) => {
  const { yaml, ug } = await pair(t)
  const gw = await startGateway(t, yaml)
  const data = join(gw.dir, 'data')
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  t.equal(await servedBy(gw, '/api/users'), 'users-green')
  const before = await state(gw)
  const eventsBefore = (await admin(gw.adminUrl, 'GET', '/v1/events')).json.events

  // Tests run as root, where permissions block nothing: put a regular file
  // where the state file's folder should be. The drain's event line may still
  // be on its way into the folder: let the log finish first.
  await gw.gateway.controller.idle()
  rmSync(data, { recursive: true, maxRetries: 5 })
  writeFileSync(data, 'not a folder')

  // The event is written first (see Controller.commit), so that is the write that fails.
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(flip.status, 500)
  t.equal(flip.json.error, 'event_write_failed')
  t.match(flip.json.message, join(data, 'events.jsonl'))
  t.match(flip.json.message, /nothing changed/)
  t.same(await state(gw), before, 'same generation, same live color')
  t.equal(await servedBy(gw, '/api/users'), 'users-green', 'traffic stays on the old color')

  const rollback = await admin(gw.adminUrl, 'POST', '/v1/rollback', {})
  t.equal(rollback.status, 500)
  t.equal(rollback.json.error, 'event_write_failed')
  const targets = await admin(gw.adminUrl, 'PUT', '/v1/services/users/environments/blue/targets', { targets: [ug.url] })
  t.equal(targets.status, 500)
  t.equal(targets.json.error, 'event_write_failed')
  t.same(await state(gw), before)
  t.same((await admin(gw.adminUrl, 'GET', '/v1/events')).json.events, eventsBefore, 'no event for a change that did not happen')
  t.equal(await servedBy(gw, '/api/users'), 'users-green')

  // Once the folder is back, the next change takes the next generation.
  rmSync(data)
  const ok = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(ok.status, 200)
  t.equal(ok.json.generation, before.generation + 1)
  t.equal(await servedBy(gw, '/api/users'), 'users-blue')
  t.equal(JSON.parse(readFileSync(join(data, 'state.json'), 'utf8')).generation, before.generation + 1)
})

t.test('a full disk or a failed rename answers 500 state_write_failed, leaves no temp file and changes nothing', async (t) => {
  const { yaml } = await pair(t)
  const gw = await startGateway(t, yaml)
  const data = join(gw.dir, 'data')
  const file = join(data, 'state.json')
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const before = await state(gw)
  const saved = readFileSync(file, 'utf8')

  // The gateway runs in this process, so its temp file name is predictable:
  // point it at /dev/full and every write fails with ENOSPC.
  const tmp = `${file}.${process.pid}.tmp`
  symlinkSync('/dev/full', tmp)
  const full = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(full.status, 500)
  t.equal(full.json.error, 'state_write_failed')
  t.match(full.json.message, /ENOSPC|no space/i)
  t.notOk(existsSync(tmp) || isLink(tmp), 'the temp file is removed')
  t.same(await state(gw), before)
  t.equal(readFileSync(file, 'utf8'), saved, 'the old state file is intact')
  t.equal(await servedBy(gw, '/api/users'), 'users-green')

  // A folder where the state file should be: the rename fails.
  rmSync(file)
  mkdirSync(join(file, 'inside'), { recursive: true })
  const renamed = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(renamed.status, 500)
  t.equal(renamed.json.error, 'state_write_failed')
  t.same(readdirSync(data).filter((f) => f.endsWith('.tmp')), [], 'the temp file is removed')
  t.same(await state(gw), before)
  t.equal(await servedBy(gw, '/api/users'), 'users-green')

  // The events of both refused flips were written before the state file failed: never served, not now, not after a restart.
  const changes = async (g: TestGateway): Promise<number[]> => (await admin(g.adminUrl, 'GET', '/v1/events?type=flip')).json.events.map((e: any) => e.generation)
  t.same(await changes(gw), [1], 'only the flip that happened')
  const lines = readFileSync(join(data, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'flip')
  t.same(lines.map((e) => e.generation), [1, 2, 2], 'the file holds the two refused ones')
  rmSync(file, { recursive: true })
  writeFileSync(file, saved)
  await gw.stop()
  const again = await startGateway(t, yaml, { dir: gw.dir })
  t.same(await changes(again), [1], 'a restart leaves out events whose generation the state file never reached')
  t.equal((await admin(again.adminUrl, 'POST', '/v1/flip', {})).json.generation, 2)
  await again.stop()
  const third = await startGateway(t, yaml, { dir: gw.dir })
  t.same(await changes(third), [1, 2], 'and those an event of the same generation followed')
})

function isLink (path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink()
  } catch {
    return false
  }
}

t.test('the first change\'s event without a state file (killed between the two writes) is never served', async (t) => {
  const { yaml } = await pair(t)
  const dir = tempDir(t)
  mkdirSync(join(dir, 'data'))
  // What a SIGKILL after the event's fsync and before the first state file leaves behind.
  const orphan = { id: 1, time: '2026-01-01T00:00:00.000Z', type: 'flip', generation: 1, reason: 'never happened', actor: 'api', changes: [{ service: 'users', from: 'blue', to: 'green' }] }
  writeFileSync(join(dir, 'data', 'events.jsonl'), JSON.stringify(orphan) + '\n')
  const gw = await startGateway(t, yaml, { dir })
  t.equal((await state(gw)).generation, 0, 'no state file: generation 0')
  t.same((await admin(gw.adminUrl, 'GET', '/v1/events?type=flip')).json.events, [], 'the flip that never happened is not served')
  const flip = await admin(gw.adminUrl, 'POST', '/v1/flip', { reason: 'real' })
  t.equal(flip.json.generation, 1)
  const flips = (await admin(gw.adminUrl, 'GET', '/v1/events?type=flip')).json.events
  t.same(flips.map((e: any) => [e.reason, e.generation]), [['real', 1]], 'only the real one')
  t.ok(flips[0].id > orphan.id, 'with an id above the orphan\'s')
})
