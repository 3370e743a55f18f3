// Shadow traffic's control side: the config section and its errors, the admin
// API (start, stop, expiry, refusals) with its events and generations, the
// state across a restart, which requests the resolve step offers for copying,
// the gate on flips and on a release's testing phase, and the metric. The
// tally here is a fake fed directly: what is tested is what reads it.

import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseConfig, ConfigError } from '../src/config/load.js'
import type { Config } from '../src/config/schema.js'
import { Gateway } from '../src/gateway.js'
import { LocalShadow, type ShadowParts } from '../src/control/shadow.js'
import { checkShadowGate } from '../src/control/gate.js'
import { createResolver } from '../src/routing/resolve.js'
import { buildSnapshot, comparisonKey, Switcher, type RoutingState, type ShadowSampler } from '../src/routing/snapshot.js'
import { SPLIT_HEADER } from '../src/routing/split.js'
import type { AnswerTap, RequestFacts, Resolution } from '../src/proxy/resolve.js'
import type { Difference, DropReason, ShadowPlan, ShadowResult, ShadowTally, ShadowView, TallyData } from '../src/shadow/types.js'
import { parseStateDocument, StateFileError } from '../src/state/file-store.js'
import { TargetRegistry } from '../src/upstream/registry.js'
import { WorkerPool } from '../src/listen/worker-pool.js'
import { admin, eventually, http1, startBackend, tempDir, type Backend } from './helpers/index.js'

// ---- a fake of the shadow parts: plain counts, fed by the tests ----

function emptyData (): TallyData {
  return { sent: 0, drops: { busy: 0, no_target: 0, failed: 0, body_too_large: 0 }, bodyNotCompared: 0, probes: 0, endpoints: [], pairs: [], overflow: 0, examples: [], noise: [] }
}

function viewOf (d: TallyData): ShadowView {
  let matched = 0
  let differed = d.overflow
  const where = new Map<string, number>()
  for (const p of d.pairs) {
    if (p.wheres.length === 0) matched += p.count
    else differed += p.count
    for (const w of p.wheres) where.set(w, (where.get(w) ?? 0) + p.count)
  }
  const dropped = Object.values(d.drops).reduce((a, b) => a + b, 0)
  const top = [...where].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([w, count]) => {
    const ex = d.examples.find((e) => e.where === w)
    return { where: w, count, example: { live: ex?.live ?? '', idle: ex?.idle ?? '' }, endpoints: [] }
  })
  return { sent: d.sent, compared: matched + differed, matched, differed, dropped, noise: 0, top, drops: d.drops, bodyNotCompared: d.bodyNotCompared, noiseWhere: [], probes: d.probes }
}

function mergeTallyData (list: readonly TallyData[]): TallyData {
  const out = emptyData()
  for (const d of list) {
    out.sent += d.sent
    for (const k of Object.keys(out.drops) as DropReason[]) out.drops[k] += d.drops[k]
    for (const p of d.pairs) {
      const same = out.pairs.find((x) => x.wheres.join() === p.wheres.join())
      if (same === undefined) out.pairs.push({ endpoint: '', wheres: [...p.wheres], count: p.count })
      else same.count += p.count
    }
  }
  return out
}

class FakeTally implements ShadowTally {
  inflight = 0
  copies = 0
  private readonly d = emptyData()
  constructor (private readonly service: string, private readonly onResult: (service: string, result: ShadowResult) => void) {}
  sent (): void { this.d.sent++; this.copies++; this.onResult(this.service, 'sent') }
  dropped (reason: DropReason): void { this.d.drops[reason]++; this.onResult(this.service, 'dropped') }
  pair (diffs: readonly Difference[], bodyCompared: boolean): void {
    const wheres = [...new Set(diffs.map((x) => x.where))].sort()
    const same = this.d.pairs.find((p) => p.wheres.join() === wheres.join())
    if (same === undefined) this.d.pairs.push({ endpoint: '', wheres, count: 1 })
    else same.count++
    for (const x of diffs) if (!this.d.examples.some((e) => e.where === x.where)) this.d.examples.push({ where: x.where, live: x.live, idle: x.other })
    if (!bodyCompared) this.d.bodyNotCompared++
    this.onResult(this.service, wheres.length === 0 ? 'matched' : 'differed')
  }

  noise (): void { this.d.probes++ }
  view (): ShadowView { return viewOf(this.d) }
  data (): TallyData { return structuredClone(this.d) }
}

interface Fake {
  parts: ShadowParts
  /** Every plan a route was built from, newest last. */
  plans: ShadowPlan[]
  /** Methods the resolve step asked a route to sample. */
  asked: string[]
}

