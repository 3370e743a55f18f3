// Attacks on abae688 (JSON secrets never shown in shadow examples; shadow.redact).
// Each subtest was a way a secret value still reached an example (or what the
// redaction itself cost), and failed on abae688.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { gzipSync } from 'node:zlib'
import { createComparer } from '../src/shadow/compare.js'
import { parseConfig } from '../src/config/load.js'
import { comparisonKey } from '../src/routing/snapshot.js'
import { LocalShadow, SHADOW_PARTS } from '../src/control/shadow.js'
import type { Answer, Difference } from '../src/shadow/types.js'

const JSON_TYPE = { 'content-type': 'application/json' }

function answer (body: string | Buffer, headers: Record<string, string> = JSON_TYPE): Answer {
  return { status: 200, headers: new Map(Object.entries(headers)), body: Buffer.isBuffer(body) ? body : Buffer.from(body) }
}

const plain = createComparer({ headers: [], json: [] })

/** Every string an operator reads of these differences: places and examples. */
function shown (diffs: readonly Difference[]): string {
  return JSON.stringify(diffs)
}

t.test('valid JSON nested deeper than MAX_DEPTH is compared as bytes, and no byte of it is shown', async (t) => {
  // 300 levels: valid JSON, declared JSON, well inside the default maxBody (about 650 bytes).
  const deep = '['.repeat(300) + ']'.repeat(300)
  const live = answer(`{"id":1,"password":"hunter2","deep":${deep}}`)
  const idle = answer(`{"id":2,"password":"hunter2","deep":${deep}}`)
  const diffs = plain.compare(live, idle)
  t.ok(diffs.length > 0, 'the pair differs (at $.id)')
  t.notOk(shown(diffs).includes('hunter2'), `no example shows the password: ${shown(diffs)}`)
})

t.test('a deep subtree shown whole overflows JSON.stringify; the byte fallback shows no token', async (t) => {
  // The walk never descends into a member one side lacks: its example is JSON.stringify with a
  // replacer, which throws RangeError at a few thousand levels, caught as "too deep": bytes.
  const sub = '['.repeat(5000) + '0' + ']'.repeat(5000)
  const live = answer(`{"n":1,"access_token":"eyJ-live-token","extra":${sub}}`)
  const idle = answer('{"n":2,"access_token":"eyJ-live-token"}')
  const diffs = plain.compare(live, idle)
  t.ok(diffs.length > 0, 'the pair differs (at $.n and $.extra)')
  t.notOk(shown(diffs).includes('eyJ-live-token'), `no example shows the token: ${shown(diffs)}`)
})

t.test('a live JSON body with a secret is never shown as bytes when the idle color\'s JSON body does not parse', async (t) => {
  // The new version (the idle color) is the one under test: a broken body from it is exactly what shadowing is for.
  const live = answer('{"access_token":"eyJ-live-token","expires":3600}')
  const truncated = plain.compare(live, answer('{"access_token":"eyJ-idle-token","exp'))
  t.notOk(shown(truncated).includes('eyJ-live-token'), `idle body cut short: ${shown(truncated)}`)
  const trailingComma = plain.compare(live, answer('{"access_token":"eyJ-live-token","expires":3600,}'))
  t.notOk(shown(trailingComma).includes('eyJ-live-token'), `idle body with a trailing comma (the token equal on both sides): ${shown(trailingComma)}`)
  // A coding the comparer does not decode on the idle side: the live body is decoded from gzip, then shown in plain.
  const gz = { ...JSON_TYPE, 'content-encoding': 'gzip' }
  const coded = plain.compare(answer(gzipSync('{"password":"hunter2"}'), gz), answer(gzipSync('{"password":"hunter3"}'), { ...JSON_TYPE, 'content-encoding': 'gzip, identity' }))
  t.notOk(shown(coded).includes('hunter2'), `live gzip JSON, idle "gzip, identity": ${shown(coded)}`)
})

t.test('member names under a secret member are part of its value, and never show in `where`', async (t) => {
  // A map keyed by the secrets themselves: the tokens of a user, the sessions by id.
  const diffs = plain.compare(
    answer(JSON.stringify({ tokens: { tok_live_4f9a1c: { created: 1 } }, session: { 'sid-8d2e': true } })),
    answer(JSON.stringify({ tokens: { tok_live_77b0e2: { created: 1 } }, session: { 'sid-11aa': true } })))
  t.ok(diffs.length > 0, 'the pair differs (under $.tokens and $.session)')
  for (const secret of ['tok_live_4f9a1c', 'tok_live_77b0e2', 'sid-8d2e', 'sid-11aa']) {
    t.notOk(shown(diffs).includes(secret), `${secret} is not shown: ${shown(diffs)}`)
  }
})

