// The event log holds every acknowledged change: fsynced before the answer,
// kept apart from health noise, rotated by size, restored across rotations.

import t from 'tap'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { EventLog, RESTART_ID_GAP, type SwitchyardEvent } from '../src/state/events.js'
import { admin, http1, serviceYaml, startBackend, startGateway, tempDir } from './helpers/index.js'

t.test('an events file that cannot be written fails the change with 500 event_write_failed; nothing changes', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', {})).status, 200)
  const data = join(gw.dir, 'data')
  const before = (await admin(gw.adminUrl, 'GET', '/v1/state')).json
  const events = (await admin(gw.adminUrl, 'GET', '/v1/events')).json.events
  const stateFile = readFileSync(join(data, 'state.json'), 'utf8')

  // Tests run as root, where permissions block nothing: a folder where the file should be.
  rmSync(join(data, 'events.jsonl'))
  mkdirSync(join(data, 'events.jsonl'))
  for (const [method, path, body] of [['POST', '/v1/flip', {}], ['POST', '/v1/rollback', {}], ['PUT', '/v1/services/svc/environments/blue/targets', { targets: [g.url] }]] as const) {
    const res = await admin(gw.adminUrl, method, path, body)
    t.equal(res.status, 500, `${path}: 500`)
    t.equal(res.json.error, 'event_write_failed')
    t.match(res.json.message, join(data, 'events.jsonl'))
    t.match(res.json.message, /nothing changed/)
  }
  t.same((await admin(gw.adminUrl, 'GET', '/v1/state')).json, before, 'same generation, colors and targets')
  t.equal((await http1(gw.url)).json.backend, 'green', 'traffic stays where it was')
  t.same((await admin(gw.adminUrl, 'GET', '/v1/events')).json.events, events, 'no event for what did not happen')
  t.equal(readFileSync(join(data, 'state.json'), 'utf8'), stateFile, 'the state file was not written')

  rmSync(join(data, 'events.jsonl'), { recursive: true })
  const ok = await admin(gw.adminUrl, 'POST', '/v1/flip', {})
  t.equal(ok.status, 200, 'once it can be written again, changes go through')
  t.equal(ok.json.generation, before.generation + 1)
})

t.test('2,000 health events do not push a flip out of GET /v1/events, now or after a restart', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const yaml = `services:\n${serviceYaml('svc', '/', [b], [g])}`
  const gw = await startGateway(t, yaml)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { reason: 'keep me' })).status, 200)
  let newest = 0
  for (let i = 0; i < 2000; i++) {
    newest = gw.gateway.controller.events.append({ type: 'health', generation: 1, reason: 'probe failed', actor: 'health', target: b.url, from: i % 2 === 0 ? 'healthy' : 'unhealthy', to: i % 2 === 0 ? 'unhealthy' : 'healthy' }).id
  }
  const check = async (url: string, when: string): Promise<void> => {
    const evs = (await admin(url, 'GET', '/v1/events')).json.events
    t.same(evs.filter((e: any) => e.type === 'flip').map((e: any) => e.reason), ['keep me'], `${when}: the flip is there`)
    const health = evs.filter((e: any) => e.type === 'health')
    t.equal(health.length, 1000, `${when}: the newest 1000 health events`)
    t.ok(evs.every((e: any, i: number) => i === 0 || e.id > evs[i - 1].id), `${when}: merged in id order`)
    t.equal(evs.at(-1).id, newest, `${when}: up to the newest`)
  }
  await check(gw.adminUrl, 'running')
  await gw.stop()
  const again = await startGateway(t, yaml, { dir: gw.dir })
  await check(again.adminUrl, 'after a restart')
})

function ev (log: EventLog, i: number): SwitchyardEvent {
  return log.append({ type: 'health', generation: 0, reason: 'x'.repeat(100), actor: 'health', n: i })
}

t.test('each file is rotated by size, keeps N old files, and restore reads across them', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'events.jsonl')
  const log = new EventLog(file, { maxBytes: 4096, keep: 2 })
  let generation = 0
  const written: number[] = []
  const flips: number[] = []
  for (let i = 0; i < 100; i++) {
    if (i % 10 === 0) {
      // Long reasons, so the changes file rotates too.
      const e = log.append({ type: 'flip', generation: ++generation, reason: `flip ${generation} ${'f'.repeat(600)}`, actor: 'api' })
      flips.push(e.id)
      written.push(e.id)
    } else {
      written.push(ev(log, i).id)
    }
  }
  await log.flush()
  t.same(readdirSync(dir).sort(), ['events.health.jsonl', 'events.health.jsonl.1', 'events.health.jsonl.2', 'events.jsonl', 'events.jsonl.1'], 'health noise in files of its own; two old files kept, no third')
  for (const f of readdirSync(dir)) t.ok(statSync(join(dir, f)).size <= 4096, `${f} is within maxBytes`)
  const ids = (names: string[]): number[] => names.flatMap((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l).id))
  t.same(ids(['events.jsonl.1', 'events.jsonl']), flips, 'every change, in order, none twice')
  const health = ids(['events.health.jsonl.2', 'events.health.jsonl.1', 'events.health.jsonl'])
  const allHealth = written.filter((id) => !flips.includes(id))
  t.same(health, allHealth.slice(allHealth.length - health.length), 'the newest health events, in order, none twice')
  t.ok(health.length < allHealth.length, 'the oldest ones went with the third rotation')

  const restored = new EventLog(file, { maxBytes: 4096, keep: 2 })
  await restored.restore(generation)
  t.same(restored.list().map((e) => e.id), [...flips, ...health].sort((a, b) => a - b), 'restore reads every kept file, merged by id')
  const next = restored.append({ type: 'health', generation, reason: null, actor: 'health' })
  t.equal(next.id, written.at(-1)! + 1 + RESTART_ID_GAP, 'ids keep growing across files, past the restart gap')
  await restored.flush()
})