function fakeParts (): Fake {
  const plans: ShadowPlan[] = []
  const asked: string[] = []
  const tap: AnswerTap = { request: () => {}, requestBody: () => {}, head: () => {}, body: () => {}, end: () => {}, abort: () => {} }
  const parts: ShadowParts = {
    createBook: (onResult) => {
      const tallies = new Map<string, { key: string, tally: FakeTally }>()
      return {
        tallyFor: (service, key) => {
          const cur = tallies.get(service)
          if (cur !== undefined && cur.key === key) return cur.tally
          const tally = new FakeTally(service, onResult)
          tallies.set(service, { key, tally })
          return tally
        },
      }
    },
    mergeTallyData,
    viewOf,
    createComparer: () => ({ compare: () => [] }),
    createRoute: (plan): ShadowSampler => {
      plans.push(plan)
      return { sample: (method) => { asked.push(method); return plan.settings.methods.includes(method) ? tap : undefined } }
    },
  }
  return { parts, plans, asked }
}

/** `n` pairs into `tally`, the first `differing` of them differing at `$.plan`. */
function feed (tally: ShadowTally, n: number, differing: number): void {
  for (let i = 0; i < n; i++) {
    tally.sent()
    tally.pair(i < differing ? [{ where: '$.plan', live: '"basic"', other: '"premium"' }] : [], true)
  }
}

// ---- config ----

const BASE = `services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [http://127.0.0.1:1] }
    green: { targets: [http://127.0.0.1:2] }
`