t.test('header fields named like secrets (x-auth-token, x-csrf-token, x-api-key) are redacted', async (t) => {
  // The same names as JSON members are redacted (auth_token, csrf_token, api_key); as answer headers they are not.
  const diffs = plain.compare(
    answer('{}', { ...JSON_TYPE, 'x-auth-token': 'at-live-1', 'x-csrf-token': 'csrf-live-1', 'x-api-key': 'key-live-1' }),
    answer('{}', { ...JSON_TYPE, 'x-auth-token': 'at-idle-2', 'x-csrf-token': 'csrf-idle-2', 'x-api-key': 'key-idle-2' }))
  t.same(diffs.map((d) => d.where), ['header:x-api-key', 'header:x-auth-token', 'header:x-csrf-token'], 'counted')
  for (const v of ['at-live-1', 'csrf-live-1', 'key-live-1', 'at-idle-2', 'csrf-idle-2', 'key-idle-2']) {
    t.notOk(shown(diffs).includes(v), `${v} is not shown`)
  }
})

t.test('adding shadow.redact by a reload starts a fresh comparison: no example kept from before shows the values', async (t) => {
  const base = `services:
  users:
    match: { pathPrefix: /users }
    blue: { targets: [http://127.0.0.1:1] }
    green: { targets: [http://127.0.0.1:2] }
`
  const before = parseConfig(`${base}    shadow: { sample: 1 }\n`, { env: {} }).services.users.shadow
  const after = parseConfig(`${base}    shadow: { sample: 1, redact: [email] }\n`, { env: {} }).services.users.shadow
  if (before === undefined || after === undefined) throw new Error('no shadow section')
  const shadow = new LocalShadow(SHADOW_PARTS)
  const key1 = comparisonKey('blue', 'green', ['http://127.0.0.1:2'], before)
  const key2 = comparisonKey('blue', 'green', ['http://127.0.0.1:2'], after)
  const live = answer(JSON.stringify({ email: 'ann@example.com' }))
  const idle = answer(JSON.stringify({ email: 'ann@example.org' }))
  // The operator sees the address in GET .../shadow, and adds `redact: [email]` to hide it.
  shadow.tallyFor('users', key1).pair(shadow.comparer(before).compare(live, idle), true)
  shadow.installed({ services: new Map([['users', { shadowKey: key2 }]]) } as never)
  const tally = shadow.tallyFor('users', key2)
  tally.pair(shadow.comparer(after).compare(live, idle), true)
  t.same(shadow.comparer(after).compare(live, idle)[0], { where: '$.email', live: '[redacted]', other: '[redacted]' }, 'new pairs are redacted')
  const view = JSON.stringify(shadow.viewOf(shadow.comparison('users', key2) ?? tally.data()))
  t.notOk(view.includes('ann@example'), `after the reload no example shows the address: ${view}`)
})

t.test('the SecretNames cache is bounded in bytes: long member names do not stay in memory', async (t) => {
  // Measured in a process of its own on the built comparer (npm test builds first): under tap's loader
  // the heap keeps the test's own strings, whatever the comparer does.
  const script = `
    import { createComparer } from ${JSON.stringify(new URL('../dist/shadow/compare.js', import.meta.url).href)}
    const answer = (body) => ({ status: 200, headers: new Map([['content-type', 'application/json']]), body: Buffer.from(body) })
    const comparer = createComparer({ headers: [], json: [] })
    gc()
    const start = process.memoryUsage().heapUsed
    // 1100 answers (of the default maxBody, 64 KiB), each with one member name of 60 000 characters that differs in value.
    for (let i = 0; i < 1100; i++) {
      const name = String(i).padStart(6, '0') + 'k'.repeat(60000)
      comparer.compare(answer('{"' + name + '":1}'), answer('{"' + name + '":2}'))
    }
    gc()
    gc()
    console.log(JSON.stringify({ retained: process.memoryUsage().heapUsed - start, alive: comparer !== undefined }))
  `
  const run = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' })
  t.equal(run.status, 0, run.stderr)
  const { retained, alive } = JSON.parse(run.stdout) as { retained: number, alive: boolean }
  t.ok(retained < 8e6, `a comparer keeps ${(retained / 1e6).toFixed(1)} MB of member names after its answers are gone`)
  t.ok(alive, 'the comparer is still in use (a service\'s lives until its rules change)')
})
