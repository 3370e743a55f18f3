// The etcd store and fleet against a real etcd: conditioned commits, the watch (across a
// restart and a compaction), unreachable and refused etcd, the events rings, and the election.

import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { EtcdStore } from '../src/state/etcd-store.js'
import { EtcdFleet } from '../src/state/etcd-fleet.js'
import { StoreConflict, type StoreChange } from '../src/state/store.js'
import type { PersistedState } from '../src/state/file-store.js'
import type { NewEvent } from '../src/state/events.js'
import type { EtcdConfig } from '../src/config/schema.js'
import { eventually } from './helpers/index.js'
import { startEtcd, type EtcdServer } from './helpers/etcd.js'

let prefixes = 0
const freshPrefix = (): string => `/sy-test/${process.pid}-${++prefixes}`

function config (endpoint: string, prefix: string, extra: Partial<EtcdConfig> = {}): EtcdConfig {
  return { endpoints: [endpoint], prefix, username: '', password: '', startTimeout: 5000, ...extra }
}

function open (t: Test, endpoint: string, prefix: string, id = 'a', extra: Partial<EtcdConfig> = {}): EtcdStore {
  const store = new EtcdStore(config(endpoint, prefix, extra), { replicaId: id })
  t.teardown(async () => await store.close())
  return store
}

/** Stores a and b on one fresh prefix, both loaded, neither watching; `revision`: the state revision they loaded (0: none yet). */
async function twoStores (t: Test, endpoint: string): Promise<{ prefix: string, a: EtcdStore, b: EtcdStore, revision: number }> {
  const prefix = freshPrefix()
  const a = open(t, endpoint, prefix, 'a')
  const b = open(t, endpoint, prefix, 'b')
  await a.load()
  const { revision } = await b.load()
  return { prefix, a, b, revision }
}

const stateAt = (generation: number, live: 'blue' | 'green' = 'blue'): PersistedState =>
  ({ generation, services: { api: { live, previous: null, targets: {} } }, lastChange: ['api'] })

const flipEvent = (generation: number): NewEvent =>
  ({ type: 'flip', generation, reason: null, actor: 'test', changes: [{ service: 'api', from: 'blue', to: 'green' }] })

/** Commits generation base-state+1 on `base` and resolves with the new revision. */
async function commitNext (store: EtcdStore, generation: number, base: number): Promise<number> {
  return await store.commit(stateAt(generation, generation % 2 === 0 ? 'blue' : 'green'), flipEvent(generation), () => {}, { base })
}

