// Fault suite (e): SIGKILL right after an acknowledged change. The gateway
// process is killed the moment a flip's 200 arrives, restarted on the same
// state folder, and every generation it acknowledged must be there: in
// GET /v1/events, in events.jsonl, and not behind in GET /v1/state.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { startBackend, tempDir } from '../helpers/index.js'
import { events, figures, startCli, state } from './lib.js'

const ROUNDS = 12

t.test('(e) SIGKILL right after a 200: no acknowledged change is lost', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const dir = tempDir(t)
  const yaml = `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${b.url}] }
    green: { targets: [${g.url}] }
`
  const acked: number[] = []
  const lost: number[] = []
  const behind: string[] = []
  let restarts = 0
  const started = Date.now()
  for (let round = 0; round <= ROUNDS && Date.now() - started < 60_000; round++) {
    const gw = await startCli(t, yaml, { dir })
    restarts++
    // What the previous process acknowledged must have survived its SIGKILL.
    const seen = new Set((await events(gw.adminUrl, 'flip,rollback')).map((e) => e.generation))
    for (const gen of acked) if (!seen.has(gen) && !lost.includes(gen)) lost.push(gen)
    const generation = (await state(gw.adminUrl)).generation as number
    if (acked.length > 0 && generation < acked[acked.length - 1]) behind.push(`round ${round}: state at ${generation}, acknowledged ${acked[acked.length - 1]}`)
    if (round === ROUNDS) {
      gw.proc.kill('SIGKILL')
      break
    }
    // 1 to 4 changes, the last one killed on the spot.
    const n = 1 + round % 4
    let next = generation
    for (let i = 0; i < n; i++) {
      const path = i % 2 === 0 ? '/v1/flip' : '/v1/rollback'
      const res = await request(`${gw.adminUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reason: `round ${round}` }) })
      if (i === n - 1 && res.statusCode === 200) gw.proc.kill('SIGKILL')
      // The body may be cut by the kill; every change here adds one generation.
      const body = await res.body.json().catch(() => undefined) as { generation?: number } | undefined
      if (res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode}`)
      next = body?.generation ?? next + 1
      acked.push(next)
    }
    await gw.proc.exit
  }
  const file = readFileSync(join(dir, 'data', 'events.jsonl'), 'utf8')
  const inFile = new Set(file.split('\n').flatMap((l) => { try { return [JSON.parse(l).generation] } catch { return [] } }))
  const missingInFile = acked.filter((gen) => !inFile.has(gen))
  figures('(e) SIGKILL after 200', {
    restarts,
    acknowledged: acked.length,
    lostFromEvents: lost.length,
    missingInFile: missingInFile.length,
    stateBehind: behind.length,
    ms: Date.now() - started,
  })
  t.ok(acked.length >= ROUNDS, `changes acknowledged (${acked.length})`)
  t.same(lost, [], 'every acknowledged generation is in GET /v1/events after the restart')
  t.same(missingInFile, [], 'and in events.jsonl')
  t.same(behind, [], 'the state file is never behind an acknowledgement')
})
