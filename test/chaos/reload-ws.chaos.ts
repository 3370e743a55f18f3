// Fault suite (f): 50 config reloads, each a real change (a new snapshot and
// generation), while WebSockets are open through the gateway. Every socket must
// stay open and echo after every reload.

import t from 'tap'
import { writeFileSync } from 'node:fs'
import { admin, CLI_TOP, openWs, startBackend } from '../helpers/index.js'
import { figures, startCli, state } from './lib.js'

const SOCKETS = 20
const RELOADS = 50

t.test('(f) reload storm: WebSockets stay open and echo across 50 reloads', async (t) => {
  const b = await startBackend(t, 'blue')
  const b2 = await startBackend(t, 'blue-2')
  const g = await startBackend(t, 'green')
  // Odd reloads add a second blue target and change a timeout, even ones take
  // them away again: the sockets' own target stays, its route is rebuilt each time.
  const yaml = (i: number): string => `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${i % 2 === 1 ? `${b.url}, ${b2.url}` : b.url}] }
    green: { targets: [${g.url}] }
    timeouts: { response: ${30 + (i % 2)}s }
`
  const gw = await startCli(t, yaml(0))
  const sockets = await Promise.all(Array.from({ length: SOCKETS }, async () => await openWs(gw.url.replace('http', 'ws') + '/ws')))
  t.teardown(() => { for (const s of sockets) s.ws.terminate() })
  let closed = 0
  for (const s of sockets) void s.closed.then(() => { closed++ })
  const before = (await state(gw.adminUrl)).generation as number
  let echoed = 0
  const mismatched: string[] = []
  const reloadMs: number[] = []
  const started = Date.now()
  for (let i = 1; i <= RELOADS && Date.now() - started < 60_000; i++) {
    writeFileSync(gw.file, `${CLI_TOP}${yaml(i)}`)
    const sent = Date.now()
    const res = await admin(gw.adminUrl, 'POST', '/v1/reload', {})
    reloadMs.push(Date.now() - sent)
    if (res.status !== 200 || res.json.changed !== true) {
      mismatched.push(`reload ${i}: ${res.status} ${res.text}`)
      continue
    }
    await Promise.all(sockets.map(async (s, k) => {
      const msg = `r${i}s${k}`
      s.ws.send(msg)
      const got = await Promise.race([s.next(), new Promise<string>((resolve) => setTimeout(() => resolve('(no echo in 2 s)'), 2000))])
      if (got === `blue: ${msg}`) echoed++
      else mismatched.push(`socket ${k} after reload ${i}: ${got}`)
    }))
  }
  const after = (await state(gw.adminUrl)).generation as number
  const open = sockets.filter((s) => s.ws.readyState === s.ws.OPEN).length
  figures('(f) reload storm with WebSockets', {
    sockets: SOCKETS,
    reloads: after - before,
    echoed,
    expected: SOCKETS * RELOADS,
    stillOpen: open,
    closed,
    reloadMsMax: Math.max(...reloadMs),
    reloadMsAvg: Math.round(reloadMs.reduce((a, x) => a + x, 0) / reloadMs.length),
  })
  t.same(mismatched.slice(0, 5), [], 'every reload was taken and every socket echoed after it (from the target it opened on)')
  t.equal(after - before, RELOADS, 'one generation per reload')
  t.equal(echoed, SOCKETS * RELOADS)
  t.equal(open, SOCKETS, 'every WebSocket is still open')
  t.equal(closed, 0)
})