t.test('etcd store', async (t) => {
  const etcd = await startEtcd(t)

  t.test('an empty prefix loads as no state, at revision 0', async (t) => {
    const prefix = freshPrefix()
    const store = open(t, etcd.endpoint, prefix)
    t.equal(store.where, `etcd ${etcd.endpoint} prefix ${prefix}`)
    t.same(await store.load(), { state: undefined, revision: 0 })
    t.same(store.status(), { kind: 'etcd', connected: true, revision: 0 })
  })

  t.test('a commit is there for the next store that loads, with its event', async (t) => {
    const prefix = freshPrefix()
    const a = open(t, etcd.endpoint, prefix)
    await a.load()
    let applied: number | undefined
    const rev = await a.commit(stateAt(1, 'green'), flipEvent(1), (ev) => { applied = ev.id }, { base: 0 })
    t.equal(applied, rev, 'apply gets the event with its id, the commit revision')
    t.equal(a.status().revision, rev)
    const b = open(t, etcd.endpoint, prefix, 'b')
    const loaded = await b.load()
    t.equal(loaded.revision, rev)
    t.same(loaded.state, stateAt(1, 'green'))
    const events = b.events.list()
    t.equal(events.length, 1)
    t.match(events[0], { id: rev, type: 'flip', generation: 1, time: String })
  })

  t.test('a bad state value stops the load, naming the key', async (t) => {
    const prefix = freshPrefix()
    const a = open(t, etcd.endpoint, prefix)
    await a.client.put(`${prefix}/state`).value('{"version":1,"generation":-1}')
    await t.rejects(a.load(), /etcd key \/sy-test\/.*\/state .*generation must be a non-negative integer/)
  })

  t.test('two commits on one base: one wins, the other gets a conflict with the winner', async (t) => {
    const { a, b } = await twoStores(t, etcd.endpoint)
    let appliedB = false
    const results = await Promise.allSettled([
      a.commit(stateAt(1, 'green'), flipEvent(1), () => {}, { base: 0 }),
      b.commit(stateAt(1, 'blue'), flipEvent(1), () => { appliedB = true }, { base: 0 }),
    ])
    const won = results.filter((r) => r.status === 'fulfilled')
    const lost = results.filter((r) => r.status === 'rejected')
    t.equal(won.length, 1)
    t.equal(lost.length, 1)
    const err: unknown = lost[0].reason
    t.type(err, StoreConflict)
    const winner = won[0].value
    t.equal((err as StoreConflict).current.revision, winner)
    t.same((err as StoreConflict).current.state, stateAt(1, results[0].status === 'fulfilled' ? 'green' : 'blue'))
    if (results[1].status === 'rejected') t.notOk(appliedB, 'the loser did not apply')
  })

  t.test("a watching store gets another's commit with its event; its own are not delivered again", async (t) => {
    const { a, b, revision } = await twoStores(t, etcd.endpoint)
    const seen: StoreChange[] = []
    b.watch(revision, (c) => seen.push(c))
    const rev = await commitNext(a, 1, 0)
    await eventually(() => seen.length === 1)
    t.equal(seen[0].revision, rev)
    t.same(seen[0].state, stateAt(1, 'green'))
    t.match(seen[0].event, { id: rev, type: 'flip', generation: 1 })
    const own = await commitNext(b, 2, rev)
    await eventually(() => b.events.list(rev).length === 1)
    t.equal(seen.length, 1, "b's own commit is not delivered back to it")
    t.equal(b.status().revision, own)
  })

  t.test('read your writes: a watching store lists its own change event as soon as the commit answers', async (t) => {
    const { a, b, revision } = await twoStores(t, etcd.endpoint)
    a.watch(revision, () => {})
    b.watch(revision, () => {})
    let base = revision
    const unlisted: number[] = []
    for (let generation = 1; generation <= 40; generation++) {
      // Every other change is b's: a's own event list must hold each of them once a's commit answers.
      if (generation % 2 === 0) {
        base = await commitNext(b, generation, base)
        continue
      }
      base = await commitNext(a, generation, base)
      if (!a.events.list(base - 1).some((e) => e.id === base)) unlisted.push(generation)
    }
    t.same(unlisted, [], 'every commit of a is in its event list when it answers')
    // The last change is b's: a lists it once its watch brings it.
    const ids = await eventually(() => { const l = a.events.list(revision); return l.length >= 40 && l.map((e) => e.generation) })
    t.same(ids, Array.from({ length: 40 }, (_, i) => i + 1), 'and every change of the two, in order, none skipped')
  })

  t.test('noise events appear on another store with growing ids; the rings are bounded', async (t) => {
    const { prefix, a, b, revision } = await twoStores(t, etcd.endpoint)
    b.watch(revision, () => {})
    for (let i = 0; i < 3; i++) void a.events.append({ type: 'health', generation: 0, reason: `probe ${i}`, actor: 'health' })
    await a.events.flush()
    t.equal(a.events.list().length, 3, 'the writer lists its own noise once written')
    const got = await eventually(() => { const l = b.events.list(); return l.length === 3 && l })
    t.same(got.map((e) => e.reason), ['probe 0', 'probe 1', 'probe 2'])
    t.ok(got[0].id < got[1].id && got[1].id < got[2].id, 'ids grow')
    t.same(b.events.list(got[0].id).map((e) => e.reason), ['probe 1', 'probe 2'], 'list(since) gives the newer ones')

    for (let i = 0; i < 1100; i++) void a.events.append({ type: 'health', generation: 0, reason: `burst ${i}`, actor: 'health' })
    await a.events.flush()
    const listed = a.events.list()
    t.equal(listed.length, 1000, 'the noise ring keeps 1000')
    t.equal(listed[999].reason, 'burst 1099')
    const keys = await a.client.getAll().prefix(`${prefix}/noise/a/`).keys()
    t.equal(keys.length, 200, 'etcd keeps 200 noise slots per replica')
  })

  t.test('change events in etcd are bounded to the last 1000 generations', async (t) => {
    const prefix = freshPrefix()
    const a = open(t, etcd.endpoint, prefix)
    await a.load()
    const r1 = await commitNext(a, 5, 0)
    t.ok(await a.client.get(`${prefix}/events/000000000005`).string())
    await commitNext(a, 1005, r1)
    t.equal(await a.client.get(`${prefix}/events/000000000005`).string(), null, 'generation 1005 took generation 5 away')
    t.ok(await a.client.get(`${prefix}/events/000000001005`).string())
  })

  t.test('replace writes above the stored generation, whatever it is', async (t) => {
    const prefix = freshPrefix()
    const a = open(t, etcd.endpoint, prefix)
    await a.load()
    const r1 = await commitNext(a, 7, 0)
    const rev = await a.replace(stateAt(2, 'green'), { type: 'import', generation: 2, reason: null, actor: 'cli' })
    t.ok(rev > r1)
    const b = open(t, etcd.endpoint, prefix, 'b')
    const loaded = await b.load()
    t.equal(loaded.state?.generation, 8)
    t.equal(loaded.state?.services.api.live, 'green')
    t.match(b.events.list().at(-1), { type: 'import', generation: 8 })
  })

  t.test('a watch from a compacted revision reads everything again', async (t) => {
    const { a, b, revision } = await twoStores(t, etcd.endpoint)
    let rev = 0
    for (let g = 1; g <= 3; g++) rev = await commitNext(a, g, rev)
    await a.client.kv.compact({ revision: String(rev), physical: true })
    const seen: StoreChange[] = []
    b.watch(revision, (c) => seen.push(c))
    await eventually(() => seen.length > 0)
    t.equal(seen.length, 1, 'one change: the latest state')
    t.equal(seen[0].revision, rev)
    t.equal(seen[0].state.generation, 3)
    t.match(seen[0].event, { id: rev, generation: 3 }, 'with the change event written with it')
    t.equal(b.events.list().length, 3, 'the events come from the re-read')
    const next = await commitNext(a, 4, rev)
    await eventually(() => seen.length === 2)
    t.equal(seen[1].revision, next, 'and it watches on from there')
  })

  t.test('fleet: replicas see each other, one leads, and leave() hands over', async (t) => {
    const prefix = freshPrefix()
    const [fa, fb] = await Promise.all(['a', 'b'].map(async (id) => {
      const store = open(t, etcd.endpoint, prefix, id)
      const { revision } = await store.load()
      store.watch(revision, () => {})
      const fleet = new EtcdFleet(store, { id, advertise: `http://${id}.example:9901`, leaseTtl: 2000 })
      await fleet.join(`http://${id}.example:9901`)
      return fleet
    }))
    await eventually(() => fa.replicas().length === 2 && fb.replicas().length === 2)
    t.same(fa.replicas().map((r) => [r.id, r.admin]), [['a', 'http://a.example:9901'], ['b', 'http://b.example:9901']])
    await eventually(() => fa.isLeader !== fb.isLeader && fa.leader() !== null && fa.leader() === fb.leader())
    const [leader, other] = fa.isLeader ? [fa, fb] : [fb, fa]
    t.equal(other.leader(), leader.id)

    const seenCounts = await eventually(() => {
      other.report({ generation: 3, revision: 9 }, () => ({ api: { blue: { requests: 5, errors: 1 } } }))
      const rec = leader.replicas().find((r) => r.id === other.id)
      return rec?.generation === 3 && rec
    })
    t.same(seenCounts.counts, { api: { blue: { requests: 5, errors: 1 } } }, 'a report carries the counts')

    const handed: boolean[] = []
    other.onLeadership((leading) => handed.push(leading))
    const left = Date.now()
    await leader.leave()
    t.notOk(leader.isLeader)
    await eventually(() => other.isLeader && other.leader() === other.id, { timeout: 2000 })
    t.ok(Date.now() - left < 1000, 'leave() hands over at once, not after the lease TTL')
    t.same(handed, [true])
    await eventually(() => other.replicas().length === 1, { timeout: 2000 })
  })

  t.test('fleet: a replica that dies without leaving hands over within the lease TTL', async (t) => {
    const prefix = freshPrefix()
    const stores = ['a', 'b'].map((id) => open(t, etcd.endpoint, prefix, id))
    const fleets = await Promise.all(stores.map(async (store) => {
      const { revision } = await store.load()
      store.watch(revision, () => {})
      const fleet = new EtcdFleet(store, { id: store.replicaId, advertise: null, leaseTtl: 2000 })
      await fleet.join(null)
      return fleet
    }))
    await eventually(() => fleets.filter((f) => f.isLeader).length === 1 && fleets.every((f) => f.replicas().length === 2))
    const i = fleets.findIndex((f) => f.isLeader)
    const died = Date.now()
    await stores[i].close() // no revoke: the lease lapses as if the process was killed
    const survivor = fleets[1 - i]
    await eventually(() => survivor.isLeader, { timeout: 5000 })
    const took = Date.now() - died
    t.ok(took < 2000 + 1000, `handed over in ${took} ms (lease TTL 2000 ms)`)
    t.ok(took > 1000, 'not before the lease could expire')
    await eventually(() => survivor.replicas().length === 1)
  })
})