function problems (extra: string, top = ''): string[] {
  try {
    parseConfig(`${top}${BASE}${extra}`, { env: {} })
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`)
    throw err
  }
  return []
}

t.test('config: shadow settings, defaults and every error named by its path', async (t) => {
  const c = parseConfig(`${BASE}    shadow: { sample: 0.25, methods: [get, Options], ignore: { headers: [Date, X-Request-Id], json: [$.timestamp] }, redact: [email, Phone_Number], maxBody: 1024, maxConcurrent: 4, timeout: 2s, noise: 0.5, learn: 3 }\n`, { env: {} })
  t.same(c.services.users.shadow, { sample: 0.25, methods: ['GET', 'OPTIONS'], unsafe: false, ignore: { headers: ['date', 'x-request-id'], json: ['$.timestamp'] }, redact: ['email', 'Phone_Number'], maxBody: 1024, maxConcurrent: 4, timeout: 2000, noise: 0.5, learn: 3 })
  const d = parseConfig(`${BASE}    shadow: { sample: 1 }\n`, { env: {} }).services.users.shadow
  t.same(d, { sample: 1, methods: ['GET', 'HEAD'], unsafe: false, ignore: { headers: [], json: [] }, redact: [], maxBody: 65536, maxConcurrent: 32, timeout: 5000, noise: 0.1, learn: 20 }, 'DEFAULTS.shadow fill the rest')
  t.equal(parseConfig(BASE, { env: {} }).services.users.shadow, undefined, 'off without a section')
  t.same(parseConfig(`${BASE}    shadow: { sample: 0.1, methods: [POST, GET], unsafe: true }\n`, { env: {} }).services.users.shadow?.methods, ['POST', 'GET'], 'unsafe: true lets POST through')

  t.same(problems('    shadow: { methods: [GET] }\n'), ['services.users.shadow.sample: required: the share of the live color\'s requests copied, above 0 and at most 1 (0.1 copies one in ten)'])
  t.match(problems('    shadow: { sample: 0 }\n'), [/^services\.users\.shadow\.sample: must be a number above 0 and at most 1/])
  t.match(problems('    shadow: { sample: 1.5 }\n'), [/^services\.users\.shadow\.sample: must be a number above 0 and at most 1 .*got 1\.5/])
  const post = problems('    shadow: { sample: 1, methods: [GET, post] }\n')
  t.equal(post.length, 1)
  t.match(post[0], /^services\.users\.shadow\.methods\[1\]: POST may change state: its copy would repeat the side effect on the idle color, and on any store both colors share .*set services\.users\.shadow\.unsafe: true/)
  t.match(problems('    shadow: { sample: 1, methods: [GET, GET] }\n'), ['services.users.shadow.methods[1]: GET is listed twice'])
  t.match(problems('    shadow: { sample: 1, methods: ["GE T"] }\n'), [/^services\.users\.shadow\.methods\[0\]: not an HTTP method/])
  t.match(problems('    shadow: { sample: 1, methods: [] }\n'), [/^services\.users\.shadow\.methods: must be a non-empty list/])
  t.match(problems('    shadow: { sample: 1, copies: 2 }\n'), [/^services\.users\.shadow\.copies: unknown key \(expected one of: sample, methods, unsafe, ignore, redact, maxBody/])
  t.match(problems('    shadow: { sample: 1, ignore: { cookies: [a] } }\n'), [/^services\.users\.shadow\.ignore\.cookies: unknown key \(expected one of: headers, json\)/])
  t.match(problems('    shadow: { sample: 1, ignore: { headers: ["bad header"] } }\n'), [/^services\.users\.shadow\.ignore\.headers\[0\]: not a header name/])
  t.same(problems('    shadow: { sample: 1, redact: email }\n'), ['services.users.shadow.redact: must be a list of JSON member names, such as [email, phone]'])
  t.same(problems('    shadow: { sample: 1, redact: [email, "", 3] }\n'), ['services.users.shadow.redact[1]: must be a member name, got ""', 'services.users.shadow.redact[2]: must be a member name, got 3'])
  t.match(problems('    shadow: { sample: 1, ignore: { json: [timestamp] } }\n'), [/^services\.users\.shadow\.ignore\.json\[0\]: bad JSON path "timestamp": a path must start with '\$' at character 1 \(supported: /])
  t.match(problems('    shadow: { sample: 1, maxBody: -1, maxConcurrent: 0, timeout: soon, noise: 2, learn: 1.5 }\n'), [
    'services.users.shadow.maxBody: must be at least 0',
    'services.users.shadow.maxConcurrent: must be at least 1',
    /^services\.users\.shadow\.timeout: not a duration/,
    'services.users.shadow.noise: must be a number from 0 to 1',
    'services.users.shadow.learn: must be an integer',
  ])
  // The JSON path check is the comparison's own parser: its message names what is wrong and where.
  t.throws(() => parseConfig(`${BASE}    shadow: { sample: 1, ignore: { json: ['$..'] } }\n`, { env: {} }), /services\.users\.shadow\.ignore\.json\[0\]: bad JSON path "\$\.\.": expected a name .* at the end/)

  const h2c = problems('    shadow: { sample: 1 }\n').concat(problems('    protocol: h2c\n    shadow: { sample: 1 }\n'))
  t.same(h2c, ['services.users.shadow: shadow traffic is for HTTP/1.1 services; this one\'s protocol is h2c'])
})

t.test('config: gate.maxShadowDiff and gate.minShadowCompared, in defaults and per service', async (t) => {
  const c = parseConfig(`defaults:\n  gate: { maxShadowDiff: 0.02 }\n${BASE}    gate: { minShadowCompared: 50 }\n`, { env: {} })
  t.same(c.services.users.gate, { minHealthy: 1, minShadowCompared: 50, maxShadowDiff: 0.02 }, 'the service overrides one field and inherits the other')
  t.same(parseConfig(BASE, { env: {} }).services.users.gate, { minHealthy: 1, minShadowCompared: 200 }, 'default: no shadow gate, 200 pairs')
  t.same(problems('    gate: { maxShadowDiff: 1.5, minShadowCompared: 0 }\n'), [
    'services.users.gate.minShadowCompared: must be at least 1',
    'services.users.gate.maxShadowDiff: must be a number from 0 to 1',
  ])
  t.match(problems('', 'defaults:\n  gate: { maxShadowDif: 0.1 }\n'), [/^defaults\.gate\.maxShadowDif: unknown key \(expected one of: minHealthy, maxShadowDiff, minShadowCompared\)/])
})

t.test('state: a stored shadow override is read back, and anything else is refused naming it', async (t) => {
  const doc = (shadow: unknown): string => JSON.stringify({ version: 1, generation: 3, services: { users: { live: 'blue', previous: null, targets: {}, shadow } } })
  t.same(parseStateDocument(doc({ off: true }), 'x').services.users.shadow, { off: true })
  t.same(parseStateDocument(doc({ sample: 0.5, until: 1_700_000_000_000 }), 'x').services.users.shadow, { sample: 0.5, until: 1_700_000_000_000 })
  t.same(parseStateDocument(doc({ sample: 1 }), 'x').services.users.shadow, { sample: 1 })
  for (const bad of [{ sample: 0 }, { sample: 2 }, { off: false }, { sample: 0.5, until: 'soon' }, { sample: 0.5, extra: 1 }, 'on', null]) {
    t.throws(() => parseStateDocument(doc(bad), 'state file s.json'), new StateFileError('state file s.json', 'services.users.shadow must be {off: true} or {sample (above 0, at most 1), until? (epoch ms)}'), JSON.stringify(bad))
  }
})

// ---- the resolve step ----

function facts (method: string, headers: Record<string, string> = {}, smoke?: string): RequestFacts {
  return {
    method,
    target: '/users/1',
    host: 'gw',
    smoke,
    cookie: headers.cookie,
    connectionNames: undefined,
    header: (name) => headers[name],
    headerLines: (name) => headers[name] === undefined ? 0 : 1,
    peer: '127.0.0.1',
    clientAddress: () => '127.0.0.1',
  }
}

t.test('resolve: only the live color by the ordinary route is offered for copying', async (t) => {
  const config = parseConfig(`${BASE}    preview: { header: x-color }\n    shadow: { sample: 1 }\n`, { env: {} })
  const registry = new TargetRegistry()
  t.teardown(async () => { await registry.destroy() })
  const fake = fakeParts()
  const local = new LocalShadow(fake.parts)
  const state: RoutingState = { generation: 1, services: { users: { live: 'blue', previous: null, targets: {} } } }
  const switcher = new Switcher(buildSnapshot(config, state, registry, local))
  const resolve = createResolver(switcher.view, { colorOf: (h) => h === 'pin-blue' ? 'blue' : undefined })
  const tapOf = (f: RequestFacts): AnswerTap | undefined => (resolve(f) as Resolution).shadow

  t.ok(tapOf(facts('GET')) !== undefined, 'a live GET gets a tap')
  t.equal(tapOf(facts('POST')), undefined, 'a method not listed: the route says no')
  const askedBefore = fake.asked.length
  t.equal(tapOf(facts('GET', { 'x-color': 'blue' })), undefined, 'a preview naming the live color is not the ordinary route')
  t.equal(tapOf(facts('GET', { 'x-color': 'green' })), undefined, 'a preview of the idle color')
  t.equal(tapOf(facts('GET', {}, 'pin-blue')), undefined, 'a smoke pin, even on the live color')
  t.equal(fake.asked.length, askedBefore, 'the route was not even asked for those')
  t.equal(fake.plans.at(-1)?.idle.pick()?.target.url, 'http://127.0.0.1:2', 'copies go to the idle color')
  t.equal(fake.plans.at(-1)?.live.pick()?.target.url, 'http://127.0.0.1:1', 'noise probes to the live one')

  // A release's split: requests that land on the other color are not copied, those on live are.
  const split = new Switcher(buildSnapshot(config, { ...state, services: { users: { ...state.services.users, split: { color: 'green', weight: 50, seed: 7 } } } }, registry, local))
  const resolveSplit = createResolver(split.view, { colorOf: () => undefined })
  const seen = { blue: 0, green: 0, tappedGreen: 0, tappedBlue: 0 }
  for (let i = 0; i < 200; i++) {
    const r = resolveSplit(facts('GET', { [SPLIT_HEADER]: `visitor-${i}` })) as Resolution
    const color = r.endpoint.target.url.endsWith(':1') ? 'blue' : 'green'
    seen[color]++
    if (r.shadow !== undefined) seen[color === 'blue' ? 'tappedBlue' : 'tappedGreen']++
  }
  t.ok(seen.blue > 0 && seen.green > 0, `both colors got keys (${seen.blue}/${seen.green})`)
  t.equal(seen.tappedGreen, 0, 'nothing the split sent to the other color was copied')
  t.equal(seen.tappedBlue, seen.blue, 'everything it left on live was offered')

  // Off (no shadow section), an h2c service, an idle color without targets: no route at all.
  const off = buildSnapshot(parseConfig(BASE, { env: {} }), state, registry, local)
  t.equal(off.services.get('users')?.shadow, undefined)
  const noIdle = buildSnapshot(parseConfig(BASE.replace('green: { targets: [http://127.0.0.1:2] }', 'green: { targets: [] }') + '    shadow: { sample: 1 }\n', { env: {} }), state, registry, local)
  t.equal(noIdle.services.get('users')?.shadow, undefined, 'no idle target: nothing to copy to')
  const stopped = buildSnapshot(config, { ...state, services: { users: { ...state.services.users, shadow: { off: true } } } }, registry, local)
  t.equal(stopped.services.get('users')?.shadow, undefined, 'the admin API\'s off wins over the config')
  const expired = buildSnapshot(parseConfig(BASE, { env: {} }), { ...state, services: { users: { ...state.services.users, shadow: { sample: 0.5, until: Date.now() - 1 } } } }, registry, local)
  t.equal(expired.services.get('users')?.shadow, undefined, 'an ended session is off')
  t.equal(off.services.get('users')?.shadowKey, 'blue>green|http://127.0.0.1:2', 'the comparison key names both colors and the idle targets')
})

// ---- a gateway with the fake parts ----

interface Gw { gateway: Gateway, adminUrl: string, url: string, fake: Fake, stop: () => Promise<void> }

async function startGw (t: Tap.Test, yaml: string, dir = tempDir(t), fake = fakeParts()): Promise<Gw> {
  const file = join(dir, 'switchyard.yaml')
  const text = `log: { access: false }\n${yaml}`
  writeFileSync(file, text)
  const config: Config = parseConfig(text, { file, env: {} })
  const gateway = new Gateway(config, { env: {}, listen: { host: '127.0.0.1', port: 0 }, adminListen: { host: '127.0.0.1', port: 0 }, shadow: fake.parts })
  await gateway.start()
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    await gateway.stop(500)
  }
  t.teardown(stop)
  return { gateway, adminUrl: gateway.adminUrl, url: gateway.url, fake, stop }
}

function svcYaml (blue: Backend, green: Backend | undefined, extra = '', name = 'users'): string {
  return `  ${name}:
    match: { pathPrefix: /${name} }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green?.url ?? ''}] }