t.test('a change being written holds back later events, so a reader polling with ?since never skips it', async (t) => {
  const log = new EventLog(join(tempDir(t), 'events.jsonl'))
  const before = log.append({ type: 'health', generation: 0, reason: null, actor: 'health' })
  const change = log.prepare({ type: 'flip', generation: 1, reason: null, actor: 'api' })
  const after = log.append({ type: 'health', generation: 0, reason: null, actor: 'health' })
  t.same(log.list().map((e) => e.id), [before.id], 'the health event after the pending change waits')
  await log.persist(change)
  log.publish(change)
  t.same(log.list(before.id).map((e) => e.id), [change.id, after.id])
  const refused = log.prepare({ type: 'flip', generation: 2, reason: null, actor: 'api' })
  log.discard(refused)
  t.same(log.list(after.id), [], 'a discarded change is never served')
  await log.flush()
})

t.test('stale state temp files of dead processes are removed at start', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const dir = tempDir(t)
  const data = join(dir, 'data')
  mkdirSync(data)
  const dead = 4194305 // above Linux's largest pid_max: never a live process
  const names = [`state.json.${dead}.tmp`, `state.json.${process.pid}.tmp`, `state.json.${process.ppid}.tmp`, 'state.json.bak.tmp', 'other.json.1.tmp']
  for (const n of names) writeFileSync(join(data, n), '{"half": ')
  await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`, { dir })
  t.notOk(existsSync(join(data, `state.json.${dead}.tmp`)), 'a dead process\'s temp file is removed')
  t.notOk(existsSync(join(data, `state.json.${process.pid}.tmp`)), 'one with our own pid (a container restart) is removed')
  t.ok(existsSync(join(data, `state.json.${process.ppid}.tmp`)), 'a live process\'s temp file is left alone')
  t.ok(existsSync(join(data, 'state.json.bak.tmp')), 'other names are left alone')
  t.ok(existsSync(join(data, 'other.json.1.tmp')))
})

t.test('a log larger than maxBytes (from before rotation) is restored from its tail', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'events.jsonl')
  const lines = Array.from({ length: 200 }, (_, i) => JSON.stringify({ id: i + 1, time: '2026-01-01T00:00:00.000Z', type: 'health', generation: 0, reason: 'x'.repeat(50), actor: 'health' }) + '\n')
  writeFileSync(file, lines.join(''))
  const log = new EventLog(file, { maxBytes: 4096 })
  await log.restore()
  const ids = log.list().map((e) => e.id)
  t.ok(ids.length > 10 && ids.length < 200, `only the tail is read (${ids.length} events)`)
  t.same(ids, Array.from({ length: ids.length }, (_, i) => 200 - ids.length + 1 + i), 'whole lines, up to the newest')
  const change = log.prepare({ type: 'reload', generation: 1, reason: null, actor: 'api' })
  t.equal(change.id, 201 + RESTART_ID_GAP)
  await log.persist(change)
  t.same(readdirSync(dir).sort(), ['events.jsonl', 'events.jsonl.1'], 'the next write rotates it')
})

t.test('health noise never rotates a change out of the files: a restart still serves it', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'events.jsonl')
  const log = new EventLog(file, { maxBytes: 4096, keep: 1 })
  const flip = log.prepare({ type: 'flip', generation: 1, reason: 'keep me', actor: 'api' })
  await log.persist(flip)
  log.publish(flip)
  // Far more than two files' worth of noise (a flapping target over days).
  for (let i = 0; i < 300; i++) ev(log, i)
  await log.flush()
  for (const f of readdirSync(dir)) t.ok(statSync(join(dir, f)).size <= 4096, `${f} is within maxBytes`)
  const restored = new EventLog(file, { maxBytes: 4096, keep: 1 })
  await restored.restore(1)
  const list = restored.list()
  t.same(list.filter((e) => e.type === 'flip').map((e) => [e.id, e.reason]), [[flip.id, 'keep me']], 'the flip is served after the restart')
  t.ok(list.filter((e) => e.type === 'health').length > 10, 'with the newest health events')
  t.equal(list.at(-1)?.id, flip.id + 300, 'up to the newest')
  t.equal(restored.append({ type: 'health', generation: 1, reason: null, actor: 'health' }).id, flip.id + 301 + RESTART_ID_GAP, 'ids keep growing, past the restart gap')
  await restored.flush()
})

t.test('an id served but not yet written before a crash is never given to another event after the restart', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'events.jsonl')
  const first = new EventLog(file)
  await first.restore()
  const flip = first.prepare({ type: 'flip', generation: 1, reason: null, actor: 'api' })
  await first.persist(flip)
  first.publish(flip)
  // Health events are served at once and written behind: a crash now loses these lines.
  const served = Array.from({ length: 5 }, (_, i) => first.append({ type: 'health', generation: 1, reason: null, actor: 'probe', n: i }).id)
  const onDisk = join(dir, 'crashed')
  mkdirSync(onDisk)
  for (const name of readdirSync(dir)) if (name.startsWith('events')) writeFileSync(join(onDisk, name), readFileSync(join(dir, name)))
  const second = new EventLog(join(onDisk, 'events.jsonl'))
  await second.restore(1)
  const next = second.append({ type: 'health', generation: 1, reason: null, actor: 'probe' }).id
  t.ok(next > Math.max(...served), `the first id after the restart (${next}) is above every id served before it (${served.join(', ')})`)
  await first.flush()
  await second.flush()
})