t.test('the watch resumes after etcd restarts, skipping nothing', async (t) => {
  const etcd = await startEtcd(t)
  const { a, b, revision } = await twoStores(t, etcd.endpoint)
  const seen: number[] = []
  b.watch(revision, (c) => seen.push(c.revision))
  let rev = await commitNext(a, 1, 0)
  await eventually(() => seen.length === 1)
  await etcd.stop()
  await etcd.start()
  // Committed as soon as etcd answers: while b's watch is still detached, or just re-attaching.
  const revs = [rev]
  for (let g = 2; g <= 4; g++) {
    rev = await eventually(async () => await commitNext(a, g, rev), { timeout: 8000, interval: 50 })
    revs.push(rev)
  }
  await eventually(() => seen.length >= 4, { timeout: 8000 })
  t.same(seen, revs, 'every change once, in order')
})

t.test('etcd down: a commit fails within ~3 s as store_unavailable, connectivity shows and recovers', async (t) => {
  const etcd = await startEtcd(t)
  const a = open(t, etcd.endpoint, freshPrefix())
  const { revision } = await a.load()
  a.watch(revision, () => {})
  await etcd.stop()
  const started = Date.now()
  const err = await commitNext(a, 1, 0).then(() => undefined, (e: unknown) => e)
  const took = Date.now() - started
  t.match(err, { code: 'store_unavailable', status: 503, message: new RegExp(`etcd at ${etcd.endpoint} is unreachable`) })
  t.ok(took < 3000, `rejected in ${took} ms`)
  await eventually(() => !a.status().connected, { timeout: 2500 })
  await etcd.start()
  await eventually(() => a.status().connected, { timeout: 5000 })
  t.ok(await commitNext(a, 1, 0) > 0, 'and commits work again')
})