${extra}`
}

async function events (adminUrl: string): Promise<any[]> {
  return (await admin(adminUrl, 'GET', '/v1/events?type=shadow')).json.events
}

t.test('admin API: start, stop, GET, refusals, events and generations', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const grpcB = await startBackend(t, 'grpc-blue')
  const gw = await startGw(t, `services:\n${svcYaml(blue, green)}${svcYaml(blue, undefined, '', 'lonely')}  rpc:\n    match: { pathPrefix: /rpc }\n    protocol: h2c\n    blue: { targets: [${grpcB.url}] }\n    green: { targets: [${grpcB.url}] }\n`)
  const base = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation as number

  const off = await admin(gw.adminUrl, 'GET', '/v1/services/users/shadow')
  t.equal(off.status, 200)
  t.match(off.json, { active: false, sample: null, until: null, source: null, sent: 0, compared: 0, differed: 0, top: [], gate: { maxShadowDiff: null, minShadowCompared: 200 } })
  t.equal(gw.fake.plans.length, 0, 'no route while off')

  const started = await admin(gw.adminUrl, 'POST', '/v1/services/users/shadow', { sample: 0.5, reason: 'try v2' })
  t.equal(started.status, 200, started.text)
  t.match(started.json, { generation: base + 1, active: true, sample: 0.5, until: null, source: 'api', methods: ['GET', 'HEAD'] })
  t.equal(gw.fake.plans.at(-1)?.settings.sample, 0.5, 'the snapshot swapped in carries the route')
  t.equal((await http1(`${gw.url}/users/1`)).status, 200)
  t.ok(gw.fake.asked.includes('GET'), 'a live request was offered to it')

  const dflt = await admin(gw.adminUrl, 'POST', '/v1/services/users/shadow', {})
  t.match(dflt.json, { generation: base + 2, sample: 0.1 }, 'no sample and no config: 0.1')

  const stopped = await admin(gw.adminUrl, 'DELETE', '/v1/services/users/shadow')
  t.equal(stopped.status, 200, stopped.text)
  t.match(stopped.json, { generation: base + 3, active: false, source: null })
  const again = await admin(gw.adminUrl, 'DELETE', '/v1/services/users/shadow', { reason: 'again' })
  t.match(again.json, { generation: base + 3, active: false }, 'already off: nothing changes')
  t.notOk('event' in again.json)

  const evs = await events(gw.adminUrl)
  t.same(evs.map((e) => [e.type, e.action, e.service, e.generation, e.sample]), [
    ['shadow', 'start', 'users', base + 1, 0.5],
    ['shadow', 'start', 'users', base + 2, 0.1],
    ['shadow', 'stop', 'users', base + 3, undefined],
  ])
  t.equal(evs[0].reason, 'try v2')
  t.equal(evs[0].actor, 'api')

  const refusals: Array<[string, string, unknown, number, RegExp]> = [
    ['POST', '/v1/services/users/shadow', { sample: 2 }, 400, /"sample" must be a number above 0 and at most 1/],
    ['POST', '/v1/services/users/shadow', { sample: '0.5' }, 400, /"sample" must be a number/],
    ['POST', '/v1/services/users/shadow', { sample: 0 }, 400, /"sample"/],
    ['POST', '/v1/services/users/shadow', { duration: 'soon' }, 400, /"duration" must be a duration/],
    ['POST', '/v1/services/users/shadow', { duration: 0 }, 400, /"duration" must be longer than zero/],
    ['POST', '/v1/services/users/shadow', { duration: '9000h' }, 400, /"duration" must be at most 365 days/],
    ['POST', '/v1/services/users/shadow', { rate: 1 }, 400, /unknown field "rate" \(allowed: sample, duration, reason\)/],
    ['DELETE', '/v1/services/users/shadow', { sample: 1 }, 400, /unknown field "sample" \(allowed: reason\)/],
    ['POST', '/v1/services/nope/shadow', { sample: 1 }, 404, /unknown service: nope/],
    ['GET', '/v1/services/nope/shadow', undefined, 404, /unknown service: nope/],
    ['DELETE', '/v1/services/nope/shadow', undefined, 404, /unknown service: nope/],
    ['PUT', '/v1/services/users/shadow', {}, 405, /PUT is not allowed/],
    ['POST', '/v1/services/rpc/shadow', { sample: 1 }, 400, /service rpc speaks h2c to its targets: shadow traffic is for HTTP\/1\.1 services/],
    ['POST', '/v1/services/lonely/shadow', { sample: 1 }, 409, /the idle color green has no targets to copy to; set them first/],
  ]
  for (const [method, path, body, status, message] of refusals) {
    const r = await admin(gw.adminUrl, method, path, body)
    t.equal(r.status, status, `${method} ${path} ${JSON.stringify(body)}: ${r.text}`)
    t.match(r.json.message, message)
  }
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation, base + 3, 'no refusal changed anything')
  t.match((await admin(gw.adminUrl, 'GET', '/v1/services/rpc/shadow')).json, { active: false, source: null }, 'an h2c service reads as off')
})

t.test('admin API: a session with a duration ends by itself, with an event; the config\'s word is back', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const gw = await startGw(t, `services:\n${svcYaml(blue, green, '    shadow: { sample: 0.2 }\n')}`)
  t.match((await admin(gw.adminUrl, 'GET', '/v1/services/users/shadow')).json, { active: true, sample: 0.2, source: 'config' })
  const started = await admin(gw.adminUrl, 'POST', '/v1/services/users/shadow', { sample: 1, duration: '300ms' })
  t.equal(started.status, 200, started.text)
  t.equal(started.json.source, 'api')
  t.ok(Date.parse(started.json.until) > Date.now(), 'until is ahead')
  const ended = await eventually(async () => {
    const evs = await events(gw.adminUrl)
    if (evs.at(-1)?.action !== 'expired') throw new Error('not expired yet')
    return evs.at(-1)
  })
  t.match(ended, { type: 'shadow', action: 'expired', services: ['users'], actor: 'shadow', generation: started.json.generation + 1 })
  t.match((await admin(gw.adminUrl, 'GET', '/v1/services/users/shadow')).json, { active: true, sample: 0.2, source: 'config', until: null })
  t.same((await admin(gw.adminUrl, 'GET', '/v1/services/users/shadow')).json.gate, { maxShadowDiff: null, minShadowCompared: 200 }, 'the gate a flip would meet')
  t.equal(gw.fake.plans.at(-1)?.settings.sample, 0.2, 'the rebuilt route samples at the config\'s rate again')

  // A stop over a configured shadow is an override of its own.
  const stop = await admin(gw.adminUrl, 'DELETE', '/v1/services/users/shadow')
  t.match(stop.json, { active: false, source: null })
})

t.test('state: a session and a stop survive a restart', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const dir = tempDir(t)
  mkdirSync(join(dir, 'data'), { recursive: true })
  const yaml = `services:\n${svcYaml(blue, green)}${svcYaml(blue, green, '    shadow: { sample: 0.3 }\n', 'orders')}`
  const first = await startGw(t, yaml, dir)
  t.equal((await admin(first.adminUrl, 'POST', '/v1/services/users/shadow', { sample: 0.75, duration: '1h' })).status, 200)
  t.equal((await admin(first.adminUrl, 'DELETE', '/v1/services/orders/shadow')).status, 200)
  const until = (await admin(first.adminUrl, 'GET', '/v1/services/users/shadow')).json.until as string
  await first.stop()

  const second = await startGw(t, yaml, dir)
  t.match((await admin(second.adminUrl, 'GET', '/v1/services/users/shadow')).json, { active: true, sample: 0.75, source: 'api', until })
  t.match((await admin(second.adminUrl, 'GET', '/v1/services/orders/shadow')).json, { active: false, source: null }, 'stopped over the config stays stopped')
  t.same(second.fake.plans.map((p) => [p.service, p.settings.sample, p.until]), [['users', 0.75, Date.parse(until)]], 'the restarted snapshot copies for users only')
  const state = second.gateway.controller.routing().state
  t.same(state.services.orders.shadow, { off: true }, 'workers are handed the override with the routing state')
})

t.test('gate: refused above maxShadowDiff, passed at it and below minShadowCompared; force skips it', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const yaml = `services:\n${svcYaml(blue, green, '    shadow: { sample: 1 }\n    gate: { maxShadowDiff: 0.01, minShadowCompared: 200 }\n')}`
  const key = comparisonKey('blue', 'green', [green.url], parseConfig(yaml, { env: {} }).services.users.shadow)

  const gw = await startGw(t, yaml)
  const tally = gw.gateway.shadow?.book.tallyFor('users', key) as ShadowTally
  t.equal(tally, gw.fake.plans.at(-1)?.tally, 'the tally the route counts in is the one of the comparison in force')
  feed(tally, 300, 14)
  const before = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation
  const refused = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green' })
  t.equal(refused.status, 409, refused.text)
  t.equal(refused.json.error, 'gate_failed')
  t.equal(refused.json.failures[0].reason, 'shadow: 14 of 300 pairs differ (4.7%), gate.maxShadowDiff is 1%')
  t.match(refused.json.failures[0], { service: 'users', color: 'green', shadow: { compared: 300, differed: 14, top: [{ where: '$.plan', count: 14, example: { live: '"basic"', idle: '"premium"' } }] } })
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation, before, 'nothing changed')
  t.match((await admin(gw.adminUrl, 'GET', '/v1/services/users/shadow')).json, { sent: 300, compared: 300, differed: 14, matched: 286 })

  const metrics = (await http1(`${gw.adminUrl}/metrics`)).text
  t.match(metrics, /switchyard_shadow_total\{service="users",result="differed"\} 14/)
  t.match(metrics, /switchyard_shadow_total\{service="users",result="matched"\} 286/)
  t.match(metrics, /switchyard_shadow_total\{service="users",result="sent"\} 300/)
  t.match(metrics, /switchyard_shadow_inflight\{service="users"\} 0/)

  const forced = await admin(gw.adminUrl, 'POST', '/v1/flip', { to: 'green', force: true })
  t.equal(forced.status, 200, 'force skips the shadow gate')
  t.equal(gw.fake.plans.at(-1)?.tally === tally, false, 'the flip starts a fresh comparison (green>blue)')

  const atLimit = await startGw(t, yaml)
  feed(atLimit.gateway.shadow?.book.tallyFor('users', key) as ShadowTally, 300, 3)
  t.equal((await admin(atLimit.adminUrl, 'POST', '/v1/flip', { to: 'green' })).status, 200, '3 of 300 is 1%: not above it')

  const few = await startGw(t, yaml)
  feed(few.gateway.shadow?.book.tallyFor('users', key) as ShadowTally, 199, 199)
  t.equal((await admin(few.adminUrl, 'POST', '/v1/flip', { to: 'green' })).status, 200, 'below minShadowCompared the comparison does not judge')

  // New idle targets: the old counts are for another version and are not read.
  const stale = await startGw(t, yaml)
  feed(stale.gateway.shadow?.book.tallyFor('users', key) as ShadowTally, 300, 300)
  const other = await startBackend(t, 'green2')
  t.equal((await admin(stale.adminUrl, 'PUT', '/v1/services/users/environments/green/targets', { targets: [other.url] })).status, 200)
  t.match((await admin(stale.adminUrl, 'GET', '/v1/services/users/shadow')).json, { compared: 0 })
  t.equal((await admin(stale.adminUrl, 'POST', '/v1/flip', { to: 'green' })).status, 200)
})

t.test('gate: a release\'s testing phase fails on the shadow comparison', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const yaml = `services:\n${svcYaml(blue, green, '    shadow: { sample: 1 }\n    gate: { maxShadowDiff: 0.05, minShadowCompared: 100 }\n')}`
  const gw = await startGw(t, yaml)
  // The release deploys the same targets: the comparison (its key names them) stays, with its counts.
  feed(gw.gateway.shadow?.book.tallyFor('users', comparisonKey('blue', 'green', [green.url], parseConfig(yaml, { env: {} }).services.users.shadow)) as ShadowTally, 100, 10)
  const created = await admin(gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [green.url] } } })
  t.equal(created.status, 201, created.text)
  const r = await eventually(async () => {
    const x = (await admin(gw.adminUrl, 'GET', `/v1/releases/${created.json.id as string}`)).json
    if (x.phase !== 'failed') throw new Error(`phase ${String(x.phase)}`)
    return x
  }, { timeout: 8000 })
  t.same(r.history.map((h: any) => h.phase), ['deploying', 'warming', 'testing', 'failed'])
  t.equal(r.outcome, 'the shadow comparison refused it: users/green: shadow: 10 of 100 pairs differ (10%), gate.maxShadowDiff is 5%')
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).json.services.users.live, 'blue')
})

t.test('gate: a release to new targets waits in testing for minShadowCompared pairs, then judges; too few by its timeout fails it', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const next = await startBackend(t, 'green-next')
  const yaml = `services:\n${svcYaml(blue, green, '    shadow: { sample: 1 }\n    gate: { maxShadowDiff: 0.05, minShadowCompared: 100 }\n')}`
  const gw = await startGw(t, yaml)
  // New targets are a new comparison: it starts at zero, so testing must wait for pairs, not pass for lack of them.
  const created = await admin(gw.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [next.url] } } })
  t.equal(created.status, 201, created.text)
  const release = `/v1/releases/${created.json.id as string}`
  await eventually(async () => {
    const x = (await admin(gw.adminUrl, 'GET', release)).json
    if (x.phase !== 'testing') throw new Error(`phase ${String(x.phase)}`)
  }, { timeout: 8000 })
  const key = comparisonKey('blue', 'green', [next.url], parseConfig(yaml, { env: {} }).services.users.shadow)
  const tally = gw.gateway.shadow?.book.tallyFor('users', key) as ShadowTally
  feed(tally, 60, 6)
  // Checked once a second: two looks later it still waits.
  await new Promise((resolve) => setTimeout(resolve, 2200))
  t.equal((await admin(gw.adminUrl, 'GET', release)).json.phase, 'testing', 'fewer than minShadowCompared pairs: testing waits')
  feed(tally, 40, 4)
  const r = await eventually(async () => {
    const x = (await admin(gw.adminUrl, 'GET', release)).json
    if (x.phase !== 'failed') throw new Error(`phase ${String(x.phase)}`)
    return x
  }, { timeout: 8000 })
  t.equal(r.outcome, 'the shadow comparison refused it: users/green: shadow: 10 of 100 pairs differ (10%), gate.maxShadowDiff is 5%')

  const quiet = await startGw(t, yaml)
  const other = await startBackend(t, 'green-other')
  const slow = await admin(quiet.adminUrl, 'POST', '/v1/releases', { services: { users: { targets: [other.url] } }, timeout: '2s' })
  t.equal(slow.status, 201, slow.text)
  const failed = await eventually(async () => {
    const x = (await admin(quiet.adminUrl, 'GET', `/v1/releases/${slow.json.id as string}`)).json
    if (x.phase !== 'failed') throw new Error(`phase ${String(x.phase)}`)
    return x
  }, { timeout: 10_000 })
  t.equal(failed.outcome, 'the shadow comparison did not reach gate.minShadowCompared within 2s: users/green: shadow: 0 of gate.minShadowCompared 100 pairs compared')
  t.equal((await admin(quiet.adminUrl, 'GET', '/v1/state')).json.services.users.live, 'blue', 'nothing went live')
})

t.test('checkShadowGate reads the comparison of the flip\'s target only, and only with maxShadowDiff', async (t) => {
  const config = parseConfig(`${BASE}    gate: { maxShadowDiff: 0 , minShadowCompared: 1 }\n  orders:\n    match: { pathPrefix: /orders }\n    blue: { targets: [http://127.0.0.1:3] }\n    green: { targets: [http://127.0.0.1:4] }\n`, { env: {} })
  const registry = new TargetRegistry()
  t.teardown(async () => { await registry.destroy() })
  const snapshot = buildSnapshot(config, { generation: 1, services: {} }, registry)
  const asked: string[] = []
  const view = { ...viewOf(emptyData()), compared: 5, differed: 1 }
  const read = (service: string, key: string): ShadowView => { asked.push(`${service} ${key}`); return view }
  t.equal(checkShadowGate(config, snapshot, [{ service: 'users', from: 'blue', to: 'green' }], read).length, 1)
  t.same(asked, ['users blue>green|http://127.0.0.1:2'])
  t.same(checkShadowGate(config, snapshot, [{ service: 'orders', from: 'blue', to: 'green' }], read), [], 'no maxShadowDiff: not judged')
  t.same(checkShadowGate(config, snapshot, [{ service: 'users', from: 'green', to: 'blue' }], read), [], 'a change to the live color is no flip into the idle one')
  t.same(checkShadowGate(config, snapshot, [{ service: 'users', from: 'blue', to: 'green' }], () => undefined), [], 'nothing counted: not judged')
})

