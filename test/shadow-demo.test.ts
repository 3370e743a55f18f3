// The demo backends' .../profile, which the README's shadow walk-through relies on: both colors
// answer the same record but for the timestamp and the request id, and ?green-differs=1 changes one field on green only.

import t from 'tap'
import { parseConfig } from '../src/config/load.js'
import { startDemoBackends, stopDemoBackends } from '../src/demo.js'

interface Got { status: number, type: string | null, requestId: string | null, body: Record<string, unknown> }

async function get (url: string): Promise<Got> {
  const res = await fetch(url)
  return { status: res.status, type: res.headers.get('content-type'), requestId: res.headers.get('x-request-id'), body: await res.json() as Record<string, unknown> }
}

/** The record less what changes on every answer. */
function stable (body: Record<string, unknown>): Record<string, unknown> {
  const { timestamp, requestId, ...rest } = body
  return rest
}

t.test('profile: the same record on both colors but for a timestamp and a request id; ?green-differs=1 changes the plan on green only', async (t) => {
  // Port 0: each backend on a free port. The config would make both targets one URL (and the demo one
  // backend), so the two are written apart by a trailing slash, which only the demo's de-duplication sees.
  const config = parseConfig('services:\n  users:\n    match: { pathPrefix: /api/users }\n    blue: { targets: [http://127.0.0.1:0] }\n    green: { targets: [http://127.0.0.1:1] }\n', { env: {} })
  config.services.users.green.targets = ['http://127.0.0.1:0/']
  const demo = await startDemoBackends(config)
  t.teardown(async () => { await stopDemoBackends(demo) })
  const url = (color: string): string => (demo.find((d) => d.color === color) as { url: string }).url
  t.equal(demo.length, 2)

  const [b1, b2, g1] = [await get(`${url('blue')}/api/users/profile`), await get(`${url('blue')}/api/users/profile`), await get(`${url('green')}/api/users/profile`)]
  for (const r of [b1, b2, g1]) {
    t.equal(r.status, 200)
    t.equal(r.type, 'application/json')
    t.match(r.body.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'to the microsecond')
    t.equal(r.requestId, r.body.requestId, 'the header and the body carry one id')
  }
  t.same(stable(b1.body), stable(g1.body), 'blue and green answer the same record')
  t.same(stable(b1.body), stable(b2.body))
  t.equal(b1.body.plan, 'pro')
  t.not(b1.body.requestId, b2.body.requestId, 'a new id per answer')
  t.not(b1.body.timestamp, b2.body.timestamp, 'a new time per answer')
  t.notOk(Object.values(b1.body).includes('blue'), 'the record does not say which color answered')

  const gd = await get(`${url('green')}/api/users/profile?green-differs=1`)
  const bd = await get(`${url('blue')}/api/users/profile?green-differs=1`)
  t.equal(gd.body.plan, 'team')
  t.equal(bd.body.plan, 'pro', 'blue ignores the flag')
  t.same({ ...stable(gd.body), plan: 'pro' }, stable(bd.body), 'only the plan differs')

  const other = await get(`${url('green')}/api/users/7`)
  t.same(other.body, { service: 'users', color: 'green', version: '1.1.0', method: 'GET', path: '/api/users/7', host: new URL(url('green')).host }, 'other paths still say which color answered')
})