t.test('an unreachable etcd fails the load after startTimeout, naming the endpoint', async (t) => {
  const endpoint = 'http://127.0.0.1:1'
  const store = open(t, endpoint, '/x', 'a', { startTimeout: 1000 })
  const started = Date.now()
  await t.rejects(store.load(), { message: /^cannot reach etcd at http:\/\/127\.0\.0\.1:1 \(prefix \/x\) within 1s: / })
  const took = Date.now() - started
  t.ok(took >= 500 && took < 2500, `gave up after ${took} ms`)
})

t.test('wrong credentials fail the load at once; right ones work', async (t) => {
  const etcd: EtcdServer = await startEtcd(t)
  const ctl = (...args: string[]): string => execFileSync('etcdctl', ['--endpoints', etcd.endpoint, ...args], { env: { ...process.env, ETCDCTL_API: '3' } }).toString()
  ctl('user', 'add', 'root:secret')
  ctl('user', 'grant-role', 'root', 'root')
  ctl('auth', 'enable')
  const wrong = open(t, etcd.endpoint, '/x', 'a', { username: 'root', password: 'nope', startTimeout: 5000 })
  const started = Date.now()
  await t.rejects(wrong.load(), { message: /^etcd at .* \(prefix \/x\) refused user "root": .*authentication failed/ })
  t.ok(Date.now() - started < 1000, 'no retrying a refusal')
  const right = open(t, etcd.endpoint, '/x', 'b', { username: 'root', password: 'secret' })
  t.same(await right.load(), { state: undefined, revision: 0 })
  t.ok(await commitNext(right, 1, 0) > 0)
})