t.test('reload: a shadow section added or changed applies at once, counts kept for the same comparison', async (t) => {
  const blue = await startBackend(t, 'blue')
  const green = await startBackend(t, 'green')
  const gw = await startGw(t, `services:\n${svcYaml(blue, green)}`)
  t.equal(gw.fake.plans.length, 0)
  const file = gw.gateway.config.file as string
  writeFileSync(file, `log: { access: false }\nservices:\n${svcYaml(blue, green, '    shadow: { sample: 0.4, methods: [GET] }\n')}`)
  const reloaded = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
  t.equal(reloaded.status, 200, reloaded.text)
  t.same(reloaded.json.updated, ['users'])
  t.match((await admin(gw.adminUrl, 'GET', '/v1/services/users/shadow')).json, { active: true, sample: 0.4, source: 'config', methods: ['GET'] })
  const tally = gw.fake.plans.at(-1)?.tally as ShadowTally
  feed(tally, 5, 1)
  writeFileSync(file, `log: { access: false }\nservices:\n${svcYaml(blue, green, '    shadow: { sample: 0.9 }\n')}`)
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/reload', {})).status, 200)
  t.equal(gw.fake.plans.at(-1)?.settings.sample, 0.9)
  t.equal(gw.fake.plans.at(-1)?.tally, tally, 'same colors and idle targets: the same comparison goes on')
  t.match((await admin(gw.adminUrl, 'GET', '/v1/services/users/shadow')).json, { compared: 5, differed: 1 })
})

t.test('workers: the primary sums every worker\'s comparison of the key in force, and keeps an exited worker\'s', async (t) => {
  const fake = fakeParts()
  const pool = new WorkerPool(2, fake.parts)
  const reader = pool.shadow as WorkerPool
  t.ok(reader !== undefined)
  const data = (pairs: number, differing: number): TallyData => {
    const tally = new FakeTally('users', () => {})
    feed(tally, pairs, differing)
    return tally.data()
  }
  const results = (n: number): Array<[string, Record<ShadowResult, number>]> => [['users', { sent: n, dropped: 0, matched: n, differed: 0, noise: 0 }]]
  const onShadow = (id: number, reports: unknown[], n: number): void => { (pool as unknown as { onShadow: (id: number, s: unknown) => void }).onShadow(id, { reports, results: results(n) }) }
  onShadow(1, [{ service: 'users', key: 'blue>green|a', data: data(10, 2), inflight: 3 }], 10)
  onShadow(2, [{ service: 'users', key: 'blue>green|a', data: data(5, 1), inflight: 1 }], 5)
  t.match(reader.viewOf(reader.comparison('users', 'blue>green|a') as TallyData), { sent: 15, compared: 15, differed: 3 })
  t.equal(reader.comparison('users', 'green>blue|b'), undefined, 'another key: nothing counted')
  t.same([...reader.inflight()], [['users', 4]])
  t.same(reader.results().get('users'), { sent: 15, dropped: 0, matched: 15, differed: 0, noise: 0 })
  // A worker exits: its counts stay until a worker reports another comparison.
  const p = pool as unknown as { workers: Map<number, unknown>, onExit: (w: { id: number }, code: number, signal: null) => void, stopping: boolean }
  p.workers.set(2, {})
  p.stopping = true
  p.onExit({ id: 2 }, 0, null)
  t.match(reader.viewOf(reader.comparison('users', 'blue>green|a') as TallyData), { sent: 15, differed: 3 }, 'the exited worker\'s copies still count')
  t.same(reader.results().get('users')?.sent, 15)
  onShadow(1, [{ service: 'users', key: 'green>blue|b', data: data(1, 0), inflight: 0 }], 11)
  t.equal(reader.comparison('users', 'blue>green|a'), undefined, 'a flip elsewhere ends the old comparison, the exited worker\'s part too')
  t.same(reader.results().get('users')?.sent, 16, 'the metric counts keep growing')
})