t.test('fleet: etcd down past the lease TTL drops the lead; once back, replicas re-register and one leads', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = freshPrefix()
  const fleets = await Promise.all(['a', 'b'].map(async (id) => {
    const store = open(t, etcd.endpoint, prefix, id)
    const { revision } = await store.load()
    store.watch(revision, () => {})
    const fleet = new EtcdFleet(store, { id, advertise: null, leaseTtl: 2000 })
    await fleet.join(null)
    return fleet
  }))
  await eventually(() => fleets.filter((f) => f.isLeader).length === 1 && fleets.every((f) => f.replicas().length === 2))
  const leader = fleets.find((f) => f.isLeader) as EtcdFleet
  const lead: boolean[] = []
  leader.onLeadership((leading) => lead.push(leading))
  const down = Date.now()
  await etcd.stop()
  await eventually(() => !leader.isLeader, { timeout: 3000 })
  t.ok(Date.now() - down < 2000, 'the lead goes before the lease could have expired')
  t.same(lead, [false])
  await new Promise((resolve) => setTimeout(resolve, 2500))
  await etcd.start()
  await eventually(() => fleets.filter((f) => f.isLeader).length === 1 && fleets.every((f) => f.replicas().length === 2 && f.leader() !== null), { timeout: 8000 })
  t.equal(fleets[0].leader(), fleets[1].leader())
})

t.test('a record under replicas/ that is not one (junk, another shape) is left out of the fleet; the real replicas and their counts stay', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = freshPrefix()
  const store = open(t, etcd.endpoint, prefix, 'a')
  const { revision } = await store.load()
  store.watch(revision, () => {})
  const fleet = new EtcdFleet(store, { id: 'a', advertise: null, leaseTtl: 2000 })
  let notified = 0
  fleet.onReplicas(() => { notified++ })
  await fleet.join(null)
  fleet.report({ generation: 0, revision }, () => ({ api: { blue: { requests: 3, errors: 0 } } }))
  await store.client.put(`${prefix}/replicas/junk`).value('not json')
  await store.client.put(`${prefix}/replicas/other`).value(JSON.stringify({ id: 'other', generation: 1 }))
  await store.client.put(`${prefix}/replicas/late`).value(JSON.stringify({ id: 'late', admin: null, generation: 0, revision: 0, heartbeat: new Date().toISOString(), counts: { api: { blue: { requests: 'x' } } } }))
  await eventually(() => notified >= 4)
  t.same(fleet.replicas().map((r) => r.id), ['a'], 'only the replica whose record is one')
  t.ok(fleet.isLeader || fleet.leader() === 'a')
})
